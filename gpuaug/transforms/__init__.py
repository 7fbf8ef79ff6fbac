"""Batched, per-sample random transforms with torchvision's names, arguments and ranges.

Each transform samples one parameter set *per image* in ``make_params`` (on the images' device,
from an optional ``torch.Generator``) and hands it to the pure kernels of
:mod:`gpuaug.functional` in ``apply``. Calling ``t(images)`` does both; ``t(images, params=p)``
replays a draw exactly.

Example:
    >>> import gpuaug as ga
    >>> augment = ga.Compose([ga.RandomResizedCrop(224), ga.RandomHorizontalFlip(),
    ...                       ga.ColorJitter(0.4, 0.4, 0.4), ga.Normalize(ga.IMAGENET_MEAN, ga.IMAGENET_STD)])
    >>> batch = augment(torch.randint(0, 256, (8, 3, 300, 400), dtype=torch.uint8))
    >>> batch.shape, batch.dtype
    (torch.Size([8, 3, 224, 224]), torch.float32)
"""

from gpuaug.transforms.base import IMAGENET_MEAN, IMAGENET_STD, MAX_SIZE, BatchInfo, Images, Params, Transform  # noqa: F401
from gpuaug.transforms.color import ColorJitter, Normalize, RandomGrayscale, ToDtype
from gpuaug.transforms.compose import Compose
from gpuaug.transforms.erasing import RandomErasing
from gpuaug.transforms.geometry import CenterCrop, RandomFlip, RandomHorizontalFlip, RandomResizedCrop, RandomVerticalFlip, Resize  # noqa: F401
from gpuaug.transforms.mixing import CutMix, MixUp, RandomMix
from gpuaug.transforms.policies import AutoAugment, RandAugment, TrivialAugmentWide
from gpuaug.transforms.timm_policy import TimmRandAugment

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "CenterCrop",
    "ColorJitter",
    "Compose",
    "Normalize",
    "RandomGrayscale",
    "RandomHorizontalFlip",
    "RandomResizedCrop",
    "RandomVerticalFlip",
    "Resize",
    "ToDtype",
    "Transform",
    "AutoAugment",
    "CutMix",
    "MixUp",
    "RandAugment",
    "RandomErasing",
    "RandomMix",
    "TimmRandAugment",
    "TrivialAugmentWide",
]
