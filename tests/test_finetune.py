"""finetune: learning, learning-rate groups, AMP wiring, resume, DDP on gloo, bad arguments, the demo data."""

from __future__ import annotations

import dataclasses
import json
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from PIL import Image

import gpuaug as ga
from finetune import demo
from finetune.__main__ import main
from finetune.config import Config, from_args
from finetune.model import build_model, parameter_groups
from finetune.train import run

REPO = Path(__file__).resolve().parents[1]


def tinted_folder(root: Path, train_per_class: int = 24, test_per_class: int = 12, seed: int = 0) -> Path:
    """A learnable two-class task: noisy images tinted red ('warm') or blue ('cool')."""
    rng = np.random.default_rng(seed)
    for split, count in (("train", train_per_class), ("test", test_per_class)):
        for label, name in enumerate(("cool", "warm")):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for index in range(count):
                height, width = rng.integers(36, 60, size=2)
                pixels = rng.integers(0, 160, size=(height, width, 3)).astype(np.int32)
                pixels[..., 0 if label else 2] += 95
                Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(folder / f"{index}.png")
    return root


@pytest.fixture(scope="module")
def tinted(tmp_path_factory) -> Path:
    return tinted_folder(tmp_path_factory.mktemp("tinted"))


def tiny(data: Path, out: Path, **changes) -> Config:
    base = Config(
        data=str(data), weights="none", epochs=3, batch_size=16, image_size=32, workers=0, quiet=True, out=str(out), seed=0
    )
    return dataclasses.replace(base, **changes)


def metric_rows(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def test_learns_a_learnable_task_and_writes_outputs(tinted, tmp_path):
    # batch 8: 24 steps in 4 epochs, enough for BatchNorm's running statistics to settle (at batch 16,
    # 12 steps, the test accuracy depended on the seed); checked on seeds 0-4
    result = run(tiny(tinted, tmp_path / "run", epochs=4, batch_size=8), say=lambda *_: None)
    assert result["test_acc"] >= 0.9 and result["train_images"] == 48
    rows = metric_rows(tmp_path / "run")
    assert [row["epoch"] for row in rows] == [1, 2, 3, 4]
    for key in ("train_loss", "train_acc", "test_acc", "images_per_sec", "data_wait_frac", "seconds"):
        assert all(isinstance(row[key], float) for row in rows), key
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["classes"] == ["cool", "warm"] and config["versions"]["torch"] == torch.__version__
    assert (tmp_path / "run" / "curves.png").stat().st_size > 1000
    checkpoint = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)
    assert checkpoint["epoch"] == 3 and not (tmp_path / "run" / "checkpoint.pt.tmp").exists()


def test_head_learns_ten_times_faster(tinted, tmp_path):
    model, _ = build_model("resnet18", "none", 2)
    groups = parameter_groups(model, 0.01, 10.0, pretrained=True)
    assert [group["lr"] for group in groups] == [0.01, pytest.approx(0.1)]
    assert {id(p) for p in groups[1]["params"]} == {id(p) for p in model.fc.parameters()}
    assert [group["lr"] for group in parameter_groups(model, 0.01, 10.0, pretrained=False)] == [pytest.approx(0.1)]
    # through the command line, with a "pretrained" state_dict file: the optimizer holds both rates
    weights = tmp_path / "resnet18.pt"
    torch.save(build_model("resnet18", "none", 1000)[0].state_dict(), weights)
    run(tiny(tinted, tmp_path / "run", epochs=1, weights=str(weights)), say=lambda *_: None)
    saved = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)
    assert [group["lr"] for group in saved["optimizer"]["param_groups"]] == [0.01, pytest.approx(0.1)]


def test_new_head_is_xavier_initialised():
    model, _ = build_model("resnet18", "none", 3)
    bound = (6 / (512 + 3)) ** 0.5
    assert model.fc.out_features == 3 and model.fc.weight.abs().max() <= bound
    assert model.fc.weight.std() > bound / 3  # spread over the whole range, not torch's default (1/sqrt(512))


def test_fp16_uses_a_grad_scaler_on_cpu_autocast(tinted, tmp_path):
    result = run(tiny(tinted, tmp_path / "run", epochs=1, amp="fp16"), say=lambda *_: None)
    assert np.isfinite(result["train_loss"])
    scaler = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)["scaler"]
    assert scaler["scale"] > 1 and scaler["growth_interval"] == 2000
    off = run(tiny(tinted, tmp_path / "off", epochs=1), say=lambda *_: None)
    assert np.isfinite(off["train_loss"])
    assert torch.load(tmp_path / "off" / "checkpoint.pt", weights_only=False)["scaler"] == {}


@pytest.mark.parametrize("loader_kind", ["gpu", "torch"])
def test_resume_equals_the_uninterrupted_run(tinted, tmp_path, loader_kind):
    workers = 2 if loader_kind == "gpu" else 0
    whole = tiny(
        tinted, tmp_path / "whole", loader=loader_kind, workers=workers, momentum=0.9, schedule="cosine", warmup_epochs=0.5
    )
    run(whole, say=lambda *_: None)

    def crash_after_epoch_two(line: str) -> None:
        if line.startswith("epoch 2/3"):
            raise KeyboardInterrupt  # the run dies here, its epoch-2 checkpoint written

    with pytest.raises(KeyboardInterrupt):
        run(dataclasses.replace(whole, out=str(tmp_path / "parts")), say=crash_after_epoch_two)
    assert len(metric_rows(tmp_path / "parts")) == 2
    assert main(["--resume", str(tmp_path / "parts"), "--quiet"]) == 0
    keys = ("epoch", "train_loss", "train_acc", "test_acc", "lr")
    whole_rows, part_rows = metric_rows(tmp_path / "whole"), metric_rows(tmp_path / "parts")
    assert [[row[key] for key in keys] for row in part_rows] == [[row[key] for key in keys] for row in whole_rows]


