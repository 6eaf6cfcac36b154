"""Robustness of a model to text as people type it (issue 31): a parallel test set made ALL CAPS, lowercase without
final punctuation, and about one typo per 15 characters (seeded), translated with a chosen engine; prints JSON with
BLEU and chrF (sacrebleu), their ratios to the clean set, degeneration rates, and a short-inputs set's exact matches.

    python benchmarks/bench_robustness.py --model runs/demo/model --source test2016.de --reference test2016.en
"""

import argparse
import csv
import json
import random
import re
import sys
from collections import Counter
from pathlib import Path

import sacrebleu

SHORT_INPUTS = Path(__file__).parent / "data/short_inputs.de-en.tsv"
TYPO_RATE = 1 / 15
FINAL_PUNCTUATION = ".!?;:,…"
# Neighbouring keys on a German QWERTZ keyboard, for typos that hit the key beside.
KEY_ROWS = ["1234567890ß", "qwertzuiopü", "asdfghjklöä", "yxcvbnm"]
NEIGHBOURS = {key: "".join(row[j] for j in (i - 1, i + 1) if 0 <= j < len(row))
              for row in KEY_ROWS for i, key in enumerate(row)}
REPEATED_CHARACTERS = re.compile(r"(\S{1,3})\1{3,}")  # "NNNN", "TOTOTOTO": a piece repeated 4 times in a row


def all_caps(line: str, rng: random.Random) -> str:
    return line.upper()


def lower_unpunctuated(line: str, rng: random.Random) -> str:
    return line.lower().rstrip().rstrip(FINAL_PUNCTUATION).rstrip()


def typos(line: str, rng: random.Random, rate: float = TYPO_RATE) -> str:
    """About one edit per 1/rate characters, each a swap with the next, a drop, a repeat or a neighbouring key."""
    out, i = [], 0
    while i < len(line):
        char = line[i]
        if char.isspace() or rng.random() >= rate:
            out.append(char)
        else:
            edit = rng.choice(("swap", "drop", "repeat", "neighbour"))
            if edit == "swap" and i + 1 < len(line) and not line[i + 1].isspace():
                out += [line[i + 1], char]
                i += 1
            elif edit == "drop":
                pass
            elif edit == "repeat":
                out += [char, char]
            else:
                near = NEIGHBOURS.get(char.lower(), "")
                key = rng.choice(near) if near else char + char
                out.append(key.upper() if char.isupper() else key)
        i += 1
    return "".join(out)


VARIANTS = {"all_caps": all_caps, "lower_unpunctuated": lower_unpunctuated, "typos": typos}


def make_variant(name: str, lines: list[str], seed: int) -> list[str]:
    """The variant of every line, seeded per line: the same lines give the same variant."""
    return [VARIANTS[name](line, random.Random(f"{seed}:{number}")) for number, line in enumerate(lines)]


def ngram_counts(words: list[str], n: int) -> Counter:
    return Counter(tuple(words[i:i + n]) for i in range(len(words) - n + 1))


def repeats(text: str) -> bool:
    """A word n-gram (n = 2 to 4) that occurs 3 times or more, or a piece of 1-3 characters 4 times in a row."""
    words = text.lower().split()
    return any(max(ngram_counts(words, n).values(), default=0) >= 3 for n in (2, 3, 4)) or bool(
        REPEATED_CHARACTERS.search(text))


def degenerate_repetition(source: str, output: str) -> bool:
    """An output that repeats (repeats()) where its source does not."""
    return repeats(output) and not repeats(source)


def too_long(source: str, output: str) -> bool:
    """An output of more than 2x the source's words + 3."""
    return len(output.split()) > 2 * len(source.split()) + 3


def scores(outputs: list[str], references: list[str]) -> dict:
    return {"bleu": round(sacrebleu.corpus_bleu(outputs, [references]).score, 2),
            "chrf": round(sacrebleu.corpus_chrf(outputs, [references]).score, 2)}


def degeneration(sources: list[str], outputs: list[str]) -> dict:
    count = len(outputs) or 1
    return {"repetition_rate": round(sum(map(degenerate_repetition, sources, outputs)) / count, 4),
            "too_long_rate": round(sum(map(too_long, sources, outputs)) / count, 4)}


def robustness(translate, sources: list[str], references: list[str], seed: int) -> dict:
    """Scores of the clean set and of each variant, with ratios to clean, and degeneration rates."""
    clean = translate(sources)
    report = {"clean": {**scores(clean, references), **degeneration(sources, clean), "sentences": len(sources)}}
    for name in VARIANTS:
        varied = make_variant(name, sources, seed)
        outputs = translate(varied)
        entry = {**scores(outputs, references), **degeneration(varied, outputs)}
        if name == "all_caps":  # the goal is output in the input's casing
            upper = scores(outputs, [reference.upper() for reference in references])
            entry["against_uppercased_references"] = upper
            entry["bleu_ratio_uppercased"] = ratio(upper["bleu"], report["clean"]["bleu"])
        entry["bleu_ratio"] = ratio(entry["bleu"], report["clean"]["bleu"])
        entry["chrf_ratio"] = ratio(entry["chrf"], report["clean"]["chrf"])
        entry["examples"] = [{"source": s, "output": o} for s, o in list(zip(varied, outputs))[:3]]
        report[name] = entry
    return report


