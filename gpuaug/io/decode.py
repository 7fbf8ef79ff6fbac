"""Decode encoded image bytes to RGB uint8 ``[3, H, W]`` tensors: nvJPEG on CUDA, libjpeg/PIL on the CPU.

Every path gives what PIL's ``Image.open(...).convert("RGB")`` gives: grayscale, palette, RGBA
(alpha dropped, as PIL does), CMYK and 16-bit images become 8-bit RGB. On the CPU, JPEGs go
through torchvision's libjpeg-turbo decoder (bit-identical to PIL's here, and faster), or through
PIL with ``draft()`` when a reduced DCT scale was asked for; everything else goes through PIL.

EXIF orientation is **ignored by default**, like torchvision's ``ImageFolder`` (PIL does not apply
it on open); ``exif_orientation=True`` applies it on every backend, the same way.

A file that cannot be decoded raises :class:`DecodeError` naming the path and the reason; there is
no fallback image. So does an image larger than ``max_pixels`` (default :data:`DEFAULT_MAX_PIXELS`,
PIL's own decompression-bomb error threshold), checked from the header before any pixel buffer is
allocated, and a JPEG whose structure libjpeg-turbo would refuse (an unknown marker inside the
compressed data, an impossible Huffman or quantisation table), found by :func:`read_header` without
decoding so that every decoder (libjpeg-turbo, nvJPEG, nvImageCodec, DALI) rejects the same files.

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
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from struct import error as struct_error  # raised by some PIL plugins on short files

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = [
    "DEFAULT_MAX_PIXELS",
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


# PIL refuses images above 2 * Image.MAX_IMAGE_PIXELS (178,956,970 pixels, ~13,400 x 13,400; 537 MB
# as RGB uint8) as decompression bombs: the same limit here, for every decoder, checked from the
# header. The largest photos of ImageNet, Open Images and COCO are far below it (< 40 M pixels).
DEFAULT_MAX_PIXELS = 178_956_970


def _too_many_pixels(path: str, size: str, max_pixels: int) -> DecodeError:
    return DecodeError(
        path,
        f"{size} pixels exceeds the limit of {max_pixels:,} "
        f"(a possible decompression bomb; raise max_pixels / max_image_pixels to decode it)",
    )


def _check_pixels(height: int, width: int, path: str, max_pixels: int | None) -> None:
    """Refuse an image whose header announces more than ``max_pixels`` pixels (None: no limit)."""
    if max_pixels is not None and height * width > max_pixels:
        raise _too_many_pixels(path, f"{width}x{height} = {height * width:,}", max_pixels)


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


# libjpeg-turbo's read_markers() errors on these codes ("Unsupported marker type"): they are no marker
# it knows. A second SOI (0xD8) is an error as well ("two SOI markers").
_UNKNOWN_MARKERS = frozenset([*range(0x02, 0xC0), 0xDE, 0xDF, *range(0xF0, 0xFE), 0xD8])
# what libjpeg's next_marker() finds: FF then a code (FF 00 is a stuffed FF byte, FF FF fill); this
# form is 40x faster than ``\xff+([^\x00\xff])`` (25 us for a 40 kB JPEG)
_MARKER = re.compile(rb"\xff[\x01-\xfe]")


def _huffman_table_problem(body: bytes) -> str | None:
    """What libjpeg-turbo's get_dht() refuses: a table index over 3, counts over 256 or the segment."""
    position, length = 0, len(body)
    while length - position > 16:
        index = body[position]
        counts = body[position + 1 : position + 17]
        total = sum(counts)
        position += 17
        if total > 256 or total > length - position:
            return "a Huffman table with impossible code counts"
        if (index & ~0x10) > 3:
            return f"a Huffman table with index {index:#04x}"
        position += total
    if position != length:
        return "a Huffman table segment of the wrong length"
    return None


def _jpeg_problem(data: bytes) -> str | None:
    """Why libjpeg-turbo would refuse this JPEG, found by walking its markers without decoding (None: no reason).

    Follows libjpeg's own marker reader: segments are skipped by their length, compressed data up
    to the next marker (``FF 00`` is a stuffed byte, ``FF D0``-``FF D7`` restart markers). It
    reports only what libjpeg-turbo always refuses (an unknown marker code, a second SOI or SOF, an
    impossible Huffman or quantisation table), so a file it reports never decodes on the CPU; a
    truncated file is ``ImageHeader.complete``'s business. Random bytes written into the
    compressed data hold such a marker with probability ~1 - (1 - 180/65536) ** n for n bytes.
    """
    position, size = 2, len(data)
    frames = 0
    in_scan = restart_interval = False
    while True:
        found = _MARKER.search(data, position)
        if found is None:
            return None
        position = found.end()
        code = data[position - 1]
        if code == 0xD9:  # end of image: what follows is ignored by every decoder
            return None
        if 0xD0 <= code <= 0xD7 or code == 0x01:  # restart markers and TEM carry no length
            continue
        if code in _UNKNOWN_MARKERS:
            # with restart markers, libjpeg resynchronises past an invalid code inside compressed data
            if in_scan and restart_interval and code < 0xC0:
                continue
            name = "a second start-of-image marker" if code == 0xD8 else f"an unknown marker 0xFF{code:02X}"
            return f"corrupt JPEG data: {name} at byte {found.start()}"
        if position + 2 > size:
            return None
        length = int.from_bytes(data[position : position + 2], "big")
        if length < 2 or position + length > size:
            return None  # libjpeg warns and stops at the end of the data: a truncated file
        body = data[position + 2 : position + length]
        problem = None
        if code == 0xC4:
            problem = _huffman_table_problem(body)
        elif code == 0xDB and body and (body[0] & 0x0F) > 3:
            problem = f"a quantisation table with index {body[0] & 0x0F}"
        elif code == 0xDD:
            restart_interval = length >= 4 and int.from_bytes(body[:2], "big") > 0
        elif code == 0xDA:
            in_scan = True
        elif code in _SOF_MARKERS:
            frames += 1
            if frames > 1:
                problem = "a second frame (SOF) marker"
        if problem is not None:
            return f"corrupt JPEG data: {problem} at byte {found.start()}"
        position += length


