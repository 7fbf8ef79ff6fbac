"""Augment-only throughput on decoded images already on the device, same ops and same photos everywhere.

Ops (the fine-tuning recipe plus colour): RandomResizedCrop(224), RandomHorizontalFlip,
ColorJitter(0.4, 0.4, 0.4), Normalize(ImageNet) -> float32. The photos are the first
``batches x batch_size`` images of the benchmark data set (tails included: sizes from a few pixels
to 4800x3200), decoded as PIL would. Two inputs:

- **ragged**: the list of decoded ``[3, H, W]`` uint8 images of different sizes, which is what
  GPULoader hands its transform on CUDA;
- **uniform**: the same photos resized and centre-cropped to 384x512 in one ``[B, 3, 384, 512]``
  uint8 batch (what the earlier benchmark timed).

Pipelines:

- ``gpuaug-ragged``: ``ga.Compose`` on the ragged list;
- ``gpuaug-packed``: ``gpuaug.io.packed.PackedBatch`` of the same images (packed before timing, as a
  decoder writing into it would), when that module exists; ``gpuaug-packed+pack`` times the packing too;
  ``gpuaug-packed-apply`` only ``Compose.apply`` with parameters drawn beforehand (what the loader
  runs: its workers draw them on the CPU), so its kernel count is the pixel work alone;
- ``gpuaug``: ``ga.Compose`` with its fused paths on the uniform batch;
- ``gpuaug-exact``: the same with ``fuse=False`` (op by op, torchvision's exact semantics);
- ``kornia-sequential``: ``kornia.augmentation.AugmentationSequential`` on the uniform batch (float
  input; the uint8 -> float conversion is timed too);
- ``torchvision-v2-per-image``: ``torchvision.transforms.v2`` applied image by image (torchvision
  draws one parameter set per call) on the ragged images, then stacked;
- ``pil-per-image`` (the baseline): PIL images through ``torchvision.transforms`` v1, as in a
  classic Dataset, then stacked.

The training recipe of issue 16, RandomResizedCrop(224) + RandomHorizontalFlip + TrivialAugmentWide +
Normalize + RandomErasing(p=0.25) (``benchmarks.common.RECIPE_OPS``), on the same photos:

- ``gpuaug-policy-ragged``, ``gpuaug-policy-packed``, ``gpuaug-policy``: ``ga.Compose`` of the recipe
  on the ragged list, the packed batch and the uniform batch (every image its own op, magnitude, box);
- ``kornia-policy``: ``AugmentationSequential`` with Kornia's own ``kornia.augmentation.auto.TrivialAugment``
  (which picks one op per call for the whole batch) and ``RandomErasing``, on the uniform batch (float);
- ``torchvision-v2-policy-per-image``: the recipe in ``torchvision.transforms.v2``, image by image;
- ``timm-per-image``: ``timm.data.create_transform(224, is_training=True, auto_augment="rand-m9-mstd0.5",
  re_prob=0.25)`` on PIL images, image by image as a DataLoader's workers would, then stacked (timm's
  RandAugment applies 2 ops per image, TrivialAugmentWide 1; its rows are left out when timm is not installed).

On CUDA each gpuaug and Kornia row also reports its kernel launches per batch (torch profiler).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

import gpuaug as ga
from benchmarks import data as bench_data
from benchmarks.common import (
    ERASE_P,
    RECIPE_OPS,
    TIMM_OPS,
    Measurement,
    gpuaug_policy_recipe,
    gpuaug_recipe,
    kernel_launches,
    measure_all,
    pil_recipe,
    save_run,
    timm_recipe,
    torchvision_policy_recipe,
)
from gpuaug.io.decode import decode_cpu

BASELINE = "pil-per-image"
SOURCE_SIZE = (384, 512)  # the uniform batch: ImageNet-like (the mean ImageNet image is about 400 x 350)
RECIPE_ROWS = (
    "gpuaug-policy-ragged",
    "gpuaug-policy-packed",
    "gpuaug-policy",
    "kornia-policy",
    "torchvision-v2-policy-per-image",
)
TIMM_ROW = "timm-per-image"
INPUTS = {  # the input of each row not named by the rules in ``input_of``
    "gpuaug-ragged": "ragged",
    "gpuaug-policy-ragged": "ragged",
    "torchvision-v2-per-image": "ragged",
    "torchvision-v2-policy-per-image": "ragged",
    BASELINE: "ragged",
    TIMM_ROW: "ragged",
    "gpuaug-policy-packed": "packed",
}


def input_of(pipeline: str) -> str:
    """``ragged``, ``packed`` or ``uniform HxW``: what a row's pipeline is given."""
    if pipeline in INPUTS:
        return INPUTS[pipeline]
    return "packed" if pipeline.startswith("gpuaug-packed") else f"uniform {SOURCE_SIZE[0]}x{SOURCE_SIZE[1]}"


