"""Translating a file into a file of the same lines: read a window of lines at a time, the window translated by the
engine (which sorts its lines by length and batches them) and written back in input order; resumable after a kill
at any point; shared by the processes of an `accelerate launch`, the main one reading and writing.

Resuming: OUTPUT.progress (JSON) beside the output says how much of it is done (lines, the bytes of input they took
and of output they gave), which input it comes from (size and content hash) and with which settings. It is replaced
atomically, and only after the output is flushed to disk, so it never claims more output than the disk holds; a rerun
cuts the output back to what the record claims (a kill can leave part of a window beyond it) and goes on from the
line after. The record is written before the output is created and removed once the file is done, so an output
without one is a finished translation.
"""

import json
import os
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from itertools import islice
from pathlib import Path

import xxhash
from accelerate.utils import broadcast_object_list, gather_object
from tqdm.auto import tqdm

from .corpus import CorpusError
from .streaming import decode_lines, numbered_chunks, one_line

READ_SIZE = 1 << 20
# Windows each engine translates at the same time: CTranslate2's workers (one per core) take the batches of two calls,
# so none waits while the last batch of a window runs; torch's generate() already uses every core for one batch.
WINDOWS_AT_ONCE = {"torch": 1, "ctranslate2": 2}
NAMED_UNDECODABLE = 10  # the first undecodable lines the record keeps the numbers of (it counts them all)


@dataclass
class Progress:
    """OUTPUT.progress: the input the output is made from, the settings, and how far the output is done."""

    input: str
    input_bytes: int
    input_xxh3: str
    lines: int
    settings: dict
    lines_done: int = 0
    input_offset: int = 0
    output_offset: int = 0
    undecodable: int = 0
    first_undecodable: list[int] = field(default_factory=list)

    @classmethod
    def load(cls, path: Path) -> "Progress":
        try:
            return cls(**json.loads(path.read_text(encoding="utf-8")))
        except (ValueError, TypeError) as error:  # JSON or fields that are not a record's: edited by hand
            raise ValueError(f"{path}: not a progress record of translate ({error}); delete it, or pass --overwrite "
                             "to start over") from None

    def save(self, path: Path) -> None:
        """Written to a temporary file and moved over the old record, so that a kill leaves one or the other whole."""
        temporary = path.with_name(path.name + ".tmp")
        with temporary.open("w", encoding="utf-8") as file:
            json.dump(asdict(self), file, indent=1)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
        sync_folder(path.parent)


def sync_folder(folder: Path) -> None:
    """The folder's entries (a file replaced in it) on disk, where the system lets a folder be opened (POSIX)."""
    if os.name == "posix":
        descriptor = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


def progress_path(output: Path) -> Path:
    return output.with_name(output.name + ".progress")


def scan(path: Path) -> tuple[int, int, str]:
    """The lines of a file (its b"\\n", and a last line without one), its bytes and its xxh3 hash, in one pass."""
    lines = size = 0
    digest = xxhash.xxh3_64()
    last = b"\n"
    with path.open("rb") as file:
        while chunk := file.read(READ_SIZE):
            lines += chunk.count(b"\n")
            size += len(chunk)
            digest.update(chunk)
            last = chunk[-1:]
    return lines + (last != b"\n"), size, digest.hexdigest()


def start(input_path: Path, output: Path, settings: dict, overwrite: bool) -> Progress:
    """The progress of translating input_path into output: a new record (and an empty output), or the record of an
    earlier run with the output cut back to what it claims. Refused: another input or other settings than the earlier
    run's, and a finished output, unless overwrite (which starts over)."""
    if not input_path.is_file():
        raise FileNotFoundError(f"{input_path}: no such file (--input)")
    if output.exists() and output.resolve() == input_path.resolve():
        raise ValueError(f"--output {output} is the input file: write the translation to another file")
    record = progress_path(output)
    if overwrite:
        record.unlink(missing_ok=True)
        output.unlink(missing_ok=True)
    lines, size, digest = scan(input_path)
    fresh = Progress(str(input_path.resolve()), size, digest, lines, settings)
    if record.exists():
        earlier = Progress.load(record)
        refuse_changes(earlier, fresh, input_path, record)
        written = output.stat().st_size if output.exists() else 0
        if written < earlier.output_offset:
            raise ValueError(f"{output}: {written} bytes, fewer than the {earlier.output_offset} that {record} says "
                             "were written: the output was changed since; pass --overwrite to start over")
        output.touch()  # a kill can come between the record's first save and the output's creation
        os.truncate(output, earlier.output_offset)
        return earlier
    if output.exists():
        raise FileExistsError(f"{output}: already exists, with no {record.name} beside it (a finished translation): "
                              "pass --overwrite to replace it")
    output.parent.mkdir(parents=True, exist_ok=True)
    fresh.save(record)  # before the output exists: an output without a record is always a finished one
    output.touch()
    return fresh