def read_header(
    data: bytes, path: str, exif_orientation: bool = False, *, max_pixels: int | None = DEFAULT_MAX_PIXELS
) -> ImageHeader:
    """Format, size (and for JPEG the components) without decoding pixels.

    Args:
        data: the encoded file.
        path: named in errors.
        exif_orientation: also read the EXIF orientation.
        max_pixels: refuse images with more pixels than this (None: no limit).

    Raises:
        DecodeError: when the bytes are not a readable image, the image has more than
            ``max_pixels`` pixels, or a JPEG's structure is corrupt (see ``_jpeg_problem``).

    Example:
        >>> buffer = io.BytesIO(); Image.new("RGB", (6, 4)).save(buffer, "PNG")
        >>> header = read_header(buffer.getvalue(), "a.png"); (header.format, header.height, header.width)
        ('png', 4, 6)
    """
    kind = sniff_format(data)
    complete = kind != "jpeg" or bytes(data[-16:]).rstrip(b"\x00").endswith(b"\xff\xd9")
    if kind == "jpeg":
        problem = _jpeg_problem(bytes(data))
        if problem is not None:
            raise DecodeError(path, problem)
    if kind == "jpeg" and not exif_orientation:
        frame = _jpeg_frame(data)
        if frame is not None and frame[0] > 0 and frame[1] > 0:
            _check_pixels(frame[0], frame[1], path, max_pixels)
            return ImageHeader("jpeg", frame[0], frame[1], frame[2], frame[3], complete=complete)
    image = _open(data, path, max_pixels)
    _check_pixels(image.height, image.width, path, max_pixels)
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
_PIL_LIMIT_LOCK = threading.Lock()


@contextmanager
def _pil_bomb_check(max_pixels: int | None) -> Iterator[None]:
    """PIL's decompression-bomb check made ours: its warning silenced (``max_pixels`` decides), and
    its error lifted where ``max_pixels`` allows more than PIL (``2 * Image.MAX_IMAGE_PIXELS``).

    Lifting it sets PIL's module-wide limit to None for the duration (under a lock): only when a
    caller raised ``max_pixels`` above PIL's own limit, and after our check of the header.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
        pil_limit = Image.MAX_IMAGE_PIXELS
        if pil_limit is None or (max_pixels is not None and max_pixels <= 2 * pil_limit):
            yield
            return
        with _PIL_LIMIT_LOCK:
            Image.MAX_IMAGE_PIXELS = None
            try:
                yield
            finally:
                Image.MAX_IMAGE_PIXELS = pil_limit


def _bomb_error(error: Exception, path: str, max_pixels: int | None) -> DecodeError:
    """PIL's DecompressionBombError (raised only where ``max_pixels`` is within PIL's limit) as ours."""
    pixels = re.search(r"\((\d+) pixels\)", str(error))
    size = f"{int(pixels.group(1)):,}" if pixels else "the image's"
    limit = max_pixels if max_pixels is not None else 2 * (Image.MAX_IMAGE_PIXELS or 0)
    return _too_many_pixels(path, size, limit)


def _open(data: bytes, path: str, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Image.Image:
    if len(data) == 0:
        raise DecodeError(path, "the file is empty")
    try:
        with _pil_bomb_check(max_pixels):
            return Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise DecodeError(path, "not a recognised image format") from None
    except Image.DecompressionBombError as error:
        raise _bomb_error(error, path, max_pixels) from None
    except (OSError, ValueError, SyntaxError, EOFError, struct_error) as error:
        raise DecodeError(path, f"unreadable header ({error})") from None


def _to_tensor(image: Image.Image) -> torch.Tensor:
    """HWC uint8 array -> ``[3, H, W]`` view (channels-last memory)."""
    return torch.from_numpy(np.array(image)).permute(2, 0, 1)


def decode_cpu(
    data: bytes,
    path: str,
    *,
    exif_orientation: bool = False,
    reduce: int = 1,
    header: ImageHeader | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
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
        max_pixels: refuse images whose stored size has more pixels than this, whatever
            ``reduce`` (default :data:`DEFAULT_MAX_PIXELS`; None: no limit), before decoding.

    Raises:
        DecodeError: naming ``path`` and the reason (empty, not an image, too large, truncated, corrupt).
    """
    kind = header.format if header is not None else sniff_format(data)
    if header is not None:
        _check_pixels(header.height, header.width, path, max_pixels)
    if kind == "jpeg" and reduce == 1:
        frame = (header.height, header.width, header.components) if header is not None else _jpeg_frame(data)
        if frame is not None and frame[2] in (1, 3):
            _check_pixels(frame[0], frame[1], path, max_pixels)
            return _decode_jpeg_torchvision(data, path, exif_orientation)
    image = _open(data, path, max_pixels)
    _check_pixels(image.height, image.width, path, max_pixels)
    try:
        with _pil_bomb_check(max_pixels):
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
        raise _bomb_error(error, path, max_pixels) from None
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
