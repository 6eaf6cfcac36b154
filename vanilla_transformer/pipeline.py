"""pipeline("translation") for encoder-decoder models: text in, [{"translation_text": ...}] out, as transformers 4 gave.

transformers 5 removed its built-in translation pipeline. This file travels with a saved model and is named in its
config's `custom_pipelines`, so `pipeline("translation", model=repo, trust_remote_code=True)` finds it; like
modeling.py it imports nothing but transformers.
"""

from transformers import Pipeline

TASK = "translation"
# What config.custom_pipelines holds for this class, in the form Pipeline.save_pretrained writes.
CUSTOM_PIPELINE = {"impl": "pipeline.TranslationPipeline", "pt": ["AutoModelForSeq2SeqLM"], "tf": [], "type": "text"}


class TranslationPipeline(Pipeline):
    """Translate a string or a list of strings with the model's generate(); generate's settings are call arguments."""

    _load_tokenizer = True
    _load_processor = False
    _load_image_processor = False
    _load_feature_extractor = False

    def _sanitize_parameters(self, truncation=None, clean_up_tokenization_spaces=None, **generate_kwargs):
        preprocess_params = {} if truncation is None else {"truncation": truncation}
        postprocess_params = {}
        if clean_up_tokenization_spaces is not None:
            postprocess_params["clean_up_tokenization_spaces"] = clean_up_tokenization_spaces
        return preprocess_params, generate_kwargs, postprocess_params

    def __call__(self, inputs, **kwargs):
        """One string gives [{"translation_text": ...}]; a list of strings gives one such dict per string."""
        texts = [inputs] if isinstance(inputs, str) else inputs
        if not isinstance(texts, list) or not all(isinstance(text, str) for text in texts):
            raise TypeError(f"{TASK} pipeline takes a string or a list of strings, got {type(inputs).__name__}")
        results = super().__call__(inputs, **kwargs)
        return results if isinstance(inputs, str) else [result[0] for result in results]

    def preprocess(self, text: str, truncation: bool = False):
        return self.tokenizer(text, truncation=truncation, return_tensors="pt")

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
