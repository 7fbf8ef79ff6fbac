"""Augment-only throughput: one decoded uint8 batch already on the device, same ops everywhere.

Ops (the fine-tuning recipe plus colour): RandomResizedCrop(224), RandomHorizontalFlip,
ColorJitter(0.4, 0.4, 0.4), Normalize(ImageNet) -> float32. Pipelines:

- ``gpuaug``: ``ga.Compose`` with its fused paths (one resampling, one colour + normalise pass);
- ``gpuaug-exact``: the same with ``fuse=False`` (op by op, torchvision's exact semantics);
- ``kornia-sequential``: ``kornia.augmentation.AugmentationSequential`` (float input; the uint8 ->
  float conversion is timed too);
- ``torchvision-v2-per-image``: ``torchvision.transforms.v2`` applied image by image (torchvision
  draws one parameter set per call, so per-sample draws need a loop), then stacked;
- ``pil-per-image`` (the baseline): PIL images through ``torchvision.transforms`` v1, as in a
  classic Dataset, then stacked.
"""

from __future__ import annotations

import argparse

import torch

import gpuaug as ga
from benchmarks.common import Measurement, gpuaug_recipe, measure_all, pil_recipe, save_run
from gpuaug.samples import photo_crops

BASELINE = "pil-per-image"
SOURCE_SIZE = (384, 512)  # ImageNet-like (the mean ImageNet image is about 400 x 350)


def make_batches(count: int, batch_size: int, device: torch.device, seed: int = 0) -> list[torch.Tensor]:
    """``count`` different uint8 batches of real-photo crops at ``SOURCE_SIZE`` (inputs rotate)."""
    photos = photo_crops(count * batch_size, seed=seed, short_side=(SOURCE_SIZE[0], SOURCE_SIZE[0] + 100))
    resized = ga.Compose([ga.Resize(SOURCE_SIZE[0]), ga.CenterCrop(SOURCE_SIZE)])(photos)
    return [chunk.to(device) for chunk in resized.split(batch_size)]


def pipelines(image_size: int, device: torch.device) -> dict[str, object]:
    import kornia.augmentation as K
    from torchvision.transforms import v2

    mean, std = ga.IMAGENET_MEAN, ga.IMAGENET_STD
    ours = gpuaug_recipe(image_size).transforms
    return {
        "gpuaug": ga.Compose(ours),
        "gpuaug-exact": ga.Compose(ours, fuse=False),
        "kornia-sequential": K.AugmentationSequential(
            K.RandomResizedCrop((image_size, image_size)),
            K.RandomHorizontalFlip(),
            K.ColorJitter(0.4, 0.4, 0.4, p=1.0),
            K.Normalize(torch.tensor(mean), torch.tensor(std)),
        ).to(device),
        "torchvision-v2-per-image": v2.Compose(
            [
                v2.RandomResizedCrop(image_size, antialias=True),
                v2.RandomHorizontalFlip(),
                v2.ColorJitter(0.4, 0.4, 0.4),
                v2.ToDtype(torch.float32, scale=True),
                v2.Normalize(mean, std),
            ]
        ),
        BASELINE: pil_recipe(image_size),
    }


def runner(name: str, pipeline, batches: list[torch.Tensor], pil_batches: list[list] | None, device: torch.device):
    """A function that pushes every batch through ``pipeline`` the way ``name`` needs, returning the image count."""
    count = sum(len(batch) for batch in batches)

    def per_image_pil() -> int:
        for batch in pil_batches:
            torch.stack([pipeline(image) for image in batch]).to(device)
        return count

    def per_image_tensor() -> int:
        for batch in batches:
            torch.stack([pipeline(image) for image in batch])
        return count

    def float_batch() -> int:
        for batch in batches:
            pipeline(batch.float().div_(255))
        return count

    def uint8_batch() -> int:
        for batch in batches:
            pipeline(batch)
        return count

    return {BASELINE: per_image_pil, "torchvision-v2-per-image": per_image_tensor, "kornia-sequential": float_batch}.get(
        name, uint8_batch
    )


def run(args: argparse.Namespace) -> list[Measurement]:
    from PIL import Image

    device = torch.device(args.device)
    batches = make_batches(2 if args.quick else 3, args.batch_size, device)
    pil_batches = [[Image.fromarray(image.permute(1, 2, 0).cpu().numpy()) for image in batch] for batch in batches]
    runners = {
        name: torch.inference_mode()(runner(name, pipeline, batches, pil_batches, device))
        for name, pipeline in pipelines(args.image_size, device).items()
    }
    measurements = measure_all("aug", runners, device, args.repeats, BASELINE)
    for item in measurements:
        item.extra["source_size"] = list(SOURCE_SIZE)
    return measurements


def main(args: argparse.Namespace) -> list[Measurement]:
    measurements = run(args)
    details = {
        "image_size": args.image_size,
        "source_size": list(SOURCE_SIZE),
        "torch_threads": torch.get_num_threads(),
        "ops": "RandomResizedCrop(224) + RandomHorizontalFlip + ColorJitter(0.4, 0.4, 0.4) + Normalize",
        "data": "photo crops from skimage.data, resized to 384x512, uint8",
    }
    save_run(args, "aug", details, measurements, BASELINE, f"augment-only, batch {args.batch_size}, {args.device}")
    return measurements