def refuse_changes(earlier: Progress, fresh: Progress, input_path: Path, record: Path) -> None:
    """An error naming what differs when the input's content or the settings are not those the record was made with:
    resuming would join two translations in one file."""
    if (earlier.input_bytes, earlier.input_xxh3) != (fresh.input_bytes, fresh.input_xxh3):
        raise ValueError(f"{input_path} is not the input that {record} was started from ({earlier.input}: "
                         f"{earlier.input_bytes} bytes, xxh3 {earlier.input_xxh3}; now {fresh.input_bytes} bytes, "
                         f"xxh3 {fresh.input_xxh3}): translate it into another --output, or pass --overwrite to "
                         "start over")
    changed = sorted(key for key in earlier.settings.keys() | fresh.settings.keys()
                     if earlier.settings.get(key) != fresh.settings.get(key))
    if changed:
        was = ", ".join(f"{key}={earlier.settings.get(key)}" for key in changed)
        now = ", ".join(f"{key}={fresh.settings.get(key)}" for key in changed)
        raise ValueError(f"{record}: the translation was started with {was}, not {now}: rerun with the same options "
                         "to resume, or pass --overwrite to start over")


def translate_file(translate_lines: Callable[[list[str], int], list[str]], input_path: str | Path,
                   output: str | Path, settings: dict, *, window: int, overwrite: bool = False, state=None,
                   progress: bool = True, windows_at_once: int = 1,
                   on_undecodable: Callable[[int, CorpusError], None] = lambda number, error: None) -> Progress | None:
    """Translate input_path line by line into output (see the module's docstring), window lines at a time; returns
    the finished record (the undecodable lines counted, the first of them named), None in the other processes.

    settings: what makes the translations (model, engine, decoding, batches), recorded and checked on resuming.
    state: the PartialState of a launch: the main process reads the windows, hands one to each process, gathers their
    translations and writes them in order; the others only translate. A line that is not UTF-8 goes to on_undecodable
    (in the main process) and is translated as an empty line.
    windows_at_once: windows translated at the same time, in threads (WINDOWS_AT_ONCE: the engine's), written in
    order all the same; one in a launch, whose collectives go a round at a time.
    """
    if state is not None and not state.is_main_process:
        while (windows := broadcast_object_list([None])[0]) is not None:
            mine = windows[state.process_index]
            gather_object([translate_lines(mine[1], mine[0]) if mine else None])
        return None
    input_path, output = Path(input_path), Path(output)
    try:
        record = start(input_path, output, settings, overwrite)
        translate_windows(translate_lines, input_path, output, record, window, state, progress, on_undecodable,
                          windows_at_once if state is None or state.num_processes == 1 else 1)
    finally:
        if state is not None and state.num_processes > 1:
            broadcast_object_list([None])  # the others stop, after an error here too
    progress_path(output).unlink()
    return record


def translate_windows(translate_lines, input_path: Path, output: Path, record: Progress, window: int, state,
                      progress: bool, on_undecodable, rounds_at_once: int) -> None:
    """The main process's loop: a window for each process from where the record says (rounds_at_once such rounds
    translated at the same time), their translations written in order and flushed to disk, then the record moved
    on."""
    processes = state.num_processes if state is not None else 1

    def undecodable(number: int, error: CorpusError) -> None:
        record.undecodable += 1
        if len(record.first_undecodable) < NAMED_UNDECODABLE:
            record.first_undecodable.append(number)
        on_undecodable(number, error)

    def write_oldest() -> None:
        round_, translated = pending.popleft()
        for translations in translated.result():
            target.write("".join(one_line(text) + "\n" for text in translations).encode("utf-8"))
        target.flush()
        os.fsync(target.fileno())
        done = sum(len(raw) for _, raw in round_)
        record.lines_done += done
        record.input_offset += sum(len(line) for _, raw in round_ for line in raw)
        record.output_offset = target.tell()
        record.save(progress_path(output))
        bar.update(done)

    def translated(windows: list[tuple[int, list[str]]]) -> Future:
        if rounds_at_once > 1:
            return threads.submit(translate_round, translate_lines, windows, state)
        # In this thread: torch's generate() ran a quarter slower in another thread (3,000 lines, 148 vs 113/s).
        result = Future()
        result.set_result(translate_round(translate_lines, windows, state))
        return result

    pending = deque()
    with (input_path.open("rb") as source, output.open("ab") as target,
          ThreadPoolExecutor(rounds_at_once, thread_name_prefix="translate") as threads,
          tqdm(total=record.lines, initial=record.lines_done, unit=" sentences", desc=f"translating {input_path.name}",
               disable=not progress, dynamic_ncols=True) as bar):
        source.seek(record.input_offset)
        chunks = numbered_chunks(source, window, first_line=record.lines_done + 1)
        while round_ := list(islice(chunks, processes)):
            windows = [(first, decode_lines(raw, first, str(input_path), undecodable)) for first, raw in round_]
            pending.append((round_, translated(windows)))
            if len(pending) == rounds_at_once:
                write_oldest()
        while pending:
            write_oldest()


def translate_round(translate_lines, windows: list[tuple[int, list[str]]], state) -> list[list[str]]:
    """The translations of each (first line, lines) window: one window per process of a launch, gathered in order."""
    if state is None or state.num_processes == 1:
        return [translate_lines(lines, first) for first, lines in windows]
    shares = windows + [None] * (state.num_processes - len(windows))
    broadcast_object_list([shares])
    first, lines = shares[0]
    return gather_object([translate_lines(lines, first)])[: len(windows)]
