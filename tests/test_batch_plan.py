"""Issue 29: the recipe states the tokens of an update, and the processes of a launch share them (the batch plan);
the DataLoader and DDP settings and the bf16 rule that go with training on GPUs."""

import json
import logging
import math
import re
import subprocess
from pathlib import Path

import pytest
import torch
from conftest import REPO, accelerate_launch, launch_env, tiny_model, tiny_recipe

from vanilla_transformer.cli import main
from vanilla_transformer.training import run
from vanilla_transformer.training.recipe import BatchPlan, RecipeError, TrainingRecipe, load_recipe

MULTI30K = REPO / "configs/multi30k-de-en-small.yaml"


@pytest.mark.parametrize("processes, cap, expected", [
    (1, 6250, (4, 6250)), (2, 6250, (2, 6250)), (8, 6250, (1, 3125)), (16, 6250, (1, 1562)),  # the base recipe
    (1, 3125, (8, 3125)), (2, 3125, (4, 3125)), (8, 3125, (1, 3125)), (16, 3125, (1, 1562)),  # the big one
    (1, None, (1, 25000)), (2, None, (1, 12500)), (8, None, (1, 3125)),  # no cap: one pass per process
    (1, 7000, (4, 6250)), (3, 7000, (2, 4166)), (16, 1000, (2, 781)),  # caps that do not divide the share
])
def test_the_plan_shares_the_update_among_the_processes(processes, cap, expected):
    plan = TrainingRecipe(update_tokens=25000, micro_batch_tokens=cap).plan(processes)
    assert (plan.micro_batches, plan.micro_batch_tokens) == expected
    assert plan.micro_batch_tokens <= (cap or 25000)
    # As few passes as the cap allows, and the update within one token per pass of what the recipe says.
    assert plan.micro_batches == math.ceil(25000 / (processes * (cap or 25000)))
    assert 0 <= 25000 - plan.update_tokens < processes * plan.micro_batches


def test_the_plan_reads_as_processes_times_micro_batches():
    assert str(BatchPlan(2, 4, 3125)) == \
        "batch plan: 2 processes x 4 micro-batches of <= 3,125 tokens = 25,000 tokens per update"
    assert str(BatchPlan(1, 1, 2048)) == \
        "batch plan: 1 process x 1 micro-batch of <= 2,048 tokens = 2,048 tokens per update"


def test_the_plan_is_this_launchs_unless_told(monkeypatch):
    training = TrainingRecipe(update_tokens=25000, micro_batch_tokens=6250)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert training.plan() == BatchPlan(1, 4, 6250)
    monkeypatch.setenv("WORLD_SIZE", "8")  # what accelerate launch (torchrun) tells each process
    assert training.plan() == BatchPlan(8, 1, 3125) and training.batch_tokens == 3125 and training.micro_batches == 1


@pytest.mark.parametrize("overrides, processes, message", [
    (["training.update_tokens=0"], 1, r"training.update_tokens=0: must be a positive number of tokens"),
    (["training.micro_batch_tokens=-5"], 1, r"training.micro_batch_tokens=-5: must be a positive number of tokens"),
    (["training.update_tokens=2048"], 64, r"data.max_length=64: must be at most the tokens of a micro-batch "
                                          r"\(batch plan: 64 processes x 1 micro-batch of <= 32 tokens"),
    (["training.update_tokens=3", "training.micro_batch_tokens=1", "data.max_length=null"], 2,
     r"training.update_tokens=3: too few for 2 processes in micro-batches of at most training.micro_batch_tokens=1"),
    (["training.max_tokens=4096"], 1, r"training.max_tokens and training.update_tokens are both set: update_tokens, "
                                      r"the tokens of an update of all processes together, replaces max_tokens x "
                                      r"gradient_accumulation_steps, the batch of each process"),
])
def test_impossible_batches_are_refused_naming_the_key(overrides, processes, message):
    with pytest.raises(RecipeError, match=message):
        load_recipe(MULTI30K, overrides).batch_plan(processes)


def old_recipe(folder: Path, training: str) -> Path:
    """The Multi30k recipe as written before issue 29, its batch in the given lines of the training section."""
    path = folder / "old.yaml"
    path.write_text(re.sub(r"^  update_tokens: .*\n", training, MULTI30K.read_text(), flags=re.MULTILINE))
    return path


@pytest.mark.parametrize("override, message", [
    ("training.max_tokens=0", r"training.max_tokens=0: must be positive"),
    ("training.gradient_accumulation_steps=two", r"training.gradient_accumulation_steps='two': expected int"),
])
def test_old_batch_keys_out_of_range_are_refused_naming_the_key(tmp_path, override, message):
    with pytest.raises(RecipeError, match=message):
        load_recipe(old_recipe(tmp_path, "  max_tokens: 2048\n"), [override])


