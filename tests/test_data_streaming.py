"""The data path streams the corpus (issue 30): the text read in lockstep chunks with the errors of a whole-file
read, the tokenizer learned from an iterator (the vocabulary of all the text), ids in the smallest integer type."""

import json

import datasets
import numpy as np
import pyarrow as pa
import pytest
from conftest import write_pairs
from tokenizers import Tokenizer, models, pre_tokenizers

from vanilla_transformer import train_tokenizer
from vanilla_transformer.corpus import CorpusError, read_lines
from vanilla_transformer.training import data
from vanilla_transformer.training.data import encode_pairs, load_parallel, token_lengths, tokenize
from vanilla_transformer.training.prepare import training_text


@pytest.fixture
def tiny_chunks(monkeypatch):
    """Chunks of a few lines, so that every file below spans many of them."""
    monkeypatch.setattr(data, "TEXT_CHUNK_BYTES", 16)


def write(folder, files: dict):
    for name, content in files.items():
        (folder / name).write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))


def test_chunked_read_gives_the_lines_of_a_whole_file_read(tmp_path, tiny_chunks):
    de = ["Ein Hund.\r", "Zwei  Katzen", "Über \u00e9t\u00e9 \u2028 x", "\ufeffletzte"] * 7
    en = ["A dog.", "Two cats\r", "About summer", "last"] * 7
    write(tmp_path, {"train.de": "\n".join(de) + "\r\n", "train.en": "\n".join(en)})  # no final line ending
    pairs = load_parallel(tmp_path, ("de", "en"), splits=["train"])["train"]["translation"]
    expected = zip(read_lines(tmp_path / "train.de"), read_lines(tmp_path / "train.en"))
    assert [(p["de"], p["en"]) for p in pairs] == list(expected)


@pytest.mark.parametrize("files, message", [
    ({"train.de": "a\n" * 40, "train.en": "a\n" * 39}, r"train.de has 40 lines but .*train.en has 39: the files"),
    ({"train.de": "a\n" * 39, "train.en": "a\n" * 39 + "b"}, r"train.de has 39 lines but .*train.en has 40: the files"),
    ({"train.de": "a\n" * 30 + "\n" + "a\n" * 5, "train.en": "a\n" * 36}, r"train.de:31: empty line"),
    ({"train.de": "a\n" * 36, "train.en": "a\n" * 33 + " \t\n" + "a\n" * 2}, r"train.en:34: empty line"),
    ({"train.de": b"a\n" * 25 + b"ab\xfcc\n", "train.en": "a\n" * 26}, r"train.de:26: not valid UTF-8 \(byte 0xfc at column 3\)"),
    ({"train.de": "a\n" * 26, "train.en": b"a\n" * 20 + b"\xe2\x82\n" + b"a\n" * 5},
     r"train.en:21: not valid UTF-8 \(byte 0xe2 at column 1\)"),
    ({"train.de": "", "train.en": ""}, r"train.de: the file is empty"),
    ({"train.de": "a\n", "train.en": ""}, r"train.en: the file is empty"),
])
def test_errors_of_the_chunked_read_name_the_file_and_line_past_the_first_chunk(tmp_path, tiny_chunks, files,
                                                                                message):
    write(tmp_path, files)
    with pytest.raises(CorpusError, match=message):
        load_parallel(tmp_path, ("de", "en"), splits=["train"])


def test_dropped_empty_pairs_in_any_chunk_and_the_cache_keyed_by_content(tmp_path, tiny_chunks):
    de = [f"s{i}" if i % 7 else "" for i in range(60)]
    en = [f"t{i}" if i % 11 else " " for i in range(60)]
    write_pairs(tmp_path, "train", de, en)
    first = load_parallel(tmp_path, ("de", "en"), splits=["train"], drop_empty=True)["train"]
    assert [p["de"] for p in first["translation"]] == [d for d, e in zip(de, en) if d.strip() and e.strip()]
    again = load_parallel(tmp_path, ("de", "en"), splits=["train"], drop_empty=True)["train"]
    assert again._fingerprint == first._fingerprint and again.cache_files == first.cache_files
    write_pairs(tmp_path, "train", [d.upper() for d in de], en)
    changed = load_parallel(tmp_path, ("de", "en"), splits=["train"], drop_empty=True)["train"]
    assert changed._fingerprint != first._fingerprint and changed["translation"][0]["de"] == "S1"


def test_tokenizer_from_the_streamed_sample_has_the_vocabulary_of_all_the_text(data_dir, tmp_path, monkeypatch):
    # A corpus below the sample size (2M by default): the texts come from Arrow chunks through an iterator, and the
    # vocabulary and merges equal those learned from the whole files read as lists.
    from vanilla_transformer.training import prepare
    from vanilla_transformer.training.recipe import TokenizerRecipe

    monkeypatch.setattr(prepare, "TRAINING_TEXT_CHUNK_PAIRS", 1000)
    de = read_lines(data_dir / "multi30k/train.de")[:5000]
    en = read_lines(data_dir / "multi30k/train.en")[:5000]
    write_pairs(tmp_path, "train", de, en)
    raw = load_parallel(tmp_path, ("de", "en"), splits=["train"])["train"]
    sample = TokenizerRecipe().sample
    assert sample == 2_000_000
    streamed = train_tokenizer(texts=training_text(raw, ("de", "en"), sample, seed=1), vocab_size=2000,
                               show_progress=False)
    whole = train_tokenizer(texts=de + en, vocab_size=2000, show_progress=False)
    streamed_model = json.loads(streamed.backend_tokenizer.to_str())["model"]
    whole_model = json.loads(whole.backend_tokenizer.to_str())["model"]
    assert streamed_model["vocab"] == whole_model["vocab"] and streamed_model["merges"] == whole_model["merges"]


