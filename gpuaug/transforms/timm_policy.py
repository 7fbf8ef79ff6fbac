"""timm's RandAugment, per image: ``TimmRandAugment`` (what timm's ``rand-m9-mstd0.5-inc1`` strings build).

timm's ``rand_augment_transform`` gives each PIL image ``num_layers`` ops drawn from its op list
(uniformly with replacement; the ``"weights"`` set: by weight, without replacement). Each op is
applied with probability ``prob`` at a magnitude level drawn for it (``magnitude``; Normal(magnitude,
magnitude_std), or Uniform(0, magnitude) when ``magnitude_std`` is infinite; clipped to
``[0, magnitude_max]``), turned into the op's argument by timm's level functions (a random sign for
the ops timm negates), and resampled with a filter drawn among ``interpolation``. Here every image
of a batch draws all of that for itself; each op step is one call of
:func:`gpuaug.functional.timm_ops.timm_ops` on the whole batch (PIL's geometry, torchvision's colour
kernels). :func:`gpuaug.from_timm` builds one from timm's string.

Example:
    >>> augment = TimmRandAugment(magnitude=9, magnitude_std=0.5, increasing=True)
    >>> params = augment.make_params(torch.zeros(16, 3, 32, 32), torch.Generator().manual_seed(0))
    >>> sorted(params), params["op"].shape
    (['apply', 'level', 'op', 'resample', 'sign'], torch.Size([16, 2]))
"""

from __future__ import annotations

import functools
import math
import numbers
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from gpuaug import functional as F
from gpuaug.functional import policy as P
from gpuaug.functional import timm_ops as TO
from gpuaug.transforms.base import BatchInfo, Images, Params, Transform, _check_finite, _check_probability, _uniform
from gpuaug.transforms.policies import _check_int, _choice

__all__ = ["TimmRandAugment"]

RAND_TRANSFORMS = (
    "AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize", "SolarizeAdd", "Color", "Contrast",
    "Brightness", "Sharpness", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel",
)  # fmt: skip
"""timm's ``_RAND_TRANSFORMS`` (``inc0``), in its order."""
RAND_INCREASING_TRANSFORMS = (
    "AutoContrast", "Equalize", "Invert", "Rotate", "PosterizeIncreasing", "SolarizeIncreasing", "SolarizeAdd",
    "ColorIncreasing", "ContrastIncreasing", "BrightnessIncreasing", "SharpnessIncreasing", "ShearX", "ShearY",
    "TranslateXRel", "TranslateYRel",
)  # fmt: skip
"""timm's ``_RAND_INCREASING_TRANSFORMS`` (``inc1``), in its order."""
RAND_WEIGHTED_0 = {
    "Rotate": 3, "ShearX": 2, "ShearY": 2, "TranslateXRel": 1, "TranslateYRel": 1, "ColorIncreasing": 0.25,
    "SharpnessIncreasing": 0.25, "AutoContrast": 0.25, "SolarizeIncreasing": 0.05, "SolarizeAdd": 0.05,
    "ContrastIncreasing": 0.05, "BrightnessIncreasing": 0.05, "Equalize": 0.05, "PosterizeIncreasing": 0.05, "Invert": 0.05,
}  # fmt: skip
"""timm's ``_RAND_WEIGHTED_0`` (``tweights``): op name -> choice weight."""
OP_SETS = ("weights",)
"""The named op sets of timm's ``t`` key that are implemented (``3a`` and ``3aw`` need GaussianBlur and Desaturate)."""

LEVEL_DENOM = 10.0
"""timm's ``_LEVEL_DENOM``: a level of 10 is the op's full strength (and the default clip)."""

# How each op turns its level into timm's argument (timm's *_level_to_arg functions), and its kernel code.
(_NONE, _ROTATE, _SHEAR, _TRANSLATE_X, _TRANSLATE_Y, _POSTERIZE, _POSTERIZE_INC, _SOLARIZE, _SOLARIZE_INC, _SOLARIZE_ADD,
 _ENHANCE, _ENHANCE_INC) = range(12)  # fmt: skip
