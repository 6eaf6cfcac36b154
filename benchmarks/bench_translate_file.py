"""`translate --input/--output` against evaluate's translation path: sentences/s on the same lines with the same engine
and settings, and the file path's peak RSS at two file sizes (flat: the second within 10% of the first).

The lines are Multi30k train sources repeated to --lines. Each measurement runs in a process of its own, so that its
peak RSS is its own: the file path (vanilla_transformer.file_translation, windows read, translated and written with
its progress record), evaluate's path (all lines in memory, translated in one call, as evaluate_split does), and
evaluate's path on test2016 (the 1,000 lines `evaluate` scores).

MODEL is a model folder (an exported CTranslate2 folder with --engine ctranslate2), or `tiny`: an untrained tiny model
with a tokenizer learned on Multi30k val and outputs cut to --max-new-tokens tokens, for measuring
the RSS at a million lines in minutes.

Prints one JSON object.
Usage: python benchmarks/bench_translate_file.py MODEL [--engine ctranslate2 --compute-type int8] [--lines 100000]
       [--paths file evaluate test2016] [--rss-lines 100000 1000000] [--num-beams 4] [--batch-size 64]
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import machine

DATA = os.environ.get("VANILLA_TRANSFORMER_DATA", "../shared/data")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="a model folder, or `tiny` (untrained, for the RSS at a million lines)")
    parser.add_argument("--engine", choices=("torch", "ctranslate2"), default="torch")
    parser.add_argument("--compute-type", default="default", help="ctranslate2's, e.g. int8")
    parser.add_argument("--data", default=DATA)
    parser.add_argument("--lines", type=int, default=100_000, help="lines for the speed comparison")
    parser.add_argument("--paths", nargs="*", default=["file", "evaluate", "test2016"],
                        choices=("file", "evaluate", "test2016"), help="the speed measurements to make")
    parser.add_argument("--rss-lines", type=int, nargs="*", default=[],
                        help="file sizes (lines) to measure the file path's peak RSS at, e.g. 100000 1000000")
    parser.add_argument("--num-beams", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=64, help="evaluate's default")
    parser.add_argument("--window", type=int, default=2000)
    parser.add_argument("--max-new-tokens", type=int, default=4, help="`tiny` only: its outputs' tokens")
    parser.add_argument("--work", help="folder for the input and output files (default: a temporary one)")
    parser.add_argument("--child", choices=("file", "evaluate", "test2016"), help=argparse.SUPPRESS)
    parser.add_argument("--input", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args)))
        return
    with tempfile.TemporaryDirectory(dir=args.work) as work:
        work = Path(work)
        if args.model == "tiny":
            args.model = str(tiny_model(work / "tiny", args.data, args.max_new_tokens))
        result = {"model": args.model, "engine": args.engine, "compute_type": args.compute_type,
                  "num_beams": args.num_beams, "batch_size": args.batch_size, "window": args.window,
                  "machine": machine()}
        for path in args.paths:
            lines = 1000 if path == "test2016" else args.lines
            result[path] = child(args, path, source_file(work, args.data, lines))
        if "file" in result and "evaluate" in result:
            result["file_vs_evaluate"] = round(result["file"]["sentences_per_s"] /
                                               result["evaluate"]["sentences_per_s"], 3)
        if "file" in result and "test2016" in result:
            result["file_vs_evaluate_test2016"] = round(result["file"]["sentences_per_s"] /
                                                        result["test2016"]["sentences_per_s"], 3)
        rss = {lines: child(args, "file", source_file(work, args.data, lines)) for lines in args.rss_lines}
        if rss:
            result["rss"] = {str(lines): run for lines, run in rss.items()}
            peaks = [run["peak_rss_mib"] for run in rss.values()]
            result["rss_largest_vs_smallest"] = round(peaks[-1] / peaks[0], 3)
    print(json.dumps(result, indent=2))


def child(args: argparse.Namespace, path: str, source: Path) -> dict:
    """One measurement in a fresh process (its own peak RSS)."""
    command = [sys.executable, __file__, args.model, "--child", path, "--input", str(source), "--engine", args.engine,
               "--compute-type", args.compute_type, "--num-beams", str(args.num_beams), "--batch-size",
               str(args.batch_size), "--window", str(args.window)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{path} on {source}: {done.stderr[-2000:]}")
    return json.loads(done.stdout.splitlines()[-1])


def source_file(work: Path, data: str, lines: int) -> Path:
    """Multi30k's 29,000 train sources, repeated to `lines` lines (test2016's 1,000 for 1000)."""
    path = work / f"source-{lines}.de"
    if not path.exists():
        folder = Path(data) / "multi30k"
        if lines == 1000:
            path.write_bytes((folder / "test2016.de").read_bytes())
        else:
            train = (folder / "train.de").read_text(encoding="utf-8").splitlines()
            with path.open("w", encoding="utf-8") as file:
                for number in range(lines):
                    file.write(train[number % len(train)] + "\n")
    return path


def tiny_model(folder: Path, data: str, max_new_tokens: int) -> Path:
    """An untrained tiny model with a tokenizer learned on Multi30k val, its outputs cut short."""
    import torch

    from vanilla_transformer import (VanillaTransformerConfig, VanillaTransformerForConditionalGeneration,
                                     train_tokenizer)

    val = Path(data) / "multi30k"
    tokenizer = train_tokenizer([val / "val.de", val / "val.en"], vocab_size=500, show_progress=False)
    torch.manual_seed(0)
    config = VanillaTransformerConfig.from_preset("tiny", vocab_size=len(tokenizer), max_position_embeddings=256)
    model = VanillaTransformerForConditionalGeneration(config)
    # Not the paper's source length + 50: an untrained model seldom ends, and the file size is what is measured.
    model.generation_config.max_length_offset = None
    model.generation_config.max_new_tokens = max_new_tokens
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def measure(args: argparse.Namespace) -> dict:
    """The child: translate --input by one path, timed from the loaded model to the last line."""
    from vanilla_transformer.corpus import read_lines
    from vanilla_transformer.file_translation import WINDOWS_AT_ONCE, translate_file
    from vanilla_transformer.translators import line_translator

    translate_lines = line_translator(args.model, args.engine, num_beams=args.num_beams, length_penalty=0.6,
                                      batch_size=args.batch_size, compute_type=args.compute_type)
    source = Path(args.input)
    loaded_rss = rss_mib()
    start = time.perf_counter()
    if args.child == "file":
        output = source.with_suffix(".out")
        translate_file(translate_lines, source, output, {"model": args.model}, window=args.window, overwrite=True,
                       progress=False, windows_at_once=WINDOWS_AT_ONCE[args.engine])
        lines = output.read_bytes().count(b"\n")
        output.unlink()
    else:
        lines = len(translate_lines(read_lines(source)))
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"lines": lines, "seconds": round(seconds, 1), "sentences_per_s": round(lines / seconds, 1),
            "loaded_rss_mib": round(loaded_rss), "peak_rss_mib": round(peak), "device": translate_lines.device,
            "dtype": translate_lines.dtype}


def rss_mib() -> float:
    """This process's resident memory now."""
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


if __name__ == "__main__":
    main()
