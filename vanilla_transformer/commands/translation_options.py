"""The decoding and engine options that evaluate and translate share, and the translate_lines they choose."""

import argparse

from ..translators import ENGINES, LineTranslator, line_translator
from .argument_types import positive_int


def add_translation_arguments(parser: argparse.ArgumentParser, batch_size: int) -> None:
    parser.add_argument("--num-beams", type=positive_int, default=4, help="1: greedy decoding")
    parser.add_argument("--length-penalty", type=float, default=0.6)
    parser.add_argument("--batch-size", type=positive_int, default=batch_size)
    parser.add_argument("--engine", choices=ENGINES, default="torch",
                        help="ctranslate2: MODEL is a folder made by export-ctranslate2")
    parser.add_argument("--compute-type", default="default", help="ctranslate2's, e.g. int8, float32")
    parser.add_argument("--inter-threads", type=positive_int, default=None,
                        help="ctranslate2: workers translating batches side by side (default: the cores / intra)")
    parser.add_argument("--intra-threads", type=positive_int, default=1, help="ctranslate2: threads per worker")


def translator_for(args: argparse.Namespace, progress: bool) -> LineTranslator:
    """translate_lines(lines, first_line) for the command's model, engine and decoding options."""
    return line_translator(args.model, args.engine, num_beams=args.num_beams, length_penalty=args.length_penalty,
                           batch_size=args.batch_size, progress=progress, compute_type=args.compute_type,
                           inter_threads=args.inter_threads, intra_threads=args.intra_threads)
