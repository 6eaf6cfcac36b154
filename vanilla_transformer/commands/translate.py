"""`translate`: translate the given sentences, or standard input line by line in batches: one output line per input
line.

A line that is not UTF-8 is reported on stderr with its number and gives an empty output line; the others are
translated, and the command exits with status 1 at the end.
"""

import argparse
import sys

from .translation_options import add_translation_arguments, translator_for

NAME = "translate"
HELP = "translate sentences given as arguments or on stdin"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model")
    parser.add_argument("text", nargs="*", help="sentences; none: read standard input line by line")
    add_translation_arguments(parser, batch_size=32)


def run(args: argparse.Namespace) -> None:
    from ..streaming import translate_stream

    translate_lines = translator_for(args, progress=False)
    if args.text:
        for line in translate_lines(args.text):
            print(line)
        return
    undecodable = []

    def report(number: int, error: Exception) -> None:
        print(f"vanilla-transformer translate: error: {error}; its output line is empty", file=sys.stderr)
        undecodable.append(number)

    for translations in translate_stream(translate_lines, sys.stdin.buffer, args.batch_size, "stdin", report):
        print("\n".join(translations), flush=True)
    if undecodable:
        raise SystemExit(f"vanilla-transformer translate: {len(undecodable)} line(s) not valid UTF-8 "
                         f"(line {', '.join(map(str, undecodable[:10]))}): left empty in the output")
