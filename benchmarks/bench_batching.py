"""Token-bucketed batches vs Seq2SeqTrainer's default random batches, on Multi30k train, same model, same run.

Reports the padding fraction over a whole epoch and the measured real (non-pad) target tokens/s of training steps
(forward + backward + Adam) on the `small` model. The random batches have the token batches' mean size.
Prints one JSON object. Usage: python benchmarks/bench_batching.py [--data ../shared/data] [--steps 20]
"""

import argparse
import json
import os

import torch
from common import machine, multi30k_token_batches, train_steps
from torch.utils.data import BatchSampler, RandomSampler
from transformers import DataCollatorForSeq2Seq

from vanilla_transformer import VanillaTransformerConfig, VanillaTransformerForConditionalGeneration


def padding_fraction(batches: list[list[int]], src_lengths, tgt_lengths) -> float:
    """Share of the padded source + target positions that hold padding, over these batches."""
    real = padded = 0
    for batch in batches:
        for lengths in (src_lengths[batch], tgt_lengths[batch]):
            real += int(lengths.sum())
            padded += int(lengths.max()) * len(batch)
    return 1 - real / padded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", default=os.environ.get("VANILLA_TRANSFORMER_DATA", "../shared/data"))
    parser.add_argument("--max-tokens", type=int, default=4096)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()

    tokenizer, dataset, token_batches, src_lengths, tgt_lengths = multi30k_token_batches(args.data, args.max_tokens)
    mean_size = round(len(dataset) / len(token_batches))
    generator = torch.Generator().manual_seed(0)
    random_batches = list(BatchSampler(RandomSampler(range(len(dataset)), generator=generator), mean_size, False))

    torch.manual_seed(0)
    config = VanillaTransformerConfig.from_tokenizer(tokenizer, preset="small")
    model = VanillaTransformerForConditionalGeneration(config)
    collator = DataCollatorForSeq2Seq(tokenizer, model=model)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    token_speed, _ = train_steps(model, (collator([dataset[j] for j in b]) for b in token_batches[: args.steps + 1]))
    model.load_state_dict(initial)
    random_speed, _ = train_steps(model, (collator([dataset[j] for j in b]) for b in random_batches[: args.steps + 1]))
    result = {
        "sentences": len(dataset),
        "batches_per_epoch": {"token_bucketed": len(token_batches), "random": len(random_batches)},
        "mean_batch_size": mean_size,
        "padding_fraction": {"token_bucketed": round(padding_fraction(token_batches, src_lengths, tgt_lengths), 4),
                             "random": round(padding_fraction(random_batches, src_lengths, tgt_lengths), 4)},
        "real_target_tokens_per_s": {"token_bucketed": round(token_speed), "random": round(random_speed)},
        "ratio_tokens_per_s": round(token_speed / random_speed, 3),
        "steps_measured": args.steps,
        "machine": machine(),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
