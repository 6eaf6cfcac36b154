"""Issue 30: the token batches built once, cached on disk keyed by what they are made of, memory-mapped by every
process; whole or not at all after a kill -9, rebuilt when corrupt; a resume on other batches refused."""

import json
import logging
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import datasets
import numpy as np
import pytest
from conftest import REPO, write_pairs
from test_data_path import RECORDED
from test_training import train_args

from vanilla_transformer import train_tokenizer
from vanilla_transformer.cli import main
from vanilla_transformer.training import batching
from vanilla_transformer.training.batching import (BatchesKey, TokenBatchSampler, cached_batches, pack_batches,
                                                   pack_length_chunks)
from vanilla_transformer.training.data import clean, load_parallel, token_lengths, tokenize

LOGGER = "vanilla_transformer.training.batching"


def epochs(sampler, count: int = 3) -> list[list[list[int]]]:
    batches = []
    for epoch in range(count):
        sampler.set_epoch(epoch)
        batches.append(list(sampler))
    return batches


def test_cached_batches_are_the_fresh_ones_and_those_recorded(data_dir, tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "cache"))
    r = RECORDED
    de = (data_dir / "multi30k/train.de").read_text(encoding="utf-8").splitlines()[: r["pairs"]]
    en = (data_dir / "multi30k/train.en").read_text(encoding="utf-8").splitlines()[: r["pairs"]]
    write_pairs(tmp_path / "corpus", "train", de, en)
    raw = load_parallel(tmp_path / "corpus", ("de", "en"), splits=["train"])["train"]
    tokenizer = train_tokenizer(texts=de + en, vocab_size=r["vocab_size"], show_progress=False)
    dataset, _ = clean(tokenize(raw, tokenizer, ("de", "en")), r["max_length"], r["max_ratio"])
    fresh = TokenBatchSampler(token_lengths(dataset, "input_ids"), token_lengths(dataset, "labels"),
                              max_tokens=r["max_tokens"], seed=r["seed"])

    with caplog.at_level(logging.INFO, logger=LOGGER):
        built = batching.token_batches(dataset, r["max_tokens"], r["seed"])
    assert "token batches: built and cached in" in caplog.text
    folder = batching.batches_cache(built.batches.key)
    assert folder.parent == tmp_path / "cache/vanilla_transformer/batch_plans" and (folder / "manifest.json").is_file()

    def must_not_build(*args, **kwargs):
        raise AssertionError("the batches were built again instead of read from the cache")

    monkeypatch.setattr(batching, "pack_length_chunks", must_not_build)  # what token_batches builds with
    caplog.clear()
    with caplog.at_level(logging.INFO, logger=LOGGER):
        cached = batching.token_batches(dataset, r["max_tokens"], r["seed"])
    assert "token batches: read from the cache" in caplog.text
    assert isinstance(cached.order, np.memmap) and isinstance(cached.starts, np.memmap)
    recorded = [r["epochs"][str(epoch)] for epoch in range(len(r["epochs"]))]
    for sampler in (fresh, built, cached):
        assert epochs(sampler, len(recorded)) == recorded
    assert cached.padding_fraction() == built.padding_fraction() == fresh.padding_fraction() > 0
    # Another seed or max_tokens is another key: other batches, not these read back.
    monkeypatch.setattr(batching, "pack_length_chunks", pack_length_chunks)
    assert epochs(batching.token_batches(dataset, r["max_tokens"], r["seed"] + 1)) != epochs(built)
    assert len(list(folder.parent.glob("*.lock"))) == 2 and not list(folder.parent.glob("*.partial-*"))


def synthetic(pairs: int = 20_000, max_tokens: int = 300, seed: int = 3):
    """Lengths, their key and a build function that counts its calls."""
    rng = np.random.default_rng(seed)
    src, tgt = rng.integers(1, 60, pairs), rng.integers(1, 60, pairs)
    key = BatchesKey(pairs, f"synthetic-{pairs}", max_tokens, seed)
    calls = []

    def build():
        calls.append(1)
        return pack_batches(src, tgt, max_tokens, seed, key)

    return key, build, calls, TokenBatchSampler(src, tgt, max_tokens, seed)


# Builds the synthetic batches in a folder, pausing after writing each array (argv: folder, pairs, seconds).
WRITER = """
import sys, time
from pathlib import Path
sys.path.insert(0, {tests!r})
from test_batch_plan_cache import synthetic
from vanilla_transformer.training import batching
save = batching.save_array
def slow_save(path, array):
    save(path, array)
    print("wrote", path.name, flush=True)
    time.sleep(float(sys.argv[3]))
batching.save_array = slow_save
key, build, _, _ = synthetic(int(sys.argv[2]))
batching.cached_batches(Path(sys.argv[1]), key, build)
print("done", flush=True)
"""


def writer(folder: Path, pairs: int, pause: float) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", WRITER.format(tests=str(REPO / "tests")), str(folder), str(pairs),
                             str(pause)], stdout=subprocess.PIPE, text=True)


