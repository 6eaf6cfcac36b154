"""Reading corpora line by line (plain text, one segment a line; JSON lines), with errors that name the file and the
line."""

import json
from pathlib import Path


class CorpusError(ValueError):
    """A corpus file that cannot be used as it is; the message names the file and, where it can, the line."""


def read_lines(path: str | Path, allow_empty_lines: bool = False) -> list[str]:
    """The lines of a UTF-8 text file, without their line endings.

    Raises CorpusError for a missing or empty file, bytes that are not UTF-8 (naming the line and column) and,
    unless allowed, empty lines.
    """
    path = Path(path)
    if not path.is_file():
        raise CorpusError(f"{path}: no such file")
    lines = []
    with path.open("rb") as f:
        for number, raw in enumerate(f, start=1):
            line = decode_line(raw, f"{path}:{number}")
            if not line.strip() and not allow_empty_lines:
                raise CorpusError(f"{path}:{number}: empty line")
            lines.append(line)
    if not lines:
        raise CorpusError(f"{path}: the file is empty")
    return lines


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
