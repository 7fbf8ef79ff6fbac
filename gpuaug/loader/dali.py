"""Optional NVIDIA DALI backend: the same transforms and batch contract, through a DALI pipeline.

``pip install -e ".[dali]"`` brings ``nvidia-dali-cuda130``. Without a GPU, DALI runs a CPU-only
pipeline (``device_id=None``); with one, the decoder runs ``"mixed"`` (nvJPEG) and the other
operators on the GPU.

Which parts run where (the pipeline is built from the gpuaug ``Compose`` you pass):

* **DALI, natively**, in order, the part of the pipeline's fused prefix (``Compose.plan.prefix``)
  it has operators for, read from each transform's role and ``describe()``: the file reader
  (shuffling, sharding); the decoder, fused with the crop for ``RandomResizedCrop``
  (``fn.decoders.image_random_crop`` with the same ``scale``/``ratio`` and 10 attempts, then
  ``fn.resize``); ``Resize`` (``fn.resize`` to torchvision's output size, computed per image from
  ``fn.peek_image_shape``), ``CenterCrop`` (``fn.slice`` at torchvision's anchor, zero padding);
  flips (``fn.flip``; a horizontal flip *before* the crop is moved after it, which leaves its
  distribution unchanged); a fusible ``ColorJitter`` (no HSV hue) through ``fn.color_twist`` (DALI's
  formulas: contrast about mid-grey, saturation and hue as a linear YIQ approximation, not
  torchvision's; pass ``native_color=False`` to run gpuaug's instead); ``ToDtype(float)`` and
  ``Normalize`` through ``fn.crop_mirror_normalize``.
* **gpuaug, on the resulting batch** (zero-copy through DALI's PyTorch plugin): everything from
  the first transform DALI has no equivalent for (``RandomGrayscale``, an HSV ``ColorJitter``,
  ``ColorJitter`` with ``native_color=False``, ...), with the ``Compose``'s ``fuse`` and
  ``backend``, then the dtype and memory format. DALI draws its own randomness: the same
  transforms and batch contract as ``GPULoader``, not the same batches.

Bad files follow ``GPULoader``'s policy. When the loader is built it checks every file once, as
``GPULoader``'s workers do (``check_files=True``, in ``num_threads`` threads): a regular file
(a FIFO or a device named ``x.jpg`` would block DALI's reader), at most 1 GiB, a readable header
of a format DALI decodes (not GIF), at most ``max_image_pixels`` pixels (DALI would decode a
20000x20000 PNG into 1.2 GB), a JPEG with its end marker and no marker libjpeg-turbo refuses
(random bytes written into the compressed data, garbled Huffman tables: DALI's CPU decoder falls
back to another codec and returns an image), a PNG or TIFF of more than 8 bits per sample (DALI
scales 16-bit samples to 8 bits, PIL and ``GPULoader`` clip 16-bit grayscale at 255: up to 254
levels apart; they are refused rather than decoded differently). Whatever ``check_files``, a file
name that is not valid UTF-8 is such a file too (DALI's reader takes UTF-8 names only; ``GPULoader``
reads it). ``on_error="raise"`` raises a ``gpuaug.DecodeError``
naming the first such file when the loader is built; ``on_error="skip"`` leaves them out, counted
in ``stats.skipped`` with one warning listing them. A file DALI still fails on stops the epoch with
a ``DecodeError`` naming it (DALI names it, or a CPU decode of the data set finds it). Images of
different sizes in one batch (no ``transform``, or one without a crop or a fixed-size resize) raise
``GPULoader``'s ``ValueError`` ("images in a batch have different sizes ...").

What no loader detects: corrupt compressed data holding no invalid marker (a flipped bit, random
bytes without an ``FF xx`` marker code) decodes to wrong pixels on every decoder: libjpeg-turbo
only warns ("Corrupt JPEG data"), and nvJPEG and the hardware JPEG engines on CUDA check less
still, so DALI's ``"mixed"`` decoder (like ``GPULoader``'s nvJPEG path) decodes such files
silently. Only a comparison with a known checksum of each file would catch them.

Example:
    >>> from gpuaug.dali import DALILoader                                          # doctest: +SKIP
    >>> loader = DALILoader("train/", batch_size=128, shuffle=True, transform=augment)  # doctest: +SKIP
"""

