"""n-best lists and forced-decoding scores: what they hold, how both engines define them, the torch engine's
computation, and their output rows (JSON lines or TSV).

A sentence's log-probability is the sum of the log-probabilities of its target tokens and the closing </s>, each
given the source and the tokens before it (the decoder's start token is given, not scored): what fairseq's
--score-reference, CTranslate2's score_batch and marian-scorer sum. A beam search's score is that sum divided by
length ** length_penalty, the length counting the generated tokens with </s>, as transformers' generate() (its
sequences_scores) and CTranslate2 (its hypothesis scores) both define it.
"""

import json
from dataclasses import dataclass

import torch

from .evaluation import encode_to_fit, length_batches

FORMATS = ("jsonl", "tsv")


@dataclass(frozen=True)
class Hypothesis:
    """One translation of an n-best list: its text, the search's score (log_prob / tokens ** length_penalty), the
    sum of its token log-probabilities and its token count (with </s>, where it ended)."""

    text: str
    score: float
    log_prob: float
    tokens: int


@dataclass(frozen=True)
class PairScore:
    """A source-target pair's forced-decoding score: the sum of the target's token log-probabilities (with </s>) and
    the token count; or, for a pair the model cannot take, an error naming the file and the line."""

    log_prob: float | None = None
    tokens: int | None = None
    error: str | None = None

    @property
    def per_token(self) -> float | None:
        """The length-normalised score: the mean log-probability of a target token."""
        return None if self.log_prob is None else self.log_prob / self.tokens


def hypothesis(text: str, score: float, tokens: int, length_penalty: float) -> Hypothesis:
    """A hypothesis from its search score, whose log-probability sum it recovers."""
    return Hypothesis(text, score, score * tokens**length_penalty, tokens)


def encode_pairs(tokenizer, sources: list[str], targets: list[str], limit: int, first_line: int = 1,
                 names: tuple[str, str] = ("source", "target")) -> list[tuple[list[int], list[int]] | str]:
    """Each pair's source and target token ids (both with </s>), or, where one side is longer than the model's
    `limit` positions, an error naming its file (names) and line: a cut sentence would get another sentence's
    score."""
    if len(sources) != len(targets):
        raise ValueError(f"{len(sources)} sources but {len(targets)} targets")
    if not sources:
        return []
    source_ids = tokenizer(sources)["input_ids"]
    target_ids = tokenizer(text_target=targets)["input_ids"]
    encoded = []
    for number, pair in enumerate(zip(source_ids, target_ids), start=first_line):
        too_long = [f"{name}:{number}: {len(ids)} tokens with </s>, more than the model's {limit} positions"
                    for name, ids in zip(names, pair) if len(ids) > limit]
        encoded.append("; ".join(too_long) if too_long else pair)
    return encoded


def sorted_batches(lengths: list[int], batch_size: int) -> list[list[int]]:
    """Indices in batches of batch_size, longest first, so that a batch pads little."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i], reverse=True)
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


@torch.inference_mode()
def score_pairs(model, tokenizer, sources: list[str], targets: list[str], batch_size: int = 32, first_line: int = 1,
                names: tuple[str, str] = ("source", "target")) -> list[PairScore]:
    """Each pair's forced-decoding score with a transformers seq2seq model, in input order (see the module)."""
    encoded = encode_pairs(tokenizer, sources, targets, model.config.max_position_embeddings, first_line, names)
    scores = [PairScore(error=pair) if isinstance(pair, str) else None for pair in encoded]
    todo = [i for i, pair in enumerate(encoded) if not isinstance(pair, str)]
    for batch in sorted_batches([len(encoded[i][0]) + len(encoded[i][1]) for i in todo], batch_size):
        indices = [todo[b] for b in batch]
        inputs = tokenizer.pad({"input_ids": [encoded[i][0] for i in indices]}, return_tensors="pt")
        width = max(len(encoded[i][1]) for i in indices)
        labels = torch.tensor([encoded[i][1] + [-100] * (width - len(encoded[i][1])) for i in indices])
        decoder_input_ids = model.prepare_decoder_input_ids_from_labels(labels=labels)
        logits = model(**inputs.to(model.device), decoder_input_ids=decoder_input_ids.to(model.device)).logits
        logits = logits.float()
        picked = logits.gather(-1, labels.clamp(min=0).to(logits.device).unsqueeze(-1)).squeeze(-1)
        token_log_probs = (picked - logits.logsumexp(-1)).masked_fill(labels.to(logits.device) == -100, 0.0)
        for i, log_prob in zip(indices, token_log_probs.sum(-1).tolist()):
            scores[i] = PairScore(log_prob, len(encoded[i][1]))
    return scores


