"""gpuaug.io.decode and gpuaug.io.sources on hostile input: the pixel limit, non-regular and oversized
files, and JPEGs whose compressed data libjpeg-turbo refuses (found from the markers, without decoding)."""

from __future__ import annotations

import io
import os
import struct
import subprocess
import sys
import threading
import warnings
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

try:
    import resource
except ImportError:  # not on Windows
    resource = None

from gpuaug.io.decode import DEFAULT_MAX_PIXELS, DecodeError, decode_cpu, read_header
from gpuaug.io.sources import DEFAULT_MAX_BYTES, FileList, read_bytes
from tests.corpus import pil_rgb


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def bomb_png(height: int, width: int) -> bytes:
    """A PNG whose header announces ``width x height`` (RGB); its data holds only the first rows."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    rows = zlib.compress(bytes((1 + 3 * width) * 4))
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", rows) + _png_chunk(b"IEND", b"")


def jpeg_bytes(height: int = 72, width: int = 96, seed: int = 0, **options) -> bytes:
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:height, 0:width]
    image = np.stack([xs * 255 // max(width - 1, 1), ys * 255 // max(height - 1, 1), (xs + ys) % 256], -1)
    image = np.clip(image + rng.integers(-20, 20, image.shape), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "JPEG", **{"quality": 90, **options})
    return buffer.getvalue()


def with_frame_size(jpeg: bytes, height: int, width: int) -> bytes:
    """The same JPEG with its SOF0 header saying ``height x width``."""
    sof = jpeg.index(b"\xff\xc0")
    return jpeg[: sof + 5] + struct.pack(">HH", height, width) + jpeg[sof + 9 :]


# ----------------------------------------------------------------------------------------------
# Pixel limit (issue 12, row 2)
# ----------------------------------------------------------------------------------------------
def test_default_limit_is_pils_error_threshold():
    assert DEFAULT_MAX_PIXELS == 2 * 89_478_485 and 13_000**2 < DEFAULT_MAX_PIXELS < 20_000**2


@pytest.mark.parametrize("kind", ["png", "jpeg", "jpeg-reduced", "jpeg-exif"])
def test_a_20000_square_image_is_a_decode_error_naming_it(kind):
    path = f"/data/bomb.{kind}"
    data = bomb_png(20_000, 20_000) if kind == "png" else with_frame_size(jpeg_bytes(), 20_000, 20_000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # PIL's DecompressionBombWarning must not escape either
        for call in (
            lambda: read_header(data, path, exif_orientation=kind == "jpeg-exif"),
            lambda: decode_cpu(data, path, reduce=8 if kind == "jpeg-reduced" else 1),
            lambda: decode_cpu(data, path, exif_orientation=kind == "jpeg-exif"),
        ):
            with pytest.raises(DecodeError, match="exceeds the limit of 178,956,970") as caught:
                call()
            assert caught.value.path == path and "400,000,000 pixels" in caught.value.reason


def test_max_pixels_raises_and_lowers_the_limit():
    data = jpeg_bytes(72, 96)
    for limit in (96 * 72 - 1, 1000):
        with pytest.raises(DecodeError, match=f"limit of {limit:,}"):
            read_header(data, "a.jpg", max_pixels=limit)
        with pytest.raises(DecodeError, match=f"limit of {limit:,}"):
            decode_cpu(data, "a.jpg", max_pixels=limit)
    header = read_header(data, "a.jpg", max_pixels=96 * 72)
    with pytest.raises(DecodeError, match="limit of 100"):  # a header read with a larger limit is checked again
        decode_cpu(data, "a.jpg", header=header, max_pixels=100)
    for limit in (96 * 72, None):
        assert decode_cpu(data, "a.jpg", max_pixels=limit).shape == (3, 72, 96)
    png = bomb_png(5000, 5000)
    assert read_header(png, "big.png", max_pixels=None).height == 5000
    with pytest.raises(DecodeError, match="big.png"):
        read_header(png, "big.png", max_pixels=5000 * 5000 - 1)


def test_max_pixels_decides_over_pils_global_limit(monkeypatch):
    """Above PIL's limit but within ours: decoded, without PIL's warning, and PIL's limit restored."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 2000)
    buffer = io.BytesIO()
    Image.fromarray(np.full((100, 100, 3), 7, np.uint8)).save(buffer, "PNG")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert read_header(buffer.getvalue(), "a.png").width == 100
        assert torch.equal(decode_cpu(buffer.getvalue(), "a.png"), torch.full((3, 100, 100), 7, dtype=torch.uint8))
        assert decode_cpu(buffer.getvalue(), "a.png", max_pixels=4000 * 4000).shape == (3, 100, 100)
    assert Image.MAX_IMAGE_PIXELS == 2000
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 6000)  # warns (10000 > 6000) without failing (<= 12000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert decode_cpu(buffer.getvalue(), "a.png", max_pixels=12_000).shape == (3, 100, 100)


