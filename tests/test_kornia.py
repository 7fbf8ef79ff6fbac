"""Kornia's augmentation modules inside gpuaug pipelines (issue 12, "Kornia, as the user asked")."""

from __future__ import annotations

import kornia.augmentation as K
import pytest
import torch
from torch import nn
from torchvision.transforms import v2

import gpuaug as ga
from gpuaug.interop.kornia import KorniaTransform, as_transform, from_kornia, is_kornia


def _modules():
    """Kornia ops of every kind: geometric, erasing, colour, noise (samples inside apply), a container."""
    return [
        K.RandomAffine(degrees=30, translate=(0.1, 0.1), scale=(0.8, 1.2), p=1.0),
        K.RandomErasing(p=1.0),
        K.ColorJiggle(0.3, 0.3, 0.3, 0.1, p=1.0),
        K.RandomPerspective(0.5, p=1.0),
        K.RandomGaussianNoise(std=0.1, p=1.0),
        K.AugmentationSequential(K.RandomAffine(15, p=0.5), K.RandomErasing(p=0.5), K.RandomGaussianBlur((3, 3), (0.1, 2.0))),
    ]


@pytest.fixture
def images(photo_batch):
    return photo_batch[:6, :, :48, :64]


@pytest.mark.parametrize("module", _modules(), ids=lambda m: type(m).__name__)
def test_wrapper_equals_kornia_run_by_itself_with_the_same_seed(module, images):
    wrapper = KorniaTransform(module)
    params = wrapper.make_params(images, torch.Generator().manual_seed(3))
    assert params["seed"].shape == (6,) and params["seed"].dtype == torch.int64
    global_state = torch.get_rng_state()
    out = wrapper(images, params=params)
    assert torch.equal(torch.get_rng_state(), global_state)  # the caller's global RNG is neither consumed nor moved
    torch.manual_seed(int(params["seed"][0]))
    expected = module(images.float() / 255)
    assert out.dtype == torch.float32 and torch.equal(out, expected)
    assert not torch.equal(out, images.float() / 255)  # the op did something
    assert torch.equal(wrapper(images, params=params), out)  # replay


def test_wrapper_equals_kornia_given_kornias_own_params(images):
    module = K.RandomAffine(degrees=30, p=1.0)
    wrapper = KorniaTransform(module)
    out = wrapper(images, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out, module(images.float() / 255, params=module._params))


def test_seeded_generator_repeats_and_different_seeds_differ(images):
    wrapper = KorniaTransform(K.RandomAffine(degrees=30, p=1.0))
    first = wrapper(images, generator=torch.Generator().manual_seed(1))
    torch.manual_seed(123)  # the global RNG's state does not matter
    assert torch.equal(wrapper(images, generator=torch.Generator().manual_seed(1)), first)
    assert not torch.equal(wrapper(images, generator=torch.Generator().manual_seed(2)), first)


def test_rows_applied_in_groups_get_their_own_draws(images):
    # A loader applies its batch in groups of rows with sliced params: each group must not repeat another's draw.
    same = images[:1].expand(6, -1, -1, -1).contiguous()
    wrapper = KorniaTransform(K.RandomAffine(degrees=45, p=1.0))
    params = wrapper.make_params(same, torch.Generator().manual_seed(0))
    halves = [wrapper.apply(same[rows], {"seed": params["seed"][rows]}) for rows in (slice(0, 3), slice(3, 6))]
    assert not torch.equal(halves[0], halves[1])
    again = wrapper.apply(same[3:], {"seed": params["seed"][3:]})
    assert torch.equal(again, halves[1])


def test_dtype_contract(images):
    wrapper = KorniaTransform(K.RandomAffine(degrees=30, p=1.0))
    generator_seed = 4
    from_uint8 = wrapper(images, generator=torch.Generator().manual_seed(generator_seed))
    assert from_uint8.dtype == torch.float32 and from_uint8.min() >= 0 and from_uint8.max() <= 1
    from_float = wrapper(images.float() / 255, generator=torch.Generator().manual_seed(generator_seed))
    assert torch.equal(from_float, from_uint8)  # uint8 is x / 255 first
    half = wrapper((images.float() / 255).half(), generator=torch.Generator().manual_seed(generator_seed))
    assert half.dtype == torch.float16 and (half.float() - from_uint8).abs().max() < 4e-3
    bfloat = wrapper((images.float() / 255).bfloat16(), generator=torch.Generator().manual_seed(generator_seed))
    assert bfloat.dtype == torch.bfloat16


