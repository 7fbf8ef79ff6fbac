"""The benchmark tooling: the data set with tails, the results schema, the report and its target checks."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import gpuaug as ga
from benchmarks import common, report
from benchmarks import data as bench_data
from benchmarks.__main__ import main
from gpuaug.tools.samples import write_photo_folder

ENV_KEYS = {"date", "commit", "device", "cpu", "cpu_count", "torch", "torchvision", "kornia", "dali", "python"}


# ----------------------------------------------------------------------------------------------
# The data set
# ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tails_set(tmp_path_factory) -> Path:
    """A small default (tails) set: 30 images, every kind of oddity at least once."""
    return bench_data.make(tmp_path_factory.mktemp("tails") / "set", 30, seed=0, processes=1)


def _files(root: Path) -> list[Path]:
    return sorted(path for path in root.rglob("*") if path.is_file() and path.suffix.lower() in bench_data.IMAGE_SUFFIXES)


def _snapshot(root: Path) -> dict[str, str]:
    files = (path for path in root.rglob("*") if path.is_file())
    return {str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest() for path in files}


def _pil_rgb(path: Path) -> torch.Tensor:
    with Image.open(path) as image:
        return torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1)


def test_plan_is_deterministic_and_holds_every_kind():
    assert bench_data.plan(200, seed=1) == bench_data.plan(200, seed=1)
    assert bench_data.plan(200, seed=1) != bench_data.plan(200, seed=2)
    kinds = bench_data.plan(2000, seed=0)
    assert set(kinds) == {"jpeg", *bench_data.KINDS}
    assert kinds.count("huge") == 2 and kinds.count("jpeg-444") == 200
    odd = sum(kind not in ("jpeg", "jpeg-444", "progressive") for kind in kinds)
    assert 0.02 <= odd / len(kinds) <= 0.05  # "a few percent of oddities"


def test_describe_reports_the_size_spread_and_every_oddity_kind(tails_set):
    described = bench_data.describe(tails_set)
    assert described["count"] == 30 and described["classes"] == 10 and described["set"] == "tails"
    assert described["oddity_kinds"] >= 8
    assert set(described["oddities"]) >= set(bench_data.KINDS)
    assert described["short_side"]["min"] < 32 and described["long_side"]["max"] > 4000  # the tails
    assert 200 <= described["short_side"]["median"] <= 500
    assert described["aspect"]["min"] < 0.8 < 1.25 < described["aspect"]["max"]
    assert set(described["formats"]) == {"JPEG", "PNG", "WEBP"}
    assert "oddities 1" not in bench_data.summary(described) and "tiny 1" in bench_data.summary(described)


def test_a_set_is_reproducible_from_its_seed(tails_set, tmp_path):
    again = bench_data.make(tmp_path / "again", 30, seed=0, processes=2)
    assert _snapshot(again) == _snapshot(tails_set)


def test_gpuloader_on_the_cpu_meets_every_kind_and_decodes_it_like_pil(tails_set):
    files = _files(tails_set)
    loader = ga.GPULoader([(str(path), 0) for path in files], batch_size=1, device="cpu", dtype=torch.uint8, channels_last=False)
    met: set[str] = set()
    for path, (images, _) in zip(files, loader, strict=True):
        reference = _pil_rgb(path)
        assert images.shape[1:] == reference.shape, path
        assert torch.equal(images[0], reference), path
        met.update(bench_data.classify(path)[2])
    assert met >= set(bench_data.KINDS)


@pytest.mark.cuda
def test_gpuloader_on_cuda_meets_every_kind_and_decodes_it_like_pil(tails_set):
    """nvJPEG/nvImageCodec and libjpeg differ in rounding: within 2 levels on average, every image."""
    files = _files(tails_set)
    loader = ga.GPULoader([(str(path), 0) for path in files], batch_size=1, device="cuda", dtype=torch.uint8, channels_last=False)
    for path, (images, _) in zip(files, loader, strict=True):
        reference = _pil_rgb(path)
        assert images.shape[1:] == reference.shape, path
        assert (images[0].cpu().float() - reference.float()).abs().mean() <= 2.0, path


def test_make_refuses_a_folder_that_holds_anything_else(tmp_path):
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match=str(tmp_path)):
        bench_data.make(tmp_path, 20, seed=0)
    assert [path.name for path in tmp_path.iterdir()] == ["mine.txt"]


def test_a_data_folder_is_never_written(tmp_path):
    """`--data` is the user's: benchmarks read it and write nothing there (issue 12, row 1)."""
    data = tmp_path / "user-data"
    write_photo_folder(data, ("a", "b"), 6, seed=1, short_side=(48, 80))
    before = _snapshot(data)
    out = tmp_path / "out"
    arguments = ["--device", "cpu", "--quick", "--batch-size", "4", "--repeats", "1", "--workers", "0", "--data", str(data)]
    assert main(["loader", *arguments, "--out", str(out)]) == 0
    assert _snapshot(data) == before
    record = json.loads((out / "results.json").read_text())
    assert record["config"]["loader"]["dataset"]["set"] == "user data"
    rows = {row["pipeline"]: row for row in record["results"] if row["benchmark"] == "loader"}
    assert {"pil-dataloader", "gpuaug", "decode-cpu"} <= set(rows)
    modes = [name for name in rows if name == "gpuaug" or name.startswith("gpuaug-decode-")]  # the decode modes
    decoders = [rows[name]["decoder"] for name in modes]
    assert rows["gpuaug"]["decoder"] == "cpu" and len(decoders) == len(set(decoders))  # no decode mode timed twice
    assert rows["gpuaug"]["fraction_of_ceiling"] == rows["gpuaug"]["images_per_sec"] / rows["decode-cpu"]["images_per_sec"]
    # issue 16's recipe: GPULoader with it against timm's transforms in a DataLoader, same files and workers
    policy, timm = rows["gpuaug-policy"], rows["timm-dataloader"]
    assert policy["images_per_sec"] > 0 and timm["images_per_sec"] > 0 and policy["decoder"] == "cpu"
    assert policy["ratio_to_timm"] == policy["images_per_sec"] / timm["images_per_sec"]
    assert (
        "TrivialAugmentWide" in policy["ops"] and "rand-m9-mstd0.5" in record["config"]["loader"]["recipe_ops"]["timm-dataloader"]
    )
    # issue 17: the same files as shards, local and from a loopback HTTP server, written outside --data
    local, remote = rows["gpuaug-shards"], rows["gpuaug-shards-http"]
    assert local["ratio_to_files"] == local["images_per_sec"] / rows["gpuaug"]["images_per_sec"]
    assert remote["ratio_to_local_shards"] == remote["images_per_sec"] / local["images_per_sec"]
    assert "loader-clean" not in record["config"]  # the clean comparison needs the generated sets
    assert main(["loader", *arguments[:-1], str(tmp_path / "missing"), "--out", str(out)]) == 2
    with pytest.raises(FileNotFoundError, match="missing"):
        bench_data.ensure(tmp_path / "missing", 10, 0)


