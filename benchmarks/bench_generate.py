"""generate() speed: our model vs MarianMTModel with identical shape and weights, same inputs, same run; ours also with
generate(compile_decoding=True) (greedy search through a compiled decoder step; beam search stays eager), and, with
--ctranslate2, the same weights exported to CTranslate2 (float32 and int8, on 1 and on all threads), which
translates the same token ids for the same number of steps.

Each precision is measured with both models in it: fp32, and bf16 weights (from_pretrained(..., dtype=torch.bfloat16)
or model.to(torch.bfloat16)). Prints one JSON object. Asserts that both models produce the same tokens in fp32 and
reports the fraction of identical sequences in bf16.
Usage: python benchmarks/bench_generate.py [--shape base] [--dtypes fp32 bf16] [--repeats 3] [--ctranslate2]
"""

import argparse
import copy
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
from common import machine, marian_and_ours, median_seconds

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def fixed_length(model, beams: int, new_tokens: int):
    """A generation config with no </s>: every sequence runs all new_tokens steps in both models, with no logits
    processor in the way (min_new_tokens would add one that rewrites the whole score matrix every step)."""
    config = copy.deepcopy(model.generation_config)
    config.update(eos_token_id=None, forced_eos_token_id=None, num_beams=beams, max_new_tokens=new_tokens,
                  early_stopping=False, length_penalty=1.0, use_cache=True)
    return config


def measure(model, src, beams, new_tokens, repeats, compile_decoding=False):
    config = fixed_length(model, beams, new_tokens)
    if compile_decoding:
        config.compile_decoding = True
    mask = torch.ones_like(src)
    with torch.inference_mode():
        start = time.perf_counter()
        out = model.generate(src, attention_mask=mask, generation_config=config)
        first = time.perf_counter() - start
        seconds = median_seconds(lambda: model.generate(src, attention_mask=mask, generation_config=config),
                                 repeats, warmup=0)
    steps = out.shape[1] - 1
    figures = {"generated_tokens_per_s": round(steps * out.shape[0] / seconds, 1),
               "ms_per_step": round(1000 * seconds / steps, 2)}
    if compile_decoding:
        figures["first_call_s"] = round(first, 1)  # the compile, where this process has not compiled the shape yet
    return out, figures


