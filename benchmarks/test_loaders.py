"""pytest-benchmark micro-benchmarks of the loaders (``pytest benchmarks --benchmark-only``): one epoch
of a small JPEG set, same ops and workers. In the default test run each body runs once, as a test."""

from __future__ import annotations

import pytest
import torch
from torchvision import datasets
from torchvision import transforms as v1

import gpuaug as ga
from gpuaug.samples import write_photo_folder

SIZE, WORKERS, BATCH = 128, 2, 16


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench-folder")
    write_photo_folder(root, ("a", "b"), 24, seed=3, short_side=(150, 260))
    return root


def _ops():
    return ga.Compose(
        [
            ga.RandomResizedCrop(SIZE),
            ga.RandomHorizontalFlip(),
            ga.ColorJitter(0.4, 0.4, 0.4),
            ga.Normalize(ga.IMAGENET_MEAN, ga.IMAGENET_STD),
        ]
    )


def _epoch(loader) -> tuple[int, torch.Size]:
    count, shape = 0, None
    for images, labels in loader:
        count, shape = count + len(labels), images.shape[1:]
    return count, shape


def test_gpuaug_loader(benchmark, folder):
    loader = ga.GPULoader(
        ga.ImageFolder(folder), BATCH, shuffle=True, num_workers=WORKERS, persistent_workers=True, transform=_ops(), device="cpu"
    )
    assert benchmark(_epoch, loader) == (48, (3, SIZE, SIZE))


def test_pil_dataloader(benchmark, folder):
    dataset = datasets.ImageFolder(
        folder,
        transform=v1.Compose(
            [
                v1.RandomResizedCrop(SIZE),
                v1.RandomHorizontalFlip(),
                v1.ColorJitter(0.4, 0.4, 0.4),
                v1.ToTensor(),
                v1.Normalize(ga.IMAGENET_MEAN, ga.IMAGENET_STD),
            ]
        ),
    )
    loader = torch.utils.data.DataLoader(dataset, BATCH, shuffle=True, num_workers=WORKERS, persistent_workers=True)
    assert benchmark(_epoch, loader) == (48, (3, SIZE, SIZE))


def test_dali_loader(benchmark, folder):
    pytest.importorskip("nvidia.dali")
    from gpuaug.dali import DALILoader

    loader = DALILoader(folder, BATCH, shuffle=True, transform=_ops(), device="cpu", num_threads=WORKERS)
    assert benchmark(_epoch, loader) == (48, (3, SIZE, SIZE))
