"""Translating many sentences with generate(), and scoring a split with sacreBLEU's BLEU, chrF and TER through
`evaluate`: one path for the evaluate command and for the test split at the end of training."""

import logging
from collections.abc import Callable
from pathlib import Path

import evaluate
import torch
from accelerate.utils import gather_object
from tqdm.auto import tqdm

from .results import DEFAULT_METRICS, METRIC_NAMES, SplitScore

METRIC_DIR = Path(__file__).parent / "sacrebleu_metric"

logger = logging.getLogger(__name__)


def load_bleu() -> evaluate.EvaluationModule:
    """sacreBLEU, chrF and TER as an `evaluate` module loaded from the package (evaluate.load("sacrebleu") needs the
    Hub)."""
    return evaluate.load(str(METRIC_DIR))


def decoding_settings(num_beams: int, length_penalty: float) -> dict:
    """generate() settings for beam search, or for greedy decoding (num_beams=1) with the beam-only ones left at their
    defaults: GenerationConfig refuses to save a length penalty or early stopping without beams."""
    if num_beams > 1:
        return {"num_beams": num_beams, "length_penalty": length_penalty, "early_stopping": True}
    return {"num_beams": 1, "length_penalty": 1.0, "early_stopping": False}


@torch.inference_mode()
def translate(model, tokenizer, sentences: list[str], batch_size: int = 64, progress: bool = True,
              first_line: int = 1, state=None, max_tokens: int | None = None, **generate_kwargs) -> list[str]:
    """Translations in input order, one per sentence; sentences are batched by length to compute little padding,
    batch_size of them a batch, or as many as fit in max_tokens source tokens (padding included) where it is given.

    A blank sentence gives an empty translation (the model is not asked to invent one). A sentence longer than the
    model's positions is cut to fit (keeping </s>), with a warning naming its line (first_line numbers the first).
    state: the PartialState of a launch of several processes: each translates every N-th batch on its own device
    (the batches one process would make, so the same translations), and every process returns all of them.
    """
    encoded = encode_to_fit(tokenizer, sentences, model.config.max_position_embeddings, first_line)
    order = sorted((i for i, text in enumerate(sentences) if text.strip()), key=lambda i: len(encoded[i]),
                   reverse=True)
    batches = length_batches(order, [len(ids) for ids in encoded], batch_size, max_tokens)
    shared = state is not None and state.num_processes > 1
    if shared:
        batches = batches[state.process_index :: state.num_processes]  # long and short ones for every process
    translations = [""] * len(sentences)
    model.eval()
    for indices in tqdm(batches, desc="translating", disable=not progress, unit="batch"):
        batch = tokenizer.pad({"input_ids": [encoded[i] for i in indices]}, return_tensors="pt").to(model.device)
        output = model.generate(**batch, **generate_kwargs)
        for i, text in zip(indices, tokenizer.batch_decode(output, skip_special_tokens=True)):
            translations[i] = text
    if shared:
        for i, text in gather_object([(i, translations[i]) for indices in batches for i in indices]):
            translations[i] = text
    return translations


def length_batches(order: list[int], lengths: list[int], batch_size: int,
                   max_tokens: int | None = None) -> list[list[int]]:
    """The indices in `order` (longest first) cut into batches of batch_size, or, given max_tokens, into batches
    whose sentences x their longest stay within max_tokens (a longer sentence is a batch of its own)."""
    if max_tokens is None:
        return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
    batches = []
    for i in order:
        if batches and (len(batches[-1]) + 1) * lengths[batches[-1][0]] <= max_tokens:
            batches[-1].append(i)
        else:
            batches.append([i])
    return batches


def encode_to_fit(tokenizer, sentences: list[str], limit: int, first_line: int = 1) -> list[list[int]]:
    """Token ids of each sentence (with </s>); one longer than `limit` positions is cut to fit, keeping </s>, with a
    warning naming its line."""
    encoded = tokenizer(sentences)["input_ids"] if sentences else []
    for i, ids in enumerate(encoded):
        if len(ids) > limit:
            logger.warning("line %d: %d tokens, more than the model's %d positions: translating its first %d",
                           first_line + i, len(ids), limit, limit - 1)
            encoded[i] = ids[: limit - 1] + [tokenizer.eos_token_id]
    return encoded


def score(hypotheses: list[str], references: list[str], metrics: tuple[str, ...] = DEFAULT_METRICS) -> dict:
    """Corpus scores of the named metrics (of METRIC_NAMES) with sacreBLEU's default settings, each with its signature:
    BLEU (13a, cased, detokenized), chrF, TER; keyed bleu, bleu_signature, chrf, ..."""
    result = load_bleu().compute(predictions=hypotheses, references=references, metrics=list(metrics))
    scores = {}
    for metric in metrics:
        # The module names BLEU's keys as the Hub's sacrebleu metric does: score, signature.
        value, signature = ("score", "signature") if metric == "bleu" else (metric, f"{metric}_signature")
        scores[metric], scores[f"{metric}_signature"] = result[value], result[signature]
    return scores


def evaluate_split(translate_lines: Callable[[list[str]], list[str]], pairs, split: str, langs: tuple[str, str],
                   out_dir: Path, num_beams: int, length_penalty: float,
                   metrics: tuple[str, ...] = tuple(METRIC_NAMES)) -> SplitScore:
    """Translate a split's sources (pairs in the WMT schema, as load_parallel gives them), write the hypotheses to
    out_dir/SPLIT.hyp.TGT, and score them against the references with the named metrics."""
    src, tgt = langs
    sources = [pair[src] for pair in pairs["translation"]]
    references = [pair[tgt] for pair in pairs["translation"]]
    hypotheses = translate_lines(sources)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{split}.hyp.{tgt}").write_text("\n".join(hypotheses) + "\n", encoding="utf-8")
    examples = [{"source": sources[i], "reference": references[i], "translation": hypotheses[i]}
                for i in range(0, min(len(sources), 500), 100)]
    return SplitScore(split=split, sentences=len(sources), num_beams=num_beams, length_penalty=length_penalty,
                      **score(hypotheses, references, metrics), examples=examples)
