"""Checkpoints: round trips, Auto classes, remote code in a fresh process, and the paper's model sizes."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from conftest import random_batch, tiny_model
from safetensors import safe_open
from transformers import AutoConfig, AutoModel, AutoModelForSeq2SeqLM

from vanilla_transformer import (
    VanillaTransformerConfig,
    VanillaTransformerForConditionalGeneration,
    VanillaTransformerModel,
)
from vanilla_transformer import modeling_kernels
from vanilla_transformer.modeling import eager_attention_forward


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("overrides", [{}, {"add_final_logits_bias": True, "sinusoidal_layout": "split"},
                                       {"share_embeddings": False, "decoder_vocab_size": 50}])
def test_round_trip_is_bit_identical(tmp_path, overrides):
    model = tiny_model(**overrides)
    if model.final_logits_bias is not None:
        model.final_logits_bias.normal_()
    model.save_pretrained(tmp_path)
    loaded = AutoModelForSeq2SeqLM.from_pretrained(tmp_path).eval()
    assert type(loaded) is VanillaTransformerForConditionalGeneration
    src, tgt = random_batch(2, 6), random_batch(2, 4, vocab=model.config.target_vocab_size, seed=1)
    with torch.no_grad():
        assert torch.equal(loaded(input_ids=src, decoder_input_ids=tgt).logits,
                           model(input_ids=src, decoder_input_ids=tgt).logits)
    assert loaded.generation_config.num_beams == 4
    assert loaded.generation_config.max_length_offset == 50


def test_loads_in_bf16_and_generates(tmp_path, monkeypatch):
    """from_pretrained(dtype=torch.bfloat16): half the bytes per decoding step, close to fp32's logits."""
    model = tiny_model().eval()
    model.save_pretrained(tmp_path)
    loaded = AutoModelForSeq2SeqLM.from_pretrained(tmp_path, dtype=torch.bfloat16).eval()
    assert {p.dtype for p in loaded.parameters()} == {torch.bfloat16}
    src, tgt = random_batch(2, 6), random_batch(2, 4, seed=1)
    with torch.no_grad():
        fp32 = model(input_ids=src, decoder_input_ids=tgt).logits
        bf16 = loaded(input_ids=src, decoder_input_ids=tgt).logits
    assert bf16.dtype == torch.bfloat16
    assert (bf16.float() - fp32).abs().max() < 0.03 * fp32.abs().max()
    monkeypatch.setattr(modeling_kernels, "cpu_capability", lambda: "AVX512")
    query = torch.zeros(2, 4, 6, 8, dtype=torch.bfloat16)
    assert modeling_kernels.attention_function(loaded.config, query, False, eager_attention_forward) is (
        eager_attention_forward)  # the kernel is still chosen per shape
    monkeypatch.undo()
    out = loaded.generate(src, num_beams=4, max_new_tokens=8, min_new_tokens=8)
    assert out.shape == (2, 9)


@pytest.mark.parametrize("share_embeddings", [True, False])
def test_output_projection_stays_tied_to_the_decoder_embeddings(tmp_path, share_embeddings):
    tiny_model(share_embeddings=share_embeddings).save_pretrained(tmp_path)
    loaded = AutoModelForSeq2SeqLM.from_pretrained(tmp_path)
    assert loaded.lm_head.weight is loaded.model.decoder.embed_tokens.weight
    assert (loaded.model.encoder.embed_tokens.weight is loaded.lm_head.weight) == share_embeddings


def test_checkpoint_holds_weights_once_and_no_positional_tables(tmp_path):
    tiny_model().save_pretrained(tmp_path)
    with safe_open(tmp_path / "model.safetensors", "pt") as f:
        keys = set(f.keys())
    assert not any("embed_positions" in k for k in keys)
    # The three tied matrices are stored once.
    assert sum(k.endswith("embed_tokens.weight") or k in {"lm_head.weight", "model.shared.weight"} for k in keys) == 1
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model_type"] == "vanilla_transformer"
    # Settings of training and of this process's kernels are not the model's.
    assert not {"label_smoothing", "cpu_attention_by_shape", "attn_implementation"} & set(config)
    assert config["auto_map"]["AutoModelForSeq2SeqLM"] == "modeling.VanillaTransformerForConditionalGeneration"
    assert all((tmp_path / name).is_file() for name in ("modeling.py", "configuration.py", "modeling_kernels.py",
                                                         "modeling_compat.py"))


def test_auto_classes_know_the_model(tmp_path):
    config = VanillaTransformerConfig.from_preset("tiny")
    config.save_pretrained(tmp_path)
    assert isinstance(AutoConfig.from_pretrained(tmp_path), VanillaTransformerConfig)
    assert type(AutoModel.from_config(config)) is VanillaTransformerModel
    assert type(AutoModelForSeq2SeqLM.from_config(config)) is VanillaTransformerForConditionalGeneration


