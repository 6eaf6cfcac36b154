"""The encoder-decoder Transformer of "Attention Is All You Need" (Vaswani et al. 2017) in PyTorch.

In the paper's order: positional encodings (3.5), attention (3.2), the feed-forward network (3.3), the residual
connection with LayerNorm around each sub-layer and the encoder and decoder layers (3.1); then the base class that
initialises and loads the weights, the encoder and decoder stacks over the embedded tokens (3.1, 3.4), the model with
its linear + softmax output (3.4), and the transformers hooks for generate().

Everything the forward pass needs is in this file and the three beside it (configuration.py; modeling_kernels.py, the
CPU speed kernels, which change no result; modeling_compat.py, where transformers 4.57 and 5.x differ), so a Hub repo
ships all four as remote code; they import only torch and transformers. (The kernels' file is not called kernels.py:
run from a saved folder, that would shadow the `kernels` package that transformers imports.)
"""

import contextlib
import contextvars
import math
from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin, LogitsProcessor, LogitsProcessorList, PreTrainedModel
from transformers.activations import ACT2FN
from transformers.cache_utils import Cache, DynamicCache, EncoderDecoderCache, StaticLayer
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import (
    BaseModelOutput,
    BaseModelOutputWithPastAndCrossAttentions,
    Seq2SeqLMOutput,
    Seq2SeqModelOutput,
)
from transformers.utils import can_return_tuple

from .configuration import VanillaTransformerConfig
from .modeling_compat import (
    COMPILES_DECODING,
    DecoderTiedOutput,
    OutputRecorder,
    cache_of,
    capture_outputs,
    keep_own_parameter_names,
    takes_cache,
    with_cache,
)
from .modeling_kernels import SDPA_BY_SHAPE, LabelSmoothedCrossEntropy, apply_dropout, attention_function


def sinusoidal_table(num_positions: int, d_model: int, layout: str = "interleaved") -> torch.Tensor:
    """PE(pos, 2i) = sin(pos / 10000^(2i/d_model)), PE(pos, 2i+1) = cos(pos / 10000^(2i/d_model)) (Section 3.5).

    layout "split" puts all the sines first and all the cosines second, as Marian and fairseq do.
    """
    position = torch.arange(num_positions, dtype=torch.float64).unsqueeze(1)
    inverse_frequency = 10000.0 ** (-torch.arange(0, d_model, 2, dtype=torch.float64) / d_model)
    angles = position * inverse_frequency
    if layout == "split":
        return torch.cat([angles.sin(), angles.cos()], dim=1).float()
    table = torch.empty(num_positions, d_model, dtype=torch.float64)
    table[:, 0::2] = angles.sin()
    table[:, 1::2] = angles.cos()
    return table.float()


class SinusoidalPositionalEncoding(nn.Module):
    """Fixed sinusoids that tell the model where each token is (Section 3.5); a buffer, never saved."""

    def __init__(self, config: VanillaTransformerConfig):
        super().__init__()
        self.layout = config.sinusoidal_layout
        table = sinusoidal_table(config.max_position_embeddings, config.d_model, self.layout)
        self.register_buffer("weight", table, persistent=False)

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        return F.embedding(positions, self.weight)


def check_token_ids(name: str, ids: torch.Tensor, vocab_size: int, allow_ignore_index: bool = False) -> None:
    """Raise a ValueError for ids outside the vocabulary, instead of an index error deep inside torch.

    Reading the answer on the host would wait for the device every forward on an accelerator: there the check is
    torch._assert_async, which fails at the next synchronisation (on CUDA, as a device-side assert) and never stalls.
    """
    if ids.numel() == 0 or torch.compiler.is_compiling():
        return
    valid = (ids >= 0) & (ids < vocab_size)
    if allow_ignore_index:
        valid |= ids == -100
    if not on_host(ids):
        torch._assert_async(valid.all(), f"{name} contains an id outside the vocabulary of {vocab_size} tokens")
    elif not bool(valid.all()):
        bad = ids[~valid][0].item()
        raise ValueError(f"{name} contains id {bad}, outside the vocabulary of {vocab_size} tokens")


def on_host(tensor: torch.Tensor) -> bool:
    """Whether reading a value of `tensor` costs no wait for a device: it is on the CPU."""
    return tensor.is_cpu


def fused_linear(d_model: int, parts: int) -> nn.Linear:
    """`parts` d_model x d_model projections in one matrix, so one matmul computes them all."""
    linear = nn.Linear(d_model, parts * d_model)
    linear.fused_parts = parts
    return linear


def eager_attention_forward(module, query, key, value, attention_mask, dropout=0.0, scaling=None, is_causal=False,
                            **kwargs):
    """Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k)) V (Section 3.2.1), also returning the weights.

    Masks are boolean (True = may attend); the output is (batch, time, heads, head_dim) as AttentionInterface expects.
    """
    scores = query @ key.transpose(-2, -1) * scaling
    if is_causal and attention_mask is None and query.shape[-2] > 1:
        attention_mask = torch.ones(query.shape[-2], key.shape[-2], dtype=torch.bool, device=query.device).tril()
    if attention_mask is not None:
        scores = scores.masked_fill(~attention_mask, torch.finfo(scores.dtype).min)
    weights = scores.softmax(dim=-1, dtype=torch.float32).to(query.dtype)  # fp32 softmax, also under bf16
    output = apply_dropout(weights, dropout, module.training) @ value
    return output.transpose(1, 2).contiguous(), weights


