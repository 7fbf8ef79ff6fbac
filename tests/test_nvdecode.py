"""NvImageCodecDecoder on nvImageCodec's CPU backend (what CI runs) and, under @pytest.mark.cuda, on
the GPU backends: PIL's convert("RGB") for every odd format, bad files named, region decode equal
to the full decode cropped, the EXIF policy both ways, the pixel limit."""

from __future__ import annotations

import contextlib
import gc
import io
import struct

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from gpuaug.io.decode import DecodeError, read_header
from gpuaug.io.nvdecode import BACKENDS, NvImageCodecDecoder, nvimgcodec_available
from tests.corpus import pil_rgb
from tests.test_decode import bomb_png, jpeg_bytes, with_frame_size

pytestmark = pytest.mark.skipif(not nvimgcodec_available(), reason="nvImageCodec (the gpu extra) is not installed")

CPU = torch.device("cpu")


def _photo(height: int = 72, width: int = 96, seed: int = 1) -> Image.Image:
    from gpuaug.tools.samples import photo_crops

    crop = photo_crops(1, seed=seed, short_side=(min(height, width), min(height, width)))[0]
    return Image.fromarray(crop.permute(1, 2, 0).numpy()).resize((width, height), Image.BILINEAR)


def _encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def _pil(data: bytes, exif_orientation: bool = False) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        if exif_orientation:
            image = ImageOps.exif_transpose(image)
        return np.array(image.convert("RGB"))


def more_formats() -> dict[str, bytes]:
    """Formats beyond tests/corpus.py's odd files, each a case nvImageCodec might treat unlike PIL."""
    photo = _photo()
    deep = (np.asarray(photo.convert("L")).astype(np.uint16) * 257 + np.arange(96, dtype=np.uint16)).astype(np.uint16)
    cases = {
        "png_16bit_gray": _encode(Image.fromarray(deep), "PNG"),
        "png_gray_alpha": _encode(photo.convert("LA"), "PNG"),
        "png_palette_transparency": _encode(photo.convert("P", palette=Image.ADAPTIVE, colors=32), "PNG", transparency=3),
        "png_1bit": _encode(photo.convert("1"), "PNG"),
        "tiff_cmyk": _encode(photo.convert("CMYK"), "TIFF"),
        "tiff_rgba": _encode(photo.convert("RGBA"), "TIFF"),
        "tiff_lzw": _encode(photo, "TIFF", compression="tiff_lzw"),
        "webp_rgba": _encode(photo.convert("RGBA"), "WEBP", quality=90),
        "webp_lossless": _encode(photo, "WEBP", lossless=True),
        "gif_animated": _encode(photo.convert("P"), "GIF", save_all=True, append_images=[photo.rotate(90).convert("P")]),
        "jpeg_444": _encode(photo, "JPEG", quality=90, subsampling=0),
        "jpeg_422": _encode(photo, "JPEG", quality=90, subsampling=1),
        "jpeg_restart_markers": _encode(photo, "JPEG", quality=90, restart_marker_blocks=2),
        "jpeg_odd_size": _encode(photo.resize((97, 71)), "JPEG", quality=90),
        "jpeg_cmyk_progressive": _encode(photo.convert("CMYK"), "JPEG", quality=90, progressive=True),
        "bmp_rgba": _encode(photo.convert("RGBA"), "BMP"),
        "bmp_palette": _encode(photo.convert("P"), "BMP"),
        "ppm": _encode(photo, "PPM"),
        "ico": _encode(photo, "ICO"),
        "tga": _encode(photo, "TGA"),
    }
    with contextlib.suppress(OSError, KeyError):  # PIL built without OpenJPEG has no JPEG 2000
        cases["jpeg2000"] = _encode(photo, "JPEG2000")
    return cases


@pytest.fixture(scope="module")
def decoder() -> NvImageCodecDecoder:
    return NvImageCodecDecoder(CPU)


def _hwc(image: torch.Tensor) -> np.ndarray:
    return image.permute(1, 2, 0).cpu().numpy()


# ----------------------------------------------------------------------------------------------
# Equal to PIL
# ----------------------------------------------------------------------------------------------
def test_odd_files_equal_pil_in_one_batch(odd):
    """nvImageCodec's CPU codecs match PIL exactly (0 levels) on every odd file, the 4100x2900 JPEG
    included; GIF goes to gpuaug's CPU decoder."""
    decoder = NvImageCodecDecoder(CPU)
    names = sorted(odd)
    images = decoder.decode([odd[name].read_bytes() for name in names], [str(odd[name]) for name in names])
    for name, image in zip(names, images):
        assert isinstance(image, torch.Tensor) and image.dtype == torch.uint8 and image.device == CPU, name
        assert np.array_equal(_hwc(image), pil_rgb(odd[name])), name
    assert decoder.stats["pil"] == 1 and decoder.stats["cpu"] == len(names) - 1 and decoder.stats["failed"] == 0
    assert decoder.backends_in_use == ("cpu", "pil")


