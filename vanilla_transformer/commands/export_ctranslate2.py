"""`export-ctranslate2`: export a model folder for the CTranslate2 engine (the optional extra
`vanilla-transformer[ctranslate2]`)."""

import argparse

NAME = "export-ctranslate2"
HELP = "export a model folder for the CTranslate2 engine"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="a saved or converted model folder (with its tokenizer), or a Hub id")
    parser.add_argument("out")
    parser.add_argument("--quantization", choices=["int8", "int8_float32", "float32", "bfloat16", "float16"])
    parser.add_argument("--force", action="store_true", help="replace OUT if it exists")


def run(args: argparse.Namespace) -> None:
    from ..engines.ctranslate2 import export

    out = export(args.model, args.out, quantization=args.quantization, force=args.force)
    print(f"exported {args.model} -> {out} ({args.quantization or 'float32'} weights, tokenizer beside them)")
