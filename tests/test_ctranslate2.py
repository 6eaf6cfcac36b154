"""Export to CTranslate2: the engine gives our generate()'s tokens and our model's log-likelihoods."""

import json

import pytest
import torch
from conftest import tiny_model, write_pairs

from vanilla_transformer import train_tokenizer

ctranslate2 = pytest.importorskip("ctranslate2")
from vanilla_transformer.engines import ctranslate2 as engine  # noqa: E402

SENTENCES = ["Ein Hund rennt über die Wiese.", "Zwei Kinder.", "Eine Frau mit einem roten Hut liest ein Buch im Park.",
             "Ein Mann fährt Fahrrad."]
TARGETS = ["A dog runs over the meadow.", "Two kids.", "A woman reads.", "A man rides a bike."]
SHAPES = {
    "paper": {},  # post-norm, relu, interleaved sinusoids, tied embeddings
    "marian-like": dict(norm_first=False, activation_function="swish", sinusoidal_layout="split",
                        add_final_logits_bias=True),
    "pre-norm": dict(norm_first=True, activation_function="gelu", share_embeddings=True, tie_word_embeddings=False),
}


@pytest.fixture(scope="module")
def tokenizer(data_dir):
    return train_tokenizer([data_dir / "multi30k/val.de", data_dir / "multi30k/val.en"], vocab_size=500,
                           show_progress=False)


def exported(tokenizer, folder, **overrides):
    model = tiny_model(vocab_size=len(tokenizer), max_position_embeddings=64, **overrides)
    # The decoding alone, compared token for token: the guards differ between the engines (test_generation_guards).
    model.generation_config.update(max_length_a=None, repetition_guard_ngram_size=None)
    if model.final_logits_bias is not None:
        model.final_logits_bias.normal_(0, 1.0)
    model.save_pretrained(folder / "model")
    tokenizer.save_pretrained(folder / "model")
    return model, engine.Translator(engine.export(folder / "model", folder / "ct2"))


def our_tokens(model, tokenizer, num_beams: int) -> list[list[str]]:
    batch = tokenizer(SENTENCES, return_tensors="pt", padding=True)
    beam = dict(length_penalty=0.6, early_stopping=True) if num_beams > 1 else dict(length_penalty=1.0,
                                                                                 early_stopping=False)
    output = model.generate(**batch, num_beams=num_beams, max_new_tokens=12, **beam)
    return [tokenizer.convert_ids_to_tokens([i for i in row.tolist()[1:] if i != tokenizer.pad_token_id])
            for row in output]


def engine_tokens(translator, num_beams: int) -> list[list[str]]:
    results = translator.translator.translate_batch(
        translator.source_tokens(SENTENCES), beam_size=num_beams, length_penalty=0.6 if num_beams > 1 else 1.0,
        max_decoding_length=12, return_end_token=True)
    return [result.hypotheses[0] for result in results]


def our_log_likelihoods(model, tokenizer) -> list[list[float]]:
    scores = []
    for source, target in zip(SENTENCES, TARGETS):
        labels = tokenizer(text_target=[target], return_tensors="pt")["input_ids"]
        start = torch.full_like(labels[:, :1], model.config.decoder_start_token_id)
        with torch.no_grad():
            logits = model(**tokenizer([source], return_tensors="pt"),
                           decoder_input_ids=torch.cat([start, labels[:, :-1]], dim=1)).logits
        scores.append(logits.log_softmax(-1).gather(-1, labels.unsqueeze(-1)).flatten().tolist())
    return scores


def engine_log_likelihoods(translator, tokenizer) -> list[list[float]]:
    targets = [tokenizer.convert_ids_to_tokens(tokenizer(text_target=t, add_special_tokens=False)["input_ids"])
               for t in TARGETS]  # the engine adds </s> itself
    return [r.log_probs for r in translator.translator.score_batch(translator.source_tokens(SENTENCES), targets)]


@pytest.mark.parametrize("shape", SHAPES)
def test_engine_decodes_and_scores_like_our_model(tokenizer, tmp_path, shape):
    model, translator = exported(tokenizer, tmp_path, **SHAPES[shape])
    for num_beams in (1, 4):
        ours = our_tokens(model, tokenizer, num_beams)
        assert engine_tokens(translator, num_beams) == ours, f"num_beams={num_beams}"
        assert len({tuple(t) for t in ours}) > 1, "degenerate outputs would prove little"
    for ours, theirs in zip(our_log_likelihoods(model, tokenizer), engine_log_likelihoods(translator, tokenizer)):
        assert len(ours) == len(theirs)
        assert max(abs(a - b) for a, b in zip(ours, theirs)) < 1e-4


