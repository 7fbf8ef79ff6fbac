"""What the first geometric op of a pipeline reads, and its params after a region or reduced decode.

The loader decodes only what the first geometric op (``Compose.plan.first_geometric``) reads:
``RandomResizedCrop`` its box (mirrored where a flip comes first), ``CenterCrop`` the crop clipped
to the image, ``Resize`` the whole image; and, for JPEGs, at 1/2, 1/4 or 1/8 scale where that op
downscales at least as much anyway. The images then differ from the full-size ones the params were
drawn on: :func:`rebase` moves the params onto them.

One rounding rule (:func:`map_boxes`) serves both the crop of a reduced decode and the rebase, so
cropping in the worker and resampling on the device equals resampling the box of the full decode.

Example:
    >>> map_boxes(np.array([[10, 20, 40, 60]]), np.array([[0, 0, 100, 200]]), np.array([[50, 100]])).tolist()
    [[5, 10, 20, 30]]
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from gpuaug.fusion.ops import FusedOps, combine, mirror_boxes
from gpuaug.transforms import Compose, Params

__all__ = ["crop_decoded", "map_boxes", "rebase", "reduction_limits", "source_regions"]


def _whole(sizes: Tensor) -> Tensor:
    zeros = torch.zeros_like(sizes[:, 0])
    return torch.stack([zeros, zeros, sizes[:, 0], sizes[:, 1]], 1)


def _flips_before(compose: Compose, own: list[Params], position: int) -> tuple[Tensor | None, Tensor | None]:
    """The XOR of the horizontal and of the vertical flips before ``position`` (``None``: no such flip)."""
    ops = FusedOps(())
    for index in range(position):
        compose.transforms[index].contribute(ops, own[index])
    return combine(ops.hflips_before, "xor"), combine(ops.vflips_before, "xor")


def source_regions(compose: Compose, params: Params, sizes: Tensor) -> Tensor:
    """The region of each full-size image that the first geometric op reads (the whole image without one).

    Shape:
        sizes ``[B, 2]`` ``(height, width)`` -> ``[B, 4]`` int64 ``(top, left, height, width)``.

    Example:
        >>> from gpuaug.transforms import CenterCrop
        >>> source_regions(Compose([CenterCrop(4)]), {}, torch.tensor([[10, 3]])).tolist()
        [[3, 0, 4, 3]]
    """
    sizes = torch.as_tensor(sizes, dtype=torch.int64).view(-1, 2)
    position = compose.plan.first_geometric
    if position is None:
        return _whole(sizes)
    own = compose.split(params)
    regions = compose.transforms[position].source_region(own[position], sizes)
    return mirror_boxes(regions, sizes, *_flips_before(compose, own, position))


def reduction_limits(compose: Compose, params: Params, sizes: Tensor) -> Tensor:
    """How much the first geometric op downscales each image (>= 1): how much smaller its decode may be.

    Shape:
        sizes ``[B, 2]`` -> ``[B]`` float64.

    Example:
        >>> from gpuaug.transforms import Resize
        >>> reduction_limits(Compose([Resize(100)]), {}, torch.tensor([[400, 800]])).tolist()
        [4.0]
    """
    sizes = torch.as_tensor(sizes, dtype=torch.int64).view(-1, 2)
    position = compose.plan.first_geometric
    if position is None:
        return torch.ones(sizes.shape[0], dtype=torch.float64)
    return compose.transforms[position].reduction_limit(compose.params_of(params, position), sizes).clamp(min=1.0)


def map_boxes(boxes: np.ndarray, frames: np.ndarray, decoded: np.ndarray) -> np.ndarray:
    """``boxes`` (full-image coordinates) in the coordinates of ``frames`` decoded at ``decoded`` sizes.

    The rule: start ``floor((start - frame start) * scale)`` (at least 0), extent
    ``round(extent * scale)`` (half to even) clipped to what is left and at least 1, ``scale`` the
    decoded size over the frame's.

    Shape:
        ``[B, 4]`` boxes and frames ``(top, left, height, width)``, ``[B, 2]`` decoded -> ``[B, 4]`` int64.
    """
    boxes, frames, decoded = (np.asarray(a, dtype=np.float64).reshape(-1, n) for a, n in ((boxes, 4), (frames, 4), (decoded, 2)))
    scale = decoded / frames[:, 2:]
    start = np.maximum(np.floor((boxes[:, :2] - frames[:, :2]) * scale), 0)
    extent = np.maximum(np.minimum(np.round(boxes[:, 2:] * scale), decoded - start), 1)
    return np.concatenate([start, extent], axis=1).astype(np.int64)


def crop_decoded(image: Tensor, region: list[int], full: tuple[int, int]) -> Tensor:
    """The part of ``image`` (a full image decoded at any scale) that ``region`` covers at full size (a view)."""
    if tuple(region) == (0, 0, *full):
        return image
    top, left, height, width = map_boxes(np.array(region), np.array([0, 0, *full]), np.array(image.shape[-2:]))[0].tolist()
    return image[:, top : top + height, left : left + width]


def rebase(compose: Compose, params: Params, regions: Tensor, decoded: Tensor, sizes: Tensor) -> Params:
    """Params for images where image ``i`` is ``regions[i]`` of its full image (``sizes[i]``), decoded at ``decoded[i]``.

    The first geometric op moves its own params (``Transform.rebase``), through the flips before
    it; everything else is returned as it is.

    Example:
        >>> from gpuaug.transforms import RandomResizedCrop
        >>> params = {"0.boxes": torch.tensor([[10, 20, 40, 60]])}
        >>> rebase(Compose([RandomResizedCrop(8)]), params, torch.tensor([[0, 0, 100, 200]]),
        ...        torch.tensor([[50, 100]]), torch.tensor([[100, 200]]))["0.boxes"].tolist()
        [[5, 10, 20, 30]]
    """
    position = compose.plan.first_geometric
    if position is None:
        return params
    own = compose.split(params)
    hflip, vflip = _flips_before(compose, own, position)
    pairs = ((regions, 4), (decoded, 2), (sizes, 2))
    regions, decoded, sizes = (torch.as_tensor(t, dtype=torch.int64).cpu().view(-1, n) for t, n in pairs)

    def to_decoded(boxes: Tensor) -> Tensor:
        read = mirror_boxes(boxes.to(torch.int64), sizes, hflip, vflip)
        mapped = torch.from_numpy(map_boxes(read.numpy(), regions.numpy(), decoded.numpy()))
        return mirror_boxes(mapped, decoded, hflip, vflip)

    rebased = compose.transforms[position].rebase(own[position], to_decoded)
    return {**params, **{f"{position}.{name}": value for name, value in rebased.items()}}
