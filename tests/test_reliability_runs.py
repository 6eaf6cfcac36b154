"""A training run and its folder under misuse (issue 28): a diverged run, two runs in one folder, a resume with another
recipe, the demo beside a `train` run, no pair left after cleaning, a full disk, averaging models that differ, and a
tokenizer trained on one enormous line. Each test reproduces a defect once found."""

import json
import math
import re
import resource
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import REPO, launch_env, tiny_model, tiny_overrides, tiny_recipe
from safetensors.torch import load_file
from test_training import train_args

from vanilla_transformer.cli import main
from vanilla_transformer.training.average import average_checkpoints
from vanilla_transformer.training.checkpoints import CheckpointError
from vanilla_transformer.training.recipe import RecipeError, load_recipe
from vanilla_transformer.training.run import train
from vanilla_transformer.training.trainer import TrainingDiverged

RECIPE = REPO / "configs/multi30k-de-en-small.yaml"


@pytest.fixture(scope="module")
def short_run(small_corpus, tmp_path_factory):
    """A finished tiny run of 4 updates, with checkpoints, evaluations and saves at 2 and 4."""
    out = tmp_path_factory.mktemp("short") / "run"
    train(tiny_recipe(small_corpus, out, "generation.num_beams=1", "training.max_steps=4", "training.save_steps=2",
                      "training.eval_steps=2", "data.test=null", "data.validation_size=8"))
    return out


