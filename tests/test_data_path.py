"""The data path at scale keeps its meaning: the same batches as the code that recorded tests/fixtures/batch_order.json
(commit 8687cb0), prepared data reused on rerun, resume and by a second process."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import accelerate_launch, free_port, launch_env, write_pairs

from vanilla_transformer import train_tokenizer
from vanilla_transformer.training.batching import TokenBatchSampler
from vanilla_transformer.training.data import clean, load_parallel, token_lengths, tokenize

RECORDED = json.loads((Path(__file__).parent / "fixtures/batch_order.json").read_text())


def test_token_batches_are_those_recorded_before_the_data_path_changed(data_dir, tmp_path):
    r = RECORDED
    de = (data_dir / "multi30k/train.de").read_text(encoding="utf-8").splitlines()[: r["pairs"]]
    en = (data_dir / "multi30k/train.en").read_text(encoding="utf-8").splitlines()[: r["pairs"]]
    write_pairs(tmp_path, "train", de, en)
    raw = load_parallel(tmp_path, ("de", "en"), splits=["train"])["train"]
    tokenizer = train_tokenizer(texts=[t for p in raw["translation"] for t in (p["de"], p["en"])],
                                vocab_size=r["vocab_size"], show_progress=False)
    dataset, counts = clean(tokenize(raw, tokenizer, ("de", "en")), r["max_length"], r["max_ratio"])
    assert counts == r["cleaning"] and dataset["input_ids"][0] == r["first_ids"]
    sampler = TokenBatchSampler(token_lengths(dataset, "input_ids"), token_lengths(dataset, "labels"),
                                max_tokens=r["max_tokens"], seed=r["seed"])
    for epoch, batches in r["epochs"].items():
        sampler.set_epoch(int(epoch))
        assert list(sampler) == batches, f"epoch {epoch}"


def test_token_lengths_follow_selections_of_the_table():
    import datasets

    ids = [[1] * n for n in (3, 0, 5, 2, 7, 1)]
    dataset = datasets.Dataset.from_dict({"input_ids": ids})
    for view in (dataset, dataset.select([4, 0, 2]), dataset.shuffle(seed=1).select([5, 1, 3]),
                 dataset.filter(lambda row: len(row["input_ids"]) > 1).select([3, 0])):
        assert token_lengths(view, "input_ids").tolist() == [len(row) for row in view["input_ids"]]


def test_sampler_batches_are_those_recorded_on_synthetic_lengths():
    generator = torch.Generator().manual_seed(0)
    src = torch.randint(1, 60, (1000,), generator=generator).tolist()
    tgt = torch.randint(1, 60, (1000,), generator=generator).tolist()
    synthetic = RECORDED["synthetic"]
    sampler = TokenBatchSampler(src, tgt, max_tokens=synthetic["max_tokens"], seed=synthetic["seed"])
    sampler.set_epoch(synthetic["epoch"])
    assert list(sampler) == synthetic["batches"]


def data_phases(run: Path, rank: int = 0) -> dict[str, dict]:
    """The data path's phases as the run wrote them (data-rankN.json), by name."""
    return {phase["name"]: phase for phase in json.loads((run / f"data-rank{rank}.json").read_text())}


def test_prepared_data_is_reused_on_rerun_and_resume(small_corpus, tmp_path):
    from test_training import train_args

    # A datasets cache of this test's own, so that the first run finds nothing prepared.
    env = {**os.environ, "HF_DATASETS_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}

    def train(out: Path, *overrides: str, flags: tuple[str, ...] = ()):
        command = [sys.executable, "-m", "vanilla_transformer.cli",
                   *train_args(small_corpus, out, "training.max_steps=4", "training.save_steps=2", *overrides), *flags]
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
        return data_phases(out)

    reused = ("read text", "tokenizer", "tokenize train", "tokenize validation")
    first = train(tmp_path / "first")
    assert not any(first[name]["cached"] for name in reused)
    rerun = train(tmp_path / "rerun")  # a new run folder: only the caches can help
    assert all(rerun[name]["cached"] for name in reused)
    assert ((tmp_path / "rerun/tokenizer/tokenizer.json").read_bytes()
            == (tmp_path / "first/tokenizer/tokenizer.json").read_bytes())
    resumed = train(tmp_path / "first", "training.max_steps=6", flags=("--resume",))
    assert all(resumed[name]["cached"] for name in reused)
    assert rerun["tokenize train"]["rows"] == first["tokenize train"]["rows"] == 500


def test_micro_batches_split_each_update_and_accumulate_its_gradients(small_corpus, tmp_path):
    """training.micro_batch_tokens: the sampler packs micro-batches, and the update waits for update_tokens' worth."""
    from conftest import tiny_recipe

    from vanilla_transformer.training.run import training_arguments

    recipe = tiny_recipe(small_corpus, tmp_path / "run", "training.update_tokens=2000",
                         "training.micro_batch_tokens=300")
    assert recipe.training.batch_tokens == 285 and recipe.training.micro_batches == 7  # 7 x 285 = 1,995 tokens
    assert training_arguments(recipe, 64).gradient_accumulation_steps == 7


def multi30k_pairs(data_dir: Path, folder: Path, count: int):
    """The first `count` Multi30k train pairs, read as `train` reads a local folder, and a tokenizer learned on them."""
    de = (data_dir / "multi30k/train.de").read_text(encoding="utf-8").splitlines()[:count]
    en = (data_dir / "multi30k/train.en").read_text(encoding="utf-8").splitlines()[:count]
    write_pairs(folder, "train", de, en)
    raw = load_parallel(folder, ("de", "en"), splits=["train"])["train"]
    return raw, train_tokenizer(texts=de + en, vocab_size=500, show_progress=False), de, en


def preloadable_library() -> str:
    """jemalloc or mimalloc where installed, else the C library itself (preloading it changes nothing)."""
    from vanilla_transformer.training.tokenize_child import malloc_library

    maps = Path("/proc/self/maps").read_text().split()
    return malloc_library() or next(word for word in maps if "/libc.so" in word or "/libc-" in word)


class ParentMustNotEncode:
    """A stand-in for the tokenizers backend in this process: the parent must read the child's output, not encode."""

    @classmethod
    def from_str(cls, backend):
        return cls()

    def no_padding(self):
        pass

    def no_truncation(self):
        pass

    def encode_batch_fast(self, texts):
        raise AssertionError("the parent encoded the pairs the child had encoded")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="LD_PRELOAD is Linux's")
