"""GPULoader: a drop-in replacement for ``torch.utils.data.DataLoader`` for image classification.

Worker processes read file bytes; decoding, augmentation, normalisation, dtype and channels-last
conversion happen where they are cheapest:

* **CUDA** (``device="cuda"``): workers read bytes and headers and draw each batch's parameters;
  a producer thread (``gpuaug.loader.device_stage``) decodes the batch on the GPU in one call
  (torchvision's batched nvJPEG by default, fastest in the GPU suite's runs, or nvImageCodec
  with ``decode="nvimgcodec"``), runs the pipeline on its own stream and hands each batch over
  with its own CUDA event. The training thread only waits on that event. Files the GPU decoder
  cannot decode as PIL does (CMYK, PNG, WebP ...) are decoded by the workers.
* **CPU** (``device="cpu"``): there is no accelerator, so the cores go to the workers: each
  decodes (at a reduced JPEG DCT scale when the crop is downscaled anyway), stays uint8 through
  crop/resize/flip and runs colour jitter + normalisation as one fused pass, a few images at a
  time, then writes the batch channels-last into shared memory. ``augment_in="device"`` runs the
  same device stage as on CUDA instead (in its thread, on CPU tensors).

Randomness is reproducible: every epoch draws one seed from the loader's ``generator`` (as a
``DataLoader`` iterator draws its base seed), and every batch's parameters come from (that seed,
the batch's indices) on a CPU generator: same generator seed, same batches, whatever the thread
timing, ``num_workers``, ``persistent_workers`` or the decoder (up to the decoders' own
differences of a few levels).

Example:
    >>> import gpuaug as ga
    >>> loader = ga.GPULoader(ga.ImageFolder("train/"), batch_size=128, shuffle=True, num_workers=4,
    ...                       transform=ga.Compose([ga.RandomResizedCrop(224), ga.RandomHorizontalFlip(),
    ...                                             ga.Normalize(ga.IMAGENET_MEAN, ga.IMAGENET_STD)]))
    ...                                         # doctest: +SKIP
    >>> for images, labels in loader: ...   # [128, 3, 224, 224] float32 channels-last, int64 labels  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import inspect
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, Sampler, SequentialSampler

from gpuaug import transforms as T
from gpuaug.interop.kornia import from_kornia, is_kornia
from gpuaug.interop.torchvision import from_torchvision
from gpuaug.io.decode import DEFAULT_MAX_PIXELS
from gpuaug.io.decoders import check_decode, choose_decoder
from gpuaug.io.sources import DEFAULT_MAX_BYTES, FileList, is_file_list
from gpuaug.loader.device_stage import DeviceStage, Failures, StageOptions
from gpuaug.loader.health import HostBatches, torch_says_worker_died, unregister_sigchld, worker_exit_error
from gpuaug.loader.producer import Producer, hand_over
from gpuaug.loader.resume import check_state, epoch_state
from gpuaug.loader.samplers import SkipBatches, check_equal_steps
from gpuaug.loader.seeding import SeededBatches, draw_epoch_seed, mix_seed
from gpuaug.loader.worker import WorkerOptions, WorkerSide, collate_host_batch

__all__ = ["GPULoader", "LoaderStats"]


@dataclass
class LoaderStats:
    """What the last (or current) epoch cost. Seconds of work are summed over worker processes.

    Attributes:
        images: images delivered.
        batches: batches delivered.
        skipped: files dropped under ``on_error="skip"``; their paths in ``skipped_paths``.
        wait_seconds: time the training thread waited for a batch.
        decode_seconds: decoding: the workers' time (summed over processes) plus the device stage's
            (GPU time on CUDA, from events; wall time on the CPU).
        augment_seconds: transforms, counted the same way.
        producer_seconds: host (CPU) time the producer thread spent on the device stage (launching
            decode and kernels on CUDA); ``producer_ms_per_batch`` per batch.
        device_seconds: the device stage's own decode + augment time (GPU time on CUDA);
            ``device_ms_per_batch`` per batch.
        epoch_seconds: wall time of the epoch so far.
        decoder: what decoded this epoch's images on the device (``"nvimgcodec"``, ``"nvjpeg"``)
            or ``"cpu"`` (the workers).
    """

    images: int = 0
    batches: int = 0
    skipped: int = 0
    skipped_paths: list[str] = field(default_factory=list)
    wait_seconds: float = 0.0
    decode_seconds: float = 0.0
    augment_seconds: float = 0.0
    producer_seconds: float = 0.0
    device_seconds: float = 0.0
    epoch_seconds: float = 0.0
    decoder: str = "cpu"

    @property
    def producer_ms_per_batch(self) -> float:
        return 1000 * self.producer_seconds / max(1, self.batches)

    @property
    def device_ms_per_batch(self) -> float:
        return 1000 * self.device_seconds / max(1, self.batches)


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``device``, or CUDA when available and the CPU otherwise; a CUDA device without CUDA is an error."""
    resolved = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={resolved} but CUDA is not available")
    return resolved


