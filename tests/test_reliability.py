"""What a careless user types must not lose a run, a checkpoint or a line: each test reproduces a defect once found."""

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import transformers
from conftest import REPO, accelerate_launch, launch_env, tiny_model_folder, tiny_recipe, write_pairs
from safetensors.torch import load_file
from test_training import complete_json, train_args
from transformers import GenerationConfig

from vanilla_transformer.cli import main
from vanilla_transformer.training.average import average_checkpoints
from vanilla_transformer.training.checkpoints import CheckpointError, last_checkpoints, problem, resume_checkpoint
from vanilla_transformer.training.recipe import RecipeError, load_recipe
from vanilla_transformer.training.run import train

RECIPE = REPO / "configs/multi30k-de-en-small.yaml"


@pytest.fixture(scope="module")
def greedy_run(small_corpus, tmp_path_factory):
    """A tiny run validated with greedy decoding (num_beams=1), checkpoints at 2 and 4, the last two averaged."""
    out = tmp_path_factory.mktemp("greedy") / "run"
    results = train(tiny_recipe(small_corpus, out, "generation.num_beams=1", "training.max_steps=4",
                                "training.save_steps=2", "training.eval_steps=2", "average_last=2",
                                "data.test_size=8"))
    return out, results


def test_greedy_validation_saves_checkpoints(greedy_run):
    # Defect 1: the paper's beam settings stayed beside num_beams=1 and GenerationConfig refused to save them.
    out, results = greedy_run
    for step in (2, 4):
        assert problem(out / f"checkpoint-{step}", for_resume=True) is None
    assert GenerationConfig.from_pretrained(out / "model").num_beams == 1
    assert results.averaged_checkpoints == ["checkpoint-2", "checkpoint-4"]
    assert results.test.num_beams == 1


@pytest.mark.parametrize("override, message", [
    ("training.max_tokens=4k", r"training.max_tokens='4k': expected int"),
    ("training.seed=[1]", r"training.seed=\[1\]: expected int"),
    ("data=3", r"recipe.data: expected a mapping"),
    ("training.precision=bf32", r"training.precision='bf32': must be one of"),
    ("training.epochs=abc", r"training.epochs='abc': expected float"),
    ("generation.num_beams=0", r"generation.num_beams=0: must be at least 1"),
    ("average_last=9", r"average_last=9: must be between 0 and training.save_total_limit \(5\)"),
    ("training.micro_batch_tokens=5000", r"training.micro_batch_tokens=5000: must be positive and at most"),
    ("training.micro_batch_tokens=32", r"data.max_length=64: must be positive and at most the tokens of a batch"),
    ("tokenizer.sample=0", r"tokenizer.sample=0: must be positive"),
    ("training.ddp_timeout=0", r"training.ddp_timeout=0: must be a positive number of seconds"),
])
def test_recipe_values_are_checked_when_loaded(override, message):
    # Defect 3: these were accepted, and failed (or silently trained fp32) later.
    with pytest.raises(RecipeError, match=message):
        load_recipe(RECIPE, [override])


def test_overwrite_deletes_nothing_until_the_new_run_can_start(greedy_run, tmp_path, small_corpus):
    # Defect 3: --overwrite deleted the checkpoints first, then failed on a missing folder or a bad value.
    # Defect 10: a mistyped local folder was looked up on the Hub for half a minute.
    run = tmp_path / "run"
    shutil.copytree(greedy_run[0], run)
    before = sorted(p.name for p in run.iterdir())
    start = time.monotonic()
    with pytest.raises(RecipeError, match=r"data.source='multi30kk': no such folder"):
        train(tiny_recipe(small_corpus, run, "data.source=multi30kk"), overwrite=True)
    assert time.monotonic() - start < 5
    with pytest.raises(SystemExit, match="training.epochs='abc': expected float"):
        main(["train", str(RECIPE), "--output-dir", str(run), "--overwrite", "--set", "training.epochs=abc"])
    write_pairs(tmp_path / "broken", "train", ["a", "b"], ["x"])
    with pytest.raises(ValueError, match="train.de has 2 lines but"):
        train(tiny_recipe(small_corpus, run, f"data.source={tmp_path / 'broken'}"), overwrite=True)
    assert sorted(p.name for p in run.iterdir()) == before

    # A run that starts replaces the whole earlier run: nothing of the old model or results stays beside it.
    train(tiny_recipe(small_corpus, run, "training.max_steps=2", "training.save_steps=2", "data.test=null"),
          overwrite=True)
    assert not (run / "checkpoint-4").exists() and (run / "checkpoint-2").is_dir()
    assert not list(run.glob("*.hyp.*")), "the old run's test hypotheses stayed"
    assert json.loads((run / "results.json").read_text())["steps"] == 2


