"""Tokenising a large training set in a child process that preloads a faster malloc (jemalloc or mimalloc).

The tokenizers library allocates a few small objects per token; with glibc's malloc that is a third of its time.
LD_PRELOAD can only choose the allocator when a process starts, so the train set is encoded by a child started with
it, into the datasets cache under the key the parent then asks for: the parent reads the child's result as a cache
hit. On 4.5M pairs (Intel Xeon with AVX-512, 2 cores): 311 s in-process with glibc, 159-179 s in the child with
jemalloc (and Python's cycle collector paused, as in every tokenising; docs/performance.md).

VANILLA_TRANSFORMER_MALLOC chooses: a library (a path, or a name such as libjemalloc.so.2), or "none" to tokenise
in-process with the system's malloc. By default jemalloc or mimalloc is used where installed (Debian/Ubuntu:
`apt install libjemalloc2`), on Linux.
"""

import ctypes.util
import hashlib
import json
import logging
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import datasets

from .data import encode_pairs, tokenized_fingerprint
from .memory import current_rss_mb, peak_rss_mb, return_freed_memory

logger = logging.getLogger(__name__)

MALLOC_VARIABLE = "VANILLA_TRANSFORMER_MALLOC"
MIN_PAIRS = 100_000  # below this the child's start (about 2 s of imports) costs more than it saves


def malloc_library() -> str | None:
    """The malloc to preload: the environment's choice, else jemalloc or mimalloc where installed; None for none."""
    if not sys.platform.startswith("linux"):
        return None  # LD_PRELOAD is the Linux loader's
    chosen = os.environ.get(MALLOC_VARIABLE)
    if chosen is not None:
        if chosen.strip().lower() in ("", "none", "system"):
            return None
        if "/" in chosen and not Path(chosen).is_file():  # a bare name (libjemalloc.so.2) is the loader's to find
            raise ValueError(f"{MALLOC_VARIABLE}={chosen}: no such file (a malloc library to preload, or 'none')")
        return chosen
    return next(filter(None, map(ctypes.util.find_library, ("jemalloc", "mimalloc"))), None)


@dataclass
class ChildRun:
    """What a child that encoded the train set ran with, and the memory it and its parent held."""

    library: str
    loaded: bool  # whether the library was in the child's memory map (the loader skips one it cannot load)
    peak_rss_mb: int
    parent_rss_mb: int  # the parent's while the child ran
    parent_file_mb: int  # of which pages of mapped files (the Arrow tables), which the child may map too

    def describe(self) -> str:
        loaded = "preloaded" if self.loaded else "asked for but not loaded"
        return (f"child process, {Path(self.library).name} {loaded}, peak RSS {self.peak_rss_mb:,} MB; "
                f"this process {self.parent_rss_mb:,} MB meanwhile, {self.parent_file_mb:,} MB of it mapped files")


def tokenize_train(dataset: datasets.Dataset, tokenizer, langs: tuple[str, str], num_proc: int | None = None,
                   min_pairs: int = MIN_PAIRS, fingerprint: str | None = None, shard: tuple[int, int] | None = None
                   ) -> tuple[datasets.Dataset, ChildRun | None]:
    """data.tokenize(), the encoding done in a child process with a faster malloc when it is worth it.

    fingerprint: the key of the whole set tokenised (by default this process's: the text's and the tokenizer's).
    shard: (index, count): only the index-th of `count` contiguous shards of the pairs, under a key of its own.
    Returns the tokenised pairs and, when a child encoded them, how it ran.
    """
    library = malloc_library()
    backend = tokenizer.backend_tokenizer.to_str()
    fingerprint = fingerprint or tokenized_fingerprint(dataset._fingerprint, backend, langs, None)
    pairs = dataset
    if shard is not None:
        pairs, fingerprint = dataset.shard(shard[1], shard[0], contiguous=True), shard_fingerprint(fingerprint, *shard)
    # The child reads the pairs from their Arrow files, whole (not through a selection), and hands its result over
    # through the datasets cache.
    readable = bool(dataset.cache_files) and dataset._indices is None and datasets.is_caching_enabled()
    worth_it = (library is not None and len(pairs) >= min_pairs and readable
                and not already_tokenized(dataset, fingerprint))
    child = run_child(dataset, backend, langs, num_proc, fingerprint, library, shard) if worth_it else None
    # The same key as tokenize(dataset, tokenizer, ...): the child's output is read as a cache hit.
    return encode_pairs(pairs, backend, langs, num_proc, None, fingerprint), child


