"""Automatic augmentation policies, per image: TrivialAugmentWide, RandAugment, AutoAugment (ImageNet).

torchvision v2's arguments, defaults, op sets, magnitude bins and signs, but every image draws its own
op(s), magnitude bin and sign (torchvision draws once per call, so a batched call gives the whole
batch one op). Each op step of the policy is one call of :func:`gpuaug.functional.policy.auto_augment_ops`
on the whole batch (one per-sample affine resampling for the geometric ops, a few batched passes for
the colour ops), so the cost does not depend on the mix of ops.

Example:
    >>> images = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8)
    >>> augment = TrivialAugmentWide()
    >>> params = augment.make_params(images, torch.Generator().manual_seed(0))
    >>> sorted(params), params["op"].shape
    (['bin', 'op', 'sign'], torch.Size([16, 1]))
    >>> torch.equal(augment(images, params=params), augment(images, params=params))
    True
"""

from __future__ import annotations

import functools
import numbers
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from gpuaug import functional as F
from gpuaug.functional import policy as P
from gpuaug.transforms.base import BatchInfo, Images, Params, Transform, _check_finite, _uniform

__all__ = ["AutoAugment", "RandAugment", "TrivialAugmentWide"]

SIGNED = (P.SHEAR_X, P.SHEAR_Y, P.TRANSLATE_X, P.TRANSLATE_Y, P.ROTATE, P.BRIGHTNESS, P.COLOR, P.CONTRAST, P.SHARPNESS)
"""Op codes whose magnitude gets a random sign (torchvision's ``signed`` flag)."""

RAND_AUGMENT_OPS = tuple(range(P.INVERT))
"""TrivialAugmentWide's and RandAugment's op set, in torchvision's order: Identity .. Equalize (codes 0..13)."""

AUTO_AUGMENT_IMAGENET = (
    ((P.POSTERIZE, 0.4, 8), (P.ROTATE, 0.6, 9)),
    ((P.SOLARIZE, 0.6, 5), (P.AUTOCONTRAST, 0.6, None)),
    ((P.EQUALIZE, 0.8, None), (P.EQUALIZE, 0.6, None)),
    ((P.POSTERIZE, 0.6, 7), (P.POSTERIZE, 0.6, 6)),
    ((P.EQUALIZE, 0.4, None), (P.SOLARIZE, 0.2, 4)),
    ((P.EQUALIZE, 0.4, None), (P.ROTATE, 0.8, 8)),
    ((P.SOLARIZE, 0.6, 3), (P.EQUALIZE, 0.6, None)),
    ((P.POSTERIZE, 0.8, 5), (P.EQUALIZE, 1.0, None)),
    ((P.ROTATE, 0.2, 3), (P.SOLARIZE, 0.6, 8)),
    ((P.EQUALIZE, 0.6, None), (P.POSTERIZE, 0.4, 6)),
    ((P.ROTATE, 0.8, 8), (P.COLOR, 0.4, 0)),
    ((P.ROTATE, 0.4, 9), (P.EQUALIZE, 0.6, None)),
    ((P.EQUALIZE, 0.0, None), (P.EQUALIZE, 0.8, None)),
    ((P.INVERT, 0.6, None), (P.EQUALIZE, 1.0, None)),
    ((P.COLOR, 0.6, 4), (P.CONTRAST, 1.0, 8)),
    ((P.ROTATE, 0.8, 8), (P.COLOR, 1.0, 2)),
    ((P.COLOR, 0.8, 8), (P.SOLARIZE, 0.8, 7)),
    ((P.SHARPNESS, 0.4, 7), (P.INVERT, 0.6, None)),
    ((P.SHEAR_X, 0.6, 5), (P.EQUALIZE, 1.0, None)),
    ((P.COLOR, 0.4, 0), (P.EQUALIZE, 0.6, None)),
    ((P.EQUALIZE, 0.4, None), (P.SOLARIZE, 0.2, 4)),
    ((P.SOLARIZE, 0.6, 5), (P.AUTOCONTRAST, 0.6, None)),
    ((P.INVERT, 0.6, None), (P.EQUALIZE, 1.0, None)),
    ((P.COLOR, 0.6, 4), (P.CONTRAST, 1.0, 8)),
    ((P.EQUALIZE, 0.8, None), (P.EQUALIZE, 0.6, None)),
)
"""torchvision's ``AutoAugmentPolicy.IMAGENET``: 25 sub-policies of two ``(op, probability, magnitude bin)``."""