@pytest.mark.parametrize("num_proc", [None, 2])  # data.num_proc: the child's shards are the parent's cache hit too
def test_a_child_process_with_a_faster_malloc_encodes_the_train_set_for_the_parent(data_dir, tmp_path, monkeypatch,
                                                                                     num_proc):
    from vanilla_transformer.training import data, tokenize_child

    raw, tokenizer, de, en = multi30k_pairs(data_dir, tmp_path / "corpus", 300)
    monkeypatch.setenv(tokenize_child.MALLOC_VARIABLE, preloadable_library())
    monkeypatch.setattr(data, "Tokenizer", ParentMustNotEncode)
    tokenized, child = tokenize_child.tokenize_train(raw, tokenizer, ("de", "en"), num_proc, min_pairs=0)
    assert len(tokenized.cache_files) == (num_proc or 1)
    assert child.loaded and child.peak_rss_mb > 0 and child.parent_rss_mb > 0
    assert tokenized["input_ids"] == tokenizer(de)["input_ids"]
    assert tokenized["labels"] == tokenizer(en)["input_ids"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="LD_PRELOAD is Linux's")
def test_the_child_says_when_its_malloc_was_not_loaded_and_a_failed_child_leaves_the_work_to_the_parent(
        data_dir, tmp_path, monkeypatch, caplog):
    from vanilla_transformer.training import tokenize_child

    raw, tokenizer, de, en = multi30k_pairs(data_dir, tmp_path / "corpus", 200)
    not_a_library = tmp_path / "malloc.so"
    not_a_library.write_text("not ELF")
    monkeypatch.setenv(tokenize_child.MALLOC_VARIABLE, str(not_a_library))
    tokenized, child = tokenize_child.tokenize_train(raw, tokenizer, ("de", "en"), min_pairs=0)
    assert not child.loaded and "malloc.so asked for but not loaded" in child.describe()  # the loader skips it
    assert tokenized["input_ids"] == tokenizer(de)["input_ids"]

    raw, tokenizer, de, en = multi30k_pairs(data_dir, tmp_path / "other", 150)
    monkeypatch.setattr(tokenize_child.subprocess, "call", lambda *args, **kwargs: 3)  # a child that died
    with caplog.at_level("WARNING"):
        tokenized, child = tokenize_child.tokenize_train(raw, tokenizer, ("de", "en"), min_pairs=0)
    assert child is None and "exit code 3" in caplog.text
    assert tokenized["labels"] == tokenizer(en)["input_ids"]


def test_the_malloc_variable_is_checked(monkeypatch, tmp_path):
    from vanilla_transformer.training.tokenize_child import MALLOC_VARIABLE, malloc_library

    monkeypatch.setenv(MALLOC_VARIABLE, "none")
    assert malloc_library() is None
    monkeypatch.setenv(MALLOC_VARIABLE, str(tmp_path / "missing.so"))
    if sys.platform.startswith("linux"):
        with pytest.raises(ValueError, match=f"{MALLOC_VARIABLE}=.*missing.so: no such file"):
            malloc_library()


