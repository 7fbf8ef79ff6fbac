"""Batched, per-sample random transforms with torchvision's names, arguments and ranges.

Each transform samples one parameter set *per image* in ``make_params`` (on the images' device,
from an optional ``torch.Generator``) and hands it to the pure kernels of
:mod:`gpuaug.functional` in ``apply``. Calling ``t(images)`` does both; ``t(images, params=p)``
replays a draw exactly.

Example:
    >>> import gpuaug as ga
    >>> augment = ga.Compose([ga.RandomResizedCrop(224), ga.RandomHorizontalFlip(),
    ...                       ga.ColorJitter(0.4, 0.4, 0.4), ga.Normalize(ga.IMAGENET_MEAN, ga.IMAGENET_STD)])
    >>> batch = augment(torch.randint(0, 256, (8, 3, 300, 400), dtype=torch.uint8))
    >>> batch.shape, batch.dtype
    (torch.Size([8, 3, 224, 224]), torch.float32)
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from gpuaug import functional as F
from gpuaug.fusion import FusedOps, combine
from gpuaug.packed import PackedBatch

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "CenterCrop",
    "ColorJitter",
    "Compose",
    "Normalize",
    "RandomGrayscale",
    "RandomHorizontalFlip",
    "RandomResizedCrop",
    "RandomVerticalFlip",
    "Resize",
    "ToDtype",
    "Transform",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

Images = Tensor | Sequence[Tensor] | PackedBatch
Params = dict[str, Tensor]


# ----------------------------------------------------------------------------------------------
# What make_params needs to know about a batch: its size, device and image sizes
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BatchInfo:
    """Batch size, device and per-image ``(height, width)``, without the pixels."""

    batch: int
    device: torch.device
    sizes: tuple[tuple[int, int], ...]

    @staticmethod
    def of(images: Images) -> BatchInfo:
        if isinstance(images, PackedBatch):  # sizes from the headers, never read back from the device
            return BatchInfo(len(images), images.device, images.sizes)
        if isinstance(images, Tensor):
            height, width = images.shape[-2:]
            return BatchInfo(images.shape[0], images.device, ((height, width),) * images.shape[0])
        sizes = tuple((image.shape[-2], image.shape[-1]) for image in images)
        return BatchInfo(len(images), images[0].device, sizes)

    def resized(self, sizes: Sequence[tuple[int, int]]) -> BatchInfo:
        return BatchInfo(self.batch, self.device, tuple(sizes))

    def size_tensors(self) -> tuple[Tensor, Tensor]:
        """Heights and widths as ``[B]`` int64 on the device (a host-to-device copy, no sync)."""
        sizes = torch.tensor(self.sizes, dtype=torch.int64).view(-1, 2)
        if self.device.type != "cpu":  # pinned, so the copy is asynchronous (no stream sync)
            sizes = sizes.pin_memory().to(self.device, non_blocking=True)
        return sizes[:, 0], sizes[:, 1]


def _uniform(info: BatchInfo, generator: torch.Generator | None, *shape: int, dtype=torch.float32) -> Tensor:
    """``U[0, 1)`` of shape ``[B, *shape]`` on the batch's device.

    Sampled with ``generator`` on its own device; a CPU generator for CUDA images samples on the
    CPU and copies (non-blocking), so one seeded CPU generator still reproduces a run.
    """
    device = info.device if generator is None else generator.device
    values = torch.rand((info.batch, *shape), generator=generator, device=device, dtype=dtype)
    if values.device.type == "cpu" and info.device.type != "cpu":  # pinned: an asynchronous copy
        values = values.pin_memory().to(info.device, non_blocking=True)
    return values


def _bernoulli(info: BatchInfo, generator: torch.Generator | None, p: float) -> Tensor:
    return _uniform(info, generator) < p


# ----------------------------------------------------------------------------------------------
# Argument checks (ValueError naming the argument, at construction)
# ----------------------------------------------------------------------------------------------
MAX_SIZE = 65535
"""The largest output side (pixels) a transform accepts: the largest side a JPEG can have, far above any
training size. It keeps sizes such as ``10**30`` from reaching the kernels (int64 overflow, huge allocations)."""

FLOAT32_MAX = float(torch.finfo(torch.float32).max)


def _check_finite(value: float, name: str) -> float:
    """``value`` as a float; a ValueError naming ``name`` if NaN, infinite or beyond float32 (factors are sampled in float32)."""
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):  # OverflowError: an int such as 10**400
        number = math.nan
    if not math.isfinite(number) or abs(number) > FLOAT32_MAX:
        shown = repr(value) if len(repr(value)) <= 40 else f"{repr(value)[:20]}...({len(repr(value))} characters)"
        raise ValueError(f"{name} must be a finite number (within float32 range), got {shown}")
    return number


def _check_pixels(images: Images, op: str) -> None:
    """A ValueError naming the image (or batch shape) that has a height, width or channel count of 0."""
    shapes = [tuple(images.shape[1:])] if isinstance(images, Tensor) else [tuple(image.shape) for image in images]
    for index, shape in enumerate(shapes):
        if 0 in shape:
            batch = isinstance(images, Tensor)
            which = f"images of shape {tuple(images.shape)} have" if batch else f"image {index} of shape {shape} has"
            empty = ", ".join(f"{axis} 0" for axis, extent in zip(("channels", "height", "width"), shape) if extent == 0)
            raise ValueError(f"{op}: {which} no pixels ({empty}); every image needs at least one channel and one pixel")


def _check_probability(p: float, name: str = "p") -> float:
    if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0.0 <= _check_finite(p, name) <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {p!r}")
    return float(p)


def _check_size(size: Any, name: str = "size", allow_single: bool = True) -> tuple[int, ...]:
    if isinstance(size, numbers.Integral) and not isinstance(size, bool):
        size = (int(size),)
    if (
        not isinstance(size, Sequence)
        or isinstance(size, str)
        or len(size) not in ((1, 2) if allow_single else (2,))
        or not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) and v > 0 for v in size)
    ):
        raise ValueError(f"{name} must be a positive int or a (height, width) pair of positive ints, got {size!r}")
    if any(v > MAX_SIZE for v in size):
        raise ValueError(f"{name} must be at most {MAX_SIZE} pixels per side, got {size!r}")
    return tuple(int(v) for v in size)


def _check_range(value: Any, name: str, *, low_bound: float, inclusive: bool) -> tuple[float, float]:
    if (
        not isinstance(value, Sequence)
        or isinstance(value, str)
        or len(value) != 2
        or not all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in value)
    ):
        raise ValueError(f"{name} must be a (min, max) pair of numbers, got {value!r}")
    low, high = _check_finite(value[0], f"{name} min"), _check_finite(value[1], f"{name} max")
    above = low >= low_bound if inclusive else low > low_bound
    if low > high or not above:
        relation = "<=" if inclusive else "<"
        raise ValueError(f"{name} must satisfy {low_bound:g} {relation} min <= max, got {value!r}")
    return low, high


def _check_jitter(value: Any, name: str, center: float, bound: tuple[float, float]) -> tuple[float, float] | None:
    """torchvision's ``ColorJitter._check_input``: a number ``f`` means ``[center - f, center + f]``."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        if value < 0:
            raise ValueError(f"{name} must be non-negative when a single number, got {value!r}")
        low, high = center - _check_finite(value, name), center + _check_finite(value, name)
        if center == 1.0:
            low = max(low, 0.0)
    elif isinstance(value, Sequence) and not isinstance(value, str) and len(value) == 2:
        if not all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in value):
            raise ValueError(f"{name} must be a number or a (min, max) pair, got {value!r}")
        low, high = _check_finite(value[0], name), _check_finite(value[1], name)
    else:
        raise ValueError(f"{name} must be a number or a (min, max) pair, got {value!r}")
    low, high = _check_finite(low, name), _check_finite(high, name)
    if not bound[0] <= low <= high <= bound[1]:
        raise ValueError(f"{name} range must lie in [{bound[0]}, {bound[1]}] with min <= max, got {[low, high]}")
    return None if low == high == center else (low, high)


