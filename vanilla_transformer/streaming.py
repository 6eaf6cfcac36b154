"""Translating a stream of raw lines a batch at a time, one output line per input line whatever its bytes."""

from collections.abc import Callable, Iterable, Iterator

from .corpus import CorpusError, decode_line


def translate_stream(translate_lines: Callable[[list[str], int], list[str]], raw_lines: Iterable[bytes],
                     batch_size: int, stream_name: str,
                     on_undecodable: Callable[[int, CorpusError], None]) -> Iterator[list[str]]:
    """The translations of raw_lines, one batch of batch_size lines at a time, each as soon as its lines are read.

    A line that is not UTF-8 goes to on_undecodable with its number and an error naming `stream_name` and the line;
    it is translated as an empty line, so the others keep their places.
    """
    batch, first_line = [], 1
    for number, raw in enumerate(raw_lines, start=1):
        try:
            batch.append(decode_line(raw, f"{stream_name} line {number}"))
        except CorpusError as error:
            on_undecodable(number, error)
            batch.append("")
        if len(batch) == batch_size:
            yield translate_lines(batch, first_line)
            batch, first_line = [], number + 1
    if batch:
        yield translate_lines(batch, first_line)
