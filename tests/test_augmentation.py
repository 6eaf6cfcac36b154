"""data.augment (issue 31): casing, final punctuation, source typos and BPE-dropout of training pairs, drawn per seed
and epoch, reproduced on resume, and nothing changed when off."""

import difflib
import random
import string

import numpy as np
import pyarrow as pa
import pytest
from conftest import tiny_recipe

from vanilla_transformer.training import augment
from vanilla_transformer.training.augment import Augmenter, AugmentingCollator, DropoutBPE, add_typos, transform
from vanilla_transformer.training.recipe import AugmentRecipe, RecipeError
from vanilla_transformer.training.run import train
from vanilla_transformer.training.tokenizer import train_tokenizer

SOURCES = ["Ein Mann mit einem orangefarbenen Hut, der etwas anstarrt.", "Zwei Hunde spielen im Schnee!",
           "Eine Frau liest ein Buch", "Kinder laufen über eine Wiese?"] * 50
TARGETS = ["A man in an orange hat starring at something.", "Two dogs play in the snow!",
           "A woman reads a book", "Children run across a meadow?"] * 50


@pytest.fixture(scope="module")
def backend():
    return train_tokenizer(texts=SOURCES + TARGETS, vocab_size=400, show_progress=False).backend_tokenizer


def augmenter(backend, seed=1, **options) -> Augmenter:
    texts = (pa.array(SOURCES), pa.array(TARGETS))
    return Augmenter(AugmentRecipe(**options), texts, backend, seed, max_length=256)


def test_transform_recases_and_drops_final_punctuation():
    assert transform("Zwei Hunde spielen!", "upper", False) == "ZWEI HUNDE SPIELEN!"
    assert transform("zwei Hunde spielen.", "title", True) == "Zwei Hunde Spielen"
    assert transform("Zwei Hunde spielen ?! ", "lower", True) == "zwei hunde spielen"
    assert transform("...", None, True) == "..."  # punctuation only: kept


def test_dropout_bpe_at_zero_gives_the_tokenizers_ids(backend):
    plain = DropoutBPE(backend, 0.0)
    for text in SOURCES[:4] + TARGETS[:4] + ["ÜBERALL SCHNEE 123", "unbekanntwort"]:
        assert plain.encode(text, random.Random(0), None) == backend.encode(text).ids


def test_dropout_bpe_segments_more_and_deterministically_per_draw(backend):
    dropped = DropoutBPE(backend, 0.3)
    text = " ".join(SOURCES[:4])
    first, again = (dropped.encode(text, random.Random(7), None) for _ in range(2))
    assert first == again and len(first) > len(backend.encode(text).ids)
    assert dropped.encode(text, random.Random(8), None) != first
    assert backend.decode(first) == text  # the same text, in smaller pieces


def test_shares_follow_the_options_and_the_draws_follow_seed_and_epoch(backend):
    rows = np.arange(len(SOURCES))
    a = augmenter(backend, upper=0.2, title=0.1, drop_final_punctuation=0.3)
    casing, drop, typos = a.plan(rows, epoch=0)
    assert not typos.any()
    assert abs(casing.count("upper") / len(rows) - 0.2) < 0.07
    assert abs(casing.count("title") / len(rows) - 0.1) < 0.06 and casing.count("lower") == 0
    assert abs(drop.mean() - 0.3) < 0.08
    assert a.plan(rows, 0)[0] == casing and augmenter(backend, upper=0.2, title=0.1).plan(rows, 0)[0] == casing
    assert a.plan(rows, 1)[0] != casing  # another epoch, other pairs
    assert augmenter(backend, seed=2, upper=0.2, title=0.1).plan(rows, 0)[0] != casing  # another seed
    encoded = a.encode_rows(rows, 0)
    for i in np.flatnonzero([c == "upper" for c in casing])[:5]:
        assert backend.decode(encoded[i][0]).removesuffix("</s>") == transform(SOURCES[i], "upper", drop[i])
        assert backend.decode(encoded[i][1]).removesuffix("</s>") == transform(TARGETS[i], "upper", drop[i])
    assert all(encoded[i] is None for i in range(len(rows)) if casing[i] is None and not drop[i])


def test_typos_come_at_about_their_rate_and_the_same_per_draw():
    words = random.Random(0)  # words of random letters, which the diff below cannot align wrongly
    text = " ".join("".join(words.choice(string.ascii_letters) for _ in range(6)) for _ in range(400))
    noisy = add_typos(text, random.Random(3))
    assert noisy == add_typos(text, random.Random(3)) and noisy != add_typos(text, random.Random(4))
    # Each typo is one or two edits (a swap: a deletion and an insertion) where the texts differ.
    edits = sum(op != "equal" for op, *_ in difflib.SequenceMatcher(None, text, noisy, autojunk=False).get_opcodes())
    expected = sum(not c.isspace() for c in text) / 15
    assert 0.6 * expected < edits < 2.2 * expected
    assert noisy.count(" ") == text.count(" ")  # spaces are never touched


