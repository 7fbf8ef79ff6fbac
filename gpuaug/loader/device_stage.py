"""The loader's device stage: one host batch in, one device batch out (run by the producer thread).

It decodes what the workers left encoded (one batched call of the ``Decoder`` chosen once), puts
the batch together in row order as one ``PackedBatch`` (the workers' buffer copied straight into
place; when the workers decoded every row, their buffer as it is), runs the pipeline with the
params the workers drew and rebased (the stage draws and rebases nothing), and converts dtype and
memory format. On CUDA it records events around decode and augment; the stage's host time is
measured either way, so ``loader.stats`` shows where a batch's time goes.

Example:
    >>> from gpuaug.transforms import Compose, Resize
    >>> stage = DeviceStage(Compose([Resize((4, 4))]), StageOptions(torch.device("cpu"), torch.uint8, False), None, Failures())
    >>> host = HostBatch(torch.tensor([0]), ["a"], torch.tensor([[8, 8]]), decoded=[torch.zeros(3, 8, 8, dtype=torch.uint8)],
    ...                  decoded_rows=[0], regions=torch.tensor([[0, 0, 8, 8]]))
    >>> images, labels, event = stage(host, 0)
    >>> images.shape, event is None
    (torch.Size([1, 3, 4, 4]), True)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch

from gpuaug.io.decode import DecodeError
from gpuaug.io.decoders import Decoder
from gpuaug.io.packed import PackedBatch
from gpuaug.loader.host_batch import HostBatch
from gpuaug.loader.seeding import mix_seed
from gpuaug.transforms import Compose, Params

__all__ = ["DeviceStage", "Failures", "StageOptions"]

_BATCH_TRANSFORM_STREAM = 1  # the batch transform's seed: mix_seed(batch seed, this), apart from the params' own


@dataclass(frozen=True)
class StageOptions:
    """The batch contract: where batches go, their dtype and memory format."""

    device: torch.device
    dtype: torch.dtype
    channels_last: bool = True
    batch_transform: Callable[..., tuple[torch.Tensor, torch.Tensor]] | None = None
    """``batch_transform(images, labels, generator=...) -> (images, targets)`` (MixUp, CutMix), run on the
    finished batch with a CPU generator seeded from the batch's seed."""


@dataclass
class Failures:
    """The loader's ``on_error`` policy: ``report`` raises a ``DecodeError`` naming the file
    (``skip=False``) or counts it in ``paths``."""

    skip: bool = False
    paths: list[str] = field(default_factory=list)

    def report(self, path: str, reason: str) -> None:
        if not self.skip:
            raise DecodeError(path, reason)
        self.paths.append(path)


def different_sizes(sizes: Iterable[tuple[int, int]], known: str = "") -> str:
    """The loaders' message for a batch of images of different ``sizes`` (listed when there are several,
    after ``known``: how they are known) and how to give them one size (GPULoader and DALILoader)."""
    sizes = sorted(set(sizes))
    shown = ", ".join(f"{height}x{width}" for height, width in sizes[:4]) + (" ..." if len(sizes) > 4 else "")
    listed = f" ({known}{shown})" if len(sizes) > 1 else ""
    return (
        f"images in a batch have different sizes{listed}; pass transform= whose first op is RandomResizedCrop, "
        "Resize((height, width)) or CenterCrop so that every image gets one size (Resize(int) alone keeps each "
        "aspect ratio: add CenterCrop after it)"
    )


def _check_one_size(images: list[torch.Tensor]) -> None:
    sizes = {tuple(image.shape[-2:]) for image in images}
    if len(sizes) > 1:
        raise ValueError(different_sizes(sizes))


