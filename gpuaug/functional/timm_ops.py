"""timm's auto-augment ops with PIL's conventions: every image its own op, argument and resampling, in one batched call.

timm applies its RandAugment ops to PIL images, and these kernels reproduce PIL's arithmetic on uint8
images bit for bit (``tests/test_timm_policy.py``). The geometric ops are PIL's ``Image.transform``
with an affine matrix (ShearX/ShearY about the top-left corner, TranslateXRel/YRel by float pixels)
and ``Image.rotate`` (about the centre), resampled by PIL's own filters and filled with ``fillcolor``:
nearest in 16.16 fixed point (a float path for pure translations), bilinear and bicubic in double
precision, truncated to uint8 (``pil_matrices``, ``pil_affine``: one gather per filter tap; PIL's
float fallback for images of more than about 32,000 pixels a side is not reproduced). Brightness,
Color, Contrast and Sharpness are PIL's ``ImageEnhance`` blends with its grayscale and rounded mean
(``pil_enhance``, ``pil_sharpness``), AutoContrast is PIL's lookup (``pil_autocontrast``), SolarizeAdd
is timm's (``solarize_add``); Posterize, Solarize, Invert and Equalize are the kernels of
:mod:`gpuaug.functional.policy`, which equal PIL's. Float images get the same ops without the uint8
roundings. ``timm_ops`` dispatches a batch where image ``b`` applies op ``ops[b]`` with timm's argument
``args[b]``. As in ``policy``, on a GPU every pass runs on the whole batch and ``torch.where`` keeps
each image's result (a kernel count fixed by the filters in use, no host read); on the CPU each pass
runs only on its images.

Example:
    >>> images = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    >>> out = timm_ops(images, torch.tensor([P.ROTATE, SOLARIZE_ADD]), torch.tensor([30.0, 40.0]), torch.tensor([1, 0]))
    >>> out.shape, out.dtype
    (torch.Size([2, 3, 8, 8]), torch.uint8)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from gpuaug.functional import policy as P
from gpuaug.functional.base import _max_value, _per_sample, check_images

__all__ = [
    "INTERPOLATIONS",
    "OP_NAMES",
    "SOLARIZE_ADD",
    "divide",
    "pil_affine",
    "pil_autocontrast",
    "pil_blend",
    "pil_enhance",
    "pil_matrices",
    "pil_sharpness",
    "round15",
    "solarize_add",
    "timm_ops",
]

SOLARIZE_ADD = len(P.OP_NAMES)
"""The op code of timm's SolarizeAdd (the others are :mod:`gpuaug.functional.policy`'s codes)."""
OP_NAMES = (*P.OP_NAMES, "SolarizeAdd")
"""Op names in code order; ``OP_NAMES[code]``."""
INTERPOLATIONS = ("nearest", "bilinear", "bicubic")
"""The resampling filters PIL's ``Image.transform`` accepts."""

_SPLIT = 134217729.0  # 2**27 + 1: Veltkamp's split of a float64 into two 26-bit halves
_E15 = 1e15


def divide(numerator: Tensor | float, denominator: Tensor | float) -> Tensor:
    """``numerator / denominator`` rounded once, as Python's float division (one of them a tensor).

    torch computes ``number / tensor`` as ``tensor.reciprocal() * number`` and, on CUDA, ``tensor / number``
    as a product with the reciprocal: both may differ from Python's quotient in the last bit, which
    moves a truncation such as ``int(x * 255 / (hi - lo))`` when the quotient is an integer. Here the
    number becomes a tensor (``full_like``: no host-to-device copy), so torch divides.

    Example:
        >>> divide(255.0, torch.tensor([185.0], dtype=torch.float64)).item() == 255.0 / 185.0
        True
    """
    if not isinstance(numerator, Tensor):
        numerator = torch.full_like(denominator, numerator)
    elif not isinstance(denominator, Tensor):
        denominator = torch.full_like(numerator, denominator)
    return torch.div(numerator, denominator)


def _split(values: Tensor | float) -> tuple[Tensor | float, Tensor | float]:
    scaled = values * _SPLIT
    high = scaled - (scaled - values)
    return high, values - high


_E15_HIGH, _E15_LOW = _split(_E15)