def test_a_wrong_position_table_would_be_caught(tokenizer, tmp_path, monkeypatch):
    # The check above fails when the export is wrong: here, positions counted from 1 as the engine's own are.
    set_stack = engine.VanillaTransformerConverter.set_stack

    def shifted(spec, stack):
        set_stack(spec, stack)
        spec.position_encodings.encodings = torch.roll(stack.embed_positions.weight, -1, dims=0)

    monkeypatch.setattr(engine.VanillaTransformerConverter, "set_stack", staticmethod(shifted))
    model, translator = exported(tokenizer, tmp_path)
    differences = [max(abs(a - b) for a, b in zip(ours, theirs)) for ours, theirs in
                   zip(our_log_likelihoods(model, tokenizer), engine_log_likelihoods(translator, tokenizer))]
    assert max(differences) > 1e-2


def test_translator_api_and_long_and_blank_lines(tokenizer, tmp_path):
    model, translator = exported(tokenizer, tmp_path)
    lines = SENTENCES + ["", " ".join(["Hund"] * 100)]
    out = translator.translate(lines, num_beams=2, max_length_offset=5)
    assert len(out) == len(lines) and out[4] == "" and all(isinstance(line, str) for line in out)
    # Two workers translating one-sentence batches side by side still answer in input order.
    workers = engine.Translator(tmp_path / "ct2", inter_threads=2)
    assert workers.translate(lines, num_beams=2, max_length_offset=5, batch_size=1) == out
    assert len(set(out)) > 2, "identical translations would not show the order"
    with pytest.raises(ValueError, match="intra_threads must be at least 1, not 0"):
        engine.Translator(tmp_path / "ct2", intra_threads=0)


def test_the_engine_leaves_torchs_threads_as_they_were(tokenizer, tmp_path):
    """Creating a ctranslate2.Translator sets the creating thread's OpenMP threads to intra_threads, in the runtime
    torch shares: without putting them back, torch ran on one thread for the rest of the process (a test suite's
    later trainings included)."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        _, translator = exported(tokenizer, tmp_path)
        translator.translate(SENTENCES[:2], num_beams=2, max_length_offset=5)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_int8_on_a_cpu_without_vnni_warns(tokenizer, tmp_path, monkeypatch, caplog):
    exported(tokenizer, tmp_path)
    engine.export(tmp_path / "model", tmp_path / "int8", quantization="int8")
    for lacks_vnni, warned in ((False, False), (True, True)):
        monkeypatch.setattr(engine, "cpu_lacks_vnni", lambda: lacks_vnni)
        caplog.clear()
        for folder, expected in (("ct2", False), ("int8", warned)):
            engine.Translator(tmp_path / folder)
            assert ("without VNNI" in caplog.text) == expected, (folder, lacks_vnni)


def test_export_refuses_what_is_not_our_model(tokenizer, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="empty: no config.json here"):
        engine.export(tmp_path / "empty", tmp_path / "out")
    tiny_model(vocab_size=len(tokenizer)).save_pretrained(tmp_path / "no-tokenizer")
    with pytest.raises(FileNotFoundError, match="no-tokenizer: no (usable tokenizer|tokenizer files)"):
        engine.export(tmp_path / "no-tokenizer", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_commands_export_and_translate_with_the_engine(tokenizer, tmp_path):
    import subprocess
    import sys

    model, _ = exported(tokenizer, tmp_path)
    cli = [sys.executable, "-m", "vanilla_transformer.cli"]
    subprocess.run(cli + ["export-ctranslate2", str(tmp_path / "model"), str(tmp_path / "int8"), "--quantization",
                          "int8"], check=True, capture_output=True, timeout=300)
    lines = "\n".join(SENTENCES[:2] + ["", " ".join(["Hund"] * 100)]) + "\n"
    outputs = {}
    for engine_name, folder, threads in (("torch", "model", []), ("ctranslate2", "ct2", []),
                                         ("ctranslate2", "int8", ["--inter-threads", "1", "--intra-threads", "2"])):
        result = subprocess.run(cli + ["translate", str(tmp_path / folder), "--engine", engine_name, "--num-beams",
                                       "4", *threads], input=lines, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-2000:]
        assert "line 4: 201 tokens, more than the model's 64 positions" in result.stderr
        outputs[folder] = result.stdout.split("\n")[:-1]
        assert len(outputs[folder]) == 4 and outputs[folder][2] == ""
    assert outputs["ct2"][:2] == outputs["model"][:2]

    # evaluate: the same report from either engine, and the same hypotheses in float32.
    write_pairs(tmp_path / "data", "test", SENTENCES, TARGETS)
    reports = {}
    for engine_name, folder in (("torch", "model"), ("ctranslate2", "ct2")):
        out = tmp_path / f"eval-{folder}"
        subprocess.run(cli + ["evaluate", str(tmp_path / folder), "--engine", engine_name, "--data",
                              str(tmp_path / "data"), "--split", "test", "--out", str(out)], check=True,
                       capture_output=True, timeout=300)
        reports[folder] = json.loads((out / "report.json").read_text())
        reports[folder]["hypotheses"] = (out / "test.hyp.en").read_text()
    assert reports["ct2"]["engine"] == "ctranslate2" and reports["model"]["engine"] == "torch"
    assert reports["ct2"]["hypotheses"] == reports["model"]["hypotheses"]
    assert reports["ct2"]["bleu"] == reports["model"]["bleu"]
