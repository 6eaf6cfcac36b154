"""Shared pieces of the benchmarks: the two models at one shape, timing, and the machine's matmul peak."""

import os
import platform
import resource
import statistics
import time

import torch
from transformers import MarianConfig, MarianMTModel

from vanilla_transformer import VanillaTransformerConfig, VanillaTransformerForConditionalGeneration
from vanilla_transformer.convert.marian import convert_marian

SHAPES = {
    "small": dict(vocab_size=8000, d_model=256, layers=3, heads=4, d_ff=1024),
    "base": dict(vocab_size=32000, d_model=512, layers=6, heads=8, d_ff=2048),
}


def marian_and_ours(shape: str, seed: int = 0, same_weights: bool = True):
    """A MarianMTModel of the given shape (relu, tied, scaled embeddings) and our model; same weights if asked."""
    s = SHAPES[shape]
    torch.manual_seed(seed)
    marian = MarianMTModel(MarianConfig(
        vocab_size=s["vocab_size"], d_model=s["d_model"], encoder_layers=s["layers"], decoder_layers=s["layers"],
        encoder_attention_heads=s["heads"], decoder_attention_heads=s["heads"], encoder_ffn_dim=s["d_ff"],
        decoder_ffn_dim=s["d_ff"], activation_function="relu", scale_embedding=True, dropout=0.1,
        pad_token_id=0, eos_token_id=2, decoder_start_token_id=1, forced_eos_token_id=None,
        max_position_embeddings=512, attn_implementation="sdpa",
    ))
    if same_weights:
        ours = convert_marian(marian)
    else:
        ours = VanillaTransformerForConditionalGeneration(VanillaTransformerConfig(
            vocab_size=s["vocab_size"], d_model=s["d_model"], encoder_layers=s["layers"], decoder_layers=s["layers"],
            num_attention_heads=s["heads"], d_ff=s["d_ff"], max_position_embeddings=512,
        ))
    return marian, ours


def median_seconds(fn, repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def matmul_peak_flops(dtype=torch.float32, n: int = 2048, repeats: int = 5) -> float:
    """FLOP/s of a large square matmul on this machine, now: the ceiling the models are measured against."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    return 2 * n**3 / median_seconds(lambda: a @ b, repeats, warmup=2)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def machine() -> dict:
    return {
        "processor": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
