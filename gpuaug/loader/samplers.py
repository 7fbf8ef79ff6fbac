"""Samplers: shard-local shuffling, equal steps on every rank, and skipping the batches a resume has taken.

* :class:`ShardSampler` shuffles the shards, then the samples within a window of ``window``
  shards at a time: a worker reads a few shards at once instead of jumping across all of them
  (WebDataset's shuffle buffer, made exact for a map-style source). Its order comes from the
  ``generator`` (one int64 drawn per epoch, as ``RandomSampler`` draws).
* :class:`DistributedShardSampler` gives every rank the same number of samples, hence the same
  number of batches, whatever the shard sizes (DDP hangs at the epoch's end when a rank runs out
  first). The epoch's order (shards shuffled, samples shuffled within windows, from
  ``seed + epoch`` as ``DistributedSampler`` does) is cut into ``num_replicas`` contiguous runs, so
  each rank reads about ``1 / num_replicas`` of the shards. With ``drop_last=False`` (the default,
  as ``DistributedSampler``) the order is padded by repeating its first samples: every sample is
  read at least once per epoch, ``ceil(N / R) * R - N`` of them twice. With ``drop_last=True`` it is
  cut: the last ``N % R`` samples of the epoch's order are left out (others each epoch when
  shuffled) and every other sample is read exactly once. Any map-style source works; one without
  ``shard_ranges`` counts as a single shard.
* :func:`check_equal_steps` is what ``GPULoader`` runs at every epoch's start: a sampler with
  ``num_replicas`` > 1 that is not one of the two above (equal by construction) has its length
  compared across ranks (one ``all_gather_object``); unequal lengths raise on every rank.
* :class:`SkipBatches` lets the loader skip, without reading them, the batches a resumed epoch has
  already delivered.

Example:
    >>> class Source:
    ...     shard_ranges = [(0, 3), (3, 4), (4, 9)]
    ...     def __len__(self): return 9
    >>> ranks = [DistributedShardSampler(Source(), num_replicas=2, rank=rank, seed=0) for rank in (0, 1)]
    >>> [len(rank) for rank in ranks], sorted(set(list(ranks[0]) + list(ranks[1])))
    ([5, 5], [0, 1, 2, 3, 4, 5, 6, 7, 8])
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sized
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DistributedSampler, Sampler

from gpuaug.loader.seeding import draw_epoch_seed

__all__ = ["DistributedShardSampler", "ShardSampler", "SkipBatches", "check_equal_steps", "epoch_order"]


def _ranges(source: Sized) -> list[tuple[int, int]]:
    ranges = getattr(source, "shard_ranges", None)
    return [(int(start), int(stop)) for start, stop in ranges] if ranges is not None else [(0, len(source))]


def epoch_order(ranges: list[tuple[int, int]], generator: torch.Generator | None, window: int = 1) -> np.ndarray:
    """Sample numbers: the shards in a random order, the samples shuffled within each window of shards.

    ``generator`` None: shard order, samples in order.

    Example:
        >>> epoch_order([(0, 2), (2, 5)], None).tolist()
        [0, 1, 2, 3, 4]
        >>> sorted(epoch_order([(0, 2), (2, 5)], torch.Generator().manual_seed(0), window=1).tolist())
        [0, 1, 2, 3, 4]
    """
    if generator is None:
        return np.concatenate([np.arange(start, stop) for start, stop in ranges] or [np.zeros(0, np.int64)])
    shards = torch.randperm(len(ranges), generator=generator).tolist()
    pieces = []
    for first in range(0, len(shards), window):
        group = np.concatenate([np.arange(*ranges[shard]) for shard in shards[first : first + window]])
        pieces.append(group[torch.randperm(len(group), generator=generator).numpy()])
    return np.concatenate(pieces) if pieces else np.zeros(0, np.int64)


def _check_window(window: Any) -> int:
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise ValueError(f"window must be a positive int (shards shuffled together), got {window!r}")
    return window


class ShardSampler(Sampler[int]):
    """Shards in a random order, samples shuffled within each window of ``window`` shards.

    Args:
        source: a map-style source with ``shard_ranges`` (``ga.WebDataset``); without, one shard.
        window: shards whose samples are shuffled together (more: closer to a full shuffle).
        shuffle: False: shard order, samples in order.
        generator: draws one int64 per epoch (the global RNG when None), as ``RandomSampler``.
    """

    def __init__(self, source: Sized, window: int = 4, shuffle: bool = True, generator: torch.Generator | None = None) -> None:
        self.source, self.window, self.shuffle, self.generator = source, _check_window(window), shuffle, generator

    def __iter__(self) -> Iterator[int]:
        generator = None
        if self.shuffle:
            generator = torch.Generator().manual_seed(draw_epoch_seed(self.generator))
        yield from epoch_order(_ranges(self.source), generator, self.window).tolist()

    def __len__(self) -> int:
        return len(self.source)


class DistributedShardSampler(Sampler[int]):
    """Every rank the same number of samples; ranks read contiguous runs of the shuffled shards.

    See the module docstring for which samples an epoch covers. Call ``set_epoch(epoch)`` every
    epoch (``GPULoader.set_epoch`` passes it on), as with ``DistributedSampler``.

    Args:
        dataset: a map-style source, with ``shard_ranges`` for shard-local reads.
        num_replicas, rank: default from the initialised process group.
        shuffle: shuffle the shards and, within windows, the samples.
        seed: the same on every rank.
        drop_last: cut the epoch to a multiple of ``num_replicas`` instead of padding it.
        window: shards whose samples are shuffled together.
    """

    def __init__(
        self,
        dataset: Sized,
        num_replicas: int | None = None,
        rank: int | None = None,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        window: int = 4,
    ) -> None:
        if num_replicas is None or rank is None:
            if not (dist.is_available() and dist.is_initialized()):
                raise RuntimeError("num_replicas and rank are needed when no process group is initialised")
            num_replicas = dist.get_world_size() if num_replicas is None else num_replicas
            rank = dist.get_rank() if rank is None else rank
        if not 0 <= rank < num_replicas:
            raise ValueError(f"invalid rank {rank}, rank should be in the interval [0, {num_replicas - 1}]")
        self.dataset, self.num_replicas, self.rank = dataset, int(num_replicas), int(rank)
        self.shuffle, self.seed, self.drop_last, self.window = shuffle, int(seed), drop_last, _check_window(window)
        self.epoch = 0
        total = len(dataset)
        self.num_samples = total // self.num_replicas if drop_last else math.ceil(total / self.num_replicas)
        self.total_size = self.num_samples * self.num_replicas

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch) if self.shuffle else None
        order = epoch_order(_ranges(self.dataset), generator, self.window)
        if len(order) < self.total_size and len(order) > 0:  # pad by repeating the order's first samples
            order = np.resize(order, self.total_size)
        order = order[: self.total_size]
        yield from order[self.rank * self.num_samples : (self.rank + 1) * self.num_samples].tolist()

    def __len__(self) -> int:
        return self.num_samples

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)


def check_equal_steps(sampler: Any, steps: int) -> None:
    """Raise on every rank when ranks would take different numbers of steps (see the module docstring).

    Example:
        >>> check_equal_steps(None, 10)   # not distributed: nothing to check
    """
    replicas = getattr(sampler, "num_replicas", None)
    if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 2:
        return
    if type(sampler) in (DistributedSampler, DistributedShardSampler):  # equal by construction
        return
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() != replicas:
        return
    lengths: list[Any] = [None] * replicas
    dist.all_gather_object(lengths, int(steps))
    if len(set(lengths)) > 1:
        raise RuntimeError(
            f"the ranks would take different numbers of batches this epoch ({', '.join(map(str, lengths))} for ranks "
            f"0..{replicas - 1}, from {type(sampler).__name__}): DDP would hang where one rank stops. Use "
            "ga.DistributedShardSampler or torch's DistributedSampler, which give every rank the same number"
        )


class SkipBatches(Sampler):
    """The batches of ``batch_sampler``, the first ``skip`` of the next epoch left out (then ``skip`` is 0)."""

    def __init__(self, batch_sampler: Any) -> None:
        self.batch_sampler = batch_sampler
        self.skip = 0

    def __iter__(self) -> Iterator[Any]:
        skip, self.skip = self.skip, 0
        for number, batch in enumerate(self.batch_sampler):
            if number >= skip:
                yield batch

    def __len__(self) -> int:
        return len(self.batch_sampler)
