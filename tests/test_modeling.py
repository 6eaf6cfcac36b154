"""The model's contract: causality, padding, cache, attention paths, loss, positions, learning, errors."""

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import random_batch, tiny_model
from transformers.cache_utils import DynamicCache, EncoderDecoderCache, StaticCache

from vanilla_transformer import VanillaTransformerConfig, VanillaTransformerForConditionalGeneration, modeling_kernels
from vanilla_transformer.modeling import eager_attention_forward, sinusoidal_table
from vanilla_transformer.modeling_compat import CACHE_FIELD
from vanilla_transformer.modeling_kernels import (
    LabelSmoothedCrossEntropy,
    apply_dropout,
    attention_function,
    prefers_eager,
)

# The model's variants: the paper's (post-norm, sinusoidal) and the options people switch on.
VARIANTS = {
    "paper": {},
    "pre-norm": {"norm_first": True},
    "learned-positions": {"position_embedding": "learned"},
    "marian-like": {"activation_function": "swish", "sinusoidal_layout": "split", "add_final_logits_bias": True},
    "untied": {"share_embeddings": False, "tie_word_embeddings": False, "decoder_vocab_size": 77},
}


def padded_batch(lengths, pad_id=0, seed=0):
    """Right-padded source ids and their attention mask, one row per length."""
    rows = [random_batch(1, n, seed=seed + i)[0] for i, n in enumerate(lengths)]
    ids = torch.full((len(rows), max(lengths)), pad_id)
    mask = torch.zeros_like(ids)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = row
        mask[i, : len(row)] = 1
    return ids, mask, rows


def strip(tokens: torch.Tensor, eos_id: int = 2) -> list[int]:
    """Generated ids up to and including the first </s>: what follows is filler."""
    tokens = tokens.tolist()
    return tokens[: tokens.index(eos_id) + 1] if eos_id in tokens else tokens


@pytest.mark.parametrize("variant", VARIANTS)
def test_decoder_is_causal(variant):
    model = tiny_model(**VARIANTS[variant])
    src = random_batch(2, 9, seed=1)
    tgt = random_batch(2, 10, vocab=model.config.target_vocab_size, seed=2)
    logits = model(input_ids=src, decoder_input_ids=tgt).logits
    for t in range(tgt.shape[1] - 1):
        changed = tgt.clone()
        changed[:, t + 1 :] = random_batch(2, tgt.shape[1] - t - 1, vocab=model.config.target_vocab_size, seed=10 + t)
        changed_logits = model(input_ids=src, decoder_input_ids=changed).logits
        torch.testing.assert_close(changed_logits[:, : t + 1], logits[:, : t + 1], atol=1e-6, rtol=0)
        assert not torch.allclose(changed_logits[:, t + 1 :], logits[:, t + 1 :])


@pytest.mark.parametrize("variant", ["paper", "pre-norm"])
def test_padding_does_not_change_logits_or_translations(variant):
    model = tiny_model(**VARIANTS[variant])
    src, mask, rows = padded_batch([3, 9, 6, 1])
    tgt = random_batch(len(rows), 7, seed=5)
    batched = model(input_ids=src, attention_mask=mask, decoder_input_ids=tgt).logits
    for settings in ({"num_beams": 1}, {"num_beams": 4}):
        batched_out = model.generate(src, attention_mask=mask, max_new_tokens=12, **settings)
        for i, row in enumerate(rows):
            alone = model(input_ids=row[None], decoder_input_ids=tgt[i : i + 1]).logits
            torch.testing.assert_close(batched[i : i + 1], alone, atol=1e-5, rtol=0)
            alone_out = model.generate(row[None], max_new_tokens=12, **settings)
            assert strip(batched_out[i]) == strip(alone_out[0]), settings


