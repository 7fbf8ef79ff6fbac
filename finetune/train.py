"""Fine-tune a ResNet on an ImageFolder, fed by gpuaug. One file, read top to bottom.

Sections: setup (processes, device, precision) - data - model - optimizer and schedule -
checkpoint - the loop - evaluation and outputs. ``run(config)`` returns the last epoch's metrics.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, Sampler

import gpuaug as ga
from finetune import demo
from finetune.config import Config, ConfigError
from finetune.model import build_model, parameter_groups, pretrained_available

CHECKPOINT = "checkpoint.pt"


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
    if not train_classes:
        raise ConfigError(f"--data {root}: train/ has no class folders")
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
    train_transform = ga.Compose([ga.RandomResizedCrop(size), ga.RandomHorizontalFlip(), ga.Normalize(mean, std)])
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
        train = DALILoader(train_dir, batch, shuffle=True, transform=train_transform, seed=config.seed, **common)
        test = DALILoader(test_dir, batch, transform=test_transform, seed=config.seed, **common)
        return train, test, len(train.source)  # the folder DALILoader already scanned
    if config.loader == "gpu":
        train_set, test_set = ga.ImageFolder(train_dir), ga.ImageFolder(test_dir)
    else:
        from torchvision import datasets
        from torchvision import transforms as tv

        train_set = datasets.ImageFolder(
            train_dir,
            transform=tv.Compose([tv.RandomResizedCrop(size), tv.RandomHorizontalFlip(), tv.ToTensor(), tv.Normalize(mean, std)]),
        )
        test_set = datasets.ImageFolder(
            test_dir, transform=tv.Compose([tv.Resize(test_size), tv.CenterCrop(size), tv.ToTensor(), tv.Normalize(mean, std)])
        )
    train_sampler = (
        DistributedSampler(train_set, runtime.world, runtime.rank, shuffle=True, seed=config.seed) if runtime.world > 1 else None
    )
    test_sampler = ShardSampler(len(test_set), runtime.rank, runtime.world)
    common = {"num_workers": workers, "generator": generator}
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
def save_checkpoint(path: Path, state: dict) -> None:
    """Write atomically: a temporary file in the same folder, then ``os.replace``."""
    temporary = path.with_suffix(".pt.tmp")
    torch.save(state, temporary)
    os.replace(temporary, path)


def load_checkpoint(folder: Path) -> dict:
    path = folder / CHECKPOINT
    if not path.is_file():
        raise ConfigError(f"--resume {folder}: no {CHECKPOINT} there")
    return torch.load(path, map_location="cpu", weights_only=False)  # our own file: configs and RNG states


# ================================================================================================
# The loop
# ================================================================================================
def autocast(runtime: Runtime):
    if runtime.amp_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(runtime.device.type, dtype=runtime.amp_dtype)


def train_epoch(model, loader, optimizer, scheduler, scaler, criterion, config: Config, runtime: Runtime, bar) -> dict:
    model.train()
    # Device-side sums (no sync per step); the image count is known on the host.
    totals = torch.zeros(2, dtype=torch.float64, device=runtime.device)  # loss sum, correct
    waited, started, step, images_seen = 0.0, time.perf_counter(), 0, 0
    steps = len(loader)
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
                logits = model(images)
                loss = criterion(logits, labels)
            scaler.scale(loss / config.accum_steps).backward()
        if last_micro:
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
        totals += torch.stack([loss.detach().double() * len(labels), (logits.argmax(1) == labels).sum().double()])
        images_seen += len(labels)
        step += 1
        if bar is not None:
            bar.update(1)
            if step % 5 == 0 or step == steps:  # reading the loss syncs: only now and then
                bar.set_postfix(
                    loss=f"{totals[0].item() / images_seen:.3f}",
                    img_s=f"{images_seen * runtime.world / (time.perf_counter() - started):.0f}",
                    wait=f"{waited / (time.perf_counter() - started):.0%}",
                )
    if runtime.device.type == "cuda":
        torch.cuda.synchronize(runtime.device)
    seconds = time.perf_counter() - started
    host = torch.tensor([images_seen, waited], dtype=torch.float64, device=runtime.device)
    loss_sum, correct, count, waits = all_sum(torch.cat([totals, host]), runtime).tolist()
    waits /= runtime.world
    return {
        "train_loss": loss_sum / count,
        "train_acc": correct / count,
        "images_per_sec": count / seconds,
        "data_wait_frac": waits / seconds,
        "seconds": seconds,
        "train_images": int(count),
    }


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
    checkpoint = load_checkpoint(out) if config.resume else None
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
    criterion = nn.CrossEntropyLoss()

    # --- checkpoint -----------------------------------------------------------------------------
    start_epoch = 0
    if checkpoint is not None:
        module.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        scaler.load_state_dict(checkpoint["scaler"])
        torch.set_rng_state(checkpoint["rng"]["torch"])
        generator.set_state(checkpoint["rng"]["loader"])
        if runtime.device.type == "cuda" and checkpoint["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state(checkpoint["rng"]["cuda"], runtime.device)
        start_epoch = checkpoint["epoch"] + 1
        if runtime.main:
            say(f"resuming {out} after epoch {start_epoch} of {config.epochs}")
    metrics_path = out / "metrics.jsonl"
    if runtime.main:
        out.mkdir(parents=True, exist_ok=True)
        if checkpoint is None and metrics_path.exists():
            metrics_path.unlink()
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
        (out / "config.json").write_text(json.dumps(resolved, indent=2) + "\n")

    # --- the loop -------------------------------------------------------------------------------
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

            bar = tqdm(total=len(train_loader), desc=f"epoch {epoch + 1}/{config.epochs}", leave=False)
        result = train_epoch(model, train_loader, optimizer, scheduler, scaler, criterion, config, runtime, bar)
        if bar is not None:
            bar.close()
        test_acc = evaluate(model, test_loader, runtime)
        metrics = {"epoch": epoch + 1, **result, "test_acc": test_acc, "lr": optimizer.param_groups[-1]["lr"]}
        if runtime.main:  # metrics and checkpoint first: whatever happens next, this epoch is kept
            with metrics_path.open("a") as file:
                file.write(json.dumps(metrics) + "\n")
            save_checkpoint(
                out / CHECKPOINT,
                {
                    "epoch": epoch,
                    "model": module.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "scaler": scaler.state_dict(),
                    "config": dataclasses.asdict(config),
                    "classes": classes,
                    "rng": {
                        "torch": torch.get_rng_state(),
                        "loader": generator.get_state(),
                        "cuda": torch.cuda.get_rng_state(runtime.device) if runtime.device.type == "cuda" else None,
                    },
                },
            )
            plot_curves(metrics_path, out / "curves.png")
            say(
                f"epoch {epoch + 1}/{config.epochs}: loss {metrics['train_loss']:.3f}, train acc {metrics['train_acc']:.3f}, "
                f"test acc {test_acc:.3f}, {metrics['images_per_sec']:.0f} img/s, data wait {metrics['data_wait_frac']:.0%}, "
                f"{metrics['seconds']:.1f} s"
            )
    if runtime.world > 1:
        dist.barrier()
    return {**metrics, "rank": runtime.rank, "train_indices": seen}
