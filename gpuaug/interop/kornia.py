"""Kornia pipelines as gpuaug ``Compose`` objects (``from_kornia``), and ``is_kornia`` to recognise them.

The wrapper that lets a Kornia module stand in a ``ga.Compose`` is ``gpuaug.transforms.kornia.KorniaTransform``
(seeding, dtype contract and the process-wide RNG fork are described there).

Example:
    >>> import kornia.augmentation as K
    >>> from_kornia(K.AugmentationSequential(K.RandomResizedCrop((32, 32)), K.RandomAffine(10))).transforms[0]
    RandomResizedCrop(size=(32, 32), scale=(0.08, 1.0), ratio=(0.75, 1.3333333333333333), antialias=True)
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from gpuaug import transforms as T
from gpuaug.transforms.kornia import KorniaTransform, as_transform, is_kornia_module

__all__ = ["KorniaTransform", "as_transform", "from_kornia", "is_kornia"]


def is_kornia(obj: Any) -> bool:
    """Whether ``obj`` is a Kornia pipeline that :func:`from_kornia` takes.

    True for a ``kornia.augmentation`` module or container (``AugmentationSequential``,
    ``ImageSequential``), and for a list, tuple or ``nn.Sequential`` of such modules (gpuaug
    transforms may be mixed in) that holds at least one.

    Example:
        >>> import kornia.augmentation as K
        >>> is_kornia(K.RandomAffine(10)), is_kornia([K.RandomResizedCrop((8, 8)), K.RandomErasing()]), is_kornia(None)
        (True, True, False)
    """
    if is_kornia_module(obj):
        return True
    if isinstance(obj, (list, tuple)) or type(obj) is nn.Sequential:
        items = list(obj)
        return any(is_kornia_module(item) for item in items) and all(
            is_kornia_module(item) or isinstance(item, T.Transform) for item in items
        )
    return False


# ----------------------------------------------------------------------------------------------
# A whole Kornia pipeline as a gpuaug Compose
# ----------------------------------------------------------------------------------------------
_FIRST_OPS = "RandomResizedCrop, Resize (an int with side='short', or (height, width)), SmallestMaxSize, CenterCrop"


def _leaves(pipeline: Any) -> list[Any]:
    """The ops of a pipeline in order: plain containers flattened, anything else kept whole."""
    import kornia.augmentation as K

    if isinstance(pipeline, (list, tuple)) or type(pipeline) in (nn.Sequential, K.ImageSequential, K.AugmentationSequential):
        if getattr(pipeline, "random_apply", False) is not False:
            raise ValueError(
                f"from_kornia: {type(pipeline).__name__}(random_apply={pipeline.random_apply!r}) applies its ops in a "
                "random subset and order, so its first op cannot be taken out; use random_apply=False"
            )
        items = pipeline if isinstance(pipeline, (list, tuple)) else list(pipeline.children())
        return [leaf for item in items for leaf in _leaves(item)]
    return [pipeline]


def _check_mappable(op: Any, name: str) -> None:
    """The Kornia flags that gpuaug's op cannot reproduce: probability < 1, one draw for the batch, non-bilinear."""
    from kornia.constants import Resample

    if op.p != 1.0 or op.p_batch != 1.0:
        raise ValueError(f"from_kornia: the first op {name} must always apply (p=1.0), got p={op.p_batch if op.p == 1 else op.p}")
    resample = op.flags.get("resample")
    if resample is not None and resample != Resample.BILINEAR:
        raise ValueError(f"from_kornia: the first op {name} must resample bilinearly, got resample={resample.name.lower()}")