def test_compose_with_kornia_after_random_resized_crop_on_a_ragged_list(photo_list):
    augment = ga.Compose([ga.RandomResizedCrop(32), K.RandomAffine(15, p=1.0), K.RandomErasing(p=1.0)])
    assert [type(t).__name__ for t in augment.transforms] == ["RandomResizedCrop", "KorniaTransform", "KorniaTransform"]
    generator = torch.Generator().manual_seed(0)
    params = augment.make_params(photo_list, generator)
    out = augment(photo_list, params=params)
    assert out.shape == (12, 3, 32, 32) and out.dtype == torch.float32
    # equal to gpuaug's crop followed by Kornia run by itself, each seeded from the params
    cropped = ga.RandomResizedCrop(32).apply(photo_list, {"boxes": params["0.boxes"]})
    torch.manual_seed(int(params["1.seed"][0]))
    expected = augment.transforms[1].module(cropped.float() / 255)
    torch.manual_seed(int(params["2.seed"][0]))
    expected = augment.transforms[2].module(expected)
    assert torch.equal(out, expected)
    # a seeded generator repeats, another seed differs
    assert torch.equal(augment(photo_list, generator=torch.Generator().manual_seed(0)), out)
    assert not torch.equal(augment(photo_list, generator=torch.Generator().manual_seed(1)), out)


def test_compose_normalizes_kornia_output_and_handles_an_empty_batch(photo_list):
    augment = ga.Compose([ga.RandomResizedCrop(16), K.RandomAffine(10), ga.Normalize([0.5], [0.5])])
    out = augment(photo_list, generator=torch.Generator().manual_seed(0))
    assert out.dtype == torch.float32 and out.min() >= -1 and out.max() <= 1 and out.min() < -0.5
    empty = augment(torch.zeros(0, 3, 40, 40, dtype=torch.uint8))
    assert empty.shape == (0, 3, 16, 16) and empty.dtype == torch.float32


def test_output_sizes_follow_kornia_crops_and_resizes():
    info = ga.transforms.BatchInfo(2, torch.device("cpu"), ((100, 150), (100, 150)))
    cases = [
        (K.RandomAffine(10), (100, 150)),
        (K.CenterCrop(30), (30, 30)),
        (K.RandomCrop((20, 40)), (20, 40)),
        (K.Resize(50), (50, 75)),
        (K.Resize((20, 10)), (20, 10)),
        (K.LongestMaxSize(60), (40, 60)),
        (K.PadTo((120, 160)), (120, 160)),
        (K.AugmentationSequential(K.Resize(50), K.CenterCrop(40)), (40, 40)),
    ]
    for module, size in cases:
        assert KorniaTransform(module).output_sizes(info).sizes == (size, size), module
        out = module(torch.rand(2, 3, 100, 150))
        assert tuple(out.shape[-2:]) == size, module  # what Kornia actually gives


def test_from_kornia_maps_the_first_op(photo_list):
    pipeline = K.AugmentationSequential(
        K.RandomResizedCrop((32, 24), scale=(0.2, 1.0), ratio=(0.5, 2.0)), K.RandomAffine(15), K.RandomErasing()
    )
    augment = from_kornia(pipeline)
    crop, affine, erasing = augment.transforms
    assert isinstance(crop, ga.RandomResizedCrop)
    assert crop.size == (32, 24) and crop.scale == (0.2, 1.0) and crop.ratio == (0.5, 2.0)
    assert isinstance(affine, KorniaTransform) and affine.module is pipeline[1]
    assert isinstance(erasing, KorniaTransform) and erasing.module is pipeline[2]
    out = augment(photo_list, generator=torch.Generator().manual_seed(0))
    assert out.shape == (12, 3, 32, 24) and out.dtype == torch.float32
    assert torch.equal(augment(photo_list, generator=torch.Generator().manual_seed(0)), out)


def test_from_kornia_maps_resize_and_center_crop(photo_list):
    augment = from_kornia([K.Resize(40, antialias=True), K.CenterCrop(32), K.RandomHorizontalFlip()])
    resize, crop, flip = augment.transforms
    assert isinstance(resize, ga.Resize) and resize.size == (40,) and resize.antialias
    assert isinstance(crop, ga.CenterCrop) and crop.size == (32, 32)
    assert isinstance(flip, KorniaTransform)
    assert augment(photo_list).shape == (12, 3, 32, 32)
    single = from_kornia(K.CenterCrop((20, 30)))
    assert [type(t).__name__ for t in single.transforms] == ["CenterCrop"] and single.transforms[0].size == (20, 30)
    mixed = from_kornia(nn.Sequential(K.SmallestMaxSize(36), K.CenterCrop(32), K.ColorJiggle(0.2)))
    assert [type(t).__name__ for t in mixed.transforms] == ["Resize", "CenterCrop", "KorniaTransform"]
    assert from_kornia([ga.RandomResizedCrop(8), K.RandomAffine(5)]).transforms[0].size == (8, 8)


