"""The model: a torchvision ResNet with a new output layer, and the two learning-rate groups."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import torch
import torchvision
from torch import nn

from finetune.config import ConfigError


def weights_cache_path(model: str, weights: str) -> tuple[Path, str]:
    """Where torchvision keeps ``weights`` of ``model``, and the URL it downloads them from."""
    enum = torchvision.models.get_model_weights(model)
    entry = enum.DEFAULT if weights == "DEFAULT" else enum[weights]
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(entry.url), entry.url


def pretrained_available(model: str, weights: str) -> bool:
    """Whether ``weights`` can be loaded without a download."""
    if weights.lower() == "none":
        return False
    if weights in ("DEFAULT", "IMAGENET1K_V1", "IMAGENET1K_V2"):
        return weights_cache_path(model, weights)[0].exists()
    return Path(weights).is_file()


def _load_state(model: str, weights: str) -> dict:
    if weights in ("DEFAULT", "IMAGENET1K_V1", "IMAGENET1K_V2"):
        try:
            path, url = weights_cache_path(model, weights)
        except KeyError:
            raise ConfigError(f"--weights {weights}: torchvision has no such weights for {model}") from None
        if not path.exists():
            previous = socket.getdefaulttimeout()
            socket.setdefaulttimeout(20)
            try:
                return torch.hub.load_state_dict_from_url(url, progress=False, map_location="cpu")
            except Exception:  # noqa: BLE001 - any download failure means "offline"
                raise ConfigError(
                    f"--weights {weights}: not in torchvision's cache ({path}) and the download failed; put the file "
                    "there, pass --weights PATH to a state_dict file, or --weights none to train from scratch"
                ) from None
            finally:
                socket.setdefaulttimeout(previous)
        return torch.load(path, map_location="cpu", weights_only=True)
    path = Path(weights)
    if not path.is_file():
        raise ConfigError(f"--weights {weights}: no such file (use DEFAULT, IMAGENET1K_V1, a state_dict file or none)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - whatever torch.load says, it is not a state_dict
        raise ConfigError(f"--weights {weights}: not a loadable state_dict ({type(error).__name__})") from None
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]  # a finetune checkpoint
    if not isinstance(state, dict):
        raise ConfigError(f"--weights {weights}: expected a state_dict, found a {type(state).__name__}")
    return state


def build_model(name: str, weights: str, num_classes: int) -> tuple[nn.Module, bool]:
    """``(model, pretrained)``: ``name`` with ``weights`` loaded and a new Xavier-initialised head.

    Raises:
        ConfigError: unknown model, unavailable weights, or a weights file that does not fit.
    """
    try:
        model = torchvision.models.get_model(name, weights=None)
    except ValueError:
        raise ConfigError(f"--model {name}: torchvision has no such model") from None
    pretrained = weights.lower() != "none"
    if pretrained:
        state = _load_state(name, weights)
        head_keys = {key for key in state if key.startswith("fc.")}
        body = {key: value for key, value in state.items() if key not in head_keys}
        try:
            missing, unexpected = model.load_state_dict(body, strict=False)
        except RuntimeError as error:  # shapes that differ
            detail = next((line.strip() for line in str(error).splitlines() if "size mismatch" in line), "shapes differ")
            raise ConfigError(f"--weights {weights}: does not fit {name} ({detail})") from None
        missing = [key for key in missing if not key.startswith("fc.")]
        if missing or unexpected:
            raise ConfigError(
                f"--weights {weights}: does not fit {name} ({len(missing)} missing, {len(unexpected)} unexpected keys, "
                f"e.g. {(missing + unexpected)[0]})"
            )
    model.fc = nn.Linear(model.fc.in_features, num_classes)
    nn.init.xavier_uniform_(model.fc.weight)  # as d2l; the bias keeps torch's default init
    return model, pretrained


def parameter_groups(model: nn.Module, lr: float, head_lr_mult: float, pretrained: bool) -> list[dict]:
    """Pretrained layers at ``lr``, the new head at ``lr * head_lr_mult``; from scratch, all at the head's rate."""
    head = list(model.fc.parameters())
    head_ids = {id(parameter) for parameter in head}
    body = [parameter for parameter in model.parameters() if id(parameter) not in head_ids]
    if not pretrained:
        return [{"params": body + head, "lr": lr * head_lr_mult, "name": "all"}]
    return [{"params": body, "lr": lr, "name": "pretrained"}, {"params": head, "lr": lr * head_lr_mult, "name": "head"}]
