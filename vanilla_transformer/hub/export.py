"""A saved model folder that loads, and translates, in a Python where this package is not installed."""

import json
from pathlib import Path

from transformers import AutoConfig
from transformers.dynamic_module_utils import custom_object_save

from ..pipeline import CUSTOM_PIPELINE, TASK, TranslationPipeline, language_task
from ..tokenization import VanillaTransformerTokenizer


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
