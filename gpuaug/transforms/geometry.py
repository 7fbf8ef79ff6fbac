"""Geometric transforms: flips, RandomResizedCrop, Resize, CenterCrop.

Example:
    >>> RandomResizedCrop(8)(torch.rand(2, 3, 30, 40)).shape
    torch.Size([2, 3, 8, 8])
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from gpuaug import functional as F
from gpuaug.fusion.ops import FusedOps, centre_anchor
from gpuaug.transforms.base import (
    BatchInfo,
    Images,
    Params,
    Transform,
    _bernoulli,
    _check_probability,
    _check_range,
    _check_size,
    _list_loop,
    _uniform,
)


# ----------------------------------------------------------------------------------------------
class RandomFlip(Transform):
    """Mirror each image along ``axis`` with probability ``p``, independently per image (the base
    of ``RandomHorizontalFlip`` and ``RandomVerticalFlip``).

    Args:
        p: probability of a flip.
        axis: ``"horizontal"`` (left-right) or ``"vertical"`` (top-bottom).

    Shape:
        ``[B, C, H, W]`` (or a list) -> same.

    Example:
        >>> RandomFlip(p=1.0, axis="horizontal")(torch.arange(4.0).view(1, 1, 1, 4))
        tensor([[[[3., 2., 1., 0.]]]])
    """

    accepts_list = True
    fusion = "flip"

    def __init__(self, p: float = 0.5, axis: str = "horizontal") -> None:
        if axis not in ("horizontal", "vertical"):
            raise ValueError(f"axis must be 'horizontal' or 'vertical', got {axis!r}")
        self.p = _check_probability(p)
        self.axis = axis

    def _make_params(self, info: BatchInfo, generator: torch.Generator | None) -> Params:
        return {"flip": _bernoulli(info, generator, self.p)}

    def apply(self, images: Images, params: Params) -> Tensor | list[Tensor]:
        horizontal = self.axis == "horizontal"
        if isinstance(images, Tensor):
            return (F.hflip if horizontal else F.vflip)(images, params["flip"])
        return _list_loop(images, params["flip"], lambda image: image.flip(-1 if horizontal else -2))

    def contribute(self, ops: FusedOps, params: Params) -> None:
        ops.flip(self.axis, params["flip"])

    def describe(self) -> dict[str, Any]:
        return {"axis": self.axis, "p": self.p}

    def _repr_fields(self) -> dict[str, Any]:
        return {"p": self.p}


class RandomHorizontalFlip(RandomFlip):
    """Mirror each image left-right with probability ``p``, independently per image.

    Example:
        >>> RandomHorizontalFlip(p=1.0)(torch.arange(4.0).view(1, 1, 1, 4))
        tensor([[[[3., 2., 1., 0.]]]])
    """

    def __init__(self, p: float = 0.5) -> None:
        super().__init__(p, "horizontal")


class RandomVerticalFlip(RandomFlip):
    """Mirror each image top-bottom with probability ``p``, independently per image.

    Example:
        >>> RandomVerticalFlip(p=1.0)(torch.arange(2.0).view(1, 1, 2, 1)).flatten()
        tensor([1., 0.])
    """

    def __init__(self, p: float = 0.5) -> None:
        super().__init__(p, "vertical")


# ----------------------------------------------------------------------------------------------
# Geometry
# ----------------------------------------------------------------------------------------------
class RandomResizedCrop(Transform):
    """Crop a random area and aspect ratio of each image and resize it to ``size``.

    torchvision's sampling, per image: up to 10 draws of an area fraction in ``scale`` and a
    log-uniform aspect ratio in ``ratio``; the first box that fits is placed uniformly; after 10
    misses, a centre crop clipped to ``ratio``. All 10 draws are made for every image at once, so
    there is no loop and no host sync.

    Args:
        size: output ``(height, width)``, or one int for a square.
        scale: range of the crop's area as a fraction of the image's.
        ratio: range of the crop's aspect ratio (width / height).
        antialias: antialiased bilinear resize, as torchvision's default.

    Shape:
        ``[B, C, H, W]`` or a list of ``[C, H_i, W_i]`` -> ``[B, C, size[0], size[1]]``.
        Params: ``boxes`` ``[B, 4]`` int64 ``(top, left, height, width)``.

    Example:
        >>> RandomResizedCrop(200, scale=(0.1, 1), ratio=(0.5, 2))(torch.rand(4, 3, 300, 400)).shape
        torch.Size([4, 3, 200, 200])
    """

    accepts_list = True
    fusion = "crop"
    fixed_output = True
    attempts = 10

    def __init__(
        self,
        size: int | Sequence[int],
        scale: Sequence[float] = (0.08, 1.0),
        ratio: Sequence[float] = (3.0 / 4.0, 4.0 / 3.0),
        antialias: bool = True,
    ) -> None:
        size = _check_size(size)
        self.size = (size[0], size[0]) if len(size) == 1 else size
        self.scale = _check_range(scale, "scale", low_bound=0.0, inclusive=True)
        self.ratio = _check_range(ratio, "ratio", low_bound=0.0, inclusive=False)
        self.antialias = bool(antialias)

    def _make_params(self, info: BatchInfo, generator: torch.Generator | None) -> Params:
        heights, widths = (values.to(torch.float64).unsqueeze(1) for values in info.size_tensors())
        draws = _uniform(info, generator, self.attempts, 2, dtype=torch.float64)
        scale_low, scale_high = self.scale
        log_low, log_high = math.log(self.ratio[0]), math.log(self.ratio[1])
        target_area = heights * widths * (scale_low + (scale_high - scale_low) * draws[..., 0])
        aspect = torch.exp(log_low + (log_high - log_low) * draws[..., 1])
        crop_w = torch.round(torch.sqrt(target_area * aspect))
        crop_h = torch.round(torch.sqrt(target_area / aspect))
        fits = (crop_w > 0) & (crop_w <= widths) & (crop_h > 0) & (crop_h <= heights)
        first_fit = fits.to(torch.int32).argmax(dim=1, keepdim=True)  # first True (0 if none)
        crop_w = crop_w.gather(1, first_fit).squeeze(1)
        crop_h = crop_h.gather(1, first_fit).squeeze(1)
        heights, widths = heights.squeeze(1), widths.squeeze(1)

        # torchvision's fallback: a centre crop, clipped to the ratio range
        in_ratio = widths / heights
        fallback_w = torch.where(in_ratio > self.ratio[1], torch.round(heights * self.ratio[1]), widths)
        fallback_h = torch.where(in_ratio < self.ratio[0], torch.round(widths / self.ratio[0]), heights)
        any_fit = fits.any(dim=1)
        crop_w = torch.where(any_fit, crop_w, fallback_w)
        crop_h = torch.where(any_fit, crop_h, fallback_h)

        offsets = _uniform(info, generator, 2, dtype=torch.float64)
        top = torch.where(
            any_fit, torch.floor(offsets[:, 0] * (heights - crop_h + 1)), torch.div(heights - crop_h, 2, rounding_mode="floor")
        )
        left = torch.where(
            any_fit, torch.floor(offsets[:, 1] * (widths - crop_w + 1)), torch.div(widths - crop_w, 2, rounding_mode="floor")
        )
        boxes = torch.stack([top, left, crop_h, crop_w], dim=1).to(torch.int64)
        return {"boxes": boxes}

    def apply(self, images: Images, params: Params, hflip: Tensor | None = None, vflip: Tensor | None = None) -> Tensor:
        return F.resized_crop(images, params["boxes"], self.size, hflip, vflip, antialias=self.antialias)

    def output_sizes(self, info: BatchInfo) -> BatchInfo:
        return info.resized([self.size] * info.batch)

    def contribute(self, ops: FusedOps, params: Params) -> None:
        ops.crop(params["boxes"], self.size, self.antialias)

    def source_region(self, params: Params, sizes: Tensor) -> Tensor:
        return params["boxes"].to(device=sizes.device, dtype=torch.int64)

    def reduction_limit(self, params: Params, sizes: Tensor) -> Tensor:
        boxes = params["boxes"].to(device=sizes.device, dtype=torch.float64)
        return torch.minimum(boxes[:, 2] / self.size[0], boxes[:, 3] / self.size[1])

    def rebase(self, params: Params, to_decoded: Callable[[Tensor], Tensor]) -> Params:
        return {**params, "boxes": to_decoded(params["boxes"])}

    def check_params(self, info: BatchInfo, params: Params) -> None:
        super().check_params(info, params)
        boxes = params["boxes"].cpu()  # a replay's check (one small read), never on the loader's path
        sizes = torch.tensor(info.sizes, dtype=torch.int64).view(-1, 2)
        outside = (boxes[:, :2] < 0) | (boxes[:, 2:] < 1) | (boxes[:, :2] + boxes[:, 2:] > sizes)
        if outside.any():
            row = int(outside.any(1).nonzero()[0])
            raise ValueError(
                f"RandomResizedCrop: params['boxes'][{row}] = {boxes[row].tolist()} does not fit image {row} of size "
                f"{info.sizes[row]}; replay params on the images they were drawn for"
            )

    def describe(self) -> dict[str, Any]:
        return {"size": self.size, "scale": self.scale, "ratio": self.ratio, "antialias": self.antialias}

    def _repr_fields(self) -> dict[str, Any]:
        return {"size": self.size, "scale": self.scale, "ratio": self.ratio, "antialias": self.antialias}


class Resize(Transform):
    """Resize like torchvision: an int resizes the shorter side keeping the aspect ratio.

    Args:
        size: one int (shorter side) or ``(height, width)``.
        antialias: antialiased bilinear, torchvision's default.

    Shape:
        ``[B, C, H, W]`` -> ``[B, C, h, w]``. A ragged list is resized image by image; with an int
        size the results can still differ in size, so follow it with ``CenterCrop`` in a Compose.

    Example:
        >>> Resize(256)(torch.rand(2, 3, 300, 400)).shape
        torch.Size([2, 3, 256, 341])
    """

    accepts_list = True
    fusion = "resize"

    def __init__(self, size: int | Sequence[int], antialias: bool = True) -> None:
        self.size = _check_size(size)
        self.antialias = bool(antialias)

    @property
    def fixed_output(self) -> bool:  # (height, width): one size; a shorter side keeps each aspect ratio
        return len(self.size) == 2

    def apply(self, images: Images, params: Params) -> Tensor | list[Tensor]:
        return F.resize(images, self.size, antialias=self.antialias)

    def output_sizes(self, info: BatchInfo) -> BatchInfo:
        return info.resized([F.resize_output_size(h, w, self.size) for h, w in info.sizes])

    def contribute(self, ops: FusedOps, params: Params) -> None:
        ops.resize([F.resize_output_size(h, w, self.size) for h, w in ops.sizes], self.antialias)

    def reduction_limit(self, params: Params, sizes: Tensor) -> Tensor:
        heights, widths = sizes[:, 0].double(), sizes[:, 1].double()
        if len(self.size) == 2:
            resized_h = torch.full_like(heights, float(self.size[0]))
            resized_w = torch.full_like(widths, float(self.size[1]))
        else:  # F.resize_output_size, vectorised: the long side int(size * long / short)
            short, long = torch.minimum(heights, widths), torch.maximum(heights, widths)
            new_short, new_long = torch.full_like(short, float(self.size[0])), torch.floor(self.size[0] * long / short)
            portrait = heights > widths
            resized_h = torch.where(portrait, new_long, new_short)
            resized_w = torch.where(portrait, new_short, new_long)
        return torch.minimum(heights / resized_h, widths / resized_w)

    def describe(self) -> dict[str, Any]:
        return {"size": self.size, "antialias": self.antialias}

    def _repr_fields(self) -> dict[str, Any]:
        return {"size": self.size if len(self.size) == 2 else self.size[0], "antialias": self.antialias}


class CenterCrop(Transform):
    """Crop the centre of every image (zero-padding images smaller than ``size``, as torchvision).

    Shape:
        ``[B, C, H, W]`` or a list of ``[C, H_i, W_i]`` -> ``[B, C, size[0], size[1]]``.

    Example:
        >>> CenterCrop(224)([torch.rand(3, 256, 300), torch.rand(3, 300, 256)]).shape
        torch.Size([2, 3, 224, 224])
    """

    accepts_list = True
    fusion = "window"
    fixed_output = True

    def __init__(self, size: int | Sequence[int]) -> None:
        size = _check_size(size)
        self.size = (size[0], size[0]) if len(size) == 1 else size

    def apply(self, images: Images, params: Params) -> Tensor:
        return F.center_crop(images, self.size)

    def output_sizes(self, info: BatchInfo) -> BatchInfo:
        return info.resized([self.size] * info.batch)

    def contribute(self, ops: FusedOps, params: Params) -> None:
        ops.center_crop(self.size)

    def source_region(self, params: Params, sizes: Tensor) -> Tensor:
        # torchvision's anchor (fusion.ops.centre_anchor), the crop clipped to the image (the rest is padding)
        crop = torch.tensor(self.size, dtype=torch.int64)
        anchor = torch.from_numpy(centre_anchor(sizes.cpu().numpy(), crop.numpy())).clamp(min=0)
        return torch.cat([anchor, torch.minimum(sizes.cpu(), crop)], 1).to(sizes.device)

    def describe(self) -> dict[str, Any]:
        return {"size": self.size}

    def _repr_fields(self) -> dict[str, Any]:
        return {"size": self.size}


# ----------------------------------------------------------------------------------------------