def round15(values: Tensor) -> Tensor:
    """Python's ``round(v, 15)`` of float64 values in ``[-1, 1]`` (what ``Image.rotate`` does to its cosines and sines).

    Python rounds the exact binary value to 15 decimals; ``torch.round(v, decimals=15)`` rounds
    ``v * 1e15`` after that product's own rounding and differs for about 5% of values. The product's
    rounding error is recovered exactly (Dekker's product, plain float64 operations), so the
    nearest integer is the one Python finds.

    Example:
        >>> cosine = math.cos(-math.radians(17.3))
        >>> round15(torch.tensor([cosine], dtype=torch.float64)).item() == round(cosine, 15)
        True
    """
    product = values * _E15
    high, low = _split(values)
    error = ((high * _E15_HIGH - product) + high * _E15_LOW + low * _E15_HIGH) + low * _E15_LOW
    nearest = torch.round(product)
    remainder = (product - nearest) + error
    nearest = nearest + (remainder > 0.5).to(values.dtype) - (remainder < -0.5).to(values.dtype)
    return divide(nearest, _E15)


# ----------------------------------------------------------------------------------------------
# Geometry: PIL's affine matrices and resampling filters
# ----------------------------------------------------------------------------------------------
def pil_matrices(ops: Tensor, args: Tensor, height: int, width: int) -> Tensor:
    """``[B, 6]`` float64: PIL's affine data ``(a, b, c, d, e, f)`` of timm's geometric op per image.

    The output pixel centre ``(x + 0.5, y + 0.5)`` samples the input at ``(a (x + 0.5) + b (y + 0.5) + c,
    d (x + 0.5) + e (y + 0.5) + f)``. ShearX ``(1, m, 0, 0, 1, 0)``, ShearY ``(1, 0, 0, m, 1, 0)``,
    TranslateX ``(1, 0, m, 0, 1, 0)``, TranslateY ``(1, 0, 0, 0, 1, m)``, Rotate by ``m`` degrees
    counter-clockwise about the centre as ``Image.rotate`` builds it (angle modulo 360, cosine and
    sine rounded to 15 decimals); every other code is the identity.

    Example:
        >>> pil_matrices(torch.tensor([P.TRANSLATE_X]), torch.tensor([2.5]), 4, 4)[0]
        tensor([1.0000, 0.0000, 2.5000, 0.0000, 1.0000, 0.0000], dtype=torch.float64)
    """
    ops = ops.to(torch.int64)
    args = args.to(device=ops.device, dtype=torch.float64)
    zero, one = torch.zeros_like(args), torch.ones_like(args)
    rotate = ops == P.ROTATE
    angle = -(torch.remainder(args, 360.0) * P._RAD_PER_DEG)  # -math.radians(angle % 360.0)
    cos = torch.where(rotate, round15(torch.cos(angle)), one)
    sin = torch.where(rotate, round15(torch.sin(angle)), zero)
    center_x, center_y = width / 2, height / 2
    rotate_c = (cos * -center_x + sin * -center_y + 0.0) + center_x
    rotate_f = (-sin * -center_x + cos * -center_y + 0.0) + center_y
    a = cos
    b = torch.where(ops == P.SHEAR_X, args, sin)
    c = torch.where(ops == P.TRANSLATE_X, args, torch.where(rotate, rotate_c, zero))
    d = torch.where(ops == P.SHEAR_Y, args, torch.where(rotate, -sin, zero))
    f = torch.where(ops == P.TRANSLATE_Y, args, torch.where(rotate, rotate_f, zero))
    return torch.stack([a, b, c, d, cos, f], dim=1)


def _coordinates(matrices: Tensor, height: int, width: int) -> tuple[Tensor, Tensor]:
    """``[B, H, W]`` float64 source coordinates of every output pixel, as PIL's ``affine_transform`` computes them."""
    device = matrices.device
    xs = (torch.arange(width, device=device, dtype=torch.float64) + 0.5).view(1, 1, -1)
    ys = (torch.arange(height, device=device, dtype=torch.float64) + 0.5).view(1, -1, 1)
    a, b, c, d, e, f = (matrices[:, k].view(-1, 1, 1) for k in range(6))
    return (a * xs + b * ys) + c, (d * xs + e * ys) + f