# ----------------------------------------------------------------------------------------------
# Runs and their records
# ----------------------------------------------------------------------------------------------
def test_aug_run_writes_the_schema_and_a_chart(tmp_path, tails_set):
    args = ["aug", "--device", "cpu", "--quick", "--batch-size", "4", "--repeats", "1", "--data", str(tails_set)]
    assert main([*args, "--out", str(tmp_path)]) == 0
    record = json.loads((tmp_path / "results.json").read_text())
    assert set(record["env"]) >= ENV_KEYS and record["config"]["aug"]["batch_size"] == 4
    rows = {row["pipeline"]: row for row in record["results"]}
    expected = {"gpuaug", "gpuaug-ragged", "gpuaug-exact", "kornia-sequential", "torchvision-v2-per-image", "pil-per-image"}
    assert expected <= set(rows)
    assert rows["gpuaug-ragged"]["input"] == "ragged" and rows["gpuaug"]["input"].startswith("uniform")
    assert rows["gpuaug-ragged"]["kernel_launches"] is None  # n/a on the CPU
    for row in record["results"]:
        assert row["benchmark"] == "aug" and row["min"] <= row["images_per_sec"] <= row["max"] and row["repeats"] == 1
    assert rows["pil-per-image"]["ratio_to_baseline"] == 1.0
    # issue 16's recipe (crop + flip + TrivialAugmentWide + Normalize + RandomErasing), every anchor beside it
    recipe = {"gpuaug-policy-ragged", "gpuaug-policy-packed", "gpuaug-policy", "kornia-policy", "torchvision-v2-policy-per-image"}
    assert recipe | {"timm-per-image"} <= set(rows)
    assert rows["gpuaug-policy-ragged"]["input"] == "ragged" and rows["gpuaug-policy-packed"]["input"] == "packed"
    assert rows["gpuaug-policy"]["input"].startswith("uniform") and rows["timm-per-image"]["input"] == "ragged"
    for name in recipe:
        row = rows[name]
        assert row["images_per_sec"] > 0 and "TrivialAugmentWide" in row["ops"], name
        assert row["ratio_to_kornia"] == row["images_per_sec"] / rows["kornia-policy"]["images_per_sec"], name
        assert row["ratio_to_timm"] == row["images_per_sec"] / rows["timm-per-image"]["images_per_sec"], name
    assert rows["gpuaug-policy-ragged"]["kernel_launches"] is None and "kernel_launches" not in rows["timm-per-image"]
    assert "rand-m9-mstd0.5" in rows["timm-per-image"]["ops"]
    ragged = record["config"]["aug"]["ragged_input"]
    assert ragged["batches"] == 2 and ragged["height"][0] < ragged["height"][1]  # different sizes: ragged
    assert (tmp_path / "aug.png").stat().st_size > 1000


