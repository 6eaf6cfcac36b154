"""A launch of two machines (on this one, over loopback, gloo on the CPU) tokenises the train set a half per machine,
joined in order: the batches are those of one process; a machine whose partner fails or dies is told at once."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import accelerate_launch, free_port, launch_env
from test_training import train_args

# The CLI with the tokenizers backend wrapped: every batch of texts it encodes is recorded (process, count, first
# text), and it fails or dies on purpose where the test says (on a rank, or at the n-th call for train texts).
HOOKED_CLI = """
import os, signal
from vanilla_transformer import cli
from vanilla_transformer.training import data

backend = data.Tokenizer
rank = os.environ["RANK"]
if "ENCODE_BATCH_PAIRS" in os.environ:  # smaller batches: several of them written before a kill
    data.ENCODE_BATCH_PAIRS = int(os.environ["ENCODE_BATCH_PAIRS"])
train_calls = 0


class Recording:
    def __init__(self, inner):
        self.inner = inner

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def encode_batch_fast(self, texts):
        global train_calls
        train_calls += len(texts) >= 100  # the train set's batches (the validation set's are smaller)
        if os.environ.get("KILL_AT_TRAIN_CALL") == str(train_calls) and len(texts) >= 100:
            os.kill(os.getpid(), signal.SIGKILL)
        if os.environ.get("FAIL_ON_RANK") == rank and len(texts) > 100:  # the train set's, not the validation's
            raise RuntimeError("the tokenizer failed on purpose")
        if os.environ.get("KILL_ON_RANK") == rank and len(texts) > 100:
            os.kill(os.getpid(), signal.SIGKILL)
        with open(os.environ["ENCODED_LOG"], "a", encoding="utf-8") as log:
            log.write(f"{rank}\\t{len(texts)}\\t{texts[0]}\\n")
        return self.inner.encode_batch_fast(texts)


class Hooked:
    @staticmethod
    def from_str(text):
        return Recording(backend.from_str(text))


data.Tokenizer = Hooked
cli.main()
"""

SETTINGS = ("training.max_steps=2", "training.save_steps=2", "training.update_tokens=600",
            "training.micro_batch_tokens=300", "training.log_batches=true", "data.test=null")


def prepare_args(corpus: Path, *extra: str) -> list[str]:
    """Arguments of `vanilla-transformer prepare` for the tiny recipe."""
    arguments = train_args(corpus, Path("unused"), *extra)
    at = arguments.index("--output-dir")
    return ["prepare", *arguments[1:at], *arguments[at + 2:]]


def encoded(log: Path) -> list[tuple[int, int, str]]:
    """(process, texts, first text) of every batch of texts encoded."""
    rows = [line.split("\t") for line in log.read_text(encoding="utf-8").splitlines()] if log.exists() else []
    return [(int(rank), int(count), first) for rank, count, first in rows]


def logged_batches(run: Path, rank: int) -> list[list[int]]:
    return [json.loads(line) for line in (run / f"batches-rank{rank}.jsonl").read_text().splitlines()]


def batches_record(run: Path) -> dict:
    """What the run's checkpoint says its batches are made of (trainer.TokenBatchesRecord)."""
    state = json.loads((run / "checkpoint-2/trainer_state.json").read_text())
    return state["stateful_callbacks"]["TokenBatchesRecord"]["attributes"]


def data_phases(run: Path, rank: int) -> dict[str, dict]:
    return {phase["name"]: phase for phase in json.loads((run / f"data-rank{rank}.json").read_text())}


@pytest.fixture(scope="module")
def hooked_cli(tmp_path_factory) -> Path:
    script = tmp_path_factory.mktemp("hook") / "hooked_cli.py"
    script.write_text(HOOKED_CLI)
    return script


@pytest.fixture(scope="module")
def one_process(small_corpus, hooked_cli, tmp_path_factory) -> tuple[Path, list]:
    """A run of one process: its folder and what it encoded."""
    folder = tmp_path_factory.mktemp("one-process")
    env = {**launch_env(HF_DATASETS_CACHE=str(folder / "cache")), "ENCODED_LOG": str(folder / "encoded.tsv"),
           "RANK": "0"}
    command = [sys.executable, str(hooked_cli), *train_args(small_corpus, folder / "run", *SETTINGS)]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return folder / "run", encoded(folder / "encoded.tsv")


