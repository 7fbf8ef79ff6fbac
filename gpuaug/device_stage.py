"""The loader's device stage and the producer thread that runs it off the training thread.

The training thread does nothing for the data but wait: a :class:`Producer` thread owns the
device stage (its own CUDA stream), takes host batches from the DataLoader workers, decodes what
the workers left encoded (nvImageCodec or nvJPEG), runs the pipeline, records one CUDA event per
batch and puts ``(images, labels, event)`` into a bounded queue. The consumer takes a batch,
makes its stream wait on *that batch's* event (not on the side stream, which may already run the
next batch) and records the tensors on its stream so their memory is not reused too early.

Errors raised in the producer reach the consumer with their type and message (a ``DecodeError``
still names the file). Closing the consumer's iterator (``break``, ``del``, garbage collection,
``KeyboardInterrupt``, the end of an epoch) stops the thread.

On the CPU the same stage runs in the same thread with CPU tensors (and no events), so CI tests
it; by default the CPU loader lets the workers augment and the stage only hands batches over.

Example:
    >>> import torch
    >>> producer = Producer(iter([1, 2, 3]), lambda item, number: (item * 10, None), depth=2)
    >>> list(producer)
    [(10, None), (20, None), (30, None)]
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch

from gpuaug import transforms as T
from gpuaug.decode import DEFAULT_MAX_PIXELS, DecodeError, decode_cpu, decode_jpegs_cuda
from gpuaug.packed import PackedBatch
from gpuaug.worker import HostBatch

__all__ = ["DeviceStage", "Producer", "hand_over"]

_END = object()


class _Failure:
    """An exception raised in the producer, carried to the consumer."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


class Producer:
    """Runs ``work(item, number)`` over ``items`` in a thread; iterate it to take the results in order.

    ``work`` returns a result or None (nothing to deliver for that item). At most ``depth``
    results wait in the queue. Iteration re-raises the producer's exception; ``close()`` (also
    called when iteration ends or the iterator is closed) stops the thread and joins it.

    Args:
        items: an iterator (consumed in the producer thread only).
        work: ``(item, number) -> result | None``.
        depth: queue length (the loader's ``prefetch_factor``).
        on_stop: ``on_stop(early)``, called once in the consumer: after the thread has stopped
            (``early=False``), or to make a thread stuck on its input stop (``early=True``).
        stream: a CUDA stream made current in the producer thread.
    """

    def __init__(
        self,
        items: Iterator[Any],
        work: Callable[[Any, int], Any],
        depth: int = 2,
        on_stop: Callable[[bool], None] | None = None,
        stream: torch.cuda.Stream | None = None,
    ) -> None:
        self._items, self._work, self._on_stop, self._stream = items, work, on_stop, stream
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="gpuaug-producer", daemon=True)
        self._thread.start()

    # -- producer thread ---------------------------------------------------------------------------
    def _run(self) -> None:
        context = torch.cuda.stream(self._stream) if self._stream is not None else contextlib.nullcontext()
        try:
            with context:
                for number, item in enumerate(self._items):
                    if self._stop.is_set():
                        return
                    result = self._work(item, number)
                    if result is not None and not self._put(result):
                        return
            self._put(_END)
        except BaseException as error:  # noqa: BLE001 - every failure goes to the consumer
            self._put(_Failure(error))

    def _put(self, item: Any) -> bool:
        """Put ``item``, waiting for room; False when asked to stop meanwhile."""
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    # -- consumer ----------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[Any]:
        try:
            while True:
                item = self._take()
                if item is _END:
                    return
                if isinstance(item, _Failure):
                    raise item.error
                yield item
        finally:
            self.close()

    def _take(self) -> Any:
        while True:
            try:
                return self._queue.get(timeout=0.1)
            except queue.Empty:
                if not self._thread.is_alive() and self._queue.empty():
                    raise RuntimeError("gpuaug's producer thread stopped without a result or an error") from None

    def close(self) -> None:
        """Stop the thread (it finishes the item in hand), join it, then run ``on_stop``.

        A thread still waiting after 2 s (on a slow or hung worker) gets ``on_stop(True)`` early,
        which shuts the workers down and wakes it; after 10 s more it is left to die with the
        process (a daemon) rather than hang the caller. Otherwise ``on_stop(False)`` follows the join.
        """
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        started, stopped = time.monotonic(), False
        while self._thread.is_alive() and time.monotonic() - started < 12:
            with contextlib.suppress(queue.Empty):  # make room so a blocked put returns
                while True:
                    self._queue.get_nowait()
            self._thread.join(timeout=0.05)
            if not stopped and self._on_stop is not None and time.monotonic() - started > 2:
                stopped = True
                self._on_stop(True)
        if not stopped and self._on_stop is not None:
            self._on_stop(False)

    @property
    def thread(self) -> threading.Thread:
        return self._thread


