"""Region kernels: erase a box per image, mix every image with a partner (MixUp blend or CutMix box), soft targets.

Boxes are ``[B, 4]`` int64 ``(top, left, height, width)`` per image; each kernel builds its masks by
broadcasting the boxes against row and column indices (no loop over samples, no host read).

Example:
    >>> images = torch.ones(2, 1, 4, 4)
    >>> boxes = torch.tensor([[0, 0, 2, 2], [1, 1, 2, 3]])
    >>> erase(images, boxes, torch.tensor([True, False]), torch.tensor([0.0])).sum(dim=(1, 2, 3))
    tensor([12., 16.])
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from gpuaug.functional.base import _mask, check_images

__all__ = ["box_mask", "erase", "hashed_normal", "mix", "soft_targets"]

_HASH = 0x45D9F3B
_LOW32 = 0xFFFFFFFF


def box_mask(boxes: Tensor, height: int, width: int, mask: Tensor | None = None) -> Tensor:
    """``[B, 1, H, W]`` bool: the pixels inside each image's box (and none where ``mask`` is false).

    Example:
        >>> box_mask(torch.tensor([[1, 0, 1, 2]]), 2, 3).int()[0, 0]
        tensor([[0, 0, 0],
                [1, 1, 0]], dtype=torch.int32)
    """
    top, left, box_height, box_width = boxes.to(torch.int64).view(-1, 4, 1, 1).unbind(1)
    rows = torch.arange(height, device=boxes.device).view(1, height, 1)
    columns = torch.arange(width, device=boxes.device).view(1, 1, width)
    inside = (rows >= top) & (rows < top + box_height) & (columns >= left) & (columns < left + box_width)
    if mask is not None:
        inside = inside & mask.to(device=boxes.device, dtype=torch.bool).view(-1, 1, 1)
    return inside.unsqueeze(1)


def _hash32(values: Tensor) -> Tensor:
    """A 32-bit integer hash of int64 values in ``[0, 2**32)`` (products stay below ``2**63``)."""
    values = ((values ^ (values >> 16)) * _HASH) & _LOW32
    values = ((values ^ (values >> 16)) * _HASH) & _LOW32
    return values ^ (values >> 16)


def hashed_normal(seeds: Tensor, shape: tuple[int, int, int]) -> Tensor:
    """Standard normal noise ``[B, *shape]`` (float32), a pure function of each image's ``seed`` (int64).

    A counter-based generator (an integer hash of seed and pixel index, then Box-Muller): the same
    seed gives the same noise on any device, so a drawn seed replays like any other parameter.

    Example:
        >>> noise = hashed_normal(torch.tensor([7, 8]), (3, 64, 64))
        >>> noise.shape, bool(noise.mean().abs() < 0.05), bool((noise.std() - 1).abs() < 0.05)
        (torch.Size([2, 3, 64, 64]), True, True)
    """
    counter = torch.arange(math.prod(shape), device=seeds.device, dtype=torch.int64).unsqueeze(0)
    return _normal_at(seeds.to(torch.int64).view(-1, 1), counter).view(-1, *shape)


def _normal_at(seeds: Tensor, counter: Tensor) -> Tensor:
    """``hashed_normal``'s float32 value for int64 ``seeds`` at pixel indices ``counter`` (broadcast together)."""
    key = _hash32(seeds & _LOW32)
    first = _hash32((key ^ (2 * counter)) & _LOW32)
    second = _hash32((_hash32(key ^ 0x5BD1E995) ^ (2 * counter + 1)) & _LOW32)
    u1 = (first.to(torch.float64) + 0.5) * 2.0**-32
    u2 = (second.to(torch.float64) + 0.5) * 2.0**-32
    normal = torch.sqrt(-2.0 * torch.log(u1)) * torch.cos((2.0 * math.pi) * u2)
    return normal.to(torch.float32)


def erase(
    images: Tensor,
    boxes: Tensor,
    mask: Tensor,
    values: Tensor | None = None,
    noise_seeds: Tensor | None = None,
    inplace: bool = False,
) -> Tensor:
    """torchvision's ``erase`` per image: the box of every image whose ``mask`` is true takes ``values``
    (``[1]`` or ``[C]``, cast to the images' dtype) or, with ``noise_seeds``, standard normal noise
    (``hashed_normal``), as ``RandomErasing(value="random")``.

    Args:
        images: ``[B, C, H, W]`` uint8 or float.
        boxes: ``[B, 4]`` int64 ``(top, left, height, width)``.
        mask: ``[B]`` bool, the images to erase.
        values, noise_seeds: one of them.
        inplace: write into ``images`` (returned) instead of a new tensor.

    Shape:
        ``[B, C, H, W]`` -> same.
    """
    check_images(images, "erase")
    batch, channels, height, width = images.shape
    if values is None and noise_seeds is None:
        raise ValueError("erase needs values or noise_seeds")
    if images.device.type == "cpu":
        return _erase_boxes(images, boxes, mask, values, noise_seeds, inplace)
    inside = box_mask(boxes.to(images.device, non_blocking=True), height, width, _mask(mask, images).view(-1))
    if noise_seeds is not None:
        fill = hashed_normal(noise_seeds.to(images.device, non_blocking=True), (channels, height, width)).to(images.dtype)
    else:
        fill = values.to(device=images.device, non_blocking=True).to(images.dtype).view(1, -1, 1, 1)
    if inplace:
        return images.copy_(torch.where(inside, fill, images))
    return torch.where(inside, fill, images)


