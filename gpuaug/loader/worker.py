"""The loader's worker side: what runs in ``DataLoader`` worker processes, and what they hand over.

A worker gets all the indices of a batch at once (``__getitems__``), reads every file and its
header, and draws the batch's augmentation parameters on a CPU generator seeded from (epoch seed,
the batch's indices). Then either:

* it **augments** (the CPU loader, no accelerator): decodes each image (at a reduced JPEG DCT scale
  when the first op downscales anyway), runs the whole pipeline a few images at a time and writes
  the finished batch channels-last into shared memory;
* or it **prepares the device stage's work**: leaves encoded the files the device decoder takes
  (``Decoder.takes``), decodes the rest (only the region the first geometric op reads, at a
  reduced scale where it may), crops, and rebases the params onto the images it hands over, with
  the sizes it knows and the one rounding rule of ``gpuaug.loader.regions``; the decoded images
  travel as one ``PackedBatch``.

Everything travels as one :class:`~gpuaug.loader.host_batch.HostBatch`.

Example:
    >>> options = WorkerOptions(reduced_decode=False)
    >>> options.reduce_factor(ImageHeader("jpeg", 800, 800), limit=5.0)
    1
"""

from __future__ import annotations

import ctypes
import numbers
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from gpuaug.io.decode import DEFAULT_MAX_PIXELS, DecodeError, ImageHeader, decode_cpu, read_header
from gpuaug.io.packed import PackedBatch
from gpuaug.io.sources import DEFAULT_MAX_BYTES, read_bytes
from gpuaug.loader import regions as R
from gpuaug.loader.host_batch import HostBatch
from gpuaug.loader.seeding import mix_seed
from gpuaug.transforms import BatchInfo, Compose

__all__ = ["WorkerOptions", "WorkerSide", "collate_host_batch", "keep_freed_memory", "to_rgb_tensor"]

_WORKER_GROUP = 4  # images augmented at a time by the CPU loader (see WorkerSide._augment)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)
_ALLOCATOR: tuple[int, bool] | None = None  # (process, whether glibc took the settings): tried once a process


def keep_freed_memory() -> bool:
    """Let glibc's allocator keep freed memory in this process for reuse (the loader's workers call it).

    A worker allocates and frees image-sized buffers (decoded images, float intermediates) batch after
    batch. glibc maps blocks above its mmap threshold (128 KiB at first, then moving with the sizes
    freed) afresh for every allocation and gives the top of its heap back to the kernel once more than
    twice that is free, so each batch faults its pages in again, zeroed by the kernel: on the benchmark
    machine about 0.2 ms of system time per image in the CPU loader's workers. A fixed mmap threshold
    of 32 MiB (glibc's largest) and a trim threshold of 1 GiB keep those blocks in the heap; a worker's
    memory then stays at its peak (a few batches of images). Returns whether glibc took the settings
    (False elsewhere: nothing changes). Tried once a process: later calls return the first answer.
    """
    global _ALLOCATOR
    pid = os.getpid()
    if _ALLOCATOR is None or _ALLOCATOR[0] != pid:
        _ALLOCATOR = (pid, _set_allocator())
    return _ALLOCATOR[1]


def _set_allocator() -> bool:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, 32 << 20)) and bool(mallopt(_M_TRIM_THRESHOLD, 1 << 30))


@dataclass(frozen=True)
class WorkerOptions:
    """How the workers read and decode: the loader's arguments of the same names."""

    exif_orientation: bool = False
    reduced_decode: bool = True
    max_pixels: int | None = DEFAULT_MAX_PIXELS
    max_file_bytes: int | None = DEFAULT_MAX_BYTES
    channels_last: bool = True

    def reduce_factor(self, header: ImageHeader, limit: float) -> int:
        """The JPEG DCT scale divisor (8, 4, 2 or 1) at most ``limit``."""
        if not self.reduced_decode or header.format != "jpeg":
            return 1
        return next((factor for factor in (8, 4, 2) if factor <= limit), 1)


def as_label(value: Any, where: str) -> int:
    """An integer class label (int, numpy integer, or a one-element integer tensor or array) as an int.

    Raises:
        TypeError: naming ``where`` for anything else (a float, a string, a multi-label or one-hot
            tensor): a label is never silently rounded.

    Example:
        >>> as_label(np.int64(3), "item 0"), as_label(torch.tensor([2]), "item 1")
        (3, 2)
    """
    if isinstance(value, np.ndarray) and value.size == 1 and np.issubdtype(value.dtype, np.integer):
        value = value.reshape(()).item()
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not (value.is_floating_point() or value.is_complex()):
        value = value.reshape(()).item()
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    array = isinstance(value, (torch.Tensor, np.ndarray))
    shown = f"a tensor of shape {tuple(value.shape)} ({value.dtype})" if array else repr(value)
    raise TypeError(f"{where}: the label must be an integer class index, got {shown}")


