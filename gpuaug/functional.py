"""Batched image kernels: pure functions of images and per-sample parameters.

Every kernel takes a batch ``images`` of shape ``[B, C, H, W]`` (uint8 or floating point) and
per-sample parameters as tensors with a leading batch dimension on the images' device. Kernels draw
no random numbers, never write into their input, keep dtype and device, and loop over samples only
where the input is a ragged list (the first geometric op, documented where it happens).

Semantics follow ``torchvision.transforms.v2.functional`` applied image by image with the same
parameters, including torchvision's uint8 conventions (multiply in float32, clamp, truncate back to
uint8). The tests check every kernel against that reference.

Example:
    >>> images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    >>> adjust_brightness(images, torch.tensor([0.5, 1.0, 1.5, 2.0])).shape
    torch.Size([4, 3, 32, 32])
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import kornia
import torch
from torch import Tensor
from torch.nn import functional as torch_functional

__all__ = [
    "adjust_brightness",
    "adjust_contrast",
    "adjust_hue",
    "adjust_saturation",
    "center_crop",
    "check_images",
    "color_jitter",
    "fused_color_normalize",
    "hflip",
    "normalize",
    "resize",
    "resized_crop",
    "rgb_to_grayscale",
    "to_dtype",
    "vflip",
    "yiq_hue_matrix",
]

ImageBatch = Tensor
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


def _per_sample(values: Tensor, images: Tensor) -> Tensor:
    """A ``[B]`` parameter as float32 ``[B, 1, 1, 1]`` on the images' device."""
    return values.to(device=images.device, dtype=torch.float32, non_blocking=True).view(-1, 1, 1, 1)


def _mask(mask: Tensor, images: Tensor) -> Tensor:
    return mask.to(device=images.device, dtype=torch.bool, non_blocking=True).view(-1, 1, 1, 1)


# ----------------------------------------------------------------------------------------------
# Flips
# ----------------------------------------------------------------------------------------------
def hflip(images: Tensor, mask: Tensor | None = None) -> Tensor:
    """Mirror left-right the images whose ``mask`` entry is true (all of them without a mask).

    Shape:
        images ``[B, C, H, W]``, mask ``[B]`` bool -> ``[B, C, H, W]``.
    """
    # torch.flip directly: kornia's hflip adds .contiguous(), which drops channels-last.
    flipped = images.flip(-1)
    return flipped if mask is None else torch.where(_mask(mask, images), flipped, images)


def vflip(images: Tensor, mask: Tensor | None = None) -> Tensor:
    """Mirror top-bottom the images whose ``mask`` entry is true (all of them without a mask).

    Shape:
        images ``[B, C, H, W]``, mask ``[B]`` bool -> ``[B, C, H, W]``.
    """
    flipped = images.flip(-2)
    return flipped if mask is None else torch.where(_mask(mask, images), flipped, images)


# ----------------------------------------------------------------------------------------------
# Geometry: crop + resize (+ flip) as one resampling
# ----------------------------------------------------------------------------------------------
def _sizes(images: Tensor | ImageList) -> list[tuple[int, int]]:
    if isinstance(images, Tensor):
        return [tuple(images.shape[-2:])] * images.shape[0]
    return [tuple(image.shape[-2:]) for image in images]


def _interpolate(images: Tensor, size: tuple[int, int], antialias: bool) -> Tensor:
    """torchvision's bilinear ``resize_image`` on a ``[B, C, H, W]`` batch."""
    if images.shape[0] == 1 and images.is_contiguous(memory_format=torch.channels_last) and images.stride(0) != images.numel():
        # As torchvision's resize_image: an unsqueezed HWC image must look channels-last to
        # interpolate, else it takes another (2.5x slower, differently rounded) uint8 path.
        images = images.as_strided(images.shape, (images.numel(), *images.stride()[1:]))
    native = images.dtype in (torch.float32, torch.float64) or (images.dtype == torch.uint8 and images.device.type == "cpu")
    source = images if native else images.float()
    out = torch_functional.interpolate(source, size=list(size), mode="bilinear", align_corners=False, antialias=antialias)
    if not native:
        out = out.round_().to(images.dtype) if images.dtype == torch.uint8 else out.to(images.dtype)
    return out


def _interpolate_one(image: Tensor, size: tuple[int, int], antialias: bool) -> Tensor:
    """``_interpolate`` for one ``[C, H, W]`` image (returned as is when already that size)."""
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    return _interpolate(image.unsqueeze(0), size, antialias)[0]


