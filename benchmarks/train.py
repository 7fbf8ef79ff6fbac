"""Training fed by each loader against the same training on synthetic data already on the device.

A ResNet (resnet50 on CUDA, resnet18 at 112 px on the CPU unless ``--image-size`` says otherwise)
in bf16 autocast, channels-last, SGD: the ``ceiling`` is its images/s on random batches that
already sit on the device; each loader's row is the same steps fed by that loader (same ops as
``loader``: RandomResizedCrop + flip + ColorJitter(0.4, 0.4, 0.4) + Normalize), its
``fraction_of_ceiling`` and its ``data_wait_fraction``: the share of the training loop's time
spent waiting for the next batch (median over repeats). On CUDA: ResNet-50, batch 256 in the
suite, cuDNN autotuned during a warm-up repeat, ``torch.cuda.synchronize`` around every timed
repeat. On 2 CPU cores the loaders' workers compete with training for the cores, which is what
the fraction shows there.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time

import torch
import torchvision
from torch import nn

import gpuaug as ga
from benchmarks import data as bench_data
from benchmarks.common import Measurement, gpuaug_recipe, measure_all, pil_recipe, save_run, synchronize

CEILING = "synthetic-ceiling"


def _model(device: torch.device, classes: int) -> tuple[nn.Module, str]:
    name = "resnet50" if device.type == "cuda" else "resnet18"
    model = torchvision.models.get_model(name, weights=None, num_classes=classes)
    return model.to(device, memory_format=torch.channels_last), name


def run(args: argparse.Namespace) -> tuple[list[Measurement], dict]:
    from torchvision import datasets

    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    size = args.image_size if device.type == "cuda" or args.image_size != 224 else 112
    steps = (2 if args.quick else 6) if device.type == "cpu" else (8 if args.quick else 16)
    root = bench_data.ensure(args.data, args.count, args.seed, clean=args.clean)
    classes = len(ga.ImageFolder(root).classes)
    model, name = _model(device, classes)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    criterion = nn.CrossEntropyLoss()
    waits: dict[str, list[tuple[float, float]]] = {}

    def train_on(pipeline: str, batches) -> int:
        """``steps`` training steps on ``batches``; keeps (seconds waiting for batches, seconds in all)."""
        count, waited = 0, 0.0
        start = time.perf_counter()
        for _ in range(steps):
            asked = time.perf_counter()
            images, labels = next(batches)
            waited += time.perf_counter() - asked
            with torch.autocast(device.type, dtype=torch.bfloat16):
                loss = criterion(model(images), labels)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            count += len(labels)
        synchronize(device)
        waits.setdefault(pipeline, []).append((waited, time.perf_counter() - start))
        return count

    loaders: dict[str, object] = {}

    def forever(pipeline: str, make):
        """Endless batches of the loader ``make()`` builds at the first request: no loader works in
        the background (workers, a producer thread) while an earlier pipeline is timed."""
        loader = loaders[pipeline] = make()
        while True:
            yield from loader

    synthetic = [
        (
            torch.randn(args.batch_size, 3, size, size, device=device).contiguous(memory_format=torch.channels_last),
            torch.randint(0, classes, (args.batch_size,), device=device),
        )
        for _ in range(2)
    ]
    common = {"batch_size": args.batch_size, "num_workers": args.workers, "persistent_workers": args.workers > 0, "shuffle": True}

    def pil_loader():
        dataset = datasets.ImageFolder(root, transform=pil_recipe(size))
        return torch.utils.data.DataLoader(dataset, pin_memory=device.type == "cuda", drop_last=True, **common)

    def pil_batches():
        for images, labels in forever("pil-dataloader", pil_loader):
            yield images.to(device, non_blocking=True, memory_format=torch.channels_last), labels.to(device, non_blocking=True)

    transform = gpuaug_recipe(size)
    feeds = {
        CEILING: itertools.cycle(synthetic),
        "pil-dataloader": pil_batches(),
        "gpuaug": forever(
            "gpuaug", lambda: ga.GPULoader(ga.ImageFolder(root), device=device, transform=transform, drop_last=True, **common)
        ),
    }
    try:
        from gpuaug.dali import DALILoader

        feeds["dali"] = forever(
            "dali",
            lambda: DALILoader(
                root,
                args.batch_size,
                shuffle=True,
                drop_last=True,
                device=device,
                num_threads=max(1, args.workers),
                transform=transform,
            ),
        )
    except ImportError:
        pass

    runners = {pipeline: (lambda pipeline=pipeline, feed=feed: train_on(pipeline, feed)) for pipeline, feed in feeds.items()}
    failures: dict[str, str] = {}
    measurements = measure_all("train", runners, device, args.repeats, CEILING, failures)
    for item in measurements:
        item.extra["fraction_of_ceiling"] = item.ratio_to_baseline
        timed = waits.get(item.pipeline, [])[1:]  # the first call was the warm-up
        if timed:
            item.extra["data_wait_fraction"] = statistics.median(wait / total for wait, total in timed)
        decoder = getattr(loaders.get(item.pipeline), "decoder_name", None)
        if decoder is not None:
            item.extra["decoder"] = decoder
    return measurements, {
        "failures": failures,
        "model": name,
        "image_size": size,
        "steps_per_repeat": steps,
        "workers": args.workers,
        "amp": "bf16",
        "channels_last": True,
        "dataset": bench_data.describe(root),
    }


def main(args: argparse.Namespace) -> list[Measurement]:
    measurements, details = run(args)
    title = (
        f"training fed by each loader ({details['model']}, {details['image_size']} px, batch {args.batch_size}, {args.device})"
    )
    save_run(args, "train", details, measurements, CEILING, title)
    return measurements
