"""Parity with independent implementations: HF's MarianMTModel, and the paper's equations written out by hand."""

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_model
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer, MarianConfig, MarianMTModel
from transformers.cache_utils import DynamicCache, EncoderDecoderCache

from vanilla_transformer import VanillaTransformerForConditionalGeneration
from vanilla_transformer.convert.marian import convert_config, convert_marian, convert_marian_checkpoint
from vanilla_transformer.modeling_compat import CACHE_FIELD

PAD, EOS, VOCAB = 98, 0, 99


def opus_mt_like(seed: int = 0, **overrides) -> MarianMTModel:
    """A small random MarianMTModel with the options OPUS-MT models use."""
    torch.manual_seed(seed)
    settings = dict(
        vocab_size=VOCAB, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
        decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, activation_function="swish",
        scale_embedding=True, share_encoder_decoder_embeddings=True, tie_word_embeddings=True,
        pad_token_id=PAD, decoder_start_token_id=PAD, eos_token_id=EOS, forced_eos_token_id=EOS,
        max_position_embeddings=64, init_std=0.2,
    )
    config = MarianConfig(**{**settings, **overrides})
    model = MarianMTModel(config).eval()
    with torch.no_grad():
        model.final_logits_bias.normal_(0, 1.0)
    return model


def padded_sources(lengths, seed=0):
    generator = torch.Generator().manual_seed(seed)
    ids = torch.full((len(lengths), max(lengths)), PAD)
    mask = torch.zeros_like(ids)
    for i, n in enumerate(lengths):
        ids[i, : n - 1] = torch.randint(1, PAD, (n - 1,), generator=generator)
        ids[i, n - 1] = EOS
        mask[i, :n] = 1
    return ids, mask


@pytest.fixture(scope="module")
def pair():
    marian = opus_mt_like()
    return marian, convert_marian(marian)


def test_logits_and_loss_match_marian_on_a_padded_batch(pair):
    marian, ours = pair
    src, mask = padded_sources([7, 3, 9, 5])
    labels = torch.randint(1, PAD, (4, 6))
    labels[1, 4:] = -100
    with torch.no_grad():
        expected, actual = marian(input_ids=src, attention_mask=mask, labels=labels), ours(
            input_ids=src, attention_mask=mask, labels=labels)
    assert (expected.logits - actual.logits).abs().max() <= 1e-5
    assert abs(expected.loss.item() - actual.loss.item()) <= 1e-5


def test_incremental_decoding_matches_marian(pair):
    marian, ours = pair
    src, mask = padded_sources([6, 9, 4])
    tgt = torch.randint(1, PAD, (3, 7))
    with torch.no_grad():
        marian_enc, our_enc = marian.get_encoder()(src, mask), ours.get_encoder()(src, mask)
        marian_cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
        our_cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
        for t in range(tgt.shape[1]):
            step = tgt[:, t : t + 1]
            expected = marian(encoder_outputs=marian_enc, attention_mask=mask, decoder_input_ids=step,
                              use_cache=True, **{CACHE_FIELD: marian_cache})
            actual = ours(encoder_outputs=our_enc, attention_mask=mask, decoder_input_ids=step, use_cache=True,
                          cache=our_cache)
            marian_cache, our_cache = getattr(expected, CACHE_FIELD), getattr(actual, CACHE_FIELD)
            assert (expected.logits - actual.logits).abs().max() <= 1e-5, t


@pytest.mark.parametrize("num_beams", [1, 4])
def test_generate_matches_marian_token_for_token(pair, num_beams):
    marian, ours = pair
    src, mask = padded_sources([5, 9, 3, 7, 8, 4, 6, 9, 2, 5])
    settings = dict(attention_mask=mask, num_beams=num_beams, max_new_tokens=15)
    expected = marian.generate(src, **settings)
    actual = ours.generate(src, **settings)
    assert torch.equal(expected, actual)
    assert len({tuple(row.tolist()) for row in actual}) >= 4, "degenerate outputs would prove little"


def test_converted_folder_reloads_through_auto_class(pair, tmp_path):
    marian, _ = pair
    marian.save_pretrained(tmp_path / "marian")
    converted = convert_marian_checkpoint_without_tokenizer(tmp_path / "marian", tmp_path / "ours")
    loaded = AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "ours").eval()
    assert type(loaded) is VanillaTransformerForConditionalGeneration
    src, mask = padded_sources([4, 8])
    tgt = torch.randint(1, PAD, (2, 5))
    with torch.no_grad():
        expected = marian(input_ids=src, attention_mask=mask, decoder_input_ids=tgt).logits
        assert (loaded(input_ids=src, attention_mask=mask, decoder_input_ids=tgt).logits - expected).abs().max() <= 1e-5
    assert torch.equal(loaded.generate(src, attention_mask=mask, num_beams=4, max_new_tokens=10),
                       marian.generate(src, attention_mask=mask, num_beams=4, max_new_tokens=10))
    assert converted.config.sinusoidal_layout == "split"


