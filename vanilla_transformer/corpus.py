"""Reading corpora line by line (plain text, one segment a line; JSON lines), with errors that name the file and the
line."""

import json
from collections.abc import Iterator
from itertools import islice
from pathlib import Path
from typing import BinaryIO


class CorpusError(ValueError):
    """A corpus file that cannot be used as it is; the message names the file and, where it can, the line."""


def read_lines(path: str | Path, allow_empty_lines: bool = False) -> list[str]:
    """The lines of a UTF-8 text file, without their line endings.

    Raises CorpusError for a missing or empty file, bytes that are not UTF-8 (naming the line and column) and,
    unless allowed, empty lines.
    """
    return list(iter_lines(path, allow_empty_lines))


def iter_lines(path: str | Path, allow_empty_lines: bool = False) -> Iterator[str]:
    """read_lines() one line at a time, for files too large to hold as a list; the errors come when reached."""
    path = Path(path)
    if not path.is_file():
        raise CorpusError(f"{path}: no such file")
    number = 0
    with path.open("rb") as f:
        for number, raw in enumerate(f, start=1):
            line = decode_line(raw, f"{path}:{number}")
            if not line.strip() and not allow_empty_lines:
                raise CorpusError(f"{path}:{number}: empty line")
            yield line
    if not number:
        raise CorpusError(f"{path}: the file is empty")


def aligned_line_chunks(first: Path, second: Path,
                        chunk_bytes: int = 1 << 20) -> Iterator[tuple[int, list[str], list[str]]]:
    """The lines of two line-aligned UTF-8 files, read in lockstep about chunk_bytes of the first file at a time:
    (the number of the chunk's first line, its lines in the first file, the same lines of the second).

    Memory holds one chunk, whatever the files' size. Raises CorpusError for a missing or empty file, bytes that are
    not UTF-8 (naming the line and column), and files whose line counts differ (naming both counts).
    """
    for path in (first, second):
        if not path.is_file():
            raise CorpusError(f"{path}: no such file")

    def misaligned(first_lines: int, second_lines: int) -> CorpusError:
        return CorpusError(f"{first} has {first_lines} lines but {second} has {second_lines}: the files are not "
                           "aligned")

    with first.open("rb") as a, second.open("rb") as b:
        number = 1
        while raw_a := a.readlines(chunk_bytes):
            raw_b = list(islice(b, len(raw_a)))
            if number == 1 and not raw_b:
                raise CorpusError(f"{second}: the file is empty")
            if len(raw_b) < len(raw_a):  # the second file ended first: count the rest of the first, for the message
                raise misaligned(number - 1 + len(raw_a) + count_lines(a), number - 1 + len(raw_b))
            yield number, decode_lines(raw_a, first, number), decode_lines(raw_b, second, number)
            number += len(raw_a)
        if number == 1:
            raise CorpusError(f"{first}: the file is empty")
        if rest := count_lines(b):
            raise misaligned(number - 1, number - 1 + rest)


def decode_lines(raw: list[bytes], path: Path, first_number: int) -> list[str]:
    """Lines of UTF-8 (each ending in \n, but perhaps the file's last) without their line endings, as decode_line()
    gives them, decoded in one call; a CorpusError naming the first line that is not UTF-8 otherwise."""
    try:
        text = b"".join(raw).decode("utf-8")
    except UnicodeDecodeError:  # \n is no part of any multi-byte character: some line is not UTF-8 on its own
        for number, line in enumerate(raw, start=first_number):
            decode_line(line, f"{path}:{number}")
        raise
    lines = text.split("\n")
    if raw[-1].endswith(b"\n"):
        lines.pop()  # the empty text after the last line ending
    if "\r" in text:
        lines = [line.removesuffix("\r") for line in lines]
    return lines


def count_lines(file: BinaryIO) -> int:
    """The lines from a binary file's position to its end, as iterating over it would give them."""
    lines, last = 0, b"\n"
    while block := file.read(1 << 22):
        lines += block.count(b"\n")
        last = block[-1:]
    return lines + (last != b"\n")


def decode_line(raw: bytes, where: str) -> str:
    """A line of UTF-8 without its line ending (\n or \r\n); a CorpusError naming `where` and the column otherwise."""
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise CorpusError(
            f"{where}: not valid UTF-8 (byte {raw[error.start]:#04x} at column {error.start + 1})"
        ) from None
    return line.removesuffix("\n").removesuffix("\r")


def jsonl_line_number(path: str | Path, row: int) -> int:
    """The line of a JSON-lines file that holds its `row`-th row (from 1): the JSON readers skip blank lines."""
    rows = 0
    with Path(path).open("rb") as file:
        for number, raw in enumerate(file, start=1):
            rows += bool(raw.strip())
            if rows == row:
                return number
    return row


def jsonl_problem(path: str | Path, langs: tuple[str, str]) -> str | None:
    """What is wrong with the first line of a JSON-lines corpus that is not a {"translation": {lang: text}} row,
    naming the file and the line; None if every line is one.

    A scan of the whole file, for the error path only: where a line does not parse or a field changes its type, the
    table readers name a row number that is not the line's, or no row at all.
    """
    with Path(path).open("rb") as file:
        for number, raw in enumerate(file, start=1):
            where = f"{path}:{number}"
            line = decode_line(raw, where)
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                return f"{where}: not a complete JSON object ({error.msg}: column {error.colno})"
            translation = row.get("translation") if isinstance(row, dict) else None
            for lang in langs:
                text = translation.get(lang) if isinstance(translation, dict) else None
                if text is None:
                    return f"{where}: no {lang!r} in the translation"
                if not isinstance(text, str):
                    return f"{where}: the {lang!r} of the translation is not text ({json.dumps(text)[:60]})"
    return None
