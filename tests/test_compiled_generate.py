"""generate(compile_decoding=True): greedy search through a compiled decoder step gives eager's tokens, compiles once
for all sentence lengths, and is reachable from the pipeline, a saved folder's remote code and the command line."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import random_batch, tiny_model
from torch._dynamo.utils import counters

from vanilla_transformer import modeling
from vanilla_transformer.modeling_compat import COMPILES_DECODING

pytestmark = pytest.mark.skipif(not COMPILES_DECODING, reason="compiled decoding needs transformers 5")


def compiled_graphs() -> int:
    """Graphs torch.compile has made in this process so far."""
    return counters["stats"]["unique_graphs"]


@pytest.fixture(scope="module")
def model():
    """One tiny model for the module: the compiled step is specialised to the model it first saw."""
    return tiny_model()


def padded_batch(batch: int, length: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids with the last sentence padded to half its length."""
    src = random_batch(batch, length, seed=seed)
    mask = torch.ones_like(src)
    mask[-1, max(1, length // 2):] = 0
    return src, mask


def test_greedy_gives_eager_tokens_and_compiles_once_over_lengths(model):
    """Ten source lengths at batch 1 (and the default output length, which follows the source's): eager's tokens,
    from one graph. Then batches with a padded source and sentences that end at </s> before the others."""
    before = compiled_graphs()
    for length in (2, 3, 5, 8, 11, 14, 17, 20, 26, 31):
        src = random_batch(1, length, seed=length)
        eager = model.generate(src, num_beams=1)
        compiled = model.generate(src, num_beams=1, compile_decoding=True)
        assert torch.equal(compiled, eager), length
    assert compiled_graphs() - before == 1
    ended = 0
    for length in (4, 9, 16):
        src, mask = padded_batch(6, length, seed=length)
        # </s> is the token that the first sentence's decoding gives third: it ends there, the others later or not.
        eos = int(model.generate(src, attention_mask=mask, num_beams=1, max_new_tokens=3)[0, 3])
        settings = dict(attention_mask=mask, num_beams=1, max_new_tokens=20, eos_token_id=eos)
        eager = model.generate(src, **settings)
        compiled = model.generate(src, **settings, compile_decoding=True)
        assert torch.equal(compiled, eager), length
        ended += int((eager == eos).any(dim=1).sum())
    assert ended > 3, "few sentences ended at </s>: the test saw few finished sequences padded"
    # At most one graph more, for every larger batch (none where torch remembers from an earlier process, in its
    # profile-guided cache, that the batch varies).
    assert compiled_graphs() - before <= 2


@pytest.fixture
def compiled_steps(monkeypatch) -> list:
    """The calls of the compiled decoding step, counted."""
    calls = []
    step = modeling.compiled_decoding_step

    def counted(*args, **kwargs):
        calls.append(1)
        return step(*args, **kwargs)

    monkeypatch.setattr(modeling, "compiled_decoding_step", counted)
    return calls


def test_switch_in_the_generation_config_and_logits_processors(model, compiled_steps):
    """generation_config.compile_decoding switches it on too; generate()'s logits processors apply as in eager
    decoding (a repetition penalty, a minimum length that holds </s> back)."""
    src, mask = padded_batch(3, 7, seed=1)
    settings = dict(num_beams=1, max_new_tokens=16, repetition_penalty=1.3, min_new_tokens=6)
    eager = model.generate(src, attention_mask=mask, **settings)
    assert not compiled_steps
    model.generation_config.compile_decoding = True
    try:
        compiled = model.generate(src, attention_mask=mask, **settings)
    finally:
        model.generation_config.compile_decoding = False
    assert torch.equal(compiled, eager)
    assert len(compiled_steps) == compiled.shape[1] - 2  # every step after the first


@pytest.mark.parametrize("settings", [dict(num_beams=4), dict(num_beams=1, do_sample=True, top_k=5),
                                      dict(num_beams=1, return_dict_in_generate=True, output_scores=True)])
def test_other_decoding_keeps_generates_own_loop(model, compiled_steps, settings):
    """Beam search, sampling and dict outputs go through generate()'s own loop, eager, with the switch on."""
    src, mask = padded_batch(2, 6, seed=2)
    outputs = []
    for compile_decoding in (False, True):
        torch.manual_seed(0)
        output = model.generate(src, attention_mask=mask, max_new_tokens=8, compile_decoding=compile_decoding,
                                **settings)
        outputs.append(output if isinstance(output, torch.Tensor) else output.sequences)
    assert torch.equal(outputs[0], outputs[1])
    assert not compiled_steps


def test_command_line_switch_reaches_generate(tmp_path, compiled_steps, capsys):
    """translate --compile-decoding --num-beams 1 decodes compiled, with the translations of eager decoding;
    with another engine it is refused naming the option."""
    from vanilla_transformer.cli import main

    folder = portable_folder(tmp_path)
    sentences = ["ein Hund rennt", "eine Katze schläft"]
    outputs = []
    for extra in ([], ["--compile-decoding"]):
        assert main(["translate", str(folder), *sentences, "--num-beams", "1", "--device", "cpu", *extra]) in (0, None)
        outputs.append(capsys.readouterr().out)
    assert outputs[0] == outputs[1] and outputs[0].count("\n") == 2
    assert compiled_steps
    with pytest.raises(SystemExit) as refused:
        main(["translate", str(folder), "x", "--engine", "ctranslate2", "--compile-decoding"])
    assert "--compile-decoding is the torch engine's" in str(refused.value.code)


def portable_folder(folder):
    """A tiny model with a tokenizer, saved as a run's model folder is (the pipeline shipped with it)."""
    from vanilla_transformer import train_tokenizer
    from vanilla_transformer.model_folder import make_portable

    texts = ["ein Hund rennt", "a dog runs", "eine Katze schläft", "a cat sleeps"] * 4
    tokenizer = train_tokenizer(texts=texts, vocab_size=300, show_progress=False)
    tiny_model(vocab_size=len(tokenizer), eos_token_id=tokenizer.eos_token_id).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    make_portable(folder, ("de", "en"))
    return folder


def test_switch_through_the_pipeline_and_remote_code_in_a_fresh_process(tmp_path):
    """A saved folder loaded with trust_remote_code in a fresh process: pipeline("translation", compile_decoding=True)
    and generation_config.compile_decoding both decode compiled, with the tokens of eager decoding."""
    portable_folder(tmp_path)
    script = textwrap.dedent(f"""
        import json, sys, torch
        from torch._dynamo.utils import counters
        from transformers import AutoModelForSeq2SeqLM, AutoTokenizer, pipeline
        folder = {str(tmp_path)!r}
        translator = pipeline("translation", model=folder, trust_remote_code=True)
        assert "vanilla_transformer" not in sys.modules, "the package itself was imported"
        sentences = ["ein Hund rennt", "eine Katze", "ein Hund schläft und eine Katze rennt"]
        eager = translator(sentences, num_beams=1)
        compiled = translator(sentences, num_beams=1, compile_decoding=True)
        graphs = counters["stats"]["unique_graphs"]
        model = AutoModelForSeq2SeqLM.from_pretrained(folder, trust_remote_code=True).eval()
        model.generation_config.update(compile_decoding=True, num_beams=1, length_penalty=1.0, early_stopping=False)
        model.save_pretrained(folder + "/switched")
        switched = AutoModelForSeq2SeqLM.from_pretrained(folder + "/switched", trust_remote_code=True).eval()
        tokenizer = AutoTokenizer.from_pretrained(folder)
        batch = tokenizer(sentences, return_tensors="pt", padding=True)
        from_config = switched.generate(**batch)
        print("RESULT", json.dumps({{"same": eager == compiled, "graphs": graphs, "texts": compiled,
                          "config_field": switched.generation_config.compile_decoding,
                          "config_same": torch.equal(from_config, model.generate(**batch, compile_decoding=False)),
                          "all_graphs": counters["stats"]["unique_graphs"]}}))
    """)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout.split("RESULT", 1)[1])
    assert found["same"] and found["graphs"] >= 1, found
    assert found["config_field"] is True and found["config_same"], found
    assert found["all_graphs"] > found["graphs"], "the saved switch did not compile the second model"