def exported_for_ctranslate2(model, folder: str) -> tuple[str, dict[str, int]]:
    """The model saved with a stand-in tokenizer (token i is "t{i}", the model's special ids kept) and exported to
    CTranslate2 in float32 (the engine quantizes to int8 as it loads): the export's path and that vocabulary."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    from vanilla_transformer.engines.ctranslate2 import export

    config = model.config
    vocabulary = {f"t{i}": i for i in range(config.vocab_size)}
    special = {}  # an id that serves two roles (Marian's pad is often its decoder start) keeps its first name
    for role, token_id, name in (("pad_token", config.pad_token_id, "<pad>"), ("eos_token", config.eos_token_id, "</s>"),
                                 ("bos_token", config.decoder_start_token_id, "<s>")):
        if f"t{token_id}" in vocabulary:
            vocabulary[name] = vocabulary.pop(f"t{token_id}")
        special[role] = next(token for token, i in vocabulary.items() if i == token_id)
    backend = Tokenizer(models.WordLevel(vocabulary, unk_token=special["pad_token"]))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token=special["pad_token"], **special)
    model.float().save_pretrained(f"{folder}/model")
    tokenizer.save_pretrained(f"{folder}/model")
    return str(export(f"{folder}/model", f"{folder}/ct2")), vocabulary


def measure_ctranslate2(path: str, vocabulary: dict, src: torch.Tensor, beams: int, new_tokens: int, repeats: int,
                        compute_type: str, threads: int) -> tuple[torch.Tensor, dict]:
    """CTranslate2 on the same source ids, exactly new_tokens steps (min = max decoding length, as no </s> above):
    the output ids, decoder start first as generate() gives them, and the figures."""
    import ctranslate2

    torch_threads = torch.get_num_threads()
    translator = ctranslate2.Translator(path, compute_type=compute_type, inter_threads=1, intra_threads=threads)
    torch.set_num_threads(torch_threads)  # the engine sets the OpenMP threads torch shares (engines/ctranslate2.py)
    token = {i: name for name, i in vocabulary.items()}
    tokens = [[token[i] for i in row] for row in src.tolist()]

    def run():
        return translator.translate_batch(tokens, beam_size=beams, max_decoding_length=new_tokens,
                                          min_decoding_length=new_tokens, max_batch_size=len(tokens),
                                          length_penalty=1.0, return_end_token=True)

    hypotheses = [result.hypotheses[0] for result in run()]
    steps = len(hypotheses[0])
    seconds = median_seconds(run, repeats, warmup=0)
    start = vocabulary[json.loads((Path(path) / "config.json").read_text())["decoder_start_token"]]
    ids = torch.tensor([[start, *(vocabulary[t] for t in hypothesis)] for hypothesis in hypotheses])
    return ids, {"generated_tokens_per_s": round(steps * len(tokens) / seconds, 1),
                 "ms_per_step": round(1000 * seconds / steps, 2), "steps": steps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--shape", default="base", choices=["small", "base"])
    parser.add_argument("--dtypes", nargs="+", default=list(DTYPES), choices=list(DTYPES))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--ctranslate2", action="store_true", help="also the same weights in CTranslate2")
    args = parser.parse_args()

    marian, ours = marian_and_ours(args.shape)
    generator = torch.Generator().manual_seed(0)
    sources = {batch: torch.randint(4, marian.config.vocab_size, (batch, 24), generator=generator) for batch in (64, 1)}
    cases = (("batch64_greedy", 64, 1), ("batch64_beam4", 64, 4), ("batch1_greedy", 1, 1))
    results = {"shape": args.shape, "source_length": 24, "new_tokens": args.new_tokens, "machine": machine(),
               "cases": {}}
    ct2_path = vocabulary = None
    if args.ctranslate2:
        exported = tempfile.TemporaryDirectory(prefix="bench_generate_")  # removed when the process ends
        ct2_path, vocabulary = exported_for_ctranslate2(copy.deepcopy(ours), exported.name)
    for dtype in args.dtypes:
        marian.to(DTYPES[dtype]).eval(), ours.to(DTYPES[dtype]).eval()
        for name, batch, beams in cases:
            marian_out, marian_figures = measure(marian, sources[batch], beams, args.new_tokens, args.repeats)
            ours_out, our_figures = measure(ours, sources[batch], beams, args.new_tokens, args.repeats)
            compiled_out, compiled_figures = measure(ours, sources[batch], beams, args.new_tokens, args.repeats,
                                                     compile_decoding=True)
            # bf16 rounds differently in the two attention kernels, so a beam may now and then turn another way.
            identical = (marian_out == ours_out).all(dim=1).float().mean().item()
            assert identical == 1 or dtype != "fp32", f"outputs differ for {name} in fp32"
            case = {
                "ours": our_figures,
                "marian": marian_figures,
                "ratio_tokens_per_s": round(our_figures["generated_tokens_per_s"]
                                            / marian_figures["generated_tokens_per_s"], 3),
                "identical_sequences_fraction": round(identical, 3),
                "ours_compiled": compiled_figures,
                "compiled_vs_eager_tokens_per_s": round(compiled_figures["generated_tokens_per_s"]
                                                        / our_figures["generated_tokens_per_s"], 3),
                "compiled_identical_to_eager_fraction": round(
                    (compiled_out == ours_out).all(dim=1).float().mean().item(), 3),
            }
            if ct2_path and dtype == "fp32":  # the engine computes in float32 or int8 on a CPU, not bf16
                for compute_type in ("float32", "int8"):
                    for threads in sorted({1, os.cpu_count() or 1}):
                        ids, figures = measure_ctranslate2(ct2_path, vocabulary, sources[batch], beams,
                                                           args.new_tokens, args.repeats, compute_type, threads)
                        same = ids.shape == ours_out.shape and (ids == ours_out).all(dim=1).float().mean().item()
                        figures["identical_to_eager_fraction"] = round(float(same), 3)
                        figures["ours_eager_time_over_this"] = round(our_figures["ms_per_step"]
                                                                     / figures["ms_per_step"], 3)
                        case[f"ctranslate2_{compute_type}_{threads}_threads"] = figures
            if dtype != "fp32" and "fp32" in args.dtypes:
                # What a user gains by loading ours in bf16 instead of running Marian as it comes (a different
                # precision, so not the like-for-like ratio above).
                case["ours_vs_marian_fp32"] = round(
                    our_figures["generated_tokens_per_s"]
                    / results["cases"][f"fp32_{name}"]["marian"]["generated_tokens_per_s"], 3)
            results["cases"][f"{dtype}_{name}"] = case
            print(f"{dtype} {name}: ratio {case['ratio_tokens_per_s']}, compiled/eager "
                  f"{case['compiled_vs_eager_tokens_per_s']}", file=sys.stderr)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