def _resample_taps(start: Tensor, length: Tensor, out_size: int, max_length: int, antialias: bool) -> tuple[Tensor, Tensor]:
    """Source indices and weights of a 1-D bilinear resampling, per sample.

    Samples the source interval ``[start, start + length)`` onto ``out_size`` points exactly as
    ``torch.nn.functional.interpolate(mode="bilinear", align_corners=False, antialias=...)``
    computes its weights (PIL's triangle filter, widened by the scale when downsampling).

    Shape:
        start, length ``[B]`` int64 -> index ``[B, out_size, taps]`` int64,
        weight ``[B, out_size, taps]`` float32; ``taps`` depends only on ``max_length`` (a host
        int bound on ``length``), so building them needs no host sync.
    """
    device = start.device
    length_f = length.to(torch.float64).unsqueeze(1)
    scale = length_f / out_size
    positions = torch.arange(out_size, device=device, dtype=torch.float64).unsqueeze(0)
    if antialias:
        support = torch.where(scale >= 1.0, scale, torch.ones_like(scale))
        invscale = torch.where(scale >= 1.0, 1.0 / scale, torch.ones_like(scale))
        center = scale * (positions + 0.5)
        first = torch.clamp(torch.trunc(center - support + 0.5), min=0.0)
        last = torch.minimum(torch.trunc(center + support + 0.5), length_f)
        taps = int(math.ceil(2.0 * max(max_length / out_size, 1.0))) + 2
        offsets = torch.arange(taps, device=device, dtype=torch.float64)
        source = first.unsqueeze(-1) + offsets  # [B, out, taps]
        distance = ((source - center.unsqueeze(-1) + 0.5) * invscale.unsqueeze(-1)).abs()
        weight = torch.clamp(1.0 - distance, min=0.0) * (source < last.unsqueeze(-1))
        weight = weight / weight.sum(-1, keepdim=True).clamp(min=1e-12)
    else:
        real = torch.clamp(scale * (positions + 0.5) - 0.5, min=0.0)
        lower = torch.floor(real)
        frac = real - lower
        source = torch.stack([lower, torch.minimum(lower + 1, length_f - 1)], dim=-1)
        weight = torch.stack([1.0 - frac, frac], dim=-1)
    index = torch.minimum(source, length_f.unsqueeze(-1) - 1).to(torch.int64)
    return index + start.view(-1, 1, 1), weight.to(torch.float32)


def _resample_axis(images: Tensor, index: Tensor, weight: Tensor, dim: int) -> Tensor:
    """Gather ``taps`` source lines along ``dim`` (2 = rows, 3 = columns) and blend them."""
    batch, channels, height, width = images.shape
    out_size = index.shape[1]
    result = None
    for tap in range(index.shape[2]):  # a handful of taps, not samples
        if dim == 2:
            tap_index = index[:, :, tap].view(batch, 1, out_size, 1).expand(-1, channels, -1, width)
            tap_weight = weight[:, :, tap].view(batch, 1, out_size, 1)
        else:
            tap_index = index[:, :, tap].view(batch, 1, 1, out_size).expand(-1, channels, height, -1)
            tap_weight = weight[:, :, tap].view(batch, 1, 1, out_size)
        term = torch.gather(images, dim, tap_index) * tap_weight
        result = term if result is None else result.add_(term)
    return result


def _resized_crop_taps(images: Tensor | ImageList, boxes: Tensor, size: tuple[int, int], antialias: bool) -> Tensor:
    """Batched crop + resize as two separable gathers: no loop over samples, no host sync.

    A ragged list is first packed into one zero-padded batch (the boxes never reach the padding).
    """
    if not isinstance(images, Tensor):
        heights, widths = zip(*_sizes(images))
        packed = images[0].new_zeros((len(images), images[0].shape[0], max(heights), max(widths)))
        for slot, image in zip(packed, images):  # ragged input only: one copy per image
            slot[:, : image.shape[1], : image.shape[2]].copy_(image)
        images = packed
    boxes = boxes.to(device=images.device, dtype=torch.int64, non_blocking=True)
    top, left, height, width = boxes.unbind(1)
    row_index, row_weight = _resample_taps(top, height, size[0], images.shape[2], antialias)
    col_index, col_weight = _resample_taps(left, width, size[1], images.shape[3], antialias)
    source = images if images.is_floating_point() else images.float()
    # Rows first when that shrinks the intermediate more than columns first would.
    rows_first = size[0] * images.shape[3] <= images.shape[2] * size[1]
    if rows_first:
        out = _resample_axis(source, row_index, row_weight, 2)
        out = _resample_axis(out, col_index, col_weight, 3)
    else:
        out = _resample_axis(source, col_index, col_weight, 3)
        out = _resample_axis(out, row_index, row_weight, 2)
    if images.dtype == torch.uint8:
        return out.round_().clamp_(0, 255).to(torch.uint8)
    return out.to(images.dtype)


