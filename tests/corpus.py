"""Test corpora written to disk: real-photo ImageFolders, odd-but-valid files and bad files."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import gpuaug as ga
from gpuaug.tools.samples import load_photo, photo_crops, write_photo_folder

# The training recipe at a test-sized output: crop + flip + colour + normalise.
TRAIN = [
    ga.RandomResizedCrop(48),
    ga.RandomHorizontalFlip(),
    ga.ColorJitter(0.4, 0.4, 0.4),
    ga.Normalize(ga.IMAGENET_MEAN, ga.IMAGENET_STD),
]


def epoch(loader) -> tuple[torch.Tensor, torch.Tensor]:
    """One epoch of a loader, images and labels concatenated."""
    batches = list(loader)
    return torch.cat([images for images, _ in batches]), torch.cat([labels for _, labels in batches])


def photo_folder(root: Path, classes=("cat", "dog", "fox"), per_class: int = 8, seed: int = 0) -> Path:
    """A small ImageFolder of JPEG photo crops (shorter side 60-140 px)."""
    write_photo_folder(root, classes, per_class, seed=seed, short_side=(60, 140))
    return root


def _photo(size: tuple[int, int], seed: int = 0) -> Image.Image:
    image = photo_crops(1, seed=seed, short_side=(min(size), min(size)))[0]
    return Image.fromarray(image.permute(1, 2, 0).numpy()).resize(size, Image.BILINEAR)


def _save(image: Image.Image, path: Path, fmt: str, **options) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, fmt, **options)
    return path


def odd_files(root: Path) -> dict[str, Path]:
    """Valid images that are unusual: every one must decode to what PIL's convert('RGB') gives."""
    photo = _photo((96, 72), seed=1)
    files = {
        "rgb_jpeg": _save(photo, root / "odd" / "rgb.jpg", "JPEG", quality=90),
        "gray_jpeg": _save(photo.convert("L"), root / "odd" / "gray.jpg", "JPEG", quality=90),
        "cmyk_jpeg": _save(photo.convert("CMYK"), root / "odd" / "cmyk.jpg", "JPEG", quality=90),
        "progressive_jpeg": _save(photo, root / "odd" / "progressive.jpg", "JPEG", quality=90, progressive=True),
        "rgba_png": _save(photo.convert("RGBA"), root / "odd" / "rgba.png", "PNG"),
        "palette_png": _save(photo.convert("P", palette=Image.ADAPTIVE, colors=64), root / "odd" / "palette.png", "PNG"),
        "gray_png": _save(photo.convert("L"), root / "odd" / "gray.png", "PNG"),
        "webp": _save(photo, root / "odd" / "photo.webp", "WEBP", quality=90),
        "gif": _save(photo.convert("P", palette=Image.ADAPTIVE), root / "odd" / "photo.gif", "GIF"),
        "bmp": _save(photo, root / "odd" / "photo.bmp", "BMP"),
        "tiff": _save(photo, root / "odd" / "photo.tiff", "TIFF"),
        "tiny_jpeg": _save(_photo((17, 13), seed=2), root / "odd" / "tiny.jpg", "JPEG", quality=90),
        "png_named_jpg": _save(photo, root / "odd" / "actually_png.jpg", "PNG"),
    }
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    files["exif_rotated_jpeg"] = _save(photo, root / "odd" / "exif6.jpg", "JPEG", quality=90, exif=exif.tobytes())
    large = load_photo("retina").resize((4100, 2900), Image.BILINEAR)
    files["large_jpeg"] = _save(large, root / "odd" / "large.jpg", "JPEG", quality=85)
    return files


def bad_files(root: Path) -> dict[str, Path]:
    """Files that are not decodable images, with image extensions."""
    folder = root / "bad"
    folder.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    _photo((80, 60), seed=3).save(buffer, "JPEG", quality=90)
    jpeg = buffer.getvalue()
    garbled = bytearray(jpeg)
    rng = np.random.default_rng(0)
    start = jpeg.index(b"\xff\xc4")  # the Huffman tables: garbage there cannot decode
    garbled[start + 4 : start + 60] = rng.integers(0, 256, 56, dtype=np.uint8).tobytes()
    contents = {
        "empty": b"",
        "text": b"this is not an image, just some text\n" * 20,
        "html": b"<!DOCTYPE html><html><head><title>404 Not Found</title></head><body>Not Found</body></html>\n",
        "truncated": jpeg[: len(jpeg) // 2],
        "header_only": jpeg[: jpeg.index(b"\xff\xda") + 2],
        "garbled": bytes(garbled),
    }
    paths = {}
    for name, data in contents.items():
        paths[name] = folder / f"{name}.jpg"
        paths[name].write_bytes(data)
    return paths


def pil_rgb(path: os.PathLike, exif_orientation: bool = False) -> np.ndarray:
    """The reference: PIL's open + (optional EXIF transpose) + convert('RGB')."""
    from PIL import ImageOps

    with Image.open(path) as image:
        image.load()
        if exif_orientation:
            image = ImageOps.exif_transpose(image)
        return np.array(image.convert("RGB"))
