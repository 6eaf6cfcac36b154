"""One training run from a recipe, in named steps: the run folder, the data, the model in its trainer, training, the
final model, its test score, and what the folder keeps of the run (results.json, log.csv, curves.png)."""

import contextlib
import copy
import json
import logging
import os
import shutil
import time
from pathlib import Path

import torch
import transformers
from accelerate.utils import broadcast, broadcast_object_list
from transformers import DataCollatorForSeq2Seq, Seq2SeqTrainingArguments

from ..configuration import VanillaTransformerConfig
from ..evaluation import decoding_settings, evaluate_split, load_bleu, translate
from ..model_folder import make_portable
from ..modeling import VanillaTransformerForConditionalGeneration
from ..pipeline import Recaser
from ..results import RunResults, SplitScore
from .augment import make_augmenter
from .average import averaged_model
from .casing import learn_recaser
from .checkpoints import CheckpointError, batches_problem, last_checkpoints, resume_checkpoint, whole_weights_problem
from .plots import plot_curves
from .prepare import PreparedData, prepare_data, process_state, training_text
from .recipe import Recipe, RecipeError, load_recipe
from .run_lock import run_folder_owned
from .schedule import base_lr
from ..staging import replaced_whole
from .trainer import TrainingDiverged, TranslationTrainer, bleu_metric_fn

logger = logging.getLogger(__name__)
CASING_SAMPLE = 500_000  # training sources the source casing is learned from: a few seconds, whatever the corpus


def bf16_available() -> bool:
    """bf16 where the hardware computes it natively: an NVIDIA GPU from Ampere on (compute capability 8.0), or a CPU
    with AVX-512 BF16/AMX."""
    if torch.cuda.is_available():
        # torch.cuda.is_bf16_supported() also says yes where bf16 is emulated (V100, T4): slower than fp32 there.
        return torch.cuda.get_device_capability() >= (8, 0)
    return torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def training_arguments(recipe: Recipe, d_model: int) -> Seq2SeqTrainingArguments:
    t, g = recipe.training, recipe.generation
    precision = t.precision if t.precision != "auto" else ("bf16" if bf16_available() else "fp32")
    # The recipe's precision, fp32 included: the Trainer takes what this variable says unless fp16 or bf16 is set,
    # and transformers 4.x writes it itself, so that an fp32 run after a bf16 one in the same process trained in bf16.
    os.environ["ACCELERATE_MIXED_PRECISION"] = {"fp32": "no"}.get(precision, precision)
    return Seq2SeqTrainingArguments(
        output_dir=str(recipe.run_dir),
        per_device_train_batch_size=1,  # unused: batches come from TokenBatchSampler (training.batch_tokens)
        per_device_eval_batch_size=g.eval_batch_size,
        gradient_accumulation_steps=recipe.batch_plan().micro_batches,  # this launch's share of update_tokens
        dataloader_num_workers=t.dataloader_workers,
        dataloader_persistent_workers=t.dataloader_workers > 0,  # not started anew each epoch
        dataloader_pin_memory=t.pin_memory and torch.cuda.is_available(),
        # Every parameter takes part in every forward pass, so DDP need not search the graph for unused ones; the
        # only buffers are fixed (the sinusoid tables, a Marian model's logits bias), so none is broadcast per step.
        ddp_find_unused_parameters=False,
        ddp_broadcast_buffers=False,
        learning_rate=base_lr(d_model, t.lr_scale),
        adam_beta1=0.9,
        adam_beta2=t.adam_beta2,
        adam_epsilon=t.adam_epsilon,
        weight_decay=0.0,
        max_grad_norm=t.max_grad_norm,  # 0 disables clipping
        label_smoothing_factor=t.label_smoothing,
        num_train_epochs=t.epochs,
        max_steps=t.max_steps,
        seed=t.seed,
        bf16=precision == "bf16",
        use_cpu=not torch.cuda.is_available(),
        fp16=precision == "fp16",
        logging_steps=t.logging_steps,
        # The Trainer's default (True) logs a NaN loss as the mean of the losses before it since the last log: 0.0
        # right after a log. It also reads every micro-batch's loss on the host to decide. FiniteUpdates stops the run.
        logging_nan_inf_filter=False,
        eval_strategy="steps",
        eval_steps=t.eval_steps,
        save_strategy="steps",
        save_steps=t.save_steps,
        # No metric_for_best_model: the Trainer would then keep the best checkpoint past save_total_limit, and
        # "the last N checkpoints" would no longer be the last N.
        save_total_limit=t.save_total_limit,
        predict_with_generate=True,
        generation_num_beams=g.num_beams,
        report_to=t.trackers(),
        disable_tqdm=False,
        ddp_timeout=t.ddp_timeout,
    )


