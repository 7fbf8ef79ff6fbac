"""Fine-tune a ResNet on an ImageFolder, fed by gpuaug. One file, read top to bottom.

Sections: setup (processes, device, precision) - data - model - optimizer and schedule -
checkpoint - the loop - evaluation and outputs. ``run(config)`` returns the last epoch's metrics.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import math
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, Sampler

import gpuaug as ga
from finetune import demo
from finetune.config import Config, ConfigError, RunError
from finetune.model import build_model, parameter_groups, pretrained_available

CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.jsonl"
CHECK_LOSS_EVERY = 50  # steps between reads of the running loss (one host sync each) to stop a diverged run early
# For the tests only: the process SIGKILLs itself right after writing the mid-epoch checkpoint of this optimizer step
KILL_AFTER_STEP = "FINETUNE_TEST_KILL_AFTER_STEP"


# ================================================================================================
# Setup: processes, device, precision
# ================================================================================================
@dataclasses.dataclass
class Runtime:
    rank: int
    world: int
    local_rank: int
    device: torch.device
    amp_dtype: torch.dtype | None

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup(config: Config) -> Runtime:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    amp = config.amp if config.amp != "auto" else ("bf16" if device.type == "cuda" else "off")
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "off": None}[amp]
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    return Runtime(rank, world, local_rank, device, amp_dtype)


def all_sum(values: torch.Tensor, runtime: Runtime) -> torch.Tensor:
    if runtime.world > 1:
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


# ================================================================================================
# Data
# ================================================================================================
def find_splits(root: Path) -> tuple[Path, Path, list[str]]:
    """``train/`` and ``test/`` (or ``val/``) under ``root``, with the same class folders."""
    if not root.is_dir():
        raise ConfigError(f"--data {root}: no such folder")
    train = root / "train"
    test = next((root / name for name in ("test", "val") if (root / name).is_dir()), None)
    if not train.is_dir():
        raise ConfigError(f"--data {root}: no train/ folder (expected {root}/train/<class>/... and {root}/test/<class>/...)")
    if test is None:
        raise ConfigError(f"--data {root}: no test/ or val/ folder next to train/")
    train_classes = sorted(entry.name for entry in train.iterdir() if entry.is_dir())
    test_classes = sorted(entry.name for entry in test.iterdir() if entry.is_dir())
    if len(train_classes) < 2:
        found = f"one class folder ({train_classes[0]})" if train_classes else "no class folders"
        raise ConfigError(f"--data {root}: train/ has {found}; a classifier needs at least 2 classes, one folder each")
    if train_classes != test_classes:
        only_train = sorted(set(train_classes) - set(test_classes))
        only_test = sorted(set(test_classes) - set(train_classes))
        raise ConfigError(
            f"--data {root}: class folders differ between train/ and {test.name}/ "
            f"(only in train: {only_train or 'none'}; only in {test.name}: {only_test or 'none'})"
        )
    return train, test, train_classes


class ShardSampler(Sampler):
    """Every ``world``-th index from ``rank``: disjoint shards without padding (exact evaluation)."""

    def __init__(self, size: int, rank: int, world: int) -> None:
        self.indices = list(range(rank, size, world))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


class TorchLoader:
    """The baseline: a DataLoader over torchvision's ImageFolder with PIL transforms, moved to the device."""

    def __init__(self, loader: DataLoader, device: torch.device, channels_last: bool) -> None:
        self.loader, self.device, self.channels_last = loader, device, channels_last
        self.sampler = loader.sampler

    def __len__(self) -> int:
        return len(self.loader)

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def __iter__(self):
        memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        for images, labels in self.loader:
            yield images.to(self.device, non_blocking=True, memory_format=memory_format), labels.to(self.device)