# ----------------------------------------------------------------------------------------------
# Base class
# ----------------------------------------------------------------------------------------------
class Transform:
    """Base of every gpuaug transform.

    ``t(images, params=None, generator=None)`` samples per-image parameters with ``make_params``
    (unless given) and applies them with ``apply``. ``images`` is a uint8 or float ``[B, C, H, W]``
    tensor (or one ``[C, H, W]`` image); transforms with ``accepts_list`` also take a list of
    ``[C, H, W]`` tensors of different sizes and return one batch.

    Empty input: an image with no pixels (a height, width or channel count of 0) raises a
    ``ValueError`` naming it; an empty batch ``[0, C, H, W]`` gives, as in torchvision v2, an empty
    batch with the shape and dtype one image would get (found by running the transform on one
    blank image with a private generator: the caller's generator is not consumed). An empty list
    has no shape to follow and raises.
    """

    accepts_list = False
    fusion: str | None = None
    """What the transform contributes to a fused pass (one of ``gpuaug.fusion.ROLES``; ``None``: it
    runs on its own). A transform with a role implements ``contribute``."""
    fixed_output = False
    """Whether a geometric transform gives every image the same size, whatever the input sizes."""

    def __call__(self, images: Images, params: Params | None = None, generator: torch.Generator | None = None) -> Tensor:
        single = isinstance(images, Tensor) and images.ndim == 3
        batch = images.unsqueeze(0) if single else images
        F.check_images(batch, type(self).__name__, allow_list=self.accepts_list)
        _check_pixels(batch, type(self).__name__)
        if isinstance(batch, Tensor) and batch.shape[0] == 0:
            return _empty_output(self, batch)
        if params is None:
            params = self.make_params(batch, generator)
        out = _as_batch(self.apply(batch, params), type(self).__name__)
        return out[0] if single else out

    def make_params(self, images: Images, generator: torch.Generator | None = None) -> Params:
        """Per-image parameters (``[B, ...]`` tensors on the images' device) for ``apply``."""
        return self._make_params(BatchInfo.of(images), generator)

    def _make_params(self, info: BatchInfo, generator: torch.Generator | None) -> Params:
        return {}

    def apply(self, images: Images, params: Params) -> Tensor | list[Tensor]:
        """Apply given parameters (no randomness)."""
        raise NotImplementedError

    def output_sizes(self, info: BatchInfo) -> BatchInfo:
        """The batch after this transform (used to sample a Compose's params without pixels)."""
        return info

    def contribute(self, ops: FusedOps, params: Params) -> None:
        """Describe this transform, with its drawn ``params``, to the fused pass ``ops`` (see ``fusion``)."""
        raise NotImplementedError(f"{type(self).__name__} has no fused form (fusion={self.fusion!r})")

    # -- what a first geometric op reads (the loader decodes only that) -------------------------
    def source_region(self, params: Params, sizes: Tensor) -> Tensor:
        """``[B, 4]`` int64 ``(top, left, height, width)`` of each source image this op reads (all of it by default)."""
        zeros = torch.zeros_like(sizes[:, 0])
        return torch.stack([zeros, zeros, sizes[:, 0], sizes[:, 1]], 1)

    def reduction_limit(self, params: Params, sizes: Tensor) -> Tensor:
        """``[B]`` float64: how much this op downscales each image (1: not at all)."""
        return torch.ones(sizes.shape[0], dtype=torch.float64, device=sizes.device)

    def rebase(self, params: Params, read: Tensor, regions: Tensor, decoded_sizes: Tensor, mirror: tuple) -> Params:
        """Params for inputs that are ``regions`` of the full images decoded at ``decoded_sizes`` (unchanged by default)."""
        return params

    def __repr__(self) -> str:
        fields = ", ".join(f"{key}={value!r}" for key, value in self._repr_fields().items())
        return f"{type(self).__name__}({fields})"

    def _repr_fields(self) -> dict[str, Any]:
        return {}


