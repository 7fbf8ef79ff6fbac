"""Argument and input validation (issue 12, rows #12 and #14): non-finite arguments, unbounded sizes,
empty images and empty batches."""

from __future__ import annotations

import math

import pytest
import torch
from torchvision.transforms import v2

import gpuaug as ga
from gpuaug.transforms.base import MAX_SIZE

# 1e300 is inf in float32, where factors are sampled; 10**400 overflowed float() with an OverflowError
NON_FINITE = [math.inf, -math.inf, math.nan, 1e300, 10**400]

# (constructor, argument name, a valid value for the other arguments) for every float argument
FLOAT_ARGUMENTS = [
    (lambda v: ga.ColorJitter(brightness=v), "brightness"),
    (lambda v: ga.ColorJitter(contrast=v), "contrast"),
    (lambda v: ga.ColorJitter(saturation=v), "saturation"),
    (lambda v: ga.ColorJitter(hue=v), "hue"),
    (lambda v: ga.ColorJitter(brightness=(0.5, v)), "brightness"),
    (lambda v: ga.ColorJitter(contrast=(v, 2.0)), "contrast"),
    (lambda v: ga.ColorJitter(saturation=[0.5, v]), "saturation"),
    (lambda v: ga.ColorJitter(hue=(-0.1, v)), "hue"),
    (lambda v: ga.RandomResizedCrop(8, scale=(0.1, v)), "scale"),
    (lambda v: ga.RandomResizedCrop(8, ratio=(0.5, v)), "ratio"),
    (lambda v: ga.RandomResizedCrop(8, scale=(v, 1.0)), "scale"),
    (lambda v: ga.Normalize([v, 0.5, 0.5], [0.2, 0.2, 0.2]), "mean"),
    (lambda v: ga.Normalize([0.5], [v]), "std"),
    (lambda v: ga.RandomHorizontalFlip(v), "p"),
    (lambda v: ga.RandomVerticalFlip(v), "p"),
    (lambda v: ga.RandomGrayscale(v), "p"),
]


@pytest.mark.parametrize("build, name", FLOAT_ARGUMENTS)
@pytest.mark.parametrize("value", NON_FINITE, ids=["inf", "-inf", "nan", "1e300", "10**400"])
def test_non_finite_arguments_raise_naming_the_argument(build, name, value):
    with pytest.raises(ValueError, match=rf"^{name}\b"):
        build(value)


def test_color_jitter_inf_was_accepted_and_gave_nan():
    # The reported case: ColorJitter(brightness=inf) built and produced NaN; now it is refused.
    with pytest.raises(ValueError, match="brightness must be a finite number"):
        ga.ColorJitter(brightness=float("inf"))
    with pytest.raises(ValueError, match="contrast"):
        ga.ColorJitter(contrast=(0.5, float("inf")))


def test_std_that_is_zero_in_float32_is_refused():
    with pytest.raises(ValueError, match="std must not contain zero"):
        ga.Normalize([0.5], [1e-300])


def test_large_finite_arguments_stay_accepted():
    # Bounds are float32's, not arbitrary ones: torchvision accepts these and so do we.
    assert ga.ColorJitter(brightness=1e6).brightness == (0.0, 1e6 + 1)
    assert ga.RandomResizedCrop(8, ratio=(1e-6, 1e6)).ratio == (1e-6, 1e6)


@pytest.mark.parametrize("build", [ga.CenterCrop, ga.Resize, ga.RandomResizedCrop])
@pytest.mark.parametrize("size", [10**30, 10**31, (224, 10**30), MAX_SIZE + 1])
def test_sizes_are_bounded_at_construction(build, size):
    with pytest.raises(ValueError, match=rf"size must be at most {MAX_SIZE} pixels per side"):
        build(size)


def test_largest_size_is_accepted():
    assert ga.CenterCrop(MAX_SIZE).size == (MAX_SIZE, MAX_SIZE)
    assert ga.Resize((1, MAX_SIZE)).size == (1, MAX_SIZE)


