"""The benchmark data set, made offline from scikit-image's bundled photos: a real data set's tails included.

By default (``tails``) the set looks like a real one (ImageNet's train set has CMYK files, PNGs
named .jpg and images several thousand pixels wide): random crops of the photos with shorter sides
of 200-500 px and aspect ratios 0.6-1.7, JPEG quality 75-95 with 4:2:0 chroma subsampling, plus
a few percent of each of ``KINDS``:

=================  =====================================================  ==================
kind               what                                                   share (at least 1)
=================  =====================================================  ==================
huge               JPEG above 4000x3000 (4800x3200 or 3024x4032)           0.1 %
tiny               JPEG with a shorter side under 32 px (8-31)            0.3 %
cmyk               CMYK JPEG (Adobe)                                      0.4 %
grayscale          single-channel JPEG                                    1 %
progressive        progressive JPEG                                       2 %
jpeg-444           JPEG without chroma subsampling                        10 %
png-rgba           PNG with an alpha channel                              0.3 %
png-palette        8-bit palette PNG                                      0.3 %
wrong-extension    PNG saved under a .jpg name                            0.2 %
webp               lossy WebP                                             0.4 %
exif-rotated       JPEG whose EXIF orientation is 3, 6 or 8               0.5 %
=================  =====================================================  ==================

``clean`` is the earlier uniform set: JPEG crops only (quality 75-95, 80 % 4:2:0, the rest 4:4:4).
Both are ImageFolders of 10 classes and the same ``(kind, count, seed)`` gives the same files.
Sets are written only into a cache folder or a folder named by ``--out``; a ``--data`` folder of
the user's is read and never written.

Example:
    >>> plan(20, seed=0).count("jpeg") < 20
    True
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from gpuaug.tools.samples import PHOTOS, load_photo, random_photo_crop, write_photo_folder
from gpuaug.tools.shards import write_shards

CLASSES = tuple(f"class_{index:02d}" for index in range(10))
VERSION = 2  # bump when the generator's output changes: cached sets are named by it
KINDS = {  # kind -> share of the set (each kind gets at least one image when the set is large enough)
    "huge": 0.001,
    "tiny": 0.003,
    "cmyk": 0.004,
    "grayscale": 0.01,
    "progressive": 0.02,
    "jpeg-444": 0.10,
    "png-rgba": 0.003,
    "png-palette": 0.003,
    "wrong-extension": 0.002,
    "webp": 0.004,
    "exif-rotated": 0.005,
}
HUGE_SIZES = ((4800, 3200), (3024, 4032))  # (width, height): above 4000x3000 either way round
EXTENSIONS = {"png-rgba": ".png", "png-palette": ".png", "webp": ".webp"}
MARKER = ".complete.json"


# ----------------------------------------------------------------------------------------------
# What each image is
# ----------------------------------------------------------------------------------------------
def plan(count: int, seed: int = 0) -> list[str]:
    """The kind of each of ``count`` images of the tails set: ``"jpeg"`` or one of ``KINDS``.

    Each kind gets ``max(1, round(share * count))`` images at positions drawn from ``seed``; a set
    too small for all of them keeps the kinds in ``KINDS`` order until it is full.
    """
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    kinds = ["jpeg"] * count
    positions = iter(np.random.default_rng([seed, 1]).permutation(count).tolist())
    for kind, share in KINDS.items():
        for _ in range(max(1, round(share * count))):
            position = next(positions, None)
            if position is None:
                return kinds
            kinds[position] = kind
    return kinds


def _crop(photos: list[Image.Image], rng: np.random.Generator, short_side: tuple[int, int]) -> Image.Image:
    """A random crop of a random photo, aspect 0.6-1.7, resized so its shorter side lies in ``short_side``."""
    return random_photo_crop(photos, rng, short_side, (0.6, 1.7))


def _huge(photos: list[Image.Image], rng: np.random.Generator) -> Image.Image:
    """A crop upscaled to 4800x3200 (or 3024x4032) with fine noise, so it costs what a camera photo costs."""
    width, height = HUGE_SIZES[int(rng.integers(len(HUGE_SIZES)))]
    base = _crop(photos, rng, (400, 500)).resize((width, height), Image.BILINEAR)
    noise = rng.integers(-6, 7, size=(height, width, 1), dtype=np.int16)
    return Image.fromarray(np.clip(np.asarray(base, dtype=np.int16) + noise, 0, 255).astype(np.uint8))


def encode(kind: str, image: Image.Image, rng: np.random.Generator) -> bytes:
    """The file bytes of ``image`` (RGB) as ``kind``."""
    buffer = io.BytesIO()
    quality = int(rng.integers(75, 96))
    if kind in ("jpeg", "huge", "tiny", "exif-rotated"):
        options = {}
        if kind == "exif-rotated":
            exif = Image.Exif()
            exif[0x0112] = int(rng.choice([3, 6, 8]))
            options["exif"] = exif.tobytes()
        image.save(buffer, "JPEG", quality=quality, subsampling=2, **options)
    elif kind == "jpeg-444":
        image.save(buffer, "JPEG", quality=quality, subsampling=0)
    elif kind == "progressive":
        image.save(buffer, "JPEG", quality=quality, subsampling=2, progressive=True, optimize=True)
    elif kind == "cmyk":
        image.convert("CMYK").save(buffer, "JPEG", quality=quality)
    elif kind == "grayscale":
        image.convert("L").save(buffer, "JPEG", quality=quality)
    elif kind == "png-rgba":
        alpha = np.linspace(64, 255, image.width, dtype=np.uint8)[None, :].repeat(image.height, 0)
        rgba = image.copy()
        rgba.putalpha(Image.fromarray(alpha))
        rgba.save(buffer, "PNG")
    elif kind == "png-palette":
        image.convert("P", palette=Image.Palette.ADAPTIVE, colors=256).save(buffer, "PNG")
    elif kind == "wrong-extension":
        image.save(buffer, "PNG")
    elif kind == "webp":
        image.save(buffer, "WEBP", quality=quality)
    else:
        raise ValueError(f"unknown image kind {kind!r}; expected 'jpeg' or one of {', '.join(KINDS)}")
    return buffer.getvalue()


def file_name(index: int, kind: str) -> str:
    """``class_XX/class_XX_NNNNN.ext``: classes take turns, so every class gets each part of the plan."""
    name = CLASSES[index % len(CLASSES)]
    return f"{name}/{name}_{index // len(CLASSES):05d}{EXTENSIONS.get(kind, '.jpg')}"


_PHOTOS: list[Image.Image] = []


def _write_range(root: str, seed: int, kinds: Sequence[str], start: int) -> None:
    """Write images ``start .. start + len(kinds) - 1`` (each from its own seed, so any split gives the same files)."""
    if not _PHOTOS:
        _PHOTOS.extend(load_photo(name) for name in PHOTOS)
    for offset, kind in enumerate(kinds):
        index = start + offset
        rng = np.random.default_rng([seed, 2, index])
        if kind == "huge":
            image = _huge(_PHOTOS, rng)
        else:
            image = _crop(_PHOTOS, rng, (8, 31) if kind == "tiny" else (200, 500))
        path = Path(root) / file_name(index, kind)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(encode(kind, image, rng))


def write_tails(root: Path, count: int, seed: int, processes: int = 1) -> list[str]:
    """Write the tails set into ``root`` (``processes`` > 1 splits the work; the files are the same)."""
    kinds = plan(count, seed)
    chunk = max(1, -(-count // max(1, processes)))
    if processes <= 1 or count < 64:
        _write_range(str(root), seed, kinds, 0)
    else:
        with ProcessPoolExecutor(processes) as pool:
            jobs = [pool.submit(_write_range, str(root), seed, kinds[s : s + chunk], s) for s in range(0, count, chunk)]
            for job in jobs:
                job.result()
    return kinds


# ----------------------------------------------------------------------------------------------
# Where sets live
# ----------------------------------------------------------------------------------------------
def default_root(count: int, seed: int, clean: bool = False) -> Path:
    """The cache folder of a generated set (``$XDG_CACHE_HOME/gpuaug/...``, named by kind, count, seed, version)."""
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return cache / "gpuaug" / f"benchmark-data-v{VERSION}-{'clean' if clean else 'tails'}-{count}-{seed}"


def make(root: Path, count: int, seed: int, clean: bool = False, processes: int | None = None) -> Path:
    """Write the set at ``root`` unless it is already there: into a temporary sibling, then renamed.

    Raises:
        FileExistsError: naming ``root`` when it holds anything but this very set.
    """
    root = Path(root)
    wanted = {"set": "clean" if clean else "tails", "count": count, "seed": seed, "version": VERSION}
    marker = root / MARKER
    if marker.exists():
        found = json.loads(marker.read_text())
        if {key: found.get(key) for key in wanted} == wanted:
            return root
        raise FileExistsError(f"{root} holds another benchmark set ({found}); remove it or choose another folder")
    if root.exists() and any(root.iterdir()):
        raise FileExistsError(f"{root} is not empty and is not a benchmark set; choose an empty or new folder")
    root.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{root.name}.partial-", dir=root.parent))
    try:
        if clean:
            per_class = max(1, count // len(CLASSES))
            write_photo_folder(partial, CLASSES, per_class, seed=seed)
            wanted["count"], kinds = count, None
        else:
            processes = processes if processes is not None else min(8, os.cpu_count() or 1)
            kinds = write_tails(partial, count, seed, processes)
        record = dict(wanted, kinds=dict(Counter(kinds)) if kinds else {"jpeg": count})
        (partial / MARKER).write_text(json.dumps(record, indent=1) + "\n")
        if root.exists():
            root.rmdir()  # empty (checked above)
        try:
            os.replace(partial, root)
        except OSError:
            if not marker.exists():  # not another process that made the same set meanwhile
                raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return root


def ensure(data: Path | str | None, count: int, seed: int, clean: bool = False) -> Path:
    """The folder to benchmark: the user's ``data`` as it is (never written), or the cached generated set.

    Raises:
        FileNotFoundError: naming ``data`` when it is not a folder.
    """
    if data is not None:
        data = Path(data)
        if not data.is_dir():
            raise FileNotFoundError(f"--data {data}: not a folder (expected an ImageFolder: DATA/<class>/<images>)")
        return data
    return make(default_root(count, seed, clean), count, seed, clean)


# ----------------------------------------------------------------------------------------------
# What a folder holds
# ----------------------------------------------------------------------------------------------
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".ppm", ".pgm")


def classify(path: str | os.PathLike) -> tuple[str | None, tuple[int, int], list[str]]:
    """``(format, (width, height), oddity kinds)`` of one file from its header (no pixels decoded).

    The kinds are those of ``KINDS`` that the file shows; an unreadable file gives
    ``(None, (0, 0), ["unreadable"])``.
    """
    path = Path(path)
    try:
        with Image.open(path) as image:
            kinds = []
            width, height = image.size
            if max(width, height) > 4000 or width * height >= 12_000_000:
                kinds.append("huge")
            if min(width, height) < 32:
                kinds.append("tiny")
            if image.mode == "CMYK":
                kinds.append("cmyk")
            if image.mode in ("L", "LA", "1", "I", "I;16"):
                kinds.append("grayscale")
            if image.format == "JPEG":
                if image.info.get("progressive") or image.info.get("progression"):
                    kinds.append("progressive")
                if image.mode in ("RGB", "YCbCr") and _sampling(image) == "4:4:4":
                    kinds.append("jpeg-444")
            if image.format == "PNG" and (image.mode in ("RGBA", "LA") or "transparency" in image.info):
                kinds.append("png-rgba")
            if image.format == "PNG" and image.mode == "P":
                kinds.append("png-palette")
            if image.format == "WEBP":
                kinds.append("webp")
            expected = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".webp": "WEBP"}.get(path.suffix.lower())
            if expected is not None and image.format != expected:
                kinds.append("wrong-extension")
            if image.getexif().get(0x0112, 1) not in (1, None):
                kinds.append("exif-rotated")
            return image.format, (width, height), kinds
    except Exception:  # noqa: BLE001 - any unreadable file is reported as such, not raised
        return None, (0, 0), ["unreadable"]


def _sampling(image: Image.Image) -> str:
    layers = getattr(image, "layer", None)
    if not layers:
        return "other"
    factor = tuple(layers[0][1:3])
    return {(2, 2): "4:2:0", (1, 1): "4:4:4", (2, 1): "4:2:2"}.get(factor, "other")


def _spread(values: np.ndarray) -> dict[str, float]:
    quantiles = np.percentile(values, [0, 5, 50, 95, 100]) if len(values) else [0.0] * 5
    return {key: round(float(value), 3) for key, value in zip(("min", "p5", "median", "p95", "max"), quantiles)}


def describe(root: str | os.PathLike, limit: int = 20_000) -> dict:
    """What a folder of images holds, for the results file: count, size spread, formats and oddities.

    Args:
        root: an ImageFolder (any images, generated or not; only headers are read).
        limit: read at most this many files (in name order) for the spreads and counts.

    Returns:
        A dict with ``count``, ``classes``, ``formats``, ``chroma_subsampling``, the spreads
        (min/p5/median/p95/max) of ``short_side``, ``long_side``, ``aspect`` (width / height) and
        ``megapixels``, ``oddities`` (kind -> files), ``oddity_kinds``, ``oddity_fraction`` (files
        with any oddity, 4:4:4 and progressive JPEGs not counted) and ``total_megabytes``.
    """
    root = Path(root)
    files = sorted(path for path in root.rglob("*") if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES)
    read = files[:limit]
    formats: Counter = Counter()
    oddities: Counter = Counter()
    sampling: Counter = Counter()
    sizes, odd_files = [], 0
    for path in read:
        kind, size, kinds = classify(path)
        formats[kind or "unreadable"] += 1
        oddities.update(kinds)
        odd_files += bool(set(kinds) - {"jpeg-444", "progressive"})
        if kind is not None:
            sizes.append(size)
        if kind == "JPEG" and "cmyk" not in kinds and "grayscale" not in kinds:
            sampling["4:4:4" if "jpeg-444" in kinds else "4:2:0 or other"] += 1
    widths, heights = np.array(sizes, dtype=np.float64).T if sizes else (np.zeros(0), np.zeros(0))
    short, long = np.minimum(widths, heights), np.maximum(widths, heights)
    marker = root / MARKER
    generated = json.loads(marker.read_text()) if marker.exists() else None
    return {
        "path": str(root),
        "set": generated.get("set", "clean") if generated else "user data",
        "generator": generated,
        "count": len(files),
        "read": len(read),
        "classes": len([path for path in root.iterdir() if path.is_dir()]),
        "formats": dict(sorted(formats.items())),
        "chroma_subsampling": dict(sorted(sampling.items())),
        "mean_width": round(float(widths.mean()), 1) if sizes else 0.0,
        "mean_height": round(float(heights.mean()), 1) if sizes else 0.0,
        "mean_short_side": round(float(short.mean()), 1) if sizes else 0.0,
        "short_side": _spread(short),
        "long_side": _spread(long),
        "aspect": _spread(widths / np.maximum(heights, 1)),
        "megapixels": _spread(widths * heights / 1e6),
        "oddities": dict(sorted(oddities.items())),
        "oddity_kinds": len(set(oddities) - {"unreadable"}),
        "oddity_fraction": round(odd_files / max(1, len(read)), 4),
        "total_megabytes": round(sum(path.stat().st_size for path in files) / 2**20, 1),
    }


def summary(described: dict) -> str:
    """One line for tables: count, short-side spread and the oddities."""
    short = described.get("short_side")
    spread = f", short side {short['min']:.0f}-{short['max']:.0f} px (median {short['median']:.0f})" if short else ""
    odd = described.get("oddities")
    if odd is None:  # a results file written before the tails set existed
        return f"{described.get('count', '?')} clean JPEGs{spread}"
    kinds = ", ".join(f"{kind} {number}" for kind, number in odd.items())
    name = described.get("set", "data")
    fraction = described.get("oddity_fraction", 0)
    return f"{described['count']} images ({name}){spread}; oddities {fraction:.1%}: {kinds or 'none'}"


def ensure_shards(root: Path, size: str, folder: Path | None = None) -> list[Path]:
    """The set at ``root`` as WebDataset tar shards of at most ``size``: kept beside it in a folder named by
    the size (``<root>-shards-<size>``, written once) or written into ``folder``. The loader benchmark and
    ``data --shards`` share it, so a row's shard layout never depends on which ran first."""
    folder = folder or Path(f"{root}-shards-{size}")
    listing = folder / "shards.json"
    if listing.exists():
        return [folder / entry["url"] for entry in json.loads(listing.read_text())["shardlist"]]
    return write_shards(root, folder, size=size)


def main(args: argparse.Namespace) -> Path:
    if args.out:
        root = make(Path(args.out), args.count, args.seed, clean=args.clean)
    else:
        root = ensure(None, args.count, args.seed, clean=args.clean)
    print(json.dumps(describe(root), indent=2))
    if getattr(args, "shards", False):  # the same set as WebDataset shards beside it (ga.WebDataset reads it)
        written = ensure_shards(root, args.shard_size)
        print(f"{len(written)} shard(s) in {written[0].parent}")
    return root
