"""The benchmark data set: ImageNet-like JPEGs made offline from scikit-image's bundled photos.

Random crops of the photos, resized to shorter sides of 200-500 px with mixed aspect ratios,
saved as JPEG quality 75-95, 80 % with 4:2:0 chroma subsampling, in an ImageFolder of 10 classes.
The same seed and count give the same files.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
from PIL import Image

from gpuaug.samples import write_photo_folder

CLASSES = tuple(f"class_{index:02d}" for index in range(10))


def default_root(count: int, seed: int) -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return cache / "gpuaug" / f"benchmark-data-{count}-{seed}"


def describe(root: Path) -> dict:
    """Count, mean size and format mix of a folder, for the results file."""
    files = sorted(path for path in root.rglob("*") if path.is_file() and path.suffix.lower() in (".jpg", ".jpeg"))
    sizes = []
    subsampling = {"4:2:0": 0, "4:4:4": 0, "other": 0}
    for path in files[:2000]:
        with Image.open(path) as image:
            sizes.append(image.size)
            layers = getattr(image, "layers", 3)
            sampling = getattr(image, "layer", None)
            if sampling and layers == 3:
                factors = tuple(entry[1:3] for entry in sampling)
                key = "4:2:0" if factors[0] == (2, 2) else "4:4:4" if factors[0] == (1, 1) else "other"
                subsampling[key] += 1
    widths, heights = np.array(sizes).T if sizes else (np.zeros(1), np.zeros(1))
    return {
        "path": str(root),
        "count": len(files),
        "classes": len([p for p in root.iterdir() if p.is_dir()]),
        "mean_width": float(widths.mean()),
        "mean_height": float(heights.mean()),
        "mean_short_side": float(np.minimum(widths, heights).mean()),
        "format": "JPEG",
        "chroma_subsampling": subsampling,
        "total_megabytes": round(sum(path.stat().st_size for path in files) / 2**20, 1),
    }


def ensure(root: Path | None, count: int, seed: int) -> Path:
    """The data set at ``root`` (or the cached default), written if missing or incomplete."""
    root = Path(root) if root is not None else default_root(count, seed)
    marker = root / ".complete.json"
    if marker.exists():
        return root
    per_class = max(1, count // len(CLASSES))
    write_photo_folder(root, CLASSES, per_class, seed=seed)
    marker.write_text(json.dumps({"count": per_class * len(CLASSES), "seed": seed}))
    return root


def main(args: argparse.Namespace) -> Path:
    root = ensure(Path(args.out) if args.out else None, args.count, args.seed)
    print(json.dumps(describe(root), indent=2))
    return root
