"""DALILoader on DALI's CPU-only pipeline (device_id=None): the GPULoader contract, epochs, shards,
parameter ranges, the odd and bad file corpus, and the install hint when DALI is missing."""

from __future__ import annotations

import builtins
import importlib
import io
import os
import struct
import sys
import warnings
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

import gpuaug as ga
from tests.corpus import TRAIN, epoch, pil_rgb

dali = pytest.importorskip("nvidia.dali", reason="the dali extra is not installed")
from gpuaug.dali import DALILoader  # noqa: E402


def test_contract_and_labels_match_image_folder(corpus):
    loader = DALILoader(corpus, batch_size=5, transform=ga.Compose(TRAIN), device="cpu", num_threads=2, seed=0)
    batches = list(loader)
    images, labels = batches[0]
    assert images.shape == (5, 3, 48, 48) and images.dtype == torch.float32
    assert images.is_contiguous(memory_format=torch.channels_last) and images.device.type == "cpu"
    assert labels.dtype == torch.int64
    assert torch.cat([labels for _, labels in batches]).tolist() == ga.ImageFolder(corpus).targets
    assert [len(labels) for _, labels in batches] == [5, 5, 5, 5, 4] and len(loader) == 5
    assert loader.stats.images == 24 and loader.stats.batches == 5


@pytest.mark.parametrize("drop_last", [False, True])
def test_counts_per_epoch(corpus, drop_last):
    loader = DALILoader(corpus, batch_size=7, drop_last=drop_last, transform=ga.Compose([ga.CenterCrop(16)]), device="cpu")
    for _ in range(2):
        sizes = [len(labels) for _, labels in loader]
        assert sizes == ([7, 7, 7] if drop_last else [7, 7, 7, 3])
        assert len(loader) == len(sizes)


def test_reshuffles_every_epoch(corpus):
    files = [(str(path), index) for index, (path, _) in enumerate(ga.ImageFolder(corpus).samples)]
    loader = DALILoader(files, batch_size=6, shuffle=True, transform=ga.Compose([ga.CenterCrop(16)]), device="cpu", seed=3)
    orders = [epoch(loader)[1].tolist() for _ in range(3)]
    for order in orders:
        assert sorted(order) == list(range(24))
    assert orders[0] != orders[1] != orders[2]


@pytest.mark.parametrize("shuffle", [False, True])
def test_shards_are_disjoint_and_cover(corpus, shuffle):
    files = [(str(path), index) for index, (path, _) in enumerate(ga.ImageFolder(corpus).samples)]
    shards = [
        epoch(
            DALILoader(
                files,
                batch_size=4,
                shuffle=shuffle,
                shard_id=rank,
                num_shards=3,
                seed=5,
                transform=ga.Compose([ga.CenterCrop(16)]),
                device="cpu",
            )
        )[1].tolist()
        for rank in range(3)
    ]
    assert sum(len(shard) for shard in shards) == 24
    assert sorted(shards[0] + shards[1] + shards[2]) == list(range(24))


def test_flip_with_p_one_flips_every_image(corpus):
    crop = [ga.CenterCrop(32)]
    plain, _ = epoch(DALILoader(corpus, batch_size=8, transform=ga.Compose(crop), dtype=torch.uint8, device="cpu"))
    flipped, _ = epoch(
        DALILoader(
            corpus, batch_size=8, transform=ga.Compose(crop + [ga.RandomHorizontalFlip(1.0)]), dtype=torch.uint8, device="cpu"
        )
    )
    assert torch.equal(flipped, plain.flip(-1))
    never, _ = epoch(
        DALILoader(
            corpus, batch_size=8, transform=ga.Compose(crop + [ga.RandomHorizontalFlip(0.0)]), dtype=torch.uint8, device="cpu"
        )
    )
    assert torch.equal(never, plain)


