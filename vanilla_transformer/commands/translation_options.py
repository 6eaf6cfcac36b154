"""The decoding and engine options that evaluate and translate share, and the translate_lines they choose; the
device options, which show-attention takes too."""

import argparse
import dataclasses
import functools

from ..model_folder import DTYPES
from ..translators import ENGINES, LineTranslator, line_translator
from .argument_types import device_argument, positive_int


def add_translation_arguments(parser: argparse.ArgumentParser, batch_size: int) -> None:
    parser.add_argument("--num-beams", type=positive_int, default=4, help="1: greedy decoding")
    parser.add_argument("--length-penalty", type=float, default=0.6)
    parser.add_argument("--batch-size", type=positive_int, default=batch_size)
    parser.add_argument("--max-tokens", type=positive_int, default=None,
                        help="batches of at most this many source tokens, padding included, instead of --batch-size "
                             "sentences (ctranslate2: the engine's token batches)")
    parser.add_argument("--compile-decoding", action="store_true",
                        help="torch engine, --num-beams 1: greedy decoding through a compiled decoder step (the "
                             "same translations; the compile costs seconds once per run)")
    parser.add_argument("--no-guards", action="store_true",
                        help="turn off the model's generation guards: the output length bound per sentence "
                             "(generation_config.max_length_a/b) and the repeated n-gram guard "
                             "(repetition_guard_ngram_size)")
    parser.add_argument("--no-recase", action="store_true",
                        help="translate lines all in capitals or all in lower case as they are, not recased by the "
                             "model's casing.json (the translation of an all-capitals line then not put in capitals)")
    add_engine_arguments(parser)


def add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    """The engine, its precision and threads, and the device: what translate, evaluate and score share."""
    parser.add_argument("--engine", choices=ENGINES, default="torch",
                        help="ctranslate2: MODEL is a folder made by export-ctranslate2")
    parser.add_argument("--compute-type", default="default",
                        help="ctranslate2's precision, e.g. int8, float32 (--dtype is the torch engine's); "
                             "ctranslate2 runs on --device cpu or cuda")
    parser.add_argument("--inter-threads", type=positive_int, default=None,
                        help="ctranslate2: workers translating batches side by side (default: the cores / intra)")
    parser.add_argument("--intra-threads", type=positive_int, default=1, help="ctranslate2: threads per worker")
    add_device_arguments(parser)


def add_device_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", type=device_argument, default="auto",
                        help="cpu, cuda, cuda:N, mps or xpu (default: auto, the accelerator torch sees: CUDA, else "
                             "MPS or XPU, else the CPU)")
    parser.add_argument("--dtype", choices=("auto", *DTYPES), default="auto",
                        help="the model's weights and arithmetic (default: auto, bf16 on a CUDA card of compute "
                             "capability 8.0 or more, fp16 on 7.x, else fp32)")


def translator_for(args: argparse.Namespace, progress: bool) -> LineTranslator:
    """translate_lines(lines, first_line) for the command's model, engine and decoding options."""
    if args.compile_decoding and args.engine != "torch":
        raise ValueError(f"--compile-decoding is the torch engine's, not {args.engine}'s")
    translator = line_translator(args.model, args.engine, num_beams=args.num_beams,
                                 length_penalty=args.length_penalty, batch_size=args.batch_size, progress=progress,
                                 device=args.device, dtype=args.dtype, compute_type=args.compute_type,
                                 inter_threads=args.inter_threads, intra_threads=args.intra_threads,
                                 max_tokens=args.max_tokens, recase=not args.no_recase)
    if getattr(args, "no_guards", False):
        translator = within(without_guards, translator)
    if args.compile_decoding:
        translator = within(compiled_decoding, translator)
    return translator


def without_guards():
    """The context in which generate() and the CTranslate2 engine decode with the guards off."""
    from ..modeling import GUARDS, generation_guards

    return generation_guards(**dict.fromkeys(GUARDS))


def compiled_decoding():
    """The context in which generate() decodes through a compiled step (modeling.compiled_decoding)."""
    from ..modeling import compiled_decoding

    return compiled_decoding()


def within(context, translator: LineTranslator) -> LineTranslator:
    """`translator`, its translations and n-best lists made within context()."""
    def wrapped(function):
        @functools.wraps(function)
        def call(*args, **kwargs):
            with context():
                return function(*args, **kwargs)

        return call

    return dataclasses.replace(translator, translate_lines=wrapped(translator.translate_lines),
                               n_best_lines=wrapped(translator.n_best_lines))
