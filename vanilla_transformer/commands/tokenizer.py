"""`tokenizer train`: train the joint subword vocabulary on DATA/SPLIT.{lang} for every language, and save it."""

import argparse
import time
from pathlib import Path

from .argument_types import positive_int

NAME = "tokenizer"
HELP = "subword vocabulary"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # `train` is the one tokenizer command so far; run() is what it does.
    train_parser = parser.add_subparsers(dest="tokenizer_command", required=True).add_parser(
        "train", help="train a joint vocabulary over languages")
    train_parser.add_argument("--data", required=True, help="folder of SPLIT.LANG files, a sentence a line")
    train_parser.add_argument("--langs", nargs="+", required=True, help="languages, e.g. de en")
    train_parser.add_argument("--split", default="train")
    train_parser.add_argument("--vocab-size", type=positive_int, default=37000)
    train_parser.add_argument("--model", default="bpe", choices=["bpe", "unigram"])
    train_parser.add_argument("--out", required=True, help="folder to save the tokenizer in")


def run(args: argparse.Namespace) -> None:
    from ..corpus import read_lines
    from ..training.tokenizer import subwords_per_word, train_tokenizer

    files = [Path(args.data) / f"{args.split}.{lang}" for lang in args.langs]
    start = time.perf_counter()
    tokenizer = train_tokenizer(files, vocab_size=args.vocab_size, model=args.model, show_progress=True)
    seconds = time.perf_counter() - start
    tokenizer.save_pretrained(args.out)
    print(f"vocabulary: {len(tokenizer)} tokens ({args.model}), trained in {seconds:.1f} s, saved to {args.out}")
    for lang, path in zip(args.langs, files):
        lines = read_lines(path)
        tokens = sum(map(len, tokenizer(lines)["input_ids"]))
        print(f"  {lang}: {tokens / len(lines):.1f} tokens per sentence (with </s>), "
              f"{subwords_per_word(tokenizer, lines):.3f} subwords per word, {len(lines)} sentences")
