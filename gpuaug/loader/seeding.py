"""Seeds for the loaders: one per epoch, then one per batch, so that draws never depend on timing.

A loader draws one int64 from its ``generator`` (the global RNG when None) at the start of every
epoch, exactly as a non-persistent ``torch.utils.data.DataLoader`` draws its base seed, then the
sampler draws its order. Because the draw happens every epoch whatever ``num_workers`` or
``persistent_workers`` say, the sample order and the augmentations are the same for every worker
setting (``DataLoader`` itself skips that draw from epoch 2 with persistent workers, so its order
then depends on the setting; ours does not).

Every batch draws its augmentation parameters from ``mix_seed(epoch_seed, *indices)`` on a CPU
generator in whichever process assembles it: same generator seed, same batches, whatever the
thread timing, the number of workers or the decoder.

Example:
    >>> mix_seed(1, 2) == mix_seed(1, 2) != mix_seed(2, 1)
    True
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler

__all__ = ["SeededBatches", "draw_epoch_seed", "mix_seed"]

_MASK64 = (1 << 64) - 1


def mix_seed(*values: int) -> int:
    """A well-mixed 63-bit seed from integers (splitmix64 rounds)."""
    state = 0x9E3779B97F4A7C15
    for value in values:
        state = (state ^ (int(value) & _MASK64)) & _MASK64
        state = (state + 0x9E3779B97F4A7C15) & _MASK64
        state = ((state ^ (state >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        state = ((state ^ (state >> 27)) * 0x94D049BB133111EB) & _MASK64
        state ^= state >> 31
    return state >> 1


def draw_epoch_seed(generator: torch.Generator | None) -> int:
    """Draw the int64 a fresh ``DataLoader`` iterator draws as its base seed (global RNG if None).

    Consumed, like DataLoader's own draw, so the sampler's order that follows is the one a
    ``DataLoader(persistent_workers=False)`` gives for the same generator.
    """
    draw = torch.empty((), dtype=torch.int64)
    value = draw.random_(generator=generator) if generator is not None else draw.random_()
    return int(value.item())  # a CPU tensor: no device sync


class SeededBatches(Sampler):
    """Yields each batch of indices as ``[(index, epoch_seed), ...]`` for the workers."""

    def __init__(self, batch_sampler: Sampler) -> None:
        self.batch_sampler = batch_sampler
        self.epoch_seed = 0

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        seed = self.epoch_seed
        for number, batch in enumerate(self.batch_sampler):
            if len(batch) == 0:  # it would silently vanish (len() would count it)
                raise ValueError(f"the batch sampler yielded an empty batch (batch {number}); every batch needs an index")
            yield [(int(index), seed) for index in batch]

    def __len__(self) -> int:
        return len(self.batch_sampler)
