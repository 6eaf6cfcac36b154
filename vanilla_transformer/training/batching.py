"""Batches by token count, as in fairseq's --max-tokens: sentences of similar length, each batch as full as allowed.

The batches of a training set (the examples in batch order and where each batch starts) are built once and cached
beside the datasets cache, keyed by what they are made of: the train set's datasets fingerprint and row count,
max_tokens, the seed and the format. A rerun, a resume and every process of a launch memory-map the cached arrays
(their pages shared, no copy per process); one process per disk builds them, under a file lock.
"""

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import datasets
import numpy as np
import torch
import xxhash
from torch.utils.data import Sampler

from .data import token_length_chunks

logger = logging.getLogger(__name__)

BATCHES_FORMAT = "order:int32+starts:int64:v1"  # in every cached plan's key: change it when the batches change
ARRAYS = ("order", "starts")
MANIFEST = "manifest.json"  # written last: the arrays' sizes and checksums


@dataclass(frozen=True)
class BatchesKey:
    """What a training set's batches are made of: its rows (datasets fingerprint and count), max_tokens, the seed."""

    pairs: int
    train_set: str  # the datasets fingerprint of the tokenised, cleaned pairs
    max_tokens: int
    seed: int
    format: str = BATCHES_FORMAT

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]

    def __str__(self) -> str:
        return f"{self.pairs:,} pairs of train set {self.train_set}, max_tokens={self.max_tokens}, seed={self.seed}"


@dataclass
class PackedBatches:
    """An epoch's batches before shuffling: batch b is order[starts[b]:starts[b + 1]], and the real and padded
    tokens of all of them (source + target), for the padding fraction."""

    order: np.ndarray
    starts: np.ndarray
    real_tokens: int
    padded_tokens: int
    key: BatchesKey | None = None  # None for batches of bare lengths, which no cache holds


class PackedBatchSampler(Sampler[list[int]]):
    """The batches, in an order shuffled per epoch from seed + epoch, so a run is deterministic and a resumed run
    sees the same order. Distributed training shards the batches through accelerate (every rank gets different
    ones, in equal numbers). Two numpy arrays, as fairseq's are, a few bytes per example (lists of Python ints took
    about 100), and memory-mapped when they come from the cache."""

    def __init__(self, batches: PackedBatches, seed: int, shuffle: bool = True):
        self.batches, self.order, self.starts = batches, batches.order, batches.starts
        self.seed, self.shuffle = seed, shuffle
        self.epoch = 0

    def batch(self, b: int) -> list[int]:
        return self.order[self.starts[b]:self.starts[b + 1]].tolist()

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[list[int]]:
        if not self.shuffle:
            yield from map(self.batch, range(len(self)))
            return
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        for b in torch.randperm(len(self), generator=generator).tolist():
            yield self.batch(b)

    def __len__(self) -> int:
        return len(self.starts) - 1

    def padding_fraction(self) -> float:
        """Share of the padded source + target positions that hold padding, over one epoch."""
        return 1 - self.batches.real_tokens / self.batches.padded_tokens if len(self) else 0.0


class TokenBatchSampler(PackedBatchSampler):
    """Groups examples of similar length into batches of at most `max_tokens` padded tokens.

    A batch of n pairs costs n * max(longest source, longest target), the padded size fairseq counts. The batches
    are formed once (length-sorted, ties broken by the seed), so every epoch has the same number.
    """

    def __init__(self, src_lengths: Sequence[int], tgt_lengths: Sequence[int], max_tokens: int, seed: int = 0,
                 shuffle: bool = True):
        super().__init__(pack_batches(src_lengths, tgt_lengths, max_tokens, seed), seed, shuffle)


def pack_batches(src_lengths: Sequence[int], tgt_lengths: Sequence[int], max_tokens: int, seed: int,
                 key: BatchesKey | None = None) -> PackedBatches:
    """The batches of examples of these lengths: sorted by target then source length, ties in seeded random order,
    then packed greedily to max_tokens."""
    if len(src_lengths) != len(tgt_lengths):
        raise ValueError(f"{len(src_lengths)} source lengths but {len(tgt_lengths)} target lengths")
    src, tgt = np.asarray(src_lengths, dtype=np.int32), np.asarray(tgt_lengths, dtype=np.int32)
    return pack_length_chunks(lambda: iter([(src, tgt)]), len(src), max_tokens, seed, key)


# Examples whose lengths, keys and positions the chunked passes of pack_length_chunks hold at a time: its temporaries
# (about 100 bytes an example) stay about 25 MB whatever the corpus' size (1M: 100 MB, more than the whole-corpus build
# below 3M pairs).
PACK_CHUNK_ROWS = 1 << 18


