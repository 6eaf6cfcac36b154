"""Parallel data as a `datasets.DatasetDict` in the WMT schema: {"translation": {"de": ..., "en": ...}}.

Sources: a Hub dataset (`wmt/wmt14` with config `de-en`), or a local folder of line-aligned text files
(`SPLIT.LANG`), JSON lines (`SPLIT.jsonl`) or parquet (`SPLIT.parquet`) files with a `translation` column.
"""

import gc
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import xxhash
from datasets.table import MemoryMappedTable
from tokenizers import Tokenizer

from ..corpus import CorpusError, aligned_line_chunks, jsonl_line_number, jsonl_problem

logger = logging.getLogger(__name__)


def load_parallel(source: str | Path, langs: tuple[str, str], hub_config: str | None = None,
                  splits: list[str] | None = None, drop_empty: bool = False) -> datasets.DatasetDict:
    """The splits of a parallel corpus, from a local folder or, when `source` is not a folder, from the Hub."""
    path = Path(source)
    found = find_splits(path, langs) if path.is_dir() else set()
    if not found:
        if path.is_dir() and not (path / "data").is_dir() and not (path / "README.md").is_file():
            raise CorpusError(f"{path}: no SPLIT.{langs[0]}/SPLIT.{langs[1]}, .jsonl or .parquet files")
        # A Hub dataset id, or a folder laid out like a Hub dataset repo (data/train-*.parquet, ...).
        loaded = datasets.load_dataset(str(source), hub_config)
        missing = [name for name in splits or () if name not in loaded]
        if missing:
            raise CorpusError(f"{source}: no split {missing[0]!r} (it has {sorted(loaded)})")
        return datasets.DatasetDict({name: check_table(loaded[name], Path(f"{source}[{name}]"), langs)
                                     for name in (splits or loaded)})
    splits = splits or sorted(found)
    return datasets.DatasetDict({split: load_split(path, split, langs, drop_empty) for split in splits})


def find_splits(folder: Path, langs: tuple[str, str]) -> set[str]:
    """Split names with a text file in either language (a missing side is reported later), or a table file."""
    text = {p.name[: -len(lang) - 1] for lang in langs for p in folder.glob(f"*.{lang}")}
    tables = {p.stem for p in folder.glob("*.jsonl")} | {p.stem for p in folder.glob("*.parquet")}
    return text | tables


def load_split(folder: Path, split: str, langs: tuple[str, str], drop_empty: bool = False) -> datasets.Dataset:
    """One split; text files are checked line by line, and tables must carry both languages."""
    for suffix, builder in (("jsonl", "json"), ("parquet", "parquet")):
        table = folder / f"{split}.{suffix}"
        if table.is_file():
            try:
                # datasets keys a local file's cache by its modification time alone; the config's name adds the content.
                loaded = datasets.load_dataset(builder, name=f"content-{content_hash(table)}", data_files=str(table),
                                               split="train")
            except (datasets.exceptions.DatasetGenerationError, ValueError) as error:
                # A line that does not parse, or a field whose type changes (its pandas fallback: "Expected object or
                # value"); the reader names no line, or a row number that is not the line's. A scan finds the line.
                problem = jsonl_problem(table, langs) if suffix == "jsonl" else None
                unreadable = f"{table}: not readable as {builder} ({error.__cause__ or error})"
                raise CorpusError(problem or unreadable) from None
            line_of = (lambda row: jsonl_line_number(table, row)) if suffix == "jsonl" else None
            return check_table(loaded, table, langs, line_of)
    src_path, tgt_path = (folder / f"{split}.{lang}" for lang in langs)
    for lang, file in zip(langs, (src_path, tgt_path)):
        if not file.is_file():
            raise CorpusError(f"{file}: no such file (language {lang!r} is missing for split {split!r})")
    # Written into the datasets cache, keyed by the files' content, so that tokenising it is cached too.
    builder = TextPairs(dataset_name="text_pairs", src_path=str(src_path), tgt_path=str(tgt_path), src=langs[0],
                        tgt=langs[1], drop_empty=drop_empty,
                        contents=f"{content_hash(src_path)};{content_hash(tgt_path)}")
    try:
        builder.download_and_prepare()
    except datasets.exceptions.DatasetGenerationError as error:
        if isinstance(error.__cause__, CorpusError):
            raise error.__cause__ from None
        raise
    return builder.as_dataset(split=datasets.Split.TRAIN)


