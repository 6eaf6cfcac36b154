"""What the generation guards (modeling.GUARDS: the length bound per sentence, the repeated n-gram guard) cost per
decoding step: their logits processors timed on the sequences of a generate() run, beside that run's own ms per step
with the guards off; our model in the given shape (random weights), batch 1 greedy and batch 64 beam 4. Prints JSON.

    python benchmarks/bench_guards.py [--shape small] [--new-tokens 32] [--repeats 3]
"""

import argparse
import json
import time

import torch
from bench_generate import fixed_length
from common import machine, median_seconds, our_model

from vanilla_transformer.modeling import guard_processors

CASES = (("batch1_greedy", 1, 1), ("batch64_beam4", 64, 4))


def guard_ms_per_step(model, config, src, mask, output) -> float:
    """The guards' processors applied at every step of `output` (the prefix so far, scores of the vocabulary's
    width), as generate() applies them: milliseconds per step."""
    processors = guard_processors(model.config, config, 1, src, {"attention_mask": mask})
    scores = torch.randn(output.shape[0], model.config.vocab_size)
    start = time.perf_counter()
    for step in range(1, output.shape[1]):
        for processor in processors:
            processor(output[:, :step], scores)
    return 1000 * (time.perf_counter() - start) / (output.shape[1] - 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", default="small", choices=["small", "base"])
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    model = our_model(args.shape).eval()
    generator = torch.Generator().manual_seed(0)
    results = {"shape": args.shape, "source_length": 24, "new_tokens": args.new_tokens, "machine": machine(),
               "cases": {}}
    for name, batch, beams in CASES:
        src = torch.randint(4, model.config.vocab_size, (batch, 24), generator=generator)
        mask = torch.ones_like(src)
        config = fixed_length(model, beams, args.new_tokens)
        config.update(max_length_a=None, repetition_guard_ngram_size=None)
        with torch.inference_mode():
            output = model.generate(src, attention_mask=mask, generation_config=config)
            step = 1000 * median_seconds(lambda: model.generate(src, attention_mask=mask, generation_config=config),
                                         args.repeats) / (output.shape[1] - 1)
            rows = output.repeat_interleave(beams, dim=0)  # beam search's processors see every beam
            guards = min(guard_ms_per_step(model, model.generation_config, src, mask, rows)
                         for _ in range(args.repeats))
        results["cases"][name] = {"ms_per_step": round(step, 3), "guards_ms_per_step": round(guards, 3),
                                  "guards_share_of_step": round(guards / step, 4)}
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