def pack_length_chunks(chunks: Callable[[], Iterator[tuple[np.ndarray, np.ndarray]]], count: int, max_tokens: int,
                       seed: int, key: BatchesKey | None = None, scratch: Path | None = None) -> PackedBatches:
    """pack_batches() of the `count` examples whose (source, target) lengths each call of chunks() yields, a chunk
    at a time in row order; with `scratch`, a folder, the arrays of one value per example (the keys, the tie-break
    permutation, the order, the sizes) are memory-mapped files there, deleted when unused.

    Lengths are bounded (by max_tokens, in practice by max_length or the positions), so the sort by (target length,
    source length, place in the seeded tie-break permutation) is a counting sort: a histogram of the length pairs
    present, then the examples placed into their pair's slots in tie-break order; the sizes and padding are read
    from the pairs' runs in that order. Besides those arrays it holds a chunk of examples and a count per length
    pair present, whatever the corpus' size (a whole-corpus argsort and its temporaries added about 23 bytes a pair,
    1 GB at 45M), and the order is the stable argsort's exactly.
    """
    # A length pair (target t, source s) as the key t * width + s, which sorts as the pairs do: the keys present,
    # sorted, and each example's place among them (its run of the sorted order) and the runs' sizes.
    width, present, seen = max_tokens + 1, np.zeros(0, dtype=np.int64), 0
    for src, tgt in chunks():
        sizes = np.maximum(src, tgt)
        too_long = np.flatnonzero(sizes > max_tokens)
        if len(too_long):
            i = int(too_long[0])
            raise ValueError(f"example {seen + i} has {int(sizes[i])} tokens, more than max_tokens={max_tokens}; "
                             "filter long pairs (max_length) or raise max_tokens")
        present = np.union1d(present, tgt.astype(np.int64) * width + src)
        seen += len(src)
    if seen != count:
        raise ValueError(f"{seen} lengths for {count} examples")
    keys = scratch_array(count, np.int32 if count < 2**31 else np.int64, scratch)  # the run of each example
    histogram, start = np.zeros(len(present), dtype=np.int64), 0
    for src, tgt in chunks():
        chunk = keys[start:start + len(src)]
        chunk[:] = np.searchsorted(present, tgt.astype(np.int64) * width + src)
        histogram += np.bincount(chunk, minlength=len(present))
        start += len(src)
    # The tie-break permutation, as torch draws it whatever the type (it was torch.randperm's int64, then cast).
    tie_break = scratch_array(count, np.int32 if count < 2**31 else np.int64, scratch)
    torch.randperm(count, generator=torch.Generator().manual_seed(seed), out=torch.from_numpy(tie_break))
    order = scratch_array(count, tie_break.dtype, scratch)
    place = np.cumsum(histogram) - histogram  # where the next example of each key goes
    for start in range(0, count, PACK_CHUNK_ROWS):  # examples in tie-break order, each into its key's next slot
        examples = np.array(tie_break[start:start + PACK_CHUNK_ROWS])
        by_key = np.argsort(keys[examples], kind="stable")
        examples, chunk_keys = examples[by_key], keys[examples[by_key]]
        firsts = np.flatnonzero(np.diff(chunk_keys, prepend=-1))  # where each key's run in the chunk begins
        run_lengths = np.diff(firsts, append=len(chunk_keys))
        order[place[chunk_keys] + np.arange(len(examples)) - np.repeat(firsts, run_lengths)] = examples
        place[chunk_keys[firsts]] += run_lengths
    del keys, tie_break
    runs = SortedRuns(present, histogram, width)
    sizes = scratch_array(count, np.int32, scratch)
    for start in range(0, count, PACK_CHUNK_ROWS):
        end = min(start + PACK_CHUNK_ROWS, count)
        sizes[start:end] = np.maximum(runs.between(runs.sources, start, end), runs.between(runs.targets, start, end))
    starts = pack(sizes, max_tokens)  # batch b is order[starts[b]:starts[b + 1]]
    del sizes
    real = int((histogram * (runs.sources.astype(np.int64) + runs.targets)).sum())
    padded = 0
    first = 0
    while first < len(starts) - 1:  # whole batches of about a chunk of examples at a time
        last = max(int(np.searchsorted(starts, starts[first] + PACK_CHUNK_ROWS, side="right")) - 1, first + 1)
        bounds, first = starts[first:last + 1], last
        counts = np.diff(bounds)
        for lengths in (runs.sources, runs.targets):
            in_order = runs.between(lengths, int(bounds[0]), int(bounds[-1]))
            padded += int((np.maximum.reduceat(in_order, bounds[:-1] - bounds[0]).astype(np.int64) * counts).sum())
    return PackedBatches(order, starts, real, padded, key)