# ----------------------------------------------------------------------------------------------
# Non-regular and oversized files (issue 12, rows 5 and 15)
# ----------------------------------------------------------------------------------------------
def _read_in_thread(path: str, **kwargs) -> BaseException | bytes:
    """``read_bytes`` in a daemon thread: a call that blocks fails the test instead of hanging it."""
    result: list = []

    def target():
        try:
            result.append(read_bytes(path, **kwargs))
        except BaseException as error:  # noqa: BLE001 - handed to the test
            result.append(error)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(20)
    assert not thread.is_alive(), f"read_bytes({path!r}) blocked"
    return result[0]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_a_fifo_named_jpg_is_refused_by_name_without_blocking(tmp_path):
    fifo = tmp_path / "x.jpg"
    os.mkfifo(fifo)
    error = _read_in_thread(str(fifo))
    assert isinstance(error, DecodeError) and error.path == str(fifo) and "not a regular file (a FIFO)" in str(error)
    with pytest.raises(DecodeError, match="x.jpg"):
        FileList([(fifo, 0)])[0]


@pytest.mark.skipif(not os.path.exists("/dev/zero") or resource is None, reason="no /dev/zero or no rlimits")
def test_a_symlink_to_dev_zero_is_a_decode_error_not_memory_error(tmp_path):
    """In a child process with 4 GiB of address space, so that reading /dev/zero (the old
    behaviour) ends in MemoryError there instead of eating this machine's memory."""
    link = tmp_path / "zero.jpg"
    link.symlink_to("/dev/zero")
    script = (
        "import resource, sys; resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))\n"
        "from gpuaug.io.sources import read_bytes\n"
        "try:\n    read_bytes(sys.argv[1])\nexcept BaseException as error:\n    print(type(error).__name__, error)\n"
    )
    child = subprocess.run([sys.executable, "-c", script, str(link)], capture_output=True, text=True, timeout=120)
    assert child.stdout.strip() == f"DecodeError cannot decode {link}: not a regular file (a character device)", child.stderr


def test_size_cap_and_folders(tmp_path):
    path = tmp_path / "big.jpg"
    path.write_bytes(bytes(5000))
    with pytest.raises(DecodeError, match="5,000 bytes, more than max_bytes=4,999") as caught:
        read_bytes(str(path), max_bytes=4999)
    assert caught.value.path == str(path)
    assert len(read_bytes(str(path), max_bytes=5000)) == 5000 and len(read_bytes(str(path), max_bytes=None)) == 5000
    assert DEFAULT_MAX_BYTES == 1 << 30
    folder = tmp_path / "folder.jpg"
    folder.mkdir()
    with pytest.raises(DecodeError, match="a folder"):
        read_bytes(str(folder))
    with pytest.raises(DecodeError, match="No such file"):
        read_bytes(str(tmp_path / "missing.jpg"))


# ----------------------------------------------------------------------------------------------
# Corrupt JPEG data found from the markers (issue 12, row 16)
# ----------------------------------------------------------------------------------------------
def _garble(jpeg: bytes, rng: np.random.Generator, max_bytes: int = 300) -> bytes:
    data = bytearray(jpeg)
    count = int(rng.integers(1, max_bytes))
    start = int(rng.integers(3, len(data) - count))
    data[start : start + count] = rng.integers(0, 256, count, dtype=np.uint8).tobytes()
    return bytes(data)


