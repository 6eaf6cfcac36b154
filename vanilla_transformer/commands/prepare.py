"""`prepare`: run a recipe's data path alone (read, tokenizer, tokenize, clean, batches) and print each phase's time
and size.

What it makes is cached, so that `train` with the same recipe and data reuses it.
"""

import argparse
import dataclasses
import json
import time
from pathlib import Path

from .argument_types import positive_int
from .recipe_arguments import add_recipe_arguments

NAME = "prepare"
HELP = "run a recipe's data path alone and time its phases"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_recipe_arguments(parser, "configs/wmt14-en-de-base.yaml", "override a recipe value (repeatable)")
    parser.add_argument("--processes", type=positive_int, metavar="N",
                        help="plan the batches for a launch of N processes, all machines together (default: this "
                             "launch's, 1 outside one)")
    parser.add_argument("--json", metavar="FILE", help="also write the phases as JSON")


def run(args: argparse.Namespace) -> None:
    from ..training.batching import token_batches
    from ..training.prepare import Phase, prepare_data
    from ..training.recipe import load_recipe

    recipe = load_recipe(args.recipe, args.set)  # checked as it loads
    plan = recipe.batch_plan(args.processes)  # before the data path: an impossible plan is refused at once
    print(plan, flush=True)
    data = prepare_data(recipe, recipe.data_source(), max_length=recipe.model.config().max_position_embeddings)
    started = time.perf_counter()
    sampler = token_batches(data.train_set, plan.micro_batch_tokens, recipe.training.seed)
    data.phases.append(Phase("batches", round(time.perf_counter() - started, 1), rows=len(sampler)))
    print(data.table())
    print(f"{len(sampler):,} batches of at most {plan.micro_batch_tokens:,} tokens, "
          f"{100 * sampler.padding_fraction():.1f}% padding; {plan}")
    if args.json:
        Path(args.json).write_text(json.dumps([dataclasses.asdict(p) for p in data.phases], indent=2) + "\n")
