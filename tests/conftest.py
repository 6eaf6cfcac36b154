"""Shared fixtures: the data folder, tiny models and batches, and a tiny Multi30k training recipe."""

import os
import socket
import sys
from pathlib import Path

import pytest
import torch

from vanilla_transformer import VanillaTransformerConfig, VanillaTransformerForConditionalGeneration
from vanilla_transformer.training.recipe import load_recipe

REPO = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("VANILLA_TRANSFORMER_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The shared parallel corpora (VANILLA_TRANSFORMER_DATA, default ../shared/data)."""
    if not (DATA_DIR / "multi30k").is_dir():
        pytest.skip(f"shared data not found at {DATA_DIR} (set VANILLA_TRANSFORMER_DATA)")
    return DATA_DIR


def tiny_model(seed: int = 0, **overrides) -> VanillaTransformerForConditionalGeneration:
    """A tiny model in eval mode with deterministic random weights."""
    torch.manual_seed(seed)
    config = VanillaTransformerConfig.from_preset("tiny", **overrides)
    return VanillaTransformerForConditionalGeneration(config).eval()


def tiny_model_folder(data_dir: Path, folder: Path, positions: int) -> Path:
    """A tiny (untrained) model with a tokenizer trained on Multi30k val, saved like a run's model folder."""
    from vanilla_transformer import train_tokenizer

    tokenizer = train_tokenizer([data_dir / "multi30k/val.de", data_dir / "multi30k/val.en"], vocab_size=500,
                                show_progress=False)
    tiny_model(vocab_size=len(tokenizer), max_position_embeddings=positions).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def random_batch(batch: int, length: int, vocab: int = 99, seed: int = 0) -> torch.Tensor:
    """Token ids that avoid the four special tokens."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(4, vocab, (batch, length), generator=generator)


def write_pairs(folder: Path, split: str, de: list[str], en: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{split}.de").write_text("\n".join(de) + "\n", encoding="utf-8")
    (folder / f"{split}.en").write_text("\n".join(en) + "\n", encoding="utf-8")


@pytest.fixture(scope="session")
def small_corpus(data_dir, tmp_path_factory) -> Path:
    """500 training pairs of Multi30k, and 40 each for validation and test, in a temporary folder."""
    folder = tmp_path_factory.mktemp("multi30k-500")
    for split, source, count in (("train", "train", 500), ("val", "val", 40), ("test2016", "test2016", 40)):
        de = (data_dir / f"multi30k/{source}.de").read_text(encoding="utf-8").splitlines()[:count]
        en = (data_dir / f"multi30k/{source}.en").read_text(encoding="utf-8").splitlines()[:count]
        write_pairs(folder, split, de, en)
    return folder


def tiny_overrides(corpus: Path) -> list[str]:
    """The Multi30k recipe shrunk to seconds: tiny model, small vocabulary, small batches."""
    return [
        f"data.source={corpus}", "tokenizer.vocab_size=400", "model.preset=tiny",
        "model.overrides={dropout: 0.1, max_position_embeddings: 256}", "training.update_tokens=600",
        "training.warmup_steps=20", "training.lr_scale=2.0", "training.logging_steps=5", "training.save_steps=20",
        "training.precision=fp32", "average_last=0",
        # The schedule these tiny trainings were tuned with; the demo's budget schedule would decay the rate to 5% by
        # each test's max_steps.
        "training.schedule=noam",
        # Nor the demo's typos (data.augment): these tests check other things on plain pairs; test_augmentation
        # checks the augmentation.
        "data.augment.typos=0",
    ]


def tiny_recipe(corpus: Path, out: Path, *extra: str):
    overrides = tiny_overrides(corpus) + [
        f"output_dir={out}", "training.max_steps=40", "training.eval_steps=20", "generation.num_beams=2",
        "data.validation_size=null", *extra,
    ]
    return load_recipe(REPO / "configs/multi30k-de-en-small.yaml", overrides)


def memorize_test2016(data_dir: Path, tmp_path_factory, sentences: int, validation: int, positions: int,
                      *extra: str) -> tuple[Path, Path, list[str], list[str]]:
    """A tiny de->en model (d_model 64, no dropout) trained on the first `sentences` test2016 pairs until it
    translates them, each to its end, in seconds: its model folder, that corpus and the German and English lines."""
    from vanilla_transformer.training.run import train

    corpus = tmp_path_factory.mktemp("test2016-head")
    de = (data_dir / "multi30k/test2016.de").read_text(encoding="utf-8").splitlines()[:sentences]
    en = (data_dir / "multi30k/test2016.en").read_text(encoding="utf-8").splitlines()[:sentences]
    write_pairs(corpus, "train", de, en)
    write_pairs(corpus, "val", de[:validation], en[:validation])
    out = tmp_path_factory.mktemp("memorized") / "run"
    train(tiny_recipe(corpus, out, f"model.overrides={{dropout: 0.0, max_position_embeddings: {positions}, "
                                   "d_model: 64, d_ff: 128}", "training.warmup_steps=50", "training.lr_scale=1.0",
                      "training.eval_steps=1000", "training.save_steps=1000", "data.test=null", *extra))
    return out / "model", corpus, de, en


@pytest.fixture(scope="session")
def memorized(data_dir, tmp_path_factory):
    """A tiny de->en model that translates the first 12 test2016 pairs, learnt by heart, and that corpus."""
    # 800 updates: after 500, on a 2-core AVX2-only EPYC, train BLEU was 49 with 2 threads and 19 with 1 (the suite
    # ran it on 1 there, once a CTranslate2 test had set torch's threads: fixed since); after 800, 62 and 69.
    return memorize_test2016(data_dir, tmp_path_factory, 12, 4, 128, "training.max_steps=800",
                             "training.label_smoothing=0.0")


def free_port() -> int:
    """A free port for a launch's rendezvous, rather than the fixed default 29500."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def accelerate_launch(*program: str, processes: int = 2, machines: int = 1, machine_rank: int = 0,
                      port: int | None = None) -> list[str]:
    """The command of `accelerate launch` for `program` (a script and its arguments, or -m, a module and its).

    --multi_gpu is accelerate's torchrun-based launcher; with no GPU the processes use the CPU and gloo. The machines
    of one launch (machine_rank 0, 1, ... on this one) meet on the same port.
    """
    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
            "--num_machines", str(machines), "--machine_rank", str(machine_rank), "--main_process_ip", "127.0.0.1",
            "--main_process_port", str(port or free_port()), "--mixed_precision", "no", "--dynamo_backend", "no",
            *program]


def launch_env(**extra: str) -> dict:
    """The environment for a launch's CPU processes: no GPU, one thread each (they share this machine's cores)."""
    return {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1", **extra}