def _as_batch(images: Tensor | list[Tensor], op: str = "") -> Tensor | list[Tensor]:
    """Stack a list of equal-size images into one batch; images of different sizes stay a list.

    A ragged result (e.g. ``Resize(int)`` keeps each aspect ratio) has no batch shape: it is
    returned as a list, as it came in.
    """
    if isinstance(images, Tensor):
        return images
    images = list(images)
    if len({tuple(image.shape) for image in images}) != 1:
        return images
    return torch.stack(images)


def _empty_output(transform: Transform, images: Tensor) -> Tensor:
    """The empty batch ``transform`` gives for ``[0, C, H, W]``: its output for one blank image, sliced to 0 rows."""
    blank = torch.zeros((1, *images.shape[1:]), dtype=images.dtype, device=images.device)
    private = torch.Generator(device=images.device).manual_seed(0)  # leaves the caller's generator untouched
    return transform(blank, generator=private)[:0]


def _list_loop(images: Sequence[Tensor], mask: Tensor, op) -> list[Tensor]:
    """Apply ``op`` to the images of a ragged list whose mask is set.

    A per-image loop, only for a list that has not yet met its first geometric op; the mask is
    read on the host (one sync on CUDA).
    """
    return [op(image) if flag else image for image, flag in zip(images, mask.tolist())]  # host read, see above


# ----------------------------------------------------------------------------------------------
# Flips
# ----------------------------------------------------------------------------------------------
class RandomHorizontalFlip(Transform):
    """Mirror each image left-right with probability ``p``, independently per image.

    Args:
        p: probability of a flip.

    Shape:
        ``[B, C, H, W]`` (or a list) -> same.

    Example:
        >>> RandomHorizontalFlip(p=1.0)(torch.arange(4.0).view(1, 1, 1, 4))
        tensor([[[[3., 2., 1., 0.]]]])
    """

    accepts_list = True
    fusion = "flip"
    axis = "horizontal"
    _kernel = staticmethod(F.hflip)
    _dims = (-1,)

    def __init__(self, p: float = 0.5) -> None:
        self.p = _check_probability(p)

    def _make_params(self, info: BatchInfo, generator: torch.Generator | None) -> Params:
        return {"flip": _bernoulli(info, generator, self.p)}

    def apply(self, images: Images, params: Params) -> Tensor | list[Tensor]:
        if isinstance(images, Tensor):
            return self._kernel(images, params["flip"])
        return _list_loop(images, params["flip"], lambda image: image.flip(self._dims))

    def contribute(self, ops: FusedOps, params: Params) -> None:
        ops.flip(self.axis, params["flip"])

    def _repr_fields(self) -> dict[str, Any]:
        return {"p": self.p}


class RandomVerticalFlip(RandomHorizontalFlip):
    """Mirror each image top-bottom with probability ``p``, independently per image.

    Example:
        >>> RandomVerticalFlip(p=1.0)(torch.arange(2.0).view(1, 1, 2, 1)).flatten()
        tensor([1., 0.])
    """

    axis = "vertical"
    _kernel = staticmethod(F.vflip)
    _dims = (-2,)


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

    def rebase(self, params: Params, read: Tensor, regions: Tensor, decoded_sizes: Tensor, mirror: tuple) -> Params:
        # ``read``: the boxes as read from the full images (flips before the crop mirrored); into the
        # region's coordinates, scaled as the decode scaled it (the loader's reduced-decode rule).
        read, regions, decoded = read.double(), regions.to(read.device).double(), decoded_sizes.to(read.device)
        scale = decoded.double() / regions[:, 2:]
        top = torch.floor((read[:, 0] - regions[:, 0]) * scale[:, 0]).clamp(min=0)
        left = torch.floor((read[:, 1] - regions[:, 1]) * scale[:, 1]).clamp(min=0)
        height = torch.clamp(torch.minimum(torch.round(read[:, 2] * scale[:, 0]), decoded[:, 0] - top), min=1)
        width = torch.clamp(torch.minimum(torch.round(read[:, 3] * scale[:, 1]), decoded[:, 1] - left), min=1)
        hflip, vflip = mirror  # back to the params' convention (the crop mirrors them again)
        if hflip is not None:
            left = torch.where(hflip.to(left.device), decoded[:, 1] - left - width, left)
        if vflip is not None:
            top = torch.where(vflip.to(top.device), decoded[:, 0] - top - height, top)
        return {**params, "boxes": torch.stack([top, left, height, width], dim=1).to(torch.int64)}

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
        # torchvision's anchor (round half to even), the crop clipped to the image (the rest is padding)
        regions = []
        for axis, crop in enumerate(self.size):
            extent = sizes[:, axis]
            centred = torch.round((extent - crop).double() / 2).to(torch.int64)
            start = torch.where(extent > crop, centred, torch.zeros_like(extent))
            regions.append((start, torch.clamp(extent, max=crop)))
        (top, height), (left, width) = regions
        return torch.stack([top, left, height, width], 1)

    def _repr_fields(self) -> dict[str, Any]:
        return {"size": self.size}


