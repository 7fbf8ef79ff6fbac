"""``python -m benchmarks SUBCOMMAND``: gpuaug against its baselines, side by side, one run."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch

MAX_IMAGE_SIZE = 4096  # a batch of 64 float32 4096x4096 images is already 13 GB


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad argument is one line, ``prog: error: message``, exit status 2 (not the usage text)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


def _int_at_least(low: int, high: int | None = None):
    """An argparse ``type``: an int in ``[low, high]``, else ``ArgumentTypeError`` saying the range."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
        if value < low or (high is not None and value > high):
            wanted = f"in [{low}, {high}]" if high is not None else f">= {low}"
            raise argparse.ArgumentTypeError(f"must be {wanted}, got {value}")
        return value

    parse.__name__ = "int"
    return parse


positive_int = _int_at_least(1)
non_negative_int = _int_at_least(0)
image_size = _int_at_least(16, MAX_IMAGE_SIZE)


def device(text: str) -> str:
    """An argparse ``type``: ``cpu``, ``cuda`` or ``cuda:N``."""
    try:
        parsed = torch.device(text)
    except (RuntimeError, ValueError):
        parsed = None
    if parsed is None or parsed.type not in ("cpu", "cuda"):
        raise argparse.ArgumentTypeError(f"must be cpu, cuda or cuda:N, got {text!r}")
    return text


def _common(parser: argparse.ArgumentParser, batch_size: int) -> None:
    parser.add_argument("--device", type=device, default="cuda" if torch.cuda.is_available() else "cpu", help="cpu or cuda")
    parser.add_argument("--batch-size", type=positive_int, default=batch_size, help=f"images per batch (default {batch_size})")
    parser.add_argument(
        "--image-size", type=image_size, default=224, help=f"output side, 16 to {MAX_IMAGE_SIZE} (default 224; train on CPU: 112)"
    )
    parser.add_argument("--repeats", type=positive_int, default=5, help="timed repeats, median reported (default 5)")
    parser.add_argument(
        "--workers",
        type=non_negative_int,
        default=None,
        help="DataLoader worker processes / DALI threads (default: CUDA the host's cores, at most 16; CPU 2)",
    )
    parser.add_argument("--data", default=None, help="your ImageFolder, read only (default: the generated set, cached)")
    parser.add_argument("--count", type=positive_int, default=1000, help="images in the generated data set (default 1000)")
    parser.add_argument("--seed", type=non_negative_int, default=0, help="seed of the generated data set (default 0)")
    parser.add_argument("--clean", action="store_true", help="the generated set without tails (uniform JPEGs only)")
    parser.add_argument("--quick", action="store_true", help="fewer images and repeats (a smoke run)")
    parser.add_argument("--out", default="benchmark-out", help="folder for results.json and charts")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m benchmarks", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    data = commands.add_parser(
        "data", help="make the benchmark set (offline, from skimage photos; with a real set's tails unless --clean)"
    )
    data.add_argument("--out", default=None, help="new or empty folder to write (default: a cache folder)")
    data.add_argument("--count", type=positive_int, default=1000, help="number of images (default 1000)")
    data.add_argument("--seed", type=non_negative_int, default=0, help="random seed (default 0)")
    data.add_argument("--clean", action="store_true", help="uniform JPEGs only (the set before tails were added)")
    data.add_argument(
        "--shards", action="store_true", help="also write the set as WebDataset tar shards beside it (FOLDER-shards-SIZE)"
    )
    data.add_argument("--shard-size", default="64MB", help="largest shard with --shards (default 64MB)")
    described = {
        "aug": "augment-only: gpuaug vs Kornia AugmentationSequential vs torchvision v2 / PIL (and timm's recipe) per image",
        "loader": "files to batch: PIL (and timm's recipe) DataLoader vs GPULoader (vs DALI) and the decode-only floor",
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


def _has_images(folder: Path) -> bool:
    """Whether ``folder`` holds a class folder with a file in it (an ImageFolder); stops at the first file."""
    return any(child.is_dir() and any(path.is_file() for path in child.rglob("*")) for child in folder.iterdir())


def _writable_folder(path: Path) -> str | None:
    """Make ``path`` (an output folder) if need be; what is wrong with it as one, or None."""
    if path.exists() and not path.is_dir():
        return "is a file, not a folder"
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        return f"cannot create the folder ({error.strerror or error})"
    if not os.access(path, os.W_OK | os.X_OK):
        return "cannot write in this folder (read-only file system or no permission)"
    return None


def _check_paths(args: argparse.Namespace) -> str | None:
    """What is wrong with the paths of ``args`` (one line, naming the flag), or None; checked before any work."""
    if getattr(args, "data", None) is not None:
        data = Path(args.data)
        if not data.is_dir():
            return f"--data {args.data}: not a folder (expected DATA/<class>/<images>)"
        try:
            if not _has_images(data):
                return f"--data {args.data}: no class folder with files in it (expected DATA/<class>/<images>)"
        except OSError as error:
            return f"--data {args.data}: cannot read it ({error.strerror or error})"
    if args.command == "report":
        if args.collect is not None and not (Path(args.collect) / "results.json").is_file():
            return f"--collect {args.collect}: no results.json there (expected the --out folder of a run)"
        if args.readme is not None and not Path(args.readme).is_file():
            return f"--readme {args.readme}: no such file"
        return None
    if args.command == "data":
        if args.out is not None:
            out = Path(args.out)
            if out.exists() and not out.is_dir():
                return f"--out {args.out}: is a file, not a folder"
            from benchmarks.data import MARKER

            if out.is_dir() and not (out / MARKER).exists() and any(out.iterdir()):
                return f"--out {args.out}: is not empty and is not a benchmark set; choose an empty or new folder"
        return None
    problem = _writable_folder(Path(args.out))
    return f"--out {args.out}: {problem}" if problem else None


def main(argv: list[str] | None = None) -> int:
    """The exit status: 0, or 2 after one line on stderr for a bad argument (argparse's own errors included)."""
    try:
        return _main(build_parser(), argv)
    except SystemExit as stop:  # parser.error (one line, status 2), --help (0), report's "no markers" (a message)
        if stop.code is None or isinstance(stop.code, int):
            return stop.code or 0
        print(stop.code, file=sys.stderr)
        return 2


def _main(parser: argparse.ArgumentParser, argv: list[str] | None) -> int:
    args = parser.parse_args(argv)
    if getattr(args, "quick", False):
        args.repeats = min(args.repeats, 2)
        args.count = min(args.count, 256)
    if getattr(args, "device", "cpu").startswith("cuda") and not torch.cuda.is_available():
        parser.error(f"argument --device: {args.device}, but no CUDA GPU is available")
    if getattr(args, "workers", 0) is None:
        cores = os.cpu_count() or 1
        args.workers = min(16, cores) if args.device.startswith("cuda") else 2
    problem = _check_paths(args)
    if problem:
        parser.error(problem)
    if args.command == "data":
        from benchmarks import data

        try:
            data.main(args)
        except FileExistsError as error:  # another benchmark set there (the checks above cannot know which)
            parser.error(f"--out {args.out}: {error}")
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