def test_the_sample_is_uniform_without_replacement_and_follows_the_seed(monkeypatch):
    from vanilla_transformer.training import prepare

    monkeypatch.setattr(prepare, "TRAINING_TEXT_CHUNK_PAIRS", 64)
    pairs = 1000
    raw = datasets.Dataset.from_dict({"translation": [{"de": f"d{i}", "en": f"e{i}"} for i in range(pairs)]})
    drawn = list(training_text(raw, ("de", "en"), 100, seed=3))
    rows = [int(text[1:]) for text in drawn[::2]]
    assert drawn[1::2] == [f"e{row}" for row in rows] and len(set(rows)) == 100 and rows == sorted(rows)
    assert list(training_text(raw, ("de", "en"), 100, seed=3)) == drawn
    assert list(training_text(raw, ("de", "en"), 100, seed=4)) != drawn
    # Each row's frequency over many seeds: about 100/1000 for every part of the corpus (chunk edges included).
    counts = np.zeros(pairs)
    for seed in range(300):
        counts[[int(text[1:]) for text in list(training_text(raw, ("de", "en"), 100, seed))[::2]]] += 1
    by_chunk = counts.reshape(-1, 8).mean(axis=1) / 300  # 125 groups of 8 rows: 240 draws each
    assert abs(by_chunk.mean() - 0.1) < 1e-9 and by_chunk.min() > 0.04 and by_chunk.max() < 0.17


def word_level_backend(size: int) -> str:
    """A tokenizer of `size` words w0, w1, ..., one id each, as JSON."""
    backend = Tokenizer(models.WordLevel({f"w{i}": i for i in range(size)}, unk_token="w0"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return backend.to_str()


@pytest.mark.parametrize("size, stored", [(300, "uint16"), (65536, "uint16"), (65537, "int32"), (70000, "int32")])
def test_ids_are_stored_in_the_smallest_type_and_read_back_as_the_same_ints(size, stored):
    words = [" ".join(f"w{(i * 7919 + j) % size}" for j in range(5)) for i in range(50)] + [f"w{size - 1} w1"]
    raw = datasets.Dataset.from_dict({"translation": [{"de": w, "en": w[::-1].strip()} for w in words]})
    backend = word_level_backend(size)
    encoded = encode_pairs(raw, backend, ("de", "en"), None, None, f"ids-{size}")
    assert encoded.features["input_ids"].feature.dtype == stored
    assert encoded.data.column("input_ids").type.value_type == pa.type_for_alias(stored)
    expected = [e.ids for e in Tokenizer.from_str(backend).encode_batch(words)]
    assert encoded["input_ids"] == expected and type(encoded[50]["input_ids"][0]) is int
    assert encoded[50]["input_ids"] == [size - 1, 1]
    assert token_lengths(encoded, "input_ids").tolist() == [len(ids) for ids in expected]


def test_tokenized_rows_through_the_tokenizer_wrapper_keep_their_ids(tmp_path):
    tokenizer = train_tokenizer(texts=["Ein Hund rennt.", "A dog runs."] * 20, vocab_size=300, show_progress=False)
    write_pairs(tmp_path, "train", ["Ein Hund rennt."] * 3, ["A dog runs."] * 3)
    raw = load_parallel(tmp_path, ("de", "en"), splits=["train"])["train"]
    tokenized = tokenize(raw, tokenizer, ("de", "en"))
    assert tokenized.features["labels"].feature.dtype == "uint16"
    assert tokenized["labels"] == tokenizer(["A dog runs."] * 3)["input_ids"]


def test_cache_files_hold_a_record_batch_per_chunk_not_per_thousand_rows(tmp_path, monkeypatch):
    """Every process that maps a cache file holds Arrow objects for each of its record batches and columns: with
    datasets' default of 1,000 rows a batch, a 45M-pair corpus made 45,000 of them per file, memory that grew with
    the corpus. The text is written a read chunk per batch, the ids an encoding batch per batch."""
    monkeypatch.setattr(data, "TEXT_CHUNK_BYTES", 1 << 15)
    monkeypatch.setattr(data, "ENCODE_BATCH_PAIRS", 2000)
    lines = [f"w{i % 300} w{i * 7 % 300}" for i in range(5000)]  # about 11 bytes a line: 2 chunks of 32 KiB
    write_pairs(tmp_path, "train", lines, lines)
    raw = load_parallel(tmp_path, ("de", "en"), splits=["train"])["train"]
    assert raw.cache_files and raw.data.column("translation").num_chunks == 2
    encoded = encode_pairs(raw, word_level_backend(300), ("de", "en"), None, None, "record-batches")
    assert encoded.cache_files and encoded.data.column("input_ids").num_chunks == 3  # 2,000 + 2,000 + 1,000 rows
    assert encoded["input_ids"][4999] == [4999 % 300, 4999 * 7 % 300]
