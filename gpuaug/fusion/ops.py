"""What a run of transforms asks of the fused pass: one description, two executors.

Each transform that can join the fused pass says what it contributes by calling one method of a
``FusedOps`` (``RandomResizedCrop`` calls ``crop``, a flip calls ``flip``, ``ColorJitter`` calls
``jitter`` ...). ``Compose`` builds one ``FusedOps`` per fused run from those calls and hands it
to an executor: the torch reference (``functional.resized_crop`` / ``fused_color_normalize``)
or the Triton kernels (``gpuaug.fusion.triton_kernels``). Adding an op means giving it a ``fusion`` role
and a ``contribute`` method, not editing isinstance chains in the planner and the executors.

Geometry is described per image as: a *source box* (``top, left, height, width``) resampled onto
a *virtual* image of ``virtual`` size, of which a *window* of the output size, anchored at
``window`` (possibly outside the virtual image: zero padding, as torchvision's CenterCrop), is
kept. ``RandomResizedCrop`` is box -> size; ``Resize`` the whole image -> its size;
``CenterCrop`` a window (of the image, or of the resized image when it follows a resize).

Example:
    >>> ops = FusedOps(((4, 6),))
    >>> ops.center_crop((2, 2))
    >>> ops.window.tolist(), ops.size
    ([[1, 2]], (2, 2))
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

__all__ = ["ROLES", "FusedOps", "centre_anchor", "combine", "mirror_boxes"]

ROLES = ("flip", "crop", "resize", "window", "jitter", "gray", "cast", "normalize")
"""What a transform may contribute (``Transform.fusion``):

* ``flip``: mirrors (``flip``), anywhere before the normalisation;
* ``crop``: a per-image box resampled to a fixed size (``crop``); ``resize``: the whole image
  resampled (``resize``); ``window``: a centre window (``center_crop``);
* ``jitter``: brightness/contrast/saturation/YIQ-hue factors (``jitter``); ``gray``: a grayscale
  mask (``grayscale``); ``cast``: a float output dtype (``cast``); ``normalize``: mean/std.
"""


@dataclass
class FusedOps:
    """The fused pass a run of transforms asks for, filled by the transforms' ``contribute`` calls.

    Geometry fields are host ``[B, 2]`` int64 numpy arrays (sizes come from image headers: no
    device reads; numpy, as the Triton pass builds its per-batch table from them); boxes, masks
    and factors are the ``[B]``/``[B, 4]`` params tensors, untouched.

    Args:
        sizes: ``(height, width)`` of each input image.

    Shape:
        ``boxes`` ``[B, 4]`` int64 or ``None`` (the whole image); masks ``[B]`` bool; factors ``[B]`` float.
    """

    sizes: tuple[tuple[int, int], ...]
    boxes: Tensor | None = None
    resample: bool = False
    antialias: bool = True
    virtual: np.ndarray | None = None
    window: np.ndarray | None = None
    current: np.ndarray | None = None
    hflips_before: list[Tensor] = field(default_factory=list)
    vflips_before: list[Tensor] = field(default_factory=list)
    hflips: list[Tensor] = field(default_factory=list)
    vflips: list[Tensor] = field(default_factory=list)
    brightness: Tensor | None = None
    contrast: Tensor | None = None
    saturation: Tensor | None = None
    hue: Tensor | None = None
    grayscale: list[Tensor] = field(default_factory=list)
    dtype: torch.dtype | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    # -- geometry ------------------------------------------------------------------------------
    @property
    def geometric(self) -> bool:
        """Whether a crop, resize or window was contributed."""
        return self.current is not None

    @property
    def size(self) -> tuple[int, int] | None:
        """The common output ``(height, width)``, or ``None`` when the images still differ (or no geometry)."""
        if self.current is None or not (self.current == self.current[0]).all():
            return None
        return int(self.current[0, 0]), int(self.current[0, 1])

    def flip(self, axis: str, mask: Tensor) -> None:
        """Mirror the images whose ``mask`` is set, ``axis`` ``"horizontal"`` or ``"vertical"``."""
        if axis not in ("horizontal", "vertical"):
            raise ValueError(f"axis must be 'horizontal' or 'vertical', got {axis!r}")
        horizontal = axis == "horizontal"
        (self.hflips if horizontal else self.vflips).append(mask)
        if not self.geometric:  # before the geometry: the kernels mirror the box (exact)
            (self.hflips_before if horizontal else self.vflips_before).append(mask)

    def crop(self, boxes: Tensor, size: Sequence[int], antialias: bool) -> None:
        """Resample each image's ``boxes`` row (``top, left, height, width``) to ``size``."""
        self._first_geometry("crop")
        self.boxes, self.resample, self.antialias = boxes, True, bool(antialias)
        self.virtual = np.broadcast_to(np.array(size, dtype=np.int64), (len(self.sizes), 2))
        self.window = np.zeros((len(self.sizes), 2), dtype=np.int64)
        self.current = self.virtual

    def resize(self, sizes: Sequence[tuple[int, int]], antialias: bool) -> None:
        """Resample each whole image to its ``sizes`` row."""
        self._first_geometry("resize")
        self.resample, self.antialias = True, bool(antialias)
        self.virtual = np.asarray(sizes, dtype=np.int64).reshape(len(self.sizes), 2)
        self.window = np.zeros((len(self.sizes), 2), dtype=np.int64)
        self.current = self.virtual

    def center_crop(self, size: Sequence[int]) -> None:
        """Keep the centre ``size`` window of the current images (zero padding where they are smaller)."""
        if self.current is None:
            self.virtual = np.asarray(self.sizes, dtype=np.int64).reshape(len(self.sizes), 2)
            self.window = np.zeros((len(self.sizes), 2), dtype=np.int64)
            self.current = self.virtual
        crop = np.array([int(size[0]), int(size[1])], dtype=np.int64)
        self.window = self.window + centre_anchor(self.current, crop)
        self.current = np.broadcast_to(crop, (len(self.sizes), 2))

    def _first_geometry(self, op: str) -> None:
        if self.current is not None:
            raise ValueError(f"a {op} cannot follow another geometric op in one fused pass")

    # -- colour --------------------------------------------------------------------------------
    def jitter(self, brightness: Tensor | None, contrast: Tensor | None, saturation: Tensor | None, hue: Tensor | None) -> None:
        """Per-image colour factors (``None``: identity); hue as a YIQ rotation in turns."""
        if any(value is not None for value in (self.brightness, self.contrast, self.saturation, self.hue)):
            raise ValueError("one fused pass takes one ColorJitter")
        self.brightness, self.contrast, self.saturation, self.hue = brightness, contrast, saturation, hue

    def gray(self, mask: Tensor) -> None:
        """Turn the images whose ``mask`` is set gray (after the jitter)."""
        self.grayscale.append(mask)

    def cast(self, dtype: torch.dtype) -> None:
        """A floating output in [0, 1] (before any normalisation)."""
        self.dtype = dtype

    def normalize(self, mean: Sequence[float], std: Sequence[float]) -> None:
        """``(x - mean) / std`` per channel (one value means all three); the output is floating."""
        if self.mean is not None:
            raise ValueError("one fused pass takes one Normalize")
        if len(mean) not in (1, 3) or len(std) != len(mean):
            raise ValueError(f"Normalize has {len(mean)} mean/std values for images with 3 channels")
        mean, std = tuple(float(v) for v in mean), tuple(float(v) for v in std)
        self.mean, self.std = (mean * 3, std * 3) if len(mean) == 1 else (mean, std)

    @property
    def colored(self) -> bool:
        """Whether the pass ends in a floating colour/normalise stage (else it keeps uint8)."""
        return self.dtype is not None or self.mean is not None

    def color_arguments(self, input_dtype: torch.dtype) -> dict:
        """Keyword arguments of ``functional.fused_color_normalize`` for this pass."""
        dtype = self.dtype if self.dtype is not None else (input_dtype if input_dtype.is_floating_point else torch.float32)
        return {
            "brightness": self.brightness,
            "contrast": self.contrast,
            "saturation": self.saturation,
            "hue": self.hue,
            "grayscale_mask": combine(self.grayscale, "or"),
            "mean": self.mean,
            "std": self.std,
            "dtype": dtype,
        }