def to_rgb_tensor(item: Any, index: int) -> torch.Tensor:
    """A dataset item (PIL image, [C,H,W] tensor, HWC ndarray) as an RGB ``[3, H, W]`` tensor."""
    if isinstance(item, Image.Image):
        item = item if item.mode == "RGB" else item.convert("RGB")
        return torch.from_numpy(np.asarray(item).copy()).permute(2, 0, 1)
    if isinstance(item, np.ndarray):
        if item.ndim == 2:
            item = item[:, :, None]
        if item.ndim != 3 or item.shape[2] not in (1, 3, 4):
            raise TypeError(
                f"dataset item {index}: expected an HWC image array (H, W, C with C in 1, 3, 4), got shape {item.shape}"
            )
        item = torch.from_numpy(np.array(item, copy=True)).permute(2, 0, 1)
    if isinstance(item, torch.Tensor):
        if item.ndim == 2:
            item = item.unsqueeze(0)
        if item.ndim != 3 or item.shape[0] not in (1, 3, 4):
            raise TypeError(f"dataset item {index}: expected an image tensor [C, H, W], C in 1, 3, 4, got {tuple(item.shape)}")
        if item.dtype != torch.uint8 and not item.is_floating_point():
            raise TypeError(f"dataset item {index}: expected a uint8 or float image tensor, got {item.dtype}")
        if 0 in item.shape:
            raise ValueError(f"dataset item {index}: an image with no pixels (shape {tuple(item.shape)})")
        if item.shape[0] == 1:
            item = item.expand(3, -1, -1)
        return item[:3].detach()  # the loader produces data, not graphs (an item with requires_grad)
    raise TypeError(
        f"dataset item {index}: expected (PIL image | uint8 tensor [C, H, W] | HWC uint8 array, label), got {type(item).__name__}"
    )


def _one_dtype(images: list[torch.Tensor]) -> list[torch.Tensor]:
    """Items of one batch in one dtype, each converted by its own dtype: uint8 128 -> 0.502 beside floats."""
    if len({image.dtype for image in images}) <= 1:
        return images
    return [image.float() / 255 if image.dtype == torch.uint8 else image.float() for image in images]


