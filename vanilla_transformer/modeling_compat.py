"""Where transformers 4.57 and 5.x differ for the model, in one place, so that modeling.py reads the same on both.

Ships beside modeling.py as Hub remote code; imports only transformers.
"""

import functools

from transformers.modeling_outputs import Seq2SeqLMOutput
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

# transformers 5 renamed the cache argument and output field `past_key_values` to `cache`.
CACHE_FIELD = "cache" if "cache" in Seq2SeqLMOutput.__dataclass_fields__ else "past_key_values"
# generate(compile_decoding=True) decodes compiled on transformers 5 (what tests/test_compiled_generate.py checks); on
# 4.57 it is accepted and decodes eagerly.
COMPILES_DECODING = CACHE_FIELD == "cache"


def takes_cache(forward):
    """A model's forward, which names its cache argument `cache`, callable by either version's generate().

    transformers 4.57 passes the cache as past_key_values, with a cache_position that the decoder reads off the cache.
    """
    if CACHE_FIELD == "cache":
        return forward

    @functools.wraps(forward)
    def forward_with_cache_renamed(self, *args, past_key_values=None, cache_position=None, **kwargs):
        if past_key_values is not None:
            kwargs["cache"] = past_key_values
        return forward(self, *args, **kwargs)

    return forward_with_cache_renamed


def with_cache(output_class, cache, **fields):
    """output_class(**fields) holding the decoder cache under this version's name for the field."""
    return output_class(**fields, **{CACHE_FIELD: cache})


def cache_of(output):
    """The decoder cache an output holds, under this version's name for the field."""
    return getattr(output, CACHE_FIELD)


def attention_interface(name: str, eager):
    """The attention function transformers' AttentionInterface registers as `name`; `eager`, the model's own, for
    "eager". transformers 5 looks names up through get_interface, which also refuses unknown ones; 4.57 by key."""
    if hasattr(ALL_ATTENTION_FUNCTIONS, "get_interface"):
        return ALL_ATTENTION_FUNCTIONS.get_interface(name, eager)
    return eager if name == "eager" else ALL_ATTENTION_FUNCTIONS[name]


def keep_own_parameter_names(model) -> None:
    """Save `model` under its own parameter names: transformers 5 would reverse the key_mapping it was loaded with
    (4.57 keeps no record of it)."""
    model._weight_conversions = None


class DecoderTiedOutput:
    """Mixin of the model with an output projection: it stays tied to the decoder's embeddings on 4.57 too.

    transformers 4.57 ties it to get_input_embeddings(), the encoder's, then calls each module's _tie_weights; 5.x ties
    what _tied_weights_keys names and never calls this.
    """

    def _tie_weights(self) -> None:
        if self.config.tie_word_embeddings:
            self.get_output_embeddings().weight = self.get_decoder().embed_tokens.weight


try:  # transformers 5
    from transformers.utils.output_capturing import OutputRecorder, capture_outputs
except ImportError:  # transformers 4.57
    from transformers.utils.generic import OutputRecorder

    def capture_outputs(forward):
        """transformers 5's capture_outputs: records, by forward hooks, the outputs that the model's
        _can_record_outputs names and output_attentions/output_hidden_states ask for.

        4.57's check_model_inputs records them too, but it also sets use_cache on every call and warns whenever
        output_attentions meets a kernel other than eager, which this model answers with eager for that call.
        """

        @functools.wraps(forward)
        def recorded_forward(self, *args, **kwargs):
            return_dict = kwargs.pop("return_dict", getattr(self.config, "return_dict", True))
            recorders = {}
            for key, recorder in self._can_record_outputs.items():
                flag = "output_attentions" if key == "cross_attentions" else f"output_{key}"
                if kwargs.get(flag, getattr(self.config, flag, False)):
                    if not isinstance(recorder, OutputRecorder):
                        recorder = OutputRecorder(recorder, index=0 if key == "hidden_states" else 1)
                    recorders[key] = recorder
            collected = {key: [] for key in recorders}
            hooks = [
                module.register_forward_hook(functools.partial(record, collected[key], recorder.index,
                                                               key == "hidden_states"))
                for name, module in self.named_modules() for key, recorder in recorders.items()
                if isinstance(module, recorder.target_class)
                and (recorder.layer_name is None or f".{recorder.layer_name}." in f".{name}.")
            ]
            try:
                outputs = forward(self, *args, **kwargs)
            finally:
                for hook in hooks:
                    hook.remove()
            for key, values in collected.items():
                if key == "hidden_states" and values:
                    values[-1] = outputs.last_hidden_state  # after the final LayerNorm of a pre-norm stack
                outputs[key] = tuple(values)
            return outputs if return_dict is not False else outputs.to_tuple()

        return recorded_forward

    def record(values: list, index: int, with_input: bool, module, args, output) -> None:
        """A forward hook's body: append the module's output (or its `index`-th part); hidden states start with the
        first layer's input."""
        if with_input and not values:
            values.append(args[0])
        value = output[index] if isinstance(output, tuple) else output
        if value is not None:
            values.append(value)