@torch.inference_mode()
def n_best(model, tokenizer, lines: list[str], k: int, batch_size: int = 32, first_line: int = 1,
           max_tokens: int | None = None, **generate_kwargs) -> list[list[Hypothesis]]:
    """The k best translations of each line with generate(), best first, with their scores (see the module); none
    for a blank line. Batched as translate() batches (so the first is its translation); sources longer than the
    model's positions are cut with a warning, as it does."""
    num_beams, length_penalty = generate_kwargs.get("num_beams", 1), generate_kwargs.get("length_penalty", 1.0)
    if k > num_beams:
        raise ValueError(f"{k} hypotheses need a beam of at least {k}, not {num_beams}")
    encoded = encode_to_fit(tokenizer, lines, model.config.max_position_embeddings, first_line)
    order = sorted((i for i, line in enumerate(lines) if line.strip()), key=lambda i: len(encoded[i]), reverse=True)
    results = [[] for _ in lines]
    for indices in length_batches(order, [len(ids) for ids in encoded], batch_size, max_tokens):
        inputs = tokenizer.pad({"input_ids": [encoded[i] for i in indices]}, return_tensors="pt").to(model.device)
        output = model.generate(**inputs, **generate_kwargs, num_return_sequences=k, return_dict_in_generate=True,
                                output_scores=True, output_logits=num_beams == 1)
        generated = output.sequences[:, 1:]  # after the decoder's start token
        lengths = generated_lengths(generated, model.generation_config.eos_token_id)
        if num_beams > 1:
            scores = output.sequences_scores.float()
        else:  # greedy search keeps no sequence score: the one CTranslate2 gives, from the raw logits
            steps = model.compute_transition_scores(output.sequences, output.logits, normalize_logits=True).float()
            unfinished = torch.arange(steps.shape[1], device=steps.device) >= lengths.unsqueeze(1)
            scores = steps.masked_fill(unfinished, 0.0).sum(-1) / lengths**length_penalty
        texts = tokenizer.batch_decode(output.sequences, skip_special_tokens=True)
        for row, (text, score, length) in enumerate(zip(texts, scores.tolist(), lengths.tolist())):
            results[indices[row // k]].append(hypothesis(text, score, length, length_penalty))
    return results


def generated_lengths(generated: torch.Tensor, eos_token_id: int | list[int]) -> torch.Tensor:
    """The tokens each row generated up to its first </s>, which counts; all of them in a row that did not end."""
    end_ids = torch.tensor(eos_token_id if isinstance(eos_token_id, list) else [eos_token_id], device=generated.device)
    ends = torch.isin(generated, end_ids)
    return torch.where(ends.any(-1), ends.int().argmax(-1) + 1, generated.shape[1])


def hypothesis_rows(line: int, hypotheses: list[Hypothesis], output_format: str) -> list[str]:
    """A line's n-best list as output rows, ranked from 1: JSON lines, or TSV line, rank, score, log_prob, text. A
    blank line, which has none, gets one row with an empty translation and no score."""
    rows = [(rank, h.text, h.score, h.log_prob) for rank, h in enumerate(hypotheses, start=1)] or [(1, "", None, None)]
    if output_format == "jsonl":
        return [json.dumps({"line": line, "rank": rank, "translation": text, "score": score, "log_prob": log_prob},
                           ensure_ascii=False) for rank, text, score, log_prob in rows]
    # A tab or line break in a translation (a byte-level vocabulary can write one) would shift the fields or rows.
    return ["\t".join([str(line), str(rank), tsv_number(score), tsv_number(log_prob),
                       " ".join(text.replace("\t", " ").splitlines())]) for rank, text, score, log_prob in rows]


def score_row(line: int, score: PairScore, output_format: str) -> str:
    """A pair's score as an output row: JSON lines, or TSV line, log_prob, tokens, per-token score (empty fields for
    a pair that has none)."""
    if output_format == "jsonl":
        row = {"line": line, "log_prob": score.log_prob, "tokens": score.tokens, "score": score.per_token}
        return json.dumps(row | ({"error": score.error} if score.error else {}), ensure_ascii=False)
    return "\t".join([str(line), tsv_number(score.log_prob), tsv_number(score.tokens), tsv_number(score.per_token)])


def tsv_number(value: float | None) -> str:
    return "" if value is None else repr(value)
