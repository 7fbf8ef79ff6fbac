"""Fused Triton kernels: ragged crop + antialiased resize + flip + colour affine + normalise.

The whole fused pass of a ``Compose`` (``gpuaug.fusion.FusedOps``) runs as at most 3 Triton
kernels (plus, with contrast, one fill of 3 int64 per image), whatever the batch size, straight
from a packed ragged uint8 batch (``gpuaug.io.packed.PackedBatch``) to the ``[B, 3, h, w]``
channels-last output, after one host-to-device copy of a small per-image table:

1. ``_resample_rows``: the vertical half of the separable resampling, per image: the rows of
   its box resampled to the output height (the window's rows, flipped where asked) into a float32
   intermediate ``[3, out_h, image_width]`` per image. Programs are ``(image, column block)``
   tiles listed on the host (image widths are known there), times row blocks.
2. ``_finish``: the horizontal half (or a direct read for a window-only geometry), rounding to
   uint8 as the torch path does, then either the colour affine + normalisation written to the
   output, or, when contrast needs each image's mean grey, the resampled uint8 image plus exact
   integer per-channel sums (int64 atomics: deterministic).
3. ``_finish`` again, reading that uint8 image, for the colour pass (contrast only).

The maths is the torch reference's (``functional._resample_taps`` for torchvision's antialiased
bilinear weights, ``functional.fused_color_normalize`` for the colour affine); the tests hold
them equal (float 1e-4, uint8 +-1). Every per-image quantity (taps, colour matrix) is computed
inside the kernels from the raw params, so the pass costs no small torch launches.

Its speed on a GPU (images per second, kernel launches per batch) is measured by
``python -m benchmarks aug`` and recorded in ``benchmarks/results/`` and the README.

Under ``TRITON_INTERPRET=1`` (set before this module is imported) the kernels run on CPU tensors
through Triton's interpreter; that is how CI tests them.

Example:
    >>> # on CUDA, or on CPU tensors under TRITON_INTERPRET=1; Compose builds ops and calls fused()
    >>> # ga.Compose([ga.RandomResizedCrop(224), ga.Normalize(...)], backend="triton")(packed_batch)
"""

from __future__ import annotations

import os

import numpy as np
import torch
import triton
import triton.language as tl
from torch import Tensor

from gpuaug.functional.color import hue_basis, normalize_bounds
from gpuaug.fusion.ops import FusedOps, combine

__all__ = ["INTERPRETING", "fused"]

INTERPRETING = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
"""Whether the kernels run in Triton's interpreter (CPU tensors) rather than compiled for a GPU."""

_META = 12
"""int64 fields per image in the metadata table: offset, height, width, 3 strides, virtual height
and width, window top and left, intermediate offset and row stride (``fused`` fills it)."""


# ----------------------------------------------------------------------------------------------
# Device helpers
# ----------------------------------------------------------------------------------------------
@triton.jit
def _taps(position, length, virtual, ANTIALIAS: tl.constexpr):
    """First source index, tap count, centre relative to the first tap and 1/support, per position.

    torchvision's bilinear weights for sampling ``length`` source pixels onto ``virtual`` points
    (``functional._resample_taps``): with antialias the triangle filter widens by the downscale
    factor. Index maths in float64 (exact on the largest images), the fraction in float32.
    """
    scale = length.to(tl.float64) / virtual.to(tl.float64)
    if ANTIALIAS:
        support = tl.maximum(scale, 1.0)
        center = scale * (position.to(tl.float64) + 0.5)
        first = tl.maximum(tl.floor(center - support + 0.5), 0.0)
        last = tl.minimum(tl.floor(center + support + 0.5), length.to(tl.float64))
        count = (last - first).to(tl.int32)
        shift = center - first
        inverse = 1.0 / support
    else:
        real = tl.maximum(scale * (position.to(tl.float64) + 0.5) - 0.5, 0.0)
        first = tl.floor(real)
        count = tl.full(position.shape, 2, tl.int32)
        shift = real - first + 0.5  # weights 1 - |k - fraction|
        inverse = tl.full(position.shape, 1.0, tl.float64)
    return first.to(tl.int64), count, shift, inverse


@triton.jit
def _tent(k, shift, inverse):
    """Tap ``k``'s triangle-filter weight (before normalising); 0 past the filter's support."""
    return tl.maximum(1.0 - tl.abs((k + 0.5 - shift) * inverse), 0.0)