def _map_first(op: Any) -> T.Transform | None:
    """gpuaug's equivalent of Kornia's first op, or None when it has none."""
    import kornia.augmentation as K

    name = type(op).__name__
    if isinstance(op, K.RandomResizedCrop):
        _check_mappable(op, name)
        if op.same_on_batch:
            raise ValueError(
                "from_kornia: RandomResizedCrop(same_on_batch=True) draws one box for the batch; gpuaug draws one per image"
            )
        generator = op._param_generator
        scale, ratio = (
            value.tolist() if isinstance(value, Tensor) else [float(v) for v in value]
            for value in (generator.scale, generator.ratio)
        )
        return T.RandomResizedCrop(tuple(op.flags["size"]), scale=scale, ratio=ratio)
    if isinstance(op, K.Resize):
        _check_mappable(op, name)
        size, side = op.flags["size"], op.flags.get("side", "short")
        if isinstance(size, int) and side != "short":
            raise ValueError(
                f"from_kornia: {name}(side={side!r}) has no gpuaug equivalent; use side='short' or a (height, width) size"
            )
        return T.Resize(size if isinstance(size, int) else tuple(size), antialias=bool(op.flags.get("antialias", False)))
    if isinstance(op, K.CenterCrop):
        _check_mappable(op, name)
        return T.CenterCrop(tuple(op.flags["size"]))
    return None


def from_kornia(pipeline: Any, fuse: bool = True) -> T.Compose:
    """A gpuaug ``Compose`` from a Kornia pipeline whose first op is a crop or resize.

    The first op becomes gpuaug's (``K.RandomResizedCrop`` -> ``ga.RandomResizedCrop`` with the same
    size, scale and ratio; ``K.Resize``/``K.SmallestMaxSize`` -> ``ga.Resize`` with the same size
    and antialias flag; ``K.CenterCrop`` -> ``ga.CenterCrop``; a ``K.CenterCrop`` right after a
    resize is mapped too), so the Compose takes a ragged list of images, as a loader hands it over.
    The mapped op samples and resamples like torchvision (what gpuaug implements, antialiased
    bilinear), not like Kornia (``align_corners=True``, no antialiasing): expect close, not equal,
    pixels there. Every later op is wrapped as a :class:`KorniaTransform` and runs as Kornia runs
    it. Plain containers are flattened; gpuaug transforms may be mixed in and are kept.

    Args:
        pipeline: ``K.AugmentationSequential``/``ImageSequential``/``nn.Sequential`` or a list of
            Kornia modules (``random_apply`` must be off), or a single Kornia crop/resize.
        fuse: passed to ``ga.Compose``.

    Raises:
        ValueError: naming the first op when it has no gpuaug equivalent (probability below 1,
            ``same_on_batch``, a non-bilinear resample, ``side='long'``, or another op).

    Example:
        >>> import kornia.augmentation as K
        >>> augment = from_kornia(K.AugmentationSequential(K.RandomResizedCrop((64, 64)), K.RandomAffine(degrees=15)))
        >>> type(augment.transforms[0]).__name__, type(augment.transforms[1]).__name__
        ('RandomResizedCrop', 'KorniaTransform')
    """
    if not is_kornia(pipeline):
        raise ValueError(
            f"from_kornia expects a Kornia module, AugmentationSequential or a list of them, got {type(pipeline).__name__}"
        )
    ops = _leaves(pipeline)
    first = ops[0]
    if isinstance(first, T.Transform):
        head: list[T.Transform] = [first]
    else:
        mapped = _map_first(first)
        if mapped is None:
            raise ValueError(
                f"from_kornia: the first op must be a crop or resize ({_FIRST_OPS}), got {type(first).__name__}; "
                "put a ga.RandomResizedCrop/Resize/CenterCrop first, or build ga.Compose([...]) yourself"
            )
        head = [mapped]
    rest = ops[1:]
    import kornia.augmentation as K

    if isinstance(head[0], T.Resize) and rest and isinstance(rest[0], K.CenterCrop) and rest[0].p == rest[0].p_batch == 1:
        head.append(T.CenterCrop(tuple(rest[0].flags["size"])))  # Resize + CenterCrop, the evaluation pipeline, all in gpuaug
        rest = rest[1:]
    return T.Compose([*head, *(op if isinstance(op, T.Transform) else KorniaTransform(op) for op in rest)], fuse=fuse)
