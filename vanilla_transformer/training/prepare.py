"""A run's data path, from the recipe to tokenised, cleaned pairs: read, tokenizer, tokenize, clean.

Every phase is timed, and the costly ones are cached across runs, keyed by their inputs: the text as Arrow (the
datasets cache, keyed by the files' content; a folder laid out like a Hub dataset repo by the files' modification
times, as datasets keys it, so `touch` its files to have them read again), the tokenizer (keyed by the training
text's fingerprint and the tokenizer settings), the token ids (the datasets cache, keyed by the text and the
tokenizer). A rerun, a resume, and the other processes of a multi-process launch (which wait for the main process,
and on another machine for that machine's main process) reuse them. A large train set is encoded in a child process
with a faster malloc (tokenize_child.py).
"""

import hashlib
import json
import logging
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path

import datasets
import numpy as np
import pyarrow.compute as pc
import torch
from accelerate import PartialState
from transformers import AutoTokenizer

from .coordination import Launch
from .data import clean, load_parallel, tokenize, tokenized_fingerprint
from .memory import peak_rss_mb, return_freed_memory
from .recipe import Recipe
from .shards import shares_disk_with_main, tokenize_across_machines
from .tokenizer import train_tokenizer

logger = logging.getLogger(__name__)


@dataclass
class Phase:
    """One step of the data path: how long it took, what it produced, and whether it came from a cache."""

    name: str
    seconds: float
    rows: int | None = None
    megabytes: float | None = None
    cached: bool | None = None
    peak_rss_mb: int | None = None  # the process's, so far
    detail: str | None = None  # how it ran, where that is not the obvious way
    peak_rss_with_child_mb: int | None = None  # this process's RSS while a child worked for it, plus the child's peak
    shards: dict | None = None  # the train set's shards this process encoded, read, received, sent (shards.py)


@dataclass
class PreparedData:
    """What the model and Trainer need from the data, and how it was made."""

    raw: datasets.DatasetDict
    tokenizer: object
    train_set: datasets.Dataset
    validation_set: datasets.Dataset
    cleaning: dict
    phases: list[Phase] = field(default_factory=list)

    def table(self) -> str:
        """The phases as a text table, for the prepare command and the training log."""
        lines = [f"{'phase':<22}{'seconds':>9}{'rows':>12}{'MB':>9}{'peak RSS MB':>13}  cached"]
        for p in self.phases:
            rows = f"{p.rows:,}" if p.rows is not None else ""
            megabytes = f"{p.megabytes:,.0f}" if p.megabytes is not None else ""
            cached = {True: "yes", False: "no", None: ""}[p.cached]
            rss = f"{p.peak_rss_mb:,}" if p.peak_rss_mb is not None else ""
            detail = f" ({p.detail})" if p.detail else ""
            lines.append(f"{p.name:<22}{p.seconds:>9.1f}{rows:>12}{megabytes:>9}{rss:>13}  {cached}{detail}")
        lines.append(f"{'total':<22}{sum(p.seconds for p in self.phases):>9.1f}")
        return "\n".join(lines)

    def save_phases(self, path: Path) -> None:
        path.write_text(json.dumps([asdict(p) for p in self.phases], indent=2) + "\n", encoding="utf-8")