def train(recipe: Recipe, resume: bool = False, overwrite: bool = False, command: str = "train"
          ) -> RunResults | None:
    """Train, evaluate and write the run folder: model, tokenizer, results.json, log.csv, curves.png.

    Returns the results in the main process, None in the others of a multi-process launch. The main process holds
    the run folder's lock throughout: another run in the same folder is refused. A new run refuses a folder that
    holds an earlier one (its checkpoints would be averaged with the new ones, its model published with the new
    recipe), unless told to resume it or to overwrite it. Overwriting deletes the earlier run only once the recipe and
    its data have loaded, so a mistyped value or path loses nothing. The folder keeps the command that made the run
    (the demo replaces only runs of its own).
    """
    recipe.check()
    state = process_state(recipe.training.ddp_timeout)
    with run_folder_owned(recipe.run_dir) if state.is_main_process else contextlib.nullcontext():
        replaced = earlier_run_to_replace(recipe.run_dir, resume, overwrite)
        checkpoint = resume_checkpoint(recipe.run_dir, state) if resume else None  # the same on every process
        if resume:
            check_resumable(recipe)
        data_source = recipe.data_source()
        config = recipe.model.config()  # a value the model cannot take fails here, before the data path
        transformers.set_seed(recipe.training.seed)
        started = time.perf_counter()
        data = prepare_data(recipe, data_source, recipe.run_dir / "tokenizer" if resume else None,
                            config.max_position_embeddings)
        check_training_pairs(recipe, data, config.max_position_embeddings)
        take_vocabulary(config, data.tokenizer, recipe.model.overrides)
        trainer = make_trainer(recipe, config, data)
        refused = whole_weights_problem(trainer.accelerator.state, recipe.average_last)  # the backend's, known now
        if refused:
            raise RecipeError(refused)
        if checkpoint:  # the folder untouched if its checkpoints were trained on other batches
            changed = batches_problem(checkpoint, trainer.train_batches().batches.key)
            if changed:
                raise CheckpointError(changed)
        open_run_folder(recipe, data, replaced, command)
        try:
            trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
        except TrainingDiverged:
            if trainer.is_world_process_zero():
                write_log_csv(trainer.state.log_history, recipe.run_dir / "log.csv")  # the losses up to it
            raise
        train_seconds = time.perf_counter() - started
        # Every process takes part in the final save (a collective under FSDP and ZeRO-3) and in the test
        # translation; the main process writes the run folder.
        model, averaged = save_final_model(trainer, recipe, source_casing(recipe, data) if state.is_main_process
                                           else None)
        test = score_test_split(recipe, model, data, state) if recipe.data.test else None
        if not trainer.is_world_process_zero():
            return None
        results = run_results(recipe, trainer, data, model, averaged, train_seconds)
        results.test = test
        write_run_record(recipe, results, trainer.state.log_history)
        return results


MADE_BY = "made-by.txt"  # the command that made the run in a folder: `train` or `demo`


def earlier_run(run_dir: Path) -> list[Path]:
    """What an earlier run left in the folder: checkpoints, batch logs, and its results."""
    patterns = ["checkpoint-*", "batches-rank*.jsonl", "data-rank*.json", "model", "tokenizer", "results.json",
                "log.csv", "curves.png", "*.hyp.*", "runs", MADE_BY]
    return sorted(path for pattern in patterns for path in run_dir.glob(pattern))