_OPS = {
    "AutoContrast": (P.AUTOCONTRAST, _NONE),
    "Equalize": (P.EQUALIZE, _NONE),
    "Invert": (P.INVERT, _NONE),
    "Rotate": (P.ROTATE, _ROTATE),
    "Posterize": (P.POSTERIZE, _POSTERIZE),
    "PosterizeIncreasing": (P.POSTERIZE, _POSTERIZE_INC),
    "Solarize": (P.SOLARIZE, _SOLARIZE),
    "SolarizeIncreasing": (P.SOLARIZE, _SOLARIZE_INC),
    "SolarizeAdd": (TO.SOLARIZE_ADD, _SOLARIZE_ADD),
    "Color": (P.COLOR, _ENHANCE),
    "ColorIncreasing": (P.COLOR, _ENHANCE_INC),
    "Contrast": (P.CONTRAST, _ENHANCE),
    "ContrastIncreasing": (P.CONTRAST, _ENHANCE_INC),
    "Brightness": (P.BRIGHTNESS, _ENHANCE),
    "BrightnessIncreasing": (P.BRIGHTNESS, _ENHANCE_INC),
    "Sharpness": (P.SHARPNESS, _ENHANCE),
    "SharpnessIncreasing": (P.SHARPNESS, _ENHANCE_INC),
    "ShearX": (P.SHEAR_X, _SHEAR),
    "ShearY": (P.SHEAR_Y, _SHEAR),
    "TranslateXRel": (P.TRANSLATE_X, _TRANSLATE_X),
    "TranslateYRel": (P.TRANSLATE_Y, _TRANSLATE_Y),
}


def timm_args(kinds: Tensor, levels: Tensor, negate: Tensor, height: int, width: int, translate_pct: float) -> Tensor:
    """``[B]`` float64: timm's op argument for each image's level function ``kinds`` (codes above), level and sign.

    Computed as timm's ``*_level_to_arg`` functions compute them in Python floats (the same float64
    operations in the same order): Rotate ``30 l/10`` degrees, Shear ``0.3 l/10``, TranslateX/YRel
    ``translate_pct l/10`` times the width/height in pixels, Posterize ``int(4 l/10)`` bits (Increasing:
    ``4 -`` that), Solarize ``min(256, int(256 l/10))`` (Increasing: ``256 -`` that), SolarizeAdd
    ``min(128, int(110 l/10))``, enhance ``1.8 l/10 + 0.1`` (Increasing: ``max(0.1, 1 +- 0.9 l/10)``).
    """
    fraction = TO.divide(levels.to(torch.float64), LEVEL_DENOM)  # Python's level / 10, on CUDA too

    def signed(values: Tensor) -> Tensor:
        return torch.where(negate, -values, values)

    posterize = torch.trunc(fraction * 4)
    solarize = torch.trunc(fraction * 256).clamp(max=256)
    values = {
        _ROTATE: signed(fraction * 30.0),
        _SHEAR: signed(fraction * 0.3),
        _TRANSLATE_X: signed(fraction * translate_pct) * width,
        _TRANSLATE_Y: signed(fraction * translate_pct) * height,
        _POSTERIZE: posterize,
        _POSTERIZE_INC: 4 - posterize,
        _SOLARIZE: solarize,
        _SOLARIZE_INC: 256 - solarize,
        _SOLARIZE_ADD: torch.trunc(fraction * 110).clamp(max=128),
        _ENHANCE: fraction * 1.8 + 0.1,
        _ENHANCE_INC: (1.0 + signed(fraction * 0.9)).clamp(min=0.1),
    }
    args = torch.zeros_like(fraction)
    for kind, value in values.items():
        args = torch.where(kinds == kind, value, args)
    return args


@functools.lru_cache(maxsize=16)
def _device_tables(
    ops: tuple[str, ...], weights: tuple[float, ...] | None, device: torch.device
) -> tuple[Tensor, Tensor, Tensor]:
    """Kernel codes, level-function kinds and choice weights of ``ops`` on ``device`` (copied once per device)."""
    codes = torch.tensor([_OPS[name][0] for name in ops], dtype=torch.int64)
    kinds = torch.tensor([_OPS[name][1] for name in ops], dtype=torch.int64)
    return codes.to(device), kinds.to(device), torch.tensor(weights or [0.0], dtype=torch.float64).to(device)


def _check_real(value: Any, name: str, low: float, *, inclusive: bool = True, infinite: bool = False) -> float:
    real = isinstance(value, numbers.Real) and not isinstance(value, bool)
    number = float(value) if real else math.nan
    if infinite and number == math.inf:
        return number
    if not real or not (number >= low if inclusive else number > low):
        bound = f"{'>=' if inclusive else '>'} {low:g}" + (" (or inf)" if infinite else "")
        raise ValueError(f"{name} must be a number {bound}, got {value!r}")
    return _check_finite(number, name)