@triton.jit
def _normaliser(count, shift, inverse, taps, ANTIALIAS: tl.constexpr, BLOCK: tl.constexpr):
    """1 / the sum of each position's ``count`` tap weights (float64, as torchvision sums them); 1 without antialias."""
    normaliser = tl.full([BLOCK], 1.0, tl.float64)
    if ANTIALIAS:
        total = tl.zeros([BLOCK], dtype=tl.float64)
        for k in range(0, taps):
            total += tl.where(k < count, _tent(k, shift, inverse), 0.0)
        normaliser = 1.0 / tl.maximum(total, 1e-12)
    return normaliser


@triton.jit
def _box(boxes_ptr, image, height, width, HAS_BOXES: tl.constexpr):
    if HAS_BOXES:
        top = tl.load(boxes_ptr + image * 4).to(tl.int64)
        left = tl.load(boxes_ptr + image * 4 + 1).to(tl.int64)
        box_height = tl.load(boxes_ptr + image * 4 + 2).to(tl.int64)
        box_width = tl.load(boxes_ptr + image * 4 + 3).to(tl.int64)
    else:
        top = height * 0
        left = width * 0
        box_height = height
        box_width = width
    return top, left, box_height, box_width


@triton.jit
def _flag(mask_ptr, image, HAS: tl.constexpr):
    if HAS:
        value = tl.load(mask_ptr + image).to(tl.int32) != 0
    else:
        value = image < 0  # False, as a tensor
    return value


@triton.jit
def _mirror(flip_ptr, image, HAS: tl.constexpr, start, box, size, window, virtual, out):
    """A flip before the geometry (``HAS``): the box read mirrored in the image, and the output window
    mirrored in the virtual canvas (exact; ``fusion.ops.mirror_boxes`` is the same rule)."""
    if HAS:
        flipped = _flag(flip_ptr, image, True)
        start = tl.where(flipped, size - start - box, start)
        window = tl.where(flipped, virtual - window - out, window)
    return start, window


@triton.jit
def _load_rgb(pointers, plane, mask):
    """The three channel planes ``plane`` apart from ``pointers``, as float32 (0 where masked)."""
    red = tl.load(pointers, mask=mask, other=0).to(tl.float32)
    green = tl.load(pointers + plane, mask=mask, other=0).to(tl.float32)
    blue = tl.load(pointers + 2 * plane, mask=mask, other=0).to(tl.float32)
    return red, green, blue


@triton.jit
def _store_rgb(pointers, plane, red, green, blue, mask):
    """Three channels into the planes ``plane`` apart from ``pointers``, in their element type."""
    kind = pointers.dtype.element_ty
    tl.store(pointers, red.to(kind), mask=mask)
    tl.store(pointers + plane, green.to(kind), mask=mask)
    tl.store(pointers + 2 * plane, blue.to(kind), mask=mask)


@triton.jit
def _round(values):
    """Round half to even and clamp to [0, 255], as ``torch.round`` + ``clamp`` before a uint8 cast."""
    rounded = tl.floor(values + 0.5)
    tie = (rounded - values) == 0.5
    odd = (rounded - 2.0 * tl.floor(rounded * 0.5)) == 1.0
    rounded = tl.where(tie & odd, rounded - 1.0, rounded)
    return tl.minimum(tl.maximum(rounded, 0.0), 255.0)


@triton.jit
def _mm(a00, a01, a02, a10, a11, a12, a20, a21, a22, b00, b01, b02, b10, b11, b12, b20, b21, b22):
    return (
        a00 * b00 + a01 * b10 + a02 * b20,
        a00 * b01 + a01 * b11 + a02 * b21,
        a00 * b02 + a01 * b12 + a02 * b22,
        a10 * b00 + a11 * b10 + a12 * b20,
        a10 * b01 + a11 * b11 + a12 * b21,
        a10 * b02 + a11 * b12 + a12 * b22,
        a20 * b00 + a21 * b10 + a22 * b20,
        a20 * b01 + a21 * b11 + a22 * b21,
        a20 * b02 + a21 * b12 + a22 * b22,
    )


