"""The training loss alone: our fused label-smoothed cross-entropy vs F.cross_entropy, forward + backward.

Logits of one base-shape batch (128 x 32 target tokens, vocabulary 32,000), in fp32 and in bf16 (what the output
projection gives under bf16 autocast). Prints one JSON object.
Usage: python benchmarks/bench_loss.py [--tokens 4096] [--vocab 32000] [--repeats 5]
"""

import argparse
import json

import torch
import torch.nn.functional as F
from common import machine, median_seconds

from vanilla_transformer.modeling_kernels import LabelSmoothedCrossEntropy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tokens", type=int, default=4096)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--epsilon", type=float, default=0.1)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, args.vocab, (args.tokens,), generator=generator)
    labels[::16] = -100  # some padding
    losses = {
        "ours_fused": lambda x: LabelSmoothedCrossEntropy.apply(x, labels, args.epsilon),
        "torch_cross_entropy_smoothed": lambda x: F.cross_entropy(
            x.float(), labels, label_smoothing=args.epsilon, reduction="sum"),
        "torch_cross_entropy_plain": lambda x: F.cross_entropy(x.float(), labels, reduction="sum"),
    }
    results = {"tokens": args.tokens, "vocab": args.vocab, "epsilon": args.epsilon, "machine": machine(), "ms": {}}
    for dtype_name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        logits = torch.randn(args.tokens, args.vocab, generator=generator).mul_(3).to(dtype)
        figures = {}
        for name, loss in losses.items():
            def step(loss=loss, logits=logits):
                x = logits.detach().requires_grad_()
                loss(x).backward()
            figures[name] = round(1000 * median_seconds(step, args.repeats), 1)
        figures["speedup_vs_smoothed"] = round(figures["torch_cross_entropy_smoothed"] / figures["ours_fused"], 2)
        figures["speedup_vs_plain"] = round(figures["torch_cross_entropy_plain"] / figures["ours_fused"], 2)
        results["ms"][dtype_name] = figures
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