class WorkerSide(Dataset):
    """What runs in the DataLoader workers (see the module docstring).

    Args:
        source: a ``FileList`` (files) or a map-style dataset.
        files: whether ``source`` holds files to read (else items to convert).
        load_item: for map-style datasets, ``index -> (item, label)``.
        pipeline: the whole pipeline (transform + dtype conversion).
        augment: run the pipeline here (the CPU loader) instead of preparing the device stage's work.
        takes: which files the device decoder decodes (``Decoder.takes``), left encoded; ``None``:
            the workers decode every file.
        region_decode: whether the device decoder decodes only each file's region (else whole files).
        options: how to read and decode.
        target_transform: applied to labels.
    """

    def __init__(
        self,
        source: Any,
        files: bool,
        load_item: Callable[[int], tuple[Any, int]] | None,
        pipeline: Compose,
        *,
        augment: bool,
        takes: Callable[[ImageHeader], bool] | None = None,
        region_decode: bool = False,
        options: WorkerOptions = WorkerOptions(),
        target_transform: Callable[[Any], Any] | None = None,
    ) -> None:
        self.source, self.files, self.load_item, self.pipeline = source, files, load_item, pipeline
        self.augment, self.takes, self.region_decode = augment, takes, region_decode
        self.options, self.target_transform = options, target_transform

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, key: tuple[int, int]) -> HostBatch:
        return self.__getitems__([key])

    def _label(self, label: Any, where: str) -> int:
        return as_label(self.target_transform(label) if self.target_transform is not None else label, where)

    def _fetch(
        self, index: int, data: bytes | DecodeError | None = None
    ) -> tuple[str, int, tuple[bytes, ImageHeader] | torch.Tensor]:
        """``(path, label, payload)``: the file's bytes (``data`` when already read) and header, or a
        map-style item as a tensor.

        Raises:
            DecodeError: naming the file when it cannot be read or its header parsed.
        """
        options = self.options
        if self.files:
            path, label = self.source.samples[index]
            if isinstance(data, DecodeError):
                raise data
            if data is None:
                data = read_bytes(path, max_bytes=options.max_file_bytes)
            header = read_header(data, path, options.exif_orientation, max_pixels=options.max_pixels)
            return path, self._label(label, path), (data, header)
        item, label = self.load_item(index)
        return f"<item {index}>", self._label(label, f"dataset item {index}"), to_rgb_tensor(item, index)

    def _decode(self, data: bytes, header: ImageHeader, path: str, reduce: int) -> torch.Tensor:
        options = self.options
        return decode_cpu(
            data, path, exif_orientation=options.exif_orientation, reduce=reduce, header=header, max_pixels=options.max_pixels
        )

    def _decode_row(
        self, batch: HostBatch, row: int, data: bytes, header: ImageHeader, limit: float | None
    ) -> torch.Tensor | None:
        """Row ``row``'s image (at a reduced JPEG scale where the first op's ``limit`` allows), or None with
        the failure recorded in ``batch.failures``."""
        reduce = self.options.reduce_factor(header, limit) if limit is not None else 1
        try:
            return self._decode(data, header, batch.paths[row], reduce)
        except DecodeError as error:
            batch.failures.append((error.path, error.reason))
            return None

    def __getitems__(self, keys: list[tuple[int, int]]) -> HostBatch:
        """Read (and decode, and augment or prepare) a whole batch; draws from (epoch seed, the indices)."""
        start = time.perf_counter()
        if torch.utils.data.get_worker_info() is not None:
            keep_freed_memory()  # in worker processes only (once each): the user's own process keeps its settings
        indices = [index for index, _ in keys]
        labels, paths, failures, payloads, sizes = [], [], [], [], []
        # A source that reads a batch at once (remote shards: concurrent range requests) does so here.
        read_together = self.files and hasattr(self.source, "read_images")
        datas = self.source.read_images(indices, self.options.max_file_bytes) if read_together else [None] * len(indices)
        for index, data in zip(indices, datas):  # read (and for a map-style dataset, load) every sample
            try:
                path, label, payload = self._fetch(index, data)
            except DecodeError as error:
                failures.append((error.path, error.reason))
                continue
            payloads.append(payload)
            sizes.append(tuple(payload.shape[-2:]) if isinstance(payload, torch.Tensor) else payload[1].oriented_size)
            labels.append(label)
            paths.append(path)
        size_tensor = torch.tensor(sizes, dtype=torch.int64).reshape(-1, 2)
        batch = HostBatch(torch.tensor(labels, dtype=torch.int64), paths, size_tensor, failures=failures)
        batch.seed = mix_seed(keys[0][1], *indices) if keys else 0
        if not payloads:
            batch.decode_seconds = time.perf_counter() - start
            return batch
        # Without a first geometric op, images of different sizes cannot become one batch: they
        # are handed over as they are and the device stage says why.
        batch.ragged = not self.pipeline.accepts_list and len(set(sizes)) > 1
        if not batch.ragged:
            generator = torch.Generator().manual_seed(batch.seed)
            batch.params = self.pipeline.make_params(BatchInfo(len(payloads), torch.device("cpu"), tuple(sizes)), generator)
        if self.augment:
            return self._augment(batch, payloads, start)
        return self._prepare(batch, payloads, start)

    # -- for the device stage: decode what it does not, crop, rebase -------------------------------
    def _prepare(self, batch: HostBatch, payloads: list, start: float) -> HostBatch:
        full_sizes = [tuple(size) for size in batch.sizes.tolist()]  # host lists once, not a tensor read per row
        if batch.ragged:
            regions, limits = [[0, 0, *full] for full in full_sizes], None
        else:
            regions = R.source_regions(self.pipeline, batch.params, batch.sizes).tolist()
            limits = R.reduction_limits(self.pipeline, batch.params, batch.sizes).tolist()
        images, decoded_sizes, covered, failed, files = [], [], [], [], []
        for row, payload in enumerate(payloads):
            full, region = full_sizes[row], regions[row]
            if isinstance(payload, torch.Tensor):
                image = R.crop_decoded(payload, region, full)
            else:
                data, header = payload
                if self.takes is not None and self.takes(header):
                    files.append(data)
                    batch.encoded_offsets.append(batch.encoded_offsets[-1] + len(data))
                    batch.encoded_rows.append(row)
                    batch.encoded_paths.append(batch.paths[row])
                    batch.headers.append(header)
                    region = region if self.region_decode else [0, 0, *full]
                    covered.append(region)
                    decoded_sizes.append(region[2:])  # the device decodes at full scale
                    continue
                image = self._decode_row(batch, row, data, header, limits[row] if limits is not None else None)
                if image is None:
                    failed.append(row)
                    covered.append(region)
                    decoded_sizes.append(region[2:])
                    continue
                image = R.crop_decoded(image, region, full)
            images.append(image)
            batch.decoded_rows.append(row)
            covered.append(region)
            decoded_sizes.append(list(image.shape[-2:]))
        if files:
            batch.encoded = torch.frombuffer(bytearray(b"".join(files)), dtype=torch.uint8)
        images = _one_dtype(images)
        # one buffer for the whole batch: one shared-memory segment, one pin, one copy to the device
        batch.decoded = PackedBatch.from_images(images) if images and images[0].dtype == torch.uint8 else images
        batch.regions = torch.tensor(covered, dtype=torch.int64).reshape(-1, 4)
        if not batch.ragged:
            batch.params = R.rebase(self.pipeline, batch.params, batch.regions, torch.tensor(decoded_sizes), batch.sizes)
        if failed:
            batch.drop(failed)
        batch.decode_seconds = time.perf_counter() - start
        return batch

    # -- the CPU loader: the whole pipeline here ------------------------------------------------------
    def _augment(self, batch: HostBatch, payloads: list, start: float) -> HostBatch:
        params = batch.params
        limits = None if batch.ragged else R.reduction_limits(self.pipeline, params, batch.sizes).tolist()
        decoded, failed = [], []
        for row, payload in enumerate(payloads):
            if isinstance(payload, torch.Tensor):
                decoded.append(payload)
                continue
            data, header = payload
            image = self._decode_row(batch, row, data, header, limits[row] if limits is not None else None)
            if image is None:
                failed.append(row)
            else:
                decoded.append(image)
        decoded = _one_dtype(decoded)
        if failed:
            batch.drop(failed)
            params = batch.params
        batch.decode_seconds = time.perf_counter() - start
        if not decoded or batch.ragged:  # the device stage says why
            batch.finished = decoded
            return batch
        actual = torch.tensor([tuple(image.shape[-2:]) for image in decoded], dtype=torch.int64)
        if not torch.equal(batch.sizes, actual):  # reduced-scale decodes
            whole = torch.cat([torch.zeros_like(batch.sizes), batch.sizes], dim=1)
            params = R.rebase(self.pipeline, params, whole, actual, batch.sizes)
        augmenting = time.perf_counter()
        out, pieces, uniform = None, [], True
        # A few images at a time: every intermediate stays small and in cache, and fresh
        # batch-sized buffers (page faults on each) are avoided.
        step = len(decoded) if self.pipeline.batch_coupled else _WORKER_GROUP  # Kornia: one call per batch, as the stage
        for first in range(0, len(decoded), step):
            rows = slice(first, first + step)
            group = decoded[rows] if self.pipeline.accepts_list else torch.stack(decoded[rows])
            result = self.pipeline.apply(group, {key: value[rows] for key, value in params.items()})
            pieces.append(result)
            uniform = uniform and isinstance(result, torch.Tensor)
            if uniform:
                if out is None:
                    out = shared_batch(len(decoded), result[0], self.options.channels_last)
                uniform = tuple(out.shape[1:]) == tuple(result.shape[1:])
                if uniform:
                    out[rows].copy_(result)
        batch.finished = out if uniform else [image for piece in pieces for image in piece]
        batch.params = {}
        batch.augment_seconds = time.perf_counter() - augmenting
        return batch


def shared_batch(count: int, like: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """An empty ``[count, *like.shape]`` batch, in shared memory inside a worker (as default_collate
    allocates it), channels-last when asked, so the main process gets it without another copy."""
    shape = (count, *like.shape)
    if channels_last and like.dim() == 3:
        channels, height, width = like.shape
        strides = (channels * height * width, 1, width * channels, channels)
    else:
        strides = torch.empty(shape, device="meta").stride()
    if torch.utils.data.get_worker_info() is not None:
        storage = like._typed_storage()._new_shared(like.numel() * count, device=like.device)
        return like.new(storage).as_strided(shape, strides)
    return torch.empty_strided(shape, strides, dtype=like.dtype, device=like.device)


def collate_host_batch(batch: HostBatch) -> HostBatch:
    """The DataLoader's ``collate_fn``: a worker already assembled the batch."""
    return batch