def ratio(value: float, clean: float) -> float | None:
    return round(value / clean, 3) if clean else None


def read_short_inputs(path: Path) -> list[dict]:
    with path.open(encoding="utf-8", newline="") as file:
        rows = list(csv.DictReader(file, delimiter="\t", quoting=csv.QUOTE_NONE))
    for number, row in enumerate(rows, start=2):
        if not row.get("source") or not row.get("reference") or row.get("kind") not in ("word", "number", "name"):
            raise SystemExit(f"{path}:{number}: expected source, reference and kind (word, number or name)")
    return rows


def short_inputs(translate, rows: list[dict]) -> dict:
    """Exact matches of the short inputs, whether numbers and names come through unchanged, how many outputs are
    sentences invented around them, and the failures."""
    outputs = translate([row["source"] for row in rows])

    def loose(text: str) -> str:
        return text.strip().rstrip(FINAL_PUNCTUATION).casefold()

    def kept(row: dict, output: str) -> bool:  # every number or name of the reference, as a whole word of the output
        pieces = re.findall(r"\d+(?:[.,]\d+)?", row["reference"]) if row["kind"] == "number" else \
            [word.strip(",!?.") for word in row["reference"].split() if word[:1].isupper()]
        return all(re.search(rf"(?<!\w){re.escape(piece)}(?!\w)", output) for piece in pieces)

    def invented(row: dict, output: str) -> bool:  # a sentence made up around it: 3+ words more than the reference
        return len(output.split()) > len(row["reference"].split()) + 2

    exact = [output.strip() == row["reference"] for row, output in zip(rows, outputs)]
    report = {"inputs": len(rows), "exact_match_rate": round(sum(exact) / len(rows), 3),
              "loose_match_rate": round(sum(loose(o) == loose(r["reference"]) for r, o in zip(rows, outputs))
                                        / len(rows), 3),
              "invented_rate": round(sum(map(invented, rows, outputs)) / len(rows), 3),
              "too_long_rate": degeneration([r["source"] for r in rows], outputs)["too_long_rate"]}
    for kind in ("number", "name"):
        chosen = [(row, output) for row, output in zip(rows, outputs) if row["kind"] == kind]
        report[f"{kind}s_kept"] = f"{sum(kept(row, output) for row, output in chosen)}/{len(chosen)}"
    report["failures"] = [{"source": r["source"], "reference": r["reference"], "output": o}
                          for r, o, hit in zip(rows, outputs, exact) if not hit]
    return report


def read_lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise SystemExit(f"{path}: {error}") from None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="a model folder (or a CTranslate2 export for that engine)")
    parser.add_argument("--engine", default="torch", choices=("torch", "ctranslate2"))
    parser.add_argument("--source", type=Path, required=True, help="the test set's source lines")
    parser.add_argument("--reference", type=Path, required=True, help="their reference translations")
    parser.add_argument("--limit", type=int, help="the first N lines only")
    parser.add_argument("--seed", type=int, default=1, help="the seed of the variants")
    parser.add_argument("--short-inputs", type=Path, default=SHORT_INPUTS, help="TSV: source, reference, kind")
    parser.add_argument("--num-beams", type=int, default=4)
    parser.add_argument("--length-penalty", type=float, default=0.6)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--compute-type", default="default", help="the ctranslate2 engine's, e.g. int8")
    parser.add_argument("--guards", choices=("model", "on", "off"), default="model",
                        help="the generation guards (length bound per sentence, repeated n-gram guard): as the "
                             "model's generation_config has them, on with the defaults (modeling.GUARDS), or off")
    parser.add_argument("--recase", choices=("model", "off"), default="model",
                        help="input all in capitals or all in lower case: recased by the model's casing.json where it "
                             "has one (the pipeline's and translate's default), or translated as it is")
    args = parser.parse_args(argv)

    sources, references = read_lines(args.source), read_lines(args.reference)
    if len(sources) != len(references):
        raise SystemExit(f"{args.source} has {len(sources)} lines but {args.reference} has {len(references)}")
    if args.limit:
        sources, references = sources[: args.limit], references[: args.limit]
    from vanilla_transformer.translators import line_translator

    translator = line_translator(args.model, args.engine, num_beams=args.num_beams,
                                 length_penalty=args.length_penalty, batch_size=args.batch_size,
                                 compute_type=args.compute_type, recase=args.recase == "model")
    from vanilla_transformer.modeling import GUARDS, generation_guards

    guards = {"model": {}, "on": GUARDS, "off": dict.fromkeys(GUARDS)}[args.guards]

    def translate(lines: list[str]) -> list[str]:
        with generation_guards(**guards):
            return translator(lines)

    report = {"model": args.model, "engine": args.engine, "source": str(args.source), "seed": args.seed,
              "guards": args.guards, "recase": args.recase,
              **robustness(translate, sources, references, args.seed),
              "short_inputs": short_inputs(translate, read_short_inputs(args.short_inputs))}
    json.dump(report, sys.stdout, indent=2, ensure_ascii=False)
    print()


if __name__ == "__main__":
    main()
