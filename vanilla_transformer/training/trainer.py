"""transformers' Seq2SeqTrainer, extended through its own hooks: token batches, the paper's schedule, throughput."""

import json
import logging
import time
from pathlib import Path

import numpy as np
from torch.utils.data import DataLoader
from transformers import DataCollatorForSeq2Seq, Seq2SeqTrainer, TrainerCallback

from .batching import TokenBatchSampler
from .data import token_lengths
from .schedule import noam_scheduler

logger = logging.getLogger(__name__)


class TranslationTrainer(Seq2SeqTrainer):
    """Seq2SeqTrainer with fairseq-style token batches, the Noam schedule, and tokens/s and padding in the logs."""

    def __init__(self, *args, max_tokens: int, warmup_steps: int, batch_log: Path | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.max_tokens = max_tokens
        self.warmup_steps = warmup_steps
        self.batch_log = batch_log
        self.tokens_since_log = self.padded_since_log = 0
        self.log_clock = time.perf_counter()
        self.add_callback(SamplerEpoch(self))

    def get_train_dataloader(self) -> DataLoader:
        dataset = self.train_dataset
        self.batch_sampler = TokenBatchSampler(
            token_lengths(dataset, "input_ids"), token_lengths(dataset, "labels"), max_tokens=self.max_tokens,
            seed=self.args.seed,
        )
        logger.info("%d training pairs in %d batches of <= %d tokens, %.1f%% padding", len(dataset),
                    len(self.batch_sampler), self.max_tokens, 100 * self.batch_sampler.padding_fraction())
        collator = self.data_collator
        if self.batch_log is not None:
            collator = BatchLoggingCollator(collator, self.batch_log, self.args.process_index)
        loader = DataLoader(dataset, batch_sampler=self.batch_sampler, collate_fn=collator,
                            num_workers=self.args.dataloader_num_workers)
        # accelerate shards the batches across processes: disjoint batches, equal counts on every rank.
        return self.accelerator.prepare(loader)

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        if self.lr_scheduler is None:
            self.lr_scheduler = noam_scheduler(optimizer or self.optimizer, self.warmup_steps)
        return self.lr_scheduler

    def training_step(self, model, inputs, num_items_in_batch=None):
        labels = inputs["labels"]
        self.tokens_since_log += int((labels != -100).sum()) + int(inputs["attention_mask"].sum())
        self.padded_since_log += labels.numel() + inputs["input_ids"].numel()
        return super().training_step(model, inputs, num_items_in_batch)

    def log(self, logs: dict, *args, **kwargs) -> None:
        if "loss" in logs and self.padded_since_log:
            seconds = time.perf_counter() - self.log_clock
            logs["tokens_per_s"] = round(self.tokens_since_log / seconds, 1)
            logs["padding_fraction"] = round(1 - self.tokens_since_log / self.padded_since_log, 4)
            self.tokens_since_log = self.padded_since_log = 0
            self.log_clock = time.perf_counter()
        super().log(logs, *args, **kwargs)


class SamplerEpoch(TrainerCallback):
    """Gives the token-batch sampler the epoch that begins, from the trainer's state.

    The Trainer's own set_epoch does not reach the sampler in a resumed multi-process run: accelerate's
    SkipBatchSampler and BatchSamplerShard sit between, and the resumed epoch would replay epoch 0's order.
    """

    def __init__(self, trainer: TranslationTrainer):
        self.trainer = trainer

    def on_epoch_begin(self, args, state, control, **kwargs):
        # state.epoch is epochs done as a float (1.5 when resuming halfway through the second epoch).
        self.trainer.batch_sampler.set_epoch(int(state.epoch + 1e-6) if state.epoch else 0)


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
