"""MarianMT (OPUS-MT) checkpoints in our model and back: the same post-norm encoder-decoder, weights renamed, nothing
retrained.

Marian differs from the paper in ways that are config options here: swish or gelu activations, sines and cosines in
two halves of the positional table, and a fixed bias on the logits.
"""

from pathlib import Path

import torch
from transformers import GenerationConfig, MarianConfig, MarianMTModel

from ..configuration import ACTIVATIONS, VanillaTransformerConfig
from ..model_folder import load_tokenizer, make_portable, model_source
from ..modeling import VanillaTransformerForConditionalGeneration
from ..staging import replaced_whole


# Fields that MarianConfig names as ours do.
SAME_FIELDS = ("vocab_size", "d_model", "encoder_layers", "decoder_layers", "dropout", "attention_dropout",
               "activation_dropout", "activation_function", "max_position_embeddings", "scale_embedding",
               "tie_word_embeddings", "pad_token_id", "bos_token_id", "decoder_start_token_id")


def convert_config(marian: MarianConfig) -> VanillaTransformerConfig:
    """Our config for a Marian one; a MarianConfig we cannot represent raises a ValueError naming the field."""
    pairs = [("decoder_attention_heads", "encoder_attention_heads"), ("decoder_ffn_dim", "encoder_ffn_dim")]
    for decoder_field, encoder_field in pairs:
        if getattr(marian, decoder_field) != getattr(marian, encoder_field):
            raise ValueError(
                f"MarianConfig.{decoder_field}={getattr(marian, decoder_field)} differs from "
                f"{encoder_field}={getattr(marian, encoder_field)}: both stacks share one value here"
            )
    for field in ("encoder_layerdrop", "decoder_layerdrop"):
        if getattr(marian, field):
            raise ValueError(f"MarianConfig.{field}={getattr(marian, field)} is not supported (LayerDrop)")
    if marian.activation_function not in ACTIVATIONS:
        raise ValueError(
            f"MarianConfig.activation_function={marian.activation_function!r} is not one of {sorted(ACTIVATIONS)}"
        )
    if getattr(marian, "normalize_before", False):
        raise ValueError("MarianConfig.normalize_before=True is not supported: Marian models are post-norm")
    eos = marian.eos_token_id[0] if isinstance(marian.eos_token_id, list) else marian.eos_token_id
    return VanillaTransformerConfig(
        **{field: getattr(marian, field) for field in SAME_FIELDS},
        decoder_vocab_size=None if marian.share_encoder_decoder_embeddings else marian.decoder_vocab_size,
        num_attention_heads=marian.encoder_attention_heads,
        d_ff=marian.encoder_ffn_dim,
        share_embeddings=marian.share_encoder_decoder_embeddings,
        position_embedding="sinusoidal",
        sinusoidal_layout="split",
        add_final_logits_bias=True,
        norm_first=False,
        layer_norm_eps=1e-5,  # torch's nn.LayerNorm default, which Marian uses
        eos_token_id=eos,
    )


# Marian's weight names -> ours (the fused q/k/v projections aside).
RENAMES = [(".encoder_attn.", ".cross_attn."), ("encoder_attn_layer_norm", "cross_attn_layer_norm"),
           ("final_layer_norm", "ffn_layer_norm"), (".fc1.", ".ffn.fc1."), (".fc2.", ".ffn.fc2.")]


def rename(name: str, to_marian: bool = False) -> str:
    for marian, ours in RENAMES:
        name = name.replace(ours, marian) if to_marian else name.replace(marian, ours)
    return name


