"""`export-marian`: write a model folder of ours as a MarianMTModel folder with the same outputs."""

import argparse

NAME = "export-marian"
HELP = "our model as a MarianMTModel folder"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="a model folder of ours")
    parser.add_argument("out")


def run(args: argparse.Namespace) -> None:
    from ..convert.marian import export_marian_checkpoint

    marian = export_marian_checkpoint(args.model, args.out)
    print(f"exported {args.model} -> {args.out}: MarianMTModel, {marian.num_parameters():,} parameters")