@triton.jit
def _color(
    red, green, blue, image, sums_ptr, brightness_ptr, contrast_ptr, saturation_ptr, hue_ptr, gray_ptr, basis_ptr,
    norm_ptr, inv_count, HAS_BRIGHTNESS: tl.constexpr, HAS_CONTRAST: tl.constexpr, HAS_SATURATION: tl.constexpr,
    HAS_HUE: tl.constexpr, HAS_GRAY: tl.constexpr, TWO_PASS: tl.constexpr,
):  # fmt: skip
    """``functional.fused_color_normalize`` for one tile of uint8-valued floats: the output channels.

    Factors are ``[B]`` float32, ``norm_ptr`` 12 floats (1/std, -mean/std, (1 - mean)/std and the
    lower clamp -mean/std rounded as the reference's host bound) and ``basis_ptr`` the 27 floats of
    the YIQ hue rotation as ``P + cos Q + sin S``.
    """
    gr: tl.constexpr = 0.2989  # torchvision's luma weights (functional.GRAY_WEIGHTS)
    gg: tl.constexpr = 0.587
    gb: tl.constexpr = 0.114
    scale: tl.constexpr = 1.0 / 255.0
    brightness = 1.0
    contrast = 1.0
    saturation = 1.0
    if HAS_BRIGHTNESS:
        brightness = tl.load(brightness_ptr + image).to(tl.float32)
    if HAS_CONTRAST:
        contrast = tl.load(contrast_ptr + image).to(tl.float32)
    if HAS_SATURATION:
        saturation = tl.load(saturation_ptr + image).to(tl.float32)
    rest = 1.0 - saturation
    j00 = saturation + rest * gr
    j01 = rest * gg
    j02 = rest * gb
    j10 = rest * gr
    j11 = saturation + rest * gg
    j12 = rest * gb
    j20 = rest * gr
    j21 = rest * gg
    j22 = saturation + rest * gb
    if HAS_HUE:
        angle = tl.load(hue_ptr + image).to(tl.float32) * -6.283185307179586  # turns -> radians, torchvision's sign
        cos = tl.cos(angle)
        sin = tl.sin(angle)
        h00 = tl.load(basis_ptr + 0) + cos * tl.load(basis_ptr + 9) + sin * tl.load(basis_ptr + 18)
        h01 = tl.load(basis_ptr + 1) + cos * tl.load(basis_ptr + 10) + sin * tl.load(basis_ptr + 19)
        h02 = tl.load(basis_ptr + 2) + cos * tl.load(basis_ptr + 11) + sin * tl.load(basis_ptr + 20)
        h10 = tl.load(basis_ptr + 3) + cos * tl.load(basis_ptr + 12) + sin * tl.load(basis_ptr + 21)
        h11 = tl.load(basis_ptr + 4) + cos * tl.load(basis_ptr + 13) + sin * tl.load(basis_ptr + 22)
        h12 = tl.load(basis_ptr + 5) + cos * tl.load(basis_ptr + 14) + sin * tl.load(basis_ptr + 23)
        h20 = tl.load(basis_ptr + 6) + cos * tl.load(basis_ptr + 15) + sin * tl.load(basis_ptr + 24)
        h21 = tl.load(basis_ptr + 7) + cos * tl.load(basis_ptr + 16) + sin * tl.load(basis_ptr + 25)
        h22 = tl.load(basis_ptr + 8) + cos * tl.load(basis_ptr + 17) + sin * tl.load(basis_ptr + 26)
        j00, j01, j02, j10, j11, j12, j20, j21, j22 = _mm(
            h00, h01, h02, h10, h11, h12, h20, h21, h22, j00, j01, j02, j10, j11, j12, j20, j21, j22
        )
    gain = brightness * contrast
    offset = 0.0
    if HAS_CONTRAST:
        sum_r = tl.load(sums_ptr + image * 3).to(tl.float64)
        sum_g = tl.load(sums_ptr + image * 3 + 1).to(tl.float64)
        sum_b = tl.load(sums_ptr + image * 3 + 2).to(tl.float64)
        mean_luma = ((sum_r * inv_count).to(tl.float32) * gr + (sum_g * inv_count).to(tl.float32) * gg
                     + (sum_b * inv_count).to(tl.float32) * gb) * scale  # fmt: skip
        offset = (1.0 - contrast) * brightness * mean_luma
    inverse_r = tl.load(norm_ptr + 0)
    inverse_g = tl.load(norm_ptr + 1)
    inverse_b = tl.load(norm_ptr + 2)
    shift_r = tl.load(norm_ptr + 3)
    shift_g = tl.load(norm_ptr + 4)
    shift_b = tl.load(norm_ptr + 5)
    if TWO_PASS:  # a grayscale mask and a jitter (set on the host: HAS_GRAY and any factor)
        # the jitter clamped to [0, 1], then grayscale + normalisation (as the torch reference)
        k = gain * scale
        red2 = tl.minimum(tl.maximum(j00 * k * red + j01 * k * green + j02 * k * blue + offset, 0.0), 1.0)
        green2 = tl.minimum(tl.maximum(j10 * k * red + j11 * k * green + j12 * k * blue + offset, 0.0), 1.0)
        blue2 = tl.minimum(tl.maximum(j20 * k * red + j21 * k * green + j22 * k * blue + offset, 0.0), 1.0)
        gray = tl.load(gray_ptr + image).to(tl.int32) != 0
        luma = gr * red2 + gg * green2 + gb * blue2
        out_r = tl.where(gray, luma, red2) * inverse_r + shift_r
        out_g = tl.where(gray, luma, green2) * inverse_g + shift_g
        out_b = tl.where(gray, luma, blue2) * inverse_b + shift_b
    else:
        if HAS_GRAY:  # no jitter: the grayscale matrix alone
            gray = tl.load(gray_ptr + image).to(tl.int32) != 0
            j00 = tl.where(gray, gr, 1.0)
            j01 = tl.where(gray, gg, 0.0)
            j02 = tl.where(gray, gb, 0.0)
            j10 = tl.where(gray, gr, 0.0)
            j11 = tl.where(gray, gg, 1.0)
            j12 = tl.where(gray, gb, 0.0)
            j20 = tl.where(gray, gr, 0.0)
            j21 = tl.where(gray, gg, 0.0)
            j22 = tl.where(gray, gb, 1.0)
        k_r = gain * inverse_r * scale
        k_g = gain * inverse_g * scale
        k_b = gain * inverse_b * scale
        out_r = (j00 * k_r) * red + (j01 * k_r) * green + (j02 * k_r) * blue + (offset * inverse_r + shift_r)
        out_g = (j10 * k_g) * red + (j11 * k_g) * green + (j12 * k_g) * blue + (offset * inverse_g + shift_g)
        out_b = (j20 * k_b) * red + (j21 * k_b) * green + (j22 * k_b) * blue + (offset * inverse_b + shift_b)
    out_r = tl.minimum(tl.maximum(out_r, tl.load(norm_ptr + 9)), tl.load(norm_ptr + 6))
    out_g = tl.minimum(tl.maximum(out_g, tl.load(norm_ptr + 10)), tl.load(norm_ptr + 7))
    out_b = tl.minimum(tl.maximum(out_b, tl.load(norm_ptr + 11)), tl.load(norm_ptr + 8))
    return out_r, out_g, out_b


