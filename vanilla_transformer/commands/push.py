"""`push`: upload a training run's model to a Hub repo: weights, configs, tokenizer, code, pipeline and model card."""

import argparse
from pathlib import Path

NAME = "push"
HELP = "upload a run's model, tokenizer, code and model card to the Hub"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", help="a training run folder (with model/ and results.json)")
    parser.add_argument("repo_id", help="e.g. your-name/transformer-multi30k-de-en")
    parser.add_argument("--private", action="store_true", help="create the repo as private")
    parser.add_argument("--revision", help="a branch to commit to (created from main if new); default main")
    parser.add_argument("--ctranslate2", metavar="QUANTIZATION",
                        choices=["int8", "int8_float32", "float32", "bfloat16"],
                        help="also export for CTranslate2 with these weights, into the repo's ctranslate2/ folder")


def run(args: argparse.Namespace) -> None:
    from ..hub.push import push

    info = push(args.run_dir, args.repo_id, private=args.private, revision=args.revision,
                ctranslate2=args.ctranslate2)
    print(f"pushed {Path(args.run_dir) / 'model'} to {args.repo_id} ({args.revision or 'main'}): {info.commit_url}")
