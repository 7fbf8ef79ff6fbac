"""GPULoader: a drop-in replacement for ``torch.utils.data.DataLoader`` for image classification.

Worker processes read file bytes; decoding, augmentation, normalisation, dtype and channels-last
conversion happen where they are cheapest:

* **CUDA** (``device="cuda"``): workers read bytes (and decode on the CPU only what nvJPEG cannot:
  PNG, WebP, CMYK or progressive JPEG ...); the DataLoader's pin-memory thread pins them; the main
  process decodes the batch's JPEGs in one nvJPEG call and runs the whole transform on the batch,
  on a side CUDA stream, one batch ahead of the one the model is consuming.
* **CPU** (``device="cpu"``): there is no accelerator, so the cores go to the workers: each
  decodes (at a reduced JPEG DCT scale when the crop is downscaled anyway), crops before it
  converts, stays uint8 through crop/resize/flip and runs colour jitter + normalisation as one
  fused affine pass, image by image (a 224 px image fits in cache: 0.5 ms per image on one core
  against 0.9 ms per image for the same pass over a batch of 64), then stacks the batch
  channels-last in shared memory. The main process only hands batches over.

Randomness is reproducible: every epoch gets a seed from the loader's ``generator`` (peeked, so
the order of samples is the one ``DataLoader`` gives for the same generator); on the CPU each
sample draws from a seed of (epoch seed, index), on CUDA each batch from (epoch seed, batch
number): same generator seed, same batches, whatever the number of workers.

Example:
    >>> import gpuaug as ga
    >>> loader = ga.GPULoader(ga.ImageFolder("train/"), batch_size=128, shuffle=True, num_workers=4,
    ...                       transform=ga.Compose([ga.RandomResizedCrop(224), ga.RandomHorizontalFlip(),
    ...                                             ga.Normalize(ga.IMAGENET_MEAN, ga.IMAGENET_STD)]))
    ...                                         # doctest: +SKIP
    >>> for images, labels in loader: ...   # [128, 3, 224, 224] float32 channels-last, int64 labels  # doctest: +SKIP
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, Sampler, SequentialSampler

from gpuaug import functional as F
from gpuaug import transforms as T
from gpuaug.convert import from_torchvision
from gpuaug.decode import DecodeError, apply_orientation, decode_cpu, decode_jpegs_cuda, read_header
from gpuaug.sources import FileList, is_file_list, read_bytes

__all__ = ["GPULoader", "LoaderStats"]

_IMAGE, _ENCODED, _FAILED = 0, 1, 2  # what a worker sends for one sample


@dataclass
class LoaderStats:
    """What the last (or current) epoch cost. Seconds of work are summed over worker processes.

    Attributes:
        images: images delivered.
        batches: batches delivered.
        skipped: files dropped under ``on_error="skip"``; their paths in ``skipped_paths``.
        wait_seconds: time the main process waited for workers' output.
        decode_seconds: decoding (worker CPU time; on CUDA, nvJPEG time on the GPU).
        augment_seconds: transforms (workers' first op + main process; on CUDA, GPU time).
        epoch_seconds: wall time of the epoch so far.
    """

    images: int = 0
    batches: int = 0
    skipped: int = 0
    skipped_paths: list[str] = field(default_factory=list)
    wait_seconds: float = 0.0
    decode_seconds: float = 0.0
    augment_seconds: float = 0.0
    epoch_seconds: float = 0.0


# ----------------------------------------------------------------------------------------------
# Seeds: one per epoch, derived per sample and per batch
# ----------------------------------------------------------------------------------------------
_MASK64 = (1 << 64) - 1


def _mix(*values: int) -> int:
    """A well-mixed 63-bit seed from integers (splitmix64 rounds)."""
    state = 0x9E3779B97F4A7C15
    for value in values:
        state = (state ^ (int(value) & _MASK64)) & _MASK64
        state = (state + 0x9E3779B97F4A7C15) & _MASK64
        state = ((state ^ (state >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        state = ((state ^ (state >> 27)) * 0x94D049BB133111EB) & _MASK64
        state ^= state >> 31
    return state >> 1


def _peek_seed(generator: torch.Generator | None) -> int:
    """The int64 ``DataLoader`` would draw next from ``generator`` (global RNG if None), not consumed."""
    if generator is None:
        state = torch.get_rng_state()
        value = int(torch.empty((), dtype=torch.int64).random_().item())  # CPU RNG, not a device sync
        torch.set_rng_state(state)
    else:
        state = generator.get_state()
        value = int(torch.empty((), dtype=torch.int64).random_(generator=generator).item())  # CPU RNG
        generator.set_state(state)
    return value


class _SeededBatches(Sampler):
    """Yields each batch of indices as ``[(index, epoch_seed), ...]`` for the workers."""

    def __init__(self, batch_sampler: Sampler) -> None:
        self.batch_sampler = batch_sampler
        self.epoch_seed = 0

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        seed = self.epoch_seed
        for batch in self.batch_sampler:
            yield [(index, seed) for index in batch]

    def __len__(self) -> int:
        return len(self.batch_sampler)


# ----------------------------------------------------------------------------------------------
# Worker side
# ----------------------------------------------------------------------------------------------
def _to_rgb_tensor(item: Any, index: int) -> torch.Tensor:
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


def _first_geometric(transform: T.Compose) -> int | None:
    """Index of the first geometric op if only flips come before it (its input is the decoded image)."""
    for position, step in enumerate(transform.transforms):
        if isinstance(step, (T.RandomResizedCrop, T.Resize, T.CenterCrop)):
            return position
        if not isinstance(step, (T.RandomHorizontalFlip,)):
            return None
    return None


def _reduction_limit(transform: T.Compose, params: T.Params, row: int, height: int, width: int) -> float:
    """How much the first geometric op downscales image ``row`` (>= 1): how much smaller its decode may be."""
    position = _first_geometric(transform)
    step = transform.transforms[position] if position is not None else None
    if isinstance(step, T.RandomResizedCrop):
        _, _, box_height, box_width = params[f"{position}.boxes"][row].tolist()  # CPU tensor in a worker
        return min(box_height / step.size[0], box_width / step.size[1])
    if isinstance(step, T.Resize):
        resized_height, resized_width = F.resize_output_size(height, width, step.size)
        return min(height / resized_height, width / resized_width)
    return 1.0


def _rescale_boxes(transform: T.Compose, params: T.Params, full: torch.Tensor, decoded: torch.Tensor) -> T.Params:
    """Map the first RandomResizedCrop's boxes from full-size images onto reduced-scale decodes.

    ``full`` and ``decoded`` are ``[B, 2]`` image sizes (height, width); rows that were decoded at
    full size keep their boxes.
    """
    position = _first_geometric(transform)
    if position is None or not isinstance(transform.transforms[position], T.RandomResizedCrop):
        return params
    scale = decoded.double() / full.double()
    top, left, height, width = params[f"{position}.boxes"].double().unbind(1)
    new_top, new_left = torch.floor(top * scale[:, 0]), torch.floor(left * scale[:, 1])
    new_height = torch.clamp(torch.minimum(torch.round(height * scale[:, 0]), decoded[:, 0] - new_top), min=1)
    new_width = torch.clamp(torch.minimum(torch.round(width * scale[:, 1]), decoded[:, 1] - new_left), min=1)
    boxes = torch.stack([new_top, new_left, new_height, new_width], dim=1).to(torch.int64)
    return {**params, f"{position}.boxes": boxes}


class _Prebatched:
    """A batch a worker already assembled (``__getitems__``); the collate function passes it on."""

    def __init__(self, batch: tuple) -> None:
        self.batch = batch


class _WorkerSide(Dataset):
    """What runs in the DataLoader workers: read bytes; on the CPU path also decode and augment.

    Modes: ``"encoded"`` (CUDA + nvJPEG: JPEG bytes as they are, other formats decoded),
    ``"decoded"`` (decode only) and ``"augment"`` (decode, then the whole transform and the dtype
    conversion on the worker's batch; DataLoader hands a worker all indices of a batch at once
    through ``__getitems__``).
    """

    def __init__(
        self,
        source: Any,
        files: bool,
        load_item: Callable[[int], tuple[Any, int]] | None,
        mode: str,
        transform: T.Compose | None,
        exif_orientation: bool,
        reduced_decode: bool,
        target_transform: Callable[[Any], Any] | None,
        channels_last: bool,
    ) -> None:
        self.source, self.files, self.load_item, self.mode = source, files, load_item, mode
        self.transform, self.exif_orientation, self.reduced_decode = transform, exif_orientation, reduced_decode
        self.target_transform, self.channels_last = target_transform, channels_last

    def __len__(self) -> int:
        return len(self.source)

    def _fetch(self, index: int) -> tuple[str, int, tuple[bytes, Any] | torch.Tensor]:
        """``(path, label, payload)``: the file's bytes and header, or a map-style item as a tensor.

        Raises:
            DecodeError: naming the file when it cannot be read or its header parsed.
        """
        if self.files:
            path, label = self.source.samples[index]
            data = read_bytes(path)
            return path, self._label(label), (data, read_header(data, path, self.exif_orientation))
        item, label = self.load_item(index)
        return f"<item {index}>", self._label(label), _to_rgb_tensor(item, index)

    def _label_of(self, index: int) -> int:
        return self._label(self.source.samples[index][1]) if self.files else -1

    def __getitem__(self, key: tuple[int, int]) -> tuple:
        """One sample, not augmented: ``(status, tensor, label, path, extra, seconds, 0)``."""
        index, _ = key
        start = time.perf_counter()
        try:
            path, label, payload = self._fetch(index)
            if isinstance(payload, torch.Tensor):
                return (_IMAGE, payload, label, path, 1, time.perf_counter() - start, 0.0)
            data, header = payload
            if self.mode == "encoded" and header.nvjpeg_ok:
                encoded = torch.frombuffer(bytearray(data), dtype=torch.uint8)
                return (_ENCODED, encoded, label, path, header.orientation, time.perf_counter() - start, 0.0)
            image = decode_cpu(data, path, exif_orientation=self.exif_orientation, header=header)
            return (_IMAGE, image, label, path, 1, time.perf_counter() - start, 0.0)
        except DecodeError as error:
            return (_FAILED, None, self._label_of(index), error.path, error.reason, time.perf_counter() - start, 0.0)

    def __getitems__(self, keys: list[tuple[int, int]]) -> list[tuple] | _Prebatched:
        if self.mode != "augment":
            return [self[key] for key in keys]
        return _Prebatched(self._augment_batch(keys))

    def _label(self, label: Any) -> int:
        return int(self.target_transform(label) if self.target_transform is not None else label)

    def _augment_batch(self, keys: list[tuple[int, int]]) -> tuple:
        """Read, decode and augment a whole batch; the draws come from (epoch seed, the batch's indices)."""
        start = time.perf_counter()
        indices = [index for index, _ in keys]
        status, labels, paths, extra = [], [], [], []
        pending: list[tuple[bytes, Any] | torch.Tensor] = []
        sizes: list[tuple[int, int]] = []
        for index in indices:  # read (and for a map-style dataset, load) every sample
            try:
                path, label, payload = self._fetch(index)
            except DecodeError as error:
                status.append(_FAILED)
                extra.append(error.reason)
                labels.append(self._label_of(index))
                paths.append(error.path)
                continue
            pending.append(payload)
            sizes.append(tuple(payload.shape[-2:]) if isinstance(payload, torch.Tensor) else payload[1].oriented_size)
            status.append(_IMAGE)
            extra.append(1)
            labels.append(label)
            paths.append(path)
        if not pending:
            return status, [], [], torch.tensor(labels, dtype=torch.int64), paths, extra, time.perf_counter() - start, 0.0
        # Without a first geometric op, images of different sizes cannot become one batch: they are
        # decoded as they are and the main process says why.
        ragged = not self.transform.accepts_list and len(set(sizes)) > 1
        generator = torch.Generator().manual_seed(_mix(keys[0][1], *indices))
        info = T.BatchInfo(len(pending), torch.device("cpu"), tuple(sizes))
        params = {} if ragged else self.transform._make_params(info, generator)
        decoded, kept = [], []
        ok_rows = [row for row, code in enumerate(status) if code == _IMAGE]
        for position, (row, entry) in enumerate(zip(ok_rows, pending)):
            if isinstance(entry, torch.Tensor):
                decoded.append(entry)
                kept.append(position)
                continue
            data, header = entry
            reduce = 1
            if self.reduced_decode and header.format == "jpeg" and not ragged:
                limit = _reduction_limit(self.transform, params, position, *sizes[position])
                reduce = next((factor for factor in (8, 4, 2) if factor <= limit), 1)
            try:
                image = decode_cpu(data, paths[row], exif_orientation=self.exif_orientation, reduce=reduce, header=header)
            except DecodeError as error:
                status[row], extra[row] = _FAILED, error.reason
                continue
            decoded.append(image)
            kept.append(position)
        decode_seconds = time.perf_counter() - start
        if not decoded or ragged:
            return status, decoded, [], torch.tensor(labels, dtype=torch.int64), paths, extra, decode_seconds, 0.0
        if len(kept) < len(pending):
            rows = torch.tensor(kept)
            params = {key: value[rows] for key, value in params.items()}
        full = torch.tensor([sizes[position] for position in kept])
        actual = torch.tensor([tuple(image.shape[-2:]) for image in decoded])
        if not torch.equal(full, actual):
            params = _rescale_boxes(self.transform, params, full, actual)
        augmenting = time.perf_counter()
        batch, pieces, uniform = None, [], True
        # A few images at a time: every intermediate stays small and in cache, and fresh
        # batch-sized buffers (page faults on each) are avoided: 64 images 224 px at once took
        # 2.0 ms per image on one core, in groups of 4 1.2 ms (2026-11).
        for start_row in range(0, len(decoded), _WORKER_GROUP):
            rows = slice(start_row, start_row + _WORKER_GROUP)
            group = decoded[rows] if self.transform.accepts_list else torch.stack(decoded[rows])
            result = self.transform.apply(group, {key: value[rows] for key, value in params.items()})
            pieces.append(result)
            uniform = uniform and isinstance(result, torch.Tensor)
            if uniform:
                if batch is None:
                    batch = _shared_batch(len(decoded), result[0], self.channels_last)
                uniform = tuple(batch.shape[1:]) == tuple(result.shape[1:])
                if uniform:
                    batch[rows].copy_(result)
        if not uniform:  # sizes differ (e.g. a lone shorter-side Resize): the main process says why
            batch = [image for piece in pieces for image in piece]
        labels_tensor = torch.tensor(labels, dtype=torch.int64)
        return status, batch, [], labels_tensor, paths, extra, decode_seconds, time.perf_counter() - augmenting


_WORKER_GROUP = 4


def _shared_batch(count: int, like: torch.Tensor, channels_last: bool) -> torch.Tensor:
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


def _stack(images: list[torch.Tensor], channels_last: bool) -> torch.Tensor:
    """Stack equal-size images into a ``_shared_batch``."""
    out = _shared_batch(len(images), images[0], channels_last)
    for slot, image in zip(out, images):
        slot.copy_(image)
    return out


class _Collate:
    """One batch from the workers: decoded images stacked when they share a size."""

    def __init__(self, channels_last: bool) -> None:
        self.channels_last = channels_last

    def __call__(self, samples: list[tuple] | _Prebatched) -> tuple:
        if isinstance(samples, _Prebatched):
            return samples.batch
        status = [sample[0] for sample in samples]
        images = [sample[1] for sample in samples if sample[0] == _IMAGE]
        if images and len({tuple(image.shape) for image in images}) == 1:
            images = _stack(images, self.channels_last)
        encoded = [sample[1] for sample in samples if sample[0] == _ENCODED]
        labels = torch.tensor([sample[2] for sample in samples], dtype=torch.int64)
        paths = [sample[3] for sample in samples]
        extra = [sample[4] for sample in samples]  # orientation, or the failure reason
        decode_seconds = sum(sample[5] for sample in samples)
        augment_seconds = sum(sample[6] for sample in samples)
        return status, images, encoded, labels, paths, extra, decode_seconds, augment_seconds


# ----------------------------------------------------------------------------------------------
# The loader
# ----------------------------------------------------------------------------------------------
def resolve_device(device: str | torch.device | None) -> torch.device:
    """``device``, or CUDA when available and the CPU otherwise; a CUDA device without CUDA is an error."""
    resolved = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={resolved} but CUDA is not available")
    return resolved


def check_loader_arguments(batch_size: Any, on_error: Any, dtype: Any) -> None:
    """The arguments every gpuaug loader shares, checked with errors naming them."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    if not isinstance(dtype, torch.dtype) or not (dtype.is_floating_point or dtype == torch.uint8):
        raise ValueError(f"dtype must be a floating torch dtype or torch.uint8, got {dtype!r}")


def as_compose(transform: Any) -> T.Compose | None:
    """A gpuaug ``Compose`` from a gpuaug transform or a torchvision pipeline (converted)."""
    if transform is None:
        return None
    if not isinstance(transform, T.Transform):
        try:
            transform = from_torchvision(transform)
        except ValueError as error:
            raise ValueError(
                f"the transform cannot run on the device ({error}). Pass transform=ga.Compose([...]) "
                "built from gpuaug transforms, or drop the unsupported ones from the dataset's transform"
            ) from None
    return transform if isinstance(transform, T.Compose) else T.Compose([transform])


class GPULoader:
    """Batches of augmented images on ``device``: ``DataLoader(...)`` becomes ``GPULoader(...)``.

    Args:
        dataset: ``ga.ImageFolder``; a torchvision ``ImageFolder``/``DatasetFolder`` (its files are
            read as bytes and its ``transform`` converted with ``ga.from_torchvision``); a list of
            ``(path, label)``; or any map-style dataset yielding ``(PIL image | uint8 tensor
            [C, H, W] | HWC uint8 array, label)``.
        batch_size, shuffle, sampler, num_workers, drop_last, generator, persistent_workers,
            prefetch_factor: as ``torch.utils.data.DataLoader``.
        transform: a gpuaug transform (or a torchvision one, converted). Its first geometric op
            (RandomResizedCrop, Resize + CenterCrop, CenterCrop) makes the batch one size;
            defaults to the torchvision dataset's converted ``transform``.
        device: where batches live (default: CUDA if available, else CPU).
        dtype: image dtype; floating dtypes are scaled to [0, 1] before any Normalize.
        channels_last: return images in ``torch.channels_last`` memory format.
        decode: ``"auto"`` (nvJPEG on CUDA, CPU otherwise), ``"cpu"`` or ``"nvjpeg"``.
        on_error: ``"raise"`` a ``DecodeError`` naming the file, or ``"skip"`` it (counted in
            ``stats``, one warning per epoch listing the paths).
        exif_orientation: apply EXIF orientation (default False, like torchvision's ImageFolder).
        reduced_decode: on the CPU path, decode JPEGs at 1/2, 1/4 or 1/8 scale when the first op
            downscales at least that much anyway (libjpeg DCT scaling; results differ slightly
            from a full decode).

    Yields:
        ``(images, labels)``: images ``[B, 3, h, w]`` in ``dtype`` on ``device``, labels int64 ``[B]``.
    """

    def __init__(
        self,
        dataset: Any,
        batch_size: int = 1,
        shuffle: bool = False,
        sampler: Sampler | None = None,
        num_workers: int = 0,
        drop_last: bool = False,
        generator: torch.Generator | None = None,
        persistent_workers: bool = False,
        prefetch_factor: int | None = 2,
        *,
        transform: Any = None,
        device: str | torch.device | None = None,
        dtype: torch.dtype = torch.float32,
        channels_last: bool = True,
        decode: str = "auto",
        on_error: str = "raise",
        exif_orientation: bool = False,
        reduced_decode: bool = True,
    ) -> None:
        check_loader_arguments(batch_size, on_error, dtype)
        if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
            raise ValueError(f"num_workers must be an int >= 0, got {num_workers!r}")
        if sampler is not None and shuffle:
            raise ValueError("sampler option is mutually exclusive with shuffle")
        if decode not in ("auto", "cpu", "nvjpeg"):
            raise ValueError(f"decode must be 'auto', 'cpu' or 'nvjpeg', got {decode!r}")
        self.device = resolve_device(device)
        if decode == "nvjpeg" and self.device.type != "cuda":
            raise ValueError("decode='nvjpeg' needs a CUDA device; use decode='cpu' or 'auto'")

        self.dataset = dataset
        self.batch_size = batch_size
        self.drop_last = drop_last
        self.num_workers = num_workers
        self.generator = generator
        self.persistent_workers = persistent_workers
        self.dtype, self.channels_last, self.on_error = dtype, channels_last, on_error
        self.stats = LoaderStats()
        self._epoch: int | None = None
        self._iterations = 0

        source, files, load_item, dataset_transform, target_transform = self._resolve(dataset)
        transform = as_compose(transform if transform is not None else dataset_transform)
        self.transform: T.Compose | None = transform

        finish = [T.ToDtype(dtype)] if dtype.is_floating_point else []
        self._pipeline = T.Compose(
            (transform.transforms if transform else []) + finish, fuse=transform.fuse if transform else True
        )
        if self.device.type == "cuda":
            mode = "decoded" if decode == "cpu" or not files else "encoded"
        else:
            mode = "augment"  # no accelerator: the whole pipeline runs in the workers, image by image
        self._mode = mode

        self.sampler = (
            sampler
            if sampler is not None
            else (RandomSampler(source, generator=generator) if shuffle else SequentialSampler(source))
        )
        self.batch_sampler = BatchSampler(self.sampler, batch_size, drop_last)
        self._seeded = _SeededBatches(self.batch_sampler)
        worker_side = _WorkerSide(
            source,
            files,
            load_item,
            mode,
            self._pipeline,
            exif_orientation,
            reduced_decode,
            target_transform,
            channels_last and mode == "augment",
        )
        self._host_loader = DataLoader(
            worker_side,
            batch_sampler=self._seeded,
            num_workers=num_workers,
            collate_fn=_Collate(channels_last and mode == "augment"),
            pin_memory=self.device.type == "cuda",
            generator=generator,
            persistent_workers=persistent_workers and num_workers > 0,
            prefetch_factor=prefetch_factor if num_workers > 0 else None,
        )
        self._stream = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None

    # -- dataset kinds ---------------------------------------------------------------------------
    @staticmethod
    def _resolve(dataset: Any) -> tuple[Any, bool, Callable | None, Any, Callable | None]:
        """``(source, reads_files, load_item, dataset_transform, target_transform)``."""
        from torchvision.datasets import DatasetFolder
        from torchvision.datasets.folder import default_loader, pil_loader

        if isinstance(dataset, FileList):
            return dataset, True, None, None, None
        if isinstance(dataset, DatasetFolder):
            files = FileList(dataset.samples)
            if dataset.loader in (default_loader, pil_loader):
                return files, True, None, dataset.transform, dataset.target_transform

            def load_item(index: int, dataset=dataset) -> tuple[Any, int]:
                path, label = dataset.samples[index]
                return dataset.loader(path), label

            return files, False, load_item, dataset.transform, dataset.target_transform
        if is_file_list(dataset):
            return FileList(dataset), True, None, None, None
        if not (hasattr(dataset, "__getitem__") and hasattr(dataset, "__len__")):
            raise TypeError(
                f"dataset must be a ga.ImageFolder, a torchvision ImageFolder, a list of (path, label) or a "
                f"map-style dataset; got {type(dataset).__name__}"
            )
        return dataset, False, dataset.__getitem__, None, None

    # -- DataLoader semantics --------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.batch_sampler)

    def set_epoch(self, epoch: int) -> None:
        """Seed the epoch's draws by ``epoch`` and pass it on to the sampler (``DistributedSampler``)."""
        self._epoch = int(epoch)
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        epoch_key = self._epoch if self._epoch is not None else self._iterations
        self._iterations += 1
        epoch_seed = _mix(_peek_seed(self.generator), epoch_key)
        self._seeded.epoch_seed = epoch_seed
        self.stats = LoaderStats()
        started = time.perf_counter()
        if self.device.type == "cuda":
            batches = self._iterate_cuda(epoch_seed)
        else:
            batches = self._iterate_cpu(epoch_seed)
        for batch in batches:
            self.stats.epoch_seconds = time.perf_counter() - started
            yield batch
        self.stats.epoch_seconds = time.perf_counter() - started
        if self.stats.skipped:
            shown = ", ".join(self.stats.skipped_paths[:20])
            more = f" and {self.stats.skipped - 20} more" if self.stats.skipped > 20 else ""
            warnings.warn(f"GPULoader skipped {self.stats.skipped} file(s) it could not decode: {shown}{more}", stacklevel=2)

    def _host_batches(self) -> Iterator[tuple]:
        iterator = iter(self._host_loader)
        while True:
            waited = time.perf_counter()
            try:
                host = next(iterator)
            except StopIteration:
                return
            self.stats.wait_seconds += time.perf_counter() - waited
            self.stats.decode_seconds += host[6]
            self.stats.augment_seconds += host[7]
            yield host

    def _skip(self, path: str, reason: str) -> None:
        if self.on_error == "raise":
            raise DecodeError(path, reason)
        self.stats.skipped += 1
        self.stats.skipped_paths.append(path)

    def _failures(self, status: list[int], paths: list[str], extra: list[Any]) -> list[bool]:
        """Raise or count the failed samples; the keep-mask of the rest."""
        for code, path, reason in zip(status, paths, extra):
            if code == _FAILED:
                self._skip(path, reason)
        return [code != _FAILED for code in status]

    def _finish(self, images: torch.Tensor | list[torch.Tensor], generator: torch.Generator | None) -> torch.Tensor:
        """One batch: the pipeline (unless the workers ran it: ``generator`` None), dtype and layout."""
        pipeline = self._pipeline if generator is not None else None
        if isinstance(images, list) and not (pipeline is not None and pipeline.accepts_list):
            if len({tuple(image.shape) for image in images}) > 1:
                raise ValueError(
                    "images in a batch have different sizes; pass transform= whose first op is RandomResizedCrop, "
                    "Resize + CenterCrop or CenterCrop so that every image gets one size"
                )
            images = torch.stack(images)
        out = pipeline(images, generator=generator) if pipeline is not None else images
        if self.dtype == torch.uint8 and out.dtype != torch.uint8:
            raise ValueError("dtype=torch.uint8 but the transform produces floats (it normalises); use a float dtype")
        if self.channels_last:
            out = out.contiguous(memory_format=torch.channels_last)
        elif not out.is_contiguous():
            out = out.contiguous()
        return out

    # -- CPU ---------------------------------------------------------------------------------------
    def _iterate_cpu(self, epoch_seed: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for status, images, _, labels, paths, extra, _, _ in self._host_batches():
            keep = self._failures(status, paths, extra)
            if not any(keep):
                continue
            started = time.perf_counter()
            out = self._finish(images, None)  # the workers ran the pipeline
            self.stats.augment_seconds += time.perf_counter() - started
            labels = labels[torch.tensor(keep)] if not all(keep) else labels
            self.stats.images += len(labels)
            self.stats.batches += 1
            yield out, labels

    # -- CUDA --------------------------------------------------------------------------------------
    def _iterate_cuda(self, epoch_seed: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        events: list[tuple[torch.cuda.Event, torch.cuda.Event, torch.cuda.Event]] = []
        pending = None
        for number, host in enumerate(self._host_batches()):
            ready = self._launch_cuda(host, _mix(epoch_seed, number, 1), events)
            if ready is None:
                continue
            if pending is not None:
                yield self._hand_over(pending)
            pending = ready
        if pending is not None:
            yield self._hand_over(pending)
        for start, decoded, augmented in events:  # the epoch is over: reading the timers costs nothing
            augmented.synchronize()
            self.stats.decode_seconds += start.elapsed_time(decoded) / 1000
            self.stats.augment_seconds += decoded.elapsed_time(augmented) / 1000

    def _launch_cuda(self, host: tuple, seed: int, events: list) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Enqueue decode + transform of one host batch on the side stream (no host sync)."""
        status, images, encoded, labels, paths, extra, _, _ = host
        keep = self._failures(status, paths, extra)
        timers = tuple(torch.cuda.Event(enable_timing=True) for _ in range(3))
        with torch.cuda.stream(self._stream):
            timers[0].record()
            decoded = iter(images if isinstance(images, list) else images.unbind(0))
            encoded_paths = [path for code, path in zip(status, paths) if code == _ENCODED]
            nvjpeg = iter(decode_jpegs_cuda(list(encoded), encoded_paths, self.device) if encoded else [])
            raw = iter(encoded)
            batch: list[torch.Tensor] = []
            for position, (code, path, orientation) in enumerate(zip(status, paths, extra)):  # assembles the ragged list
                if code == _IMAGE:
                    batch.append(next(decoded).to(self.device, non_blocking=True))
                elif code == _ENCODED:
                    image, data = next(nvjpeg), next(raw)
                    if isinstance(image, DecodeError):  # nvJPEG refused it: the CPU decodes it or says why
                        try:
                            image = decode_cpu(bytes(data.numpy()), path).to(self.device)
                        except DecodeError as error:
                            self._skip(path, error.reason)
                            keep[position] = False
                            continue
                    batch.append(apply_orientation(image, orientation))
            timers[1].record()
            if not batch:
                return None
            if not all(keep):
                labels = labels[torch.tensor(keep)]
            out = self._finish(batch, torch.Generator(self.device).manual_seed(seed))
            labels = labels.to(self.device, non_blocking=True)
            timers[2].record()
        events.append(timers)
        return out, labels

    def _hand_over(self, ready: tuple[torch.Tensor, torch.Tensor] | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Make the consumer's stream wait for the side stream and keep the memory alive for it."""
        images, labels = ready
        consumer = torch.cuda.current_stream(self.device)
        consumer.wait_stream(self._stream)
        images.record_stream(consumer)
        labels.record_stream(consumer)
        self.stats.images += len(labels)
        self.stats.batches += 1
        return images, labels

    def __repr__(self) -> str:
        return (
            f"GPULoader(batch_size={self.batch_size}, batches={len(self)}, device={self.device}, dtype={self.dtype}, "
            f"workers={self.num_workers}, mode={self._mode}, transform={self.transform!r})"
        )
