"""RandomErasing, per image: torchvision v2's arguments and box draw, one batched pass.

Example:
    >>> out = RandomErasing(p=1.0, value=0)(torch.ones(4, 3, 32, 32), generator=torch.Generator().manual_seed(0))
    >>> bool((out == 0).any()), out.shape
    (True, torch.Size([4, 3, 32, 32]))
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from gpuaug import functional as F
from gpuaug.functional import mixing as M
from gpuaug.transforms.base import BatchInfo, Images, Params, Transform, _check_finite, _check_pair, _check_probability, _uniform

__all__ = ["RandomErasing"]

ATTEMPTS = 10
"""Box draws per image before giving up (torchvision's loop of 10): the first that fits is used."""


class RandomErasing(Transform):
    """Erase a random box of each image with probability ``p`` (torchvision v2's ``RandomErasing``, per image).

    Every image draws its own box as torchvision does: up to 10 attempts of an area fraction uniform
    in ``scale`` and an aspect ratio log-uniform in ``ratio``, ``h = round(sqrt(area * ratio))``,
    ``w = round(sqrt(area / ratio))``; the first attempt with ``h < H`` and ``w < W`` is placed
    uniformly; an image with no such attempt is left as it is (torchvision's fallback). The 10
    attempts are drawn together, so nothing loops over images or reads back on the host.

    Args:
        p: probability of erasing each image.
        scale: ``(min, max)`` fraction of the image area, within [0, 1].
        ratio: ``(min, max)`` aspect ratio (height / width), > 0.
        value: a number, a sequence (one per channel) or ``"random"`` (standard normal noise per pixel,
            from a per-image seed: replays with the params). Cast to the images' dtype; for
            normalised float images (after ``Normalize``, as in torchvision's recipes) 0 is the mean.
        inplace: write into the input batch.

    Shape:
        ``[B, C, H, W]`` -> same. Params ``erase`` ``[B]`` bool, ``box`` ``[B, 4]`` int64 ``(top, left,
        height, width)``, and ``seed`` ``[B]`` int64 with ``value="random"``.

    Example:
        >>> RandomErasing(p=0.5, value="random")(torch.rand(2, 3, 8, 8)).shape
        torch.Size([2, 3, 8, 8])
    """

    def __init__(
        self,
        p: float = 0.5,
        scale: Sequence[float] = (0.02, 0.33),
        ratio: Sequence[float] = (0.3, 3.3),
        value: float | Sequence[float] | str = 0.0,
        inplace: bool = False,
    ) -> None:
        self.p = _check_probability(p)
        self.scale = self._check_pair(scale, "scale", 0.0, 1.0)
        self.ratio = self._check_pair(ratio, "ratio", 0.0, math.inf)
        if self.ratio[0] <= 0:
            raise ValueError(f"ratio must be positive, got {ratio!r}")
        if isinstance(value, str):
            if value != "random":
                raise ValueError(f"value must be a number, a sequence of numbers or 'random', got {value!r}")
            self.value: tuple[float, ...] | None = None
        elif isinstance(value, numbers.Real) and not isinstance(value, bool):
            self.value = (_check_finite(value, "value"),)
        elif (
            isinstance(value, Sequence)
            and len(value) > 0
            and all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in value)
        ):
            self.value = tuple(_check_finite(v, "value") for v in value)
        else:
            raise ValueError(f"value must be a number, a sequence of numbers or 'random', got {value!r}")
        if not isinstance(inplace, bool):
            raise ValueError(f"inplace must be a bool, got {inplace!r}")
        self.inplace = inplace

    @staticmethod
    def _check_pair(value: Any, name: str, low: float, high: float) -> tuple[float, float]:
        first, second = _check_pair(value, name)
        if not low <= first <= second <= high:
            raise ValueError(f"{name} must satisfy {low:g} <= min <= max <= {high:g}, got {value!r}")
        return first, second

    def _make_params(self, info: BatchInfo, generator: torch.Generator | None) -> Params:
        heights, widths = (size.to(torch.float64).unsqueeze(1) for size in info.size_tensors())
        area = (
            heights
            * widths
            * (self.scale[0] + (self.scale[1] - self.scale[0]) * _uniform(info, generator, ATTEMPTS, dtype=torch.float64))
        )
        low, high = math.log(self.ratio[0]), math.log(self.ratio[1])
        aspect = torch.exp(low + (high - low) * _uniform(info, generator, ATTEMPTS, dtype=torch.float64))
        box_heights = torch.round(torch.sqrt(area * aspect))
        box_widths = torch.round(torch.sqrt(area / aspect))
        fits = (box_heights < heights) & (box_widths < widths)
        first = fits.to(torch.int8).argmax(dim=1, keepdim=True)  # the first attempt that fits
        box_height, box_width = box_heights.gather(1, first).squeeze(1), box_widths.gather(1, first).squeeze(1)
        top = torch.floor(_uniform(info, generator, dtype=torch.float64) * (heights.squeeze(1) - box_height + 1))
        left = torch.floor(_uniform(info, generator, dtype=torch.float64) * (widths.squeeze(1) - box_width + 1))
        params = {
            "erase": (_uniform(info, generator) < self.p) & fits.any(dim=1),
            "box": torch.stack([top, left, box_height, box_width], dim=1).to(torch.int64),
        }
        if self.value is None:
            params["seed"] = (_uniform(info, generator, dtype=torch.float64) * 2.0**32).to(torch.int64)
        return params

    def apply(self, images: Images, params: Params) -> Tensor:
        F.check_images(images, "RandomErasing")
        values = None
        if self.value is not None:
            if len(self.value) not in (1, images.shape[1]):
                raise ValueError(f"RandomErasing: value has {len(self.value)} entries for images with {images.shape[1]} channels")
            values = torch.tensor(self.value, dtype=torch.float32)
        return M.erase(images, params["box"], params["erase"], values, params.get("seed"), inplace=self.inplace)

    def _repr_fields(self) -> dict[str, Any]:
        value: Any = "random" if self.value is None else (self.value[0] if len(self.value) == 1 else self.value)
        return {"p": self.p, "scale": self.scale, "ratio": self.ratio, "value": value, "inplace": self.inplace}
