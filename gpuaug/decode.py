"""Decode encoded image bytes to RGB uint8 ``[3, H, W]`` tensors: nvJPEG on CUDA, libjpeg/PIL on the CPU.

Every path gives what PIL's ``Image.open(...).convert("RGB")`` gives: grayscale, palette, RGBA
(alpha dropped, as PIL does), CMYK and 16-bit images become 8-bit RGB. On the CPU, JPEGs go
through torchvision's libjpeg-turbo decoder (bit-identical to PIL's here, and faster), or through
PIL with ``draft()`` when a reduced DCT scale was asked for; everything else goes through PIL.

EXIF orientation is **ignored by default**, like torchvision's ``ImageFolder`` (PIL does not apply
it on open); ``exif_orientation=True`` applies it on every backend, the same way.

A file that cannot be decoded raises :class:`DecodeError` naming the path and the reason; there is
no fallback image.

Example:
    >>> import io, numpy as np
    >>> from PIL import Image
    >>> buffer = io.BytesIO(); Image.fromarray(np.zeros((4, 6), np.uint8)).save(buffer, "PNG")
    >>> decode_cpu(buffer.getvalue(), "gray.png").shape
    torch.Size([3, 4, 6])
"""

from __future__ import annotations

import io
import re
import warnings
from dataclasses import dataclass
from struct import error as struct_error  # raised by some PIL plugins on short files

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = [
    "DecodeError",
    "ImageHeader",
    "apply_orientation",
    "decode_cpu",
    "decode_jpegs_cuda",
    "read_header",
    "sniff_format",
]


class DecodeError(ValueError):
    """An image file that cannot be decoded; ``path`` and ``reason`` say which and why."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"cannot decode {self.path}: {reason}")

    def __reduce__(self):  # survives pickling between worker processes
        return (DecodeError, (self.path, self.reason))


# ----------------------------------------------------------------------------------------------
# Sniffing
# ----------------------------------------------------------------------------------------------
_SIGNATURES = (
    (b"\xff\xd8\xff", "jpeg"),
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"GIF87a", "gif"),
    (b"GIF89a", "gif"),
    (b"BM", "bmp"),
    (b"II*\x00", "tiff"),
    (b"MM\x00*", "tiff"),
)


def sniff_format(data: bytes | memoryview) -> str | None:
    """The image format from the first bytes (not the file name: a PNG named .jpg is a PNG)."""
    head = bytes(data[:12])
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    for signature, name in _SIGNATURES:
        if head.startswith(signature):
            return name
    return None


@dataclass(frozen=True)
class ImageHeader:
    """What the header says, before any pixel is decoded."""

    format: str | None
    height: int
    width: int
    components: int = 3  # JPEG colour components (1 gray, 3 YCbCr, 4 CMYK)
    progressive: bool = False
    orientation: int = 1  # EXIF orientation (1 = as stored)
    complete: bool = True  # a JPEG ends with its end-of-image marker (a truncated file does not)

    @property
    def oriented_size(self) -> tuple[int, int]:
        """``(height, width)`` after applying the EXIF orientation."""
        return (self.width, self.height) if self.orientation in (5, 6, 7, 8) else (self.height, self.width)

    @property
    def nvjpeg_ok(self) -> bool:
        """A whole JPEG nvJPEG decodes to RGB as PIL would: baseline, grayscale or YCbCr.

        Truncated files go to the CPU decoder, which reports them instead of filling in grey.
        """
        return self.format == "jpeg" and self.components in (1, 3) and not self.progressive and self.complete


_SOF_MARKERS = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _jpeg_frame(data: bytes) -> tuple[int, int, int, bool] | None:
    """``(height, width, components, progressive)`` from a JPEG's SOF marker, or None."""
    position, size = 2, len(data)
    while position + 4 <= size:
        if data[position] != 0xFF:
            return None
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # markers without a length
            position += 2
            continue
        length = int.from_bytes(data[position + 2 : position + 4], "big")
        if marker in _SOF_MARKERS:
            if position + 10 > size:
                return None
            height = int.from_bytes(data[position + 5 : position + 7], "big")
            width = int.from_bytes(data[position + 7 : position + 9], "big")
            return height, width, data[position + 9], marker in (0xC2, 0xC6, 0xCA, 0xCE)
        if marker == 0xDA or length < 2:  # start of scan before any frame: broken
            return None
        position += 2 + length
    return None


def read_header(data: bytes, path: str, exif_orientation: bool = False) -> ImageHeader:
    """Format, size (and for JPEG the components) without decoding pixels.

    Raises:
        DecodeError: when the bytes are not a readable image.
    """
    kind = sniff_format(data)
    complete = kind != "jpeg" or bytes(data[-16:]).rstrip(b"\x00").endswith(b"\xff\xd9")
    if kind == "jpeg" and not exif_orientation:
        frame = _jpeg_frame(data)
        if frame is not None and frame[0] > 0 and frame[1] > 0:
            return ImageHeader("jpeg", frame[0], frame[1], frame[2], frame[3], complete=complete)
    image = _open(data, path)
    orientation = 1
    if exif_orientation:
        try:
            orientation = int(image.getexif().get(0x0112, 1))
        except Exception:  # noqa: BLE001 - a broken EXIF block means "no orientation"
            orientation = 1
        orientation = orientation if 1 <= orientation <= 8 else 1
    components, progressive = 3, False
    if kind == "jpeg":
        frame = _jpeg_frame(data)
        if frame is not None:
            components, progressive = frame[2], frame[3]
    return ImageHeader(kind, image.height, image.width, components, progressive, orientation, complete)


