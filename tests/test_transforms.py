"""Transforms: per-sample draws, probabilities, ranges, determinism, replay, lists, arguments."""

from __future__ import annotations

import math

import pytest
import torch
from scipy import stats
from torchvision import transforms as tv1

import gpuaug as ga
from gpuaug import functional as F
from gpuaug.fusion.plan import Stage
from gpuaug.loader import regions as regions_module

SEED_PIPELINE = [
    ga.RandomResizedCrop(200, scale=(0.1, 1), ratio=(0.5, 2)),
    ga.RandomHorizontalFlip(),
    ga.ColorJitter(brightness=0.5, contrast=0.5, saturation=0.5, hue=0.5),
]
FINETUNE_TRAIN = [ga.RandomResizedCrop(224), ga.RandomHorizontalFlip(), ga.Normalize(ga.IMAGENET_MEAN, ga.IMAGENET_STD)]


def generator(seed: int, device="cpu") -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


# ----------------------------------------------------------------------------------------------
# probabilities: binomial tests
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("p", [0.5, 0.3, 0.0, 1.0])
@pytest.mark.parametrize("cls,axis", [(ga.RandomHorizontalFlip, -1), (ga.RandomVerticalFlip, -2)])
def test_flip_probability_binomial(cls, axis, p, device):
    count = 4000
    images = (
        torch.arange(2, dtype=torch.float32, device=device).view(1, 1, 2, 1)
        if axis == -2
        else torch.arange(2, dtype=torch.float32, device=device).view(1, 1, 1, 2)
    )
    out = cls(p)(images.expand(count, 1, *images.shape[-2:]).contiguous(), generator=generator(1, device))
    flipped = int((out.flatten(1)[:, 0] == 1).sum())
    if p in (0.0, 1.0):
        assert flipped == int(p * count)
    else:
        assert stats.binomtest(flipped, count, p).pvalue > 1e-4


@pytest.mark.parametrize("p", [0.1, 0.6])
def test_grayscale_probability_binomial(p):
    count = 4000
    images = torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1).expand(count, 3, 1, 1).contiguous()
    out = ga.RandomGrayscale(p)(images, generator=generator(2))
    gray = int((out[:, 1, 0, 0] > 0).sum())
    assert stats.binomtest(gray, count, p).pvalue > 1e-4


def test_flip_params_are_per_image_and_replayable(photo_batch):
    flip = ga.RandomHorizontalFlip()
    params = flip.make_params(photo_batch, generator(5))
    assert params["flip"].shape == (12,) and params["flip"].dtype == torch.bool
    assert 0 < int(params["flip"].sum()) < 12
    out = flip(photo_batch, params=params)
    for image, result, flag in zip(photo_batch, out, params["flip"].tolist()):
        assert torch.equal(result, image.flip(-1) if flag else image)


# ----------------------------------------------------------------------------------------------
# RandomResizedCrop sampling
# ----------------------------------------------------------------------------------------------
def test_random_resized_crop_boxes_inside_and_in_range(device):
    count, height, width = 3000, 300, 400
    crop = ga.RandomResizedCrop(64, scale=(0.1, 0.6), ratio=(0.5, 2.0))
    images = [torch.zeros(3, height, width, dtype=torch.uint8, device=device)] * count
    boxes = crop.make_params(images, generator(3, device))["boxes"].cpu().double()
    top, left, box_h, box_w = boxes.unbind(1)
    assert (top >= 0).all() and (left >= 0).all()
    assert (top + box_h <= height).all() and (left + box_w <= width).all()
    assert (box_h > 0).all() and (box_w > 0).all()
    # area and aspect within the ranges, up to the rounding of width and height to integers
    area = box_h * box_w / (height * width)
    rounding = (box_h + box_w + 1) / (height * width)
    assert (area >= 0.1 - rounding).all() and (area <= 0.6 + rounding).all()
    aspect = box_w / box_h
    assert (aspect >= 0.5 * (1 - 1 / box_w) * (1 - 1 / box_h)).all()
    assert (aspect <= 2.0 * (1 + 1 / box_w) * (1 + 1 / box_h)).all()
    # offsets are uniform over the free room
    relative = top / (height - box_h + 1)
    assert stats.kstest(relative.numpy(), "uniform").pvalue > 1e-4


