"""Auto-augment policies, RandomErasing and MixUp/CutMix (issue 16): per image against torchvision v2's ops,
draws (chi-square, binomial, Kolmogorov-Smirnov at fixed seeds), replay, dtypes, arguments, conversion."""

from __future__ import annotations

import math

import pytest
import torch
from scipy import stats
from torchvision import transforms as tv1
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

import gpuaug as ga
from gpuaug.functional import policy as P
from gpuaug.transforms import BatchInfo

ALPHA = 1e-4  # significance of every statistical test (fixed seeds: a correct draw passes)
OPS = list(range(14))  # Identity .. Equalize: TrivialAugmentWide's and RandAugment's set
SIGNED = {"ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Brightness", "Color", "Contrast", "Sharpness"}


def generator(seed: int, device="cpu") -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def images_of(dtype: torch.dtype, batch: int, height: int = 23, width: int = 29, seed: int = 0, device="cpu") -> torch.Tensor:
    images = torch.randint(0, 256, (batch, 3, height, width), dtype=torch.uint8, generator=generator(seed))
    images[:, :, :3] = 255  # some saturated rows, so clamps and solarize thresholds matter
    images = images if dtype == torch.uint8 else images.to(dtype) / 255
    return images.to(device)


def reference(tv_policy, image: torch.Tensor, steps, num_bins: int) -> torch.Tensor:
    """torchvision v2 applying ``steps`` ((op name, bin, negate), ...) to one image, with its own magnitude tables."""
    height, width = image.shape[-2:]
    for name, level, negate in steps:
        magnitudes_fn, signed = tv_policy._AUGMENTATION_SPACE[name]
        magnitudes = magnitudes_fn(num_bins, height, width)
        magnitude = 0.0 if magnitudes is None else float(magnitudes[level])
        if signed and negate:
            magnitude *= -1
        image = tv_policy._apply_image_or_video_transform(
            image, name, magnitude, interpolation=tv_policy.interpolation, fill=tv_policy._fill
        )
    return image


# ----------------------------------------------------------------------------------------------
# each op, per image, against torchvision v2
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
@pytest.mark.parametrize("interpolation,fill", [("nearest", None), ("nearest", [10, 200, 30]), ("bilinear", [10, 200, 30])])
def test_trivial_augment_each_op_matches_torchvision(dtype, interpolation, fill, device):
    """Every (op, bin, sign) in one batch, each image its own: exact on the CPU (nearest and bilinear alike)."""
    combos = [(op, level, negate) for op in OPS for level in (0, 7, 20, 30) for negate in (False, True)]
    fill_values = None if fill is None else [v if dtype == torch.uint8 else v / 255 for v in fill]
    ours = ga.TrivialAugmentWide(interpolation=interpolation, fill=fill_values)
    theirs = v2.TrivialAugmentWide(interpolation=interpolation, fill=fill_values)
    images = images_of(dtype, len(combos), device=device)
    column = lambda values, kind: torch.tensor(values, dtype=kind, device=device).view(-1, 1)  # noqa: E731
    params = {
        "op": column([c[0] for c in combos], torch.int64),
        "bin": column([c[1] for c in combos], torch.int64),
        "sign": column([c[2] for c in combos], torch.bool),
    }
    out = ours(images, params=params).cpu()
    assert out.dtype == dtype
    expected = torch.stack(
        [
            reference(theirs, image, [(P.OP_NAMES[op], level, negate)], 31)
            for image, (op, level, negate) in zip(images.cpu(), combos)
        ]
    )
    difference = (out.double() - expected.double()).abs() * (1 if dtype == torch.uint8 else 255)
    if device.type == "cpu":
        assert torch.equal(out, expected)
    else:  # stated bound off the CPU: resampling and blends may round differently by one level on a few pixels
        assert difference.max() <= 1.0 + 1e-3 and (difference > 1e-3).double().mean() < 0.01


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_rand_augment_two_ops_per_image_match_torchvision(dtype):
    ours, theirs = ga.RandAugment(num_ops=2, magnitude=9), v2.RandAugment(num_ops=2, magnitude=9)
    ops = torch.tensor([[a, b] for a in OPS for b in OPS[::3]])
    signs = torch.rand(ops.shape, generator=generator(3)) < 0.5
    images = images_of(dtype, ops.shape[0], seed=1)
    out = ours(images, params={"op": ops, "sign": signs})
    for image, row, sign, got in zip(images, ops.tolist(), signs.tolist(), out):
        steps = [(P.OP_NAMES[op], 9, negate) for op, negate in zip(row, sign)]
        assert torch.equal(got, reference(theirs, image, steps, 31)), steps


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_auto_augment_imagenet_sub_policies_match_torchvision(dtype):
    """All 25 sub-policies x (both ops, first only, second only), with both signs: AutoAugment's 10 bins, Invert included."""
    ours, theirs = ga.AutoAugment(), v2.AutoAugment(v2.AutoAugmentPolicy.IMAGENET)
    rows = [
        (k, applied, negate)
        for k in range(25)
        for applied in ((True, True), (True, False), (False, True))
        for negate in (False, True)
    ]
    params = {
        "policy": torch.tensor([k for k, _, _ in rows]),
        "apply": torch.tensor([applied for _, applied, _ in rows]),
        "sign": torch.tensor([(negate, not negate) for _, _, negate in rows]),
    }
    images = images_of(dtype, len(rows), seed=2)
    out = ours(images, params=params)
    for image, (k, applied, negate), got in zip(images, rows, out):
        sub = theirs._policies[k]
        steps = [(name, level or 0, sign) for (name, _, level), on, sign in zip(sub, applied, (negate, not negate)) if on]
        space = {**theirs._AUGMENTATION_SPACE}
        assert torch.equal(got, reference(theirs, image, steps, 10)), (k, steps, sorted(space)[:1])