def prepare_data(recipe: Recipe, data_source: str, tokenizer_dir: Path | None = None,
                 max_length: int | None = None) -> PreparedData:
    """Read, tokenise and clean the recipe's data; each machine's main process first, the others then reuse its
    caches; in a launch of several machines the train set is tokenised a shard per machine.

    tokenizer_dir: a tokenizer saved there earlier is used (the run folder's, on resume).
    max_length: the model's positions: longer training pairs are dropped, longer validation sentences truncated.
    """
    d = recipe.data
    langs = (d.src, d.tgt)
    phases = []

    @contextmanager
    def phase(name: str):  # yields the phase's record, and the cache files that existed before it
        started = time.perf_counter()
        launch.step = name  # named in this process's failure, for the processes waiting on it
        record = Phase(name, 0.0)
        yield record, arrow_files()  # what the datasets cache held before
        record.seconds = round(time.perf_counter() - started, 1)
        record.peak_rss_mb = peak_rss_mb()
        phases.append(record)
        logger.info("data path: %s took %.1f s", name, record.seconds)

    state = process_state(recipe.training.ddp_timeout)
    launch = Launch.of(state)
    with launch.running():
        # Whose datasets cache this process reads, after that process has filled it: its machine's main process,
        # and for that one machine 0's, where it sees machine 0's disk; one that fills its own waits for none.
        shares_disk = shares_disk_with_main(launch)
        disk_leader = launch.local_main if not launch.is_local_main else 0 if shares_disk else None
        # The waits come before the phases: what the cache held before a phase includes what the other process wrote.
        launch.wait_for(disk_leader, "read text", "read the text into the datasets cache")
        with phase("read text") as (p, existing):
            splits = [s for s in (d.train, d.validation, d.test) if s]
            raw = load_parallel(data_source, langs, d.hub_config, splits=splits, drop_empty=d.drop_empty)
            p.rows, p.megabytes = len(raw[d.train]), arrow_megabytes(raw[d.train])
            p.cached = found_in(raw[d.train], existing)
            return_freed_memory()  # what reading the files left in the heap and Arrow's pool
            launch.done("read text")
        with phase("tokenizer") as (p, _):
            tokenizer, p.cached, fingerprint = shared_tokenizer(launch, recipe, raw[d.train], tokenizer_dir)
            if launch.rank != 0 and launch.store is not None:
                p.detail = "machine 0's main process's"
        with phase("tokenize train") as (p, existing):
            tokenized, child, shards = tokenize_across_machines(launch, raw[d.train], tokenizer, langs, d.num_proc,
                                                                fingerprint, shares_disk)
            if child is not None:
                p.detail, p.peak_rss_with_child_mb = child.describe(), child.parent_rss_mb + child.peak_rss_mb
            p.rows, p.megabytes = len(tokenized), arrow_megabytes(tokenized)
            p.cached = not shards.encoded if shards else found_in(tokenized, existing)
            if shards:
                p.shards = asdict(shards)
                p.detail = "; ".join(filter(None, (shards.describe(), p.detail)))
        with phase("clean") as (p, _):
            train_set, cleaning = clean(tokenized, d.max_length, d.max_ratio, max_positions=max_length)
            p.rows = len(train_set)
        launch.wait_for(disk_leader, "tokenize validation", "tokenize the validation set")
        with phase("tokenize validation") as (p, existing):
            validation_pairs = raw[d.validation]
            if d.validation_size:
                validation_pairs = validation_pairs.select(range(min(d.validation_size, len(validation_pairs))))
            validation_set = tokenize(validation_pairs, tokenizer, langs, d.num_proc, max_length)
            p.rows = len(validation_set)
            p.cached = found_in(validation_set, existing)
            launch.done("tokenize validation")
        launch.finish()
    return PreparedData(raw, tokenizer, train_set, validation_set, cleaning, phases)


def shared_tokenizer(launch: Launch, recipe: Recipe, train_pairs: datasets.Dataset, saved: Path | None):
    """The run's tokenizer: machine 0's main process loads or learns it, the other processes of the launch receive
    it from that one (the same tokenizer, whatever their disks hold), on a train text that must be the same.

    Returns it, whether it was reused rather than learned, and the key of the train set tokenised with it.
    """
    if launch.rank == 0:
        tokenizer, reused = load_or_train_tokenizer(recipe, train_pairs, saved)
        fingerprint = tokenized_fingerprint(train_pairs._fingerprint, tokenizer.backend_tokenizer.to_str(),
                                            (recipe.data.src, recipe.data.tgt), None)
        if launch.store is not None:
            with tempfile.TemporaryDirectory() as folder:
                tokenizer.save_pretrained(folder)
                files = {f.name: f.read_text(encoding="utf-8") for f in Path(folder).iterdir() if f.is_file()}
            launch.done("tokenizer", {"files": files, "text": train_pairs._fingerprint, "rows": len(train_pairs),
                                      "tokenized": fingerprint})
        return tokenizer, reused, fingerprint
    made = launch.wait_for(0, "tokenizer", "load or learn the tokenizer")
    if (made["text"], made["rows"]) != (train_pairs._fingerprint, len(train_pairs)):
        raise ValueError(
            f"process {launch.rank} read another train text than process 0 ({len(train_pairs):,} pairs, fingerprint "
            f"{train_pairs._fingerprint}; process 0: {made['rows']:,}, {made['text']}): every machine of a launch "
            "must read the same corpus, at the same path (the datasets cache keys a text by its path and content)")
    with tempfile.TemporaryDirectory() as folder:
        for name, text in made["files"].items():
            (Path(folder) / name).write_text(text, encoding="utf-8")
        tokenizer = AutoTokenizer.from_pretrained(folder)
    return tokenizer, True, made["tokenized"]


def process_state(timeout_seconds: int | None = None) -> PartialState:
    """This process's place in an `accelerate launch` (rank, main or not).

    On a machine without CUDA the processes are CPU workers: PartialState() alone would take each for a lone main
    process, and every one would prepare the data, and write the run folder, at the same time.
    timeout_seconds: how long a process waits for the others in a collective (a barrier included); the first call
    sets it for the whole run, the Trainer's own setting comes too late.
    """
    kwargs = {"timeout": timedelta(seconds=timeout_seconds)} if timeout_seconds else {}
    return PartialState(cpu=not torch.cuda.is_available(), **kwargs)


