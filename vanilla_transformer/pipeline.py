"""pipeline("translation") for encoder-decoder models: text in, [{"translation_text": ...}] out, as transformers 4 gave.

transformers 5 removed its built-in translation pipeline. This file travels with a saved model and is named in its
config's `custom_pipelines` (as "translation" and "translation_XX_to_YY"), so `pipeline("translation", model=repo,
trust_remote_code=True)` finds it; like modeling.py it imports nothing but transformers.
"""

import re

from transformers import Pipeline

TASK = "translation"
# What config.custom_pipelines holds for this class, in the form Pipeline.save_pretrained writes.
CUSTOM_PIPELINE = {"impl": "pipeline.TranslationPipeline", "pt": ["AutoModelForSeq2SeqLM"], "tf": [], "type": "text"}
LANGUAGE_TASK = re.compile(r"translation_(.+)_to_(.+)")


def language_task(src: str, tgt: str) -> str:
    """The task name transformers users type for one direction, e.g. translation_de_to_en."""
    return f"{TASK}_{src}_to_{tgt}"


class TranslationPipeline(Pipeline):
    """Translate a string or a list of strings with the model's generate(); generate's settings are call arguments."""

    _load_tokenizer = True
    _load_processor = False
    _load_image_processor = False
    _load_feature_extractor = False

    def _sanitize_parameters(self, truncation=None, src_lang=None, tgt_lang=None, clean_up_tokenization_spaces=None,
                             **generate_kwargs):
        self.check_languages(src_lang, tgt_lang)
        preprocess_params = {} if truncation is None else {"truncation": truncation}
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

    def preprocess(self, text: str, truncation: bool = False):
        # The model's positions bound the input, whatever the tokenizer's own model_max_length says.
        limit = min(self.tokenizer.model_max_length, self.model.config.max_position_embeddings)
        return self.tokenizer(text, truncation=truncation, max_length=limit if truncation else None,
                              return_tensors="pt")

    def _forward(self, model_inputs, **generate_kwargs):
        output_ids = self.model.generate(**model_inputs, **generate_kwargs)
        # Group the num_return_sequences outputs of each input, so that the pipeline's unbatching keeps them together.
        batch_size = model_inputs["input_ids"].shape[0]
        return {"output_ids": output_ids.reshape(batch_size, -1, output_ids.shape[-1])}

    def postprocess(self, model_outputs, clean_up_tokenization_spaces: bool = False):
        return [
            {"translation_text": self.tokenizer.decode(ids, skip_special_tokens=True,
                                                       clean_up_tokenization_spaces=clean_up_tokenization_spaces)}
            for ids in model_outputs["output_ids"][0]
        ]
