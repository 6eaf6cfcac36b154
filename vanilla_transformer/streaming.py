"""Translating a stream of raw lines a batch at a time, one output line per input line whatever its bytes."""

import re
from collections.abc import Callable, Iterable, Iterator
from itertools import islice

from .corpus import CorpusError, decode_line

# What str.splitlines() and text-mode readers take for the end of a line.
LINE_BREAKS = re.compile("[\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029]")


def translate_stream(translate_lines: Callable[[list[str], int], list[str]], raw_lines: Iterable[bytes],
                     batch_size: int, stream_name: str,
                     on_undecodable: Callable[[int, CorpusError], None]) -> Iterator[list[str]]:
    """The translations of raw_lines, one batch of batch_size lines at a time, each as soon as its lines are read.

    A line that is not UTF-8 goes to on_undecodable with its number and an error naming `stream_name` and the line;
    it is translated as an empty line, so the others keep their places.
    """
    for first_line, chunk in numbered_chunks(raw_lines, batch_size):
        yield translate_lines(decode_lines(chunk, first_line, stream_name, on_undecodable), first_line)


def numbered_chunks(raw_lines: Iterable[bytes], size: int, first_line: int = 1) -> Iterator[tuple[int, list[bytes]]]:
    """(number of its first line, its lines) for each run of `size` lines of raw_lines, the lines numbered from
    first_line."""
    lines = iter(raw_lines)
    while chunk := list(islice(lines, size)):
        yield first_line, chunk
        first_line += len(chunk)


def decode_lines(raw_lines: list[bytes], first_line: int, stream_name: str,
                 on_undecodable: Callable[[int, CorpusError], None]) -> list[str]:
    """The lines as text without their line endings; one that is not UTF-8 goes to on_undecodable (its number, an
    error naming `stream_name` and the line) and is given as an empty line."""
    lines = []
    for number, raw in enumerate(raw_lines, start=first_line):
        try:
            lines.append(decode_line(raw, f"{stream_name} line {number}"))
        except CorpusError as error:
            on_undecodable(number, error)
            lines.append("")
    return lines


def one_line(translation: str) -> str:
    """A translation as one output line: a line break the model wrote (a byte-level vocabulary can) would shift every
    later line of the output, so it is written as a space."""
    return LINE_BREAKS.sub(" ", translation)