def test_more_formats_equal_pil(decoder):
    cases = more_formats()
    before = decoder.stats["pil"]
    images = decoder.decode(list(cases.values()), [f"{name}.img" for name in cases])
    for (name, data), image in zip(cases.items(), images):
        assert isinstance(image, torch.Tensor), (name, image)
        assert np.array_equal(_hwc(image), _pil(data)), name
    # 16-bit (nvImageCodec scales, PIL clips), GIF, ICO and TGA go to gpuaug's CPU decoder
    assert decoder.stats["pil"] - before == 4


def test_input_types_and_headers_give_the_same_image(decoder, odd):
    data = odd["rgb_jpeg"].read_bytes()
    forms = [data, memoryview(data), np.frombuffer(data, np.uint8), torch.frombuffer(bytearray(data), dtype=torch.uint8)]
    images = decoder.decode(forms, ["a.jpg"] * 4)
    with_headers = decoder.decode([data], ["a.jpg"], headers=[read_header(data, "a.jpg")])
    for image in images + with_headers:
        assert torch.equal(image, images[0])
    with pytest.raises(TypeError, match="uint8"):
        decoder.decode([np.zeros(10, np.float32)], ["a.jpg"])
    with pytest.raises(ValueError, match="same length"):
        decoder.decode([data, data], ["a.jpg"])


def test_results_keep_their_memory_alive(odd):
    decoder = NvImageCodecDecoder(CPU)
    images = decoder.decode([odd["large_jpeg"].read_bytes(), odd["rgb_jpeg"].read_bytes()], ["large.jpg", "rgb.jpg"])
    references = [image.clone() for image in images]
    del decoder
    gc.collect()
    churn = [np.full((2900, 4100, 3), 17, np.uint8) for _ in range(3)]  # reuse freed memory, if any was freed
    others = NvImageCodecDecoder(CPU).decode([odd["large_jpeg"].read_bytes()] * 2, ["a.jpg", "b.jpg"])
    for image, reference in zip(images, references):
        assert torch.equal(image, reference)
    assert len(churn) == 3 and len(others) == 2


# ----------------------------------------------------------------------------------------------
# Bad files and limits
# ----------------------------------------------------------------------------------------------
def test_bad_files_are_decode_errors_naming_them_in_place(decoder, bad, odd):
    names = sorted(bad)
    datas = [odd["rgb_jpeg"].read_bytes()] + [bad[name].read_bytes() for name in names] + [odd["webp"].read_bytes()]
    paths = [str(odd["rgb_jpeg"])] + [str(bad[name]) for name in names] + [str(odd["webp"])]
    results = decoder.decode(datas, paths)
    assert np.array_equal(_hwc(results[0]), pil_rgb(odd["rgb_jpeg"]))
    assert np.array_equal(_hwc(results[-1]), pil_rgb(odd["webp"]))
    for name, path, result in zip(names, paths[1:-1], results[1:-1]):
        assert isinstance(result, DecodeError), name
        assert result.path == path and path in str(result), name


def test_random_bytes_mid_file_are_refused(decoder):
    jpeg = jpeg_bytes(200, 240)
    middle = len(jpeg) // 2
    garbled = jpeg[:middle] + b"\x12\xff\x40\x99" + jpeg[middle + 4 :]
    [result] = decoder.decode([garbled], ["/data/garbled.jpg"])
    assert isinstance(result, DecodeError) and result.path == "/data/garbled.jpg" and "0xFF40" in result.reason


def test_pixel_limit(decoder):
    bombs = [bomb_png(20_000, 20_000), with_frame_size(jpeg_bytes(), 20_000, 20_000)]
    results = decoder.decode(bombs, ["bomb.png", "bomb.jpg"])
    for result, path in zip(results, ["bomb.png", "bomb.jpg"]):
        assert isinstance(result, DecodeError) and result.path == path and "exceeds the limit" in result.reason
    small = NvImageCodecDecoder(CPU, max_pixels=96 * 72 - 1)
    data = jpeg_bytes(72, 96)
    [result] = small.decode([data], ["a.jpg"])
    assert isinstance(result, DecodeError) and "limit of 6,911" in result.reason
    [result] = small.decode([data], ["a.jpg"], headers=[read_header(data, "a.jpg", max_pixels=None)])
    assert isinstance(result, DecodeError)  # a header read with another limit is checked again
    assert NvImageCodecDecoder(CPU, max_pixels=96 * 72).decode([data], ["a.jpg"])[0].shape == (3, 72, 96)


