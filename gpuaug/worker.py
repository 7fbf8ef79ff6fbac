"""The loader's worker side: what runs in ``DataLoader`` worker processes, and what they hand over.

A worker gets all the indices of a batch at once (``__getitems__``), reads every file and its
header, draws the batch's augmentation parameters on a CPU generator seeded from (epoch seed, the
batch's indices), and then, by mode:

* ``"augment"`` (no accelerator): decodes each image (at a reduced JPEG DCT scale when the first
  op downscales anyway), runs the whole pipeline a few images at a time and writes the finished
  batch channels-last into shared memory;
* ``"decode"``: decodes only the region the first geometric op reads (at a reduced scale where
  it may), and hands over those regions with the parameters, for the device stage to augment;
* ``"encoded"``: hands over the bytes of the images the device decoder takes (nvImageCodec or
  nvJPEG) and decodes only the rest (CMYK, PNG, WebP ... whatever that decoder cannot do as PIL
  does).

Everything travels as one :class:`HostBatch`.

Example:
    >>> batch = HostBatch(labels=torch.tensor([3]), paths=["a.jpg"], sizes=torch.tensor([[4, 6]]))
    >>> len(batch), batch.failures
    (1, [])
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from gpuaug import transforms as T
from gpuaug.decode import DEFAULT_MAX_PIXELS, DecodeError, ImageHeader, decode_cpu, read_header
from gpuaug.packed import PackedBatch
from gpuaug.seeding import mix_seed
from gpuaug.sources import DEFAULT_MAX_BYTES, read_bytes

__all__ = ["HostBatch", "WorkerSide", "collate_host_batch", "device_decodes"]

MODES = ("augment", "decode", "encoded")
_WORKER_GROUP = 4  # images augmented at a time in "augment" mode (see WorkerSide._augment)


@dataclass
class HostBatch:
    """One batch as the workers hand it over (pinned by the DataLoader's pin-memory thread on CUDA).

    Rows are the samples that were read; those that failed in the worker are only in ``failures``.

    Attributes:
        labels: int64 ``[n]``.
        paths: ``n`` file paths (``"<item i>"`` for map-style datasets), named in errors.
        sizes: int64 ``[n, 2]``: each full image's (height, width), after any EXIF orientation.
        params: the pipeline's parameters for the ``n`` rows, drawn on the CPU in full-image
            coordinates; None once the worker applied them, or when the batch cannot become one size.
        images: ``"augment"``: the finished ``[n, 3, h, w]`` batch; otherwise the images decoded
            in the worker, one per row of ``decoded_rows`` (a ``PackedBatch`` when uint8).
        decoded_rows: the rows in ``images`` (all rows in ``"augment"`` mode).
        regions: int64 ``[len(decoded_rows), 4]``: the part of its full image each decoded image
            covers (top, left, height, width).
        encoded: the encoded files of the rows the device decodes (``encoded_rows``), one after
            another in one uint8 buffer: a batch of 256 files as 256 tensors cost the main process
            one shared-memory segment each to receive; ``encoded_offsets`` ``[n + 1]`` delimit them.
        headers: each encoded row's header (read once, in the worker).
        failures: ``(path, reason)`` of samples that could not be read or decoded here.
        decode_seconds, augment_seconds: worker time spent.
    """

    labels: torch.Tensor
    paths: list[str]
    sizes: torch.Tensor
    params: T.Params | None = None
    images: torch.Tensor | PackedBatch | list[torch.Tensor] | None = None
    decoded_rows: list[int] = field(default_factory=list)
    regions: torch.Tensor | None = None
    encoded: torch.Tensor | None = None
    encoded_offsets: list[int] = field(default_factory=lambda: [0])
    encoded_rows: list[int] = field(default_factory=list)
    headers: list[ImageHeader] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)
    augmented: bool = False
    decode_seconds: float = 0.0
    augment_seconds: float = 0.0

    def __len__(self) -> int:
        return len(self.paths)

    def encoded_files(self) -> list[torch.Tensor]:
        """Each encoded row's file as a 1-D uint8 view of ``encoded``."""
        bounds = self.encoded_offsets
        return [self.encoded[start:end] for start, end in zip(bounds[:-1], bounds[1:])]

    def pin_memory(self, device: Any = None) -> HostBatch:
        """Called by the DataLoader's pin-memory thread: pin what goes to the device."""
        images = self.images
        if isinstance(images, (torch.Tensor, PackedBatch)):
            images = images.pin_memory()
        elif images:
            images = [image.pin_memory() for image in images]
        return HostBatch(
            **{**self.__dict__, "images": images, "labels": self.labels.pin_memory()}
        )


def device_decodes(header: ImageHeader, decoder: str, exif_orientation: bool) -> bool:
    """Whether the device decoder ``decoder`` gives what PIL's ``convert("RGB")`` gives for this file.

    nvJPEG and nvImageCodec take whole baseline/progressive grey or YCbCr JPEGs; CMYK/YCCK,
    truncated files (the CPU decoder reports them instead of filling in grey), other formats and,
    when EXIF orientation is applied, rotated images are decoded on the CPU.
    """
    if header.format != "jpeg" or header.components not in (1, 3) or not header.complete:
        return False
    if exif_orientation and header.orientation != 1:
        return False
    return not header.progressive if decoder == "nvjpeg" else True


def to_rgb_tensor(item: Any, index: int) -> torch.Tensor:
    """A dataset item (PIL image, [C,H,W] tensor, HWC ndarray) as an RGB ``[3, H, W]`` tensor."""
    if isinstance(item, Image.Image):
        item = item if item.mode == "RGB" else item.convert("RGB")
        return torch.from_numpy(np.asarray(item).copy()).permute(2, 0, 1)
    if isinstance(item, np.ndarray):
        if item.ndim == 2:
            item = item[:, :, None]
        if item.ndim != 3:
            raise TypeError(f"dataset item {index}: expected an HWC image array, got shape {item.shape}")
        item = torch.from_numpy(np.array(item, copy=True)).permute(2, 0, 1)
    if isinstance(item, torch.Tensor):
        if item.ndim == 2:
            item = item.unsqueeze(0)
        if item.ndim != 3 or item.shape[0] not in (1, 3, 4):
            raise TypeError(f"dataset item {index}: expected an image tensor [C, H, W], C in 1, 3, 4, got {tuple(item.shape)}")
        if item.dtype != torch.uint8 and not item.is_floating_point():
            raise TypeError(f"dataset item {index}: expected a uint8 or float image tensor, got {item.dtype}")
        if item.shape[0] == 1:
            item = item.expand(3, -1, -1)
        return item[:3]
    raise TypeError(
        f"dataset item {index}: expected (PIL image | uint8 tensor [C, H, W] | HWC uint8 array, label), got {type(item).__name__}"
    )


def _one_dtype(images: list[torch.Tensor]) -> list[torch.Tensor]:
    """Items of one batch in one dtype, each converted by its own dtype: uint8 128 -> 0.502 beside floats."""
    if len({image.dtype for image in images}) <= 1:
        return images
    return [image.float() / 255 if image.dtype == torch.uint8 else image.float() for image in images]


def _crop(image: torch.Tensor, region: list[int], full: tuple[int, int]) -> torch.Tensor:
    """The part of ``image`` (a full image decoded at any scale) that ``region`` covers at full size.

    Rounds as ``Compose.rebase`` maps a box onto a reduced-scale decode, so cropping here and
    resizing on the device equals resizing the box of the whole decode.
    """
    height, width = image.shape[-2:]
    top, left, box_height, box_width = region
    if (top, left, box_height, box_width) == (0, 0, *full):
        return image
    scale_y, scale_x = height / full[0], width / full[1]
    y0, x0 = math.floor(top * scale_y), math.floor(left * scale_x)
    rows = max(1, min(round(box_height * scale_y), height - y0))
    columns = max(1, min(round(box_width * scale_x), width - x0))
    return image[:, y0 : y0 + rows, x0 : x0 + columns]


class WorkerSide(Dataset):
    """What runs in the DataLoader workers (see the module docstring for the modes).

    Args:
        source: a ``FileList`` (files) or a map-style dataset.
        files: whether ``source`` holds files to read (else items to convert).
        load_item: for map-style datasets, ``index -> (item, label)``.
        mode: ``"augment"``, ``"decode"`` or ``"encoded"``.
        pipeline: the whole pipeline (transform + dtype conversion).
        decoder: the device decoder in ``"encoded"`` mode (``"nvimgcodec"`` or ``"nvjpeg"``).
        exif_orientation, reduced_decode, max_pixels, max_file_bytes: as the loader's arguments.
        target_transform: applied to labels.
        channels_last: the finished batch's layout in ``"augment"`` mode.
    """

    def __init__(
        self,
        source: Any,
        files: bool,
        load_item: Callable[[int], tuple[Any, int]] | None,
        mode: str,
        pipeline: T.Compose,
        *,
        decoder: str = "nvjpeg",
        exif_orientation: bool = False,
        reduced_decode: bool = True,
        target_transform: Callable[[Any], Any] | None = None,
        channels_last: bool = True,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        max_file_bytes: int | None = DEFAULT_MAX_BYTES,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.source, self.files, self.load_item, self.mode = source, files, load_item, mode
        self.pipeline, self.decoder = pipeline, decoder
        self.exif_orientation, self.reduced_decode = exif_orientation, reduced_decode
        self.target_transform, self.channels_last = target_transform, channels_last
        self.max_pixels, self.max_file_bytes = max_pixels, max_file_bytes

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, key: tuple[int, int]) -> HostBatch:
        return self.__getitems__([key])

    def _label(self, label: Any) -> int:
        return int(self.target_transform(label) if self.target_transform is not None else label)

    def _fetch(self, index: int) -> tuple[str, int, tuple[bytes, ImageHeader] | torch.Tensor]:
        """``(path, label, payload)``: the file's bytes and header, or a map-style item as a tensor.

        Raises:
            DecodeError: naming the file when it cannot be read or its header parsed.
        """
        if self.files:
            path, label = self.source.samples[index]
            data = read_bytes(path, max_bytes=self.max_file_bytes)
            return path, self._label(label), (data, read_header(data, path, self.exif_orientation, max_pixels=self.max_pixels))
        item, label = self.load_item(index)
        return f"<item {index}>", self._label(label), to_rgb_tensor(item, index)

    def _label_of(self, index: int) -> int:
        return self._label(self.source.samples[index][1]) if self.files else -1

    def _decode(self, data: bytes, header: ImageHeader, path: str, reduce: int) -> torch.Tensor:
        return decode_cpu(
            data, path, exif_orientation=self.exif_orientation, reduce=reduce, header=header, max_pixels=self.max_pixels
        )

    def _reduce_factor(self, header: ImageHeader, limit: float) -> int:
        if not self.reduced_decode or header.format != "jpeg":
            return 1
        return next((factor for factor in (8, 4, 2) if factor <= limit), 1)

    def __getitems__(self, keys: list[tuple[int, int]]) -> HostBatch:
        """Read (and by mode decode and augment) a whole batch; draws from (epoch seed, the indices)."""
        start = time.perf_counter()
        indices = [index for index, _ in keys]
        labels, paths, failures, payloads, sizes = [], [], [], [], []
        for index in indices:  # read (and for a map-style dataset, load) every sample
            try:
                path, label, payload = self._fetch(index)
            except DecodeError as error:
                failures.append((error.path, error.reason))
                continue
            payloads.append(payload)
            sizes.append(tuple(payload.shape[-2:]) if isinstance(payload, torch.Tensor) else payload[1].oriented_size)
            labels.append(label)
            paths.append(path)
        size_tensor = torch.tensor(sizes, dtype=torch.int64).reshape(-1, 2)
        batch = HostBatch(torch.tensor(labels, dtype=torch.int64), paths, size_tensor, failures=failures)
        if not payloads:
            batch.decode_seconds = time.perf_counter() - start
            return batch
        # Without a first geometric op, images of different sizes cannot become one batch: they
        # are handed over as they are and the loader says why.
        ragged = not self.pipeline.accepts_list and len(set(sizes)) > 1
        if not ragged:
            generator = torch.Generator().manual_seed(mix_seed(keys[0][1], *indices))
            batch.params = self.pipeline._make_params(T.BatchInfo(len(payloads), torch.device("cpu"), tuple(sizes)), generator)
        if self.mode == "augment":
            return self._augment(batch, payloads, start)
        return self._decode_regions(batch, payloads, start)

    # -- "decode" and "encoded": the device stage augments -----------------------------------------
    def _decode_regions(self, batch: HostBatch, payloads: list, start: float) -> HostBatch:
        params = batch.params
        full_sizes = [tuple(size) for size in batch.sizes.tolist()]  # host lists once, not a tensor read per row
        if params is not None:
            regions = self.pipeline.source_regions(params, batch.sizes).tolist()
            limits = self.pipeline.reduction_limit(params, batch.sizes).tolist()
        else:
            regions, limits = [[0, 0, *full] for full in full_sizes], None
        images, rows, kept_regions, failed, files = [], [], [], [], []
        for row, payload in enumerate(payloads):
            full, region = full_sizes[row], regions[row]
            if isinstance(payload, torch.Tensor):
                images.append(_crop(payload, region, full))
            else:
                data, header = payload
                if self.mode == "encoded" and device_decodes(header, self.decoder, self.exif_orientation):
                    files.append(data)
                    batch.encoded_offsets.append(batch.encoded_offsets[-1] + len(data))
                    batch.encoded_rows.append(row)
                    batch.headers.append(header)
                    continue
                reduce = self._reduce_factor(header, limits[row]) if limits is not None else 1
                try:
                    image = self._decode(data, header, batch.paths[row], reduce)
                except DecodeError as error:
                    batch.failures.append((error.path, error.reason))
                    failed.append(row)
                    continue
                images.append(_crop(image, region, full))
            rows.append(row)
            kept_regions.append(region)
        if files:
            batch.encoded = torch.frombuffer(bytearray(b"".join(files)), dtype=torch.uint8)
        images = _one_dtype(images)
        # one buffer for the whole batch: one shared-memory segment, one pin, one copy to the device
        batch.images = PackedBatch.from_images(images) if images and images[0].dtype == torch.uint8 else images
        batch.decoded_rows = rows
        batch.regions = torch.tensor(kept_regions, dtype=torch.int64).reshape(-1, 4)
        if failed:
            _drop_rows(batch, failed)
        batch.decode_seconds = time.perf_counter() - start
        return batch

    # -- "augment": the whole pipeline here ---------------------------------------------------------
    def _augment(self, batch: HostBatch, payloads: list, start: float) -> HostBatch:
        params = batch.params
        limits = self.pipeline.reduction_limit(params, batch.sizes).tolist() if params is not None else None
        decoded, failed = [], []
        for row, payload in enumerate(payloads):
            if isinstance(payload, torch.Tensor):
                decoded.append(payload)
                continue
            data, header = payload
            reduce = self._reduce_factor(header, limits[row]) if limits is not None else 1
            try:
                decoded.append(self._decode(data, header, batch.paths[row], reduce))
            except DecodeError as error:
                batch.failures.append((error.path, error.reason))
                failed.append(row)
        decoded = _one_dtype(decoded)
        if failed:
            _drop_rows(batch, failed)
            params = batch.params
        batch.decode_seconds = time.perf_counter() - start
        batch.decoded_rows = list(range(len(decoded)))
        if not decoded or params is None:  # ragged: the loader says why
            batch.images = decoded
            return batch
        actual = torch.tensor([tuple(image.shape[-2:]) for image in decoded], dtype=torch.int64)
        if not torch.equal(batch.sizes, actual):  # reduced-scale decodes
            whole = torch.cat([torch.zeros_like(batch.sizes), batch.sizes], dim=1)
            params = self.pipeline.rebase(params, whole, actual)
        augmenting = time.perf_counter()
        out, pieces, uniform = None, [], True
        # A few images at a time: every intermediate stays small and in cache, and fresh
        # batch-sized buffers (page faults on each) are avoided: 64 images 224 px at once took
        # 2.0 ms per image on one core, in groups of 4 1.2 ms (2026-11).
        for first in range(0, len(decoded), _WORKER_GROUP):
            rows = slice(first, first + _WORKER_GROUP)
            group = decoded[rows] if self.pipeline.accepts_list else torch.stack(decoded[rows])
            result = self.pipeline.apply(group, {key: value[rows] for key, value in params.items()})
            pieces.append(result)
            uniform = uniform and isinstance(result, torch.Tensor)
            if uniform:
                if out is None:
                    out = shared_batch(len(decoded), result[0], self.channels_last)
                uniform = tuple(out.shape[1:]) == tuple(result.shape[1:])
                if uniform:
                    out[rows].copy_(result)
        batch.images = out if uniform else [image for piece in pieces for image in piece]
        batch.params, batch.augmented = None, uniform
        batch.augment_seconds = time.perf_counter() - augmenting
        return batch


def _drop_rows(batch: HostBatch, rows: list[int]) -> None:
    """Remove failed rows from a batch (labels, paths, sizes, params; decoded/encoded row numbers)."""
    drop = set(rows)
    keep = [row for row in range(len(batch.paths)) if row not in drop]
    renumber = {old: new for new, old in enumerate(keep)}
    index = torch.tensor(keep, dtype=torch.int64)
    batch.labels, batch.sizes = batch.labels[index], batch.sizes[index]
    batch.paths = [batch.paths[row] for row in keep]
    if batch.params is not None:
        batch.params = {key: value[index] for key, value in batch.params.items()}
    batch.decoded_rows = [renumber[row] for row in batch.decoded_rows if row in renumber]
    batch.encoded_rows = [renumber[row] for row in batch.encoded_rows]


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
