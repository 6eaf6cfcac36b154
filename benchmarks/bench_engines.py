"""Serving speed of the trained Multi30k model on test2016: MarianMTModel (the same weights, through
export-marian), ours in PyTorch, and CTranslate2 in float32 and int8. Beam 4 in batches of 32 (sentences/s and
BLEU), and greedy one sentence at a time (ms per generated token). CTranslate2 runs in two layouts of the same
threads: its default here, a worker per thread translating batches side by side, and one worker on all of them.

Every engine decodes with the same limit (64 new tokens, beyond any test2016 translation). Marian's fp32 logits are
first checked against ours (max difference <= 1e-5 of the largest logit). Prints one JSON object.
Usage: python benchmarks/bench_engines.py [MODEL_DIR] [--data ../shared/data] [--latency-sentences 100]
"""

import argparse
import json
import multiprocessing
import os
import tempfile
import time
from pathlib import Path

import torch
from common import machine
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer, MarianMTModel

import vanilla_transformer  # noqa: F401  (registers the Auto classes)
from vanilla_transformer.convert.marian import export_marian_checkpoint
from vanilla_transformer.corpus import read_lines
from vanilla_transformer.engines.ctranslate2 import Translator, cpu_flags, export
from vanilla_transformer.evaluation import decoding_settings, score, translate
from vanilla_transformer.training.run import bf16_available

MAX_NEW_TOKENS = 64


def torch_engine(model, tokenizer):
    def run(lines, num_beams, batch_size):
        return translate(model, tokenizer, lines, batch_size=batch_size, progress=False,
                         max_new_tokens=MAX_NEW_TOKENS, **decoding_settings(num_beams, 0.6))
    return run


def ctranslate2_engine(translator: Translator):
    def run(lines, num_beams, batch_size):
        return translator.translate(lines, num_beams=num_beams, length_penalty=0.6 if num_beams > 1 else 1.0,
                                    batch_size=batch_size, max_new_tokens=MAX_NEW_TOKENS)
    return run


def measure_ctranslate2(path: str, model_dir: str, sources, references, latency_sentences: int,
                        inter_threads: int, intra_threads: int):
    """The engine in a process of its own: once torch's thread pool has run in a process, the engine's threads share
    the cores with it (on the 2-core AVX-512 EPYC: beam 4 at 95 instead of 173 sentences/s, 2026-12-03)."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    engine = ctranslate2_engine(Translator(path, inter_threads=inter_threads, intra_threads=intra_threads))
    return measure(engine, sources, references, tokenizer, latency_sentences)


def measure(run, sources, references, tokenizer, latency_sentences: int) -> dict:
    start = time.perf_counter()
    hypotheses = run(sources, 4, 32)
    seconds = time.perf_counter() - start
    tokens, start = 0, time.perf_counter()
    for line in sources[:latency_sentences]:
        tokens += len(tokenizer(run([line], 1, 1)[0])["input_ids"])  # generated tokens, </s> included
    latency = time.perf_counter() - start
    return {"beam4_sentences_per_s": round(len(sources) / seconds, 1), "beam4_seconds": round(seconds, 1),
            "bleu": round(score(hypotheses, references)["bleu"], 2),
            "greedy_batch1_ms_per_token": round(1000 * latency / tokens, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("model", nargs="?", default="runs/multi30k-de-en-small/model")
    parser.add_argument("--data", default=os.environ.get("VANILLA_TRANSFORMER_DATA", "../shared/data"))
    parser.add_argument("--latency-sentences", type=int, default=100)
    args = parser.parse_args()

    folder = Path(args.data) / "multi30k"
    sources, references = read_lines(folder / "test2016.de"), read_lines(folder / "test2016.en")
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    ours = AutoModelForSeq2SeqLM.from_pretrained(args.model).eval()
    work = Path(tempfile.mkdtemp())
    export_marian_checkpoint(args.model, work / "marian")
    marian = MarianMTModel.from_pretrained(work / "marian").eval()
    batch = tokenizer(sources[:8], return_tensors="pt", padding=True)
    decoder_input_ids = tokenizer(text_target=references[:8], return_tensors="pt", padding=True)["input_ids"]
    with torch.no_grad():
        our_logits = ours(**batch, decoder_input_ids=decoder_input_ids).logits
        difference = (marian(**batch, decoder_input_ids=decoder_input_ids).logits - our_logits).abs().max().item()
    # fp32 rounding grows with the logits' size (up to 14 for the demo model), and the permuted weights sum in
    # another order; a wrong mapping moves logits by whole units.
    largest_logit = our_logits.abs().max().item()
    assert difference <= 1e-5 * max(1.0, largest_logit), f"Marian's logits differ from ours by {difference}"

    engines = {"marian_fp32": torch_engine(marian, tokenizer), "ours_fp32": torch_engine(ours, tokenizer)}
    if bf16_available():
        bf16 = AutoModelForSeq2SeqLM.from_pretrained(args.model, dtype=torch.bfloat16).eval()
        engines["ours_bf16"] = torch_engine(bf16, tokenizer)
    vector_flags = sorted(f for f in cpu_flags() if f.startswith(("avx2", "avx512", "amx", "fma")))
    result = {"model": args.model, "sentences": len(sources), "marian_max_logit_difference": difference,
              "largest_logit": largest_logit,
              "machine": {**machine(), "cpu_flags": vector_flags, "bf16": bf16_available()}}
    for name, run in engines.items():
        result[name] = measure(run, sources, references, tokenizer, args.latency_sentences)
    spawn, threads = multiprocessing.get_context("spawn"), torch.get_num_threads()
    # The engine's default on a CPU (a worker per core, one thread each), and one worker on all the threads.
    layouts = {"": (threads, 1), "_one_worker": (1, threads)}
    for quantization in ("float32", "int8"):
        path = export(args.model, work / f"ct2-{quantization}", quantization=quantization)
        for suffix, (inter_threads, intra_threads) in layouts.items():
            with spawn.Pool(1) as pool:
                result[f"ctranslate2_{quantization}{suffix}"] = {
                    "inter_threads": inter_threads, "intra_threads": intra_threads,
                    **pool.apply(measure_ctranslate2, (str(path), args.model, sources, references,
                                                       args.latency_sentences, inter_threads, intra_threads))}
    marian_result = result["marian_fp32"]
    result["ratios_vs_marian_fp32"] = {
        name: {"beam4_sentences_per_s": round(result[name]["beam4_sentences_per_s"]
                                              / marian_result["beam4_sentences_per_s"], 2),
               "greedy_batch1_latency": round(result[name]["greedy_batch1_ms_per_token"]
                                              / marian_result["greedy_batch1_ms_per_token"], 2)}
        for name in result if name.startswith(("ours_", "ctranslate2_"))}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
