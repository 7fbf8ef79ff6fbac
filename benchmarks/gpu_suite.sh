#!/usr/bin/env bash
# The whole GPU check as one script (../shared/BENCHMARKS.md): the CUDA tests, the data sets (with
# tails, and clean), augment-only (ragged and uniform input, kernel launches per batch), the loaders
# beside every decode ceiling, and training vs the synthetic ceiling; a short table printed last.
# OUTDIR gets 7 files: results.json, aug.png, loader.png, loader-clean.png, train.png,
# cuda-tests.log and suite.log (every step's output). About 4.5 minutes on an H200 with 16 host
# cores (2026-11-28: 267 s, plus ~25 s for .gpu/boot.sh).
#
#   bash benchmarks/gpu_suite.sh OUTDIR [--device cpu] [--quick]
#
# On the lent GPU machine: GPUAUG_COMMIT=<commit> bash .gpu/boot.sh bash benchmarks/gpu_suite.sh OUTDIR
# (its copy's .git may be stale or absent: GPUAUG_COMMIT names the commit the copy was made from).
# CI runs it with --device cpu --quick (under 3 minutes on 2 cores) so that it cannot rot before a
# GPU comes. A failing step (a test, a benchmark, a step past its time limit) or pipeline (say a
# CUDA out-of-memory in one loader) is recorded and the suite goes on; the exit status is 1 when
# anything failed.
set -uo pipefail

if [ $# -lt 1 ] || [[ "$1" == -* ]]; then
    echo "usage: bash benchmarks/gpu_suite.sh OUTDIR [--device cpu] [--quick]" >&2
    exit 2
fi
out=$1
shift
device=cuda
quick=()
train_size=()
while [ $# -gt 0 ]; do
    case "$1" in
        --device) device=${2:?--device needs a value}; shift 2 ;;
        --quick) quick=(--quick); shift ;;
        *) echo "gpu_suite.sh: unknown option $1" >&2; exit 2 ;;
    esac
done
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here" || exit 2
export PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
mkdir -p "$out" || exit 2
out=$(cd "$out" && pwd)
rm -f "$out/results.json" "$out/suite.log" "$out/cuda-tests.log"
logs=$(mktemp -d)  # step logs are gathered into OUT/suite.log: OUT keeps few files (results.json, charts, 2 logs)
trap 'rm -rf "$logs"' EXIT
start=$SECONDS
cores=$(python3 -c "import os; print(os.cpu_count())")

# Sizes: each step has a time limit; together they fit the 5-minute budget with room to spare.
if [ "$device" = cuda ]; then
    workers=$(( cores > 16 ? 16 : cores ))
    aug_batch=256; loader_batch=256; train_batch=256; count=1500; repeats=3
    limits=(cuda-tests=100 data=60 aug=60 loader=110 train=100)
else
    workers=2
    aug_batch=64; loader_batch=64; train_batch=32; count=1000; repeats=5
    limits=(cuda-tests=60 data=120 aug=300 loader=400 train=400)
