"""The Triton executor: a plan's fused prefix as one pass of at most 3 kernels, straight from the
packed batch the loader's workers wrote (``PackedBatch``: offsets, sizes, strides, read in place),
or a list, or a batch; the rest of the plan on torch.

It runs uint8 RGB input on CUDA (``backend="auto"``), or on CPU tensors under Triton's interpreter
(``backend="triton"`` with ``TRITON_INTERPRET=1``, for tests). The kernels live in
``gpuaug.fusion.triton_kernels``, imported on first use: Triton is optional.

Example:
    >>> accepts(torch.zeros(1, 3, 4, 4, dtype=torch.uint8), "torch")
    False
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from gpuaug import functional as F
from gpuaug.fusion import torch_executor
from gpuaug.fusion.ops import FusedOps
from gpuaug.fusion.plan import Plan
from gpuaug.io.packed import PackedBatch

__all__ = ["BACKENDS", "accepts", "available", "run"]

BACKENDS = ("auto", "torch", "triton")

_KERNELS: Any = None


def kernels():
    """The Triton kernels module, or ``None`` where Triton cannot be imported (an optional dependency)."""
    global _KERNELS
    if _KERNELS is None:
        try:
            from gpuaug.fusion import triton_kernels
        except ImportError:  # no triton (e.g. macOS, or a CPU-only install without it)
            triton_kernels = False
        _KERNELS = triton_kernels
    return _KERNELS or None


def available() -> bool:
    """Whether Triton imports here."""
    return kernels() is not None


def accepts(images: Any, backend: str) -> bool:
    """Whether the Triton pass runs ``images`` under ``backend`` (``"auto"``: uint8 RGB on CUDA).

    Raises:
        RuntimeError: ``backend="triton"`` on CPU tensors without Triton's interpreter.
    """
    if backend == "torch":
        return False
    if backend == "auto":  # CPU runs (the loader's workers) leave here, never importing Triton
        first = images if isinstance(images, (Tensor, PackedBatch)) else images[0] if len(images) else None
        if not isinstance(first, (Tensor, PackedBatch)) or first.device.type != "cuda":
            return False
    if isinstance(images, PackedBatch):
        device, uint8, rgb = images.device, True, True
    elif isinstance(images, Tensor):
        device, uint8, rgb = images.device, images.dtype == torch.uint8, images.ndim == 4 and images.shape[1] == 3
    elif len(images) and isinstance(images[0], Tensor):
        device, uint8 = images[0].device, all(image.dtype == torch.uint8 for image in images)
        rgb = all(image.ndim == 3 and image.shape[0] == 3 for image in images)
    else:
        return False
    if not (uint8 and rgb):  # the kernels read uint8 RGB; anything else takes the torch path
        return False
    if backend == "auto":
        return available()
    if device.type != "cuda" and not kernels().INTERPRETING:
        raise RuntimeError(
            "backend='triton' on CPU tensors needs Triton's interpreter: set TRITON_INTERPRET=1 before importing gpuaug"
        )
    return True


def run(plan: Plan, transforms: Sequence[Any], images: Any, params: Sequence[dict]) -> Tensor | list[Tensor]:
    """The fused prefix of ``plan`` on ``images`` (a ``PackedBatch`` as it is), then the rest on torch."""
    if isinstance(images, Tensor):  # the batch itself is the buffer: no copy
        count, _, height, width = images.shape
        data, sizes = images, ((height, width),) * count
        offsets = torch.arange(count, dtype=torch.int64) * images.stride(0)
        strides = torch.tensor(images.stride()[1:], dtype=torch.int64).expand(count, 3)
    else:
        if not isinstance(images, PackedBatch):  # a list: packed once here
            F.check_images(images, "Compose", allow_list=True, rgb=True)
            images = PackedBatch.from_images(images)
        data, offsets, strides, sizes = images.data, images.offsets, images.strides, images.sizes
    if len(set(sizes)) > 1 and not plan.prefix_geometric():
        return torch_executor.run(plan.stages, transforms, images.unpack(), params)  # ragged, no geometry: image by image
    ops = FusedOps(tuple(sizes))
    for index in range(plan.prefix):
        transforms[index].contribute(ops, params[index])
    out = kernels().fused(data, offsets, strides, ops)
    return torch_executor.run(plan.after_prefix, transforms, out, params)