def test_commit_is_this_projects_or_the_environments_or_unknown(tmp_path, monkeypatch):
    monkeypatch.delenv("GPUAUG_COMMIT", raising=False)
    assert common.git_commit(tmp_path) == "unknown"  # no .git here, even if a folder above has one
    if (common.PROJECT_ROOT / ".git").exists():
        assert common.git_commit() != "unknown"
    monkeypatch.setenv("GPUAUG_COMMIT", "abc1234567")  # said by whoever copied the tree: wins over a stale .git
    assert common.git_commit(tmp_path) == "abc1234567" and common.git_commit() == "abc1234567"


def test_kernel_launches_are_not_counted_on_the_cpu():
    assert common.kernel_launches(lambda: torch.ones(3).sum(), torch.device("cpu")) is None


@pytest.mark.cuda
def test_kernel_launches_count_cuda_kernels():
    x = torch.ones(1000, device="cuda")
    counted = common.kernel_launches(lambda: (x + 1).mul_(2), torch.device("cuda"), batches=3)
    assert counted["kernels_per_batch"] == 2


# ----------------------------------------------------------------------------------------------
# Report and targets
# ----------------------------------------------------------------------------------------------
def _record(
    device: str, rates: dict, date: str = "2026-11-27T10:00:00+00:00", commit: str = "abc1234", extra: dict | None = None
) -> dict:
    extra = extra or {}
    env = {
        "date": date,
        "commit": commit,
        "device": device,
        "cpu": "x",
        "cpu_count": 2,
        "torch": "2.14",
        "torchvision": "0.29",
        "kornia": "0.9.0",
        "dali": None,
        "python": "3.11",
    }
    results = [
        {
            "benchmark": benchmark,
            "pipeline": pipeline,
            "images_per_sec": rate,
            "min": rate,
            "max": rate,
            "repeats": 5,
            "ratio_to_baseline": None,
            **extra.get((benchmark, pipeline), {}),
        }
        for (benchmark, pipeline), rate in rates.items()
    ]
    tails = {"set": "tails", "count": 100, "oddities": {"huge": 1}, "oddity_fraction": 0.04}
    config = {"aug": {"batch_size": 256}, "loader": {"dataset": tails}, "loader-clean": {"dataset": {"set": "clean"}}}
    return {"env": env, "config": config, "results": results}


