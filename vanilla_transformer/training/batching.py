"""Batches by token count, as in fairseq's --max-tokens: sentences of similar length, each batch as full as allowed."""

from collections.abc import Iterator, Sequence

import datasets
import numpy as np
import torch
from torch.utils.data import Sampler

from .data import token_lengths


class TokenBatchSampler(Sampler[list[int]]):
    """Groups examples of similar length into batches of at most `max_tokens` padded tokens.

    A batch of n pairs costs n * max(longest source, longest target), the padded size fairseq counts. The batches
    are formed once (length-sorted, ties broken by the seed), so every epoch has the same number; their order is
    shuffled per epoch from seed + epoch, so a run is deterministic and a resumed run sees the same order.
    Distributed training shards the batches through accelerate (every rank gets different ones, in equal numbers).
    The batches are two numpy arrays, as fairseq's are: the examples in batch order and where each batch starts, a
    few bytes per example (lists of Python ints took about 100), so the sampler of a 45M-pair corpus fits any rank.
    """

    def __init__(self, src_lengths: Sequence[int], tgt_lengths: Sequence[int], max_tokens: int, seed: int = 0,
                 shuffle: bool = True):
        if len(src_lengths) != len(tgt_lengths):
            raise ValueError(f"{len(src_lengths)} source lengths but {len(tgt_lengths)} target lengths")
        self.src_lengths = np.asarray(src_lengths, dtype=np.int32)
        self.tgt_lengths = np.asarray(tgt_lengths, dtype=np.int32)
        sizes = np.maximum(self.src_lengths, self.tgt_lengths)
        self.max_tokens, self.seed, self.shuffle = max_tokens, seed, shuffle
        self.epoch = 0
        too_long = np.flatnonzero(sizes > max_tokens)
        if len(too_long):
            i = int(too_long[0])
            raise ValueError(f"example {i} has {int(sizes[i])} tokens, more than max_tokens={max_tokens}; "
                             "filter long pairs (max_length) or raise max_tokens")
        self.order = self.length_order()
        self.starts = pack(sizes[self.order], max_tokens)  # batch b is order[starts[b]:starts[b + 1]]

    def length_order(self) -> np.ndarray:
        """The examples sorted by target then source length, ties in seeded random order."""
        tie_break = torch.randperm(len(self.src_lengths), generator=torch.Generator().manual_seed(self.seed)).numpy()
        longest_source = int(self.src_lengths.max()) if len(self.src_lengths) else 0
        key = self.tgt_lengths.astype(np.int64) * (longest_source + 1) + self.src_lengths
        order = tie_break[np.argsort(key[tie_break], kind="stable")]
        return order.astype(np.int32 if len(order) < 2**31 else np.int64)

    def batch(self, b: int) -> list[int]:
        return self.order[self.starts[b]:self.starts[b + 1]].tolist()

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[list[int]]:
        if not self.shuffle:
            yield from map(self.batch, range(len(self)))
            return
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        for b in torch.randperm(len(self), generator=generator).tolist():
            yield self.batch(b)

    def __len__(self) -> int:
        return len(self.starts) - 1

    def padding_fraction(self) -> float:
        """Share of the padded source + target positions that hold padding, over one epoch."""
        if not len(self):
            return 0.0
        starts, counts = self.starts[:-1], np.diff(self.starts)
        real = padded = 0
        for lengths in (self.src_lengths[self.order], self.tgt_lengths[self.order]):
            real += int(lengths.sum(dtype=np.int64))
            padded += int((np.maximum.reduceat(lengths, starts).astype(np.int64) * counts).sum())
        return 1 - real / padded


def pack(sizes: np.ndarray, max_tokens: int) -> np.ndarray:
    """Where each batch starts (and, last, the end) when examples of these sizes, in this order, are taken greedily
    while count x largest size <= max_tokens: fairseq's batch_by_size, a numpy step per batch, not a Python one per
    example."""
    starts, start = [0], 0
    while start < len(sizes):
        # A batch starting here holds at most max_tokens // sizes[start] examples: its largest is no smaller.
        window = sizes[start:start + max_tokens // max(int(sizes[start]), 1)]
        cost = np.arange(1, len(window) + 1) * np.maximum.accumulate(window)  # grows with the count: fits a prefix
        start += max(int(np.count_nonzero(cost <= max_tokens)), 1)
        starts.append(start)
    return np.asarray(starts, dtype=np.int64)


def token_batches(dataset: datasets.Dataset, max_tokens: int, seed: int) -> TokenBatchSampler:
    """The training batches of a tokenised dataset (input_ids and labels), each of at most max_tokens padded tokens:
    what the trainer iterates, and what the prepare command counts."""
    return TokenBatchSampler(token_lengths(dataset, "input_ids"), token_lengths(dataset, "labels"),
                             max_tokens=max_tokens, seed=seed)
