"""The two pictures people know from the paper: attention between the sentences, and the positional encodings."""

from pathlib import Path

import matplotlib
import torch

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from .modeling import sinusoidal_table  # noqa: E402


@torch.inference_mode()
def cross_attention(model, tokenizer, source: str, layer: int | None = None, head: int | None = None, **generate_kwargs):
    """The translation of `source` and its cross-attention weights (target x source).

    layer/head select one layer or head; None averages over them. One the model does not have is refused by number.
    """
    config = model.config
    for name, value, count in (("layer", layer, config.decoder_layers), ("head", head, config.num_attention_heads)):
        if value is not None and not 0 <= value < count:
            raise ValueError(f"--{name} {value}: the model has {count} decoder {name}s, numbered 0 to {count - 1}")
    model.eval()
    batch = tokenizer([source], return_tensors="pt").to(model.device)
    output = model.generate(**batch, **generate_kwargs)[0]
    target = output[1:]  # without the decoder start token
    if (target == tokenizer.eos_token_id).any():
        target = target[: int((target == tokenizer.eos_token_id).nonzero()[0]) + 1]
    decoder_input_ids = output[None, : len(target)]
    forward = model(**batch, decoder_input_ids=decoder_input_ids, output_attentions=True)
    weights = torch.stack(forward.cross_attentions)[:, 0]  # (layers, heads, target, source)
    weights = weights[layer] if layer is not None else weights.mean(0)
    weights = weights[head] if head is not None else weights.mean(0)
    return target.tolist(), batch["input_ids"][0].tolist(), weights


def plot_attention(model, tokenizer, source: str, path: str | Path, layer: int | None = None,
                   head: int | None = None, **generate_kwargs) -> str:
    """Write a heatmap of the cross-attention of source's translation; returns the translation."""
    target, source_ids, weights = cross_attention(model, tokenizer, source, layer, head, **generate_kwargs)
    source_tokens = [tokenizer.decode([i]) for i in source_ids]
    target_tokens = [tokenizer.decode([i]) for i in target]
    figure, axis = plt.subplots(figsize=(0.45 * len(source_tokens) + 2, 0.4 * len(target_tokens) + 2))
    axis.imshow(weights.float().cpu().numpy(), cmap="viridis", aspect="auto")
    axis.set_xticks(range(len(source_tokens)), source_tokens, rotation=90)
    axis.set_yticks(range(len(target_tokens)), target_tokens)
    where = f"layer {layer}" if layer is not None else "mean of layers"
    which = f"head {head}" if head is not None else "mean of heads"
    axis.set_title(f"encoder-decoder attention ({where}, {which})")
    axis.set_xlabel("source")
    axis.set_ylabel("translation")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return tokenizer.decode(target, skip_special_tokens=True)


def plot_positional_encoding(path: str | Path, positions: int = 100, d_model: int = 512,
                             layout: str = "interleaved") -> None:
    """The sinusoidal table PE(pos, i) as a heatmap, with a few of its waves below."""
    table = sinusoidal_table(positions, d_model, layout)
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(10, 8), height_ratios=(2, 1))
    image = top.imshow(table.numpy(), cmap="RdBu", aspect="auto")
    top.set(xlabel="dimension i", ylabel="position", title=f"sinusoidal positional encoding, d_model={d_model}")
    figure.colorbar(image, ax=top)
    for dimension in [d for d in (4, 20, 40, 80) if d < d_model] or [0]:  # sines of falling frequency
        bottom.plot(table[:, dimension].numpy(), label=f"dim {dimension}")
    bottom.set(xlabel="position", ylabel="PE")
    bottom.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