def convert_marian_checkpoint_without_tokenizer(source, out_dir):
    """convert_marian_checkpoint for a folder that holds no tokenizer (building an OPUS-MT one needs a download)."""
    model = convert_marian(MarianMTModel.from_pretrained(source))
    model.save_pretrained(out_dir)
    return model


def test_untied_output_projection_converts_too():
    marian = opus_mt_like(tie_word_embeddings=False)
    # Real checkpoints hold Marian's per-stack embeddings equal to `shared`; a copy that differs cannot be shared.
    marian.model.encoder.embed_tokens = torch.nn.Embedding.from_pretrained(marian.model.shared.weight.detach() + 1)
    with pytest.raises(ValueError, match="differs from model.shared.weight"):
        convert_marian(marian)
    marian.model.encoder.embed_tokens.weight = marian.model.shared.weight
    marian.model.decoder.embed_tokens.weight = marian.model.shared.weight
    ours = convert_marian(marian)
    assert ours.lm_head.weight.data_ptr() != ours.model.shared.weight.data_ptr()
    src, mask = padded_sources([5, 3])
    tgt = torch.randint(1, PAD, (2, 4))
    with torch.no_grad():
        diff = marian(input_ids=src, attention_mask=mask, decoder_input_ids=tgt).logits - ours(
            input_ids=src, attention_mask=mask, decoder_input_ids=tgt).logits
    assert diff.abs().max() <= 1e-5


@pytest.mark.parametrize(
    "field, value",
    [("decoder_attention_heads", 2), ("decoder_ffn_dim", 128), ("encoder_layerdrop", 0.1),
     ("activation_function", "gelu_new")],
)
def test_unrepresentable_marian_configs_are_refused(field, value):
    config = opus_mt_like().config
    setattr(config, field, value)
    with pytest.raises(ValueError, match=f"MarianConfig.{field}"):
        convert_config(config)


def test_convert_checkpoint_reports_a_missing_folder(tmp_path):
    with pytest.raises(OSError):
        convert_marian_checkpoint(tmp_path / "no-such-model", tmp_path / "out")


def test_one_layer_encoder_matches_the_papers_equations():
    """Section 3: embeddings x sqrt(d) + PE, then LayerNorm(x + MultiHead(x, x, x)), LayerNorm(x + FFN(x))."""
    model = tiny_model(encoder_layers=1)
    encoder = model.get_encoder()
    layer = encoder.layers[0]
    d, h = 32, 4
    d_k = d // h
    ids = torch.tensor([[5, 17, 42, 8, 2, 0], [7, 9, 2, 0, 0, 0]])
    mask = (ids != 0).long()
    with torch.no_grad():
        actual = encoder(ids, mask).last_hidden_state

        def layer_norm(x, norm):
            mean = x.mean(-1, keepdim=True)
            var = ((x - mean) ** 2).mean(-1, keepdim=True)
            return (x - mean) / torch.sqrt(var + norm.eps) * norm.weight + norm.bias

        W_qkv, b_qkv = layer.self_attn.qkv_proj.weight, layer.self_attn.qkv_proj.bias
        W_q, W_k, W_v = W_qkv[:d], W_qkv[d : 2 * d], W_qkv[2 * d :]
        b_q, b_k, b_v = b_qkv[:d], b_qkv[d : 2 * d], b_qkv[2 * d :]
        W_o, b_o = layer.self_attn.out_proj.weight, layer.self_attn.out_proj.bias
        for b in range(ids.shape[0]):
            n = int(mask[b].sum())
            rows = []
            for pos in range(ids.shape[1]):
                pe = [math.sin(pos / 10000 ** (i / d)) if i % 2 == 0 else math.cos(pos / 10000 ** ((i - 1) / d))
                      for i in range(d)]
                rows.append(encoder.embed_tokens.weight[ids[b, pos]] * math.sqrt(d) + torch.tensor(pe))
            x = torch.stack(rows)
            heads = []
            for i in range(h):
                part = slice(i * d_k, (i + 1) * d_k)
                Q = x @ W_q[part].T + b_q[part]
                K = x[:n] @ W_k[part].T + b_k[part]  # padding is never attended to
                V = x[:n] @ W_v[part].T + b_v[part]
                heads.append(torch.softmax(Q @ K.T / math.sqrt(d_k), dim=-1) @ V)
            attention = torch.cat(heads, dim=-1) @ W_o.T + b_o
            x = layer_norm(x + attention, layer.self_attn_layer_norm)
            ffn = F.relu(x @ layer.ffn.fc1.weight.T + layer.ffn.fc1.bias) @ layer.ffn.fc2.weight.T + layer.ffn.fc2.bias
            x = layer_norm(x + ffn, layer.ffn_layer_norm)
            torch.testing.assert_close(actual[b, :n], x[:n], atol=1e-5, rtol=0)


