"""Translation speed of a trained model on Multi30k test2016: sentences/s with beam 4 and greedy, and their BLEU,
with the weights loaded in fp32 and in bf16 (from_pretrained(..., dtype=torch.bfloat16)).

Prints one JSON object.
Usage: python benchmarks/bench_evaluate.py [MODEL_DIR] [--data ../shared/data] [--dtypes fp32 bf16]
"""

import argparse
import json
import os
import time
from pathlib import Path

import torch
from common import machine
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

import vanilla_transformer  # noqa: F401  (registers the Auto classes)
from vanilla_transformer.corpus import read_lines
from vanilla_transformer.evaluation import score, translate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("model", nargs="?", default="runs/multi30k-de-en-small/model")
    parser.add_argument("--data", default=os.environ.get("VANILLA_TRANSFORMER_DATA", "../shared/data"))
    parser.add_argument("--src", default="de")
    parser.add_argument("--tgt", default="en")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    args = parser.parse_args()

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    folder = Path(args.data) / "multi30k"
    sources, references = read_lines(folder / f"test2016.{args.src}"), read_lines(folder / f"test2016.{args.tgt}")
    result = {"model": args.model, "sentences": len(sources), "batch_size": args.batch_size, "machine": machine()}
    for dtype in args.dtypes:
        model = AutoModelForSeq2SeqLM.from_pretrained(
            args.model, dtype=torch.bfloat16 if dtype == "bf16" else torch.float32).eval()
        for name, beams in (("beam4", 4), ("greedy", 1)):
            start = time.perf_counter()
            hypotheses = translate(model, tokenizer, sources, batch_size=args.batch_size, num_beams=beams,
                                   length_penalty=0.6, progress=False)
            seconds = time.perf_counter() - start
            result[f"{dtype}_{name}"] = {"sentences_per_s": round(len(sources) / seconds, 1),
                                         "seconds": round(seconds, 1),
                                         "bleu": round(score(hypotheses, references)["bleu"], 2)}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
