"""Turn result files into the Markdown the README shows, check the targets, collect a run's files.

``python -m benchmarks report`` prints, for each device (GPUs first), the newest result of every
benchmark in ``benchmarks/results/`` (its date, commit, versions, data set, a table and the
chart), then the targets of ``../shared/BENCHMARKS.md`` that those results answer, missed ones
first and said so. ``--readme README.md`` writes it between the README's performance markers
(and nowhere else). ``--collect OUT`` first copies ``OUT/results.json``, its charts and the CUDA
test and suite logs into ``benchmarks/results/`` as ``YYYY-MM-DD-<device>-<commit>``.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
from pathlib import Path

from benchmarks.data import summary

RESULTS = Path(__file__).resolve().parent / "results"
START, END = "<!-- performance:start -->", "<!-- performance:end -->"
BENCHMARKS = ("aug", "loader", "loader-clean", "train")
BASELINES = {"aug": "pil-per-image", "loader": "pil-dataloader", "loader-clean": "pil-dataloader", "train": "synthetic-ceiling"}
TITLES = {
    "aug": "augment-only (decoded images already on the device)",
    "loader": "loader end to end, files to batches (and decode-only ceilings)",
    "loader-clean": "loader end to end on the clean set (uniform JPEGs, no tails)",
    "train": "training fed by each loader vs the same training on synthetic on-device batches",
}


def _row(results: list[dict], benchmark: str, pipeline: str) -> dict | None:
    return next((r for r in results if r["benchmark"] == benchmark and r["pipeline"] == pipeline), None)


def _rate(results: list[dict], benchmark: str, pipeline: str) -> float | None:
    row = _row(results, benchmark, pipeline)
    return None if row is None else row["images_per_sec"]


def is_gpu(record: dict) -> bool:
    return not record["env"]["device"].startswith("CPU")


def data_set(record: dict, benchmark: str) -> str:
    """``tails``, ``clean`` or ``user data``: which set a benchmark of this record ran on."""
    described = record.get("config", {}).get(benchmark, {}).get("dataset") or {}
    return described.get("set", "clean" if described else "unknown")  # files before the tails set: clean JPEGs


def targets(record: dict) -> list[dict]:
    """The targets of BENCHMARKS.md that this result file can answer, each with its measured value.

    A target whose measurement is missing from the file (say the ragged input in a file written
    before it was measured) is listed with ``value`` None and counts as missed.
    """
    results, gpu = record["results"], is_gpu(record)
    checks: list[dict] = []

    def check(name: str, value: float | None, goal: float, at_most: bool = False) -> None:
        met = value is not None and (value <= goal if at_most else value >= goal)
        checks.append({"target": name, "value": None if value is None else round(value, 3), "goal": goal, "met": met})

    def ratio(name: str, benchmark: str, ours: str, theirs: str, goal: float) -> None:
        mine, other = _rate(results, benchmark, ours), _rate(results, benchmark, theirs)
        if other is not None and (mine is not None or benchmark in {r["benchmark"] for r in results}):
            check(name, None if mine is None else mine / other, goal)

    def ceiling(name: str, benchmark: str, goal: float) -> None:
        row = _row(results, benchmark, "gpuaug")
        if row is None:
            return
        if "fraction_of_ceiling" in row:
            check(f"{name} ({row.get('ceiling', '?')})", row["fraction_of_ceiling"], goal)
        elif _rate(results, benchmark, "decode-only"):
            check(f"{name} (decode-only)", row["images_per_sec"] / _rate(results, benchmark, "decode-only"), goal)

    loader_set = data_set(record, "loader")
    if gpu:
        ratio(f"loader ({loader_set} set): gpuaug / pil-dataloader", "loader", "gpuaug", "pil-dataloader", 8.0)
        ceiling(f"loader ({loader_set} set): gpuaug / its decoder's decode-only ceiling", "loader", 0.85)
        train = _row(results, "train", "gpuaug")
        if train is not None:
            ceiling_rate = _rate(results, "train", "synthetic-ceiling")
            value = train["images_per_sec"] / ceiling_rate if ceiling_rate else None
            check(f"train ({data_set(record, 'train')} set): gpuaug / synthetic ceiling", value, 0.90)
        if any(r["benchmark"] == "aug" for r in results):
            on_photos = ("gpuaug-ragged", "gpuaug-packed", "gpuaug-packed-apply")
            ragged = [r for r in results if r["benchmark"] == "aug" and r["pipeline"] in on_photos]
            batch = record.get("config", {}).get("aug", {}).get("batch_size")
            if not ragged:
                check("aug: gpuaug on ragged real photos, img/s (not measured in this file)", None, 200_000)
            for row in ragged:
                if batch == 256:
                    check(f"aug: {row['pipeline']} img/s at batch 256", row["images_per_sec"], 200_000)
                ratio(f"aug: {row['pipeline']} / kornia-sequential", "aug", row["pipeline"], "kornia-sequential", 10.0)
                launches = row.get("kernel_launches") or {}
                if "kernels_per_batch" in launches:
                    check(f"aug: {row['pipeline']} kernel launches per batch", launches["kernels_per_batch"], 4, at_most=True)
            for pipeline in ("gpuaug-policy-ragged", "gpuaug-policy-packed"):  # the recipe of issue 16
                row = _row(results, "aug", pipeline)
                if row is None:
                    continue
                if batch == 256:
                    check(f"aug: {pipeline} (recipe) img/s at batch 256", row["images_per_sec"], 100_000)
                ratio(f"aug: {pipeline} / kornia-policy", "aug", pipeline, "kornia-policy", 10.0)
    else:
        ratio(f"loader ({loader_set} set): gpuaug / pil-dataloader", "loader", "gpuaug", "pil-dataloader", 1.5)
        ratio("loader (clean set): gpuaug / pil-dataloader", "loader-clean", "gpuaug", "pil-dataloader", 1.5)
        ratio(f"loader ({loader_set} set): gpuaug / dali (CPU)", "loader", "gpuaug", "dali", 1.2)
        recipe = f"loader ({loader_set} set): gpuaug-policy / timm-dataloader (recipe)"
        ratio(recipe, "loader", "gpuaug-policy", "timm-dataloader", 1.2)
        ceiling(f"loader ({loader_set} set): gpuaug / its decoder's decode-only ceiling", "loader", 0.5)
    return checks


def _installed(env: dict, package: str) -> str:
    if package not in env:
        return "not recorded"
    return env[package] or "not installed"


def _value(check: dict) -> str:
    return _number(check["value"])


def _number(value: float | None) -> str:
    if value is None:
        return "not measured"
    if abs(value) >= 100 or float(value).is_integer():
        return f"{value:,.0f}"
    return f"{value:.2f}"


def _extra(row: dict, benchmark: str, gpu: bool) -> str:
    if benchmark == "aug":
        launches = row.get("kernel_launches")
        if isinstance(launches, dict) and "kernels_per_batch" in launches:
            count = f"{launches['kernels_per_batch']:.0f}"
        elif not row["pipeline"].startswith(("gpuaug", "kornia")):
            count = ""
        else:
            count = "not measured" if gpu else "n/a"
        return f" {row.get('input', 'uniform')} | {count} |"  # files before the ragged input timed uniform batches only
    if benchmark in ("loader", "loader-clean"):
        notes = []
        if "decoder" in row:
            fraction = row.get("fraction_of_ceiling")
            notes.append(f"decoder {row['decoder']}" + (f", {fraction:.0%} of {row['ceiling']}" if fraction else ""))
        if "decoded_fraction" in row:
            notes.append(f"decodes {row['decoded_fraction']:.0%} of the files")
        return f" {'; '.join(notes)} |"
    if benchmark == "train":
        wait = row.get("data_wait_fraction")
        return f" {'' if wait is None else f'{wait:.0%}'} |"
    return ""


EXTRA_HEADERS = {
    "aug": (" input | kernels / batch |", "---|---:|"),
    "loader": (" notes |", "---|"),
    "loader-clean": (" notes |", "---|"),
    "train": (" waiting for data |", "---:|"),
}


def _benchmark_section(path: Path, record: dict, benchmark: str) -> list[str]:
    env = record["env"]
    rows = [r for r in record["results"] if r["benchmark"] == benchmark]
    config = record.get("config", {}).get(benchmark, {})
    described = ", ".join(f"{key} {config[key]}" for key in ("batch_size", "workers", "model", "image_size") if key in config)
    extra_head, extra_rule = EXTRA_HEADERS[benchmark]
    lines = [
        f"**{benchmark}**: {TITLES[benchmark]} ({described}; median of {rows[0]['repeats']} repeats). "
        f"{env['date'][:10]}, commit `{env['commit']}`, `benchmarks/results/{path.name}`.",
        "",
    ]
    if config.get("dataset"):
        lines += [f"Data: {summary(config['dataset'])}.", ""]
    if benchmark == "aug" and config.get("ragged_input"):
        ragged = config["ragged_input"]
        lines += [
            f"Ragged input: {ragged['batches']} batches, heights {ragged['height'][0]}-{ragged['height'][1]} px, widths "
            f"{ragged['width'][0]}-{ragged['width'][1]} px, {ragged['megapixels_per_batch']} megapixels per batch.",
            "",
        ]
    lines += [
        f"| pipeline | images/s | min | max | vs {BASELINES[benchmark]} |{extra_head}",
        f"|---|---:|---:|---:|---:|{extra_rule}",
    ]
    gpu = is_gpu(record)
    for row in rows:
        ratio = "" if row.get("ratio_to_baseline") is None else f"{row['ratio_to_baseline']:.2f}x"
        rates = f"{row['images_per_sec']:,.0f} | {row['min']:,.0f} | {row['max']:,.0f}"
        lines.append(f"| {row['pipeline']} | {rates} | {ratio} |{_extra(row, benchmark, gpu)}")
    failed = {**config.get("failures", {})}
    if failed:
        lines += ["", "Failed (left out): " + "; ".join(f"`{name}`: {error}" for name, error in failed.items())]
    chart = path.with_name(f"{path.stem}-{benchmark}.png")
    if chart.exists():
        lines += ["", f"![{benchmark}](benchmarks/results/{chart.name})"]
    lines.append("")
    return lines


def cuda_tests(path: Path) -> list[str]:
    """Markdown lines on the CUDA tests run with result file ``path`` (its ``-cuda-tests.log``), or none."""
    log = path.with_name(f"{path.stem}-cuda-tests.log")
    if not log.exists():
        return []
    lines = log.read_text(errors="replace").splitlines()
    outcome = next(
        (line.strip("= ") for line in reversed(lines) if re.search(r"\d+ (passed|failed|skipped)", line)), "no summary"
    )
    failed = [line.split(" - ")[0].removeprefix("FAILED ") for line in lines if line.startswith("FAILED ")]
    text = f"CUDA tests (`pytest -m cuda`, `benchmarks/results/{log.name}`): {outcome}."
    if failed:
        text += " Failed: " + ", ".join(f"`{name}`" for name in failed) + "."
    return [text, ""]


def newest_per_device(results_dir: Path = RESULTS) -> dict[str, dict[str, tuple[Path, dict]]]:
    """``{device: {benchmark: (file, record)}}``: for each device, the newest file holding each benchmark."""
    chosen: dict[str, dict[str, tuple[Path, dict]]] = {}
    records = [(path, json.loads(path.read_text())) for path in results_dir.glob("*.json")]
    records.sort(key=lambda item: (item[1]["env"]["date"], item[0].name), reverse=True)
    for path, record in records:
        device = chosen.setdefault(record["env"]["device"], {})
        for benchmark in BENCHMARKS:
            if benchmark not in device and any(r["benchmark"] == benchmark for r in record["results"]):
                device[benchmark] = (path, record)
    return chosen


def _tails_line(by_benchmark: dict[str, tuple[Path, dict]]) -> str | None:
    """GPULoader / PIL on the set with tails beside the clean set's."""
    ratios = {}
    for benchmark in ("loader", "loader-clean"):
        if benchmark in by_benchmark:
            record = by_benchmark[benchmark][1]
            ours, pil = _rate(record["results"], benchmark, "gpuaug"), _rate(record["results"], benchmark, "pil-dataloader")
            if ours and pil:
                ratios[data_set(record, benchmark)] = ours / pil
    if not ratios:
        return None
    parts = [f"**{ratio:.2f}x** on the {name} set" for name, ratio in sorted(ratios.items(), key=lambda item: item[0] != "tails")]
    return "GPULoader / PIL DataLoader, loader alone: " + ", ".join(parts) + "."


