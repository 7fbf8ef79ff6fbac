"""A packed ragged batch: the decoded images of a batch in one uint8 buffer, without padding.

A list of ``[3, H_i, W_i]`` images of different sizes costs one copy per image to become a padded
batch; a ``PackedBatch`` instead keeps the images one after another in a single 1-D buffer and
describes each by its element offset, size and strides. Decoders write straight into it
(``PackedBatch.empty``), the fused kernels read it in place, and the torch path takes its images
as views (``unpack``).

The per-image description lives on the host (small CPU tensors and a tuple of sizes known from the
file headers), the pixels wherever ``data`` is: reading a size or building a view never
synchronises with the device.

Example:
    >>> batch = PackedBatch.from_images([torch.zeros(3, 2, 4, dtype=torch.uint8), torch.ones(3, 5, 3, dtype=torch.uint8)])
    >>> len(batch), batch.sizes, batch.data.shape
    (2, ((2, 4), (5, 3)), torch.Size([69]))
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["PackedBatch"]

_LAYOUTS = ("hwc", "chw")


@dataclass
class PackedBatch:
    """Images of different sizes in one flat uint8 buffer, with per-image offset, size and strides.

    Image ``i`` is ``data.as_strided((3, heights[i], widths[i]), strides[i], offsets[i])``: channel,
    row and column strides are per image, so channel-planar (CHW) and interleaved (HWC, what
    nvImageCodec and PIL decode to) images can share a batch.

    Args:
        data: 1-D uint8 tensor holding every image, on any device.
        offsets: int64 ``[B]``, element offset of each image in ``data`` (host).
        heights, widths: int64 ``[B]`` (host).
        strides: int64 ``[B, 3]``, ``(channel, row, column)`` strides in elements (host).
        sizes: ``((h, w), ...)``, the same sizes as Python ints.

    Shape:
        ``B`` images ``[3, H_i, W_i]``; ``data`` ``[sum of 3 * H_i * W_i]`` when packed densely.

    Example:
        >>> PackedBatch.empty([(4, 6), (8, 2)], "cpu").image(1).shape
        torch.Size([3, 8, 2])
    """

    data: Tensor
    offsets: Tensor
    heights: Tensor
    widths: Tensor
    strides: Tensor
    sizes: tuple[tuple[int, int], ...]

    def __post_init__(self) -> None:
        count = len(self.sizes)
        if not isinstance(self.data, Tensor) or self.data.ndim != 1 or self.data.dtype != torch.uint8:
            raise ValueError(f"PackedBatch.data must be a 1-D uint8 tensor, got {_describe(self.data)}")
        for name in ("offsets", "heights", "widths", "strides"):
            value = getattr(self, name)
            shape = (count, 3) if name == "strides" else (count,)
            if not isinstance(value, Tensor) or tuple(value.shape) != shape or value.dtype != torch.int64:
                raise ValueError(f"PackedBatch.{name} must be an int64 tensor of shape {shape}, got {_describe(value)}")
            if value.device.type != "cpu":
                raise ValueError(f"PackedBatch.{name} must live on the host (CPU), got {value.device}")
        self.sizes = tuple((int(height), int(width)) for height, width in self.sizes)
        if count:
            # heights and widths live on the host (checked above): reading them never syncs a device
            if self.heights.tolist() != [h for h, _ in self.sizes] or self.widths.tolist() != [w for _, w in self.sizes]:
                raise ValueError("PackedBatch.sizes must equal (heights, widths)")
            if min(min(size) for size in self.sizes) < 1:
                raise ValueError(f"PackedBatch images must be at least 1x1, got sizes {self.sizes}")
            # Every element of every image must lie inside data (the kernels read it unchecked).
            lowest, highest = _reach(self)
            if lowest < 0 or highest >= self.data.numel():
                raise ValueError(
                    f"PackedBatch images reach outside data ({self.data.numel()} elements): element range [{lowest}, {highest}]"
                )

    # -- construction --------------------------------------------------------------------------
    @staticmethod
    def from_images(images: Sequence[Tensor], device: torch.device | str | None = None) -> PackedBatch:
        """Pack ``[3, H, W]`` uint8 images, keeping each one's layout (an HWC view stays HWC).

        One ``torch.cat`` of flattened views (one copy of the pixels, a few kernel launches on a
        GPU, whatever the batch size); an image in neither layout (a crop of an HWC image) is first
        copied to HWC, its rows as they are.

        Args:
            images: non-empty list of uint8 ``[3, H_i, W_i]`` tensors on one device.
            device: where ``data`` goes (default: the images' device).

        Example:
            >>> PackedBatch.from_images([torch.zeros(3, 4, 5, dtype=torch.uint8)]).strides.tolist()
            [[20, 5, 1]]
        """
        images = list(images)
        if not images:
            raise ValueError("PackedBatch.from_images got no images")
        flats, layouts, sizes = _flatten(images)
        data = torch.cat(flats) if len(flats) > 1 else flats[0].clone()
        if device is not None:
            data = data.to(device, non_blocking=True)
        return PackedBatch._describe_dense(data, sizes, layouts)

    @staticmethod
    def assemble(
        packed: PackedBatch | None,
        packed_rows: Sequence[int],
        images: Sequence[Tensor],
        image_rows: Sequence[int],
        device: torch.device,
    ) -> PackedBatch:
        """One batch on ``device``, in row order, from a packed part (rows ``packed_rows``, copied
        straight into place) and separate ``[3, H, W]`` uint8 images on ``device`` (rows
        ``image_rows``, packed once): a loader batch whose files were partly decoded by the workers
        and partly by the device decoder.

        Example:
            >>> first = PackedBatch.from_images([torch.zeros(3, 2, 2, dtype=torch.uint8)])
            >>> both = PackedBatch.assemble(first, [1], [torch.ones(3, 1, 4, dtype=torch.uint8)], [0], torch.device("cpu"))
            >>> both.sizes, both.image(0).sum().item(), both.image(1).sum().item()
            (((1, 4), (2, 2)), 12, 0)
        """
        head = packed.data.numel() if packed is not None else 0
        flats, layouts, sizes = _flatten(images)
        data = torch.empty(head + sum(flat.numel() for flat in flats), dtype=torch.uint8, device=device)
        if packed is not None:
            data[:head].copy_(packed.data, non_blocking=True)
        if flats:
            torch.cat(flats, out=data[head:])
        tail = PackedBatch._describe_dense(data, sizes, layouts) if sizes else None
        count = len(packed_rows) + len(image_rows)
        offsets, heights, widths = (torch.empty(count, dtype=torch.int64) for _ in range(3))
        strides = torch.empty(count, 3, dtype=torch.int64)
        for part, rows, shift in ((packed, packed_rows, 0), (tail, image_rows, head)):
            if part is not None and len(rows):
                rows = torch.as_tensor(list(rows), dtype=torch.int64)
                offsets[rows], heights[rows], widths[rows], strides[rows] = (
                    part.offsets + shift,
                    part.heights,
                    part.widths,
                    part.strides,
                )
        return PackedBatch(data, offsets, heights, widths, strides, tuple(zip(heights.tolist(), widths.tolist())))

    @staticmethod
    def empty(
        sizes: Sequence[tuple[int, int]], device: torch.device | str, layout: str = "hwc", pin_memory: bool = False
    ) -> PackedBatch:
        """An uninitialised batch of ``sizes`` in one layout, for a decoder to write into.

        Args:
            sizes: ``(height, width)`` per image.
            device: where the buffer lives.
            layout: ``"hwc"`` (interleaved, what nvImageCodec decodes to) or ``"chw"``.
            pin_memory: page-locked host memory (CPU only), for asynchronous copies.

        Example:
            >>> PackedBatch.empty([(2, 3)], "cpu", layout="chw").strides.tolist()
            [[6, 3, 1]]
        """
        if layout not in _LAYOUTS:
            raise ValueError(f"layout must be one of {_LAYOUTS}, got {layout!r}")
        sizes = [(int(height), int(width)) for height, width in sizes]
        if not sizes or min(min(size) for size in sizes) < 1:
            raise ValueError(f"PackedBatch.empty needs at least one image of at least 1x1, got sizes {sizes}")
        total = sum(3 * height * width for height, width in sizes)
        data = torch.empty(total, dtype=torch.uint8, device=device, pin_memory=pin_memory)
        return PackedBatch._describe_dense(data, sizes, [layout] * len(sizes))

    @staticmethod
    def _describe_dense(data: Tensor, sizes: list[tuple[int, int]], layouts: list[str]) -> PackedBatch:
        heights = torch.tensor([h for h, _ in sizes], dtype=torch.int64)
        widths = torch.tensor([w for _, w in sizes], dtype=torch.int64)
        areas = heights * widths
        offsets = torch.cumsum(3 * areas, 0) - 3 * areas
        hwc = torch.tensor([layout == "hwc" for layout in layouts])
        strides = torch.where(
            hwc.unsqueeze(1),
            torch.stack([torch.ones_like(widths), 3 * widths, torch.full_like(widths, 3)], 1),
            torch.stack([areas, widths, torch.ones_like(widths)], 1),
        )
        return PackedBatch(data, offsets, heights, widths, strides, tuple(sizes))

    # -- access --------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.sizes)

    @property
    def device(self) -> torch.device:
        return self.data.device

    def image(self, index: int) -> Tensor:
        """Image ``index`` as a ``[3, H, W]`` view of ``data`` (no copy, no device sync)."""
        height, width = self.sizes[index]
        strides = tuple(int(value) for value in self.strides[index])
        return self.data.as_strided((3, height, width), strides, int(self.offsets[index]))

    def unpack(self) -> list[Tensor]:
        """Every image as a ``[3, H, W]`` view of ``data``."""
        offsets, strides = self.offsets.tolist(), self.strides.tolist()  # host tensors: no sync
        return [
            self.data.as_strided((3, height, width), tuple(stride), offset)
            for (height, width), stride, offset in zip(self.sizes, strides, offsets)
        ]

    def to(self, device: torch.device | str, non_blocking: bool = True) -> PackedBatch:
        """The same batch with ``data`` on ``device`` (the description stays on the host)."""
        return self._with_data(self.data.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> PackedBatch:
        """The same batch with ``data`` in page-locked host memory (DataLoader's pin_memory calls this)."""
        return self._with_data(self.data.pin_memory())

    def _with_data(self, data: Tensor) -> PackedBatch:
        """This batch's checked description over a copy of its ``data`` (same elements): not checked again."""
        batch = object.__new__(PackedBatch)
        batch.__dict__.update(self.__dict__, data=data)
        return batch

    def __repr__(self) -> str:
        return f"PackedBatch(images={len(self)}, elements={self.data.numel()}, device={self.device})"


def _reach(batch: PackedBatch) -> tuple[int, int]:
    """The lowest and highest element of ``data`` any image reaches, exactly (no int64 overflow).

    Offsets, strides and extents below 2**30 keep int64 sums below 2**62 (vectorised); larger values
    (only a corrupt description has them) are summed as Python integers.
    """
    extents = torch.stack([torch.full_like(batch.heights, 2), batch.heights - 1, batch.widths - 1], 1)
    limit = 2**30
    if all(bool(((t > -limit) & (t < limit)).all()) for t in (batch.offsets, batch.strides, extents)):
        low = batch.offsets + (batch.strides.clamp(max=0) * extents).sum(1)
        high = batch.offsets + (batch.strides.clamp(min=0) * extents).sum(1)
        return int(low.min()), int(high.max())
    rows = zip(batch.offsets.tolist(), batch.strides.tolist(), extents.tolist())
    reach = [
        (offset + sum(min(s, 0) * e for s, e in zip(strides, ext)), offset + sum(max(s, 0) * e for s, e in zip(strides, ext)))
        for offset, strides, ext in rows
    ]
    return min(low for low, _ in reach), max(high for _, high in reach)


def _describe(value: object) -> str:
    if isinstance(value, Tensor):
        return f"{value.dtype} tensor of shape {tuple(value.shape)}"
    return type(value).__name__


def _flatten(images: Sequence[Tensor]) -> tuple[list[Tensor], list[str], list[tuple[int, int]]]:
    """Each uint8 ``[3, H, W]`` image flat: a CHW-contiguous one as it is, any other as HWC (an HWC view as it
    is; a crop of one copied row by row, ~10x faster than gathering it into CHW planes)."""
    flats, layouts, sizes = [], [], []
    for index, image in enumerate(images):
        if not isinstance(image, Tensor) or image.ndim != 3 or image.shape[0] != 3 or image.dtype != torch.uint8:
            raise ValueError(f"PackedBatch.from_images: image {index} must be a uint8 [3, H, W] tensor, got {_describe(image)}")
        if image.device != images[0].device:
            raise ValueError(f"PackedBatch.from_images: image {index} is on {image.device}, image 0 on {images[0].device}")
        height, width = image.shape[1:]
        if image.is_contiguous():
            layouts.append("chw")
            flats.append(image.view(-1))
        else:
            layouts.append("hwc")
            flats.append(image.permute(1, 2, 0).reshape(-1))
        sizes.append((int(height), int(width)))
    return flats, layouts, sizes
