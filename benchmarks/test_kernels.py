"""pytest-benchmark micro-benchmarks of the kernel families (``pytest benchmarks --benchmark-only``).

The default test run collects them with benchmarking disabled: each body runs once, as a test, so
they cannot rot. Each also asserts its output so it can fail.
"""

from __future__ import annotations

import pytest
import torch

import gpuaug as ga
from gpuaug import functional as F

BATCH, SIZE = 32, (256, 320)


@pytest.fixture(scope="module")
def batch() -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (BATCH, 3, *SIZE), dtype=torch.uint8, generator=generator)


@pytest.fixture(scope="module")
def crops(batch) -> torch.Tensor:
    return F.center_crop(batch, (224, 224))


@pytest.fixture(scope="module")
def boxes(batch) -> torch.Tensor:
    return ga.RandomResizedCrop(224).make_params(batch, torch.Generator().manual_seed(1))["boxes"]


@pytest.mark.parametrize("impl", ["loop", "taps"])
def test_resized_crop(benchmark, batch, boxes, impl):
    out = benchmark(F.resized_crop, batch, boxes, (224, 224), torch.rand(BATCH) < 0.5, None, True, impl)
    assert out.shape == (BATCH, 3, 224, 224) and out.dtype == torch.uint8


def test_flip(benchmark, crops):
    mask = torch.arange(BATCH) % 2 == 0
    out = benchmark(F.hflip, crops, mask)
    assert torch.equal(out[0], crops[0].flip(-1)) and torch.equal(out[1], crops[1])


def test_color_jitter_exact(benchmark, crops):
    factors = torch.full((BATCH,), 1.2)
    order = torch.arange(4).expand(BATCH, 4)
    out = benchmark(F.color_jitter, crops, factors, factors, factors, None, order)
    assert out.dtype == torch.uint8 and not torch.equal(out, crops)


def test_fused_color_normalize(benchmark, crops):
    factors = torch.full((BATCH,), 1.2)
    out = benchmark(F.fused_color_normalize, crops, factors, factors, factors, None, None, ga.IMAGENET_MEAN, ga.IMAGENET_STD)
    assert out.dtype == torch.float32 and out.shape == crops.shape


def test_normalize(benchmark, crops):
    out = benchmark(F.normalize, crops, ga.IMAGENET_MEAN, ga.IMAGENET_STD)
    assert out.dtype == torch.float32


def test_train_pipeline(benchmark, batch):
    augment = ga.Compose(
        [
            ga.RandomResizedCrop(224),
            ga.RandomHorizontalFlip(),
            ga.ColorJitter(0.4, 0.4, 0.4),
            ga.Normalize(ga.IMAGENET_MEAN, ga.IMAGENET_STD),
        ]
    )
    out = benchmark(augment, batch)
    assert out.shape == (BATCH, 3, 224, 224) and out.dtype == torch.float32
