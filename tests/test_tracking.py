"""Experiment tracking (training.report_to): a tiny run with TensorBoard, its event file read back with tensorboard's
own reader; the run's test split scored with TER too; names that cannot work refused."""

import json
import math

import pytest
import sacrebleu
from conftest import REPO, tiny_recipe
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from vanilla_transformer.cli import main
from vanilla_transformer.hub.card import render_card
from vanilla_transformer.training.recipe import RecipeError, load_recipe
from vanilla_transformer.training.run import earlier_run, train
from vanilla_transformer.training.schedule import noam_lr

STEPS = 100  # logs every 5 updates (tiny_recipe), evaluates every 50


@pytest.fixture(scope="module")
def tracked_run(small_corpus, tmp_path_factory):
    """A tiny run reporting to TensorBoard: its folder and results."""
    run = tmp_path_factory.mktemp("tracked") / "run"
    recipe = tiny_recipe(small_corpus, run, "training.report_to=tensorboard", f"training.max_steps={STEPS}",
                         "training.eval_steps=50", f"training.save_steps={STEPS}")
    return run, train(recipe)


def scalars(run) -> dict[str, dict[int, float]]:
    """{tag: {step: value}} of every scalar in the run's TensorBoard event files."""
    event_dirs = sorted({path.parent for path in (run / "runs").rglob("events.out.tfevents.*")})
    assert len(event_dirs) == 1, event_dirs  # one start, one writer's folder
    events = EventAccumulator(str(event_dirs[0])).Reload()
    return {tag: {e.step: e.value for e in events.Scalars(tag)} for tag in events.Tags()["scalars"]}


def test_tensorboard_holds_loss_learning_rate_and_validation_bleu(tracked_run):
    run, results = tracked_run
    logged = scalars(run)
    # The training log: every logging_steps (5) updates, as log.csv has it.
    assert sorted(logged["train/loss"]) == list(range(5, STEPS + 1, 5))
    header, *rows = [line.split(",") for line in (run / "log.csv").read_text().splitlines()]
    csv_losses = {int(row[0]): float(row[header.index("loss")]) for row in rows if row[header.index("loss")]}
    assert logged["train/loss"] == pytest.approx(csv_losses, rel=1e-6)
    assert all(0 < loss < 2 * math.log(400) for loss in logged["train/loss"].values())  # vocabulary of 400
    # The learning rate of update s: the paper's formula (tiny preset: d_model 32; warmup 20, lr_scale 2).
    assert logged["train/learning_rate"] == pytest.approx({s: noam_lr(s, 32, 20, 2.0) for s in logged["train/loss"]},
                                                          rel=1e-6)
    assert logged["train/tokens_per_s"][5] > 0
    # The validation scores at each evaluation (every 50 updates), those the run recorded; the model has begun to
    # translate by the last.
    assert logged["eval/bleu"] == pytest.approx({e["step"]: e["bleu"] for e in results.validation_bleu}, abs=1e-4)
    assert sorted(logged["eval/bleu"]) == sorted(logged["eval/chrf"]) == [50, 100]
    assert 0 < logged["eval/bleu"][100] < 100 and 0 < logged["eval/chrf"][100] < 100
    assert all(0 < loss < 2 * math.log(400) for loss in logged["eval/loss"].values())
    # An --overwrite of the folder deletes the logs with the rest of the run.
    assert run / "runs" in earlier_run(run)


def test_the_runs_test_split_is_scored_with_ter_too(tracked_run, small_corpus):
    run, results = tracked_run
    hypotheses = (run / "test2016.hyp.en").read_text(encoding="utf-8").splitlines()
    references = (small_corpus / "test2016.en").read_text(encoding="utf-8").splitlines()
    assert results.test.ter == pytest.approx(sacrebleu.corpus_ter(hypotheses, [references]).score, abs=1e-9)
    assert results.test.ter_signature.startswith("nrefs:1|case:lc|tok:tercom")
    saved = json.loads((run / "results.json").read_text())["test"]
    assert (saved["ter"], saved["ter_signature"]) == (results.test.ter, results.test.ter_signature)
    card = render_card(run)
    assert [r.metric_type for r in card.data.eval_results] == ["bleu", "chrf", "ter"]


def test_no_tracker_by_default_and_a_resume_may_add_one():
    recipe = load_recipe(REPO / "configs/multi30k-de-en-small.yaml")
    assert recipe.training.report_to == "none" and recipe.training.trackers() == []
    tracked = load_recipe(REPO / "configs/multi30k-de-en-small.yaml", ["training.report_to=[tensorboard]"])
    assert tracked.training.trackers() == ["tensorboard"] and tracked.changes_refused_on_resume(recipe) == []


@pytest.mark.parametrize("value", ["tensorbord", "[tensorboard, wandbb]", "[tensorboard, 3]"])
def test_an_unknown_tracker_is_refused_at_load_naming_the_key_and_the_choices(value):
    with pytest.raises(RecipeError, match=r"training\.report_to=.*: must be one of \['none', 'all', .*'tensorboard'"
                                          r".*'wandb'.*\] or a list of them"):
        load_recipe(REPO / "configs/multi30k-de-en-small.yaml", [f"training.report_to={value}"])


def test_a_tracker_that_is_not_installed_is_refused_before_the_run_folder_is_made(small_corpus, tmp_path,
                                                                                   monkeypatch, capsys):
    from transformers.integrations import integration_utils

    monkeypatch.setattr(integration_utils, "get_available_reporting_integrations", lambda: ["tensorboard"])
    args = ["train", str(REPO / "configs/multi30k-de-en-small.yaml"), "--output-dir", str(tmp_path / "run")]
    for override in ("data.source=" + str(small_corpus), "model.preset=tiny", "tokenizer.vocab_size=400",
                     "training.report_to=[tensorboard, mlflow]"):
        args += ["--set", override]
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert str(exit_info.value) == ("vanilla-transformer train: error: training.report_to=['tensorboard', 'mlflow']: "
                                    "mlflow not installed here (pip install it); installed: tensorboard")
    assert not (tmp_path / "run").exists()