def _resized_crop_loop(
    images: Tensor | ImageList,
    boxes: Tensor,
    size: tuple[int, int],
    antialias: bool,
    hflip_mask: Tensor | None,
    vflip_mask: Tensor | None,
) -> Tensor:
    """Crop (a view), resize and flip image by image with torch's native kernels.

    On the CPU this is the fast path: torch's uint8 antialiased resize is vectorised per image,
    the crop is free and a flip is a view of the small result, so a per-sample loop beats the
    batched gathers (15x on 2 CPU cores, 64 images 384x512 -> 224, 2026-11).
    """
    count = len(images)
    # Reads boxes and masks on the host: free on the CPU, where this path runs by default.
    rows = boxes.tolist()  # host read: see above
    hflips = hflip_mask.tolist() if hflip_mask is not None else [False] * count  # host read: see above
    vflips = vflip_mask.tolist() if vflip_mask is not None else [False] * count  # host read: see above
    results = []
    for image, (top, left, height, width), flip_h, flip_v in zip(images, rows, hflips, vflips):
        result = _interpolate_one(image[:, top : top + height, left : left + width], size, antialias)
        if flip_h:
            result = result.flip(-1)
        if flip_v:
            result = result.flip(-2)
        results.append(result)
    if count == 1:  # no stacking copy; but never hand back a view of the input (a crop already output-sized)
        result = results[0]
        if result.untyped_storage().data_ptr() == images[0].untyped_storage().data_ptr():
            result = result.clone()
        return result.unsqueeze(0)
    first = images[0]
    memory_format = torch.channels_last if first.stride(0) == 1 and first.shape[0] > 1 else torch.contiguous_format
    out = torch.empty((count, first.shape[0], *size), dtype=first.dtype, device=first.device, memory_format=memory_format)
    return torch.stack(results, out=out) if memory_format == torch.contiguous_format else _stack_into(out, results)


def _stack_into(out: Tensor, results: list[Tensor]) -> Tensor:
    for slot, result in zip(out, results):
        slot.copy_(result)
    return out


def resized_crop(
    images: Tensor | ImageList,
    boxes: Tensor,
    size: Sequence[int],
    hflip_mask: Tensor | None = None,
    vflip_mask: Tensor | None = None,
    antialias: bool = True,
    impl: str | None = None,
) -> Tensor:
    """Crop a box out of every image, resize it to ``size`` (bilinear) and optionally mirror it.

    Equals ``torchvision.transforms.v2.functional.resized_crop(image, top, left, height, width,
    size, antialias=antialias)`` per image, followed by a flip where a mask is true.

    Args:
        images: ``[B, C, H, W]`` or a list of ``[C, H, W]`` tensors of different sizes.
        boxes: ``[B, 4]`` integer ``(top, left, height, width)`` per image, inside the image.
        size: output ``(height, width)``.
        hflip_mask, vflip_mask: optional ``[B]`` bool; mirror those outputs.
        antialias: torchvision's ``antialias`` (a triangle filter widened when downsampling).
        impl: ``"loop"`` (crop views + torch's per-image resize; default on the CPU) or
            ``"taps"`` (two batched gathers with per-sample weights; default elsewhere: no
            per-sample kernel launches and no host sync). Both are tested against torchvision.

    Shape:
        ``[B, C, oh, ow]``, same dtype and device as the input.

    Example:
        >>> images = torch.zeros(2, 3, 64, 48, dtype=torch.uint8)
        >>> resized_crop(images, torch.tensor([[0, 0, 32, 32], [8, 8, 40, 40]]), (16, 16)).shape
        torch.Size([2, 3, 16, 16])
    """
    check_images(images, "resized_crop", allow_list=True)
    size = (int(size[0]), int(size[1]))
    device = images[0].device if not isinstance(images, Tensor) else images.device
    if impl is None:
        impl = "loop" if device.type == "cpu" else "taps"
    if impl == "loop":
        return _resized_crop_loop(images, boxes, size, antialias, hflip_mask, vflip_mask)
    if impl != "taps":
        raise ValueError(f"impl must be 'loop' or 'taps', got {impl!r}")
    out = _resized_crop_taps(images, boxes, size, antialias)
    if hflip_mask is not None:
        out = hflip(out, hflip_mask)
    if vflip_mask is not None:
        out = vflip(out, vflip_mask)
    return out