@pytest.mark.parametrize("variant", VARIANTS)
def test_incremental_decoding_with_cache_equals_full_forward(variant):
    model = tiny_model(**VARIANTS[variant])
    src, mask, _ = padded_batch([5, 8, 2])
    tgt = random_batch(3, 9, vocab=model.config.target_vocab_size, seed=3)
    full = model(input_ids=src, attention_mask=mask, decoder_input_ids=tgt).logits

    encoder_outputs = model.get_encoder()(src, mask)
    cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
    steps = []
    for t in range(tgt.shape[1]):
        out = model(encoder_outputs=encoder_outputs, attention_mask=mask, decoder_input_ids=tgt[:, t : t + 1],
                    cache=cache, use_cache=True)
        cache = getattr(out, CACHE_FIELD)
        steps.append(out.logits)
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=0)

    # A prefix of several tokens, then one more: the cached causal mask must line up with the absolute positions.
    cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
    first = model(encoder_outputs=encoder_outputs, attention_mask=mask, decoder_input_ids=tgt[:, :4], cache=cache,
                  use_cache=True)
    rest = model(encoder_outputs=encoder_outputs, attention_mask=mask, decoder_input_ids=tgt[:, 4:],
                 cache=getattr(first, CACHE_FIELD), use_cache=True)
    torch.testing.assert_close(torch.cat([first.logits, rest.logits], dim=1), full, atol=1e-5, rtol=0)


def test_static_cache_decodes_step_by_step_as_the_full_forward_does():
    """A preallocated cache (for torch.compile): its unwritten slots must stay hidden, padding in the target too."""
    model = tiny_model()
    src, mask, _ = padded_batch([5, 8, 2])
    tgt = random_batch(3, 9, seed=3)
    tgt_mask = torch.ones_like(tgt)
    tgt_mask[0, 2] = 0
    full = model(input_ids=src, attention_mask=mask, decoder_input_ids=tgt, decoder_attention_mask=tgt_mask).logits

    encoder_outputs = model.get_encoder()(src, mask)
    cache = EncoderDecoderCache(StaticCache(config=model.config, max_cache_len=16),
                                StaticCache(config=model.config, max_cache_len=src.shape[1]))
    steps = [model(encoder_outputs=encoder_outputs, attention_mask=mask, decoder_input_ids=tgt[:, :4],
                   decoder_attention_mask=tgt_mask[:, :4], cache=cache, use_cache=True).logits]
    for t in range(4, tgt.shape[1]):
        steps.append(model(encoder_outputs=encoder_outputs, attention_mask=mask, decoder_input_ids=tgt[:, t : t + 1],
                           decoder_attention_mask=tgt_mask[:, : t + 1], cache=cache, use_cache=True).logits)
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=0)


@pytest.mark.parametrize("num_beams", [1, 4])
def test_generate_with_a_static_cache_gives_the_same_tokens(num_beams):
    model = tiny_model()
    src, mask, _ = padded_batch([4, 7, 2, 6])
    dynamic = model.generate(src, attention_mask=mask, num_beams=num_beams, max_new_tokens=12)
    static = model.generate(src, attention_mask=mask, num_beams=num_beams, max_new_tokens=12,
                            cache_implementation="static")
    assert torch.equal(static, dynamic)


@pytest.mark.parametrize("num_beams", [1, 4])
def test_generate_with_and_without_cache_agree(num_beams):
    model = tiny_model()
    src, mask, _ = padded_batch([4, 7, 2, 6])
    with_cache = model.generate(src, attention_mask=mask, num_beams=num_beams, max_new_tokens=15, use_cache=True)
    without = model.generate(src, attention_mask=mask, num_beams=num_beams, max_new_tokens=15, use_cache=False)
    assert torch.equal(with_cache, without)


def test_bf16_autocast_stays_close_to_fp32():
    model = tiny_model(**VARIANTS["paper"])
    src, mask, _ = padded_batch([6, 3])
    tgt = random_batch(2, 5, seed=4)
    with torch.no_grad():
        fp32 = model(input_ids=src, attention_mask=mask, decoder_input_ids=tgt).logits
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16 = model(input_ids=src, attention_mask=mask, decoder_input_ids=tgt).logits
    assert bf16.dtype == torch.bfloat16
    assert (bf16.float() - fp32).abs().max() < 0.03 * fp32.abs().max()


def uses_eager(config, query: torch.Tensor, output_attentions: bool = False) -> bool:
    """Whether the model's attention takes the plain (eager) kernel for this query."""
    kernel = attention_function(config, query, output_attentions, eager=eager_attention_forward)
    return kernel is eager_attention_forward


@pytest.fixture
def avx512(monkeypatch):
    """The CPU taken for an AVX-512 one, whatever this one is."""
    monkeypatch.setattr(modeling_kernels, "cpu_capability", lambda: "AVX512")