def shard_fingerprint(fingerprint: str, index: int, count: int) -> str:
    """The key of the index-th of `count` contiguous shards of the pairs tokenised under `fingerprint`."""
    return hashlib.sha256(json.dumps([fingerprint, index, count]).encode()).hexdigest()[:16]


def already_tokenized(dataset: datasets.Dataset, fingerprint: str) -> bool:
    """Whether the datasets cache holds these pairs tokenised (its files are named cache-FINGERPRINT*.arrow)."""
    return any(Path(dataset.cache_files[0]["filename"]).parent.glob(f"cache-{fingerprint}*.arrow"))


def run_child(dataset: datasets.Dataset, backend: str, langs: tuple[str, str], num_proc: int | None,
              fingerprint: str, library: str, shard: tuple[int, int] | None = None) -> ChildRun | None:
    """Encode the pairs in a child with `library` preloaded; on failure say why (the parent then encodes them)."""
    with tempfile.TemporaryDirectory(prefix="vanilla-transformer-tokenize-") as folder:
        spec = Path(folder) / "spec.json"
        spec.write_text(json.dumps({
            "files": [f["filename"] for f in dataset.cache_files], "rows": len(dataset), "backend": backend,
            "langs": list(langs), "num_proc": num_proc, "fingerprint": fingerprint, "shard": shard,
        }), encoding="utf-8")
        report = Path(folder) / "report.json"
        env = {**os.environ, "LD_PRELOAD": " ".join(filter(None, (library, os.environ.get("LD_PRELOAD"))))}
        logger.info("tokenize train: encoding %s in a child process with %s preloaded",
                    f"shard {shard[0]} of {shard[1]}" if shard else f"{len(dataset)} pairs", library)
        return_freed_memory()  # what the tokenizer's training freed, for the child to use
        parent_rss_mb, parent_file_mb = current_rss_mb()
        code = subprocess.call([sys.executable, "-m", __name__, str(spec), str(report)], env=env)
        if code != 0 or not report.is_file():
            logger.warning("tokenize train: the child process with %s failed (exit code %s); encoding in this "
                           "process instead", library, code)
            return None
        child = json.loads(report.read_text(encoding="utf-8"))
    return ChildRun(library, child["malloc_loaded"], child["peak_rss_mb"], parent_rss_mb, parent_file_mb)


def main(spec_path: str, report_path: str) -> None:
    """The child: read the pairs from their Arrow files and encode them into the cache under the parent's key."""
    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    tables = [datasets.Dataset.from_file(file) for file in spec["files"]]
    dataset = tables[0] if len(tables) == 1 else datasets.concatenate_datasets(tables)
    if len(dataset) != spec["rows"]:
        sys.exit(f"{spec['files']}: {len(dataset)} rows, but the parent has {spec['rows']}")
    if spec["shard"] is not None:
        index, count = spec["shard"]
        dataset = dataset.shard(count, index, contiguous=True)
    encode_pairs(dataset, spec["backend"], tuple(spec["langs"]), spec["num_proc"], None, spec["fingerprint"])
    preloaded = os.environ.get("LD_PRELOAD", "").split()[0]
    mapped = {Path(line.split()[-1]) for line in Path("/proc/self/maps").read_text().splitlines() if "/" in line}
    loaded = any(path.name == preloaded or path == Path(preloaded).resolve() for path in mapped)
    Path(report_path).write_text(json.dumps({
        "malloc_loaded": loaded,
        "peak_rss_mb": peak_rss_mb(),
    }), encoding="utf-8")


if __name__ == "__main__":
    main(*sys.argv[1:])
