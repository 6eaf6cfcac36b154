"""One training run from a recipe: data, tokenizer, model, Seq2SeqTrainer, test BLEU, and the run folder."""

import json
import logging
import shutil
import time
from pathlib import Path

import torch
import transformers
from transformers import DataCollatorForSeq2Seq, Seq2SeqTrainingArguments

from ..configuration import VanillaTransformerConfig
from ..evaluation import decoding_settings, evaluate_split, load_bleu, translate
from ..hub.card import render_card
from ..hub.export import make_portable
from ..modeling import VanillaTransformerForConditionalGeneration
from .average import average_checkpoints
from .checkpoints import last_checkpoints, resume_checkpoint
from .prepare import prepare_data, process_state
from .plots import plot_curves
from .recipe import Recipe
from .results import RunResults
from .schedule import base_lr
from .trainer import TranslationTrainer, bleu_metric_fn

logger = logging.getLogger(__name__)


def bf16_available() -> bool:
    """bf16 where the hardware computes it natively: a GPU that supports it, or a CPU with AVX-512 BF16/AMX."""
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    return torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def training_arguments(recipe: Recipe, d_model: int) -> Seq2SeqTrainingArguments:
    t, g = recipe.training, recipe.generation
    precision = t.precision if t.precision != "auto" else ("bf16" if bf16_available() else "fp32")
    return Seq2SeqTrainingArguments(
        output_dir=str(recipe.run_dir),
        per_device_train_batch_size=1,  # unused: batches come from TokenBatchSampler (max_tokens)
        per_device_eval_batch_size=g.eval_batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps * t.micro_batches,
        learning_rate=base_lr(d_model, t.lr_scale),
        adam_beta1=0.9,
        adam_beta2=t.adam_beta2,
        adam_epsilon=t.adam_epsilon,
        weight_decay=0.0,
        max_grad_norm=t.max_grad_norm,  # 0 disables clipping
        num_train_epochs=t.epochs,
        max_steps=t.max_steps,
        seed=t.seed,
        bf16=precision == "bf16",
        use_cpu=not torch.cuda.is_available(),
        fp16=precision == "fp16",
        logging_steps=t.logging_steps,
        eval_strategy="steps",
        eval_steps=t.eval_steps,
        save_strategy="steps",
        save_steps=t.save_steps,
        # No metric_for_best_model: the Trainer would then keep the best checkpoint past save_total_limit, and
        # "the last N checkpoints" would no longer be the last N.
        save_total_limit=t.save_total_limit,
        predict_with_generate=True,
        generation_num_beams=g.num_beams,
        remove_unused_columns=not t.log_batches,
        report_to=[],
        disable_tqdm=False,
        ddp_timeout=t.ddp_timeout,
    )


def earlier_run(run_dir: Path) -> list[Path]:
    """What an earlier run left in the folder: checkpoints, batch logs, and its results."""
    patterns = ["checkpoint-*", "batches-rank*.jsonl", "data-rank*.json", "model", "tokenizer", "results.json",
                "log.csv", "curves.png", "*.hyp.*"]
    return sorted(path for pattern in patterns for path in run_dir.glob(pattern))


