"""``python -m finetune [--data ROOT] ...``; ``torchrun --nproc_per_node N -m finetune ...`` for DDP."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

from finetune.config import Config, ConfigError, build_parser, from_args, validate


def resolve(argv: list[str] | None) -> Config:
    """The config from the command line; with ``--resume`` the saved config, overridden by the given flags."""
    config = from_args(argv)
    if config.resume is None:
        return config
    import torch

    path = Path(config.resume) / "checkpoint.pt"
    if not path.is_file():
        raise ConfigError(f"--resume {config.resume}: no checkpoint.pt there")
    saved = torch.load(path, map_location="cpu", weights_only=False)["config"]
    given = vars(build_parser().parse_args(argv))
    return validate(dataclasses.replace(Config(**saved), **given))


def main(argv: list[str] | None = None) -> int:
    try:
        config = resolve(argv)
        from finetune.train import run

        run(config)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; the last finished epoch's checkpoint is kept", file=sys.stderr)
        return 130
    finally:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