def test_targets_cpu_and_gpu():
    cpu = _record(
        "CPU: x",
        {
            ("loader", "gpuaug"): 900,
            ("loader", "pil-dataloader"): 600,
            ("loader", "dali"): 800,
            ("loader", "decode-cpu"): 3000,
            ("loader-clean", "gpuaug"): 1000,
            ("loader-clean", "pil-dataloader"): 500,
        },
        extra={("loader", "gpuaug"): {"fraction_of_ceiling": 0.3, "ceiling": "decode-cpu"}},
    )
    checks = {check["target"]: check for check in report.targets(cpu)}
    assert checks["loader (tails set): gpuaug / pil-dataloader"] == {
        "target": "loader (tails set): gpuaug / pil-dataloader",
        "value": 1.5,
        "goal": 1.5,
        "met": True,
    }
    assert checks["loader (clean set): gpuaug / pil-dataloader"]["value"] == 2.0
    assert not checks["loader (tails set): gpuaug / dali (CPU)"]["met"]
    assert not checks["loader (tails set): gpuaug / its decoder's decode-only ceiling (decode-cpu)"]["met"]
    recipe = _record("CPU: x", {("loader", "gpuaug-policy"): 130, ("loader", "timm-dataloader"): 100})
    checks = {check["target"]: check for check in report.targets(recipe)}
    assert checks["loader (tails set): gpuaug-policy / timm-dataloader (recipe)"] == {
        "target": "loader (tails set): gpuaug-policy / timm-dataloader (recipe)",
        "value": 1.3,
        "goal": 1.2,
        "met": True,
    }
    launches = {"kernels_per_batch": 3.0, "copies_per_batch": 0.0}
    gpu = _record(
        "NVIDIA H100 80GB HBM3",
        {
            ("aug", "gpuaug-ragged"): 250_000,
            ("aug", "kornia-sequential"): 20_000,
            ("train", "gpuaug"): 2900,
            ("train", "synthetic-ceiling"): 3000,
            ("loader", "gpuaug"): 5000,
            ("loader", "pil-dataloader"): 1000,
        },
        extra={("aug", "gpuaug-ragged"): {"kernel_launches": launches}},
    )
    checks = {check["target"]: check for check in report.targets(gpu)}
    assert checks["aug: gpuaug-ragged img/s at batch 256"]["met"] and checks["aug: gpuaug-ragged / kornia-sequential"]["met"]
    assert checks["aug: gpuaug-ragged kernel launches per batch"]["met"]
    assert checks["train (unknown set): gpuaug / synthetic ceiling"]["met"]
    recipe = _record(
        "NVIDIA H200", {("aug", "gpuaug-policy-ragged"): 150_000, ("aug", "kornia-policy"): 20_000, ("aug", "gpuaug-ragged"): 1}
    )
    recipe_checks = {check["target"]: check for check in report.targets(recipe)}
    assert recipe_checks["aug: gpuaug-policy-ragged (recipe) img/s at batch 256"]["met"]
    assert not recipe_checks["aug: gpuaug-policy-ragged / kornia-policy"]["met"]  # 7.5x < 10x
    assert not checks["loader (tails set): gpuaug / pil-dataloader"]["met"]  # 5x < 8x
    old = _record("NVIDIA H200", {("aug", "gpuaug"): 27_000, ("aug", "kornia-sequential"): 20_000})
    missing = [check for check in report.targets(old) if check["value"] is None]
    assert len(missing) == 1 and not missing[0]["met"]  # the ragged input was not measured: said, and missed


