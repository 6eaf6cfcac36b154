"""Encoding speed: our joint BPE (tokenizers) vs sentencepiece BPE, same data, same vocabulary size, same run.

Also measures the `tokenizers` library's floor on the same lines: a word-level tokenizer that only splits on
whitespace and looks words up, the least work the library can do per sentence. Prints one JSON object.
Usage: python benchmarks/bench_tokenizer.py [--data ../shared/data] [--vocab-size 10000]
"""

import argparse
import json
import os
import platform
import tempfile
from pathlib import Path

import sentencepiece
import tokenizers
from common import median_seconds
from tokenizers import Tokenizer, models, pre_tokenizers, trainers

from vanilla_transformer.corpus import read_lines
from vanilla_transformer.training.tokenizer import train_tokenizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", default=os.environ.get("VANILLA_TRANSFORMER_DATA", "../shared/data"))
    parser.add_argument("--vocab-size", type=int, default=10000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    files = [Path(args.data) / "multi30k" / f"train.{lang}" for lang in ("de", "en")]
    lines = [line for path in files for line in read_lines(path)]

    ours = train_tokenizer(files, vocab_size=args.vocab_size, show_progress=False)
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "train.txt"
        corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
        sentencepiece.SentencePieceTrainer.train(
            input=str(corpus), model_prefix=f"{tmp}/spm", vocab_size=args.vocab_size, model_type="bpe",
            character_coverage=1.0, byte_fallback=True, num_threads=os.cpu_count(), minloglevel=2,
        )
        spm = sentencepiece.SentencePieceProcessor(model_file=f"{tmp}/spm.model")

    floor = Tokenizer(models.WordLevel(unk_token="<unk>"))
    floor.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    floor.train_from_iterator(lines, trainers.WordLevelTrainer(special_tokens=["<unk>"], show_progress=False))

    ours_s = median_seconds(lambda: ours(lines)["input_ids"], args.repeats)
    backend_s = median_seconds(lambda: ours.backend_tokenizer.encode_batch(lines), args.repeats)
    backend_fast_s = median_seconds(lambda: ours.backend_tokenizer.encode_batch_fast(lines), args.repeats)
    floor_s = median_seconds(lambda: floor.encode_batch_fast(lines), args.repeats)
    spm_s = median_seconds(lambda: spm.encode(lines, num_threads=os.cpu_count()), args.repeats)
    result = {
        "sentences": len(lines),
        "vocab_size": args.vocab_size,
        "ours_transformers_call_sentences_per_s": round(len(lines) / ours_s),
        "ours_tokenizers_backend_sentences_per_s": round(len(lines) / backend_s),
        "ours_tokenizers_backend_fast_sentences_per_s": round(len(lines) / backend_fast_s),
        "tokenizers_floor_wordlevel_sentences_per_s": round(len(lines) / floor_s),
        "sentencepiece_sentences_per_s": round(len(lines) / spm_s),
        "ratio_ours_vs_sentencepiece": round(spm_s / ours_s, 3),
        "ratio_ours_backend_fast_vs_sentencepiece": round(spm_s / backend_fast_s, 3),
        "ratio_tokenizers_floor_vs_sentencepiece": round(spm_s / floor_s, 3),
        "tokens_per_sentence_ours": round(sum(map(len, ours(lines)["input_ids"])) / len(lines), 2),
        "tokens_per_sentence_sentencepiece": round(sum(map(len, spm.encode(lines))) / len(lines) + 1, 2),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "versions": {"tokenizers": tokenizers.__version__, "sentencepiece": sentencepiece.__version__},
        "repeats": args.repeats,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