# ----------------------------------------------------------------------------------------------
# Colour
# ----------------------------------------------------------------------------------------------
class ColorJitter(Transform):
    """Randomly change brightness, contrast, saturation and hue, with a fresh draw per image.

    Ranges as torchvision: a number ``f`` for brightness/contrast/saturation means factors in
    ``[max(0, 1 - f), 1 + f]``, a pair means that range; ``hue`` ``h`` means ``[-h, h]`` turns
    within ``[-0.5, 0.5]``. Brightness, contrast and saturation *multiply*, as in torchvision and
    PIL (Kornia's ``RandomBrightness`` adds; we do not).

    Order: torchvision draws a random order of the four ops per call; gpuaug draws one per image
    (params ``order``, a permutation of 0=brightness, 1=contrast, 2=saturation, 3=hue) and
    applies the ops in that order, clamping (and truncating uint8) after each one exactly as
    torchvision does.

    Inside a ``Compose`` that ends in ``ToDtype``/``Normalize``, the jitter runs instead as one
    fused affine pass (``functional.fused_color_normalize``): brightness, contrast and saturation
    commute when nothing clips, so the order no longer matters, and only the clipping between
    ops is lost. With ``hue_mode="hsv"`` (default) hue is torchvision's HSV rotation and prevents
    that fusion; ``hue_mode="yiq"`` uses a rotation about the grey axis instead (a 3x3 matrix,
    what DALI does): fusible, close to but not equal to HSV.

    Args:
        brightness, contrast, saturation: number or (min, max) factors, >= 0.
        hue: number in [0, 0.5] or (min, max) within [-0.5, 0.5].
        hue_mode: ``"hsv"`` (torchvision) or ``"yiq"`` (linear approximation).

    Shape:
        ``[B, 3, H, W]`` -> same. Params: ``order`` ``[B, 4]`` and one ``[B]`` factor tensor per
        enabled op (``brightness``, ``contrast``, ``saturation``, ``hue``).

    Example:
        >>> ColorJitter(brightness=0.5, hue=0.1)(torch.rand(4, 3, 8, 8)).shape
        torch.Size([4, 3, 8, 8])
    """

    def __init__(
        self,
        brightness: float | Sequence[float] = 0,
        contrast: float | Sequence[float] = 0,
        saturation: float | Sequence[float] = 0,
        hue: float | Sequence[float] = 0,
        *,
        hue_mode: str = "hsv",
    ) -> None:
        self.brightness = _check_jitter(brightness, "brightness", 1.0, (0.0, math.inf))
        self.contrast = _check_jitter(contrast, "contrast", 1.0, (0.0, math.inf))
        self.saturation = _check_jitter(saturation, "saturation", 1.0, (0.0, math.inf))
        self.hue = _check_jitter(hue, "hue", 0.0, (-0.5, 0.5))
        if hue_mode not in ("hsv", "yiq"):
            raise ValueError(f"hue_mode must be 'hsv' or 'yiq', got {hue_mode!r}")
        self.hue_mode = hue_mode

    @property
    def fusible(self) -> bool:
        """Whether every op is affine (no HSV hue), so it can join a fused colour pass."""
        return self.hue is None or self.hue_mode == "yiq"

    @property
    def fusion(self) -> str | None:  # type: ignore[override]
        return "jitter" if self.fusible else None

    def contribute(self, ops: FusedOps, params: Params) -> None:
        ops.jitter(params.get("brightness"), params.get("contrast"), params.get("saturation"), params.get("hue"))

    def _ranges(self) -> dict[str, tuple[float, float] | None]:
        return {"brightness": self.brightness, "contrast": self.contrast, "saturation": self.saturation, "hue": self.hue}

    def _make_params(self, info: BatchInfo, generator: torch.Generator | None) -> Params:
        params = {"order": _uniform(info, generator, 4).argsort(dim=1)}
        for name, bounds in self._ranges().items():
            if bounds is not None:
                low, high = bounds
                params[name] = low + (high - low) * _uniform(info, generator)
        return params

    def apply(self, images: Images, params: Params) -> Tensor:
        F.check_images(images, "ColorJitter", rgb=True)
        if self.hue is not None and self.hue_mode == "yiq":
            jittered = F.fused_color_normalize(
                images, params.get("brightness"), params.get("contrast"), params.get("saturation"), params.get("hue")
            )
            return F.to_dtype(jittered, images.dtype)
        return F.color_jitter(
            images, params.get("brightness"), params.get("contrast"), params.get("saturation"), params.get("hue"), params["order"]
        )

    def _repr_fields(self) -> dict[str, Any]:
        fields: dict[str, Any] = {name: bounds for name, bounds in self._ranges().items() if bounds is not None}
        if self.hue_mode != "hsv":
            fields["hue_mode"] = self.hue_mode
        return fields


class RandomGrayscale(Transform):
    """Turn each image gray (luma in all 3 channels) with probability ``p``, per image.

    Example:
        >>> RandomGrayscale(p=1.0)(torch.rand(2, 3, 4, 4)).std(dim=1).max() < 1e-6
        tensor(True)
    """

    def __init__(self, p: float = 0.1) -> None:
        self.p = _check_probability(p)

    def _make_params(self, info: BatchInfo, generator: torch.Generator | None) -> Params:
        return {"gray": _bernoulli(info, generator, self.p)}

    fusion = "gray"

    def apply(self, images: Images, params: Params) -> Tensor:
        return F.rgb_to_grayscale(images, params["gray"])

    def contribute(self, ops: FusedOps, params: Params) -> None:
        ops.gray(params["gray"])

    def _repr_fields(self) -> dict[str, Any]:
        return {"p": self.p}


# ----------------------------------------------------------------------------------------------
# dtype and normalisation
# ----------------------------------------------------------------------------------------------
class ToDtype(Transform):
    """Convert to ``dtype``; with ``scale`` uint8 [0, 255] maps to float [0, 1] and back.

    Example:
        >>> ToDtype(torch.float32)(torch.full((1, 3, 1, 1), 255, dtype=torch.uint8)).flatten()
        tensor([1., 1., 1.])
    """

    def __init__(self, dtype: torch.dtype = torch.float32, scale: bool = True) -> None:
        if not isinstance(dtype, torch.dtype) or not (dtype.is_floating_point or dtype == torch.uint8):
            raise ValueError(f"dtype must be torch.uint8 or a floating torch dtype, got {dtype!r}")
        self.dtype = dtype
        self.scale = bool(scale)

    def apply(self, images: Images, params: Params) -> Tensor:
        return F.to_dtype(images, self.dtype, self.scale)

    @property
    def fusion(self) -> str | None:  # type: ignore[override]
        return "cast" if self.dtype.is_floating_point and self.scale else None

    def contribute(self, ops: FusedOps, params: Params) -> None:
        ops.cast(self.dtype)

    def _repr_fields(self) -> dict[str, Any]:
        return {"dtype": self.dtype, "scale": self.scale}