def test_typos_change_the_source_only_in_the_share_asked_for(backend):
    rows = np.arange(len(SOURCES))
    a = augmenter(backend, typos=0.3)
    _, _, typos = a.plan(rows, epoch=0)
    assert abs(typos.mean() - 0.3) < 0.08
    encoded = a.encode_rows(rows, 0)
    for i in range(len(rows)):
        if not typos[i]:
            assert encoded[i] is None
            continue
        source = backend.decode(encoded[i][0]).removesuffix("</s>")
        assert backend.decode(encoded[i][1]).removesuffix("</s>") == TARGETS[i]  # the target as it is
        assert source == add_typos(SOURCES[i], random.Random(int(augment.pair_hashes(1, 0, rows[i:i + 1])[0])
                                                             ^ augment.TYPO_STREAM))
    assert sum(backend.decode(encoded[i][0]).removesuffix("</s>") != SOURCES[i]
               for i in np.flatnonzero(typos)) > 0.6 * typos.sum()  # a short source may draw no typo
    assert a.encode_rows(rows, 0) == encoded and a.encode_rows(rows, 1) != encoded


def test_the_collator_keeps_the_batch_within_its_cap(backend):
    a = augmenter(backend, upper=1.0)
    rows = list(range(8))
    features = [{"input_ids": backend.encode(SOURCES[r]).ids, "labels": backend.encode(TARGETS[r]).ids,
                 augment.EXAMPLE: r} for r in rows]
    plain = max(max(len(f["input_ids"]), len(f["labels"])) for f in features)
    cap = len(rows) * plain  # as full as the sampler packs it: upper-cased pairs are longer
    batch = AugmentingCollator(a, lambda fs: fs, cap)(features)
    assert len(batch) * max(max(len(f["input_ids"]), len(f["labels"])) for f in batch) <= cap
    assert a.reverted > 0


def test_recipe_checks_the_options(tmp_path, small_corpus):
    with pytest.raises(RecipeError, match="data.augment.upper"):
        tiny_recipe(small_corpus, tmp_path, "data.augment.upper=0.7", "data.augment.lower=0.5")
    with pytest.raises(RecipeError, match="data.augment.typos"):
        tiny_recipe(small_corpus, tmp_path, "data.augment.typos=1.5")
    with pytest.raises(RecipeError, match="data.augment.bpe_dropout"):
        tiny_recipe(small_corpus, tmp_path, "data.augment.bpe_dropout=0.1", "tokenizer.model=unigram")
    assert not tiny_recipe(small_corpus, tmp_path).data.augment.active()


def recorded_batches(monkeypatch) -> list:
    """The input ids and labels of every batch the trainer collates from here on."""
    seen = []
    collate = AugmentingCollator.__call__

    def recording(self, features):
        batch = collate(self, features)
        seen.append((batch["input_ids"].tolist(), batch["labels"].tolist()))
        return batch

    monkeypatch.setattr(AugmentingCollator, "__call__", recording)
    return seen


def test_a_resumed_run_sees_the_augmented_batches_of_an_unbroken_one(small_corpus, tmp_path, monkeypatch):
    options = ["data.augment.upper=0.3", "data.augment.drop_final_punctuation=0.3", "data.augment.bpe_dropout=0.1",
               "data.augment.typos=0.3",
               "training.save_steps=4", "data.test=null", "training.eval_steps=1000"]
    seen = recorded_batches(monkeypatch)
    train(tiny_recipe(small_corpus, tmp_path / "straight", "training.max_steps=8", *options))
    straight = list(seen)
    assert len(straight) >= 8
    seen.clear()
    train(tiny_recipe(small_corpus, tmp_path / "resumed", "training.max_steps=4", *options))
    before = len(seen)
    train(tiny_recipe(small_corpus, tmp_path / "resumed", "training.max_steps=8", *options), resume=True)
    assert seen[:4] == straight[:4]
    assert seen[before:before + 4] == straight[4:8]
    seen.clear()
    train(tiny_recipe(small_corpus, tmp_path / "other-seed", "training.max_steps=4", "training.seed=2", *options))
    assert seen[:4] != straight[:4]


def test_off_makes_no_augmenter_so_the_batches_are_todays(backend):
    # The trainer then collates as before: tests/test_data_path.py's recorded batches check the ids themselves.
    assert augment.make_augmenter(AugmentRecipe(), None, None, ("de", "en"), backend, 1, 256) is None


def test_batches_are_packed_with_headroom_but_never_below_the_longest_pair(backend):
    a = augmenter(backend, upper=0.1, headroom=0.25)
    a.longest = 100
    assert a.packing_tokens(2000) == 1600 and a.packing_tokens(110) == 100