# ----------------------------------------------------------------------------------------------
# Empty images and empty batches (row #14)
# ----------------------------------------------------------------------------------------------
def _pipelines():
    return [
        ga.RandomResizedCrop(8),
        ga.Resize(8),
        ga.CenterCrop(8),
        ga.RandomHorizontalFlip(),
        ga.ColorJitter(0.4, 0.4, 0.4, 0.1),
        ga.RandomGrayscale(),
        ga.Normalize(ga.IMAGENET_MEAN, ga.IMAGENET_STD),
        ga.Compose(
            [ga.RandomResizedCrop(8), ga.RandomHorizontalFlip(), ga.ColorJitter(0.4, 0.4, 0.4), ga.Normalize([0.5], [0.5])]
        ),
        ga.Compose([ga.Resize(10), ga.CenterCrop(8), ga.ToDtype(torch.bfloat16)], fuse=False),
    ]


@pytest.mark.parametrize("transform", _pipelines(), ids=lambda t: type(t).__name__)
def test_empty_batch_gives_an_empty_batch_like_one_image_would(transform, photo_batch):
    # RandomResizedCrop and Compose raised IndexError on [0, 3, H, W]; torchvision v2 returns an empty batch.
    generator = torch.Generator().manual_seed(5)
    state = generator.get_state()
    empty = transform(photo_batch[:0], generator=generator)
    one = transform(photo_batch[:1], generator=torch.Generator().manual_seed(0))
    assert empty.shape == (0, *one.shape[1:])
    assert empty.dtype == one.dtype and empty.device == one.device
    assert torch.equal(generator.get_state(), state)  # the caller's generator was not consumed


def test_empty_batch_shape_matches_torchvision(photo_batch):
    for ours, theirs in [(ga.RandomResizedCrop((8, 6)), v2.RandomResizedCrop((8, 6))), (ga.Resize(8), v2.Resize(8))]:
        assert ours(photo_batch[:0]).shape == theirs(photo_batch[:0]).shape


@pytest.mark.parametrize("transform", _pipelines(), ids=lambda t: type(t).__name__)
@pytest.mark.parametrize("shape, axis", [((2, 3, 0, 30), "height 0"), ((2, 3, 20, 0), "width 0"), ((2, 0, 20, 30), "channels 0")])
def test_images_without_pixels_raise_naming_the_empty_axis(transform, shape, axis):
    # Were ZeroDivisionError (Resize), a C++ RuntimeError (RandomResizedCrop) or silently empty output.
    images = torch.zeros(shape, dtype=torch.uint8)
    message = rf"{type(transform).__name__}: images of shape \(2, \d+, \d+, \d+\) have no pixels \({axis}\)"
    with pytest.raises(ValueError, match=message):
        transform(images)


@pytest.mark.parametrize("transform", [ga.RandomResizedCrop(8), ga.Resize(8), ga.CenterCrop(8), ga.Compose([ga.Resize((8, 8))])])
def test_an_empty_image_in_a_list_is_named(transform):
    images = [torch.zeros(3, 20, 30, dtype=torch.uint8), torch.zeros(3, 0, 30, dtype=torch.uint8)]
    with pytest.raises(ValueError, match=r"image 1 of shape \(3, 0, 30\) has no pixels \(height 0\)"):
        transform(images)


def test_an_empty_list_raises():
    with pytest.raises(ValueError, match="empty list of images"):
        ga.RandomResizedCrop(8)([])


def test_empty_batch_and_empty_images_on_the_device(device, photo_batch):
    augment = ga.Compose([ga.RandomResizedCrop(8), ga.ColorJitter(0.4, 0.4, 0.4), ga.Normalize([0.5], [0.5])])
    empty = augment(photo_batch[:0].to(device), generator=torch.Generator().manual_seed(0))
    assert empty.shape == (0, 3, 8, 8) and empty.device.type == device.type and empty.dtype == torch.float32
    with pytest.raises(ValueError, match="no pixels"):
        augment(torch.zeros(2, 3, 0, 5, dtype=torch.uint8, device=device))
