#!/usr/bin/env bash
# The whole GPU check as one script (../shared/BENCHMARKS.md): CUDA tests, the data set, augment-only,
# loader end to end and training vs the synthetic ceiling, with the CPU baselines beside them;
# JSON + PNG into OUTDIR and a short table printed last. Under 5 minutes on an H100.
#
#   bash benchmarks/gpu_suite.sh OUTDIR [--device cpu] [--quick]
#
# CI runs it with --device cpu --quick so that it cannot rot before a GPU comes. Runs from the
# source tree (PYTHONPATH=.), as on the lent GPU machine.
set -euo pipefail

if [ $# -lt 1 ] || [[ "$1" == -* ]]; then
    echo "usage: bash benchmarks/gpu_suite.sh OUTDIR [--device cpu] [--quick]" >&2
    exit 2
fi
out=$1
shift
device=cuda
quick=()
while [ $# -gt 0 ]; do
    case "$1" in
        --device) device=$2; shift 2 ;;
        --quick) quick=(--quick); shift ;;
        *) echo "gpu_suite.sh: unknown option $1" >&2; exit 2 ;;
    esac
done
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
export PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p "$out"
start=$SECONDS
cores=$(python3 -c "import os; print(os.cpu_count())")

if [ "$device" = cuda ]; then
    workers=$(( cores > 8 ? 8 : cores ))
    aug_batch=256; loader_batch=256; train_batch=256; count=2000
else
    workers=2
    aug_batch=64; loader_batch=64; train_batch=32; count=1000
fi
[ ${#quick[@]} -gt 0 ] && count=256

echo "== 1/5 CUDA tests (skipped without a GPU)"
python3 -m pytest -m cuda -q -p no:cacheprovider tests --junitxml "$out/cuda-tests.xml" 2>&1 | tail -n 3

echo "== 2/5 data set ($count images)"
python3 -m benchmarks data --count "$count" > "$out/dataset.json"

common=(--device "$device" --workers "$workers" --count "$count" --out "$out" "${quick[@]}")
echo "== 3/5 augment-only"
python3 -m benchmarks aug --batch-size "$aug_batch" "${common[@]}" | tail -n 8
echo "== 4/5 loader end to end"
python3 -m benchmarks loader --batch-size "$loader_batch" "${common[@]}" | tail -n 6
echo "== 5/5 training fed by each loader"
python3 -m benchmarks train --batch-size "$train_batch" "${common[@]}" | tail -n 6

echo
echo "== summary ($((SECONDS - start)) s, results in $out/results.json)"
python3 - "$out/results.json" <<'PY'
import json, sys
from benchmarks.report import targets
record = json.load(open(sys.argv[1]))
print(f"{record['env']['device']} | torch {record['env']['torch']} | commit {record['env']['commit']}")
for row in record["results"]:
    ratio = row.get("ratio_to_baseline")
    print(f"{row['benchmark']:<7} {row['pipeline']:<26} {row['images_per_sec']:>10.0f} img/s"
          + (f" {ratio:6.2f}x" if ratio is not None else ""))
for check in targets(record):
    print(f"target {check['target']}: {check['value']} (goal {check['goal']}) {'met' if check['met'] else 'MISSED'}")
PY
