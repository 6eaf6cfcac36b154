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
    """

    def __init__(self, src_lengths: Sequence[int], tgt_lengths: Sequence[int], max_tokens: int, seed: int = 0,
                 shuffle: bool = True):
        if len(src_lengths) != len(tgt_lengths):
            raise ValueError(f"{len(src_lengths)} source lengths but {len(tgt_lengths)} target lengths")
        self.src_lengths = torch.as_tensor(np.asarray(src_lengths, dtype=np.int64))
        self.tgt_lengths = torch.as_tensor(np.asarray(tgt_lengths, dtype=np.int64))
        self.sizes = torch.maximum(self.src_lengths, self.tgt_lengths)
        self.max_tokens, self.seed, self.shuffle = max_tokens, seed, shuffle
        self.epoch = 0
        too_long = (self.sizes > max_tokens).nonzero().flatten()
        if len(too_long):
            i = int(too_long[0])
            raise ValueError(f"example {i} has {int(self.sizes[i])} tokens, more than max_tokens={max_tokens}; "
                             "filter long pairs (max_length) or raise max_tokens")
        self.batches = self.make_batches()

    def make_batches(self) -> list[list[int]]:
        generator = torch.Generator().manual_seed(self.seed)
        tie_break = torch.randperm(len(self.sizes), generator=generator)
        # Sort by target then source length (tgt * L + src), ties in seeded random order.
        longest_source = int(self.src_lengths.max()) if len(self.src_lengths) else 0
        key = self.tgt_lengths * (longest_source + 1) + self.src_lengths
        order = tie_break[torch.sort(key[tie_break], stable=True).indices]
        sizes = self.sizes[order].tolist()  # plain ints: the loop below runs once per example
        batches, batch, longest = [], [], 0
        for i, size in zip(order.tolist(), sizes):
            if batch and (len(batch) + 1) * max(longest, size) > self.max_tokens:
                batches.append(batch)
                batch, longest = [], 0
            batch.append(i)
            longest = max(longest, size)
        if batch:
            batches.append(batch)
        return batches

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[list[int]]:
        if not self.shuffle:
            yield from self.batches
            return
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        for b in torch.randperm(len(self.batches), generator=generator).tolist():
            yield self.batches[b]

    def __len__(self) -> int:
        return len(self.batches)

    def padding_fraction(self) -> float:
        """Share of the padded source + target positions that hold padding, over one epoch."""
        return padding_fraction(self.batches, self.src_lengths, self.tgt_lengths)


def token_batches(dataset: datasets.Dataset, max_tokens: int, seed: int) -> TokenBatchSampler:
    """The training batches of a tokenised dataset (input_ids and labels), each of at most max_tokens padded tokens:
    what the trainer iterates, and what the prepare command counts."""
    return TokenBatchSampler(token_lengths(dataset, "input_ids"), token_lengths(dataset, "labels"),
                             max_tokens=max_tokens, seed=seed)


def padding_fraction(batches: list[list[int]], src_lengths: Sequence[int], tgt_lengths: Sequence[int]) -> float:
    """Share of padding among the source + target positions of the given batches, each padded to its longest."""
    if not batches:
        return 0.0
    order = np.concatenate([np.asarray(batch, dtype=np.int64) for batch in batches])
    starts = np.cumsum([0] + [len(batch) for batch in batches[:-1]])
    sizes = np.diff(np.append(starts, len(order)))
    real = padded = 0
    for lengths in (np.asarray(src_lengths)[order], np.asarray(tgt_lengths)[order]):
        real += int(lengths.sum())
        padded += int((np.maximum.reduceat(lengths, starts) * sizes).sum())
    return 1 - real / padded
