"""The engines a model folder translates with, behind one translate_lines(lines, first_line) function: transformers'
generate() on a model folder, or CTranslate2 on a folder made by export-ctranslate2."""

from collections.abc import Callable

from .model_folder import load_checked_model, load_tokenizer, model_source

ENGINES = ("torch", "ctranslate2")

LineTranslator = Callable[..., list[str]]  # (lines, first_line=1) -> one translation per line


def load_model(folder: str):
    """A model folder written by this package (or any folder of a transformers seq2seq model) and its tokenizer."""
    folder = model_source(folder)
    return load_checked_model(folder).eval(), load_tokenizer(folder, "translating needs it")


def line_translator(model: str, engine: str = "torch", *, num_beams: int, length_penalty: float, batch_size: int,
                    progress: bool = False, compute_type: str = "default", inter_threads: int | None = None,
                    intra_threads: int = 1) -> LineTranslator:
    """translate_lines(lines, first_line=1) -> translations with `engine` on the folder `model`; first_line numbers
    the first line in warnings. compute_type and the threads are CTranslate2's (the optional extra)."""
    # Imported here, as the engines are: evaluate and datasets take a third of a second, which a command's --help or
    # another command should not wait for.
    from .evaluation import decoding_settings, translate

    if engine not in ENGINES:
        raise ValueError(f"engine {engine!r}: choose one of {', '.join(ENGINES)}")
    settings = dict(batch_size=batch_size, **decoding_settings(num_beams, length_penalty))
    if engine == "ctranslate2":
        from .engines.ctranslate2 import Translator

        translator = Translator(model, compute_type=compute_type, inter_threads=inter_threads,
                                intra_threads=intra_threads)
        settings.pop("early_stopping")  # the engine stops a beam at </s> always

        def translate_lines(lines: list[str], first_line: int = 1) -> list[str]:
            return translator.translate(lines, first_line=first_line, **settings)
    else:
        loaded, tokenizer = load_model(model)

        def translate_lines(lines: list[str], first_line: int = 1) -> list[str]:
            return translate(loaded, tokenizer, lines, progress=progress, first_line=first_line, **settings)

    return translate_lines
