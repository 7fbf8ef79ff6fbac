"""Issue 18 (reliability, round 3): one test per defect, through public APIs, no timing or luck."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torchvision.transforms import v2

import gpuaug as ga

IMAGENET_255 = ([123.675, 116.28, 103.53], [58.395, 57.12, 57.375])


# -- #1, #2: the fused colour pass clamps only where torchvision's ops clamp ----------------------
def test_fused_normalize_keeps_float_input_outside_zero_one():
    images = torch.full((1, 3, 2, 2), 200.0)
    expected = v2.Normalize(*IMAGENET_255)(images)
    for compose in (ga.Compose([ga.Normalize(*IMAGENET_255)]), ga.Compose([ga.Normalize(*IMAGENET_255)], fuse=False)):
        torch.testing.assert_close(compose(images), expected)
    values = torch.tensor([-1.0, 0.5, 2.0]).view(1, 1, 1, 3).expand(1, 3, 1, 3)
    assert ga.Compose([ga.Normalize([0.5], [0.5])])(values)[0, 0, 0].tolist() == [-3.0, 0.0, 3.0]
    twice = ga.Compose([ga.Normalize([0.5], [0.5]), ga.Normalize([0.5], [0.5])])(values)
    assert twice[0, 0, 0].tolist() == [-7.0, -1.0, 5.0]


def test_unscaled_cast_then_normalize_equals_torchvision():
    images = torch.tensor([0, 100, 200, 255], dtype=torch.uint8).view(1, 1, 1, 4).expand(1, 3, 1, 4)
    expected = v2.Normalize([100.0] * 3, [50.0] * 3)(v2.ToDtype(torch.float32, scale=False)(images))
    for compose in (
        ga.Compose([ga.ToDtype(torch.float32, scale=False), ga.Normalize([100] * 3, [50] * 3)]),
        ga.from_torchvision(v2.Compose([v2.ToDtype(torch.float32, scale=False), v2.Normalize([100.0] * 3, [50.0] * 3)])),
    ):
        torch.testing.assert_close(compose(images), expected)
    assert expected[0, 0, 0].tolist() == pytest.approx([-2.0, 0.0, 2.0, 3.1])


_OPS = {
    "hflip": lambda: ga.RandomHorizontalFlip(0.5),
    "vflip": lambda: ga.RandomVerticalFlip(0.5),
    "gray": lambda: ga.RandomGrayscale(0.5),
    "cast": lambda: ga.ToDtype(torch.float32),
    "cast_unscaled": lambda: ga.ToDtype(torch.float32, scale=False),
    "normalize": lambda: ga.Normalize([0.4, 0.5, 0.6], [0.2, 0.3, 0.25]),
}


@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    ops=st.lists(st.sampled_from(sorted(_OPS)), min_size=1, max_size=5),
    low=st.floats(-3, 1),
    span=st.floats(0.1, 300),
    seed=st.integers(0, 1000),
)
def test_fused_equals_op_by_op_on_any_float_range(ops, low, span, seed):
    """Every fused path (no colour jitter, which clamps by definition) equals its fuse=False twin, whatever the range
    (to 2e-4 relative: grayscale twice is luma once fused, torchvision's weights sum to 0.9999)."""
    transforms = [_OPS[name]() for name in ops]
    generator = torch.Generator().manual_seed(seed)
    images = low + span * torch.rand(4, 3, 5, 6, generator=generator)
    fused, exact = ga.Compose(transforms), ga.Compose(transforms, fuse=False)
    params = fused.make_params(images, torch.Generator().manual_seed(seed))
    got, want = fused(images, params=params), exact(images, params=params)
    torch.testing.assert_close(got, want, atol=2e-4 * max(1.0, abs(low) + span), rtol=2e-4)


# -- #3: labels are integers, or a TypeError naming the item ---------------------------------------
class _Labelled(torch.utils.data.Dataset):
    def __init__(self, labels):
        self.labels = labels

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        return torch.zeros(3, 4, 4, dtype=torch.uint8), self.labels[index]


def test_integer_labels_of_every_kind_pass():
    labels = [3, np.int64(2), torch.tensor(5), torch.tensor([1]), np.array([4])]
    loader = ga.GPULoader(_Labelled(labels), batch_size=5, transform=ga.Compose([ga.CenterCrop(4)]), device="cpu")
    assert next(iter(loader))[1].tolist() == [3, 2, 5, 1, 4]


@pytest.mark.parametrize("label", [2.7, 0.5, torch.tensor(2.7), np.float32(1.9), "3", torch.tensor([0, 1, 0]), True])
def test_other_labels_are_refused_naming_the_item(label):
    loader = ga.GPULoader(_Labelled([1, label]), batch_size=2, transform=ga.Compose([ga.CenterCrop(4)]), device="cpu")
    with pytest.raises(TypeError, match=r"dataset item 1: the label must be an integer class index"):
        next(iter(loader))


def test_a_file_list_takes_numpy_integer_labels(tmp_path):
    from tests.corpus import photo_folder

    folder = photo_folder(tmp_path / "photos")
    files = [(str(path), np.int64(index % 2)) for index, path in enumerate(sorted(folder.rglob("*.jpg"))[:4])]
    loader = ga.GPULoader(files, batch_size=4, transform=ga.Compose([ga.RandomResizedCrop(8)]), device="cpu")
    assert next(iter(loader))[1].tolist() == [0, 1, 0, 1]


# -- #4: a PackedBatch description is checked without overflow -----------------------------------
def test_packed_batch_strides_that_overflow_int64_are_refused():
    data = torch.zeros(100, dtype=torch.uint8)
    one = torch.tensor([2])
    for strides in ([1, 2**63 // 3 + 1, 1], [1, -(2**62), 1], [2**62, 2**62, 2**62]):
        with pytest.raises(ValueError, match="reach outside data"):
            ga.PackedBatch(data, torch.tensor([0]), one, one, torch.tensor([strides]), ((2, 2),))
    with pytest.raises(ValueError, match="reach outside data"):
        ga.PackedBatch(data, torch.tensor([-(2**63)]), one, one, torch.tensor([[4, 2, 1]]), ((2, 2),))
    assert len(ga.PackedBatch(data, torch.tensor([0]), one, one, torch.tensor([[4, 2, 1]]), ((2, 2),))) == 1


# -- #5: preview refuses a FIFO instead of blocking on it -----------------------------------------
def test_preview_refuses_a_fifo_in_one_line(tmp_path):
    fifo = tmp_path / "image.jpg"
    os.mkfifo(fifo)
    done = subprocess.run(
        [sys.executable, "-m", "gpuaug", "preview", str(fifo), "-t", "ga.RandomResizedCrop(32)", "-o", str(tmp_path / "g.png")],
        capture_output=True,
        text=True,
        timeout=120,  # a hang guard: the fixed CLI answers at once
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [f"error: cannot read image {fifo}: not a regular file"]


# -- #6: a new iterator over persistent workers supersedes the last one, deterministically ---------
class _Items(torch.utils.data.Dataset):
    def __len__(self):
        return 8

    def __getitem__(self, index):
        return torch.full((3, 4, 4), index, dtype=torch.uint8), index


@pytest.mark.parametrize("old_first", [True, False])
def test_a_second_iter_with_persistent_workers(old_first):
    loader = ga.GPULoader(_Items(), batch_size=2, num_workers=2, persistent_workers=True, device="cpu")
    first = iter(loader)
    assert next(first)[1].tolist() == [0, 1]
    second = iter(loader)
    if old_first:  # the old iterator goes on until the new one starts
        assert next(first)[1].tolist() == [2, 3]
    assert [labels.tolist() for _, labels in second] == [[0, 1], [2, 3], [4, 5], [6, 7]]
    with pytest.raises(RuntimeError, match="superseded"):
        next(first)
    assert [labels.tolist() for _, labels in loader] == [[0, 1], [2, 3], [4, 5], [6, 7]]  # and the loader goes on
