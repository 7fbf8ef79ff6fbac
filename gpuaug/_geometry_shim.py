"""TEMPORARY: the first geometric op's regions/rebase until Compose provides them (helper work)."""
from __future__ import annotations

import torch

from gpuaug import functional as F
from gpuaug import transforms as T


def _ready(pipeline) -> bool:
    return all(name in type(pipeline).__dict__ for name in ("first_geometric", "source_regions", "reduction_limit", "rebase"))


def _first(pipeline):
    for position, step in enumerate(pipeline.transforms):
        if isinstance(step, (T.RandomResizedCrop, T.Resize, T.CenterCrop)):
            return position, step
        if not isinstance(step, T.RandomHorizontalFlip):
            return None
    return None


def source_regions(pipeline, params, sizes):
    if _ready(pipeline):
        return pipeline.source_regions(params, sizes)
    found = _first(pipeline)
    whole = torch.cat([torch.zeros_like(sizes), sizes], dim=1)
    if found and isinstance(found[1], T.RandomResizedCrop):
        return params[f"{found[0]}.boxes"].to(torch.int64).clone()
    return whole


def reduction_limit(pipeline, params, sizes):
    if _ready(pipeline):
        return pipeline.reduction_limit(params, sizes)
    found = _first(pipeline)
    out = torch.ones(len(sizes), dtype=torch.float64)
    if found is None:
        return out
    position, step = found
    if isinstance(step, T.RandomResizedCrop):
        boxes = params[f"{position}.boxes"].double()
        return torch.minimum(boxes[:, 2] / step.size[0], boxes[:, 3] / step.size[1]).clamp(min=1)
    if isinstance(step, T.Resize):
        for row, (height, width) in enumerate(sizes.tolist()):
            rh, rw = F.resize_output_size(height, width, step.size)
            out[row] = max(1.0, min(height / rh, width / rw))
    return out


def rebase(pipeline, params, regions, decoded_sizes):
    if _ready(pipeline):
        return pipeline.rebase(params, regions, decoded_sizes)
    found = _first(pipeline)
    if found is None or not isinstance(found[1], T.RandomResizedCrop):
        return params
    key = f"{found[0]}.boxes"
    regions = regions.double()
    scale_y = decoded_sizes[:, 0].double() / regions[:, 2]
    scale_x = decoded_sizes[:, 1].double() / regions[:, 3]
    top, left, height, width = params[key].double().unbind(1)
    new_top = torch.floor((top - regions[:, 0]) * scale_y)
    new_left = torch.floor((left - regions[:, 1]) * scale_x)
    new_height = torch.clamp(torch.minimum(torch.round(height * scale_y), decoded_sizes[:, 0] - new_top), min=1)
    new_width = torch.clamp(torch.minimum(torch.round(width * scale_x), decoded_sizes[:, 1] - new_left), min=1)
    boxes = torch.stack([new_top, new_left, new_height, new_width], dim=1).to(torch.int64)
    return {**params, key: boxes}
