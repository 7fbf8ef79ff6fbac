"""``python -m finetune [--data ROOT] ...``; ``torchrun --nproc_per_node N -m finetune ...`` for DDP."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

from finetune.config import Config, ConfigError, RunError, build_parser, from_args, validate


def saved_config(folder: Path) -> Config:
    """The config a run saved in ``folder/config.json``; ``ConfigError`` naming the file if it is not one."""
    path = folder / "config.json"
    try:
        text = path.read_bytes()
    except OSError as error:
        raise ConfigError(f"--resume {folder}: cannot read {path} ({error.strerror})") from None
    if not text.strip():
        raise ConfigError(f"--resume {folder}: {path} is empty; restore it or start a new run")
    try:
        resolved = json.loads(text)
    except ValueError as error:  # not JSON (e.g. cut short), or not UTF-8
        raise ConfigError(f"--resume {folder}: {path} is not valid JSON ({error})") from None
    if not isinstance(resolved, dict):
        raise ConfigError(f"--resume {folder}: {path} holds a JSON {type(resolved).__name__}, not the run's config object")
    saved = {item.name: resolved[item.name] for item in dataclasses.fields(Config) if item.name in resolved}
    try:
        return validate(Config(**saved))
    except ConfigError as error:
        raise ConfigError(f"--resume {folder}: {path}: {error}") from None


def resolve(argv: list[str] | None) -> Config:
    """The config from the command line; with ``--resume`` the saved config, overridden by the given flags."""
    config = from_args(argv)
    if config.resume is None:
        return config
    folder = Path(config.resume)
    if not folder.is_dir():
        raise ConfigError(f"--resume {config.resume}: no such folder (no checkpoint.pt or config.json to resume from)")
    missing = [name for name in ("checkpoint.pt", "config.json") if not (folder / name).is_file()]
    if missing == ["checkpoint.pt"]:  # config.json is written before the first epoch: stopped before its checkpoint
        raise ConfigError(
            f"--resume {config.resume}: no checkpoint.pt there, only config.json (the run stopped before its first "
            f"checkpoint); start it again with --out {config.resume}"
        )
    if missing:
        raise ConfigError(f"--resume {config.resume}: no {' and no '.join(missing)} there; not a finetune run folder")
    # the run's config.json (written before its first epoch), not the checkpoint: run() loads that once
    given = vars(build_parser().parse_args(argv))
    return validate(dataclasses.replace(saved_config(folder), **given))


def main(argv: list[str] | None = None) -> int:
    try:
        config = resolve(argv)
        from finetune.train import run

        run(config)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except RunError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; the last checkpoint written is kept", file=sys.stderr)
        return 130
    finally:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
