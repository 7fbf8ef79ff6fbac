"""pytest-benchmark micro-benchmarks of the loaders (``pytest benchmarks --benchmark-only``): one epoch
of a small JPEG set, same ops and workers. In the default test run each body runs once, as a test."""

from __future__ import annotations

import pytest
import torch
from torchvision import datasets

import gpuaug as ga
from benchmarks.common import gpuaug_recipe, pil_recipe
from gpuaug.tools.samples import write_photo_folder

SIZE, WORKERS, BATCH = 128, 2, 16


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench-folder")
    write_photo_folder(root, ("a", "b"), 24, seed=3, short_side=(150, 260))
    return root


def _epoch(loader) -> tuple[int, torch.Size]:
    count, shape = 0, None
    for images, labels in loader:
        count, shape = count + len(labels), images.shape[1:]
    return count, shape


def test_gpuaug_loader(benchmark, folder):
    loader = ga.GPULoader(
        ga.ImageFolder(folder),
        BATCH,
        shuffle=True,
        num_workers=WORKERS,
        persistent_workers=True,
        transform=gpuaug_recipe(SIZE),
        device="cpu",
    )
    assert benchmark(_epoch, loader) == (48, (3, SIZE, SIZE))


def test_pil_dataloader(benchmark, folder):
    dataset = datasets.ImageFolder(folder, transform=pil_recipe(SIZE))
    loader = torch.utils.data.DataLoader(dataset, BATCH, shuffle=True, num_workers=WORKERS, persistent_workers=True)
    assert benchmark(_epoch, loader) == (48, (3, SIZE, SIZE))


def test_dali_loader(benchmark, folder):
    pytest.importorskip("nvidia.dali")
    from gpuaug.dali import DALILoader

    loader = DALILoader(folder, BATCH, shuffle=True, transform=gpuaug_recipe(SIZE), device="cpu", num_threads=WORKERS)
    assert benchmark(_epoch, loader) == (48, (3, SIZE, SIZE))