def made_by(run_dir: Path) -> str | None:
    """The command that made the run in the folder (None for a run of an earlier version, or none)."""
    path = run_dir / MADE_BY
    return path.read_text(encoding="utf-8").strip() if path.is_file() else None


def earlier_run_to_replace(run_dir: Path, resume: bool, overwrite: bool) -> list[Path]:
    """What a new run will delete of an earlier one in its folder: nothing when it resumes it, all of it when told
    to overwrite it; a FileExistsError when it was told neither."""
    earlier = earlier_run(run_dir) if run_dir.is_dir() else []
    if earlier and not resume and not overwrite:
        raise FileExistsError(f"{run_dir} holds an earlier run ({earlier[0].name}, ...): pass --resume to continue "
                              "it, --overwrite to replace it, or choose another --output-dir")
    return [] if resume else earlier


def check_resumable(recipe: Recipe) -> None:
    """A RecipeError naming each key that a resume may not change from the run's recipe.json (the data, tokenizer,
    model, batches, loss or optimiser that made its checkpoints); what it may change is applied, and recorded when
    the folder opens."""
    recorded = recipe.run_dir / "recipe.json"
    if not recorded.is_file():
        logger.warning("%s: missing, so the recipe cannot be compared with the run's", recorded)
        return
    refused = recipe.changes_refused_on_resume(load_recipe(recorded))
    if refused:
        raise RecipeError(f"--resume: the recipe differs from the run's ({recorded}) in what made its checkpoints: "
                          f"{'; '.join(refused)}. Resume with the run's values, or start a new run (--overwrite, or "
                          "another --output-dir); a resume may change only how long the run trains (epochs, "
                          "max_steps, max_minutes), how often it logs, evaluates and saves, its evaluation and "
                          "decoding, and average_last")


def check_training_pairs(recipe: Recipe, data: PreparedData, positions: int) -> None:
    """A ValueError, before the run folder is touched, when cleaning left no training pair, naming its figures and
    the settings behind them."""
    if len(data.train_set):
        return
    d, dropped = recipe.data, data.cleaning
    limit = min(length for length in (d.max_length, positions) if length is not None)
    raise ValueError(
        f"no training pairs are left after cleaning {d.source} ({d.train}): {dropped.get('too_long', 0)} dropped as "
        f"longer than {limit} tokens on a side (data.max_length={d.max_length}, the model's "
        f"max_position_embeddings={positions}), {dropped.get('bad_ratio', 0)} for a length ratio above "
        f"data.max_ratio={d.max_ratio}; raise those settings (null turns them off)")


def open_run_folder(recipe: Recipe, data: PreparedData, replaced: list[Path], command: str) -> None:
    """The main process deletes the earlier run being replaced (the new one's data has loaded) and writes the recipe,
    the tokenizer and the command that made the run; then every process writes how its data path went."""
    run_dir = recipe.run_dir
    state = process_state(recipe.training.ddp_timeout)
    if state.is_main_process:
        for path in replaced:
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "recipe.json").write_text(json.dumps(recipe.to_dict(), indent=2), encoding="utf-8")
        (run_dir / MADE_BY).write_text(command + "\n", encoding="utf-8")
        data.tokenizer.save_pretrained(run_dir / "tokenizer")
    state.wait_for_everyone()  # the others write in the folder once the earlier run is gone
    run_dir.mkdir(parents=True, exist_ok=True)  # on a machine that does not share the main one's disk too
    data.save_phases(run_dir / f"data-rank{state.process_index}.json")
    logger.info("data path:\n%s", data.table())


def take_vocabulary(config: VanillaTransformerConfig, tokenizer, overrides: dict) -> None:
    """Give the config the tokenizer's vocabulary size and special-token ids, so that the two cannot drift apart;
    what the recipe's overrides set stays."""
    vocabulary = VanillaTransformerConfig.tokenizer_fields(tokenizer)
    config.update({name: value for name, value in vocabulary.items() if name not in overrides})
    config.check()