@pytest.mark.parametrize(
    "steps",
    [[ga.Resize(40), ga.CenterCrop(32)], [ga.CenterCrop((50, 150))], [ga.Resize((30, 44))]],
    ids=["resize-centre-crop", "centre-crop-padded", "resize-pair"],
)
def test_resize_and_centre_crop_match_gpuaug(corpus, steps):
    """torchvision's output sizes and crop anchors are computed per image inside DALI: crops are
    exact, resizes within DALI's filter rounding (0.1-0.2 levels on average)."""
    transform = ga.Compose(steps)
    ours, labels = epoch(DALILoader(corpus, batch_size=8, transform=transform, dtype=torch.uint8, device="cpu"))
    reference = transform([torch.from_numpy(pil_rgb(path)).permute(2, 0, 1) for path, _ in ga.ImageFolder(corpus).samples])
    assert labels.tolist() == ga.ImageFolder(corpus).targets
    error = (ours.float() - reference.float()).abs()
    assert error.mean() < 0.5 and error.max() <= 16


def test_crop_scale_range_on_a_coordinate_pattern(tmp_path):
    """Red encodes x, green encodes y: an output's colour extent is the crop box it came from."""
    height, width = 200, 256
    ys, xs = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    pattern = np.stack([xs * 255 // (width - 1), ys * 255 // (height - 1), np.zeros_like(xs)], -1).astype(np.uint8)
    files = []
    for index in range(16):
        path = tmp_path / f"pattern_{index}.png"
        Image.fromarray(pattern).save(path)
        files.append((str(path), 0))
    crop = ga.RandomResizedCrop(32, scale=(0.2, 0.3), ratio=(0.8, 1.25))
    images, _ = epoch(DALILoader(files, batch_size=8, transform=ga.Compose([crop]), dtype=torch.uint8, device="cpu", seed=1))
    red, green = images[:, 0].float(), images[:, 1].float()
    box_width = (red.amax((1, 2)) - red.amin((1, 2))) / 255 * (width - 1)
    box_height = (green.amax((1, 2)) - green.amin((1, 2))) / 255 * (height - 1)
    area = (box_width + 8) * (box_height + 8) / (height * width)  # +8: the resampled edges
    assert (area > 0.2 * 0.8).all() and (area < 0.3 * 1.25).all()
    assert len({round(float(value), 3) for value in box_width}) > 4  # each image its own crop


def test_translation_plan():
    """DALI runs the plan's fused prefix (read by roles and descriptions); gpuaug the rest, with the Compose's settings."""
    native, rest, _ = DALILoader.split(ga.Compose(TRAIN), native_color=True)
    assert [role for role, _ in native] == ["crop", "flip", "jitter", "normalize"] and rest.transforms == []
    assert native[0][1]["scale"] == TRAIN[0].scale and native[1][1] == {"axis": "horizontal", "p": 0.5}
    _, rest, _ = DALILoader.split(ga.Compose(TRAIN), native_color=False)
    assert [type(step).__name__ for step in rest.transforms] == ["ColorJitter", "Normalize"]
    gray = ga.Compose([ga.RandomVerticalFlip(), ga.RandomResizedCrop(8), ga.RandomGrayscale(), ga.Normalize((0.5,), (0.5,))])
    native, rest, _ = DALILoader.split(gray, native_color=True)
    assert native == [("crop", gray.transforms[1].describe()), ("flip", {"axis": "vertical", "p": 0.5})]
    assert [type(step).__name__ for step in rest.transforms] == ["RandomGrayscale", "Normalize"]
    native, rest, _ = DALILoader.split(ga.Compose(TRAIN, fuse=False, backend="torch"), native_color=True)
    assert native == [] and (rest.fuse, rest.backend) == (False, "torch")  # issue 18 #13: settings kept


def test_a_plan_without_geometry_keeps_its_order():
    """Flips and casts alone (no crop to move them after) stay as they are; this raised StopIteration."""
    flips = ga.Compose([ga.RandomHorizontalFlip(), ga.ToDtype(torch.float32), ga.Normalize((0.5,), (0.5,))])
    native, _, _ = DALILoader.split(flips, native_color=True)
    assert native and [role for role, _ in native] == list(flips.plan.roles[: len(native)])
    cast_only, _, dtype = DALILoader.split(ga.Compose([ga.ToDtype(torch.float32)]), native_color=True)
    assert [role for role, _ in cast_only] == ["cast"] and dtype == dali.types.FLOAT


def test_gpuaug_runs_the_rest_and_dtypes(corpus):
    transform = ga.Compose([ga.CenterCrop(24), ga.RandomGrayscale(1.0), ga.Normalize((0.5,), (0.5,))])
    images, _ = epoch(
        DALILoader(corpus, batch_size=8, transform=transform, dtype=torch.bfloat16, channels_last=False, device="cpu")
    )
    assert images.dtype == torch.bfloat16 and images.is_contiguous()
    assert (images[:, 0] == images[:, 1]).all() and (images.min() >= -1) and (images.max() <= 1)
    with pytest.raises(ValueError, match="uint8"):
        list(
            DALILoader(
                corpus,
                batch_size=8,
                transform=ga.Compose([ga.CenterCrop(8), ga.Normalize((0.5,), (0.5,))]),
                dtype=torch.uint8,
                device="cpu",
            )
        )


def test_odd_files_decode_like_pil(odd):
    for name, path in odd.items():
        if name == "gif":
            continue
        images, _ = epoch(DALILoader([(str(path), 0)], batch_size=1, dtype=torch.uint8, channels_last=False, device="cpu"))
        assert np.array_equal(images[0].permute(1, 2, 0).numpy(), pil_rgb(path)), name


def test_gif_is_named_or_skipped(odd):
    files = [(str(odd["rgb_jpeg"]), 0), (str(odd["gif"]), 1)]
    transform = ga.Compose([ga.CenterCrop(16)])
    with pytest.raises(ga.DecodeError, match="photo.gif"):
        list(DALILoader(files, batch_size=2, transform=transform, device="cpu"))
    loader = DALILoader(files, batch_size=2, transform=transform, device="cpu", on_error="skip")
    with pytest.warns(UserWarning, match="GIF"):
        _, labels = epoch(loader)
    assert labels.tolist() == [0] and loader.stats.skipped == 1


@pytest.mark.parametrize("name", ["empty", "text", "html", "truncated", "header_only", "garbled"])
def test_bad_file_raises_decode_error_naming_it(corpus, bad, name):
    files = [(str(path), 0) for path, _ in ga.ImageFolder(corpus).samples[:3]] + [(str(bad[name]), 1)]
    with pytest.raises(ga.DecodeError) as caught:
        list(DALILoader(files, batch_size=2, transform=ga.Compose([ga.CenterCrop(16)]), device="cpu"))
    assert caught.value.path == str(bad[name]) and str(bad[name]) in str(caught.value)


def test_skip_drops_every_bad_file_garbled_data_included(corpus, bad):
    good = [(str(path), 0) for path, _ in ga.ImageFolder(corpus).samples[:5]]
    broken = [(str(bad[name]), 1) for name in ("empty", "text", "html", "truncated", "header_only", "garbled")]
    loader = DALILoader(good + broken, batch_size=3, transform=ga.Compose(TRAIN), device="cpu", on_error="skip")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        images, labels = epoch(loader)
    assert labels.tolist() == [0] * 5 and torch.isfinite(images).all()
    assert loader.stats.skipped == 6 and set(loader.stats.skipped_paths) == {path for path, _ in broken}
    assert len([w for w in caught if "skipped 6" in str(w.message)]) == 1


def _garbled_mid_file(folder) -> str:
    """Random bytes written into a JPEG's compressed data: libjpeg-turbo refuses it ("Unsupported
    marker type 0x40"), DALI's CPU decoder falls back to another codec and returns an image."""
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(3).integers(0, 256, (120, 160, 3), dtype=np.uint8)).save(buffer, "JPEG", quality=90)
    jpeg = buffer.getvalue()
    middle = len(jpeg) // 2
    path = folder / "garbled.jpg"
    path.write_bytes(jpeg[:middle] + bytes([0x5A, 0xFF, 0x40, 0x13, 0xC7]) + jpeg[middle + 5 :])
    return str(path)


def _bomb_png(folder) -> str:
    """A PNG whose header says 20000x20000 (DALI would decode 1.2 GB)."""
    header = struct.pack(">IIBBBBB", 20_000, 20_000, 8, 2, 0, 0, 0)

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    path = folder / "bomb.png"
    rows = zlib.compress(bytes(60_001 * 2))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b""))
    return str(path)


