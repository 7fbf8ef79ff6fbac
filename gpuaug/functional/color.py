"""Colour kernels: brightness, contrast, saturation, hue, grayscale, dtype, normalisation, and the
fused colour + normalise pass (torchvision's semantics; the tests hold them to it).

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

from gpuaug.functional.base import (
    BRIGHTNESS,
    CONTRAST,
    GRAY_WEIGHTS,
    HUE,
    SATURATION,
    _mask,
    _max_value,
    _per_sample,
    check_images,
)

__all__ = [
    "adjust_brightness",
    "adjust_contrast",
    "adjust_hue",
    "adjust_saturation",
    "color_jitter",
    "fused_color_normalize",
    "normalize",
    "rgb_to_grayscale",
    "to_dtype",
    "yiq_hue_matrix",
]


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
    clamp in normalised units. That clamp is torchvision's after a colour op: without one (a cast,
    grayscale and normalisation alone) float input keeps its range, as ``Normalize`` keeps it. One
    batched matmul over the pixels then does all of it. With both
    a jitter and a grayscale mask, the jitter is clamped to [0, 1] before the grayscale (a second
    matmul), since mixing unclipped channels into gray multiplied the error several times.

    It approximates the op-by-op chain: torchvision clamps (and, for uint8, truncates) after every
    op, this clamps once. Where nothing saturates the two agree to float rounding; on real photos
    with ColorJitter(0.4, 0.4, 0.4) the mean difference is 0.21 levels of 255 on float input (4 %
    of values off by more than one level, saturated pixels by up to ~57; per set of 12 photos
    0.01-0.48 levels and 0.1-11 %) and ~1.6 levels on uint8 input (per set up to 2.0), where
    torchvision also truncates after each op. ``hue`` here is the YIQ rotation
    (``yiq_hue_matrix``), not HSV: 10.4 levels from torchvision's HSV hue on average for hue in
    [-0.1, 0.1] (per set 5.4-14.5). Measured on 16 sets of 12 crops of scikit-image's bundled
    colour photos (``gpuaug.tools.samples.photo_crops(12, seed, short_side=(60, 140))``, seeds
    0-15, resized to 96x128, each with its own draws); ``tests/test_functional.py`` holds these
    figures on that set.

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
    inverse_std, shift = normalize_constants(mean, std, device)
    bounds = [(-mean[c] / std[c], (1.0 - mean[c]) / std[c]) for c in range(3)]
    contrast_shift = ((1.0 - contrast_f) * brightness_f).view(-1, 1, 1) if contrast is not None else None
    gray = None
    if grayscale_mask is not None:
        gray = torch.where(grayscale_mask.to(device=device, dtype=torch.bool).view(-1, 1, 1), luma_matrix, identity)
    jittered = any(value is not None for value in (brightness, contrast, saturation, hue))
    two_pass = gray is not None and jittered
    # Clamp to [0, 1] (in normalised units) only where torchvision's ops clamp: after a colour op.
    # Float input outside [0, 1] is normalised as it is (ToDtype(scale=False), float datasets); uint8
    # input is in range anyway (the clamp only guards rounding).
    clamp = jittered or images.dtype == torch.uint8
    scale = 1.0 / 255.0 if images.dtype == torch.uint8 else 1.0

    out = torch.empty((batch, 3, height * width), dtype=dtype, device=device)
    # On the CPU the pixels go through in chunks of a few images that stay in cache (faster than
    # one pass over the batch: the `aug` benchmark measures it).
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
        if clamp:
            for channel, (low, high) in enumerate(bounds):
                result[:, channel].clamp_(low, high)
        if target is None:
            out[part] = result
    return out.view(batch, 3, height, width)


_CPU_CHUNK = 2


def _float_planes(images: Tensor) -> Tensor:
    """``[B, C, H, W]`` as contiguous float32 ``[B, C, HW]`` planes (one pass, whatever the layout).

    The batched matmul wants contiguous planes (a channels-last image read as a transposed operand
    is several times slower than converting it first).
    """
    batch, channels, height, width = images.shape
    return images.to(torch.float32, memory_format=torch.contiguous_format).view(batch, channels, height * width)


@functools.lru_cache(maxsize=16)
def _color_constants(device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """Luma row, identity and all-luma 3x3 on ``device``, built once (no per-call host copies)."""
    gray_row = torch.tensor(GRAY_WEIGHTS, dtype=torch.float32).to(device)
    return gray_row, torch.eye(3, device=device), gray_row.expand(3, 3).contiguous()


@functools.lru_cache(maxsize=64)
def normalize_constants(mean: tuple[float, ...], std: tuple[float, ...], device: torch.device) -> tuple[Tensor, Tensor]:
    """``1/std`` and ``-mean/std`` as float32 ``[3, 1]`` tensors on ``device``, built once per normalisation
    (every executor normalises with these values: torch, Triton)."""
    mean_t = torch.tensor(mean, dtype=torch.float32).view(3, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(3, 1)
    return (1.0 / std_t).to(device), (-mean_t / std_t).to(device)


@functools.lru_cache(maxsize=8)
def hue_basis(device: torch.device) -> Tensor:
    """The YIQ hue rotation ``yiq_to_rgb @ R(angle) @ rgb_to_yiq`` as ``P + cos(angle) Q + sin(angle) S``."""
    to_rgb, to_yiq = _YIQ_TO_RGB, _RGB_TO_YIQ
    constant = torch.outer(to_rgb[:, 0], to_yiq[0])
    cosine = torch.outer(to_rgb[:, 1], to_yiq[1]) + torch.outer(to_rgb[:, 2], to_yiq[2])
    sine = torch.outer(to_rgb[:, 2], to_yiq[1]) - torch.outer(to_rgb[:, 1], to_yiq[2])
    return torch.cat([constant.flatten(), cosine.flatten(), sine.flatten()]).to(torch.float32).to(device)


@functools.lru_cache(maxsize=64)
def normalize_bounds(mean: tuple[float, ...], std: tuple[float, ...], device: torch.device) -> Tensor:
    """``1/std``, ``-mean/std``, then the clamps ``(1 - mean)/std`` and ``-mean/std``: float32 ``[12]``
    on ``device``, the Triton pass's normalisation table."""
    scale, shift = normalize_constants(mean, std, torch.device("cpu"))
    upper = torch.tensor([(1.0 - m) / s for m, s in zip(mean, std)], dtype=torch.float32)
    lower = torch.tensor([-m / s for m, s in zip(mean, std)], dtype=torch.float32)
    return torch.cat([scale.flatten(), shift.flatten(), upper, lower]).to(device)
