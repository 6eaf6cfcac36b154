"""`train`: train from a recipe (configs/*.yaml), evaluate on its test split, and write the run folder."""

import argparse
import dataclasses
import json

from .recipe_arguments import add_recipe_arguments

NAME = "train"
HELP = "train from a recipe YAML (see configs/)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_recipe_arguments(parser, "configs/multi30k-de-en-small.yaml",
                         "override a recipe value, e.g. --set training.max_steps=100 (repeatable)")
    parser.add_argument("--output-dir", help="run folder (default runs/RECIPE_NAME)")
    parser.add_argument("--resume", action="store_true", help="continue from the run folder's last checkpoint")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier run in the folder")
    parser.add_argument("--verbose", action="store_true")


def run(args: argparse.Namespace) -> None:
    import transformers

    from ..hub.card import render_card
    from ..training.prepare import process_state
    from ..training.recipe import load_recipe
    from ..training.run import train

    transformers.logging.set_verbosity_info() if args.verbose else transformers.logging.set_verbosity_warning()
    recipe = load_recipe(args.recipe, args.set)
    if args.output_dir:
        recipe.output_dir = args.output_dir
    state = process_state(recipe.training.ddp_timeout)
    try:
        results = train(recipe, resume=args.resume, overwrite=args.overwrite)
        state.wait_for_everyone()  # no process leaves while the main one still writes the run folder
    finally:
        # The process group's threads joined before the interpreter exits: left to exit, a process of a
        # multi-machine launch sometimes aborted ("terminate called without an active exception").
        state.destroy_process_group()
    if results is None:
        return  # not the main process of a distributed run
    render_card(recipe.run_dir)
    summary = {k: v for k, v in dataclasses.asdict(results).items() if k not in ("validation_bleu", "test")}
    print(json.dumps(summary, indent=2))
    if results.test:
        test = results.test
        print(f"{test.split} sacreBLEU {test.bleu:.2f}  chrF {test.chrf:.2f}  ({test.bleu_signature})")