def make_trainer(recipe: Recipe, config: VanillaTransformerConfig, data: PreparedData) -> TranslationTrainer:
    """A new model of the config, with the recipe's decoding, in a TranslationTrainer over the prepared data."""
    tokenizer, t, g = data.tokenizer, recipe.training, recipe.generation
    tokenizer.model_max_length = config.max_position_embeddings  # what truncation=True cuts to
    model = VanillaTransformerForConditionalGeneration(config)
    model.generation_config.update(**decoding_settings(g.num_beams, g.length_penalty),
                                   max_length_offset=g.max_length_offset)
    return TranslationTrainer(
        model=model,
        args=training_arguments(recipe, config.d_model),
        train_dataset=data.train_set,
        eval_dataset=data.validation_set,
        data_collator=DataCollatorForSeq2Seq(tokenizer, model=model),
        processing_class=tokenizer,
        compute_metrics=bleu_metric_fn(tokenizer, load_bleu()),
        micro_batch_tokens=t.batch_tokens,
        warmup_steps=t.warmup_steps,
        schedule=t.schedule,
        final_lr_fraction=t.final_lr_fraction,
        max_minutes=t.max_minutes,
        batch_log=recipe.run_dir if t.log_batches else None,
        augmenter=make_augmenter(recipe.data.augment, data.raw[recipe.data.train], data.train_set,
                                 (recipe.data.src, recipe.data.tgt), tokenizer.backend_tokenizer, t.seed,
                                 config.max_position_embeddings),
    )


def source_casing(recipe: Recipe, data: PreparedData) -> Recaser:
    """The usual casing of the source language's words, from (a sample of) the training sources."""
    return learn_recaser(training_text(data.raw[recipe.data.train], (recipe.data.src,), CASING_SAMPLE,
                                       recipe.training.seed))


def save_final_model(trainer: TranslationTrainer, recipe: Recipe, recaser: Recaser | None = None
                     ) -> tuple[VanillaTransformerForConditionalGeneration, list[str]]:
    """run_dir/model: the average of the last checkpoints (average_last) or the trained weights, with the tokenizer
    and the source casing (recaser), made portable, written whole or not at all (a full disk is an OSError naming it,
    with no half-made folder).

    Every process takes part: gathering the trained weights is a collective under FSDP and ZeRO-3, and the main
    process's failure is raised in all of them. Returns the final model on every process's device, and (in the main
    process) the names of the checkpoints averaged.
    """
    accelerator = trainer.accelerator
    weights = accelerator.get_state_dict(trainer.model_wrapped)  # whole on the main process
    model, averaged = None, []
    with failure_shared(accelerator.state):
        if accelerator.is_main_process:
            checkpoints = last_checkpoints(recipe.run_dir, recipe.average_last) if recipe.average_last > 1 else []
            averaged = [p.name for p in checkpoints] if len(checkpoints) > 1 else []
            model = averaged_model(checkpoints) if averaged else plain_model(trainer.model, weights)
            with replaced_whole(recipe.run_dir / "model") as staging:
                model.save_pretrained(staging)
                trainer.processing_class.save_pretrained(staging)
                make_portable(staging, (recipe.data.src, recipe.data.tgt))
                if recaser is not None:
                    recaser.save(staging)
    return on_every_process(model, trainer.model, accelerator), averaged


def plain_model(trained, weights: dict | None) -> VanillaTransformerForConditionalGeneration:
    """A model of the trained one's config and decoding, holding the weights if given: the trained model itself is
    wrapped or sharded by the backend (FSDP2 even changes its class, which save_pretrained would name in
    config.json)."""
    model = VanillaTransformerForConditionalGeneration(trained.config)
    model.generation_config = copy.deepcopy(trained.generation_config)
    if weights is not None:
        model.load_state_dict(weights)
    return model