def check_loader_arguments(batch_size: Any, on_error: Any, dtype: Any, **limits: Any) -> None:
    """The arguments every gpuaug loader shares, checked with errors naming them (``limits``: positive ints or None)."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    if not isinstance(dtype, torch.dtype) or not (dtype.is_floating_point or dtype == torch.uint8):
        raise ValueError(f"dtype must be a floating torch dtype or torch.uint8, got {dtype!r}")
    for name, value in limits.items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"{name} must be a positive int or None, got {value!r}")


@dataclass(frozen=True)
class ResolvedDataset:
    """What the loader reads from a dataset.

    Attributes:
        source: what the workers index: a ``FileList`` (files) or the map-style dataset itself.
        files: whether the workers read files (bytes and headers) rather than load items.
        load_item: for items, ``index -> (item, label)``.
        transform, target_transform: the dataset's own (a torchvision ``DatasetFolder``'s), if any.
    """

    source: Any
    files: bool
    load_item: Callable[[int], tuple[Any, Any]] | None = None
    transform: Any = None
    target_transform: Callable[[Any], Any] | None = None


def resolve_dataset(dataset: Any) -> ResolvedDataset:
    """How the loader reads ``dataset`` (a file list, an ImageFolder, a torchvision ``DatasetFolder``, any map-style dataset).

    Example:
        >>> resolve_dataset([("a.jpg", 0)]).files
        True
    """
    from torchvision.datasets import DatasetFolder
    from torchvision.datasets.folder import default_loader, pil_loader

    if isinstance(dataset, FileList):
        return ResolvedDataset(dataset, True)
    if isinstance(dataset, DatasetFolder):
        files = FileList(dataset.samples)
        if dataset.loader in (default_loader, pil_loader):
            return ResolvedDataset(files, True, None, dataset.transform, dataset.target_transform)

        def load_item(index: int, dataset=dataset) -> tuple[Any, int]:
            path, label = dataset.samples[index]
            return dataset.loader(path), label

        return ResolvedDataset(files, False, load_item, dataset.transform, dataset.target_transform)
    if is_file_list(dataset):
        return ResolvedDataset(FileList(dataset), True)
    if not (hasattr(dataset, "__getitem__") and hasattr(dataset, "__len__")):
        raise TypeError(
            f"dataset must be a ga.ImageFolder, a torchvision ImageFolder, a list of (path, label) or a "
            f"map-style dataset; got {type(dataset).__name__}"
        )
    return ResolvedDataset(dataset, False, dataset.__getitem__)


def as_compose(transform: Any) -> T.Compose | None:
    """A gpuaug ``Compose`` from a gpuaug transform, a Kornia pipeline or a torchvision pipeline (converted)."""
    if transform is None:
        return None
    if is_kornia(transform):
        return from_kornia(transform)
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

    Takes ``DataLoader``'s whole signature. ``collate_fn`` cannot apply (the loader assembles
    batches itself, on the device) and raises a ``ValueError`` saying so; the rest behave as in
    ``DataLoader``.

    Args:
        dataset: ``ga.ImageFolder``; a torchvision ``ImageFolder``/``DatasetFolder`` (its files are
            read as bytes and its ``transform`` converted with ``ga.from_torchvision``); a list of
            ``(path, label)``; or any map-style dataset yielding ``(PIL image | uint8 or float
            tensor [C, H, W] | HWC uint8 array, label)``.
        batch_size, shuffle, sampler, batch_sampler, num_workers, pin_memory, drop_last, timeout,
            worker_init_fn, multiprocessing_context, generator, prefetch_factor,
            persistent_workers, pin_memory_device, in_order: as ``torch.utils.data.DataLoader``
            (``prefetch_factor`` also sets how many finished batches the producer thread keeps
            ready; ``pin_memory`` pins CPU batches when CUDA is available).
        transform: a gpuaug transform, a torchvision pipeline (converted) or a Kornia pipeline
            whose first op crops or resizes. Its first geometric op (RandomResizedCrop, Resize,
            CenterCrop) makes the batch one size; defaults to the torchvision dataset's
            converted ``transform``.
        device: where batches live (default: CUDA if available, else CPU).
        dtype: image dtype; floating dtypes are scaled to [0, 1] before any Normalize.
        channels_last: return images in ``torch.channels_last`` memory format.
        decode: ``"auto"`` (CUDA: torchvision's nvJPEG, fastest in the GPU suite's runs; CPU:
            the workers),
            ``"cpu"`` (the workers decode, only the crop box, at a reduced DCT scale where
            allowed), ``"nvimgcodec"`` (on the CPU device: its CPU backend) or ``"nvjpeg"``.
        augment_in: ``"auto"`` (the workers on the CPU device, the device stage on CUDA),
            ``"workers"`` or ``"device"``.
        on_error: ``"raise"`` a ``DecodeError`` naming the file, or ``"skip"`` it (counted in
            ``stats``, one warning per epoch listing the paths).
        exif_orientation: apply EXIF orientation (default False, like torchvision's ImageFolder).
        reduced_decode: when the workers decode, decode JPEGs at 1/2, 1/4 or 1/8 scale when the
            first op downscales at least that much anyway (libjpeg DCT scaling; results differ
            slightly from a full decode).
        max_image_pixels: images with more pixels are refused with a ``DecodeError`` (read from
            the header, before decoding); raise it for very large images. None: PIL's bomb limit
            (``gpuaug.io.decode.DEFAULT_MAX_PIXELS``).
        max_file_bytes: files larger than this are refused with a ``DecodeError``. None: 1 GiB
            (``gpuaug.io.sources.DEFAULT_MAX_BYTES``).
        batch_transform: ``batch_transform(images, labels, generator=...) -> (images, targets)`` run on
            each finished batch on the producer thread (``ga.RandomMix``, ``ga.MixUp``, ``ga.CutMix``),
            with a generator seeded from the batch's own seed: replayable like every other draw.

    Yields:
        ``(images, labels)``: images ``[B, 3, h, w]`` in ``dtype`` on ``device``, labels int64 ``[B]``
        (with a ``batch_transform``: what it returns, e.g. soft targets ``[B, num_classes]``).
    """

    def __init__(
        self,
        dataset: Any,
        batch_size: int | None = 1,
        shuffle: bool | None = None,
        sampler: Sampler | None = None,
        batch_sampler: Sampler | None = None,
        num_workers: int = 0,
        collate_fn: Callable | None = None,
        pin_memory: bool = False,
        drop_last: bool = False,
        timeout: float = 0,
        worker_init_fn: Callable[[int], None] | None = None,
        multiprocessing_context: Any = None,
        generator: torch.Generator | None = None,
        *,
        prefetch_factor: int | None = None,
        persistent_workers: bool = False,
        pin_memory_device: str = "",
        in_order: bool = True,
        transform: Any = None,
        device: str | torch.device | None = None,
        dtype: torch.dtype = torch.float32,
        channels_last: bool = True,
        decode: str = "auto",
        augment_in: str = "auto",
        on_error: str = "raise",
        exif_orientation: bool = False,
        reduced_decode: bool = True,
        max_image_pixels: int | None = None,
        max_file_bytes: int | None = None,
        batch_transform: Callable[..., tuple[torch.Tensor, torch.Tensor]] | None = None,
    ) -> None:
        if batch_transform is not None and not callable(batch_transform):
            raise ValueError(f"batch_transform must be callable (images, labels, generator=...), got {batch_transform!r}")
        self.batch_transform = batch_transform
        if collate_fn is not None:
            raise ValueError(
                "collate_fn cannot apply to GPULoader: it assembles each batch itself, on the device, from the decoded "
                "images; change samples with transform= (images) or the dataset's target_transform (labels)"
            )
        if batch_sampler is not None:
            if batch_size != 1 or shuffle or sampler is not None or drop_last:
                raise ValueError("batch_sampler option is mutually exclusive with batch_size, shuffle, sampler, and drop_last")
            batch_size = None
        elif batch_size is None:
            raise ValueError("batch_size=None (no batching) cannot apply: GPULoader yields batches; pass a batch size")
        limits = {"max_image_pixels": max_image_pixels, "max_file_bytes": max_file_bytes}
        check_loader_arguments(batch_size if batch_sampler is None else 1, on_error, dtype, **limits)
        if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
            raise ValueError(f"num_workers must be an int >= 0, got {num_workers!r}")
        if sampler is not None and shuffle:
            raise ValueError("sampler option is mutually exclusive with shuffle")
        if not isinstance(timeout, (int, float)) or timeout < 0:
            raise ValueError(f"timeout option should be non-negative, got {timeout!r}")
        if prefetch_factor is not None and (type(prefetch_factor) is not int or prefetch_factor < 1):
            raise ValueError(f"prefetch_factor must be a positive int, got {prefetch_factor!r}")
        check_decode(decode)
        if augment_in not in ("auto", "workers", "device"):
            raise ValueError(f"augment_in must be 'auto', 'workers' or 'device', got {augment_in!r}")
        self.device = resolve_device(device)

        self.dataset = dataset
        self.batch_size = batch_size
        self.drop_last = drop_last
        self.num_workers = num_workers
        self.generator = generator
        self.persistent_workers = persistent_workers
        self.prefetch_factor = prefetch_factor
        self.pin_memory = pin_memory
        self.timeout = timeout
        self.dtype, self.channels_last, self.on_error = dtype, channels_last, on_error
        self.exif_orientation = exif_orientation
        self._max_image_pixels = max_image_pixels if max_image_pixels is not None else DEFAULT_MAX_PIXELS
        self.stats = LoaderStats()
        self._epoch: int | None = None
        self._iterations = 0
        self._epoch_start: tuple | None = None  # (epoch, iterations, epoch seed, generator state) for state_dict()
        self._taken, self._finished, self._resume = 0, True, None
        self._generation = 0  # persistent workers: the one live iteration (a new iter() supersedes the last)
        self._running: Producer | None = None

        resolved = resolve_dataset(dataset)
        source, files, load_item, dataset_transform, target_transform = (
            resolved.source,
            resolved.files,
            resolved.load_item,
            resolved.transform,
            resolved.target_transform,
        )
        transform = as_compose(transform if transform is not None else dataset_transform)
        self.transform: T.Compose | None = transform
        finish = [T.ToDtype(dtype)] if dtype.is_floating_point else []
        self._pipeline = transform.then(*finish) if transform is not None else T.Compose(finish)  # its settings kept
        self._decoder = choose_decoder(decode, self.device, files, exif_orientation, self._max_image_pixels)
        self.decoder_name = self._decoder.name if self._decoder is not None else "cpu"
        if augment_in == "auto":
            augment_in = "device" if self.device.type == "cuda" or self._decoder is not None else "workers"
        if augment_in == "workers" and self._decoder is not None:
            raise ValueError(f"augment_in='workers' needs the workers to decode (decode='cpu'), not {self.decoder_name!r}")
        self.augment_in = augment_in

        if batch_sampler is not None:
            self.sampler = getattr(batch_sampler, "sampler", None)
            self.batch_sampler = batch_sampler
        else:
            self.sampler = (
                sampler
                if sampler is not None
                else (RandomSampler(source, generator=generator) if shuffle else SequentialSampler(source))
            )
            self.batch_sampler = BatchSampler(self.sampler, batch_size, drop_last)
        self._skipper = SkipBatches(self.batch_sampler)  # a resumed epoch skips the batches it delivered
        self._seeded = SeededBatches(self._skipper)
        worker_side = WorkerSide(
            source,
            files,
            load_item,
            self._pipeline,
            augment=augment_in == "workers",
            takes=self._decoder.takes if self._decoder is not None else None,
            region_decode=self._decoder is not None and self._decoder.regions,
            options=WorkerOptions(
                exif_orientation=exif_orientation,
                reduced_decode=reduced_decode,
                max_pixels=self._max_image_pixels,
                max_file_bytes=max_file_bytes if max_file_bytes is not None else DEFAULT_MAX_BYTES,
                channels_last=channels_last,
            ),
            target_transform=target_transform,
        )
        options: dict[str, Any] = {}
        if "in_order" in inspect.signature(DataLoader.__init__).parameters:
            options["in_order"] = in_order
        cuda = self.device.type == "cuda"
        self._host_loader = DataLoader(
            worker_side,
            batch_sampler=self._seeded,
            num_workers=num_workers,
            collate_fn=collate_host_batch,
            pin_memory=cuda,
            timeout=timeout,
            worker_init_fn=worker_init_fn,
            multiprocessing_context=multiprocessing_context,
            # its own generator: DataLoader's base-seed draw must not shift the user's generator
            # differently with and without persistent workers (see gpuaug.loader.seeding)
            generator=torch.Generator(),
            prefetch_factor=prefetch_factor if num_workers > 0 else None,
            persistent_workers=persistent_workers and num_workers > 0,
            pin_memory_device=pin_memory_device if cuda else "",
            **options,
        )
        self._stream = torch.cuda.Stream(self.device) if cuda else None

    # -- construction helpers --------------------------------------------------------------------
    # -- DataLoader semantics --------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.batch_sampler)

    def set_epoch(self, epoch: int) -> None:
        """Seed the epoch's draws by ``epoch`` and pass it on to the sampler (``DistributedSampler``)."""
        self._epoch = int(epoch)
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def _rng_state(self) -> torch.Tensor:
        return self.generator.get_state() if self.generator is not None else torch.get_rng_state()

    def state_dict(self) -> dict[str, Any]:
        """Where the loader stands (``gpuaug.loader.resume``); ``load_state_dict`` on a loader built the same
        way continues the epoch bit for bit (any ``num_workers``), skipping the taken batches unread."""
        mid = self._epoch_start is not None and not self._finished
        start = self._epoch_start if mid else (self._epoch, self._iterations, None, self._rng_state())
        return epoch_state(*start, self._taken if mid else 0, not mid, batches=len(self), global_rng=self.generator is None)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume from ``state_dict()``: the next ``iter(loader)`` continues that epoch (or starts the next)."""
        self._resume = check_state(state, batches=len(self), global_rng=self.generator is None)
        self._epoch, self._iterations = state["epoch"], state["iterations"]
        if state["epoch"] is not None and hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(state["epoch"])

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        resume, self._resume = self._resume, None
        if resume is not None:
            if self._epoch != resume["epoch"]:
                raise ValueError(f"the loaded state is for epoch {resume['epoch']}; set_epoch({self._epoch}) was called since")
            generator_state = resume["generator_state"]
            self.generator.set_state(generator_state) if self.generator is not None else torch.set_rng_state(generator_state)
        start_state, iterations = self._rng_state(), self._iterations
        epoch_key = self._epoch if self._epoch is not None else self._iterations
        self._iterations += 1
        epoch_seed = mix_seed(draw_epoch_seed(self.generator), epoch_key)
        self._seeded.epoch_seed = epoch_seed
        self._epoch_start, self._finished = (self._epoch, iterations, epoch_seed, start_state), False
        self._taken = self._skipper.skip = resume["num_yielded"] if resume is not None else 0
        check_equal_steps(self.sampler, len(self.batch_sampler))
        self.stats = stats = LoaderStats(decoder=self.decoder_name)
        failures = Failures(skip=self.on_error == "skip")
        options = StageOptions(self.device, self.dtype, self.channels_last, self.batch_transform)
        stage = DeviceStage(self._pipeline, options, self._decoder, failures)
        started = time.perf_counter()
        pin = self.pin_memory and self.device.type == "cpu" and torch.cuda.is_available()
        host_iterator, producer = None, None
        persistent = self.persistent_workers and self.num_workers > 0
        if persistent:  # one set of workers: stop the previous iteration's producer before resetting them
            self._generation += 1
            generation = self._generation
            if self._running is not None:
                self._running.close()

        def let_workers_go() -> None:  # after the producer stopped; persistent workers serve the next epoch
            shutdown = getattr(host_iterator, "_shutdown_workers", None)
            if not persistent and shutdown is not None:
                shutdown()

        def wake_producer() -> None:  # it waits on a worker: shut the workers down, wake it with an item it fails on
            shutdown = getattr(host_iterator, "_shutdown_workers", None)
            if shutdown is None:
                return
            shutdown()
            if persistent:
                self._host_loader._iterator = None  # the next epoch starts fresh workers
            with contextlib.suppress(Exception):
                host_iterator._data_queue.put((None, None))

        try:
            host_iterator = iter(self._host_loader)
            unregister_sigchld(host_iterator)
            producer = Producer(
                iter(HostBatches(host_iterator)),
                stage,
                depth=self.prefetch_factor or 2,
                on_stopped=let_workers_go,
                wake=wake_producer,
                stream=self._stream,
            )
            if persistent:
                self._running = producer
            batches = iter(producer)
            while True:
                if persistent and self._generation != generation:
                    raise RuntimeError(
                        "this GPULoader iterator was superseded: with persistent_workers=True a new iter(loader) "
                        "takes over the one set of workers and starts a new epoch; iterate the newest iterator"
                    )
                waited = time.perf_counter()
                try:
                    images, labels, event = next(batches)
                except StopIteration:
                    self._finished = True
                    break
                except RuntimeError as error:  # torch's SIGCHLD handler may raise here when a worker dies
                    explained = worker_exit_error(host_iterator, error, wait=1.0) if torch_says_worker_died(error) else None
                    if explained is not None:
                        raise explained from error
                    raise
                stats.wait_seconds += time.perf_counter() - waited
                hand_over(images, labels, event)
                if pin:
                    images, labels = images.pin_memory(), labels.pin_memory()
                stats.images += len(labels)
                stats.batches += 1
                stats.epoch_seconds = time.perf_counter() - started
                self._taken += 1
                yield images, labels
        finally:
            if producer is not None:
                producer.close()
            else:
                let_workers_go()
            if self._running is producer:  # no reference cycle (loader <-> producer) keeps the workers alive
                self._running = None
            stats.skipped_paths, stats.skipped = failures.paths, len(failures.paths)
        decode_seconds, augment_seconds = stage.read_timers()
        stats.device_seconds = decode_seconds + augment_seconds
        stats.decode_seconds = decode_seconds + stage.worker_decode_seconds
        stats.augment_seconds = augment_seconds + stage.worker_augment_seconds
        stats.producer_seconds = stage.host_seconds
        stats.epoch_seconds = time.perf_counter() - started
        if stats.skipped:
            shown = ", ".join(stats.skipped_paths[:20])
            more = f" and {stats.skipped - 20} more" if stats.skipped > 20 else ""
            warnings.warn(f"GPULoader skipped {stats.skipped} file(s) it could not decode: {shown}{more}", stacklevel=2)

    def __repr__(self) -> str:
        return (
            f"GPULoader(batch_size={self.batch_size}, batches={len(self)}, device={self.device}, dtype={self.dtype}, "
            f"workers={self.num_workers}, decode={self.decoder_name}, augment_in={self.augment_in}, transform={self.transform!r})"
        )
