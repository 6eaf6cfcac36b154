"""`translate`: translate the given sentences, standard input line by line in batches, or a file into a file
(--input/--output: resumable, with a progress bar, shared by the processes of an `accelerate launch`): one output
line per input line.

A line that is not UTF-8 is reported on stderr with its number and gives an empty output line; the others are
translated, and the command exits with status 1 at the end.
"""

import argparse
import sys

from .argument_types import positive_int
from .translation_options import add_translation_arguments, translator_for

NAME = "translate"
HELP = "translate sentences given as arguments, on stdin, or a file (--input/--output)"
WINDOW = 2000  # --input's lines sorted by length together: a few thousand keep padding low in little memory


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model")
    parser.add_argument("text", nargs="*", help="sentences; none: read standard input line by line (or --input)")
    add_translation_arguments(parser, batch_size=32)
    parser.add_argument("--input", help="a text file to translate, one sentence a line, into --output")
    parser.add_argument("--output", help="the file of the translations, line for line; a rerun after a stop resumes "
                                         "where it stopped (OUTPUT.progress records how far it is)")
    parser.add_argument("--overwrite", action="store_true",
                        help="--output: start over, replacing a finished or partly done output")
    parser.add_argument("--window", type=positive_int, default=WINDOW,
                        help="--input: lines read at a time, sorted by length into batches and written in order")


def run(args: argparse.Namespace) -> None:
    if args.input or args.output:
        return translate_file_to_file(args)
    from ..streaming import one_line, translate_stream

    translate_lines = translator_for(args, progress=False)
    if args.text:
        for line in translate_lines(args.text):
            print(one_line(line))
        return
    undecodable = []

    def report(number: int, error: Exception) -> None:
        print(f"vanilla-transformer translate: error: {error}; its output line is empty", file=sys.stderr)
        undecodable.append(number)

    for translations in translate_stream(translate_lines, sys.stdin.buffer, args.batch_size, "stdin", report):
        print("\n".join(map(one_line, translations)), flush=True)
    fail_for_undecodable(len(undecodable), undecodable)


def translate_file_to_file(args: argparse.Namespace) -> None:
    """--input FILE --output FILE, in every process of a launch (the main one reads and writes)."""
    from pathlib import Path

    import torch
    from accelerate import PartialState

    from ..file_translation import translate_file

    if not (args.input and args.output) or args.text:
        raise ValueError("--input and --output go together, without sentences as arguments")
    # Whatever changes the translations, as asked: a resumed run must make the same ones.
    settings = {key: getattr(args, key) for key in ("model", "engine", "num_beams", "length_penalty", "batch_size",
                                                    "max_tokens", "window", "device", "dtype", "compute_type")}
    if Path(args.model).exists():
        settings["model"] = str(Path(args.model).resolve())
    state = PartialState(cpu=not torch.cuda.is_available())
    if state.num_processes > 1 and args.device == "auto":
        args.device = str(state.device)  # each process on its own card
    translate_lines = translator_for(args, progress=False)

    def report(number: int, error: Exception) -> None:
        print(f"vanilla-transformer translate: error: {error}; its output line is empty", file=sys.stderr)

    record = translate_file(translate_lines, args.input, args.output, settings, window=args.window,
                            overwrite=args.overwrite, state=state, progress=state.is_main_process,
                            on_undecodable=report)
    if record is not None:
        print(f"vanilla-transformer translate: {record.lines} lines of {args.input} translated into {args.output}",
              file=sys.stderr)
        fail_for_undecodable(record.undecodable, record.first_undecodable)


def fail_for_undecodable(count: int, first_lines: list[int]) -> None:
    """Exit status 1 when lines were not UTF-8 (each was named on stderr and left empty in the output)."""
    if count:
        raise SystemExit(f"vanilla-transformer translate: {count} line(s) not valid UTF-8 "
                         f"(line {', '.join(map(str, first_lines[:10]))}): left empty in the output")

