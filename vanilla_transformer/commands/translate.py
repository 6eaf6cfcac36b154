"""`translate`: translate the given sentences, standard input line by line in batches, or a file into a file
(--input/--output: resumable, with a progress bar, shared by the processes of an `accelerate launch`): one output
line per input line.

A line that is not UTF-8 is reported on stderr with its number and gives an empty output line; the others are
translated, and the command exits with status 1 at the end.

--n-best K writes the K best translations of each line instead (sentences as arguments or stdin), ranked, with their
scores (vanilla_transformer.scoring says what they are), as JSON lines or TSV.
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
    parser.add_argument("--n-best", type=positive_int, default=None, metavar="K",
                        help="the K best translations of each line with their scores, K rows a line (at most "
                             "--num-beams: they are the beam's best)")
    parser.add_argument("--format", choices=("jsonl", "tsv"), default=None,
                        help='--n-best\'s rows: jsonl (default; {"line", "rank", "translation", "score", '
                             '"log_prob"}) or tsv (line, rank, score, log_prob, translation)')


def run(args: argparse.Namespace) -> None:
    check_n_best(args)
    if args.n_best:
        return translate_n_best(args)
    if args.input or args.output:
        return translate_file_to_file(args)
    from ..streaming import one_line

    translate_lines = translator_for(args, progress=False)

    def rows(lines: list[str], first_line: int = 1) -> list[str]:
        return [one_line(translation) for translation in translate_lines(lines, first_line)]

    print_rows_of_arguments_or_stdin(args, rows, "its output line is empty")


def print_rows_of_arguments_or_stdin(args: argparse.Namespace, rows, empty_says: str) -> None:
    """Prints rows(lines, first_line) of the sentences given as arguments, or of stdin a batch at a time; a line of
    stdin that is not UTF-8 is named on stderr (with empty_says: what it gets instead) and the exit status is 1."""
    from ..streaming import translate_stream

    if args.text:
        print("\n".join(rows(args.text)))
        return
    undecodable = []

    def report(number: int, error: Exception) -> None:
        print(f"vanilla-transformer translate: error: {error}; {empty_says}", file=sys.stderr)
        undecodable.append(number)

    for batch_rows in translate_stream(rows, sys.stdin.buffer, args.batch_size, "stdin", report):
        print("\n".join(batch_rows), flush=True)
    fail_for_undecodable(len(undecodable), undecodable)


def translate_file_to_file(args: argparse.Namespace) -> None:
    """--input FILE --output FILE, in every process of a launch (the main one reads and writes)."""
    from pathlib import Path

    import torch
    from accelerate import PartialState

    from ..file_translation import WINDOWS_AT_ONCE, translate_file

    if not (args.input and args.output) or args.text:
        raise ValueError("--input and --output go together, without sentences as arguments")
    # Whatever changes the translations, as asked: a resumed run must make the same ones.
    settings = {key: getattr(args, key) for key in ("model", "engine", "num_beams", "length_penalty", "batch_size",
                                                    "max_tokens", "window", "device", "dtype", "compute_type", "no_guards",
                                                    "no_recase")}
    if Path(args.model).exists():
        settings["model"] = str(Path(args.model).resolve())
    state = PartialState(cpu=not torch.cuda.is_available())
    if state.num_processes > 1 and args.device == "auto" and args.engine == "torch":
        args.device = str(state.device)  # each process on its own card (CTranslate2 takes only the first)
    translate_lines = translator_for(args, progress=False)

    def report(number: int, error: Exception) -> None:
        print(f"vanilla-transformer translate: error: {error}; its output line is empty", file=sys.stderr)

    record = translate_file(translate_lines, args.input, args.output, settings, window=args.window,
                            overwrite=args.overwrite, state=state, progress=state.is_main_process,
                            windows_at_once=WINDOWS_AT_ONCE[args.engine], on_undecodable=report)
    if record is not None:
        print(f"vanilla-transformer translate: {record.lines} lines of {args.input} translated into {args.output}",
              file=sys.stderr)
        fail_for_undecodable(record.undecodable, record.first_undecodable)


def fail_for_undecodable(count: int, first_lines: list[int]) -> None:
    """Exit status 1 when lines were not UTF-8 (each was named on stderr and left empty in the output)."""
    if count:
        raise SystemExit(f"vanilla-transformer translate: {count} line(s) not valid UTF-8 "
                         f"(line {', '.join(map(str, first_lines[:10]))}): left empty in the output")


def check_n_best(args: argparse.Namespace) -> None:
    """Refuses --n-best past the beam (a wider beam would change the first translation), with --input/--output, and
    --format alone."""
    if args.n_best and args.n_best > args.num_beams:
        raise ValueError(f"--n-best {args.n_best} needs --num-beams {args.n_best} or more, not {args.num_beams}: "
                         "the n-best list is the beam's best hypotheses")
    if args.n_best and (args.input or args.output):
        raise ValueError("--n-best writes to standard output: give sentences as arguments or on stdin, not --input")
    if args.format and not args.n_best:
        raise ValueError("--format is the output of --n-best, which was not given")


def translate_n_best(args: argparse.Namespace) -> None:
    """--n-best K: each line's K best translations as rows on stdout; an undecodable line gets one empty row."""
    from ..scoring import hypothesis_rows

    translator, output_format = translator_for(args, progress=False), args.format or "jsonl"

    def rows(lines: list[str], first_line: int = 1) -> list[str]:
        return [row for number, hypotheses in enumerate(translator.n_best(lines, args.n_best, first_line),
                                                        start=first_line)
                for row in hypothesis_rows(number, hypotheses, output_format)]

    print_rows_of_arguments_or_stdin(args, rows, "its n-best list is one empty row")
