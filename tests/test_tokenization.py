"""The joint BPE tokenizer on real Multi30k and WMT14 text."""

import os
import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import tiny_model
from transformers import AutoTokenizer, DataCollatorForSeq2Seq, PreTrainedTokenizerFast

from vanilla_transformer import VanillaTransformerConfig, VanillaTransformerTokenizer, train_tokenizer
from vanilla_transformer.corpus import CorpusError, read_lines
from vanilla_transformer.training.tokenizer import subwords_per_word

# Lines no training set prepared the tokenizer for: every one must come back byte for byte.
HARD_LINES = [
    "Größe, Maß und Fuß: „Anführungszeichen“ und »Guillemets« – Gedankenstrich — Geviert…",
    "a\u00a0non-breaking space, a soft\u00adhyphen, two  spaces,   three, and a trailing space ",
    " leading space, tab\there, 3.14159 and 1,000,000 and 12:30 and 50 %",
    "https://example.org/pfad?query=äöü&x=1#frag and e-mail: jane.doe@example.com",
    "unseen scripts: 日本語, Ελληνικά, emoji 🙂🚲, math ∑∞≠, combining e\u0301 vs é",
]


@pytest.fixture(scope="module")
def tokenizer(data_dir):
    multi30k = data_dir / "multi30k"
    return train_tokenizer([multi30k / "train.de", multi30k / "train.en"], vocab_size=10000, show_progress=False)


@pytest.mark.parametrize("split", ["multi30k/test2016", "wmt14/newstest2014"])
@pytest.mark.parametrize("lang", ["de", "en"])
def test_decoding_restores_every_line_exactly(tokenizer, data_dir, split, lang):
    lines = read_lines(data_dir / f"{split}.{lang}")
    decoded = tokenizer.batch_decode(tokenizer(lines)["input_ids"], skip_special_tokens=True)
    mismatches = [(line, text) for line, text in zip(lines, decoded) if line != text]
    assert len(mismatches) == 0, mismatches[:3]


def test_unusual_text_and_unseen_characters_survive(tokenizer):
    for line in HARD_LINES:
        ids = tokenizer(line)["input_ids"]
        assert tokenizer.unk_token_id not in ids
        assert tokenizer.decode(ids, skip_special_tokens=True) == line


def test_fertility_is_low_on_test2016(tokenizer, data_dir):
    for lang in ("de", "en"):
        fertility = subwords_per_word(tokenizer, read_lines(data_dir / f"multi30k/test2016.{lang}"))
        print(f"test2016.{lang}: {fertility:.3f} subwords per word (10k joint BPE)")
        assert 1.0 <= fertility <= 1.5


def test_save_and_load_give_identical_ids(tokenizer, data_dir, tmp_path):
    tokenizer.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert type(loaded) is VanillaTransformerTokenizer
    lines = read_lines(data_dir / "multi30k/val.de")[:500] + read_lines(data_dir / "multi30k/val.en")[:500]
    assert loaded(lines)["input_ids"] == tokenizer(lines)["input_ids"]
    assert len(lines) == 1000


def test_saved_tokenizer_loads_as_remote_code_in_a_fresh_process(tokenizer, tmp_path):
    tokenizer.save_pretrained(tmp_path)
    # Its code is tokenization.py alone: learning a vocabulary (and reading corpora) stays in the package.
    assert sorted(path.name for path in tmp_path.glob("*.py")) == ["tokenization.py"]
    expected = tokenizer(HARD_LINES)["input_ids"]
    script = textwrap.dedent(f"""
        import sys
        from transformers import AutoTokenizer
        tokenizer = AutoTokenizer.from_pretrained({str(tmp_path)!r}, trust_remote_code=True)
        assert "vanilla_transformer" not in sys.modules
        assert type(tokenizer).__name__ == "VanillaTransformerTokenizer", type(tokenizer)
        assert tokenizer({HARD_LINES!r})["input_ids"] == {expected!r}
    """)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_sources_targets_padding_and_collator(tokenizer):
    sources = ["Ein Hund rennt.", "Zwei Männer spielen Fußball auf einer Wiese."]
    targets = ["A dog runs.", "Two men play soccer on a meadow."]
    batch = tokenizer(sources, text_target=targets, padding=True)
    assert set(batch) == {"input_ids", "attention_mask", "labels"}
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    for ids, mask in zip(batch["input_ids"], batch["attention_mask"]):
        real = ids[: sum(mask)]
        assert real[-1] == eos and ids[sum(mask):] == [pad] * (len(ids) - sum(mask))
    assert tokenizer.batch_decode(batch["labels"], skip_special_tokens=True) == targets

    features = [dict(input_ids=s, labels=t) for s, t in zip(tokenizer(sources)["input_ids"],
                                                            tokenizer(text_target=targets)["input_ids"])]
    model = tiny_model(vocab_size=len(tokenizer))
    collated = DataCollatorForSeq2Seq(tokenizer, model=model)(features)
    labels = collated["labels"]
    assert all(row[row != -100][-1] == eos for row in labels)
    short = labels[0]
    assert (short == -100).sum() == labels.shape[1] - len(features[0]["labels"])
    assert torch.equal(collated["decoder_input_ids"], model.prepare_decoder_input_ids_from_labels(labels))