def render(results_dir: Path = RESULTS) -> str:
    """The Markdown of the README's performance section."""
    by_device = newest_per_device(results_dir)
    order = sorted(by_device, key=lambda device: (device.startswith("CPU"), device))
    parts = [
        "Generated by `python -m benchmarks report` from the result files in `benchmarks/results/` (per device, the "
        "newest result of each benchmark). Targets: `../shared/BENCHMARKS.md`; ratios are measured side by side in one run.",
        "",
    ]
    summaries, sections = [], []
    for device in order:
        by_benchmark = by_device[device]
        checks, seen = [], set()
        newest_for: dict[str, set[str]] = {}  # file -> the benchmarks it is the newest result of
        for benchmark, (path, _) in by_benchmark.items():
            newest_for.setdefault(path.name, set()).add(benchmark)
        for path, record in {path.name: (path, record) for path, record in by_benchmark.values()}.values():
            # an older file answers only for its own newest benchmarks, never beside a newer file's result
            own = {**record, "results": [r for r in record["results"] if r["benchmark"] in newest_for[path.name]]}
            for check in targets(own):
                if check["target"] not in seen:
                    seen.add(check["target"])
                    checks.append({**check, "file": path.name, "commit": record["env"]["commit"]})
        missed = [check for check in checks if not check["met"]]
        met = [check for check in checks if check["met"]]
        summaries.append(f"- **{device}**: {len(missed)} of {len(checks)} targets missed" + (":" if missed else "."))
        summaries += [f"  - {check['target']}: {_value(check)} (goal {_number(check['goal'])})" for check in missed]
        sections += [f"### {device}", ""]
        tails = _tails_line(by_benchmark)
        if tails:
            sections += [tails, ""]
        if checks:
            sections += ["| target | measured | goal | met | commit |", "|---|---:|---:|:---:|---|"]
            for check in missed + met:
                sections.append(
                    f"| {check['target']} | {_value(check)} | {_number(check['goal'])} | {'yes' if check['met'] else '**no**'} | "
                    f"`{check['commit']}` |"
                )
            sections.append("")
        newest_path, newest = max(by_benchmark.values(), key=lambda item: (item[1]["env"]["date"], item[0].name))
        env = newest["env"]
        sections += cuda_tests(newest_path)
        sections += [
            f"{env['cpu_count']} CPU cores ({env['cpu']}); torch {env['torch']}, torchvision {env['torchvision']}, "
            f"kornia {env['kornia']}, nvImageCodec {_installed(env, 'nvimgcodec')}, DALI {_installed(env, 'dali')}, "
            f"Python {env['python']} (newest file)." + (f" Note: {env['note']}" if env.get("note") else ""),
            "",
        ]
        for benchmark in BENCHMARKS:
            if benchmark in by_benchmark:
                sections += _benchmark_section(*by_benchmark[benchmark], benchmark)
    parts += ["Targets missed, newest results per device:", "", *summaries, "", *sections]
    return "\n".join(parts).rstrip() + "\n"