def hand_over(images: torch.Tensor, labels: torch.Tensor, event: torch.cuda.Event | None) -> None:
    """On the consumer: wait for this batch's own event and keep its memory alive for this stream."""
    if event is None:
        return
    consumer = torch.cuda.current_stream(images.device)
    consumer.wait_event(event)
    images.record_stream(consumer)
    labels.record_stream(consumer)


def _check_one_size(images: list[torch.Tensor]) -> None:
    sizes = sorted({tuple(image.shape[-2:]) for image in images})
    if len(sizes) > 1:
        shown = ", ".join(f"{height}x{width}" for height, width in sizes[:4]) + (" ..." if len(sizes) > 4 else "")
        raise ValueError(
            f"images in a batch have different sizes ({shown}); pass transform= whose first op is RandomResizedCrop, "
            "Resize((height, width)) or CenterCrop so that every image gets one size (Resize(int) alone keeps each "
            "aspect ratio: add CenterCrop after it)"
        )


class DeviceStage:
    """Decode what the workers left encoded, augment, convert: one host batch -> one device batch.

    Args:
        pipeline: the whole pipeline (transform + dtype conversion), applied with the batch's
            parameters (drawn in the worker: the stage draws nothing).
        device: where the batch goes.
        decoder: the device decoder for encoded rows: an ``NvImageCodecDecoder`` or ``"nvjpeg"``.
        dtype, channels_last: the batch contract.
        skip: ``skip(path, reason)`` raises the loader's ``DecodeError`` (``on_error="raise"``) or
            counts the file as skipped.
        exif_orientation: apply the EXIF orientation of encoded rows.
        max_pixels: the pixel limit for images the CPU decodes here.
    """

    def __init__(
        self,
        pipeline: T.Compose,
        device: torch.device,
        decoder: Any,
        dtype: torch.dtype,
        channels_last: bool,
        skip: Callable[[str, str], None],
        exif_orientation: bool = False,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
    ) -> None:
        self.pipeline, self.device, self.decoder = pipeline, device, decoder
        self.max_pixels = max_pixels
        self.dtype, self.channels_last, self.skip = dtype, channels_last, skip
        self.exif_orientation = exif_orientation
        self.timers: list[tuple[Any, Any, Any]] = []  # CUDA events per batch, read at the epoch's end
        self.decode_seconds = 0.0
        self.augment_seconds = 0.0

    def __call__(self, host: HostBatch, number: int) -> tuple[torch.Tensor, torch.Tensor, Any] | None:
        """One batch: ``(images, labels, event)``, or None when every sample was skipped."""
        for path, reason in host.failures:
            self.skip(path, reason)
        if len(host) == 0:
            return None
        cuda = self.device.type == "cuda"
        timers = tuple(torch.cuda.Event(enable_timing=True) for _ in range(3)) if cuda else None
        started = time.perf_counter()
        if timers:
            timers[0].record()
        if host.augmented or host.regions is None:  # the workers ran the pipeline (or could not: see _finish)
            images, labels = host.images, host.labels
            if isinstance(images, list):
                images = [image.to(self.device, non_blocking=True) for image in images]
            else:
                images = images.to(self.device, non_blocking=True)
            if timers:
                timers[1].record()  # nothing decoded here
            decoded = time.perf_counter()
        else:
            batch, labels, params = self._decode(host)
            if timers:
                timers[1].record()
            decoded = time.perf_counter()
            if not batch:
                return None
            images = self._augment(batch, params)
        images = self._finish(images)
        labels = labels.to(self.device, non_blocking=True)
        event = None
        if timers:
            timers[2].record()
            self.timers.append(timers)
            event = torch.cuda.Event()
            event.record()
        else:
            self.decode_seconds += decoded - started
            self.augment_seconds += time.perf_counter() - decoded
        return images, labels, event

    # -- decode ------------------------------------------------------------------------------------
    def _decode(self, host: HostBatch) -> tuple[list[torch.Tensor], torch.Tensor, T.Params | None]:
        """Every row's image on the device (regions where decoded so), labels and rebased params."""
        rows = len(host)
        images: list[torch.Tensor | None] = [None] * rows
        regions = torch.zeros(rows, 4, dtype=torch.int64)
        decoded = host.images
        if isinstance(decoded, PackedBatch):  # one copy for the batch, then views
            decoded = decoded.to(self.device, non_blocking=True).unpack()
        else:
            decoded = [image.to(self.device, non_blocking=True) for image in decoded or []]
        for position, row in enumerate(host.decoded_rows):
            images[row] = decoded[position]
        if host.decoded_rows:
            regions[host.decoded_rows] = host.regions
        if host.encoded_rows:
            self._decode_encoded(host, images, regions)
        keep = [row for row in range(rows) if images[row] is not None]
        params, labels = host.params, host.labels
        if len(keep) < rows:
            index = torch.tensor(keep, dtype=torch.int64)
            labels, regions = labels[index], regions[index]
            params = {key: value[index] for key, value in params.items()} if params is not None else None
        batch = [images[row] for row in keep]
        if params is not None and batch:
            decoded_sizes = torch.tensor([tuple(image.shape[-2:]) for image in batch], dtype=torch.int64)
            params = self.pipeline.rebase(params, regions, decoded_sizes)
            params = {key: value.to(self.device, non_blocking=True) for key, value in params.items()}
        return batch, labels, params

    def _decode_encoded(self, host: HostBatch, images: list, regions: torch.Tensor) -> None:
        """Decode the encoded rows in one batched call (nvJPEG: an image it refuses goes to the CPU)."""
        paths = [host.paths[row] for row in host.encoded_rows]
        files = host.encoded_files()
        full = host.sizes[host.encoded_rows]
        whole = torch.cat([torch.zeros_like(full), full], dim=1)
        if self.decoder == "nvjpeg":
            results = decode_jpegs_cuda(files, paths, self.device)
            covered = whole
        elif self.device.type == "cpu" and host.params is not None:
            # nvImageCodec's CPU codecs decode only the crop box (3.4k against 2.0k img/s whole on
            # the H200's host); its GPU stages decode whole images anyway (region requests sent
            # most images to the CPU there), and whole HWC images pack without a copy each.
            covered = self.pipeline.source_regions({key: value[host.encoded_rows] for key, value in host.params.items()}, full)
            results = self.decoder.decode(files, paths, regions=covered, headers=host.headers)
        else:
            results = self.decoder.decode(files, paths, headers=host.headers)
            covered = whole
        for position, (row, result) in enumerate(zip(host.encoded_rows, results)):
            if isinstance(result, DecodeError):
                if self.decoder != "nvjpeg":  # nvImageCodec already tried every decoder, ours last
                    self.skip(result.path, result.reason)
                    continue
                try:
                    data = bytes(files[position].numpy())
                    image = decode_cpu(data, paths[position], exif_orientation=self.exif_orientation, max_pixels=self.max_pixels)
                except DecodeError as error:
                    self.skip(error.path, error.reason)
                    continue
                result = image.to(self.device)
                covered[position] = torch.tensor([0, 0, *result.shape[-2:]])
            images[row] = result  # rows to orient never come encoded (see worker.device_decodes)
        regions[host.encoded_rows] = covered  # rows that failed are dropped with their images

    # -- augment -----------------------------------------------------------------------------------
    def _augment(self, batch: list[torch.Tensor], params: T.Params | None) -> torch.Tensor | list[torch.Tensor]:
        if params is None or not self.pipeline.accepts_list:
            _check_one_size(batch)  # the worker draws parameters for every batch that can become one size
            return self.pipeline.apply(torch.stack(batch), params or {})
        return self.pipeline.apply(batch, params)

    def _finish(self, images: torch.Tensor | list[torch.Tensor]) -> torch.Tensor:
        if isinstance(images, list):
            _check_one_size(images)
            images = torch.stack(images)
        if self.dtype == torch.uint8 and images.dtype != torch.uint8:
            raise ValueError("dtype=torch.uint8 but the transform produces floats (it normalises); use a float dtype")
        if self.channels_last:
            return images.contiguous(memory_format=torch.channels_last)
        return images.contiguous()

    def read_timers(self) -> tuple[float, float]:
        """Seconds of decode and augment work this epoch (CUDA: from the events; syncs on the last)."""
        decode, augment = self.decode_seconds, self.augment_seconds
        for start, decoded, augmented in self.timers:
            augmented.synchronize()
            decode += start.elapsed_time(decoded) / 1000
            augment += decoded.elapsed_time(augmented) / 1000
        self.timers.clear()
        self.decode_seconds = self.augment_seconds = 0.0
        return decode, augment