class SortedRuns:
    """The examples sorted by key as runs of equal keys (one per length pair present): their lengths, read for any
    range of the sorted order without an array per example."""

    def __init__(self, present: np.ndarray, histogram: np.ndarray, width: int):
        self.ends = np.cumsum(histogram)
        self.sources, self.targets = (present % width).astype(np.int32), (present // width).astype(np.int32)

    def between(self, values: np.ndarray, start: int, end: int) -> np.ndarray:
        """values (one per run) for the examples start..end - 1 of the sorted order."""
        first, last = np.searchsorted(self.ends, [start, end - 1], side="right")
        spans = np.minimum(self.ends[first:last + 1], end) - np.maximum(
            np.concatenate(([0], self.ends))[first:last + 1], start)
        return np.repeat(values[first:last + 1], spans)


def scratch_array(count: int, dtype, folder: Path | None) -> np.ndarray:
    """An array of `count` values: a memory-mapped file in the folder, already deleted (its pages are the page
    cache's, and the disk space comes back when the array is freed), or in memory without a folder or where the
    folder cannot be written."""
    if folder is not None and count:
        try:
            with tempfile.TemporaryFile(dir=folder, prefix="scratch-") as file:
                return np.memmap(file, dtype=dtype, mode="w+", shape=(count,))  # mmap keeps its own descriptor
        except OSError as error:
            logger.warning("token batches: no scratch file in %s (%s); building them in memory", folder, error)
    return np.empty(count, dtype=dtype)


def pack(sizes: np.ndarray, max_tokens: int) -> np.ndarray:
    """Where each batch starts (and, last, the end) when examples of these sizes, in this order, are taken greedily
    while count x largest size <= max_tokens: fairseq's batch_by_size, a numpy step per batch, not a Python one per
    example."""
    starts, start = [0], 0
    while start < len(sizes):
        # A batch starting here holds at most max_tokens // sizes[start] examples: its largest is no smaller.
        window = sizes[start:start + max_tokens // max(int(sizes[start]), 1)]
        cost = np.arange(1, len(window) + 1) * np.maximum.accumulate(window)  # grows with the count: fits a prefix
        start += max(int(np.count_nonzero(cost <= max_tokens)), 1)
        starts.append(start)
    return np.asarray(starts, dtype=np.int64)


def token_batches(dataset: datasets.Dataset, max_tokens: int, seed: int) -> PackedBatchSampler:
    """The training batches of a tokenised dataset (input_ids and labels), each of at most max_tokens padded tokens:
    what the trainer iterates, and what the prepare command counts. Read from the cache when a process built them
    before (this run's, an earlier run's or the prepare command's), else built and cached, when the dataset is in the
    datasets cache (an in-memory one has no lasting fingerprint)."""
    key = BatchesKey(len(dataset), dataset._fingerprint, max_tokens, seed)
    cacheable = bool(dataset.cache_files) and datasets.is_caching_enabled()

    def build() -> PackedBatches:  # with its arrays of a value per example in scratch files beside the cache
        def chunks():
            lengths = (token_length_chunks(dataset, column, PACK_CHUNK_ROWS) for column in ("input_ids", "labels"))
            return ((src.to_numpy(), tgt.to_numpy()) for src, tgt in zip(*lengths))

        scratch = batches_cache(key).parent if cacheable else None
        return pack_length_chunks(chunks, len(dataset), max_tokens, seed, key, scratch)

    return PackedBatchSampler(cached_batches(batches_cache(key), key, build) if cacheable else build(), seed)


def batches_cache(key: BatchesKey) -> Path:
    """Where the batches made of this key are kept, beside the datasets cache."""
    return Path(datasets.config.HF_DATASETS_CACHE) / "vanilla_transformer" / "batch_plans" / key.fingerprint()


def cached_batches(folder: Path, key: BatchesKey, build) -> PackedBatches:
    """The batches in the folder, memory-mapped; else build() them and write the folder whole, once: the first
    process to take the folder's lock builds, the others wait for it and then map what it wrote. Where the cache
    cannot be written (a read-only disk), the built batches are used from memory, with a warning."""
    started = time.perf_counter()
    batches, _ = read_batches(folder, key)
    if batches is not None:
        logger.info("token batches: read from the cache %s in %.2f s (%s)", folder, time.perf_counter() - started, key)
        return batches
    built = None
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        with locked(folder.with_name(folder.name + ".lock")):
            batches, problem = read_batches(folder, key)  # written by another process meanwhile, or broken
            if batches is not None:
                logger.info("token batches: read from the cache %s in %.2f s, once another process had built them "
                            "(%s)", folder, time.perf_counter() - started, key)
                return batches
            if problem:
                logger.warning("token batches: %s; building them again", problem)
                shutil.rmtree(folder, ignore_errors=True)
            for leftover in folder.parent.glob(f"{folder.name}.partial-*"):  # of a process killed while writing
                shutil.rmtree(leftover, ignore_errors=True)
            built = build()
            write_batches(folder, built)
            batches, problem = read_batches(folder, key)
            if batches is None:
                raise OSError(f"{folder}: the token batches just written do not read back: {problem}")
    except OSError as error:
        logger.warning("token batches: not cached (%s); built in memory", error)
        return built if built is not None else build()
    logger.info("token batches: built and cached in %s in %.1f s (%s)", folder, time.perf_counter() - started, key)
    return batches


@contextlib.contextmanager
def locked(path: Path):
    """An exclusive lock on the file for the block (released if the process dies)."""
    with open(path, "a") as file:
        fcntl.flock(file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(file, fcntl.LOCK_UN)


def write_batches(folder: Path, batches: PackedBatches) -> None:
    """The arrays and then their manifest, each synced to disk, in a folder of their own renamed to `folder`: a
    process killed meanwhile leaves no `folder`, only a partial one that the next build removes."""
    partial = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f"{folder.name}.partial-"))
    partial.chmod(0o755)  # mkdtemp's 0700 would hide the cache from the other users of a shared one
    arrays = {}
    for name in ARRAYS:
        array = np.ascontiguousarray(getattr(batches, name))
        path = partial / f"{name}.npy"
        save_array(path, array)
        arrays[name] = {"dtype": str(array.dtype), "shape": list(array.shape), "bytes": path.stat().st_size,
                        "xxh3_128": xxhash.xxh3_128_hexdigest(array)}
    manifest = {"key": asdict(batches.key), "fingerprint": batches.key.fingerprint(), "arrays": arrays,
                "real_tokens": batches.real_tokens, "padded_tokens": batches.padded_tokens}
    with open(partial / MANIFEST, "w", encoding="utf-8") as file:
        json.dump(manifest, file, indent=2)
        file.flush()
        os.fsync(file.fileno())
    sync_folder(partial)
    try:
        partial.rename(folder)
    except OSError:  # another process (without a working lock, on a network disk) renamed its copy there first
        shutil.rmtree(partial, ignore_errors=True)
        if not folder.is_dir():
            raise
    sync_folder(folder.parent)


def save_array(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as file:
        np.save(file, array)
        file.flush()
        os.fsync(file.fileno())


def sync_folder(folder: Path) -> None:
    """Make the folder's entries (new files, a rename) durable."""
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def read_batches(folder: Path, key: BatchesKey) -> tuple[PackedBatches | None, str | None]:
    """The batches in the folder, memory-mapped, if its manifest is whole and the arrays match its sizes and
    checksums; else None and what is wrong (None too when there is no folder)."""
    if not folder.is_dir():
        return None, None
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        if manifest["key"] != asdict(key):
            return None, f"{folder / MANIFEST}: made of {manifest['key']}, not of {asdict(key)}"
        arrays = {}
        for name in ARRAYS:
            path, expected = folder / f"{name}.npy", manifest["arrays"][name]
            if path.stat().st_size != expected["bytes"]:
                return None, f"{path}: {path.stat().st_size} bytes, not the {expected['bytes']} written (truncated?)"
            array = np.load(path, mmap_mode="r")
            if str(array.dtype) != expected["dtype"] or list(array.shape) != expected["shape"]:
                return None, f"{path}: {array.dtype} {list(array.shape)}, not {expected['dtype']} {expected['shape']}"
            if xxhash.xxh3_128_hexdigest(array) != expected["xxh3_128"]:
                return None, f"{path}: its checksum is not the one written (the file is corrupt)"
            arrays[name] = array
        return PackedBatches(arrays["order"], arrays["starts"], manifest["real_tokens"], manifest["padded_tokens"],
                             key), None
    except FileNotFoundError as error:
        return None, f"{error.filename}: missing"
    except (OSError, ValueError, KeyError, TypeError) as error:  # an unreadable or half-written manifest or header
        return None, f"{folder}: unreadable ({type(error).__name__}: {error})"
