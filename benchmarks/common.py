"""Shared pieces of the benchmarks: the two models at one shape, timing, and the machine's matmul peak."""

import contextlib
import os
import platform
import statistics
import time
from pathlib import Path

import torch
from transformers import MarianConfig, MarianMTModel

from vanilla_transformer import VanillaTransformerConfig, VanillaTransformerForConditionalGeneration
from vanilla_transformer.convert.marian import convert_marian

SHAPES = {
    "small": dict(vocab_size=8000, d_model=256, layers=3, heads=4, d_ff=1024),
    "base": dict(vocab_size=32000, d_model=512, layers=6, heads=8, d_ff=2048),
}


def marian_model(shape: str, seed: int = 0) -> MarianMTModel:
    """A random MarianMTModel of the given shape: relu, tied and scaled embeddings, dropout 0.1, SDPA."""
    s = SHAPES[shape]
    torch.manual_seed(seed)
    return MarianMTModel(MarianConfig(
        vocab_size=s["vocab_size"], d_model=s["d_model"], encoder_layers=s["layers"], decoder_layers=s["layers"],
        encoder_attention_heads=s["heads"], decoder_attention_heads=s["heads"], encoder_ffn_dim=s["d_ff"],
        decoder_ffn_dim=s["d_ff"], activation_function="relu", scale_embedding=True, dropout=0.1,
        pad_token_id=0, eos_token_id=2, decoder_start_token_id=1, forced_eos_token_id=None,
        max_position_embeddings=512, attn_implementation="sdpa",
    ))


def our_model(shape: str, seed: int = 0) -> VanillaTransformerForConditionalGeneration:
    """Our model with the same shape, built directly (not converted)."""
    s = SHAPES[shape]
    torch.manual_seed(seed)
    return VanillaTransformerForConditionalGeneration(VanillaTransformerConfig(
        vocab_size=s["vocab_size"], d_model=s["d_model"], encoder_layers=s["layers"], decoder_layers=s["layers"],
        num_attention_heads=s["heads"], d_ff=s["d_ff"], max_position_embeddings=512,
    ))


def marian_and_ours(shape: str, seed: int = 0, same_weights: bool = True):
    """A MarianMTModel of the given shape and our model; ours converted from it (same weights) if asked."""
    marian = marian_model(shape, seed)
    return marian, convert_marian(marian) if same_weights else our_model(shape, seed)


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


def multi30k_token_batches(data_dir: str | Path, max_tokens: int = 4096, vocab_size: int = 8000):
    """Multi30k train tokenised with a joint BPE of vocab_size, and its fairseq-style token batches (one epoch)."""
    from vanilla_transformer.training.tokenizer import train_tokenizer
    from vanilla_transformer.training.batching import TokenBatchSampler
    from vanilla_transformer.training.data import load_parallel, token_lengths, tokenize

    folder = Path(data_dir) / "multi30k"
    raw = load_parallel(folder, ("de", "en"), splits=["train"])["train"]
    tokenizer = train_tokenizer([folder / "train.de", folder / "train.en"], vocab_size=vocab_size, show_progress=False)
    dataset = tokenize(raw, tokenizer, ("de", "en"))
    src_lengths, tgt_lengths = token_lengths(dataset, "input_ids"), token_lengths(dataset, "labels")
    batches = list(TokenBatchSampler(src_lengths, tgt_lengths, max_tokens=max_tokens, seed=0))
    return tokenizer, dataset, batches, src_lengths, tgt_lengths


def train_steps(model, batches, autocast: bool = False, lr: float = 1e-4) -> tuple[float, float]:
    """Adam steps over collated batches: non-pad target tokens/s (the first step warms up, untimed), last loss."""
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, betas=(0.9, 0.98), eps=1e-9)
    context = torch.autocast("cpu", dtype=torch.bfloat16) if autocast else contextlib.nullcontext()
    tokens, seconds, loss = 0, 0.0, None
    for i, inputs in enumerate(batches):
        start = time.perf_counter()
        with context:
            loss = model(**inputs).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if i:
            seconds += time.perf_counter() - start
            tokens += int((inputs["labels"] != -100).sum())
    return tokens / seconds, loss.item()


def machine() -> dict:
    return {
        "processor": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