def _check_interpolation(interpolation: Any) -> tuple[str, ...]:
    """A tuple of filter names from ``"nearest"``/``"bilinear"``/``"bicubic"``, ``"random"`` (timm's default:
    bilinear or bicubic) or a sequence of names (one drawn uniformly per image and op, as ``random.choice``)."""
    value = getattr(interpolation, "value", interpolation)
    if isinstance(value, str) and value.lower() == "random":
        return ("bilinear", "bicubic")
    names = [value] if isinstance(value, str) else value
    if isinstance(names, Sequence) and names:
        modes = tuple(str(getattr(name, "value", name)).lower() for name in names)
        if all(isinstance(getattr(name, "value", name), str) for name in names) and all(m in TO.INTERPOLATIONS for m in modes):
            return modes
    raise ValueError(
        f"interpolation must be 'nearest', 'bilinear', 'bicubic', 'random' (bilinear or bicubic per image and op, timm's "
        f"default) or a non-empty sequence of those filter names, got {interpolation!r}"
    )


def _check_fill(fill: Any) -> tuple[float, ...]:
    values = [fill] if isinstance(fill, numbers.Real) else fill
    if (
        isinstance(values, Sequence)
        and not isinstance(values, str)
        and len(values) in (1, 3)
        and all(isinstance(v, numbers.Real) and not isinstance(v, bool) and 0 <= v <= 255 for v in values)
    ):
        return tuple(float(v) for v in values)
    raise ValueError(f"fill must be a number or 3 numbers in 0..255 (uint8 levels, timm's img_mean), got {fill!r}")