def timm_available() -> bool:
    try:
        import timm.data  # noqa: F401
    except ImportError:
        return False
    return True


def load_images(root: Path, count: int) -> tuple[list[torch.Tensor], list[str]]:
    """The first ``count`` images of ``root`` in name order (repeated if it has fewer), decoded as PIL would."""
    files = sorted(path for path in root.rglob("*") if path.is_file() and path.suffix.lower() in bench_data.IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"{root}: no image files")
    chosen = [files[index % len(files)] for index in range(count)]
    return [decode_cpu(path.read_bytes(), str(path)).contiguous() for path in chosen], [str(path) for path in chosen]


def make_inputs(
    images: list[torch.Tensor], batch_size: int, device: torch.device
) -> tuple[list[list[torch.Tensor]], list[torch.Tensor]]:
    """``(ragged batches, uniform batches)`` of the same photos on ``device``."""
    uniform_transform = ga.Compose([ga.Resize(SOURCE_SIZE[0]), ga.CenterCrop(SOURCE_SIZE)])
    ragged, uniform = [], []
    for start in range(0, len(images) - batch_size + 1, batch_size):
        chunk = images[start : start + batch_size]
        ragged.append([image.to(device) for image in chunk])
        uniform.append(uniform_transform([image.contiguous() for image in chunk]).contiguous().to(device))
    return ragged, uniform


def packed_type():
    """``gpuaug.io.packed.PackedBatch`` when that module exists, else None."""
    try:
        from gpuaug.io.packed import PackedBatch
    except ImportError:
        return None
    return PackedBatch


def pipelines(image_size: int, device: torch.device) -> dict[str, object]:
    import kornia.augmentation as K
    from torchvision.transforms import v2

    mean, std = ga.IMAGENET_MEAN, ga.IMAGENET_STD
    ours = gpuaug_recipe(image_size).transforms
    named = {
        "gpuaug-ragged": ga.Compose(ours),
        "gpuaug-packed": ga.Compose(ours),
        "gpuaug-packed+pack": ga.Compose(ours),
        "gpuaug-packed-apply": ga.Compose(ours),
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
        "gpuaug-policy-ragged": gpuaug_policy_recipe(image_size),
        "gpuaug-policy-packed": gpuaug_policy_recipe(image_size),
        "gpuaug-policy": gpuaug_policy_recipe(image_size),
        "kornia-policy": K.AugmentationSequential(
            K.RandomResizedCrop((image_size, image_size)),
            K.RandomHorizontalFlip(),
            K.auto.TrivialAugment(),
            K.Normalize(torch.tensor(mean), torch.tensor(std)),
            K.RandomErasing(p=ERASE_P),
        ).to(device),
        "torchvision-v2-policy-per-image": torchvision_policy_recipe(image_size),
    }
    if timm_available():
        named[TIMM_ROW] = timm_recipe(image_size)
    if packed_type() is None:
        del named["gpuaug-packed"], named["gpuaug-packed+pack"], named["gpuaug-packed-apply"], named["gpuaug-policy-packed"]
    return named


def batch_functions(name: str, pipeline, inputs: dict[str, list], generator: torch.Generator | None) -> list:
    """One function per batch that pushes it through ``pipeline`` the way ``name`` needs."""
    device = inputs["uniform"][0].device

    if name in (BASELINE, TIMM_ROW):
        return [lambda batch=batch: torch.stack([pipeline(image) for image in batch]).to(device) for batch in inputs["pil"]]
    if name in ("torchvision-v2-per-image", "torchvision-v2-policy-per-image"):
        return [lambda batch=batch: torch.stack([pipeline(image) for image in batch]) for batch in inputs["ragged"]]
    if name in ("kornia-sequential", "kornia-policy"):
        return [lambda batch=batch: pipeline(batch.float().div_(255)) for batch in inputs["uniform"]]
    if name in ("gpuaug-ragged", "gpuaug-policy-ragged"):
        return [lambda batch=batch: pipeline(batch, generator=generator) for batch in inputs["ragged"]]
    if name in ("gpuaug-packed", "gpuaug-policy-packed"):
        return [lambda batch=batch: pipeline(batch, generator=generator) for batch in inputs["packed"]]
    if name == "gpuaug-packed-apply":  # the loader's case: its workers drew the params on the CPU
        drawn = [(batch, pipeline.make_params(batch, generator)) for batch in inputs["packed"]]
        return [lambda batch=batch, params=params: pipeline.apply(batch, params) for batch, params in drawn]
    if name == "gpuaug-packed+pack":
        packed = packed_type()
        return [lambda batch=batch: pipeline(packed.from_images(batch), generator=generator) for batch in inputs["ragged"]]
    return [lambda batch=batch: pipeline(batch, generator=generator) for batch in inputs["uniform"]]


