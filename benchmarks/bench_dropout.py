"""Dropout alone, forward + backward: the model's InvertedDropout (modeling_kernels.py; four 16-bit numbers per 64-bit
random draw) vs F.dropout.

One base-shape activation (128 x 32 tokens x 512), p = 0.1, fp32 and bf16 (as under bf16 autocast). Also reports the
kept fraction, which should be 1 - p. Prints one JSON object.
Usage: python benchmarks/bench_dropout.py [--shape 128 32 512] [--p 0.1] [--repeats 10]
"""

import argparse
import json

import torch
import torch.nn.functional as F
from common import machine, median_seconds

from vanilla_transformer.modeling_kernels import InvertedDropout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--shape", type=int, nargs="+", default=[128, 32, 512])
    parser.add_argument("--p", type=float, default=0.1)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()

    kernels = {
        "ours": lambda x: InvertedDropout.apply(x, args.p),
        "torch_dropout": lambda x: F.dropout(x, args.p, True),
    }
    results = {"shape": args.shape, "p": args.p, "machine": machine(), "ms": {}}
    for dtype_name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        activation = torch.randn(args.shape, dtype=dtype)
        figures = {}
        for name, kernel in kernels.items():
            def step(kernel=kernel):
                x = activation.detach().requires_grad_()
                kernel(x).backward(torch.ones_like(x))
            figures[name] = round(1000 * median_seconds(step, args.repeats, warmup=2), 2)
            figures[f"{name}_kept_fraction"] = round((kernel(activation) != 0).float().mean().item(), 4)
        figures["speedup"] = round(figures["torch_dropout"] / figures["ours"], 2)
        results["ms"][dtype_name] = figures
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
