"""The training loss alone: our fused label-smoothed cross-entropy vs F.cross_entropy, forward + backward.

Logits of one base-shape batch (128 x 32 target tokens, vocabulary 32,000), in fp32 and in bf16 (what the output
projection gives under bf16 autocast), on --device (the GPU when there is one). Ours runs the device's chunks
(modeling_kernels.row_chunks); "ours_other_chunks" the other kind's, on this device. Also the aten operators per
forward + backward of each kind of chunks (views left out; about the kernels a GPU launches), counted on the meta
device: --ops-tokens x --ops-vocab, by default the issue's 6,250-token micro-batch over a 37k vocabulary.
Prints one JSON object.
Usage: python benchmarks/bench_loss.py [--tokens 4096] [--vocab 32000] [--repeats 5] [--device cuda]
"""

import argparse
import collections
import json

import torch
import torch.nn.functional as F
from common import machine, median_seconds
from torch.utils._python_dispatch import TorchDispatchMode

from vanilla_transformer.modeling_kernels import LabelSmoothedCrossEntropy


class OpCounter(TorchDispatchMode):
    """Counts the aten operators that are not views run under it."""

    def __init__(self):
        super().__init__()
        self.counts = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if not func.is_view:
            self.counts[func.overloadpacket.__name__] += 1
        return func(*args, **(kwargs or {}))


def operators_per_call(tokens: int, vocab: int, epsilon: float, device_type: str) -> int:
    """Operators of one forward + backward of our loss with `device_type`'s chunks, on bf16 meta logits."""
    logits = torch.empty(tokens, vocab, dtype=torch.bfloat16, device="meta", requires_grad=True)
    labels = torch.zeros(tokens, dtype=torch.long, device="meta")
    with OpCounter() as counter:
        LabelSmoothedCrossEntropy.apply(logits, labels, epsilon, device_type).backward()
    return sum(counter.counts.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tokens", type=int, default=4096)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--epsilon", type=float, default=0.1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--ops-tokens", type=int, default=6250)
    parser.add_argument("--ops-vocab", type=int, default=37000)
    args = parser.parse_args()

    device = torch.device(args.device)
    other = "cuda" if device.type == "cpu" else "cpu"
    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, args.vocab, (args.tokens,), generator=generator)
    labels[::16] = -100  # some padding
    labels = labels.to(device)
    losses = {
        "ours_fused": lambda x: LabelSmoothedCrossEntropy.apply(x, labels, args.epsilon),
        "ours_other_chunks": lambda x: LabelSmoothedCrossEntropy.apply(x, labels, args.epsilon, other),
        "torch_cross_entropy_smoothed": lambda x: F.cross_entropy(
            x.float(), labels, label_smoothing=args.epsilon, reduction="sum"),
        "torch_cross_entropy_plain": lambda x: F.cross_entropy(x.float(), labels, reduction="sum"),
    }
    results = {"tokens": args.tokens, "vocab": args.vocab, "epsilon": args.epsilon, "device": str(device),
               "other_chunks": other, "machine": machine(), "ms": {}}
    results["operators_per_call"] = {
        "tokens": args.ops_tokens, "vocab": args.ops_vocab,
        **{f"{kind}_chunks": operators_per_call(args.ops_tokens, args.ops_vocab, args.epsilon, kind)
           for kind in ("cpu", "cuda")},
    }
    synchronize = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for dtype_name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        logits = torch.randn(args.tokens, args.vocab, generator=generator).mul_(3).to(device, dtype)
        figures = {}
        for name, loss in losses.items():
            def step(loss=loss, logits=logits):
                x = logits.detach().requires_grad_()
                loss(x).backward()
                synchronize()
            figures[name] = round(1000 * median_seconds(step, args.repeats), 1)
        figures["speedup_vs_smoothed"] = round(figures["torch_cross_entropy_smoothed"] / figures["ours_fused"], 2)
        figures["speedup_vs_plain"] = round(figures["torch_cross_entropy_plain"] / figures["ours_fused"], 2)
        results["ms"][dtype_name] = figures
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