def test_the_remote_code_files_shadow_no_installed_module(tmp_path):
    """Python run in a saved folder imports its .py files first: one named like a package that transformers imports
    (kernels.py did, once transformers 5.25 imported the `kernels` package) breaks loading there."""
    import importlib.util

    from vanilla_transformer import train_tokenizer

    tiny_model().save_pretrained(tmp_path)
    train_tokenizer(texts=["ein Hund", "a dog"] * 4, vocab_size=300, show_progress=False).save_pretrained(tmp_path)
    shipped = sorted(path.stem for path in tmp_path.glob("*.py"))
    assert {"modeling", "modeling_kernels", "modeling_compat", "configuration", "tokenization"} <= set(shipped)
    script = ("import importlib.util, json; "
              f"print(json.dumps({{n: bool(importlib.util.find_spec(n)) for n in {shipped!r}}}))")
    found = json.loads(subprocess.run([sys.executable, "-c", script], cwd=tmp_path.parent, capture_output=True,
                                      text=True, check=True).stdout)
    assert not any(found.values()), f"installed modules with a shipped file's name: {found}"
    assert importlib.util.find_spec("vanilla_transformer")  # the check itself sees installed modules


def test_saved_folder_loads_with_remote_code_in_a_fresh_process(tmp_path):
    model = tiny_model()
    model.save_pretrained(tmp_path)
    src = random_batch(2, 6)
    torch.save(src, tmp_path / "src.pt")
    with torch.no_grad():
        torch.save(model(input_ids=src, decoder_input_ids=src).logits, tmp_path / "logits.pt")
        torch.save(model.generate(src, num_beams=4, max_new_tokens=8), tmp_path / "beam.pt")

    script = textwrap.dedent(f"""
        import sys, torch
        from transformers import AutoModelForSeq2SeqLM
        model = AutoModelForSeq2SeqLM.from_pretrained({str(tmp_path)!r}, trust_remote_code=True).eval()
        assert "vanilla_transformer" not in sys.modules, "the package itself was imported"
        src = torch.load({str(tmp_path / "src.pt")!r})
        with torch.no_grad():
            logits = model(input_ids=src, decoder_input_ids=src).logits
        assert torch.equal(logits, torch.load({str(tmp_path / "logits.pt")!r}))
        beam = model.generate(src, num_beams=4, max_new_tokens=8)
        assert torch.equal(beam, torch.load({str(tmp_path / "beam.pt")!r}))
        print(type(model).__module__)
    """)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().startswith("transformers_modules")


def test_base_and_big_have_the_papers_sizes():
    with torch.device("meta"):
        base = VanillaTransformerForConditionalGeneration(VanillaTransformerConfig.from_preset("base"))
        big = VanillaTransformerForConditionalGeneration(VanillaTransformerConfig.from_preset("big"))
    assert base.config.vocab_size == 37000
    assert 60e6 <= count_parameters(base) <= 66e6  # Table 3: 65M
    assert 210e6 <= count_parameters(big) <= 215e6  # Table 3: 213M


def test_shared_but_untied_embeddings_save_and_load(tmp_path):
    # share_embeddings without tie_word_embeddings used to refuse to save ("shared tensors ... not properly defined").
    from conftest import tiny_model

    from vanilla_transformer import VanillaTransformerForConditionalGeneration

    model = tiny_model(tie_word_embeddings=False)
    model.save_pretrained(tmp_path)
    loaded = VanillaTransformerForConditionalGeneration.from_pretrained(tmp_path).eval()
    ids = torch.randint(4, 99, (2, 5))
    assert torch.equal(loaded(input_ids=ids, decoder_input_ids=ids).logits,
                       model(input_ids=ids, decoder_input_ids=ids).logits)
    assert loaded.model.encoder.embed_tokens.weight is loaded.model.shared.weight


@pytest.mark.parametrize("name", ["tiny-post-norm", "tiny-pre-norm-bias"])
def test_checkpoints_saved_by_earlier_code_give_the_same_logits(name):
    from safetensors.torch import load_file

    from vanilla_transformer import VanillaTransformerForConditionalGeneration

    folder = Path(__file__).parent / "fixtures" / name
    expected = load_file(folder / "expected.safetensors")
    model = VanillaTransformerForConditionalGeneration.from_pretrained(folder).eval()
    with torch.no_grad():
        logits = model(input_ids=expected["input_ids"], attention_mask=expected["attention_mask"],
                       decoder_input_ids=expected["decoder_input_ids"]).logits
    # The fixtures were made on an AVX2-only CPU; AVX-512 kernels sum in another order (1.2e-6 apart seen). A renamed
    # or mis-mapped weight moves the logits by far more than 1e-5.
    torch.testing.assert_close(logits, expected["logits"], atol=1e-5, rtol=1e-5)


def test_config_of_earlier_versions_loads_without_their_training_and_kernel_keys():
    folder = Path(__file__).parent / "fixtures" / "tiny-post-norm"
    saved = json.loads((folder / "config.json").read_text())
    assert saved["label_smoothing"] == 0.1  # what the fixture holds
    config = VanillaTransformerConfig.from_pretrained(folder)
    assert not hasattr(config, "label_smoothing") and "label_smoothing" not in config.to_dict()
    model = VanillaTransformerForConditionalGeneration(config)
    assert model.config._attn_implementation == modeling_kernels.SDPA_BY_SHAPE
    # cpu_attention_by_shape=False, which earlier versions wrote, asked for SDPA at every shape.
    switched_off = VanillaTransformerConfig.from_dict({**saved, "cpu_attention_by_shape": False})
    assert VanillaTransformerForConditionalGeneration(switched_off).config._attn_implementation == "sdpa"
    assert "cpu_attention_by_shape" not in switched_off.to_dict()
