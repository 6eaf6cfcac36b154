import os
from pathlib import Path

import pytest
import torch

from vanilla_transformer import VanillaTransformerConfig, VanillaTransformerForConditionalGeneration

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


def random_batch(batch: int, length: int, vocab: int = 99, seed: int = 0) -> torch.Tensor:
    """Token ids that avoid the four special tokens."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(4, vocab, (batch, length), generator=generator)
