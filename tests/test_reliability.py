"""Issue 18 (reliability, round 3): one test per defect, through public APIs, no timing or luck."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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


# -- #7: a GPU decode never gets memory that queued kernels still read -----------------------------
@pytest.mark.cuda
@pytest.mark.parametrize("decoder_name", ["nvjpeg", "nvimgcodec"])
def test_gpu_decode_waits_for_queued_work_on_freed_memory(corpus, decoder_name):
    """The upstream harness's shape (torchvision PR 9606): queue long work reading tensors, free them,
    decode, check both. Without ``wait_for_queued_work`` the decoder may write into the freed blocks."""
    from gpuaug.io.decoders import NvImageCodecDecoder, NvJpegDecoder

    device = torch.device("cuda")
    decoder = NvJpegDecoder(device) if decoder_name == "nvjpeg" else NvImageCodecDecoder(device)
    paths = [str(path) for path in sorted(corpus.rglob("*.jpg"))[:16]]
    files = [torch.frombuffer(bytearray(Path(path).read_bytes()), dtype=torch.uint8).pin_memory() for path in paths]
    reference = [image.clone() for image in decoder.decode(files, paths, [None] * len(files), None).images]
    torch.cuda.synchronize()
    for _ in range(20):
        inputs = [torch.randint(0, 256, tuple(image.shape), dtype=torch.uint8, device=device) for image in reference]
        expected = [image.float().sum() for image in inputs]
        sums = []
        for image in inputs:  # long work reading the inputs, queued on the current stream
            work = image.float()
            for _ in range(30):
                work = work * 1.0
            sums.append(work.sum())
        del inputs, work  # their blocks go back to the allocator while the kernels are still queued
        decoded = decoder.decode(files, paths, [None] * len(files), None).images
        torch.cuda.synchronize()
        assert all(torch.equal(got, want) for got, want in zip(decoded, reference))
        assert all(torch.equal(got, want) for got, want in zip(sums, expected))


# -- #14: Kornia in a pipeline gives the same batches on every path --------------------------------
def test_kornia_pipelines_give_the_same_batches_from_workers_and_device_stage(corpus):
    import kornia.augmentation as K

    files = [(str(path), 0) for path in sorted(corpus.rglob("*.jpg"))[:16]]

    def batches(**options):
        transform = ga.Compose([ga.RandomResizedCrop(24), K.RandomAffine(60, p=1.0)])
        loader = ga.GPULoader(
            files, batch_size=8, transform=transform, device="cpu", generator=torch.Generator().manual_seed(3), **options
        )
        return [images for images, _ in loader]

    workers = batches(augment_in="workers", reduced_decode=False)
    for other in (batches(augment_in="device", reduced_decode=False), batches(decode="nvimgcodec")):
        assert all(torch.allclose(a, b, atol=2e-6) for a, b in zip(workers, other))


# -- #15: params that do not fit the input are refused ---------------------------------------------
def test_replayed_params_must_fit_the_images():
    compose = ga.Compose([ga.RandomResizedCrop(8), ga.RandomHorizontalFlip()])
    images = torch.rand(3, 3, 40, 50)
    params = compose.make_params(images, torch.Generator().manual_seed(0))
    assert compose(images, params=params).shape == (3, 3, 8, 8)
    for other, match in ((torch.rand(5, 3, 40, 50), "drawn for 3 images"), (torch.rand(2, 3, 40, 50), "drawn for 3 images")):
        with pytest.raises(ValueError, match=match):
            compose(other, params=params)
    with pytest.raises(ValueError, match=r"params\['boxes'\]\[\d\] = .* does not fit image"):
        compose(torch.rand(3, 3, 4, 5), params=params)


# -- #16: only torchvision's own classes convert --------------------------------------------------
def test_subclasses_of_torchvision_transforms_are_refused():
    class MirrorNothing(v2.RandomHorizontalFlip):
        def forward(self, *inputs):
            return inputs[0]

    with pytest.raises(ValueError, match="MirrorNothing .*only torchvision's own classes convert"):
        ga.from_torchvision(v2.Compose([MirrorNothing(), v2.ToDtype(torch.float32, scale=True)]))


# -- #17, #20: an item with no pixels is named; an item with requires_grad is detached --------------
def test_an_item_with_no_pixels_names_the_item():
    class Empty(_Items):
        def __getitem__(self, index):
            return torch.zeros(3, 0, 5) if index == 1 else torch.zeros(3, 4, 5), index

    for augment_in in ("workers", "device"):
        loader = ga.GPULoader(
            Empty(), batch_size=4, transform=ga.Compose([ga.CenterCrop(4)]), device="cpu", augment_in=augment_in
        )
        with pytest.raises(ValueError, match=r"dataset item 1: an image with no pixels \(shape \(3, 0, 5\)\)"):
            next(iter(loader))


def test_items_that_require_grad_are_detached():
    class Leaves(_Items):
        def __getitem__(self, index):
            return torch.rand(3, 6, 6, requires_grad=True), index

    for augment_in in ("workers", "device"):
        loader = ga.GPULoader(
            Leaves(), batch_size=4, transform=ga.Compose([ga.RandomResizedCrop(4)]), device="cpu", augment_in=augment_in
        )
        images, _ = next(iter(loader))
        assert images.shape == (4, 3, 4, 4) and not images.requires_grad


# -- low: a numpy CHW item's error shows its own shape; an empty batch from a batch sampler is refused --
def test_a_numpy_chw_item_is_named_with_its_own_shape():
    class Chw(_Items):
        def __getitem__(self, index):
            return np.zeros((3, 6, 7), dtype=np.uint8), index

    loader = ga.GPULoader(Chw(), batch_size=2, transform=ga.Compose([ga.CenterCrop(4)]), device="cpu")
    with pytest.raises(TypeError, match=r"dataset item 0: expected an HWC image array .* got shape \(3, 6, 7\)"):
        next(iter(loader))


def test_an_empty_batch_from_a_batch_sampler_is_refused():
    loader = ga.GPULoader(_Items(), batch_sampler=[[0, 1], [], [2, 3]], transform=ga.Compose([ga.CenterCrop(4)]), device="cpu")
    assert len(loader) == 3
    with pytest.raises(ValueError, match=r"empty batch \(batch 1\)"):
        list(loader)