def run(args: argparse.Namespace) -> tuple[list[Measurement], dict]:
    from PIL import Image

    device = torch.device(args.device)
    batches = 2 if args.quick else 3
    root = bench_data.ensure(args.data, args.count, args.seed, clean=args.clean)
    images, paths = load_images(root, batches * args.batch_size)
    ragged, uniform = make_inputs(images, args.batch_size, device)
    inputs = {
        "ragged": ragged,
        "uniform": uniform,
        "pil": [
            [Image.fromarray(image.permute(1, 2, 0).numpy()) for image in images[i : i + args.batch_size]]
            for i in range(0, len(images), args.batch_size)
        ],
    }
    PackedBatch = packed_type()
    if PackedBatch is not None:
        inputs["packed"] = [PackedBatch.from_images(batch) for batch in ragged]
    generator = torch.Generator(device=device).manual_seed(0) if device.type == "cuda" else torch.Generator().manual_seed(0)
    per_batch = {
        name: batch_functions(name, pipeline, inputs, generator) for name, pipeline in pipelines(args.image_size, device).items()
    }
    count = len(uniform) * args.batch_size

    def runner(functions):
        def run_once() -> int:
            for function in functions:
                function()
            return count

        return torch.inference_mode()(run_once)

    failures: dict[str, str] = {}
    measurements = measure_all(
        "aug", {name: runner(f) for name, f in per_batch.items()}, device, args.repeats, BASELINE, failures
    )
    rates = {m.pipeline: m.images_per_sec for m in measurements}
    for item in measurements:
        item.extra["input"] = input_of(item.pipeline)
        recipe = item.pipeline in RECIPE_ROWS or item.pipeline == TIMM_ROW
        if recipe:
            item.extra["ops"] = TIMM_OPS if item.pipeline == TIMM_ROW else RECIPE_OPS
        kornia = rates.get("kornia-policy" if recipe else "kornia-sequential")
        if kornia:  # against Kornia on the same ops (its own policy for the recipe rows)
            item.extra["ratio_to_kornia"] = item.images_per_sec / kornia
        if recipe and rates.get(TIMM_ROW):
            item.extra["ratio_to_timm"] = item.images_per_sec / rates[TIMM_ROW]
        if item.pipeline.startswith(("gpuaug", "kornia")):
            try:
                with torch.inference_mode():
                    launches = kernel_launches(per_batch[item.pipeline][0], device)
            except Exception as error:  # noqa: BLE001 - a profiler problem must not cost the measurement
                launches = {"error": f"{type(error).__name__}: {error}"[:300]}
            item.extra["kernel_launches"] = launches  # None on the CPU: n/a
    heights = [image.shape[1] for image in images[:count]]
    widths = [image.shape[2] for image in images[:count]]
    kinds: dict[str, int] = {}
    for path in paths[:count]:
        for kind in bench_data.classify(path)[2]:
            kinds[kind] = kinds.get(kind, 0) + 1
    details = {
        "image_size": args.image_size,
        "source_size": list(SOURCE_SIZE),
        "torch_threads": torch.get_num_threads(),
        "ops": "RandomResizedCrop(224) + RandomHorizontalFlip + ColorJitter(0.4, 0.4, 0.4) + Normalize",
        "recipe_ops": RECIPE_OPS,
        "timm_ops": TIMM_OPS if timm_available() else "timm not installed: row left out",
        "data": f"the first {count} images of {root} decoded like PIL: the ragged list, and resized to "
        f"{SOURCE_SIZE[0]}x{SOURCE_SIZE[1]} for the uniform batch",
        "ragged_input": {
            "batches": len(ragged),
            "height": [min(heights), max(heights)],
            "width": [min(widths), max(widths)],
            "megapixels_per_batch": round(sum(h * w for h, w in zip(heights, widths)) / 1e6 / max(1, len(ragged)), 2),
            "oddities": kinds,
        },
        "packed_available": PackedBatch is not None,
        "dataset": bench_data.describe(root),
        "failures": failures,
    }
    return measurements, details


def main(args: argparse.Namespace) -> list[Measurement]:
    measurements, details = run(args)
    save_run(args, "aug", details, measurements, BASELINE, f"augment-only, batch {args.batch_size}, {args.device}")
    return measurements