class DeviceStage:
    """Decode what the workers left encoded, augment, convert: one host batch -> one device batch.

    Args:
        pipeline: the whole pipeline (transform + dtype conversion).
        options: the batch contract.
        decoder: the device decoder for encoded rows; ``None`` when the workers decode everything.
        failures: where failed files go (raise or count).
    """

    def __init__(self, pipeline: Compose, options: StageOptions, decoder: Decoder | None, failures: Failures) -> None:
        self.pipeline, self.options, self.decoder, self.failures = pipeline, options, decoder, failures
        self.timers: list[tuple[Any, Any, Any]] = []  # CUDA events per batch, read at the epoch's end
        self.decode_seconds = self.augment_seconds = self.host_seconds = 0.0
        self.worker_decode_seconds = self.worker_augment_seconds = 0.0  # the workers' own, from each host batch

    def __call__(self, host: HostBatch, number: int) -> tuple[torch.Tensor, torch.Tensor, Any] | None:
        """One batch: ``(images, labels, event)``, or None when every sample was skipped."""
        self.worker_decode_seconds += host.decode_seconds
        self.worker_augment_seconds += host.augment_seconds
        for path, reason in host.failures:
            self.failures.report(path, reason)
        if len(host) == 0:
            return None
        device = self.options.device
        timers = tuple(torch.cuda.Event(enable_timing=True) for _ in range(3)) if device.type == "cuda" else None
        started = time.perf_counter()
        if timers:
            timers[0].record()
        finished = host.finished
        if finished is not None:  # the workers ran the pipeline
            labels = host.labels
            if isinstance(finished, list):
                images = [image.to(device, non_blocking=True) for image in finished]
            else:
                images = finished.to(device, non_blocking=True)
        else:
            images, labels, params = self._decode(host)
        if timers:
            timers[1].record()
        decoded = time.perf_counter()
        if images is None:
            return None
        if finished is None:
            images = self._augment(images, params, host.ragged)
        images = self._finish(images)
        labels = labels.to(device, non_blocking=True)
        if self.options.batch_transform is not None:
            generator = torch.Generator().manual_seed(mix_seed(host.seed, _BATCH_TRANSFORM_STREAM))
            images, labels = self.options.batch_transform(images, labels, generator=generator)
            images = self._finish(images)
        event = None
        if timers:
            timers[2].record()
            self.timers.append(timers)
            event = torch.cuda.Event()
            event.record()
        else:
            self.decode_seconds += decoded - started
            self.augment_seconds += time.perf_counter() - decoded
        self.host_seconds += time.perf_counter() - started
        return images, labels, event

    # -- decode ------------------------------------------------------------------------------------
    def _decode(self, host: HostBatch) -> tuple[PackedBatch | list[torch.Tensor] | None, torch.Tensor, Params]:
        """The batch's images on the device in row order, its labels and params (failed rows dropped)."""
        device, decoded = self.options.device, host.decoded
        if not host.encoded_rows:  # the workers decoded every row: their buffer as it is
            if isinstance(decoded, PackedBatch):
                return decoded.to(device, non_blocking=True), host.labels, self._params(host.params)
            return [image.to(device, non_blocking=True) for image in decoded], host.labels, self._params(host.params)
        rows = torch.as_tensor(host.encoded_rows, dtype=torch.int64)
        result = self.decoder.decode(host.encoded_files(), host.encoded_paths, host.headers, host.regions[rows])
        images = result.images
        if result.failed:  # rare: drop the failed rows, the others renumbered (HostBatch.drop, as the workers do)
            for _, error in result.failed:
                self.failures.report(error.path, error.reason)
            host.drop([host.encoded_rows[position] for position, _ in result.failed])
            if not len(host):
                return None, host.labels, host.params
            images = [image for image in images if image is not None]
        packed = decoded if isinstance(decoded, PackedBatch) else None  # host: assemble copies it into place once
        batch = PackedBatch.assemble(packed, host.decoded_rows, images, host.encoded_rows, device)
        return batch, host.labels, self._params(host.params)

    def _params(self, params: Params) -> Params:
        return {key: value.to(self.options.device, non_blocking=True) for key, value in params.items()}

    # -- augment -----------------------------------------------------------------------------------
    def _augment(
        self, images: PackedBatch | list[torch.Tensor], params: Params, ragged: bool
    ) -> torch.Tensor | list[torch.Tensor]:
        if ragged or not self.pipeline.accepts_list:
            batch = images.unpack() if isinstance(images, PackedBatch) else images
            _check_one_size(batch)  # the worker draws parameters for every batch that can become one size
            return self.pipeline.apply(torch.stack(batch), params)
        return self.pipeline.apply(images, params)

    def _finish(self, images: torch.Tensor | list[torch.Tensor]) -> torch.Tensor:
        if isinstance(images, list):
            _check_one_size(images)
            images = torch.stack(images)
        if self.options.dtype == torch.uint8 and images.dtype != torch.uint8:
            raise ValueError("dtype=torch.uint8 but the transform produces floats (it normalises); use a float dtype")
        if self.options.channels_last:
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