class Normalize(Transform):
    """``(image - mean) / std`` per channel. A uint8 batch is first scaled to float32 in [0, 1].

    Example:
        >>> Normalize([0.5], [0.5])(torch.ones(1, 1, 2, 2)).flatten()
        tensor([1., 1., 1., 1.])
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self.mean = self._check(mean, "mean")
        self.std = self._check(std, "std")
        if len(self.mean) != len(self.std):
            raise ValueError(f"mean and std must have the same length, got {len(self.mean)} and {len(self.std)}")
        if any(abs(value) < torch.finfo(torch.float32).tiny for value in self.std):  # 1e-300 is 0 in float32
            raise ValueError(f"std must not contain zero (or values below float32's 1.2e-38), got {self.std}")

    @staticmethod
    def _check(values: Any, name: str) -> tuple[float, ...]:
        if isinstance(values, numbers.Real) and not isinstance(values, bool):
            values = (values,)
        if isinstance(values, Tensor):
            values = values.tolist()  # construction time, not the hot path
        if (
            not isinstance(values, Sequence)
            or isinstance(values, str)
            or not values
            or not all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in values)
        ):
            raise ValueError(f"{name} must be a non-empty sequence of finite numbers, got {values!r}")
        return tuple(_check_finite(v, name) for v in values)

    def apply(self, images: Images, params: Params) -> Tensor:
        channels = images.shape[1]
        if len(self.mean) not in (1, channels):
            raise ValueError(f"Normalize has {len(self.mean)} mean/std values for images with {channels} channels")
        return F.normalize(images, self.mean, self.std)

    fusion = "normalize"

    def contribute(self, ops: FusedOps, params: Params) -> None:
        ops.normalize(self.mean, self.std)

    def _repr_fields(self) -> dict[str, Any]:
        return {"mean": self.mean, "std": self.std}


# ----------------------------------------------------------------------------------------------
# Compose: plans the fused runs from what each transform contributes
# ----------------------------------------------------------------------------------------------
_GEOMETRIC = ("crop", "resize", "window")
_BACKENDS = ("auto", "torch", "triton")


def _role(transforms: Sequence[Transform], index: int) -> str | None:
    return transforms[index].fusion if index < len(transforms) else None


def _color_run(transforms: Sequence[Transform], index: int) -> tuple[int, int]:
    """``(end, tail)`` of ``[jitter (one) | gray | flip]* [cast | normalize (one)]+`` from ``index``."""
    end, jitters = index, 0
    while _role(transforms, end) in ("gray", "flip") or (_role(transforms, end) == "jitter" and jitters == 0):
        jitters += _role(transforms, end) == "jitter"
        end += 1
    tail, normalizes = end, 0
    while _role(transforms, tail) == "cast" or (_role(transforms, tail) == "normalize" and normalizes == 0):
        normalizes += _role(transforms, tail) == "normalize"
        tail += 1
    return end, tail


def _triton():
    """The Triton kernels module, or ``None`` where Triton cannot be imported."""
    global _TRITON_MODULE
    if _TRITON_MODULE is None:
        try:
            from gpuaug import triton_kernels
        except ImportError:  # no triton (e.g. macOS, or a CPU-only install without it)
            triton_kernels = False
        _TRITON_MODULE = triton_kernels
    return _TRITON_MODULE or None


_TRITON_MODULE: Any = None


class Compose(Transform):
    """Apply transforms in order, sampling every transform's per-image params from one generator.

    With ``fuse=True`` (default), runs of transforms execute as one pass, on the same params (so a
    replay gives the same draws either way). Each transform says what it contributes
    (``Transform.fusion`` and ``contribute``, see ``gpuaug.fusion``); two executors run the runs:

    * **torch** (the reference; CPU, MPS, float input, no Triton): flips around a
      ``RandomResizedCrop`` join its resampling (a flip *before* the crop mirrors the box, which is
      exact); a run of ``ColorJitter`` (without HSV hue), ``RandomGrayscale`` and flips that ends
      in ``ToDtype(float)`` and/or ``Normalize`` becomes one affine pass from uint8 to the
      normalised float batch (``functional.fused_color_normalize``; the op-by-op clamps are
      skipped, see its docstring and the measured error in the tests).
    * **triton** (uint8 input on CUDA, when Triton imports): the leading
      ``[flips] crop|resize|centre-crop [centre-crop] [flips] [colour run]`` runs as one fused pass
      of at most 3 kernels whatever the batch size, straight from a ragged ``PackedBatch`` (or
      list, or batch) to the channels-last output (``gpuaug.triton_kernels``); the rest runs on
      torch. Same maths as the torch executor (the tests hold them to float 1e-4 on the colour
      pass, uint8 +-1 on the resampling).

    ``fuse=False`` runs every transform op by op with torchvision's exact semantics.

    Measured (``python -m benchmarks aug``, RandomResizedCrop(224) + flip + ColorJitter(0.4, 0.4,
    0.4) + Normalize on 64 photos at 384x512, 2 CPU cores, 2026-11): fused 1331 img/s, op by op
    697, ``kornia.augmentation.AugmentationSequential`` with the same ops 350 (3.8x slower than
    the fused path, which is why gpuaug calls Kornia's kernels but not its module layer).

    Args:
        transforms: gpuaug transforms (use ``gpuaug.from_torchvision`` for torchvision ones);
            Kornia augmentation modules are wrapped (``gpuaug.kornia_ops``).
        fuse: fuse the runs above.
        backend: ``"auto"`` (Triton for uint8 images on CUDA where it imports, else torch),
            ``"torch"``, or ``"triton"`` (also on CPU tensors under ``TRITON_INTERPRET=1``, for tests).

    Shape:
        ``[B, C, H, W]``, a ``PackedBatch``, or, if the first geometric op is the first transform
        (flips may precede it), a list of ``[C, H_i, W_i]`` -> one batch; a list again where the
        sizes still differ at the end (``Resize(int)`` without a crop). Params: a flat dict keyed
        ``"<index>.<name>"`` (e.g. ``"0.boxes"``, ``"2.brightness"``).

    Example:
        >>> augment = Compose([RandomResizedCrop(64), RandomHorizontalFlip(), ToDtype(torch.float32)])
        >>> augment([torch.rand(3, 80, 90), torch.rand(3, 100, 70)]).shape
        torch.Size([2, 3, 64, 64])
    """

    def __init__(self, transforms: Sequence[Transform], fuse: bool = True, backend: str = "auto") -> None:
        if isinstance(transforms, Transform) or not isinstance(transforms, Sequence):
            raise ValueError("transforms must be a list of gpuaug transforms")
        from gpuaug.kornia_ops import as_transform  # Kornia modules stand in a Compose (a cycle at import time)

        transforms = [as_transform(t) for t in transforms]
        bad = [type(t).__name__ for t in transforms if not isinstance(t, Transform)]
        if bad:
            raise ValueError(
                f"transforms must be gpuaug transforms; got {', '.join(bad)} "
                "(convert torchvision pipelines with gpuaug.from_torchvision)"
            )
        if backend not in _BACKENDS:
            raise ValueError(f"backend must be one of {_BACKENDS}, got {backend!r}")
        if backend == "triton" and _triton() is None:
            raise ValueError("backend='triton' needs the triton package (pip install triton); use backend='auto' or 'torch'")
        self.transforms = list(transforms)
        self.fuse = bool(fuse)
        self.backend = backend
        self._stages = self._plan(0) if self.fuse else [("single", [i]) for i in range(len(self.transforms))]
        self._fused_count = self._plan_fused() if self.fuse and backend != "torch" else 0
        self._after_fused = self._plan(self._fused_count)
        self.accepts_list = bool(self.transforms) and self.transforms[0].accepts_list

    # -- planning ----------------------------------------------------------------------------
    def _plan(self, start: int) -> list[tuple[str, list[int]]]:
        """The torch executor's stages from ``start``: ``crop``, ``color`` or ``single`` runs."""
        stages: list[tuple[str, list[int]]] = []
        transforms, count, index = self.transforms, len(self.transforms), start
        while index < count:
            # [flips] crop [flips]
            end = index
            while _role(transforms, end) == "flip":
                end += 1
            if _role(transforms, end) == "crop":
                end += 1
                while _role(transforms, end) == "flip":
                    end += 1
                stages.append(("crop", list(range(index, end))))
                index = end
                continue
            # [jitter | gray | flips]* then [cast | normalize]+
            end, tail = _color_run(transforms, index)
            if tail > end:
                stages.append(("color", list(range(index, tail))))
                index = tail
            else:
                stages.append(("single", [index]))
                index += 1
        return stages

    def _plan_fused(self) -> int:
        """How many leading transforms the Triton pass covers (0: none).

        ``[flips] (crop | resize | window) [window]* [flips] [colour run]``, where the geometry ends
        in one size for all images; or, without geometry, a colour run alone.
        """
        transforms, index = self.transforms, 0
        while _role(transforms, index) == "flip":
            index += 1
        geometric = _role(transforms, index) in _GEOMETRIC
        if geometric:
            end = index + 1
            while _role(transforms, end) == "window":
                end += 1
            if not transforms[end - 1].fixed_output:
                return 0
            index = end
            while _role(transforms, index) == "flip":
                index += 1
        end, tail = _color_run(transforms, index)
        if tail > end:
            return tail
        return index if geometric else 0

    # -- params ------------------------------------------------------------------------------
    def _make_params(self, info: BatchInfo, generator: torch.Generator | None) -> Params:
        params: Params = {}
        for index, transform in enumerate(self.transforms):
            for name, value in transform._make_params(info, generator).items():
                params[f"{index}.{name}"] = value
            info = transform.output_sizes(info)
        return params

    def output_sizes(self, info: BatchInfo) -> BatchInfo:
        for transform in self.transforms:
            info = transform.output_sizes(info)
        return info

    def _params_of(self, params: Params, index: int) -> Params:
        prefix = f"{index}."
        return {key[len(prefix) :]: value for key, value in params.items() if key.startswith(prefix)}

    # -- execution ---------------------------------------------------------------------------
    def __call__(self, images: Images, params: Params | None = None, generator: torch.Generator | None = None) -> Tensor:
        if isinstance(images, PackedBatch):
            if len(images) == 0:
                raise ValueError("Compose got an empty PackedBatch")
            if params is None:
                params = self.make_params(images, generator)
            return _as_batch(self.apply(images, params))
        return super().__call__(images, params, generator)

    def apply(self, images: Images, params: Params) -> Tensor | list[Tensor]:
        """Apply given params; the Triton pass where it applies (see the class docstring), else torch."""
        if self._fused_count and self._use_triton(images):
            return self._apply_triton(images, params)
        if isinstance(images, PackedBatch):
            images = images.unpack()
        return self._run(images, params, self._stages)

    def _run(self, images: Images, params: Params, stages: list[tuple[str, list[int]]]) -> Tensor | list[Tensor]:
        for kind, indices in stages:
            takes_list = kind == "crop" or (kind == "single" and self.transforms[indices[0]].accepts_list)
            if not isinstance(images, Tensor) and not takes_list:
                images = _as_batch(images)  # one size: one batch; still ragged: image by image below
                if not isinstance(images, Tensor):
                    images = self._per_image(images, params, kind, indices)
                    continue
            images = self._run_stage(images, params, kind, indices)
        return _as_batch(images) if not isinstance(images, Tensor) else images

    def _run_stage(self, images: Images, params: Params, kind: str, indices: list[int]) -> Tensor | list[Tensor]:
        members = [(self.transforms[i], self._params_of(params, i)) for i in indices]
        if kind == "crop":
            return self._apply_crop(images, members)
        if kind == "color":
            return self._apply_color(images, members)
        transform, transform_params = members[0]
        F.check_images(images, type(transform).__name__, allow_list=transform.accepts_list)
        return transform.apply(images, transform_params)

    def _per_image(self, images: list[Tensor], params: Params, kind: str, indices: list[int]) -> list[Tensor]:
        """A stage that needs a batch, on images that still differ in size (after ``Resize(int)``): one image at a time."""
        own = {key: value for key, value in params.items() if int(key.split(".", 1)[0]) in indices}
        return [
            self._run_stage(image.unsqueeze(0), {key: value[row : row + 1] for key, value in own.items()}, kind, indices)[0]
            for row, image in enumerate(images)
        ]

    @staticmethod
    def _apply_crop(images: Images, members: list[tuple[Transform, Params]]) -> Tensor:
        ops = FusedOps(BatchInfo.of(images).sizes)
        for transform, transform_params in members:
            transform.contribute(ops, transform_params)
        boxes = ops.boxes
        if ops.hflips_before or ops.vflips_before:
            # A flip before the crop equals a crop of the mirrored box, flipped after: exact.
            heights, widths = BatchInfo.of(images).size_tensors()
            boxes = _mirror(boxes, heights, widths, combine(ops.hflips_before, "xor"), combine(ops.vflips_before, "xor"))
        hflip, vflip = combine(ops.hflips, "xor"), combine(ops.vflips, "xor")
        return F.resized_crop(images, boxes, ops.size, hflip, vflip, antialias=ops.antialias)

    @staticmethod
    def _apply_color(images: Images, members: list[tuple[Transform, Params]]) -> Tensor:
        F.check_images(images, "Compose (colour and normalisation)", rgb=True)
        ops = FusedOps(())
        for transform, transform_params in members:
            if transform.fusion == "flip":  # exact on a batch, here
                images = transform.apply(images, transform_params)
            else:
                transform.contribute(ops, transform_params)
        return F.fused_color_normalize(images, **ops.color_arguments(images.dtype))

    # -- the Triton pass ----------------------------------------------------------------------
    def _use_triton(self, images: Images) -> bool:
        if self.backend == "torch":
            return False
        if self.backend == "auto":  # CPU runs (the loader's workers) leave here, never importing Triton
            first = images if isinstance(images, (Tensor, PackedBatch)) else images[0] if len(images) else None
            if not isinstance(first, (Tensor, PackedBatch)) or first.device.type != "cuda":
                return False
        if isinstance(images, PackedBatch):
            device, uint8, rgb = images.device, True, True
        elif isinstance(images, Tensor):
            device, uint8, rgb = images.device, images.dtype == torch.uint8, images.ndim == 4 and images.shape[1] == 3
        elif len(images) and isinstance(images[0], Tensor):
            first = images[0]
            device, uint8 = first.device, all(image.dtype == torch.uint8 for image in images)
            rgb = all(image.ndim == 3 and image.shape[0] == 3 for image in images)
        else:
            return False
        if not (uint8 and rgb):  # the kernels read uint8 RGB; anything else takes the torch path
            return False
        if self.backend == "auto":
            return _triton() is not None
        if device.type != "cuda" and not _triton().INTERPRETING:
            raise RuntimeError(
                "backend='triton' on CPU tensors needs Triton's interpreter: set TRITON_INTERPRET=1 before importing gpuaug"
            )
        return True

    def _apply_triton(self, images: Images, params: Params) -> Tensor | list[Tensor]:
        if isinstance(images, Tensor):  # the batch itself is the buffer: no copy
            _check_pixels(images, "Compose")
            count, _, height, width = images.shape
            data, sizes = images, ((height, width),) * count
            offsets = torch.arange(count, dtype=torch.int64) * images.stride(0)
            strides = torch.tensor(images.stride()[1:], dtype=torch.int64).expand(count, 3)
        else:
            if not isinstance(images, PackedBatch):
                F.check_images(images, "Compose", allow_list=True, rgb=True)
                _check_pixels(images, "Compose")
                images = PackedBatch.from_images(images)
            data, offsets, strides, sizes = images.data, images.offsets, images.strides, images.sizes
        if len(set(sizes)) > 1 and not any(t.fusion in _GEOMETRIC for t in self.transforms[: self._fused_count]):
            return self._run(images.unpack(), params, self._stages)  # ragged and no geometry: image by image, as torch
        ops = FusedOps(tuple(sizes))
        for index in range(self._fused_count):
            self.transforms[index].contribute(ops, self._params_of(params, index))
        out = _triton().fused(data, offsets, strides, ops)
        return self._run(out, params, self._after_fused)

    # -- geometry: what the first geometric op reads (the loader decodes only that) -------------
    def first_geometric(self) -> int | None:
        """Position of the first geometric op (crop, resize, centre crop) if only flips come before it, else ``None``.

        Example:
            >>> Compose([RandomHorizontalFlip(), RandomResizedCrop(8)]).first_geometric()
            1
        """
        for position, transform in enumerate(self.transforms):
            if transform.fusion in _GEOMETRIC:
                return position
            if transform.fusion != "flip":
                return None
        return None

    def _before_first(self, params: Params, position: int) -> tuple[Tensor | None, Tensor | None]:
        """The XOR of the horizontal and of the vertical flips before ``position`` (``None``: no such flip)."""
        ops = FusedOps(())
        for index in range(position):
            self.transforms[index].contribute(ops, self._params_of(params, index))
        return combine(ops.hflips_before, "xor"), combine(ops.vflips_before, "xor")

    def source_regions(self, params: Params, sizes: Tensor) -> Tensor:
        """The region of each full-size source image that the first geometric op reads.

        ``RandomResizedCrop``: its boxes (mirrored where a flip comes first); ``Resize``: the whole
        image; ``CenterCrop``: the crop clipped to the image. The whole image without a first
        geometric op.

        Args:
            params: from ``make_params`` on the full-size images.
            sizes: ``[B, 2]`` ``(height, width)`` of the full images.

        Shape:
            ``[B, 4]`` int64 ``(top, left, height, width)``, on ``sizes``' device.

        Example:
            >>> regions = Compose([CenterCrop(4)]).source_regions({}, torch.tensor([[10, 3]]))
            >>> regions.tolist()  # a CPU example: no device sync
            [[3, 0, 4, 3]]
        """
        sizes = torch.as_tensor(sizes, dtype=torch.int64).view(-1, 2)
        position = self.first_geometric()
        if position is None:
            return Transform.source_region(self, {}, sizes)
        regions = self.transforms[position].source_region(self._params_of(params, position), sizes)
        hflip, vflip = self._before_first(params, position)
        return _mirror(regions, sizes[:, 0], sizes[:, 1], hflip, vflip)

    def reduction_limit(self, params: Params, sizes: Tensor) -> Tensor:
        """How much the first geometric op downscales each image (>= 1): how much smaller its decode may be.

        Shape:
            sizes ``[B, 2]`` -> ``[B]`` float64.

        Example:
            >>> limits = Compose([Resize(100)]).reduction_limit({}, torch.tensor([[400, 800]]))
            >>> limits.tolist()  # a CPU example: no device sync
            [4.0]
        """
        sizes = torch.as_tensor(sizes, dtype=torch.int64).view(-1, 2)
        position = self.first_geometric()
        if position is None:
            return torch.ones(sizes.shape[0], dtype=torch.float64, device=sizes.device)
        limit = self.transforms[position].reduction_limit(self._params_of(params, position), sizes)
        return limit.clamp(min=1.0)

    def rebase(self, params: Params, regions: Tensor, decoded_sizes: Tensor, sizes: Tensor | None = None) -> Params:
        """Params for inputs where image ``i`` is ``regions[i]`` of the full image, decoded at ``decoded_sizes[i]``.

        A whole-image region covers a reduced-scale decode (the boxes scale with it); the region
        ``source_regions`` gave covers a region decode (the box becomes the whole decoded image).
        Only a first ``RandomResizedCrop`` changes; other params are returned as they are.

        Args:
            params: from ``make_params`` on the full-size images.
            regions: ``[B, 4]`` ``(top, left, height, width)`` decoded of each full image.
            decoded_sizes: ``[B, 2]`` size each region was decoded at.
            sizes: ``[B, 2]`` full image sizes; needed only when a flip precedes the crop and a
                region is neither the whole image nor ``source_regions``' box.

        Example:
            >>> compose = Compose([RandomResizedCrop(8)])
            >>> params = {"0.boxes": torch.tensor([[10, 20, 40, 60]])}
            >>> rebased = compose.rebase(params, torch.tensor([[0, 0, 100, 200]]), torch.tensor([[50, 100]]))
            >>> rebased["0.boxes"].tolist()  # a CPU example: no device sync
            [[5, 10, 20, 30]]
        """
        position = self.first_geometric()
        if position is None:
            return params
        transform, own = self.transforms[position], self._params_of(params, position)
        regions = torch.as_tensor(regions, dtype=torch.int64).view(-1, 4)
        decoded_sizes = torch.as_tensor(decoded_sizes, dtype=torch.int64).view(-1, 2)
        hflip, vflip = self._before_first(params, position)
        read = own.get("boxes")
        if read is not None and (hflip is not None or vflip is not None):
            read = read.to(regions.device, torch.int64)
            if sizes is None:  # a region is the whole image (it starts at 0) or exactly the read box
                same = (read[:, 2:] == regions[:, 2:]).all(1, keepdim=True)
                sizes = torch.where(same, regions[:, :2] + read[:, :2] + read[:, 2:], regions[:, :2] + regions[:, 2:])
            sizes = torch.as_tensor(sizes, dtype=torch.int64).view(-1, 2).to(regions.device)
            read = _mirror(read, sizes[:, 0], sizes[:, 1], hflip, vflip)
        elif read is not None:
            read = read.to(regions.device, torch.int64)
        rebased = transform.rebase(own, read, regions, decoded_sizes, (hflip, vflip))
        return {**params, **{f"{position}.{name}": value for name, value in rebased.items()}}

    def __repr__(self) -> str:
        lines = ",\n".join(f"    {transform!r}" for transform in self.transforms)
        suffix = "" if self.fuse else ", fuse=False"
        if self.backend != "auto":
            suffix += f", backend={self.backend!r}"
        return f"Compose([\n{lines}\n]{suffix})"


def _mirror(boxes: Tensor, heights: Tensor, widths: Tensor, hflip: Tensor | None, vflip: Tensor | None) -> Tensor:
    """``[B, 4]`` boxes mirrored inside their images where a flip mask is set."""
    top, left, height, width = boxes.unbind(1)
    if hflip is not None:
        left = torch.where(hflip.to(left.device), widths.to(left.device) - left - width, left)
    if vflip is not None:
        top = torch.where(vflip.to(top.device), heights.to(top.device) - top - height, top)
    return torch.stack([top, left, height, width], dim=1)
