"""The benchmark tooling: the results schema, the report and its target checks, collecting a run."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks import report
from benchmarks.__main__ import main

ENV_KEYS = {"date", "commit", "device", "cpu", "cpu_count", "torch", "torchvision", "kornia", "dali", "python"}


def test_aug_run_writes_the_schema_and_a_chart(tmp_path):
    assert main(["aug", "--device", "cpu", "--quick", "--batch-size", "4", "--repeats", "1", "--out", str(tmp_path)]) == 0
    record = json.loads((tmp_path / "results.json").read_text())
    assert set(record["env"]) >= ENV_KEYS and record["config"]["aug"]["batch_size"] == 4
    pipelines = {row["pipeline"] for row in record["results"]}
    assert {"gpuaug", "gpuaug-exact", "kornia-sequential", "torchvision-v2-per-image", "pil-per-image"} <= pipelines
    for row in record["results"]:
        assert row["benchmark"] == "aug" and row["min"] <= row["images_per_sec"] <= row["max"] and row["repeats"] == 1
    baseline = next(row for row in record["results"] if row["pipeline"] == "pil-per-image")
    assert baseline["ratio_to_baseline"] == 1.0
    assert (tmp_path / "aug.png").stat().st_size > 1000


def _record(device: str, rates: dict) -> dict:
    env = {
        "date": "2026-11-27T10:00:00+00:00",
        "commit": "abc1234",
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
        }
        for (benchmark, pipeline), rate in rates.items()
    ]
    return {"env": env, "config": {"aug": {"batch_size": 256}}, "results": results}


def test_targets_cpu_and_gpu():
    cpu = _record(
        "CPU: x",
        {("loader", "gpuaug"): 900, ("loader", "pil-dataloader"): 600, ("loader", "dali"): 800, ("loader", "decode-only"): 3000},
    )
    checks = {check["target"]: check for check in report.targets(cpu)}
    assert checks["loader: gpuaug / pil-dataloader"]["met"] and checks["loader: gpuaug / pil-dataloader"]["value"] == 1.5
    assert not checks["loader: gpuaug / dali (CPU)"]["met"] and not checks["loader: gpuaug / decode-only"]["met"]
    gpu = _record(
        "NVIDIA H100 80GB HBM3",
        {
            ("aug", "gpuaug"): 150_000,
            ("aug", "kornia-sequential"): 20_000,
            ("train", "gpuaug"): 2900,
            ("train", "synthetic-ceiling"): 3000,
        },
    )
    checks = {check["target"]: check for check in report.targets(gpu)}
    assert checks["aug: gpuaug / kornia-sequential"]["met"] and checks["aug: gpuaug img/s at batch 256"]["met"]
    assert checks["train: gpuaug / synthetic ceiling"]["met"]


def test_collect_and_render_into_a_readme(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "results.json").write_text(json.dumps(_record("NVIDIA H100 80GB HBM3", {("aug", "gpuaug"): 123456})))
    (run / "aug.png").write_bytes(b"png")
    results = tmp_path / "results"
    saved = report.collect(run, results)
    assert saved.name == "2026-11-27-h100-80gb-hbm3-abc1234.json"
    assert (results / "2026-11-27-h100-80gb-hbm3-abc1234-aug.png").exists()
    text = report.render(results)
    assert "### NVIDIA H100 80GB HBM3" in text and "| gpuaug | 123456 |" in text and "abc1234" in text
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{report.START}\nold\n{report.END}\nafter\n")
    main(["report", "--results-dir", str(results), "--readme", str(readme)])
    content = readme.read_text()
    assert "old" not in content and "123456" in content and content.endswith("after\n")


def test_committed_results_render():
    """Each hardware's newest committed result file is in the report (the README's source)."""
    text = report.render()
    newest: dict[str, str] = {}
    for path in sorted(Path(report.RESULTS).glob("*.json")):
        record = json.loads(path.read_text())
        newest[record["env"]["device"]] = record["env"]["commit"]
    assert newest and all(f"commit `{commit}`" in text for commit in newest.values())
