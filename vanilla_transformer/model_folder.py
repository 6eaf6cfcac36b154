"""A saved model folder: where one comes from (checked before anything loads), its tokenizer, and making it load and
translate in a Python where this package is not installed."""

import json
from pathlib import Path

from transformers import AutoConfig, AutoTokenizer
from transformers.dynamic_module_utils import custom_object_save

from .pipeline import CUSTOM_PIPELINE, TASK, TranslationPipeline, language_task
from .tokenization import VanillaTransformerTokenizer


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
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError, TypeError, ImportError) as error:
        raise FileNotFoundError(f"{source}: no usable tokenizer ({type(error).__name__}: {error}); "
                                f"{needed_for}") from None
    if tokenizer is None or not callable(tokenizer):
        raise FileNotFoundError(f"{source}: no tokenizer files; {needed_for}")
    return tokenizer


def make_portable(model_dir: str | Path, langs: tuple[str, str] | None = None) -> None:
    """Ship the translation pipeline with the folder, and let its tokenizer load without remote code.

    - pipeline.py is copied beside modeling.py and named in config.custom_pipelines, as Pipeline.save_pretrained
      does, so `pipeline("translation", model=..., trust_remote_code=True)` works on transformers 5, which has no
      built-in translation task; with the model's languages, also under "translation_de_to_en" (say).
    - tokenizer_config.json names PreTrainedTokenizerFast, which every transformers knows, with our class's settings:
      our class adds nothing else, and tokenizer.json holds the whole tokenizer. `auto_map` still gives our class to
      callers that pass trust_remote_code=True.
    """
    model_dir = Path(model_dir)
    config = AutoConfig.from_pretrained(model_dir)
    config.custom_pipelines = {TASK: CUSTOM_PIPELINE}
    if langs:
        config.custom_pipelines[language_task(*langs)] = CUSTOM_PIPELINE
    config.save_pretrained(model_dir)
    custom_object_save(TranslationPipeline, model_dir)

    tokenizer_config = model_dir / "tokenizer_config.json"
    if tokenizer_config.is_file():
        settings = json.loads(tokenizer_config.read_text(encoding="utf-8"))
        if settings.get("tokenizer_class") == VanillaTransformerTokenizer.__name__:
            settings["tokenizer_class"] = "PreTrainedTokenizerFast"
            settings["model_input_names"] = VanillaTransformerTokenizer.model_input_names
            settings["padding_side"] = VanillaTransformerTokenizer.padding_side
            tokenizer_config.write_text(json.dumps(settings, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
