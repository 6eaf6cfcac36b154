"""Where a model comes from: a local folder, checked before anything loads, or a Hub repo id."""

from pathlib import Path


def model_source(source: str | Path, needs: tuple[str, ...] = ("config.json",)) -> str:
    """source as given, once a local folder is known to hold the files in `needs`; a Hub id (owner/name) as it is.

    Raises FileNotFoundError naming the folder and the missing file, instead of transformers' errors about a config
    without a model_type or a repo id that is not valid.
    """
    text = str(source)
    path = Path(text).expanduser()
    looks_like_path = text.startswith((".", "/", "~")) or text.count("/") > 1 or path.exists()
    if not looks_like_path:
        return text
    if not path.is_dir():
        raise FileNotFoundError(f"{text}: no such model folder")
    for name in needs:
        if not (path / name).is_file():
            raise FileNotFoundError(f"{text}: no {name} here, so this is not a saved model folder")
    return text


def load_tokenizer(source: str, needed_for: str):
    """The tokenizer saved with a model, or a FileNotFoundError naming the folder (a Marian folder without its
    .spm files makes transformers raise TypeError or ImportError, or return None)."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError, TypeError, ImportError) as error:
        raise FileNotFoundError(f"{source}: no usable tokenizer ({type(error).__name__}: {error}); "
                                f"{needed_for}") from None
    if tokenizer is None or not callable(tokenizer):
        raise FileNotFoundError(f"{source}: no tokenizer files; {needed_for}")
    return tokenizer