@functools.lru_cache(maxsize=64)
def magnitude_table(wide: bool, num_bins: int, height: int, width: int) -> Tensor:
    """``[15, num_bins]`` float64: the magnitude of every (op code, bin), computed as torchvision's
    ``_AUGMENTATION_SPACE`` lambdas (float32 ``linspace``) for an image of ``height`` x ``width``
    (``wide``: TrivialAugmentWide's space; otherwise RandAugment's and AutoAugment's). Rows of ops
    without a magnitude are 0.

    Example:
        >>> magnitude_table(True, 31, 32, 32)[P.ROTATE, -1].item()
        135.0
    """
    table = torch.zeros(len(P.OP_NAMES), num_bins, dtype=torch.float64)
    shear, colour, rotate = (0.99, 0.99, 135.0) if wide else (0.3, 0.9, 30.0)
    translate_x, translate_y = (32.0, 32.0) if wide else (150.0 / 331.0 * width, 150.0 / 331.0 * height)
    rows = {
        P.SHEAR_X: torch.linspace(0.0, shear, num_bins),
        P.SHEAR_Y: torch.linspace(0.0, shear, num_bins),
        P.TRANSLATE_X: torch.linspace(0.0, translate_x, num_bins),
        P.TRANSLATE_Y: torch.linspace(0.0, translate_y, num_bins),
        P.ROTATE: torch.linspace(0.0, rotate, num_bins),
        P.POSTERIZE: (8 - (torch.arange(num_bins) / ((num_bins - 1) / (6 if wide else 4)))).round().int(),
        P.SOLARIZE: torch.linspace(1.0, 0.0, num_bins),
    }
    rows.update({op: torch.linspace(0.0, colour, num_bins) for op in (P.BRIGHTNESS, P.COLOR, P.CONTRAST, P.SHARPNESS)})
    for op, values in rows.items():
        table[op] = values.to(torch.float64)
    return table


@functools.lru_cache(maxsize=8)
def _imagenet_tables(device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """``AUTO_AUGMENT_IMAGENET`` as ``[25, 2]`` op codes, probabilities and magnitude bins on ``device``, made
    once per device (a host copy per batch waits for the device's queued work)."""
    table = [[(op, p, 0 if level is None else level) for op, p, level in pair] for pair in AUTO_AUGMENT_IMAGENET]
    ops = torch.tensor([[op for op, _, _ in pair] for pair in table], dtype=torch.int64)
    probabilities = torch.tensor([[p for _, p, _ in pair] for pair in table], dtype=torch.float64)
    bins = torch.tensor([[level for _, _, level in pair] for pair in table], dtype=torch.int64)
    return ops.to(device), probabilities.to(device), bins.to(device)


@functools.lru_cache(maxsize=64)
def _device_tables(wide: bool, num_bins: int, height: int, width: int, device: torch.device) -> tuple[Tensor, Tensor]:
    signed = torch.zeros(len(P.OP_NAMES), dtype=torch.bool)
    signed[list(SIGNED)] = True
    return magnitude_table(wide, num_bins, height, width).to(device), signed.to(device)


def _check_interpolation(interpolation: Any) -> str:
    """``"nearest"`` or ``"bilinear"`` from a string or an ``InterpolationMode`` (anything with that ``value``)."""
    value = getattr(interpolation, "value", interpolation)
    if not isinstance(value, str) or value.lower() not in ("nearest", "bilinear"):
        raise ValueError(
            f"interpolation must be 'nearest' or 'bilinear' (or InterpolationMode.NEAREST/BILINEAR), got {interpolation!r}"
        )
    return value.lower()


def _check_fill(fill: Any) -> tuple[float, ...] | None:
    if fill is None:
        return None
    if isinstance(fill, numbers.Real) and not isinstance(fill, bool):
        return (_check_finite(fill, "fill"),)
    numbers_only = isinstance(fill, Sequence) and all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in fill)
    if numbers_only and not isinstance(fill, str) and len(fill) in (1, 3):
        return tuple(_check_finite(value, "fill") for value in fill)
    raise ValueError(f"fill must be None, a number or a sequence of 1 or 3 numbers, got {fill!r}")