@pytest.mark.parametrize("kind", ["garbled", "bomb", "fifo"])
def test_garbled_bomb_and_fifo_follow_gpuloaders_policy(corpus, tmp_path, kind):
    """Issue 12 rows 5 and 16: each raises naming the file, or is skipped; the FIFO never blocks."""
    if kind == "fifo":
        if not hasattr(os, "mkfifo"):
            pytest.skip("no FIFOs here")
        path = str(tmp_path / "x.jpg")
        os.mkfifo(path)
    else:
        path = _garbled_mid_file(tmp_path) if kind == "garbled" else _bomb_png(tmp_path)
    good = [(str(path), 0) for path, _ in ga.ImageFolder(corpus).samples[:3]]
    files = good + [(path, 1)]
    transform = ga.Compose([ga.CenterCrop(16)])
    reason = {"garbled": "unknown marker 0xFF40", "bomb": "exceeds the limit", "fifo": "not a regular file"}[kind]
    with pytest.raises(ga.DecodeError, match=reason) as caught:
        list(DALILoader(files, batch_size=2, transform=transform, device="cpu"))
    assert caught.value.path == path
    loader = DALILoader(files, batch_size=2, transform=transform, device="cpu", on_error="skip")
    with pytest.warns(UserWarning, match="skipped 1 file"):
        _, labels = epoch(loader)
    assert labels.tolist() == [0, 0, 0] and loader.stats.skipped_paths == [path]
    if kind == "fifo":  # even without reading the files, a stat refuses it
        with pytest.raises(ga.DecodeError, match="not a regular file"):
            DALILoader(files, batch_size=2, transform=transform, device="cpu", check_files=False)


