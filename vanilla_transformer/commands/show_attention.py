"""`show-attention`: a PNG heatmap of the encoder-decoder attention of one sentence's translation."""

import argparse

from .argument_types import non_negative_int, positive_int
from .translation_options import add_device_arguments

NAME = "show-attention"
HELP = "PNG heatmap of a translation's cross-attention"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model")
    parser.add_argument("sentence")
    parser.add_argument("--out", default="attention.png")
    parser.add_argument("--layer", type=non_negative_int, help="one decoder layer (default: mean of all)")
    parser.add_argument("--head", type=non_negative_int, help="one head (default: mean of all)")
    parser.add_argument("--num-beams", type=positive_int, default=4)
    add_device_arguments(parser)


def run(args: argparse.Namespace) -> None:
    from ..translators import load_model
    from ..visualize import plot_attention

    model, tokenizer = load_model(args.model, args.device, args.dtype)
    translation = plot_attention(model, tokenizer, args.sentence, args.out, args.layer, args.head,
                                 num_beams=args.num_beams)
    print(f"translation: {translation}\nattention heatmap: {args.out}")