def test_one_channel_images_match_torchvision():
    ours, theirs = ga.TrivialAugmentWide(), v2.TrivialAugmentWide()
    images = images_of(torch.uint8, len(OPS), seed=4)[:, :1].contiguous()
    params = {
        "op": torch.tensor(OPS).view(-1, 1),
        "bin": torch.full((len(OPS), 1), 25),
        "sign": torch.ones(len(OPS), 1, dtype=torch.bool),
    }
    out = ours(images, params=params)
    for image, op, got in zip(images, OPS, out):
        assert torch.equal(got, reference(theirs, image, [(P.OP_NAMES[op], 25, True)], 31)), P.OP_NAMES[op]


def test_equalize_float_and_solarize_threshold_match_torchvision():
    images = images_of(torch.float32, 4, seed=5)
    assert torch.equal(P.equalize(images), TF.equalize(images))
    thresholds = torch.tensor([0.0, 0.3, 0.7, 1.0])
    expected = torch.stack([TF.solarize(image, float(t)) for image, t in zip(images, thresholds)])
    assert torch.equal(P.solarize(images, thresholds), expected)


def test_uint8_solarize_and_equalize_edges_match_torchvision():
    """The integer comparison of uint8 solarize at thresholds on, near and between levels (torchvision
    compares with the float32 rounding of its Python threshold; above 255 nothing is inverted), and
    equalize with a constant channel (kept as it is) beside ordinary ones."""
    images = torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16).repeat(9, 3, 1, 1)
    thresholds = [0.0, 0.5, 85.00000001, 84.99999, 127.5, 128.0, 254.9, 255.0, -math.inf]
    expected = torch.stack([TF.solarize(image, t) if t >= 0 else 255 - image for image, t in zip(images, thresholds)])
    assert torch.equal(P.solarize(images, torch.tensor(thresholds, dtype=torch.float64)), expected)
    above = P.solarize(images[:2], torch.tensor([255.5, math.inf]))
    assert torch.equal(above, images[:2])
    mixed = images_of(torch.uint8, 3, seed=6)
    mixed[1, 2] = 77  # one constant channel
    assert torch.equal(P.equalize(mixed), torch.stack([TF.equalize(image) for image in mixed]))


# ----------------------------------------------------------------------------------------------
# draws: uniform ops and bins, fair signs, AutoAugment's probabilities; per image
# ----------------------------------------------------------------------------------------------
def info(count: int) -> BatchInfo:
    return BatchInfo(count, torch.device("cpu"), ((32, 32),) * count)


def chi_square_uniform(values: torch.Tensor, cells: int) -> float:
    counts = torch.bincount(values.flatten(), minlength=cells).double()
    assert counts.numel() == cells
    return stats.chisquare(counts.numpy()).pvalue


def test_trivial_augment_draws_uniform_ops_bins_and_fair_signs():
    params = ga.TrivialAugmentWide().make_params(info(20000), generator(10))
    assert chi_square_uniform(params["op"], 14) > ALPHA
    assert chi_square_uniform(params["bin"], 31) > ALPHA
    assert stats.binomtest(int(params["sign"].sum()), params["sign"].numel(), 0.5).pvalue > ALPHA


