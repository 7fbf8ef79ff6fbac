"""What every benchmark shares: the environment record, timing, results files and charts."""

from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch


def pil_recipe(size: int):
    """The baseline's transforms: PIL + torchvision, RandomResizedCrop + flip + ColorJitter(0.4, 0.4, 0.4) + Normalize."""
    from torchvision import transforms as v1

    import gpuaug as ga

    return v1.Compose(
        [
            v1.RandomResizedCrop(size),
            v1.RandomHorizontalFlip(),
            v1.ColorJitter(0.4, 0.4, 0.4),
            v1.ToTensor(),
            v1.Normalize(ga.IMAGENET_MEAN, ga.IMAGENET_STD),
        ]
    )


def gpuaug_recipe(size: int):
    """The same ops as ``pil_recipe`` in gpuaug."""
    import gpuaug as ga

    return ga.Compose(
        [
            ga.RandomResizedCrop(size),
            ga.RandomHorizontalFlip(),
            ga.ColorJitter(0.4, 0.4, 0.4),
            ga.Normalize(ga.IMAGENET_MEAN, ga.IMAGENET_STD),
        ]
    )


RECIPE_OPS = "RandomResizedCrop + RandomHorizontalFlip + TrivialAugmentWide + Normalize + RandomErasing(p=0.25)"
"""The training recipe of issue 16 (torchvision's reference recipe shape), as gpuaug, Kornia and torchvision v2 run it."""
TIMM_OPS = "timm create_transform(is_training=True, auto_augment='rand-m9-mstd0.5', re_prob=0.25)"
"""timm's recipe, the anchor users know: RandomResizedCrop + flip + RandAugment(n=2, m=9, mstd=0.5) + Normalize + erasing."""
ERASE_P = 0.25  # timm's re_prob above, so that both recipes erase as often


def gpuaug_policy_recipe(size: int):
    """crop + flip + TrivialAugmentWide + Normalize + RandomErasing in gpuaug (every image its own op, magnitude, box)."""
    import gpuaug as ga

    return ga.Compose(
        [
            ga.RandomResizedCrop(size),
            ga.RandomHorizontalFlip(),
            ga.TrivialAugmentWide(),
            ga.Normalize(ga.IMAGENET_MEAN, ga.IMAGENET_STD),
            ga.RandomErasing(p=ERASE_P),
        ]
    )


def torchvision_policy_recipe(size: int):
    """The same recipe in torchvision v2, for one image per call (v2 draws one op for a whole call)."""
    from torchvision.transforms import v2

    import gpuaug as ga

    return v2.Compose(
        [
            v2.RandomResizedCrop(size, antialias=True),
            v2.RandomHorizontalFlip(),
            v2.TrivialAugmentWide(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(ga.IMAGENET_MEAN, ga.IMAGENET_STD),
            v2.RandomErasing(p=ERASE_P),
        ]
    )


def timm_recipe(size: int):
    """timm's training transform (PIL image in, normalised float tensor out); only ``timm.data``, no weights."""
    from timm.data import create_transform

    return create_transform(size, is_training=True, auto_augment="rand-m9-mstd0.5", re_prob=ERASE_P)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU: {cpu_name()}"


def _version(module: str) -> str | None:
    try:
        return __import__(module, fromlist=["__version__"]).__version__
    except Exception:  # noqa: BLE001 - any import failure means "not available"
        return None


PROJECT_ROOT = Path(__file__).resolve().parent.parent


def git_commit(root: Path = PROJECT_ROOT) -> str:
    """This project's commit: ``$GPUAUG_COMMIT`` when set (a copy made elsewhere, as on the lent GPU
    machine, whose ``.git`` may be stale or absent), else ``git -C root`` when ``root`` is its own
    repository (never a folder above it), else "unknown"."""
    if os.environ.get("GPUAUG_COMMIT", "").strip():
        return os.environ["GPUAUG_COMMIT"].strip()
    if (root / ".git").exists():
        try:
            commit = subprocess.run(
                ["git", "-C", str(root), "rev-parse", "--short=10", "HEAD"], capture_output=True, text=True, timeout=10
            ).stdout.strip()
            if commit:
                return commit
        except (OSError, subprocess.SubprocessError):
            pass
    return "unknown"


def environment(device: torch.device) -> dict[str, Any]:
    """The record BENCHMARKS.md asks for: date, commit, device, CPU, versions."""
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "commit": git_commit(),
        "device": device_name(device),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "torchvision": _version("torchvision"),
        "kornia": _version("kornia"),
        "dali": _version("nvidia.dali"),
        "nvimgcodec": _version("nvidia.nvimgcodec"),
        "triton": _version("triton"),
        "python": platform.python_version(),
    }


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class Measurement:
    """Images per second of one pipeline over ``repeats`` timed runs (after warm-up)."""

    benchmark: str
    pipeline: str
    images_per_sec: float
    min: float
    max: float
    repeats: int
    images_per_repeat: int
    ratio_to_baseline: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        record = asdict(self)
        record.update(record.pop("extra"))
        return record