def launch_two_machines(program, tmp_path: Path, shared_disk: bool, timeout: float = 300,
                        **env: str) -> list[tuple[int, str]]:
    """Two machines of one process each on this one, each with a disk of its own or both on one: their exit codes
    and error output."""
    port, launches = free_port(), []
    for machine in (0, 1):
        disk = tmp_path / ("shared" if shared_disk else f"machine{machine}")
        command = accelerate_launch(*program(disk), processes=2, machines=2, machine_rank=machine, port=port)
        environment = {**launch_env(HF_DATASETS_CACHE=str(disk / "cache")),
                       "ENCODED_LOG": str(tmp_path / "encoded.tsv"), **env}
        launches.append(subprocess.Popen(command, env=environment, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                         text=True))
    results = []
    for launch in launches:
        stderr = launch.communicate(timeout=timeout)[1]
        results.append((launch.returncode, stderr))
    return results


@pytest.mark.parametrize("shared_disk", [True, False])
def test_each_machine_encodes_its_half_and_the_batches_are_one_process_s(small_corpus, hooked_cli, one_process,
                                                                         tmp_path, shared_disk):
    single_run, single_encoded = one_process
    program = lambda disk: [str(hooked_cli), *train_args(small_corpus, disk / "run", *SETTINGS)]  # noqa: E731
    for code, stderr in launch_two_machines(program, tmp_path, shared_disk):
        assert code == 0, stderr[-3000:]

    de = (small_corpus / "train.de").read_text(encoding="utf-8").splitlines()
    en = (small_corpus / "train.en").read_text(encoding="utf-8").splitlines()
    validation = [line for lang in ("de", "en") for line in (small_corpus / f"val.{lang}").read_text().splitlines()]
    train_batches = [(rank, count, first) for rank, count, first in encoded(tmp_path / "encoded.tsv")
                     if first not in validation]
    # Each machine's process encoded its contiguous half of the 500 pairs, both sides, and nothing else of them.
    assert sorted(train_batches) == sorted([(0, 250, de[0]), (0, 250, en[0]), (1, 250, de[250]), (1, 250, en[250])])
    assert sorted(count for _, count, first in single_encoded if first not in validation) == [500, 500]
    runs = [tmp_path / ("shared" if shared_disk else f"machine{m}") / "run" for m in (0, 1)]
    for rank, run in enumerate(runs):
        shards = data_phases(run, rank)["tokenize train"]["shards"]
        assert shards["encoded"] == [rank] and shards["machines"] == 2
        if shared_disk:  # each half written once, by its machine, and read by the other
            assert (shards["read"], shards["received"], shards["sent"]) == ([1 - rank], [], []), shards
        else:  # each half sent to the other machine's disk
            assert (shards["read"], shards["received"], shards["sent"]) == ([], [1 - rank], [1 - rank]), shards
    if shared_disk:
        assert len(list((tmp_path / "shared/cache").rglob("cache-*.arrow"))) == len(
            list((tmp_path / "shared/cache").rglob("vanilla-shard-*.json"))) + 1  # the two halves, the validation
    # The processes of the launch take turns at the batches of one process's sampler: the same batches (as many as
    # were trained on, 2 updates of 2 micro-batches, and those the data loaders fetched ahead).
    single = logged_batches(single_run, 0)
    launched = [logged_batches(runs[rank], rank) for rank in (0, 1)]
    interleaved = [batch for pair in zip(*launched) for batch in pair]
    common = min(len(interleaved), len(single))
    assert common >= 4 and interleaved[:common] == single[:common]
    # The joined set has one process's fingerprint: the checkpoints record the same batches (a resume on another
    # number of machines is not refused as other data), and the batch plan's cache is shared.
    assert batches_record(runs[0]) == batches_record(single_run) and batches_record(single_run)["fingerprint"]
    if not shared_disk:  # a later launch finds every shard in each machine's cache: nothing encoded or sent again
        (tmp_path / "encoded.tsv").unlink()
        prepare = lambda disk: [str(hooked_cli), *prepare_args(small_corpus, *SETTINGS),  # noqa: E731
                                "--json", str(disk / "phases.json")]
        for code, stderr in launch_two_machines(prepare, tmp_path, shared_disk):
            assert code == 0, stderr[-3000:]
        assert [line for line in encoded(tmp_path / "encoded.tsv") if line[2] not in validation] == []
        for machine in (0, 1):
            phases = {p["name"]: p for p in json.loads((tmp_path / f"machine{machine}/phases.json").read_text())}
            assert phases["tokenize train"]["shards"]["held"] == [machine, 1 - machine]
            assert phases["tokenize train"]["cached"]


