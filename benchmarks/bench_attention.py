"""Attention kernels on this CPU: SDPA vs plain matmul-softmax-matmul, forward + backward, fp32 and bf16 autocast.

Why the model takes the plain path under bf16 autocast on CPU. Prints one JSON object.
Usage: python benchmarks/bench_attention.py [--batch 128] [--length 32] [--heads 4] [--head-dim 64]
"""

import argparse
import contextlib
import json

import torch
import torch.nn.functional as F
from common import machine, median_seconds


def sdpa(q, k, v):
    return F.scaled_dot_product_attention(q, k, v, is_causal=True)


def plain(q, k, v):
    """What the model's eager path computes: scaled scores, causal mask, fp32 softmax, weighted sum."""
    scores = q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5
    causal = torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool).tril()
    scores = scores.masked_fill(~causal, torch.finfo(scores.dtype).min)
    return scores.softmax(dim=-1, dtype=torch.float32).to(q.dtype) @ v


def milliseconds(kernel, shape, autocast: bool, repeats: int) -> float:
    q, k, v = (torch.randn(shape, requires_grad=True) for _ in range(3))
    context = torch.autocast("cpu", dtype=torch.bfloat16) if autocast else contextlib.nullcontext()

    def step():
        with context:
            out = kernel(q, k, v)
        out.float().sum().backward()

    return 1000 * median_seconds(step, repeats, warmup=2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--length", type=int, default=32)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    shape = (args.batch, args.heads, args.length, args.head_dim)
    results = {"machine": machine(), "shape": list(shape), "forward_backward_ms": {}}
    for precision in ("fp32", "bf16_autocast"):
        autocast = precision != "fp32"
        sdpa_ms = milliseconds(sdpa, shape, autocast, args.repeats)
        plain_ms = milliseconds(plain, shape, autocast, args.repeats)
        results["forward_backward_ms"][precision] = {
            "sdpa": round(sdpa_ms, 2), "plain": round(plain_ms, 2), "sdpa_over_plain": round(sdpa_ms / plain_ms, 2),
        }
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
