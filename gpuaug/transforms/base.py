"""The transform contract: ``Transform``, ``BatchInfo``, params, and the argument checks.

Each transform samples one parameter set *per image* in ``make_params`` (on the images' device,
from an optional ``torch.Generator``) and hands it to the pure kernels of
:mod:`gpuaug.functional` in ``apply``. Calling ``t(images)`` does both; ``t(images, params=p)``
replays a draw exactly.

Example:
    >>> BatchInfo.of(torch.zeros(2, 3, 4, 5)).sizes
    ((4, 5), (4, 5))
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from gpuaug import functional as F
from gpuaug.fusion.ops import FusedOps
from gpuaug.io.packed import PackedBatch

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
    def of(images: Images | BatchInfo) -> BatchInfo:
        """The batch's description (a ``BatchInfo`` is its own)."""
        if isinstance(images, BatchInfo):
            return images
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


def _uniform(
    info: BatchInfo, generator: torch.Generator | None, *shape: int, dtype=torch.float32, sample: Callable = torch.rand
) -> Tensor:
    """``U[0, 1)`` (or another ``sample``r, e.g. ``torch.randn``) of shape ``[B, *shape]`` on the batch's device.

    Sampled with ``generator`` on its own device; a CPU generator for CUDA images samples on the
    CPU and copies (non-blocking), so one seeded CPU generator still reproduces a run.
    """
    device = info.device if generator is None else generator.device
    values = sample((info.batch, *shape), generator=generator, device=device, dtype=dtype)
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


def _check_pair(value: Any, name: str) -> tuple[float, float]:
    """A ``(min, max)`` pair of finite numbers, or a ValueError naming ``name``."""
    if (
        not isinstance(value, Sequence)
        or isinstance(value, str)
        or len(value) != 2
        or not all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in value)
    ):
        raise ValueError(f"{name} must be a (min, max) pair of numbers, got {value!r}")
    return _check_finite(value[0], f"{name} min"), _check_finite(value[1], f"{name} max")


def _check_range(value: Any, name: str, *, low_bound: float, inclusive: bool) -> tuple[float, float]:
    low, high = _check_pair(value, name)
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
    batch_coupled = False
    """Whether an image's result depends on the rest of the call (a Kornia module seeded per call): such a
    pipeline is applied to whole batches only (the CPU loader's workers do not split it into groups)."""

    def __call__(self, images: Images, params: Params | None = None, generator: torch.Generator | None = None) -> Tensor:
        single = isinstance(images, Tensor) and images.ndim == 3
        batch = images.unsqueeze(0) if single else images
        F.check_images(batch, type(self).__name__, allow_list=self.accepts_list)
        _check_pixels(batch, type(self).__name__)
        if isinstance(batch, Tensor) and batch.shape[0] == 0:
            return _empty_output(self, batch)
        if params is None:
            params = self.make_params(batch, generator)
        else:
            self.check_params(BatchInfo.of(batch), params)
        out = F.as_batch(self.apply(batch, params))
        return out[0] if single else out

    def check_params(self, info: BatchInfo, params: Params) -> None:
        """A ``ValueError`` when given ``params`` do not fit the batch (a replay on other images)."""
        for name, value in params.items():
            rows = value.shape[0] if isinstance(value, Tensor) and value.ndim else None
            if isinstance(value, Tensor) and rows != info.batch:
                raise ValueError(
                    f"{type(self).__name__}: params[{name!r}] were drawn for {rows} images, not this batch of {info.batch}; "
                    "replay params on the images they were drawn for, or draw new ones (params=None)"
                )

    def make_params(self, images: Images, generator: torch.Generator | None = None) -> Params:
        """Per-image parameters (``[B, ...]`` tensors on the images' device) for ``apply``.

        ``images`` may be a ``BatchInfo`` instead: sizes are all it needs (the loader's workers draw
        from the headers, before decoding)."""
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

    def rebase(self, params: Params, to_decoded: Callable[[Tensor], Tensor]) -> Params:
        """Params for an input that is a region or a reduced decode of the full image: a first geometric
        op maps each box it drew with ``to_decoded`` (``[B, 4]`` boxes in, ``[B, 4]`` out; see
        ``gpuaug.loader.regions``). Unchanged by default (an op without boxes reads the image it gets)."""
        return params

    def describe(self) -> dict[str, Any] | None:
        """The transform's static arguments, for an executor that draws its own randomness (DALI):
        read with ``fusion`` (the role says what the fields mean). ``None``: no such description, so
        such an executor leaves the transform to gpuaug."""
        return None

    def __repr__(self) -> str:
        fields = ", ".join(f"{key}={value!r}" for key, value in self._repr_fields().items())
        return f"{type(self).__name__}({fields})"

    def _repr_fields(self) -> dict[str, Any]:
        return {}


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
