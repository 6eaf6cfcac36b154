"""Training speed: our model vs MarianMTModel with identical shape, same random batches, same run.

One step = forward + backward + AdamW update. Reports target tokens/s, the ratio ours/Marian, our achieved FLOP/s
against the matmul peak measured here, and peak RSS. Prints one JSON object.
Usage: python benchmarks/bench_train.py [--shapes small base] [--steps 5] [--bf16]
"""

import argparse
import contextlib
import json

import torch
from common import machine, marian_and_ours, matmul_peak_flops, median_seconds, peak_rss_mb


def training_flops_per_step(config, batch: int, src_len: int, tgt_len: int) -> float:
    """Matmul FLOPs of one training step: 3x the forward's (forward, and backward for inputs and weights)."""
    d, f, v = config.d_model, config.d_ff, config.target_vocab_size
    encoder = config.encoder_layers * batch * src_len * (2 * 4 * d * d + 2 * 2 * d * f + 2 * 2 * src_len * d)
    decoder = config.decoder_layers * batch * tgt_len * (
        2 * 4 * d * d + 2 * 2 * tgt_len * d  # self-attention
        + 2 * 2 * d * d + 2 * 2 * src_len * d  # cross-attention: queries, output, scores; keys/values below
        + 2 * 2 * d * f
    ) + config.decoder_layers * batch * src_len * 2 * 2 * d * d
    return 3 * (encoder + decoder + 2 * batch * tgt_len * d * v)


def step_seconds(model, batches, autocast: bool, repeats: int) -> float:
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    context = torch.autocast("cpu", dtype=torch.bfloat16) if autocast else contextlib.nullcontext()
    iterator = iter(batches * (repeats + 2))

    def step():
        src, labels = next(iterator)
        with context:
            loss = model(input_ids=src, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return median_seconds(step, repeats, warmup=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--shapes", nargs="+", default=["small", "base"], choices=["small", "base"])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--length", type=int, default=32)
    parser.add_argument("--bf16", action="store_true", help="also measure with bf16 autocast")
    args = parser.parse_args()

    results = {"machine": machine(), "batch": [args.batch, args.length], "cases": {}}
    results["peak_matmul_gflops"] = {"fp32": round(matmul_peak_flops(torch.float32) / 1e9, 1)}
    if args.bf16:
        results["peak_matmul_gflops"]["bf16"] = round(matmul_peak_flops(torch.bfloat16) / 1e9, 1)
    for shape in args.shapes:
        marian, ours = marian_and_ours(shape)
        generator = torch.Generator().manual_seed(0)
        vocab = ours.config.vocab_size
        batches = [(torch.randint(4, vocab, (args.batch, args.length), generator=generator),
                    torch.randint(4, vocab, (args.batch, args.length), generator=generator)) for _ in range(3)]
        tokens = args.batch * args.length
        flops = training_flops_per_step(ours.config, args.batch, args.length, args.length)
        for precision in ["fp32"] + (["bf16"] if args.bf16 else []):
            autocast = precision == "bf16"
            marian_s = step_seconds(marian, batches, autocast, args.steps)
            ours_s = step_seconds(ours, batches, autocast, args.steps)
            results["cases"][f"{shape}_{precision}"] = {
                "ours_target_tokens_per_s": round(tokens / ours_s),
                "marian_target_tokens_per_s": round(tokens / marian_s),
                "ratio": round(marian_s / ours_s, 3),
                "ours_gflops": round(flops / ours_s / 1e9, 1),
                "ours_fraction_of_peak": round(flops / ours_s / 1e9 / results["peak_matmul_gflops"][precision], 3),
            }
        del marian, ours
    results["peak_rss_mb_both_models"] = round(peak_rss_mb())
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
