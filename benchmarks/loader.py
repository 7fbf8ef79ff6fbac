"""End-to-end loader throughput, from image files to a ready batch on the device, beside the decode ceilings.

Same files, same ops (RandomResizedCrop(224), RandomHorizontalFlip, ColorJitter(0.4, 0.4, 0.4),
Normalize(ImageNet) -> float32), same number of worker processes and batch size:

- ``pil-dataloader`` (the baseline): ``torch.utils.data.DataLoader`` over torchvision's
  ``ImageFolder`` with PIL + ``torchvision.transforms``, batches moved to the device;
- ``gpuaug``: ``ga.GPULoader`` with ``decode="auto"`` (channels-last output); and
  ``gpuaug-decode-<mode>`` for every other decode mode the installed GPULoader accepts on this
  device (read at run time: modes it refuses are left out);
- ``dali``: ``gpuaug.dali.DALILoader`` when NVIDIA DALI is installed.

The training recipe of issue 16 on the same files, same workers and batch size (set with tails only):

- ``timm-dataloader``: ``torch.utils.data.DataLoader`` over torchvision's ``ImageFolder`` (PIL decode)
  with ``timm.data.create_transform(224, is_training=True, auto_augment="rand-m9-mstd0.5", re_prob=0.25)``
  (when timm is installed), batches moved to the device;
- ``gpuaug-policy``: ``ga.GPULoader`` (decode="auto") with RandomResizedCrop + flip + TrivialAugmentWide +
  Normalize + RandomErasing(p=0.25); its ``ratio_to_timm`` is the CPU target of issue 16 (>= 1.2x).
- ``gpuaug-shards`` / ``gpuaug-shards-http``: ``gpuaug``'s loader over the same set as WebDataset tar
  shards (``ga.WebDataset``), read locally by offset / from a loopback HTTP server (its own process on
  the same cores: ``benchmarks.serve``) by range reads (``-http``, one request per image, a batch's
  requests at once) or through a whole-shard cache (``-http-cached``, each shard fetched once);
  ``ratio_to_files`` (issue 17: local >= 1) and ``ratio_to_local_shards`` (HTTP >= 0.8).

The repeats are interleaved across pipelines (``common.measure_all``), so a slow spell of the machine
falls on all of them alike and the ratios hold within one run.

Decode ceilings (decode only, nothing else; every image counted once it is an RGB uint8 array):

- ``decode-cpu``: the files read and decoded (libjpeg-turbo / PIL, as GPULoader's CPU path) in the
  same number of worker processes;
- ``decode-nvjpeg`` (CUDA): the JPEGs torchvision's nvJPEG can take (baseline, 1 or 3 components),
  bytes in memory, one batched ``decode_jpeg`` call per batch; ``images_decoded`` says which share;
- ``decode-nvimgcodec`` and, on CUDA, ``decode-nvimgcodec-hw`` / ``-hybrid`` / ``-cuda``:
  nvImageCodec's batched decoder with all its backends (its own per-image fallback chain), or one
  backend alone (hardware JPEG engines, hybrid CPU+GPU, GPU only), bytes in memory; on the CPU its
  CPU backend; images a backend cannot decode are not counted (``decoded_fraction``);
- ``gpuaug-nvdecode-<backend>``: ``gpuaug.io.nvdecode.NvImageCodecDecoder`` (the project's wrapper,
  with its per-image fallbacks down to PIL; ``auto`` is what GPULoader's ``decode="nvimgcodec"``
  uses) on the same bytes, when that module exists.

Unless ``--data``, ``--clean`` or ``--skip-clean`` is given, ``pil-dataloader`` and ``gpuaug``
also run on the clean set (benchmark ``loader-clean``), so that the ratio on the set with tails
always stands beside the ratio on the flattering one. Workers are persistent and started during
the warm-up epoch; each repeat is one full epoch.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch

import gpuaug as ga
from benchmarks import data as bench_data
from benchmarks.common import (
    RECIPE_OPS,
    TIMM_OPS,
    Measurement,
    gpuaug_policy_recipe,
    gpuaug_recipe,
    measure_all,
    pil_recipe,
    save_run,
    timm_recipe,
)
from benchmarks.serve import serve_directory
from gpuaug.io.decode import decode_cpu

BASELINE = "pil-dataloader"
POLICY, TIMM = "gpuaug-policy", "timm-dataloader"
SHARDS, SHARDS_HTTP = "gpuaug-shards", "gpuaug-shards-http"  # the same set as WebDataset shards: local, loopback HTTP
SHARDS_CACHED = "gpuaug-shards-http-cached"  # HTTP with whole shards fetched once into a bounded local cache
SHARD_SIZE = "16MB"  # the loader rows' shards (the 1000-image set: 3 shards)


def _shards_of(root: Path, user_data: bool, stack: contextlib.ExitStack) -> list[str]:
    """The set at ``root`` as tar shards: cached beside a generated set, in a temporary folder for ``--data``."""
    folder = Path(tempfile.mkdtemp(prefix="gpuaug-shards-")) if user_data else None
    if folder is not None:
        stack.callback(shutil.rmtree, folder, ignore_errors=True)
    return [str(path) for path in bench_data.ensure_shards(root, SHARD_SIZE, folder)]


NVIMGCODEC_BACKENDS = {"hw": "HW_GPU_ONLY", "hybrid": "HYBRID_CPU_GPU", "cuda": "GPU_ONLY"}


# ----------------------------------------------------------------------------------------------
# Decode ceilings
# ----------------------------------------------------------------------------------------------
class _DecodeFiles(torch.utils.data.Dataset):
    """Workers read and decode the files on the CPU, nothing else."""

    def __init__(self, paths: list[str]):
        self.paths = paths

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, index):
        path = self.paths[index]
        with open(path, "rb") as file:
            return decode_cpu(file.read(), path).shape[-1]


def _decode_cpu_ceiling(paths: list[str], common: dict):
    loader = torch.utils.data.DataLoader(_DecodeFiles(paths), collate_fn=len, **common)
    return lambda: sum(loader)


def _batches(items: list, batch_size: int) -> list[list]:
    return [items[start : start + batch_size] for start in range(0, len(items), batch_size)]


def _decode_nvjpeg_ceiling(datas: list[bytes], paths: list[str], batch_size: int, device: torch.device):
    """One batched nvJPEG call per batch over the JPEGs it can take; returns (epoch, share of the set)."""
    from torchvision.io import ImageReadMode, decode_jpeg

    from gpuaug.io.decode import read_header
    from gpuaug.io.decoders import nvjpeg_takes

    usable = []
    for data, path in zip(datas, paths):
        try:
            if nvjpeg_takes(read_header(data, path)):
                usable.append(torch.frombuffer(bytearray(data), dtype=torch.uint8).pin_memory())
        except Exception:  # noqa: BLE001 - a file the header reader refuses is simply not nvJPEG's
            continue
    batches = _batches(usable, batch_size)

    def epoch() -> int:
        count = 0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torchvision 0.29 deprecates its decoders; they still work
            for batch in batches:
                count += len(decode_jpeg(batch, mode=ImageReadMode.RGB, device=device))
        return count

    return epoch, len(usable) / max(1, len(datas))


def _nvimgcodec_decoder(device: torch.device, backend: str | None):
    from nvidia import nvimgcodec

    if device.type != "cuda":
        return nvimgcodec.Decoder(
            device_id=nvimgcodec.NVIMGCODEC_DEVICE_CPU_ONLY, backends=[nvimgcodec.Backend(nvimgcodec.BackendKind.CPU_ONLY)]
        )
    backends = None if backend is None else [nvimgcodec.Backend(getattr(nvimgcodec.BackendKind, NVIMGCODEC_BACKENDS[backend]))]
    return nvimgcodec.Decoder(device_id=device.index or 0, backends=backends)


def _decode_nvimgcodec_ceiling(datas: list[bytes], batch_size: int, device: torch.device, backend: str | None):
    """nvImageCodec's batched decode (RGB, EXIF ignored as GPULoader does); returns (epoch, decoded share)."""
    from nvidia import nvimgcodec

    decoder = _nvimgcodec_decoder(device, backend)
    params = nvimgcodec.DecodeParams(
        apply_exif_orientation=False, color_spec=nvimgcodec.ColorSpec.SRGB, sample_format=nvimgcodec.SampleFormat.I_RGB
    )
    streams = _batches([nvimgcodec.CodeStream(data) for data in datas], batch_size)
    decoded = {"share": 0.0}

    def epoch() -> int:
        count = 0
        for batch in streams:
            images = decoder.decode(batch, params=params)
            kept = [image for image in images if image is not None]
            if device.type == "cuda":
                tensors = [torch.as_tensor(image, device=device) for image in kept]  # zero-copy views
                del tensors
            count += len(kept)
        decoded["share"] = count / max(1, len(datas))
        return count

    epoch()  # one pass to learn the decoded share (and to warm the codec up)
    return epoch, decoded["share"]