from __future__ import annotations

import io
import math
import operator
import os
import re
import stat
import time
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch
from PIL import Image

try:
    from nvidia.dali import fn, pipeline_def, types
    from nvidia.dali import math as dmath
    from nvidia.dali.plugin.pytorch import DALIGenericIterator, LastBatchPolicy
except ImportError as error:  # pragma: no cover - exercised by hiding the module in a test
    raise ImportError('gpuaug.dali needs NVIDIA DALI: pip install -e ".[dali]" (it installs nvidia-dali-cuda130)') from error

from gpuaug import transforms as T
from gpuaug.io.decode import DEFAULT_MAX_PIXELS, DecodeError, decode_cpu, read_header
from gpuaug.io.sources import DEFAULT_MAX_BYTES, FileList, ImageFolder, MemberPath, is_file_list, read_bytes
from gpuaug.loader.device_stage import different_sizes
from gpuaug.loader.gpu_loader import LoaderStats, as_compose, check_loader_arguments, resolve_device
from gpuaug.loader.seeding import mix_seed as _mix

__all__ = ["DALILoader"]

_DALI_ROLES = ("crop", "resize", "window", "flip", "jitter", "cast", "normalize")


def _dali_runs(role: str | None, transform: T.Transform, native_color: bool) -> bool:
    """Whether DALI has an operator for this role with this description (jitter: ``native_color``)."""
    if role not in _DALI_ROLES or transform.describe() is None:
        return False
    if role == "cast":
        return transform.describe()["scale"]
    return role != "jitter" or native_color


MAX_THREADS = 1024  # DALI aborts the process (std::terminate) when it cannot start its threads
MAX_PREFETCH = 64
_RAGGED = ("IsDenseTensor", "uniform shape")  # DALI's words when a batch's images differ in size


def _check_int(name: str, value: Any, low: int, high: int) -> int:
    """``value`` as an int in ``[low, high]`` (numpy ints too, not bools or floats), or a ``ValueError`` naming it."""
    try:
        if isinstance(value, bool):
            raise TypeError
        number = operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be an int in [{low}, {high}], got {value!r}") from None
    if not low <= number <= high:
        raise ValueError(f"{name} must be an int in [{low}, {high}], got {number!r}")
    return number


_DALI_FORMATS = ("jpeg", "png", "bmp", "tiff", "webp")  # what DALI's image decoder reads (no GIF)
_PATH_IN_ERROR = re.compile(r"(?:File mapping failed|Failed to decode sample #\d+ ?): (.+?)\s*(?:\n|C\+\+ context|$)")


def _centre_anchor(size, crop: int):
    """``gpuaug.fusion.ops.centre_anchor`` (torchvision's centre-crop offset) as DALI graph arithmetic,
    per image inside the pipeline: round((size - crop) / 2) half to even when the image is larger,
    ``-((crop - size) // 2)`` (its zero padding) when it is smaller (tests hold the two equal)."""
    half = (size - crop) * 0.5
    floor = dmath.floor(half)
    odd = floor - 2.0 * dmath.floor(floor * 0.5)
    larger = floor + 2.0 * (half - floor) * odd
    larger_mask = fn.cast(size >= crop, dtype=types.FLOAT)
    return larger_mask * larger + (1.0 - larger_mask) * dmath.ceil(half)


