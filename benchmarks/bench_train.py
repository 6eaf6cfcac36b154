"""Training speed: our model vs MarianMTModel with identical shape, same random batches, same run.

One step = forward + backward + AdamW update. Reports target tokens/s on random batches, the ratio ours/Marian,
our achieved FLOP/s against the matmul peak measured here, each model's peak RSS (one process per model), and with
--data a run on real Multi30k token batches: non-pad target tokens/s of both models, and our loss after N steps in
fp32 and in bf16 autocast from the same start. Prints one JSON object.
Usage: python benchmarks/bench_train.py [--shapes small base] [--steps 5] [--bf16] [--data ../shared/data]
"""

import argparse
import contextlib
import json
import subprocess
import sys

import torch
from common import (
    machine,
    marian_and_ours,
    marian_model,
    matmul_peak_flops,
    median_seconds,
    multi30k_token_batches,
    our_model,
    train_steps,
)
from transformers import DataCollatorForSeq2Seq

from vanilla_transformer.convert.marian import convert_marian
from vanilla_transformer.training.memory import peak_rss_mb


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


def random_pairs(vocab: int, batch: int, length: int, count: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """count (source, labels) batches of random non-special token ids, the same in every run."""
    generator = torch.Generator().manual_seed(0)
    return [(torch.randint(4, vocab, (batch, length), generator=generator),
             torch.randint(4, vocab, (batch, length), generator=generator)) for _ in range(count)]


def training_rss_mb(which: str, shape: str, batch: int, length: int) -> float:
    """Peak RSS of a process that builds one model and trains it 3 steps (fp32): run in a fresh interpreter."""
    model = our_model(shape) if which == "ours" else marian_model(shape)
    step_seconds(model, random_pairs(model.config.vocab_size, batch, length, 1), autocast=False, repeats=2)
    return peak_rss_mb()


def real_data_run(data: str, steps: int, speed_steps: int) -> dict:
    """Multi30k token batches, small shape: both models' non-pad target tokens/s, and our loss fp32 vs bf16."""
    tokenizer, dataset, batches, _, _ = multi30k_token_batches(data)

    def fresh_marian():
        marian = marian_model("small")
        marian.resize_token_embeddings(len(tokenizer))
        return marian

    collator = DataCollatorForSeq2Seq(tokenizer, model=None, label_pad_token_id=-100)
    inputs = [collator([dataset[j] for j in batch]) for batch in batches[: steps + 1]]

    result = {"steps": steps, "batches_max_tokens": 4096}
    for precision in ("fp32", "bf16"):
        autocast = precision == "bf16"
        torch.manual_seed(0)  # the same start and the same dropout masks in fp32 and bf16
        ours_speed, ours_loss = train_steps(convert_marian(fresh_marian()), inputs, autocast, lr=5e-4)
        marian_speed, _ = train_steps(fresh_marian(), inputs[: speed_steps + 1], autocast, lr=5e-4)
        result[precision] = {"ours_nonpad_target_tokens_per_s": round(ours_speed),
                             "marian_nonpad_target_tokens_per_s": round(marian_speed),
                             "ratio": round(ours_speed / marian_speed, 3), f"ours_loss_after_{steps}_steps": ours_loss}
    fp32_loss, bf16_loss = (result[p][f"ours_loss_after_{steps}_steps"] for p in ("fp32", "bf16"))
    result["bf16_loss_relative_difference"] = round(abs(bf16_loss - fp32_loss) / fp32_loss, 4)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--shapes", nargs="+", default=["small", "base"], choices=["small", "base"])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--length", type=int, default=32)
    parser.add_argument("--bf16", action="store_true", help="also measure with bf16 autocast")
    parser.add_argument("--data", help="shared data folder: also train on real Multi30k token batches")
    parser.add_argument("--real-steps", type=int, default=50)
    parser.add_argument("--rss-of", choices=["ours", "marian"], help=argparse.SUPPRESS)  # the RSS child process
    args = parser.parse_args()
    if args.rss_of:
        print(training_rss_mb(args.rss_of, args.shapes[0], args.batch, args.length))
        return

    results = {"machine": machine(), "batch": [args.batch, args.length], "cases": {}}
    results["peak_matmul_gflops"] = {"fp32": round(matmul_peak_flops(torch.float32) / 1e9, 1)}
    if args.bf16:
        results["peak_matmul_gflops"]["bf16"] = round(matmul_peak_flops(torch.bfloat16) / 1e9, 1)
    for shape in args.shapes:
        marian, ours = marian_and_ours(shape)
        batches = random_pairs(ours.config.vocab_size, args.batch, args.length, 3)
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
    results["peak_training_rss_mb"] = {}
    for shape in args.shapes:
        rss = {}
        for which in ("ours", "marian"):
            child = [sys.executable, __file__, "--rss-of", which, "--shapes", shape, "--batch", str(args.batch),
                     "--length", str(args.length)]
            rss[which] = round(float(subprocess.run(child, capture_output=True, text=True, check=True).stdout))
        rss["ratio"] = round(rss["ours"] / rss["marian"], 3)
        results["peak_training_rss_mb"][shape] = rss
    if args.data:
        results["multi30k_small"] = real_data_run(args.data, args.real_steps, speed_steps=10)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