def test_arguments():
    with pytest.raises(ValueError, match="backend"):
        NvImageCodecDecoder(CPU, "nvjpeg")
    with pytest.raises(ValueError, match="max_pixels"):
        NvImageCodecDecoder(CPU, max_pixels=0)
    with pytest.raises(ValueError, match="device"):
        NvImageCodecDecoder(torch.device("meta"))
    assert BACKENDS == ("auto", "hw", "hybrid", "cuda", "cpu")


def test_missing_nvimgcodec_gives_the_install_hint(monkeypatch):
    import gpuaug.io.nvdecode as nvdecode

    monkeypatch.setattr(nvdecode, "_nvimgcodec", False)
    assert not nvdecode.nvimgcodec_available()
    with pytest.raises(ImportError, match=r'pip install -e "\.\[gpu\]"'):
        NvImageCodecDecoder(CPU)


# ----------------------------------------------------------------------------------------------
# Regions
# ----------------------------------------------------------------------------------------------
def _random_boxes(height: int, width: int, count: int, rng: np.random.Generator) -> list[tuple[int, int, int, int]]:
    boxes = [(0, 0, height, width), (height - 1, width - 1, 1, 1), (0, 0, 1, 1)]
    while len(boxes) < count:
        box_height, box_width = int(rng.integers(1, height + 1)), int(rng.integers(1, width + 1))
        top, left = int(rng.integers(0, height - box_height + 1)), int(rng.integers(0, width - box_width + 1))
        boxes.append((top, left, box_height, box_width))
    return boxes


@pytest.mark.parametrize(
    "name",
    ["jpeg_420", "jpeg_444", "jpeg_422", "progressive", "gray_jpeg", "cmyk_jpeg", "restart"]
    + ["png", "webp", "tiff", "gif", "png_16bit"],
)
def test_region_decode_equals_full_decode_cropped(decoder, name):
    photo = _photo(251, 333, seed=2)
    data = {
        "jpeg_420": lambda: _encode(photo, "JPEG", quality=90),
        "jpeg_444": lambda: _encode(photo, "JPEG", quality=90, subsampling=0),
        "jpeg_422": lambda: _encode(photo, "JPEG", quality=90, subsampling=1),
        "progressive": lambda: _encode(photo, "JPEG", quality=90, progressive=True),
        "gray_jpeg": lambda: _encode(photo.convert("L"), "JPEG", quality=90),
        "cmyk_jpeg": lambda: _encode(photo.convert("CMYK"), "JPEG", quality=90),
        "restart": lambda: _encode(photo, "JPEG", quality=90, restart_marker_blocks=3),
        "png": lambda: _encode(photo, "PNG"),
        "webp": lambda: _encode(photo, "WEBP", quality=90),
        "tiff": lambda: _encode(photo, "TIFF"),
        "gif": lambda: _encode(photo.convert("P"), "GIF"),
        "png_16bit": lambda: _encode(Image.fromarray(np.asarray(photo.convert("L")).astype(np.uint16) * 200), "PNG"),
    }[name]()
    [full] = decoder.decode([data], ["full"])
    boxes = _random_boxes(251, 333, 24, np.random.default_rng(0))
    before = decoder.stats["region"]
    crops = decoder.decode([data] * len(boxes), [f"crop{index}" for index in range(len(boxes))], regions=torch.tensor(boxes))
    for (top, left, height, width), crop in zip(boxes, crops):
        assert torch.equal(crop, full[:, top : top + height, left : left + width]), (name, (top, left, height, width))
    # nvImageCodec decodes the regions itself, except for what goes to gpuaug's CPU decoder
    assert decoder.stats["region"] - before == (0 if name in ("gif", "png_16bit") else len(boxes))


def test_regions_outside_the_image_are_refused(decoder):
    data = jpeg_bytes(72, 96)
    for box in [(0, 0, 73, 10), (-1, 0, 5, 5), (0, 90, 5, 7), (0, 0, 0, 5)]:
        with pytest.raises(ValueError, match=r"lies outside img\.jpg \(72x96\)"):
            decoder.decode([data], ["img.jpg"], regions=torch.tensor([box]))
    with pytest.raises(ValueError, match=r"\[B, 4\]"):
        decoder.decode([data], ["img.jpg"], regions=torch.tensor([[0, 0, 5]]))


# ----------------------------------------------------------------------------------------------
# EXIF orientation
# ----------------------------------------------------------------------------------------------
def _oriented_jpegs() -> list[bytes]:
    photo = _photo(60, 84, seed=3)
    files = []
    for orientation in range(1, 9):
        exif = Image.Exif()
        exif[0x0112] = orientation
        files.append(_encode(photo, "JPEG", quality=90, exif=exif.tobytes()))
    exif = Image.Exif()
    exif[0x0112] = 6
    files.append(_encode(photo, "PNG", exif=exif.tobytes()))  # PNG eXIf chunk, which PIL also reads
    return files


