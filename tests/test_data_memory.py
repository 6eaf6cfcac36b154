"""No phase of the data path holds a Python object, or an array of a value, per pair (issue 30, acceptance 3): the
memory that the Python allocator, numpy and Arrow's memory pool hold in each phase does not grow with the corpus.

Every phase works in chunks of a fixed size (text bytes, pairs, rows); the test makes them small, so that both
corpus sizes span many chunks, and measures each phase's peak on 20,000 and 80,000 pairs. Its slope per pair must
stay far below what one object per pair costs (a str is 50 bytes or more, a Python int 28, a list slot 8), and below
an array of one value per pair (the kept row numbers, 8 bytes; a length, 4): what must hold one value per pair (the
kept rows, the batches' order) is a memory-mapped file, in the page cache, not a process's own memory.
"""

import gc
import tracemalloc
from pathlib import Path

import datasets
import pyarrow as pa
import pytest
from conftest import write_pairs

from vanilla_transformer import train_tokenizer
from vanilla_transformer.training import batching, data, prepare
from vanilla_transformer.training.data import clean, load_parallel, tokenize
from vanilla_transformer.training.prepare import training_text

SIZES = (20_000, 80_000)
MAX_BYTES_PER_PAIR = 3  # a Python object per pair costs 10-20 times that, an array of row numbers 8 bytes a pair
PHASES = ("read", "tokenizer sample", "tokenize", "clean", "token batches")
PROXY_POOLS = []


def traced_peak(work):
    """What work() returns, and the peak of the memory traced while it ran, above what was traced before: by Python's
    allocator and numpy's (tracemalloc), plus that of Arrow's memory pool, which tracemalloc does not see."""
    gc.collect()
    default_pool = pa.default_memory_pool()
    arrow = pa.proxy_memory_pool(default_pool)  # counts what is allocated through it: its own peak
    PROXY_POOLS.append(arrow)  # kept while the buffers allocated through it may live: freed with it, they crash
    pa.set_memory_pool(arrow)
    tracemalloc.start()
    try:
        result = work()
        return result, tracemalloc.get_traced_memory()[1] + arrow.max_memory()
    finally:
        tracemalloc.stop()
        pa.set_memory_pool(default_pool)


def phase_peaks(corpus, langs: tuple[str, str]) -> dict[str, int]:
    """Each phase's traced peak on the corpus in the folder, reading and writing a datasets cache of its own."""
    peaks = {}
    raw, peaks["read"] = traced_peak(lambda: load_parallel(corpus, langs, splits=["train"])["train"])
    # The tokenizer's learning from the sample (the default 2M pairs: all of these) through its iterator.
    tokenizer, peaks["tokenizer sample"] = traced_peak(lambda: train_tokenizer(
        texts=training_text(raw, langs, 2_000_000, seed=1), vocab_size=1000, show_progress=False))
    tokenized, peaks["tokenize"] = traced_peak(lambda: tokenize(raw, tokenizer, langs))
    (kept, counts), peaks["clean"] = traced_peak(lambda: clean(tokenized, max_length=30, max_ratio=1.5))
    assert counts["kept"] == len(kept) and 0 < len(kept) < len(raw) == len(tokenized)
    # The kept rows: a file of the datasets cache (mapped, in no process's own memory), whole, no partial one left.
    assert [Path(f["filename"]).name for f in kept.cache_files if "indices" in f["filename"]] == [
        f"indices-{kept._fingerprint}.arrow"]
    assert not list(Path(kept.cache_files[0]["filename"]).parent.glob("tmp-indices-*"))
    # Built (this cache has not seen them), written to the batch cache and read back from it.
    sampler, peaks["token batches"] = traced_peak(lambda: batching.token_batches(kept, max_tokens=500, seed=1))
    assert sampler.starts[-1] == len(kept)
    return peaks


@pytest.fixture(scope="module")
def slopes(data_dir, tmp_path_factory):
    """Each phase's traced bytes per pair between the two corpus sizes."""
    with pytest.MonkeyPatch.context() as patch:
        # raising=False: a renamed constant leaves the production chunk size, larger than both corpora, and fails.
        for module, name, value in ((data, "TEXT_CHUNK_BYTES", 1 << 16), (prepare, "TRAINING_TEXT_CHUNK_PAIRS", 1000),
                                    (data, "ENCODE_BATCH_PAIRS", 1000), (data, "CLEAN_CHUNK_ROWS", 1 << 12),
                                    (batching, "PACK_CHUNK_ROWS", 1 << 12)):
            patch.setattr(module, name, value, raising=False)
        patch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path_factory.mktemp("datasets-cache")))
        de = (data_dir / "multi30k/train.de").read_text(encoding="utf-8").splitlines()
        en = (data_dir / "multi30k/train.en").read_text(encoding="utf-8").splitlines()
        peaks = []
        for size in (2_000, *SIZES):  # the first, discarded, pays what is done once (imports, caches)
            corpus = tmp_path_factory.mktemp(f"corpus-{size}")
            write_pairs(corpus, "train", [de[i % len(de)] for i in range(size)], [en[i % len(en)] for i in range(size)])
            peaks.append(phase_peaks(corpus, ("de", "en")))
        peaks = peaks[1:]
    return {phase: (peaks[1][phase] - peaks[0][phase]) / (SIZES[1] - SIZES[0]) for phase in PHASES}


@pytest.mark.parametrize("phase", PHASES)
def test_no_phase_holds_a_python_object_per_pair(slopes, phase):
    assert slopes[phase] < MAX_BYTES_PER_PAIR, f"{phase}: {slopes[phase]:.1f} traced bytes per pair ({slopes})"
