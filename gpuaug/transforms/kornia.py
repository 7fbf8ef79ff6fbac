"""Kornia's augmentation modules inside gpuaug pipelines, seeded from the pipeline's generator.

Any ``kornia.augmentation`` module (``K.RandomAffine``, ``K.RandomErasing``, ``K.RandomPerspective``,
``K.RandomGaussianBlur``, ...) or container (``K.AugmentationSequential``) can stand in a
``ga.Compose`` after its first geometric op: the Compose wraps it in a :class:`KorniaTransform`,
which runs it on the fixed-size batch (on the current CUDA stream, like any torch op) with a seed
drawn from the Compose's generator, so a seeded run repeats bit for bit and a call replays from
its params. :func:`from_kornia` turns a whole Kornia pipeline whose first op is a crop or resize
into a gpuaug ``Compose``, mapping that first op to gpuaug's (which takes a ragged list of images,
as a loader hands it over) and wrapping the rest.

Randomness: Kornia draws from torch's global RNG. The wrapper forks it (``torch.random.fork_rng``
for the CPU and the CUDA devices involved), seeds the fork with the call's seed, runs the module
and restores the previous state, so the caller's global RNG is neither consumed nor perturbed.
The fork is process-wide for its duration: another *thread* drawing from the global RNG at that
very moment (dropout in a training thread while a producer thread runs Kornia) draws from the
seeded state instead, so its numbers, still random, no longer repeat from run to run; gpuaug's own
Kornia calls are serialised by a lock, so they never see each other's state.

Dtype contract: Kornia works on float images in [0, 1]. A uint8 batch is converted to float32
(``x / 255``) and the wrapper returns float32; a float16/bfloat16 batch runs in float32 and comes
back in its own dtype (several Kornia ops have no half kernels on the CPU); float32/float64 pass
as they are. Put Kornia's colour ops before ``ga.Normalize``: they assume [0, 1] and clamp to it,
so after Normalize they would cut the normalised range (Kornia's geometric ops and
``RandomErasing``, which fills with 0, the mean, work on normalised values too).

Example:
    >>> import torch, kornia.augmentation as K, gpuaug as ga
    >>> augment = ga.Compose([ga.RandomResizedCrop(64), K.RandomAffine(degrees=15, p=0.5),
    ...                       K.RandomErasing(p=0.25), ga.Normalize(ga.IMAGENET_MEAN, ga.IMAGENET_STD)])
    >>> images = [torch.randint(0, 256, (3, 90, 120), dtype=torch.uint8), torch.randint(0, 256, (3, 70, 50), dtype=torch.uint8)]
    >>> augment(images, generator=torch.Generator().manual_seed(0)).shape
    torch.Size([2, 3, 64, 64])
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from gpuaug import functional as F
from gpuaug.transforms.base import BatchInfo, Images, Params, Transform

__all__ = ["KorniaTransform", "as_transform", "is_kornia_module"]

_RNG_LOCK = threading.Lock()  # one Kornia call at a time holds the forked global RNG
_SEED_HIGH = 2**63 - 1  # seeds are drawn in [0, 2**63 - 1): int64, and within torch.manual_seed's range


def _kornia_bases() -> tuple[type, ...]:
    """Kornia's augmentation base class and containers; empty if Kornia was never imported (then nothing is Kornia)."""
    if "kornia" not in sys.modules:
        return ()
    from kornia.augmentation.base import _BasicAugmentationBase
    from kornia.augmentation.container import ImageSequential

    return (_BasicAugmentationBase, ImageSequential)


def is_kornia_module(obj: Any) -> bool:
    bases = _kornia_bases()
    return bool(bases) and isinstance(obj, bases)


def as_transform(obj: Any) -> Any:
    """``obj`` itself if a gpuaug transform, a :class:`KorniaTransform` around a Kornia module, else ``obj`` unchanged.

    ``ga.Compose`` calls this on each of its items, so Kornia modules can stand in it directly.
    """
    return KorniaTransform(obj) if not isinstance(obj, Transform) and is_kornia_module(obj) else obj