def test_a_process_killed_while_writing_leaves_nothing_a_rerun_trusts(tmp_path, caplog):
    folder = tmp_path / "plans/key"
    killed = writer(folder, 200_000, 60)
    assert killed.stdout.readline().split() == ["wrote", "order.npy"]
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert not folder.exists() and len(list(folder.parent.glob("key.partial-*"))) == 1

    key, build, calls, fresh = synthetic(200_000)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        rebuilt = batching.PackedBatchSampler(cached_batches(folder, key, build), key.seed)
    assert calls == [1] and "built and cached" in caplog.text
    assert epochs(rebuilt) == epochs(fresh) and not list(folder.parent.glob("key.partial-*"))


def test_a_process_that_finds_another_building_waits_and_reads_its_batches(tmp_path):
    folder = tmp_path / "plans/key"
    building = writer(folder, 20_000, 1.5)
    assert building.stdout.readline().split() == ["wrote", "order.npy"]  # it holds the lock
    key, build, calls, fresh = synthetic()
    waited = batching.PackedBatchSampler(cached_batches(folder, key, build), key.seed)
    assert calls == [], "only the process holding the lock builds"
    assert building.stdout.read().split()[-1] == "done" and building.wait() == 0
    assert epochs(waited) == epochs(fresh)


@pytest.mark.parametrize("damage, logged", [
    (lambda folder: (folder / "order.npy").write_bytes((folder / "order.npy").read_bytes()[:-100]), "truncated"),
    (lambda folder: flip_a_byte(folder / "order.npy"), "its checksum is not the one written"),
    (lambda folder: (folder / "manifest.json").write_text('{"key": '), "unreadable"),
    (lambda folder: (folder / "starts.npy").unlink(), "starts.npy: missing"),
])
def test_a_damaged_cache_is_rebuilt_with_a_warning(tmp_path, caplog, damage, logged):
    folder = tmp_path / "key"
    key, build, calls, fresh = synthetic()
    cached_batches(folder, key, build)
    damage(folder)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        rebuilt = batching.PackedBatchSampler(cached_batches(folder, key, build), key.seed)
    assert calls == [1, 1]
    assert f"token batches: {folder}" in caplog.text and logged in caplog.text and "building them again" in caplog.text
    assert epochs(rebuilt) == epochs(fresh)


def flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(data)


def listing(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_size for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_resume_on_other_batches_is_refused_naming_what_they_are_made_of(small_corpus, tmp_path, caplog):
    corpus, run = tmp_path / "corpus", tmp_path / "run"
    shutil.copytree(small_corpus, corpus)
    short = ("training.save_steps=2", "data.validation_size=8", "generation.num_beams=1")
    main(train_args(corpus, run, "training.max_steps=2", *short))
    recorded = json.loads((run / "checkpoint-2/trainer_state.json").read_text())["stateful_callbacks"]
    made_of = recorded["TokenBatchesRecord"]["attributes"]["made_of"]
    assert (made_of["pairs"], made_of["max_tokens"], made_of["seed"]) == (480, 600, 1)  # cleaned pairs, the recipe's

    # The corpus edited in place (same path, same recipe): the recipe check cannot see it, the batches' key does.
    lines = (corpus / "train.de").read_text(encoding="utf-8").splitlines()
    (corpus / "train.de").write_text("\n".join([lines[0] + " und so weiter"] + lines[1:]) + "\n", encoding="utf-8")
    before = listing(run)
    with pytest.raises(SystemExit, match=r"train: error: --resume: .*checkpoint-2 was trained on other batches than "
                                         r"this run's: batches \w+ made of 480 pairs of train set \w+, max_tokens=600, "
                                         r"seed=1; this run's are \w+, made of 480 pairs of train set \w+, "
                                         r"max_tokens=600, seed=1 \(changed: train_set;"
                                         r".*the corpus files, the tokenizer or the cleaning \(train_set, pairs\)"):
        main(train_args(corpus, run, "training.max_steps=4", *short) + ["--resume"])
    assert listing(run) == before, "a refused resume leaves the run folder as it was"

    # The corpus as it was: the resume goes on, log_batches (resumable) changing nothing of the batches. A checkpoint
    # written before the batches were recorded resumes with a warning, and its next checkpoint records them.
    shutil.copy(small_corpus / "train.de", corpus / "train.de")
    state = json.loads((run / "checkpoint-2/trainer_state.json").read_text())
    del state["stateful_callbacks"]["TokenBatchesRecord"]
    (run / "checkpoint-2/trainer_state.json").write_text(json.dumps(state))
    with caplog.at_level(logging.WARNING, logger="vanilla_transformer.training.checkpoints"):
        main(train_args(corpus, run, "training.max_steps=4", "training.log_batches=false", *short) + ["--resume"])
    assert "records no fingerprint of the batches it was trained on" in caplog.text
    again = json.loads((run / "checkpoint-4/trainer_state.json").read_text())["stateful_callbacks"]
    assert again["TokenBatchesRecord"] == recorded["TokenBatchesRecord"]


def test_batches_that_cannot_be_cached_are_used_from_memory(tmp_path, monkeypatch, caplog):
    def full_disk(folder, batches):
        raise OSError(28, "No space left on device", str(folder))

    monkeypatch.setattr(batching, "write_batches", full_disk)
    key, build, calls, fresh = synthetic()
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        batches = batching.PackedBatchSampler(cached_batches(tmp_path / "key", key, build), key.seed)
    assert calls == [1] and "token batches: not cached ([Errno 28] No space left on device" in caplog.text
    assert epochs(batches) == epochs(fresh)
