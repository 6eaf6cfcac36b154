"""Training-time robustness augmentation (data.augment): a seeded share of the training pairs upper-, title- or
lower-cased and stripped of their final punctuation on both sides, a share given typos on the source side (Karpukhin
et al. 2019), and BPE-dropout (Provilkov et al. 2020), applied as the batches are collated, so that the tokenised
cache and the batches stay those of the un-augmented pairs."""

import json
import multiprocessing
import random

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from tokenizers import Tokenizer

from .data import token_lengths
from .recipe import AugmentRecipe

FINAL_PUNCTUATION = ".!?;:,…"
EXAMPLE = "augment_example"  # the feature that carries a pair's row number to the collator
TYPO_RATE = 1 / 15  # typos per character of a source given typos
TYPO_STREAM = 0x7970  # mixed into a pair's hash for its typos' generator, apart from its BPE-dropout's
KEYBOARD_ROWS = ("1234567890", "qwertyuiop", "asdfghjkl", "zxcvbnm")  # a typo may hit the key beside
NEIGHBOUR_KEYS = {key: row[max(i - 1, 0): i] + row[i + 1: i + 2] for row in KEYBOARD_ROWS for i, key in enumerate(row)}


def pair_hashes(seed: int, epoch: int, rows: np.ndarray) -> np.ndarray:
    """A 64-bit hash of (seed, epoch, row) per row (splitmix64 finaliser): the draw behind a pair's augmentation,
    the same in every process and on every resume."""
    with np.errstate(over="ignore"):
        x = (np.uint64(seed) * np.uint64(0x9E3779B97F4A7C15) + np.uint64(epoch) * np.uint64(0xBF58476D1CE4E5B9)
             + rows.astype(np.uint64) * np.uint64(0x94D049BB133111EB))
        for shift, factor in ((30, 0xBF58476D1CE4E5B9), (27, 0x94D049BB133111EB)):
            x = (x ^ (x >> np.uint64(shift))) * np.uint64(factor)
        return x ^ (x >> np.uint64(31))


def uniforms(hashes: np.ndarray, stream: int) -> np.ndarray:
    """Independent uniform numbers in [0, 1) from the pair hashes, one per stream (casing, punctuation)."""
    mixed = pair_hashes(stream, 0, hashes)
    return (mixed >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def transform(text: str, casing: str | None, drop_punctuation: bool) -> str:
    """The text as the augmentation makes it: recased (upper, title or lower) and/or without final punctuation."""
    if casing is not None:
        text = getattr(text, casing)()
    if drop_punctuation:
        text = text.rstrip().rstrip(FINAL_PUNCTUATION).rstrip() or text  # a text of punctuation only stays
    return text


def add_typos(text: str, rng: random.Random, rate: float = TYPO_RATE) -> str:
    """text with about one typo per 1/rate characters (spaces excepted): two characters swapped, one dropped or
    doubled, or the key beside it typed."""
    out, i = [], 0
    while i < len(text):
        char = text[i]
        if char.isspace() or rng.random() >= rate:
            out.append(char)
        else:
            kind = rng.randrange(4)
            if kind == 0 and i + 1 < len(text) and not text[i + 1].isspace():  # swapped with the next
                out += [text[i + 1], char]
                i += 1
            elif kind == 1:  # doubled
                out += [char, char]
            elif kind == 2 and NEIGHBOUR_KEYS.get(char.lower()):  # the key beside
                key = rng.choice(NEIGHBOUR_KEYS[char.lower()])
                out.append(key.upper() if char.isupper() else key)
            # else dropped
        i += 1
    return "".join(out)


class DropoutBPE:
    """Byte-level BPE with BPE-dropout: at each merge step every applicable merge is skipped with probability p
    (Provilkov et al. 2020), from a seeded random generator. The `tokenizers` BPE model's own `dropout` draws from
    an unseeded generator, so a run and its resume would see different segmentations; this one is deterministic per
    pair and epoch. With p=0 it gives the backend's ids (tested)."""

    def __init__(self, backend: Tokenizer, p: float):
        model = json.loads(backend.to_str())["model"]
        if model["type"] != "BPE":
            raise ValueError(f"data.augment.bpe_dropout needs a BPE tokenizer; this one is {model['type']}")
        merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in model["merges"]]
        self.ranks = {pair: rank for rank, pair in enumerate(merges)}
        self.vocab = model["vocab"]
        self.pre_tokenizer = backend.pre_tokenizer
        self.eos_ids = backend.encode("").ids  # what the post-processor appends to an empty text: [</s>]
        self.p = p

    def encode(self, text: str, rng: random.Random, max_length: int | None) -> list[int]:
        ids = [self.vocab[piece] for word, _ in self.pre_tokenizer.pre_tokenize_str(text)
               for piece in self.segment(word, rng)]
        if max_length is not None:
            ids = ids[: max_length - len(self.eos_ids)]
        return ids + self.eos_ids

    def segment(self, word: str, rng: random.Random) -> list[str]:
        symbols = list(word)
        while len(symbols) > 1:
            best, best_rank = None, len(self.ranks)
            for i in range(len(symbols) - 1):
                rank = self.ranks.get((symbols[i], symbols[i + 1]))
                if rank is not None and rank < best_rank and (self.p == 0 or rng.random() >= self.p):
                    best, best_rank = i, rank
            if best is None:
                break
            symbols[best: best + 2] = [symbols[best] + symbols[best + 1]]
        return symbols