def test_a_child_process_reports_its_own_peak_memory_not_its_parents():
    # Linux's ru_maxrss starts a child started through subprocess at its parent's peak: the tokenising child's report
    # would repeat the train process's (the tokenizer's training) instead of its own.
    script = (
        "import subprocess, sys\n"
        "from vanilla_transformer.training.memory import peak_rss_mb\n"
        "block = b'x' * 2**30\n"
        "del block\n"
        "code = 'from vanilla_transformer.training.memory import peak_rss_mb; print(peak_rss_mb())'\n"
        "child = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True)\n"
        "print(peak_rss_mb(), child.stdout)\n"
    )
    parent, child = map(int, subprocess.check_output([sys.executable, "-c", script], text=True).split())
    assert parent >= 1024 and child <= parent - 700, (parent, child)


SLOW_MAIN_PROCESS = """
import os, sys, time
from vanilla_transformer import cli
from vanilla_transformer.training import prepare

load_parallel = prepare.load_parallel

def slow_on_the_main_process(*args, **kwargs):  # a first run's data path that takes a while
    if os.environ["RANK"] == "0":
        time.sleep(12)
    return load_parallel(*args, **kwargs)

prepare.load_parallel = slow_on_the_main_process
cli.main()
"""


def test_the_processes_waiting_for_the_data_path_wait_on_its_work_not_on_ddp_timeout(small_corpus, tmp_path):
    # The process waiting for the main one to read the text waits as long as the main one works (its heartbeat), here
    # 4 times training.ddp_timeout: a fixed timeout (the barrier's) failed a first launch at 45M pairs.
    from test_training import train_args

    script = tmp_path / "slow_main_process.py"
    script.write_text(SLOW_MAIN_PROCESS)
    prepare = ["prepare", *train_args(small_corpus, tmp_path / "run", "training.ddp_timeout=3")[1:]]
    prepare.remove("--output-dir")
    prepare.remove(str(tmp_path / "run"))
    command = accelerate_launch(str(script), *prepare)
    env = launch_env(HF_DATASETS_CACHE=str(tmp_path / "c"))
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.parametrize("shared_disk", [True, False])
def test_two_machines_prepare_once_or_once_each(small_corpus, tmp_path, shared_disk):
    # Two machines of one process each, on this one: with a datasets cache and run folder of its own (no shared disk),
    # the second machine's process failed to write into a run folder that only the main process had made. (Two
    # processes per machine, 6 on these 2 cores with the launchers, hung at exit in about 1 run in 4.)
    from test_training import train_args

    port, launches = free_port(), []
    for machine in (0, 1):
        disk = tmp_path / ("shared" if shared_disk else f"machine{machine}")
        train = train_args(small_corpus, disk / "run", "training.max_steps=2", "training.save_steps=2")
        command = accelerate_launch("-m", "vanilla_transformer.cli", *train, processes=2, machines=2,
                                    machine_rank=machine, port=port)
        env = launch_env(HF_DATASETS_CACHE=str(disk / "c"))
        launches.append(subprocess.Popen(command, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                         text=True))
    for launch in launches:
        stderr = launch.communicate(timeout=600)[1]
        assert launch.returncode == 0, stderr[-3000:]
    for rank in range(2):
        disk = tmp_path / ("shared" if shared_disk else f"machine{rank}")
        phases = data_phases(disk / "run", rank)
        prepared_here = rank == 0 or not shared_disk  # each cache filled once, by one process
        assert [phases[name]["cached"] for name in ("read text", "tokenize validation")] == [not prepared_here] * 2
        assert phases["tokenizer"]["cached"] == (rank == 1)  # machine 0's, handed over
        assert not phases["tokenize train"]["cached"] and phases["tokenize train"]["shards"]["encoded"] == [rank]


def test_cleaning_holds_no_python_object_per_pair():
    # 300,000 tokenised pairs (Arrow lists), 86% kept: the selection is an Arrow indices table made from numpy, not
    # Dataset.select's Python list of row numbers (44 traced bytes per pair at this size, 24 without it).
    import tracemalloc

    import datasets
    import numpy as np
    import pyarrow as pa

    generator = np.random.default_rng(0)

    def ids(lengths):
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
        return pa.ListArray.from_arrays(pa.array(offsets), pa.array(np.ones(offsets[-1], dtype=np.int32)))

    pairs = 300_000
    dataset = datasets.Dataset(pa.table({"input_ids": ids(generator.integers(1, 120, pairs)),
                                         "labels": ids(generator.integers(1, 120, pairs))}))
    tracemalloc.start()
    kept, counts = clean(dataset, max_length=110, max_ratio=1000.0)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert counts["kept"] == len(kept) == 256_562 and counts["too_long"] == pairs - 256_562
    assert peak / pairs < 32, f"{peak / pairs:.1f} bytes per pair"
    lengths = token_lengths(kept, "input_ids")
    assert lengths.max() <= 110 and kept[1000]["input_ids"] == [1] * int(lengths[1000])
