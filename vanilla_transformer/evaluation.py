"""Translating many sentences with generate(), and scoring them with sacreBLEU through `evaluate`."""

from pathlib import Path

import evaluate
import torch
from tqdm.auto import tqdm

METRIC_DIR = Path(__file__).parent / "training" / "sacrebleu_metric"


def load_bleu() -> evaluate.EvaluationModule:
    """sacreBLEU + chrF as an `evaluate` module loaded from the package (evaluate.load("sacrebleu") needs the Hub)."""
    return evaluate.load(str(METRIC_DIR))


@torch.inference_mode()
def translate(model, tokenizer, sentences: list[str], batch_size: int = 64, progress: bool = True,
              **generate_kwargs) -> list[str]:
    """Translations in input order; sentences are batched by length so that little padding is computed."""
    order = sorted(range(len(sentences)), key=lambda i: len(sentences[i]), reverse=True)
    translations = [""] * len(sentences)
    model.eval()
    for start in tqdm(range(0, len(order), batch_size), desc="translating", disable=not progress, unit="batch"):
        indices = order[start : start + batch_size]
        # Inputs beyond the model's positional range are truncated (keeping </s>) rather than refused.
        batch = tokenizer([sentences[i] for i in indices], return_tensors="pt", padding=True, truncation=True,
                          max_length=model.config.max_position_embeddings).to(model.device)
        output = model.generate(**batch, **generate_kwargs)
        for i, text in zip(indices, tokenizer.batch_decode(output, skip_special_tokens=True)):
            translations[i] = text
    return translations


def score(hypotheses: list[str], references: list[str]) -> dict:
    """Corpus sacreBLEU (13a, cased, detokenized) and chrF, with their signatures."""
    result = load_bleu().compute(predictions=hypotheses, references=references)
    return {"bleu": result["score"], "chrf": result["chrf"], "bleu_signature": result["signature"],
            "chrf_signature": result["chrf_signature"]}