def resize_output_size(height: int, width: int, size: Sequence[int]) -> tuple[int, int]:
    """torchvision's Resize output size: one int resizes the shorter side, keeping the aspect."""
    if len(size) == 2:
        return int(size[0]), int(size[1])
    short, long = (height, width) if height <= width else (width, height)
    new_short, new_long = int(size[0]), int(int(size[0]) * long / short)
    return (new_short, new_long) if height <= width else (new_long, new_short)


def resize(images: Tensor | ImageList, size: Sequence[int], antialias: bool = True) -> Tensor | list[Tensor]:
    """Resize like ``torchvision.transforms.v2.functional.resize`` (bilinear).

    Args:
        images: ``[B, C, H, W]`` or a list of ``[C, H, W]`` tensors.
        size: ``[short_side]`` or ``(height, width)``.

    Shape:
        A tensor for tensor input. For a list, one resize per image (the documented ragged loop of
        the first geometric op) and a list back: the sizes can still differ (e.g. a shorter-side
        resize of mixed aspect ratios), so a following CenterCrop makes the batch.
    """
    check_images(images, "resize", allow_list=True)
    if isinstance(images, Tensor):
        out_size = resize_output_size(images.shape[2], images.shape[3], size)
        if out_size == tuple(images.shape[-2:]):
            return images.clone()
        return _interpolate(images, out_size, antialias)
    resized = [_interpolate_one(image, resize_output_size(*image.shape[-2:], size), antialias) for image in images]
    return [result.clone() if result is image else result for result, image in zip(resized, images)]


def center_crop(images: Tensor | ImageList, size: Sequence[int]) -> Tensor:
    """Crop the centre like ``torchvision.transforms.v2.functional.center_crop``.

    An image smaller than ``size`` is zero-padded first (torchvision's behaviour). A list of
    different sizes becomes one batch (one slice per image: the ragged loop of a first geometric
    op).

    Shape:
        ``[B, C, H, W]`` or list of ``[C, H, W]`` -> ``[B, C, size[0], size[1]]``.
    """
    check_images(images, "center_crop", allow_list=True)
    crop_height, crop_width = int(size[0]), int(size[1])
    if isinstance(images, Tensor):
        return _center_crop_one(images, crop_height, crop_width).clone()
    return torch.stack([_center_crop_one(image, crop_height, crop_width) for image in images])


def _center_crop_one(image: Tensor, crop_height: int, crop_width: int) -> Tensor:
    height, width = image.shape[-2:]
    if crop_height > height or crop_width > width:
        pad_left = (crop_width - width) // 2 if crop_width > width else 0
        pad_top = (crop_height - height) // 2 if crop_height > height else 0
        pad_right = (crop_width - width + 1) // 2 if crop_width > width else 0
        pad_bottom = (crop_height - height + 1) // 2 if crop_height > height else 0
        image = torch_functional.pad(image, [pad_left, pad_right, pad_top, pad_bottom], value=0.0)
        height, width = image.shape[-2:]
    top = int(round((height - crop_height) / 2.0))
    left = int(round((width - crop_width) / 2.0))
    return image[..., top : top + crop_height, left : left + crop_width]


# ----------------------------------------------------------------------------------------------
# Colour: exact op-by-op kernels (torchvision's semantics, per-sample factors)
# ----------------------------------------------------------------------------------------------
def _luma(images: Tensor) -> Tensor:
    """Float32 luma ``[B, 1, H, W]`` computed exactly as torchvision's ``_rgb_to_grayscale_image``."""
    red, green, blue = images.unbind(dim=-3)
    return red.mul(GRAY_WEIGHTS[0]).add_(green, alpha=GRAY_WEIGHTS[1]).add_(blue, alpha=GRAY_WEIGHTS[2]).unsqueeze(-3)


def _blend_gray(images: Tensor) -> Tensor:
    """The grayscale reference of contrast and saturation: luma, floored for uint8 (torchvision)."""
    gray = _luma(images)
    return gray if images.is_floating_point() else gray.floor_()