def marian_tokenizer(data_dir, folder):
    """A MarianTokenizer with a small sentencepiece model trained on Multi30k val, as OPUS-MT ships them."""
    import json

    import sentencepiece
    from transformers import MarianTokenizer

    lines = [line for lang in ("de", "en") for line in (data_dir / f"multi30k/val.{lang}").read_text().splitlines()[:300]]
    (folder / "text.txt").write_text("\n".join(lines), encoding="utf-8")
    sentencepiece.SentencePieceTrainer.train(input=str(folder / "text.txt"), model_prefix=str(folder / "spm"),
                                             vocab_size=VOCAB, minloglevel=2)
    processor = sentencepiece.SentencePieceProcessor(model_file=str(folder / "spm.model"))
    pieces = [processor.id_to_piece(i) for i in range(processor.get_piece_size())]
    pieces = [p for p in pieces if p not in ("<s>", "</s>", "<unk>")]
    vocab = {"</s>": EOS, "<unk>": 1, **{p: i + 2 for i, p in enumerate(pieces)}}
    vocab["<pad>"] = PAD
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    return MarianTokenizer(str(folder / "spm.model"), str(folder / "spm.model"), str(folder / "vocab.json"))


def test_convert_marian_command_copies_tokenizer_and_keeps_translations(data_dir, tmp_path):
    from transformers import AutoTokenizer

    from vanilla_transformer.cli import main

    marian = opus_mt_like(seed=3)
    tokenizer = marian_tokenizer(data_dir, tmp_path)
    assert len(tokenizer) == VOCAB and tokenizer.pad_token_id == PAD
    marian.save_pretrained(tmp_path / "marian")
    tokenizer.save_pretrained(tmp_path / "marian")

    main(["convert-marian", str(tmp_path / "marian"), str(tmp_path / "ours")])

    ours = AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "ours").eval()
    copied = AutoTokenizer.from_pretrained(tmp_path / "ours")
    sentences = ["Ein Mann fährt Fahrrad.", "Zwei Hunde spielen im Schnee.", "A woman is reading."]
    batch = copied(sentences, return_tensors="pt", padding=True)
    assert torch.equal(batch["input_ids"], tokenizer(sentences, return_tensors="pt", padding=True)["input_ids"])
    expected = tokenizer.batch_decode(marian.generate(**batch, num_beams=4, max_new_tokens=12), skip_special_tokens=True)
    actual = copied.batch_decode(ours.generate(**batch, num_beams=4, max_new_tokens=12), skip_special_tokens=True)
    assert actual == expected


@pytest.mark.parametrize("overrides", [{}, dict(activation_function="swish", add_final_logits_bias=True)])
def test_export_marian_gives_our_logits_and_translations(tmp_path, overrides):
    # The paper's interleaved sinusoids are Marian's split ones with the model dimension permuted: exact.
    from conftest import random_batch

    from vanilla_transformer import train_tokenizer
    from vanilla_transformer.cli import main

    tokenizer = train_tokenizer(texts=["Ein Hund rennt.", "Zwei Katzen schlafen."] * 20, vocab_size=300,
                                show_progress=False)
    ours = tiny_model(vocab_size=len(tokenizer), **overrides)
    if ours.final_logits_bias is not None:
        ours.final_logits_bias.normal_(0, 1.0)
    ours.save_pretrained(tmp_path / "ours")
    tokenizer.save_pretrained(tmp_path / "ours")
    main(["export-marian", str(tmp_path / "ours"), str(tmp_path / "marian")])
    marian = MarianMTModel.from_pretrained(tmp_path / "marian").eval()
    assert AutoTokenizer.from_pretrained(tmp_path / "marian")("Ein Hund.")["input_ids"] == tokenizer("Ein Hund.")[
        "input_ids"]
    src = random_batch(3, 7, vocab=len(tokenizer))
    src[1, 5:] = ours.config.pad_token_id
    mask = (src != ours.config.pad_token_id).long()
    tgt = random_batch(3, 5, vocab=len(tokenizer), seed=1)
    with torch.no_grad():
        difference = (marian(input_ids=src, attention_mask=mask, decoder_input_ids=tgt).logits
                      - ours(input_ids=src, attention_mask=mask, decoder_input_ids=tgt).logits).abs().max()
    assert difference <= 1e-5
    for num_beams in (1, 4):
        settings = dict(attention_mask=mask, num_beams=num_beams, max_new_tokens=10)
        # Marian's generate() has none of our guards (modeling.GUARDS): the decoding alone is compared.
        assert torch.equal(marian.generate(src, **settings),
                           ours.generate(src, **settings, max_length_a=None, repetition_guard_ngram_size=None))
    back = convert_marian(marian)  # and back again
    with torch.no_grad():
        assert torch.allclose(back(input_ids=src, attention_mask=mask, decoder_input_ids=tgt).logits,
                              ours(input_ids=src, attention_mask=mask, decoder_input_ids=tgt).logits, atol=1e-5)
