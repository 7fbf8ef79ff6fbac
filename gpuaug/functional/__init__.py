"""Batched image kernels: pure functions of images and per-sample parameters.

Every kernel takes a batch ``images`` of shape ``[B, C, H, W]`` (uint8 or floating point) and
per-sample parameters as tensors with a leading batch dimension on the images' device. Kernels draw
no random numbers, never write into their input, keep dtype and device, and loop over samples only
where the input is a ragged list (the first geometric op, documented where it happens).

Semantics follow ``torchvision.transforms.v2.functional`` applied image by image with the same
parameters, including torchvision's uint8 conventions (multiply in float32, clamp, truncate back to
uint8). The tests check every kernel against that reference.

Example:
    >>> images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    >>> adjust_brightness(images, torch.tensor([0.5, 1.0, 1.5, 2.0])).shape
    torch.Size([4, 3, 32, 32])
"""

from gpuaug.functional.base import *  # noqa: F403
from gpuaug.functional.base import __all__ as _base
from gpuaug.functional.color import *  # noqa: F403
from gpuaug.functional.color import __all__ as _color
from gpuaug.functional.geometry import *  # noqa: F403
from gpuaug.functional.geometry import __all__ as _geometry

__all__ = [*_base, *_geometry, *_color]
