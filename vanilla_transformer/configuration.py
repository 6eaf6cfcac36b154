"""Configuration of the encoder-decoder Transformer of "Attention Is All You Need" (Vaswani et al. 2017)."""

from transformers import PretrainedConfig

ACTIVATIONS = ("relu", "gelu", "swish", "silu")
POSITION_EMBEDDINGS = ("sinusoidal", "learned")
SINUSOIDAL_LAYOUTS = ("interleaved", "split")

# Table 3 of the paper, plus two shapes for CPUs and tests. Anything not listed keeps the base default.
PRESETS = {
    "base": dict(d_model=512, d_ff=2048, num_attention_heads=8, encoder_layers=6, decoder_layers=6, dropout=0.1),
    "big": dict(d_model=1024, d_ff=4096, num_attention_heads=16, encoder_layers=6, decoder_layers=6, dropout=0.3),
    "small": dict(
        vocab_size=10000, d_model=256, d_ff=1024, num_attention_heads=4, encoder_layers=3, decoder_layers=3,
        max_position_embeddings=256,
    ),
    "tiny": dict(
        vocab_size=99, d_model=32, d_ff=64, num_attention_heads=4, encoder_layers=2, decoder_layers=2,
        max_position_embeddings=64, dropout=0.0,
    ),
}