def _structure_problem(path: str, exif_orientation: bool, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> str | None:
    """Why DALI would fail on ``path`` (or decode it where GPULoader refuses it), judging by its
    type, size, header and JPEG markers without decoding; None if it looks decodable."""
    try:
        data = read_bytes(path)
        header = read_header(data, path, exif_orientation, max_pixels=max_pixels)
    except DecodeError as error:
        return error.reason
    if header.format not in _DALI_FORMATS:
        return f"{(header.format or 'this format').upper()} is not decoded by DALI"
    if not header.complete:
        return "truncated JPEG (no end-of-image marker)"
    return _bit_depth_problem(bytes(data[:64]) if header.format == "png" else data, header.format)


def _bit_depth_problem(data: bytes, kind: str | None) -> str | None:
    """A PNG or TIFF with more than 8 bits per sample: DALI scales 16-bit samples to 8 bits, where
    PIL (and so ``GPULoader``) clips 16-bit grayscale at 255 (up to 254 levels apart) and reduces
    16-bit colour its own way (a level apart)."""
    depth = 8
    if kind == "png" and len(data) > 24 and data[12:16] == b"IHDR":
        depth = data[24]
    elif kind == "tiff":
        try:
            with Image.open(io.BytesIO(data)) as image:
                bits = image.tag_v2.get(258, 8)
                depth = max(bits) if isinstance(bits, tuple) else int(bits)
                if image.mode.startswith(("I", "F")):
                    depth = max(depth, 16)
        except Exception:  # noqa: BLE001 - an unreadable tag: let the decoder judge the file
            return None
    if depth <= 8:
        return None
    return (
        f"{depth}-bit {kind.upper()}: DALI converts it to 8 bits differently from PIL and GPULoader "
        "(PIL clips 16-bit grayscale at 255); convert the file to 8 bits, or read it with GPULoader"
    )


def _name_problem(path: str) -> str | None:
    """A file name DALI's reader cannot take: its ``files`` argument holds UTF-8 strings only."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return (
            f"its name is not valid UTF-8 ({ascii(os.path.basename(path))}) and DALI's file reader takes UTF-8 "
            "names only; rename the file, or read it with GPULoader"
        )
    return None


def _file_type_problem(path: str) -> str | None:
    """A non-regular file (FIFO, device, folder) or one over the size cap, from ``os.stat`` alone."""
    try:
        mode = os.stat(path)
    except OSError as error:
        return f"cannot read the file ({error.strerror or error})"
    if not stat.S_ISREG(mode.st_mode):
        return "not a regular file"
    if mode.st_size > DEFAULT_MAX_BYTES:
        return f"the file has {mode.st_size:,} bytes, more than max_bytes={DEFAULT_MAX_BYTES:,}"
    return None


class DALILoader:
    """``GPULoader``'s batches, produced by an NVIDIA DALI pipeline.

    Args:
        source: a root folder in ImageFolder layout (same classes and labels as ``ga.ImageFolder``),
            a ``ga.ImageFolder``, or a list of ``(path, label)``.
        batch_size, shuffle, drop_last: as ``DataLoader`` (the last partial batch is kept unless
            ``drop_last``; ``shuffle`` reshuffles the whole data set every epoch).
        transform: a gpuaug ``Compose`` (or torchvision pipeline, converted); see the module
            docstring for what DALI runs and what gpuaug runs.
        device: ``"cuda"`` (mixed decoder, GPU operators) or ``"cpu"`` (CPU-only pipeline);
            default: CUDA when available.
        dtype, channels_last: the output images' dtype and memory format.
        num_threads: DALI CPU threads, 1 to ``MAX_THREADS`` (default: up to 4, at most the CPU count).
        seed: the pipeline's seed, an int in [0, 2**63) (default: drawn from torch's RNG); equal across ranks.
        shard_id, num_shards: disjoint shards covering the data set (for torchrun).
        prefetch_queue_depth: DALI's prefetch depth, 1 to ``MAX_PREFETCH``.
        on_error: ``"raise"`` (a ``DecodeError`` naming the file) or ``"skip"`` (leave it out); see
            the module docstring for what is checked and what cannot be.
        native_color: translate ``ColorJitter`` to ``fn.color_twist`` (DALI's formulas) or run
            gpuaug's on the batch (torchvision's formulas).
        exif_orientation: apply EXIF orientation (default False, like ``GPULoader``).
        max_image_pixels: refuse images with more pixels than this (default
            ``gpuaug.io.decode.DEFAULT_MAX_PIXELS``, PIL's own bomb limit; None: no limit).
        check_files: read every file once when the loader is built, as ``GPULoader``'s workers
            do (a read and a header parse per file: minutes for ImageNet-1k's 1.28 M files);
            ``False`` checks only each file's name, type and size, and DALI's own checks apply (see
            the module docstring; a 16-bit PNG then decodes with DALI's scaling).

    Yields:
        ``(images [B, 3, h, w] in dtype on device, labels int64 [B] on device)``.
    """

    def __init__(
        self,
        source: Any,
        batch_size: int,
        shuffle: bool = False,
        drop_last: bool = False,
        *,
        transform: Any = None,
        device: str | torch.device | None = None,
        dtype: torch.dtype = torch.float32,
        channels_last: bool = True,
        num_threads: int | None = None,
        seed: int | None = None,
        shard_id: int = 0,
        num_shards: int = 1,
        prefetch_queue_depth: int = 2,
        on_error: str = "raise",
        native_color: bool = True,
        exif_orientation: bool = False,
        max_image_pixels: int | None = DEFAULT_MAX_PIXELS,
        check_files: bool = True,
    ) -> None:
        check_loader_arguments(batch_size, on_error, dtype, max_image_pixels=max_image_pixels)
        if not (isinstance(num_shards, int) and num_shards >= 1 and isinstance(shard_id, int) and 0 <= shard_id < num_shards):
            raise ValueError(f"shard_id must be in [0, num_shards), got shard_id={shard_id!r}, num_shards={num_shards!r}")
        self.device = resolve_device(device)
        self.source = self._resolve(source)
        self.batch_size, self.shuffle, self.drop_last = batch_size, shuffle, drop_last
        self.dtype, self.channels_last, self.on_error = dtype, channels_last, on_error
        self.shard_id, self.num_shards = shard_id, num_shards
        self.num_threads = (
            max(1, min(4, os.cpu_count() or 1)) if num_threads is None else _check_int("num_threads", num_threads, 1, MAX_THREADS)
        )
        self.prefetch_queue_depth = _check_int("prefetch_queue_depth", prefetch_queue_depth, 1, MAX_PREFETCH)
        if seed is None:
            self.seed = int(torch.randint(0, 2**31 - 1, ()).item())  # host RNG
        else:  # DALI's seed is an int64, and -1 there means "unseeded"
            self.seed = _check_int("seed", seed, 0, 2**63 - 1)
        self.exif_orientation = exif_orientation
        self.max_image_pixels = max_image_pixels
        self.stats = LoaderStats()
        self._epoch = 0

        transform = as_compose(transform)
        self.transform: T.Compose | None = transform
        self._native, self._rest, self._dali_dtype = self.split(transform, native_color)

        self._excluded: list[tuple[str, str]] = []
        samples = list(self.source.samples)
        names = [_name_problem(path) for path, _ in samples]
        if check_files:
            with ThreadPoolExecutor(self.num_threads) as pool:  # file reads overlap; the order is kept
                problems = list(
                    pool.map(
                        lambda sample, name: name or _structure_problem(sample[0], exif_orientation, max_image_pixels),
                        samples,
                        names,
                    )
                )
        else:
            problems = [name or _file_type_problem(path) for (path, _), name in zip(samples, names)]
        kept = []
        for (path, label), problem in zip(samples, problems):
            if problem is None:
                kept.append((path, label))
            elif on_error == "raise":
                raise DecodeError(path, problem)
            else:
                self._excluded.append((path, problem))
        samples = kept
        if not samples:
            raise ValueError("DALILoader has no decodable files to read")
        self._files = [path for path, _ in samples]
        self._labels = [label for _, label in samples]
        self._iterator: DALIGenericIterator | None = None
        self._complete = True

    # -- source and plan -------------------------------------------------------------------------
    @staticmethod
    def _resolve(source: Any) -> FileList:
        if isinstance(source, (str, os.PathLike)):
            return ImageFolder(source)
        if isinstance(source, FileList):
            if source.samples and isinstance(source.samples[0][0], MemberPath):
                raise TypeError(
                    "DALILoader reads files; shard members (ga.WebDataset) are read by GPULoader, which takes the same transforms"
                )
            return source
        if is_file_list(source):
            return FileList(source)
        raise TypeError(f"source must be a folder, a ga.ImageFolder or a list of (path, label); got {type(source).__name__}")

    @staticmethod
    def split(transform: T.Compose | None, native_color: bool) -> tuple[list[tuple[str, dict]], T.Compose, Any]:
        """The part of ``transform``'s fused prefix (``Compose.plan``) DALI runs natively, as ``(role,
        description)`` pairs in DALI's order, the rest as a Compose with the same settings, and DALI's
        output dtype. DALI reads roles and descriptions (``Transform.describe``), never classes."""
        if transform is None:
            return [], T.Compose([]), types.UINT8
        steps = transform.transforms
        roles = transform.plan.roles
        count = 0
        while count < transform.plan.prefix and _dali_runs(roles[count], steps[count], native_color):
            count += 1
        native = [(roles[index], steps[index].describe()) for index in range(count)]
        first = transform.plan.first_geometric  # after leading flips only; None without one
        first = first if first is not None and first < count else 0
        native = native[first:] + native[:first]  # flips before the first crop commute with it in distribution: after it
        normalized = any(role in ("cast", "normalize") for role, _ in native)
        return (
            native,
            T.Compose(steps[count:], fuse=transform.fuse, backend=transform.backend),
            types.FLOAT if normalized else types.UINT8,
        )

    def _pipeline(self):
        gpu = self.device.type == "cuda"
        device_id = (self.device.index if self.device.index is not None else torch.cuda.current_device()) if gpu else None
        native = self._native
        files, labels = self._files, self._labels

        @pipeline_def(
            batch_size=self.batch_size,
            num_threads=self.num_threads,
            device_id=device_id,
            seed=self.seed,
            prefetch_queue_depth=self.prefetch_queue_depth,
        )
        def pipeline():
            encoded, label = fn.readers.file(
                files=files,
                labels=labels,
                name="reader",
                shuffle_after_epoch=self.shuffle,
                stick_to_shard=not self.shuffle,
                shard_id=self.shard_id,
                num_shards=self.num_shards,
                pad_last_batch=True,
            )
            decoder = "mixed" if gpu else "cpu"
            first_role, first = native[0] if native else (None, None)
            if first_role == "crop":
                images = fn.decoders.image_random_crop(
                    encoded,
                    device=decoder,
                    output_type=types.RGB,
                    random_area=list(first["scale"]),
                    random_aspect_ratio=list(first["ratio"]),
                    num_attempts=10,
                    adjust_orientation=self.exif_orientation,
                )
                images = fn.resize(
                    images,
                    resize_x=first["size"][1],
                    resize_y=first["size"][0],
                    antialias=first["antialias"],
                    interp_type=types.INTERP_LINEAR,
                )
                height, width = None, None
            else:
                images = fn.decoders.image(
                    encoded, device=decoder, output_type=types.RGB, adjust_orientation=self.exif_orientation
                )
                shape = fn.peek_image_shape(encoded, dtype=types.FLOAT, adjust_orientation=self.exif_orientation)
                height, width = shape[0], shape[1]
            mirror = None
            mean, std = [0.0, 0.0, 0.0], [255.0, 255.0, 255.0]
            normalize = False
            for position, (role, step) in enumerate(native):
                if role == "crop" and position == 0:
                    height, width = float(step["size"][0]), float(step["size"][1])
                elif role == "resize":
                    # torchvision's output size (the long side truncated), computed per image in DALI
                    if len(step["size"]) == 1:
                        short = dmath.min(height, width)
                        height, width = (
                            dmath.floor(step["size"][0] * height / short),
                            dmath.floor(step["size"][0] * width / short),
                        )
                    else:
                        height, width = height * 0 + step["size"][0], width * 0 + step["size"][1]
                    images = fn.resize(
                        images, resize_x=width, resize_y=height, antialias=step["antialias"], interp_type=types.INTERP_LINEAR
                    )
                elif role == "window":
                    # torchvision's anchor (half to even; zero padding around small images), in pixels
                    anchor = fn.stack(_centre_anchor(height, step["size"][0]), _centre_anchor(width, step["size"][1]))
                    images = fn.slice(
                        images,
                        anchor,
                        [float(step["size"][0]), float(step["size"][1])],
                        axis_names="HW",
                        normalized_anchor=False,
                        normalized_shape=False,
                        out_of_bounds_policy="pad",
                        fill_values=0,
                    )
                    height, width = float(step["size"][0]), float(step["size"][1])
                elif role == "flip" and step["axis"] == "vertical":
                    images = fn.flip(images, horizontal=0, vertical=fn.random.coin_flip(probability=step["p"]))
                elif role == "flip":
                    coin = fn.random.coin_flip(probability=step["p"])
                    if mirror is None:
                        mirror = coin
                    else:
                        images = fn.flip(images, horizontal=coin)
                elif role == "jitter":
                    twist = {}
                    for name in ("brightness", "contrast", "saturation"):
                        if step[name] is not None:
                            twist[name] = fn.random.uniform(range=list(step[name]))
                    if step["hue"] is not None:
                        twist["hue"] = fn.random.uniform(range=[360.0 * step["hue"][0], 360.0 * step["hue"][1]])
                    images = fn.color_twist(images, **twist)
                elif role == "normalize":
                    normalize = True
                    count = len(step["mean"])
                    mean = [255.0 * value for value in (step["mean"] * 3 if count == 1 else step["mean"])]
                    std = [255.0 * value for value in (step["std"] * 3 if count == 1 else step["std"])]
                elif role == "cast":
                    normalize = True
            if normalize or mirror is not None:
                images = fn.crop_mirror_normalize(
                    images,
                    dtype=self._dali_dtype,
                    output_layout="HWC",
                    mean=mean if normalize else [0.0] * 3,
                    std=std if normalize else [1.0] * 3,
                    mirror=mirror if mirror is not None else 0,
                )
            if gpu:
                label = label.gpu()
            return images, label

        return pipeline()

    # -- iteration -------------------------------------------------------------------------------
    def _shard_size(self) -> int:
        size = len(self._files)
        return size * (self.shard_id + 1) // self.num_shards - size * self.shard_id // self.num_shards

    def __len__(self) -> int:
        size = self._shard_size()
        return size // self.batch_size if self.drop_last else math.ceil(size / self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """Accepted for symmetry with ``GPULoader``; DALI reshuffles by itself every epoch."""
        self._epoch = int(epoch)

    def _make_iterator(self) -> DALIGenericIterator:
        policy = LastBatchPolicy.DROP if self.drop_last else LastBatchPolicy.PARTIAL
        try:
            return DALIGenericIterator(
                [self._pipeline()], ["images", "labels"], reader_name="reader", last_batch_policy=policy, auto_reset=True
            )
        except RuntimeError as error:
            raise self._decode_error(error) from None

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self._iterator is None:
            self._iterator = self._make_iterator()
        elif not self._complete:  # a previous epoch was abandoned: DALI cannot rewind, so drain it
            for _ in self._iterator:
                pass
        self.stats = LoaderStats(skipped=len(self._excluded), skipped_paths=[path for path, _ in self._excluded])
        started, number = time.perf_counter(), 0
        self._complete = False
        while True:
            waited = time.perf_counter()
            try:
                output = next(self._iterator)
            except StopIteration:
                break
            except RuntimeError as error:
                self._iterator = None  # DALI's pipeline is dead after an error
                raise self._decode_error(error) from None
            self.stats.wait_seconds += time.perf_counter() - waited
            images, labels = self._finish(output[0]["images"], output[0]["labels"], number)
            number += 1
            self.stats.images += len(labels)
            self.stats.batches += 1
            self.stats.epoch_seconds = time.perf_counter() - started
            yield images, labels
        self._complete = True
        self._epoch += 1
        self.stats.epoch_seconds = time.perf_counter() - started
        if self._excluded:
            shown = ", ".join(f"{path} ({reason})" for path, reason in self._excluded[:20])
            warnings.warn(f"DALILoader skipped {len(self._excluded)} file(s) it could not decode: {shown}", stacklevel=2)

    def _finish(self, images: torch.Tensor, labels: torch.Tensor, number: int) -> tuple[torch.Tensor, torch.Tensor]:
        """DALI's HWC batch as [B, 3, H, W] (a channels-last view), then gpuaug's remaining ops."""
        started = time.perf_counter()
        images = images.permute(0, 3, 1, 2)
        if self._rest.transforms:
            generator = torch.Generator(images.device).manual_seed(_mix(self.seed, self._epoch, number))
            images = self._rest(images, generator=generator)
        if self.dtype.is_floating_point:
            images = images.to(self.dtype) if images.is_floating_point() else images.to(self.dtype).div_(255)
        elif images.is_floating_point():
            raise ValueError("dtype=torch.uint8 but the transform produces floats (it normalises); use a float dtype")
        images = images.contiguous(memory_format=torch.channels_last) if self.channels_last else images.contiguous()
        self.stats.augment_seconds += time.perf_counter() - started
        return images.to(self.device, non_blocking=True), labels.view(-1).to(device=self.device, dtype=torch.int64)

    def _ragged_message(self, scan: int = 256) -> str:
        """``GPULoader``'s error for a batch of images of different sizes, with sizes read from the
        first ``scan`` files' headers (DALI does not say which batch)."""
        sizes: set[tuple[int, int]] = set()
        for path in self._files[:scan]:
            try:
                header = read_header(read_bytes(path), path, self.exif_orientation, max_pixels=None)
            except (DecodeError, OSError):
                continue
            sizes.add(header.oriented_size)
        return different_sizes(sizes, known="the files hold ")

    def _decode_error(self, error: RuntimeError) -> Exception:
        """DALI's pipeline error as a ``DecodeError`` naming the file (found by a CPU scan if DALI did not),
        or, for a batch of images of different sizes, ``GPULoader``'s ``ValueError``."""
        message = str(error)
        if any(words in message for words in _RAGGED):
            return ValueError(self._ragged_message())
        dali_reason = next(
            (line.strip() for line in message.splitlines() if "failure" in line or "failed" in line.lower()),
            "DALI could not decode it",
        )
        match = _PATH_IN_ERROR.search(message)
        if match and Path(match.group(1).strip()).exists():
            path = match.group(1).strip()
            return DecodeError(path, _structure_problem(path, self.exif_orientation, self.max_image_pixels) or dali_reason)
        for path in self._files:  # DALI did not say which file: find it on the CPU
            problem = _structure_problem(path, self.exif_orientation, self.max_image_pixels)
            if problem is None:
                try:
                    decode_cpu(read_bytes(path), path, max_pixels=self.max_image_pixels)
                except DecodeError as decode_error:
                    problem = decode_error.reason
            if problem is not None:
                return DecodeError(path, f"{problem} (DALI: {dali_reason})")
        return error

    def __repr__(self) -> str:
        native = ", ".join(role for role, _ in self._native) or "decode"
        return (
            f"DALILoader(batch_size={self.batch_size}, batches={len(self)}, device={self.device}, "
            f"dali=[{native}], gpuaug={self._rest!r})"
        ).replace("\n", "")
