"""`evaluate`: translate a split and score it with sacreBLEU's metrics (BLEU and chrF, or those --metrics names);
write the hypotheses and a JSON report."""

import argparse
from pathlib import Path

from ..results import DEFAULT_METRICS, METRIC_NAMES
from .translation_options import add_translation_arguments, translator_for

NAME = "evaluate"
HELP = "translate a test set and report sacreBLEU, chrF (and TER)"


def metrics_argument(text: str) -> tuple[str, ...]:
    """Comma-separated names of sacreBLEU's metrics (bleu, chrf, ter), each once."""
    names = tuple(name.strip().lower() for name in text.split(","))
    unknown = [name for name in names if name not in METRIC_NAMES]
    if unknown:
        raise argparse.ArgumentTypeError(f"{', '.join(map(repr, unknown))} not known: choose from "
                                         f"{', '.join(METRIC_NAMES)}, separated by commas (e.g. bleu,chrf,ter)")
    return tuple(dict.fromkeys(names))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="a model folder (with its tokenizer)")
    parser.add_argument("--data", required=True,
                        help="folder with SPLIT.SRC and SPLIT.TGT (or .jsonl/.parquet), or a Hub dataset")
    parser.add_argument("--split", default="test2016")
    parser.add_argument("--src", default="de")
    parser.add_argument("--tgt", default="en")
    add_translation_arguments(parser, batch_size=64)
    parser.add_argument("--metrics", type=metrics_argument, default=DEFAULT_METRICS,
                        help="sacreBLEU's metrics to compute, comma-separated: bleu, chrf, ter (default: bleu,chrf)")
    parser.add_argument("--out", help="folder for hypotheses and report.json (MODEL/eval-SPLIT.SRC-TGT)")


def run(args: argparse.Namespace) -> None:
    from ..evaluation_report import evaluate_and_report
    from ..model_folder import model_direction, model_source
    from ..training.data import load_parallel

    direction = model_direction(model_source(args.model))
    if direction and direction != (args.src, args.tgt):
        raise ValueError(f"--src {args.src} --tgt {args.tgt}, but {args.model} translates {direction[0]} to "
                         f"{direction[1]} (its config.json says so): pass --src {direction[0]} --tgt {direction[1]}")
    translate_lines = translator_for(args, progress=True)
    pairs = load_parallel(args.data, (args.src, args.tgt), splits=[args.split])[args.split]
    out = Path(args.out or Path(args.model) / f"eval-{args.split}.{args.src}-{args.tgt}")
    report = evaluate_and_report(translate_lines, pairs, args.split, (args.src, args.tgt), out, args.num_beams,
                                 args.length_penalty, model=args.model, engine=args.engine, data=str(args.data),
                                 device=translate_lines.device, dtype=translate_lines.dtype, metrics=args.metrics)
    scores = "  ".join(f"{METRIC_NAMES[metric]} {report[metric]:.2f}" for metric in args.metrics)
    print(f"{args.split} {args.src}->{args.tgt}: {scores}  ({report['sentences']} sentences, "
          f"{report['sentences_per_s']} sentences/s on {report['device']} in {report['dtype']})")
    for metric in args.metrics:
        print(f"{METRIC_NAMES[metric]} signature: {report[f'{metric}_signature']}")
    print(f"hypotheses and report.json in {out}")