class VanillaTransformerConfig(PretrainedConfig):
    """Hyperparameters of the Transformer; the defaults are the paper's base model."""

    model_type = "vanilla_transformer"
    keys_to_ignore_at_inference = ["cache", "past_key_values"]
    attribute_map = {"hidden_size": "d_model", "num_hidden_layers": "encoder_layers"}

    def __init__(
        self,
        vocab_size=37000,  # one BPE vocabulary shared by source and target (Section 5.1: ~37k for en-de)
        decoder_vocab_size=None,  # target vocabulary size when share_embeddings=False; None = vocab_size
        d_model=512,  # width of every sub-layer output and of the embeddings
        encoder_layers=6,  # N, identical layers in the encoder stack
        decoder_layers=6,  # N, identical layers in the decoder stack
        num_attention_heads=8,  # h, parallel attention heads (d_k = d_v = d_model / h)
        d_ff=2048,  # inner width of the position-wise feed-forward network
        dropout=0.1,  # P_drop on each sub-layer output and on the embedding + positional sums
        attention_dropout=0.0,  # dropout on attention weights (not in the paper; fairseq option)
        activation_dropout=0.0,  # dropout after the FFN activation (not in the paper; fairseq option)
        activation_function="relu",  # FFN(x) = max(0, xW1 + b1)W2 + b2; also "gelu", "swish"/"silu"
        max_position_embeddings=1024,  # longest sequence the positional table covers
        position_embedding="sinusoidal",  # "sinusoidal" as in the paper, or "learned" (the paper's Table 3 row E)
        sinusoidal_layout="interleaved",  # "interleaved": sin/cos alternate by dimension (paper); "split": all sines then all cosines (Marian, fairseq)
        scale_embedding=True,  # multiply embeddings by sqrt(d_model) (Section 3.4)
        share_embeddings=True,  # one embedding matrix for source and target tokens (Section 3.4)
        tie_word_embeddings=True,  # the output projection is the (target) embedding matrix (Section 3.4)
        add_final_logits_bias=False,  # a fixed bias added to the logits (Marian checkpoints carry one)
        norm_first=False,  # False: post-norm LayerNorm(x + Sublayer(x)) as in the paper; True: pre-norm with a final LayerNorm per stack
        layer_norm_eps=1e-5,  # epsilon of every LayerNorm
        init_std=None,  # std of the embedding init; None = d_model ** -0.5
        pad_token_id=0,  # <pad>
        bos_token_id=1,  # <s>
        eos_token_id=2,  # </s>
        decoder_start_token_id=1,  # first decoder input: <s>
        use_cache=True,  # keep keys/values during generation
        **kwargs,
    ):
        kwargs.setdefault("is_encoder_decoder", True)
        # Keys that config.json files of earlier versions carry. label_smoothing is a setting of the training loss,
        # which the trainer computes (TrainingArguments.label_smoothing_factor); cpu_attention_by_shape=False meant
        # SDPA at every shape, which attn_implementation="sdpa" asks for.
        kwargs.pop("label_smoothing", None)
        if kwargs.pop("cpu_attention_by_shape", True) is False and kwargs.get("attn_implementation") is None:
            kwargs["attn_implementation"] = "sdpa"
        super().__init__(**kwargs)
        self.vocab_size = vocab_size
        self.decoder_vocab_size = decoder_vocab_size
        self.d_model = d_model
        self.encoder_layers = encoder_layers
        self.decoder_layers = decoder_layers
        self.num_attention_heads = num_attention_heads
        self.d_ff = d_ff
        self.dropout = dropout
        self.attention_dropout = attention_dropout
        self.activation_dropout = activation_dropout
        self.activation_function = activation_function
        self.max_position_embeddings = max_position_embeddings
        self.position_embedding = position_embedding
        self.sinusoidal_layout = sinusoidal_layout
        self.scale_embedding = scale_embedding
        self.share_embeddings = share_embeddings
        self.tie_word_embeddings = tie_word_embeddings
        self.add_final_logits_bias = add_final_logits_bias
        self.norm_first = norm_first
        self.layer_norm_eps = layer_norm_eps
        self.init_std = init_std
        self.pad_token_id = pad_token_id
        self.bos_token_id = bos_token_id
        self.eos_token_id = eos_token_id
        self.decoder_start_token_id = decoder_start_token_id
        self.use_cache = use_cache
        self.check()

    @property
    def target_vocab_size(self) -> int:
        """Size of the decoder's vocabulary (the output softmax)."""
        if self.share_embeddings or self.decoder_vocab_size is None:
            return self.vocab_size
        return self.decoder_vocab_size

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "VanillaTransformerConfig":
        """A config of a named shape: "base" and "big" (the paper's Table 3), "small" (CPU) or "tiny" (tests)."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})

    @classmethod
    def from_tokenizer(cls, tokenizer, preset: str = "base", **overrides) -> "VanillaTransformerConfig":
        """A config whose vocabulary and special-token ids are the tokenizer's, so that the two cannot drift apart."""
        return cls.from_preset(preset, **{**cls.tokenizer_fields(tokenizer), **overrides})

    @staticmethod
    def tokenizer_fields(tokenizer) -> dict:
        """The fields a tokenizer decides: its vocabulary size and special-token ids (the decoder starts from <s>)."""
        return dict(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                    bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                    decoder_start_token_id=tokenizer.bos_token_id)

    def check(self) -> None:
        """Raise a ValueError naming the first field whose value cannot describe a model."""
        for field in ("vocab_size", "d_model", "encoder_layers", "decoder_layers", "num_attention_heads", "d_ff",
                      "max_position_embeddings"):
            value = getattr(self, field)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{field} must be a positive integer, got {value!r}")
        if self.decoder_vocab_size is not None and (
            not isinstance(self.decoder_vocab_size, int) or self.decoder_vocab_size <= 0
        ):
            raise ValueError(f"decoder_vocab_size must be a positive integer or None, got {self.decoder_vocab_size!r}")
        if self.d_model % self.num_attention_heads:
            raise ValueError(
                f"d_model ({self.d_model}) must be divisible by num_attention_heads ({self.num_attention_heads})"
            )
        if self.position_embedding == "sinusoidal" and self.d_model % 2:
            raise ValueError(f"d_model must be even for sinusoidal position_embedding, got {self.d_model}")
        choices = {
            "activation_function": ACTIVATIONS,
            "position_embedding": POSITION_EMBEDDINGS,
            "sinusoidal_layout": SINUSOIDAL_LAYOUTS,
        }
        for field, allowed in choices.items():
            if getattr(self, field) not in allowed:
                raise ValueError(f"{field} must be one of {allowed}, got {getattr(self, field)!r}")
        for field in ("dropout", "attention_dropout", "activation_dropout"):
            value = getattr(self, field)
            if not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
                raise ValueError(f"{field} must be a number in [0, 1), got {value!r}")
        if not self.layer_norm_eps > 0:
            raise ValueError(f"layer_norm_eps must be positive, got {self.layer_norm_eps!r}")
        if self.init_std is not None and not self.init_std > 0:
            raise ValueError(f"init_std must be positive or None, got {self.init_std!r}")
        for field in ("pad_token_id", "bos_token_id", "eos_token_id", "decoder_start_token_id"):
            value = getattr(self, field)
            if value is not None and not (isinstance(value, int) and 0 <= value < self.target_vocab_size):
                raise ValueError(f"{field} must be a token id below the vocabulary size, got {value!r}")


__all__ = ["VanillaTransformerConfig", "PRESETS"]