def content_hash(path: Path) -> str:
    """A hash of the file's bytes, which the caches of its text are keyed by: an edit that keeps the size and the
    modification time (touch -r, a restore from a backup, some sync tools) is new text.

    xxh3-128 (xxhash, which datasets hashes with too) takes 0.1-0.3 s for the 845 MB of a 4.5M-pair corpus in the
    page cache on a 2-core AMD EPYC, 3.5 GB/s or more (sha256 1.4 GB/s there, blake2b 0.7 GB/s); from a cold disk,
    what reading it takes.
    """
    digest, block = xxhash.xxh3_128(), bytearray(1 << 22)  # one buffer, read into: no bytes object per block
    with open(path, "rb", buffering=0) as file:
        while size := file.readinto(block):
            digest.update(memoryview(block)[:size])
    return digest.hexdigest()


# The source text read into each Arrow chunk: memory holds one chunk (about 3x this in Python strings), whatever the
# corpus' size. Each chunk is one record batch of the cache file, and every process that maps the file holds about a
# kilobyte of Arrow objects per record batch and column: 8 MiB chunks keep that to about 500 batches at 45M pairs.
TEXT_CHUNK_BYTES = 8 << 20


@dataclass
class TextPairsConfig(datasets.BuilderConfig):
    """The two files of a split, their languages, and whether pairs with an empty side are dropped."""

    src_path: str = ""
    tgt_path: str = ""
    src: str = ""
    tgt: str = ""
    drop_empty: bool = False
    contents: str = ""  # the files' hashes, there for the cache key only


class TextPairs(datasets.ArrowBasedBuilder):
    """Aligned pairs from two text files as Arrow, written a chunk at a time into the datasets cache (the
    datasets.Dataset.from_generator of rows, without a Python dict per pair)."""

    BUILDER_CONFIG_CLASS = TextPairsConfig
    VERSION = datasets.Version("2.0.0")  # in the cache's path: change it when the output changes
    DEFAULT_WRITER_BATCH_SIZE = 1 << 24  # rows: a chunk is one record batch (datasets' default splits it every 1,000)

    def _info(self) -> datasets.DatasetInfo:
        text = datasets.Value("string")
        return datasets.DatasetInfo(features=datasets.Features({"translation": {self.config.src: text,
                                                                                self.config.tgt: text}}))

    def _split_generators(self, dl_manager) -> list[datasets.SplitGenerator]:
        return [datasets.SplitGenerator(name=datasets.Split.TRAIN)]

    def _generate_tables(self) -> Iterator[tuple[int, pa.Table]]:
        c = self.config
        yield from enumerate(pair_tables(Path(c.src_path), Path(c.tgt_path), (c.src, c.tgt), c.drop_empty))


def pair_tables(src_path: Path, tgt_path: Path, langs: tuple[str, str], drop_empty: bool) -> Iterator[pa.Table]:
    """Aligned pairs from two text files as tables of {"translation": {src: ..., tgt: ...}}, a chunk at a time;
    mismatched line counts and empty lines (unless drop_empty) are errors naming the file and line."""
    dropped = 0
    for first, src, tgt in aligned_line_chunks(src_path, tgt_path, TEXT_CHUNK_BYTES):
        keep = None
        if not (all(map(str.strip, src)) and all(map(str.strip, tgt))):
            keep = [bool(s.strip() and t.strip()) for s, t in zip(src, tgt)]
            if not drop_empty:
                row = keep.index(False)
                path = tgt_path if src[row].strip() else src_path
                raise CorpusError(f"{path}:{first + row}: empty line (its translation is not; pass drop_empty to skip)")
            dropped += keep.count(False)
        pairs = pa.StructArray.from_arrays([pa.array(src, pa.string()), pa.array(tgt, pa.string())], list(langs))
        table = pa.table({"translation": pairs})
        yield table if keep is None else table.filter(pa.array(keep))
    if dropped:
        logger.info("%s: dropped %d pairs with an empty side", src_path, dropped)