def test_cpu_attention_path_follows_the_measured_crossings(avx512):
    """SDPA where benchmarks/bench_attention.py finds it faster on each CPU class, the plain path elsewhere."""
    config = tiny_model().config

    def plain(batch, length, dtype=torch.float32, capability="AVX512"):
        return prefers_eager(torch.zeros(batch, 4, length, 8, dtype=dtype), capability)

    assert not plain(128, 32)  # fp32 training and encoding
    assert not plain(8, 1)  # fp32, a few sequences decoding
    assert plain(16, 1) and plain(64, 1)  # fp32, many sequences or beams decoding
    assert plain(128, 32, torch.bfloat16)
    assert not plain(1, 1, torch.bfloat16)  # bf16, one sequence decoding
    # An AVX2-only CPU crosses later in fp32 and never in bf16; an unmeasured one keeps SDPA.
    assert not plain(128, 32, capability="AVX2") and not plain(16, 1, capability="AVX2")
    assert plain(64, 1, capability="AVX2")
    assert not plain(128, 32, torch.bfloat16, capability="AVX2")
    assert not plain(64, 1, capability="DEFAULT")
    assert not prefers_eager(torch.zeros(64, 4, 1, 8, device="meta"), "AVX512")  # only on CPU
    # The default kernel follows the crossings; the weights, when asked for, come from the plain path.
    query, training = torch.zeros(64, 4, 1, 8), torch.zeros(128, 4, 32, 8)
    assert uses_eager(config, query) and not uses_eager(config, training)
    assert uses_eager(config, training, output_attentions=True)
    config._attn_implementation = "sdpa"
    assert not uses_eager(config, query)  # the switch: SDPA everywhere


@pytest.mark.parametrize("how", ["from_pretrained", "set_attn_implementation"])
def test_sdpa_asked_for_by_name_is_sdpa_at_every_shape(tmp_path, how, avx512):
    tiny_model().save_pretrained(tmp_path)
    query = torch.zeros(64, 4, 1, 8)
    default = VanillaTransformerForConditionalGeneration.from_pretrained(tmp_path)
    assert uses_eager(default.config, query)
    if how == "from_pretrained":
        named = VanillaTransformerForConditionalGeneration.from_pretrained(tmp_path, attn_implementation="sdpa")
    else:
        named = default
        named.set_attn_implementation("sdpa")
    assert not uses_eager(named.config, query)
    named.save_pretrained(tmp_path / "again")  # how it was loaded is not saved with it
    again = VanillaTransformerForConditionalGeneration.from_pretrained(tmp_path / "again")
    assert uses_eager(again.config, query)


def test_decoding_many_beams_through_the_plain_path_gives_sdpa_tokens(monkeypatch):
    model = tiny_model()
    src, mask, _ = padded_batch([4, 7, 2, 6, 5])
    monkeypatch.setattr(modeling_kernels, "prefers_eager", lambda query: True)
    plain = model.generate(src, attention_mask=mask, num_beams=4, max_new_tokens=10)
    monkeypatch.setattr(modeling_kernels, "prefers_eager", lambda query: False)
    assert torch.equal(model.generate(src, attention_mask=mask, num_beams=4, max_new_tokens=10), plain)


@pytest.mark.parametrize("variant", VARIANTS)
def test_sdpa_and_eager_attention_agree(variant):
    model = tiny_model(**VARIANTS[variant])
    src, mask, _ = padded_batch([6, 3])
    tgt = random_batch(2, 5, vocab=model.config.target_vocab_size, seed=4)
    sdpa = model(input_ids=src, attention_mask=mask, decoder_input_ids=tgt).logits
    model.set_attn_implementation("eager")
    assert model.config._attn_implementation == "eager"
    eager = model(input_ids=src, attention_mask=mask, decoder_input_ids=tgt, output_attentions=True)
    torch.testing.assert_close(eager.logits, sdpa, atol=1e-5, rtol=0)
    config = model.config
    assert len(eager.encoder_attentions) == config.encoder_layers
    assert len(eager.cross_attentions) == config.decoder_layers
    # Attention weights are distributions, and nothing attends to source padding.
    cross = eager.cross_attentions[0]
    torch.testing.assert_close(cross.sum(-1), torch.ones_like(cross.sum(-1)))
    assert cross[1, :, :, 3:].abs().max() == 0
    causal = eager.decoder_attentions[0]
    assert causal[0, :, 0, 1:].abs().max() == 0


