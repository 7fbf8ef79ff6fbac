"""timm's RandAugment config strings (``rand-m9-mstd0.5-inc1``) as a per-image ``TimmRandAugment``.

``from_timm`` reads the string as timm's ``rand_augment_transform`` does (sections ``m``, ``n``, ``p``,
``mstd``, ``mmax``, ``inc``, ``t``) with timm's hparams (``img_mean``, ``interpolation``,
``translate_pct``, ...), and refuses, with the reason, what it cannot reproduce exactly: AugMix,
timm's AutoAugment policies, the ``3a``/``3aw`` op sets and hparams it does not implement. It does
not import timm.

Example:
    >>> augment = from_timm("rand-m9-mstd0.5-inc1", img_mean=(124, 116, 104), interpolation="bilinear")
    >>> augment.magnitude, augment.magnitude_std, augment.ops[4], augment.fill, augment.interpolation
    (9.0, 0.5, 'PosterizeIncreasing', (124.0, 116.0, 104.0), ('bilinear',))
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Mapping, Sequence
from typing import Any

from gpuaug.transforms.timm_policy import TimmRandAugment

__all__ = ["from_timm"]

_AUTO_AUGMENT = ("original", "originalr", "v0", "v0r", "3a")
"""timm's AutoAugment policy names (``auto_augment_transform``)."""
_PIL_FILTERS = {0: "nearest", 2: "bilinear", 3: "bicubic"}
_PIL_REFUSED = {1: "LANCZOS", 4: "BOX", 5: "HAMMING"}
_HPARAMS = ("img_mean", "interpolation", "translate_pct", "translate_const", "magnitude_std", "magnitude_max")


def _refuse(config_str: str, part: str, why: str) -> ValueError:
    return ValueError(f"from_timm({config_str!r}): cannot map {part}: {why}")


def _interpolation(value: Any, config_str: str) -> Any:
    """timm's ``interpolation`` hparam (a PIL filter code or enum, a name, or a sequence of them) as filter names."""
    if isinstance(value, (list, tuple)):
        if not value:
            raise _refuse(config_str, "hparams['interpolation'] = ()", "an empty choice of filters")
        return [_interpolation(item, config_str) for item in value]
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):  # PIL's Resampling (an IntEnum) or its int
        if int(value) in _PIL_FILTERS:
            return _PIL_FILTERS[int(value)]
        if int(value) in _PIL_REFUSED:
            why = f"PIL's Image.transform refuses {_PIL_REFUSED[int(value)]}, so timm's geometric ops would fail"
            raise _refuse(config_str, f"hparams['interpolation'] = {value!r}", why)
    name = getattr(value, "value", value)
    if isinstance(name, str) and name.lower() in ("nearest", "bilinear", "bicubic", "random"):
        return name.lower()
    raise _refuse(config_str, f"hparams['interpolation'] = {value!r}", "use PIL's NEAREST, BILINEAR or BICUBIC, or their names")


def _img_mean(value: Any, config_str: str) -> tuple[int, ...]:
    integers = isinstance(value, Sequence) and not isinstance(value, str) and len(value) == 3
    if integers and all(isinstance(v, numbers.Integral) and not isinstance(v, bool) and 0 <= v <= 255 for v in value):
        return tuple(int(v) for v in value)
    why = "give 3 integers in 0..255 (PIL's fill colour of an RGB image; timm's create_transform passes round(255 * mean))"
    raise _refuse(config_str, f"hparams['img_mean'] = {value!r}", why)


def _number(value: Any, key: str, config_str: str) -> float:
    if isinstance(value, numbers.Real) and not isinstance(value, bool) and not math.isnan(value):
        return float(value)
    raise _refuse(config_str, f"hparams[{key!r}] = {value!r}", "not a number")


def _sections(config_str: str) -> dict[str, Any]:
    """The string's settings, read as timm's ``rand_augment_transform`` reads them (a ``ValueError`` where timm fails)."""
    settings: dict[str, Any] = {}
    for section in config_str.split("-")[1:]:
        if section.startswith("t"):
            settings.setdefault("t", section[1:])  # timm keeps the first
            continue
        parts = re.split(r"(\d.*)", section)
        if len(parts) < 2:
            continue  # timm skips a section without a digit
        key, value = parts[:2]
        if key not in ("mstd", "mmax", "inc", "m", "n", "p"):
            raise ValueError(f"from_timm({config_str!r}): unknown RandAugment config section {section!r} (timm asserts on it)")
        try:
            number = float(value) if key in ("mstd", "p") else int(value)
        except ValueError:
            raise ValueError(f"from_timm({config_str!r}): malformed section {section!r}: {value!r} is not a number") from None
        if key in ("mstd", "mmax"):  # timm's hparams.setdefault: the first one counts
            settings.setdefault(key, number)
        else:
            settings[key] = number
    return settings