class TimmRandAugment(Transform):
    """timm's RandAugment (``rand_augment_transform``), every image its own ops, levels, signs and filters.

    Args:
        magnitude: the level (timm's ``m``, 0..10 is the usual range), default 10.
        num_layers: ops per image (``n``), default 2.
        prob: probability of applying each drawn op (``p``), default 0.5.
        magnitude_std: the level's standard deviation (``mstd``; 0: fixed; ``math.inf``: Uniform(0, magnitude)).
        magnitude_max: the level's upper clip (``mmax``), default 10.
        increasing: timm's ``inc1`` op list (ops that get stronger with the level) instead of ``inc0``'s.
        op_set: ``None`` (the list ``increasing`` picks) or ``"weights"`` (timm's ``tweights``: 15 ops by weight,
            without replacement within an image).
        fill: the colour of uncovered areas in uint8 levels (timm's ``img_mean``, default (128, 128, 128));
            divided by 255 for float images.
        interpolation: ``"random"`` (timm's default: bilinear or bicubic, drawn per image and op), ``"nearest"``,
            ``"bilinear"``, ``"bicubic"``, or a sequence of those names to draw from.
        translate_pct: TranslateXRel/YRel's full-strength shift as a fraction of the side (timm's hparam), default 0.45.

    Shape:
        ``[B, C, H, W]`` uint8 or float, C in (1, 3) -> same. Params ``[B, num_layers]``: ``op`` int64 (index
        into ``ops``), ``apply`` bool, ``level`` float64 (clipped), ``sign`` bool (true: negated), ``resample``
        int64 (index into ``interpolation``).

    Example:
        >>> TimmRandAugment(magnitude=9, magnitude_std=0.5)(torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8)).shape
        torch.Size([4, 3, 16, 16])
    """

    def __init__(
        self,
        magnitude: float = 10,
        num_layers: int = 2,
        prob: float = 0.5,
        magnitude_std: float = 0.0,
        magnitude_max: float = 10.0,
        increasing: bool = False,
        op_set: str | None = None,
        fill: Any = (128, 128, 128),
        interpolation: Any = "random",
        translate_pct: float = 0.45,
    ) -> None:
        self.magnitude = _check_real(magnitude, "magnitude", 0.0)
        self.num_layers = _check_int(num_layers, "num_layers", 0)
        self.prob = _check_probability(prob, "prob")
        self.magnitude_std = _check_real(magnitude_std, "magnitude_std", 0.0, infinite=True)
        self.magnitude_max = _check_real(magnitude_max, "magnitude_max", 0.0, inclusive=False)
        if not isinstance(increasing, bool):
            raise ValueError(f"increasing must be True or False, got {increasing!r}")
        self.increasing = increasing
        if op_set is not None and op_set not in OP_SETS:
            raise ValueError(
                f"op_set must be None or one of {OP_SETS} (timm's 3a and 3aw sets are not implemented), got {op_set!r}"
            )
        self.op_set = op_set
        self.fill = _check_fill(fill)
        self.interpolation = _check_interpolation(interpolation)
        self.translate_pct = _check_finite(translate_pct, "translate_pct")
        if op_set == "weights":
            self.ops, weights = tuple(RAND_WEIGHTED_0), tuple(RAND_WEIGHTED_0.values())
            total = sum(weights)
            self.weights: tuple[float, ...] | None = tuple(weight / total for weight in weights)
            if self.num_layers > len(self.ops):
                raise ValueError(
                    f"num_layers must be at most {len(self.ops)} with op_set='weights' (ops are drawn without replacement), "
                    f"got {num_layers}"
                )
        else:
            self.ops, self.weights = RAND_INCREASING_TRANSFORMS if increasing else RAND_TRANSFORMS, None

    def _draw_ops(self, info: BatchInfo, generator: torch.Generator | None) -> Tensor:
        if self.weights is None:  # np.random.choice(ops, n, replace=True): uniform, independent steps
            return _choice(info, generator, len(self.ops), self.num_layers)
        # np.random.choice(ops, n, replace=False, p=weights): each step by weight among the ops not drawn yet
        draws = _uniform(info, generator, self.num_layers, dtype=torch.float64)
        remaining = _device_tables(self.ops, self.weights, info.device)[2].expand(info.batch, -1).clone()
        chosen = []
        for step in range(self.num_layers):  # the policy's steps, not samples
            cdf = remaining.cumsum(dim=1)
            cdf = cdf / cdf[:, -1:]
            index = (cdf <= draws[:, step : step + 1]).sum(dim=1).clamp_(max=len(self.ops) - 1)  # searchsorted(side="right")
            chosen.append(index)
            remaining.scatter_(1, index.unsqueeze(1), 0.0)
        return torch.stack(chosen, dim=1) if chosen else torch.zeros(info.batch, 0, dtype=torch.int64, device=info.device)

    def _make_params(self, info: BatchInfo, generator: torch.Generator | None) -> Params:
        steps = self.num_layers
        op = self._draw_ops(info, generator)
        apply = _uniform(info, generator, steps, dtype=torch.float64) < self.prob
        if self.magnitude_std == math.inf:  # random.uniform(0, magnitude)
            level = _uniform(info, generator, steps, dtype=torch.float64) * self.magnitude
        elif self.magnitude_std > 0:  # random.gauss(magnitude, magnitude_std)
            normal = _uniform(info, generator, steps, dtype=torch.float64, sample=torch.randn)
            level = normal * self.magnitude_std + self.magnitude
        else:
            level = torch.full((info.batch, steps), self.magnitude, dtype=torch.float64, device=info.device)
        return {
            "op": op,
            "apply": apply,
            "level": level.clamp_(0.0, self.magnitude_max),  # max(0, min(level, magnitude_max))
            "sign": _uniform(info, generator, steps) < 0.5,
            "resample": _choice(info, generator, len(self.interpolation), steps),
        }

    def apply(self, images: Images, params: Params) -> Tensor:
        name = type(self).__name__
        F.check_images(images, name)
        channels, height, width = images.shape[1:]
        if channels not in (1, 3):
            raise ValueError(f"{name} expects images with 1 or 3 channels, got {channels}")
        fill = self.fill
        if channels == 1 and len(set(fill)) == 1:
            fill = fill[:1]
        if len(fill) not in (1, channels):
            raise ValueError(f"{name}: fill has {len(fill)} different values for images with {channels} channel(s)")
        unit = 1.0 if images.dtype == torch.uint8 else 1.0 / 255.0
        fill = [value * unit for value in fill]
        device = images.device
        op, apply, level, sign, resample = (
            params[key].to(device, non_blocking=True) for key in ("op", "apply", "level", "sign", "resample")
        )
        codes, kinds, _ = _device_tables(self.ops, self.weights, device)
        out = images
        for step in range(op.shape[1]):  # the policy's op steps, not samples
            index = op[:, step]
            code = torch.where(apply[:, step], codes[index], P.IDENTITY)
            args = timm_args(kinds[index], level[:, step], sign[:, step], height, width, self.translate_pct)
            out = TO.timm_ops(out, code, args, resample[:, step], self.interpolation, fill)
        return out if out is not images else images.clone()

    def _repr_fields(self) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "magnitude": self.magnitude,
            "num_layers": self.num_layers,
            "prob": self.prob,
            "magnitude_std": self.magnitude_std,
            "magnitude_max": self.magnitude_max,
            "increasing": self.increasing,
        }
        if self.op_set is not None:
            fields["op_set"] = self.op_set
        interpolation: Any = self.interpolation[0] if len(self.interpolation) == 1 else self.interpolation
        interpolation = "random" if self.interpolation == ("bilinear", "bicubic") else interpolation
        return {**fields, "fill": self.fill, "interpolation": interpolation, "translate_pct": self.translate_pct}