def _nearest_indices(matrices: Tensor, height: int, width: int) -> tuple[Tensor, Tensor]:
    """``[B, H, W]`` int64 source column and row of PIL's nearest affine transform (outside: out of range).

    A matrix without rotation or shear (``b == d == 0``) takes PIL's scaling path (float steps from the
    first pixel centre); any other takes its 16.16 fixed-point path.
    """
    device = matrices.device
    a, b, c, d, e, f = (matrices[:, k].view(-1, 1, 1) for k in range(6))
    xs = torch.arange(width, device=device, dtype=torch.float64).view(1, 1, -1)
    ys = torch.arange(height, device=device, dtype=torch.float64).view(1, -1, 1)
    scale_x = torch.floor((c + a * 0.5) + xs * a)  # ImagingScaleAffine (a is +-1 there: its steps are exact)
    scale_y = torch.floor((f + e * 0.5) + ys * e)

    def fix(values: Tensor) -> Tensor:  # PIL's FIX: 16.16 fixed point
        return torch.floor(values * 65536.0 + 0.5).to(torch.int64)

    x_int, y_int = xs.to(torch.int64), ys.to(torch.int64)
    fixed_x = (fix((c + a * 0.5) + b * 0.5) + y_int * fix(b) + x_int * fix(a)) >> 16
    fixed_y = (fix((f + d * 0.5) + e * 0.5) + y_int * fix(e) + x_int * fix(d)) >> 16
    scaling = (b == 0) & (d == 0)
    return torch.where(scaling, scale_x.to(torch.int64), fixed_x), torch.where(scaling, scale_y.to(torch.int64), fixed_y)


def _gather(flat: Tensor, rows: Tensor, columns: Tensor, width: int, dtype: torch.dtype) -> Tensor:
    """``flat[b, :, rows[b], columns[b]]`` for ``[B, C, H*W]`` ``flat`` and ``[B, H, W]`` indices, as ``dtype``."""
    index = (rows * width + columns).flatten(1).unsqueeze(1).expand(-1, flat.shape[1], -1)
    return flat.gather(2, index).to(dtype).view(*flat.shape[:2], *rows.shape[1:])


def _cubic(v1: Tensor, v2: Tensor, v3: Tensor, v4: Tensor, d: Tensor) -> Tensor:
    """PIL's ``BICUBIC`` macro (its transform filter's cubic, a = -1), in its order of operations."""
    p2 = v3 - v1
    p3 = ((v1 - v2) * 2 + v3) - v4
    p4 = ((v2 - v1) - v3) + v4
    return v2 + d * (p2 + d * (p3 + d * p4))


def pil_affine(images: Tensor, matrices: Tensor, interpolation: str, fill: Sequence[float] | None = None) -> Tensor:
    """PIL's ``Image.transform(size, AFFINE, data, resample, fillcolor=fill)`` per image, same size.

    ``matrices`` is ``[B, 6]`` PIL affine data (see :func:`pil_matrices`). ``"nearest"`` copies the
    pixel PIL's fixed-point (or scaling) path picks; ``"bilinear"`` and ``"bicubic"`` are PIL's
    transform filters: a source point outside the image gives ``fill``, one inside interpolates
    with edge pixels repeated, in float64 and in PIL's order of operations, truncated to uint8
    (bicubic clamped to 0..255 first). Float images get the same interpolation in float32
    (float64 for float64 images), not truncated, bicubic clamped to [0, 1].

    Args:
        images: ``[B, C, H, W]`` uint8 or float.
        matrices: ``[B, 6]`` float64.
        interpolation: ``"nearest"``, ``"bilinear"`` or ``"bicubic"``.
        fill: per-channel values (or one) in the images' range; ``None``: zeros (PIL without ``fillcolor``).

    Example:
        >>> image = torch.arange(16, dtype=torch.uint8).view(1, 1, 4, 4)
        >>> pil_affine(image, torch.tensor([[1.0, 0, 1, 0, 1, 0]], dtype=torch.float64), "nearest", [99])[0, 0, 0]
        tensor([ 1,  2,  3, 99], dtype=torch.uint8)
    """
    check_images(images, "pil_affine")
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {INTERPOLATIONS}, got {interpolation!r}")
    batch, channels, height, width = images.shape
    matrices = matrices.to(device=images.device, dtype=torch.float64, non_blocking=True)
    fp = images.is_floating_point()
    dtype = torch.float64 if images.dtype in (torch.uint8, torch.float64) else torch.float32
    flat = images.flatten(2)
    if interpolation == "nearest":
        columns, rows = _nearest_indices(matrices, height, width)
        inside = (columns >= 0) & (columns < width) & (rows >= 0) & (rows < height)
        out = _gather(flat, rows.clamp(0, height - 1), columns.clamp(0, width - 1), width, images.dtype)
    else:
        xs, ys = _coordinates(matrices, height, width)
        inside = (xs >= 0) & (xs < width) & (ys >= 0) & (ys < height)
        xs, ys = xs - 0.5, ys - 0.5
        left, top = torch.floor(xs), torch.floor(ys)
        dx, dy = (xs - left).to(dtype).unsqueeze(1), (ys - top).to(dtype).unsqueeze(1)
        left, top = left.to(torch.int64), top.to(torch.int64)
        taps = (0, 1) if interpolation == "bilinear" else (-1, 0, 1, 2)
        columns = [(left + k).clamp_(0, width - 1) for k in taps]
        row_values = []
        for k in taps:
            row = (top + k).clamp_(0, height - 1)
            values = [_gather(flat, row, column, width, dtype) for column in columns]
            row_values.append(values[0] + (values[1] - values[0]) * dx if len(values) == 2 else _cubic(*values, dx))
        if len(row_values) == 2:
            out = row_values[0] + (row_values[1] - row_values[0]) * dy
        else:
            out = _cubic(*row_values, dy)
            out = out.clamp_(0.0, _max_value(images.dtype))
        out = out.to(images.dtype) if fp else out.clamp_(0.0, 255.0).trunc_().to(torch.uint8)
    inside = inside.unsqueeze(1)
    if fill is None:
        fill_values = torch.zeros((), dtype=images.dtype, device=images.device)
    else:
        fill_values = torch.tensor([float(v) for v in fill], dtype=torch.float64).view(1, -1, 1, 1)
        fill_values = fill_values.to(images.device, non_blocking=True).to(images.dtype).expand(1, channels, 1, 1)
    return torch.where(inside, out, fill_values)


