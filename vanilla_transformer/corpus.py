"""Reading plain-text corpora, one segment per line, with errors that name the file and the line."""

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