def test_max_image_pixels(corpus):
    files = [(str(path), 0) for path, _ in ga.ImageFolder(corpus).samples[:4]]
    sizes = [Image.open(path).size for path, _ in files]
    limit = min(width * height for width, height in sizes)  # the smallest image passes, the others not
    transform = ga.Compose([ga.CenterCrop(16)])
    loader = DALILoader(files, batch_size=2, transform=transform, device="cpu", on_error="skip", max_image_pixels=limit)
    with pytest.warns(UserWarning, match="exceeds the limit"):
        _, labels = epoch(loader)
    too_large = sum(width * height > limit for width, height in sizes)
    assert too_large >= 1 and loader.stats.skipped == too_large and len(labels) == 4 - too_large
    with pytest.raises(ValueError, match="max_image_pixels"):
        DALILoader(files, batch_size=2, max_image_pixels=0)


def test_bad_arguments(corpus):
    for kwargs, fragment in (
        ({"batch_size": 0}, "batch_size"),
        ({"batch_size": 2, "shard_id": 2, "num_shards": 2}, "shard_id"),
        ({"batch_size": 2, "on_error": "ignore"}, "on_error"),
        ({"batch_size": 2, "dtype": torch.int16}, "dtype"),
        ({"batch_size": 2, "seed": 2**70}, "seed must be an int in"),  # issue 18, low row: DALI's pybind TypeError
        ({"batch_size": 2, "seed": -1}, "seed must be an int in"),  # -1 is "unseeded" to DALI
        ({"batch_size": 2, "seed": 1.5}, "seed must be an int in"),
        ({"batch_size": 2, "num_threads": -1}, "num_threads must be an int in"),  # was ThreadPoolExecutor's max_workers
        ({"batch_size": 2, "num_threads": 0}, "num_threads must be an int in"),
        ({"batch_size": 2, "num_threads": 10**6}, "num_threads must be an int in"),  # DALI aborted the process
        ({"batch_size": 2, "prefetch_queue_depth": 0}, "prefetch_queue_depth must be an int in"),
    ):
        with pytest.raises(ValueError, match=fragment):
            DALILoader(corpus, **kwargs)
    with pytest.raises(TypeError, match="source"):
        DALILoader(42, batch_size=2)
    with pytest.raises(FileNotFoundError, match="missing"):
        DALILoader(corpus / "missing", batch_size=2)


def test_missing_dali_gives_the_install_hint(monkeypatch):
    real_import = builtins.__import__

    def hide_dali(name, *args, **kwargs):
        if name.startswith("nvidia.dali") or name == "nvidia":
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", hide_dali)
    for module in [name for name in sys.modules if name in ("gpuaug.dali", "gpuaug.loader.dali")]:
        monkeypatch.delitem(sys.modules, module)
    with pytest.raises(ImportError, match=r'pip install -e "\.\[dali\]"'):
        importlib.import_module("gpuaug.dali")


