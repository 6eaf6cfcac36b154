"""transformers' Seq2SeqTrainer, extended through its own hooks: token batches, the paper's schedule and its
label-smoothed loss, a stop at the first non-finite update, checkpoints whose failed writes name the folder, the
run's own logging, evaluation and save steps on a resume, throughput."""

import dataclasses
import json
import logging
import math
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from accelerate.utils import broadcast_object_list
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm
from transformers import DataCollatorForSeq2Seq, Seq2SeqTrainer, TrainerCallback
from transformers.trainer_callback import ExportableState, ProgressCallback

from ..modeling_kernels import LabelSmoothedCrossEntropy
from .augment import EXAMPLE, Augmenter
from .batching import PackedBatchSampler, token_batches
from .checkpoints import is_fsdp2_full_state_dict, load_fsdp2_full_weights
from .recipe import BatchPlan
from .schedule import budget_scheduler, noam_scheduler
from ..staging import WRITE_ERRORS, write_failure

logger = logging.getLogger(__name__)


class TrainingDiverged(ValueError):
    """An update whose gradients are not finite numbers: the message names the update and what to lower."""


class TranslationTrainer(Seq2SeqTrainer):
    """Seq2SeqTrainer with fairseq-style token batches, the Noam schedule, the label-smoothed loss
    (args.label_smoothing_factor), a stop at the first non-finite update, and the tokens of an update, tokens/s and
    padding of all processes together in the logs."""

    def __init__(self, *args, micro_batch_tokens: int, warmup_steps: int, batch_log: Path | None = None,
                 augmenter: "Augmenter | None" = None,
                 max_minutes: float | None = None, schedule: str = "noam", final_lr_fraction: float = 0.0,
                 **kwargs):
        super().__init__(*args, **kwargs)
        # The loss is the trainer's, not the model's: Trainer's compute_loss hands compute_loss_func the outputs, the
        # labels and the target tokens of the whole update; its generating evaluation scores with label_smoother.
        self.compute_loss_func = self.label_smoother = LabelSmoothedLoss(self.args.label_smoothing_factor)
        self.model_accepts_loss_kwargs = False  # the model is not handed num_items_in_batch: the loss uses it
        self.micro_batch_tokens = micro_batch_tokens
        self.warmup_steps, self.schedule, self.final_lr_fraction = warmup_steps, schedule, final_lr_fraction
        self.batch_log = batch_log
        self.augmenter = augmenter  # data.augment (training/augment.py): None leaves the batches as they are
        self.tokens_since_log = self.padded_since_log = self.batch_tokens_since_log = 0
        self.log_clock = self.log_step = None
        self.batch_sampler: PackedBatchSampler | None = None  # train_batches() makes it once
        self.batches_record = TokenBatchesRecord()
        self.add_callback(self.batches_record)
        self.add_callback(SamplerEpoch(self))
        self.time_budget = TimeBudget(max_minutes)
        self.add_callback(self.time_budget)
        if max_minutes and any(isinstance(cb, ProgressCallback) for cb in self.callback_handler.callbacks):
            self.callback_handler.remove_callback(ProgressCallback)
            self.add_callback(BudgetProgress(self.time_budget))
        self.add_callback(FiniteUpdates(self))
        self.add_callback(RunSteps())

    def train_batches(self) -> PackedBatchSampler:
        """The training batches, read from their cache or built (once per trainer), recorded for the checkpoints."""
        if self.batch_sampler is None:
            micro_batch = self.micro_batch_tokens
            packed = self.augmenter.packing_tokens(micro_batch) if self.augmenter else micro_batch
            self.batch_sampler = token_batches(self.train_dataset, packed, self.args.seed)
            self.batches_record.key = self.batch_sampler.batches.key
        return self.batch_sampler

    def get_train_dataloader(self) -> DataLoader:
        dataset = self.train_dataset
        self.train_batches()
        if self.is_world_process_zero():
            logger.info("%d training pairs in %d batches of <= %d tokens, %.1f%% padding", len(dataset),
                        len(self.batch_sampler), self.micro_batch_tokens, 100 * self.batch_sampler.padding_fraction())
            logger.info("%s", self.batch_plan())
        collator = self.data_collator
        if self.batch_log is not None:
            dataset = NumberedRows(dataset, "idx")
        if self.augmenter is not None:  # the sampler above packs the un-augmented pairs; the collator keeps its cap
            dataset, collator = NumberedRows(dataset, EXAMPLE), self.augmenter.collator(collator, self.micro_batch_tokens)
        if self.batch_log is not None:
            collator = BatchLoggingCollator(collator, self.batch_log, self.args.process_index)
        loader = DataLoader(dataset, batch_sampler=self.batch_sampler, collate_fn=collator,
                            num_workers=self.args.dataloader_num_workers, pin_memory=self.args.dataloader_pin_memory,
                            persistent_workers=self.args.dataloader_persistent_workers)
        # accelerate shards the batches across processes: disjoint batches, equal counts on every rank.
        return self.accelerator.prepare(loader)

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        if self.lr_scheduler is None and self.schedule == "budget":
            # Spent: the share of the minutes or of the updates, whichever ends the run first.
            def progress(step: int) -> float:
                return max(step / num_training_steps, self.time_budget.progress())

            self.lr_scheduler = budget_scheduler(optimizer or self.optimizer, self.warmup_steps, progress,
                                                 self.final_lr_fraction)
        elif self.lr_scheduler is None:
            self.lr_scheduler = noam_scheduler(optimizer or self.optimizer, self.warmup_steps)
        return self.lr_scheduler

    def _save_checkpoint(self, model, trial):
        # The one hook around the whole checkpoint. A full disk fails in safetensors, torch.save or json with three
        # kinds of errors: one OSError naming the checkpoint instead, and the half-written folder removed (a resume
        # would skip it; it would only keep the disk full).
        folder = Path(self.args.output_dir) / f"checkpoint-{self.state.global_step}"
        try:
            super()._save_checkpoint(model, trial)
        except WRITE_ERRORS as error:
            if self.args.should_save:
                shutil.rmtree(folder, ignore_errors=True)
            raise write_failure(folder, error) from error

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        # The one hook that loads a checkpoint's weights on resume: an FSDP2 full state dict is loaded without the
        # tied embedding's aliases, which accelerate's loader fails on in torch 2.13 (see load_fsdp2_full_weights).
        if self.is_fsdp_enabled and is_fsdp2_full_state_dict(self.accelerator.state):
            return load_fsdp2_full_weights(self.accelerator.state, model or self.model, resume_from_checkpoint)
        return super()._load_from_checkpoint(resume_from_checkpoint, model)

    def batch_plan(self) -> BatchPlan:
        """What the processes train on per update: the plan of the recipe's training.update_tokens, as run."""
        return BatchPlan(self.args.world_size, self.args.gradient_accumulation_steps, self.micro_batch_tokens)

    def training_step(self, model, inputs, num_items_in_batch=None):
        labels, input_ids = inputs["labels"], inputs["input_ids"]
        if self.log_step is None:  # the first micro-batch of this train(), a resumed one's too
            self.log_clock, self.log_step = time.perf_counter(), self.state.global_step
        # Counted on the device, read at the next log: no host sync per micro-batch.
        self.tokens_since_log += (labels != -100).sum() + inputs["attention_mask"].sum()
        self.padded_since_log += labels.numel() + input_ids.numel()
        self.batch_tokens_since_log += max(labels.numel(), input_ids.numel())  # pairs x longest side, as batched
        return super().training_step(model, inputs, num_items_in_batch)

    def log(self, logs: dict, *args, **kwargs) -> None:
        # Every process logs the training loss (the Trainer gathers it first): the counts are summed over them here,
        # in one reduction per log.
        if "loss" in logs and self.log_step is not None:
            seconds = time.perf_counter() - self.log_clock
            counts = torch.stack([torch.as_tensor(count, device=self.args.device) for count in (
                self.tokens_since_log, self.padded_since_log, self.batch_tokens_since_log)])
            tokens, padded, batch_tokens = self.accelerator.reduce(counts, reduction="sum").tolist()
            if padded:
                logs["tokens_per_s"] = round(tokens / seconds, 1)
                logs["padding_fraction"] = round(1 - tokens / padded, 4)
                # The padded tokens of an update as the recipe counts them, to compare with the batch plan.
                logs["update_tokens"] = round(batch_tokens / (self.state.global_step - self.log_step), 1)
            self.tokens_since_log = self.padded_since_log = self.batch_tokens_since_log = 0
            self.log_clock, self.log_step = time.perf_counter(), self.state.global_step
        super().log(logs, *args, **kwargs)