def test_a_machine_whose_partner_fails_preparing_stops_at_once_with_its_error(small_corpus, hooked_cli, tmp_path):
    prepare = prepare_args(small_corpus, "training.ddp_timeout=600")
    started = time.monotonic()
    results = launch_two_machines(lambda disk: [str(hooked_cli), *prepare], tmp_path, shared_disk=False,
                                  timeout=120, FAIL_ON_RANK="0")
    assert all(code != 0 for code, _ in results)
    assert "the tokenizer failed on purpose" in results[0][1]
    assert ("process 0 failed in 'tokenize train': RuntimeError: the tokenizer failed on purpose (process 1 waited "
            "for it to encode shard 0 of the train set)") in results[1][1], results[1][1][-3000:]
    assert time.monotonic() - started < 90  # not training.ddp_timeout's 600 s


def test_a_machine_whose_partner_is_killed_while_preparing_stops_within_a_minute(small_corpus, hooked_cli, tmp_path):
    prepare = prepare_args(small_corpus, "training.ddp_timeout=600")
    started = time.monotonic()
    results = launch_two_machines(lambda disk: [str(hooked_cli), *prepare], tmp_path, shared_disk=False,
                                  timeout=150, KILL_ON_RANK="0")
    assert all(code != 0 for code, _ in results)
    waiting = results[1][1]
    assert ("process 0 stopped answering" in waiting or "lost the launch's store while waiting for process 0" in
            waiting), waiting[-3000:]
    assert time.monotonic() - started < 120


def test_a_wait_returns_the_value_waits_while_the_heartbeat_moves_and_fails_on_an_error_or_silence():
    import threading

    import torch.distributed as dist

    from vanilla_transformer.training.coordination import PeerFailed, wait_on

    store = dist.HashStore()

    def wait(silence: float = 1.0):
        return wait_on(store, "done", 0, "read the text", 1, silence, "failed", "heartbeat")

    def working(seconds: float):  # beats every 0.2 s, then says it is done
        for _ in range(int(seconds / 0.2)):
            store.add("heartbeat", 1)
            time.sleep(0.2)
        store.set("done", json.dumps({"rows": 500}))

    worker = threading.Thread(target=working, args=(2.5,))
    worker.start()
    started = time.monotonic()
    assert wait(silence=1.0) == {"rows": 500} and time.monotonic() - started > 2  # past the silence allowed
    worker.join()

    store.delete_key("done")
    started = time.monotonic()
    with pytest.raises(PeerFailed, match=r"process 0 stopped answering while process 1 waited for it to read the "
                                         r"text: no heartbeat for 1 s"):
        wait(silence=0.5)
    assert time.monotonic() - started < 2

    store.set("failed", json.dumps("in 'read text': CorpusError: train.de:3: empty line"))
    with pytest.raises(PeerFailed, match=r"process 0 failed in 'read text': CorpusError: train.de:3: empty line "
                                         r"\(process 1 waited for it to read the text\)"):
        wait(silence=60)


