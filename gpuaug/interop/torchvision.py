"""Convert a torchvision (v1 or v2) transform pipeline into the equivalent gpuaug Compose.

Example:
    >>> from torchvision import transforms as T
    >>> import gpuaug as ga
    >>> ga.from_torchvision(T.Compose([T.RandomResizedCrop(224), T.RandomHorizontalFlip(), T.ToTensor()]))
    Compose([
        RandomResizedCrop(size=(224, 224), scale=(0.08, 1.0), ratio=(0.75, 1.3333333333333333), antialias=True),
        RandomHorizontalFlip(p=0.5),
        ToDtype(dtype=torch.float32, scale=True)
    ])
"""

from __future__ import annotations

from typing import Any

import torch
from torchvision import transforms as v1
from torchvision import tv_tensors
from torchvision.transforms import InterpolationMode, v2

from gpuaug import transforms as T

__all__ = ["from_torchvision"]


class _Unsupported(Exception):
    """One transform that cannot be converted, with the reason (collected, then reported together)."""


def _flatten(transform: Any) -> list[Any]:
    if isinstance(transform, (v1.Compose, v2.Compose)):
        return [leaf for inner in transform.transforms for leaf in _flatten(inner)]
    if isinstance(transform, (list, tuple)):
        return [leaf for inner in transform for leaf in _flatten(inner)]
    return [transform]


def _interpolation(transform: Any) -> InterpolationMode:
    """The transform's interpolation as an ``InterpolationMode`` (v1 also takes ints and strings)."""
    mode = transform.interpolation
    if isinstance(mode, int):
        mode = v1.functional._interpolation_modes_from_int(mode)
    elif isinstance(mode, str):
        mode = InterpolationMode(mode.lower())
    return mode


def _bilinear(transform: Any) -> None:
    mode = _interpolation(transform)
    if mode != InterpolationMode.BILINEAR:
        raise _Unsupported(f"{type(transform).__name__}(interpolation={getattr(mode, 'name', mode)}): only BILINEAR")


def _antialias(transform: Any) -> bool:
    # On the PIL images a torchvision pipeline usually sees, resizing always antialiases; v1's
    # "warn"/None defaults therefore mean True here.
    return transform.antialias is not False


def _policy_interpolation(transform: Any) -> str:
    mode = _interpolation(transform)
    if mode not in (InterpolationMode.NEAREST, InterpolationMode.BILINEAR):
        raise _Unsupported(f"{type(transform).__name__}(interpolation={getattr(mode, 'name', mode)}): only NEAREST or BILINEAR")
    return mode.value


def _policy_fill(transform: Any) -> Any:
    fill = transform.fill
    if isinstance(fill, dict):
        raise _Unsupported(f"{type(transform).__name__}(fill={fill!r}): a per-type fill dict; give one number or one per channel")
    return fill


_POLICIES = (v1.TrivialAugmentWide, v2.TrivialAugmentWide, v1.RandAugment, v2.RandAugment, v1.AutoAugment, v2.AutoAugment)
_OTHER_POLICIES = (v1.AugMix, v2.AugMix)


def _convert_policy(transform: Any) -> list[T.Transform]:
    """The automatic augmentation policies and RandomErasing, exact torchvision classes only (a subclass may change the draw)."""
    kind = type(transform)
    if kind in _OTHER_POLICIES or (kind not in _POLICIES and isinstance(transform, _POLICIES + _OTHER_POLICIES)):
        raise _Unsupported(
            f"{kind.__name__}: this policy is not implemented in gpuaug "
            "(TrivialAugmentWide, RandAugment and AutoAugment(IMAGENET) are)"
        )
    if kind in (v1.RandomErasing, v2.RandomErasing):
        value = transform.value
        if value is None or isinstance(value, str):  # v2 stores "random" as None
            value = "random"
        elif not isinstance(value, (int, float)):
            value = [float(v) for v in value]
        return [T.RandomErasing(transform.p, tuple(transform.scale), tuple(transform.ratio), value, transform.inplace)]
    if kind not in _POLICIES:
        return []
    interpolation, fill = _policy_interpolation(transform), _policy_fill(transform)
    if kind in (v1.TrivialAugmentWide, v2.TrivialAugmentWide):
        return [T.TrivialAugmentWide(transform.num_magnitude_bins, interpolation, fill)]
    if kind in (v1.RandAugment, v2.RandAugment):
        return [T.RandAugment(transform.num_ops, transform.magnitude, transform.num_magnitude_bins, interpolation, fill)]
    if kind in (v1.AutoAugment, v2.AutoAugment):
        if transform.policy != v1.AutoAugmentPolicy.IMAGENET:
            raise _Unsupported(f"AutoAugment(policy={transform.policy.name}): only AutoAugmentPolicy.IMAGENET is implemented")
        return [T.AutoAugment("imagenet", interpolation, fill)]
    return []