class LabelSmoothedLoss:
    """Cross-entropy against label-smoothed targets (Section 5.4) through the fused kernel, summed over the target
    tokens and divided by those of the whole update (num_items_in_batch) or, without it, by the batch's own; as
    fairseq, batches of different sizes are weighted by their tokens."""

    def __init__(self, epsilon: float):
        self.epsilon = epsilon

    def __call__(self, outputs, labels, num_items_in_batch=None):
        logits = outputs["logits"]
        labels = labels.to(logits.device)  # a model dispatched over devices (device_map) ends on the head's
        loss = LabelSmoothedCrossEntropy.apply(logits.flatten(0, 1), labels.flatten(), self.epsilon)
        # `is None`, not `or`: transformers passes a device tensor, whose truth would sync on every micro-batch.
        tokens = num_items_in_batch if num_items_in_batch is not None else (labels != -100).sum()
        return loss / tokens


class TokenBatchesRecord(TrainerCallback, ExportableState):
    """Records in each checkpoint's trainer_state.json the fingerprint of the batches it was trained on and what
    they are made of (batching.BatchesKey), which a resume compares with its own (checkpoints.batches_problem)."""

    def __init__(self):
        self.key = None  # the trainer's, once it has its batches

    def on_train_begin(self, args, state, control, **kwargs):
        # The Trainer's save updates an entry of the state it resumed: a checkpoint from before this record has none.
        state.stateful_callbacks.setdefault(type(self).__name__, self.state())

    def state(self) -> dict:
        key = self.key
        return {"args": {}, "attributes": {"fingerprint": key.fingerprint() if key else None,
                                           "made_of": dataclasses.asdict(key) if key else None}}