def _blend(images: Tensor, reference: Tensor | None, factors: Tensor) -> Tensor:
    """``clamp(factor * images + (1 - factor) * reference)`` back in the images' dtype (torchvision's ``_blend``)."""
    factor = _per_sample(factors, images)
    out = images.mul(factor)
    if reference is not None:
        out.add_(reference * (1.0 - factor))
    out.clamp_(0.0, _max_value(images.dtype))
    return out.to(images.dtype)  # float16/bfloat16 stay so (a float32 factor promoted them)


def adjust_brightness(images: Tensor, factors: Tensor) -> Tensor:
    """Multiply every image by its factor (torchvision's brightness; Kornia's adds, we do not).

    Shape:
        images ``[B, C, H, W]``, factors ``[B]`` -> ``[B, C, H, W]``.
    """
    check_images(images, "adjust_brightness")
    return _blend(images, None, factors)


def adjust_contrast(images: Tensor, factors: Tensor) -> Tensor:
    """Blend every image with the mean of its grayscale version (torchvision's contrast).

    Shape:
        images ``[B, 3, H, W]``, factors ``[B]`` -> ``[B, 3, H, W]``.
    """
    check_images(images, "adjust_contrast", rgb=True)
    return _blend(images, _blend_gray(images).mean(dim=(-3, -2, -1), keepdim=True), factors)


def adjust_saturation(images: Tensor, factors: Tensor) -> Tensor:
    """Blend every image with its grayscale version (torchvision's saturation).

    Shape:
        images ``[B, 3, H, W]``, factors ``[B]`` -> ``[B, 3, H, W]``.
    """
    check_images(images, "adjust_saturation", rgb=True)
    return _blend(images, _blend_gray(images), factors)


def adjust_hue(images: Tensor, factors: Tensor) -> Tensor:
    """Rotate the hue of every image by its factor in ``[-0.5, 0.5]`` turns (torchvision's hue).

    Runs through ``kornia.enhance.adjust_hue`` (HSV, radians); it agrees with torchvision's HSV
    round trip to 2e-6 on float images and to +-1 on 0.01 % of uint8 pixels.

    Shape:
        images ``[B, 3, H, W]``, factors ``[B]`` -> ``[B, 3, H, W]``.
    """
    check_images(images, "adjust_hue", rgb=True)
    source = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
    radians = factors.to(device=images.device, dtype=torch.float32, non_blocking=True) * (2.0 * math.pi)
    out = kornia.enhance.adjust_hue(source, radians)
    return to_dtype(out, images.dtype, scale=True)


def rgb_to_grayscale(images: Tensor, mask: Tensor | None = None) -> Tensor:
    """Replace every image (or those whose ``mask`` is true) by its luma in all 3 channels.

    Shape:
        images ``[B, 3, H, W]``, mask ``[B]`` bool -> ``[B, 3, H, W]``.
    """
    check_images(images, "rgb_to_grayscale", rgb=True)
    gray = _luma(images).to(images.dtype).expand_as(images)
    if mask is None:
        return gray.contiguous()
    return torch.where(_mask(mask, images), gray, images)


def color_jitter(
    images: Tensor,
    brightness: Tensor | None,
    contrast: Tensor | None,
    saturation: Tensor | None,
    hue: Tensor | None,
    order: Tensor,
) -> Tensor:
    """torchvision's ColorJitter, op by op, with each image's own factors and own op order.

    Each image applies its enabled ops (a ``None`` factor tensor disables that op for all) in the
    order of its row of ``order`` (a permutation of ``BRIGHTNESS, CONTRAST, SATURATION, HUE``), with
    the clamp and uint8 truncation torchvision applies after every op. The batch is processed in
    stages: blend stages (brightness, contrast and saturation are all "blend with a reference",
    with factor 1 an exact identity) before the hue op and after it, and one hue pass; so the
    cost is a few elementwise passes, not a loop over images.

    Shape:
        images ``[B, 3, H, W]``, factors ``[B]``, order ``[B, 4]`` int64 -> ``[B, 3, H, W]``.
    """
    check_images(images, "color_jitter", rgb=True)
    device = images.device
    order = order.to(device=device, non_blocking=True)
    blend_factors = {
        op: factor
        for op, factor in ((BRIGHTNESS, brightness), (CONTRAST, contrast), (SATURATION, saturation))
        if factor is not None
    }
    if hue is None:
        hue_position = torch.full((images.shape[0], 1), 4, device=device)
    else:
        hue_position = (order == HUE).to(torch.int64).argmax(dim=1, keepdim=True)
    ops = [op for op in (BRIGHTNESS, CONTRAST, SATURATION) if op in blend_factors]
    out = images
    for before_hue in (True, False) if hue is not None else (True,):
        # Each image's enabled blend ops on this side of its hue op, in its own order.
        for stage in range(len(ops)):
            stage_op = _nth_op(order, ops, hue_position, stage, before_hue)
            out = _blend_stage(out, stage_op, blend_factors)
        if before_hue and hue is not None:
            out = adjust_hue(out, hue)
    return out if out is not images else images.clone()