def check_table(dataset: datasets.Dataset, path: Path, langs: tuple[str, str],
                line_of: Callable[[int], int] | None = None) -> datasets.Dataset:
    """The table, if every row's translation holds a text in both languages; else a CorpusError naming the row, or
    the file's line that holds it (`line_of`, from the row's number).

    A table of {lang: text} rows is checked in Arrow, a column at a time (row by row as Python dicts, a WMT-size one
    takes a minute). One whose rows differ in their keys (JSON lines, which datasets then stores as JSON text) is
    checked row by row and turned into such a table of the two languages, as the tokenising reads them.
    """
    line_of = line_of or (lambda row: row)
    if "translation" not in dataset.column_names:
        raise CorpusError(f"{path}: no 'translation' column (columns: {dataset.column_names})")
    pairs = dataset.with_format("arrow")["translation"]  # selections applied
    if not pa.types.is_struct(pairs.type):
        for number, row in enumerate(dataset["translation"], start=1):
            for lang in langs:
                if not isinstance(row, dict) or not isinstance(row.get(lang), str):
                    raise CorpusError(f"{path}:{line_of(number)}: no {lang!r} in the translation, or not as text")
        features = datasets.Features({**dataset.features,
                                      "translation": {lang: datasets.Value("string") for lang in langs}})
        return dataset.map(lambda row: {"translation": {lang: row["translation"][lang] for lang in langs}},
                           features=features, desc=f"{path}: the translation as {langs[0]} and {langs[1]}")
    for lang in langs:
        if pairs.type.get_field_index(lang) < 0:
            raise CorpusError(f"{path}:{line_of(1)}: no {lang!r} in the translation")
        texts = pc.struct_field(pairs, lang)  # null where the row or its text is
        if not (pa.types.is_string(texts.type) or pa.types.is_large_string(texts.type)):
            raise CorpusError(f"{path}:{line_of(1)}: the {lang!r} of the translation is {texts.type}, not text")
        missing = pc.index(pc.is_null(texts), True).as_py()
        if missing >= 0:
            raise CorpusError(f"{path}:{line_of(missing + 1)}: no {lang!r} in the translation")
    return dataset


def token_lengths(dataset: datasets.Dataset, column: str) -> np.ndarray:
    """The length of every row's token list, read from Arrow (no Python list per row), selections applied."""
    return arrow_token_lengths(dataset, column).to_numpy()


def arrow_token_lengths(dataset: datasets.Dataset, column: str) -> pa.ChunkedArray:
    """token_lengths() as Arrow: in Arrow's memory, which a chunked pass reads a slice at a time."""
    return pa.chunked_array(list(token_length_chunks(dataset, column)), pa.int32())


def token_length_chunks(dataset: datasets.Dataset, column: str, rows: int | None = None) -> Iterator[pa.Array]:
    """The lengths of the rows' token lists (int32), `rows` rows at a time (CLEAN_CHUNK_ROWS by default), selections
    applied: a pass over them holds one chunk of lengths, not one per row of the corpus."""
    rows = rows or CLEAN_CHUNK_ROWS
    lists, indices = dataset.data.column(column), dataset._indices
    for start in range(0, len(dataset), rows):
        if indices is None:
            yield pc.list_value_length(lists.slice(start, rows)).combine_chunks().cast(pa.int32())
            continue
        # Through the selection's row indices, from the span of the table they cover: reading the selected rows'
        # token lists would copy their ids (seconds per call on millions of pairs). A selection in row order (what
        # clean() makes) spans about a chunk of the table; one in random order may span all of it.
        taken = indices.column(0).slice(start, rows)
        first, last = pc.min_max(taken).as_py().values()
        span = pc.list_value_length(lists.slice(first, last - first + 1)).combine_chunks().cast(pa.int32())
        yield span.take(pc.subtract(taken, pa.scalar(first, pa.uint64())).combine_chunks())


# Rows of the length arrays that cleaning holds as numpy at a time: its temporaries (about 20 bytes a row) stay a few
# tens of MB whatever the corpus' size.
CLEAN_CHUNK_ROWS = 1 << 20


