"""The guards that travel with the model (issue 31): each sentence's output within int(a * source tokens + b) tokens,
and no n-gram more often than the guard allows, through generate() (greedy, beam 4, compiled), the pipeline and the
CTranslate2 engine; on by default, saved with the model, and off when asked."""

import math
from collections import Counter

import pytest
import torch
from conftest import tiny_model

from vanilla_transformer import VanillaTransformerForConditionalGeneration, modeling
from vanilla_transformer.modeling_compat import COMPILES_DECODING

FAVOURITE, SECOND = 7, 8  # the tokens a rigged model prefers, in that order
OFF = dict(max_length_a=None, repetition_guard_ngram_size=None)


def rigged(model):
    """`model` made to prefer FAVOURITE, then SECOND, and never to end: its logits bias dwarfs the rest."""
    model.final_logits_bias.zero_()
    model.final_logits_bias[0, FAVOURITE] = 1000.0
    model.final_logits_bias[0, SECOND] = 500.0
    model.final_logits_bias[0, model.config.eos_token_id] = -1000.0
    return model


def fairseq_bound(source_tokens: int, a: float = 1.5, b: float = 5) -> int:
    """max_len_a * src_len + b in tokens, </s> included on both sides (the defaults of modeling.GUARDS)."""
    return math.floor(a * source_tokens + b)


def generated_lengths(output: torch.Tensor, eos: int) -> list[int]:
    """Tokens after the start token up to the first </s> (included), or all of them."""
    lengths = []
    for row in output[:, 1:].tolist():
        lengths.append(row.index(eos) + 1 if eos in row else len(row))
    return lengths


def bigram_counts(row: list[int]) -> Counter:
    return Counter(zip(row, row[1:]))


@pytest.fixture(scope="module")
def model():
    return rigged(tiny_model(add_final_logits_bias=True))


def short_and_long_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """A 1-token source beside a 20-token one, padded."""
    ids = torch.zeros(2, 20, dtype=torch.long)
    ids[0, 0] = 11
    ids[1] = torch.arange(20) % 50 + 10
    return ids, ids != 0


def test_guards_are_on_by_default_saved_with_the_model_and_off_when_asked(tmp_path):
    model = tiny_model()
    assert {name: getattr(model.generation_config, name) for name in modeling.GUARDS} == modeling.GUARDS
    model.generation_config.update(max_length_b=7, repetition_guard_ngram_size=None)
    model.save_pretrained(tmp_path)
    loaded = VanillaTransformerForConditionalGeneration.from_pretrained(tmp_path).generation_config
    assert (loaded.max_length_a, loaded.max_length_b, loaded.repetition_guard_ngram_size) == (1.5, 7, None)
    with pytest.raises(ValueError, match="unknown guard settings"):
        with modeling.generation_guards(max_length_c=1):
            pass


@pytest.mark.parametrize("num_beams", [1, 4])
def test_each_sentence_ends_at_its_own_bound(model, num_beams):
    """The rigged model never ends by itself: with the guards each output is exactly its own bound, the short
    sentence's far below the batch's; without them both run to the batch's limit."""
    ids, mask = short_and_long_batch()
    bounds = [fairseq_bound(int(n)) for n in mask.sum(-1)]
    eos = model.config.eos_token_id
    for settings in ({}, dict(repetition_guard_ngram_size=None)):
        output = model.generate(ids, attention_mask=mask, num_beams=num_beams, **settings)
        assert generated_lengths(output, eos) == bounds, settings
        assert output[0, bounds[0]] == eos
    unguarded = model.generate(ids, attention_mask=mask, num_beams=num_beams, **OFF)
    assert min(generated_lengths(unguarded, eos)) > max(bounds)


def test_an_other_bound_and_none_turn_it_off(model):
    ids, mask = short_and_long_batch()
    output = model.generate(ids, attention_mask=mask, num_beams=1, max_length_a=1.0, max_length_b=2)
    assert generated_lengths(output, model.config.eos_token_id) == [3, 22]
    with modeling.generation_guards(max_length_a=None):
        assert output.shape[1] < model.generate(ids, attention_mask=mask, num_beams=1).shape[1]


@pytest.mark.parametrize("num_beams", [1, 4])
def test_repetition_guard_stops_the_third_bigram_unless_the_source_has_it(model, num_beams):
    """Preferring one token, the model would repeat it to the end; with the guard the bigram (FAVOURITE, FAVOURITE)
    occurs twice, or as often as the source holds it (5 times: a name or number repeated in the source)."""
    plain = torch.tensor([[20, 21, 22, 23, 24, 25, 2]])
    repeating = torch.tensor([[FAVOURITE] * 6 + [2]])
    pair = (FAVOURITE, FAVOURITE)
    for source, allowed in ((plain, 2), (repeating, 5)):
        output = model.generate(source, num_beams=num_beams, max_length_a=None)[0, 1:].tolist()
        counts = bigram_counts(output)
        assert counts[pair] == allowed
        assert max(counts.values()) <= allowed
        unguarded = model.generate(source, num_beams=num_beams, **OFF)[0, 1:].tolist()
        assert bigram_counts(unguarded)[pair] > 10