class ScaledDotProductAttention(nn.Module):
    """Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k)) V of every head at once (Section 3.2.1), through the kernel
    modeling_kernels.attention_function picks; returns the output and, from the eager kernel, the weights."""

    def __init__(self, config: VanillaTransformerConfig, layer_idx: int):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.dropout = config.attention_dropout
        self.scaling = (config.d_model // config.num_attention_heads) ** -0.5

    def forward(self, query, key, value, attention_mask=None, is_causal=False, output_attentions=False):
        attention = attention_function(self.config, query, output_attentions, eager=eager_attention_forward)
        return attention(self, query, key, value, attention_mask, dropout=self.dropout if self.training else 0.0,
                         scaling=self.scaling, is_causal=is_causal)


class MultiHeadAttention(nn.Module):
    """MultiHead(Q, K, V) = Concat(head_1, ..., head_h) W^O, head_i = Attention(Q W_i^Q, K W_i^K, V W_i^V) (Section 3.2.2).

    The per-head projections are fused into one matrix: W^QKV for self-attention, W^Q and W^KV for encoder-decoder
    attention, whose keys and values come from the encoder output.
    """

    def __init__(self, config: VanillaTransformerConfig, is_cross_attention: bool = False, layer_idx: int = 0):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.head_dim = config.d_model // config.num_attention_heads
        self.is_cross_attention = is_cross_attention
        self.layer_idx = layer_idx
        if is_cross_attention:
            self.q_proj = nn.Linear(config.d_model, config.d_model)
            self.kv_proj = fused_linear(config.d_model, 2)
        else:
            self.qkv_proj = fused_linear(config.d_model, 3)
        self.out_proj = nn.Linear(config.d_model, config.d_model)
        self.attention = ScaledDotProductAttention(config, layer_idx)

    def split_heads(self, x: torch.Tensor, parts: int) -> tuple[torch.Tensor, ...]:
        """(batch, time, parts * d_model) -> `parts` tensors of shape (batch, heads, time, head_dim)."""
        batch, time, _ = x.shape
        return x.view(batch, time, parts, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)

    def forward(
        self,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        is_causal: bool = False,
        cache: EncoderDecoderCache | None = None,
        output_attentions: bool = False,
        cache_position: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if self.is_cross_attention:
            (q,) = self.split_heads(self.q_proj(hidden_states), 1)
            if cache is not None and cache.is_updated.get(self.layer_idx):
                # The encoder output does not change while decoding: its keys and values are computed once.
                layer = cache.cross_attention_cache.layers[self.layer_idx]
                k, v = layer.keys, layer.values
            else:
                k, v = self.split_heads(self.kv_proj(encoder_hidden_states), 2)
                if cache is not None:
                    k, v = cache.cross_attention_cache.update(k, v, self.layer_idx)
                    cache.is_updated[self.layer_idx] = True
        else:
            q, k, v = self.split_heads(self.qkv_proj(hidden_states), 3)
            if cache is not None:
                # A static cache writes the new keys at cache_position (transformers 4.57 reads it, 5.x counts itself).
                k, v = cache.self_attention_cache.update(k, v, self.layer_idx, {"cache_position": cache_position})
        heads, _ = self.attention(q, k, v, attention_mask, is_causal=is_causal, output_attentions=output_attentions)
        return self.out_proj(heads.reshape(hidden_states.shape[0], hidden_states.shape[1], -1))


class FeedForward(nn.Module):
    """FFN(x) = max(0, x W_1 + b_1) W_2 + b_2, applied to each position separately and identically (Section 3.3)."""

    def __init__(self, config: VanillaTransformerConfig):
        super().__init__()
        self.fc1 = nn.Linear(config.d_model, config.d_ff)
        self.activation = ACT2FN[config.activation_function]
        self.activation_dropout = config.activation_dropout
        self.fc2 = nn.Linear(config.d_ff, config.d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = apply_dropout(self.activation(self.fc1(x)), self.activation_dropout, self.training)
        return self.fc2(x)


class SublayerConnection(nn.LayerNorm):
    """LayerNorm(x + Sublayer(x)) (Section 3.1): the residual connection around one sub-layer, and its LayerNorm.

    "We apply dropout to the output of each sub-layer, before it is added to the sub-layer input and normalized"
    (Section 5.4). With config.norm_first the norm moves to the sub-layer's input: x + Sublayer(LayerNorm(x)). Its
    parameters are the LayerNorm's, so the layers name it after its LayerNorm, as checkpoints and converters do.
    """

    def __init__(self, config: VanillaTransformerConfig):
        super().__init__(config.d_model, eps=config.layer_norm_eps)
        self.norm_first = config.norm_first
        self.dropout = config.dropout

    def forward(self, x: torch.Tensor, sublayer: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        if self.norm_first:
            return x + apply_dropout(sublayer(super().forward(x)), self.dropout, self.training)
        return super().forward(x + apply_dropout(sublayer(x), self.dropout, self.training))


class EncoderLayer(GradientCheckpointingLayer):
    """Self-attention, then a feed-forward network, each in a residual connection with LayerNorm (Section 3.1)."""

    def __init__(self, config: VanillaTransformerConfig, layer_idx: int = 0):
        super().__init__()
        self.self_attn = MultiHeadAttention(config, layer_idx=layer_idx)
        self.self_attn_layer_norm = SublayerConnection(config)
        self.ffn = FeedForward(config)
        self.ffn_layer_norm = SublayerConnection(config)

    def forward(self, hidden_states, attention_mask=None, output_attentions=False) -> torch.Tensor:
        self_attention = partial(self.self_attn, attention_mask=attention_mask, output_attentions=output_attentions)
        hidden_states = self.self_attn_layer_norm(hidden_states, self_attention)
        return self.ffn_layer_norm(hidden_states, self.ffn)


class DecoderLayer(GradientCheckpointingLayer):
    """Masked self-attention, attention over the encoder output, then a feed-forward network (Section 3.1)."""

    def __init__(self, config: VanillaTransformerConfig, layer_idx: int = 0):
        super().__init__()
        self.self_attn = MultiHeadAttention(config, layer_idx=layer_idx)
        self.self_attn_layer_norm = SublayerConnection(config)
        self.cross_attn = MultiHeadAttention(config, is_cross_attention=True, layer_idx=layer_idx)
        self.cross_attn_layer_norm = SublayerConnection(config)
        self.ffn = FeedForward(config)
        self.ffn_layer_norm = SublayerConnection(config)

    def forward(self, hidden_states, encoder_hidden_states, attention_mask=None, is_causal=False,
                encoder_attention_mask=None, cache=None, output_attentions=False, cache_position=None) -> torch.Tensor:
        self_attention = partial(self.self_attn, attention_mask=attention_mask, is_causal=is_causal, cache=cache,
                                 output_attentions=output_attentions, cache_position=cache_position)
        cross_attention = partial(self.cross_attn, encoder_hidden_states=encoder_hidden_states,
                                  attention_mask=encoder_attention_mask, cache=cache,
                                  output_attentions=output_attentions)
        hidden_states = self.self_attn_layer_norm(hidden_states, self_attention)
        hidden_states = self.cross_attn_layer_norm(hidden_states, cross_attention)
        return self.ffn_layer_norm(hidden_states, self.ffn)


class VanillaTransformerPreTrainedModel(PreTrainedModel):
    """Weight initialisation, loading and the attention kernel's default for the Transformer models."""

    config_class = VanillaTransformerConfig
    base_model_prefix = "model"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    # Not FlashAttention nor flex attention (transformers refuses them by name): the masks here are boolean
    # (batch, 1, queries, keys) tensors and a causal flag, where transformers' flash kernels take 2-D padding masks
    # and its flex kernel an additive mask or a BlockMask, and neither would see the causal flag without a mask.
    _no_split_modules = ["EncoderLayer", "DecoderLayer"]
    # Parameters saved under another name by earlier versions (old -> new), read by from_pretrained.
    renamed_parameters = {"final_layer_norm": "ffn_layer_norm"}

    def __init__(self, config: VanillaTransformerConfig, *inputs, **kwargs):
        if config._attn_implementation is None:
            # Nothing asked for by name: SDPA, with plain matmuls on CPU where they are faster for the shape.
            config._attn_implementation = SDPA_BY_SHAPE
        super().__init__(config, *inputs, **kwargs)

    @classmethod
    def _can_set_attn_implementation(cls) -> bool:
        # set_attn_implementation looks for transformers' own kernel lookup in the model's source file; this model
        # looks its kernels up in modeling_kernels.attention_function.
        return True

    @classmethod
    def from_pretrained(cls, *args, key_mapping=None, **kwargs):
        """from_pretrained, also reading checkpoints saved under the names in renamed_parameters."""
        loaded = super().from_pretrained(*args, key_mapping={**cls.renamed_parameters, **(key_mapping or {})},
                                         **kwargs)
        keep_own_parameter_names(loaded[0] if isinstance(loaded, tuple) else loaded)
        return loaded

    def load_state_dict(self, state_dict, *args, **kwargs):
        """torch's load_state_dict (the Trainer resumes through it), also under the names in renamed_parameters."""
        for old, new in self.renamed_parameters.items():
            state_dict = {key.replace(old, new): value for key, value in state_dict.items()}
        return super().load_state_dict(state_dict, *args, **kwargs)

    @torch.no_grad()
    def _init_weights(self, module):
        """Xavier-uniform projections with zero biases; embeddings ~ N(0, d_model^-0.5) with a zero padding row."""
        config = self.config
        if getattr(module, "_is_hf_initialized", False):
            return
        if isinstance(module, nn.Linear):
            if not getattr(module.weight, "_is_hf_initialized", False):
                # A fused projection is initialised part by part, as the separate matrices would be.
                for part in module.weight.chunk(getattr(module, "fused_parts", 1), dim=0):
                    nn.init.xavier_uniform_(part)
            if module.bias is not None and not getattr(module.bias, "_is_hf_initialized", False):
                module.bias.zero_()
        elif isinstance(module, nn.Embedding):
            if not getattr(module.weight, "_is_hf_initialized", False):
                std = config.init_std if config.init_std is not None else config.d_model**-0.5
                module.weight.normal_(0.0, std)
                if module.padding_idx is not None:
                    module.weight[module.padding_idx].zero_()
        elif isinstance(module, nn.LayerNorm):
            if not getattr(module.weight, "_is_hf_initialized", False):
                module.weight.fill_(1.0)
                module.bias.zero_()
        elif isinstance(module, SinusoidalPositionalEncoding):
            module.weight.copy_(sinusoidal_table(*module.weight.shape, module.layout))
        elif isinstance(module, VanillaTransformerForConditionalGeneration) and module.final_logits_bias is not None:
            if not getattr(module.final_logits_bias, "_is_hf_initialized", False):
                module.final_logits_bias.zero_()


def key_padding_mask(attention_mask: torch.Tensor | None) -> torch.Tensor | None:
    """A (batch, keys) padding mask of 1s and 0s as (batch, 1, 1, keys) booleans: which keys every query may see."""
    return attention_mask[:, None, None, :].bool() if attention_mask is not None else None


class TransformerStack(VanillaTransformerPreTrainedModel):
    """N identical layers over the embedded tokens (Section 3.1); a pre-norm stack ends with a LayerNorm.

    Tokens enter as their embeddings x sqrt(d_model) plus the positional encodings, then dropout (Sections 3.4, 3.5,
    5.4). The encoder and the decoder name their kind of layer and run them. The model that holds the stack
    initialises its weights (post_init), in one pass over all modules.
    """

    layer_class: type[nn.Module]

    def __init__(self, config: VanillaTransformerConfig, embed_tokens: nn.Embedding, num_layers: int):
        super().__init__(config)
        self.embed_tokens = embed_tokens
        self.embed_scale = math.sqrt(config.d_model) if config.scale_embedding else 1.0
        if config.position_embedding == "sinusoidal":
            self.embed_positions = SinusoidalPositionalEncoding(config)
        else:
            self.embed_positions = nn.Embedding(config.max_position_embeddings, config.d_model)
        # Pre-norm stacks end with a LayerNorm, since their last residual sum is never normalised otherwise.
        self.layer_norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps) if config.norm_first else None
        self.layers = nn.ModuleList(self.layer_class(config, layer_idx=i) for i in range(num_layers))

    def embed(self, input_ids, inputs_embeds, positions: torch.Tensor | None = None) -> torch.Tensor:
        """The embedded tokens at `positions` (0, 1, ... by default; other positions are checked by the caller)."""
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids and inputs_embeds")
        if inputs_embeds is None:
            check_token_ids("input_ids", input_ids, self.embed_tokens.num_embeddings)
            inputs_embeds = self.embed_tokens(input_ids)
        if positions is None:
            self.check_length(0, inputs_embeds.shape[1])
            positions = torch.arange(inputs_embeds.shape[1], device=inputs_embeds.device)
        # The sinusoid buffer stays fp32 when from_pretrained(dtype=torch.bfloat16) loads the weights in bf16, and
        # device_map="auto" may put the positions on another device than the embeddings (as Bart moves them).
        encodings = self.embed_positions(positions).to(inputs_embeds.device, inputs_embeds.dtype)
        return apply_dropout(inputs_embeds * self.embed_scale + encodings, self.config.dropout, self.training)

    def check_length(self, past_length, length: int) -> None:
        """Raise a ValueError for a sequence beyond max_position_embeddings, from its shape: no device sync.

        Only a static cache holds its length in a tensor (on its device): there it is checked as the token ids are.
        """
        end, limit = past_length + length, self.config.max_position_embeddings
        if isinstance(end, torch.Tensor):
            if torch.compiler.is_compiling():
                return
            if not on_host(end):
                torch._assert_async(end <= limit, f"a sequence exceeds max_position_embeddings={limit}")
                return
        if end > limit:
            raise ValueError(f"sequence of {int(end)} tokens exceeds max_position_embeddings={limit}")

    def final_norm(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """The last layer's output, through the final LayerNorm of a pre-norm stack."""
        return self.layer_norm(hidden_states) if self.layer_norm is not None else hidden_states


class TransformerEncoder(TransformerStack):
    """N identical layers of self-attention and feed-forward over the embedded source (Section 3.1)."""

    layer_class = EncoderLayer
    # What capture_outputs records when output_hidden_states / output_attentions ask for it.
    _can_record_outputs = {"hidden_states": EncoderLayer, "attentions": ScaledDotProductAttention}

    def __init__(self, config: VanillaTransformerConfig, embed_tokens: nn.Embedding):
        super().__init__(config, embed_tokens, config.encoder_layers)

    @capture_outputs
    def forward(self, input_ids=None, attention_mask=None, inputs_embeds=None, output_attentions=None,
                output_hidden_states=None) -> BaseModelOutput:
        # output_hidden_states is capture_outputs' to read; output_attentions also picks the kernel that has weights.
        hidden_states = self.embed(input_ids, inputs_embeds)
        attention_mask = key_padding_mask(attention_mask)
        output_attentions = bool(output_attentions)
        for layer in self.layers:
            hidden_states = layer(hidden_states, attention_mask=attention_mask, output_attentions=output_attentions)
        return BaseModelOutput(last_hidden_state=self.final_norm(hidden_states))


def static_length(cache: EncoderDecoderCache | None) -> int | None:
    """The slots a static cache preallocates for the decoder's keys (None for a growing cache): the attention sees
    them all. Read off the allocated keys where there are some, so that a compiled step sees a dynamic dimension
    rather than a constant to guard on (a recompile per length)."""
    layers = cache.self_attention_cache.layers if cache is not None else []
    if not layers or not isinstance(layers[0], StaticLayer):
        return None
    keys = layers[0].keys
    return keys.shape[-2] if isinstance(keys, torch.Tensor) and keys.dim() == 4 else layers[0].max_cache_len


class TransformerDecoder(TransformerStack):
    """N identical layers that attend to the output so far (masked) and to the encoder output (Section 3.1)."""

    layer_class = DecoderLayer
    # What capture_outputs records when output_hidden_states / output_attentions ask for it.
    _can_record_outputs = {
        "hidden_states": DecoderLayer,
        "attentions": OutputRecorder(ScaledDotProductAttention, index=1, layer_name="self_attn"),
        "cross_attentions": OutputRecorder(ScaledDotProductAttention, index=1, layer_name="cross_attn"),
    }

    def __init__(self, config: VanillaTransformerConfig, embed_tokens: nn.Embedding):
        super().__init__(config, embed_tokens, config.decoder_layers)

    def self_attention_mask(self, attention_mask, positions: torch.Tensor, past_length, static_length: int | None):
        """Where each decoder position may look: itself and what came before, minus padding.

        A static cache (generate(cache_implementation="static"), for torch.compile) shows the attention all its
        static_length slots, and those not yet written lie in the future, masked like it. Returns (mask, is_causal).
        Otherwise, without padding, the common cases need no tensor at all: SDPA's is_causal for a whole sequence,
        nothing for a single new token.
        """
        query_length = len(positions)
        if attention_mask is None and static_length is None and (past_length == 0 or query_length == 1):
            return None, True if query_length > 1 else False  # a bool: SDPA refuses a symbolic one (compile, dynamic)
        key_length = static_length or past_length + query_length
        query_positions = positions[:, None]
        key_positions = torch.arange(key_length, device=positions.device)[None, :]
        mask = (key_positions <= query_positions)[None, None]
        if attention_mask is not None:
            if attention_mask.shape[1] != past_length + query_length:
                raise ValueError(
                    f"decoder_attention_mask covers {attention_mask.shape[1]} positions, expected "
                    f"{int(past_length) + query_length} (cached {int(past_length)} + new {query_length})"
                )
            padding = F.pad(attention_mask.bool(), (0, key_length - attention_mask.shape[1]), value=True)
            # A padded position still sees itself, so that no softmax row is empty.
            mask = (mask & padding[:, None, None, :]) | (key_positions == query_positions)
        return mask, False

    @capture_outputs
    def forward(self, input_ids=None, attention_mask=None, encoder_hidden_states=None, encoder_attention_mask=None,
                cache=None, inputs_embeds=None, use_cache=False, output_attentions=None,
                output_hidden_states=None) -> BaseModelOutputWithPastAndCrossAttentions:
        # output_hidden_states is capture_outputs' to read; output_attentions also picks the kernel that has weights.
        if use_cache and cache is None:
            cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
        if cache is not None and not isinstance(cache, EncoderDecoderCache):
            raise TypeError(f"the decoder cache must be an EncoderDecoderCache, got {type(cache).__name__}")
        # An int, or a tensor for a static cache, which keeps its length on the device.
        past_length = cache.get_seq_length() if cache is not None else 0
        query_length = (input_ids if input_ids is not None else inputs_embeds).shape[1]
        self.check_length(past_length, query_length)
        positions = past_length + torch.arange(query_length, device=self.embed_tokens.weight.device)
        hidden_states = self.embed(input_ids, inputs_embeds, positions)
        causal_mask, is_causal = self.self_attention_mask(attention_mask, positions, past_length, static_length(cache))
        encoder_attention_mask = key_padding_mask(encoder_attention_mask)
        for layer in self.layers:
            # The tensors that need gradients go by position, as checkpointing with use_reentrant=True requires.
            hidden_states = layer(
                hidden_states, encoder_hidden_states, attention_mask=causal_mask, is_causal=is_causal,
                encoder_attention_mask=encoder_attention_mask, cache=cache, output_attentions=bool(output_attentions),
                cache_position=positions,
            )
        return with_cache(BaseModelOutputWithPastAndCrossAttentions, cache if use_cache else None,
                          last_hidden_state=self.final_norm(hidden_states))


class VanillaTransformerModel(VanillaTransformerPreTrainedModel):
    """The bare encoder-decoder, returning the decoder's last hidden states."""

    def __init__(self, config: VanillaTransformerConfig):
        super().__init__(config)
        padding_idx = config.pad_token_id
        if config.share_embeddings:
            self.shared = nn.Embedding(config.vocab_size, config.d_model, padding_idx)
            encoder_embeddings = decoder_embeddings = self.shared
            # One matrix under three names, whether or not the output projection is tied to it too.
            self._tied_weights_keys = {
                "encoder.embed_tokens.weight": "shared.weight",
                "decoder.embed_tokens.weight": "shared.weight",
            }
        else:
            encoder_embeddings = nn.Embedding(config.vocab_size, config.d_model, padding_idx)
            decoder_embeddings = nn.Embedding(config.target_vocab_size, config.d_model, padding_idx)
        self.encoder = TransformerEncoder(config, encoder_embeddings)
        self.decoder = TransformerDecoder(config, decoder_embeddings)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.encoder.embed_tokens

    def set_input_embeddings(self, embeddings: nn.Embedding) -> None:
        self.encoder.embed_tokens = embeddings
        if self.config.share_embeddings:
            self.shared = self.decoder.embed_tokens = embeddings

    def get_encoder(self, modality=None) -> TransformerEncoder:
        return self.encoder

    def get_decoder(self) -> TransformerDecoder:
        return self.decoder

    @can_return_tuple
    @takes_cache
    def forward(self, input_ids=None, attention_mask=None, decoder_input_ids=None, decoder_attention_mask=None,
                encoder_outputs=None, cache=None, inputs_embeds=None, decoder_inputs_embeds=None, use_cache=None,
                output_attentions=None, output_hidden_states=None) -> Seq2SeqModelOutput:
        use_cache = use_cache if use_cache is not None else (cache is not None)
        output_attentions = output_attentions if output_attentions is not None else self.config.output_attentions
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        if encoder_outputs is None:
            encoder_outputs = self.encoder(input_ids=input_ids, attention_mask=attention_mask,
                                           inputs_embeds=inputs_embeds, output_attentions=output_attentions,
                                           output_hidden_states=output_hidden_states)
        elif not isinstance(encoder_outputs, BaseModelOutput):
            encoder_outputs = BaseModelOutput(*encoder_outputs)

        decoder_outputs = self.decoder(
            input_ids=decoder_input_ids,
            attention_mask=decoder_attention_mask,
            encoder_hidden_states=encoder_outputs.last_hidden_state,
            encoder_attention_mask=attention_mask,
            cache=cache,
            inputs_embeds=decoder_inputs_embeds,
            use_cache=use_cache,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
        )
        return with_cache(
            Seq2SeqModelOutput,
            cache_of(decoder_outputs),
            last_hidden_state=decoder_outputs.last_hidden_state,
            decoder_hidden_states=decoder_outputs.hidden_states,
            decoder_attentions=decoder_outputs.attentions,
            cross_attentions=decoder_outputs.cross_attentions,
            encoder_last_hidden_state=encoder_outputs.last_hidden_state,
            encoder_hidden_states=encoder_outputs.hidden_states,
            encoder_attentions=encoder_outputs.attentions,
        )


def shift_tokens_right(labels: torch.Tensor, pad_token_id: int, decoder_start_token_id: int) -> torch.Tensor:
    """Decoder inputs for teacher forcing: the labels shifted one step right, starting with decoder_start_token_id."""
    decoder_input_ids = labels.new_empty(labels.shape)
    decoder_input_ids[:, 1:] = labels[:, :-1]
    decoder_input_ids[:, 0] = decoder_start_token_id
    return decoder_input_ids.masked_fill_(decoder_input_ids == -100, pad_token_id)


class VanillaTransformerForConditionalGeneration(DecoderTiedOutput, VanillaTransformerPreTrainedModel, GenerationMixin):
    """The encoder-decoder with the linear + softmax output layer, the cross-entropy loss and generate()."""

    # Trainer passes num_items_in_batch (target tokens in the whole accumulated update), so that batches of
    # different sizes are weighted by their tokens, as fairseq does.
    accepts_loss_kwargs = True

    def __init__(self, config: VanillaTransformerConfig):
        super().__init__(config)
        self.model = VanillaTransformerModel(config)
        self.lm_head = nn.Linear(config.d_model, config.target_vocab_size, bias=False)
        if config.add_final_logits_bias:
            self.register_buffer("final_logits_bias", torch.zeros(1, config.target_vocab_size))
        else:
            self.final_logits_bias = None
        if config.tie_word_embeddings:
            source = "model.shared.weight" if config.share_embeddings else "model.decoder.embed_tokens.weight"
            self._tied_weights_keys = {"lm_head.weight": source}
        self.post_init()
        # The paper's decoding: "beam search with a beam size of 4 and length penalty alpha = 0.6 ... maximum output
        # length during inference to input length + 50, but terminate early when possible" (Section 6.1).
        self.generation_config.num_beams = 4
        self.generation_config.length_penalty = 0.6
        self.generation_config.early_stopping = True
        self.generation_config.max_length_offset = 50
        # generate(compile_decoding=True) or this field: greedy search through a compiled decoding step.
        self.generation_config.compile_decoding = False
        # Guards against runaway outputs (length bound per sentence, repeated n-grams): on in every new model.
        for name, value in GUARDS.items():
            setattr(self.generation_config, name, value)
        self.generation_config._from_model_config = False  # it is ours now: keep it whole when saved and loaded

    def get_encoder(self, modality=None) -> TransformerEncoder:
        return self.model.encoder

    def get_decoder(self) -> TransformerDecoder:
        return self.model.decoder

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def set_output_embeddings(self, embeddings: nn.Linear) -> None:
        self.lm_head = embeddings

    def resize_token_embeddings(self, new_num_tokens=None, pad_to_multiple_of=None, mean_resizing=True):
        embeddings = super().resize_token_embeddings(new_num_tokens, pad_to_multiple_of, mean_resizing)
        if self.final_logits_bias is not None and self.config.share_embeddings:
            old = self.final_logits_bias
            new = old.new_zeros(1, embeddings.num_embeddings)
            keep = min(old.shape[1], new.shape[1])
            new[:, :keep] = old[:, :keep]
            self.final_logits_bias = new
        return embeddings

    def prepare_decoder_input_ids_from_labels(self, labels: torch.Tensor) -> torch.Tensor:
        return shift_tokens_right(labels, self.config.pad_token_id, self.config.decoder_start_token_id)

    @can_return_tuple
    @takes_cache
    def forward(self, input_ids=None, attention_mask=None, decoder_input_ids=None, decoder_attention_mask=None,
                encoder_outputs=None, cache=None, inputs_embeds=None, decoder_inputs_embeds=None, labels=None,
                use_cache=None, output_attentions=None, output_hidden_states=None,
                num_items_in_batch=None) -> Seq2SeqLMOutput:
        """The encoder-decoder's outputs with the logits over the target vocabulary and, given labels, the loss.

        The arguments are VanillaTransformerModel.forward's, with the labels and the update's label count."""
        if labels is not None:
            check_token_ids("labels", labels, self.config.target_vocab_size, allow_ignore_index=True)
            use_cache = False
            if decoder_input_ids is None and decoder_inputs_embeds is None:
                decoder_input_ids = self.prepare_decoder_input_ids_from_labels(labels)
        outputs = self.model(input_ids, attention_mask=attention_mask, decoder_input_ids=decoder_input_ids,
                             decoder_attention_mask=decoder_attention_mask, encoder_outputs=encoder_outputs,
                             cache=cache, inputs_embeds=inputs_embeds, decoder_inputs_embeds=decoder_inputs_embeds,
                             use_cache=use_cache, output_attentions=output_attentions,
                             output_hidden_states=output_hidden_states)
        # "We ... use the usual learned linear transformation and softmax function to convert the decoder output to
        # predicted next-token probabilities" (Section 3.4); the softmax is left to the loss and to generate().
        logits = self.lm_head(outputs.last_hidden_state)
        if self.final_logits_bias is not None:
            logits = logits + self.final_logits_bias.to(logits.device)  # device_map="auto" may place it elsewhere

        loss = None
        if labels is not None:
            # Plain cross-entropy, as transformers' seq2seq models return. Label smoothing of value 0.1, which "hurts
            # perplexity ... but improves accuracy and BLEU" (Section 5.4), is a setting of training: the trainer
            # smooths the logits' loss (TrainingArguments.label_smoothing_factor).
            labels = labels.to(logits.device)
            loss = LabelSmoothedCrossEntropy.apply(logits.flatten(0, 1), labels.flatten(), 0.0)
            # `is None`, not `or`: the truth of a tensor count would wait for the device.
            count = num_items_in_batch if num_items_in_batch is not None else (labels != -100).sum()
            loss = loss / count
        return with_cache(
            Seq2SeqLMOutput, cache_of(outputs), loss=loss, logits=logits,
            decoder_hidden_states=outputs.decoder_hidden_states, decoder_attentions=outputs.decoder_attentions,
            cross_attentions=outputs.cross_attentions, encoder_last_hidden_state=outputs.encoder_last_hidden_state,
            encoder_hidden_states=outputs.encoder_hidden_states, encoder_attentions=outputs.encoder_attentions,
        )

    def create_masks_for_generate(self, attention_mask=None, **kwargs):
        """generate()'s hook for compilable (static) caches: the decoder builds its masks itself, from the 2-D
        padding mask and the cache, so the mask passes through unchanged."""
        return attention_mask

    def _reorder_cache(self, cache: EncoderDecoderCache, beam_idx: torch.Tensor) -> EncoderDecoderCache:
        """Beam search's reordering hook: the decoder's keys and values follow their beams.

        The encoder's stay where they are: beams never leave their sentence, and every beam of a sentence holds the
        same encoder keys and values, so moving them (a copy of the whole cross-attention cache per step) changes
        nothing.
        """
        cache.self_attention_cache.reorder_cache(beam_idx)
        return cache

    def generate(self, inputs=None, generation_config=None, compile_decoding=None, **kwargs):
        """generate(), where the output length defaults to the paper's "input length + 50" (Section 6.1).

        The offset comes from generation_config.max_length_offset, capped at max_position_embeddings; max_length or
        max_new_tokens override it. compile_decoding (default: generation_config.compile_decoding) runs greedy search
        through a compiled decoding step (compiled_greedy_search): the same tokens, fewer milliseconds per token.
        The guards' fields (GUARDS: max_length_a, max_length_b, repetition_guard_ngram_size,
        repetition_guard_max_occurrences) may be given as keyword arguments too; None turns one off.
        """
        overrides = {name: kwargs.pop(name) for name in GUARDS if name in kwargs}
        if overrides:
            with generation_guards(**overrides):
                return self.generate(inputs, generation_config, compile_decoding, **kwargs)
        config = generation_config if generation_config is not None else self.generation_config
        offset = getattr(config, "max_length_offset", None)
        source = inputs if inputs is not None else kwargs.get("input_ids")
        explicit = ("max_length", "max_new_tokens")
        if offset is not None and source is not None and not any(kwargs.get(k) is not None for k in explicit):
            kwargs["max_length"] = min(source.shape[1] + offset, self.config.max_position_embeddings)
        if compile_decoding is None:
            compile_decoding = bool(getattr(config, "compile_decoding", False)) or COMPILE_DECODING.get()
        token = COMPILE_DECODING.set(compile_decoding)
        try:
            return super().generate(inputs, generation_config=generation_config, **kwargs)
        finally:
            COMPILE_DECODING.reset(token)

    def _get_logits_processor(self, generation_config, input_ids_seq_length=None, encoder_input_ids=None,
                              prefix_allowed_tokens_fn=None, logits_processor=None, device=None, model_kwargs=None,
                              negative_prompt_ids=None, negative_prompt_attention_mask=None) -> LogitsProcessorList:
        """generate()'s logits processors, then the guards (guard_processors) that the call's settings leave on."""
        processors = super()._get_logits_processor(
            generation_config, input_ids_seq_length, encoder_input_ids, prefix_allowed_tokens_fn, logits_processor,
            device, model_kwargs, negative_prompt_ids, negative_prompt_attention_mask)
        processors.extend(guard_processors(self.config, generation_config, input_ids_seq_length or 1,
                                           encoder_input_ids, model_kwargs or {}))
        return processors

    def _sample(self, input_ids, logits_processor, stopping_criteria, generation_config, synced_gpus=False,
                streamer=None, **model_kwargs):
        """generate()'s greedy search and sampling; with compile_decoding, greedy search runs compiled where it can
        (compiled_greedy_search_applies) and gives the same tokens."""
        if COMPILE_DECODING.get() and compiled_greedy_search_applies(self, generation_config, synced_gpus, streamer,
                                                                     model_kwargs):
            return compiled_greedy_search(self, input_ids, logits_processor, stopping_criteria, generation_config,
                                          model_kwargs)
        return super()._sample(input_ids, logits_processor, stopping_criteria, generation_config,
                               synced_gpus=synced_gpus, streamer=streamer, **model_kwargs)


# Whether the generate() call under way decodes compiled; a context variable, as generate() may run in several threads.
COMPILE_DECODING = contextvars.ContextVar("compile_decoding", default=False)

# The guards against runaway outputs (issue 31) and their defaults, as generation_config fields; None turns one off.
# max_length_a, max_length_b: each sentence's output stops at int(a * source tokens + b) tokens, </s> included, on
# both sides (fairseq's max_len_a * src_len + max_len_b, per sentence). 1.5 and 5: 3 of 31,014 Multi30k references
# (train, val, test2016) de->en and 16 en->de are longer than that (both < 0.1%).
# repetition_guard_ngram_size, repetition_guard_max_occurrences: a token that would make an n-gram of the output
# occur more than max_occurrences times is forbidden, unless the source holds that n-gram as often (a shared
# vocabulary: names and numbers that repeat there may repeat). Bigrams twice: a word bigram three times, or a token
# four times in a row, is what benchmarks/bench_robustness.py calls degenerate; 22 de->en and 13 en->de Multi30k
# references (0.07%, 0.04%) hold a bigram three times.
GUARDS = {"max_length_a": 1.5, "max_length_b": 5, "repetition_guard_ngram_size": 2,
          "repetition_guard_max_occurrences": 2}
# Guard settings that override generation_config's for the calls within generation_guards().
GUARD_OVERRIDES = contextvars.ContextVar("guard_overrides", default=None)


@contextlib.contextmanager
def generation_guards(**settings):
    """Within it, generate() uses these guard settings (GUARDS' names; None turns one off) over generation_config's
    (the command line's --no-guards, the benchmarks' --guards)."""
    unknown = set(settings) - set(GUARDS)
    if unknown:
        raise ValueError(f"unknown guard settings {sorted(unknown)}: choose from {sorted(GUARDS)}")
    token = GUARD_OVERRIDES.set({**(GUARD_OVERRIDES.get() or {}), **settings})
    try:
        yield
    finally:
        GUARD_OVERRIDES.reset(token)


def guard_settings(generation_config) -> dict:
    """The guards' settings for a call: generation_guards()'s, else generation_config's fields; a config without
    them (a model saved before the guards, a converted Marian model) has them off."""
    overrides = GUARD_OVERRIDES.get() or {}
    return {name: overrides[name] if name in overrides else getattr(generation_config, name, None) for name in GUARDS}


def guard_processors(config, generation_config, prompt_length: int, source_ids, model_kwargs) -> list:
    """The guards' logits processors for a generate() call: RepeatedNgramGuard, then SourceLengthBound, whose forced
    </s> comes last so nothing overrides it."""
    settings = guard_settings(generation_config)
    eos = generation_config.eos_token_id if generation_config.eos_token_id is not None else config.eos_token_id
    if eos is None:
        return []  # nothing ends a sequence, so there is no </s> to force nor to spare
    eos = torch.tensor([eos] if isinstance(eos, int) else list(eos))
    if source_ids is not None and (source_ids.dim() != 2 or source_ids.is_floating_point() or (source_ids < 0).any()):
        source_ids = None  # inputs_embeds, or a placeholder: no source tokens to read
    mask = model_kwargs.get("attention_mask")
    if mask is None and source_ids is not None:
        mask = source_ids != config.pad_token_id
    processors = []
    if settings["repetition_guard_ngram_size"] and settings["repetition_guard_max_occurrences"] is not None:
        processors.append(RepeatedNgramGuard(settings["repetition_guard_ngram_size"],
                                             settings["repetition_guard_max_occurrences"], prompt_length, eos,
                                             source_ids, mask))
    if settings["max_length_a"] is not None:
        if mask is not None:
            lengths = mask.sum(-1)
        else:
            encoder_states = model_kwargs["encoder_outputs"].last_hidden_state
            lengths = torch.full(encoder_states.shape[:1], encoder_states.shape[1], device=encoder_states.device)
        processors.append(SourceLengthBound(lengths, settings["max_length_a"], settings["max_length_b"] or 0,
                                            prompt_length, eos))
    return processors


def per_row(values: torch.Tensor, rows: int) -> torch.Tensor:
    """Per-sentence values for the `rows` sequences that generate() decodes: each sentence's beams (or returned
    sequences) are consecutive rows, as generate() expands its inputs."""
    return values if values.shape[0] == rows else values.repeat_interleave(rows // values.shape[0], dim=0)


class SourceLengthBound(LogitsProcessor):
    """Forces </s> for each sequence once it reaches its own bound: int(a * source tokens + b) output tokens, </s>
    included (both counts with </s>), as fairseq's max_len_a * src_len + max_len_b but per sentence. The forced </s>
    scores 0 and everything else -inf, as transformers' ForcedEOSTokenLogitsProcessor does at max_length, which beam
    search finishes a hypothesis on."""

    def __init__(self, source_lengths: torch.Tensor, a: float, b: float, prompt_length: int, eos: torch.Tensor):
        self.limits = (a * source_lengths.double() + b).floor().long().clamp(min=1)
        self.first_limit = int(self.limits.min())  # read once, so that the steps before it cost nothing
        self.prompt_length = prompt_length
        self.eos = eos.to(source_lengths.device)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        generated = input_ids.shape[1] - self.prompt_length
        if generated + 1 < self.first_limit:
            return scores
        force = (generated + 1 >= per_row(self.limits, input_ids.shape[0]))[:, None]
        eos_only = torch.full_like(scores[:1], -math.inf)
        eos_only[:, self.eos] = 0
        return torch.where(force, eos_only, scores)


class RepeatedNgramGuard(LogitsProcessor):
    """Forbids a token that would make an n-gram of the output occur more than max_occurrences times, unless the
    source holds that n-gram at least as often; </s> is never forbidden. Vectorised over the rows and the output's
    n-grams: the n-grams that end in each candidate token are the output's windows that start with its last n - 1
    tokens."""

    def __init__(self, n: int, max_occurrences: int, prompt_length: int, eos: torch.Tensor,
                 source_ids: torch.Tensor | None = None, source_mask: torch.Tensor | None = None):
        self.n, self.max_occurrences, self.prompt_length = n, max_occurrences, prompt_length
        self.eos = eos.to(source_ids.device) if source_ids is not None else eos
        self.source_windows = self.source_valid = None
        if source_ids is not None and source_ids.shape[1] >= n:
            self.source_windows = source_ids.unfold(1, n, 1)
            valid = source_mask.bool() if source_mask is not None else torch.ones_like(source_ids, dtype=torch.bool)
            valid = valid[:: valid.shape[0] // source_ids.shape[0]]  # one row per sentence, as source_ids
            self.source_valid = valid.unfold(1, n, 1).all(-1)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        output = input_ids[:, self.prompt_length:]
        if output.shape[1] - self.n + 1 < self.max_occurrences:
            return scores  # too short to hold an n-gram max_occurrences times
        context = output[:, output.shape[1] - self.n + 1:, None]  # the last n - 1 tokens, (rows, n - 1, 1)
        windows = output.unfold(1, self.n, 1)  # (rows, windows, n)
        followers = windows[..., -1]
        matches = (windows[..., :-1] == context.transpose(1, 2)).all(-1)
        # For each window, how often the n-gram (context, its follower) is in the output already: the same for every
        # window with that follower, so the writes below agree where a token repeats.
        counts = ((followers[:, :, None] == followers[:, None, :]) & matches[:, None, :]).sum(-1)
        banned = (counts >= self.max_occurrences) & ~torch.isin(followers, self.eos.to(followers.device))
        if self.source_windows is not None:
            banned &= counts >= self.source_counts(context.transpose(1, 2), followers)
        rows = torch.arange(output.shape[0], device=output.device)[:, None].expand_as(followers)
        current = scores[rows, followers]
        return scores.index_put((rows, followers), torch.where(banned, -math.inf, current))

    def source_counts(self, context: torch.Tensor, followers: torch.Tensor) -> torch.Tensor:
        """How often the source holds each n-gram (context, follower): (rows, windows)."""
        windows = per_row(self.source_windows, followers.shape[0])
        valid = per_row(self.source_valid, followers.shape[0])
        starts = (windows[..., :-1] == context).all(-1) & valid
        return ((followers[:, :, None] == windows[:, None, :, -1]) & starts[:, None, :]).sum(-1)


@contextlib.contextmanager
def compiled_decoding():
    """Within it, generate() decodes as with compile_decoding=True wherever the call and its config leave it unset
    (the command line's --compile-decoding)."""
    token = COMPILE_DECODING.set(True)
    try:
        yield
    finally:
        COMPILE_DECODING.reset(token)


def decoding_step(model, decoder_input_ids, cache, encoder_hidden_states, encoder_attention_mask) -> torch.Tensor:
    """One step of the decoder over a static cache: the next token's logits in fp32, as greedy search reads them."""
    outputs = model(encoder_outputs=(encoder_hidden_states,), attention_mask=encoder_attention_mask,
                    decoder_input_ids=decoder_input_ids, cache=cache, use_cache=True)
    return outputs.logits[:, -1].float()


# Compiled once per process and model. Inductor's default mode: on a CPU, "reduce-overhead" has no CUDA graphs to give.
# The cache's length, the source's length and, from the second batch size on, the batch are dynamic dimensions, so
# other sentences reuse the graph (docs/performance.md, compiled decoding).
compiled_decoding_step = torch.compile(decoding_step, fullgraph=True)


def compiled_greedy_search_applies(model, generation_config, synced_gpus, streamer, model_kwargs) -> bool:
    """Whether compiled_greedy_search can stand in for generate()'s own loop: greedy search returning the sequences
    alone, on an encoder output, with the decoder's padding mask not given and the model in eval mode, on
    transformers 5."""
    return (
        COMPILES_DECODING
        and not generation_config.do_sample
        and not generation_config.return_dict_in_generate
        and not synced_gpus
        and streamer is None
        and generation_config.use_cache
        and not model.training
        and model_kwargs.get("encoder_outputs") is not None
        and model_kwargs.get("decoder_attention_mask") is None
        and not torch.is_grad_enabled()
    )


def static_decoding_cache(config: VanillaTransformerConfig, max_length: int, source_length: int) -> EncoderDecoderCache:
    """Preallocated keys and values for the decoder's self-attention (max_length slots) and for its attention over
    the source: one layer each per decoder layer."""
    def layers(length: int) -> Cache:
        return Cache(layers=[StaticLayer(max_cache_len=length) for _ in range(config.decoder_layers)])

    return EncoderDecoderCache(layers(max_length), layers(source_length))


def mark_lengths_dynamic(cache: EncoderDecoderCache, *source_tensors: torch.Tensor | None) -> None:
    """Mark the cache's and the source's lengths as dynamic dimensions of the compiled step: one graph for all."""
    for layer in cache.self_attention_cache.layers + cache.cross_attention_cache.layers:
        for tensor in (layer.keys, layer.values):
            torch._dynamo.maybe_mark_dynamic(tensor, 2)
    for tensor in source_tensors:
        if tensor is not None:
            torch._dynamo.maybe_mark_dynamic(tensor, 1)


def compiled_greedy_search(model, input_ids, logits_processor, stopping_criteria, generation_config, model_kwargs):
    """generate()'s greedy search (transformers' _sample without sampling), each step after the first through
    compiled_decoding_step over a static cache. The logits processors and stopping criteria are generate()'s own,
    applied as it applies them, so the tokens are the same as eager decoding's."""
    encoder_states = model_kwargs["encoder_outputs"].last_hidden_state
    encoder_mask = model_kwargs.get("attention_mask")
    cache = static_decoding_cache(model.config, generation_config.max_length, encoder_states.shape[1])
    # The first step, eager: it writes the decoder's prefix and the source's keys and values into the cache.
    logits = decoding_step(model, input_ids, cache, encoder_states, encoder_mask)
    mark_lengths_dynamic(cache, encoder_states, encoder_mask)
    pad_token_id = generation_config._pad_token_tensor
    has_eos_stopping_criteria = any(hasattr(criteria, "eos_token_id") for criteria in stopping_criteria)
    unfinished_sequences = torch.ones(input_ids.shape[0], dtype=torch.long, device=input_ids.device)
    while True:
        next_token_scores = logits_processor(input_ids, logits)
        next_tokens = torch.argmax(next_token_scores, dim=-1)
        if has_eos_stopping_criteria:
            next_tokens = next_tokens * unfinished_sequences + pad_token_id * (1 - unfinished_sequences)
        input_ids = torch.cat([input_ids, next_tokens[:, None]], dim=-1)
        unfinished_sequences = unfinished_sequences & ~stopping_criteria(input_ids, next_token_scores)
        if unfinished_sequences.max() == 0:
            return input_ids
        logits = compiled_decoding_step(model, next_tokens[:, None], cache, encoder_states, encoder_mask)


__all__ = [
    "VanillaTransformerPreTrainedModel",
    "VanillaTransformerModel",
    "VanillaTransformerForConditionalGeneration",
    "sinusoidal_table",
    "shift_tokens_right",
]
