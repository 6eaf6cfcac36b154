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
import time
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

from .data import clean, load_parallel, tokenize
from .memory import peak_rss_mb, return_freed_memory
from .recipe import Recipe
from .tokenize_child import tokenize_train
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
    """Read, tokenise and clean the recipe's data; the main process first, the others then reuse its caches.

    tokenizer_dir: a tokenizer saved there earlier is used (the run folder's, on resume).
    max_length: the model's positions: longer training pairs are dropped, longer validation sentences truncated.
    """
    d = recipe.data
    langs = (d.src, d.tgt)
    phases = []

    @contextmanager
    def phase(name: str):  # yields the phase's record, and the cache files that existed before it
        started = time.perf_counter()
        record = Phase(name, 0.0)
        yield record, arrow_files()  # what the datasets cache held before
        record.seconds = round(time.perf_counter() - started, 1)
        record.peak_rss_mb = peak_rss_mb()
        phases.append(record)
        logger.info("data path: %s took %.1f s", name, record.seconds)

    state = process_state(recipe.training.ddp_timeout)
    with main_process_first(state, recipe.training.ddp_timeout):
        with phase("read text") as (p, existing):
            splits = [s for s in (d.train, d.validation, d.test) if s]
            raw = load_parallel(data_source, langs, d.hub_config, splits=splits, drop_empty=d.drop_empty)
            p.rows, p.megabytes = len(raw[d.train]), arrow_megabytes(raw[d.train])
            p.cached = found_in(raw[d.train], existing)
            return_freed_memory()  # what reading the files left in the heap and Arrow's pool
        with phase("tokenizer") as (p, _):
            tokenizer, p.cached = load_or_train_tokenizer(recipe, raw[d.train], tokenizer_dir)
        with phase("tokenize train") as (p, existing):
            tokenized, child = tokenize_train(raw[d.train], tokenizer, langs, d.num_proc)
            if child is not None:
                p.detail, p.peak_rss_with_child_mb = child.describe(), child.parent_rss_mb + child.peak_rss_mb
            p.rows, p.megabytes = len(tokenized), arrow_megabytes(tokenized)
            p.cached = found_in(tokenized, existing)
        with phase("clean") as (p, _):
            train_set, cleaning = clean(tokenized, d.max_length, d.max_ratio, max_positions=max_length)
            p.rows = len(train_set)
        with phase("tokenize validation") as (p, existing):
            validation_pairs = raw[d.validation]
            if d.validation_size:
                validation_pairs = validation_pairs.select(range(min(d.validation_size, len(validation_pairs))))
            validation_set = tokenize(validation_pairs, tokenizer, langs, d.num_proc, max_length)
            p.rows = len(validation_set)
            p.cached = found_in(validation_set, existing)
    return PreparedData(raw, tokenizer, train_set, validation_set, cleaning, phases)


def process_state(timeout_seconds: int | None = None) -> PartialState:
    """This process's place in an `accelerate launch` (rank, main or not).

    On a machine without CUDA the processes are CPU workers: PartialState() alone would take each for a lone main
    process, and every one would prepare the data, and write the run folder, at the same time.
    timeout_seconds: how long a process waits for the others in a collective (a barrier included); the first call
    sets it for the whole run, the Trainer's own setting comes too late.
    """
    kwargs = {"timeout": timedelta(seconds=timeout_seconds)} if timeout_seconds else {}
    return PartialState(cpu=not torch.cuda.is_available(), **kwargs)


@contextmanager
def main_process_first(state: PartialState, timeout_seconds: int):
    """The block runs in the main process first, then in the main process of each other machine, then in all the
    others, each turn reading what the earlier ones cached: once in all if the machines share the datasets cache,
    once per machine if each has its own disk, and never twice at once on one machine.

    The others wait at a barrier; a wait longer than the timeout is an error that says what to do.
    """
    turn = 0 if state.is_main_process else 1 if state.is_local_main_process else 2
    for current in range(3):
        if current == turn:
            yield
        try:
            state.wait_for_everyone()
        except RuntimeError as error:  # what gloo and NCCL raise when a collective times out
            if current < turn:
                raise RuntimeError(
                    f"process {state.process_index} waited more than training.ddp_timeout={timeout_seconds} s for "
                    "the data to be prepared: raise it, or run `vanilla-transformer prepare` on the recipe first (on "
                    "every machine that has a cache of its own); the launch then finds everything cached") from error
            raise


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
        texts = training_text(train_pairs, (recipe.data.src, recipe.data.tgt), recipe.tokenizer.sample,
                              recipe.training.seed)
        tokenizer = train_tokenizer(texts=texts, vocab_size=recipe.tokenizer.vocab_size, model=recipe.tokenizer.model)
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
                      recipe.training.seed if t.sample else None])
    root = Path(datasets.config.HF_DATASETS_CACHE) / "vanilla_transformer" / "tokenizers"
    root.mkdir(parents=True, exist_ok=True)
    return root / hashlib.sha256(key.encode()).hexdigest()[:16]


def training_text(pairs: datasets.Dataset, langs: tuple[str, str], sample: int | None, seed: int) -> list[str]:
    """Both sides of the pairs the tokenizer learns from: all of them, or a random sample of `sample` pairs."""
    if sample and sample < len(pairs):
        chosen = np.sort(np.random.default_rng(seed).choice(len(pairs), sample, replace=False))
        pairs = pairs.select(chosen)
        logger.info("tokenizer: learning from %d of the pairs (tokenizer.sample)", sample)
    column = pairs.with_format("arrow")["translation"]
    sides = [pc.struct_field(column, lang).to_pylist() for lang in langs]
    return [text for pair in zip(*sides) for text in pair]  # source, target, source, ...: the order of the files


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
