"""Geometry kernels: flips, crops and antialiased resampling, batched or over a ragged list.

Example:
    >>> hflip(torch.arange(4.0).view(1, 1, 1, 4)).flatten()
    tensor([3., 2., 1., 0.])
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor
from torch.nn import functional as torch_functional

from gpuaug.functional.base import ImageList, _mask, check_images, image_sizes

__all__ = ["center_crop", "hflip", "resize", "resize_output_size", "resized_crop", "vflip"]


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
        heights, widths = zip(*image_sizes(images))
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
    batched gathers (``python -m benchmarks aug --device cpu`` measures it).
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
    # The batch takes the layout the resize gave (torch's CPU resize returns planes even for HWC
    # input): a batch of the other layout costs a transposing copy here and another in the next op.
    first = results[0]
    memory_format = torch.channels_last if first.stride(0) == 1 and first.shape[0] > 1 else torch.contiguous_format
    out = torch.empty((count, *first.shape), dtype=first.dtype, device=first.device, memory_format=memory_format)
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
