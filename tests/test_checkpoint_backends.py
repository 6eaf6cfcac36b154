"""Checkpoints of every backend the Trainer saves with, written by its own _save_checkpoint: FSDP (full and sharded
state dict, for real: FSDP2 over 2 gloo processes) and DeepSpeed ZeRO 1-3 (a stand-in engine, deepspeed not being
installed). Resume picks the newest complete one; averaging works on whole weights or is refused up front."""

import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from accelerate.utils import DeepSpeedPlugin, FullyShardedDataParallelPlugin
from conftest import free_port, launch_env, tiny_model_folder
from safetensors.torch import load_file
from transformers import AutoTokenizer, Seq2SeqTrainingArguments
from transformers.trainer_callback import ExportableState, TrainerState

from vanilla_transformer import VanillaTransformerForConditionalGeneration
from vanilla_transformer.training.average import average_checkpoints
from vanilla_transformer.training.checkpoints import (CheckpointError, backend, last_checkpoints, problem,
                                                      resume_checkpoint, whole_weights_problem)
from vanilla_transformer.training.trainer import TranslationTrainer


def make_trainer(model, tokenizer, out: Path) -> TranslationTrainer:
    """A TranslationTrainer of the model, with its optimizer and scheduler, in the state train() gives it."""
    args = Seq2SeqTrainingArguments(output_dir=str(out), use_cpu=True, report_to=[], save_strategy="steps")
    trainer = TranslationTrainer(model=model, args=args, processing_class=tokenizer, micro_batch_tokens=100,
                                 warmup_steps=10)
    trainer.state = TrainerState(stateful_callbacks=[cb for cb in trainer.callback_handler.callbacks + [trainer.control]
                                                     if isinstance(cb, ExportableState)])
    return trainer


def update(trainer: TranslationTrainer, model, step: int) -> None:
    """One update of the model on a fixed batch, and the trainer's state at `step`."""
    ids = torch.arange(4, 20).reshape(2, 8)
    model(input_ids=ids, labels=ids).loss.backward()
    trainer.optimizer.step()
    trainer.lr_scheduler.step()
    trainer.optimizer.zero_grad()
    trainer.state.global_step = step


# Run by torchrun in 2 gloo processes: FSDP2 on CPU, made by hand, since accelerate enables FSDP only on GPUs; the
# Trainer's own _save_checkpoint and the run's own final save are then those of an FSDP run.
FSDP_RUN = """
import json, shutil, sys
from pathlib import Path
from types import SimpleNamespace
import torch
from accelerate import PartialState
from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin
from torch.distributed.fsdp import fully_shard
from transformers import AutoTokenizer
from test_checkpoint_backends import make_trainer, update
from vanilla_transformer import VanillaTransformerForConditionalGeneration
from vanilla_transformer.training.run import save_final_model

model_dir, run, state_dict_type, average_last = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
state = PartialState(cpu=True)

def fsdp_trainer():
    model = VanillaTransformerForConditionalGeneration.from_pretrained(model_dir)
    trainer = make_trainer(model, AutoTokenizer.from_pretrained(model_dir), run)
    trainer.accelerator.state.distributed_type = DistributedType.FSDP
    trainer.accelerator.state.fsdp_plugin = FullyShardedDataParallelPlugin(fsdp_version=2,
                                                                           state_dict_type=state_dict_type)
    trainer.is_fsdp_enabled = True
    fully_shard(model)
    trainer.model_wrapped = model
    trainer.create_optimizer_and_scheduler(num_training_steps=10)
    return model, trainer

model, trainer = fsdp_trainer()
for step in (2, 4):
    update(trainer, model, step)
    trainer._save_checkpoint(model, None)
recipe = SimpleNamespace(run_dir=run, average_last=average_last, data=SimpleNamespace(src="de", tgt="en"))
final, averaged = save_final_model(trainer, recipe)
total = sum(p.double().sum().item() for p in final.parameters())
resumed, again = fsdp_trainer()  # what the Trainer loads when it resumes from checkpoint-4
try:
    again._load_from_checkpoint(str(run / "checkpoint-4"))
    again._load_optimizer_and_scheduler(str(run / "checkpoint-4"))
    same = all(torch.equal(a.full_tensor(), b.full_tensor()) for a, b in zip(model.parameters(), resumed.parameters()))
    same &= again.lr_scheduler.state_dict() == trainer.lr_scheduler.state_dict()
    outcome = "the same weights and schedule" if same else "other weights or schedule"
except Exception as error:
    outcome = f"{type(error).__name__}: {error}"
corrupt = None
if state_dict_type == "FULL_STATE_DICT":  # a full checkpoint that lacks one weight is refused on every process
    bad = run / "checkpoint-bad"
    if state.is_main_process:
        shutil.copytree(run / "checkpoint-4", bad)
        weights = torch.load(bad / "pytorch_model_fsdp.bin", weights_only=True)
        weights.pop(next(name for name in weights if ".layers.0." in name))
        torch.save(weights, bad / "pytorch_model_fsdp.bin")
    state.wait_for_everyone()
    try:
        again._load_from_checkpoint(str(bad))
    except Exception as error:
        corrupt = f"{type(error).__name__}: {error}"
(run / f"final-rank{state.process_index}.json").write_text(json.dumps({"sum": total, "averaged": averaged,
                                                                       "resumed": outcome, "corrupt": corrupt}))
"""