def _check_int(value: Any, name: str, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low or (high is not None and value > high):
        bound = f"in [{low}, {high}]" if high is not None else f">= {low}"
        raise ValueError(f"{name} must be an integer {bound}, got {value!r}")
    return int(value)


def _choice(info: BatchInfo, generator: torch.Generator | None, count: int, *shape: int) -> Tensor:
    """Uniform integers in ``[0, count)`` of shape ``[B, *shape]`` (int64, on the batch's device)."""
    return (_uniform(info, generator, *shape, dtype=torch.float64) * count).to(torch.int64).clamp_(max=count - 1)


class _AutoAugmentBase(Transform):
    """Shared by the policies: arguments ``interpolation`` and ``fill``, and ``apply`` over the op steps.

    A subclass draws its params and says, in ``_steps``, which op code, magnitude bin and sign every
    image uses at every step (``[B, K]`` each).
    """

    _wide = False

    def __init__(self, interpolation: Any = "nearest", fill: Any = None) -> None:
        self.interpolation = _check_interpolation(interpolation)
        self.fill = _check_fill(fill)

    @property
    def num_bins(self) -> int:
        return 10

    def _steps(self, params: Params) -> tuple[Tensor, Tensor, Tensor]:
        raise NotImplementedError

    def apply(self, images: Images, params: Params) -> Tensor:
        name = type(self).__name__
        F.check_images(images, name)
        if images.shape[1] not in (1, 3):
            raise ValueError(f"{name} expects images with 1 or 3 channels, got {images.shape[1]}")
        if self.fill is not None and len(self.fill) not in (1, images.shape[1]):
            raise ValueError(f"{name}: fill has {len(self.fill)} values for images with {images.shape[1]} channels")
        ops, bins, signs = (value.to(images.device, non_blocking=True) for value in self._steps(params))
        table, signed = _device_tables(self._wide, self.num_bins, images.shape[-2], images.shape[-1], images.device)
        out = images
        for step in range(ops.shape[1]):  # the policy's op steps (1, num_ops or 2), not samples
            op = ops[:, step]
            magnitude = table[op, bins[:, step]]
            magnitude = torch.where(signs[:, step] & signed[op], -magnitude, magnitude)
            out = P.auto_augment_ops(out, op, magnitude, self.interpolation, self.fill)
        return out if out is not images else images.clone()

    def _repr_fields(self) -> dict[str, Any]:
        fields: dict[str, Any] = {"interpolation": self.interpolation}
        if self.fill is not None:
            fields["fill"] = self.fill
        return fields


class TrivialAugmentWide(_AutoAugmentBase):
    """torchvision's TrivialAugmentWide, one draw per image: an op of 14 (Identity .. Equalize), a
    magnitude bin of ``num_magnitude_bins`` and a sign, all uniform.

    Args:
        num_magnitude_bins: number of magnitude bins (>= 2), default 31.
        interpolation: ``"nearest"`` (default) or ``"bilinear"`` for the geometric ops.
        fill: value(s) for the area a geometric op uncovers (``None``: 0), in the images' range.

    Shape:
        ``[B, C, H, W]`` uint8 or float, C in (1, 3) -> same. Params ``op``, ``bin`` ``[B, 1]`` int64
        (``op`` is a code of ``gpuaug.functional.policy``), ``sign`` ``[B, 1]`` bool (true: negated).

    Example:
        >>> TrivialAugmentWide()(torch.rand(4, 3, 16, 16)).shape
        torch.Size([4, 3, 16, 16])
    """

    _wide = True

    def __init__(self, num_magnitude_bins: int = 31, interpolation: Any = "nearest", fill: Any = None) -> None:
        super().__init__(interpolation, fill)
        self.num_magnitude_bins = _check_int(num_magnitude_bins, "num_magnitude_bins", 2)

    @property
    def num_bins(self) -> int:
        return self.num_magnitude_bins

    def _make_params(self, info: BatchInfo, generator: torch.Generator | None) -> Params:
        return {
            "op": _choice(info, generator, len(RAND_AUGMENT_OPS), 1),
            "bin": _choice(info, generator, self.num_magnitude_bins, 1),
            "sign": _uniform(info, generator, 1) < 0.5,
        }

    def _steps(self, params: Params) -> tuple[Tensor, Tensor, Tensor]:
        return params["op"], params["bin"], params["sign"]

    def _repr_fields(self) -> dict[str, Any]:
        return {"num_magnitude_bins": self.num_magnitude_bins, **super()._repr_fields()}


class RandAugment(_AutoAugmentBase):
    """torchvision's RandAugment, per image: ``num_ops`` ops in a row, each uniform among the 14 with
    its own sign, all at bin ``magnitude`` of ``num_magnitude_bins``.

    Args:
        num_ops: ops per image (>= 0), default 2.
        magnitude: the bin, in ``[0, num_magnitude_bins)``, default 9.
        num_magnitude_bins: default 31 (>= 2).
        interpolation, fill: as ``TrivialAugmentWide``.

    Shape:
        ``[B, C, H, W]`` -> same. Params ``op`` ``[B, num_ops]`` int64 codes, ``sign`` ``[B, num_ops]`` bool.

    Example:
        >>> RandAugment(num_ops=2, magnitude=9)(torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8)).dtype
        torch.uint8
    """

    def __init__(
        self, num_ops: int = 2, magnitude: int = 9, num_magnitude_bins: int = 31, interpolation: Any = "nearest", fill: Any = None
    ) -> None:
        super().__init__(interpolation, fill)
        self.num_ops = _check_int(num_ops, "num_ops", 0)
        self.num_magnitude_bins = _check_int(num_magnitude_bins, "num_magnitude_bins", 2)
        self.magnitude = _check_int(magnitude, "magnitude", 0, self.num_magnitude_bins - 1)

    @property
    def num_bins(self) -> int:
        return self.num_magnitude_bins

    def _make_params(self, info: BatchInfo, generator: torch.Generator | None) -> Params:
        return {
            "op": _choice(info, generator, len(RAND_AUGMENT_OPS), self.num_ops),
            "sign": _uniform(info, generator, self.num_ops) < 0.5,
        }

    def _steps(self, params: Params) -> tuple[Tensor, Tensor, Tensor]:
        return params["op"], torch.full_like(params["op"], self.magnitude), params["sign"]

    def _repr_fields(self) -> dict[str, Any]:
        fields = {"num_ops": self.num_ops, "magnitude": self.magnitude, "num_magnitude_bins": self.num_magnitude_bins}
        return {**fields, **super()._repr_fields()}


class AutoAugment(_AutoAugmentBase):
    """torchvision's AutoAugment with the ImageNet policy, per image: a sub-policy of 25, then each of its
    two ops with its probability (and a sign for signed ops), magnitude bins of 10.

    Args:
        policy: ``"imagenet"`` (or torchvision's ``AutoAugmentPolicy.IMAGENET``); CIFAR10 and SVHN are not implemented.
        interpolation, fill: as ``TrivialAugmentWide``.

    Shape:
        ``[B, C, H, W]`` -> same. Params ``policy`` ``[B]`` int64 (index into ``AUTO_AUGMENT_IMAGENET``),
        ``apply`` and ``sign`` ``[B, 2]`` bool.

    Example:
        >>> AutoAugment()(torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8)).shape
        torch.Size([4, 3, 16, 16])
    """

    def __init__(self, policy: Any = "imagenet", interpolation: Any = "nearest", fill: Any = None) -> None:
        super().__init__(interpolation, fill)
        name = getattr(policy, "value", policy)
        if not isinstance(name, str) or name.lower() != "imagenet":
            raise ValueError(
                f"policy must be 'imagenet' (AutoAugmentPolicy.IMAGENET); CIFAR10 and SVHN are not implemented, got {policy!r}"
            )
        self.policy = "imagenet"

    def _make_params(self, info: BatchInfo, generator: torch.Generator | None) -> Params:
        policy = _choice(info, generator, len(AUTO_AUGMENT_IMAGENET))
        probabilities = _imagenet_tables(info.device)[1][policy]
        return {
            "policy": policy,
            "apply": _uniform(info, generator, 2, dtype=torch.float64) < probabilities,
            "sign": _uniform(info, generator, 2) < 0.5,
        }

    def _steps(self, params: Params) -> tuple[Tensor, Tensor, Tensor]:
        policy = params["policy"]
        table_ops, _, table_bins = _imagenet_tables(policy.device)
        ops, bins = table_ops[policy], table_bins[policy]
        return torch.where(params["apply"], ops, torch.full_like(ops, P.IDENTITY)), bins, params["sign"]

    def _repr_fields(self) -> dict[str, Any]:
        return {"policy": self.policy, **super()._repr_fields()}