def from_timm(config_str: str, hparams: Mapping[str, Any] | None = None, **kwargs: Any) -> TimmRandAugment:
    """The ``TimmRandAugment`` that timm's ``rand_augment_transform(config_str, hparams)`` describes.

    Reads ``rand-...`` strings as timm does: ``m`` magnitude (default 10), ``n`` ops per image (2), ``p``
    probability of each op (0.5), ``mstd`` magnitude std (above 100: uniform), ``mmax`` magnitude clip
    (0 or absent: 10), ``inc`` timm's increasing op list, ``t`` the op set (``weights`` only); sections
    without a digit are skipped, as timm skips them. ``hparams`` (or keyword arguments) are timm's:
    ``img_mean`` (fill colour, default (128, 128, 128)), ``interpolation`` (PIL's NEAREST/BILINEAR/BICUBIC,
    their names, ``"random"`` or a sequence; absent: timm's random bilinear/bicubic), ``translate_pct``,
    ``magnitude_std`` and ``magnitude_max`` (these two win over the string's, as timm's ``setdefault``
    makes them), ``translate_const`` (accepted; no RandAugment op reads it).

    Raises:
        ValueError: naming the part and why, for what timm accepts but gpuaug cannot reproduce exactly
            (``augmix-...``; the AutoAugment policies ``original``, ``originalr``, ``v0``, ``v0r``, ``3a``;
            ``t`` sets other than ``weights``; other hparams, and filters PIL's transform refuses),
            and naming the string for a malformed one (what timm fails on).

    Example:
        >>> from_timm("rand-m7-n3-tweights").ops[:3]
        ('Rotate', 'ShearX', 'ShearY')
    """
    if not isinstance(config_str, str):
        raise ValueError(f"from_timm: config_str must be a string such as 'rand-m9-mstd0.5', got {config_str!r}")
    extra = {**(hparams or {})}
    both = sorted(set(extra) & set(kwargs))
    if both:
        raise ValueError(f"from_timm({config_str!r}): {both} given both in hparams and as keyword arguments")
    extra.update(kwargs)
    head = config_str.split("-")[0]
    if head == "augmix":
        why = "timm's AugMix blends chains of ops with Dirichlet and Beta weights, which gpuaug does not implement"
        raise _refuse(config_str, "'augmix'", why)
    if head in _AUTO_AUGMENT:
        why = (
            f"timm's AutoAugment policy {head!r} (auto_augment_transform) is not implemented "
            "(ga.AutoAugment is torchvision's ImageNet policy, with torchvision's magnitudes)"
        )
        raise _refuse(config_str, repr(head), why)
    if head != "rand":
        raise ValueError(
            f"from_timm: malformed config string {config_str!r}: it must start with 'rand-' "
            "(timm's RandAugment; AugMix and AutoAugment strings are refused)"
        )
    unknown = sorted(set(extra) - set(_HPARAMS))
    if unknown:
        why = f"not implemented (the RandAugment hparams are {', '.join(_HPARAMS)})"
        raise _refuse(config_str, f"hparams key(s) {', '.join(map(repr, unknown))}", why)
    settings = _sections(config_str)

    op_set = settings.get("t")
    if op_set is not None and op_set != "weights":
        if op_set in ("3a", "3aw"):
            why = "that set needs GaussianBlur and Desaturate, which gpuaug does not implement"
        else:
            why = "not one of timm's sets (weights, 3a, 3aw); timm ignores such a name and uses its default list: leave it out"
        raise _refuse(config_str, f"'t{op_set}'", why)

    magnitude_std = settings.get("mstd", 0.0)
    if magnitude_std > 100:
        magnitude_std = math.inf
    if "magnitude_std" in extra:  # timm's hparams.setdefault: the hparam wins
        magnitude_std = _number(extra["magnitude_std"], "magnitude_std", config_str)
    magnitude_std = max(magnitude_std, 0.0)  # timm randomizes only above 0
    magnitude_max: Any = settings.get("mmax")
    if "magnitude_max" in extra:
        magnitude_max = extra["magnitude_max"]
        magnitude_max = None if magnitude_max is None else _number(magnitude_max, "magnitude_max", config_str)
    if magnitude_max is not None and magnitude_max < 0:
        raise _refuse(config_str, f"magnitude_max = {magnitude_max!r}", "below 0 (timm would clip every level to 0)")
    arguments: dict[str, Any] = {
        "magnitude": settings.get("m", 10),
        "num_layers": settings.get("n", 2),
        "prob": min(settings.get("p", 0.5), 1.0),  # timm applies every op when p >= 1
        "magnitude_std": magnitude_std,
        "magnitude_max": magnitude_max or 10.0,  # timm's `magnitude_max or _LEVEL_DENOM`
        "increasing": bool(settings.get("inc", 0)),
        "op_set": op_set,
    }
    if "img_mean" in extra:
        arguments["fill"] = _img_mean(extra["img_mean"], config_str)
    if "interpolation" in extra:
        arguments["interpolation"] = _interpolation(extra["interpolation"], config_str)
    if "translate_pct" in extra:
        arguments["translate_pct"] = _number(extra["translate_pct"], "translate_pct", config_str)
    try:
        return TimmRandAugment(**arguments)
    except ValueError as error:
        raise ValueError(f"from_timm({config_str!r}): {error}") from None