@pytest.mark.parametrize("exif_orientation", [False, True])
def test_exif_policy(exif_orientation):
    decoder = NvImageCodecDecoder(CPU, exif_orientation=exif_orientation)
    files = _oriented_jpegs()
    images = decoder.decode(files, [f"o{index}.jpg" for index in range(len(files))])
    for index, (data, image) in enumerate(zip(files, images)):
        assert np.array_equal(_hwc(image), _pil(data, exif_orientation)), index
    shapes = {tuple(image.shape) for image in images}
    assert shapes == ({(3, 60, 84), (3, 84, 60)} if exif_orientation else {(3, 60, 84)})


def test_exif_regions_are_in_the_oriented_image():
    decoder = NvImageCodecDecoder(CPU, exif_orientation=True)
    files = _oriented_jpegs()
    fulls = decoder.decode(files, ["o"] * len(files))
    boxes = torch.tensor([(5, 7, 40, 33)] * len(files))
    crops = decoder.decode(files, ["o"] * len(files), regions=boxes)
    for full, crop in zip(fulls, crops):
        assert torch.equal(crop, full[:, 5:45, 7:40])


# ----------------------------------------------------------------------------------------------
# CUDA backends
# ----------------------------------------------------------------------------------------------
def _gpu_corpus(odd) -> dict[str, bytes]:
    files = {name: path.read_bytes() for name, path in odd.items()}
    files.update(more_formats())
    for seed in range(6):
        photo = _photo(300 + 20 * seed, 400 - 10 * seed, seed=10 + seed)
        files[f"photo_{seed}"] = _encode(photo, "JPEG", quality=70 + 5 * seed, subsampling=seed % 3)
    return files


@pytest.mark.cuda
@pytest.mark.parametrize("backend", ["auto", "hw", "hybrid", "cuda", "cpu"])
def test_cuda_backends_match_pil(odd, backend):
    """Non-JPEG formats and CMYK are exact (CPU codecs); GPU-decoded JPEGs differ from libjpeg-turbo's
    integer IDCT and chroma upsampling by a little."""
    decoder = NvImageCodecDecoder(torch.device("cuda"), backend)
    files = _gpu_corpus(odd)
    stream = torch.cuda.Stream()
    images = decoder.decode(list(files.values()), list(files), stream=stream)
    stream.synchronize()
    worst_mean, worst_max = 0.0, 0
    for (name, data), image in zip(files.items(), images):
        assert isinstance(image, torch.Tensor) and image.device.type == "cuda", (name, image)
        reference = _pil(data)
        assert image.shape == (3, *reference.shape[:2]), name
        difference = np.abs(_hwc(image).astype(int) - reference.astype(int))
        header = read_header(data, name)
        if header.format == "jpeg" and header.components in (1, 3):
            worst_mean, worst_max = max(worst_mean, difference.mean()), max(worst_max, int(difference.max()))
        else:
            assert difference.max() == 0, name
    stages = f"stages {decoder.backends_in_use}, {dict(decoder.stats)}"
    print(f"{backend}: {stages}, JPEG vs PIL mean {worst_mean:.3f} max {worst_max}")
    # H200, nvImageCodec 0.9: hardware engines max 1; nvJPEG hybrid mean 0.042, max 3
    assert worst_mean <= 0.05 and worst_max <= 3
    if backend != "cpu":
        # the 16 JPEGs with 1 or 3 components; the hardware engines leave the progressive one to the CPU
        assert decoder.stats["hw"] + decoder.stats["gpu"] == (15 if backend == "hw" else 16)


@pytest.mark.cuda
@pytest.mark.parametrize("backend", ["auto", "hw", "hybrid", "cuda"])
def test_cuda_region_decode_equals_full_decode_cropped(backend):
    decoder = NvImageCodecDecoder(torch.device("cuda"), backend)
    photo = _photo(251, 333, seed=2)
    datas = [_encode(photo, "JPEG", quality=90), _encode(photo, "JPEG", quality=90, progressive=True), _encode(photo, "PNG")]
    boxes = _random_boxes(251, 333, 8, np.random.default_rng(0))
    fulls = decoder.decode(datas, ["full.jpg", "full_progressive.jpg", "full.png"])
    for data, full in zip(datas, fulls):
        crops = decoder.decode([data] * len(boxes), ["crop"] * len(boxes), regions=torch.tensor(boxes))
        for (top, left, height, width), crop in zip(boxes, crops):
            assert torch.equal(crop, full[:, top : top + height, left : left + width])
    # the PNG's regions by the CPU codecs (with "hw" also the progressive JPEG's)
    assert decoder.stats["region"] == (2 if backend == "hw" else 1) * len(boxes)


def test_packed_bomb_header_is_what_it_says():
    assert struct.unpack(">II", bomb_png(7, 9)[16:24]) == (9, 7)