# ----------------------------------------------------------------------------------------------
# Colour: PIL's ImageEnhance (Brightness, Color, Contrast) and ImageOps.autocontrast
# ----------------------------------------------------------------------------------------------
_L_WEIGHTS = (19595, 38470, 7471)  # PIL's RGB -> L: (19595 R + 38470 G + 7471 B + 0x8000) >> 16


def _pil_gray(images: Tensor, dtype: torch.dtype) -> Tensor:
    """``[B, 1, H, W]`` PIL's ``convert("L")`` as ``dtype`` (integer levels for uint8; the unrounded weighted sum for float)."""
    if images.shape[1] != 3:
        return images.to(dtype)
    red, green, blue = images.unbind(dim=1)
    if images.dtype == torch.uint8:
        red, green, blue = (channel.to(torch.int32) for channel in (red, green, blue))
        return ((red * _L_WEIGHTS[0] + green * _L_WEIGHTS[1] + blue * _L_WEIGHTS[2] + 0x8000) >> 16).unsqueeze(1).to(dtype)
    weights = [weight / 65536.0 for weight in _L_WEIGHTS]
    return (red.to(dtype) * weights[0] + green.to(dtype) * weights[1] + blue.to(dtype) * weights[2]).unsqueeze(1)


def pil_blend(images: Tensor, degenerate: Tensor, factors: Tensor) -> Tensor:
    """PIL's ``Image.blend(degenerate, image, factor)`` per image, as ``ImageEnhance`` uses it.

    float32 ``degenerate + factor * (image - degenerate)`` (``factor`` rounded to float32, as PIL's C
    float), clipped and truncated to uint8; float images: clipped to [0, 1], not truncated.
    ``degenerate`` broadcasts to ``images``.

    Example:
        >>> pil_blend(torch.tensor([[[[100, 200]]]], dtype=torch.uint8), torch.zeros(1, 1, 1, 1), torch.tensor([1.3])).flatten()
        tensor([130, 255], dtype=torch.uint8)
    """
    dtype = torch.float64 if images.dtype == torch.float64 else torch.float32
    alpha = factors.to(device=images.device, non_blocking=True).to(torch.float32).to(dtype).view(-1, 1, 1, 1)
    reference = degenerate.to(dtype).expand_as(images)
    out = (images.to(dtype) - reference).mul_(alpha).add_(reference).clamp_(0.0, _max_value(images.dtype))
    return out.to(images.dtype) if images.is_floating_point() else out.trunc_().to(torch.uint8)


