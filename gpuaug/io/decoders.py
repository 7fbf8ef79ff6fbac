"""The ``Decoder`` protocol: which decoder the loader's device stage uses, chosen once.

A decoder has a ``name``, says which files it decodes as PIL's ``convert("RGB")`` would
(``takes(header)``, a picklable function the workers call), whether it decodes only a region of a
file (``regions``), and decodes a batch of files in one call (``decode``) into a
:class:`Decoded`: one image per file, and the files that failed.

* :class:`NvJpegDecoder`: torchvision's batched nvJPEG on CUDA (an image it refuses is decoded on
  the CPU, once);
* :class:`NvImageCodecDecoder`: nvImageCodec, every backend in turn (regions on its CPU backend);
* ``None``: the workers decode everything (``choose_decoder`` returns it for ``"cpu"``).

Example:
    >>> from gpuaug.io.decode import ImageHeader
    >>> nvjpeg_takes(ImageHeader("jpeg", 8, 8)), nvjpeg_takes(ImageHeader("jpeg", 8, 8, progressive=True))
    (True, False)
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import torch
from torch import Tensor

from gpuaug.io import nvdecode
from gpuaug.io.decode import DEFAULT_MAX_PIXELS, DecodeError, ImageHeader, decode_cpu, decode_jpegs_cuda

__all__ = [
    "DECODERS",
    "Decoded",
    "Decoder",
    "check_decode",
    "NvImageCodecDecoder",
    "NvJpegDecoder",
    "choose_decoder",
    "nvjpeg_takes",
]

DECODERS = ("auto", "cpu", "nvjpeg", "nvimgcodec")


@dataclass
class Decoded:
    """What a batched decode gave: ``images[i]`` for file ``i`` (``None`` where it failed), and the
    failures as ``(position, DecodeError)``, empty for a batch without one."""

    images: list[Tensor | None]
    failed: list[tuple[int, DecodeError]] = field(default_factory=list)


class Decoder(Protocol):
    """What the device stage asks of a decoder."""

    name: str
    regions: bool
    """Whether ``decode`` takes the region of each file to decode (else it decodes whole files)."""
    takes: Callable[[ImageHeader], bool]
    """Whether it decodes this file as PIL would (picklable: the workers call it on each header)."""

    def decode(
        self, files: Sequence[Tensor], paths: Sequence[str], headers: Sequence[ImageHeader], regions: Tensor | None
    ) -> Decoded:
        """Decode ``files`` (1-D uint8 CPU tensors) in one call; ``regions`` ``[B, 4]`` when ``self.regions``."""
        ...


def wait_for_queued_work(device: torch.device) -> None:
    """Before a GPU decode, wait (in the calling thread: the loader's producer) for the work queued on the
    current stream.

    torchvision's CUDA ``decode_jpeg`` decodes on a private stream not ordered against the caller's,
    into memory the caching allocator may hand out from blocks just freed on the caller's stream
    while queued kernels still read them (torchvision PR 9606; torchcodec PR 1634: 134 of 200
    iterations corrupted on H100s). The previous batch's kernels freed their inputs and
    intermediates that way; after this wait nothing queued can still read a block the decoder gets.
    The training thread never waits here.
    """
    if device.type == "cuda":
        torch.cuda.current_stream(device).synchronize()


def device_takes(header: ImageHeader, exif_orientation: bool = False, progressive: bool = True) -> bool:
    """Whether a GPU decoder gives what PIL's ``convert("RGB")`` gives for this file: a whole grey or
    YCbCr JPEG (CMYK/YCCK, truncated files, other formats and, when EXIF orientation is applied,
    rotated images go to the CPU), progressive ones only where ``progressive``."""
    if header.format != "jpeg" or header.components not in (1, 3) or not header.complete:
        return False
    if exif_orientation and header.orientation != 1:
        return False
    return progressive or not header.progressive


def nvjpeg_takes(header: ImageHeader, exif_orientation: bool = False) -> bool:
    """What torchvision's nvJPEG decodes as PIL would: baseline grey or YCbCr JPEGs, whole."""
    return device_takes(header, exif_orientation, progressive=False)


class NvJpegDecoder:
    """torchvision's batched nvJPEG (``decode_jpeg(device="cuda")``) on the current stream; a file it
    refuses is decoded on the CPU once, and reported only if that fails too."""

    name = "nvjpeg"
    regions = False

    def __init__(self, device: torch.device, exif_orientation: bool = False, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> None:
        self.device, self.exif_orientation, self.max_pixels = device, exif_orientation, max_pixels
        self.takes = functools.partial(nvjpeg_takes, exif_orientation=exif_orientation)

    def decode(
        self, files: Sequence[Tensor], paths: Sequence[str], headers: Sequence[ImageHeader], regions: Tensor | None
    ) -> Decoded:
        wait_for_queued_work(self.device)
        results = decode_jpegs_cuda(list(files), list(paths), self.device)
        refused = [position for position, result in enumerate(results) if isinstance(result, DecodeError)]
        decoded = Decoded(results)  # no refusals: the list as it came
        for position in refused:  # rare: after nvJPEG refused a file
            try:
                data = bytes(files[position].numpy())
                image = decode_cpu(data, paths[position], exif_orientation=self.exif_orientation, max_pixels=self.max_pixels)
                decoded.images[position] = image.to(self.device)
            except DecodeError as error:
                decoded.images[position] = None
                decoded.failed.append((position, error))
        return decoded


class NvImageCodecDecoder:
    """nvImageCodec (``gpuaug.io.nvdecode``): hardware engines, nvJPEG, its CPU codecs, then PIL; on
    the CPU device its CPU codecs decode only each file's region."""

    name = "nvimgcodec"

    def __init__(self, device: torch.device, exif_orientation: bool = False, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> None:
        if not nvdecode.nvimgcodec_available():
            raise ValueError("decode='nvimgcodec' needs nvImageCodec: pip install 'gpuaug[gpu]'")
        # CUDA: the hybrid backend first (faster through our decoder than starting with the hardware
        # engines, in the suite's GPU runs); its GPU stages decode whole images (region requests send
        # most images to the CPU). The CPU device: its CPU codecs, the crop box only.
        cuda = device.type == "cuda"
        self.regions = not cuda
        self._decoder = nvdecode.NvImageCodecDecoder(
            device, "hybrid" if cuda else "cpu", exif_orientation=exif_orientation, max_pixels=max_pixels
        )
        self.takes = functools.partial(device_takes, exif_orientation=exif_orientation)

    def decode(
        self, files: Sequence[Tensor], paths: Sequence[str], headers: Sequence[ImageHeader], regions: Tensor | None
    ) -> Decoded:
        wait_for_queued_work(self._decoder.device)
        results = self._decoder.decode(files, paths, regions=regions if self.regions else None, headers=headers)
        failed = [(position, result) for position, result in enumerate(results) if isinstance(result, DecodeError)]
        images = results if not failed else [None if isinstance(result, DecodeError) else result for result in results]
        return Decoded(images, failed)


def check_decode(decode: object) -> None:
    """A ``ValueError`` naming ``decode`` unless it is one of ``DECODERS``."""
    if decode not in DECODERS:
        raise ValueError(f"decode must be one of {', '.join(map(repr, DECODERS))}, got {decode!r}")


def choose_decoder(
    decode: str, device: torch.device, files: bool, exif_orientation: bool, max_pixels: int | None
) -> Decoder | None:
    """The decoder for ``decode`` (one of ``DECODERS``) on ``device``; ``None``: the workers decode.

    ``"auto"``: torchvision's nvJPEG on CUDA (fastest alone and end to end in the GPU suite's runs:
    ``benchmarks/results/``, the README); the workers on the CPU. Map-style datasets (``files=False``) hand
    over decoded items: no decoder.

    Raises:
        ValueError: naming ``decode`` when it is unknown or cannot run on ``device``.
    """
    check_decode(decode)
    if decode == "nvjpeg" and device.type != "cuda":
        raise ValueError("decode='nvjpeg' needs a CUDA device; use decode='cpu', 'nvimgcodec' or 'auto'")
    if not files:
        return None
    if decode == "auto":
        decode = "nvjpeg" if device.type == "cuda" else "cpu"
    if decode == "nvjpeg":
        return NvJpegDecoder(device, exif_orientation, max_pixels)
    if decode == "nvimgcodec":
        return NvImageCodecDecoder(device, exif_orientation, max_pixels)
    return None
