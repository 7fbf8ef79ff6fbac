"""``python -m benchmarks SUBCOMMAND``: gpuaug against its baselines, side by side, one run."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch


def _common(parser: argparse.ArgumentParser, batch_size: int) -> None:
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu or cuda")
    parser.add_argument("--batch-size", type=int, default=batch_size, help=f"images per batch (default {batch_size})")
    parser.add_argument("--image-size", type=int, default=224, help="output side (default 224; train on CPU: 112)")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats, median reported (default 5)")
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="DataLoader worker processes / DALI threads (default: CUDA the host's cores, at most 16; CPU 2)",
    )
    parser.add_argument("--data", default=None, help="your ImageFolder, read only (default: the generated set, cached)")
    parser.add_argument("--count", type=int, default=1000, help="images in the generated data set (default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated data set (default 0)")
    parser.add_argument("--clean", action="store_true", help="the generated set without tails (uniform JPEGs only)")
    parser.add_argument("--quick", action="store_true", help="fewer images and repeats (a smoke run)")
    parser.add_argument("--out", default="benchmark-out", help="folder for results.json and charts")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    data = commands.add_parser(
        "data", help="make the benchmark set (offline, from skimage photos; with a real set's tails unless --clean)"
    )
    data.add_argument("--out", default=None, help="new or empty folder to write (default: a cache folder)")
    data.add_argument("--count", type=int, default=1000, help="number of images (default 1000)")
    data.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    data.add_argument("--clean", action="store_true", help="uniform JPEGs only (the set before tails were added)")
    described = {
        "aug": "augment-only: gpuaug vs Kornia AugmentationSequential vs torchvision v2 / PIL per image",
        "loader": "files to batch: PIL DataLoader vs GPULoader (vs DALI) and the decode-only floor",
        "train": "a ResNet fed by each loader vs the same training on synthetic on-device data",
        "all": "aug, loader and train into one results.json",
    }
    for name, text in described.items():
        sub = commands.add_parser(name, help=text, description=text)
        _common(sub, 64)
        if name in ("loader", "all"):
            sub.add_argument("--skip-clean", action="store_true", help="loader: do not also run PIL and gpuaug on the clean set")
    report = commands.add_parser("report", help="Markdown tables (and target checks) from benchmarks/results/*.json")
    report.add_argument("--results-dir", default=str(Path(__file__).resolve().parent / "results"), help="result files")
    report.add_argument("--collect", default=None, help="first copy OUT/results.json + charts into the results folder")
    report.add_argument("--readme", default=None, help="write the tables into this README between the performance markers")
    return parser


def _print_targets(out: Path) -> None:
    from benchmarks.report import targets

    path = out / "results.json"
    record = json.loads(path.read_text())
    record["targets"] = targets(record)
    path.write_text(json.dumps(record, indent=2) + "\n")
    for check in record["targets"]:
        print(f"  target {check['target']}: {check['value']} (goal {check['goal']}) {'met' if check['met'] else 'MISSED'}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "quick", False):
        args.repeats = min(args.repeats, 2)
        args.count = min(args.count, 256)
    if getattr(args, "device", "cpu").startswith("cuda") and not torch.cuda.is_available():
        print("error: --device cuda but no CUDA GPU is available", file=sys.stderr)
        return 2
    if getattr(args, "workers", 0) is None:
        cores = os.cpu_count() or 1
        args.workers = min(16, cores) if args.device.startswith("cuda") else 2
    if getattr(args, "data", None) is not None and not Path(args.data).is_dir():
        print(f"error: --data {args.data}: not a folder (expected DATA/<class>/<images>)", file=sys.stderr)
        return 2
    if args.command == "data":
        from benchmarks import data

        data.main(args)
        return 0
    if args.command == "report":
        from benchmarks import report

        report.main(args)
        return 0
    from benchmarks import aug, loader, train

    chosen = {"aug": [aug], "loader": [loader], "train": [train], "all": [aug, loader, train]}[args.command]
    for module in chosen:
        print(f"== {module.__name__.split('.')[-1]}", flush=True)
        module.main(args)
    _print_targets(Path(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