def test_rand_augment_draws_uniform_ops_per_step_and_fair_signs():
    params = ga.RandAugment(num_ops=3).make_params(info(10000), generator(11))
    assert params["op"].shape == (10000, 3)
    for step in range(3):
        assert chi_square_uniform(params["op"][:, step], 14) > ALPHA
    assert stats.binomtest(int(params["sign"].sum()), params["sign"].numel(), 0.5).pvalue > ALPHA


def test_auto_augment_draws_uniform_sub_policies_and_their_probabilities():
    augment = ga.AutoAugment()
    params = augment.make_params(info(25000), generator(12))
    assert chi_square_uniform(params["policy"], 25) > ALPHA
    for k, sub in enumerate(v2.AutoAugment()._policies):
        chosen = params["apply"][params["policy"] == k]
        for step, (_, probability, _) in enumerate(sub):
            hits = int(chosen[:, step].sum())
            if probability in (0.0, 1.0):
                assert hits == probability * chosen.shape[0]
            else:
                assert stats.binomtest(hits, chosen.shape[0], probability).pvalue > ALPHA


def test_one_batch_of_256_applies_at_least_10_distinct_ops():
    augment = ga.TrivialAugmentWide()
    images = images_of(torch.uint8, 256, 24, 24, seed=6)
    params = augment.make_params(images, generator(13))
    out = augment(images, params=params)
    changed = (out != images).flatten(1).any(dim=1)
    assert params["op"][changed].unique().numel() >= 10  # a batch-level draw would change images by one op only


# ----------------------------------------------------------------------------------------------
# replay, determinism, dtypes, Compose
# ----------------------------------------------------------------------------------------------
POLICIES = [
    ga.TrivialAugmentWide(),
    ga.RandAugment(),
    ga.AutoAugment(),
    ga.RandomErasing(p=0.7, value="random"),
    ga.RandomErasing(p=0.7, value=(0.1, 0.2, 0.3)),
    ga.from_timm("rand-m9-mstd0.5-inc1"),
    ga.from_timm("rand-m7-n3-mstd101", interpolation=0),
    ga.from_timm("rand-n3-tweights", img_mean=(0, 0, 0)),
]


@pytest.mark.parametrize("transform", POLICIES, ids=repr)
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32, torch.float16, torch.bfloat16])
def test_same_seed_same_output_replay_and_dtype_kept(transform, dtype, device):
    images = images_of(dtype, 16, device=device)
    first = transform(images, generator=generator(20, device))
    assert first.dtype == dtype and first.shape == images.shape and first.device == images.device
    assert torch.equal(first, transform(images, generator=generator(20, device)))
    params = transform.make_params(images, generator(20, device))
    assert torch.equal(first, transform(images, params=params))
    if dtype.is_floating_point:
        assert torch.isfinite(first.float()).all()
        if not isinstance(transform, ga.RandomErasing):  # the policies keep the images' range
            assert first.min() >= 0 and first.max() <= 1


def test_half_precision_close_to_float32():
    images = images_of(torch.float32, 32, seed=7)
    augment = ga.TrivialAugmentWide()
    params = augment.make_params(images, generator(21))
    for dtype in (torch.float16, torch.bfloat16):
        full = augment(images.to(dtype).float(), params=params)  # the same (rounded) input, computed in float32
        half = augment(images.to(dtype), params=params).float()
        assert (
            (half - full).abs() > 2 / 255
        ).double().mean() < 0.01  # half-precision rounding moves a few posterize/solarize levels


def test_policies_in_a_compose_after_the_first_geometric_op():
    pipeline = ga.Compose(
        [
            ga.RandomResizedCrop(32),
            ga.RandomHorizontalFlip(),
            ga.TrivialAugmentWide(),
            ga.Normalize(ga.IMAGENET_MEAN, ga.IMAGENET_STD),
            ga.RandomErasing(),
        ]
    )
    images = [images_of(torch.uint8, 1, 40 + 3 * k, 50, seed=k)[0] for k in range(6)]
    out = pipeline(images, generator=generator(22))
    assert out.shape == (6, 3, 32, 32) and out.dtype == torch.float32
    assert torch.equal(out, pipeline(images, generator=generator(22)))


