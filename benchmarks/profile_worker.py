"""Where a CPU worker's time goes per image: ``python -m benchmarks.profile_worker [--recipe R] [--out FILE]``.

Runs the CPU loader's worker-side batch function (decode, the pipeline, the write into the batch)
on the benchmark set under ``cProfile`` in one process, set up as a worker is (one thread, the
allocator kept, ``keep_freed_memory``), after one unprofiled warm-up batch, and reports
milliseconds per image for the JPEG decode, the crop + resize, the fused colour + normalise pass,
the auto-augment policy and RandomErasing (the ``policy`` recipe of issue 16) and the copy into the
batch, with the machine it ran on. The README's CPU profile figures come from its output files in
``benchmarks/results/worker-profile/``.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import time
from pathlib import Path

import torch

import gpuaug as ga
from benchmarks import data as bench_data
from benchmarks.common import RECIPE_OPS, cpu_name, gpuaug_policy_recipe, gpuaug_recipe
from gpuaug.loader.worker import WorkerOptions, WorkerSide, keep_freed_memory

PARTS = {
    "jpeg decode": ("decode.py", "decode_cpu"),
    "crop + resize": ("geometry.py", "resized_crop"),
    "colour + normalise": ("color.py", "fused_color_normalize"),
    "auto-augment policy": ("policies.py", "apply"),
    "random erasing": ("erasing.py", "apply"),
    "write into the batch": ("~", "<method 'copy_' of 'torch._C.TensorBase' objects>"),
}


RECIPES = {
    "default": (
        gpuaug_recipe,
        "RandomResizedCrop(224) + RandomHorizontalFlip + ColorJitter(0.4, 0.4, 0.4) + Normalize, float32 out",
    ),
    "policy": (
        gpuaug_policy_recipe,
        f"{RECIPE_OPS} at 224 px, float32 out",
    ),
}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=256, help="images profiled (default 256)")
    parser.add_argument("--recipe", choices=sorted(RECIPES), default="default", help="the loader benchmark's recipe")
    parser.add_argument("--out", default=None, help="JSON file for the result")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # one worker: one core
    keep_freed_memory()  # as every loader worker does
    root = bench_data.ensure(None, 1000, 0)
    source = ga.ImageFolder(str(root))
    make, described = RECIPES[args.recipe]
    side = WorkerSide(source, True, None, make(224), augment=True, options=WorkerOptions())
    batches = [[(index, 7) for index in range(start, min(start + 64, args.count))] for start in range(0, args.count, 64)]
    side.__getitems__(batches[-1])  # warm-up: first-call costs are not the worker's steady state
    profile = cProfile.Profile()
    started = time.perf_counter()
    profile.enable()
    images = sum(len(side.__getitems__(keys)) for keys in batches)
    profile.disable()
    total = time.perf_counter() - started
    stats = pstats.Stats(profile).stats
    per_image = {}
    for part, (file, function) in PARTS.items():
        rows = [row for (path, _, name), row in stats.items() if path.endswith(file) and name == function]
        if rows:  # parts the recipe has
            per_image[part] = round(1000 * sum(row[3] for row in rows) / images, 3)
    per_image["everything (profiled)"] = round(1000 * total / images, 3)
    result = {
        "benchmark": "worker-profile",
        "images": images,
        "ms_per_image": per_image,
        "pipeline": described,
        "machine": f"{cpu_name()}, torch {torch.__version__}, 1 thread",
        "date": time.strftime("%Y-%m-%d"),
    }
    print(json.dumps(result, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
