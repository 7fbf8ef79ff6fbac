"""The loader's straight path (issue 15): the user's Compose settings survive the loader, and
``loader.stats`` says where a batch's time goes (the producer's host time, the device stage's time,
the workers' time)."""

from __future__ import annotations

import time

import pytest
import torch

import gpuaug as ga
from gpuaug.fusion import triton


@pytest.fixture
def files(corpus) -> list[tuple[str, int]]:
    return [(str(path), index) for index, path in enumerate(sorted(corpus.rglob("*.jpg")))]


class _Slow(ga.Transform):
    """Sleeps in apply (a guaranteed lower bound on the time it takes, whatever the machine)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def apply(self, images, params):
        time.sleep(self.seconds)
        return images


class _SlowItems(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 6

    def __getitem__(self, index):
        time.sleep(0.05)
        return torch.full((3, 8, 8), index, dtype=torch.uint8), index


@pytest.mark.skipif(not triton.available(), reason="needs the triton package")
def test_backend_survives_the_loader(files):
    """Issue 18 #12: the loader rebuilt the pipeline without ``backend``. ``backend="triton"`` on CPU
    tensors without Triton's interpreter must reach the device stage (and say so), not be dropped."""
    transform = ga.Compose([ga.RandomResizedCrop(16), ga.Normalize(ga.IMAGENET_MEAN, ga.IMAGENET_STD)], backend="triton")
    loader = ga.GPULoader(files, batch_size=4, transform=transform, device="cpu", augment_in="device")
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET"):
        next(iter(loader))
    torch_loader = ga.GPULoader(files, batch_size=4, transform=ga.Compose(transform.transforms, backend="torch"), device="cpu")
    assert next(iter(torch_loader))[0].shape == (4, 3, 16, 16)


def test_stats_show_the_producer_and_device_time_per_batch():
    transform = ga.Compose([ga.CenterCrop(8), _Slow(0.03)])
    loader = ga.GPULoader(_SlowItems(), batch_size=2, transform=transform, device="cpu", augment_in="device")
    assert sum(len(labels) for _, labels in loader) == 6
    stats = loader.stats
    assert stats.batches == 3
    assert stats.producer_seconds >= 3 * 0.03 and stats.device_seconds >= 3 * 0.03  # the stage ran the slow op
    assert stats.producer_ms_per_batch == pytest.approx(1000 * stats.producer_seconds / 3)
    assert stats.device_ms_per_batch == pytest.approx(1000 * stats.device_seconds / 3)


@pytest.mark.parametrize("workers", [0, 2])
def test_stats_add_the_workers_time(workers):
    """Issue 18 #21: the workers' decode (here: loading) and augment time was never added to the stats."""
    transform = ga.Compose([ga.CenterCrop(8), _Slow(0.02)])
    loader = ga.GPULoader(
        _SlowItems(), batch_size=3, num_workers=workers, transform=transform, device="cpu", augment_in="workers"
    )
    assert sum(len(labels) for _, labels in loader) == 6
    assert loader.stats.decode_seconds >= 6 * 0.05  # every item slept 50 ms while its worker loaded it
    assert loader.stats.augment_seconds >= 2 * 0.02  # each batch's pipeline ran in a worker


@pytest.mark.parametrize("decode", ["cpu", "nvimgcodec"])
def test_a_batch_reaches_the_pipeline_packed_once(files, monkeypatch, decode):
    """The workers' PackedBatch (decode="cpu": they decode every file) reaches the pipeline as it is, the
    same buffer; device-decoded files arrive packed too (one PackedBatch in row order), never as a list."""
    seen = []
    real_apply = ga.Compose.apply

    def spy(self, images, params):
        seen.append(images)
        return real_apply(self, images, params)

    monkeypatch.setattr(ga.Compose, "apply", spy)
    transform = ga.Compose([ga.RandomResizedCrop(16), ga.Normalize(ga.IMAGENET_MEAN, ga.IMAGENET_STD)])
    loader = ga.GPULoader(files, batch_size=4, transform=transform, device="cpu", augment_in="device", decode=decode)
    assert sum(len(labels) for _, labels in loader) == len(files)
    assert seen and all(isinstance(images, ga.PackedBatch) for images in seen)
    assert [len(images) for images in seen] == [4] * (len(files) // 4) + ([len(files) % 4] if len(files) % 4 else [])


def test_every_compose_setting_survives_then():
    compose = ga.Compose([ga.RandomResizedCrop(8), ga.ColorJitter(0.4), ga.Normalize([0.5], [0.5])], fuse=False, backend="torch")
    extended = compose.then(ga.ToDtype(torch.float16))
    assert (extended.fuse, extended.backend, extended.plan.prefix) == (False, "torch", 0)
    assert extended.transforms[:3] == compose.transforms and extended.transforms[3].dtype == torch.float16


@pytest.mark.parametrize("workers", [0, 2])
def test_batch_transform_runs_on_the_producer_thread_and_replays(files, workers):
    """GPULoader(batch_transform=MixUp/CutMix): soft targets per batch, drawn from the batch's own seed, so
    the same generator seed gives the same mixes whatever the workers (issue 16 #3)."""

    def epoch(num_workers, seed=4):
        loader = ga.GPULoader(
            files,
            batch_size=4,
            shuffle=True,
            num_workers=num_workers,
            transform=ga.Compose([ga.RandomResizedCrop(16), ga.Normalize(ga.IMAGENET_MEAN, ga.IMAGENET_STD)]),
            batch_transform=ga.RandomMix(mixup_alpha=0.8, cutmix_alpha=1.0, num_classes=len(files)),
            device="cpu",
            generator=torch.Generator().manual_seed(seed),
        )
        return [(images.clone(), targets.clone()) for images, targets in loader]

    batches = epoch(workers)
    assert all(targets.shape == (len(images), len(files)) and targets.dtype == torch.float32 for images, targets in batches)
    assert all(torch.allclose(targets.sum(1), torch.ones(len(targets))) for _, targets in batches)
    assert any((targets.max(1).values < 1).any() for _, targets in batches)  # something was mixed
    reference = epoch(0)
    assert all(torch.equal(a, b) and torch.equal(x, y) for (a, x), (b, y) in zip(batches, reference))
    other = epoch(workers, seed=5)
    assert not all(torch.equal(x, y) for (_, x), (_, y) in zip(batches, other))
    with pytest.raises(ValueError, match="batch_transform must be callable"):
        ga.GPULoader(files, batch_size=4, batch_transform="mixup")