def on_every_process(model, trained, accelerator) -> VanillaTransformerForConditionalGeneration:
    """The main process's model on every process's device: the others receive its weights."""
    if accelerator.num_processes == 1:
        return model.to(accelerator.device)
    dtype = broadcast_object_list([model.dtype if model is not None else None])[0]
    if model is None:
        model = plain_model(trained, None).to(dtype)
    model.to(accelerator.device)
    broadcast(list(model.state_dict().values()), from_process=0)
    return model


@contextlib.contextmanager
def failure_shared(state):
    """The block's failure in the main process is raised in every process of the launch, rather than leaving the
    others waiting for it at the next collective until training.ddp_timeout."""
    failure = None
    try:
        yield
    except Exception as error:
        failure = error
    told = [f"{type(failure).__name__}: {failure}" if failure else None]
    if state.num_processes > 1:
        broadcast_object_list(told)
    if failure is not None:
        raise failure
    if told[0]:
        raise RuntimeError(f"the main process failed to save the final model: {told[0]}")


def run_results(recipe: Recipe, trainer: TranslationTrainer, data: PreparedData, model, averaged: list[str],
                train_seconds: float) -> RunResults:
    """What the run measured, from its data, the final model and the trainer's state (the test score comes after)."""
    validation_bleu = [{"step": e["step"], "bleu": e["eval_bleu"]} for e in trainer.state.log_history
                       if "eval_bleu" in e]
    best = max(validation_bleu, key=lambda e: e["bleu"], default=None)
    return RunResults(
        recipe=recipe.name, src=recipe.data.src, tgt=recipe.data.tgt,
        parameters=sum(p.numel() for p in model.parameters()),
        train_pairs=len(data.train_set), cleaning=data.cleaning,
        padding_fraction=round(trainer.batch_sampler.padding_fraction(), 4),
        steps=trainer.state.global_step, train_seconds=round(train_seconds, 1),
        machine=f"{torch.get_num_threads()} threads, torch {torch.__version__}, "
                f"transformers {transformers.__version__}",
        averaged_checkpoints=averaged, validation_bleu=validation_bleu,
        best_validation_step=best["step"] if best else None, best_validation_bleu=best["bleu"] if best else None,
    )


def score_test_split(recipe: Recipe, model, data: PreparedData, state) -> SplitScore | None:
    """The final model's sacreBLEU and chrF on the recipe's test split (its first data.test_size pairs), decoded as
    the recipe says, with the hypotheses written in the run folder.

    Every process of the launch translates a share of the batches on its own device (state: its PartialState); the
    main process scores the translations gathered, the others return None.
    """
    d, g = recipe.data, recipe.generation
    test = data.raw[d.test]
    if d.test_size:
        test = test.select(range(min(d.test_size, len(test))))
    sources = [pair[d.src] for pair in test["translation"]]
    hypotheses = translate(model, data.tokenizer, sources, batch_size=g.eval_batch_size,
                           progress=state.is_main_process, state=state,
                           **decoding_settings(g.num_beams, g.length_penalty))
    if not state.is_main_process:
        return None
    # Already translated, by every process: the scoring and the hypotheses file are the main process's.
    return evaluate_split(lambda lines: hypotheses, test, d.test, (d.src, d.tgt), recipe.run_dir, g.num_beams,
                          g.length_penalty)


def write_run_record(recipe: Recipe, results: RunResults, log_history: list[dict]) -> None:
    """What the run folder keeps of the run beside the model: results.json, log.csv and curves.png."""
    results.save(recipe.run_dir / "results.json")
    write_log_csv(log_history, recipe.run_dir / "log.csv")
    d = recipe.data
    plot_curves(log_history, recipe.run_dir / "curves.png", title=f"{recipe.name} ({d.src}->{d.tgt})")


def write_log_csv(log_history: list[dict], path: Path) -> None:
    columns = ["step", "epoch", "loss", "learning_rate", "grad_norm", "tokens_per_s", "update_tokens",
               "padding_fraction", "eval_loss", "eval_bleu", "eval_chrf"]
    lines = [",".join(columns)]
    for entry in log_history:
        lines.append(",".join(str(entry.get(c, "")) for c in columns))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