def test_the_guard_is_vectorised_over_rows_and_their_own_sources():
    """Rows of a batch (and the beams of a sentence) see their own output and source: the processor alone, on
    hand-made rows, against the rule counted by hand."""
    eos = torch.tensor([2])
    guard = modeling.RepeatedNgramGuard(2, 2, prompt_length=1, eos=eos, source_ids=torch.tensor([[5, 6, 5, 6, 5, 6]]),
                                        source_mask=torch.ones(1, 6, dtype=torch.bool))
    outputs = torch.tensor([[1, 5, 6, 5, 6, 5], [1, 3, 4, 3, 4, 3], [1, 2, 2, 2, 2, 2]])
    scores = guard(outputs, torch.zeros(3, 10))
    # Row 0: (5, 6) is in the output twice but in the source three times: allowed. Row 1: (3, 4) twice: banned.
    # Row 2: </s> is never banned.
    assert torch.isinf(scores).nonzero().tolist() == [[1, 4]]


def rigged_folder(folder):
    """A rigged model with a tokenizer, saved as a run's model folder is (the pipeline shipped with it)."""
    from vanilla_transformer import train_tokenizer
    from vanilla_transformer.model_folder import make_portable

    texts = ["ein Hund rennt", "a dog runs", "eine Katze schläft", "a cat sleeps"] * 4
    tokenizer = train_tokenizer(texts=texts, vocab_size=300, show_progress=False)
    rigged(tiny_model(vocab_size=len(tokenizer), eos_token_id=tokenizer.eos_token_id,
                      add_final_logits_bias=True)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    make_portable(folder, ("de", "en"))
    return tokenizer


def test_pipeline_gets_the_guards(tmp_path):
    """pipeline("translation") of a saved folder (the remote code a Hub user runs): each output within its bound."""
    from transformers import pipeline

    tokenizer = rigged_folder(tmp_path)
    translator = pipeline("translation", model=str(tmp_path), trust_remote_code=True)
    outputs = []
    generate = translator.model.generate

    def recorded(*args, **kwargs):
        outputs.append(generate(*args, **kwargs))
        return outputs[-1]

    translator.model.generate = recorded
    sentences = ["Hund", "ein Hund rennt und eine Katze schläft und ein Hund rennt"]
    for num_beams in (1, 4):
        translator(sentences, num_beams=num_beams, batch_size=2)
        (output,) = outputs[-1:]
        bounds = [fairseq_bound(len(ids)) for ids in tokenizer(sentences)["input_ids"]]
        assert generated_lengths(output.reshape(2, -1), tokenizer.eos_token_id) == bounds
    unguarded = translator(sentences[:1], num_beams=1, **OFF)
    assert generated_lengths(outputs[-1], tokenizer.eos_token_id)[0] > bounds[0]
    assert unguarded


def test_command_line_no_guards(tmp_path, capsys):
    """translate --no-guards: the rigged model's output runs past the bound that the guarded output keeps."""
    from vanilla_transformer.cli import main

    rigged_folder(tmp_path)
    outputs = []
    for extra in ([], ["--no-guards"]):
        assert main(["translate", str(tmp_path), "Hund", "--num-beams", "1", "--device", "cpu", *extra]) in (0, None)
        outputs.append(capsys.readouterr().out)
    assert 0 < len(outputs[0]) < len(outputs[1])


@pytest.mark.skipif(not COMPILES_DECODING, reason="compiled decoding needs transformers 5")
def test_compiled_greedy_gives_the_guarded_eager_tokens(model):
    ids, mask = short_and_long_batch()
    eager = model.generate(ids, attention_mask=mask, num_beams=1)
    assert torch.equal(model.generate(ids, attention_mask=mask, num_beams=1, compile_decoding=True), eager)


def test_ctranslate2_engine_keeps_each_bound_and_the_repetition_guard(data_dir, tmp_path):
    """The exported engine reads the guards from the model's generation_config: greedy gives generate()'s guarded
    tokens; with beam 4 too, each output within its own bound and no bigram three times; neither with the guards
    off."""
    pytest.importorskip("ctranslate2")
    from vanilla_transformer import train_tokenizer
    from vanilla_transformer.engines import ctranslate2 as engine

    tokenizer = train_tokenizer([data_dir / "multi30k/val.de", data_dir / "multi30k/val.en"], vocab_size=500,
                                show_progress=False)
    model = rigged(tiny_model(vocab_size=len(tokenizer), eos_token_id=tokenizer.eos_token_id,
                              add_final_logits_bias=True))
    model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    translator = engine.Translator(engine.export(tmp_path / "model", tmp_path / "ct2"))
    translator.detokenize = tokenizer.convert_tokens_to_ids  # the output tokens themselves
    sentences = ["Hund", "Ein Mann in einem blauen Hemd steht auf einer Leiter und putzt ein Fenster im Park."]
    batch = tokenizer(sentences, return_tensors="pt", padding=True)
    bounds = [fairseq_bound(int(n)) for n in batch["attention_mask"].sum(-1)]
    assert bounds[1] > bounds[0] + 10
    ours = model.generate(**batch, num_beams=1)
    lengths = generated_lengths(ours, tokenizer.eos_token_id)
    ours = [row[1: length] for row, length in zip(ours.tolist(), lengths)]  # without the start token and </s>
    assert translator.translate(sentences, num_beams=1) == ours
    for num_beams in (1, 4):
        outputs = translator.translate(sentences, num_beams=num_beams)
        assert [len(tokens) + 1 for tokens in outputs] == bounds  # + </s>, which the engine's output leaves out
        assert max(max(bigram_counts(tokens).values()) for tokens in outputs) == 2
        with modeling.generation_guards(**OFF):
            unguarded = translator.translate(sentences, num_beams=num_beams)
        assert min(len(tokens) for tokens in unguarded) > max(bounds)
        assert max(bigram_counts(unguarded[1]).values()) > 10