def test_hidden_states_are_returned_per_layer():
    model = tiny_model()
    out = model(input_ids=random_batch(2, 5), decoder_input_ids=random_batch(2, 4), output_hidden_states=True)
    assert len(out.encoder_hidden_states) == model.config.encoder_layers + 1
    assert len(out.decoder_hidden_states) == model.config.decoder_layers + 1
    torch.testing.assert_close(out.encoder_hidden_states[-1], out.encoder_last_hidden_state)
    # The first is what enters the first layer: the embedded source.
    torch.testing.assert_close(out.encoder_hidden_states[0], model.get_encoder().embed(random_batch(2, 5), None))
    for states in (out.encoder_hidden_states, out.decoder_hidden_states):
        assert all(not torch.equal(a, b) for a, b in zip(states, states[1:]))


def test_misspelled_keyword_is_refused_by_name():
    model = tiny_model()
    src = random_batch(2, 5)
    with pytest.raises(TypeError, match="decoder_atention_mask"):
        model(input_ids=src, decoder_input_ids=src, decoder_atention_mask=torch.ones_like(src))
    with pytest.raises(TypeError, match="output_atentions"):
        model.model(input_ids=src, decoder_input_ids=src, output_atentions=True)


def test_loss_is_cross_entropy_and_the_fused_kernel_smooths_it_as_torch_does():
    model = tiny_model()
    src = random_batch(3, 6)
    labels = random_batch(3, 7, seed=8)
    labels[0, 5:] = -100
    labels[2, 2:] = -100
    out = model(input_ids=src, labels=labels)
    flat_logits, flat_labels = out.logits.reshape(-1, out.logits.shape[-1]), labels.reshape(-1)
    torch.testing.assert_close(out.loss, F.cross_entropy(flat_logits, flat_labels, ignore_index=-100))
    keep = labels != -100
    # The trainer's label-smoothed loss: the fused kernel's sum over the real tokens, divided by their number.
    smoothed = LabelSmoothedCrossEntropy.apply(flat_logits, flat_labels, 0.1) / keep.sum()
    torch.testing.assert_close(smoothed, F.cross_entropy(flat_logits, flat_labels, label_smoothing=0.1))

    # Written out: mean over real tokens of (1 - eps) * NLL + eps * mean_k(-log p_k).
    log_probs = out.logits.log_softmax(-1)
    nll = -log_probs[keep].gather(-1, labels[keep][:, None]).squeeze(-1)
    smooth = -log_probs[keep].mean(-1)
    torch.testing.assert_close(out.loss, nll.mean())
    torch.testing.assert_close(smoothed, (0.9 * nll + 0.1 * smooth).mean())

    # The decoder input is the labels shifted right; ignored positions become padding, and never count.
    expected = torch.cat([torch.full((3, 1), model.config.decoder_start_token_id), labels[:, :-1]], dim=1)
    expected[expected == -100] = model.config.pad_token_id
    assert torch.equal(model.prepare_decoder_input_ids_from_labels(labels), expected)
    changed = out.logits.detach().clone()
    changed[~keep] += torch.randn_like(changed[~keep])
    assert F.cross_entropy(changed.reshape(-1, 99), labels.reshape(-1)).item() == pytest.approx(out.loss.item())
    assert (LabelSmoothedCrossEntropy.apply(changed.reshape(-1, 99), labels.reshape(-1), 0.1) / keep.sum()).item() == (
        pytest.approx(smoothed.item()))


@pytest.mark.parametrize("p", [0.1, 0.3])
def test_dropout_keeps_one_minus_p_of_every_lane_and_scales_what_it_keeps(p):
    """Each 64-bit draw masks four neighbours: each of the four must be kept with probability 1 - p on its own."""
    x = (torch.rand(1_000_000, generator=torch.Generator().manual_seed(0)) + 1).requires_grad_()
    torch.manual_seed(0)
    out = apply_dropout(x, p, training=True)
    kept = out != 0
    lanes = kept.view(-1, 4).double().mean(0)
    assert (lanes - (1 - p)).abs().max() < 0.003  # 4 standard deviations of 250,000 draws
    torch.testing.assert_close(out[kept], x[kept] / (1 - p))
    out.backward(torch.full_like(x, 2.0))
    torch.testing.assert_close(x.grad, kept * 2.0 / (1 - p))
    torch.manual_seed(0)
    assert torch.equal(apply_dropout(x, p, training=True) != 0, kept)  # the seed decides the mask
    assert apply_dropout(x, p, training=False) is x


