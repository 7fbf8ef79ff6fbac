"""See what an augmentation does: one image, many random draws, in a grid (d2l's ``apply``).

Bounds: at most ``MAX_TILES`` tiles, and at most ``MAX_PIXELS`` pixels in the batch at any step of
the transform (the ``rows * cols`` copies of the image, then each transform's output, computed
from the transforms' output sizes before any pixel is touched). Transform sizes are bounded
separately by ``gpuaug.transforms.MAX_SIZE`` (65535 px per side).

Example:
    >>> import gpuaug as ga
    >>> from gpuaug.tools.samples import load_photo
    >>> picture = grid(load_photo("chelsea"), ga.RandomHorizontalFlip(), rows=1, cols=2)
    >>> picture.size[1] > 0
    True
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image

from gpuaug import transforms as T
from gpuaug.interop.torchvision import from_torchvision
from gpuaug.tools.samples import resolve_image

__all__ = ["MAX_PIXELS", "MAX_TILES", "grid", "resolve_device", "to_tensor_image"]

GAP = 4  # pixels between tiles
MAX_TILES = 256
"""Most tiles (``rows * cols``) in one grid."""
MAX_PIXELS = 2**27
"""Most pixels (all images of the batch together) at any step: 134 M, 0.4 GB as uint8 RGB, 1.6 GB as float32."""


def to_tensor_image(image: Image.Image | torch.Tensor | str) -> torch.Tensor:
    """A PIL image, a file path (or ``skimage:NAME``), or a ``[3, H, W]`` tensor as uint8 ``[3, H, W]``."""
    if isinstance(image, str):
        image = resolve_image(image)
    if isinstance(image, Image.Image):
        return torch.from_numpy(np.asarray(image.convert("RGB")).copy()).permute(2, 0, 1).contiguous()
    if isinstance(image, torch.Tensor) and image.ndim == 3:
        if image.is_floating_point():
            return (image.clamp(0, 1) * 255).round().to(torch.uint8)
        return image
    raise TypeError(f"image must be a PIL image, a path or a [3, H, W] tensor, got {type(image).__name__}")


def resolve_device(device: str | torch.device) -> torch.device:
    """``device`` as a ``torch.device`` that exists here: ``cpu``, or ``cuda[:N]`` with such a GPU.

    Raises:
        ValueError: one line, for an unknown device, or CUDA on a machine without that GPU.
    """
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"unknown device {device!r}; use 'cpu' or 'cuda' (or 'cuda:N')") from None
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"device {str(device)!r} is not supported by the preview; use 'cpu' or 'cuda'")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {str(device)!r}: no CUDA GPU is available here; use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"device {str(device)!r}: this machine has {torch.cuda.device_count()} CUDA GPU(s)")
    return device


def _check_budget(transform: T.Transform, count: int, height: int, width: int) -> None:
    """Refuse a grid whose batch would exceed ``MAX_PIXELS`` at any step, before allocating anything."""
    info = T.BatchInfo(count, torch.device("cpu"), ((height, width),) * count)
    steps = transform.transforms if isinstance(transform, T.Compose) else [transform]
    for step in [None, *steps]:
        if step is not None:
            info = step.output_sizes(info)
        pixels = sum(h * w for h, w in info.sizes)
        if pixels > MAX_PIXELS:
            where = "the input copies" if step is None else f"the output of {type(step).__name__}"
            size = "x".join(map(str, info.sizes[0]))
            raise ValueError(
                f"the preview would hold {pixels:,} pixels in {where} ({count} tiles of {size}); the limit is "
                f"{MAX_PIXELS:,}: use fewer rows/cols, a smaller image or smaller sizes"
            )


def _displayable(batch: torch.Tensor, transform: T.Transform) -> torch.Tensor:
    """uint8 ``[N, 3, H, W]`` for display: undo a final Normalize, clamp floats to [0, 1]."""
    if batch.dtype == torch.uint8:
        return batch
    last = transform.transforms[-1] if isinstance(transform, T.Compose) and transform.transforms else transform
    batch = batch.float()
    if last.fusion == "normalize":  # its description holds mean and std
        mean = torch.tensor(last.describe()["mean"], device=batch.device).view(1, -1, 1, 1)
        std = torch.tensor(last.describe()["std"], device=batch.device).view(1, -1, 1, 1)
        batch = batch * std + mean
    return (batch.clamp(0, 1) * 255).round().to(torch.uint8)


def grid(
    image: Image.Image | torch.Tensor | str,
    transform: Any,
    rows: int = 2,
    cols: int = 4,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> Image.Image:
    """Apply ``transform`` to ``rows * cols`` copies of ``image`` (one batch, one draw per copy).

    Args:
        image: PIL image, path, ``skimage:NAME`` or ``[3, H, W]`` tensor.
        transform: a gpuaug transform, or a torchvision one (converted with ``from_torchvision``).
        rows, cols: grid shape.
        seed: seeds the ``torch.Generator`` of the draw: same seed, same picture.
        device: where to run the batch (``cpu`` or ``cuda[:N]``).

    Returns:
        A PIL RGB image of the tiles, ``GAP`` pixels apart on white.

    Raises:
        ValueError: one line, for a grid beyond ``MAX_TILES``/``MAX_PIXELS``, or a device that is
            not here.
    """
    if rows < 1 or cols < 1:
        raise ValueError(f"rows and cols must be >= 1, got rows={rows}, cols={cols}")
    if isinstance(seed, bool) or not isinstance(seed, int) or not -(2**63) <= seed < 2**64:
        raise ValueError(f"seed must be an int in [-2**63, 2**64) (torch.manual_seed's range), got {seed!r}")
    if rows * cols > MAX_TILES:
        raise ValueError(f"rows * cols must be at most {MAX_TILES} tiles, got {rows} x {cols} = {rows * cols}")
    if not isinstance(transform, T.Transform):
        transform = from_torchvision(transform)
    device = resolve_device(device)
    picture = to_tensor_image(image)
    _check_budget(transform, rows * cols, *picture.shape[-2:])
    picture = picture.to(device)
    batch = picture.unsqueeze(0).repeat(rows * cols, 1, 1, 1)
    generator = torch.Generator(device=device).manual_seed(seed)
    tiles = _displayable(transform(batch, generator=generator), transform).cpu()
    _, channels, height, width = tiles.shape
    if channels == 1:
        tiles = tiles.expand(-1, 3, -1, -1)
    canvas = torch.full((3, rows * height + (rows - 1) * GAP, cols * width + (cols - 1) * GAP), 255, dtype=torch.uint8)
    for index in range(rows * cols):  # tiles of a picture, not a hot path
        row, col = divmod(index, cols)
        top, left = row * (height + GAP), col * (width + GAP)
        canvas[:, top : top + height, left : left + width] = tiles[index, :3]
    return Image.fromarray(canvas.permute(1, 2, 0).numpy())