def combine(masks: list[Tensor], how: str) -> Tensor | None:
    """One mask from several (``"xor"`` for flips, ``"or"`` for grayscale); ``None`` for none."""
    if not masks:
        return None
    result = masks[0]
    for mask in masks[1:]:
        mask = mask.to(result.device, non_blocking=True)
        result = result ^ mask if how == "xor" else result | mask
    return result


def centre_anchor(sizes: np.ndarray, crop: np.ndarray) -> np.ndarray:
    """torchvision's CenterCrop anchors (round half to even, as Python's ``round``); negative where
    the image is zero-padded first."""
    return np.where(crop > sizes, -((crop - sizes) // 2), np.round((sizes - crop) / 2.0)).astype(np.int64)


def mirror_boxes(boxes: Tensor, sizes: Tensor | Sequence[tuple[int, int]], hflip: Tensor | None, vflip: Tensor | None) -> Tensor:
    """``[B, 4]`` ``(top, left, height, width)`` boxes mirrored inside their images where a flip mask is set.

    ``sizes``: each image's ``(height, width)``, a ``[B, 2]`` tensor or host pairs (copied to the
    boxes' device without a sync).

    Example:
        >>> mirror_boxes(torch.tensor([[0, 1, 2, 3]]), [(4, 10)], torch.tensor([True]), None).tolist()
        [[0, 6, 2, 3]]
    """
    if hflip is None and vflip is None:
        return boxes
    if not isinstance(sizes, Tensor):
        sizes = torch.tensor(sizes, dtype=torch.int64).view(-1, 2)
        if boxes.device.type != "cpu":  # pinned, so the copy is asynchronous
            sizes = sizes.pin_memory()
    sizes = sizes.to(boxes.device, non_blocking=True)
    top, left, height, width = boxes.unbind(1)
    if hflip is not None:
        left = torch.where(hflip.to(left.device), sizes[:, 1] - left - width, left)
    if vflip is not None:
        top = torch.where(vflip.to(top.device), sizes[:, 0] - top - height, top)
    return torch.stack([top, left, height, width], dim=1)
