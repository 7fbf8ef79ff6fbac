"""``HostBatch``: one batch as the workers hand it to the device stage, each field meaning one thing.

Example:
    >>> batch = HostBatch(labels=torch.tensor([3]), paths=["a.jpg"], sizes=torch.tensor([[4, 6]]))
    >>> len(batch), batch.failures, batch.finished is None
    (1, [], True)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from gpuaug.io.decode import ImageHeader
from gpuaug.io.packed import PackedBatch

__all__ = ["HostBatch"]


@dataclass
class HostBatch:
    """One batch from the workers (pinned by the DataLoader's pin-memory thread on CUDA).

    Rows are the samples that were read and decoded; those that failed are only in ``failures``.

    Attributes:
        labels: int64 ``[n]``.
        paths: ``n`` file paths (``"<item i>"`` for map-style datasets), named in errors.
        sizes: int64 ``[n, 2]``: each full image's (height, width), after any EXIF orientation.
        failures: ``(path, reason)`` of samples that could not be read or decoded in the worker.
        finished: the pipeline's output when the workers ran it (the CPU loader): a
            ``[n, 3, h, w]`` batch, or a list where the outputs differ in size; ``None`` otherwise.
        params: the pipeline's parameters for the ``n`` rows, rebased onto the images the device
            stage gets (a region or reduced decode moves the first crop's boxes); empty when
            ``ragged`` or ``finished``.
        ragged: the images differ in size and no first geometric op makes them one size, so no
            params were drawn (the device stage says why).
        decoded: the images the workers decoded, rows ``decoded_rows``: a ``PackedBatch`` (one
            buffer, one shared-memory segment) when uint8, else a list.
        encoded: the files of rows ``encoded_rows``, which the device decodes, one after another in
            one uint8 buffer delimited by ``encoded_offsets`` ``[len(encoded_rows) + 1]``.
        encoded_paths: each encoded row's path (named in the device decoder's errors).
        headers: each encoded row's header (read once, in the worker).
        regions: int64 ``[n, 4]``: the part of its full image each row's image covers (decoded
            rows: what the worker cropped; encoded rows: what the device decoder decodes).
        seed: the batch's seed, from (epoch seed, its indices): the params were drawn from it, and the
            loader's ``batch_transform`` draws from a stream derived from it.
        decode_seconds, augment_seconds: the workers' time.
    """

    labels: torch.Tensor
    paths: list[str]
    sizes: torch.Tensor
    failures: list[tuple[str, str]] = field(default_factory=list)
    finished: torch.Tensor | list[torch.Tensor] | None = None
    params: dict[str, torch.Tensor] = field(default_factory=dict)
    ragged: bool = False
    decoded: PackedBatch | list[torch.Tensor] | None = None
    decoded_rows: list[int] = field(default_factory=list)
    encoded: torch.Tensor | None = None
    encoded_offsets: list[int] = field(default_factory=lambda: [0])
    encoded_rows: list[int] = field(default_factory=list)
    encoded_paths: list[str] = field(default_factory=list)
    headers: list[ImageHeader] = field(default_factory=list)
    regions: torch.Tensor | None = None
    seed: int = 0
    decode_seconds: float = 0.0
    augment_seconds: float = 0.0

    def __len__(self) -> int:
        return len(self.paths)

    def encoded_files(self) -> list[torch.Tensor]:
        """Each encoded row's file as a 1-D uint8 view of ``encoded``."""
        bounds = self.encoded_offsets
        return [self.encoded[start:end] for start, end in zip(bounds[:-1], bounds[1:])]

    def drop(self, rows: list[int]) -> None:
        """Remove ``rows`` (labels, paths, sizes, params, regions; decoded/encoded row numbers renumbered)."""
        drop = set(rows)
        keep = [row for row in range(len(self.paths)) if row not in drop]
        renumber = {old: new for new, old in enumerate(keep)}
        index = torch.tensor(keep, dtype=torch.int64)
        self.labels, self.sizes = self.labels[index], self.sizes[index]
        self.paths = [self.paths[row] for row in keep]
        self.params = {key: value[index] for key, value in self.params.items()}
        if self.regions is not None:
            self.regions = self.regions[index]
        self.decoded_rows = [renumber[row] for row in self.decoded_rows if row in renumber]
        self.encoded_rows = [renumber[row] for row in self.encoded_rows if row in renumber]

    def pin_memory(self, device: Any = None) -> HostBatch:
        """Called by the DataLoader's pin-memory thread: pin what goes to the device."""
        pinned = dict(self.__dict__, labels=self.labels.pin_memory())
        for name in ("finished", "decoded"):
            value = getattr(self, name)
            if isinstance(value, (torch.Tensor, PackedBatch)):
                pinned[name] = value.pin_memory()
            elif value:
                pinned[name] = [image.pin_memory() for image in value]
        return HostBatch(**pinned)