def pil_enhance(images: Tensor, ops: Tensor, factors: Tensor) -> Tensor:
    """PIL's ``ImageEnhance.Brightness``/``Color``/``Contrast(image).enhance(factor)``, op and factor per image.

    :func:`pil_blend` with PIL's degenerate images: black; the ``L`` grayscale (integer
    ``(19595 R + 38470 G + 7471 B + 0x8000) >> 16``); its mean rounded to a level. Float images use the
    unrounded grayscale and mean. A 1-channel image is its own Color degenerate (unchanged).
    ``ops`` holds :mod:`gpuaug.functional.policy`'s BRIGHTNESS, COLOR or CONTRAST codes.

    Example:
        >>> images = torch.tensor([[[[10]], [[200]], [[30]]]], dtype=torch.uint8)
        >>> pil_enhance(images, torch.tensor([P.COLOR]), torch.tensor([0.0])).flatten()  # PIL's L of (10, 200, 30)
        tensor([124, 124, 124], dtype=torch.uint8)
    """
    dtype = torch.float64 if images.dtype == torch.float64 else torch.float32
    ops = _per_sample(ops, images, torch.int64)
    gray = _pil_gray(images, dtype)
    if images.dtype == torch.uint8:  # int(ImageStat.Stat(L).mean[0] + 0.5): the exact sum over the count, in float64
        total = gray.to(torch.int64).sum(dim=(-2, -1), keepdim=True).to(torch.float64)
        mean = torch.trunc(divide(total, float(gray.shape[-2] * gray.shape[-1])) + 0.5).to(dtype)
    else:
        mean = gray.mean(dim=(-2, -1), keepdim=True)
    degenerate = torch.where(ops == P.COLOR, gray, torch.where(ops == P.CONTRAST, mean, torch.zeros((), dtype=dtype)))
    return pil_blend(images, degenerate, factors)


def pil_sharpness(images: Tensor, factors: Tensor) -> Tensor:
    """PIL's ``ImageEnhance.Sharpness(image).enhance(factor)`` per image: :func:`pil_blend` with the
    ``SMOOTH`` filter's image (torchvision's rounded blur, edge pixels kept) as the degenerate.

    Example:
        >>> pil_sharpness(torch.full((1, 1, 3, 3), 7, dtype=torch.uint8), torch.tensor([1.9])).flatten().tolist()
        [7, 7, 7, 7, 7, 7, 7, 7, 7]
    """
    return pil_blend(images, P.sharpen(images, torch.zeros_like(factors, dtype=torch.float64)), factors)


def pil_autocontrast(images: Tensor) -> Tensor:
    """PIL's ``ImageOps.autocontrast`` (no cutoff) per image and channel: ``int(x * scale + offset)`` with
    ``scale = 255 / (max - min)`` and ``offset = -min * scale`` in float64, clipped; a constant channel unchanged.

    Float images: :func:`gpuaug.functional.policy.autocontrast` (the same map, not truncated).

    Example:
        >>> pil_autocontrast(torch.tensor([[[[50, 100, 250]]]], dtype=torch.uint8)).flatten()
        tensor([  0,  63, 255], dtype=torch.uint8)
    """
    if images.is_floating_point():
        return P.autocontrast(images)
    values = images.to(torch.float64)
    low = values.amin(dim=(-2, -1), keepdim=True)
    high = values.amax(dim=(-2, -1), keepdim=True)
    varies = high > low
    scale = divide(255.0, torch.where(varies, high - low, torch.ones_like(high)))
    offset = -low * scale
    out = (values * scale + offset).trunc_().clamp_(0.0, 255.0)
    return torch.where(varies, out, values).to(torch.uint8)


# ----------------------------------------------------------------------------------------------
# SolarizeAdd
# ----------------------------------------------------------------------------------------------
def solarize_add(images: Tensor, additions: Tensor, threshold: float = 128.0) -> Tensor:
    """timm's ``solarize_add``: add ``additions[b]`` to the pixels below ``threshold``, clipped to the maximum.

    Both in the images' range (uint8 levels; fractions of 1 for float images). On uint8 images it
    equals timm's lookup table ``min(255, i + add) if i < threshold else i`` for integer additions.

    Example:
        >>> solarize_add(torch.tensor([[[[10, 127, 128, 200]]]], dtype=torch.uint8), torch.tensor([110.0])).flatten()
        tensor([120, 237, 128, 200], dtype=torch.uint8)
    """
    dtype = images.dtype if images.is_floating_point() else torch.float32
    added = images.to(dtype) + _per_sample(additions, images, dtype)
    return torch.where(images < threshold, added.clamp_(max=_max_value(images.dtype)).to(images.dtype), images)