def _nth_op(order: Tensor, ops: list[int], hue_position: Tensor, stage: int, before_hue: bool) -> Tensor:
    """The id of the ``stage``-th enabled blend op each image applies before (after) its hue op; -1 if none."""
    enabled = torch.zeros_like(order, dtype=torch.bool)
    for op in ops:
        enabled |= order == op
    slots = torch.arange(order.shape[1], device=order.device).unsqueeze(0)
    side = slots < hue_position if before_hue else slots > hue_position
    chosen = enabled & side
    rank = chosen.to(torch.int64).cumsum(dim=1) - 1  # rank among chosen ops, in the image's order
    hit = chosen & (rank == stage)
    return torch.where(hit.any(dim=1), (order * hit).sum(dim=1), torch.full_like(order[:, 0], -1))


def _blend_stage(images: Tensor, stage_op: Tensor, blend_factors: dict[int, Tensor]) -> Tensor:
    """Apply per image brightness, contrast or saturation (or nothing, id -1) in one pass."""
    ones = torch.ones(images.shape[0], device=images.device, dtype=torch.float32)
    factor = ones
    for op, values in blend_factors.items():
        values = values.to(device=images.device, dtype=torch.float32, non_blocking=True)
        factor = torch.where(stage_op == op, values, factor)
    reference = None
    if CONTRAST in blend_factors or SATURATION in blend_factors:
        gray = _blend_gray(images)
        select = stage_op.view(-1, 1, 1, 1)
        reference = torch.where(
            select == SATURATION,
            gray,
            torch.where(select == CONTRAST, gray.mean(dim=(-3, -2, -1), keepdim=True), torch.zeros_like(gray[:, :, :1, :1])),
        )
    return _blend(images, reference, factor)


# ----------------------------------------------------------------------------------------------
# dtype and normalisation
# ----------------------------------------------------------------------------------------------
def to_dtype(images: Tensor, dtype: torch.dtype, scale: bool = True) -> Tensor:
    """torchvision's ``to_dtype`` for uint8/float images (``scale``: uint8 [0, 255] <-> float [0, 1]).

    Always returns a new tensor.
    """
    if images.dtype == dtype:
        return images.clone()
    if not scale:
        return images.to(dtype)
    if images.is_floating_point() and dtype.is_floating_point:
        return images.to(dtype)
    if images.is_floating_point():
        # torchvision multiplies by 256 - 1e-3 so that the top of [0, 1] maps to 255 without a round.
        return images.mul(_max_value(dtype) + 1.0 - 1e-3).to(dtype)
    if dtype.is_floating_point:
        return images.to(dtype).mul_(1.0 / _max_value(images.dtype))
    raise TypeError(f"to_dtype supports uint8 and floating dtypes, got {dtype}")