class Augmenter:
    """The run's augmentation: which pairs are changed in an epoch, and the collator that tokenises them anew.

    texts: the (source, target) text of every training row, as Arrow arrays in train_set's order. The epoch lives
    in shared memory, so that dataloader workers read the one that SamplerEpoch set.
    """

    def __init__(self, options: AugmentRecipe, texts: tuple[pa.Array, pa.Array], backend: Tokenizer, seed: int,
                 max_length: int | None, longest: int = 1):
        self.options, self.texts, self.seed, self.max_length = options, texts, seed, max_length
        self.longest = longest  # the longest plain pair's tokens, on its longer side
        self.backend = Tokenizer.from_str(backend.to_str())
        self.backend.no_padding()
        if max_length is not None:
            self.backend.enable_truncation(max_length)
        self.dropout = DropoutBPE(self.backend, options.bpe_dropout) if options.bpe_dropout > 0 else None
        self.shared_epoch = multiprocessing.Value("q", 0, lock=False)
        self.changed = self.reverted = 0  # pairs changed, and changes undone to keep a batch within its cap

    def set_epoch(self, epoch: int) -> None:
        self.shared_epoch.value = epoch

    def plan(self, rows: np.ndarray, epoch: int) -> tuple[list[str | None], np.ndarray, np.ndarray]:
        """Each row's casing (None: as it is), whether its final punctuation goes and whether its source gets typos,
        in this epoch."""
        hashes = pair_hashes(self.seed, epoch, rows)
        o = self.options
        case_draw, punctuation_draw, typo_draw = uniforms(hashes, 1), uniforms(hashes, 2), uniforms(hashes, 3)
        bounds = np.cumsum([o.upper, o.title, o.lower])
        casing = [None if d >= bounds[-1] else ("upper", "title", "lower")[int(np.searchsorted(bounds, d, "right"))]
                  for d in case_draw]
        return casing, punctuation_draw < o.drop_final_punctuation, typo_draw < o.typos

    def encode_rows(self, rows: np.ndarray, epoch: int) -> list[tuple[list[int], list[int]] | None]:
        """The augmented token ids of each row, or None where the augmentation leaves it as it is."""
        casing, drop, typos = self.plan(rows, epoch)
        chosen = [i for i in range(len(rows)) if self.dropout or casing[i] or drop[i] or typos[i]]
        if not chosen:
            return [None] * len(rows)
        taken = pa.array(rows[chosen])
        src, tgt = (column.take(taken).to_pylist() for column in self.texts)
        hashes = pair_hashes(self.seed, epoch, rows[chosen])
        pairs = []
        for i, s, t, h in zip(chosen, src, tgt, hashes):
            s, t = transform(s, casing[i], drop[i]), transform(t, casing[i], drop[i])
            pairs.append((add_typos(s, random.Random(int(h) ^ TYPO_STREAM)) if typos[i] else s, t))
        if self.dropout is not None:
            encoded = []
            for (s, t), h in zip(pairs, hashes):
                rng = random.Random(int(h))
                encoded.append((self.dropout.encode(s, rng, self.max_length),
                                self.dropout.encode(t, rng, self.max_length)))
        else:
            flat = self.backend.encode_batch_fast([text for pair in pairs for text in pair])
            encoded = [(flat[2 * k].ids, flat[2 * k + 1].ids) for k in range(len(pairs))]
        out = [None] * len(rows)
        for i, ids in zip(chosen, encoded):
            out[i] = ids
        return out

    def packing_tokens(self, max_tokens: int) -> int:
        """The padded tokens the sampler packs a batch to, leaving the augmented pairs data.augment.headroom (never
        fewer than the longest plain pair, which the sampler must place)."""
        return max(self.longest, int(max_tokens / (1 + self.options.headroom)))

    def collator(self, collator, max_tokens: int):
        return AugmentingCollator(self, collator, max_tokens)


class AugmentingCollator:
    """Replaces the chosen pairs' ids by their augmented ones, then collates. The batch keeps the sampler's cap of
    padded tokens (pairs x longest side): the longest augmented pairs fall back to their own ids until it does."""

    def __init__(self, augmenter: Augmenter, collator, max_tokens: int):
        self.augmenter, self.collator, self.max_tokens = augmenter, collator, max_tokens

    def __call__(self, features: list[dict]):
        a = self.augmenter
        rows = np.array([f.pop(EXAMPLE) for f in features], dtype=np.int64)
        augmented = a.encode_rows(rows, a.shared_epoch.value)

        def size(i: int, pair) -> int:
            return max(map(len, pair)) if pair is not None else max(len(features[i]["input_ids"]),
                                                                    len(features[i]["labels"]))

        by_length = sorted((i for i, pair in enumerate(augmented) if pair is not None),
                           key=lambda i: -size(i, augmented[i]))
        for i in by_length:  # longest first
            if len(features) * max(size(j, augmented[j]) for j in range(len(features))) <= self.max_tokens:
                break
            augmented[i] = None
            a.reverted += 1
        for feature, pair in zip(features, augmented):
            if pair is not None:
                feature["input_ids"], feature["labels"] = pair
                a.changed += 1
        return self.collator(features)


def make_augmenter(options: AugmentRecipe, raw_train, train_set, langs: tuple[str, str], backend: Tokenizer,
                   seed: int, max_length: int | None) -> Augmenter | None:
    """The run's Augmenter, or None when data.augment changes nothing (the default): the training stream is then
    the un-augmented one, bit for bit."""
    if not options.active():
        return None
    # train_set is a selection (cleaning) of the tokenised pairs, which are raw_train's rows in order.
    rows = (train_set._indices.column(0) if train_set._indices is not None
            else pa.array(np.arange(len(train_set), dtype=np.uint64)))
    pairs = raw_train.with_format("arrow")["translation"]
    texts = tuple(pc.struct_field(pairs, lang).take(rows).combine_chunks() for lang in langs)
    longest = max((int(token_lengths(train_set, column).max(initial=1)) for column in ("input_ids", "labels")))
    return Augmenter(options, texts, backend, seed, max_length, longest)