# ----------------------------------------------------------------------------------------------
# One step of timm's policy, per image
# ----------------------------------------------------------------------------------------------
def timm_ops(
    images: Tensor,
    ops: Tensor,
    args: Tensor,
    resample: Tensor,
    interpolations: Sequence[str] = INTERPOLATIONS,
    fill: Sequence[float] | None = None,
) -> Tensor:
    """Apply op ``ops[b]`` with timm's argument ``args[b]`` to image ``b``, resampling with ``interpolations[resample[b]]``.

    ``args`` is what timm passes to its op function, in uint8 units whatever the dtype: the shear
    factor, translation in (float) pixels, rotation in degrees (counter-clockwise), the enhance
    factor of Brightness/Color/Contrast/Sharpness, bits kept by Posterize (below 1: 0, a black
    image, as older Pillow gives it: Pillow 13 refuses 0 bits, so timm raises there; above 8: 8),
    the Solarize threshold (0..256) and the SolarizeAdd addition (to the pixels below 128);
    AutoContrast, Equalize, Invert and Identity ignore it.

    Args:
        images: ``[B, C, H, W]`` uint8 or float, C in (1, 3).
        ops: ``[B]`` op codes (:data:`OP_NAMES`).
        args: ``[B]`` float64.
        resample: ``[B]`` integer index into ``interpolations`` (geometric ops).
        interpolations: the filters ``resample`` picks from (each of ``INTERPOLATIONS``); on a GPU each
            one is one resampling pass over the batch.
        fill: per-channel values (or one) for the area a geometric op uncovers, in the images' range.

    Shape:
        ``[B, C, H, W]`` -> same, same dtype and device (a new tensor).
    """
    check_images(images, "timm_ops")
    if images.shape[1] not in (1, 3):
        raise ValueError(f"timm_ops expects images with 1 or 3 channels, got {images.shape[1]}")
    unknown = [mode for mode in interpolations if mode not in INTERPOLATIONS]
    if unknown or not interpolations:
        raise ValueError(f"interpolations must be a non-empty sequence of {INTERPOLATIONS}, got {tuple(interpolations)!r}")
    height, width = images.shape[-2:]
    ops = ops.to(device=images.device, dtype=torch.int64, non_blocking=True)
    args = args.to(device=images.device, dtype=torch.float64, non_blocking=True)
    resample = resample.to(device=images.device, dtype=torch.int64, non_blocking=True)
    fill = None if fill is None else [float(value) for value in fill]

    # Image.rotate returns a copy at a multiple of 360 degrees; its 90/180/270 transposes equal the resampling.
    geometric = (ops >= P.SHEAR_X) & (ops <= P.ROTATE) & ~((ops == P.ROTATE) & (torch.remainder(args, 360.0) == 0))
    matrices = pil_matrices(ops, args, height, width)
    bits = torch.where(ops == P.POSTERIZE, torch.trunc(args).clamp(0, 8), 8.0).to(torch.int64)
    unit = 1.0 if images.dtype == torch.uint8 else 1.0 / 255.0
    thresholds = torch.where(ops == P.INVERT, -math.inf, args * unit)
    additions = args * unit
    # the filter of each image, by name (a name may repeat in ``interpolations``: a weighted random choice)
    filters = torch.zeros_like(resample)
    for index, mode in enumerate(interpolations):
        filters = torch.where(resample == index, INTERPOLATIONS.index(mode), filters)
    passes: list[tuple[Tensor, P._Pass]] = [
        (geometric & (filters == INTERPOLATIONS.index(mode)), lambda x, i, mode=mode: pil_affine(x, matrices[i], mode, fill))
        for mode in dict.fromkeys(interpolations)
    ]
    passes += [
        ((ops == P.BRIGHTNESS) | (ops == P.COLOR) | (ops == P.CONTRAST), lambda x, i: pil_enhance(x, ops[i], args[i])),
        (ops == P.SHARPNESS, lambda x, i: pil_sharpness(x, args[i])),
        (ops == P.POSTERIZE, lambda x, i: P.posterize(x, bits[i])),
        ((ops == P.SOLARIZE) | (ops == P.INVERT), lambda x, i: P.solarize(x, thresholds[i])),
        (ops == P.AUTOCONTRAST, lambda x, i: pil_autocontrast(x)),
        (ops == P.EQUALIZE, lambda x, i: P.equalize(x)),
        (ops == SOLARIZE_ADD, lambda x, i: solarize_add(x, additions[i], 128.0 * unit)),
    ]
    group = torch.full_like(ops, len(passes))
    for index, (rows, _) in enumerate(passes):  # each image in one pass at most
        group = torch.where(rows, index, group)
    return P.run_passes(images, group, [op for _, op in passes])
