"""GPULoader and its input layer: decode fidelity, bad files, DataLoader semantics, the one-line swap.

Tolerances:
- decode (every backend): equal to PIL's ``convert("RGB")`` (0 levels) for every odd file here.
- the one-line swap (torchvision ImageFolder + Resize(256)/CenterCrop(224)/ToTensor/Normalize
  through DataLoader vs GPULoader): at most 1 level of 255 (torch's uint8 resize vs PIL's).
- reduced-scale JPEG decode (1/2 DCT scale) then resize vs full decode then resize: mean < 1.5
  levels, 99th percentile < 20 levels on photos (libjpeg's DCT scaling keeps more detail).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps
from torch.utils.data import DataLoader, DistributedSampler
from torchvision import datasets
from torchvision import transforms as tv1

import gpuaug as ga
from gpuaug.io.decode import apply_orientation, decode_cpu, read_header, sniff_format
from gpuaug.io.decoders import nvjpeg_takes
from tests.corpus import TRAIN, epoch, pil_rgb


# ----------------------------------------------------------------------------------------------
# decoding
# ----------------------------------------------------------------------------------------------
def test_every_odd_file_decodes_like_pil(odd):
    for name, path in odd.items():
        decoded = decode_cpu(path.read_bytes(), str(path))
        assert decoded.dtype == torch.uint8 and decoded.shape[0] == 3, name
        assert np.array_equal(decoded.permute(1, 2, 0).numpy(), pil_rgb(path)), name


def test_sniffing_goes_by_content_not_name(odd):
    assert sniff_format(odd["png_named_jpg"].read_bytes()) == "png"
    assert sniff_format(odd["webp"].read_bytes()) == "webp"
    header = read_header(odd["cmyk_jpeg"].read_bytes(), "cmyk.jpg")
    assert (header.format, header.components, nvjpeg_takes(header)) == ("jpeg", 4, False)
    assert read_header(odd["progressive_jpeg"].read_bytes(), "p.jpg").progressive
    large = read_header(odd["large_jpeg"].read_bytes(), "large.jpg")
    assert (large.height, large.width, nvjpeg_takes(large)) == (2900, 4100, True)


def test_truncated_jpegs_never_go_to_nvjpeg(bad):
    """nvJPEG may fill a truncated file with grey; such files go to the CPU decoder, which says why."""
    for name in ("truncated", "header_only"):
        header = read_header(bad[name].read_bytes(), name)
        assert header.format == "jpeg" and not header.complete and not nvjpeg_takes(header)


def test_exif_orientation_default_off_and_flag_on(odd):
    data = odd["exif_rotated_jpeg"].read_bytes()
    assert decode_cpu(data, "x").shape == (3, 72, 96)  # as stored, like torchvision's ImageFolder
    rotated = decode_cpu(data, "x", exif_orientation=True)
    assert np.array_equal(rotated.permute(1, 2, 0).numpy(), pil_rgb(odd["exif_rotated_jpeg"], exif_orientation=True))
    assert read_header(data, "x", exif_orientation=True).oriented_size == (96, 72)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_apply_orientation_matches_pil(orientation):
    array = np.arange(5 * 7 * 3, dtype=np.uint8).reshape(5, 7, 3)
    image = Image.fromarray(array)
    exif = image.getexif()
    exif[0x0112] = orientation
    image.info["exif"] = exif.tobytes()
    expected = np.asarray(ImageOps.exif_transpose(image))
    ours = apply_orientation(torch.from_numpy(array).permute(2, 0, 1), orientation).permute(1, 2, 0).numpy()
    assert np.array_equal(ours, expected)


def test_reduced_decode_is_smaller_and_close(odd):
    data = odd["large_jpeg"].read_bytes()
    full = decode_cpu(data, "large.jpg")
    half = decode_cpu(data, "large.jpg", reduce=2)
    assert half.shape == (3, 1450, 2050)
    reference = ga.functional.resize(full.unsqueeze(0), (256, 362)).float()
    reduced = ga.functional.resize(half.unsqueeze(0), (256, 362)).float()
    error = (reference - reduced).abs()
    assert error.mean() < 1.5 and error.flatten().kthvalue(int(error.numel() * 0.99)).values < 20


@pytest.mark.parametrize("name", ["empty", "text", "html", "truncated", "header_only", "garbled"])
def test_bad_files_raise_decode_error_naming_the_file(bad, name):
    path = bad[name]
    with pytest.raises(ga.DecodeError) as caught:
        decode_cpu(path.read_bytes(), str(path))
    assert str(path) in str(caught.value) and caught.value.path == str(path) and caught.value.reason


# ----------------------------------------------------------------------------------------------
# sources
# ----------------------------------------------------------------------------------------------
def test_image_folder_matches_torchvision(corpus):
    ours, theirs = ga.ImageFolder(corpus), datasets.ImageFolder(corpus)
    assert ours.classes == theirs.classes and ours.class_to_idx == theirs.class_to_idx
    assert ours.samples == theirs.samples and ours.targets == theirs.targets
    data, label = ours[5]
    assert data == Path(theirs.samples[5][0]).read_bytes() and label == theirs.targets[5]


def test_folder_errors_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing"):
        ga.ImageFolder(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="no class folders"):
        ga.ImageFolder(tmp_path)
    (tmp_path / "cat").mkdir()
    (tmp_path / "cat" / "notes.txt").write_text("no images here")
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        ga.ImageFolder(tmp_path)


# ----------------------------------------------------------------------------------------------
# the batch contract
# ----------------------------------------------------------------------------------------------
def test_batches_follow_the_contract(corpus):
    loader = ga.GPULoader(ga.ImageFolder(corpus), batch_size=5, transform=ga.Compose(TRAIN), device="cpu")
    batches = list(loader)
    assert len(loader) == len(batches) == 5  # 24 images, last batch partial
    images, labels = batches[0]
    assert images.shape == (5, 3, 48, 48) and images.dtype == torch.float32
    assert images.is_contiguous(memory_format=torch.channels_last)
    assert labels.dtype == torch.int64 and labels.tolist() == ga.ImageFolder(corpus).targets[:5]
    assert [len(labels) for _, labels in batches] == [5, 5, 5, 5, 4]
    assert loader.stats.images == 24 and loader.stats.batches == 5 and loader.stats.skipped == 0
    assert loader.stats.decode_seconds > 0 and loader.stats.augment_seconds > 0 and loader.stats.epoch_seconds > 0


def test_dtype_memory_format_and_uint8(corpus):
    crop = ga.Compose([ga.RandomResizedCrop(32)])
    seeded = {"generator": torch.Generator().manual_seed(0), "transform": crop}
    bf16 = next(iter(ga.GPULoader(ga.ImageFolder(corpus), 4, dtype=torch.bfloat16, channels_last=False, **seeded)))[0]
    assert bf16.dtype == torch.bfloat16 and bf16.is_contiguous() and bf16.min() >= 0 and bf16.max() <= 1
    seeded["generator"] = torch.Generator().manual_seed(0)
    raw = next(iter(ga.GPULoader(ga.ImageFolder(corpus), 4, dtype=torch.uint8, **seeded)))[0]
    assert raw.dtype == torch.uint8 and raw.max() > 1
    torch.testing.assert_close(bf16.float(), raw.float() / 255, atol=4e-3, rtol=0)


def test_one_line_swap_from_torchvision_imagefolder(corpus):
    eval_transform = tv1.Compose(
        [tv1.Resize(256), tv1.CenterCrop(224), tv1.ToTensor(), tv1.Normalize(ga.IMAGENET_MEAN, ga.IMAGENET_STD)]
    )
    dataset = datasets.ImageFolder(corpus, transform=eval_transform)
    reference_images, reference_labels = epoch(DataLoader(dataset, batch_size=8, num_workers=2))
    images, labels = epoch(ga.GPULoader(dataset, batch_size=8, num_workers=2))
    assert torch.equal(labels, reference_labels)
    levels = (images - reference_images) * torch.tensor(ga.IMAGENET_STD).view(1, 3, 1, 1) * 255
    assert levels.abs().max() <= 1.0 + 1e-3


def test_unconvertible_dataset_transform_says_how_to_proceed(corpus):
    dataset = datasets.ImageFolder(corpus, transform=tv1.Compose([tv1.RandomRotation(10), tv1.ToTensor()]))
    with pytest.raises(ValueError, match=r"RandomRotation.*transform=ga\.Compose"):
        ga.GPULoader(dataset, batch_size=4)


def test_without_transform_same_size_works_and_ragged_says_why(corpus, tmp_path):
    same = [(str(path), 0) for path in sorted(corpus.rglob("*.jpg"))[:2]]
    for path, _ in same:
        Image.open(path).resize((40, 30)).save(tmp_path / Path(path).name)
    resized = [(str(tmp_path / Path(path).name), 0) for path, _ in same]
    images, _ = next(iter(ga.GPULoader(resized, batch_size=2)))
    assert images.shape == (2, 3, 30, 40)
    with pytest.raises(ValueError, match="different sizes.*transform="):
        next(iter(ga.GPULoader(same, batch_size=2)))


class ItemDataset(torch.utils.data.Dataset):
    """Map-style dataset yielding PIL images, uint8 tensors and HWC arrays."""

    def __init__(self, root: Path) -> None:
        self.paths = sorted(root.rglob("*.jpg"))[:6]

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        image = Image.open(self.paths[index])
        kind = index % 3
        if kind == 0:
            return image, index
        array = np.asarray(image.convert("RGB"))
        return (torch.from_numpy(array.copy()).permute(2, 0, 1), index) if kind == 1 else (array, index)


def test_map_style_dataset_items(corpus):
    loader = ga.GPULoader(
        ItemDataset(corpus), batch_size=3, transform=ga.Compose([ga.CenterCrop(40)]), dtype=torch.uint8, channels_last=False
    )
    images, labels = epoch(loader)
    assert labels.tolist() == list(range(6))
    for index, path in enumerate(ItemDataset(corpus).paths):
        expected = ga.functional.center_crop(torch.from_numpy(pil_rgb(path)).permute(2, 0, 1).unsqueeze(0), (40, 40))[0]
        assert torch.equal(images[index], expected)


def test_odd_files_through_the_loader(odd):
    files = [(str(path), index) for index, path in enumerate(odd.values())]
    resize = ga.Compose([ga.Resize((32, 32))])
    exact = ga.GPULoader(files, batch_size=4, transform=resize, dtype=torch.uint8, num_workers=2, reduced_decode=False)
    images, labels = epoch(exact)
    assert labels.tolist() == list(range(len(files)))
    expected = torch.stack(
        [ga.functional.resize(torch.from_numpy(pil_rgb(path)).permute(2, 0, 1).unsqueeze(0), (32, 32))[0] for path, _ in files]
    )
    assert torch.equal(images, expected)
    # the default decodes JPEGs that are downscaled >= 2x at a reduced DCT scale: close, not equal
    reduced, _ = epoch(ga.GPULoader(files, batch_size=4, transform=resize, dtype=torch.uint8))
    error = (reduced.float() - expected.float()).abs()
    assert error.mean() < 3 and not torch.equal(reduced, expected)


# ----------------------------------------------------------------------------------------------
# bad input policy
# ----------------------------------------------------------------------------------------------
def test_on_error_raise_names_the_file(corpus, bad):
    files = [(str(path), 0) for path in sorted(corpus.rglob("*.jpg"))[:3]] + [(str(bad["truncated"]), 1)]
    with pytest.raises(ga.DecodeError, match="truncated.jpg") as caught:
        list(ga.GPULoader(files, batch_size=2, transform=ga.Compose(TRAIN), num_workers=2))
    assert caught.value.path == str(bad["truncated"])


def test_on_error_skip_counts_and_warns_once(corpus, bad, tmp_path):
    good = [(str(path), 0) for path in sorted(corpus.rglob("*.jpg"))[:5]]
    missing = (str(tmp_path / "gone.jpg"), 1)
    files = good[:2] + [(str(path), 1) for path in bad.values()] + good[2:] + [missing]
    loader = ga.GPULoader(files, batch_size=3, transform=ga.Compose(TRAIN), on_error="skip", num_workers=2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        images, labels = epoch(loader)
    assert len(labels) == 5 and (labels == 0).all() and torch.isfinite(images).all()
    assert loader.stats.skipped == len(bad) + 1 and loader.stats.images == 5
    assert set(loader.stats.skipped_paths) == {str(path) for path in bad.values()} | {missing[0]}
    skipped_warnings = [w for w in caught if "skipped" in str(w.message)]
    assert len(skipped_warnings) == 1 and "gone.jpg" in str(skipped_warnings[0].message)
    with pytest.warns(UserWarning, match="skipped 7"):
        list(loader)  # the next epoch counts afresh
    assert loader.stats.skipped == len(bad) + 1


# ----------------------------------------------------------------------------------------------
# DataLoader semantics
# ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def indexed(corpus) -> list[tuple[str, int]]:
    """Files labelled by their own index, so labels show the order."""
    return [(str(path), index) for index, path in enumerate(sorted(corpus.rglob("*.jpg")))]


@pytest.mark.parametrize("drop_last", [False, True])
def test_len_and_drop_last_like_dataloader(indexed, drop_last):
    loader = ga.GPULoader(indexed, batch_size=5, drop_last=drop_last, transform=ga.Compose([ga.CenterCrop(16)]))
    reference = DataLoader(range(len(indexed)), batch_size=5, drop_last=drop_last)
    assert len(loader) == len(reference)
    assert [labels.tolist() for _, labels in loader] == [batch.tolist() for batch in reference]


def test_same_seed_same_order_as_dataloader_and_reshuffles(indexed):
    loader = ga.GPULoader(
        indexed, batch_size=4, shuffle=True, generator=torch.Generator().manual_seed(7), transform=ga.Compose([ga.CenterCrop(16)])
    )
    reference = DataLoader(range(len(indexed)), batch_size=4, shuffle=True, generator=torch.Generator().manual_seed(7))
    epochs = [torch.cat([labels for _, labels in loader]).tolist() for _ in range(2)]
    expected = [torch.cat(list(reference)).tolist() for _ in range(2)]
    assert epochs == expected
    assert epochs[0] != epochs[1] and sorted(epochs[0]) == list(range(len(indexed)))
    other = ga.GPULoader(
        indexed, batch_size=4, shuffle=True, generator=torch.Generator().manual_seed(8), transform=ga.Compose([ga.CenterCrop(16)])
    )
    assert torch.cat([labels for _, labels in other]).tolist() != epochs[0]  # another seed, another order


def test_epochs_draw_fresh_augmentations_even_with_persistent_workers(indexed):
    loader = ga.GPULoader(
        indexed,
        batch_size=24,
        num_workers=2,
        persistent_workers=True,
        transform=ga.Compose(TRAIN),
        generator=torch.Generator().manual_seed(0),
    )
    first, second = next(iter(loader))[0], next(iter(loader))[0]
    assert not torch.equal(first, second)


def test_distributed_sampler_shards_and_set_epoch(indexed):
    shards = []
    for rank in range(2):
        sampler = DistributedSampler(range(len(indexed)), num_replicas=2, rank=rank, shuffle=True, seed=1)
        loader = ga.GPULoader(indexed, batch_size=4, sampler=sampler, transform=ga.Compose([ga.CenterCrop(16)]))
        loader.set_epoch(3)
        assert sampler.epoch == 3
        shards.append(torch.cat([labels for _, labels in loader]).tolist())
    assert not set(shards[0]) & set(shards[1])
    assert sorted(shards[0] + shards[1]) == list(range(len(indexed)))


def test_attributes_and_bad_arguments(indexed):
    loader = ga.GPULoader(indexed, batch_size=4)
    assert loader.dataset is indexed and loader.batch_size == 4 and loader.sampler is not None
    for kwargs, fragment in (
        ({"batch_size": 0}, "batch_size"),
        ({"num_workers": -1}, "num_workers"),
        ({"decode": "gpu"}, "decode"),
        ({"decode": "nvjpeg", "device": "cpu"}, "nvjpeg"),
        ({"on_error": "ignore"}, "on_error"),
        ({"dtype": torch.int32}, "dtype"),
        ({"shuffle": True, "sampler": torch.utils.data.SequentialSampler(indexed)}, "mutually exclusive"),
    ):
        with pytest.raises(ValueError, match=fragment):
            ga.GPULoader(indexed, **kwargs)
    with pytest.raises(TypeError, match="dataset"):
        ga.GPULoader(42)


# ----------------------------------------------------------------------------------------------
# CUDA (nvJPEG + side stream)
# ----------------------------------------------------------------------------------------------
@pytest.mark.cuda
def test_cuda_path_matches_cpu_path(corpus, odd):
    files = [(str(path), index) for index, path in enumerate(list(odd.values()) + sorted(corpus.rglob("*.jpg"))[:6])]
    transform = ga.Compose([ga.Resize((40, 40)), ga.ToDtype(torch.float32)])
    gpu_images, gpu_labels = epoch(ga.GPULoader(files, batch_size=5, transform=transform, device="cuda", num_workers=2))
    cpu_images, cpu_labels = epoch(ga.GPULoader(files, batch_size=5, transform=transform, device="cpu", reduced_decode=False))
    assert gpu_images.device.type == "cuda" and torch.equal(gpu_labels.cpu(), cpu_labels)
    # nvJPEG's IDCT and upsampling differ from libjpeg-turbo's by a few levels
    assert ((gpu_images.cpu() - cpu_images).abs() * 255).mean() < 3


@pytest.mark.cuda
def test_cuda_bad_files_and_stats(corpus, bad):
    files = [(str(path), 0) for path in sorted(corpus.rglob("*.jpg"))[:4]] + [(str(path), 1) for path in bad.values()]
    loader = ga.GPULoader(files, batch_size=4, transform=ga.Compose(TRAIN), device="cuda", on_error="skip")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        images, labels = epoch(loader)
    assert len(labels) == 4 and loader.stats.skipped == len(bad)
    assert loader.stats.decode_seconds > 0 and loader.stats.augment_seconds > 0
    with pytest.raises(ga.DecodeError):
        list(ga.GPULoader(files, batch_size=4, transform=ga.Compose(TRAIN), device="cuda"))
