"""See what an augmentation does: one image, many random draws, in a grid (d2l's ``apply``).

Example:
    >>> import gpuaug as ga
    >>> from gpuaug.samples import load_photo
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
from gpuaug.convert import from_torchvision
from gpuaug.samples import resolve_image

__all__ = ["grid", "to_tensor_image"]

GAP = 4  # pixels between tiles


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


def _displayable(batch: torch.Tensor, transform: T.Transform) -> torch.Tensor:
    """uint8 ``[N, 3, H, W]`` for display: undo a final Normalize, clamp floats to [0, 1]."""
    if batch.dtype == torch.uint8:
        return batch
    last = transform.transforms[-1] if isinstance(transform, T.Compose) and transform.transforms else transform
    batch = batch.float()
    if isinstance(last, T.Normalize):
        mean = torch.tensor(last.mean, device=batch.device).view(1, -1, 1, 1)
        std = torch.tensor(last.std, device=batch.device).view(1, -1, 1, 1)
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
        device: where to run the batch.

    Returns:
        A PIL RGB image of the tiles, ``GAP`` pixels apart on white.
    """
    if rows < 1 or cols < 1:
        raise ValueError(f"rows and cols must be >= 1, got rows={rows}, cols={cols}")
    if not isinstance(transform, T.Transform):
        transform = from_torchvision(transform)
    device = torch.device(device)
    picture = to_tensor_image(image).to(device)
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
