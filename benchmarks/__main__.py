"""``python -m benchmarks SUBCOMMAND``: gpuaug against its baselines, side by side, one run."""

from __future__ import annotations

import argparse
import sys

import torch


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    aug = commands.add_parser(
        "aug",
        help="augment-only: gpuaug vs Kornia AugmentationSequential vs torchvision v2 / PIL per image",
        description="Augment-only throughput on a decoded uint8 batch already on the device.",
    )
    aug.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu or cuda")
    aug.add_argument("--batch-size", type=int, default=64, help="images per batch (default 64)")
    aug.add_argument("--image-size", type=int, default=224, help="output side (default 224)")
    aug.add_argument("--repeats", type=int, default=5, help="timed repeats, median reported (default 5)")
    aug.add_argument("--quick", action="store_true", help="fewer batches and repeats (a smoke run)")
    aug.add_argument("--out", default="benchmark-out", help="folder for results.json and charts")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.quick:
        args.repeats = min(args.repeats, 2)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("error: --device cuda but no CUDA GPU is available", file=sys.stderr)
        return 2
    if args.command == "aug":
        from benchmarks import aug

        aug.main(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