@pytest.mark.parametrize(
    "pipeline, fragment",
    [
        (K.AugmentationSequential(K.RandomAffine(10), K.RandomResizedCrop((8, 8))), "first op must be a crop or resize"),
        ([K.RandomCrop((8, 8))], "got RandomCrop"),
        (K.RandomResizedCrop((8, 8), p=0.5), "p=1.0"),
        (K.RandomResizedCrop((8, 8), same_on_batch=True), "same_on_batch"),
        (K.RandomResizedCrop((8, 8), resample="nearest"), "bilinear"),
        (K.LongestMaxSize(32), "side='long'"),
        (K.AugmentationSequential(K.RandomResizedCrop((8, 8)), K.RandomAffine(10), random_apply=1), "random_apply"),
        (v2.RandomResizedCrop(8), "expects a Kornia module"),
    ],
)
def test_from_kornia_refuses_what_it_cannot_map(pipeline, fragment):
    with pytest.raises(ValueError, match=fragment):
        from_kornia(pipeline)


def test_is_kornia_and_as_transform():
    assert is_kornia(K.RandomAffine(10)) and is_kornia(K.AugmentationSequential(K.RandomErasing()))
    assert is_kornia([K.RandomResizedCrop((8, 8)), K.RandomErasing()]) and is_kornia((ga.Resize(8), K.RandomErasing()))
    assert is_kornia(nn.Sequential(K.Resize(8), K.RandomErasing()))
    others = (None, ga.RandomResizedCrop(8), [ga.Resize(8)], v2.RandomResizedCrop(8), [], [K.RandomErasing(), "x"], nn.ReLU())
    for other in others:
        assert not is_kornia(other), other
    flip = ga.RandomHorizontalFlip()
    assert as_transform(flip) is flip and isinstance(as_transform(K.RandomErasing()), KorniaTransform)
    assert as_transform("x") == "x"  # left for Compose to refuse by name
    with pytest.raises(ValueError, match="gpuaug transforms; got str"):
        ga.Compose([ga.Resize(8), "x"])


@pytest.mark.parametrize("module", [*_modules(), nn.Identity()], ids=lambda m: type(m).__name__)
def test_wrapper_never_writes_into_or_returns_its_input(module, images):
    floats = images.float() / 255
    before = floats.clone()
    out = KorniaTransform(module)(floats, generator=torch.Generator().manual_seed(0))
    assert torch.equal(floats, before)
    assert out.untyped_storage().data_ptr() != floats.untyped_storage().data_ptr()


def test_wrapper_refuses_modules_that_change_the_batch(images):
    class Halve(nn.Module):
        def forward(self, x):
            return x[: x.shape[0] // 2]

    with pytest.raises(ValueError, match="returned"):
        KorniaTransform(Halve())(images)
    with pytest.raises(ValueError, match="kornia.augmentation module"):
        KorniaTransform(ga.Resize(8))


@pytest.mark.cuda
def test_on_cuda_equals_kornia_and_leaves_the_cuda_rng_alone(images):
    device = torch.device("cuda")
    cuda_images = images.to(device)
    module = K.AugmentationSequential(K.RandomAffine(20, p=1.0), K.RandomGaussianNoise(std=0.1, p=1.0))
    wrapper = KorniaTransform(module)
    params = wrapper.make_params(cuda_images, torch.Generator().manual_seed(0))
    cuda_state = torch.cuda.get_rng_state()
    out = wrapper(cuda_images, params=params)
    assert out.device.type == "cuda" and torch.equal(torch.cuda.get_rng_state(), cuda_state)
    torch.manual_seed(int(params["seed"][0]))
    assert torch.equal(out, module(cuda_images.float() / 255))
    augment = ga.Compose([ga.RandomResizedCrop(32), K.RandomAffine(15), K.RandomErasing()])
    first = augment(cuda_images, generator=torch.Generator().manual_seed(1))
    assert torch.equal(augment(cuda_images, generator=torch.Generator().manual_seed(1)), first)
