"""The torch executor: runs a plan's stages with torch kernels (the reference for every other executor).

* ``resample``: flips around a crop join its resampling (a flip *before* the crop mirrors the
  box, which is exact): one ``functional.resized_crop``;
* ``color``: a run of jitter (no HSV hue), grayscale and flips that ends in a float cast and/or
  a normalisation becomes one affine pass (``functional.fused_color_normalize``; flips in it run
  on the batch, exactly);
* ``single``: the transform's own ``apply``.

A stage that needs a batch on images that still differ in size (after ``Resize(int)``) runs image
by image.

Members are duck-typed (``fusion``, ``accepts_list``, ``apply``, ``contribute``): this module reads
descriptions, it never imports the transforms.

Example:
    >>> from gpuaug.fusion.plan import Stage
    >>> class Double:
    ...     fusion, accepts_list = None, False
    ...     def apply(self, images, params): return images * 2
    >>> run([Stage("single", (0,))], [Double()], torch.ones(1, 1, 1, 1), [{}]).item()
    2.0
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor

from gpuaug import functional as F
from gpuaug.fusion.ops import FusedOps, combine, mirror_boxes
from gpuaug.fusion.plan import Stage

__all__ = ["run"]


def run(stages: Sequence[Stage], transforms: Sequence[Any], images: Any, params: Sequence[dict]) -> Tensor | list[Tensor]:
    """Run ``stages`` of ``transforms`` on ``images`` (a batch or a ragged list); ``params[i]`` are
    transform ``i``'s own params. A list comes back only where the sizes still differ at the end."""
    for stage in stages:
        takes_list = stage.kind == "resample" or (stage.kind == "single" and transforms[stage.members[0]].accepts_list)
        if not isinstance(images, Tensor) and not takes_list:
            images = F.as_batch(images)  # one size: one batch; still ragged: image by image
            if not isinstance(images, Tensor):
                images = [
                    _stage(stage, transforms, image.unsqueeze(0), _rows(params, stage, row))[0]
                    for row, image in enumerate(images)
                ]
                continue
        images = _stage(stage, transforms, images, params)
    return F.as_batch(images)


def _rows(params: Sequence[dict], stage: Stage, row: int) -> list[dict]:
    own = list(params)
    for index in stage.members:
        own[index] = {key: value[row : row + 1] for key, value in params[index].items()}
    return own


def _stage(stage: Stage, transforms: Sequence[Any], images: Any, params: Sequence[dict]) -> Tensor | list[Tensor]:
    members = [(transforms[index], params[index]) for index in stage.members]
    if stage.kind == "resample":
        return _resample(images, members)
    if stage.kind == "color":
        return _color(images, members)
    transform, own = members[0]
    F.check_images(images, type(transform).__name__, allow_list=transform.accepts_list)
    return transform.apply(images, own)


def _resample(images: Any, members: list[tuple[Any, dict]]) -> Tensor:
    sizes = F.image_sizes(images)
    ops = FusedOps(tuple(sizes))
    for transform, own in members:
        transform.contribute(ops, own)
    boxes = ops.boxes
    if ops.hflips_before or ops.vflips_before:
        boxes = mirror_boxes(boxes, sizes, combine(ops.hflips_before, "xor"), combine(ops.vflips_before, "xor"))
    hflip, vflip = combine(ops.hflips, "xor"), combine(ops.vflips, "xor")
    return F.resized_crop(images, boxes, ops.size, hflip, vflip, antialias=ops.antialias)


def _color(images: Tensor, members: list[tuple[Any, dict]]) -> Tensor:
    F.check_images(images, "Compose (colour and normalisation)", rgb=True)
    ops = FusedOps(())
    for transform, own in members:
        if transform.fusion == "flip":  # exact on a batch, here
            images = transform.apply(images, own)
        else:
            transform.contribute(ops, own)
    return F.fused_color_normalize(images, **ops.color_arguments(images.dtype))