def test_truncation_keeps_the_end_of_sentence_token(tokenizer):
    ids = tokenizer("Ein sehr langer Satz, der abgeschnitten werden muss, weil er zu lang ist.", max_length=6,
                    truncation=True)["input_ids"]
    assert len(ids) == 6 and ids[-1] == tokenizer.eos_token_id


def test_config_from_tokenizer_uses_its_ids(tokenizer):
    config = VanillaTransformerConfig.from_tokenizer(tokenizer, preset="tiny")
    assert config.vocab_size == len(tokenizer) == 10000
    assert (config.pad_token_id, config.bos_token_id, config.eos_token_id, config.decoder_start_token_id) == (
        tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.bos_token_id)
    assert tokenizer.convert_ids_to_tokens([0, 1, 2, 3]) == ["<pad>", "<s>", "</s>", "<unk>"]


def test_unigram_is_lossless_too():
    tokenizer = train_tokenizer(texts=HARD_LINES * 20, vocab_size=400, model="unigram", show_progress=False)
    for line in HARD_LINES:
        assert tokenizer.decode(tokenizer(line)["input_ids"], skip_special_tokens=True) == line


def test_bad_input_is_refused_with_file_and_line(tmp_path):
    empty = tmp_path / "empty.de"
    empty.write_bytes(b"")
    with pytest.raises(CorpusError, match="empty.de: the file is empty"):
        train_tokenizer([empty], vocab_size=1000)

    latin1 = tmp_path / "latin1.de"
    latin1.write_bytes("gut\nschön\n".encode("latin-1"))
    with pytest.raises(CorpusError, match=r"latin1.de:2: not valid UTF-8 \(byte 0xf6 at column 4\)"):
        train_tokenizer([latin1], vocab_size=1000)

    blank = tmp_path / "blank.en"
    blank.write_text("one\n\nthree\n", encoding="utf-8")
    with pytest.raises(CorpusError, match="blank.en:2: empty line"):
        train_tokenizer([blank], vocab_size=1000)

    with pytest.raises(CorpusError, match="missing.en: no such file"):
        train_tokenizer([tmp_path / "missing.en"], vocab_size=1000)

    with pytest.raises(ValueError, match="vocab_size=100 is smaller than the byte alphabet plus special tokens"):
        train_tokenizer(texts=["hallo welt"], vocab_size=100)
    with pytest.raises(ValueError, match="model must be 'bpe' or 'unigram'"):
        train_tokenizer(texts=["hallo welt"], vocab_size=1000, model="wordpiece")


def test_special_token_strings_in_text_are_text(tokenizer, tmp_path):
    # Defect 9: "<s>" (an HTML tag in web-crawled text) became the control token and vanished on decode.
    line = "Ein <s>Hund</s> <pad> und <unk>: </s><s>"
    ids = tokenizer(line)["input_ids"]
    assert ids.count(tokenizer.eos_token_id) == 1 and ids[-1] == tokenizer.eos_token_id
    assert not {tokenizer.bos_token_id, tokenizer.pad_token_id, tokenizer.unk_token_id} & set(ids)
    assert tokenizer.decode(ids, skip_special_tokens=True) == line
    tokenizer.save_pretrained(tmp_path)
    for loaded in (AutoTokenizer.from_pretrained(tmp_path),
                   PreTrainedTokenizerFast.from_pretrained(tmp_path)):  # what a Hub user without the package gets
        assert loaded(line)["input_ids"] == ids