@pytest.mark.parametrize("epsilon", [0.0, 0.1])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_loss_matches_torch_cross_entropy_in_value_and_gradient(epsilon, dtype):
    # 40,000 classes make 52 rows per chunk, so 130 rows span three chunks, the last one short.
    torch.manual_seed(0)
    logits = (3 * torch.randn(130, 40_000)).to(dtype)
    labels = torch.randint(0, 40_000, (130,))
    labels[::7] = -100
    ours = logits.clone().requires_grad_()
    reference = logits.double().requires_grad_()  # torch's own loss, in float64
    loss = LabelSmoothedCrossEntropy.apply(ours, labels, epsilon)
    expected = F.cross_entropy(reference, labels, label_smoothing=epsilon, reduction="sum")
    (2 * loss).backward()
    (2 * expected).backward()
    torch.testing.assert_close(loss.double(), expected, rtol=1e-6, atol=0)
    assert ours.grad.dtype == dtype
    assert ours.grad[::7].abs().max() == 0  # ignored rows get no gradient
    rtol = 1e-5 if dtype == torch.float32 else 2**-8  # bf16 keeps 8 significant bits of the fp32 gradient
    torch.testing.assert_close(ours.grad.double(), reference.grad, rtol=rtol, atol=1e-6)


@pytest.mark.parametrize("d_model", [4, 32, 512])
def test_positional_encoding_is_the_papers_formula(d_model):
    table = sinusoidal_table(60, d_model)
    for pos in range(60):
        for i in range(d_model // 2):
            angle = pos / 10000 ** (2 * i / d_model)
            assert table[pos, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-6)
            assert table[pos, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-6)


def test_model_adds_the_encoding_to_scaled_embeddings():
    model = tiny_model()
    ids = random_batch(1, 6)
    encoder = model.get_encoder()
    expected = encoder.embed_tokens(ids) * math.sqrt(32) + sinusoidal_table(64, 32)[:6]
    torch.testing.assert_close(encoder.embed(ids, None), expected)


def test_gradient_checkpointing_gives_the_same_gradients():
    """Dropout included: the recomputed forward must draw the same masks."""
    def grads(checkpointing):
        model = tiny_model(dropout=0.3).train()
        if checkpointing:
            model.gradient_checkpointing_enable()
        torch.manual_seed(1)
        loss = model(input_ids=random_batch(2, 6), labels=random_batch(2, 5, seed=1)).loss
        loss.backward()
        return [p.grad.clone() for p in model.parameters() if p.grad is not None], model

    plain, _ = grads(False)
    checkpointed, model = grads(True)
    layers = [*model.model.encoder.layers, *model.model.decoder.layers]
    assert all(layer.gradient_checkpointing for layer in layers)  # transformers' GradientCheckpointingLayer
    for a, b in zip(plain, checkpointed, strict=True):
        torch.testing.assert_close(a, b)


def test_resize_token_embeddings_keeps_weights_tied():
    model = tiny_model(add_final_logits_bias=True)
    model.resize_token_embeddings(120)
    assert model.config.vocab_size == 120
    assert model.lm_head.weight.shape == (120, 32)
    assert model.lm_head.weight.data_ptr() == model.model.shared.weight.data_ptr()
    assert model.model.encoder.embed_tokens is model.model.decoder.embed_tokens
    assert model.final_logits_bias.shape == (1, 120)
    out = model(input_ids=torch.tensor([[110, 5, 2]]), labels=torch.tensor([[119, 2]]))
    assert out.logits.shape[-1] == 120


def test_tiny_model_memorises_16_pairs_and_generate_reproduces_them():
    torch.manual_seed(0)
    config = VanillaTransformerConfig.from_preset("tiny", d_model=64, d_ff=128)
    model = VanillaTransformerForConditionalGeneration(config)
    pairs = []
    for i in range(16):
        length = 3 + i % 5
        src = random_batch(1, length, seed=100 + i)[0]
        tgt = random_batch(1, length + 1, seed=200 + i)[0]
        pairs.append((torch.cat([src, torch.tensor([2])]), torch.cat([tgt, torch.tensor([2])])))
    src, mask, _ = padded_batch([len(s) for s, _ in pairs])
    for i, (s, _) in enumerate(pairs):
        src[i, : len(s)] = s
    labels = torch.full((16, max(len(t) for _, t in pairs)), -100)
    for i, (_, t) in enumerate(pairs):
        labels[i, : len(t)] = t

    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3, betas=(0.9, 0.98), eps=1e-9)
    model.train()
    for step in range(400):
        loss = model(input_ids=src, attention_mask=mask, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if loss.item() < 0.01:
            break
    assert loss.item() < 0.05, f"loss {loss.item():.4f} after {step + 1} steps"

    model.eval()
    for num_beams in (1, 4):
        out = model.generate(src, attention_mask=mask, num_beams=num_beams, max_new_tokens=12)
        for i, (_, target) in enumerate(pairs):
            generated = strip(out[i])
            assert generated[0] == config.decoder_start_token_id
            assert generated[1:] == target.tolist(), (num_beams, i)


def test_generation_defaults_are_the_papers():
    model = tiny_model()
    config = model.generation_config
    assert (config.num_beams, config.length_penalty, config.max_length_offset) == (4, 0.6, 50)
    src = random_batch(1, 7)
    # Untrained, the model never stops early, so without the guards' bound per sentence (test_generation_guards)
    # the output runs to input length + 50 ...
    assert model.generate(src, num_beams=1, max_length_a=None, repetition_guard_ngram_size=None).shape[1] == 7 + 50
    # ... unless a length is asked for.
    assert model.generate(src, num_beams=1, max_new_tokens=5).shape[1] == 6


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("num_attention_heads", 5, "divisible by num_attention_heads"),
        ("activation_function", "tanhh", "activation_function"),
        ("d_model", 0, "d_model"),
        ("encoder_layers", -1, "encoder_layers"),
        ("d_ff", 2.5, "d_ff"),
        ("dropout", 1.5, "dropout"),
        ("position_embedding", "rotary", "position_embedding"),
        ("sinusoidal_layout", "zigzag", "sinusoidal_layout"),
        ("pad_token_id", 500, "pad_token_id"),
    ],
)
def test_bad_config_values_name_the_field(field, value, message):
    with pytest.raises(ValueError, match=message):
        VanillaTransformerConfig.from_preset("tiny", **{field: value})


