"""Attention kernels on this CPU: SDPA vs plain matmul-softmax-matmul, in training and in decoding.

Training: forward + backward over whole sequences, fp32 and bf16 autocast. Decoding: forward of one new query per
sequence against its cached keys, fp32 and bf16 tensors, from one sequence to 256 beams. Why the model picks the
plain path where it does on CPU (modeling_kernels.prefers_eager). Prints one JSON object.
Usage: python benchmarks/bench_attention.py [--batch 128] [--length 32] [--heads 4] [--head-dim 64]
"""

import argparse
import contextlib
import json

import torch
import torch.nn.functional as F
from common import machine, median_seconds


def sdpa(q, k, v):
    return F.scaled_dot_product_attention(q, k, v, is_causal=q.shape[-2] > 1)


def plain(q, k, v):
    """What the model's eager path computes: scaled scores, causal mask, fp32 softmax, weighted sum."""
    scores = q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5
    if q.shape[-2] > 1:
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


def decoding_microseconds(kernel, batch: int, heads: int, keys: int, head_dim: int, dtype, repeats: int) -> float:
    """One decoding step's attention: a single query per sequence and head against `keys` cached keys and values."""
    q = torch.randn(batch, heads, 1, head_dim, dtype=dtype)
    k, v = (torch.randn(batch, heads, keys, head_dim, dtype=dtype) for _ in range(2))
    with torch.inference_mode():
        return 1e6 * median_seconds(lambda: kernel(q, k, v), repeats, warmup=3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--length", type=int, default=32)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--decoding-heads", type=int, default=8, help="heads in the decoding case (base: 8)")
    parser.add_argument("--decoding-keys", type=int, default=32, help="cached keys per sequence when decoding")
    args = parser.parse_args()
    shape = (args.batch, args.heads, args.length, args.head_dim)
    results = {"machine": machine(), "shape": list(shape), "forward_backward_ms": {},
               "decoding": {"heads": args.decoding_heads, "keys": args.decoding_keys, "forward_us": {}}}
    for precision in ("fp32", "bf16_autocast"):
        autocast = precision != "fp32"
        sdpa_ms = milliseconds(sdpa, shape, autocast, args.repeats)
        plain_ms = milliseconds(plain, shape, autocast, args.repeats)
        results["forward_backward_ms"][precision] = {
            "sdpa": round(sdpa_ms, 2), "plain": round(plain_ms, 2), "sdpa_over_plain": round(sdpa_ms / plain_ms, 2),
        }
    for precision, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        by_batch = results["decoding"]["forward_us"][precision] = {}
        for batch in (1, 2, 4, 8, 16, 64, 256):
            times = {kernel.__name__: decoding_microseconds(kernel, batch, args.decoding_heads, args.decoding_keys,
                                                            args.head_dim, dtype, 5 * args.repeats)
                     for kernel in (sdpa, plain)}
            by_batch[batch] = {name: round(us, 1) for name, us in times.items()}
            by_batch[batch]["sdpa_over_plain"] = round(times["sdpa"] / times["plain"], 2)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
