"""from_torchvision: the seed's pipelines convert with equal parameters; unsupported ones are all named."""

from __future__ import annotations

import pytest
import torch
from torchvision import transforms as v1
from torchvision.transforms import v2

import gpuaug as ga

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


@pytest.mark.parametrize("T", [v1, v2], ids=["v1", "v2"])
def test_seed_augmentation_pipeline(T):
    tv = T.Compose(
        [
            T.RandomHorizontalFlip(),
            T.RandomVerticalFlip(p=0.3),
            T.ColorJitter(brightness=0.5, contrast=0.5, saturation=0.5, hue=0.5),
            T.RandomResizedCrop(200, scale=(0.1, 1), ratio=(0.5, 2)),
            T.RandomGrayscale(p=0.2),
        ]
    )
    flip, vflip, jitter, crop, gray = ga.from_torchvision(tv).transforms
    assert isinstance(flip, ga.RandomHorizontalFlip) and flip.p == 0.5
    assert isinstance(vflip, ga.RandomVerticalFlip) and vflip.p == 0.3
    assert (jitter.brightness, jitter.contrast, jitter.saturation, jitter.hue) == ((0.5, 1.5),) * 3 + ((-0.5, 0.5),)
    assert crop.size == (200, 200) and crop.scale == (0.1, 1.0) and crop.ratio == (0.5, 2.0) and crop.antialias
    assert isinstance(gray, ga.RandomGrayscale) and gray.p == 0.2


@pytest.mark.parametrize("T", [v1, v2], ids=["v1", "v2"])
def test_finetune_pipelines(T):
    to_tensor = [T.ToTensor()] if T is v1 else [T.ToImage(), T.ToDtype(torch.float32, scale=True)]
    train = ga.from_torchvision(
        T.Compose([T.RandomResizedCrop(224), T.RandomHorizontalFlip(), *to_tensor, T.Normalize(MEAN, STD)])
    )
    crop, flip, to_float, normalize = train.transforms
    assert crop.size == (224, 224) and crop.scale == (0.08, 1.0) and crop.ratio == pytest.approx((3 / 4, 4 / 3))
    assert isinstance(flip, ga.RandomHorizontalFlip)
    assert isinstance(to_float, ga.ToDtype) and to_float.dtype == torch.float32 and to_float.scale
    assert normalize.mean == tuple(MEAN) and normalize.std == tuple(STD)
    test = ga.from_torchvision(T.Compose([T.Resize(256), T.CenterCrop(224), *to_tensor, T.Normalize(MEAN, STD)]))
    resize, center, _, _ = test.transforms
    assert resize.size == (256,) and center.size == (224, 224)


def test_conversion_computes_what_torchvision_computes(photo_list):
    tv = v2.Compose([v2.Resize(64), v2.CenterCrop(56), v2.ToDtype(torch.float32, scale=True), v2.Normalize(MEAN, STD)])
    converted = ga.from_torchvision(tv)
    torch.testing.assert_close(converted(photo_list), torch.stack([tv(image) for image in photo_list]), atol=1e-5, rtol=0)


def test_dtype_conversions_and_nesting():
    out = ga.from_torchvision([v1.PILToTensor(), v1.Compose([v1.ConvertImageDtype(torch.float16)]), v2.ToPureTensor()])
    assert [repr(t) for t in out.transforms] == ["ToDtype(dtype=torch.float16, scale=True)"]
    assert ga.from_torchvision(v1.RandomHorizontalFlip(0.7)).transforms[0].p == 0.7
    per_type = ga.from_torchvision(v2.ToDtype({torch.Tensor: torch.bfloat16, "others": None}, scale=True))
    assert per_type.transforms[0].dtype == torch.bfloat16


def test_every_unsupported_transform_is_named():
    tv = v2.Compose(
        [
            v2.RandomRotation(10),
            v2.RandomResizedCrop(32),
            v2.Lambda(lambda x: x),
            v2.GaussianBlur(3),
            v2.RandomResizedCrop(32, interpolation=v2.InterpolationMode.BICUBIC),
            v2.Resize(32, max_size=64),
        ]
    )
    with pytest.raises(ValueError) as caught:
        ga.from_torchvision(tv)
    message = str(caught.value)
    for name in ("RandomRotation", "Lambda", "GaussianBlur", "RandomResizedCrop(interpolation=BICUBIC)", "Resize(max_size=64)"):
        assert name in message
    assert message.count("RandomResizedCrop") == 2  # the supported one is only in the "Supported" list
