"""The built-in demo data set: "cat / not cat", made offline from scikit-image's bundled photos.

In the spirit of d2l's hotdog / not-hotdog: ``train/{cat,not-cat}`` and ``test/{cat,not-cat}``,
crops of the chelsea photo against crops of the other colour photos, written once to the user's
cache directory (a few hundred small JPEGs, a few seconds).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from gpuaug.tools.samples import PHOTOS, write_photo_folder

CLASSES = ("cat", "not-cat")
CAT_PHOTOS = ("chelsea",)
OTHER_PHOTOS = tuple(name for name in PHOTOS if name != "chelsea")
VERSION = 1


def default_root() -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return cache / "gpuaug" / f"finetune-demo-v{VERSION}"


def build(root: Path | None = None, train_per_class: int = 120, test_per_class: int = 50, seed: int = 0) -> Path:
    """Write (or reuse) the demo ImageFolder at ``root`` and return it."""
    root = Path(root) if root is not None else default_root()
    marker = root / ".complete.json"
    expected = {"train_per_class": train_per_class, "test_per_class": test_per_class, "seed": seed, "version": VERSION}
    if marker.exists() and json.loads(marker.read_text()) == expected:
        return root
    for split, count, split_seed in (("train", train_per_class, seed), ("test", test_per_class, seed + 1)):
        write_photo_folder(
            root / split, CLASSES, count, seed=split_seed, short_side=(112, 200), photos=[CAT_PHOTOS, OTHER_PHOTOS]
        )
    marker.write_text(json.dumps(expected))
    return root
