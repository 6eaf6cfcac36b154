"""The `vanilla-transformer` command line."""

import argparse
import logging

from .commands import (
    average,
    convert_marian,
    demo,
    evaluate,
    export_ctranslate2,
    export_marian,
    prepare,
    push,
    show_attention,
    show_positional_encoding,
    tokenizer,
    train,
    translate,
)

COMMANDS = (demo, tokenizer, convert_marian, export_marian, train, prepare, average, evaluate, translate,
            export_ctranslate2, push, show_attention, show_positional_encoding)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="vanilla-transformer", description=__doc__)
    subparsers = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command_parser = subparsers.add_parser(command.NAME, help=command.HELP)
        command.add_arguments(command_parser)
        command_parser.set_defaults(run=command.run)
    args = parser.parse_args(argv)
    log_package_messages_to_stderr()
    try:
        args.run(args)
    except (OSError, ValueError) as error:  # bad files, bad values, Hub errors: the message says which
        raise SystemExit(f"vanilla-transformer {args.command}: error: {error}") from error


def log_package_messages_to_stderr() -> None:
    """The package's own progress messages (data cleaning counts, batching) on stderr, marked as ours."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("[vanilla-transformer] %(message)s"))
    package_logger = logging.getLogger("vanilla_transformer")
    package_logger.addHandler(handler)
    package_logger.setLevel(logging.INFO)


if __name__ == "__main__":
    main()