class SamplerEpoch(TrainerCallback):
    """Gives the token-batch sampler the epoch that begins, from the trainer's state.

    The Trainer's own set_epoch does not reach the sampler in a resumed multi-process run: accelerate's
    SkipBatchSampler and BatchSamplerShard sit between, and the resumed epoch would replay epoch 0's order.
    """

    def __init__(self, trainer: TranslationTrainer):
        self.trainer = trainer

    def on_epoch_begin(self, args, state, control, **kwargs):
        # state.epoch is epochs done as a float (1.5 when resuming halfway through the second epoch).
        epoch = int(state.epoch + 1e-6) if state.epoch else 0
        self.trainer.batch_sampler.set_epoch(epoch)
        if self.trainer.augmenter is not None:  # its draws are per epoch too
            self.trainer.augmenter.set_epoch(epoch)


class TimeBudget(TrainerCallback, ExportableState):
    """Says what the run will take once its first updates are timed, and with max_minutes ends training on time.

    The run ends before the update that would pass max_minutes of training (evaluations included, the minutes
    before a resume too: they are kept in the checkpoints), with a checkpoint and an evaluation there, so checkpoint
    averaging and the results see the last update. The Noam schedule needs no planned length, so a run cut short
    has had the same learning rates as a longer one up to there.
    """

    forecast_after = 20  # updates timed before the forecast (the first ones include start-up costs)

    def __init__(self, max_minutes: float | None = None):
        self.max_minutes = max_minutes
        self.seconds_before = 0.0  # training time of the run before it was resumed
        self.clock = self.seconds_per_update = None
        self.first_step = 0

    def on_train_begin(self, args, state, control, **kwargs):
        # A resumed run's state holds what state() recorded in the checkpoint.
        recorded = state.stateful_callbacks.get(type(self).__name__) or {}
        self.seconds_before = recorded.get("attributes", {}).get("seconds_before", 0.0)
        self.clock, self.first_step = time.perf_counter(), state.global_step

    def seconds(self) -> float:
        """Training time so far, the run's before a resume included."""
        return self.seconds_before + (time.perf_counter() - self.clock if self.clock is not None else 0.0)

    def on_step_end(self, args, state, control, **kwargs):
        done = state.global_step - self.first_step
        self.seconds_per_update = (time.perf_counter() - self.clock) / done  # the mean since (re)starting
        if done == self.forecast_after:
            self.log_forecast(state)
        if self.max_minutes and not control.should_training_stop and self.out_of_time(args):
            logger.info("training.max_minutes=%g reached after %d updates: training ends here", self.max_minutes,
                        state.global_step)
            control.should_training_stop = control.should_save = control.should_evaluate = True
        return control

    def progress(self) -> float:
        """The share of max_minutes spent (0 without a budget)."""
        return self.seconds() / (self.max_minutes * 60) if self.max_minutes else 0.0

    def out_of_time(self, args) -> bool:
        """Whether the next update would end past max_minutes, as the main process's clock says, on every process
        (processes that stopped after different updates would wait for each other forever)."""
        late = self.seconds() + self.seconds_per_update > self.max_minutes * 60
        if args.world_size > 1:
            late = broadcast_object_list([late], from_process=0)[0]
        return late

    def log_forecast(self, state) -> None:
        per_update, left = self.seconds_per_update, state.max_steps - state.global_step
        minutes = (self.seconds() + left * per_update) / 60
        planned = f"the recipe's {state.max_steps:,} updates take about {minutes:.0f} min"
        if self.max_minutes:
            reachable = state.global_step + int((self.max_minutes * 60 - self.seconds()) / per_update)
            if reachable < state.max_steps:
                planned += (f"; training.max_minutes={self.max_minutes:g} ends it after about {reachable:,} "
                            f"({100 * reachable / state.max_steps:.0f}%, fewer for the evaluations)")
        logger.info("%d updates in %.1f s (%.2f s each): %s, plus the evaluations", self.forecast_after,
                    self.forecast_after * per_update, per_update, planned)

    def state(self) -> dict:
        # Saved in each checkpoint's trainer_state.json; the budget itself comes from the recipe, also on resume.
        return {"args": {"max_minutes": self.max_minutes}, "attributes": {"seconds_before": round(self.seconds(), 1)}}


