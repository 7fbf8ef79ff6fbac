"""Where a CPU worker's time goes per image: ``python -m benchmarks.profile_worker [--out FILE]``.

Runs the CPU loader's worker-side batch function (decode, the pipeline, the write into the batch)
on the benchmark set under ``cProfile`` in one process, and reports milliseconds per image for
the JPEG decode, the crop + resize, the fused colour + normalise pass and the copy into the
batch, with the machine it ran on. The README's CPU profile figures come from its output file in
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
from benchmarks.common import cpu_name
from gpuaug.loader.worker import WorkerOptions, WorkerSide

PARTS = {
    "jpeg decode": ("decode.py", "decode_cpu"),
    "crop + resize": ("geometry.py", "resized_crop"),
    "colour + normalise": ("color.py", "fused_color_normalize"),
    "write into the batch": ("~", "<method 'copy_' of 'torch._C.TensorBase' objects>"),
}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=256, help="images profiled (default 256)")
    parser.add_argument("--out", default=None, help="JSON file for the result")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # one worker: one core
    root = bench_data.ensure(None, 1000, 0)
    source = ga.ImageFolder(str(root))
    pipeline = ga.Compose(
        [
            ga.RandomResizedCrop(224),
            ga.RandomHorizontalFlip(),
            ga.ColorJitter(0.4, 0.4, 0.4),
            ga.Normalize(ga.IMAGENET_MEAN, ga.IMAGENET_STD),
        ]
    )
    side = WorkerSide(source, True, None, pipeline, augment=True, options=WorkerOptions())
    batches = [[(index, 7) for index in range(start, min(start + 64, args.count))] for start in range(0, args.count, 64)]
    profile = cProfile.Profile()
    started = time.perf_counter()
    profile.enable()
    images = sum(len(side.__getitems__(keys)) for keys in batches)
    profile.disable()
    total = time.perf_counter() - started
    stats = pstats.Stats(profile).stats
    per_image = {}
    for part, (file, function) in PARTS.items():
        seconds = sum(row[3] for (path, _, name), row in stats.items() if path.endswith(file) and name == function)
        per_image[part] = round(1000 * seconds / images, 3)
    per_image["everything (profiled)"] = round(1000 * total / images, 3)
    result = {
        "benchmark": "worker-profile",
        "images": images,
        "ms_per_image": per_image,
        "pipeline": "RandomResizedCrop(224) + RandomHorizontalFlip + ColorJitter(0.4, 0.4, 0.4) + Normalize, float32 out",
        "machine": f"{cpu_name()}, torch {torch.__version__}, 1 thread",
        "date": time.strftime("%Y-%m-%d"),
    }
    print(json.dumps(result, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
