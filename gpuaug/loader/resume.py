"""The loader's resumable position: what ``GPULoader.state_dict()`` holds and how a loaded one is checked.

The state has the shape of torchdata's ``StatefulDataLoader`` where it fits: ``num_yielded`` (the
batches taken this epoch) and ``iterator_finished``, plus what makes gpuaug's batches exact: the
``epoch`` (``set_epoch``'s, or None), ``iterations`` (epochs started before this one), the
``epoch_seed`` and the state of the loader's ``generator`` (the global RNG's when None) at the
epoch's start. Every batch's params come from (epoch seed, its indices) and the sampler's order
from the generator, so restoring the generator state at the epoch's start and skipping the taken
batches' indices gives the rest of the epoch bit for bit, without reading the taken batches.

Example:
    >>> state = epoch_state(None, 0, None, torch.get_rng_state(), 0, True, batches=4, global_rng=True)
    >>> check_state(state, batches=4, global_rng=True)["num_yielded"]
    0
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["check_state", "epoch_state"]

_NEEDED = ("version", "epoch", "iterations", "epoch_seed", "generator_state", "num_yielded", "iterator_finished", "batches")


def epoch_state(
    epoch: int | None,
    iterations: int,
    epoch_seed: int | None,
    generator_state: torch.Tensor,
    num_yielded: int,
    finished: bool,
    *,
    batches: int,
    global_rng: bool,
) -> dict[str, Any]:
    """The state dict (see the module docstring)."""
    return {
        "version": 1,
        "epoch": epoch,
        "iterations": iterations,
        "epoch_seed": epoch_seed,
        "generator_state": generator_state.clone(),
        "num_yielded": num_yielded,
        "iterator_finished": finished,
        "batches": batches,
        "global_rng": global_rng,
    }


def check_state(state: Any, *, batches: int, global_rng: bool) -> dict[str, Any]:
    """``state`` when a loader with ``batches`` per epoch (and a generator or not) can resume from it.

    Raises:
        ValueError: saying what does not fit.
    """
    if not isinstance(state, dict) or any(key not in state for key in _NEEDED) or state["version"] != 1:
        raise ValueError(f"not a GPULoader state_dict (needs the keys {', '.join(_NEEDED)}, version 1)")
    if state["batches"] != batches:
        raise ValueError(f"the state is for a loader of {state['batches']} batches per epoch; this one has {batches}")
    if not 0 <= state["num_yielded"] <= batches:
        raise ValueError(f"the state has {state['num_yielded']} batches taken of {batches}")
    if bool(state.get("global_rng")) != global_rng:
        raise ValueError("the state was saved with generator=None and this loader has a generator, or the reverse")
    if not isinstance(state["generator_state"], torch.Tensor):
        raise ValueError("the state's generator_state is not a tensor")
    return dict(state)