def _nvdecode_ceiling(datas: list[bytes], paths: list[str], batch_size: int, device: torch.device, backend: str):
    """The project's wrapper (``gpuaug.io.nvdecode``) on the same bytes."""
    from gpuaug.io.nvdecode import NvImageCodecDecoder

    decoder = NvImageCodecDecoder(device, backend)
    batches = list(zip(_batches(datas, batch_size), _batches(paths, batch_size)))

    def epoch() -> int:
        count = 0
        for batch, names in batches:
            count += sum(1 for image in decoder.decode(batch, names) if isinstance(image, torch.Tensor))
        return count

    return epoch


# ----------------------------------------------------------------------------------------------
# Loaders
# ----------------------------------------------------------------------------------------------
def _epoch(loader, device: torch.device) -> int:
    count = 0
    for images, labels in loader:
        count += len(labels)
        if device.type == "cuda":
            images.sum()  # touch the batch on its stream, as a model would
    return count


def _moved(loader, device: torch.device):
    def epoch() -> int:
        count = 0
        for images, labels in loader:
            images = images.to(device, non_blocking=True)
            count += len(labels)
        return count

    return epoch


def decode_modes() -> tuple[str, ...]:
    """The ``decode`` values the installed GPULoader knows (``DECODERS`` where it says, else the first three)."""
    try:
        from gpuaug.io.decoders import DECODERS

        return tuple(DECODERS)
    except ImportError:
        return ("auto", "cpu", "nvjpeg")


