"""The `vanilla-transformer` command line."""

import argparse
import logging
import sys

from .commands import (
    average,
    convert_marian,
    demo,
    evaluate,
    export_ctranslate2,
    export_marian,
    prepare,
    push,
    score,
    show_attention,
    show_positional_encoding,
    tokenizer,
    train,
    translate,
)

COMMANDS = (demo, tokenizer, convert_marian, export_marian, train, prepare, average, evaluate, translate, score,
            export_ctranslate2, push, show_attention, show_positional_encoding)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="vanilla-transformer", description=__doc__)
    subparsers = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command_parser = subparsers.add_parser(command.NAME, help=command.HELP)
        command.add_arguments(command_parser)
        command_parser.set_defaults(run=command.run)
    args = parse_intermixed(parser, subparsers, sys.argv[1:] if argv is None else argv)
    log_package_messages_to_stderr()
    try:
        args.run(args)
    except (OSError, ValueError) as error:  # bad files, bad values, Hub errors: the message says which
        raise SystemExit(f"vanilla-transformer {args.command}: error: {error}") from error


def parse_intermixed(parser: argparse.ArgumentParser, subparsers, argv: list[str]) -> argparse.Namespace:
    """The parsed arguments, a command's options allowed between its positionals (`translate MODEL --num-beams 1
    "text"` as `translate MODEL "text" --num-beams 1`)."""
    # argparse gives a positional of several values (translate's sentences) none once an option follows the first
    # positional, and calls the rest unrecognized; the command's parser reads them again intermixed, which it cannot
    # do with sub-commands of its own (`tokenizer train`).
    args, unrecognized = parser.parse_known_args(argv)
    if not unrecognized:
        return args
    command, command_parser = args.command, subparsers.choices[args.command]
    if command_parser._subparsers is not None:
        parser.error(f"unrecognized arguments: {' '.join(unrecognized)}")
    # The program takes no options of its own, so the command's arguments are all those after its name.
    args = command_parser.parse_intermixed_args(argv[1:])
    args.command = command
    return args


def log_package_messages_to_stderr() -> None:
    """The package's own progress messages (data cleaning counts, batching) on stderr, marked as ours."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("[vanilla-transformer] %(message)s"))
    package_logger = logging.getLogger("vanilla_transformer")
    package_logger.addHandler(handler)
    package_logger.setLevel(logging.INFO)


if __name__ == "__main__":
    main()