class BudgetProgress(ProgressCallback):
    """The training bar of a run on a time budget: it fills with the budget's seconds, not with updates that the
    budget may never reach, so its ETA is the budget's end; the update count is beside it."""

    def __init__(self, budget: TimeBudget):
        super().__init__()
        self.budget = budget

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self.training_bar = tqdm(total=round(self.budget.max_minutes * 60), unit="s", dynamic_ncols=True,
                                     bar_format="training {percentage:3.0f}%|{bar}| {n:.0f}/{total} s of "
                                                "training.max_minutes [{elapsed}<{remaining}{postfix}]")

    def on_step_end(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            bar = self.training_bar
            bar.update(min(self.budget.seconds(), bar.total) - bar.n)  # a resumed run starts at its minutes so far
            bar.set_postfix_str(f"update {state.global_step:,}")


class FiniteUpdates(TrainerCallback):
    """Stops training at the first update whose gradients are not finite (a NaN or infinite loss makes them so),
    before the optimizer takes it: no NaN weight is saved, averaged or trained on. Under fp16, whose loss scaler
    skips such an update itself and halves its scale, the run stops after `scaler_skips` skipped in a row.

    The check reads one number from the device per update, none per micro-batch. Every process of a launch sees the
    same all-reduced gradients, so all of them stop at the same update.
    """

    scaler_skips = 16  # the fp16 scaler's initial 2**16 halved to 1: past that, the loss itself is not finite

    def __init__(self, trainer: TranslationTrainer):
        self.trainer = trainer
        self.skipped_in_a_row = 0

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        if self.trainer.accelerator.scaler is not None:
            return  # fp16: the scaler checks the (scaled) gradients and skips the update; on_step_end counts it
        gradients = [p.grad for p in model.parameters() if p.grad is not None]
        norm = torch.nn.utils.get_total_norm(gradients).item() if gradients else 0.0
        if not math.isfinite(norm):
            self.stop(state, state.global_step + 1, f"its gradient norm is {norm}", norm)

    def on_step_end(self, args, state, control, **kwargs):
        if self.trainer.accelerator.scaler is None:
            return
        skipped = self.trainer.accelerator.optimizer_step_was_skipped
        self.skipped_in_a_row = self.skipped_in_a_row + 1 if skipped else 0
        if self.skipped_in_a_row >= self.scaler_skips:
            self.stop(state, state.global_step, f"the fp16 loss scaler skipped the last {self.skipped_in_a_row} "
                      "updates, whose gradients were not finite", math.nan)

    def stop(self, state, update: int, what: str, grad_norm: float) -> None:
        """Record the update in the log history (log.csv shows it) and raise TrainingDiverged."""
        state.log_history.append({"step": update, "epoch": state.epoch, "grad_norm": grad_norm})
        learning_rate = self.trainer.lr_scheduler.get_last_lr()[0]
        raise TrainingDiverged(
            f"training diverged at update {update} (learning rate {learning_rate:.3g}): {what}. Lower the learning "
            "rate (training.lr_scale), raise training.warmup_steps or clip the gradients (training.max_grad_norm), "
            "and start again with --overwrite; the run's checkpoints hold the weights of the updates before it")


class RunSteps(TrainerCallback):
    """On a resume, the logging, evaluation and save steps of this run's arguments rather than those in the
    checkpoint's state, which transformers keeps (it only warns that they differ)."""

    def on_train_begin(self, args, state, control, **kwargs):
        state.compute_steps(args, state.max_steps)


class NumberedRows(Dataset):
    """The training pairs, each with its row number in `field`: for the batch log ("idx") and the augmenting collator
    (augment.EXAMPLE), which take it out again. A wrapper, so that the rows stay those of the cached table."""

    def __init__(self, dataset, field: str):
        self.dataset, self.field = dataset, field

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, row: int) -> dict:
        return {**self.dataset[row], self.field: row}


class BatchLoggingCollator:
    """Wraps a collator to append each batch's example indices to a JSON-lines file, one file per process."""

    def __init__(self, collator: DataCollatorForSeq2Seq, folder: Path, rank: int):
        self.collator = collator
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / f"batches-rank{rank}.jsonl"

    def __call__(self, features):
        indices = [f.pop("idx") for f in features]
        with self.path.open("a") as f:
            f.write(json.dumps(indices) + "\n")
        return self.collator(features)


def bleu_metric_fn(tokenizer, metric):
    """compute_metrics for predict_with_generate: corpus BLEU and chrF of the decoded generations."""

    def compute(eval_prediction):
        predictions, labels = eval_prediction
        predictions = np.where(predictions < 0, tokenizer.pad_token_id, predictions)
        labels = np.where(labels < 0, tokenizer.pad_token_id, labels)
        hypotheses = tokenizer.batch_decode(predictions, skip_special_tokens=True)
        references = tokenizer.batch_decode(labels, skip_special_tokens=True)
        result = metric.compute(predictions=hypotheses, references=references)
        return {"bleu": result["score"], "chrf": result["chrf"]}

    return compute
