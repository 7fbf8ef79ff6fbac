"""Exact mid-epoch resume (issue 17): stop after k batches, save ``state_dict()``, load it into a fresh loader, and
the rest of the epoch (and the next epoch) is bit-identical to an uninterrupted run, with files or shards, workers
0 and 2, persistent or not."""

from __future__ import annotations

import gc
import io

import pytest
import torch

import gpuaug as ga
from gpuaug.tools.shards import write_shards
from tests.test_shards import make_folder


@pytest.fixture(autouse=True)
def _quick_worker_shutdown(monkeypatch):
    """torch joins each persistent worker for MP_STATUS_CHECK_INTERVAL (5 s) when shutting a loader down (GPULoader's
    workers are not out by then, a known issue): a short interval keeps these tests fast; results do not depend on it."""
    monkeypatch.setattr(torch.utils.data._utils, "MP_STATUS_CHECK_INTERVAL", 0.2, raising=False)


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    folder = make_folder(tmp_path_factory.mktemp("folder"))
    shards = write_shards(folder, tmp_path_factory.mktemp("shards"), size="16KB")
    return {"files": ga.ImageFolder(folder), "shards": ga.WebDataset([str(path) for path in shards])}


def _loader(source, seed: int | None, **options) -> ga.GPULoader:
    transform = ga.Compose([ga.RandomResizedCrop(16), ga.RandomHorizontalFlip(), ga.ColorJitter(0.3, 0.3, 0.3)])
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    options.setdefault("shuffle", True)
    return ga.GPULoader(source, batch_size=3, device="cpu", transform=transform, generator=generator, **options)


def _same(first: list, second: list) -> bool:
    return len(first) == len(second) and all(torch.equal(a, c) and torch.equal(b, d) for (a, b), (c, d) in zip(first, second))


def _round_trip(state: dict) -> dict:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


@pytest.mark.parametrize("kind", ["files", "shards"])
@pytest.mark.parametrize("workers,persistent", [(0, False), (2, False), (2, True)])
def test_resume_after_k_batches_is_bit_identical(sources, kind, workers, persistent):
    options = {"num_workers": workers, "persistent_workers": persistent}
    uninterrupted = _loader(sources[kind], 7, **options)
    epoch1, epoch2 = list(uninterrupted), list(uninterrupted)
    assert len(epoch1) == 6 and not _same(epoch1, epoch2)

    stopped = _loader(sources[kind], 7, **options)
    batches = iter(stopped)
    taken = [next(batches) for _ in range(2)]
    state = _round_trip(stopped.state_dict())
    batches.close()
    assert _same(taken, epoch1[:2]) and state["num_yielded"] == 2 and not state["iterator_finished"]

    resumed = _loader(sources[kind], 1234, **options)  # another seed: the state decides
    resumed.load_state_dict(state)
    assert _same(list(resumed), epoch1[2:]) and resumed.stats.batches == 4
    assert _same(list(resumed), epoch2)

    between = _loader(sources[kind], 7, **options)  # a state saved between epochs starts the next one
    list(between)
    after = _loader(sources[kind], 99, **options)
    after.load_state_dict(between.state_dict())
    assert _same(list(after), epoch2)
    # persistent workers are shut down here, in this thread: collected later in another loader's producer
    # thread, torch's iterator would join its workers there, in the middle of that loader's epoch
    del uninterrupted, stopped, resumed, between, after, batches
    gc.collect()


def test_resume_with_the_global_rng_set_epoch_and_a_shard_sampler(sources):
    source = sources["shards"]

    def run(stop_after: int | None) -> list:
        torch.manual_seed(3)
        loader = _loader(source, None, shuffle=None, sampler=ga.ShardSampler(source, window=2))
        loader.set_epoch(5)
        if stop_after is None:
            return list(loader)
        batches = iter(loader)
        for _ in range(stop_after):
            next(batches)
        state = loader.state_dict()
        batches.close()
        torch.manual_seed(11)  # anything may use the global RNG meanwhile
        fresh = _loader(source, None, shuffle=None, sampler=ga.ShardSampler(source, window=2))
        fresh.load_state_dict(state)
        return list(fresh)

    whole = run(None)
    assert _same(run(4), whole[4:]) and _same(run(6), [])


def test_distributed_sampler_resume_and_bad_states(sources):
    source = sources["shards"]
    sampler = lambda: ga.DistributedShardSampler(source, num_replicas=2, rank=1, seed=4)  # noqa: E731
    whole = _loader(source, 0, shuffle=None, sampler=sampler())
    whole.set_epoch(3)
    expected = list(whole)
    stopped = _loader(source, 0, shuffle=None, sampler=sampler())
    stopped.set_epoch(3)
    batches = iter(stopped)
    next(batches)
    state = stopped.state_dict()
    batches.close()
    resumed = _loader(source, 0, shuffle=None, sampler=sampler())
    resumed.load_state_dict(state)  # sets the sampler's epoch too
    assert resumed.sampler.epoch == 3 and _same(list(resumed), expected[1:])

    with pytest.raises(ValueError, match="not a GPULoader state_dict"):
        resumed.load_state_dict({"epoch": 1})
    other = ga.GPULoader(source, batch_size=5, device="cpu", transform=ga.Resize((8, 8)))
    with pytest.raises(ValueError, match="batches per epoch"):
        other.load_state_dict(state)
    with pytest.raises(ValueError, match="generator=None"):
        _loader(source, None, shuffle=None, sampler=sampler()).load_state_dict(state)
    resumed.load_state_dict(state)
    resumed.set_epoch(4)
    with pytest.raises(ValueError, match="the loaded state is for epoch 3"):
        list(resumed)