def load_or_train_tokenizer(recipe: Recipe, train_pairs: datasets.Dataset, saved: Path | None):
    """The recipe's tokenizer, one saved in the run folder, one cached for this text and settings, or a new one.

    Returns it, and whether it was reused rather than trained.
    """
    if recipe.tokenizer.path:
        return AutoTokenizer.from_pretrained(recipe.tokenizer.path), True
    if saved is not None and (saved / "tokenizer.json").is_file():
        return AutoTokenizer.from_pretrained(saved), True
    cache = tokenizer_cache(recipe, train_pairs)
    if (cache / "tokenizer.json").is_file():
        logger.info("tokenizer: reusing %s", cache)
        tokenizer, reused = AutoTokenizer.from_pretrained(cache), True
    else:
        t = recipe.tokenizer
        texts = training_text(train_pairs, (recipe.data.src, recipe.data.tgt), t.sample, recipe.training.seed)
        pairs = min(t.sample or len(train_pairs), len(train_pairs))
        tokenizer = train_tokenizer(texts=texts, vocab_size=t.vocab_size, model=t.model, length=2 * pairs)
        partial = cache.with_name(f"{cache.name}.partial-{process_state().process_index}")
        tokenizer.save_pretrained(partial)  # then renamed: a later run finds it whole or not at all
        if cache.exists():
            shutil.rmtree(partial)
        else:
            partial.replace(cache)
        reused = False
    return tokenizer, reused


def tokenizer_cache(recipe: Recipe, train_pairs: datasets.Dataset) -> Path:
    """Where the tokenizer learned from this text with these settings is kept, beside the datasets cache."""
    t = recipe.tokenizer
    key = json.dumps([train_pairs._fingerprint, recipe.data.src, recipe.data.tgt, t.vocab_size, t.model, t.sample,
                      recipe.training.seed if t.sample else None, "sample drawn chunk by chunk" if t.sample else None])
    root = Path(datasets.config.HF_DATASETS_CACHE) / "vanilla_transformer" / "tokenizers"
    root.mkdir(parents=True, exist_ok=True)
    return root / hashlib.sha256(key.encode()).hexdigest()[:16]


# Pairs read from Arrow into Python strings at a time while the tokenizer learns (a few MB of text).
TRAINING_TEXT_CHUNK_PAIRS = 1 << 14


def training_text(pairs: datasets.Dataset, langs: tuple[str, str], sample: int | None, seed: int) -> Iterator[str]:
    """Both sides of the pairs the tokenizer learns from (source, target, source, ...: the order of the files), read
    a chunk at a time: all of them, or `sample` pairs drawn uniformly at random without replacement.

    The sample is drawn chunk by chunk (how many of it fall in each chunk from the hypergeometric distribution, then
    which), so neither the indices nor the texts of the corpus are ever held whole.
    """
    table, rng, left = pairs.with_format("arrow"), np.random.default_rng(seed), None
    if sample and sample < len(pairs):
        left = sample
        logger.info("tokenizer: learning from %d of the pairs (tokenizer.sample)", sample)
    for start in range(0, len(pairs), TRAINING_TEXT_CHUNK_PAIRS):
        chunk = table[start:start + TRAINING_TEXT_CHUNK_PAIRS]["translation"]
        if left is not None:
            after = len(pairs) - start - len(chunk)
            drawn = int(rng.hypergeometric(len(chunk), after, left)) if after else left
            chunk = chunk.take(np.sort(rng.choice(len(chunk), drawn, replace=False)))
            left -= drawn
        sides = [pc.struct_field(chunk, lang).to_pylist() for lang in langs]
        yield from (text for pair in zip(*sides) for text in pair)


def arrow_files() -> set[Path]:
    """The Arrow files in the datasets cache."""
    return set(Path(datasets.config.HF_DATASETS_CACHE).expanduser().resolve().rglob("*.arrow"))


def found_in(dataset: datasets.Dataset, existing: set[Path]) -> bool:
    """Whether the dataset was read from Arrow files that existed before it was asked for: a cache hit, by this
    process or another (an in-memory dataset was computed)."""
    files = [Path(f["filename"]).resolve() for f in dataset.cache_files]
    return bool(files) and all(file in existing for file in files)


def arrow_megabytes(dataset: datasets.Dataset) -> float:
    return round(dataset.data.nbytes / 2**20, 1)