fi
if [ ${#quick[@]} -gt 0 ]; then  # a smoke run: every path once, numbers not worth quoting
    if [ "$device" = cuda ]; then
        count=256; repeats=2
    else
        count=160; repeats=1; aug_batch=16; loader_batch=32; train_batch=8; train_size=(--image-size 64)
        limits=(cuda-tests=60 data=60 aug=90 loader=120 train=90)
    fi
fi
limit() { for pair in "${limits[@]}"; do [ "${pair%%=*}" = "$1" ] && echo "${pair#*=}"; done; }

failed=0
# step NAME COMMAND...: run under its time limit, log to $logs/NAME.log (then OUT/suite.log), record its status.
step() {
    local name=$1
    shift
    local began=$SECONDS status
    timeout --kill-after=10 "$(limit "$name")" "$@" > "$logs/$name.log" 2>&1
    status=$?
    [ $status -eq 124 ] && echo "  $name: stopped after its limit of $(limit "$name") s" | tee -a "$logs/$name.log"
    printf '%s\t%s\t%s\n' "$name" "$status" "$((SECONDS - began))" >> "$logs/steps.tsv"
    { echo "===== $name (exit $status, $((SECONDS - began)) s)"; cat "$logs/$name.log"; } >> "$out/suite.log"
    [ $status -ne 0 ] && failed=1
    return $status
}

echo "== 1/5 CUDA tests (skipped without a GPU; log: $out/cuda-tests.log)"
step cuda-tests python3 -m pytest -m cuda -q -p no:cacheprovider tests
cp "$logs/cuda-tests.log" "$out/cuda-tests.log"
tail -n 3 "$logs/cuda-tests.log"

echo "== 2/5 data sets ($count images, with tails and clean)"
# both sets at once (the clean one is written by one process, the set with tails by several)
step data bash -c "python3 -m benchmarks data --clean --count $count > '$logs/dataset-clean.json' & clean=\$!
python3 -m benchmarks data --count $count > '$logs/dataset.json' || exit 1; wait \$clean"
python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print('  ', d['count'], 'images,', d['oddity_kinds'], 'oddity kinds:', d['oddities'])" "$logs/dataset.json" 2>/dev/null

common=(--device "$device" --workers "$workers" --count "$count" --repeats "$repeats" --out "$out" "${quick[@]}")
echo "== 3/5 augment-only"
step aug python3 -m benchmarks aug --batch-size "$aug_batch" "${common[@]}"
grep -E "^  aug |FAILED" "$logs/aug.log"
echo "== 4/5 loader end to end and decode ceilings"
step loader python3 -m benchmarks loader --batch-size "$loader_batch" "${common[@]}"
grep -E "^  loader|FAILED" "$logs/loader.log"
echo "== 5/5 training fed by each loader"
step train python3 -m benchmarks train --batch-size "$train_batch" "${train_size[@]}" "${common[@]}"
grep -E "^  train |FAILED" "$logs/train.log"

echo
echo "== summary ($((SECONDS - start)) s, results in $out/results.json)"
python3 - "$out" "$logs/steps.tsv" <<'PY'
import json, sys
from pathlib import Path
from benchmarks.report import targets

out = Path(sys.argv[1])
steps = [line.split("\t") for line in Path(sys.argv[2]).read_text().splitlines()]
print("steps: " + ", ".join(f"{name} {'ok' if status == '0' else 'FAILED (' + status + ')'} {seconds} s" for name, status, seconds in steps))
path = out / "results.json"
if not path.exists():
    print(f"no results.json: every benchmark failed (see {out / 'suite.log'})")
    sys.exit(0)
record = json.loads(path.read_text())
record["suite"] = [{"step": name, "status": int(status), "seconds": int(seconds)} for name, status, seconds in steps]
record["targets"] = targets(record)
path.write_text(json.dumps(record, indent=2) + "\n")
env = record["env"]
print(f"{env['device']} | torch {env['torch']} | commit {env['commit']}")
for row in record["results"]:
    ratio = row.get("ratio_to_baseline")
    notes = []
    if isinstance(row.get("kernel_launches"), dict) and "kernels_per_batch" in row["kernel_launches"]:
        notes.append(f"{row['kernel_launches']['kernels_per_batch']:.0f} kernels/batch")
    if row.get("fraction_of_ceiling") is not None and row["benchmark"] != "train":
        notes.append(f"{row['fraction_of_ceiling']:.0%} of {row.get('ceiling', 'ceiling')}")
    if row.get("data_wait_fraction") is not None:
        notes.append(f"waits {row['data_wait_fraction']:.0%}")
    if row.get("decoded_fraction") is not None:
        notes.append(f"decodes {row['decoded_fraction']:.0%}")
    print(f"{row['benchmark']:<12} {row['pipeline']:<26} {row['images_per_sec']:>10.0f} img/s"
          + (f" {ratio:6.2f}x" if ratio is not None else "") + ("  " + ", ".join(notes) if notes else ""))
for check in record["targets"]:
    value = "not measured" if check["value"] is None else check["value"]
    print(f"target {check['target']}: {value} (goal {check['goal']}) {'met' if check['met'] else 'MISSED'}")
failures = {f"{benchmark} {name}": error for benchmark, config in record["config"].items() for name, error in config.get("failures", {}).items()}
for name, error in failures.items():
    print(f"FAILED pipeline {name}: {error}")
sys.exit(3 if failures else 0)
PY
[ $? -ne 0 ] && failed=1
exit $failed
