"""The arguments of the commands that run a recipe's file: the recipe, and --set to override its values."""

import argparse


def add_recipe_arguments(parser: argparse.ArgumentParser, example: str, set_help: str) -> None:
    parser.add_argument("recipe", help=f"a recipe file, e.g. {example}")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=set_help)