def test_empty_batch_and_one_image():
    assert ga.RandAugment()(torch.zeros(0, 3, 8, 8, dtype=torch.uint8)).shape == (0, 3, 8, 8)
    assert ga.AutoAugment()(images_of(torch.uint8, 1)[0]).shape == (3, 23, 29)


# ----------------------------------------------------------------------------------------------
# RandomErasing
# ----------------------------------------------------------------------------------------------
def test_random_erasing_probability_binomial():
    params = ga.RandomErasing(p=0.3).make_params(BatchInfo(4000, torch.device("cpu"), ((100, 100),) * 4000), generator(30))
    assert stats.binomtest(int(params["erase"].sum()), 4000, 0.3).pvalue > ALPHA


def test_random_erasing_boxes_area_aspect_inside_and_pixels():
    erasing = ga.RandomErasing(p=1.0, scale=(0.05, 0.3), ratio=(0.5, 2.0), value=-1.0)
    images = torch.rand(500, 1, 120, 160, generator=generator(31))
    params = erasing.make_params(images, generator(32))
    top, left, height, width = params["box"].double().unbind(1)
    assert params["erase"].all()  # such boxes always fit within 10 attempts (in practice)
    area = height * width / (120 * 160)
    aspect = height / width
    assert area.min() >= 0.05 - 0.01 and area.max() <= 0.3 + 0.01  # the rounding of h and w only
    assert aspect.min() >= 0.5 * 0.95 and aspect.max() <= 2.0 / 0.95
    assert (top >= 0).all() and (left >= 0).all() and (top + height <= 120).all() and (left + width <= 160).all()
    out = erasing(images, params=params)
    for image, got, (i, j, h, w) in zip(images[:20], out[:20], params["box"][:20].tolist()):
        assert torch.equal(got, TF.erase(image, i, j, h, w, torch.tensor([-1.0]).view(-1, 1, 1)))
    assert torch.equal((out == -1).flatten(1).sum(1), params["box"][:, 2] * params["box"][:, 3])


def test_random_erasing_random_value_after_normalize_and_inplace():
    images = ga.Normalize(ga.IMAGENET_MEAN, ga.IMAGENET_STD)(images_of(torch.uint8, 64, 64, 64, seed=8))
    erasing = ga.RandomErasing(p=1.0, value="random")
    params = erasing.make_params(images, generator(33))
    out = erasing(images, params=params)
    erased = out[out != images]
    assert erased.numel() > 1000 and abs(float(erased.mean())) < 0.1 and abs(float(erased.std()) - 1) < 0.1  # standard normal
    copy = images.clone()
    returned = ga.RandomErasing(p=1.0, value="random", inplace=True)(copy, params=params)
    assert torch.equal(copy, out) and returned.data_ptr() == copy.data_ptr()


# ----------------------------------------------------------------------------------------------
# MixUp / CutMix
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("alpha", [0.2, 1.0, 2.5])
def test_mixup_lambda_is_beta(alpha):
    mix = ga.RandomMix(mixup_alpha=alpha, mode="elem", num_classes=10)
    lam = mix.make_params(torch.empty(4000, 1, 2, 2), generator(40))["lam"]
    assert stats.kstest(lam.numpy(), stats.beta(alpha, alpha).cdf).pvalue > ALPHA
    assert torch.equal(lam.double(), ga.transforms.mixing.sample_beta(4000, alpha, generator(40)).double())


def test_mixup_batch_mode_is_torchvision_roll_with_one_lambda():
    images, labels = torch.rand(8, 3, 6, 6, generator=generator(41)), torch.arange(8) % 5
    mix = ga.MixUp(alpha=1.0, num_classes=5)
    params = mix.make_params(images, generator(42))
    lam = float(params["lam"][0])
    assert (params["lam"] == lam).all()
    out, targets = mix(images, labels, params=params)
    assert torch.allclose(out, lam * images + (1 - lam) * images.roll(1, 0), atol=1e-6)
    one_hot = torch.nn.functional.one_hot(labels, 5).float()
    assert torch.allclose(targets, lam * one_hot + (1 - lam) * one_hot.roll(1, 0), atol=1e-6)


