"""generate() speed: our model vs MarianMTModel with identical shape and weights, same inputs, same run.

Prints one JSON object. Asserts that both models produce the same tokens.
Usage: python benchmarks/bench_generate.py [--shape base] [--repeats 3]
"""

import argparse
import json

import torch
from common import machine, marian_and_ours, median_seconds


def measure(model, src, mask, settings, repeats):
    with torch.inference_mode():
        out = model.generate(src, attention_mask=mask, **settings)
        seconds = median_seconds(lambda: model.generate(src, attention_mask=mask, **settings), repeats, warmup=0)
    new_tokens = (out.shape[1] - 1) * out.shape[0]
    return out, {"generated_tokens_per_s": round(new_tokens / seconds, 1),
                 "ms_per_step": round(1000 * seconds / (out.shape[1] - 1), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--shape", default="base", choices=["small", "base"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--new-tokens", type=int, default=32)
    args = parser.parse_args()

    marian, ours = marian_and_ours(args.shape)
    marian.eval(), ours.eval()
    generator = torch.Generator().manual_seed(0)
    results = {"shape": args.shape, "machine": machine(), "cases": {}}
    for batch, length in ((64, 24), (1, 24)):
        src = torch.randint(4, marian.config.vocab_size, (batch, length), generator=generator)
        mask = torch.ones_like(src)
        for name, beams in (("greedy", 1), ("beam4", 4)):
            if batch == 1 and beams == 4:
                continue
            # Fixed length (no early stop at </s>), so both models do the same amount of work.
            settings = dict(num_beams=beams, max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens,
                            use_cache=True, early_stopping=False, length_penalty=1.0)
            marian_out, marian_figures = measure(marian, src, mask, settings, args.repeats)
            ours_out, our_figures = measure(ours, src, mask, settings, args.repeats)
            assert torch.equal(marian_out, ours_out), f"outputs differ for batch {batch} {name}"
            results["cases"][f"batch{batch}_{name}"] = {
                "ours": our_figures,
                "marian": marian_figures,
                "ratio_tokens_per_s": round(our_figures["generated_tokens_per_s"]
                                            / marian_figures["generated_tokens_per_s"], 3),
                "identical_tokens": True,
            }
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
