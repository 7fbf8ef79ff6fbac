"""Every kernel against torchvision.transforms.v2.functional applied image by image.

Tolerances (stated here and in the README):
- flips, the "loop" resized_crop, resize, center_crop, grayscale, brightness, to_dtype: exact.
- "taps" resized_crop (the batched GPU path): float 1e-4, uint8 +-1 level (torch's uint8 resize
  rounds its intermediate pass in fixed point; ours stays in float).
- contrast, saturation: float 1e-6; uint8 +-1 level on < 1 % of pixels (float rounding before
  torchvision's truncation).
- hue (through Kornia's HSV): float 1e-5; uint8 +-1 level on < 0.1 % of pixels.
"""

from __future__ import annotations

import functools

import kornia
import pytest
import torch
import torchvision.transforms.v2.functional as TF

from gpuaug import functional as F
from gpuaug.functional import resize
from gpuaug.tools import samples
from tests.conftest import levels

DTYPES = [torch.uint8, torch.float32]


def as_dtype(images: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return images if dtype == torch.uint8 else images.float() / 255


def per_sample(fn, images, *columns):
    """torchvision's kernel image by image, with that image's parameters as Python numbers."""
    rows = zip(*(column.tolist() for column in columns))
    return torch.stack([fn(image, *row) for image, row in zip(images.cpu(), rows)])


def assert_close_levels(actual, expected, dtype, max_levels, max_fraction=1.0):
    difference = levels(actual.cpu().double() - expected.cpu().double(), dtype)
    assert difference.max() <= max_levels + 1e-9, f"max difference {difference.max():.4g} levels"
    assert (difference > 1e-6).double().mean() <= max_fraction


# ----------------------------------------------------------------------------------------------
# flips
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kernel,reference", [(F.hflip, TF.horizontal_flip), (F.vflip, TF.vertical_flip)])
def test_flips_exact(photo_batch, device, dtype, kernel, reference):
    images = as_dtype(photo_batch, dtype).to(device)
    mask = torch.tensor([True, False] * 6, device=device)
    out = kernel(images, mask)
    expected = torch.stack([reference(image) if flag else image for image, flag in zip(images.cpu(), mask.tolist())])
    assert torch.equal(out.cpu(), expected)
    assert torch.equal(kernel(images).cpu(), reference(images.cpu()))


def test_flip_matches_kornia(photo_batch):
    assert torch.equal(F.hflip(photo_batch), kornia.geometry.transform.hflip(photo_batch))
    assert torch.equal(F.vflip(photo_batch), kornia.geometry.transform.vflip(photo_batch))


def test_flip_keeps_channels_last(photo_batch):
    images = photo_batch.contiguous(memory_format=torch.channels_last)
    out = F.hflip(images, torch.ones(12, dtype=torch.bool))
    assert out.is_contiguous(memory_format=torch.channels_last)


# ----------------------------------------------------------------------------------------------
# crop + resize
# ----------------------------------------------------------------------------------------------
BOXES = torch.tensor(
    [
        [0, 0, 96, 128],  # whole image (downscale)
        [10, 5, 40, 60],
        [3, 7, 90, 20],  # tall and thin
        [50, 50, 46, 78],  # bottom-right corner
        [0, 0, 30, 30],
        [20, 30, 10, 12],  # upscale 3-4x
        [1, 2, 48, 64],  # exactly 1x in one axis below
        [40, 0, 56, 128],
        [0, 100, 96, 28],
        [5, 5, 86, 118],
        [33, 44, 33, 44],
        [95, 127, 1, 1],  # a single pixel
    ]
)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("antialias", [True, False])
@pytest.mark.parametrize("impl", ["loop", "taps"])
def test_resized_crop_matches_torchvision(photo_batch, device, dtype, antialias, impl):
    images = as_dtype(photo_batch, dtype).to(device)
    size = (45, 37)
    out = F.resized_crop(images, BOXES.to(device), size, antialias=antialias, impl=impl)
    expected = per_sample(lambda image, *box: TF.resized_crop(image, *box, list(size), antialias=antialias), images, *BOXES.T)
    assert out.shape == (12, 3, 45, 37) and out.dtype == dtype and out.device.type == device.type
    exact = impl == "loop" and device.type == "cpu"
    if dtype == torch.uint8:
        assert_close_levels(out, expected, dtype, 0 if exact else 1)
    else:
        torch.testing.assert_close(out.cpu(), expected, atol=0 if exact else 1e-4, rtol=0)


@pytest.mark.parametrize("impl", ["loop", "taps"])
def test_resized_crop_ragged_list_with_flips(photo_list, device, impl):
    images = [image.to(device) for image in photo_list]
    boxes = torch.tensor([[0, 0, image.shape[1] // 2, image.shape[2] // 2] for image in photo_list])
    hmask = torch.arange(12) % 2 == 0
    vmask = torch.arange(12) % 3 == 0
    out = F.resized_crop(images, boxes.to(device), (32, 40), hmask.to(device), vmask.to(device), impl=impl)
    expected = []
    for image, box, flip_h, flip_v in zip(photo_list, boxes.tolist(), hmask.tolist(), vmask.tolist()):
        one = TF.resized_crop(image, *box, [32, 40], antialias=True)
        one = TF.horizontal_flip(one) if flip_h else one
        expected.append(TF.vertical_flip(one) if flip_v else one)
    assert_close_levels(out, torch.stack(expected), torch.uint8, 0 if impl == "loop" and device.type == "cpu" else 1)


def test_resized_crop_close_to_kornia_without_antialias(photo_batch):
    """Kornia's crop_and_resize maps box corners to output corners; on a 2x integer upscale of a
    box the two conventions differ by at most a half-pixel shift, so compare a smooth image."""
    smooth = torch.linspace(0, 1, 64).view(1, 1, 1, 64).expand(2, 3, 64, 64).contiguous()
    boxes = torch.tensor([[0, 0, 64, 64], [16, 16, 32, 32]])
    ours = F.resized_crop(smooth, boxes, (64, 64), antialias=False, impl="taps")
    corners = torch.tensor([[[0, 0], [63, 0], [63, 63], [0, 63]], [[16, 16], [47, 16], [47, 47], [16, 47]]], dtype=torch.float32)
    theirs = kornia.geometry.transform.crop_and_resize(smooth, corners, (64, 64))
    assert (ours - theirs).abs().max() < 1.5 / 63


@pytest.mark.parametrize("dtype", DTYPES)
def test_resize_matches_torchvision(photo_list, photo_batch, dtype):
    images = as_dtype(photo_batch, dtype)
    torch.testing.assert_close(F.resize(images, [50]), TF.resize(images, [50], antialias=True), atol=0, rtol=0)
    torch.testing.assert_close(F.resize(images, (20, 150)), TF.resize(images, [20, 150], antialias=True), atol=0, rtol=0)
    out = F.resize([as_dtype(image, dtype) for image in photo_list], [64])
    for one, image in zip(out, photo_list):
        torch.testing.assert_close(one, TF.resize(as_dtype(image, dtype), [64], antialias=True), atol=0, rtol=0)


def test_center_crop_matches_torchvision(photo_list, photo_batch):
    assert torch.equal(F.center_crop(photo_batch, (51, 77)), TF.center_crop(photo_batch, [51, 77]))
    padded = F.center_crop(photo_batch, (101, 140))  # larger than the image: zero padding
    assert torch.equal(padded, TF.center_crop(photo_batch, [101, 140]))
    out = F.center_crop(photo_list, (50, 50))
    assert torch.equal(out, torch.stack([TF.center_crop(image, [50, 50]) for image in photo_list]))


# ----------------------------------------------------------------------------------------------
# colour
# ----------------------------------------------------------------------------------------------
FACTORS = torch.tensor([0.0, 0.3, 0.5, 0.8, 1.0, 1.0, 1.2, 1.5, 1.9, 2.5, 0.95, 1.05])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "kernel,reference,fraction",
    [
        (F.adjust_brightness, TF.adjust_brightness, 0.0),
        (F.adjust_contrast, TF.adjust_contrast, 0.01),
        (F.adjust_saturation, TF.adjust_saturation, 0.01),
    ],
)
def test_blend_kernels_match_torchvision(photo_batch, device, dtype, kernel, reference, fraction):
    images = as_dtype(photo_batch, dtype).to(device)
    out = kernel(images, FACTORS.to(device))
    expected = per_sample(reference, images, FACTORS)
    if dtype == torch.uint8:
        assert_close_levels(out, expected, dtype, 0 if fraction == 0 else 1, fraction)
    else:
        torch.testing.assert_close(out.cpu(), expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_hue_matches_torchvision(photo_batch, device, dtype):
    images = as_dtype(photo_batch, dtype).to(device)
    hues = torch.linspace(-0.5, 0.5, 12)
    out = F.adjust_hue(images, hues.to(device))
    expected = per_sample(TF.adjust_hue, images, hues)
    if dtype == torch.uint8:
        assert_close_levels(out, expected, dtype, 1, 0.001)
    else:
        torch.testing.assert_close(out.cpu(), expected, atol=1e-5, rtol=0)


def test_float_kernels_close_to_kornia(photo_batch):
    """Kornia's torchvision-style kernels use ITU 601 luma (0.299, not torchvision's 0.2989)."""
    images = photo_batch.float() / 255
    ours = F.adjust_saturation(images, FACTORS)
    theirs = kornia.enhance.adjust_saturation_with_gray_subtraction(images, FACTORS)
    assert (ours - theirs).abs().max() < 2e-3
    ours = F.adjust_contrast(images, FACTORS)
    theirs = kornia.enhance.adjust_contrast_with_mean_subtraction(images, FACTORS)
    assert (ours - theirs).abs().max() < 2e-3


@pytest.mark.parametrize("dtype", DTYPES)
def test_grayscale_matches_torchvision(photo_batch, dtype):
    images = as_dtype(photo_batch, dtype)
    mask = torch.arange(12) % 3 == 0
    out = F.rgb_to_grayscale(images, mask)
    expected = torch.stack(
        [TF.rgb_to_grayscale(image, num_output_channels=3) if flag else image for image, flag in zip(images, mask.tolist())]
    )
    assert torch.equal(out, expected)


def apply_in_order(image, order, brightness, contrast, saturation, hue):
    """torchvision's ColorJitter.transform for one image with a given op order."""
    ops = {
        0: (TF.adjust_brightness, brightness),
        1: (TF.adjust_contrast, contrast),
        2: (TF.adjust_saturation, saturation),
        3: (TF.adjust_hue, hue),
    }
    for op in order:
        kernel, factor = ops[op]
        if factor is not None:
            image = kernel(image, factor)
    return image


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("with_hue", [True, False])
def test_color_jitter_follows_each_images_order(photo_batch, device, dtype, with_hue):
    generator = torch.Generator().manual_seed(3)
    images = as_dtype(photo_batch, dtype).to(device)
    order = torch.rand(12, 4, generator=generator).argsort(dim=1)
    brightness = 0.5 + torch.rand(12, generator=generator)
    contrast = 0.5 + torch.rand(12, generator=generator)
    saturation = 0.5 + torch.rand(12, generator=generator)
    hue = (torch.rand(12, generator=generator) - 0.5) * 0.6 if with_hue else None
    out = F.color_jitter(
        images,
        brightness.to(device),
        contrast.to(device),
        saturation.to(device),
        None if hue is None else hue.to(device),
        order.to(device),
    )
    expected = torch.stack(
        [
            apply_in_order(
                image,
                order[i].tolist(),
                brightness[i].item(),
                contrast[i].item(),
                saturation[i].item(),
                None if hue is None else hue[i].item(),
            )
            for i, image in enumerate(images.cpu())
        ]
    )
    if dtype == torch.uint8:
        assert_close_levels(out, expected, dtype, 2, 0.01)
    else:
        torch.testing.assert_close(out.cpu(), expected, atol=2e-5, rtol=0)
    # the order matters: reversing every image's order gives a different result
    reversed_out = F.color_jitter(images, brightness, contrast, saturation, hue, order.flip(1))
    assert not torch.equal(reversed_out.cpu(), out.cpu())


# ----------------------------------------------------------------------------------------------
# dtype, normalize
# ----------------------------------------------------------------------------------------------
def test_to_dtype_matches_torchvision(photo_batch):
    as_float = F.to_dtype(photo_batch, torch.float32)
    assert torch.equal(as_float, TF.to_dtype(photo_batch, torch.float32, scale=True))
    assert torch.equal(F.to_dtype(as_float, torch.uint8), TF.to_dtype(as_float, torch.uint8, scale=True))
    assert torch.equal(F.to_dtype(as_float, torch.uint8), photo_batch)
    assert F.to_dtype(photo_batch, torch.bfloat16).dtype == torch.bfloat16


def test_normalize_matches_torchvision(photo_batch):
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    as_float = photo_batch.float() / 255
    expected = TF.normalize(as_float, list(mean), list(std))
    torch.testing.assert_close(F.normalize(as_float, mean, std), expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(F.normalize(photo_batch, mean, std), expected, atol=1e-6, rtol=0)


# ----------------------------------------------------------------------------------------------
# the fused colour pass
# ----------------------------------------------------------------------------------------------
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def test_fused_equals_exact_chain_where_nothing_clips(device):
    """Mid-range colours and mild factors: no op clips, so the fused affine is the exact chain."""
    generator = torch.Generator().manual_seed(0)
    images = (0.35 + 0.3 * torch.rand(16, 3, 24, 24, generator=generator)).to(device)
    brightness, contrast, saturation = (0.9 + 0.2 * torch.rand(3, 16, generator=generator)).to(device)
    gray = (torch.arange(16) % 4 == 0).to(device)
    out = F.fused_color_normalize(images, brightness, contrast, saturation, None, gray, MEAN, STD)
    chain = F.adjust_saturation(F.adjust_contrast(F.adjust_brightness(images, brightness), contrast), saturation)
    chain = F.normalize(F.rgb_to_grayscale(chain, gray), MEAN, STD)
    torch.testing.assert_close(out, chain, atol=1e-5, rtol=0)


# The set behind the fused pass's error figures (README.md "Fusion", ``fused_color_normalize``'s
# docstring; issue 18 #23): 16 sets of 12 crops of scikit-image's 7 bundled colour photos
# (``photo_crops(12, seed, short_side=(60, 140))`` for seeds 0-15, resized to 96x128), each set with
# ColorJitter(0.4, 0.4, 0.4) factors and op orders (fused) or hues in [-0.1, 0.1] (YIQ) drawn from its seed.
COLOUR_SEEDS = range(16)


@functools.cache
def colour_set(seed: int) -> torch.Tensor:
    return torch.stack(
        [resize(image.unsqueeze(0), (96, 128))[0] for image in samples.photo_crops(12, seed, short_side=(60, 140))]
    )


def fused_errors(images: torch.Tensor, seed: int) -> list[torch.Tensor]:
    """Per input kind (float in [0, 1], uint8): the fused pass's error against the exact op-by-op chain, in levels."""
    generator = torch.Generator().manual_seed(seed)
    order = torch.rand(len(images), 4, generator=generator).argsort(dim=1)
    brightness, contrast, saturation = 0.6 + 0.8 * torch.rand(3, len(images), generator=generator)
    errors = []
    for source in (images.float() / 255, images):
        fused = F.fused_color_normalize(source, brightness, contrast, saturation, mean=MEAN, std=STD)
        exact = F.normalize(F.color_jitter(source, brightness, contrast, saturation, None, order), MEAN, STD)
        errors.append(((fused - exact) * torch.tensor(STD).view(1, 3, 1, 1)).abs() * 255)
    return errors


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_fused_error_on_photos(memory_format):
    """The fused pass against the exact op-by-op chain on the stated set (``COLOUR_SEEDS``), the figures
    README.md and ``fused_color_normalize`` give (measured on the CPU: mean 0.210 levels, 4.03 %
    over a level, at most 57.1, per set at most 0.484 levels and 10.9 % on float input; mean 1.553
    and per set at most 2.008 on uint8).

    Float input (clipping between ops is all that differs): mean 0.21 levels, 4 % of values off by
    more than a level (per set of 12 photos 0.01-0.48 levels, 0.1-11 %), saturated pixels up to
    ~57 levels. uint8 input adds torchvision's truncation after each op (about -0.5 level per op):
    mean ~1.6 levels (per set up to 2.0).
    """
    means, fractions, largest = [], [], []
    for seed in COLOUR_SEEDS:
        errors = fused_errors(colour_set(seed).contiguous(memory_format=memory_format), seed)
        means.append([error.mean().item() for error in errors])
        fractions.append([(error > 1).double().mean().item() for error in errors])
        largest.append(max(error.max().item() for error in errors))
    means, fractions = torch.tensor(means), torch.tensor(fractions)
    assert means[:, 0].mean() < 0.25 and fractions[:, 0].mean() < 0.045 and max(largest) < 60  # float, whole set
    assert means[:, 0].max() < 0.5 and fractions[:, 0].max() < 0.12  # float, worst set of 12
    assert means[:, 1].mean() < 1.6 and means[:, 1].max() < 2.1  # uint8


def test_fused_output_dtype_and_layout(photo_batch):
    out = F.fused_color_normalize(photo_batch.contiguous(memory_format=torch.channels_last), dtype=torch.bfloat16)
    assert out.dtype == torch.bfloat16 and out.is_contiguous()
    torch.testing.assert_close(out.float(), photo_batch.float() / 255, atol=4e-3, rtol=0)


def test_yiq_hue_keeps_grey_and_luma_and_approximates_hsv():
    hues = torch.linspace(-0.5, 0.5, 12)
    matrices = F.yiq_hue_matrix(hues)
    ones = torch.ones(12, 3, 1)
    torch.testing.assert_close(matrices @ ones, ones, atol=1e-5, rtol=0)  # greys stay grey
    luma = torch.tensor([[0.299, 0.587, 0.114]])
    torch.testing.assert_close(luma @ matrices, luma.expand(12, 1, 3), atol=1e-5, rtol=0)
    torch.testing.assert_close(F.yiq_hue_matrix(torch.zeros(2)), torch.eye(3).expand(2, 3, 3), atol=1e-6, rtol=0)
    # Not HSV: on the stated set (COLOUR_SEEDS) with hue in [-0.1, 0.1] the mean distance to torchvision's
    # HSV hue is 10.4 levels (per set of 12 photos 5.4-14.5), and the direction agrees (the opposite
    # rotation is much further off).
    distances = []
    for seed in COLOUR_SEEDS:
        images = colour_set(seed)
        small = torch.linspace(-0.1, 0.1, 12)[torch.randperm(12, generator=torch.Generator().manual_seed(seed))]
        hsv = F.adjust_hue(images.float() / 255, small)
        yiq = F.fused_color_normalize(images, hue=small)
        opposite = F.fused_color_normalize(images, hue=-small)
        distances.append(((hsv - yiq).abs() * 255).mean().item())
        assert ((hsv - yiq).abs()).mean() < ((hsv - opposite).abs()).mean()
    assert sum(distances) / len(distances) < 11 and max(distances) < 15


# ----------------------------------------------------------------------------------------------
# contract: no in-place, dtype/device kept, input checks
# ----------------------------------------------------------------------------------------------
KERNELS = {
    "hflip": lambda x: F.hflip(x, torch.ones(x.shape[0], dtype=torch.bool)),
    "vflip": lambda x: F.vflip(x, torch.ones(x.shape[0], dtype=torch.bool)),
    "resized_crop_loop": lambda x: F.resized_crop(x, BOXES[: x.shape[0]], (20, 20), impl="loop"),
    "resized_crop_taps": lambda x: F.resized_crop(x, BOXES[: x.shape[0]], (20, 20), impl="taps"),
    "resize": lambda x: F.resize(x, (48, 64)),
    "center_crop": lambda x: F.center_crop(x, (96, 128)),
    "brightness": lambda x: F.adjust_brightness(x, FACTORS[: x.shape[0]]),
    "contrast": lambda x: F.adjust_contrast(x, FACTORS[: x.shape[0]]),
    "saturation": lambda x: F.adjust_saturation(x, FACTORS[: x.shape[0]]),
    "hue": lambda x: F.adjust_hue(x, torch.full((x.shape[0],), 0.2)),
    "grayscale": lambda x: F.rgb_to_grayscale(x),
    "color_jitter": lambda x: F.color_jitter(x, FACTORS[: x.shape[0]], None, None, None, torch.arange(4).expand(x.shape[0], 4)),
    "to_dtype": lambda x: F.to_dtype(x, x.dtype),
}


@pytest.mark.parametrize("name", sorted(KERNELS))
@pytest.mark.parametrize("dtype", DTYPES)
def test_kernels_do_not_write_input_and_keep_dtype(photo_batch, name, dtype):
    images = as_dtype(photo_batch, dtype)
    before = images.clone()
    out = KERNELS[name](images)
    assert torch.equal(images, before)
    assert out.dtype == dtype and out.device == images.device
    assert out.data_ptr() != images.data_ptr()


COLOUR_KERNELS = ["brightness", "contrast", "saturation", "hue", "grayscale", "color_jitter", "hflip", "vflip", "to_dtype"]


@pytest.mark.parametrize("name", COLOUR_KERNELS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_pointwise_kernels_keep_half_dtypes(photo_batch, name, dtype):
    """float16/bfloat16 stay so (a float32 factor used to promote brightness/contrast/saturation)."""
    images = (photo_batch[:4].float() / 255).to(dtype)
    out = KERNELS[name](images)
    assert out.dtype == dtype
    reference = KERNELS[name](images.float())
    assert (out.float() - reference).abs().max() < 0.02  # the same maths, in the coarser format


def test_single_image_crop_of_output_size_is_a_copy():
    image = torch.arange(3 * 6 * 6, dtype=torch.uint8).view(1, 3, 6, 6)
    out = F.resized_crop(image, torch.tensor([[1, 2, 4, 4]]), (4, 4), impl="loop")
    assert torch.equal(out, image[:, :, 1:5, 2:6])
    before = image.clone()
    out.zero_()
    assert torch.equal(image, before)  # the result does not share the input's memory


def test_bad_inputs_are_named():
    with pytest.raises(TypeError, match="uint8 or floating"):
        F.adjust_brightness(torch.zeros(2, 3, 4, 4, dtype=torch.int32), torch.ones(2))
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        F.adjust_brightness(torch.zeros(3, 4, 4), torch.ones(1))
    with pytest.raises(ValueError, match="3 channels"):
        F.adjust_saturation(torch.zeros(2, 4, 4, 4), torch.ones(2))
    with pytest.raises(TypeError, match="list"):
        F.adjust_contrast([torch.zeros(3, 4, 4)], torch.ones(1))
    with pytest.raises(ValueError, match="same dtype and device|share dtype"):
        F.resized_crop([torch.zeros(3, 4, 4), torch.zeros(3, 4, 4, dtype=torch.float32).double()], BOXES[:2], (2, 2))
    with pytest.raises(ValueError, match="impl"):
        F.resized_crop(torch.zeros(1, 3, 4, 4), torch.tensor([[0, 0, 4, 4]]), (2, 2), impl="magic")
