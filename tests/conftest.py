"""Shared fixtures: real photographs (scikit-image's bundled samples), devices, CUDA skipping."""

from __future__ import annotations

import pytest
import torch

from gpuaug.functional import resize
from gpuaug.tools import samples
from tests.corpus import bad_files, odd_files, photo_folder

CUDA = torch.cuda.is_available()


def pytest_collection_modifyitems(config, items):
    if CUDA:
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]


@pytest.fixture(params=DEVICES)
def device(request) -> torch.device:
    return torch.device(request.param)


@pytest.fixture(scope="session")
def photo_list() -> list[torch.Tensor]:
    """12 real-photo crops of different sizes (shorter side 60-140 px), uint8 [3, H, W]."""
    return samples.photo_crops(12, seed=0, short_side=(60, 140))


@pytest.fixture(scope="session")
def photo_batch(photo_list) -> torch.Tensor:
    """The same photos as one uint8 batch [12, 3, 96, 128]."""
    return torch.stack([resize(image.unsqueeze(0), (96, 128))[0] for image in photo_list])


def levels(difference: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A difference in uint8 levels, whatever the dtype (float images are in [0, 1])."""
    difference = difference.double().abs()
    return difference if dtype == torch.uint8 else difference * 255


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    """An ImageFolder of 24 JPEG photo crops in 3 classes."""
    return photo_folder(tmp_path_factory.mktemp("photos"))


@pytest.fixture(scope="session")
def odd(tmp_path_factory):
    """Valid but unusual image files (tests/corpus.py)."""
    return odd_files(tmp_path_factory.mktemp("odd"))


@pytest.fixture(scope="session")
def bad(tmp_path_factory):
    """Files that are not decodable images (tests/corpus.py)."""
    return bad_files(tmp_path_factory.mktemp("bad"))
