"""End-to-end loader throughput: from JPEG files to a ready batch on the device.

Same files, same ops (RandomResizedCrop(224), RandomHorizontalFlip, ColorJitter(0.4, 0.4, 0.4),
Normalize(ImageNet) -> float32), same number of worker processes and batch size:

- ``pil-dataloader`` (the baseline): ``torch.utils.data.DataLoader`` over torchvision's
  ``ImageFolder`` with PIL + ``torchvision.transforms``, batches moved to the device;
- ``gpuaug``: ``ga.GPULoader`` (channels-last output);
- ``dali``: ``gpuaug.dali.DALILoader`` when NVIDIA DALI is installed;
- ``decode-only``: the same JPEGs read and decoded and nothing else (the floor): in the workers on
  the CPU; on CUDA, workers read bytes and the main process makes one batched nvJPEG call.

Workers are persistent and started during the warm-up epoch; each repeat is one full epoch.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

import gpuaug as ga
from benchmarks import data as bench_data
from benchmarks.common import Measurement, gpuaug_recipe, measure_all, pil_recipe, save_run
from gpuaug.decode import decode_cpu, decode_jpegs_cuda

BASELINE = "pil-dataloader"


class _DecodeOnly(torch.utils.data.Dataset):
    """Workers read (and on the CPU decode) the files, nothing else: the floor of any loader."""

    def __init__(self, samples, decode: bool):
        self.samples, self.decode = samples, decode

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, index):
        path = self.samples[index][0]
        with open(path, "rb") as file:
            data = file.read()
        return decode_cpu(data, path).shape[-1] if self.decode else torch.frombuffer(bytearray(data), dtype=torch.uint8)


def _decode_only(samples, device: torch.device, common: dict):
    """CPU: decode in the workers. CUDA: workers read bytes, one batched nvJPEG call per batch."""
    if device.type != "cuda":
        loader = torch.utils.data.DataLoader(_DecodeOnly(samples, decode=True), collate_fn=len, **common)
        return lambda: sum(loader)
    loader = torch.utils.data.DataLoader(_DecodeOnly(samples, decode=False), collate_fn=list, pin_memory=True, **common)

    def epoch() -> int:
        count = 0
        for encoded in loader:
            count += len(decode_jpegs_cuda(encoded, ["?"] * len(encoded), device))
        return count

    return epoch


def _epoch(loader, device: torch.device) -> int:
    count = 0
    for images, labels in loader:
        count += len(labels)
        if device.type == "cuda":
            images.sum()  # touch the batch on its stream, as a model would
    return count


def run(args: argparse.Namespace) -> tuple[list[Measurement], dict]:
    from torchvision import datasets

    device = torch.device(args.device)
    root = bench_data.ensure(Path(args.data) if args.data else None, args.count, args.seed)
    size = args.image_size
    common = {"batch_size": args.batch_size, "num_workers": args.workers, "persistent_workers": args.workers > 0}
    torchvision_set = datasets.ImageFolder(root, transform=pil_recipe(size))
    baseline = torch.utils.data.DataLoader(torchvision_set, shuffle=True, pin_memory=device.type == "cuda", **common)
    ours = ga.GPULoader(
        ga.ImageFolder(root),
        shuffle=True,
        device=device,
        **common,
        transform=gpuaug_recipe(size),
    )

    def moved(loader):
        def epoch():
            count = 0
            for images, labels in loader:
                images = images.to(device, non_blocking=True)
                count += len(labels)
            return count

        return epoch

    pipelines = {
        BASELINE: moved(baseline),
        "gpuaug": lambda: _epoch(ours, device),
        "decode-only": _decode_only(torchvision_set.samples, device, common),
    }
    try:
        from gpuaug.dali import DALILoader

        dali = DALILoader(
            root, args.batch_size, shuffle=True, device=device, num_threads=max(1, args.workers), transform=ours.transform
        )
        pipelines["dali"] = lambda: _epoch(dali, device)
    except ImportError:
        pass

    measurements = measure_all("loader", pipelines, device, args.repeats, BASELINE)
    floor = next(m.images_per_sec for m in measurements if m.pipeline == "decode-only")
    for item in measurements:
        item.extra["fraction_of_decode_only"] = item.images_per_sec / floor
    stats = ours.stats
    item = next(m for m in measurements if m.pipeline == "gpuaug")
    item.extra["stats_last_epoch"] = {
        "wait_seconds": stats.wait_seconds,
        "decode_seconds": stats.decode_seconds,
        "augment_seconds": stats.augment_seconds,
        "epoch_seconds": stats.epoch_seconds,
    }
    return measurements, bench_data.describe(root)


def main(args: argparse.Namespace) -> list[Measurement]:
    measurements, dataset = run(args)
    details = {
        "image_size": args.image_size,
        "workers": args.workers,
        "dtype": "float32",
        "dataset": dataset,
        "ops": "RandomResizedCrop(224) + RandomHorizontalFlip + ColorJitter(0.4, 0.4, 0.4) + Normalize",
    }
    title = f"loader end to end, {args.workers} workers, batch {args.batch_size}, {args.device}"
    save_run(args, "loader", details, measurements, BASELINE, title)
    return measurements