def test_averaging_takes_the_last_n_checkpoints_by_step(small_corpus, tmp_path):
    # Defect 4: the Trainer kept the best-BLEU checkpoint past save_total_limit, and it was averaged as "last".
    results = train(tiny_recipe(small_corpus, tmp_path / "run", "training.max_steps=20", "training.save_steps=5",
                                "training.eval_steps=5", "training.save_total_limit=2", "average_last=2",
                                "data.test=null", "data.validation_size=8"))
    assert results.averaged_checkpoints == ["checkpoint-15", "checkpoint-20"]
    assert sorted(p.name for p in (tmp_path / "run").glob("checkpoint-*")) == ["checkpoint-15", "checkpoint-20"]
    assert results.best_validation_step in (5, 10, 15, 20)


def truncate(path: Path, keep: int) -> None:
    path.write_bytes(path.read_bytes()[:keep])


def test_incomplete_checkpoints_are_skipped_with_a_warning(greedy_run, tmp_path, caplog):
    # Defect 5: a half-written checkpoint gave SafetensorError tracebacks and stopped resume and averaging.
    run = tmp_path / "run"
    shutil.copytree(greedy_run[0], run, ignore=shutil.ignore_patterns("model"))
    truncate(run / "checkpoint-4/model.safetensors", 1000)
    with caplog.at_level(logging.WARNING):
        assert resume_checkpoint(run) == run / "checkpoint-2"
        assert last_checkpoints(run, 2) == [run / "checkpoint-2"]
    assert "skipping incomplete checkpoint" in caplog.text and "checkpoint-4/model.safetensors" in caplog.text
    with pytest.raises(CheckpointError, match=r"cannot average .*checkpoint-4: .*model.safetensors: unreadable"):
        average_checkpoints([run / "checkpoint-2", run / "checkpoint-4"], tmp_path / "averaged")
    assert not (tmp_path / "averaged").exists()
    with pytest.raises(SystemExit, match="holds only 1 complete checkpoint"):
        main(["average", str(run), "--last", "2", "--out", str(tmp_path / "averaged")])

    truncate(run / "checkpoint-2/trainer_state.json", 50)
    assert "checkpoint-2/trainer_state.json: not a whole JSON document" in problem(run / "checkpoint-2", True)
    with pytest.raises(CheckpointError, match="no complete checkpoint-N folder to resume from"):
        resume_checkpoint(run)
    (run / "checkpoint-6").mkdir()  # an empty folder left by a kill
    assert "checkpoint-6/config.json: missing" in problem(run / "checkpoint-6")


