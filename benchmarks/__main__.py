"""``python -m benchmarks SUBCOMMAND``: gpuaug against its baselines, side by side, one run."""

from __future__ import annotations

import argparse
import sys

import torch


def _common(parser: argparse.ArgumentParser, batch_size: int) -> None:
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu or cuda")
    parser.add_argument("--batch-size", type=int, default=batch_size, help=f"images per batch (default {batch_size})")
    parser.add_argument("--image-size", type=int, default=224, help="output side (default 224)")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats, median reported (default 5)")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader worker processes (default 2)")
    parser.add_argument("--data", default=None, help="ImageFolder of JPEGs (default: the cached `data` set)")
    parser.add_argument("--count", type=int, default=1000, help="images in the default data set (default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the default data set (default 0)")
    parser.add_argument("--quick", action="store_true", help="fewer images and repeats (a smoke run)")
    parser.add_argument("--out", default="benchmark-out", help="folder for results.json and charts")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    data = commands.add_parser("data", help="make the ImageNet-like JPEG benchmark set (offline, from skimage photos)")
    data.add_argument("--out", default=None, help="folder to write (default: a cache folder)")
    data.add_argument("--count", type=int, default=1000, help="number of images (default 1000)")
    data.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    aug = commands.add_parser(
        "aug",
        help="augment-only: gpuaug vs Kornia AugmentationSequential vs torchvision v2 / PIL per image",
        description="Augment-only throughput on a decoded uint8 batch already on the device.",
    )
    _common(aug, 64)
    loader = commands.add_parser(
        "loader",
        help="files to batch: PIL DataLoader vs GPULoader (vs DALI) and the decode-only floor",
        description="End-to-end loader throughput on the same JPEG files with the same ops and workers.",
    )
    _common(loader, 64)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "quick", False):
        args.repeats = min(args.repeats, 2)
        args.count = min(args.count, 256)
    if getattr(args, "device", "cpu").startswith("cuda") and not torch.cuda.is_available():
        print("error: --device cuda but no CUDA GPU is available", file=sys.stderr)
        return 2
    if args.command == "data":
        from benchmarks import data

        data.main(args)
    elif args.command == "aug":
        from benchmarks import aug

        aug.main(args)
    elif args.command == "loader":
        from benchmarks import loader

        loader.main(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