# ----------------------------------------------------------------------------------------------
# Issue 18 row 18: GPULoader's behaviour and errors for odd names, mixed sizes and 16-bit images
# ----------------------------------------------------------------------------------------------
def _png16(path, samples: np.ndarray) -> str:
    """A 16-bit PNG (grayscale [H, W] or RGB [H, W, 3]) written by hand: PIL cannot save 16-bit RGB."""
    height, width = samples.shape[:2]
    rows = b"".join(b"\x00" + samples[row].astype(">u2").tobytes() for row in range(height))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 16, 0 if samples.ndim == 2 else 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))
    return str(path)


def test_non_utf8_file_name_is_named_or_skipped(corpus, tmp_path):
    """DALI's reader took the folder's non-UTF-8 name as "Unsupported argument type with name files"."""
    folder = tmp_path / "cls"
    folder.mkdir()
    with open(ga.ImageFolder(corpus).samples[0][0], "rb") as file:
        jpeg = file.read()
    (folder / "good.jpg").write_bytes(jpeg)
    try:
        with open(os.path.join(os.fsencode(folder), b"caf\xe9.jpg"), "wb") as file:
            file.write(jpeg)
    except OSError:
        pytest.skip("this filesystem refuses non-UTF-8 names")
    odd = os.fsdecode(os.path.join(os.fsencode(folder), b"caf\xe9.jpg"))
    transform = ga.Compose([ga.CenterCrop(16)])
    for check_files in (True, False):
        with pytest.raises(ga.DecodeError, match="not valid UTF-8") as caught:
            DALILoader(tmp_path, batch_size=2, transform=transform, device="cpu", check_files=check_files)
        assert caught.value.path == odd
    loader = DALILoader(tmp_path, batch_size=2, transform=transform, device="cpu", on_error="skip")
    with pytest.warns(UserWarning, match="skipped 1 file"):
        images, labels = epoch(loader)
    assert images.shape == (1, 3, 16, 16) and loader.stats.skipped_paths == [odd]


@pytest.mark.parametrize("transform", [None, ga.Compose([ga.RandomHorizontalFlip()]), ga.Compose([ga.Resize(20)])])
def test_mixed_sizes_without_a_sizing_op_raise_gpuloaders_value_error(tmp_path, transform):
    """Was DALI's `Assert on "IsDenseTensor()" failed`; GPULoader says which sizes and what to pass."""
    files = []
    for index, size in enumerate([(40, 50), (30, 20), (40, 50)]):
        path = tmp_path / f"image_{index}.png"
        Image.fromarray(np.full((*size, 3), 7 * index, np.uint8)).save(path)
        files.append((str(path), 0))
    with pytest.raises(ValueError, match=r"different sizes \(the files hold 30x20, 40x50\); pass transform= whose first op"):
        list(DALILoader(files, batch_size=3, transform=transform, device="cpu"))
    images, _ = epoch(DALILoader(files[:1] + files[2:], batch_size=2, device="cpu", dtype=torch.uint8))  # one size: fine
    assert images.shape == (2, 3, 40, 50)


def test_16_bit_images_are_refused_in_the_file_check(corpus, tmp_path):
    """DALI scales 16-bit samples to 8 bits where PIL (and GPULoader) clips 16-bit grayscale at 255:
    up to 254 levels off. The file check refuses them with the reason; 8-bit PNGs still decode as PIL does."""
    rng = np.random.default_rng(0)
    gray = _png16(tmp_path / "gray16.png", rng.integers(0, 65536, (20, 24)))
    colour = _png16(tmp_path / "rgb16.png", rng.integers(0, 65536, (20, 24, 3)))
    assert Image.open(gray).mode == "I;16"
    eight = tmp_path / "gray8.png"
    Image.fromarray(rng.integers(0, 256, (20, 24), dtype=np.uint8)).save(eight)
    for path in (gray, colour):
        with pytest.raises(ga.DecodeError, match="16-bit PNG: DALI converts it to 8 bits differently") as caught:
            DALILoader([(str(eight), 0), (path, 1)], batch_size=2, device="cpu")
        assert caught.value.path == path
    loader = DALILoader([(str(eight), 0), (gray, 1), (colour, 1)], batch_size=2, device="cpu", dtype=torch.uint8, on_error="skip")
    with pytest.warns(UserWarning, match="skipped 2 file"):
        images, labels = epoch(loader)
    assert labels.tolist() == [0] and np.array_equal(images[0].permute(1, 2, 0).numpy(), pil_rgb(eight))