@pytest.fixture(scope="module")
def model_dir(data_dir, tmp_path_factory):
    return tiny_model_folder(data_dir, tmp_path_factory.mktemp("model"), positions=32)


@pytest.fixture(scope="module")
def fsdp_runs(model_dir, tmp_path_factory):
    """Run folders of the FSDP2 script, with a full and a sharded state dict."""
    folder = tmp_path_factory.mktemp("fsdp")
    script = folder / "fsdp_run.py"
    script.write_text(FSDP_RUN)
    runs = {}
    for state_dict_type, average_last in (("FULL_STATE_DICT", 2), ("SHARDED_STATE_DICT", 0)):
        run = folder / state_dict_type
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                   str(free_port()), str(script), str(model_dir), str(run), state_dict_type, str(average_last)]
        # The final save is a collective: a process left out of it would hang the other until the timeout.
        result = subprocess.run(command, env=launch_env(PYTHONPATH=str(Path(__file__).parent)), capture_output=True,
                                text=True, timeout=120)
        assert result.returncode == 0, result.stderr[-3000:]
        runs[state_dict_type] = run
    return runs


def final_sums(run: Path) -> list[dict]:
    return [json.loads((run / f"final-rank{r}.json").read_text()) for r in (0, 1)]


def test_fsdp_full_state_dict_checkpoints_resume_and_average(fsdp_runs, tmp_path, caplog):
    run = fsdp_runs["FULL_STATE_DICT"]
    assert {p.name for p in (run / "checkpoint-4").iterdir()} >= {"model.safetensors", "pytorch_model_fsdp.bin",
                                                                   "optimizer.bin", "scheduler.pt"}
    assert backend(run / "checkpoint-4") == "fsdp" and resume_checkpoint(run) == run / "checkpoint-4"
    assert last_checkpoints(run, 2) == [run / "checkpoint-2", run / "checkpoint-4"]
    # The run's final model is the average of both, on both processes, saved with our class (not FSDP2's).
    weights = [load_file(run / f"checkpoint-{step}/model.safetensors") for step in (2, 4)]
    final = load_file(run / "model/model.safetensors")
    for name in final:
        torch.testing.assert_close(final[name], (weights[0][name] + weights[1][name]) / 2)
    ranks = final_sums(run)
    assert ranks[0]["sum"] == ranks[1]["sum"] and ranks[0]["averaged"] == ["checkpoint-2", "checkpoint-4"]
    assert "_fsdp" not in (run / "model/config.json").read_text()

    # The Trainer resumes from it: the same weights and schedule on both processes (accelerate's own loader fails in
    # torch 2.13 with KeyError 'model.encoder.embed_tokens.weight', an alias of the tied embedding), and a checkpoint
    # that lacks a weight is refused by name on both, not loaded half.
    assert [rank["resumed"] for rank in final_sums(run)] == ["the same weights and schedule"] * 2
    for rank in final_sums(run):
        assert rank["corrupt"].startswith("CheckpointError: ") and "checkpoint-bad/pytorch_model_fsdp.bin: not " \
            "this model's weights (missing: model.encoder.layers.0." in rank["corrupt"], rank["corrupt"]

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    (copy / "checkpoint-4/optimizer.bin").write_bytes((copy / "checkpoint-4/optimizer.bin").read_bytes()[:200])
    with caplog.at_level(logging.WARNING):
        assert resume_checkpoint(copy) == copy / "checkpoint-2"
    assert "checkpoint-4/optimizer.bin: truncated or corrupt" in caplog.text


