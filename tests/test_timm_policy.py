"""timm's RandAugment (``ga.TimmRandAugment``, ``ga.from_timm``): the string read as timm reads it, each op per
image against timm's own ``AugmentOp`` on PIL images, the draws (chi-square, binomial, Kolmogorov-Smirnov at fixed
seeds), replay, dtypes, and the refusals."""

from __future__ import annotations

import math
import types

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import stats

import gpuaug as ga
from gpuaug.functional import timm_ops as TO
from gpuaug.transforms import BatchInfo
from gpuaug.transforms import timm_policy as TP

timm_aa = pytest.importorskip("timm.data.auto_augment")

ALPHA = 1e-4  # significance of every statistical test (fixed seeds: a correct draw passes)
FILTERS = {"nearest": Image.Resampling.NEAREST, "bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}
GEOMETRIC = ("Rotate", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel")
BLENDS = ("Color", "Contrast", "Sharpness")  # and their Increasing variants: float images differ most there
FILL = (124, 116, 104)


def generator(seed: int, device="cpu") -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def to_pil(image: torch.Tensor) -> Image.Image:
    return Image.fromarray(image.permute(1, 2, 0).contiguous().numpy())


def from_pil(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.array(image)).permute(2, 0, 1)


def timm_op(monkeypatch, name: str, level: float, negate: bool, resample, image: torch.Tensor, **hparams) -> torch.Tensor:
    """timm's ``AugmentOp(name)`` on ``image`` at ``level`` with its sign fixed (its ``random`` patched), or
    black where Pillow refuses to keep 0 bits (older Pillow: black)."""
    hparams = {"img_mean": FILL, "interpolation": resample, "translate_pct": 0.45, "magnitude_max": 200, **hparams}
    op = timm_aa.AugmentOp(name, prob=1.0, magnitude=level, hparams=hparams)
    monkeypatch.setattr(timm_aa, "random", types.SimpleNamespace(random=lambda: 0.75 if negate else 0.25))
    try:
        return from_pil(op(to_pil(image)))
    except ValueError as error:  # Pillow 13's ImageOps.posterize(image, 0) raises; older Pillow gives black
        assert "bits" in str(error) and name.startswith("Posterize")
        return torch.zeros_like(image)


def one_step(rows: list[tuple[int, float, bool, int]], device="cpu") -> dict[str, torch.Tensor]:
    """Params of one applied op per image: ``(op index, level, negate, filter index)``."""
    column = lambda values, kind: torch.tensor(values, dtype=kind, device=device).view(-1, 1)  # noqa: E731
    return {
        "op": column([r[0] for r in rows], torch.int64),
        "apply": torch.ones(len(rows), 1, dtype=torch.bool, device=device),
        "level": column([r[1] for r in rows], torch.float64),
        "sign": column([r[2] for r in rows], torch.bool),
        "resample": column([r[3] for r in rows], torch.int64),
    }


def augment_of(increasing: bool) -> ga.TimmRandAugment:
    return ga.TimmRandAugment(num_layers=1, increasing=increasing, magnitude_max=200, fill=FILL, interpolation=tuple(FILTERS))


def every_op(increasing: bool) -> list[tuple[int, float, bool, int]]:
    """Every op of the list at levels across (and past) 0..10, both signs; the geometric ops with every filter."""
    ops = TP.RAND_INCREASING_TRANSFORMS if increasing else TP.RAND_TRANSFORMS
    levels = (0.0, 1.3, 2.5, 3.7, 5.0, 7.77, 9.0, 10.0, 13.3)
    return [
        (k, level, negate, f)
        for k, name in enumerate(ops)
        for level in levels
        for negate in (False, True)
        for f in (range(3) if name in GEOMETRIC else (1,))
    ]


# ----------------------------------------------------------------------------------------------
# the string, read as timm reads it
# ----------------------------------------------------------------------------------------------
PARSED = [
    ("rand-m9-mstd0.5-inc1", None),
    ("rand-m7-n3", None),
    ("rand-m9-mstd101", None),
    ("rand-m9-mmax15-p0.3", None),
    ("rand-m9-n3-mstd0.5", None),
    ("rand-mstd1-tweights", None),
    ("rand-m15", None),
    ("rand-m10-mmax0-inc0", None),
    ("rand-n0-p1", None),
    ("rand-m9-mstd0.5-mstd2-inc1-inc0", None),  # the first mstd counts (setdefault), the last inc
    ("rand-m9-inc1-foo--mstd", None),  # sections without a digit are skipped
    ("rand-m9-mstd0.5-inc1", {"translate_const": 100, "img_mean": (124, 116, 104)}),  # create_transform's hparams
    ("rand-m9-mstd0.5", {"translate_const": 100, "img_mean": (0, 0, 0), "interpolation": Image.Resampling.BILINEAR}),
    ("rand-m9-mstd0.5-mmax12", {"magnitude_std": 2.0, "magnitude_max": 11}),  # hparams win over the string
    ("rand-m6-n1", {"interpolation": Image.Resampling.NEAREST, "translate_pct": 0.3, "magnitude_std": 200.0}),
]


@pytest.mark.parametrize("config_str,hparams", PARSED, ids=[f"{s}-{h}" for s, h in PARSED])
def test_from_timm_holds_what_timm_holds(config_str, hparams):
    theirs = timm_aa.rand_augment_transform(config_str, dict(hparams) if hparams else None)
    ours = ga.from_timm(config_str, dict(hparams) if hparams else None)
    assert isinstance(ours, ga.TimmRandAugment)
    assert ours.ops == tuple(op.name for op in theirs.ops)
    assert ours.num_layers == theirs.num_layers
    if theirs.choice_weights is None:
        assert ours.weights is None
    else:
        np.testing.assert_allclose(ours.weights, theirs.choice_weights, rtol=1e-12)
    for op in theirs.ops:
        assert ours.prob == min(op.prob, 1.0)  # timm applies every op when p >= 1
        assert ours.magnitude == op.magnitude
        assert ours.magnitude_std == max(op.magnitude_std, 0.0)
        assert ours.magnitude_max == (op.magnitude_max or 10)
        assert ours.fill == tuple(float(v) for v in op.kwargs["fillcolor"])
        resample = op.kwargs["resample"]
        resample = resample if isinstance(resample, tuple) else (resample,)
        assert ours.interpolation == tuple(FILTERS_BY_CODE[int(code)] for code in resample)
        assert ours.translate_pct == op.hparams.get("translate_pct", 0.45)


FILTERS_BY_CODE = {int(code): name for name, code in FILTERS.items()}


def test_from_timm_keyword_hparams_and_names():
    augment = ga.from_timm("rand-m9-mstd0.5", img_mean=(1, 2, 3), interpolation="bicubic", translate_const=117)
    assert augment.fill == (1.0, 2.0, 3.0) and augment.interpolation == ("bicubic",)
    assert ga.from_timm("rand-m9", interpolation="random").interpolation == ("bilinear", "bicubic")
    assert ga.from_timm("rand-m9", interpolation=[0, 0, 3]).interpolation == ("nearest", "nearest", "bicubic")
    assert ga.from_timm("rand-m9-mstd1e9").magnitude_std == math.inf
    assert "from_timm" in ga.__all__ and "TimmRandAugment" in ga.__all__


# ----------------------------------------------------------------------------------------------
# each op, per image, against timm's AugmentOp on PIL images
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("increasing", [False, True])
def test_each_op_equals_timm_on_uint8(increasing, photo_batch, monkeypatch):
    """Every op, level, sign and filter, each image its own, in one call: bit-equal to timm on PIL (uint8, CPU)."""
    augment, rows = augment_of(increasing), every_op(increasing)
    images = photo_batch[torch.arange(len(rows)) % len(photo_batch)]
    out = augment(images, params=one_step(rows))
    for image, got, (k, level, negate, f) in zip(images, out, rows):
        expected = timm_op(monkeypatch, augment.ops[k], level, negate, list(FILTERS.values())[f], image)
        assert torch.equal(got, expected), (augment.ops[k], level, negate, list(FILTERS)[f])


@pytest.mark.parametrize("increasing", [False, True])
def test_each_op_on_float_images_within_a_level_or_two_of_timm(increasing, photo_batch, monkeypatch):
    """Float images take the same ops without uint8's truncations: within 1 level of timm's uint8 result (the
    truncation), the blends (whose grayscale, mean and blur are not rounded to levels either) within 2."""
    augment, rows = augment_of(increasing), every_op(increasing)
    images = photo_batch[torch.arange(len(rows)) % len(photo_batch)]
    out = augment(images.float() / 255, params=one_step(rows))
    worst: dict[str, tuple[float, float]] = {}
    for image, got, (k, level, negate, f) in zip(images, out, rows):
        name = augment.ops[k]
        difference = (got.double() * 255 - timm_op(monkeypatch, name, level, negate, list(FILTERS.values())[f], image)).abs()
        kind = name.replace("Increasing", "")
        most, beyond = worst.get(kind, (0.0, 0.0))
        worst[kind] = max(most, difference.max().item()), max(beyond, (difference > 1 + 1e-3).double().mean().item())
    for kind, (most, beyond) in worst.items():
        if kind in BLENDS:  # measured: at most 1.72 levels; beyond 1 level on up to a third of an image's pixels
            assert most <= 2.0 and beyond < 0.4, (kind, most, beyond)
        else:
            assert most <= 1 + 1e-3 and beyond == 0, (kind, most, beyond)


@pytest.mark.parametrize("height,width", [(30, 30), (10, 50), (31, 17)])
def test_geometry_at_special_levels_equals_timm(height, width, monkeypatch):
    """Translations of whole and half pixels (level 10 at width 30: 13.5 px), rotations of 90, 180, 270 and 360
    degrees (PIL's transposes and copy; square and not), shears at level 0: every filter."""
    augment = augment_of(False)
    rows = [
        (augment.ops.index(name), level, negate, f)
        for name, levels in (("TranslateXRel", (10.0, 5.0, 20 / 9)), ("TranslateYRel", (10.0, 5.0)), ("ShearX", (0.0,)))
        for level in levels
        for negate in (False, True)
        for f in range(3)
    ]
    rows += [
        (augment.ops.index("Rotate"), level, negate, f)
        for level in (30.0, 60.0, 90.0, 120.0)
        for negate in (0, 1)
        for f in range(3)
    ]
    images = torch.randint(0, 256, (len(rows), 3, height, width), dtype=torch.uint8, generator=generator(1))
    out = augment(images, params=one_step(rows))
    for image, got, (k, level, negate, f) in zip(images, out, rows):
        expected = timm_op(monkeypatch, augment.ops[k], level, negate, list(FILTERS.values())[f], image)
        assert torch.equal(got, expected), (augment.ops[k], level, negate, list(FILTERS)[f])


@pytest.mark.parametrize("side,level", [(25, 4.0), (75, 4.0), (125, 8.8), (250, 8.4)])
def test_translation_a_hair_off_half_pixels_equals_timm(side, level, monkeypatch):
    """Shifts such as 0.45 * 0.4 * 25 = 4.500000000000001 px put nearest's source points a hair off whole pixels."""
    augment = augment_of(False)
    rows = [(augment.ops.index(name), level, negate, f) for name in GEOMETRIC[3:] for negate in (False, True) for f in range(3)]
    images = torch.randint(0, 256, (len(rows), 3, side, side), dtype=torch.uint8, generator=generator(7))
    out = augment(images, params=one_step(rows))
    for image, got, (k, level, negate, f) in zip(images, out, rows):
        expected = timm_op(monkeypatch, augment.ops[k], level, negate, list(FILTERS.values())[f], image)
        assert torch.equal(got, expected), (augment.ops[k], level, negate, list(FILTERS)[f])


def test_two_layers_with_skips_equal_timm_in_sequence(photo_batch, monkeypatch):
    augment = ga.TimmRandAugment(magnitude=9, num_layers=2, increasing=True, fill=FILL, interpolation=("bilinear", "bicubic"))
    count = 60
    params = augment.make_params(BatchInfo(count, torch.device("cpu"), ((96, 128),) * count), generator(2))
    params["level"] = torch.rand(count, 2, generator=generator(3), dtype=torch.float64) * 10
    images = photo_batch[torch.arange(count) % len(photo_batch)]
    out = augment(images, params=params)
    for b in range(count):
        expected = images[b]
        for step in range(2):
            if params["apply"][b, step]:
                name, resample = augment.ops[params["op"][b, step]], FILTERS[augment.interpolation[params["resample"][b, step]]]
                expected = timm_op(
                    monkeypatch, name, params["level"][b, step].item(), bool(params["sign"][b, step]), resample, expected
                )
        assert torch.equal(out[b], expected), b


def test_round15_is_pythons_round():
    values = torch.rand(20000, generator=generator(4), dtype=torch.float64) * 2 - 1
    values = torch.cat([values, torch.cos(values * 7), torch.tensor([0.0, -0.0, 1.0, -1.0, 6.123233995736766e-17])])
    assert TO.round15(values).tolist() == [round(v, 15) for v in values.tolist()]


def test_one_channel_images_and_fill():
    augment = ga.TimmRandAugment(magnitude=9, num_layers=3, prob=1.0)  # the default fill (128, 128, 128) is one gray
    images = torch.randint(0, 256, (32, 1, 20, 20), dtype=torch.uint8, generator=generator(5))
    assert augment(images, generator=generator(6)).shape == (32, 1, 20, 20)
    with pytest.raises(ValueError, match="fill has 3 different values"):
        ga.TimmRandAugment(fill=(1, 2, 3))(images)


# ----------------------------------------------------------------------------------------------
# draws: ops, probabilities, levels, signs, filters; per image
# ----------------------------------------------------------------------------------------------
def info(count: int) -> BatchInfo:
    return BatchInfo(count, torch.device("cpu"), ((32, 32),) * count)


def chi_square(values: torch.Tensor, expected: np.ndarray) -> float:
    counts = torch.bincount(values.flatten(), minlength=len(expected)).double().numpy()
    assert len(counts) == len(expected)
    return stats.chisquare(counts, expected / expected.sum() * counts.sum()).pvalue


def test_ops_uniform_with_replacement_probability_signs_and_filters():
    augment = ga.TimmRandAugment(num_layers=3, prob=0.3)
    params = augment.make_params(info(20000), generator(10))
    assert params["op"].shape == (20000, 3)
    for step in range(3):
        assert chi_square(params["op"][:, step], np.ones(15)) > ALPHA
    repeats = (params["op"][:, 0] == params["op"][:, 1]).double().mean().item()
    assert abs(repeats - 1 / 15) < 0.01  # with replacement, as np.random.choice(replace=True)
    assert stats.binomtest(int(params["apply"].sum()), params["apply"].numel(), 0.3).pvalue > ALPHA
    assert stats.binomtest(int(params["sign"].sum()), params["sign"].numel(), 0.5).pvalue > ALPHA
    assert chi_square(params["resample"], np.ones(2)) > ALPHA


def test_weighted_ops_without_replacement():
    augment = ga.from_timm("rand-n2-tweights")
    params = augment.make_params(info(40000), generator(11))
    first, second = params["op"].unbind(dim=1)
    assert not (first == second).any()
    weights = np.array(augment.weights)
    assert chi_square(first, weights) > ALPHA
    # the second op: by weight among the 14 left, whatever the first was
    after = np.array([sum(weights[i] * weights[j] / (1 - weights[i]) for i in range(15) if i != j) for j in range(15)])
    assert chi_square(second, after) > ALPHA


def test_levels_clipped_normal():
    augment = ga.TimmRandAugment(magnitude=9, magnitude_std=2.0, num_layers=2)
    level = augment.make_params(info(20000), generator(12))["level"].flatten().numpy()
    normal = stats.norm(9, 2)
    inside = level[(level > 0) & (level < 10)]
    truncated = lambda x: (normal.cdf(x) - normal.cdf(0)) / (normal.cdf(10) - normal.cdf(0))  # noqa: E731
    assert stats.kstest(inside, truncated).pvalue > ALPHA
    assert stats.binomtest(int((level == 10).sum()), level.size, normal.sf(10)).pvalue > ALPHA
    assert level.min() >= 0 and level.max() <= 10


def test_levels_uniform_for_infinite_std_and_clipped_by_mmax():
    level = ga.from_timm("rand-m9-mstd101").make_params(info(20000), generator(13))["level"].flatten().numpy()
    assert stats.kstest(level, stats.uniform(0, 9).cdf).pvalue > ALPHA
    level = ga.from_timm("rand-m15-mstd101").make_params(info(20000), generator(14))["level"].flatten().numpy()
    assert stats.binomtest(int((level == 10).sum()), level.size, 1 / 3).pvalue > ALPHA  # uniform(0, 15) clipped at 10
    level = ga.from_timm("rand-m15-mmax12").make_params(info(10), generator(15))["level"]
    assert (level == 12).all()


def test_one_batch_of_256_applies_at_least_10_distinct_ops():
    augment = ga.TimmRandAugment(magnitude=9, num_layers=1, prob=1.0)
    images = torch.randint(0, 256, (256, 3, 24, 24), dtype=torch.uint8, generator=generator(16))
    params = augment.make_params(images, generator(17))
    out = augment(images, params=params)
    changed = (out != images).flatten(1).any(dim=1)
    assert params["op"][changed].unique().numel() >= 10  # a batch-level draw would change images by one op only


# ----------------------------------------------------------------------------------------------
# replay, determinism, dtypes, devices
# ----------------------------------------------------------------------------------------------
def test_half_precision_close_to_float32():
    images = torch.rand(32, 3, 24, 24, generator=generator(22))
    augment = ga.from_timm("rand-m9-mstd0.5-inc1")
    params = augment.make_params(images, generator(23))
    for dtype in (torch.float16, torch.bfloat16):
        full = augment(images.to(dtype).float(), params=params)  # the same (rounded) input, computed in float32
        half = augment(images.to(dtype), params=params).float()
        assert ((half - full).abs() > 2 / 255).double().mean() < 0.01  # half-precision rounding moves a few levels


@pytest.mark.cuda
def test_cuda_close_to_cpu(photo_batch):
    """Not yet run on a GPU. Expected differences: Sharpness's blur is a float32 convolution on CUDA (TF32 where cuDNN
    allows it), which may move a blurred level by one, and the blend's factor (up to 2.5 here) that by up to 2 levels."""
    augment, rows = augment_of(True), every_op(True)
    images = photo_batch[torch.arange(len(rows)) % len(photo_batch)]
    cpu = augment(images, params=one_step(rows))
    cuda = augment(images.cuda(), params=one_step(rows, "cuda")).cpu()
    difference = (cuda.double() - cpu.double()).abs()
    assert difference.max() <= 2 and (difference > 0).double().mean() < 0.01


def test_in_a_compose_after_a_crop():
    pipeline = ga.Compose(
        [ga.RandomResizedCrop(32), ga.from_timm("rand-m9-mstd0.5-inc1"), ga.Normalize(ga.IMAGENET_MEAN, ga.IMAGENET_STD)]
    )
    images = [torch.randint(0, 256, (3, 40 + 3 * k, 50), dtype=torch.uint8, generator=generator(k)) for k in range(6)]
    out = pipeline(images, generator=generator(24))
    assert out.shape == (6, 3, 32, 32) and torch.equal(out, pipeline(images, generator=generator(24)))
    assert ga.from_timm("rand-m9")(torch.zeros(0, 3, 8, 8, dtype=torch.uint8)).shape == (0, 3, 8, 8)


# ----------------------------------------------------------------------------------------------
# refusals: what timm accepts but gpuaug cannot reproduce, and what timm fails on
# ----------------------------------------------------------------------------------------------
def timm_accepts(config_str: str, hparams=None) -> bool:
    build = {"rand": timm_aa.rand_augment_transform, "augmix": timm_aa.augment_and_mix_transform}
    try:
        build.get(config_str.split("-")[0], timm_aa.auto_augment_transform)(config_str, hparams)
    except (AssertionError, ValueError, KeyError):
        return False
    return True


REFUSED = [
    ("augmix-m5-w4-d2", None, "'augmix'.*AugMix"),
    ("original-mstd0.5", None, "'original'.*AutoAugment"),
    ("originalr", None, "'originalr'.*AutoAugment"),
    ("v0", None, "'v0'.*AutoAugment"),
    ("v0r-mstd1", None, "'v0r'.*AutoAugment"),
    ("3a", None, "'3a'.*AutoAugment"),
    ("rand-m9-t3a", None, "'t3a'.*GaussianBlur and Desaturate"),
    ("rand-m9-t3aw", None, "'t3aw'.*GaussianBlur and Desaturate"),
    ("rand-m9-tfoo", None, "'tfoo'.*not one of timm's sets"),
    ("rand-m9", {"cutout": 0.5}, "'cutout'.*not implemented"),
    ("rand-m9", {"interpolation": Image.Resampling.LANCZOS}, "LANCZOS"),
    ("rand-m9", {"interpolation": Image.Resampling.HAMMING}, "HAMMING"),
    ("rand-m9", {"img_mean": (0.5, 0.5, 0.5)}, "img_mean.*3 integers"),
    ("rand-m9", {"img_mean": 128}, "img_mean.*3 integers"),
    ("rand-m9", {"magnitude_max": -1}, "magnitude_max.*below 0"),
    ("rand-n16-tweights", None, "num_layers must be at most 15"),
]


@pytest.mark.parametrize("config_str,hparams,match", REFUSED, ids=[f"{s}-{h}" for s, h, _ in REFUSED])
def test_refuses_what_it_cannot_reproduce(config_str, hparams, match):
    with pytest.raises(ValueError, match=match) as error:
        ga.from_timm(config_str, hparams)
    assert repr(config_str) in str(error.value)
    if "LANCZOS" not in match and "HAMMING" not in match and "num_layers" not in match:
        assert timm_accepts(config_str, dict(hparams) if hparams else None)  # timm builds it: refused, not malformed


MALFORMED = ["rand-m9.5", "rand-x3", "rand-mx9", "randx-m9", "", "foo-m9", "rand-mstd0.5e", "rand-p0.3.1", "rand-n2x"]


@pytest.mark.parametrize("config_str", MALFORMED)
def test_malformed_strings_name_the_string(config_str):
    with pytest.raises(ValueError) as error:
        ga.from_timm(config_str)
    assert repr(config_str) in str(error.value)
    assert not timm_accepts(config_str)  # timm fails on them too


def test_not_a_string_and_hparams_twice():
    with pytest.raises(ValueError, match="config_str must be a string"):
        ga.from_timm(None)
    with pytest.raises(ValueError, match="both in hparams and as keyword"):
        ga.from_timm("rand-m9", {"img_mean": (1, 2, 3)}, img_mean=(1, 2, 3))


@pytest.mark.parametrize(
    "kwargs,name",
    [
        ({"magnitude": -1}, "magnitude"),
        ({"magnitude": math.nan}, "magnitude"),
        ({"num_layers": 1.5}, "num_layers"),
        ({"num_layers": -1}, "num_layers"),
        ({"prob": 1.5}, "prob"),
        ({"magnitude_std": -0.5}, "magnitude_std"),
        ({"magnitude_max": 0}, "magnitude_max"),
        ({"magnitude_max": math.inf}, "magnitude_max"),
        ({"increasing": 1}, "increasing"),
        ({"op_set": "3a"}, "op_set"),
        ({"fill": (1, 2)}, "fill"),
        ({"fill": (0, 0, 256)}, "fill"),
        ({"interpolation": "lanczos"}, "interpolation"),
        ({"interpolation": ()}, "interpolation"),
        ({"interpolation": [2]}, "interpolation"),
        ({"translate_pct": math.inf}, "translate_pct"),
    ],
)
def test_arguments_checked(kwargs, name):
    with pytest.raises(ValueError, match=name):
        ga.TimmRandAugment(**kwargs)