def test_shards_joined_in_order_are_the_whole_set_tokenised_and_out_of_order_change_the_batches(data_dir, tmp_path):
    from test_data_path import multi30k_pairs

    from vanilla_transformer.training.batching import TokenBatchSampler
    from vanilla_transformer.training.data import token_lengths, tokenized_fingerprint
    from vanilla_transformer.training.shards import joined
    from vanilla_transformer.training.tokenize_child import tokenize_train

    raw, tokenizer, de, en = multi30k_pairs(data_dir, tmp_path / "corpus", 301)  # an odd count: halves of 151, 150
    key = tokenized_fingerprint(raw._fingerprint, tokenizer.backend_tokenizer.to_str(), ("de", "en"), None)
    whole, _ = tokenize_train(raw, tokenizer, ("de", "en"), min_pairs=10**9)
    shards = [tokenize_train(raw, tokenizer, ("de", "en"), min_pairs=10**9, fingerprint=key, shard=(index, 2))[0]
              for index in (0, 1)]
    assert [len(shard) for shard in shards] == [151, 150]
    files = [[f["filename"] for f in shard.cache_files] for shard in shards]
    assert files[0] != files[1] and whole.cache_files[0]["filename"] not in files[0] + files[1]
    in_order = joined(files[0] + files[1], key, len(raw))
    assert in_order._fingerprint == whole._fingerprint  # as the batch plan's cache and a resume's check key it
    assert in_order["input_ids"] == whole["input_ids"] == tokenizer(de)["input_ids"]
    assert in_order["labels"] == tokenizer(en)["input_ids"]

    def batches(dataset):
        sampler = TokenBatchSampler(token_lengths(dataset, "input_ids"), token_lengths(dataset, "labels"),
                                    max_tokens=300, seed=1)
        return [list(map(int, batch)) for batch in sampler]

    swapped = joined(files[1] + files[0], key, len(raw))
    assert batches(in_order) == batches(whole) and batches(swapped) != batches(whole)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="LD_PRELOAD is Linux's")
def test_a_child_process_encodes_a_shard_for_the_parent(data_dir, tmp_path, monkeypatch):
    from test_data_path import ParentMustNotEncode, multi30k_pairs, preloadable_library

    from vanilla_transformer.training import data, tokenize_child

    raw, tokenizer, de, en = multi30k_pairs(data_dir, tmp_path / "corpus", 300)
    monkeypatch.setenv(tokenize_child.MALLOC_VARIABLE, preloadable_library())
    monkeypatch.setattr(data, "Tokenizer", ParentMustNotEncode)
    tokenized, child = tokenize_child.tokenize_train(raw, tokenizer, ("de", "en"), min_pairs=0, shard=(1, 3))
    assert child.loaded and tokenized["input_ids"] == tokenizer(de[100:200])["input_ids"]


def test_a_preparation_killed_while_tokenizing_leaves_no_cache_a_rerun_trusts(small_corpus, hooked_cli, one_process,
                                                                              tmp_path):
    single_run, _ = one_process
    env = {**launch_env(HF_DATASETS_CACHE=str(tmp_path / "cache")), "ENCODED_LOG": str(tmp_path / "encoded.tsv"),
           "RANK": "0", "ENCODE_BATCH_PAIRS": "100"}
    killed = subprocess.run([sys.executable, str(hooked_cli), *train_args(small_corpus, tmp_path / "killed", *SETTINGS)],
                            env={**env, "KILL_AT_TRAIN_CALL": "5"}, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -9, killed.stderr[-3000:]
    # Killed in the train set's third batch of 100 pairs, after two of them were encoded (both sides).
    assert [count for _, count, _ in encoded(tmp_path / "encoded.tsv")] == [100] * 4
    (tmp_path / "encoded.tsv").unlink()

    rerun = subprocess.run([sys.executable, str(hooked_cli), *train_args(small_corpus, tmp_path / "rerun", *SETTINGS)],
                           env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert not data_phases(tmp_path / "rerun", 0)["tokenize train"]["cached"]  # nothing of the killed run trusted
    assert sum(count for _, count, _ in encoded(tmp_path / "encoded.tsv") if count == 100) == 2 * 500
    assert logged_batches(tmp_path / "rerun", 0) == logged_batches(single_run, 0)
    assert batches_record(tmp_path / "rerun") == batches_record(single_run)