@pytest.mark.parametrize("loader_kind", ["torch", "dali"])
def test_other_loaders_train(tinted, tmp_path, loader_kind):
    if loader_kind == "dali":
        pytest.importorskip("nvidia.dali")
    result = run(tiny(tinted, tmp_path / loader_kind, epochs=2, loader=loader_kind), say=lambda *_: None)
    assert result["train_images"] == 48 and 0 <= result["test_acc"] <= 1


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, config: Config, results) -> None:
    import os

    os.environ.update(
        {
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "RANK": str(rank),
            "WORLD_SIZE": str(world),
            "LOCAL_RANK": str(rank),
        }
    )
    torch.set_num_threads(1)
    try:
        result = run(config, say=lambda *_: None)
    finally:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
    results.put((rank, result["train_indices"], result["train_images"], result["test_acc"]))


def test_two_process_gloo_ddp(tinted, tmp_path):
    config = tiny(tinted, tmp_path / "ddp", epochs=2, batch_size=8)
    context = mp.get_context("spawn")
    results = context.SimpleQueue()
    mp.start_processes(_ddp_worker, args=(2, _free_port(), config, results), nprocs=2, join=True, start_method="spawn")
    reports = sorted(results.get() for _ in range(2))
    (_, first, total0, acc0), (_, second, total1, acc1) = reports
    assert len(first) == len(second) == 24 and not set(first) & set(second)
    assert sorted(first + second) == list(range(48))
    assert total0 == total1 == 48 and acc0 == acc1  # all-reduced
    assert len(metric_rows(tmp_path / "ddp")) == 2  # rank 0 wrote, once per epoch


@pytest.mark.parametrize(
    "arguments,fragment",
    [
        (["--data", "{missing}"], "no such folder"),
        (["--data", "{empty}"], "no train/"),
        (["--data", "{mismatch}"], "class folders differ"),
        (["--data", "{tinted}", "--model", "vgg11"], "--model"),
        (["--data", "{tinted}", "--weights", "{badweights}"], "does not fit"),
        (["--data", "{tinted}", "--weights", "{notweights}"], "not a loadable state_dict"),
        (["--data", "{tinted}", "--epochs", "0"], "--epochs"),
        (["--resume", "{missing}"], "no checkpoint.pt"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(tinted, tmp_path, capsys, arguments, fragment):
    (tmp_path / "empty").mkdir()
    mismatch = tinted_folder(tmp_path / "mismatch", 1, 1)
    (mismatch / "test" / "warm").rename(mismatch / "test" / "hot")
    torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / "bad.pt")
    (tmp_path / "not.pt").write_text("hello")
    places = {
        "missing": tmp_path / "missing",
        "empty": tmp_path / "empty",
        "mismatch": mismatch,
        "tinted": tinted,
        "badweights": tmp_path / "bad.pt",
        "notweights": tmp_path / "not.pt",
    }
    argv = [part.format(**places) for part in arguments] + ["--out", str(tmp_path / "out"), "--quiet", "--workers", "0"]
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert error.startswith("error:") and error.count("\n") == 1 and fragment in error


def test_offline_without_cached_weights_names_the_cache(tinted, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))

    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    assert main(["--data", str(tinted), "--weights", "DEFAULT", "--out", str(tmp_path / "out"), "--quiet"]) == 2
    error = capsys.readouterr().err
    assert str(tmp_path / "torch-home") in error and "--weights PATH" in error and "--weights none" in error
    assert error.count("\n") == 1


def test_command_line_end_to_end(tinted, tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "finetune",
            "--data",
            str(tinted),
            "--weights",
            "none",
            "--epochs",
            "1",
            "--batch-size",
            "16",
            "--image-size",
            "32",
            "--workers",
            "0",
            "--out",
            str(tmp_path / "cli"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr
    assert "epoch 1/1:" in result.stdout and "test acc" in result.stdout
    assert {path.name for path in (tmp_path / "cli").iterdir()} >= {"config.json", "metrics.jsonl", "curves.png", "checkpoint.pt"}


def test_demo_defaults_and_data(tmp_path):
    config = from_args([])
    assert config.data is None and config.epochs == 5 and config.image_size == 112
    assert from_args(["--data", "x"]).image_size == 224 and from_args(["--data", "x"]).batch_size == 128
    root = demo.build(tmp_path / "demo", train_per_class=3, test_per_class=2)
    train, test = ga.ImageFolder(root / "train"), ga.ImageFolder(root / "test")
    assert train.classes == test.classes == ["cat", "not-cat"]
    assert len(train) == 6 and len(test) == 4
    images, labels = next(iter(ga.GPULoader(train, batch_size=6, transform=ga.Compose([ga.CenterCrop(64)]))))
    assert images.shape == (6, 3, 64, 64) and sorted(labels.tolist()) == [0, 0, 0, 1, 1, 1]
