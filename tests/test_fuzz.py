"""Random text through tokenizer, generate() and the pipeline: Unicode of every category, control characters,
special-token strings, and lengths from nothing to twice the model's positions. An output or a clear error; never a
crash, and decode(encode(x)) == x for every x."""

import pytest
import torch
from conftest import tiny_model
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from vanilla_transformer import train_tokenizer
from vanilla_transformer.evaluation import translate
from vanilla_transformer.pipeline import TranslationPipeline

POSITIONS = 48
FRAGMENTS = st.one_of(
    st.text(st.characters(exclude_categories=("Cs",)), max_size=12),  # any code point a UTF-8 file can hold
    st.sampled_from(["<s>", "</s>", "<pad>", "<unk>", "\r", "\n", "\r\n", "\x00", "\t", "\u200b", "\ufeff", " ",
                     "Hund", "ein Mann", "🙂", "e\u0301"]),
)
TEXTS = st.lists(FRAGMENTS, max_size=60).map("".join)  # up to far more than 2 x POSITIONS tokens


@pytest.fixture(scope="module")
def tokenizer(data_dir):
    return train_tokenizer([data_dir / "multi30k/val.de", data_dir / "multi30k/val.en"], vocab_size=500,
                           show_progress=False)


@pytest.fixture(scope="module")
def model(tokenizer):
    return tiny_model(vocab_size=len(tokenizer), max_position_embeddings=POSITIONS)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=TEXTS)
def test_decoding_gives_back_any_text(tokenizer, text):
    ids = tokenizer(text)["input_ids"]
    assert ids[-1] == tokenizer.eos_token_id and ids.count(tokenizer.eos_token_id) == 1
    assert tokenizer.decode(ids, skip_special_tokens=True) == text


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(texts=st.lists(TEXTS, min_size=1, max_size=4))
@example(texts=["Hund " * (2 * POSITIONS), "", " \r", "<s></s><pad><unk>"])
def test_translate_gives_one_line_per_text(model, tokenizer, texts):
    out = translate(model, tokenizer, texts, batch_size=3, progress=False, num_beams=2, max_new_tokens=6)
    assert len(out) == len(texts) and all(isinstance(line, str) for line in out)
    assert all(line == "" for line, text in zip(out, texts) if not text.strip())


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(texts=st.lists(TEXTS, max_size=3), truncation=st.booleans())
@example(texts=["Hund " * (2 * POSITIONS)], truncation=True)
@example(texts=["Hund " * (2 * POSITIONS)], truncation=False)
@example(texts=[], truncation=False)
def test_pipeline_translates_or_says_why_not(model, tokenizer, texts, truncation):
    translator = TranslationPipeline(model=model, tokenizer=tokenizer)
    too_long = any(len(tokenizer(text)["input_ids"]) > POSITIONS for text in texts)
    if too_long and not truncation:
        with pytest.raises(ValueError, match="max_position_embeddings"):
            translator(texts, truncation=truncation, max_new_tokens=4)
        return
    with torch.no_grad():
        out = translator(texts, truncation=truncation, max_new_tokens=4)
    assert len(out) == len(texts) and all(isinstance(r["translation_text"], str) for r in out)