@pytest.mark.parametrize("mode", ["batch", "pair", "elem"])
def test_cutmix_box_area_is_lambda_and_targets_sum_to_one(mode):
    batch, height, width = 64, 20, 30
    images = torch.arange(batch, dtype=torch.float32).view(-1, 1, 1, 1).expand(batch, 3, height, width).contiguous()
    mix = ga.CutMix(alpha=1.0, num_classes=batch, mode=mode, label_smoothing=0.1)
    params = mix.make_params(images, generator(43))
    out, targets = mix(images, torch.arange(batch), params=params)
    from_partner = (out[:, 0] == params["partner"].float().view(-1, 1, 1)) & (out[:, 0] != images[:, 0])
    kept = 1 - from_partner.flatten(1).double().mean(1)
    assert torch.allclose(kept, params["lam"].double(), atol=1e-9)  # area-corrected lambda: the area each image keeps
    assert torch.allclose(targets.sum(1), torch.ones(batch), atol=1e-6)
    if mode == "pair":
        assert torch.equal(params["lam"], params["lam"].flip(0)) and torch.equal(params["partner"], torch.arange(batch).flip(0))


def test_cutmix_uncorrected_box_side_follows_lambda_and_minmax():
    mix = ga.RandomMix(mixup_alpha=0.0, cutmix_alpha=1.0, mode="elem", correct_lam=False, num_classes=2)
    params = mix.make_params(torch.empty(2000, 1, 100, 100), generator(44))
    side = torch.floor(100 * torch.sqrt(1 - params["lam"]))
    assert (params["box"][:, 2] <= 2 * torch.div(side, 2, rounding_mode="floor")).all()  # clipped at the border, never larger
    assert stats.kstest(params["lam"].numpy(), stats.uniform.cdf).pvalue > ALPHA  # Beta(1, 1)
    minmax = ga.CutMix(num_classes=2, mode="elem", cutmix_minmax=(0.2, 0.5)).make_params(
        torch.empty(500, 1, 100, 100), generator(45)
    )
    assert minmax["box"][:, 2:].min() >= 20 and minmax["box"][:, 2:].max() < 50


def test_switch_prob_prob_and_label_smoothing():
    mix = ga.RandomMix(mixup_alpha=1.0, cutmix_alpha=1.0, switch_prob=0.3, prob=0.8, mode="elem", num_classes=4)
    params = mix.make_params(torch.empty(5000, 1, 8, 8), generator(46))
    mixed = params["lam"] < 1
    assert stats.binomtest(int(mixed.sum()), 5000, 0.8).pvalue > ALPHA  # Beta draws are < 1 almost surely
    assert stats.binomtest(int(params["cutmix"].sum()), int(mixed.sum()), 0.3).pvalue > ALPHA
    off = ga.RandomMix(prob=0.0, label_smoothing=0.2, num_classes=4)
    _, targets = off(torch.rand(3, 3, 4, 4), torch.tensor([0, 1, 3]))
    assert torch.allclose(targets, torch.tensor([[0.85, 0.05, 0.05, 0.05], [0.05, 0.85, 0.05, 0.05], [0.05, 0.05, 0.05, 0.85]]))


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32, torch.float16, torch.bfloat16])
def test_mix_seeded_replayable_and_dtype_kept(dtype, device):
    images = images_of(dtype, 16, device=device)
    labels = torch.arange(16, device=device) % 7
    mix = ga.RandomMix(mixup_alpha=0.8, cutmix_alpha=1.0, mode="elem", num_classes=7)
    out, targets = mix(images, labels, generator=generator(47, device))
    again, again_targets = mix(images, labels, params=mix.make_params(images, generator(47, device)))
    assert out.dtype == dtype and targets.dtype == torch.float32 and targets.shape == (16, 7)
    assert torch.equal(out, again) and torch.equal(targets, again_targets)


