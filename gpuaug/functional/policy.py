"""Auto-augment kernels: every image applies its own op (by code) with its own magnitude, in one batched call.

``auto_augment_ops(images, ops, magnitudes)`` is one step of torchvision's TrivialAugmentWide,
RandAugment or AutoAugment for a whole batch: image ``b`` applies op ``ops[b]`` (a code below)
with the signed magnitude ``magnitudes[b]``, exactly as torchvision's ``_apply_image_or_video_transform``
would with ``(op, magnitude)``. The geometric ops (shear, translate, rotate) run as one per-sample
affine resampling of the batch (``grid_sample`` with a per-image grid); the colour ops run as a few
batched passes with per-sample parameters (a blend for brightness, colour and contrast, a blurred
blend for sharpness, a per-sample bit mask for posterize, a per-sample threshold for solarize and
invert, per-image extrema for autocontrast and per-image histograms for equalize). On a GPU every
pass runs on the whole batch and each image keeps its own result (``torch.where``), so the number of
kernels does not depend on the mix of ops and nothing is read back on the host; on the CPU, where a
host read is free, each pass runs only on the images that use it.

Example:
    >>> images = torch.randint(0, 256, (3, 3, 8, 8), dtype=torch.uint8)
    >>> out = auto_augment_ops(images, torch.tensor([ROTATE, SOLARIZE, EQUALIZE]), torch.tensor([30.0, 0.5, 0.0]))
    >>> out.shape, out.dtype
    (torch.Size([3, 3, 8, 8]), torch.uint8)
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor
from torch.nn import functional as torch_functional

from gpuaug.functional.base import _mask, _max_value, _per_sample, check_images
from gpuaug.functional.color import _blend_gray, to_dtype

__all__ = [
    "AUTOCONTRAST",
    "BRIGHTNESS",
    "COLOR",
    "CONTRAST",
    "EQUALIZE",
    "IDENTITY",
    "INVERT",
    "OP_NAMES",
    "POSTERIZE",
    "ROTATE",
    "SHARPNESS",
    "SHEAR_X",
    "SHEAR_Y",
    "SOLARIZE",
    "TRANSLATE_X",
    "TRANSLATE_Y",
    "affine_matrices",
    "auto_augment_ops",
    "run_passes",
    "autocontrast",
    "equalize",
    "posterize",
    "sharpen",
    "solarize",
]

OP_NAMES = (
    "Identity",
    "ShearX",
    "ShearY",
    "TranslateX",
    "TranslateY",
    "Rotate",
    "Brightness",
    "Color",
    "Contrast",
    "Sharpness",
    "Posterize",
    "Solarize",
    "AutoContrast",
    "Equalize",
    "Invert",
)
"""The op names in code order (torchvision's names); ``OP_NAMES[code]``."""
(
    IDENTITY,
    SHEAR_X,
    SHEAR_Y,
    TRANSLATE_X,
    TRANSLATE_Y,
    ROTATE,
    BRIGHTNESS,
    COLOR,
    CONTRAST,
    SHARPNESS,
    POSTERIZE,
    SOLARIZE,
    AUTOCONTRAST,
    EQUALIZE,
    INVERT,
) = range(len(OP_NAMES))

_DEG_PER_RAD = 180.0 / math.pi  # CPython's math.degrees / math.radians constants
_RAD_PER_DEG = math.pi / 180.0


# ----------------------------------------------------------------------------------------------
# Geometry: one per-sample affine resampling
# ----------------------------------------------------------------------------------------------
def affine_matrices(ops: Tensor, magnitudes: Tensor, height: int, width: int) -> Tensor:
    """Per-image inverse affine matrices ``[B, 2, 3]`` (float64) of torchvision's geometric auto-augment ops.

    Computes torchvision's ``_get_inverse_affine_matrix`` with each image's arguments: ShearX/ShearY
    shear by ``degrees(atan(m))`` about the top-left corner (``center=[0, 0]``), TranslateX/Y move by
    ``int(m)`` pixels, Rotate turns by ``m`` degrees about the centre; every other code is the identity.

    Example:
        >>> affine_matrices(torch.tensor([TRANSLATE_X]), torch.tensor([2.7]), 4, 4)[0]  # int(2.7) pixels right
        tensor([[ 1.,  0., -2.],
                [-0.,  1.,  0.]], dtype=torch.float64)
    """
    ops = ops.to(torch.int64)
    mag = magnitudes.to(device=ops.device, dtype=torch.float64)
    zero = torch.zeros_like(mag)
    shear = (torch.atan(mag) * _DEG_PER_RAD) * _RAD_PER_DEG
    sx = torch.where(ops == SHEAR_X, shear, zero)
    sy = torch.where(ops == SHEAR_Y, shear, zero)
    rot = torch.where(ops == ROTATE, -mag, zero) * _RAD_PER_DEG  # torchvision's rotate passes -angle
    tx = torch.where(ops == TRANSLATE_X, torch.trunc(mag), zero)
    ty = torch.where(ops == TRANSLATE_Y, torch.trunc(mag), zero)
    sheared = (ops == SHEAR_X) | (ops == SHEAR_Y)
    cx = torch.where(sheared, torch.full_like(mag, -0.5 * width), zero)
    cy = torch.where(sheared, torch.full_like(mag, -0.5 * height), zero)
    cos_sy, tan_sx, rot_minus_sy = torch.cos(sy), torch.tan(sx), rot - sy
    a = torch.cos(rot_minus_sy) / cos_sy
    b = -(a * tan_sx + torch.sin(rot))
    c = torch.sin(rot_minus_sy) / cos_sy
    d = torch.cos(rot) - c * tan_sx
    m0, m1, m3, m4 = d, -b, -c, a
    cx_plus_tx, cy_plus_ty = cx + tx, cy + ty
    m2 = cx - m0 * cx_plus_tx - m1 * cy_plus_ty
    m5 = cy - m3 * cx_plus_tx - m4 * cy_plus_ty
    return torch.stack([m0, m1, m2, m3, m4, m5], dim=1).view(-1, 2, 3)


@functools.lru_cache(maxsize=16)
def _base_grid(height: int, width: int, device: torch.device) -> Tensor:
    """torchvision's ``_affine_grid`` base grid ``[1, H*W, 3]`` (pixel centres relative to the image centre)."""
    grid = torch.empty(1, height, width, 3, dtype=torch.float32, device=device)
    grid[..., 0].copy_(torch.linspace((1.0 - width) * 0.5, (width - 1.0) * 0.5, steps=width, device=device))
    grid[..., 1].copy_(torch.linspace((1.0 - height) * 0.5, (height - 1.0) * 0.5, steps=height, device=device).unsqueeze_(-1))
    grid[..., 2].fill_(1)
    return grid.view(1, height * width, 3)


def _warp(images: Tensor, matrices: Tensor, interpolation: str, fill: Sequence[float] | None) -> Tensor:
    """``images`` resampled through per-image inverse ``matrices`` as torchvision's ``affine_image``
    (same size; zeros, or ``fill``, outside)."""
    batch, channels, height, width = images.shape
    dtype = torch.float64 if images.dtype == torch.float64 else torch.float32
    theta = matrices.to(device=images.device, dtype=dtype, non_blocking=True)
    scale = torch.tensor([0.5 * width, 0.5 * height], dtype=dtype).to(images.device, non_blocking=True)
    rescaled = theta.transpose(1, 2) / scale  # [B, 3, 2]
    if images.device.type == "cpu":
        # x * t0 + y * t1 + t2 per pixel, separably: the same products and sums, in the same order, as
        # the batched gemm torchvision uses (bit-equal: tests), which is several times slower on the
        # CPU for an inner dimension of 3.
        # One coordinate plane at a time (a broadcast over a trailing pair runs element by element).
        xs = _base_grid(1, width, images.device).to(dtype)[..., 0].view(1, 1, width)
        ys = _base_grid(height, 1, images.device).to(dtype)[..., 1].view(1, height, 1)
        grid = torch.empty((batch, height, width, 2), dtype=dtype)
        for axis in range(2):
            column = rescaled[:, :, axis].reshape(batch, 3, 1, 1)
            plane = grid[..., axis]
            torch.add(xs * column[:, 0], ys * column[:, 1], out=plane)
            plane.add_(column[:, 2])
    else:
        base = _base_grid(height, width, images.device).to(dtype)
        grid = base.expand(batch, -1, -1).bmm(rescaled).view(batch, height, width, 2)
    source = images.to(dtype)
    if fill is not None:
        source = torch.cat([source, torch.ones_like(source[:, :1])], dim=1)
    out = torch_functional.grid_sample(source, grid, mode=interpolation, padding_mode="zeros", align_corners=False)
    if fill is not None:
        out, inside = out[:, :-1], out[:, -1:]
        fill_values = torch.tensor(list(fill), dtype=dtype).view(1, -1, 1, 1).to(images.device, non_blocking=True)
        if interpolation == "nearest":
            out = torch.where(inside < 0.5, fill_values.expand_as(out), out)
        else:
            out = out.sub_(fill_values).mul_(inside).add_(fill_values)
    return out.round_().to(images.dtype) if not images.is_floating_point() else out.to(images.dtype)


# ----------------------------------------------------------------------------------------------
# Colour: per-sample kernels (each one torchvision's, with a per-image parameter)
# ----------------------------------------------------------------------------------------------
def _gray(images: Tensor) -> Tensor:
    """torchvision's float32 grayscale reference of contrast and saturation (floored for uint8); a 1-channel
    image is its own."""
    if images.shape[1] != 3:
        return images if images.is_floating_point() else images.to(torch.float32)
    return _blend_gray(images)


def _blend(images: Tensor, ops: Tensor, factors: Tensor) -> Tensor:
    """Brightness (reference 0), Color (grayscale) and Contrast (mean grayscale), one pass with per-image factors.

    ``factors`` are the float64 ``1 + magnitude``; ratio and ``1 - ratio`` are each rounded to float32 from
    float64, as torchvision's Python scalars are.
    """
    ops = _per_sample(ops, images, torch.int64)
    factors = factors.to(device=images.device, dtype=torch.float64, non_blocking=True)
    ratio, rest = _per_sample(factors, images), _per_sample(1.0 - factors, images)
    zero = torch.zeros((), dtype=torch.float32, device=images.device)
    reference = zero
    # On the CPU (host reads free) the grayscale is computed only when an image needs it: Brightness does not.
    needs_gray = images.device.type != "cpu" or bool(((ops == COLOR) | (ops == CONTRAST)).any())
    gray = _gray(images) if needs_gray else zero  # once for Color and Contrast
    # On the CPU a whole-image torch.where costs several times a multiply: there each image's reference
    # is the sum of its own term and exact zeros (grayscale values are finite and >= 0).
    cpu = images.device.type == "cpu"
    if images.shape[1] == 3:
        if cpu and needs_gray:
            reference = gray * (ops == COLOR)
        elif needs_gray:
            reference = torch.where(ops == COLOR, gray, reference)
    else:  # torchvision's saturation leaves 1-channel images as they are
        identity = ops == COLOR
        ratio, rest = torch.where(identity, torch.ones_like(ratio), ratio), torch.where(identity, zero, rest)
    if needs_gray:
        mean = gray.mean(dim=(-3, -2, -1), keepdim=True)
        reference = reference + mean * (ops == CONTRAST) if cpu else torch.where(ops == CONTRAST, mean, reference)
    # converted first, then scaled: the same values as images.mul(ratio), whose mixed-dtype loop is ~5x slower
    scaled = images.to(torch.promote_types(images.dtype, ratio.dtype)).mul_(ratio)
    out = torch.addcmul(scaled, reference, rest).clamp_(0.0, _max_value(images.dtype))  # one rounding, as add_(alpha=)
    return out.to(images.dtype)


def _blur_uint8(values: Tensor) -> Tensor:
    """torchvision's rounded sharpness blur of uint8 images given as float32 ``values`` (``[B, C, H-2, W-2]``).

    torchvision convolves the float32 image with the kernel (1/13, centre 5/13) and rounds. The exact
    value is ``k / 13`` with ``k`` the 3x3 sum plus 4 times the centre (an integer up to 3315): never a
    half, at least 1/26 away from one, far beyond the convolution's float32 error (< 1e-3), so
    ``round(k / 13)`` is ``floor((2k + 13) / 26)``. Every sum is an integer below 2^24 (exact in
    float32) and ``2k + 13`` is odd, at least 1/26 from a multiple of 26, far beyond the error of the
    multiplication by 1/26: the floor is exact.
    """
    rows = values[..., :-2, :] + values[..., 1:-1, :] + values[..., 2:, :]
    k = rows[..., :-2] + rows[..., 1:-1] + rows[..., 2:] + 4 * values[..., 1:-1, 1:-1]
    return k.mul_(2.0).add_(13.0).mul_(1.0 / 26.0).floor_()


@functools.lru_cache(maxsize=16)
def _sharpness_kernel(dtype: torch.dtype, device: torch.device) -> Tensor:
    """torchvision's 3x3 smoothing kernel (1/13, centre 5/13), made on ``device`` once (not a host copy per call)."""
    a, b = 1.0 / 13.0, 5.0 / 13.0
    return torch.tensor([[a, a, a], [a, b, a], [a, a, a]], dtype=dtype).to(device)


def sharpen(images: Tensor, factors: Tensor) -> Tensor:
    """torchvision's ``adjust_sharpness`` with a ``[B]`` factor per image (float64 or float32).

    Example:
        >>> sharpen(torch.full((1, 1, 3, 3), 0.5), torch.tensor([2.0])).shape
        torch.Size([1, 1, 3, 3])
    """
    check_images(images, "sharpen")
    channels, height, width = images.shape[-3:]
    if height <= 2 or width <= 2:
        return images.clone()
    fp = images.is_floating_point()
    kernel_dtype = images.dtype if fp else torch.float32
    output = images.to(dtype=kernel_dtype, copy=True)
    if not fp and images.device.type == "cpu":
        blurred = _blur_uint8(output)  # the same values, without the CPU's slow depthwise convolution
    else:
        kernel = _sharpness_kernel(kernel_dtype, images.device).expand(channels, 1, 3, 3)
        blurred = torch_functional.conv2d(output, kernel, groups=channels)
        if not fp:
            blurred = blurred.round_()
    alpha = _per_sample(1.0 - factors.to(torch.float64), images, kernel_dtype)
    view = output[..., 1:-1, 1:-1]
    view.addcmul_(blurred.sub_(view), alpha)  # one rounding, as torchvision's add_(alpha=)
    output = output.clamp_(0, _max_value(images.dtype))
    return output if fp else output.to(images.dtype)


def posterize(images: Tensor, bits: Tensor) -> Tensor:
    """torchvision's ``posterize`` with ``bits`` (``[B]`` integers in 0..8) per image.

    Example:
        >>> posterize(torch.tensor([[[[255]]], [[[255]]]], dtype=torch.uint8), torch.tensor([1, 8])).flatten()
        tensor([128, 255], dtype=torch.uint8)
    """
    bits = _per_sample(bits, images, torch.int64)
    if images.is_floating_point():
        levels = (torch.ones_like(bits) << bits).to(images.dtype)
        return torch.minimum(images.mul(levels).floor_(), levels - 1).clamp_(min=0).mul_(1.0 / levels)
    masks = ((torch.ones_like(bits) << bits) - 1) << (8 - bits)
    return images & masks.to(torch.uint8)


def solarize(images: Tensor, thresholds: Tensor) -> Tensor:
    """torchvision's ``solarize``: invert the pixels ``>= threshold``, a ``[B]`` threshold per image
    (in the images' range: 0..255 for uint8; ``-inf`` inverts all, ``inf`` nothing).

    Example:
        >>> solarize(torch.tensor([[[[10, 200]]]], dtype=torch.uint8), torch.tensor([128.0])).flatten()
        tensor([10, 55], dtype=torch.uint8)
    """
    if images.dtype == torch.uint8:
        # pixel >= t  <=>  pixel >= ceil(t) for integers: a uint8 comparison (a float one is ~10x slower
        # on the CPU); a threshold above 255 inverts nothing. t is rounded to float32 first, as torchvision
        # compares a uint8 image with a Python float.
        limits = torch.ceil(thresholds.to(device=images.device, dtype=torch.float32, non_blocking=True))
        mask = images >= limits.clamp(0, 255).to(torch.uint8).view(-1, 1, 1, 1)
        above = limits > 255
        if images.device.type != "cpu" or bool(above.any()):  # host read: free on the CPU
            mask &= ~above.view(-1, 1, 1, 1)
        return images.bitwise_xor(mask.view(torch.uint8).neg_())  # 255 - pixel where masked; torch.where is ~7x slower
    return torch.where(images >= _per_sample(thresholds, images, images.dtype), 1.0 - images, images)


def autocontrast(images: Tensor) -> Tensor:
    """torchvision's ``autocontrast`` (per image and channel; a constant channel stays as it is).

    Example:
        >>> autocontrast(torch.tensor([[[[0.25, 0.5]]]])).flatten()
        tensor([0., 1.])
    """
    bound = _max_value(images.dtype)
    values = images if images.is_floating_point() else images.to(torch.float32)
    minimum = values.amin(dim=(-2, -1), keepdim=True)
    maximum = values.amax(dim=(-2, -1), keepdim=True)
    constant = maximum == minimum
    inv_scale = torch.where(constant, torch.ones_like(maximum), (maximum - minimum).mul_(1.0 / bound))
    minimum = torch.where(constant, torch.zeros_like(minimum), minimum)
    return values.sub(minimum).div_(inv_scale).clamp_(0, bound).to(images.dtype)


def equalize(images: Tensor) -> Tensor:
    """torchvision's ``equalize``: per image and channel histograms (one ``scatter_add``), PIL's lookup table.

    Float images are equalized on their uint8 conversion and converted back, as torchvision does.

    Example:
        >>> flat = torch.arange(64, 192, dtype=torch.uint8).repeat(4).view(1, 1, 16, 32)  # values 64..191
        >>> equalize(flat).aminmax()
        torch.return_types.aminmax(
        min=tensor(0, dtype=torch.uint8),
        max=tensor(255, dtype=torch.uint8))
    """
    # through float32: 255.999 is 256 in float16
    source = images if images.dtype == torch.uint8 else to_dtype(images.float(), torch.uint8)
    batch_shape = source.shape[:-2]
    flat = source.flatten(start_dim=-2).to(torch.long)
    hist = flat.new_zeros(batch_shape + (256,), dtype=torch.int32)
    hist.scatter_add_(dim=-1, index=flat, src=hist.new_ones(1).expand_as(flat))
    cum_hist = hist.cumsum(dim=-1)
    last = cum_hist.argmax(dim=-1, keepdim=True)
    step = (flat.shape[-1] - hist.gather(dim=-1, index=last)).div_(255, rounding_mode="floor")
    valid = step.ne(0)
    step = step.clamp_(min=1)
    lut = cum_hist[..., :-1].add(step // 2).div_(step, rounding_mode="floor").clamp_(0, 255).to(torch.uint8)
    lut = torch.cat([lut.new_zeros(1).expand(batch_shape + (1,)), lut], dim=-1)
    equalized = lut.gather(dim=-1, index=flat).view_as(source)
    # a constant channel stays as it is; on the CPU (host read free) only when there is one
    out = equalized if images.device.type == "cpu" and bool(valid.all()) else torch.where(valid.unsqueeze(-1), equalized, source)
    return out if images.dtype == torch.uint8 else to_dtype(out, images.dtype)


# ----------------------------------------------------------------------------------------------
# One step of a policy, per image
# ----------------------------------------------------------------------------------------------
_Pass = Callable[[Tensor, Tensor], Tensor]


def _where_rows(images: Tensor, rows: Tensor, op: _Pass) -> Tensor:
    """``op(images, index)`` for the images whose ``rows`` entry is true, the others unchanged (off the CPU).

    ``op`` runs on the whole batch and ``torch.where`` keeps each image's own result: a fixed number of
    kernels, no host read. ``index`` is the ``[B]`` int64 rows ``op`` sees, to select per-image parameters.
    """
    everything = torch.arange(images.shape[0], device=images.device)
    return torch.where(_mask(rows, images), op(images, everything), images)


def _grouped_rows(images: Tensor, group: Tensor, passes: Sequence[_Pass]) -> Tensor:
    """On the CPU: ``passes[k](images of group k, their indices)`` for every image (``group`` ``[B]`` in
    ``0..len(passes)``; ``len(passes)`` leaves an image as it is), each pass on its own images only.

    A host read is free on the CPU, so each pass runs only on the images that use it: the batch is
    ordered by group (one ``index_select``), each pass reads and writes its contiguous slice, and one
    ``index_select`` restores the order. (Advanced indexing, ``x[index]`` and ``x[index] = y``, costs
    ten to twenty times more on the CPU than these copies.)
    """
    order = torch.argsort(group, stable=True)
    counts = torch.bincount(group, minlength=len(passes) + 1).tolist()  # host read: free on the CPU
    if counts[-1] == images.shape[0]:
        return images.clone()
    grouped = images.index_select(0, order)
    start = 0
    for op, count in zip(passes, counts):
        if count:
            rows = grouped[start : start + count]
            rows.copy_(op(rows, order[start : start + count]))
        start += count
    return grouped.index_select(0, torch.argsort(order))


_PASS_OF_OP = (7, 0, 0, 0, 0, 0, 1, 1, 1, 2, 3, 4, 5, 6, 4)
"""The pass of ``auto_augment_ops`` each op code (``IDENTITY`` .. ``INVERT``) runs in; 7: none."""


@functools.lru_cache(maxsize=8)
def _pass_table(device: torch.device) -> Tensor:
    return torch.tensor(_PASS_OF_OP, dtype=torch.int64).to(device)


def auto_augment_ops(
    images: Tensor,
    ops: Tensor,
    magnitudes: Tensor,
    interpolation: str = "nearest",
    fill: Sequence[float] | None = None,
) -> Tensor:
    """Apply op ``ops[b]`` with signed magnitude ``magnitudes[b]`` to image ``b``, torchvision's way.

    The magnitude means what torchvision passes to its op: shear factor, pixels (truncated to int),
    degrees, ``factor - 1`` for Brightness/Color/Contrast/Sharpness, bits for Posterize, the threshold
    as a fraction of the dtype's maximum for Solarize; AutoContrast, Equalize, Invert and Identity
    ignore it.

    Args:
        images: ``[B, C, H, W]`` uint8 or float, C in (1, 3).
        ops: ``[B]`` integer op codes (``IDENTITY`` .. ``INVERT``).
        magnitudes: ``[B]`` float (float64 keeps torchvision's rounding).
        interpolation: ``"nearest"`` or ``"bilinear"`` (geometric ops).
        fill: per-channel values (or one) for the area a geometric op uncovers; ``None``: zeros.

    Shape:
        ``[B, C, H, W]`` -> same, same dtype and device (a new tensor).
    """
    check_images(images, "auto_augment_ops")
    if images.shape[1] not in (1, 3):
        raise ValueError(f"auto_augment_ops expects images with 1 or 3 channels, got {images.shape[1]}")
    if interpolation not in ("nearest", "bilinear"):
        raise ValueError(f"interpolation must be 'nearest' or 'bilinear', got {interpolation!r}")
    height, width = images.shape[-2:]
    ops = ops.to(device=images.device, dtype=torch.int64, non_blocking=True)
    magnitudes = magnitudes.to(device=images.device, dtype=torch.float64, non_blocking=True)
    fill = None if fill is None else [float(value) for value in fill]

    bound = _max_value(images.dtype)
    # One pass per kind of op; each reads the parameters of its own rows ``i`` only (on the CPU a pass
    # runs only on its images, so nothing is computed for the others).
    passes: list[_Pass] = [
        lambda x, i: _warp(x, affine_matrices(ops[i], magnitudes[i], height, width), interpolation, fill),
        lambda x, i: _blend(x, ops[i], 1.0 + magnitudes[i]),
        lambda x, i: sharpen(x, 1.0 + magnitudes[i]),
        lambda x, i: posterize(x, torch.where(ops[i] == POSTERIZE, magnitudes[i].to(torch.int64), 8)),
        lambda x, i: solarize(x, torch.where(ops[i] == INVERT, -math.inf, bound * magnitudes[i])),
        lambda x, i: autocontrast(x),
        lambda x, i: equalize(x),
    ]
    # Every image is in at most one pass (its one op), so the order of the passes does not matter.
    # torchvision's rotate returns a copy for a multiple of 360 degrees (no resampling); at 90, 180, 270 it
    # uses rot90 where we resample: equal with nearest, within float rounding (< 1e-5) with bilinear.
    group = _pass_table(images.device)[ops]
    group = torch.where((ops == ROTATE) & (torch.remainder(magnitudes, 360.0) == 0), len(passes), group)
    return run_passes(images, group, passes)


def run_passes(images: Tensor, group: Tensor, passes: Sequence[_Pass]) -> Tensor:
    """``passes[k]`` on the images of ``group`` k (``[B]`` in ``0..len(passes)``; ``len(passes)``: unchanged),
    a new tensor: on the CPU each pass on its own images only (:func:`_grouped_rows`), elsewhere every pass
    on the whole batch and ``torch.where`` keeps each image's result (a fixed number of kernels, no host read).
    Serves torchvision's ops here and timm's (``timm_ops``)."""
    if images.device.type == "cpu":
        return _grouped_rows(images, group, passes)
    out = images
    for index, op in enumerate(passes):
        out = _where_rows(out, group == index, op)
    return out.clone() if out is images else out