def convert_state_dict(marian_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename Marian's weights to ours, fusing the q/k/v projections into one matrix."""
    state = {}
    for name, tensor in marian_state.items():
        if "embed_positions" in name:
            continue  # recomputed from the formula, never stored
        state[rename(name)] = tensor
    for name in [n for n in state if ".q_proj." in n]:
        prefix, kind = name.split(".q_proj.")
        if prefix.endswith("cross_attn"):
            state[f"{prefix}.kv_proj.{kind}"] = torch.cat([state.pop(f"{prefix}.{p}_proj.{kind}") for p in "kv"])
        else:
            state[f"{prefix}.qkv_proj.{kind}"] = torch.cat([state.pop(f"{prefix}.{p}_proj.{kind}") for p in "qkv"])
    return state


def convert_marian(marian: MarianMTModel) -> VanillaTransformerForConditionalGeneration:
    """Our model carrying a MarianMTModel's weights, decoding settings included."""
    config = convert_config(marian.config)
    model = VanillaTransformerForConditionalGeneration(config)
    state = convert_state_dict(marian.state_dict())
    if config.share_embeddings:
        # One matrix here; Marian keeps per-stack copies, which a real checkpoint holds equal to `shared`.
        for copy in ("model.encoder.embed_tokens.weight", "model.decoder.embed_tokens.weight"):
            if copy in state and not torch.equal(state.pop(copy), state["model.shared.weight"]):
                raise ValueError(f"{copy} differs from model.shared.weight although share_encoder_decoder_embeddings")
    missing, unexpected = model.load_state_dict(state, strict=False)
    # Tied copies (encoder/decoder embeddings, lm_head) may be absent from one side; nothing else may be.
    tied = {"model.encoder.embed_tokens.weight", "model.decoder.embed_tokens.weight", "lm_head.weight"}
    if set(missing) - tied or unexpected:
        raise ValueError(f"weights did not map: missing {sorted(set(missing) - tied)}, unexpected {sorted(unexpected)}")
    model.generation_config = GenerationConfig.from_dict(marian.generation_config.to_dict())
    model.generation_config.max_length_offset = None  # keep Marian's own length settings
    model.generation_config._from_model_config = False
    return model.to(marian.dtype).eval()


def convert_marian_checkpoint(source: str | Path, out_dir: str | Path) -> VanillaTransformerForConditionalGeneration:
    """Convert a Marian model folder or Hub repo id into a model folder of ours, with Marian's tokenizer as it is.

    out_dir must be a new or empty folder; everything is loaded and converted before anything is written.
    """
    source = model_source(source)
    refuse_to_overwrite(out_dir, source)
    marian = MarianMTModel.from_pretrained(source)
    tokenizer = load_tokenizer(source, "a Marian folder needs source.spm, target.spm and vocab.json")
    model = convert_marian(marian)
    with replaced_whole(out_dir) as staging:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        make_portable(staging)
    return model


def refuse_to_overwrite(out_dir: str | Path, source: str) -> None:
    """A FileExistsError naming out_dir unless it is a new or empty folder (so never the source model's own)."""
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        whose = " (the source model's own folder)" if Path(source).exists() and out_dir.samefile(source) else ""
        raise FileExistsError(f"{out_dir}: exists and is not an empty folder{whose}; name a new folder")


def residual_permutation(config: VanillaTransformerConfig) -> torch.Tensor:
    """Marian's dimension i is our dimension perm[i]: its split sinusoids (all sines, then all cosines) are the
    paper's interleaved ones in another order. Permuting every weight on the residual stream the same way is exact:
    attention, the FFN's inner layer and LayerNorm do not depend on the order of the model dimension."""
    if config.sinusoidal_layout == "split" or config.position_embedding != "sinusoidal":
        return torch.arange(config.d_model)
    return torch.cat([torch.arange(0, config.d_model, 2), torch.arange(1, config.d_model, 2)])


def export_config(config: VanillaTransformerConfig) -> MarianConfig:
    """A MarianConfig for our config; what Marian cannot represent raises a ValueError naming the field."""
    refused = {
        "norm_first": (config.norm_first, "Marian models are post-norm"),
        "position_embedding": (config.position_embedding != "sinusoidal", "Marian has sinusoids only"),
        "share_embeddings": (not config.share_embeddings, "separate vocabularies are not exported yet"),
        "tie_word_embeddings": (not config.tie_word_embeddings, "Marian ties its output projection"),
        "layer_norm_eps": (config.layer_norm_eps != 1e-5, "Marian's LayerNorm uses 1e-5"),
    }
    for field, (refuse, why) in refused.items():
        if refuse:
            raise ValueError(f"{field}={getattr(config, field)!r} cannot be exported to Marian: {why}")
    return MarianConfig(
        vocab_size=config.vocab_size, decoder_vocab_size=config.vocab_size, d_model=config.d_model,
        encoder_layers=config.encoder_layers, decoder_layers=config.decoder_layers,
        encoder_attention_heads=config.num_attention_heads, decoder_attention_heads=config.num_attention_heads,
        encoder_ffn_dim=config.d_ff, decoder_ffn_dim=config.d_ff, dropout=config.dropout,
        attention_dropout=config.attention_dropout, activation_dropout=config.activation_dropout,
        activation_function=config.activation_function, max_position_embeddings=config.max_position_embeddings,
        scale_embedding=config.scale_embedding, share_encoder_decoder_embeddings=True, tie_word_embeddings=True,
        pad_token_id=config.pad_token_id, eos_token_id=config.eos_token_id, bos_token_id=config.bos_token_id,
        decoder_start_token_id=config.decoder_start_token_id, forced_eos_token_id=None,
    )


def export_state_dict(model: VanillaTransformerForConditionalGeneration) -> dict[str, torch.Tensor]:
    """Our weights under Marian's names, q/k/v split again, every residual-stream dimension in Marian's order."""
    perm = residual_permutation(model.config)
    d = model.config.d_model
    state = {}
    for name, tensor in model.state_dict().items():
        if name == "lm_head.weight" or ".embed_tokens." in name:
            continue  # tied to model.shared in Marian
        if name == "final_logits_bias":
            state[name] = tensor
            continue
        if name == "model.shared.weight":
            state[name] = tensor[:, perm]
            continue
        writes = name.endswith(("out_proj.weight", "out_proj.bias", "fc2.weight", "fc2.bias")) or "layer_norm" in name
        tensor = tensor[perm] if writes else tensor[:, perm] if tensor.dim() == 2 else tensor
        name = rename(name, to_marian=True)
        if ".qkv_proj." in name or ".kv_proj." in name:
            fused = ".qkv_proj." if ".qkv_proj." in name else ".kv_proj."
            prefix, kind = name.split(fused)
            for part, chunk in zip("qkv" if fused == ".qkv_proj." else "kv", tensor.split(d)):
                state[f"{prefix}.{part}_proj.{kind}"] = chunk
        else:
            state[name] = tensor
    state.setdefault("final_logits_bias", torch.zeros(1, model.config.vocab_size))
    return state


def export_marian(model: VanillaTransformerForConditionalGeneration) -> MarianMTModel:
    """A MarianMTModel with our model's outputs (the reverse of convert_marian)."""
    marian = MarianMTModel(export_config(model.config)).eval()
    missing, unexpected = marian.load_state_dict(export_state_dict(model), strict=False)
    tied = {"model.encoder.embed_tokens.weight", "model.decoder.embed_tokens.weight", "lm_head.weight"}
    positions = {n for n in missing if "embed_positions" in n}  # Marian recomputes its table
    if set(missing) - tied - positions or unexpected:
        raise ValueError(f"weights did not map: missing {sorted(set(missing) - tied - positions)}, "
                         f"unexpected {sorted(unexpected)}")
    marian.generation_config = export_generation_config(model)
    return marian.to(model.dtype)


def export_generation_config(model: VanillaTransformerForConditionalGeneration) -> GenerationConfig:
    """Our decoding settings for Marian's generate(), which has no output length relative to the source.

    Ours stops a hypothesis at min(source length + max_length_offset, max_position_embeddings) tokens; Marian's gets
    max_length=max_position_embeddings, so the translations are the same wherever ours ends with </s> before source
    length + offset, and differ only for a hypothesis ours cuts there (one that never ends, which Marian lets run on
    to the positions' limit).
    """
    settings = model.generation_config.to_dict()
    if settings.pop("max_length_offset", None) is not None:
        settings["max_length"] = model.config.max_position_embeddings
    return GenerationConfig.from_dict(settings)


def export_marian_checkpoint(source: str | Path, out_dir: str | Path) -> MarianMTModel:
    """A MarianMTModel folder from a model folder of ours, with our tokenizer (which any transformers loads).

    out_dir must be a new or empty folder; everything is loaded and converted before anything is written.
    """
    source = model_source(source)
    refuse_to_overwrite(out_dir, source)
    model = VanillaTransformerForConditionalGeneration.from_pretrained(source).eval()
    tokenizer = load_tokenizer(source, "the Marian folder carries it")
    marian = export_marian(model)
    with replaced_whole(out_dir) as staging:
        marian.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
    return marian