def make_loaders(config: Config, train_dir: Path, test_dir: Path, runtime: Runtime, generator: torch.Generator):
    """Train and test loaders of the chosen kind, the same recipe and sharding for all three."""
    mean, std = ga.IMAGENET_MEAN, ga.IMAGENET_STD
    size, test_size = config.image_size, config.test_resize
    policy = {"trivialaugment": ga.TrivialAugmentWide, "randaugment": ga.RandAugment, "autoaugment": ga.AutoAugment}.get(
        config.auto_augment
    )
    policies = [policy()] if policy else []
    erasing = [ga.RandomErasing(config.random_erasing)] if config.random_erasing > 0 else []
    train_transform = ga.Compose(
        [ga.RandomResizedCrop(size), ga.RandomHorizontalFlip(), *policies, ga.Normalize(mean, std), *erasing]
    )
    test_transform = ga.Compose([ga.Resize(test_size), ga.CenterCrop(size), ga.Normalize(mean, std)])
    batch, workers, device = config.batch_size, config.workers, runtime.device
    if config.loader == "dali":
        try:
            from gpuaug.dali import DALILoader
        except ImportError as error:
            raise ConfigError(f"--loader dali: {error}") from None
        common = {
            "device": device,
            "num_threads": max(1, workers),
            "shard_id": runtime.rank,
            "num_shards": runtime.world,
            "channels_last": config.channels_last,
        }
        train = DALILoader(train_dir, batch, shuffle=True, drop_last=True, transform=train_transform, seed=config.seed, **common)
        test = DALILoader(test_dir, batch, transform=test_transform, seed=config.seed, **common)
        return train, test, len(train.source)  # the folder DALILoader already scanned
    if config.loader == "gpu":
        train_set, test_set = ga.ImageFolder(train_dir), ga.ImageFolder(test_dir)
    else:
        from torchvision import datasets
        from torchvision import transforms as tv

        train_set = datasets.ImageFolder(
            train_dir,
            transform=tv.Compose(
                [tv.RandomResizedCrop(size), tv.RandomHorizontalFlip(), *[getattr(tv, type(t).__name__)() for t in policies]]
                + [tv.ToTensor(), tv.Normalize(mean, std), *[tv.RandomErasing(config.random_erasing) for _ in erasing]]
            ),
        )
        test_set = datasets.ImageFolder(
            test_dir, transform=tv.Compose([tv.Resize(test_size), tv.CenterCrop(size), tv.ToTensor(), tv.Normalize(mean, std)])
        )
    train_sampler = (
        DistributedSampler(train_set, runtime.world, runtime.rank, shuffle=True, seed=config.seed) if runtime.world > 1 else None
    )
    test_sampler = ShardSampler(len(test_set), runtime.rank, runtime.world)
    # training drops the last partial batch (as the reference recipes do): a batch of one image cannot go through
    # BatchNorm in training mode; evaluation keeps every image
    common = {"num_workers": workers, "generator": generator, "drop_last": True}
    if config.loader == "gpu":
        options = {"device": device, "channels_last": config.channels_last}
        train = ga.GPULoader(
            train_set, batch, shuffle=train_sampler is None, sampler=train_sampler, transform=train_transform, **common, **options
        )
        test = ga.GPULoader(test_set, batch, sampler=test_sampler, transform=test_transform, num_workers=workers, **options)
    else:
        pin = device.type == "cuda"
        train = TorchLoader(
            DataLoader(train_set, batch, shuffle=train_sampler is None, sampler=train_sampler, pin_memory=pin, **common),
            device,
            config.channels_last,
        )
        test = TorchLoader(
            DataLoader(test_set, batch, sampler=test_sampler, num_workers=workers, pin_memory=pin), device, config.channels_last
        )
    return train, test, len(train_set)


# ================================================================================================
# Optimizer and schedule
# ================================================================================================
def make_schedule(optimizer: torch.optim.Optimizer, config: Config, steps_per_epoch: int):
    """Per-step multiplier: linear warm-up, then cosine to 0, a x0.1 step at 50 % and 75 %, or flat."""
    total = max(1, config.epochs * steps_per_epoch)
    warmup = int(config.warmup_epochs * steps_per_epoch)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        if config.schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
        if config.schedule == "step":
            return 0.1 ** ((progress >= 0.5) + (progress >= 0.75))
        return 1.0

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


