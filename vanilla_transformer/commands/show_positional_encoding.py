"""`show-positional-encoding`: a PNG of the sinusoidal positional encodings (Section 3.5)."""

import argparse

from .argument_types import positive_even_int, positive_int

NAME = "show-positional-encoding"
HELP = "PNG of the sinusoidal positional table"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="positional_encoding.png")
    parser.add_argument("--positions", type=positive_int, default=100)
    parser.add_argument("--d-model", type=positive_even_int, default=512)
    parser.add_argument("--layout", default="interleaved", choices=["interleaved", "split"])


def run(args: argparse.Namespace) -> None:
    from ..visualize import plot_positional_encoding

    plot_positional_encoding(args.out, args.positions, args.d_model, args.layout)
    print(f"positional encodings: {args.out}")