# ----------------------------------------------------------------------------------------------
# Kernels
# ----------------------------------------------------------------------------------------------
@triton.jit
def _resample_rows(
    src_ptr, meta_ptr, tiles_ptr, boxes_ptr, hpre_ptr, vpre_ptr, vflip_ptr, mid_ptr, out_height,
    HAS_BOXES: tl.constexpr, HAS_HPRE: tl.constexpr, HAS_VPRE: tl.constexpr, HAS_VFLIP: tl.constexpr,
    ANTIALIAS: tl.constexpr, BLOCK_Y: tl.constexpr, BLOCK_X: tl.constexpr,
):  # fmt: skip
    """Vertical pass: output rows of each image's box, float32, into its intermediate planes."""
    tile = tl.program_id(0)
    image = tl.load(tiles_ptr + 2 * tile)
    column_start = tl.load(tiles_ptr + 2 * tile + 1)
    meta = meta_ptr + image * 12
    offset = tl.load(meta + 0)
    height = tl.load(meta + 1)
    width = tl.load(meta + 2)
    stride_c = tl.load(meta + 3)
    stride_r = tl.load(meta + 4)
    stride_w = tl.load(meta + 5)
    virtual_h = tl.load(meta + 6)
    window_top = tl.load(meta + 8)
    mid_offset = tl.load(meta + 10)
    mid_stride = tl.load(meta + 11)
    top, left, box_height, box_width = _box(boxes_ptr, image, height, width, HAS_BOXES)
    left, _ = _mirror(hpre_ptr, image, HAS_HPRE, left, box_width, width, 0, 0, 0)  # the columns' window: in _finish
    top, window_top = _mirror(vpre_ptr, image, HAS_VPRE, top, box_height, height, window_top, virtual_h, out_height)
    if column_start < box_width:
        rows = tl.program_id(1) * BLOCK_Y + tl.arange(0, BLOCK_Y)
        window_rows = tl.where(_flag(vflip_ptr, image, HAS_VFLIP), out_height - 1 - rows, rows)
        virtual_rows = window_rows + window_top
        row_ok = (rows < out_height) & (virtual_rows >= 0) & (virtual_rows < virtual_h)
        first, count, shift, inverse = _taps(virtual_rows, box_height, virtual_h, ANTIALIAS)
        count = tl.where(row_ok, count, 0)
        taps = tl.max(count, axis=0)
        normaliser = _normaliser(count, shift, inverse, taps, ANTIALIAS, BLOCK_Y)
        columns = column_start + tl.arange(0, BLOCK_X)
        column_ok = columns < box_width
        base = src_ptr + offset + (left + columns) * stride_w
        red = tl.zeros([BLOCK_Y, BLOCK_X], dtype=tl.float32)
        green = tl.zeros([BLOCK_Y, BLOCK_X], dtype=tl.float32)
        blue = tl.zeros([BLOCK_Y, BLOCK_X], dtype=tl.float32)
        for k in range(0, taps):
            weight = _tent(k, shift, inverse) * normaliser  # 0 past count: masked
            weight = weight.to(tl.float32)[:, None]
            source_rows = top + tl.minimum(first + k, box_height - 1)
            pointers = base[None, :] + (source_rows * stride_r)[:, None]
            mask = ((k < count) & row_ok)[:, None] & column_ok[None, :]
            r, g, b = _load_rgb(pointers, stride_c, mask)
            red += r * weight
            green += g * weight
            blue += b * weight
        plane = out_height * mid_stride
        target = mid_ptr + mid_offset + (rows * mid_stride)[:, None] + columns[None, :]
        store_mask = (rows < out_height)[:, None] & column_ok[None, :]
        _store_rgb(target, plane, red, green, blue, store_mask)


