"""The engines a model folder translates with, behind one translate_lines(lines, first_line) function, with n-best
lists and forced-decoding scores beside it: transformers' generate() on a model folder, or CTranslate2 on a folder
made by export-ctranslate2. Both engines' scores mean the same (vanilla_transformer.scoring)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from .model_folder import DTYPES, accelerator, load_checked_model, load_tokenizer, model_source, native_dtype
from .pipeline import Recaser

if TYPE_CHECKING:  # scoring brings evaluate and datasets, which a command's --help should not wait for
    from .scoring import Hypothesis, PairScore

ENGINES = ("torch", "ctranslate2")


@dataclass(frozen=True)
class LineTranslator:
    """translate_lines(lines, first_line=1) -> one translation per line; n_best(lines, k, first_line=1) -> the k best
    of each, scored; score(sources, targets, first_line=1, names=("source", "target")) -> each pair's
    forced-decoding score; and where it runs: the device and the dtype (the torch engine's) or compute type
    (CTranslate2's) it translates in. first_line numbers the first line in warnings and errors."""

    translate_lines: Callable[[list[str], int], list[str]]
    device: str
    dtype: str
    n_best_lines: Callable[[list[str], int, int], list[list[Hypothesis]]]
    score_pairs: Callable[[list[str], list[str], int, tuple[str, str]], list[PairScore]]

    def __call__(self, lines: list[str], first_line: int = 1) -> list[str]:
        return self.translate_lines(lines, first_line)

    def n_best(self, lines: list[str], k: int, first_line: int = 1) -> list[list[Hypothesis]]:
        return self.n_best_lines(lines, k, first_line)

    def score(self, sources: list[str], targets: list[str], first_line: int = 1,
              names: tuple[str, str] = ("source", "target")) -> list[PairScore]:
        return self.score_pairs(sources, targets, first_line, names)


def load_model(folder: str, device: torch.device | str = "auto", dtype: str = "auto"):
    """A model folder written by this package (or any folder of a transformers seq2seq model) on `device` in `dtype`
    (auto: the accelerator, and the type it computes natively; see placement), and its tokenizer."""
    folder = model_source(folder)
    device, dtype = placement(device, dtype)
    model = load_checked_model(folder, device, DTYPES[dtype]).eval()
    return model, load_tokenizer(folder, "translating needs it")


def placement(device: torch.device | str, dtype: str) -> tuple[torch.device, str]:
    """The device (auto: CUDA, else MPS or XPU where torch has one, else the CPU) and dtype (auto: bf16 on a CUDA card
    of compute capability 8.0 or more, fp16 on 7.x, else fp32) the torch engine translates in."""
    device = accelerator() if device == "auto" else torch.device(device)
    return device, native_dtype(device) if dtype == "auto" else dtype


def line_translator(model: str, engine: str = "torch", *, num_beams: int, length_penalty: float, batch_size: int,
                    progress: bool = False, device: str = "auto", dtype: str = "auto", compute_type: str = "default",
                    inter_threads: int | None = None, intra_threads: int = 1,
                    max_tokens: int | None = None, recase: bool = True) -> LineTranslator:
    """translate_lines(lines, first_line=1) -> translations with `engine` on the folder `model`; first_line numbers
    the first line in warnings. device and dtype as load_model takes them; compute_type and the threads are
    CTranslate2's (the optional extra), which runs on cpu or cuda and has no dtype but its compute type. max_tokens:
    batches of that many source tokens instead of batch_size sentences. recase: lines all in capitals or all in lower
    case recased first where the model has a casing.json, as pipeline("translation") does (pipeline.Recaser)."""
    translator = engine_translator(model, engine, num_beams=num_beams, length_penalty=length_penalty,
                                   batch_size=batch_size, progress=progress, device=device, dtype=dtype,
                                   compute_type=compute_type, inter_threads=inter_threads,
                                   intra_threads=intra_threads, max_tokens=max_tokens)
    recaser = Recaser.load(model) if recase else None
    return recasing(recaser, translator) if recaser is not None else translator


def recasing(recaser: Recaser, translator: LineTranslator) -> LineTranslator:
    """translator, given lines recased by recaser, its translations of all-capitals lines put back in capitals."""
    def translate_lines(lines: list[str], first_line: int) -> list[str]:
        recased = [recaser.recase(line) for line in lines]
        return [Recaser.restore(text, upper)
                for text, (_, upper) in zip(translator.translate_lines([line for line, _ in recased], first_line),
                                            recased)]

    def n_best_lines(lines: list[str], k: int, first_line: int) -> list[list[Hypothesis]]:
        recased = [recaser.recase(line) for line in lines]
        lists = translator.n_best_lines([line for line, _ in recased], k, first_line)
        return [[dataclasses.replace(h, text=Recaser.restore(h.text, upper)) for h in hypotheses]
                for hypotheses, (_, upper) in zip(lists, recased)]

    return dataclasses.replace(translator, translate_lines=translate_lines, n_best_lines=n_best_lines)


def engine_translator(model: str, engine: str, *, num_beams: int, length_penalty: float, batch_size: int,
                      progress: bool, device: str, dtype: str, compute_type: str, inter_threads: int | None,
                      intra_threads: int, max_tokens: int | None) -> LineTranslator:
    """line_translator's engine, before any recasing."""
    # Imported here, as the engines are: evaluate and datasets take a third of a second, which a command's --help or
    # another command should not wait for.
    from .evaluation import decoding_settings, translate
    from .scoring import n_best, score_pairs

    if engine not in ENGINES:
        raise ValueError(f"engine {engine!r}: choose one of {', '.join(ENGINES)}")
    settings = dict(batch_size=batch_size, max_tokens=max_tokens, **decoding_settings(num_beams, length_penalty))
    if engine == "ctranslate2":
        if dtype != "auto":
            raise ValueError(f"--dtype {dtype} is the torch engine's: the ctranslate2 engine computes in its "
                             "--compute-type (e.g. float16, bfloat16, int8)")
        if device == "auto":
            device = "cuda" if accelerator().type == "cuda" else "cpu"
        if device not in ("cpu", "cuda", "cuda:0"):
            raise ValueError(f"--device {device}: the ctranslate2 engine runs on cpu or cuda (its first card)")
        from .engines.ctranslate2 import Translator

        translator = Translator(model, device=device.removesuffix(":0"), compute_type=compute_type,
                                inter_threads=inter_threads, intra_threads=intra_threads)
        settings.pop("early_stopping")  # the engine stops a beam at </s> always

        def translate_lines(lines: list[str], first_line: int) -> list[str]:
            return translator.translate(lines, first_line=first_line, **settings)

        def n_best_lines(lines: list[str], k: int, first_line: int) -> list[list[Hypothesis]]:
            return translator.n_best(lines, k, first_line=first_line, **settings)

        def score_lines(sources: list[str], targets: list[str], first_line: int, names) -> list[PairScore]:
            return translator.score(sources, targets, batch_size, first_line, names)

        return LineTranslator(translate_lines, device, translator.translator.compute_type, n_best_lines, score_lines)
    device, dtype = placement(device, dtype)
    loaded, tokenizer = load_model(model, device, dtype)

    def translate_lines(lines: list[str], first_line: int) -> list[str]:
        return translate(loaded, tokenizer, lines, progress=progress, first_line=first_line, **settings)

    def n_best_lines(lines: list[str], k: int, first_line: int) -> list[list[Hypothesis]]:
        return n_best(loaded, tokenizer, lines, k, first_line=first_line, **settings)

    def score_lines(sources: list[str], targets: list[str], first_line: int, names) -> list[PairScore]:
        return score_pairs(loaded, tokenizer, sources, targets, batch_size, first_line, names)

    return LineTranslator(translate_lines, str(loaded.device), dtype, n_best_lines, score_lines)