def test_fsdp_sharded_checkpoints_resume_but_are_not_averaged(fsdp_runs, tmp_path, caplog):
    run = fsdp_runs["SHARDED_STATE_DICT"]
    assert {p.name for p in (run / "checkpoint-4").iterdir()} >= {"pytorch_model_fsdp_0", "optimizer_0",
                                                                   "scheduler.pt", "trainer_state.json"}
    assert resume_checkpoint(run) == run / "checkpoint-4"
    assert "the weights are only in shards (pytorch_model_fsdp_0)" in problem(run / "checkpoint-4")
    # The final model is gathered from the shards by every process (a collective) and saved whole.
    final = VanillaTransformerForConditionalGeneration.from_pretrained(run / "model")
    assert sum(p.double().sum().item() for p in final.parameters()) == pytest.approx(final_sums(run)[0]["sum"])
    assert final_sums(run)[0]["sum"] == final_sums(run)[1]["sum"]
    assert [rank["resumed"] for rank in final_sums(run)] == ["the same weights and schedule"] * 2

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    (copy / "checkpoint-4/pytorch_model_fsdp_0/__1_0.distcp").unlink()  # a process killed while saving its shard
    with caplog.at_level(logging.WARNING):
        assert resume_checkpoint(copy) == copy / "checkpoint-2"
    assert "pytorch_model_fsdp_0/__1_0.distcp: missing" in caplog.text
    (copy / "checkpoint-2/optimizer_0/.metadata").unlink()
    with pytest.raises(CheckpointError, match="no complete checkpoint-N folder to resume from"):
        resume_checkpoint(copy)


def test_averaging_is_refused_up_front_where_the_backend_keeps_no_whole_weights():
    def fsdp(state_dict_type: str) -> SimpleNamespace:
        return SimpleNamespace(fsdp_plugin=FullyShardedDataParallelPlugin(fsdp_version=2,
                                                                          state_dict_type=state_dict_type))

    def deepspeed(**settings) -> SimpleNamespace:
        return SimpleNamespace(deepspeed_plugin=DeepSpeedPlugin(**settings))

    message = whole_weights_problem(fsdp("SHARDED_STATE_DICT"), 5)
    assert "average_last=5: FSDP with SHARDED_STATE_DICT" in message
    assert "fsdp_state_dict_type: FULL_STATE_DICT" in message
    # The final model is gathered whatever the state dict type.
    assert whole_weights_problem(fsdp("SHARDED_STATE_DICT"), 0) is None
    assert whole_weights_problem(fsdp("FULL_STATE_DICT"), 5) is None
    message = whole_weights_problem(deepspeed(zero_stage=3), 0)
    assert "DeepSpeed ZeRO-3" in message and "stage3_gather_16bit_weights_on_model_save: true" in message
    assert whole_weights_problem(deepspeed(zero_stage=3, zero3_save_16bit_model=True), 5) is None
    assert whole_weights_problem(deepspeed(zero_stage=2), 5) is None
    assert whole_weights_problem(SimpleNamespace(), 5) is None  # DDP


def test_train_refuses_a_backend_without_whole_weights_before_training(small_corpus, tmp_path, monkeypatch):
    from conftest import tiny_recipe
    from vanilla_transformer.training import run as run_module
    from vanilla_transformer.training.recipe import RecipeError

    earlier = tmp_path / "run/results.json"  # an earlier run, which --overwrite would delete
    earlier.parent.mkdir()
    earlier.write_text("{}")
    monkeypatch.setattr(run_module, "whole_weights_problem", lambda state, average_last: "refused: the setting")
    monkeypatch.setattr(TranslationTrainer, "train", lambda *args, **kwargs: pytest.fail("training started"))
    with pytest.raises(RecipeError, match="refused: the setting"):
        run_module.train(tiny_recipe(small_corpus, tmp_path / "run", "data.test=null"), overwrite=True)
    assert earlier.read_text() == "{}"