def _convert_one(transform: Any) -> list[T.Transform]:
    name = type(transform).__name__
    if isinstance(transform, T.Transform):
        return [transform]
    policy = _convert_policy(transform)
    if policy:
        return policy
    if not type(transform).__module__.startswith("torchvision."):  # issue 18 #16: a subclass may change what it does
        raise _Unsupported(f"{name} (from {type(transform).__module__}; only torchvision's own classes convert, not subclasses)")
    if isinstance(transform, (v1.RandomHorizontalFlip, v2.RandomHorizontalFlip)):
        return [T.RandomHorizontalFlip(transform.p)]
    if isinstance(transform, (v1.RandomVerticalFlip, v2.RandomVerticalFlip)):
        return [T.RandomVerticalFlip(transform.p)]
    if isinstance(transform, (v1.RandomResizedCrop, v2.RandomResizedCrop)):
        _bilinear(transform)
        return [T.RandomResizedCrop(tuple(transform.size), transform.scale, transform.ratio, _antialias(transform))]
    if isinstance(transform, (v1.Resize, v2.Resize)):
        _bilinear(transform)
        if transform.max_size is not None or transform.size is None:
            raise _Unsupported(f"{name}(max_size={transform.max_size}): max_size is not supported")
        size = transform.size if isinstance(transform.size, int) else tuple(transform.size)
        return [T.Resize(size, _antialias(transform))]
    if isinstance(transform, (v1.CenterCrop, v2.CenterCrop)):
        return [T.CenterCrop(tuple(transform.size))]
    if isinstance(transform, (v1.ColorJitter, v2.ColorJitter)):
        ranges = {key: getattr(transform, key) for key in ("brightness", "contrast", "saturation", "hue")}
        return [T.ColorJitter(**{key: value if value is not None else 0 for key, value in ranges.items()})]
    if isinstance(transform, (v1.RandomGrayscale, v2.RandomGrayscale)):
        return [T.RandomGrayscale(transform.p)]
    if isinstance(transform, (v1.Normalize, v2.Normalize)):
        return [T.Normalize(list(transform.mean), list(transform.std))]
    if isinstance(transform, v1.ToTensor):
        return [T.ToDtype(torch.float32, scale=True)]
    if isinstance(transform, v1.ConvertImageDtype):
        return [T.ToDtype(transform.dtype, scale=True)]
    if isinstance(transform, v2.ToDtype):
        dtype = transform.dtype
        if isinstance(dtype, dict):  # v2's per-type form: take the dtype images get
            dtype = next((dtype[key] for key in (tv_tensors.Image, torch.Tensor, "others") if key in dtype), None)
        if dtype is None:
            return []
        return [T.ToDtype(dtype, scale=transform.scale)]
    if isinstance(transform, (v1.PILToTensor, v2.PILToTensor, v2.ToImage, v2.ToPureTensor)):
        return []  # gpuaug already works on uint8 tensors
    raise _Unsupported(name)


def from_torchvision(transform: Any, fuse: bool = True) -> T.Compose:
    """Build the gpuaug ``Compose`` equivalent to a torchvision v1/v2 transform or Compose.

    Converted with the same parameters: RandomHorizontalFlip, RandomVerticalFlip,
    RandomResizedCrop, Resize, CenterCrop (bilinear only), ColorJitter, RandomGrayscale,
    Normalize; TrivialAugmentWide, RandAugment, AutoAugment (IMAGENET policy; NEAREST or BILINEAR)
    and RandomErasing (exact classes: a subclass is refused; AugMix and the other policies raise).
    ``ToTensor``/``ConvertImageDtype``/``ToDtype`` become ``ToDtype``;
    ``PILToTensor``/``ToImage``/``ToPureTensor`` disappear (gpuaug's input is already a uint8
    tensor). Nested Composes are flattened.

    Args:
        transform: a torchvision transform, Compose, or list of them.
        fuse: passed to ``gpuaug.Compose``.

    Raises:
        ValueError: listing every transform that cannot be converted, by class name (and why).

    Example:
        >>> from torchvision import transforms as T
        >>> from_torchvision(T.Compose([T.Resize(256), T.CenterCrop(224)])).transforms
        [Resize(size=256, antialias=True), CenterCrop(size=(224, 224))]
    """
    converted: list[T.Transform] = []
    unsupported: list[str] = []
    for leaf in _flatten(transform):
        try:
            converted.extend(_convert_one(leaf))
        except _Unsupported as reason:
            unsupported.append(str(reason))
    if unsupported:
        raise ValueError(
            "cannot convert to gpuaug: "
            + ", ".join(unsupported)
            + ". Supported: RandomResizedCrop, Resize, CenterCrop, RandomHorizontalFlip, RandomVerticalFlip, "
            "ColorJitter, RandomGrayscale, Normalize, TrivialAugmentWide, RandAugment, AutoAugment(IMAGENET), RandomErasing, "
            "ToTensor, PILToTensor, ToImage, ToDtype, ConvertImageDtype; "
            "remove the others or apply them separately"
        )
    return T.Compose(converted, fuse=fuse)