@triton.jit
def _finish(
    src_ptr, mid_ptr, temp_ptr, out_ptr, sums_ptr, meta_ptr, boxes_ptr,
    hpre_ptr, vpre_ptr, hflip_ptr, vflip_ptr, brightness_ptr, contrast_ptr, saturation_ptr, hue_ptr,
    gray_ptr, basis_ptr, norm_ptr, out_height, out_width, out_stride_b, out_stride_c, out_stride_y, out_stride_x, inv_count,
    SOURCE: tl.constexpr, WRITE: tl.constexpr, COLOR: tl.constexpr,
    HAS_BOXES: tl.constexpr, HAS_HPRE: tl.constexpr, HAS_VPRE: tl.constexpr,
    HAS_HFLIP: tl.constexpr, HAS_VFLIP: tl.constexpr,
    HAS_BRIGHTNESS: tl.constexpr, HAS_CONTRAST: tl.constexpr, HAS_SATURATION: tl.constexpr,
    HAS_HUE: tl.constexpr, HAS_GRAY: tl.constexpr, TWO_PASS: tl.constexpr,
    ANTIALIAS: tl.constexpr, BLOCK_Y: tl.constexpr, BLOCK_X: tl.constexpr,
):  # fmt: skip
    """Horizontal pass / direct window read (SOURCE 0 / 1) or a uint8 re-read (2), then:
    WRITE 0 the output (colour pass if COLOR, else uint8), 1 uint8 image + channel sums, 2 sums only."""
    image = tl.program_id(2).to(tl.int64)
    rows = tl.program_id(1) * BLOCK_Y + tl.arange(0, BLOCK_Y)
    columns = tl.program_id(0) * BLOCK_X + tl.arange(0, BLOCK_X)
    inside = (rows < out_height)[:, None] & (columns < out_width)[None, :]
    if SOURCE == 2:
        pointers = temp_ptr + image * 3 * out_height * out_width + (rows * out_width)[:, None] + columns[None, :]
        red, green, blue = _load_rgb(pointers, out_height * out_width, inside)
    else:
        meta = meta_ptr + image * 12
        height = tl.load(meta + 1)
        width = tl.load(meta + 2)
        virtual_w = tl.load(meta + 7)
        window_left = tl.load(meta + 9)
        top, left, box_height, box_width = _box(boxes_ptr, image, height, width, HAS_BOXES)
        left, window_left = _mirror(hpre_ptr, image, HAS_HPRE, left, box_width, width, window_left, virtual_w, out_width)
        window_columns = tl.where(_flag(hflip_ptr, image, HAS_HFLIP), out_width - 1 - columns, columns)
        virtual_columns = window_columns + window_left
        column_ok = (columns < out_width) & (virtual_columns >= 0) & (virtual_columns < virtual_w)
        if SOURCE == 0:
            mid_offset = tl.load(meta + 10)
            mid_stride = tl.load(meta + 11)
            first, count, shift, inverse = _taps(virtual_columns, box_width, virtual_w, ANTIALIAS)
            count = tl.where(column_ok, count, 0)
            taps = tl.max(count, axis=0)
            normaliser = _normaliser(count, shift, inverse, taps, ANTIALIAS, BLOCK_X)
            plane = out_height * mid_stride
            base = mid_ptr + mid_offset + (rows * mid_stride)[:, None]
            row_ok = (rows < out_height)[:, None]
            red = tl.zeros([BLOCK_Y, BLOCK_X], dtype=tl.float32)
            green = tl.zeros([BLOCK_Y, BLOCK_X], dtype=tl.float32)
            blue = tl.zeros([BLOCK_Y, BLOCK_X], dtype=tl.float32)
            for k in range(0, taps):
                weight = _tent(k, shift, inverse) * normaliser  # 0 past count: masked
                weight = weight.to(tl.float32)[None, :]
                pointers = base + tl.minimum(first + k, box_width - 1)[None, :]
                mask = row_ok & (k < count)[None, :]
                r, g, b = _load_rgb(pointers, plane, mask)
                red += r * weight
                green += g * weight
                blue += b * weight
            red = _round(red)
            green = _round(green)
            blue = _round(blue)
        else:  # a window of the image itself (CenterCrop first, or no geometry)
            offset = tl.load(meta + 0)
            stride_c = tl.load(meta + 3)
            stride_r = tl.load(meta + 4)
            stride_w = tl.load(meta + 5)
            virtual_h = tl.load(meta + 6)
            window_top = tl.load(meta + 8)
            top, window_top = _mirror(vpre_ptr, image, HAS_VPRE, top, box_height, height, window_top, virtual_h, out_height)
            window_rows = tl.where(_flag(vflip_ptr, image, HAS_VFLIP), out_height - 1 - rows, rows)
            virtual_rows = window_rows + window_top
            row_ok = (rows < out_height) & (virtual_rows >= 0) & (virtual_rows < virtual_h)
            pointers = (src_ptr + offset + ((top + virtual_rows) * stride_r)[:, None]
                        + ((left + virtual_columns) * stride_w)[None, :])  # fmt: skip
            mask = row_ok[:, None] & column_ok[None, :]
            red, green, blue = _load_rgb(pointers, stride_c, mask)
    if WRITE == 0:
        if COLOR:
            red, green, blue = _color(
                red, green, blue, image, sums_ptr, brightness_ptr, contrast_ptr, saturation_ptr, hue_ptr, gray_ptr,
                basis_ptr, norm_ptr, inv_count, HAS_BRIGHTNESS, HAS_CONTRAST, HAS_SATURATION, HAS_HUE, HAS_GRAY, TWO_PASS,
            )  # fmt: skip
        target = out_ptr + image * out_stride_b + (rows * out_stride_y)[:, None] + (columns * out_stride_x)[None, :]
        _store_rgb(target, out_stride_c, red, green, blue, inside)
    else:
        if WRITE == 1:
            target = temp_ptr + image * 3 * out_height * out_width + (rows * out_width)[:, None] + columns[None, :]
            _store_rgb(target, out_height * out_width, red, green, blue, inside)
        tl.atomic_add(sums_ptr + image * 3, tl.sum(tl.sum(tl.where(inside, red, 0.0).to(tl.int32), axis=1), axis=0).to(tl.int64))
        tl.atomic_add(
            sums_ptr + image * 3 + 1, tl.sum(tl.sum(tl.where(inside, green, 0.0).to(tl.int32), axis=1), axis=0).to(tl.int64)
        )
        tl.atomic_add(
            sums_ptr + image * 3 + 2, tl.sum(tl.sum(tl.where(inside, blue, 0.0).to(tl.int32), axis=1), axis=0).to(tl.int64)
        )


