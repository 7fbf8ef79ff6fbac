"""gpuaug: batched, per-sample image augmentation on the GPU (or CPU), through Kornia.

Example:
    >>> import torch, gpuaug as ga
    >>> augment = ga.Compose([ga.RandomResizedCrop(224), ga.RandomHorizontalFlip(),
    ...                       ga.ColorJitter(0.4, 0.4, 0.4), ga.Normalize(ga.IMAGENET_MEAN, ga.IMAGENET_STD)])
    >>> augment(torch.randint(0, 256, (8, 3, 256, 320), dtype=torch.uint8)).shape
    torch.Size([8, 3, 224, 224])
"""

from gpuaug import functional, transforms
from gpuaug.interop.kornia import KorniaTransform, from_kornia, is_kornia
from gpuaug.interop.timm import from_timm
from gpuaug.interop.torchvision import from_torchvision
from gpuaug.io.decode import DecodeError
from gpuaug.io.packed import PackedBatch
from gpuaug.io.shards import WebDataset
from gpuaug.io.sources import FileList, ImageFolder
from gpuaug.loader import GPULoader, LoaderStats
from gpuaug.loader.samplers import DistributedShardSampler, ShardSampler
from gpuaug.transforms import *  # noqa: F403 - the public transforms, listed in transforms.__all__

__version__ = "0.1.0"

__all__ = [
    *transforms.__all__,
    "DecodeError",
    "DistributedShardSampler",
    "FileList",
    "GPULoader",
    "ImageFolder",
    "KorniaTransform",
    "LoaderStats",
    "PackedBatch",
    "ShardSampler",
    "WebDataset",
    "from_kornia",
    "from_timm",
    "from_torchvision",
    "functional",
    "is_kornia",
    "transforms",
    "__version__",
]