def measure_all(
    benchmark: str,
    pipelines: dict[str, Callable[[], int]],
    device: torch.device,
    repeats: int,
    baseline: str,
    failures: dict[str, str] | None = None,
) -> list[Measurement]:
    """Time every pipeline (the median of ``repeats`` runs, with min and max), ratios against ``baseline``.

    The repeats are interleaved: after one warm-up run of each pipeline, every round runs each once.
    A slow spell of the machine (another process, a frequency change) then falls on all pipelines
    alike rather than on those timed during it, so the ratios between pipelines (what the targets
    are) hold within one run. A pipeline that raises is left out from then on and its error kept in
    ``failures`` (``"Type: message"``), so one broken path (say a CUDA out-of-memory) does not cost
    the other measurements.
    """
    live = dict(pipelines)
    rates: dict[str, list[float]] = {name: [] for name in pipelines}
    images: dict[str, int] = {}

    def run(name: str, timed: bool) -> None:
        try:
            synchronize(device)
            start = time.perf_counter()
            count = live[name]()
            synchronize(device)
        except Exception as error:  # noqa: BLE001 - recorded, printed, and the run goes on
            message = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"[:500]
            print(f"  {benchmark} {name}: FAILED {message}", flush=True)
            if failures is not None:
                failures[name] = message
            if device.type == "cuda":
                torch.cuda.empty_cache()
            del live[name]
            return
        if timed:
            rates[name].append(count / (time.perf_counter() - start))
            images[name] = count

    for name in list(live):
        run(name, timed=False)
    for _ in range(repeats):
        for name in list(live):
            run(name, timed=True)
    measurements = []
    for name in live:
        values = rates[name]
        median = statistics.median(values)
        measurements.append(Measurement(benchmark, name, median, min(values), max(values), repeats, images[name]))
        print(f"  {benchmark} {name}: {measurements[-1].images_per_sec:.1f} img/s", flush=True)
    add_ratios(measurements, baseline)
    return measurements


def kernel_launches(run_batch: Callable[[], object], device: torch.device, batches: int = 2) -> dict[str, float] | None:
    """CUDA kernels (and memory copies/sets) per call of ``run_batch``, counted with the torch profiler.

    ``run_batch`` should already be warmed up. On anything but CUDA: None (reported as n/a).
    """
    if device.type != "cuda":
        return None
    from torch.profiler import ProfilerActivity, profile

    synchronize(device)
    with profile(activities=[ProfilerActivity.CUDA]) as profiler:
        for _ in range(batches):
            run_batch()
        synchronize(device)
    kernels = copies = 0
    for event in profiler.events():
        if event.device_type != torch.autograd.DeviceType.CUDA:
            continue
        if event.name.startswith(("Memcpy", "Memset")) or "memcpy" in event.name.lower() or "memset" in event.name.lower():
            copies += 1
        else:
            kernels += 1
    return {"kernels_per_batch": kernels / batches, "copies_per_batch": copies / batches}


def save_run(
    args: Any, benchmark: str, details: dict[str, Any], measurements: list[Measurement], baseline: str, title: str
) -> None:
    """Write ``OUT/results.json`` (config: device, batch size, repeats and ``details``), the chart
    ``OUT/<benchmark>.png`` and print the table."""
    out = Path(args.out)
    config = {benchmark: {"device": args.device, "batch_size": args.batch_size, "repeats": args.repeats, **details}}
    write_results(out, torch.device(args.device), config, measurements)
    bar_chart(out / f"{benchmark}.png", title, measurements, baseline)
    print(format_table(measurements, baseline))


def add_ratios(measurements: list[Measurement], baseline: str) -> None:
    reference = next((m.images_per_sec for m in measurements if m.pipeline == baseline), None)
    for item in measurements:
        item.ratio_to_baseline = None if reference is None else item.images_per_sec / reference


def format_table(measurements: list[Measurement], baseline: str) -> str:
    lines = [f"{'benchmark':<10} {'pipeline':<32} {'img/s':>10} {'min':>10} {'max':>10} {'x ' + baseline:>22}"]
    for item in measurements:
        ratio = "" if item.ratio_to_baseline is None else f"{item.ratio_to_baseline:.2f}x"
        rates = f"{item.images_per_sec:>10.1f} {item.min:>10.1f} {item.max:>10.1f}"
        lines.append(f"{item.benchmark:<10} {item.pipeline:<32} {rates} {ratio:>22}")
    return "\n".join(lines)


def write_results(out: Path, device: torch.device, config: dict[str, Any], measurements: list[Measurement]) -> Path:
    """Merge into ``out/results.json`` (one file per run folder, one entry per benchmark+pipeline)."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.json"
    record: dict[str, Any] = {"env": environment(device), "config": {}, "results": []}
    if path.exists():
        previous = json.loads(path.read_text())
        record["config"] = previous.get("config", {})
        keys = {(m.benchmark, m.pipeline) for m in measurements}
        record["results"] = [r for r in previous.get("results", []) if (r["benchmark"], r["pipeline"]) not in keys]
    record["config"].update(config)
    record["results"].extend(m.as_dict() for m in measurements)
    path.write_text(json.dumps(record, indent=2) + "\n")
    return path


def bar_chart(path: Path, title: str, measurements: list[Measurement], baseline: str) -> Path:
    """Images/s per pipeline, the ratio to ``baseline`` printed on each bar."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, axis = plt.subplots(figsize=(8, 0.6 * len(measurements) + 1.4))
    names = [m.pipeline for m in measurements]
    rates = [m.images_per_sec for m in measurements]
    errors = [[m.images_per_sec - m.min for m in measurements], [m.max - m.images_per_sec for m in measurements]]
    colours = ["#4c72b0" if name.startswith("gpuaug") else "#999999" for name in names]
    axis.barh(names, rates, xerr=errors, color=colours, capsize=3)
    for index, item in enumerate(measurements):
        if item.ratio_to_baseline is not None:
            axis.text(item.max, index, f"  {item.ratio_to_baseline:.2f}x", va="center", fontsize=9)
    axis.invert_yaxis()
    axis.set_xlabel(f"images / s (median; bars: min-max; ratios vs {baseline})")
    axis.set_title(title, fontsize=10)
    axis.set_xlim(0, max(m.max for m in measurements) * 1.2)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