# ----------------------------------------------------------------------------------------------
# The wrapper
# ----------------------------------------------------------------------------------------------
class KorniaTransform(Transform):
    """A Kornia augmentation module (or ``AugmentationSequential``) as a gpuaug transform.

    ``make_params`` draws one int64 seed per image from the generator; ``apply`` seeds a fork of
    torch's global RNG with the seed of the batch's *first* row and runs the module in it, so the
    same params give the same output, and any subset of rows (a loader applies its batch in
    groups) gets a draw of its own. Kornia then samples its own parameters per image, as it does
    when run by itself: ``torch.manual_seed(params["seed"][0])`` followed by ``module(x)`` gives the
    same output.

    Args:
        module: a ``kornia.augmentation`` module or container; any other ``nn.Module`` that maps a
            ``[B, C, H, W]`` float batch to one is run the same way.

    Shape:
        ``[B, C, H, W]`` -> ``[B, C, h, w]`` (the module's output size; most Kornia ops keep it).
        Params: ``seed`` ``[B]`` int64, on the CPU (read on the host to seed the RNG: no device sync).
        dtype: uint8 in -> float32 out in [0, 1]; float16/bfloat16 run in float32 and keep their
        dtype; float32/float64 unchanged.

    Example:
        >>> import kornia.augmentation as K
        >>> KorniaTransform(K.RandomAffine(degrees=30))(torch.rand(4, 3, 32, 32)).shape
        torch.Size([4, 3, 32, 32])
    """

    batch_coupled = True  # seeded per call: applied to whole batches

    def __init__(self, module: nn.Module) -> None:
        if isinstance(module, Transform) or not isinstance(module, nn.Module):
            raise ValueError(
                f"module must be a kornia.augmentation module or AugmentationSequential, got {type(module).__name__}"
            )
        self.module = module

    def _make_params(self, info: BatchInfo, generator: torch.Generator | None) -> Params:
        device = generator.device if generator is not None else torch.device("cpu")
        seeds = torch.randint(0, _SEED_HIGH, (info.batch,), generator=generator, device=device, dtype=torch.int64)
        return {"seed": seeds.cpu()}  # a CUDA generator costs one small copy here; a CPU one (the loader's) none

    def apply(self, images: Images, params: Params) -> Tensor:
        F.check_images(images, f"KorniaTransform({type(self.module).__name__})")
        seeds = params["seed"].reshape(-1)
        seed = int(seeds[0]) if seeds.numel() else 0  # a CPU tensor: no device sync; an empty batch has no draw
        dtype = images.dtype
        if dtype == torch.uint8:
            floats = images.to(torch.float32).div_(255)  # x / 255, as a Kornia user writes it (bit-equal to it)
        elif dtype in (torch.float16, torch.bfloat16):
            floats = images.float()
        else:
            floats = images
        with _seeded_rng(seed, _cuda_devices(self.module, images)):
            out = self.module(floats)
        if not isinstance(out, Tensor) or out.ndim != 4 or out.shape[0] != images.shape[0]:
            shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise ValueError(
                f"{type(self.module).__name__} returned {shape} for a batch of {images.shape[0]}; only Kornia modules "
                "that map an image batch to an image batch of the same length can stand in a gpuaug pipeline"
            )
        if out.untyped_storage().data_ptr() == images.untyped_storage().data_ptr():
            out = out.clone()  # Kornia's own ops copy; a plain module (nn.Identity) would hand back the caller's tensor
        return out.to(dtype) if dtype in (torch.float16, torch.bfloat16) else out

    def output_sizes(self, info: BatchInfo) -> BatchInfo:
        return info.resized([_output_size(self.module, height, width) for height, width in info.sizes])

    def __repr__(self) -> str:
        return f"KorniaTransform({' '.join(repr(self.module).split())})"


@contextmanager
def _seeded_rng(seed: int, cuda_devices: list[int]) -> Iterator[None]:
    """Run the block with the global CPU RNG (and those of ``cuda_devices``) seeded, then restore them."""
    with _RNG_LOCK, torch.random.fork_rng(devices=cuda_devices):
        torch.random.default_generator.manual_seed(seed)
        for index in cuda_devices:
            torch.cuda.default_generators[index].manual_seed(seed)
        yield


def _cuda_devices(module: nn.Module, images: Tensor) -> list[int]:
    """CUDA devices whose RNG the call may draw from: the images' and any Kornia sampler moved to a GPU."""
    devices = {images.device}
    devices.update(getattr(sub, "device", None) for sub in module.modules())
    cuda = {torch.device(d) for d in devices if isinstance(d, (torch.device, str)) and torch.device(d).type == "cuda"}
    return sorted({d.index if d.index is not None else torch.cuda.current_device() for d in cuda})


def _output_size(module: nn.Module, height: int, width: int) -> tuple[int, int]:
    """The ``(height, width)`` Kornia's module gives for an input of that size (known crop/resize/pad ops; others keep it)."""
    if isinstance(module, nn.Sequential):  # AugmentationSequential, ImageSequential, nn.Sequential
        for child in module.children():
            height, width = _output_size(child, height, width)
        return height, width
    if not is_kornia_module(module):
        return height, width
    import kornia.augmentation as K

    size = getattr(module, "flags", {}).get("size")
    if isinstance(module, K.Resize):
        if isinstance(size, int):
            return _kornia_side_size(size, width / height, module.flags.get("side", "short"))
        return int(size[0]), int(size[1])
    if isinstance(module, (K.RandomResizedCrop, K.CenterCrop, K.RandomCrop, K.PadTo)) and size is not None:
        size = (size, size) if isinstance(size, int) else size
        return int(size[0]), int(size[1])
    return height, width


def _kornia_side_size(side_size: int, aspect_ratio: float, side: str) -> tuple[int, int]:
    """Kornia's ``_side_to_image_size`` (``kornia.geometry.transform.affwarp``), the size its Resize(int) gives."""
    if side == "vert":
        return side_size, int(side_size * aspect_ratio)
    if side == "horz":
        return int(side_size / aspect_ratio), side_size
    if (side == "short") ^ (aspect_ratio < 1.0):
        return side_size, int(side_size * aspect_ratio)
    return int(side_size / aspect_ratio), side_size
