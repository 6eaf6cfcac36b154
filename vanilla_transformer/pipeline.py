"""pipeline("translation") for encoder-decoder models: text in, [{"translation_text": ...}] out, as transformers 4 gave.

transformers 5 removed its built-in translation pipeline. This file travels with a saved model and is named in its
config's `custom_pipelines` (as "translation" and "translation_XX_to_YY"), so `pipeline("translation", model=repo,
trust_remote_code=True)` finds it; like modeling.py it imports nothing but torch and transformers.
"""

import json
import re

import torch
from transformers import Pipeline
from transformers.utils import cached_file

TASK = "translation"
# What config.custom_pipelines holds for this class, in the form Pipeline.save_pretrained writes.
CUSTOM_PIPELINE = {"impl": "pipeline.TranslationPipeline", "pt": ["AutoModelForSeq2SeqLM"], "tf": [], "type": "text"}
LANGUAGE_TASK = re.compile(r"translation_(.+)_to_(.+)")
CASING_FILE = "casing.json"  # the source language's usual casing of its words, written beside the model by training
WORD = re.compile(r"\w+")


def language_task(src: str, tgt: str) -> str:
    """The task name transformers users type for one direction, e.g. translation_de_to_en."""
    return f"{TASK}_{src}_to_{tgt}"


class Recaser:
    """Input typed all in capitals or all in lower case, recased before translating (truecasing: each word in its most
    frequent casing in the training sources, the first word capitalised), and the translation of an all-capitals input
    given back in capitals. A model trained on cased text reads "EIN MANN MIT HUT" as a string of rare subwords and
    degenerates; it reads "Ein Mann mit Hut" as it was trained to."""

    def __init__(self, forms: dict[str, str]):
        self.forms = forms  # a word in lower case -> its usual form, for the words whose usual form is not lower case

    @classmethod
    def load(cls, model: str | None) -> "Recaser | None":
        """The recaser saved with a model (a folder or a Hub repo), or None where it has no casing.json."""
        path = (cached_file(model, CASING_FILE, _raise_exceptions_for_missing_entries=False,
                            _raise_exceptions_for_connection_errors=False) if model else None)
        if path is None:
            return None
        try:
            with open(path, encoding="utf-8") as file:
                return cls(dict(json.load(file)["forms"]))
        except (ValueError, KeyError, TypeError) as error:  # invalid JSON or UTF-8, or not a {"forms": {...}}
            raise ValueError(f"{path}: not a casing file of this package ({type(error).__name__}: {error}); "
                             "delete it to translate without recasing") from None

    def recase(self, text: str) -> tuple[str, bool]:
        """The text the model is given, and whether the translation goes back in capitals (the input was all
        capitals). Text with both cases, or fewer than two cased letters, is left as it is."""
        cased = [c for c in text if c.islower() or c.isupper()]
        if len(cased) < 2 or (any(c.islower() for c in cased) and any(c.isupper() for c in cased)):
            return text, False
        first = True

        def usual(match: re.Match) -> str:
            nonlocal first
            word = self.forms.get(match.group().lower(), match.group().lower())
            if first:
                word, first = word[:1].upper() + word[1:], False
            return word

        return WORD.sub(usual, text), cased[0].isupper()

    def save(self, folder) -> None:
        """casing.json in the model's folder, read back by load()."""
        with open(f"{folder}/{CASING_FILE}", "w", encoding="utf-8") as file:
            json.dump({"forms": self.forms}, file, ensure_ascii=False, indent=0, sort_keys=True)

    @staticmethod
    def restore(translation: str, upper: bool) -> str:
        """The translation as the input's casing asks: in capitals where the input was."""
        return translation.upper() if upper else translation


class TranslationPipeline(Pipeline):
    """Translate a string or a list of strings with the model's generate(); generate's settings are call arguments.
    Input all in capitals or all in lower case is recased first where the model has a casing.json (recase=False:
    as it is)."""

    _load_tokenizer = True
    _load_processor = False
    _load_image_processor = False
    _load_feature_extractor = False

    def _sanitize_parameters(self, truncation=None, src_lang=None, tgt_lang=None, clean_up_tokenization_spaces=None,
                             recase=None, **generate_kwargs):
        self.check_languages(src_lang, tgt_lang)
        preprocess_params = {} if truncation is None else {"truncation": truncation}
        if recase is not None:
            preprocess_params["recase"] = recase
        postprocess_params = {}
        if clean_up_tokenization_spaces is not None:
            postprocess_params["clean_up_tokenization_spaces"] = clean_up_tokenization_spaces
        return preprocess_params, generate_kwargs, postprocess_params

    def check_languages(self, src_lang: str | None, tgt_lang: str | None) -> None:
        """src_lang/tgt_lang, as transformers 4 took them, must be the model's direction where its config names it."""
        directions = {match.groups() for name in (getattr(self.model.config, "custom_pipelines", None) or {})
                      if (match := LANGUAGE_TASK.fullmatch(name))}
        if len(directions) != 1:
            return  # a model that does not say which languages it translates
        ((src, tgt),) = directions
        for given, known, name in ((src_lang, src, "src_lang"), (tgt_lang, tgt, "tgt_lang")):
            if given is not None and given != known:
                raise ValueError(f"{name}={given!r}, but this model translates {src} to {tgt}")

    def __call__(self, inputs, **kwargs):
        """One string gives [{"translation_text": ...}]; a list of strings gives one such dict per string, or a list
        of num_return_sequences dicts per string when it is above 1."""
        texts = [inputs] if isinstance(inputs, str) else inputs
        if not isinstance(texts, list) or not all(isinstance(text, str) for text in texts):
            raise TypeError(f"{TASK} pipeline takes a string or a list of strings, got {type(inputs).__name__}")
        if not texts:
            return []
        results = super().__call__(inputs, **kwargs)
        if isinstance(inputs, str) or any(len(result) != 1 for result in results):
            return results
        return [result[0] for result in results]

    @property
    def recaser(self) -> Recaser | None:
        if not hasattr(self, "_recaser"):
            self._recaser = Recaser.load(getattr(self.model, "name_or_path", None))
        return self._recaser

    def preprocess(self, text: str, truncation: bool = False, recase: bool = True):
        upper = False
        if recase and self.recaser is not None:
            text, upper = self.recaser.recase(text)
        # The model's positions bound the input, whatever the tokenizer's own model_max_length says.
        limit = min(self.tokenizer.model_max_length, self.model.config.max_position_embeddings)
        inputs = self.tokenizer(text, truncation=truncation, max_length=limit if truncation else None,
                                return_tensors="pt")
        return {**inputs, "upper": torch.tensor([upper])}

    def _forward(self, model_inputs, **generate_kwargs):
        upper = model_inputs.pop("upper")
        output_ids = self.model.generate(**model_inputs, **generate_kwargs)
        # Group the num_return_sequences outputs of each input, so that the pipeline's unbatching keeps them together.
        batch_size = model_inputs["input_ids"].shape[0]
        return {"output_ids": output_ids.reshape(batch_size, -1, output_ids.shape[-1]), "upper": upper}

    def postprocess(self, model_outputs, clean_up_tokenization_spaces: bool = False):
        upper = bool(model_outputs["upper"].reshape(-1)[0])
        return [
            {"translation_text": Recaser.restore(
                self.tokenizer.decode(ids, skip_special_tokens=True,
                                      clean_up_tokenization_spaces=clean_up_tokenization_spaces), upper)}
            for ids in model_outputs["output_ids"][0]
        ]