def train(recipe: Recipe, resume: bool = False, overwrite: bool = False) -> RunResults | None:
    """Train, evaluate and write the run folder: model, tokenizer, results.json, log.csv, curves.png.

    A new run refuses a folder that holds an earlier one (its checkpoints would be averaged with the new ones, its
    model published with the new recipe), unless told to resume it or to overwrite it. Overwriting deletes the
    earlier run only once the recipe and its data have loaded, so a mistyped value or path loses nothing.
    """
    recipe.check()
    run_dir = recipe.run_dir
    earlier = earlier_run(run_dir) if run_dir.is_dir() else []
    if earlier and not resume and not overwrite:
        raise FileExistsError(f"{run_dir} holds an earlier run ({earlier[0].name}, ...): pass --resume to continue "
                              "it, --overwrite to replace it, or choose another --output-dir")
    checkpoint = resume_checkpoint(run_dir) if resume else None
    data_source = recipe.data_source()
    transformers.set_seed(recipe.training.seed)
    started = time.perf_counter()

    d = recipe.data
    langs = (d.src, d.tgt)
    config = VanillaTransformerConfig.from_preset(recipe.model.preset, **recipe.model.overrides)

    def clear_earlier_run():
        if earlier and overwrite and not resume:
            for path in earlier:
                shutil.rmtree(path) if path.is_dir() else path.unlink()
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "recipe.json").write_text(json.dumps(recipe.to_dict(), indent=2), encoding="utf-8")

    state = process_state(recipe.training.ddp_timeout)
    data = prepare_data(recipe, data_source, run_dir / "tokenizer" if resume else None,
                        config.max_position_embeddings, on_loaded=clear_earlier_run)
    run_dir.mkdir(parents=True, exist_ok=True)  # on a machine that does not share the main one's disk too
    data.save_phases(run_dir / f"data-rank{state.process_index}.json")
    logger.info("data path:\n%s", data.table())
    tokenizer, train_set = data.tokenizer, data.train_set
    if state.is_main_process:
        tokenizer.save_pretrained(run_dir / "tokenizer")
    if recipe.training.log_batches:
        train_set = train_set.add_column("idx", list(range(len(train_set))))
    config = VanillaTransformerConfig.from_tokenizer(tokenizer, preset=recipe.model.preset, **recipe.model.overrides)
    tokenizer.model_max_length = config.max_position_embeddings  # what truncation=True cuts to
    model = VanillaTransformerForConditionalGeneration(config)
    g = recipe.generation
    decoding = decoding_settings(g.num_beams, g.length_penalty)
    model.generation_config.update(**decoding, max_length_offset=g.max_length_offset)
    args = training_arguments(recipe, config.d_model)
    trainer = TranslationTrainer(
        model=model,
        args=args,
        train_dataset=train_set,
        eval_dataset=data.validation_set,
        data_collator=DataCollatorForSeq2Seq(tokenizer, model=model),
        processing_class=tokenizer,
        compute_metrics=bleu_metric_fn(tokenizer, load_bleu()),
        max_tokens=recipe.training.batch_tokens,
        warmup_steps=recipe.training.warmup_steps,
        max_minutes=recipe.training.max_minutes,
        batch_log=run_dir if recipe.training.log_batches else None,
    )
    trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    train_seconds = time.perf_counter() - started
    if not trainer.is_world_process_zero():
        return None  # the run folder is the main process's to write

    final_dir = run_dir / "model"
    checkpoints = last_checkpoints(run_dir, recipe.average_last) if recipe.average_last > 1 else []
    if len(checkpoints) > 1:
        model = average_checkpoints(checkpoints, final_dir)
        averaged = [p.name for p in checkpoints]
    else:
        trainer.save_model(final_dir)
        averaged = []
    tokenizer.save_pretrained(final_dir)
    make_portable(final_dir, langs)

    validation_bleu = [{"step": e["step"], "bleu": e["eval_bleu"]} for e in trainer.state.log_history
                       if "eval_bleu" in e]
    best = max(validation_bleu, key=lambda e: e["bleu"], default=None)
    results = RunResults(
        recipe=recipe.name, src=d.src, tgt=d.tgt,
        parameters=sum(p.numel() for p in model.parameters()),
        train_pairs=len(train_set), cleaning=data.cleaning,
        padding_fraction=round(trainer.batch_sampler.padding_fraction(), 4),
        steps=trainer.state.global_step, train_seconds=round(train_seconds, 1),
        machine=f"{torch.get_num_threads()} threads, torch {torch.__version__}, "
                f"transformers {transformers.__version__}",
        averaged_checkpoints=averaged, validation_bleu=validation_bleu,
        best_validation_step=best["step"] if best else None, best_validation_bleu=best["bleu"] if best else None,
    )
    if d.test:
        test = data.raw[d.test]
        if d.test_size:
            test = test.select(range(min(d.test_size, len(test))))

        def translate_lines(lines: list[str]) -> list[str]:
            return translate(model, tokenizer, lines, batch_size=g.eval_batch_size, **decoding)

        results.test = evaluate_split(translate_lines, test, d.test, langs, run_dir, g.num_beams, g.length_penalty)
    results.save(run_dir / "results.json")
    render_card(run_dir)
    write_log_csv(trainer.state.log_history, run_dir / "log.csv")
    plot_curves(trainer.state.log_history, run_dir / "curves.png", title=f"{recipe.name} ({d.src}->{d.tgt})")
    return results


def write_log_csv(log_history: list[dict], path: Path) -> None:
    columns = ["step", "epoch", "loss", "learning_rate", "grad_norm", "tokens_per_s", "padding_fraction",
               "eval_loss", "eval_bleu", "eval_chrf"]
    lines = [",".join(columns)]
    for entry in log_history:
        lines.append(",".join(str(entry.get(c, "")) for c in columns))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