def test_collect_and_render_into_a_readme(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    rates = {("aug", "gpuaug"): 123456, ("loader", "gpuaug"): 2000, ("loader", "pil-dataloader"): 1000}
    rates.update({("loader-clean", "gpuaug"): 3000, ("loader-clean", "pil-dataloader"): 1000})
    (run / "results.json").write_text(json.dumps(_record("NVIDIA H100 80GB HBM3", rates)))
    (run / "aug.png").write_bytes(b"png")
    (run / "cuda-tests.log").write_text("FAILED tests/test_x.py::test_y - assert 0\n=== 1 failed, 2 passed in 3.0s ===\n")
    results = tmp_path / "results"
    saved = report.collect(run, results)
    assert saved.name == "2026-11-27-h100-80gb-hbm3-abc1234.json"
    assert (results / "2026-11-27-h100-80gb-hbm3-abc1234-aug.png").exists()
    assert (results / "2026-11-27-h100-80gb-hbm3-abc1234-cuda-tests.log").read_text().startswith("FAILED")
    cpu = _record("CPU: x", {("train", "synthetic-ceiling"): 100}, date="2026-11-28T10:00:00+00:00", commit="cpu9")
    (results / "cpu.json").write_text(json.dumps(cpu))
    text = report.render(results)
    assert text.index("### NVIDIA H100 80GB HBM3") < text.index("### CPU: x")  # GPU first
    assert "| gpuaug | 123,456 |" in text and "`abc1234`" in text and "`cpu9`" in text
    assert "**2.00x** on the tails set, **3.00x** on the clean set" in text
    assert "1 failed, 2 passed in 3.0s. Failed: `tests/test_x.py::test_y`." in text
    assert "loader (tails set): gpuaug / pil-dataloader: 2 (goal 8)" in text  # a missed target, said plainly
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{report.START}\nold\n{report.END}\nafter\n")
    main(["report", "--results-dir", str(results), "--readme", str(readme)])
    content = readme.read_text()
    assert content.startswith(f"intro\n{report.START}\n") and "old" not in content and "123,456" in content
    assert content.endswith(f"{report.END}\nafter\n")


def test_newest_file_per_device_and_benchmark(tmp_path):
    old = _record("CPU: x", {("aug", "gpuaug"): 1, ("train", "gpuaug"): 2}, date="2026-11-01T00:00:00+00:00", commit="old")
    new = _record("CPU: x", {("aug", "gpuaug"): 3}, date="2026-11-02T00:00:00+00:00", commit="new")
    (tmp_path / "a.json").write_text(json.dumps(old))
    (tmp_path / "b.json").write_text(json.dumps(new))
    chosen = report.newest_per_device(tmp_path)["CPU: x"]
    assert chosen["aug"][1]["env"]["commit"] == "new" and chosen["train"][1]["env"]["commit"] == "old"


def test_targets_come_only_from_each_benchmarks_newest_file(tmp_path):
    """An older file still newest for one benchmark (train) answers no target of another (loader) that a
    newer file measured: a stale missed target would stand beside the new one."""
    old_rates = {("train", "gpuaug"): 2, ("loader", "gpuaug"): 500, ("loader", "pil-dataloader"): 1000}
    old = _record("CPU: x", old_rates, date="2026-11-01T00:00:00+00:00", commit="old")
    old["config"]["loader"]["dataset"] = {"set": "clean"}  # the old loader ran on another set: another target name
    new_rates = {("loader", "gpuaug"): 2000, ("loader", "pil-dataloader"): 1000}
    (tmp_path / "a.json").write_text(json.dumps(old))
    (tmp_path / "b.json").write_text(json.dumps(_record("CPU: x", new_rates, date="2026-11-02T00:00:00+00:00", commit="new")))
    text = report.render(tmp_path)
    assert "| loader (tails set): gpuaug / pil-dataloader | 2 | 1.50 | yes | `new` |" in text
    assert "loader (clean set): gpuaug / pil-dataloader" not in text and "0 of 1 targets missed" in text


def test_committed_results_render():
    """Each device's newest committed result of each benchmark is in the report (the README's source)."""
    text = report.render()
    newest = report.newest_per_device()
    assert newest and any(not device.startswith("CPU") for device in newest)  # a GPU run is committed
    for by_benchmark in newest.values():
        for path, record in by_benchmark.values():
            assert f"`benchmarks/results/{path.name}`" in text and f"`{record['env']['commit']}`" in text


# ----------------------------------------------------------------------------------------------
# Bad arguments: one line on stderr, exit status 2, before any work (issue 18, row 19)
# ----------------------------------------------------------------------------------------------
BAD_ARGUMENTS = {
    "batch size 0": (["loader", "--batch-size", "0"], "argument --batch-size: must be >= 1, got 0"),
    "batch size -5": (["train", "--batch-size", "-5"], "argument --batch-size: must be >= 1, got -5"),
    "batch size not a number": (["aug", "--batch-size", "many"], "argument --batch-size: invalid int value: 'many'"),
    "repeats 0": (["aug", "--repeats", "0"], "argument --repeats: must be >= 1, got 0"),
    "image size 0": (["aug", "--image-size", "0"], "argument --image-size: must be in [16, 4096], got 0"),
    "image size 10**9": (["all", "--image-size", str(10**9)], "argument --image-size: must be in [16, 4096], got 1000000000"),
    "workers -1": (["loader", "--workers", "-1"], "argument --workers: must be >= 0, got -1"),
    "device bogus": (["aug", "--device", "bogus"], "argument --device: must be cpu, cuda or cuda:N, got 'bogus'"),
    "out a file": (["aug", "--out", "{afile}"], "--out {afile}: is a file, not a folder"),
    "out under a file": (["aug", "--out", "{afile}/run"], "--out {afile}/run: cannot create the folder"),
    "data count 0": (["data", "--count", "0", "--out", "{new}"], "argument --count: must be >= 1, got 0"),
    "data out not empty": (["data", "--out", "{full}"], "--out {full}: is not empty and is not a benchmark set"),
    "data out a file": (["data", "--out", "{afile}"], "--out {afile}: is a file, not a folder"),
    "data an empty folder": (["aug", "--data", "{empty}"], "--data {empty}: no class folder with files in it"),
    "data missing": (["loader", "--data", "{missing}"], "--data {missing}: not a folder"),
    "collect missing": (["report", "--collect", "{missing}"], "--collect {missing}: no results.json there"),
    "readme missing": (["report", "--readme", "{missing}"], "--readme {missing}: no such file"),
    "no command": ([], "the following arguments are required: command"),
    "unknown flag": (["aug", "--no-such-flag"], "unrecognized arguments: --no-such-flag"),
}


@pytest.mark.parametrize("case", list(BAD_ARGUMENTS))
def test_bad_arguments_exit_2_with_one_line(tmp_path, capsys, case):
    arguments, fragment = BAD_ARGUMENTS[case]
    (tmp_path / "afile").write_text("a file where a folder should go")
    (tmp_path / "empty").mkdir()
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "mine.txt").write_text("keep me")
    places = {name: str(tmp_path / name) for name in ("afile", "empty", "full", "missing", "new")}
    argv = [part.format(**places) for part in arguments]
    if argv and argv[0] in ("aug", "loader", "train", "all") and "--out" not in argv:
        argv += ["--out", str(tmp_path / "out")]
    if argv and argv[0] == "report":
        argv += ["--results-dir", str(tmp_path / "results")]
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("python -m benchmarks") and captured.err.count("\n") == 1, captured.err
    assert f": error: {fragment.format(**places)}" in captured.err, captured.err
    assert (tmp_path / "afile").read_text().startswith("a file") and (tmp_path / "full" / "mine.txt").exists()
    assert not (tmp_path / "new").exists() and not (tmp_path / "results").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_gpu_exits_2_with_one_line(tmp_path, capsys):
    assert main(["aug", "--device", "cuda", "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_an_out_folder_that_cannot_be_written_exits_2(tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: Path(path) != out and real_access(path, mode, **kw))
    assert main(["aug", "--device", "cpu", "--out", str(out)]) == 2
    error = capsys.readouterr().err
    assert (
        error
        == f"python -m benchmarks: error: --out {out}: cannot write in this folder (read-only file system or no permission)\n"
    )


def test_measure_all_interleaves_repeats_and_leaves_out_a_failing_pipeline(capsys):
    """One warm-up run each, then rounds of one run each (a slow spell falls on every pipeline alike);
    a pipeline that raises is named in ``failures`` and run no more, the others are measured."""
    calls: list[str] = []

    def pipeline(name: str, fail_at: int | None = None):
        def run() -> int:
            calls.append(name)
            if fail_at is not None and calls.count(name) == fail_at:
                raise RuntimeError(f"{name} broke")
            return 10

        return run

    failures: dict[str, str] = {}
    runs = {"a": pipeline("a"), "b": pipeline("b", fail_at=3), "c": pipeline("c")}
    measured = common.measure_all("loader", runs, torch.device("cpu"), repeats=3, baseline="a", failures=failures)
    assert calls == ["a", "b", "c", "a", "b", "c", "a", "b", "c", "a", "c"]
    assert [m.pipeline for m in measured] == ["a", "c"] and all(m.repeats == 3 and m.images_per_repeat == 10 for m in measured)
    assert all(m.min <= m.images_per_sec <= m.max for m in measured) and measured[0].ratio_to_baseline == 1.0
    assert failures == {"b": "RuntimeError: b broke"}
    assert "loader b: FAILED RuntimeError: b broke" in capsys.readouterr().out