def test_resume_falls_back_to_the_last_complete_checkpoint(greedy_run, small_corpus, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(greedy_run[0], run)
    truncate(run / "checkpoint-4/optimizer.pt", 100)
    results = train(tiny_recipe(small_corpus, run, "generation.num_beams=1", "training.max_steps=6",
                                "training.save_steps=2", "training.eval_steps=2", "data.test=null"), resume=True)
    assert results.steps == 6
    state = json.loads((run / "checkpoint-6/trainer_state.json").read_text())
    assert [e["step"] for e in state["log_history"] if "eval_bleu" in e] == [2, 4, 6]


def launch_two_processes(corpus: Path, out: Path, *extra: str, resume: bool = False) -> subprocess.Popen:
    command = accelerate_launch("-m", "vanilla_transformer.cli", *train_args(corpus, out, *extra),
                                *(["--resume"] if resume else []))
    return subprocess.Popen(command, env=launch_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def kill_all(marker: str) -> None:
    """SIGKILL every process whose command line holds marker (torchrun's workers live in their own sessions)."""
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and marker in (proc / "cmdline").read_bytes().decode(errors="replace"):
                os.kill(int(proc.name), signal.SIGKILL)
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            pass


def finish(process: subprocess.Popen) -> None:
    _, stderr = process.communicate(timeout=600)
    assert process.returncode == 0, stderr[-3000:]


@pytest.mark.skipif(transformers.__version__.startswith("4."), reason="transformers 4.57 cannot resume a multi-process "
                    "CPU run at all: rank 1 fails to load the checkpoint (\"don't know how to restore data location "
                    "... cpu:0\")")
def test_two_process_run_killed_in_its_second_epoch_resumes_like_an_unbroken_one(data_dir, tmp_path):
    # Defect 2: after a resume inside epoch >= 1, the sampler under accelerate's wrappers replayed epoch 0's order.
    corpus = tmp_path / "corpus"
    de = (data_dir / "multi30k/train.de").read_text(encoding="utf-8").splitlines()[:120]
    en = (data_dir / "multi30k/train.en").read_text(encoding="utf-8").splitlines()[:120]
    write_pairs(corpus, "train", de, en)
    write_pairs(corpus, "val", de[:8], en[:8])
    # A model wide enough that the 40 updates after the checkpoint take seconds, not the instant a kill needs.
    settings = ["training.max_steps=48", "training.save_steps=8",
                "model.overrides={dropout: 0.1, max_position_embeddings: 256, d_model: 128, d_ff: 512}"]
    finish(launch_two_processes(corpus, tmp_path / "straight", *settings))

    killed = launch_two_processes(corpus, tmp_path / "resumed", *settings)
    deadline = time.monotonic() + 600
    while not complete_json(tmp_path / "resumed/checkpoint-8/trainer_state.json") and time.monotonic() < deadline:
        assert killed.poll() is None, killed.communicate()[1][-3000:]
        time.sleep(0.01)
    kill_all(str(tmp_path / "resumed"))  # the launcher and both workers, as kill -9 of the job would
    killed.communicate()
    resumed_from = resume_checkpoint(tmp_path / "resumed")
    step = int(resumed_from.name.split("-")[1])
    epoch = json.loads((resumed_from / "trainer_state.json").read_text())["epoch"]
    assert step < 48 and 1 < epoch != int(epoch), f"the kill must fall inside a later epoch, not at {epoch}"
    lines_before = [len((tmp_path / f"resumed/batches-rank{r}.jsonl").read_text().splitlines()) for r in (0, 1)]
    finish(launch_two_processes(corpus, tmp_path / "resumed", *settings, resume=True))

    for rank in (0, 1):
        straight = (tmp_path / f"straight/batches-rank{rank}.jsonl").read_text().splitlines()
        resumed = (tmp_path / f"resumed/batches-rank{rank}.jsonl").read_text().splitlines()
        # The logs hold every collated batch, some fetched ahead of the kill among them.
        assert resumed[:step] + resumed[lines_before[rank]:][: 48 - step] == straight[:48], f"rank {rank}"
    straight = load_file(tmp_path / "straight/checkpoint-48/model.safetensors")
    resumed = load_file(tmp_path / "resumed/checkpoint-48/model.safetensors")
    for name in straight:
        torch.testing.assert_close(resumed[name], straight[name], atol=1e-6, rtol=0, msg=name)


@pytest.fixture(scope="module")
def model_dir(data_dir, tmp_path_factory):
    return tiny_model_folder(data_dir, tmp_path_factory.mktemp("model"), positions=48)


def translate_stdin(model_dir: Path, data: bytes) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "vanilla_transformer.cli", "translate", str(model_dir), "--num-beams", "2",
               "--batch-size", "3"]
    return subprocess.run(command, input=data, capture_output=True, timeout=300)


def test_translate_keeps_one_output_line_per_input_line(model_dir):
    # Defect 7: bad UTF-8 crashed the batch and lost the lines before it; blank lines came back as invented
    # sentences; long lines were cut silently; a trailing \r reached the model.
    long_line = " ".join(["Hund"] * 80)
    lines = [b"Ein Hund rennt.", b"Zwei \xff Katzen.", b"", b"  ", b"Eine Frau liest.\r", long_line.encode()]
    result = translate_stdin(model_dir, b"\n".join(lines) + b"\n")
    out = result.stdout.decode("utf-8").split("\n")[:-1]
    stderr = result.stderr.decode("utf-8")
    assert len(out) == len(lines), out
    assert out[1] == out[2] == out[3] == ""
    assert result.returncode == 1 and "stdin line 2: not valid UTF-8 (byte 0xff at column 6)" in stderr
    assert "line 6: " in stderr and "more than the model's 48 positions" in stderr
    alone = translate_stdin(model_dir, b"Ein Hund rennt.\nEine Frau liest.\n")
    assert alone.returncode == 0 and alone.stdout.decode().split("\n")[:2] == [out[0], out[4]]


def test_commands_name_a_folder_that_is_not_a_model(tmp_path):
    # Defect 10: a folder without config.json said "Should have a `model_type` key".
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit, match=r"empty: no config.json here, so this is not a saved model folder"):
        main(["translate", str(tmp_path / "empty"), "Ein Hund."])
    with pytest.raises(SystemExit, match=r"no-such-folder: no such model folder"):
        main(["evaluate", str(tmp_path / "no-such-folder"), "--data", str(tmp_path)])


def test_convert_marian_without_a_tokenizer_writes_nothing(tmp_path):
    # Defect 10: the weights were written, then a TypeError traceback left a half-made folder.
    from test_parity import opus_mt_like

    from vanilla_transformer.convert.marian import convert_marian_checkpoint

    opus_mt_like().save_pretrained(tmp_path / "marian")
    with pytest.raises(FileNotFoundError, match=r"marian: no usable tokenizer|marian: no tokenizer files"):
        convert_marian_checkpoint(tmp_path / "marian", tmp_path / "ours")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["marian"]