# ----------------------------------------------------------------------------------------------
# Host side
# ----------------------------------------------------------------------------------------------
_BLOCKS = {"rows": (4, 128, 4), "finish": (8, 64, 4)}  # (BLOCK_Y, BLOCK_X, num_warps)
_EXACT = {"enable_fp_fusion": False}  # multiply, then add, as the torch path does: equal sums, equal rounding


def _blocks(out_height: int, out_width: int, widest: int) -> dict[str, tuple[int, int, int]]:
    """``(BLOCK_Y, BLOCK_X, num_warps)`` per kernel. The interpreter runs programs one by one and pays per
    operation, not per element, so there the blocks grow to cover whole images (a 1600x2400 box
    to 32x48 took 14 s with 32x1024 blocks and 1 s with 32x4096)."""
    if not INTERPRETING:
        return _BLOCKS
    rows = min(64, triton.next_power_of_2(out_height))
    return {
        "rows": (rows, min(4096, triton.next_power_of_2(widest)), 4),
        "finish": (rows, min(256, triton.next_power_of_2(out_width)), 4),
    }


def fused(data: Tensor, offsets, strides, ops: FusedOps, memory_format=torch.channels_last) -> Tensor:
    """Run the fused pass ``ops`` on uint8 images stored in ``data``.

    Args:
        data: a uint8 tensor holding every image (a ``PackedBatch``'s buffer, or a ``[B, 3, H, W]``
            batch itself); its ``data_ptr`` is the base of ``offsets``.
        offsets: ``[B]`` element offset of each image from ``data``'s first element (a host
            tensor, array or list).
        strides: ``[B, 3]`` ``(channel, row, column)`` element strides of each image (host).
        ops: the fused pass (its ``sizes`` are the images' sizes); its output size must be
            common to all images (or, without geometry, the images must share one size).
        memory_format: of the output.

    Shape:
        ``B`` images ``[3, H_i, W_i]`` -> ``[B, 3, h, w]``: uint8 without a colour stage, else
        ``ops.dtype`` (float32 by default), channels-last.

    Example:
        >>> # ops = FusedOps(batch.sizes); ops.crop(boxes, (224, 224), True); ops.normalize(mean, std)
        >>> # fused(batch.data, batch.offsets, batch.strides, ops).shape  -> [B, 3, 224, 224]
    """
    device = data.device
    sizes = ops.sizes
    batch = len(sizes)
    if ops.geometric:
        size = ops.size
        if size is None:
            raise ValueError("the fused pass needs one output size for every image")
    else:
        if len(set(sizes)) != 1:
            raise ValueError(f"images of different sizes {sorted(set(sizes))[:3]}... need a geometric op to become one batch")
        size = sizes[0]
    out_height, out_width = size
    if batch > 65535:
        raise ValueError(f"the fused pass takes at most 65535 images per call, got {batch}")
    virtual = ops.virtual if ops.virtual is not None else sizes
    window = ops.window if ops.window is not None else 0
    resample = ops.resample

    # One host table (metadata + column tiles) built with numpy (torch's CPU ops cost ~10 us each,
    # and this runs per batch on the producer thread), then one host-to-device copy.
    meta = np.empty((batch, _META), dtype=np.int64)
    meta[:, 0] = np.asarray(offsets, dtype=np.int64)
    meta[:, 1:3] = np.asarray(sizes, dtype=np.int64).reshape(batch, 2)
    meta[:, 3:6] = np.asarray(strides, dtype=np.int64).reshape(batch, 3)
    meta[:, 6:8] = np.asarray(virtual, dtype=np.int64).reshape(batch, 2)
    meta[:, 8:10] = window
    widths = meta[:, 2]
    widest = int(widths.max())
    if INTERPRETING and ops.boxes is not None:  # CPU tensors: reading the boxes costs no device sync
        widest = int(ops.boxes[:, 3].max())
    blocks = _blocks(out_height, out_width, widest)
    mid_sizes = 3 * out_height * widths
    meta[:, 10] = np.cumsum(mid_sizes) - mid_sizes
    meta[:, 11] = widths
    parts = [meta.reshape(-1)]
    tile_count = 0
    if resample:
        block_x = blocks["rows"][1]
        per_image = (widths + block_x - 1) // block_x
        tile_count = int(per_image.sum())
        image_index = np.repeat(np.arange(batch, dtype=np.int64), per_image)
        starts = np.arange(tile_count, dtype=np.int64) - np.repeat(np.cumsum(per_image) - per_image, per_image)
        parts.append(np.stack([image_index, starts * block_x], 1).reshape(-1))
    table_np = np.concatenate(parts)
    if device.type == "cuda":  # pinned (torch's caching host allocator), so the copy is asynchronous
        table = torch.empty(table_np.shape, dtype=torch.int64, pin_memory=True)
        table.numpy()[:] = table_np
        table = table.to(device, non_blocking=True)
    else:
        table = torch.from_numpy(table_np)
    meta_d = table[: batch * _META]
    tiles_d = table[batch * _META :] if resample else meta_d

    def on_device(value: Tensor | None, dtype: torch.dtype | None = None) -> Tensor | None:
        if value is None:
            return None
        return value.to(device=device, dtype=dtype or value.dtype, non_blocking=True)

    boxes = on_device(ops.boxes, torch.int64)
    hpre = on_device(combine(ops.hflips_before, "xor"))
    vpre = on_device(combine(ops.vflips_before, "xor"))
    hflip = on_device(combine(ops.hflips, "xor"))
    vflip = on_device(combine(ops.vflips, "xor"))
    colored = ops.colored
    out_dtype = (ops.dtype or torch.float32) if colored else torch.uint8
    out = torch.empty((batch, 3, out_height, out_width), dtype=out_dtype, device=device, memory_format=memory_format)
    flags = {
        "HAS_BOXES": boxes is not None,
        "HAS_HPRE": hpre is not None,
        "HAS_VPRE": vpre is not None,
        "ANTIALIAS": ops.antialias,
    }
    dummy = meta_d
    mid = dummy
    if resample:
        block_y, block_x, warps = blocks["rows"]
        mid = torch.empty(int(mid_sizes.sum()), dtype=torch.float32, device=device)
        grid = (tile_count, triton.cdiv(out_height, block_y))
        _resample_rows[grid](
            data, meta_d, tiles_d, _or(boxes, dummy), _or(hpre, dummy), _or(vpre, dummy), _or(vflip, dummy), mid, out_height,
            HAS_VFLIP=vflip is not None, BLOCK_Y=block_y, BLOCK_X=block_x, num_warps=warps, **flags, **_EXACT,
        )  # fmt: skip

    factors = [dummy] * 4
    gray, basis, norm = dummy, dummy, dummy
    color_flags = {"HAS_BRIGHTNESS": False, "HAS_CONTRAST": False, "HAS_SATURATION": False, "HAS_HUE": False, "HAS_GRAY": False}
    if colored:
        present = {
            "HAS_BRIGHTNESS": ops.brightness,
            "HAS_CONTRAST": ops.contrast,
            "HAS_SATURATION": ops.saturation,
            "HAS_HUE": ops.hue,
        }
        for slot, (name, value) in enumerate(present.items()):
            if value is not None:
                color_flags[name] = True
                factors[slot] = on_device(value, torch.float32)
        gray_mask = combine(ops.grayscale, "or")
        if gray_mask is not None:
            color_flags["HAS_GRAY"] = True
            gray = on_device(gray_mask)
        basis = hue_basis(device)
        mean = ops.mean if ops.mean is not None else (0.0, 0.0, 0.0)
        std = ops.std if ops.std is not None else (1.0, 1.0, 1.0)
        norm = normalize_bounds(tuple(mean), tuple(std), device)
    jittered = any(color_flags[name] for name in ("HAS_BRIGHTNESS", "HAS_CONTRAST", "HAS_SATURATION", "HAS_HUE"))
    color_flags["TWO_PASS"] = color_flags["HAS_GRAY"] and jittered
    sums = dummy
    two_step = colored and color_flags["HAS_CONTRAST"]
    if two_step:
        sums = torch.zeros((batch, 3), dtype=torch.int64, device=device)
    block_y, block_x, warps = blocks["finish"]
    grid = (triton.cdiv(out_width, block_x), triton.cdiv(out_height, block_y), batch)
    common = dict(
        HAS_HFLIP=hflip is not None,
        HAS_VFLIP=vflip is not None,
        BLOCK_Y=block_y,
        BLOCK_X=block_x,
        num_warps=warps,
        **flags,
        **color_flags,
        **_EXACT,
    )
    pointers = (boxes, hpre, vpre, hflip, vflip)
    pointers = tuple(_or(value, dummy) for value in pointers)
    shape_args = (out_height, out_width, *out.stride(), 1.0 / (out_height * out_width))
    source = 0 if resample else 1
    temp = dummy
    if two_step:
        # resampled uint8 image + exact channel sums, then the colour pass over it
        if resample:
            temp = torch.empty((batch, 3, out_height, out_width), dtype=torch.uint8, device=device)
        _finish[grid](
            data, mid, temp, out, sums, meta_d, *pointers, *factors, gray, basis, norm, *shape_args,
            SOURCE=source, WRITE=1 if resample else 2, COLOR=False, **common,
        )  # fmt: skip
        source = 2 if resample else 1
    _finish[grid](
        data, mid, temp, out, sums, meta_d, *pointers, *factors, gray, basis, norm, *shape_args,
        SOURCE=source, WRITE=0, COLOR=colored, **common,
    )  # fmt: skip
    return out


def _or(value: Tensor | None, default: Tensor) -> Tensor:
    return default if value is None else value