def gpuaug_loaders(root: Path, device: torch.device, size: int, common: dict) -> tuple[dict[str, object], dict[str, str]]:
    """``{pipeline: GPULoader}``: ``gpuaug`` (decode="auto") and one per other mode this device takes.

    A mode that resolves to the same decoder as ``auto`` is not run twice. Returns also the
    refused modes with the reason.
    """
    loaders, refused, chosen = {}, {}, {}
    for mode in decode_modes():
        try:
            loader = ga.GPULoader(
                ga.ImageFolder(root), shuffle=True, device=device, **common, transform=gpuaug_recipe(size), decode=mode
            )
        except (ValueError, ImportError, RuntimeError) as error:
            refused[mode] = f"{type(error).__name__}: {error}"
            continue
        resolved = getattr(loader, "decoder_name", mode)
        if resolved in chosen.values():
            continue
        chosen[mode] = resolved
        loaders["gpuaug" if mode == "auto" else f"gpuaug-decode-{mode}"] = loader
    return loaders, refused


def _ceiling_of(decoder: str, device: torch.device) -> str:
    return {"cpu": "decode-cpu", "nvjpeg": "decode-nvjpeg", "nvimgcodec": "decode-nvimgcodec"}.get(decoder, f"decode-{decoder}")


def _pipelines(
    root: Path, args: argparse.Namespace, device: torch.device, full: bool, stack: contextlib.ExitStack
) -> tuple[dict[str, Any], dict[str, Any], dict[str, float], dict[str, str]]:
    """The timed pipelines (and their loaders, decoded shares and skipped rows) of one folder; what must
    outlive them (the loopback server, temporary shards) goes on ``stack``."""
    from torchvision import datasets

    size = args.image_size
    common = {"batch_size": args.batch_size, "num_workers": args.workers, "persistent_workers": args.workers > 0}
    torchvision_set = datasets.ImageFolder(root, transform=pil_recipe(size))
    baseline = torch.utils.data.DataLoader(torchvision_set, shuffle=True, pin_memory=device.type == "cuda", **common)
    pipelines = {BASELINE: _moved(baseline, device)}
    loaders, refused = gpuaug_loaders(root, device, size, common)
    if not full:
        loaders = {name: loader for name, loader in loaders.items() if name == "gpuaug"}
    for name, loader in loaders.items():
        pipelines[name] = lambda loader=loader: _epoch(loader, device)
    shares: dict[str, float] = {}
    skipped: dict[str, str] = dict(refused)
    if full:
        try:
            timm_set = datasets.ImageFolder(root, transform=timm_recipe(size))
        except ImportError as error:
            skipped[TIMM] = f"ImportError: {error}"
        else:
            timm_loader = torch.utils.data.DataLoader(timm_set, shuffle=True, pin_memory=device.type == "cuda", **common)
            pipelines[TIMM] = _moved(timm_loader, device)
        shards = _shards_of(root, args.data is not None, stack)
        base_url = stack.enter_context(serve_directory(Path(shards[0]).parent, process=True))
        urls = [f"{base_url}/{Path(path).name}" for path in shards]
        cache = tempfile.mkdtemp(prefix="gpuaug-shard-cache-")
        stack.callback(shutil.rmtree, cache, ignore_errors=True)
        for name, source in (
            (SHARDS, ga.WebDataset(shards)),
            (SHARDS_HTTP, ga.WebDataset(urls, timeout=60)),
            (SHARDS_CACHED, ga.WebDataset(urls, timeout=60, cache_dir=cache, cache_bytes="4GB")),
        ):
            loader = ga.GPULoader(source, shuffle=True, device=device, **common, transform=gpuaug_recipe(size), decode="auto")
            loaders[name] = loader
            pipelines[name] = lambda loader=loader: _epoch(loader, device)
        policy = ga.GPULoader(
            ga.ImageFolder(root), shuffle=True, device=device, **common, transform=gpuaug_policy_recipe(size), decode="auto"
        )
        loaders[POLICY] = policy
        pipelines[POLICY] = lambda: _epoch(policy, device)
        try:
            from gpuaug.dali import DALILoader

            any_loader = next(iter(loaders.values()))
            dali = DALILoader(
                root,
                args.batch_size,
                shuffle=True,
                device=device,
                num_threads=max(1, args.workers),
                transform=any_loader.transform,
            )
            pipelines["dali"] = lambda: _epoch(dali, device)
        except ImportError as error:
            skipped["dali"] = f"ImportError: {error}"
        paths = [path for path, _ in torchvision_set.samples]
        pipelines["decode-cpu"] = _decode_cpu_ceiling(paths, common)
        datas = [Path(path).read_bytes() for path in paths]
        if device.type == "cuda":
            pipelines["decode-nvjpeg"], shares["decode-nvjpeg"] = _decode_nvjpeg_ceiling(datas, paths, args.batch_size, device)
        backends = [None, *NVIMGCODEC_BACKENDS] if device.type == "cuda" else [None]
        for backend in backends:
            name = "decode-nvimgcodec" + (f"-{backend}" if backend else "")
            try:
                epoch, share = _decode_nvimgcodec_ceiling(datas, args.batch_size, device, backend)
            except Exception as error:  # noqa: BLE001 - not installed, or this backend absent on this GPU
                skipped[name] = f"{type(error).__name__}: {error}"[:300]
                continue
            if share == 0:  # e.g. GPU_ONLY alone on an H200 with nvImageCodec 0.9: nothing to time
                skipped[name] = "decodes none of the files by itself"
                continue
            pipelines[name], shares[name] = epoch, share
        for backend in ("auto", "hw", "hybrid", "cuda") if device.type == "cuda" else ("cpu",):
            name = f"gpuaug-nvdecode-{backend}"
            try:
                pipelines[name] = _nvdecode_ceiling(datas, paths, args.batch_size, device, backend)
            except Exception as error:  # noqa: BLE001 - the wrapper is optional (another change brings it)
                skipped[name] = f"{type(error).__name__}: {error}"[:300]
    return pipelines, loaders, shares, skipped


