"""Where a training update's time goes (issue 32): the demo recipe's own trainer, batches and model, timed per phase.

Runs `--updates` updates of a recipe (the de->en demo's by default) through TranslationTrainer, as `train` builds it,
with evaluation and checkpoints off, and times each update's phases: forward (model and label-smoothed loss),
backward, gradient clipping, the optimizer step, the rest of the trainer's step (scheduler, zero_grad, callbacks)
and what lies between two updates (the next batch from the data loader, the trainer's loop). With `--model`, a
trained model folder, also the pauses a run makes: one evaluation (BLEU on the recipe's validation pairs with its
decoding, as every training.eval_steps) and one save_model (the weights; a checkpoint adds the optimizer's state).
Each precision runs in a fresh process; `--emulate-avx2` repeats them with torch, MKL and oneDNN held to AVX2 kernels.
Prints one JSON object.

    python benchmarks/bench_update.py --precision fp32 bf16 [--emulate-avx2] [--model runs/demo/model]
        [--set data.augment.typos=0.1]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

AVX2_ONLY = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
RECIPE = Path(__file__).parents[1] / "configs/multi30k-de-en-small.yaml"
PHASES = ("forward", "backward", "clip_and_checks", "optimizer", "after_optimizer", "between_updates")


def measure(recipe_path: str, precision: str, updates: int, warmup: int, model_dir: str | None,
            overrides: list[str]) -> dict:
    """Per-phase milliseconds of `updates` updates after `warmup` untimed ones, in this process."""
    import resource

    import torch
    import transformers
    from transformers import TrainerCallback

    from vanilla_transformer.training.prepare import prepare_data
    from vanilla_transformer.training.recipe import load_recipe
    from vanilla_transformer.training.run import make_trainer, take_vocabulary

    folder = tempfile.mkdtemp(prefix="bench_update_")
    never = 10 ** 9
    recipe = load_recipe(recipe_path, [f"output_dir={folder}", f"training.precision={precision}",
                                       f"training.max_steps={warmup + updates}", "training.max_minutes=null",
                                       f"training.eval_steps={never}", f"training.save_steps={never}",
                                       f"training.logging_steps={never}", *overrides])
    recipe.check()
    config = recipe.model.config()
    transformers.set_seed(recipe.training.seed)
    data = prepare_data(recipe, recipe.data_source(), None, config.max_position_embeddings)
    take_vocabulary(config, data.tokenizer, recipe.model.overrides)
    trainer = make_trainer(recipe, config, data)
    marks: list[dict] = []

    def timed(name, fn):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                marks[-1][name] = marks[-1].get(name, 0.0) + time.perf_counter() - start
        return wrapper

    class PhaseClock(TrainerCallback):
        """Marks each update's boundaries and its optimizer step; the forward and backward wrappers fill in the rest."""

        def on_step_begin(self, args, state, control, **kwargs):
            marks.append({"begin": time.perf_counter()})

        def on_pre_optimizer_step(self, args, state, control, **kwargs):
            marks[-1]["pre_optimizer"] = time.perf_counter()

        def on_optimizer_step(self, args, state, control, **kwargs):
            marks[-1]["post_optimizer"] = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            marks[-1]["end"] = time.perf_counter()

    # Instance attributes only: the trainer's own methods run, each inside a clock.
    trainer.compute_loss = timed("forward", trainer.compute_loss)
    trainer.accelerator.backward = timed("backward", trainer.accelerator.backward)
    trainer.add_callback(PhaseClock())
    trainer.train()

    rows = []
    for previous, mark in zip(marks, marks[1:]):
        update = mark["end"] - mark["begin"]
        rows.append({
            "forward": mark["forward"],
            "backward": mark["backward"],
            "clip_and_checks": mark["pre_optimizer"] - mark["begin"] - mark["forward"] - mark["backward"],
            "optimizer": mark["post_optimizer"] - mark["pre_optimizer"],
            "after_optimizer": mark["end"] - mark["post_optimizer"],
            "between_updates": mark["begin"] - previous["end"],
            "update": update + mark["begin"] - previous["end"],
        })
    rows = rows[warmup - 1:]
    result = {
        "precision": precision,
        "updates_timed": len(rows),
        "ms_median": {key: round(1000 * statistics.median(r[key] for r in rows), 1) for key in (*PHASES, "update")},
        "ms_mean": {key: round(1000 * statistics.fmean(r[key] for r in rows), 1) for key in (*PHASES, "update")},
        "ms_mean_first_and_last_quarter": [round(1000 * statistics.fmean(r["update"] for r in part), 1)
                                           for part in (rows[: len(rows) // 4], rows[-(len(rows) // 4):])],
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }
    mean = result["ms_mean"]
    result["share_of_mean"] = {key: round(mean[key] / mean["update"], 3) for key in PHASES}
    if model_dir:
        result.update(pauses(trainer, model_dir, folder))
    return result


def pauses(trainer, model_dir: str, folder: str) -> dict:
    """Seconds of one evaluation (the recipe's validation pairs, trained weights) and one save_model."""
    from vanilla_transformer.modeling import VanillaTransformerForConditionalGeneration

    trained = VanillaTransformerForConditionalGeneration.from_pretrained(model_dir)
    trainer.model.load_state_dict(trained.state_dict())
    start = time.perf_counter()
    metrics = trainer.evaluate()
    evaluation = time.perf_counter() - start
    start = time.perf_counter()
    trainer.save_model(str(Path(folder) / "checkpoint-save"))
    return {"evaluation_s": round(evaluation, 1), "evaluation_bleu": round(metrics.get("eval_bleu", float("nan")), 2),
            "evaluation_pairs": len(trainer.eval_dataset), "checkpoint_save_s": round(time.perf_counter() - start, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default=str(RECIPE))
    parser.add_argument("--precision", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    parser.add_argument("--updates", type=int, default=40, help="timed updates per run")
    parser.add_argument("--warmup", type=int, default=10, help="untimed updates first")
    parser.add_argument("--model", help="a trained model folder: also time an evaluation and a checkpoint save")
    parser.add_argument("--emulate-avx2", action="store_true", help="also run each precision on AVX2 kernels only")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a recipe value")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.recipe, args.precision[0], args.updates, args.warmup, args.model, args.set)))
        return
    classes = {"native": {}} | ({"avx2_emulated": AVX2_ONLY} if args.emulate_avx2 else {})
    results = {"recipe": args.recipe, "overrides": args.set, "ld_preload": os.environ.get("LD_PRELOAD", "")}
    for name, env in classes.items():
        for precision in args.precision:
            if precision == "bf16" and name == "avx2_emulated":
                continue  # no bf16 kernels without AVX-512: autocast would emulate it
            command = [sys.executable, __file__, "--child", "--recipe", args.recipe, "--precision", precision,
                       "--updates", str(args.updates), "--warmup", str(args.warmup),
                       *(["--model", args.model] if args.model else []),
                       *(f"--set={override}" for override in args.set)]
            out = subprocess.run(command, env=os.environ | env, check=True, capture_output=True, text=True).stdout
            results[f"{name}/{precision}"] = json.loads(out.strip().splitlines()[-1])
    if "native/fp32" in results and "native/bf16" in results:
        results["bf16_over_fp32_update_time"] = round(results["native/bf16"]["ms_mean"]["update"]
                                                      / results["native/fp32"]["ms_mean"]["update"], 3)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
