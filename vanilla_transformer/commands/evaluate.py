"""`evaluate`: translate a split and score it with sacreBLEU and chrF; write the hypotheses and a JSON report."""

import argparse
from pathlib import Path

from .translation_options import add_translation_arguments, translator_for

NAME = "evaluate"
HELP = "translate a test set and report sacreBLEU and chrF"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="a model folder (with its tokenizer)")
    parser.add_argument("--data", required=True,
                        help="folder with SPLIT.SRC and SPLIT.TGT (or .jsonl/.parquet), or a Hub dataset")
    parser.add_argument("--split", default="test2016")
    parser.add_argument("--src", default="de")
    parser.add_argument("--tgt", default="en")
    add_translation_arguments(parser, batch_size=64)
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
                                 device=translate_lines.device, dtype=translate_lines.dtype)
    print(f"{args.split} {args.src}->{args.tgt}: sacreBLEU {report['bleu']:.2f}  chrF {report['chrf']:.2f}  "
          f"({report['sentences']} sentences, {report['sentences_per_s']} sentences/s on {report['device']} in "
          f"{report['dtype']})")
    print(f"BLEU signature: {report['bleu_signature']}")
    print(f"chrF signature: {report['chrf_signature']}")
    print(f"hypotheses and report.json in {out}")