def _marker_problem(data: bytes) -> str | None:
    """What read_header's marker check (run before anything else on a JPEG) refuses ``data`` for, else None."""
    try:
        read_header(data, "x.jpg", max_pixels=None)
    except DecodeError as error:
        return error.reason if error.reason.startswith("corrupt JPEG data") else None
    return None


def _libjpeg_refuses(data: bytes) -> bool:
    try:
        decode_cpu(data, "x.jpg")
    except DecodeError:
        return True
    return False


def test_random_bytes_mid_file_are_refused_by_the_header(capfd):
    """A JPEG with random bytes in its compressed data holding an unknown marker: libjpeg-turbo
    refuses it, and so does read_header (before any decoder runs) naming the file."""
    jpeg = jpeg_bytes(200, 240)
    middle = len(jpeg) // 2
    garbled = jpeg[:middle] + b"\x12\xff\x40\x99" + jpeg[middle + 4 :]
    assert _libjpeg_refuses(garbled)
    with pytest.raises(DecodeError, match=r"unknown marker 0xFF40 at byte \d+") as caught:
        read_header(garbled, "/data/garbled.jpg")
    assert caught.value.path == "/data/garbled.jpg"
    tables = jpeg.index(b"\xff\xc4")  # the corpus's garbled file: random Huffman tables
    broken_tables = jpeg[: tables + 4] + bytes(range(200, 256)) + jpeg[tables + 60 :]
    assert _libjpeg_refuses(broken_tables)
    with pytest.raises(DecodeError, match="Huffman table"):
        read_header(broken_tables, "t.jpg")


def test_marker_check_never_refuses_what_libjpeg_decodes(capfd):
    """Fuzz: random bytes written into baseline, progressive, restart-marker and grayscale JPEGs.
    Every file the marker check refuses, libjpeg-turbo refuses too; it finds most of those."""
    rng = np.random.default_rng(0)
    sources = [
        jpeg_bytes(120, 150, seed=1),
        jpeg_bytes(120, 150, seed=2, progressive=True),
        jpeg_bytes(120, 150, seed=3, restart_marker_blocks=4),
        jpeg_bytes(120, 150, seed=4, subsampling=0, quality=60),
    ]
    for source in sources:
        assert read_header(source, "source.jpg").format == "jpeg"
    flagged = refused = 0
    for trial in range(240):
        data = _garble(sources[trial % len(sources)], rng)
        if not data.startswith(b"\xff\xd8\xff"):
            continue
        refuses = _libjpeg_refuses(data)
        problem = _marker_problem(data)
        assert problem is None or refuses, (trial, problem)
        flagged += problem is not None
        refused += refuses
    assert refused > 40 and flagged >= 0.6 * refused


def test_valid_odd_jpegs_pass_the_marker_check(odd):
    for name, path in odd.items():
        data = path.read_bytes()
        if data.startswith(b"\xff\xd8"):  # read_header refuses a JPEG the marker check flags
            header = read_header(data, str(path), exif_orientation=name == "exif_rotated_jpeg")
            assert (header.height, header.width) == Image.open(path).size[::-1], name


def test_bad_corpus_files_are_named_by_read_header(bad):
    for name in ("empty", "text", "html", "garbled"):
        with pytest.raises(DecodeError) as caught:
            read_header(read_bytes(str(bad[name])), str(bad[name]))
        assert caught.value.path == str(bad[name])


def test_decode_cpu_still_matches_pil(odd):
    for name in ("rgb_jpeg", "cmyk_jpeg", "palette_png", "rgba_png"):
        data = odd[name].read_bytes()
        header = read_header(data, str(odd[name]))
        assert np.array_equal(decode_cpu(data, str(odd[name]), header=header).permute(1, 2, 0).numpy(), pil_rgb(odd[name]))