# ----------------------------------------------------------------------------------------------
# arguments
# ----------------------------------------------------------------------------------------------
BAD = [
    (lambda: ga.TrivialAugmentWide(num_magnitude_bins=1), "num_magnitude_bins"),
    (lambda: ga.TrivialAugmentWide(interpolation="bicubic"), "interpolation"),
    (lambda: ga.TrivialAugmentWide(fill="white"), "fill"),
    (lambda: ga.RandAugment(num_ops=-1), "num_ops"),
    (lambda: ga.RandAugment(magnitude=31), "magnitude"),
    (lambda: ga.RandAugment(num_magnitude_bins=2.5), "num_magnitude_bins"),
    (lambda: ga.AutoAugment(policy=v2.AutoAugmentPolicy.CIFAR10), "policy"),
    (lambda: ga.RandomErasing(p=1.5), "p"),
    (lambda: ga.RandomErasing(scale=(0.5, 1.5)), "scale"),
    (lambda: ga.RandomErasing(ratio=(0.0, 1.0)), "ratio"),
    (lambda: ga.RandomErasing(value="noise"), "value"),
    (lambda: ga.RandomErasing(inplace=1), "inplace"),
    (lambda: ga.RandomMix(mixup_alpha=-1), "mixup_alpha"),
    (lambda: ga.RandomMix(cutmix_alpha=math.inf), "cutmix_alpha"),
    (lambda: ga.RandomMix(mixup_alpha=0, cutmix_alpha=0), "mixup_alpha or cutmix_alpha"),
    (lambda: ga.RandomMix(cutmix_minmax=(0.5, 0.2)), "cutmix_minmax"),
    (lambda: ga.RandomMix(prob=2), "prob"),
    (lambda: ga.RandomMix(switch_prob=-0.1), "switch_prob"),
    (lambda: ga.RandomMix(mode="row"), "mode"),
    (lambda: ga.RandomMix(label_smoothing=1.0), "label_smoothing"),
    (lambda: ga.RandomMix(num_classes=0), "num_classes"),
    (lambda: ga.MixUp(alpha=0), "alpha"),
    (lambda: ga.CutMix(alpha=-2), "alpha"),
]


@pytest.mark.parametrize("make,name", BAD, ids=[name for _, name in BAD])
def test_bad_arguments_raise_value_error_naming_them(make, name):
    with pytest.raises(ValueError, match=name):
        make()


def test_bad_call_arguments():
    with pytest.raises(ValueError, match="fill"):
        ga.TrivialAugmentWide(fill=(1, 2, 3))(torch.zeros(2, 1, 4, 4))
    with pytest.raises(ValueError, match="value"):
        ga.RandomErasing(value=(1, 2))(torch.zeros(2, 3, 4, 4))
    with pytest.raises(ValueError, match="labels"):
        ga.RandomMix(num_classes=3)(torch.zeros(2, 3, 4, 4), torch.zeros(3, dtype=torch.int64))


# ----------------------------------------------------------------------------------------------
# conversion from torchvision
# ----------------------------------------------------------------------------------------------
def test_from_torchvision_converts_policies_and_erasing():
    fill = [10, 20, 30]
    converted = ga.from_torchvision(
        [
            v2.TrivialAugmentWide(num_magnitude_bins=21, fill=fill),
            tv1.TrivialAugmentWide(interpolation=tv1.InterpolationMode.BILINEAR),
            v2.RandAugment(num_ops=3, magnitude=5, num_magnitude_bins=11),
            tv1.RandAugment(),
            v2.AutoAugment(),
            tv1.AutoAugment(tv1.AutoAugmentPolicy.IMAGENET),
            v2.RandomErasing(p=0.25, value="random"),
            tv1.RandomErasing(p=0.4, scale=(0.1, 0.2), ratio=(0.5, 1.5), value=(1, 2, 3)),
        ]
    ).transforms
    assert [type(t).__name__ for t in converted] == ["TrivialAugmentWide"] * 2 + ["RandAugment"] * 2 + ["AutoAugment"] * 2 + [
        "RandomErasing"
    ] * 2
    assert converted[0].num_magnitude_bins == 21 and converted[0].fill == (10.0, 20.0, 30.0)
    assert converted[1].interpolation == "bilinear"
    assert (converted[2].num_ops, converted[2].magnitude, converted[2].num_magnitude_bins) == (3, 5, 11)
    assert converted[6].p == 0.25 and converted[6].value is None
    assert converted[7].scale == (0.1, 0.2) and converted[7].ratio == (0.5, 1.5) and converted[7].value == (1.0, 2.0, 3.0)


@pytest.mark.parametrize(
    "transform,name",
    [
        (v2.AugMix(), "AugMix"),
        (tv1.AugMix(), "AugMix"),
        (v2.AutoAugment(v2.AutoAugmentPolicy.CIFAR10), "CIFAR10"),
        (tv1.AutoAugment(tv1.AutoAugmentPolicy.SVHN), "SVHN"),
        (v2.RandAugment(interpolation=v2.InterpolationMode.BICUBIC), "BICUBIC"),
        (type("MyTrivialAugment", (v2.TrivialAugmentWide,), {})(), "MyTrivialAugment"),
    ],
)
def test_from_torchvision_refuses_other_policies_naming_them(transform, name):
    with pytest.raises(ValueError, match=name):
        ga.from_torchvision(transform)