def normalize(images: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """``(images - mean) / std`` per channel; uint8 input is first scaled to float32 in [0, 1].

    Shape:
        ``[B, C, H, W]`` -> ``[B, C, H, W]`` floating.
    """
    check_images(images, "normalize")
    source = to_dtype(images, torch.float32) if images.dtype == torch.uint8 else images
    mean_t = torch.as_tensor(mean, dtype=source.dtype, device=source.device).view(-1, 1, 1)
    std_t = torch.as_tensor(std, dtype=source.dtype, device=source.device).view(-1, 1, 1)
    return source.sub(mean_t).div_(std_t)


# ----------------------------------------------------------------------------------------------
# Colour: the fused affine pass (approximation; see fused_color_normalize)
# ----------------------------------------------------------------------------------------------
_RGB_TO_YIQ = torch.tensor(
    [[0.299, 0.587, 0.114], [0.595716, -0.274453, -0.321263], [0.211456, -0.522591, 0.311135]],
    dtype=torch.float64,
)
_YIQ_TO_RGB = torch.linalg.inv(_RGB_TO_YIQ)  # once, on the CPU: linalg.inv on CUDA checks for errors with a sync


def yiq_hue_matrix(hue: Tensor) -> Tensor:
    """3x3 RGB matrices rotating chroma about the grey axis by ``hue`` turns (YIQ rotation).

    This is the linear hue shift some GPU libraries use (DALI's ``hsv``/``color_twist``). It keeps
    luma and greys fixed; it is *not* torchvision's HSV hue, only close to it (the tests state the
    error).

    Shape:
        hue ``[B]`` -> ``[B, 3, 3]`` float32.
    """
    angle = hue.to(torch.float64) * (-2.0 * math.pi)  # sign: the direction of torchvision's HSV hue
    cos, sin = torch.cos(angle), torch.sin(angle)
    rotation = torch.zeros(hue.shape[0], 3, 3, dtype=torch.float64, device=hue.device)
    rotation[:, 0, 0] = 1.0
    rotation[:, 1, 1] = cos
    rotation[:, 1, 2] = -sin
    rotation[:, 2, 1] = sin
    rotation[:, 2, 2] = cos
    to_rgb, to_yiq = _yiq_constants(hue.device)
    return (to_rgb @ rotation @ to_yiq).to(torch.float32)


@functools.lru_cache(maxsize=16)
def _yiq_constants(device: torch.device) -> tuple[Tensor, Tensor]:
    return _YIQ_TO_RGB.to(device), _RGB_TO_YIQ.to(device)


def fused_color_normalize(
    images: Tensor,
    brightness: Tensor | None = None,
    contrast: Tensor | None = None,
    saturation: Tensor | None = None,
    hue: Tensor | None = None,
    grayscale_mask: Tensor | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Colour jitter + grayscale + scale to [0, 1] + normalize in one pass over the pixels.

    Brightness (``b x``), saturation (``s x + (1 - s) luma(x)``), contrast
    (``c x + (1 - c) mean(luma(x))``), grayscale and a YIQ hue rotation are all affine in RGB and
    commute with each other, so per image they compose to one 3x3 matrix plus an offset; the
    normalisation folds into the same affine and the final clamp to [0, 1] becomes a per-channel
    clamp in normalised units. One batched matmul over the pixels then does all of it. With both
    a jitter and a grayscale mask, the jitter is clamped to [0, 1] before the grayscale (a second
    matmul), since mixing unclipped channels into gray multiplied the error several times.

    It approximates the op-by-op chain: torchvision clamps (and, for uint8, truncates) after every
    op, this clamps once. Where nothing saturates the two agree to float rounding; on real photos
    with ColorJitter(0.4, 0.4, 0.4) the mean difference is ~0.25 levels of 255 on float input
    (3 % of values off by more than one level, saturated pixels by up to ~50) and ~1.5 levels on
    uint8 input, where torchvision also truncates after each op. ``hue`` here is the YIQ rotation
    (``yiq_hue_matrix``), not HSV. The tests hold these bounds.

    Args:
        images: ``[B, 3, H, W]`` uint8 (0..255) or float (0..1).
        brightness, contrast, saturation, hue: ``[B]`` factors or ``None`` (identity).
        grayscale_mask: ``[B]`` bool, images to turn gray after the jitter, or ``None``.
        mean, std: per-channel normalisation (``None``: output stays in [0, 1]).
        dtype: floating output dtype.

    Shape:
        ``[B, 3, H, W]`` (any memory format) -> ``[B, 3, H, W]`` in ``dtype``, contiguous (NCHW
        is the fast output layout of the batched matmul; convert afterwards if channels-last is
        wanted).
    """
    check_images(images, "fused_color_normalize", rgb=True)
    if not dtype.is_floating_point:
        raise TypeError(f"fused_color_normalize produces floating images, got dtype={dtype}")
    batch, _, height, width = images.shape
    device = images.device

    def factor(values: Tensor | None) -> Tensor:
        if values is None:
            return torch.ones(batch, device=device, dtype=torch.float32)
        return values.to(device=device, dtype=torch.float32, non_blocking=True)

    gray_row, identity, luma_matrix = _color_constants(device)
    brightness_f, contrast_f, saturation_f = factor(brightness), factor(contrast), factor(saturation)
    saturation_f = saturation_f.view(-1, 1, 1)
    jitter = saturation_f * identity + (1.0 - saturation_f) * luma_matrix  # [B, 3, 3]
    if hue is not None:
        jitter = yiq_hue_matrix(hue.to(device)) @ jitter
    jitter = jitter * (brightness_f * contrast_f).view(-1, 1, 1)

    # Normalisation constants are host numbers: the final clamp to [0, 1] becomes one clamp per
    # channel with host bounds (a clamp with tensor bounds was 5x slower on the CPU).
    mean = tuple(mean) if mean is not None else (0.0, 0.0, 0.0)
    std = tuple(std) if std is not None else (1.0, 1.0, 1.0)
    inverse_std, shift = _normalize_constants(mean, std, device)
    bounds = [(-mean[c] / std[c], (1.0 - mean[c]) / std[c]) for c in range(3)]
    contrast_shift = ((1.0 - contrast_f) * brightness_f).view(-1, 1, 1) if contrast is not None else None
    gray = None
    if grayscale_mask is not None:
        gray = torch.where(grayscale_mask.to(device=device, dtype=torch.bool).view(-1, 1, 1), luma_matrix, identity)
    two_pass = gray is not None and any(value is not None for value in (brightness, contrast, saturation, hue))
    scale = 1.0 / 255.0 if images.dtype == torch.uint8 else 1.0

    out = torch.empty((batch, 3, height * width), dtype=dtype, device=device)
    # On the CPU the pixels go through in chunks of a few images that stay in cache: 64 images
    # 224 px in one pass ran 0.81 ms per image on one core, in chunks of 2 0.56 ms (2026-11).
    # Chunks of images, never single samples; one chunk (the whole batch) on a GPU.
    chunk = _CPU_CHUNK if device.type == "cpu" else batch
    for start in range(0, batch, chunk):
        part = slice(start, min(start + chunk, batch))
        values = _float_planes(images[part])  # [b, 3, HW]
        matrix, offset = jitter[part], None
        if contrast_shift is not None:
            # mean luma of the input, in [0, 1]; brightness scales it, saturation and hue keep it
            mean_luma = (values.mean(dim=2) @ gray_row).view(-1, 1, 1) * scale
            offset = (contrast_shift[part] * mean_luma).expand(-1, 3, 1)
        pass_scale = scale
        if two_pass:
            # pass 1: the jitter, clamped to [0, 1]; pass 2: grayscale + normalisation
            values = torch.bmm(matrix * scale, values) if offset is None else torch.baddbmm(offset, matrix * scale, values)
            values.clamp_(0.0, 1.0)
            matrix, offset, pass_scale = gray[part], None, 1.0
        elif gray is not None:
            matrix = gray[part] @ matrix
            offset = None if offset is None else gray[part] @ offset
        matrix = matrix * (inverse_std * pass_scale)  # rows scaled by 1/std
        offset = shift.expand(matrix.shape[0], 3, 1) if offset is None else offset * inverse_std + shift
        target = out[part] if dtype == torch.float32 else None
        result = torch.baddbmm(offset, matrix, values, out=target)  # [b, 3, HW]
        for channel, (low, high) in enumerate(bounds):
            result[:, channel].clamp_(low, high)
        if target is None:
            out[part] = result
    return out.view(batch, 3, height, width)


_CPU_CHUNK = 2


def _float_planes(images: Tensor) -> Tensor:
    """``[B, C, H, W]`` as contiguous float32 ``[B, C, HW]`` planes (one pass, whatever the layout).

    The batched matmul wants contiguous planes: with a channels-last image read as a transposed
    operand it ran 0.21 ms per 224 px image on one core, on contiguous planes 0.05 ms; converting
    uint8 channels-last to float NCHW costs 0.07 ms (chunks of 2, 2026-11).
    """
    batch, channels, height, width = images.shape
    return images.to(torch.float32, memory_format=torch.contiguous_format).view(batch, channels, height * width)


@functools.lru_cache(maxsize=16)
def _color_constants(device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """Luma row, identity and all-luma 3x3 on ``device``, built once (no per-call host copies)."""
    gray_row = torch.tensor(GRAY_WEIGHTS, dtype=torch.float32).to(device)
    return gray_row, torch.eye(3, device=device), gray_row.expand(3, 3).contiguous()


@functools.lru_cache(maxsize=64)
def _normalize_constants(mean: tuple[float, ...], std: tuple[float, ...], device: torch.device) -> tuple[Tensor, Tensor]:
    """``1/std`` and ``-mean/std`` as ``[3, 1]`` tensors on ``device``, built once per normalisation."""
    mean_t = torch.tensor(mean, dtype=torch.float32).view(3, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(3, 1)
    return (1.0 / std_t).to(device), (-mean_t / std_t).to(device)
