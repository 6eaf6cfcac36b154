"""The data path at scale keeps its meaning: the same batches as the code that recorded tests/fixtures/batch_order.json
(commit 8687cb0), prepared data reused on rerun, resume and by a second process."""

import json
from pathlib import Path

import torch
from conftest import write_pairs

from vanilla_transformer import train_tokenizer
from vanilla_transformer.training.batching import TokenBatchSampler
from vanilla_transformer.training.data import clean, load_parallel, tokenize

RECORDED = json.loads((Path(__file__).parent / "fixtures/batch_order.json").read_text())


def test_token_batches_are_those_recorded_before_the_data_path_changed(data_dir, tmp_path):
    r = RECORDED
    de = (data_dir / "multi30k/train.de").read_text(encoding="utf-8").splitlines()[: r["pairs"]]
    en = (data_dir / "multi30k/train.en").read_text(encoding="utf-8").splitlines()[: r["pairs"]]
    write_pairs(tmp_path, "train", de, en)
    raw = load_parallel(tmp_path, ("de", "en"), splits=["train"])["train"]
    tokenizer = train_tokenizer(texts=[t for p in raw["translation"] for t in (p["de"], p["en"])],
                                vocab_size=r["vocab_size"], show_progress=False)
    dataset, counts = clean(tokenize(raw, tokenizer, ("de", "en")), r["max_length"], r["max_ratio"])
    assert counts == r["cleaning"] and dataset["input_ids"][0] == r["first_ids"]
    from vanilla_transformer.training.data import token_lengths

    sampler = TokenBatchSampler(token_lengths(dataset, "input_ids"), token_lengths(dataset, "labels"),
                                max_tokens=r["max_tokens"], seed=r["seed"])
    for epoch, batches in r["epochs"].items():
        sampler.set_epoch(int(epoch))
        assert list(sampler) == batches, f"epoch {epoch}"


def test_sampler_batches_are_those_recorded_on_synthetic_lengths():
    generator = torch.Generator().manual_seed(0)
    src = torch.randint(1, 60, (1000,), generator=generator).tolist()
    tgt = torch.randint(1, 60, (1000,), generator=generator).tolist()
    synthetic = RECORDED["synthetic"]
    sampler = TokenBatchSampler(src, tgt, max_tokens=synthetic["max_tokens"], seed=synthetic["seed"])
    sampler.set_epoch(synthetic["epoch"])
    assert list(sampler) == synthetic["batches"]