# ================================================================================================
# Checkpoint
# ================================================================================================
def write_atomically(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Write ``path`` through ``path.tmp`` beside it, then ``os.replace``: a crash leaves the old file whole.

    Args:
        path: the file to (re)write.
        write: writes the whole content into the open binary file it is given.

    Raises:
        RunError: the file system refused (e.g. the disk is full); the ``.tmp`` is removed, the old file kept.

    Example: ``write_atomically(Path("run/metrics.jsonl"), lambda file: file.write(b"{}\\n"))``
    """
    temporary = path.with_name(path.name + ".tmp")
    try:
        # through a Python file object: a full disk raises OSError(ENOSPC) here, where torch.save(state, path)
        # says "inline_container.cc ... unexpected pos"
        with open(temporary, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())  # the bytes on disk before the name points at them
        os.replace(temporary, path)
    except BaseException as error:  # KeyboardInterrupt included: no half-written .tmp left behind
        with contextlib.suppress(OSError):  # e.g. a read-only file system: the cleanup's error must not hide the real one
            temporary.unlink(missing_ok=True)
        if not isinstance(error, OSError) and not is_failed_write(error):
            raise
        try:
            kept = f"the previous {path.name} is kept" if path.exists() else f"no {path.name} was written"
        except OSError:
            kept = f"the previous {path.name}, if any, is kept"
        if isinstance(error, OSError):
            reason = error.strerror or str(error)
            full = error.errno in (errno.ENOSPC, errno.EDQUOT)
        else:  # torch.save's own writer turns the file's OSError(ENOSPC) into a RuntimeError ("... unexpected pos ...")
            reason = f"the write failed part-way, most likely no space left on the device ({first_line(error)})"
            full = True
        hint = "; free some space and resume with --resume" if full else ""
        raise RunError(f"cannot write {path}: {reason}; {kept}{hint}") from None


# what torch.save's C++ zip writer (PyTorchStreamWriter) says when the file it writes to fails
TORCH_WRITE_FAILURES = ("unexpected pos", "PytorchStreamWriter failed", "file write failed")


def is_failed_write(error: BaseException) -> bool:
    """Whether ``error`` is torch.save's RuntimeError for a write the file refused (e.g. a full disk)."""
    return isinstance(error, RuntimeError) and any(marker in str(error) for marker in TORCH_WRITE_FAILURES)


def first_line(error: BaseException, limit: int = 120) -> str:
    """The first non-blank line of ``error``'s message, cut to ``limit`` characters (C++ messages run long)."""
    line = next((line.strip() for line in str(error).splitlines() if line.strip()), type(error).__name__)
    return line if len(line) <= limit else line[: limit - 3] + "..."


def save_checkpoint(path: Path, state: dict) -> None:
    """``torch.save`` through :func:`write_atomically`; ``RunError`` (old checkpoint intact) if the disk is full."""
    write_atomically(path, lambda file: torch.save(state, file))


def write_metrics(path: Path, rows: list[dict]) -> None:
    """Rewrite ``metrics.jsonl`` whole (one JSON line per epoch), atomically: it always matches a checkpoint."""
    write_atomically(path, lambda file: file.write("".join(json.dumps(row) + "\n" for row in rows).encode()))


CHECKPOINT_KEYS = ("epoch", "model", "optimizer", "scheduler", "scaler", "rng")


def load_checkpoint(folder: Path) -> dict:
    """``folder/checkpoint.pt`` as written by :func:`save_checkpoint`; ``ConfigError`` naming the file otherwise.

    Loaded with ``weights_only=True``: a checkpoint is tensors, numbers, strings, lists and dicts, and a
    garbage or hostile file must not run code while it is read.
    """
    path = folder / CHECKPOINT
    if not path.is_file():
        raise ConfigError(f"--resume {folder}: no {CHECKPOINT} there")
    advice = "restore it, or start a new run without --resume"
    if path.stat().st_size == 0:
        raise ConfigError(f"--resume {folder}: {path} is empty; {advice}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - cut short (RuntimeError from the zip reader), garbage (UnpicklingError), ...
        raise ConfigError(
            f"--resume {folder}: {path} is not a readable checkpoint, truncated or corrupt ({type(error).__name__}); {advice}"
        ) from None
    missing = [key for key in CHECKPOINT_KEYS if not isinstance(checkpoint, dict) or key not in checkpoint]
    if missing:
        raise ConfigError(f"--resume {folder}: {path} is not a finetune checkpoint (no {', '.join(missing)}); {advice}")
    epoch = checkpoint["epoch"]  # the last finished epoch (0-based); -1 for a mid-epoch checkpoint in the first epoch
    lowest = -1 if "partial" in checkpoint else 0
    if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < lowest:
        raise ConfigError(f"--resume {folder}: {path} holds an invalid epoch {epoch!r}; {advice}")
    if "partial" in checkpoint:
        bad = partial_problem(checkpoint["partial"], epoch + 1)
        if bad:
            raise ConfigError(f"--resume {folder}: {path} holds an invalid mid-epoch position ({bad}); {advice}")
    if "metrics" in checkpoint:  # older checkpoints have none (their rows are read from metrics.jsonl)
        bad = metrics_problem(checkpoint["metrics"], epoch + 1)
        if bad:
            raise ConfigError(f"--resume {folder}: {path} holds invalid metrics ({bad}); {advice}")
    return checkpoint


METRIC_KEYS = ("train_loss", "train_acc", "test_acc")  # besides "epoch": what the curves plot


def partial_problem(partial: Any, epoch: int) -> str | None:
    """What is wrong with a mid-epoch checkpoint's ``partial`` (see :func:`run`) for 0-based ``epoch``; None if nothing."""

    def is_int(value) -> bool:
        return isinstance(value, int) and not isinstance(value, bool)

    if not isinstance(partial, dict):
        return f"a {type(partial).__name__}, not a dict"
    if partial.get("epoch") != epoch or not is_int(partial.get("epoch")):
        return f"its epoch is {partial.get('epoch')!r:.40}, not {epoch} (the one after the last finished)"
    if not is_int(partial.get("step")) or partial["step"] < 1:
        return f"its step is {partial.get('step')!r:.40}, not an int >= 1"
    totals = partial.get("totals")
    if not isinstance(totals, torch.Tensor) or totals.shape != (2,):
        return "its totals are not a tensor of 2 sums"
    if not isinstance(partial.get("mix"), torch.Tensor) or not isinstance(partial.get("loader"), dict):
        return "no mix generator state or no loader state"
    if not is_int(partial.get("images")) or not all(isinstance(partial.get(key), float) for key in ("waited", "seconds")):
        return "its image count or timings are not numbers"
    return None


def metric_row_problem(row: Any, last: int) -> str | None:
    """What is wrong with one metrics row (a dict with an int epoch in [1, last] and numbers to plot); None if nothing."""
    if not isinstance(row, dict):
        return f"a row is a {type(row).__name__}, not a dict: {row!r:.60}"
    epoch = row.get("epoch")
    if not isinstance(epoch, int) or isinstance(epoch, bool) or not 1 <= epoch <= last:
        return f"a row's epoch is {epoch!r:.40}, not an int in [1, {last}]"
    for key in METRIC_KEYS:
        value = row.get(key)
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            return f"epoch {epoch}'s {key} is {value!r:.40}, not a number"
    return None


def metrics_problem(rows: Any, last: int) -> str | None:
    """What is wrong with a checkpoint's ``metrics`` (a list of rows up to epoch ``last``); None if nothing."""
    if not isinstance(rows, list):
        return f"a {type(rows).__name__}, not a list of rows"
    return next((problem for row in rows if (problem := metric_row_problem(row, last))), None)


def restore(checkpoint: dict, path: Path, module, optimizer, scheduler, scaler, generator, runtime: Runtime) -> None:
    """Load every state of ``checkpoint`` into the run's objects; ``ConfigError`` naming ``path`` if one does not fit."""
    try:
        module.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        scaler.load_state_dict(checkpoint["scaler"])
        torch.set_rng_state(checkpoint["rng"]["torch"])
        generator.set_state(checkpoint["rng"]["loader"])
        if runtime.device.type == "cuda" and checkpoint["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state(checkpoint["rng"]["cuda"], runtime.device)
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as error:
        detail = next((line.strip() for line in str(error).splitlines() if line.strip()), type(error).__name__)
        raise ConfigError(f"--resume: {path} does not fit this run ({detail[:160]})") from None


def resumed_metrics(checkpoint: dict, metrics_path: Path) -> list[dict]:
    """The metric rows of the checkpoint's epochs: kept in the checkpoint; for older checkpoints, read from
    ``metrics.jsonl`` up to the checkpoint's epoch (a crash between the two writes left one row too many)."""
    last = checkpoint["epoch"] + 1
    if isinstance(checkpoint.get("metrics"), list):
        return checkpoint["metrics"]
    by_epoch: dict[int, dict] = {}
    if metrics_path.is_file():
        for line in metrics_path.read_text(errors="replace").splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue  # a line cut short
            if metric_row_problem(row, last) is None:  # skips rows of other programs, or damaged ones
                by_epoch[row["epoch"]] = row  # an epoch written twice by an earlier resume: the later row
    return [by_epoch[epoch] for epoch in sorted(by_epoch)]


# ================================================================================================
# The loop
# ================================================================================================
def autocast(runtime: Runtime):
    if runtime.amp_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(runtime.device.type, dtype=runtime.amp_dtype)


def make_mix(config: Config, num_classes: int) -> ga.RandomMix | None:
    """MixUp/CutMix from ``--mixup``/``--cutmix`` (timm's switch), ``--label-smoothing`` in its soft targets; None if off."""
    if config.mixup == 0 and config.cutmix == 0:
        return None
    return ga.RandomMix(
        config.mixup, config.cutmix, mode=config.mix_mode, label_smoothing=config.label_smoothing, num_classes=num_classes
    )


def train_epoch(
    model,
    loader,
    optimizer,
    scheduler,
    scaler,
    criterion,
    config: Config,
    runtime: Runtime,
    bar,
    mix=None,
    mix_generator=None,
    *,
    save_partial: Callable[[dict], None] | None = None,
    resumed: dict | None = None,
) -> dict:
    """One epoch (or, ``resumed`` from a mid-epoch checkpoint's ``partial``, the rest of one: the loader was loaded
    with its state). With ``save_partial``, after every ``--checkpoint-every``-th optimizer step of the run that is
    not the epoch's last batch, it is called on every rank with the epoch's position and running sums (all ranks')."""
    model.train()
    # Device-side sums (no sync per step); the image count is known on the host.
    totals = torch.zeros(2, dtype=torch.float64, device=runtime.device)  # loss sum, correct
    waited, started, step, images_seen, earlier_seconds = 0.0, time.perf_counter(), 0, 0, 0.0
    if resumed is not None:
        step, earlier_seconds = resumed["step"], resumed["seconds"]
        if runtime.main:  # the sums saved are all ranks': one rank carries them into the all-reduce at the end
            totals += resumed["totals"].to(runtime.device, torch.float64)
            images_seen, waited = resumed["images"], resumed["waited"]
    steps = len(loader)
    every = config.checkpoint_every
    iterator = iter(loader)
    while True:
        before = time.perf_counter()
        try:
            images, labels = next(iterator)
        except StopIteration:
            break
        waited += time.perf_counter() - before
        last_micro = (step + 1) % config.accum_steps == 0 or step + 1 == steps
        sync = contextlib.nullcontext() if last_micro or not hasattr(model, "no_sync") else model.no_sync()
        with sync:
            with autocast(runtime):
                targets = labels
                if mix is not None:  # soft targets; accuracy below still counts the hard labels
                    images, targets = mix(images, labels, generator=mix_generator)
                logits = model(images)
                loss = criterion(logits, targets)
            scaler.scale(loss / config.accum_steps).backward()
        if last_micro:
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
        totals += torch.stack([loss.detach().double() * len(labels), (logits.argmax(1) == labels).sum().double()])
        images_seen += len(labels)
        step += 1
        if step % CHECK_LOSS_EVERY == 0:  # all ranks at the same step: the all-reduce keeps them in step
            check_finite(all_sum(totals[:1].clone(), runtime).item(), step, config)
        if bar is not None:
            bar.update(1)
            if step % 5 == 0 or step == steps:  # reading the loss syncs: only now and then
                elapsed = time.perf_counter() - started + earlier_seconds
                bar.set_postfix(
                    loss=f"{totals[0].item() / images_seen:.3f}",
                    img_s=f"{images_seen * runtime.world / elapsed:.0f}",
                    wait=f"{waited / elapsed:.0%}",
                )
        # scheduler.last_epoch counts the run's optimizer steps (restored on resume); every rank decides alike.
        # Not after the epoch's last batch: the epoch-end checkpoint follows, with its test accuracy.
        if save_partial is not None and every > 0 and last_micro and step < steps and scheduler.last_epoch % every == 0:
            host = torch.tensor([images_seen, waited], dtype=torch.float64, device=runtime.device)
            sums = all_sum(torch.cat([totals, host]), runtime).cpu()
            check_finite(sums[0].item(), step, config)  # never a diverged model over the last good checkpoint
            save_partial(
                {
                    "step": step,
                    "totals": sums[:2].clone(),
                    "images": int(sums[2]),
                    "waited": float(sums[3]),
                    "seconds": time.perf_counter() - started + earlier_seconds,
                }
            )
    if runtime.device.type == "cuda":
        torch.cuda.synchronize(runtime.device)
    seconds = time.perf_counter() - started + earlier_seconds
    host = torch.tensor([images_seen, waited], dtype=torch.float64, device=runtime.device)
    loss_sum, correct, count, waits = all_sum(torch.cat([totals, host]), runtime).tolist()
    check_finite(loss_sum, step, config)
    waits /= runtime.world
    return {
        "train_loss": loss_sum / count,
        "train_acc": correct / count,
        "images_per_sec": count / seconds,
        "data_wait_frac": waits / seconds,
        "seconds": seconds,
        "train_images": int(count),
    }


def check_finite(loss_sum: float, step: int, config: Config) -> None:
    """``RunError`` once the summed training loss is NaN or infinite: the run diverged, and every step after
    that would train NaN weights (and exit 0). The last finite epoch's checkpoint stays as it was."""
    if not math.isfinite(loss_sum):
        raise RunError(
            f"the training loss is not finite ({loss_sum}) by step {step} of the epoch: the run diverged at --lr {config.lr}; "
            "lower --lr (or add --warmup-epochs); the last checkpoint written, if any, is kept"
        )


@torch.no_grad()
def evaluate(model, loader, runtime: Runtime) -> float:
    model.eval()
    correct, count = torch.zeros((), dtype=torch.float64, device=runtime.device), 0
    for images, labels in loader:
        with autocast(runtime):
            logits = model(images)
        correct += (logits.argmax(1) == labels).sum()
        count += len(labels)
    correct, count = all_sum(torch.stack([correct, torch.tensor(float(count), device=runtime.device).double()]), runtime).tolist()
    return correct / max(count, 1)


# ================================================================================================
# Outputs
# ================================================================================================
def versions() -> dict:
    import torchvision

    found = {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "gpuaug": ga.__version__,
    }
    for name in ("kornia", "nvidia.dali"):
        try:
            found[name] = __import__(name, fromlist=["__version__"]).__version__
        except ImportError:
            found[name] = None
    return found


def plot_curves(metrics_path: Path, out: Path) -> None:
    """Loss and accuracies per epoch (d2l's plot), from every line of metrics.jsonl."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    rows = [json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()]
    epochs = [row["epoch"] for row in rows]
    figure, axis = plt.subplots(figsize=(5, 3.5))
    axis.plot(epochs, [row["train_loss"] for row in rows], label="train loss")
    axis.plot(epochs, [row["train_acc"] for row in rows], "--", label="train acc")
    axis.plot(epochs, [row["test_acc"] for row in rows], ":", label="test acc")
    axis.set_xlabel("epoch")
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figure.savefig(out, dpi=100)
    plt.close(figure)


# ================================================================================================
# run()
# ================================================================================================
def run(config: Config, say=print) -> dict:
    """Train as ``config`` says; return the last epoch's metrics (plus the data this rank saw)."""
    runtime = setup(config)
    out = Path(config.resume or config.out)
    if out.exists() and not out.is_dir():  # every rank sees it: none waits for a rank that stopped
        raise ConfigError(f"{'--resume' if config.resume else '--out'} {out}: is a file, not a folder")
    if runtime.main:  # before the data and the model: a folder that cannot be made fails in a second, not after them
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise ConfigError(f"--out {out}: cannot create the folder ({error.strerror or error})") from None
    if out.is_dir() and not os.access(out, os.W_OK | os.X_OK):  # a read-only file system, or another user's folder
        raise ConfigError(
            f"{'--resume' if config.resume else '--out'} {out}: "
            "cannot write in this folder (read-only file system or no permission)"
        )
    checkpoint = load_checkpoint(out) if config.resume else None
    partial = checkpoint.get("partial") if checkpoint is not None else None  # a mid-epoch checkpoint's position
    if partial is not None and config.loader != "gpu":  # before the data and the model: a second, not a minute
        raise ConfigError(
            f"--resume: {out / CHECKPOINT} was written at step {partial['step']} of epoch {partial['epoch'] + 1}; "
            f"only --loader gpu can continue in the middle of an epoch, not --loader {config.loader}"
        )
    if checkpoint is not None and checkpoint["epoch"] + 1 >= config.epochs:
        if runtime.main:
            say(
                f"nothing to do: {out / CHECKPOINT} is after epoch {checkpoint['epoch'] + 1} and --epochs is {config.epochs} "
                "(the total to reach); pass a larger --epochs to train on"
            )
        return {"rank": runtime.rank, "train_indices": []}
    torch.manual_seed(config.seed)

    # --- data ---------------------------------------------------------------------------------
    if config.data is None and runtime.main:
        say(f"demo: cat / not-cat photo crops from scikit-image, in {demo.default_root()}")
    root = Path(config.data) if config.data else demo.build()
    train_dir, test_dir, classes = find_splits(root)
    generator = torch.Generator().manual_seed(config.seed)
    try:
        train_loader, test_loader, train_size = make_loaders(config, train_dir, test_dir, runtime, generator)
    except FileNotFoundError as error:
        raise ConfigError(str(error)) from None
    if len(train_loader) == 0:  # the last partial batch is dropped: a batch larger than the data makes no step at all
        per_process = f" ({math.ceil(train_size / runtime.world)} per process)" if runtime.world > 1 else ""
        raise ConfigError(
            f"--batch-size {config.batch_size} is more than the {train_size} training images in {train_dir}{per_process}; "
            "lower --batch-size"
        )

    # --- model --------------------------------------------------------------------------------
    weights = config.weights
    if config.data is None and weights != "none" and not pretrained_available(config.model, weights):
        if runtime.main:
            say(f"demo: no cached {config.model} {weights} weights in torchvision's cache; training from scratch")
        weights = "none"
    model, pretrained = build_model(config.model, weights, len(classes))
    model = model.to(runtime.device, memory_format=torch.channels_last if config.channels_last else torch.contiguous_format)
    module = model  # the unwrapped model, for checkpoints
    if runtime.world > 1:
        model = nn.parallel.DistributedDataParallel(
            model, device_ids=[runtime.device.index] if runtime.device.type == "cuda" else None
        )
    if config.compile:
        model = torch.compile(model)

    # --- optimizer and schedule ---------------------------------------------------------------
    lr = config.lr * (config.batch_size * config.accum_steps * runtime.world / 128 if config.scale_lr else 1.0)
    optimizer = torch.optim.SGD(
        parameter_groups(module, lr, config.head_lr_mult, pretrained),
        lr=lr,
        momentum=config.momentum,
        weight_decay=config.weight_decay,
    )
    steps_per_epoch = math.ceil(len(train_loader) / config.accum_steps)
    scheduler = make_schedule(optimizer, config, steps_per_epoch)
    scaler = torch.amp.GradScaler(runtime.device.type, enabled=runtime.amp_dtype == torch.float16)
    mix = make_mix(config, len(classes))
    # soft-target cross-entropy with mixing (the smoothing is in the targets), else smoothing of the hard labels
    criterion = nn.CrossEntropyLoss(label_smoothing=0.0 if mix is not None else config.label_smoothing)
    mix_generator = torch.Generator().manual_seed(config.seed)

    # --- checkpoint -----------------------------------------------------------------------------
    # metrics.jsonl is rewritten whole after each checkpoint, from the rows the checkpoint carries: a crash
    # between the two writes (or during either) can never leave an epoch in one and not the other
    start_epoch, history = 0, []
    metrics_path = out / METRICS
    if checkpoint is not None:
        saved_classes = checkpoint.get("classes", classes)
        if saved_classes != classes:
            raise ConfigError(f"--resume: {out / CHECKPOINT} was trained on classes {saved_classes}, --data has {classes}")
        restore(checkpoint, out / CHECKPOINT, module, optimizer, scheduler, scaler, generator, runtime)
        start_epoch = checkpoint["epoch"] + 1  # the epoch after the last finished: the one a mid-epoch checkpoint is in
        history = resumed_metrics(checkpoint, metrics_path)
        if partial is not None:
            try:  # the next iter(train_loader) yields the rest of that epoch; the loop's set_epoch gives the same epoch
                train_loader.load_state_dict(partial["loader"])
            except (KeyError, TypeError, ValueError) as error:  # e.g. another --batch-size: other batches per epoch
                raise ConfigError(
                    f"--resume: {out / CHECKPOINT} does not fit this run (the loader's position: {error})"
                ) from None
        if runtime.main:
            if partial is not None:
                step, steps = partial["step"], len(train_loader)
                say(f"resuming {out} in epoch {start_epoch + 1} of {config.epochs}, after its step {step} of {steps}")
            else:
                say(f"resuming {out} after epoch {start_epoch} of {config.epochs}")
    if runtime.main:
        if checkpoint is not None:
            write_metrics(metrics_path, history)
        elif metrics_path.exists():
            try:
                metrics_path.unlink()
            except OSError as error:
                raise RunError(f"cannot remove the old {metrics_path}: {error.strerror or error}") from None
        resolved = {
            **dataclasses.asdict(config),
            "weights_loaded": weights if pretrained else "none",
            "data_root": str(root),
            "classes": classes,
            "train_images": train_size,
            "world_size": runtime.world,
            "device": torch.cuda.get_device_name(runtime.device) if runtime.device.type == "cuda" else "cpu",
            "amp_dtype": str(runtime.amp_dtype),
            "effective_lr": lr,
            "versions": versions(),
        }
        write_atomically(out / "config.json", lambda file: file.write((json.dumps(resolved, indent=2) + "\n").encode()))

    # --- the loop -------------------------------------------------------------------------------
    def state(last_finished: int) -> dict:
        """What a checkpoint holds after the 0-based epoch ``last_finished`` (-1: none yet), and for the steps since."""
        return {
            "epoch": last_finished,
            "model": module.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(),
            "config": dataclasses.asdict(config),
            "classes": classes,
            "metrics": history,
            "rng": {
                "torch": torch.get_rng_state(),
                "loader": generator.get_state(),
                "cuda": torch.cuda.get_rng_state(runtime.device) if runtime.device.type == "cuda" else None,
            },
        }

    def save_partial(epoch: int, position: dict) -> None:
        """A mid-epoch checkpoint (``--checkpoint-every``): the epoch's finished rows as ever, plus ``partial``: the
        epoch, the step in it, the running sums of its metrics, the loader's state_dict and the mix generator's state.
        metrics.jsonl is not rewritten: it has no row for an unfinished epoch."""
        if not runtime.main:
            return
        extra = {"epoch": epoch, **position, "loader": train_loader.state_dict(), "mix": mix_generator.get_state()}
        save_checkpoint(out / CHECKPOINT, {**state(epoch - 1), "partial": extra})
        if os.environ.get(KILL_AFTER_STEP) == str(scheduler.last_epoch):  # the tests' kill -9, right after the write
            os.kill(os.getpid(), signal.SIGKILL)

    show_bar = runtime.main and not config.quiet and sys.stderr.isatty()
    metrics: dict[str, Any] = {}
    seen: list[int] = []
    for epoch in range(start_epoch, config.epochs):
        if hasattr(train_loader, "set_epoch"):
            train_loader.set_epoch(epoch)
        # The shard a DistributedSampler gives this rank (reported, for the DDP test); iterating any
        # other sampler here would draw a second permutation from the loader's generator.
        sampler = getattr(train_loader, "sampler", None)
        seen = list(iter(sampler)) if isinstance(sampler, DistributedSampler) else []
        bar = None
        if show_bar:
            from tqdm import tqdm

            initial = partial["step"] if partial is not None and epoch == start_epoch else 0
            bar = tqdm(total=len(train_loader), initial=initial, desc=f"epoch {epoch + 1}/{config.epochs}", leave=False)
        mix_generator.manual_seed((config.seed * 1_000_003 + epoch + 1) % 2**63)  # per epoch: a resumed run draws the same mixes
        resumed = partial if partial is not None and epoch == start_epoch else None
        if resumed is not None:
            mix_generator.set_state(resumed["mix"])  # where the interrupted run's mixes stood
        result = train_epoch(
            model,
            train_loader,
            optimizer,
            scheduler,
            scaler,
            criterion,
            config,
            runtime,
            bar,
            mix,
            mix_generator,
            save_partial=lambda position, epoch=epoch: save_partial(epoch, position),
            resumed=resumed,
        )
        if bar is not None:
            bar.close()
        test_acc = evaluate(model, test_loader, runtime)
        metrics = {"epoch": epoch + 1, **result, "test_acc": test_acc, "lr": optimizer.param_groups[-1]["lr"]}
        history.append(metrics)
        if runtime.main:  # checkpoint, then metrics (and before anything else): whatever happens next, this epoch is kept
            save_checkpoint(out / CHECKPOINT, state(epoch))
            write_metrics(metrics_path, history)
            plot_curves(metrics_path, out / "curves.png")
            say(
                f"epoch {epoch + 1}/{config.epochs}: loss {metrics['train_loss']:.3f}, train acc {metrics['train_acc']:.3f}, "
                f"test acc {test_acc:.3f}, {metrics['images_per_sec']:.0f} img/s, data wait {metrics['data_wait_frac']:.0%}, "
                f"{metrics['seconds']:.1f} s"
            )
    if runtime.world > 1:
        dist.barrier()
    return {**metrics, "rank": runtime.rank, "train_indices": seen}
