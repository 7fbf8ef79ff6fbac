"""The fine-tuning run's configuration: one frozen dataclass; the command line mirrors it.

Defaults are the d2l "Fine-Tuning" recipe (hotdog / not-hotdog): ImageNet-pretrained ResNet-18,
a new output layer trained from scratch at 10x the learning rate of the pretrained layers, SGD
with weight decay 1e-3, batch 128, 5 epochs, RandomResizedCrop(224) + flip for training and
Resize(256) + CenterCrop(224) for testing, ImageNet normalisation.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from dataclasses import dataclass, field, fields

MODELS = ("resnet18", "resnet34", "resnet50")
LOADERS = ("gpu", "dali", "torch")
SCHEDULES = ("none", "cosine", "step")
AMP_MODES = ("auto", "bf16", "fp16", "off")
AUTO_AUGMENTS = ("none", "trivialaugment", "randaugment", "autoaugment")
MIX_MODES = ("batch", "pair", "elem")


def _help(text: str, **extra) -> dict:
    return {"help": text, **extra}


@dataclass(frozen=True)
class Config:
    data: str | None = field(
        default=None,
        metadata=_help("ImageFolder root with train/ and test/ (or val/); without it a built-in cat / not-cat demo set is made"),
    )
    model: str = field(default="resnet18", metadata=_help(f"torchvision model: {', '.join(MODELS)}"))
    weights: str = field(
        default="DEFAULT",
        metadata=_help("DEFAULT or IMAGENET1K_V1 (torchvision's, from its cache or a download), a state_dict file PATH, or none"),
    )
    epochs: int = field(default=5, metadata=_help("epochs to train (with --resume: the total to reach)"))
    batch_size: int = field(default=128, metadata=_help("images per step on each process"))
    lr: float = field(default=0.01, metadata=_help("learning rate of the pretrained layers (mean-reduced loss)"))
    head_lr_mult: float = field(default=10.0, metadata=_help("the new output layer's learning rate multiplier"))
    momentum: float = field(default=0.0, metadata=_help("SGD momentum (d2l uses none)"))
    weight_decay: float = field(default=1e-3, metadata=_help("SGD weight decay"))
    image_size: int = field(default=224, metadata=_help("training crop; the test resize is image_size * 256 / 224"))
    accum_steps: int = field(default=1, metadata=_help("gradient accumulation steps per optimizer step"))
    warmup_epochs: float = field(default=0.0, metadata=_help("linear learning-rate warm-up, in epochs"))
    schedule: str = field(default="none", metadata=_help(f"learning-rate schedule after warm-up: {', '.join(SCHEDULES)}"))
    scale_lr: bool = field(default=False, metadata=_help("linear scaling: lr x (batch x accum x processes) / 128"))
    loader: str = field(
        default="gpu",
        metadata=_help("gpu: gpuaug.GPULoader; dali: gpuaug.dali.DALILoader; torch: DataLoader + PIL transforms (the baseline)"),
    )
    workers: int = field(default=2, metadata=_help("loader worker processes (DALI: threads)"))
    amp: str = field(default="auto", metadata=_help("mixed precision: auto (bf16 on CUDA, off on CPU), bf16, fp16, off"))
    channels_last: bool = field(default=True, metadata=_help("channels-last memory format for images and model"))
    compile: bool = field(default=False, metadata=_help("torch.compile the model"))
    seed: int = field(default=0, metadata=_help("seed of the model's new layer, the data order and the augmentations"))
    auto_augment: str = field(
        default="none",
        metadata=_help(f"per-image augmentation policy after the flip: {', '.join(AUTO_AUGMENTS)} (torchvision's defaults)"),
    )
    random_erasing: float = field(default=0.0, metadata=_help("RandomErasing probability per image, after Normalize (0: off)"))
    mixup: float = field(default=0.0, metadata=_help("MixUp alpha (0: off); with --cutmix too, each draw picks one (switch 0.5)"))
    cutmix: float = field(default=0.0, metadata=_help("CutMix alpha (0: off)"))
    mix_mode: str = field(
        default="batch", metadata=_help(f"MixUp/CutMix draws: {', '.join(MIX_MODES)} (per batch, pair or image)")
    )
    label_smoothing: float = field(
        default=0.0, metadata=_help("label smoothing of the soft-target cross-entropy (accuracy uses the labels)")
    )
    quiet: bool = field(default=False, metadata=_help("no progress bar (the one-line summary per epoch stays)"))
    out: str = field(
        default="runs/finetune", metadata=_help("output folder: config.json, metrics.jsonl, curves.png, checkpoint.pt")
    )
    resume: str | None = field(
        default=None,
        metadata=_help("continue from this folder's checkpoint.pt (writes there); a mid-epoch one continues inside its epoch"),
    )
    checkpoint_every: int = field(
        default=0,
        metadata=_help(
            "also write checkpoint.pt every N optimizer steps, in the middle of an epoch, with the loader's position, "
            "the schedule and the epoch's running metrics: --resume continues there bit for bit (0: at epoch ends only). "
            "Needs --loader gpu: --loader torch and dali refuse N > 0 (exit 2), they checkpoint at epoch ends only"
        ),
    )

    @property
    def test_resize(self) -> int:
        return round(self.image_size * 256 / 224)


# The demo (no --data): small enough for 2 CPU cores in under 3 minutes.
DEMO = {"epochs": 5, "batch_size": 32, "image_size": 112, "schedule": "cosine", "out": "runs/demo"}


class ConfigError(ValueError):
    """A user mistake in the configuration: exit status 2 and one line."""


class RunError(RuntimeError):
    """A run that cannot go on through no bug of ours (a full disk, a loss that is not finite): exit status 1, one line."""


MAX_IMAGE_SIZE = 4096  # a batch of 128 float32 4096x4096 crops is already 26 GB; 100000 would ask for ~15 TB
MAX_SEED = 2**63 - 1  # torch.Generator.manual_seed's range on every version


def flag(name: str) -> str:
    """The command-line flag of a ``Config`` field: ``--batch-size`` for ``batch_size``."""
    return "--" + name.replace("_", "-")


def _type_ok(value, kind: str) -> bool:
    # ``kind`` is the field's annotation as written (``from __future__ import annotations``); bool is an int
    # in Python, so it is refused where a number is expected (a config.json saying "epochs": true)
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "float":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == "str | None":
        return value is None or isinstance(value, str)
    return isinstance(value, str)


def validate(config: Config) -> Config:
    """Check the types and ranges argparse cannot; raise ``ConfigError`` naming the flag.

    Example: ``validate(Config(lr=float("inf")))`` raises ``ConfigError("--lr must be a finite number > 0, got inf")``.
    """
    for item in fields(Config):
        value = getattr(config, item.name)
        if not _type_ok(value, str(item.type)):
            raise ConfigError(f"{flag(item.name)} must be of type {item.type}, got {value!r}")
    finite = math.isfinite
    checks = [
        (config.model in MODELS, f"--model must be one of {', '.join(MODELS)}, got {config.model!r}"),
        (config.loader in LOADERS, f"--loader must be one of {', '.join(LOADERS)}, got {config.loader!r}"),
        (config.schedule in SCHEDULES, f"--schedule must be one of {', '.join(SCHEDULES)}, got {config.schedule!r}"),
        (config.amp in AMP_MODES, f"--amp must be one of {', '.join(AMP_MODES)}, got {config.amp!r}"),
        (config.epochs >= 1, f"--epochs must be >= 1, got {config.epochs}"),
        (config.batch_size >= 1, f"--batch-size must be >= 1, got {config.batch_size}"),
        (config.accum_steps >= 1, f"--accum-steps must be >= 1, got {config.accum_steps}"),
        (finite(config.lr) and config.lr > 0, f"--lr must be a finite number > 0, got {config.lr}"),
        (
            finite(config.head_lr_mult) and config.head_lr_mult > 0,
            f"--head-lr-mult must be a finite number > 0, got {config.head_lr_mult}",
        ),
        (0 <= config.momentum < 1, f"--momentum must be in [0, 1), got {config.momentum}"),
        (
            finite(config.weight_decay) and config.weight_decay >= 0,
            f"--weight-decay must be a finite number >= 0, got {config.weight_decay}",
        ),
        (
            16 <= config.image_size <= MAX_IMAGE_SIZE,
            f"--image-size must be in [16, {MAX_IMAGE_SIZE}], got {config.image_size}",
        ),
        (config.workers >= 0, f"--workers must be >= 0, got {config.workers}"),
        (
            finite(config.warmup_epochs) and config.warmup_epochs >= 0,
            f"--warmup-epochs must be a finite number >= 0, got {config.warmup_epochs}",
        ),
        (0 <= config.seed <= MAX_SEED, f"--seed must be in [0, 2**63 - 1], got {config.seed}"),
        (
            config.auto_augment in AUTO_AUGMENTS,
            f"--auto-augment must be one of {', '.join(AUTO_AUGMENTS)}, got {config.auto_augment!r}",
        ),
        (0 <= config.random_erasing <= 1, f"--random-erasing must be a probability in [0, 1], got {config.random_erasing}"),
        (finite(config.mixup) and config.mixup >= 0, f"--mixup must be a finite number >= 0, got {config.mixup}"),
        (finite(config.cutmix) and config.cutmix >= 0, f"--cutmix must be a finite number >= 0, got {config.cutmix}"),
        (config.mix_mode in MIX_MODES, f"--mix-mode must be one of {', '.join(MIX_MODES)}, got {config.mix_mode!r}"),
        (0 <= config.label_smoothing < 1, f"--label-smoothing must be in [0, 1), got {config.label_smoothing}"),
        (config.out != "", "--out must name a folder, got an empty string"),
        (config.checkpoint_every >= 0, f"--checkpoint-every must be >= 0 (0: at epoch ends only), got {config.checkpoint_every}"),
        (
            config.checkpoint_every == 0 or config.loader == "gpu",
            f"--checkpoint-every {config.checkpoint_every} needs --loader gpu (only GPULoader can resume mid-epoch; "
            f"use --checkpoint-every 0 with --loader {config.loader})",
        ),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)
    return config


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad flag is one line (``ConfigError``), not the 30-line usage text and ``SystemExit``."""

    def error(self, message: str):
        raise ConfigError(f"{message} (see python -m finetune --help)")


def build_parser() -> argparse.ArgumentParser:
    """One flag per ``Config`` field (``--batch-size`` for ``batch_size``); booleans get ``--no-...``."""
    parser = _Parser(
        prog="python -m finetune",
        description="Fine-tune an ImageNet ResNet on an ImageFolder (the d2l hotdog recipe), fed by gpuaug. "
        "Without --data, a small built-in demo.",
        argument_default=argparse.SUPPRESS,
    )
    for item in fields(Config):
        text = f"{item.metadata['help']} (default: {item.default})"
        if item.type in ("bool", bool):
            parser.add_argument(flag(item.name), action=argparse.BooleanOptionalAction, help=text)
        else:
            kind = {"int": int, "float": float}.get(str(item.type), str)
            parser.add_argument(flag(item.name), type=kind, metavar=item.name.upper(), help=text)
    return parser


def from_args(argv: list[str] | None = None) -> Config:
    """The config from the command line; the demo's smaller defaults apply without ``--data``."""
    given = vars(build_parser().parse_args(argv))
    base = {} if given.get("data") or given.get("resume") else dict(DEMO)
    return validate(dataclasses.replace(Config(), **{**base, **given}))
