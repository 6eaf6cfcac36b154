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