def _erase_boxes(
    images: Tensor, boxes: Tensor, mask: Tensor, values: Tensor | None, noise_seeds: Tensor | None, inplace: bool
) -> Tensor:
    """``erase`` on the CPU: only the boxes of the erased images are written (host reads are free there).

    The same values as the batched path: a box takes ``values`` cast to the images' dtype, or the noise
    ``hashed_normal`` gives at those pixels (computed for the box's pixels only).
    """
    out = images if inplace else images.clone()
    rows = mask.to(torch.bool).view(-1).nonzero().view(-1).tolist()
    if not rows:
        return out
    channels, height, width = images.shape[1:]
    box_rows = boxes.to(torch.int64).tolist()
    fill = None if values is None else values.to(images.dtype).view(-1, 1, 1)
    seeds = None if noise_seeds is None else noise_seeds.to(torch.int64).view(-1).tolist()
    for row in rows:
        top, left, box_height, box_width = box_rows[row]
        bottom, right = min(max(top + box_height, 0), height), min(max(left + box_width, 0), width)
        top, left = min(max(top, 0), height), min(max(left, 0), width)
        if bottom <= top or right <= left:
            continue
        target = out[row, :, top:bottom, left:right]
        if seeds is None:
            target.copy_(fill.expand_as(target))
        else:
            target.copy_(_box_noise(seeds[row], channels, height, width, top, left, bottom, right).to(images.dtype))
    return out


def _box_noise(seed: int, channels: int, height: int, width: int, top: int, left: int, bottom: int, right: int) -> Tensor:
    """``hashed_normal(seed, (channels, height, width))[0, :, top:bottom, left:right]``, computed for those pixels only."""
    rows = torch.arange(top, bottom, dtype=torch.int64).view(1, -1, 1) * width
    counter = torch.arange(channels, dtype=torch.int64).view(-1, 1, 1) * (height * width) + rows + torch.arange(left, right)
    return _normal_at(torch.tensor(seed, dtype=torch.int64), counter)


def mix(images: Tensor, partner: Tensor, lam: Tensor, cutmix: Tensor, boxes: Tensor) -> Tensor:
    """MixUp and CutMix per image: image ``b`` is ``lam[b] * x[b] + (1 - lam[b]) * x[partner[b]]`` (MixUp
    rows, computed in float32, rounded back for uint8) or ``x[b]`` with its box pasted from
    ``x[partner[b]]`` (``cutmix`` rows); rows with ``lam == 1`` and no cutmix stay as they are.

    Shape:
        images ``[B, C, H, W]``, partner ``[B]`` int64, lam ``[B]`` float, cutmix ``[B]`` bool,
        boxes ``[B, 4]`` -> ``[B, C, H, W]``.

    Example:
        >>> x = torch.tensor([0.0, 1.0]).view(2, 1, 1, 1)
        >>> mix(x, torch.tensor([1, 0]), torch.tensor([0.25, 1.0]), torch.tensor([False, False]), torch.zeros(2, 4)).flatten()
        tensor([0.7500, 1.0000])
    """
    check_images(images, "mix")
    device = images.device
    partner = partner.to(device=device, dtype=torch.int64, non_blocking=True)
    cutmix = cutmix.to(device=device, dtype=torch.bool, non_blocking=True)
    lam = lam.to(device=device, non_blocking=True)
    other = images.index_select(0, partner)
    compute = images.dtype if images.dtype in (torch.float32, torch.float64) else torch.float32
    weight = lam.to(compute).view(-1, 1, 1, 1)
    blended = images.to(compute) * weight + other.to(compute) * (1.0 - weight)
    blended = blended.round_().clamp_(0, 255).to(images.dtype) if images.dtype == torch.uint8 else blended.to(images.dtype)
    blend_rows = (~cutmix) & (lam < 1.0)
    out = torch.where(_mask(blend_rows, images), blended, images)
    inside = box_mask(boxes.to(device, non_blocking=True), images.shape[2], images.shape[3], cutmix)
    return torch.where(inside, other, out)


def soft_targets(labels: Tensor, num_classes: int, partner: Tensor, lam: Tensor, smoothing: float = 0.0) -> Tensor:
    """timm's ``mixup_target``: ``lam * y + (1 - lam) * y[partner]`` with smoothed one-hot rows
    (``1 - smoothing + smoothing / K`` on the label, ``smoothing / K`` elsewhere), float32 ``[B, K]``.

    ``labels`` are ``[B]`` class indices or ``[B, K]`` soft rows (smoothed as ``(1 - s) y + s / K``).
    Every row sums to 1 when the label rows do.

    Example:
        >>> soft_targets(torch.tensor([0, 1]), 2, torch.tensor([1, 0]), torch.tensor([0.75, 1.0]))
        tensor([[0.7500, 0.2500],
                [0.0000, 1.0000]])
    """
    if labels.ndim == 2:
        rows = labels.to(torch.float32) * (1.0 - smoothing) + smoothing / num_classes
    else:
        off = smoothing / num_classes
        rows = torch.full((labels.shape[0], num_classes), off, dtype=torch.float32, device=labels.device)
        rows.scatter_(1, labels.to(torch.int64).view(-1, 1), 1.0 - smoothing + off)
    partner = partner.to(device=rows.device, dtype=torch.int64, non_blocking=True)
    weight = lam.to(device=rows.device, dtype=torch.float32, non_blocking=True).view(-1, 1)
    return rows * weight + rows.index_select(0, partner) * (1.0 - weight)