def run_set(
    root: Path, args: argparse.Namespace, device: torch.device, full: bool, benchmark: str
) -> tuple[list[Measurement], dict]:
    """Every loader (and, when ``full``, every decode ceiling) on one folder."""
    size = args.image_size
    failures: dict[str, str] = {}
    with contextlib.ExitStack() as stack:  # the server and temporary shards: released however the run ends
        pipelines, loaders, shares, skipped = _pipelines(root, args, device, full, stack)
        measurements = measure_all(benchmark, pipelines, device, args.repeats, BASELINE, failures)
    rates = {m.pipeline: m.images_per_sec for m in measurements}
    for item in measurements:
        if item.pipeline in shares:
            item.extra["decoded_fraction"] = round(shares[item.pipeline], 4)
        loader = loaders.get(item.pipeline)
        if loader is not None:
            decoder = getattr(loader, "decoder_name", "unknown")
            ceiling = _ceiling_of(decoder, device)
            item.extra["decoder"] = decoder
            item.extra["ceiling"] = ceiling
            if ceiling in rates:
                item.extra["fraction_of_ceiling"] = item.images_per_sec / rates[ceiling]
            if item.pipeline in (SHARDS, SHARDS_HTTP, SHARDS_CACHED) and rates.get("gpuaug"):  # issue 17: local >= 1
                item.extra["ratio_to_files"] = item.images_per_sec / rates["gpuaug"]
            if item.pipeline in (SHARDS_HTTP, SHARDS_CACHED) and rates.get(SHARDS):  # issue 17: HTTP >= 0.8
                item.extra["ratio_to_local_shards"] = item.images_per_sec / rates[SHARDS]
            if item.pipeline == POLICY:
                item.extra["ops"] = RECIPE_OPS
                if rates.get(TIMM):
                    item.extra["ratio_to_timm"] = item.images_per_sec / rates[TIMM]
            stats = loader.stats
            item.extra["stats_last_epoch"] = {
                key: getattr(stats, key)
                for key in (
                    "wait_seconds",
                    "decode_seconds",
                    "augment_seconds",
                    "producer_seconds",
                    "device_seconds",
                    "epoch_seconds",
                )
                if hasattr(stats, key)
            }
            if hasattr(stats, "producer_ms_per_batch"):  # where a batch's time goes (issue 15)
                item.extra["producer_ms_per_batch"] = round(stats.producer_ms_per_batch, 3)
                item.extra["device_ms_per_batch"] = round(stats.device_ms_per_batch, 3)
                print(
                    f"{item.pipeline}: producer thread (host) {stats.producer_ms_per_batch:.2f} ms/batch, "
                    f"device stage {stats.device_ms_per_batch:.2f} ms/batch, training thread waited "
                    f"{1000 * stats.wait_seconds / max(1, stats.batches):.2f} ms/batch"
                )
    details = {
        "image_size": size,
        "workers": args.workers,
        "dtype": "float32",
        "dataset": bench_data.describe(root),
        "ops": "RandomResizedCrop(224) + RandomHorizontalFlip + ColorJitter(0.4, 0.4, 0.4) + Normalize",
        "recipe_ops": {POLICY: RECIPE_OPS, TIMM: TIMM_OPS} if full else None,
        "skipped": skipped,
        "failures": failures,
    }
    return measurements, details


def main(args: argparse.Namespace) -> list[Measurement]:
    device = torch.device(args.device)
    root = bench_data.ensure(args.data, args.count, args.seed, clean=args.clean)
    measurements, details = run_set(root, args, device, full=True, benchmark="loader")
    title = f"loader end to end, {args.workers} workers, batch {args.batch_size}, {args.device}"
    save_run(args, "loader", details, measurements, BASELINE, title)
    if args.data is None and not args.clean and not getattr(args, "skip_clean", False):
        clean_root = bench_data.ensure(None, args.count, args.seed, clean=True)
        clean, clean_details = run_set(clean_root, args, device, full=False, benchmark="loader-clean")
        save_run(args, "loader-clean", clean_details, clean, BASELINE, title.replace("loader", "loader, clean set"))
        measurements += clean
    return measurements