def collect(out: Path, results_dir: Path = RESULTS) -> Path:
    """Copy a run's results.json (+ charts, + the CUDA test and suite logs) into ``results_dir`` as ``date-device-commit``."""
    record = json.loads((out / "results.json").read_text())
    env = record["env"]
    device = re.sub(r"[^a-z0-9]+", "-", env["device"].lower().replace("nvidia", "")).strip("-")
    stem = f"{env['date'][:10]}-{device}-{env['commit']}"
    results_dir.mkdir(parents=True, exist_ok=True)
    target = results_dir / f"{stem}.json"
    shutil.copyfile(out / "results.json", target)
    for chart in out.glob("*.png"):
        shutil.copyfile(chart, results_dir / f"{stem}-{chart.name}")
    for log in ("cuda-tests.log", "suite.log"):
        if (out / log).exists():
            shutil.copyfile(out / log, results_dir / f"{stem}-{log}")
    return target


def main(args: argparse.Namespace) -> str:
    results_dir = Path(args.results_dir)
    if args.collect:
        print(f"collected {collect(Path(args.collect), results_dir)}")
    text = render(results_dir)
    if args.readme:
        readme = Path(args.readme)
        content = readme.read_text()
        if START not in content or END not in content:
            raise SystemExit(f"error: {readme} has no {START} ... {END} markers")
        before, rest = content.split(START, 1)
        _, after = rest.split(END, 1)
        readme.write_text(f"{before}{START}\n{text}{END}{after}")
        print(f"updated {readme}")
    else:
        print(text)
    return text
