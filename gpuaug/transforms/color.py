"""Colour transforms: ColorJitter, RandomGrayscale, ToDtype, Normalize.

Example:
    >>> Normalize([0.5], [0.5])(torch.ones(1, 1, 2, 2)).flatten()
    tensor([1., 1., 1., 1.])
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from gpuaug import functional as F
from gpuaug.fusion.ops import FusedOps
from gpuaug.transforms.base import (
    BatchInfo,
    Images,
    Params,
    Transform,
    _bernoulli,
    _check_finite,
    _check_jitter,
    _check_probability,
    _uniform,
)


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

    def describe(self) -> dict[str, Any]:
        return {**self._ranges(), "hue_mode": self.hue_mode}

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

    def describe(self) -> dict[str, Any]:
        return {"dtype": self.dtype, "scale": self.scale}

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

    def describe(self) -> dict[str, Any]:
        return {"mean": self.mean, "std": self.std}

    def _repr_fields(self) -> dict[str, Any]:
        return {"mean": self.mean, "std": self.std}


# ----------------------------------------------------------------------------------------------