def test_random_resized_crop_distribution_matches_torchvision():
    """Same sampler as torchvision's get_params: two-sample KS tests on area, aspect and offsets."""
    count, height, width = 3000, 200, 350
    scale, ratio = (0.08, 1.0), (3 / 4, 4 / 3)
    ours = (
        ga.RandomResizedCrop(32, scale, ratio)
        .make_params([torch.zeros(3, height, width)] * count, generator(4))["boxes"]
        .double()
    )
    torch.manual_seed(4)
    theirs = torch.tensor(
        [tv1.RandomResizedCrop.get_params(torch.zeros(3, height, width), list(scale), list(ratio)) for _ in range(count)],
        dtype=torch.float64,
    )
    for column in range(4):
        assert stats.ks_2samp(ours[:, column].numpy(), theirs[:, column].numpy()).pvalue > 1e-4, column
    assert stats.ks_2samp((ours[:, 2] * ours[:, 3]).numpy(), (theirs[:, 2] * theirs[:, 3]).numpy()).pvalue > 1e-4


def test_random_resized_crop_falls_back_to_centre_crop():
    # an area of 2-3x the image can never fit: torchvision's fallback, centre crop clipped to ratio
    crop = ga.RandomResizedCrop(16, scale=(2.0, 3.0), ratio=(0.75, 4 / 3))
    wide = crop.make_params([torch.zeros(3, 100, 400)], generator(0))["boxes"][0].tolist()
    assert wide == [0, (400 - 133) // 2, 100, 133]
    tall = crop.make_params([torch.zeros(3, 400, 90)], generator(0))["boxes"][0].tolist()
    assert tall == [(400 - 120) // 2, 0, 120, 90]
    square = crop.make_params([torch.zeros(3, 100, 110)], generator(0))["boxes"][0].tolist()
    assert square == [0, 0, 100, 110]


def test_identical_images_get_different_outputs(photo_batch):
    same = photo_batch[:1].expand(16, -1, -1, -1).contiguous()
    for transform in (ga.Compose(SEED_PIPELINE), ga.RandomResizedCrop(48), ga.ColorJitter(0.5, 0.5, 0.5, 0.2)):
        out = transform(same, generator=generator(6))
        distinct = {hash(image.cpu().numpy().tobytes()) for image in out}
        assert len(distinct) >= 14, type(transform).__name__


# ----------------------------------------------------------------------------------------------
# ColorJitter sampling
# ----------------------------------------------------------------------------------------------
def test_color_jitter_factor_ranges_uniform():
    jitter = ga.ColorJitter(brightness=0.5, contrast=(0.2, 0.9), saturation=1.5, hue=0.3)
    params = jitter.make_params(torch.zeros(5000, 3, 1, 1), generator(7))
    for name, (low, high) in {
        "brightness": (0.5, 1.5),
        "contrast": (0.2, 0.9),
        "saturation": (0.0, 2.5),
        "hue": (-0.3, 0.3),
    }.items():
        values = params[name].double()
        assert values.min() >= low and values.max() <= high
        assert stats.kstest(values.numpy(), "uniform", args=(low, high - low)).pvalue > 1e-4, name


def test_color_jitter_draws_a_uniform_order_per_image():
    order = ga.ColorJitter(0.1, 0.1, 0.1, 0.1).make_params(torch.zeros(4800, 3, 1, 1), generator(8))["order"]
    assert torch.equal(order.sort(dim=1).values, torch.arange(4).expand(4800, 4))
    counts = torch.unique(order, dim=0, return_counts=True)[1]
    assert len(counts) == 24  # all permutations occur
    assert stats.chisquare(counts.numpy()).pvalue > 1e-4


def test_color_jitter_disabled_ops_are_not_sampled():
    params = ga.ColorJitter(brightness=0.4).make_params(torch.zeros(2, 3, 1, 1), generator(0))
    assert set(params) == {"order", "brightness"}
    images = torch.rand(2, 3, 4, 4)
    assert torch.equal(ga.ColorJitter()(images, generator=generator(0)), images)  # nothing enabled: unchanged


def test_color_jitter_yiq_mode_is_affine_and_marked():
    jitter = ga.ColorJitter(0.2, 0.2, 0.2, 0.1, hue_mode="yiq")
    assert jitter.fusible and not ga.ColorJitter(hue=0.1).fusible
    assert "hue_mode='yiq'" in repr(jitter)
    images = torch.rand(4, 3, 8, 8)
    out = jitter(images, generator=generator(0))
    assert out.dtype == images.dtype and out.shape == images.shape and not torch.equal(out, images)
    # affine: it joins the fused colour pass, which gives what the ops give one by one
    steps = [jitter, ga.Normalize(ga.IMAGENET_MEAN, ga.IMAGENET_STD)]
    fused, exact = ga.Compose(steps), ga.Compose(steps, fuse=False)
    assert fused.plan.stages == (Stage("color", (0, 1)),)
    params = fused.make_params(images, generator(1))
    torch.testing.assert_close(fused(images, params=params), exact(images, params=params), atol=1e-5, rtol=0)


# ----------------------------------------------------------------------------------------------
# Compose: determinism, replay, fusion, lists, dtype
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fuse", [True, False])
def test_same_seed_same_bits_other_seed_differs(photo_list, device, fuse):
    images = [image.to(device) for image in photo_list]
    augment = ga.Compose(SEED_PIPELINE + [ga.Normalize(ga.IMAGENET_MEAN, ga.IMAGENET_STD)], fuse=fuse)
    first = augment(images, generator=generator(11, device))
    again = augment(images, generator=generator(11, device))
    other = augment(images, generator=generator(12, device))
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_replay_through_params(photo_list):
    augment = ga.Compose(SEED_PIPELINE)
    params = augment.make_params(photo_list, generator(13))
    assert all(value.shape[0] == 12 for value in params.values())
    assert set(params) == {"0.boxes", "1.flip", "2.order", "2.brightness", "2.contrast", "2.saturation", "2.hue"}
    assert torch.equal(augment(photo_list, params=params), augment(photo_list, params=params))
    assert torch.equal(augment(photo_list, params=params), augment(photo_list, generator=generator(13)))


def test_fusion_plan_covers_the_hot_paths():
    train = ga.Compose(
        [
            ga.RandomHorizontalFlip(),
            ga.RandomResizedCrop(224),
            ga.RandomVerticalFlip(),
            ga.ColorJitter(0.4, 0.4, 0.4),
            ga.RandomGrayscale(),
            ga.ToDtype(torch.float32),
            ga.Normalize(ga.IMAGENET_MEAN, ga.IMAGENET_STD),
        ]
    )
    assert train.plan.stages == (Stage("resample", (0, 1, 2)), Stage("color", (3, 4, 5, 6)))
    hsv = ga.Compose([ga.ColorJitter(0.4, 0.4, 0.4, 0.1), ga.Normalize(ga.IMAGENET_MEAN, ga.IMAGENET_STD)])
    assert hsv.plan.stages == (Stage("single", (0,)), Stage("color", (1,)))
    unfused = ga.Compose(train.transforms, fuse=False)
    assert [stage.kind for stage in unfused.plan.stages] == ["single"] * 7 and unfused.plan.prefix == 0


def test_fused_crop_and_flips_equal_op_by_op(photo_list):
    """Flips before the crop (box mirrored) and after it (inside the resampling) are exact."""
    transforms = [ga.RandomHorizontalFlip(), ga.RandomVerticalFlip(), ga.RandomResizedCrop(40), ga.RandomHorizontalFlip()]
    fused, exact = ga.Compose(transforms), ga.Compose(transforms, fuse=False)
    batch = torch.stack([F.resize(image.unsqueeze(0), (90, 120))[0] for image in photo_list])
    for images in (batch, photo_list):
        params = fused.make_params(images, generator(14))
        assert torch.equal(fused(images, params=params), exact(images, params=params))


def test_fused_colour_close_to_exact(photo_batch):
    transforms = [
        ga.RandomHorizontalFlip(),
        ga.ColorJitter(0.4, 0.4, 0.4),
        ga.RandomGrayscale(0.3),
        ga.ToDtype(torch.float32),
        ga.Normalize(ga.IMAGENET_MEAN, ga.IMAGENET_STD),
    ]
    fused, exact = ga.Compose(transforms), ga.Compose(transforms, fuse=False)
    source = photo_batch.float() / 255
    params = fused.make_params(source, generator(15))
    error = (fused(source, params=params) - exact(source, params=params)) * torch.tensor(ga.IMAGENET_STD).view(1, 3, 1, 1)
    assert (error.abs() * 255).mean() < 0.5
    # without the jitter the fused pass (flip + gray + scale + normalize) is exact up to float
    # rounding on float input, and within torchvision's uint8 truncation of the gray (1 level)
    plain = ga.Compose([transforms[0], transforms[2], transforms[3], transforms[4]])
    exact = ga.Compose(plain.transforms, fuse=False)
    params = plain.make_params(photo_batch, generator(16))
    torch.testing.assert_close(plain(source, params=params), exact(source, params=params), atol=2e-5, rtol=0)
    error = (plain(photo_batch, params=params) - exact(photo_batch, params=params)) * torch.tensor(ga.IMAGENET_STD).view(
        1, 3, 1, 1
    )
    assert (error.abs() * 255).max() < 1.001


def test_ragged_list_equals_per_image(photo_list):
    """Batched over a ragged list == each image alone with its own slice of the params."""
    augment = ga.Compose(FINETUNE_TRAIN)
    params = augment.make_params(photo_list, generator(17))
    out = augment(photo_list, params=params)
    assert out.shape == (12, 3, 224, 224) and out.dtype == torch.float32
    for index, image in enumerate(photo_list):
        own = {key: value[index : index + 1] for key, value in params.items()}
        torch.testing.assert_close(out[index : index + 1], augment([image], params=own), atol=1e-6, rtol=0)


def test_eval_pipeline_on_ragged_list_matches_torchvision(photo_list):
    from torchvision.transforms import v2

    augment = ga.Compose(
        [ga.Resize(72), ga.CenterCrop(64), ga.ToDtype(torch.float32), ga.Normalize(ga.IMAGENET_MEAN, ga.IMAGENET_STD)]
    )
    reference = v2.Compose(
        [v2.Resize(72), v2.CenterCrop(64), v2.ToDtype(torch.float32, scale=True), v2.Normalize(ga.IMAGENET_MEAN, ga.IMAGENET_STD)]
    )
    out = augment(photo_list)
    torch.testing.assert_close(out, torch.stack([reference(image) for image in photo_list]), atol=1e-5, rtol=0)


def test_dtypes_and_single_image(photo_batch):
    assert ga.Compose([ga.RandomResizedCrop(32), ga.RandomHorizontalFlip()])(photo_batch).dtype == torch.uint8
    assert ga.ColorJitter(0.3, 0.3, 0.3)(photo_batch).dtype == torch.uint8
    assert ga.Compose([ga.ColorJitter(0.3), ga.ToDtype(torch.bfloat16)])(photo_batch).dtype == torch.bfloat16
    assert ga.Normalize(ga.IMAGENET_MEAN, ga.IMAGENET_STD)(photo_batch).dtype == torch.float32
    single = ga.RandomResizedCrop(20)(photo_batch[0])
    assert single.shape == (3, 20, 20)


ALL = [
    ga.RandomHorizontalFlip(),
    ga.RandomVerticalFlip(),
    ga.RandomResizedCrop(30),
    ga.Resize(40),
    ga.CenterCrop(30),
    ga.ColorJitter(0.5, 0.5, 0.5, 0.5),
    ga.RandomGrayscale(0.5),
    ga.ToDtype(torch.float32),
    ga.Normalize(ga.IMAGENET_MEAN, ga.IMAGENET_STD),
    ga.Compose(SEED_PIPELINE),
]


@pytest.mark.parametrize("transform", ALL, ids=lambda t: type(t).__name__)
def test_no_in_place_and_device_kept(photo_batch, transform, device):
    images = photo_batch.to(device)
    before = images.clone()
    out = transform(images, generator=generator(18, device))
    assert torch.equal(images, before)
    assert out.device.type == device.type


def test_cpu_generator_drives_any_device(photo_batch, device):
    augment = ga.Compose(SEED_PIPELINE)
    first = augment(photo_batch.to(device), generator=generator(19))
    assert torch.equal(first, augment(photo_batch.to(device), generator=generator(19)))


# ----------------------------------------------------------------------------------------------
# bad arguments and inputs
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "build,argument",
    [
        (lambda: ga.RandomHorizontalFlip(p=1.5), "p"),
        (lambda: ga.RandomVerticalFlip(p=-0.1), "p"),
        (lambda: ga.RandomGrayscale(p="half"), "p"),
        (lambda: ga.RandomResizedCrop(0), "size"),
        (lambda: ga.RandomResizedCrop((224, 224, 3)), "size"),
        (lambda: ga.RandomResizedCrop(224, scale=(0.9, 0.1)), "scale"),
        (lambda: ga.RandomResizedCrop(224, scale=(-0.1, 1)), "scale"),
        (lambda: ga.RandomResizedCrop(224, scale=0.5), "scale"),
        (lambda: ga.RandomResizedCrop(224, ratio=(0, 2)), "ratio"),
        (lambda: ga.RandomResizedCrop(224, ratio=(2, 1)), "ratio"),
        (lambda: ga.Resize(-3), "size"),
        (lambda: ga.CenterCrop("big"), "size"),
        (lambda: ga.ColorJitter(brightness=-0.5), "brightness"),
        (lambda: ga.ColorJitter(contrast=(1.5, 0.5)), "contrast"),
        (lambda: ga.ColorJitter(saturation=(-1, 2)), "saturation"),
        (lambda: ga.ColorJitter(hue=0.6), "hue"),
        (lambda: ga.ColorJitter(hue=(-0.7, 0.1)), "hue"),
        (lambda: ga.ColorJitter(hue=0.1, hue_mode="lab"), "hue_mode"),
        (lambda: ga.Normalize((0.5, 0.5), (0.5, 0.5, 0.5)), "mean and std"),
        (lambda: ga.Normalize((0.5,), (0.0,)), "std"),
        (lambda: ga.Normalize("abc", (1,)), "mean"),
        (lambda: ga.ToDtype(torch.int32), "dtype"),
        (lambda: ga.Compose([lambda x: x]), "gpuaug transforms"),
    ],
)
def test_bad_arguments_raise_naming_the_argument(build, argument):
    with pytest.raises(ValueError, match=argument):
        build()


def test_wrong_inputs_say_what_was_expected():
    with pytest.raises(TypeError, match="uint8 or floating"):
        ga.RandomHorizontalFlip()(torch.zeros(2, 3, 4, 4, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        ga.RandomHorizontalFlip()(torch.zeros(4, 4))
    with pytest.raises(ValueError, match="3 channels"):
        ga.ColorJitter(0.5)(torch.zeros(2, 1, 4, 4))
    with pytest.raises(TypeError, match="first geometric op"):
        ga.ColorJitter(0.5)([torch.zeros(3, 4, 4), torch.zeros(3, 5, 5)])
    ragged = ga.Resize(8)([torch.zeros(3, 10, 20), torch.zeros(3, 20, 10)])  # a list back: sizes differ
    assert isinstance(ragged, list) and [tuple(image.shape) for image in ragged] == [(3, 8, 16), (3, 16, 8)]
    with pytest.raises(TypeError, match="first geometric op"):
        ga.Compose([ga.ColorJitter(0.2), ga.RandomResizedCrop(8)])([torch.zeros(3, 10, 20), torch.zeros(3, 20, 10)])


def test_repr_round_trips_through_the_parser():
    from gpuaug.tools.parse import parse_transform

    for transform in ALL[:-1]:
        text = repr(transform).replace("torch.", "")
        assert repr(parse_transform(text)) == repr(transform)
    assert math.isclose(ga.RandomResizedCrop(8).ratio[1], 4 / 3)


# ----------------------------------------------------------------------------------------------
# PackedBatch: one buffer, per-image layout, the same augmentation as the list it packs
# ----------------------------------------------------------------------------------------------
def test_packed_batch_keeps_each_layout_and_round_trips(photo_list):
    import pickle

    from gpuaug.io.packed import PackedBatch

    images = [photo_list[0], photo_list[1].permute(1, 2, 0).contiguous().permute(2, 0, 1), photo_list[2][:, 1:, 2:]]
    packed = PackedBatch.from_images(images)
    assert packed.data.ndim == 1 and packed.data.numel() == sum(image.numel() for image in images)
    height, width = images[1].shape[1:]
    assert packed.strides[1].tolist() == [1, 3 * width, 3] and packed.strides[0].tolist() == [
        images[0][0].numel(),
        images[0].shape[2],
        1,
    ]
    assert len(packed) == 3 and packed.sizes == tuple(tuple(image.shape[1:]) for image in images)
    for index, image in enumerate(images):
        assert torch.equal(packed.image(index), image) and torch.equal(packed.unpack()[index], image)
    again = pickle.loads(pickle.dumps(packed))
    assert again.sizes == packed.sizes and all(torch.equal(a, b) for a, b in zip(again.unpack(), images))
    empty = PackedBatch.empty([(4, 5), (2, 3)], "cpu", layout="chw")
    assert empty.data.numel() == 3 * (20 + 6) and empty.image(1).shape == (3, 2, 3) and empty.image(1).is_contiguous()
    assert PackedBatch.empty([(4, 5)], "cpu").image(0).permute(1, 2, 0).is_contiguous()  # hwc by default


def test_packed_batch_refuses_bad_descriptions():
    from gpuaug.io.packed import PackedBatch

    with pytest.raises(ValueError, match="uint8"):
        PackedBatch.from_images([torch.zeros(3, 4, 4)])
    with pytest.raises(ValueError, match=r"\[3, H, W\]"):
        PackedBatch.from_images([torch.zeros(1, 4, 4, dtype=torch.uint8)])
    with pytest.raises(ValueError, match="layout"):
        PackedBatch.empty([(2, 2)], "cpu", layout="nhwc")
    good = PackedBatch.empty([(4, 5)], "cpu")
    with pytest.raises(ValueError, match="outside data"):  # the kernels would read past the buffer
        PackedBatch(good.data[:-1], good.offsets, good.heights, good.widths, good.strides, good.sizes)
    with pytest.raises(ValueError, match="sizes"):
        PackedBatch(good.data, good.offsets, good.heights, good.widths, good.strides, ((5, 4),))


def test_compose_on_a_packed_batch_equals_the_list(photo_list):
    from gpuaug.io.packed import PackedBatch

    images = [
        image if index % 2 else image.permute(1, 2, 0).contiguous().permute(2, 0, 1) for index, image in enumerate(photo_list)
    ]
    packed = PackedBatch.from_images(images)
    augment = ga.Compose(
        [ga.RandomResizedCrop(48), ga.RandomHorizontalFlip(), ga.ColorJitter(0.4, 0.4, 0.4), ga.ToDtype(torch.float32)]
    )
    params = augment.make_params(packed, generator(30))
    listed = augment.make_params(images, generator(30))
    assert params.keys() == listed.keys() and all(torch.equal(params[key], listed[key]) for key in params)
    assert torch.equal(augment(packed, params=params), augment(images, params=params))
    assert torch.equal(augment(packed, generator=generator(30)), augment(images, params=params))


# ----------------------------------------------------------------------------------------------
# Each transform describes its part of the fused pass
# ----------------------------------------------------------------------------------------------
def test_fused_prefix_follows_the_roles():
    def fused(*transforms):
        return ga.Compose(list(transforms)).plan.prefix

    crop, flip, jitter = ga.RandomResizedCrop(8), ga.RandomHorizontalFlip(), ga.ColorJitter(0.4, 0.4, 0.4)
    normalize = ga.Normalize(ga.IMAGENET_MEAN, ga.IMAGENET_STD)
    assert fused(flip, crop, ga.RandomVerticalFlip(), jitter, ga.RandomGrayscale(), ga.ToDtype(torch.float16), normalize) == 7
    assert fused(ga.Resize(10), ga.CenterCrop(8), normalize) == 3
    assert fused(ga.Resize((10, 12)), jitter) == 1  # a jitter without a float tail keeps torchvision's op-by-op path
    assert fused(ga.Resize(10)) == 0  # sizes still differ: no batch to write
    assert fused(ga.ColorJitter(0.4, hue=0.1), normalize) == 0  # HSV hue: its own pass
    assert fused(jitter, normalize) == 2 and fused(flip) == 0
    assert ga.Compose([crop, jitter, normalize]).plan.after_prefix == ()
    assert ga.Compose([crop, jitter, ga.RandomGrayscale()]).plan.after_prefix == (Stage("single", (1,)), Stage("single", (2,)))
    with pytest.raises(ValueError, match="backend"):
        ga.Compose([crop], backend="cuda")


def test_a_new_op_joins_the_fused_pass_by_describing_itself(photo_batch):
    """No planner edit: a transform with a role and a ``contribute`` is fused like the built-in ones."""

    class InvertedGrayscale(ga.Transform):  # a toy op: gray where the mask is *not* set
        fusion = "gray"

        def _make_params(self, info, generator):
            return {"keep": torch.rand(info.batch, generator=generator) < 0.5}

        def apply(self, images, params):
            return F.rgb_to_grayscale(images, ~params["keep"])

        def contribute(self, ops, params):
            ops.gray(~params["keep"])

    transforms = [ga.RandomHorizontalFlip(), InvertedGrayscale(), ga.ToDtype(torch.float32)]
    fused, exact = ga.Compose(transforms), ga.Compose(transforms, fuse=False)
    assert fused.plan.stages == (Stage("color", (0, 1, 2)),) and fused.plan.prefix == 3
    params = fused.make_params(photo_batch, generator(31))
    source = photo_batch.float() / 255
    torch.testing.assert_close(fused(source, params=params), exact(source, params=params), atol=2e-5, rtol=0)


# ----------------------------------------------------------------------------------------------
# Geometry protocol: what the first geometric op reads (the loader decodes only that)
# ----------------------------------------------------------------------------------------------
def _downscale(step, params, row, height, width):
    """How much the first op shrinks the image: a crop's box over its size, a resize's input over its output."""
    if isinstance(step, ga.RandomResizedCrop):
        _, _, box_height, box_width = params["0.boxes"][row].tolist()
        return min(box_height / step.size[0], box_width / step.size[1])
    if isinstance(step, ga.Resize):
        resized_height, resized_width = F.resize_output_size(height, width, step.size)
        return min(height / resized_height, width / resized_width)
    return 1.0


def test_first_geometric_position():
    flip, crop = ga.RandomHorizontalFlip(), ga.RandomResizedCrop(8)
    assert ga.Compose([flip, ga.RandomVerticalFlip(), crop]).plan.first_geometric == 2
    assert ga.Compose([ga.Resize(8), crop]).plan.first_geometric == 0
    assert ga.Compose([ga.CenterCrop(8)]).plan.first_geometric == 0
    assert ga.Compose([ga.ColorJitter(0.2), crop]).plan.first_geometric is None
    assert ga.Compose([flip]).plan.first_geometric is None and ga.Compose([]).plan.first_geometric is None


def test_source_regions_and_reduction_limits_match_the_loaders_rules(photo_list):
    sizes = torch.tensor([tuple(image.shape[1:]) for image in photo_list])
    for transforms in (
        [ga.RandomResizedCrop(32)],
        [ga.Resize(40)],
        [ga.Resize((30, 50))],
        [ga.CenterCrop(90)],
        [ga.ColorJitter(0.1)],
    ):
        compose = ga.Compose(transforms + [ga.ToDtype(torch.float32)])
        params = compose.make_params(photo_list, generator(32))
        limits = regions_module.reduction_limits(compose, params, sizes)
        assert limits.dtype == torch.float64 and limits.shape == (12,)
        assert limits.tolist() == [
            max(1.0, _downscale(transforms[0], params, row, *size)) for row, size in enumerate(sizes.tolist())
        ]
        regions = regions_module.source_regions(compose, params, sizes)
        assert regions.dtype == torch.int64 and regions.shape == (12, 4)
        if isinstance(transforms[0], ga.RandomResizedCrop):
            assert torch.equal(regions, params["0.boxes"])
        elif isinstance(transforms[0], ga.CenterCrop):  # the crop clipped to the image, torchvision's anchor
            for region, image in zip(regions.tolist(), photo_list):
                top, left, height, width = region
                pad_top, pad_left = max(0, (90 - image.shape[1]) // 2), max(0, (90 - image.shape[2]) // 2)
                cropped = F.center_crop(image.unsqueeze(0), (90, 90))[0]
                inside = cropped[:, pad_top : pad_top + height, pad_left : pad_left + width]
                assert torch.equal(image[:, top : top + height, left : left + width], inside)
                assert height == min(90, image.shape[1]) and width == min(90, image.shape[2])
        else:
            assert regions[:, :2].eq(0).all() and torch.equal(regions[:, 2:], sizes)


def test_rebase_onto_a_reduced_decode_scales_the_boxes():
    """A whole image decoded at 1/2: starts floor(x / 2), extents round(x / 2) half to even, clipped, at least 1."""
    compose = ga.Compose([ga.RandomResizedCrop(16), ga.RandomHorizontalFlip()])
    params = {"0.boxes": torch.tensor([[3, 5, 7, 9], [0, 0, 1, 1], [10, 11, 10, 9]]), "1.flip": torch.tensor([True, False, True])}
    full = torch.tensor([[20, 20], [1, 1], [20, 20]])
    decoded = torch.tensor([[10, 10], [1, 1], [10, 10]])
    whole = torch.cat([torch.zeros_like(full), full], 1)
    rebased = regions_module.rebase(compose, params, whole, decoded, full)
    assert rebased["0.boxes"].tolist() == [[1, 2, 4, 4], [0, 0, 1, 1], [5, 5, 5, 4]]
    assert torch.equal(rebased["1.flip"], params["1.flip"])  # only the first geometric op moves
    assert (
        regions_module.rebase(ga.Compose([ga.Resize(16)]), {}, torch.tensor([[0, 0, 5, 5]]), torch.tensor([[2, 2]]), full[:1])
        == {}
    )


@pytest.mark.parametrize("before", [[], [ga.RandomHorizontalFlip()], [ga.RandomHorizontalFlip(), ga.RandomVerticalFlip()]])
def test_region_decode_equals_decode_full_then_crop(photo_list, before):
    """Decoding only source_regions() and rebasing the params gives exactly the full-decode result."""
    compose = ga.Compose([*before, ga.RandomResizedCrop(24), ga.RandomHorizontalFlip(), ga.ToDtype(torch.float32)])
    sizes = torch.tensor([tuple(image.shape[1:]) for image in photo_list])
    params = compose.make_params(photo_list, generator(34))
    regions = regions_module.source_regions(compose, params, sizes)
    crops = [
        image[:, top : top + height, left : left + width]
        for image, (top, left, height, width) in zip(photo_list, regions.tolist())
    ]
    rebased = regions_module.rebase(compose, params, regions, regions[:, 2:], sizes)
    assert torch.equal(compose(crops, params=rebased), compose(photo_list, params=params))


# ----------------------------------------------------------------------------------------------
# Lists that stay ragged, fixed-size resizes, dtypes (issue 12: "Also", #13; issue 9 item 4)
# ----------------------------------------------------------------------------------------------
RAGGED_TAILS = [
    [],
    [ga.Normalize(ga.IMAGENET_MEAN, ga.IMAGENET_STD)],
    [ga.ColorJitter(0.4, 0.4, 0.4)],
    [ga.RandomGrayscale(0.5)],
    [ga.ToDtype(torch.float32), ga.Normalize(ga.IMAGENET_MEAN, ga.IMAGENET_STD)],
]


@pytest.mark.parametrize("tail", RAGGED_TAILS, ids=lambda tail: "+".join(type(t).__name__ for t in tail) or "alone")
@pytest.mark.parametrize("flip_first", [False, True])
def test_shorter_side_resize_on_a_list_gives_a_list(photo_list, tail, flip_first):
    transforms = ([ga.RandomHorizontalFlip()] if flip_first else []) + [ga.Resize(50)] + tail
    compose = ga.Compose(transforms)
    images = photo_list[:4]
    params = compose.make_params(images, generator(35))
    out = compose(images, params=params)
    assert isinstance(out, list) and len(out) == 4
    for row, (image, result) in enumerate(zip(images, out)):
        assert result.shape[1:] == F.resize_output_size(*image.shape[1:], (50,))
        own = {key: value[row : row + 1] for key, value in params.items()}
        torch.testing.assert_close(result, compose(torch.unsqueeze(image, 0), params=own)[0], atol=1e-6, rtol=0)


def test_fixed_size_resize_on_a_list_gives_a_batch(photo_list):
    for transforms in (
        [ga.Resize((64, 64))],
        [ga.Resize((64, 64)), ga.ToDtype(torch.float32)],
        [ga.RandomHorizontalFlip(), ga.Resize((64, 48)), ga.Normalize([0.5], [0.5])],
    ):
        compose = ga.Compose(transforms)
        out = compose(photo_list)
        assert isinstance(out, torch.Tensor) and out.shape[:2] == (12, 3) and out.shape[2:] in ((64, 64), (64, 48))
        # the loader calls apply with its params directly
        assert torch.equal(
            compose.apply(photo_list, compose.make_params(photo_list, generator(36))),
            compose(photo_list, generator=generator(36)),
        )


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("fuse", [True, False])
def test_color_jitter_keeps_half_dtypes(photo_batch, dtype, fuse):
    images = (photo_batch[:4].float() / 255).to(dtype)
    for jitter in (
        ga.ColorJitter(0.4, 0.4, 0.4),
        ga.ColorJitter(0.4, 0.4, 0.4, 0.1),
        ga.ColorJitter(0.4, 0.4, 0.4, 0.1, hue_mode="yiq"),
    ):
        assert jitter(images, generator=generator(37)).dtype == dtype
        for tail in ([], [ga.Normalize(ga.IMAGENET_MEAN, ga.IMAGENET_STD)]):
            out = ga.Compose([jitter, *tail], fuse=fuse)(images, generator=generator(37))
            assert out.dtype == dtype
    exact = ga.ColorJitter(0.4, 0.4, 0.4)(images.float(), generator=generator(38))
    half = ga.ColorJitter(0.4, 0.4, 0.4)(images, generator=generator(38))
    assert (half.float() - exact).abs().max() < 0.02  # the same draws, in the coarser format
