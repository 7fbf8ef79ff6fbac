"""Input checks and helpers shared by the kernels (no randomness, no I/O).

Example:
    >>> check_images(torch.zeros(1, 3, 2, 2), "op", rgb=True)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["BRIGHTNESS", "CONTRAST", "GRAY_WEIGHTS", "HUE", "SATURATION", "as_batch", "check_images", "image_sizes"]

ImageList = Sequence[Tensor]

# torchvision's luma weights for rgb_to_grayscale, adjust_saturation and adjust_contrast (note
# 0.2989, not ITU-R 601's 0.299: we follow torchvision so the kernels match it).
GRAY_WEIGHTS = (0.2989, 0.587, 0.114)

BRIGHTNESS, CONTRAST, SATURATION, HUE = 0, 1, 2, 3
"""Operation ids in a ColorJitter ``order`` tensor (torchvision's ``fn_idx`` numbering)."""


# ----------------------------------------------------------------------------------------------
# Input checks
# ----------------------------------------------------------------------------------------------
def check_images(images: Tensor | ImageList, op: str, *, allow_list: bool = False, rgb: bool = False) -> None:
    """Raise a clear ``TypeError``/``ValueError`` if ``images`` is not a valid batch for ``op``.

    Args:
        images: a ``[B, C, H, W]`` uint8 or floating tensor, or (when ``allow_list``) a non-empty
            list of ``[C, H, W]`` tensors sharing dtype, device and channel count.
        op: the name used in the message.
        allow_list: whether a ragged list is accepted.
        rgb: whether the op needs exactly 3 channels.
    """
    if isinstance(images, (list, tuple)):
        if not allow_list:
            raise TypeError(
                f"{op} expects a batch tensor [B, C, H, W]; a list of images is accepted only by a "
                "first geometric op (RandomResizedCrop, Resize, CenterCrop) that makes them one size"
            )
        if len(images) == 0:
            raise ValueError(f"{op} got an empty list of images")
        first = images[0]
        for index, image in enumerate(images):
            if not isinstance(image, Tensor):
                raise TypeError(f"{op}: image {index} is a {type(image).__name__}, expected a tensor")
            if image.ndim != 3:
                raise ValueError(f"{op}: image {index} has shape {tuple(image.shape)}, expected [C, H, W]")
            if image.dtype != first.dtype or image.device != first.device:
                raise ValueError(
                    f"{op}: all images must share dtype and device; image {index} is "
                    f"{image.dtype} on {image.device}, image 0 is {first.dtype} on {first.device}"
                )
            if image.shape[0] != first.shape[0]:
                raise ValueError(f"{op}: all images must have the same number of channels")
        _check_dtype(first, op)
        channels = first.shape[0]
    else:
        if not isinstance(images, Tensor):
            raise TypeError(f"{op} expects a tensor [B, C, H, W], got {type(images).__name__}")
        if images.ndim != 4:
            raise ValueError(
                f"{op} expects images of shape [B, C, H, W] (or one [C, H, W] image), got shape {tuple(images.shape)}"
            )
        _check_dtype(images, op)
        channels = images.shape[1]
    if rgb and channels != 3:
        raise ValueError(f"{op} expects RGB images with 3 channels, got {channels} channels")


def _check_dtype(image: Tensor, op: str) -> None:
    if image.dtype != torch.uint8 and not image.is_floating_point():
        raise TypeError(f"{op} expects uint8 or floating-point images, got {image.dtype}")


def _max_value(dtype: torch.dtype) -> float:
    return 255.0 if dtype == torch.uint8 else 1.0


def _per_sample(values: Tensor, images: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """A ``[B]`` parameter as ``dtype`` (float32) ``[B, 1, 1, 1]`` on the images' device."""
    return values.to(device=images.device, dtype=dtype, non_blocking=True).view(-1, 1, 1, 1)


def _mask(mask: Tensor, images: Tensor) -> Tensor:
    return mask.to(device=images.device, dtype=torch.bool, non_blocking=True).view(-1, 1, 1, 1)


def as_batch(images: Tensor | ImageList) -> Tensor | list[Tensor]:
    """Stack a list of equal-size images into one batch; images of different sizes stay a list.

    A ragged result (e.g. ``Resize(int)`` keeps each aspect ratio) has no batch shape: it is
    returned as a list, as it came in.

    Example:
        >>> as_batch([torch.zeros(3, 2, 2), torch.zeros(3, 2, 2)]).shape
        torch.Size([2, 3, 2, 2])
    """
    if isinstance(images, Tensor):
        return images
    images = list(images)
    if len({tuple(image.shape) for image in images}) != 1:
        return images
    return torch.stack(images)


def image_sizes(images: Tensor | ImageList) -> list[tuple[int, int]]:
    """Each image's ``(height, width)`` (a batch, a list, or anything with ``sizes`` such as a ``PackedBatch``)."""
    if isinstance(images, Tensor):
        return [tuple(images.shape[-2:])] * images.shape[0]
    if hasattr(images, "sizes"):
        return list(images.sizes)
    return [tuple(image.shape[-2:]) for image in images]