@pytest.mark.parametrize("max_tokens, accumulation, cap", [
    (2048, 1, None), (25000, 1, 6250), (25000, 1, 3125), (1000, 2, 300), (1000, 3, None), (4096, 1, 4096),
])
def test_recipes_that_stated_the_batch_per_process_train_as_before_on_one_process(max_tokens, accumulation, cap,
                                                                                 tmp_path, caplog, monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    path = old_recipe(tmp_path, f"  max_tokens: {max_tokens}\n  gradient_accumulation_steps: {accumulation}\n"
                                f"  micro_batch_tokens: {'null' if cap is None else cap}\n")
    with caplog.at_level(logging.WARNING, logger="vanilla_transformer.training.recipe"):
        recipe = load_recipe(path, ["data.max_length=null"])
    # Before issue 29: each batch of max_tokens cut into micro-batches of the cap, accumulation batches per update.
    before = (accumulation * (math.ceil(max_tokens / cap) if cap else 1), cap or max_tokens)
    assert (recipe.training.micro_batches, recipe.training.batch_tokens) == before
    assert f"training.max_tokens={max_tokens} and gradient_accumulation_steps={accumulation} stated the batch of " \
           f"each process" in caplog.text
    assert f"read as training.update_tokens={recipe.training.update_tokens}" in caplog.text
    assert "on N processes each takes 1/N of the update" in caplog.text


def test_an_old_run_folders_recipe_resumes_with_the_same_recipe_in_the_new_keys(tmp_path):
    # recipe.json of a run made before issue 29 holds max_tokens and gradient_accumulation_steps.
    recorded = load_recipe(MULTI30K).to_dict()
    recorded["training"].update(max_tokens=1000, gradient_accumulation_steps=2, micro_batch_tokens=None)
    del recorded["training"]["update_tokens"]
    (tmp_path / "recipe.json").write_text(json.dumps(recorded))
    now = load_recipe(MULTI30K, ["training.update_tokens=2000", "training.micro_batch_tokens=1000"])
    assert now.changes_refused_on_resume(load_recipe(tmp_path / "recipe.json")) == []


@pytest.mark.parametrize("recipe", ["wmt14-en-de-base", "wmt14-en-de-big"])
def test_the_wmt_recipes_show_the_plan_each_launch_gives(recipe):
    # The comments give the paper's batch for 1 GPU, 8 GPUs and 2 machines of 8 without arithmetic by the user: they
    # must be what the plan says.
    text = (REPO / f"configs/{recipe}.yaml").read_text()
    shown = re.findall(r"#\s+(1 GPU|2 GPUs|8 GPUs, the paper's|2 machines x 8 GPUs):\s+(batch plan: .*)", text)
    assert [label for label, _ in shown] == ["1 GPU", "2 GPUs", "8 GPUs, the paper's", "2 machines x 8 GPUs"]
    loaded = load_recipe(REPO / f"configs/{recipe}.yaml")
    for (_, line), processes in zip(shown, (1, 2, 8, 16)):
        assert line == str(loaded.batch_plan(processes))
        assert 25000 - processes < loaded.batch_plan(processes).update_tokens <= 25000


def test_multi30k_recipes_keep_one_pass_of_2048_tokens_per_update_on_one_process(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    for name in ("multi30k-de-en-small", "multi30k-en-de-small"):
        recipe = load_recipe(REPO / f"configs/{name}.yaml")
        assert recipe.batch_plan() == BatchPlan(1, 1, 2048)
        assert run.training_arguments(recipe, 256).gradient_accumulation_steps == 1


def test_training_arguments_load_batches_as_the_recipe_says_and_set_ddp_for_this_model(small_corpus, tmp_path):
    recipe = tiny_recipe(small_corpus, tmp_path / "run", "training.dataloader_workers=2", "training.pin_memory=true")
    args = run.training_arguments(recipe, 64)
    assert (args.dataloader_num_workers, args.dataloader_persistent_workers) == (2, True)
    assert args.dataloader_pin_memory is torch.cuda.is_available()  # pinned only where there is a GPU to copy to
    assert args.ddp_find_unused_parameters is False and args.ddp_broadcast_buffers is False
    # Why those DDP flags hold: every parameter gets a gradient from one forward pass, and the only buffers are the
    # fixed sinusoid tables, never saved nor changed by training.
    for position_embedding in ("sinusoidal", "learned"):
        model = tiny_model(position_embedding=position_embedding).train()
        source, labels = torch.randint(4, 99, (2, 5)), torch.randint(4, 99, (2, 4))
        model(input_ids=source, labels=labels).logits.sum().backward()
        assert [name for name, p in model.named_parameters() if p.grad is None] == []
        buffers = [name for name, _ in model.named_buffers()]
        assert all(name.endswith("embed_positions.weight") for name in buffers)
        assert not set(buffers) & set(model.state_dict())  # not persistent: fixed, computed from the config


def test_the_trainer_passes_workers_and_pinned_memory_to_its_dataloader(small_corpus, tmp_path, monkeypatch):
    import datasets

    from vanilla_transformer.training.trainer import TranslationTrainer

    recipe = tiny_recipe(small_corpus, tmp_path / "run", "training.dataloader_workers=1")
    args = run.training_arguments(recipe, 64)
    args.dataloader_pin_memory = True  # as on a GPU machine
    pairs = datasets.Dataset.from_dict({"input_ids": [[5, 6, 2]] * 4, "labels": [[7, 2]] * 4})
    trainer = TranslationTrainer(model=tiny_model(), args=args, train_dataset=pairs, eval_dataset=pairs,
                                 micro_batch_tokens=6, warmup_steps=20)
    made = {}
    monkeypatch.setattr(trainer.accelerator, "prepare", lambda loader: made.setdefault("loader", loader))
    trainer.get_train_dataloader()
    loader = made["loader"]
    assert (loader.num_workers, loader.pin_memory, loader.persistent_workers) == (1, True, True)


@pytest.mark.parametrize("capability, native", [((7, 0), False), ((7, 5), False), ((8, 0), True), ((9, 0), True)])
def test_auto_precision_takes_bf16_only_on_gpus_that_compute_it_natively(monkeypatch, capability, native):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)  # as on a V100 or T4
    assert run.bf16_available() is native


def test_prepare_prints_the_plan_for_the_processes_it_is_told(small_corpus, tmp_path, capsys):
    from conftest import tiny_overrides

    sets = [arg for override in tiny_overrides(small_corpus) + ["training.micro_batch_tokens=200"]
            for arg in ("--set", override)]
    main(["prepare", str(MULTI30K), *sets, "--processes", "2"])
    out = capsys.readouterr().out.splitlines()
    plan = "batch plan: 2 processes x 2 micro-batches of <= 150 tokens = 600 tokens per update"
    assert out[0] == plan  # before the data path, and again after the batches it forms
    assert re.fullmatch(rf"[\d,]+ batches of at most 150 tokens, [\d.]+% padding; {plan}", out[-1])
    # An impossible plan is refused before the data path, naming the key.
    with pytest.raises(SystemExit) as refused:
        main(["prepare", str(MULTI30K), *sets, "--processes", "16"])
    assert "data.max_length=64: must be at most the tokens of a micro-batch (batch plan: 16 processes" in \
        str(refused.value.code) + capsys.readouterr().err


def launch(processes: int, corpus: Path, out: Path) -> tuple[str, list[dict]]:
    """A tiny run under accelerate launch: its stderr and the log history of its last checkpoint."""
    from test_training import train_args

    args = train_args(corpus, out, "training.update_tokens=600", "training.micro_batch_tokens=300",
                      "training.max_steps=6", "training.logging_steps=2", "training.save_steps=6",
                      "training.log_batches=false")
    command = accelerate_launch("-m", "vanilla_transformer.cli", *args, processes=processes)
    if processes == 1:
        command.remove("--multi_gpu")  # accelerate's torchrun launcher wants 2 processes at least
    result = subprocess.run(command, env=launch_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stderr, json.loads((out / "checkpoint-6/trainer_state.json").read_text())["log_history"]


def test_one_and_two_processes_train_on_the_same_tokens_per_update(small_corpus, tmp_path):
    runs = {processes: launch(processes, small_corpus, tmp_path / f"p{processes}") for processes in (1, 2)}
    assert "batch plan: 1 process x 2 micro-batches of <= 300 tokens = 600 tokens per update" in runs[1][0]
    assert "batch plan: 2 processes x 1 micro-batch of <= 300 tokens = 600 tokens per update" in runs[2][0]
    logged = {processes: [(e["update_tokens"], e["padding_fraction"]) for e in history if "loss" in e]
              for processes, (_, history) in runs.items()}
    assert len(logged[1]) == len(logged[2]) == 3 and all(0 < tokens <= 600 for tokens, _ in logged[1])
    # The same micro-batches make each update: 1 process takes two in a row, 2 processes one each of the same two;
    # the counts of both processes are summed in what is logged.
    assert logged[1] == logged[2]


def test_each_run_trains_in_its_recipes_precision_after_another_in_the_same_process(small_corpus, tmp_path):
    # transformers 4.x wrote a bf16 run's precision into ACCELERATE_MIXED_PRECISION, which an fp32 run's Trainer
    # then read in the same process: it trained in bf16 (a diverging-run test passed alone and failed in the suite).
    import datasets

    from vanilla_transformer.training.trainer import TranslationTrainer

    pairs = datasets.Dataset.from_dict({"input_ids": [[5, 6, 2]] * 4, "labels": [[7, 2]] * 4})
    for precision, expected in (("bf16", "bf16"), ("fp32", "no"), ("bf16", "bf16")):
        recipe = tiny_recipe(small_corpus, tmp_path / precision, f"training.precision={precision}")
        trainer = TranslationTrainer(model=tiny_model(), args=run.training_arguments(recipe, 64),
                                     train_dataset=pairs, eval_dataset=pairs, micro_batch_tokens=6, warmup_steps=20)
        assert trainer.accelerator.mixed_precision == expected, precision