class StandInZeroEngine:
    """What the Trainer uses of a DeepSpeedEngine to save a checkpoint. save_checkpoint writes the files DeepSpeed's
    writes (deepspeed/runtime/engine.py): global_stepN/ holding mp_rank_00_model_states.pt under ZeRO 1-2 or one
    zero_pp_rank_R_mp_rank_00_model_states.pt per rank under ZeRO-3, and one bf16_zero_pp_rank_R_mp_rank_00_optim_
    states.pt per rank; then `latest`, naming global_stepN."""

    def __init__(self, trainer: TranslationTrainer, stage: int, gather: bool):
        self.trainer, self.module, self.ranks = trainer, trainer.model, trainer.args.world_size
        self.config = {"zero_optimization": {"stage": stage, "stage3_gather_16bit_weights_on_model_save": gather}}

    def save_checkpoint(self, save_dir):
        tag = f"global_step{self.trainer.state.global_step}"
        states = Path(save_dir) / tag
        states.mkdir(parents=True, exist_ok=True)  # ZeRO-3 without gathering: the Trainer saves twice
        stage = self.config["zero_optimization"]["stage"]
        models = ([f"zero_pp_rank_{r}_mp_rank_00_model_states.pt" for r in range(self.ranks)] if stage == 3
                  else ["mp_rank_00_model_states.pt"])
        for name in models:
            torch.save({"module": self.module.state_dict() if stage < 3 else None}, states / name)
        for rank in range(self.ranks):
            torch.save({"optimizer_state_dict": {}}, states / f"bf16_zero_pp_rank_{rank}_mp_rank_00_optim_states.pt")
        (Path(save_dir) / "latest").write_text(tag)

    def state_dict(self, model):
        """accelerate's get_state_dict under DeepSpeed: ZeRO-3 gathers the weights only when configured to."""
        zero = self.config["zero_optimization"]
        if zero["stage"] == 3 and not zero["stage3_gather_16bit_weights_on_model_save"]:
            raise ValueError("Cannot get 16bit model weights because `stage3_gather_16bit_weights_on_model_save` in "
                             "DeepSpeed config is False.")
        return self.module.state_dict()


def deepspeed_run(model_dir: Path, out: Path, stage: int, gather: bool, monkeypatch) -> Path:
    """A run folder of checkpoints 2 and 4, saved by the Trainer's _save_checkpoint as under DeepSpeed."""
    # What transformers imports only where deepspeed is installed.
    from accelerate.utils.deepspeed import DeepSpeedSchedulerWrapper
    monkeypatch.setattr("transformers.trainer.DeepSpeedSchedulerWrapper", DeepSpeedSchedulerWrapper, raising=False)
    model = VanillaTransformerForConditionalGeneration.from_pretrained(model_dir)
    trainer = make_trainer(model, AutoTokenizer.from_pretrained(model_dir), out)
    trainer.create_optimizer_and_scheduler(num_training_steps=10)
    engine = StandInZeroEngine(trainer, stage, gather)
    trainer.is_deepspeed_enabled = True
    trainer.deepspeed = trainer.model_wrapped = engine
    trainer.accelerator.get_state_dict = engine.state_dict
    for step in (2, 4):
        update(trainer, model, step)
        trainer._save_checkpoint(model, None)
    return out


@pytest.mark.parametrize("stage, gather", [(1, False), (2, False), (3, True), (3, False)])
def test_deepspeed_checkpoints_resume_and_average_with_whole_weights(model_dir, tmp_path, caplog, monkeypatch, stage,
                                                                    gather):
    run = deepspeed_run(model_dir, tmp_path / "run", stage, gather, monkeypatch)
    newest = run / "checkpoint-4"
    assert (newest / "latest").read_text() == "global_step4" and backend(newest) == "deepspeed"
    assert resume_checkpoint(run) == newest
    whole = stage < 3 or gather
    assert (newest / "model.safetensors").is_file() == whole
    if whole:
        average_checkpoints(last_checkpoints(run, 2), tmp_path / "averaged")
        assert (tmp_path / "averaged/model.safetensors").is_file()
    else:
        assert "the weights are only in shards (global_step*)" in problem(newest)
        assert last_checkpoints(run, 2) == []
    (newest / "global_step4/bf16_zero_pp_rank_0_mp_rank_00_optim_states.pt").unlink()
    with caplog.at_level(logging.WARNING):
        assert resume_checkpoint(run) == run / "checkpoint-2"
    assert "the optimizer states of some of the 1 processes are missing (found those of ranks [])" in caplog.text
    # A launch of 2 processes (each saves its rng state) must have left those of ranks 0 and 1.
    (run / "checkpoint-2/rng_state.pth").rename(run / "checkpoint-2/rng_state_0.pth")
    shutil.copy(run / "checkpoint-2/rng_state_0.pth", run / "checkpoint-2/rng_state_1.pth")
    assert "found those of ranks [0]" in problem(run / "checkpoint-2", for_resume=True)