def listing(folder: Path) -> dict[str, int]:
    """Every file below the folder with its size."""
    return {str(p.relative_to(folder)): p.stat().st_size for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_diverging_run_stops_at_the_update_and_says_what_to_lower(small_corpus, tmp_path):
    # Issue 28, point 1: with lr_scale=100 the run exited 0 with NaN weights everywhere (the last two checkpoints
    # averaged), and log.csv read loss 0.0 from where the loss became NaN.
    out = tmp_path / "run"
    with pytest.raises(TrainingDiverged, match=r"its gradient norm is (nan|inf).*training\.lr_scale") as stopped:
        train(tiny_recipe(small_corpus, out, "training.lr_scale=100", "training.max_steps=60",
                          "training.eval_steps=1000", "average_last=2", "data.test_size=8"))
    update = int(re.search(r"training diverged at update (\d+) ", str(stopped.value)).group(1))
    assert 20 < update <= 60
    assert not (out / "model").exists() and not (out / "results.json").exists()
    checkpoints = sorted(out.glob("checkpoint-*"))
    assert checkpoints, "the checkpoints before the divergence are kept"
    for checkpoint in checkpoints:
        for name, weight in load_file(checkpoint / "model.safetensors").items():
            assert torch.isfinite(weight).all(), f"{checkpoint.name}: {name} is not finite"
    rows = (out / "log.csv").read_text().splitlines()
    columns = rows[0].split(",")
    logged = [dict(zip(columns, row.split(","))) for row in rows[1:]]
    losses = [float(row["loss"]) for row in logged if row["loss"]]
    assert losses and all(math.isfinite(loss) and loss > 0 for loss in losses), losses
    assert int(logged[-1]["step"]) == update and math.isnan(float(logged[-1]["grad_norm"]))

    with pytest.raises(SystemExit, match=r"train: error: training diverged at update \d+"):
        main(train_args(small_corpus, tmp_path / "cli", "training.lr_scale=100", "training.max_steps=60"))


def test_checkpoints_with_weights_that_are_not_finite_are_not_averaged(tmp_path):
    # Issue 28, point 1: the NaN checkpoints of a diverged run were averaged into the final model.
    tiny_model(seed=1).save_pretrained(tmp_path / "a")
    diverged = tiny_model(seed=2)
    with torch.no_grad():
        diverged.model.shared.weight[5, 0] = float("nan")
    diverged.save_pretrained(tmp_path / "b")
    with pytest.raises(CheckpointError, match=r"b: its weight \S*shared.weight holds NaN or infinite values"):
        average_checkpoints([tmp_path / "a", tmp_path / "b"], tmp_path / "mean")
    assert not (tmp_path / "mean").exists()


def test_a_run_folder_has_one_owner_and_a_dead_owner_does_not_block(small_corpus, tmp_path):
    # Issue 28, point 3: two runs in one folder both started, mixed their checkpoints, and one died averaging the
    # other's; with --overwrite both ended "successfully" with the files of two runs side by side.
    out = tmp_path / "run"
    first = subprocess.Popen([sys.executable, "-m", "vanilla_transformer.cli",
                              *train_args(small_corpus, out, "training.max_steps=100000")],
                             env=launch_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not (out / "checkpoint-20").is_dir() and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert first.poll() is None, "the first run ended early"
        for extra in ([], ["--overwrite"], ["--resume"]):
            with pytest.raises(SystemExit, match=rf"{re.escape(str(out))} is in use by another run \(process "
                                                 rf"{first.pid} on {re.escape(socket.gethostname())}, since "):
                main(train_args(small_corpus, out, "training.max_steps=4") + extra)
    finally:
        first.kill()
        first.wait()
    assert (out / "checkpoint-20").is_dir(), "the refused runs deleted nothing"

    # The lock file of the process killed with -9 is still there; its lock went with the process.
    assert (out / "run.lock").is_file()
    results = train(tiny_recipe(small_corpus, out, "training.max_steps=2", "training.save_steps=2", "data.test=null"),
                    overwrite=True)
    assert results.steps == 2 and not (out / "run.lock").exists()


def test_resume_refuses_what_made_the_checkpoints_and_applies_the_rest(short_run, small_corpus, tmp_path):
    # Issue 28, point 4: a resume with another vocabulary, activation or batch size was accepted and recorded in
    # recipe.json and the card as if the model had been trained so; a new eval_steps did not apply.
    run = tmp_path / "run"
    shutil.copytree(short_run, run)
    before = listing(run)
    with pytest.raises(RecipeError, match=r"--resume: the recipe differs .*recipe.json.*: "
                                          r"model.overrides.activation: unset -> 'gelu'; "
                                          r"tokenizer.vocab_size: 400 -> 300; training.update_tokens: 600 -> 1200\."):
        train(tiny_recipe(small_corpus, run, "generation.num_beams=1", "training.max_steps=4", "data.test=null",
                          "tokenizer.vocab_size=300", "model.overrides.activation=gelu", "training.update_tokens=1200"),
              resume=True)
    assert listing(run) == before

    results = train(tiny_recipe(small_corpus, run, "generation.num_beams=1", "training.max_steps=9",
                                "training.save_steps=3", "training.eval_steps=3", "data.test=null",
                                "data.validation_size=8"), resume=True)
    assert results.steps == 9
    recorded = json.loads((run / "recipe.json").read_text())["training"]
    assert (recorded["max_steps"], recorded["eval_steps"], recorded["save_steps"]) == (9, 3, 3)
    evaluated = [e["step"] for e in json.loads((run / "checkpoint-9/trainer_state.json").read_text())["log_history"]
                 if "eval_bleu" in e]
    assert evaluated == [2, 4, 6, 9]
    assert sorted(p.name for p in run.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4", "checkpoint-6",
                                                                 "checkpoint-9"]


def demo_args(corpus: Path, out: Path) -> list[str]:
    args = ["demo", "--recipe", str(RECIPE)]
    for override in tiny_overrides(corpus) + [f"output_dir={out}", "training.max_steps=2", "training.save_steps=2",
                                              "training.eval_steps=1000", "data.test_size=4", "generation.num_beams=1"]:
        args += ["--set", override]
    return args


def test_the_demo_replaces_only_a_run_of_its_own(short_run, small_corpus, tmp_path, capsys):
    # Issue 28, point 7: the demo, which always overwrites, deleted a `train` run of the same recipe (same folder).
    run = tmp_path / "run"
    shutil.copytree(short_run, run)
    before = listing(run)
    with pytest.raises(SystemExit, match=r"demo: error: .*run holds a run that the demo did not make"):
        main(demo_args(small_corpus, run))
    assert listing(run) == before

    mine = tmp_path / "demo"
    for _ in range(2):  # a second demo replaces the first
        main(demo_args(small_corpus, mine))
        assert "sacreBLEU" in capsys.readouterr().out
    assert (mine / "made-by.txt").read_text() == "demo\n" and (mine / "model/model.safetensors").is_file()


def test_no_training_pair_left_after_cleaning_is_an_error_before_anything_is_deleted(short_run, small_corpus,
                                                                                      tmp_path):
    # Issue 28, point 8: data.max_length=2 left no pair; the run exited 0 with an untrained model and train_pairs 0.
    run = tmp_path / "run"
    shutil.copytree(short_run, run)
    before = listing(run)
    with pytest.raises(ValueError, match=r"no training pairs are left after cleaning .*: 500 dropped as longer than 2 "
                                         r"tokens on a side \(data.max_length=2, .*\), 0 for a length ratio"):
        train(tiny_recipe(small_corpus, run, "data.max_length=2"), overwrite=True)
    assert listing(run) == before


@pytest.mark.parametrize("key", ["data.test_size", "data.validation_size"])
def test_negative_split_sizes_are_refused_when_the_recipe_loads(key):
    # Issue 28, point 12: -5 passed the check and failed at the end of training.
    with pytest.raises(RecipeError, match=rf"{key}=-5: must be positive, or null"):
        load_recipe(RECIPE, [f"{key}=-5"])


def test_averaging_models_of_different_vocabularies_is_an_error_naming_the_weight(tmp_path):
    # Issue 28, point 12: a RuntimeError traceback (size mismatch) from the sum.
    tiny_model(seed=1).save_pretrained(tmp_path / "a")
    tiny_model(seed=2, vocab_size=120).save_pretrained(tmp_path / "b")
    with pytest.raises(SystemExit, match=r"average: error: cannot average .*b with .*a: its weight "
                                         r"model.shared.weight is \[120, 32\] there, \[99, 32\] in"):
        main(["average", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "mean")])
    assert not (tmp_path / "mean").exists()


def with_file_size_limit(limit: int):
    """preexec_fn of a child whose writes fail past `limit` bytes a file, as on a full disk (Python ignores
    SIGXFSZ, so a write fails with EFBIG instead of killing it)."""
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


def test_a_full_disk_while_averaging_leaves_no_half_made_folder(tmp_path):
    # Issue 28, point 12: a SafetensorError traceback, and a folder with config.json and no weights.
    tiny_model(seed=1).save_pretrained(tmp_path / "a")
    tiny_model(seed=2).save_pretrained(tmp_path / "b")
    result = subprocess.run([sys.executable, "-m", "vanilla_transformer.cli", "average", str(tmp_path / "a"),
                             str(tmp_path / "b"), "--out", str(tmp_path / "mean")], env=launch_env(),
                            capture_output=True, text=True, timeout=300, preexec_fn=with_file_size_limit(50_000))
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert "average: error: could not write" in result.stderr and "mean" in result.stderr
    assert not (tmp_path / "mean").exists() and not list(tmp_path.glob(".mean-*"))


def test_a_full_disk_while_saving_a_checkpoint_is_an_error_naming_it(small_corpus, tmp_path):
    # Issue 28, point 12: a traceback from torch.save or safetensors in the middle of training.
    out = tmp_path / "run"
    # model.safetensors (~230 kB) fits, optimizer.pt (~500 kB) does not.
    result = subprocess.run([sys.executable, "-m", "vanilla_transformer.cli",
                             *train_args(small_corpus, out, "training.max_steps=4", "training.save_steps=2")],
                            env=launch_env(HF_DATASETS_CACHE=str(tmp_path / "cache")), capture_output=True, text=True,
                            timeout=300, preexec_fn=with_file_size_limit(300_000))
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert f"train: error: could not write {out / 'checkpoint-2'}" in result.stderr, result.stderr[-3000:]
    assert not (out / "checkpoint-2").exists(), "the half-written checkpoint is removed"


TIMED_TOKENIZER = """
import logging, sys, time
logging.basicConfig(level=logging.INFO)
from vanilla_transformer.training.tokenizer import train_tokenizer
lines = open(sys.argv[1], encoding="utf-8").read().splitlines()[:500] + ["a" * 1_000_000]
start = time.perf_counter()
tokenizer = train_tokenizer(texts=lines, vocab_size=400, show_progress=False)
tokenizer(lines[-1:])
print(time.perf_counter() - start)
"""


def test_one_enormous_line_does_not_stall_tokenizer_training(data_dir):
    # Issue 28, point 14: BPE learns in time quadratic in a word's length: a 1 MB line of one character trained for
    # more than 300 s. (In a child process, so that a stall is cut at the timeout.)
    result = subprocess.run([sys.executable, "-c", TIMED_TOKENIZER, str(data_dir / "multi30k/val.de")],
                            env=launch_env(), capture_output=True, text=True, timeout=90)
    assert result.returncode == 0, result.stderr[-3000:]
    assert float(result.stdout.split()[-1]) < 10
    assert "1 line(s) longer than 10000 characters (the longest: 1000000) left out of its training" in result.stderr
