"""`demo`: the main job: train the Multi30k de->en recipe, score test2016 with beam search, show some translations."""

import argparse

NAME = "demo"
HELP = "train Multi30k de->en here, score test2016, show translations"

QUICK = ["training.max_steps=120", "training.eval_steps=60", "training.save_steps=60", "data.validation_size=100",
         "data.test_size=200", "training.warmup_steps=300", "average_last=2"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--recipe", default="configs/multi30k-de-en-small.yaml")
    parser.add_argument("--quick", action="store_true", help="a smoke run of a few minutes")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a recipe value")


def run(args: argparse.Namespace) -> None:
    from ..hub.card import render_card
    from ..training.recipe import load_recipe
    from ..training.run import earlier_run, made_by, train

    recipe = load_recipe(args.recipe, (QUICK if args.quick else []) + args.set)
    if args.quick:
        recipe.output_dir = str(recipe.run_dir) + "-quick"
    print(f"recipe {args.recipe}{' (--quick smoke run)' if args.quick else ''}, run folder {recipe.run_dir}")
    # A new demo replaces the last demo's run, never one that `train` made in the same folder (the same recipe).
    if earlier_run(recipe.run_dir) and made_by(recipe.run_dir) != NAME:
        raise FileExistsError(f"{recipe.run_dir} holds a run that the demo did not make (a `train` run of the same "
                              "recipe?), which the demo does not replace: move it, or run the demo in another folder "
                              "(--set output_dir=runs/demo)")
    results = train(recipe, overwrite=True, command=NAME)
    render_card(recipe.run_dir)
    test = results.test
    for example in test.examples:
        print(f"\n  source     {example['source']}\n  reference  {example['reference']}\n"
              f"  ours       {example['translation']}")
    print(f"\n{results.parameters:,} parameters, {results.steps} updates in {results.train_seconds / 60:.1f} min")
    print(f"{test.split} ({test.sentences} sentences) sacreBLEU {test.bleu:.2f}, chrF {test.chrf:.2f}")
    print(f"signature: {test.bleu_signature}")
    print(f"run folder: {recipe.run_dir} (model/, results.json, curves.png, log.csv)")