# ----------------------------------------------------------------------------------------------
# CPU decode
# ----------------------------------------------------------------------------------------------
def _open(data: bytes, path: str) -> Image.Image:
    if len(data) == 0:
        raise DecodeError(path, "the file is empty")
    try:
        return Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise DecodeError(path, "not a recognised image format") from None
    except (OSError, ValueError, SyntaxError) as error:
        raise DecodeError(path, f"unreadable header ({error})") from None


def _to_tensor(image: Image.Image) -> torch.Tensor:
    """HWC uint8 array -> ``[3, H, W]`` view (channels-last memory)."""
    return torch.from_numpy(np.array(image)).permute(2, 0, 1)


def decode_cpu(
    data: bytes, path: str, *, exif_orientation: bool = False, reduce: int = 1, header: ImageHeader | None = None
) -> torch.Tensor:
    """Decode one image to RGB uint8 ``[3, H, W]``.

    Args:
        data: the encoded file.
        path: named in errors.
        exif_orientation: apply the EXIF orientation.
        reduce: for JPEGs, decode at up to 1/``reduce`` scale (1, 2, 4 or 8) through libjpeg's
            DCT scaling (PIL's ``draft``): much less work when the image is downscaled anyway.
            The result is at least ``ceil(size / reduce)``; other formats ignore it.
        header: this file's ``read_header`` result, if already parsed.

    Raises:
        DecodeError: naming ``path`` and the reason (empty, not an image, truncated, corrupt).
    """
    kind = header.format if header is not None else sniff_format(data)
    if kind == "jpeg" and reduce == 1:
        components = header.components if header is not None else (_jpeg_frame(data) or (0, 0, 0))[2]
        if components in (1, 3):
            return _decode_jpeg_torchvision(data, path, exif_orientation)
    image = _open(data, path)
    try:
        if kind == "jpeg" and reduce > 1:
            image.draft("RGB", (max(1, image.width // reduce), max(1, image.height // reduce)))
        image.load()
        if exif_orientation:
            image = ImageOps.exif_transpose(image)
        if image.mode != "RGB":
            image = image.convert("RGB")
        return _to_tensor(image)
    except DecodeError:
        raise
    except Image.DecompressionBombError as error:
        raise DecodeError(path, str(error)) from None
    except (OSError, ValueError, SyntaxError, EOFError, IndexError, struct_error) as error:
        raise DecodeError(path, f"corrupt or truncated image data ({error})") from None


def _reason(error: Exception) -> str:
    """The library's own words, without the C++ source location torchvision prefixes."""
    return re.split(r"\.(?:cpp|cu|h):\d+, ", str(error).splitlines()[0])[-1]


def _decode_jpeg_torchvision(data: bytes, path: str, exif_orientation: bool) -> torch.Tensor:
    from torchvision.io import ImageReadMode, decode_jpeg

    encoded = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torchvision 0.29 deprecates its decoders; they still work
            image = decode_jpeg(encoded, mode=ImageReadMode.RGB, apply_exif_orientation=exif_orientation)
    except RuntimeError as error:
        raise DecodeError(path, f"corrupt or truncated JPEG ({_reason(error)})") from None
    return image


# ----------------------------------------------------------------------------------------------
# EXIF orientation on tensors (for nvJPEG output, which torchvision does not orient)
# ----------------------------------------------------------------------------------------------
def apply_orientation(image: torch.Tensor, orientation: int) -> torch.Tensor:
    """Apply an EXIF orientation (1-8) to ``[C, H, W]`` exactly as ``PIL.ImageOps.exif_transpose``."""
    if orientation == 2:
        return image.flip(-1)
    if orientation == 3:
        return image.flip(-1).flip(-2)
    if orientation == 4:
        return image.flip(-2)
    if orientation == 5:
        return image.transpose(-1, -2)
    if orientation == 6:
        return image.transpose(-1, -2).flip(-1)
    if orientation == 7:
        return image.transpose(-1, -2).flip(-1).flip(-2)
    if orientation == 8:
        return image.transpose(-1, -2).flip(-2)
    return image


# ----------------------------------------------------------------------------------------------
# CUDA decode
# ----------------------------------------------------------------------------------------------
def decode_jpegs_cuda(encoded: list[torch.Tensor], paths: list[str], device: torch.device) -> list[torch.Tensor | DecodeError]:
    """Decode a batch of JPEGs with nvJPEG in one call (on the current CUDA stream).

    ``encoded`` holds 1-D uint8 CPU tensors (pinned for an asynchronous copy). If the batched call
    fails, each image is retried alone so one bad file does not fail the batch: an image nvJPEG
    refuses is returned as a :class:`DecodeError` for the caller to decode on the CPU or report.
    """
    from torchvision.io import ImageReadMode, decode_jpeg

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return list(decode_jpeg(encoded, mode=ImageReadMode.RGB, device=device))
        except RuntimeError:
            results: list[torch.Tensor | DecodeError] = []
            for data, path in zip(encoded, paths):  # rare: only after a failed batch
                try:
                    results.append(decode_jpeg(data, mode=ImageReadMode.RGB, device=device))
                except RuntimeError as error:
                    results.append(DecodeError(path, f"nvJPEG: {_reason(error)}"))
            return results