def clean(dataset: datasets.Dataset, max_length: int | None = None, max_ratio: float | None = None,
          max_positions: int | None = None) -> tuple[datasets.Dataset, dict[str, int]]:
    """Drop tokenised pairs longer than max_length subwords or the model's max_positions on either side, or with a
    length ratio above max_ratio.

    Returns the kept pairs and the counts of what was dropped, as standard MT cleaning scripts report. A pair longer
    than the positions is dropped whatever max_length says: the model could not take it, and the run would fail at
    the step that draws it, again at the same step on every resume.
    """
    limits = [limit for limit in (max_length, max_positions) if limit is not None]
    counts = {"kept": 0, "too_long": 0, "bad_ratio": 0}

    def kept_rows() -> Iterator[pa.Array]:  # a chunk's kept row numbers at a time: no temporaries per corpus row
        start = 0
        for src, tgt in zip(*(token_length_chunks(dataset, column) for column in ("input_ids", "labels"))):
            src, tgt = src.to_numpy(), tgt.to_numpy()
            longest, shortest = np.maximum(src, tgt), np.minimum(src, tgt)
            too_long = longest > min(limits) if limits else np.zeros(len(src), dtype=bool)
            bad_ratio = (~too_long & (longest > max_ratio * shortest) if max_ratio is not None
                         else np.zeros_like(too_long))
            # The kept rows in Arrow's memory (a numpy array wrapped by pa.array would stay alive with it).
            rows = pc.add(pc.indices_nonzero(pa.array(~too_long & ~bad_ratio)), pa.scalar(start, pa.uint64()))
            counts["kept"] += len(rows)
            counts["too_long"] += int(too_long.sum())
            counts["bad_ratio"] += int(bad_ratio.sum())
            start += len(src)
            yield rows

    kept = select_rows(dataset, kept_rows())
    logger.info("cleaning: kept %d pairs, dropped %d longer than %s tokens and %d by length ratio", counts["kept"],
                counts["too_long"], min(limits) if limits else "any", counts["bad_ratio"])
    return kept, counts


def select_rows(dataset: datasets.Dataset, rows: Iterable[pa.Array]) -> datasets.Dataset:
    """dataset.select() of the row numbers (uint64, sorted, distinct) that `rows` yields a chunk at a time, through
    an indices table: Dataset.select makes a Python list of them first (about 36 bytes a row, 1.6 GB at 45M pairs)
    and walks it in Python. The selection's fingerprint follows from the dataset's and the rows, as select's would.

    For a dataset in the datasets cache, the indices are written there, beside its files, as datasets' own select
    writes them (an Arrow file, indices-FINGERPRINT.arrow of the selection's, renamed into place whole), and mapped:
    no copy in each process (8 bytes a kept row, 262 MB at 33M, were anonymous memory in every one), and a DataLoader
    worker reopens the file rather than receiving a copy. An in-memory dataset gets them in memory.
    """
    digest = xxhash.xxh3_128()  # of the view's row numbers as int64, a chunk at a time
    written = 0
    on_disk = bool(dataset.cache_files) and datasets.is_caching_enabled()
    folder = Path(dataset.cache_files[0]["filename"]).parent if on_disk else None
    partial = tempfile.NamedTemporaryFile("wb", dir=folder, prefix="tmp-indices-", delete=False) if on_disk else None
    schema = pa.schema({"indices": pa.uint64()})
    sink = pa.ipc.new_stream(partial, schema) if on_disk else None
    in_memory = []
    try:
        for chunk in rows:
            digest.update(chunk.to_numpy().astype(np.int64))
            written += len(chunk)
            if dataset._indices is not None:  # a selection of a selection: rows of the view, mapped to the table's
                chunk = dataset._indices.column(0).take(chunk).combine_chunks()
            if sink is not None:
                sink.write_batch(pa.record_batch([chunk], schema=schema))
            else:
                in_memory.append(chunk)
        if sink is not None:
            sink.close()
            partial.flush()
            os.fsync(partial.fileno())
            partial.close()
        fingerprint = xxhash.xxh3_128_hexdigest((digest.hexdigest() + dataset._fingerprint).encode())
        if written == len(dataset):  # sorted and distinct, so all of them: nothing dropped
            return dataset
        if sink is None:
            indices = pa.table({"indices": pa.chunked_array(in_memory, pa.uint64())})
        else:
            path = folder / f"indices-{fingerprint}.arrow"
            if not path.is_file():  # else written by an earlier run, or another process: the same rows
                os.chmod(partial.name, 0o666 & ~current_umask())  # NamedTemporaryFile's 0600 hides it from others
                os.replace(partial.name, path)
            indices = MemoryMappedTable.from_file(str(path))
        return datasets.Dataset(dataset.data, info=dataset.info, split=dataset.split, indices_table=indices,
                                fingerprint=fingerprint)
    finally:
        if partial is not None:
            partial.close()
            Path(partial.name).unlink(missing_ok=True)