def test_unknown_preset_is_refused():
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        VanillaTransformerConfig.from_preset("huge")


def test_bad_inputs_give_clear_errors():
    model = tiny_model()
    with pytest.raises(ValueError, match="exceeds max_position_embeddings=64"):
        model(input_ids=random_batch(1, 65), decoder_input_ids=random_batch(1, 3))
    with pytest.raises(ValueError, match="labels contains id 99"):
        model(input_ids=random_batch(1, 5), labels=torch.tensor([[5, 99]]))
    with pytest.raises(ValueError, match="input_ids contains id 1000"):
        model(input_ids=torch.tensor([[5, 1000]]), decoder_input_ids=random_batch(1, 3))
    with pytest.raises(ValueError, match="labels contains id -5"):
        model(input_ids=random_batch(1, 5), labels=torch.tensor([[5, -5]]))


def test_sampling_and_ngram_blocking_work_through_generate():
    model = tiny_model()
    src, mask, _ = padded_batch([5, 8])
    torch.manual_seed(1)
    first = model.generate(src, attention_mask=mask, do_sample=True, top_k=20, num_beams=1, max_new_tokens=10)
    torch.manual_seed(1)
    again = model.generate(src, attention_mask=mask, do_sample=True, top_k=20, num_beams=1, max_new_tokens=10)
    assert torch.equal(first, again)
    greedy = model.generate(src, attention_mask=mask, num_beams=1, max_new_tokens=10)
    blocked = model.generate(src, attention_mask=mask, num_beams=4, no_repeat_ngram_size=2, max_new_tokens=10)
    # The untrained model repeats itself when left alone; with blocking, no bigram occurs twice.
    assert any(len(set(zip(row, row[1:]))) < len(row) - 1 for row in greedy.tolist())
    for row in blocked.tolist():
        bigrams = list(zip(row, row[1:]))
        assert len(bigrams) == len(set(bigrams))
