"""`convert-marian`: convert a MarianMT (OPUS-MT) model folder or Hub repo into a model folder of ours."""

import argparse

NAME = "convert-marian"
HELP = "load a MarianMT/OPUS-MT checkpoint into our model"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", help="a Marian model folder or Hub repo id, e.g. Helsinki-NLP/opus-mt-de-en")
    parser.add_argument("out", help="folder to write the converted model and tokenizer to")


def run(args: argparse.Namespace) -> None:
    from ..convert.marian import convert_marian_checkpoint

    model = convert_marian_checkpoint(args.source, args.out)
    print(f"converted {args.source} -> {args.out}: {sum(p.numel() for p in model.parameters()):,} parameters, "
          f"activation {model.config.activation_function}, tokenizer copied as it is")