def current_umask() -> int:
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


# In every tokenised cache's key: change it when the output changes. v2: uint16 ids where the vocabulary fits.
TOKENIZED_FORMAT = "input_ids+labels:uint16-or-int32:v2"
# Pairs a batch of the encoding holds as Python objects, at a time per process; also the rows of each record batch of
# the tokenised cache (datasets writes 1,000 by default: 45,000 record batches at 45M pairs, whose Arrow objects are
# held by every process that maps the file).
ENCODE_BATCH_PAIRS = 50_000


def tokenize(dataset: datasets.Dataset, tokenizer, langs: tuple[str, str], num_proc: int | None = None,
             max_length: int | None = None) -> datasets.Dataset:
    """input_ids and labels (token ids, uint16 when the vocabulary fits in them, else int32) for every pair,
    through Dataset.map, cached by the datasets library.

    The tokenizer's Rust backend encodes each batch of 50,000 sentences on all cores (`encode_batch_fast`), with the
    same ids as calling the tokenizer, and the batches go in and out as Arrow (no Python dict per pair); the collator
    adds the attention masks when it pads. With max_length, longer sequences are truncated (keeping </s>), e.g. to
    the model's positional range.
    """
    backend = tokenizer.backend_tokenizer.to_str()
    return encode_pairs(dataset, backend, langs, num_proc, max_length,
                        tokenized_fingerprint(dataset._fingerprint, backend, langs, max_length))


def tokenized_fingerprint(pairs_fingerprint: str, backend: str, langs: tuple[str, str], max_length: int | None) -> str:
    """The key of the tokenised pairs in the datasets cache: the text's fingerprint, the tokenizer, the settings."""
    key = json.dumps([pairs_fingerprint, backend, list(langs), max_length, TOKENIZED_FORMAT])
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def encode_pairs(dataset: datasets.Dataset, backend: str, langs: tuple[str, str], num_proc: int | None,
                 max_length: int | None, fingerprint: str) -> datasets.Dataset:
    """tokenize() with the tokenizer's backend as JSON and the cache key given (as a child process gets them).

    The ids are stored in the smallest type that holds the vocabulary (half the disk and page cache of int32 for
    vocabularies up to 65,536); rows still come out as Python ints.
    """
    src, tgt = langs
    encoder = Tokenizer.from_str(backend)
    encoder.no_padding()
    if max_length is not None:
        encoder.enable_truncation(max_length)
    else:
        encoder.no_truncation()
    id_type = smallest_id_type(backend)

    def encode(batch: pa.Table) -> pa.Table:
        pairs = batch.column("translation")
        return pa.table({
            column: pa.array([e.ids for e in encoder.encode_batch_fast(pc.struct_field(pairs, lang).to_pylist())],
                             type=pa.list_(pa.type_for_alias(id_type)))
            for column, lang in (("input_ids", src), ("labels", tgt))
        })

    features = datasets.Features({"input_ids": datasets.Sequence(datasets.Value(id_type)),
                                  "labels": datasets.Sequence(datasets.Value(id_type))})
    with cycle_collector_paused():
        tokenized = dataset.with_format("arrow").map(
            encode, batched=True, batch_size=ENCODE_BATCH_PAIRS, writer_batch_size=ENCODE_BATCH_PAIRS,
            num_proc=num_proc, features=features,
            remove_columns=dataset.column_names, new_fingerprint=fingerprint, desc=f"tokenizing {src}->{tgt}")
    return tokenized.with_format(None)  # rows as Python objects again, as the collator takes them


def smallest_id_type(backend: str) -> str:
    """"uint16" when every id of the tokenizer (its backend as JSON) fits in one, else "int32"."""
    spec = json.loads(backend)
    ends = [len(spec["model"]["vocab"])] + [token["id"] + 1 for token in spec.get("added_tokens") or ()]
    return "uint16" if max(ends) <= 1 << 16 else "int32"


@contextmanager
def cycle_collector_paused():
    """Python's cycle collector off for a while: encoding makes millions of objects with no cycles among them, and
    each collection walks them all (12% of the tokenising time on 1M pairs)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
