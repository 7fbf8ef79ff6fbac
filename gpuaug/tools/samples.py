"""Real photographs for demos, tests and benchmarks, offline: scikit-image's bundled samples.

Nothing is downloaded: the photos ship inside the scikit-image wheel. Crops of them, resized to
ImageNet-like sizes, stand in for a natural-image data set.

Example:
    >>> images = photo_crops(4, seed=0)
    >>> len(images), images[0].dtype, images[0].shape[0]
    (4, torch.uint8, 3)
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

__all__ = ["PHOTOS", "load_photo", "photo_crops", "random_photo_crop", "resolve_image", "write_photo_folder"]

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry", "retina")
"""scikit-image sample images that are colour photographs bundled in its wheel."""


def load_photo(name: str) -> Image.Image:
    """One bundled scikit-image photo as an RGB PIL image.

    Raises:
        ValueError: for a name that is not in ``PHOTOS``.
    """
    if name not in PHOTOS:
        raise ValueError(f"unknown sample photo {name!r}; choose one of {', '.join(PHOTOS)}")
    try:
        import skimage.data
    except ImportError as error:  # pragma: no cover - scikit-image is a dependency
        raise ImportError("sample photos need scikit-image: pip install scikit-image") from error
    return Image.fromarray(np.ascontiguousarray(getattr(skimage.data, name)())).convert("RGB")


def resolve_image(spec: str) -> Image.Image:
    """Open ``spec`` as an image file, or ``skimage:NAME`` as a bundled photo, as RGB.

    Raises:
        ValueError: naming the file or sample when it cannot be opened.
    """
    if spec.startswith("skimage:"):
        return load_photo(spec.split(":", 1)[1])
    try:
        mode = os.stat(spec).st_mode
    except OSError as error:
        raise ValueError(f"cannot read image {spec}: {error.strerror or error}") from None
    if not stat.S_ISREG(mode):  # a FIFO or a device would block the read
        raise ValueError(f"cannot read image {spec}: not a regular file")
    try:
        with Image.open(spec) as image:
            return image.convert("RGB")
    except FileNotFoundError:
        raise ValueError(f"image file not found: {spec}") from None
    except Image.DecompressionBombError as error:  # not an OSError; PIL's pixel limit (Image.MAX_IMAGE_PIXELS)
        raise ValueError(f"cannot read image {spec}: {error}") from None
    except OSError as error:
        raise ValueError(f"cannot read image {spec}: {error}") from None


def photo_crops(
    count: int,
    seed: int = 0,
    short_side: tuple[int, int] = (200, 500),
    aspect: tuple[float, float] = (0.6, 1.7),
    photos: Sequence[str] = PHOTOS,
) -> list[torch.Tensor]:
    """``count`` random crops of the bundled photos, resized so their shorter side lies in ``short_side``.

    Args:
        count: number of images.
        seed: makes the set reproducible.
        short_side: range of the shorter side in pixels (ImageNet's typical 200-500 by default).
        aspect: range of width / height.
        photos: which of ``PHOTOS`` to crop from.

    Returns:
        A list of uint8 ``[3, H, W]`` tensors of different sizes.
    """
    rng = np.random.default_rng(seed)
    photos = [load_photo(name) for name in photos]
    images = []
    for _ in range(count):
        crop = random_photo_crop(photos, rng, short_side, aspect)
        images.append(torch.from_numpy(np.asarray(crop).copy()).permute(2, 0, 1).contiguous())
    return images


def random_photo_crop(
    photos: Sequence[Image.Image],
    rng: np.random.Generator,
    short_side: tuple[int, int] = (200, 500),
    aspect: tuple[float, float] = (0.6, 1.7),
) -> Image.Image:
    """A random crop (30-100 % of the area, width / height in ``aspect``) of a random one of
    ``photos``, resized so that its shorter side lies in ``short_side``.

    Example:
        >>> crop = random_photo_crop([load_photo("chelsea")], np.random.default_rng(0), (40, 40))
        >>> min(crop.size)
        40
    """
    photo = photos[rng.integers(len(photos))]
    width, height = photo.size
    ratio = float(np.exp(rng.uniform(np.log(aspect[0]), np.log(aspect[1]))))
    area = width * height * rng.uniform(0.3, 1.0)
    crop_w = int(min(width, round(np.sqrt(area * ratio))))
    crop_h = int(min(height, round(np.sqrt(area / ratio))))
    left = int(rng.integers(0, width - crop_w + 1))
    top = int(rng.integers(0, height - crop_h + 1))
    crop = photo.crop((left, top, left + crop_w, top + crop_h))
    scale = int(rng.integers(short_side[0], short_side[1] + 1)) / min(crop_w, crop_h)
    return crop.resize((max(1, round(crop_w * scale)), max(1, round(crop_h * scale))), Image.BILINEAR)


def write_photo_folder(
    root: str | os.PathLike,
    classes: Sequence[str],
    per_class: int,
    seed: int = 0,
    short_side: tuple[int, int] = (200, 500),
    quality: tuple[int, int] = (75, 95),
    subsampling_420: float = 0.8,
    photos: Sequence[Sequence[str]] | None = None,
) -> list[str]:
    """Write an ImageFolder of JPEG photo crops: ``root/<class>/<class>_<n>.jpg``.

    ImageNet-like by default: shorter side 200-500 px, mixed aspect ratios, quality 75-95,
    mostly 4:2:0 chroma subsampling (the rest 4:4:4). Reproducible from ``seed``.

    Args:
        photos: per class, the photos its crops come from (default: every class from all of
            ``PHOTOS``, so classes are only names).

    Returns:
        The written paths, in order.
    """
    rng = np.random.default_rng(seed)
    if photos is None:
        images = photo_crops(len(classes) * per_class, seed=seed, short_side=short_side)
    else:
        per_photo_set = [
            photo_crops(per_class, seed=seed + 7919 * index, short_side=short_side, photos=names)
            for index, names in enumerate(photos)
        ]
        images = [per_photo_set[index % len(classes)][index // len(classes)] for index in range(len(classes) * per_class)]
    paths = []
    for index, image in enumerate(images):
        name = classes[index % len(classes)]
        folder = os.path.join(os.fspath(root), name)
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, f"{name}_{index // len(classes):05d}.jpg")
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(
            path,
            "JPEG",
            quality=int(rng.integers(quality[0], quality[1] + 1)),
            subsampling=2 if rng.random() < subsampling_420 else 0,
        )
        paths.append(path)
    return paths
