"""The fused Triton pass against the torch reference (and torchvision), per image.

On a CUDA machine these run compiled kernels in-process. Elsewhere (CI) the whole file reruns
itself in a subprocess with ``TRITON_INTERPRET=1``, where Triton's interpreter runs the same
kernels on CPU tensors; setting the variable in a fresh process keeps it from depending on
whether another test module imported Triton first.

Tolerances: the resampled uint8 image within 1 level of the torch path (a float sum landing on
either side of .5) and, in these cases, equal on all but a few pixels; the colour pass, given the
same resampled image, within 1e-4 of ``functional.fused_color_normalize``.
"""

from __future__ import annotations

import os
import pathlib
import pickle
import subprocess
import sys

import pytest
import torch

import gpuaug as ga
from gpuaug import functional as F
from gpuaug.io.packed import PackedBatch

triton = pytest.importorskip("triton")

CUDA = torch.cuda.is_available()
INTERPRETED = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
ROOT = pathlib.Path(__file__).resolve().parents[1]


if not CUDA and not INTERPRETED:

    def test_kernels_under_the_triton_interpreter():
        """Rerun this file with TRITON_INTERPRET=1 (the kernels on CPU tensors)."""
        result = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", str(pathlib.Path(__file__))],
            cwd=ROOT,
            env={**os.environ, "TRITON_INTERPRET": "1"},
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
        assert " passed" in result.stdout and "failed" not in result.stdout

else:
    DEVICE = torch.device("cuda" if CUDA and not INTERPRETED else "cpu")

    def generator(seed: int) -> torch.Generator:
        return torch.Generator(DEVICE).manual_seed(seed)

    def images_of(*shapes, seed=0, hwc=()):
        """uint8 [3, H, W] images with smooth structure plus noise; those in ``hwc`` laid out interleaved."""
        source = torch.Generator().manual_seed(seed)
        out = []
        for index, (height, width) in enumerate(shapes):
            rows = torch.linspace(0, 1, height).view(1, -1, 1)
            cols = torch.linspace(0, 1, width).view(1, 1, -1)
            base = torch.stack([rows.expand(1, height, width)[0], cols.expand(1, height, width)[0], (rows * cols)[0]])
            noise = torch.rand((3, height, width), generator=source)
            image = ((0.7 * base + 0.3 * noise) * 255).round().to(torch.uint8)
            if index in hwc:
                image = image.permute(1, 2, 0).contiguous().permute(2, 0, 1)
            out.append(image.to(DEVICE))
        return out

    def run(transforms, images, params=None, seed=1):
        """(Triton output, torch output, params) of one pipeline on the same draw."""
        fused = ga.Compose(transforms, backend="triton")
        reference = ga.Compose(transforms, backend="torch")
        assert fused.plan.prefix > 0
        if params is None:
            params = fused.make_params(images, generator(seed))
        return fused(images, params=params), reference(images, params=params), params

    def assert_resampled_close(out, expected, max_fraction=1.0):
        """Within one level; at most ``max_fraction`` of the values off at all."""
        assert out.dtype == expected.dtype == torch.uint8 and out.shape == expected.shape
        difference = (out.int() - expected.int()).abs()
        assert difference.max() <= 1
        assert (difference > 0).float().mean() <= max_fraction

    def float_taps(images, boxes, size, hflip=None, vflip=None):
        """The torch path's float resampling (its CUDA default; on the CPU the torch path resizes
        uint8 in fixed point, 1 level off on a few % of the pixels)."""
        return F.resized_crop(images, boxes, size, hflip, vflip, impl="taps")

    # ------------------------------------------------------------------------------------------
    # Geometry: crop + antialiased resize + flips, uint8 out
    # ------------------------------------------------------------------------------------------
    def test_ragged_crops_with_edge_boxes_and_flips_match_torch_and_torchvision():
        from torchvision.transforms.v2 import functional as TF

        images = images_of((40, 52), (17, 13), (1, 1), (64, 30), (33, 47), hwc=(1, 3))
        boxes = torch.tensor([[0, 0, 40, 52], [16, 12, 1, 1], [0, 0, 1, 1], [10, 0, 54, 30], [1, 40, 32, 7]])
        flips = torch.tensor([True, False, True, True, False])
        transforms = [ga.RandomHorizontalFlip(), ga.RandomResizedCrop((12, 20)), ga.RandomVerticalFlip()]
        params = {"0.flip": flips, "1.boxes": boxes, "2.flip": ~flips}
        params = {key: value.to(DEVICE) for key, value in params.items()}
        out, expected, _ = run(transforms, images, params)
        assert out.is_contiguous(memory_format=torch.channels_last)
        assert_resampled_close(out, expected)
        widths = torch.tensor([image.shape[2] for image in images])
        mirrored = boxes.clone()
        mirrored[:, 1] = torch.where(flips, widths - boxes[:, 1] - boxes[:, 3], boxes[:, 1])
        assert_resampled_close(out, float_taps(images, mirrored.to(DEVICE), (12, 20), params["0.flip"], params["2.flip"]), 0.002)
        for index, image in enumerate(images):  # torchvision, image by image
            mirrored = TF.horizontal_flip(image) if flips[index] else image
            top, left, height, width = boxes[index].tolist()
            reference = TF.resized_crop(mirrored.cpu(), top, left, height, width, [12, 20], antialias=True)
            reference = reference if flips[index] else TF.vertical_flip(reference)
            assert (out[index].cpu().int() - reference.int()).abs().max() <= 1

    def test_upscaling_and_no_antialias():
        images = images_of((9, 11), (30, 20), hwc=(0,))
        for antialias in (True, False):
            out, expected, params = run([ga.RandomResizedCrop((24, 16), scale=(0.2, 1.0), antialias=antialias)], images, seed=3)
            assert_resampled_close(out, expected)
            taps = F.resized_crop(images, params["0.boxes"], (24, 16), antialias=antialias, impl="taps")
            assert_resampled_close(out, taps, 0.002)

    def test_a_4800x3200_image_beside_a_1x1_one():
        images = images_of((3200, 4800), (1, 1), hwc=(0,))
        # a strong downscale (about 70 taps per output pixel and axis) and a box in the far corner
        transforms = [ga.RandomResizedCrop((24, 36))]
        for boxes in ([[2000, 3300, 800, 1200], [0, 0, 1, 1]], [[3100, 4700, 100, 100], [0, 0, 1, 1]]):
            params = {"0.boxes": torch.tensor(boxes, device=DEVICE)}
            out, expected, _ = run(transforms, images, params)
            assert_resampled_close(out, expected)
            top, left, height, width = boxes[0]  # the float reference on the box alone (no 4800x3200 float copy)
            crop = images[0][:, top : top + height, left : left + width]
            box = torch.tensor([[0, 0, height, width]], device=DEVICE)
            assert_resampled_close(out[:1], float_taps(crop.unsqueeze(0), box, (24, 36)), 0.002)

    def test_resize_and_centre_crop_geometries():
        images = images_of((40, 52), (17, 13), (23, 60), hwc=(2,))
        flips = {"0.flip": torch.tensor([True, False, True], device=DEVICE)}
        cases = [
            ([ga.Resize((20, 24))], 1.0),
            ([ga.Resize(16), ga.CenterCrop(14)], 1.0),
            ([ga.Resize(16), ga.CenterCrop((20, 30))], 1.0),  # larger than some resized images: zero padding
            ([ga.CenterCrop((15, 20))], 0.0),  # a window of the image itself: exact, padding included
        ]
        for transforms, fraction in cases:
            out, expected, _ = run([ga.RandomHorizontalFlip(), *transforms], images, flips)
            assert_resampled_close(out, expected, fraction)

    # ------------------------------------------------------------------------------------------
    # Colour: affine + normalise, every dtype, each factor at its extremes
    # ------------------------------------------------------------------------------------------
    EXTREMES = [
        {"brightness": (0.0, 0.0)},
        {"brightness": (2.0, 2.0)},
        {"contrast": (0.0, 0.0)},
        {"contrast": (2.0, 2.0)},
        {"saturation": (0.0, 0.0)},
        {"saturation": (2.0, 2.0)},
        {"hue": (-0.5, -0.5)},
        {"hue": (0.5, 0.5)},
        {"brightness": (0.6, 1.4), "contrast": (0.6, 1.4), "saturation": (0.6, 1.4), "hue": (-0.1, 0.1)},
    ]

    @pytest.mark.parametrize("jitter", EXTREMES, ids=lambda j: "-".join(f"{k}{v[0]}" for k, v in j.items()))
    def test_colour_pass_equals_the_reference_on_the_same_resampled_image(jitter):
        images = images_of((40, 52), (17, 13), (30, 30), hwc=(1,))
        geometry = [ga.RandomResizedCrop((10, 14)), ga.RandomHorizontalFlip()]
        colour = [
            ga.ColorJitter(**jitter, hue_mode="yiq"),
            ga.RandomGrayscale(0.5),
            ga.Normalize(ga.IMAGENET_MEAN, ga.IMAGENET_STD),
        ]
        fused = ga.Compose(geometry + colour, backend="triton")
        params = fused.make_params(images, generator(5))
        out = fused(images, params=params)
        assert out.dtype == torch.float32 and out.is_contiguous(memory_format=torch.channels_last)
        resampled = ga.Compose(geometry, backend="triton")(images, params=params)
        factors = {name: params.get(f"2.{name}") for name in ("brightness", "contrast", "saturation", "hue")}
        expected = F.fused_color_normalize(
            resampled, **factors, grayscale_mask=params["3.gray"], mean=ga.IMAGENET_MEAN, std=ga.IMAGENET_STD
        )
        torch.testing.assert_close(out, expected, atol=1e-4, rtol=0)
        # and against the whole torch path: at most the effect of one resampled level
        reference = ga.Compose(geometry + colour, backend="torch")(images, params=params)
        gain = 2.0 * 2.0 * 3.0 / 255 / min(ga.IMAGENET_STD)
        assert (out - reference).abs().max() <= gain + 1e-4

    @pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
    def test_output_dtypes_batch_of_one(dtype):
        images = images_of((25, 31))
        transforms = [ga.RandomResizedCrop(12), ga.ColorJitter(0.4, 0.4, 0.4), ga.ToDtype(dtype), ga.Normalize([0.5], [0.25])]
        out, expected, _ = run(transforms, images, seed=6)
        assert out.dtype == expected.dtype == dtype and out.shape == (1, 3, 12, 12)
        tolerance = {torch.float32: 0.05, torch.float16: 0.05, torch.bfloat16: 0.1}[
            dtype
        ]  # one level x gain, or the format's step
        assert (out.float() - expected.float()).abs().max() <= tolerance

    def test_cast_only_and_colour_without_geometry_are_exact():
        batch = torch.stack(images_of((14, 18), (14, 18), (14, 18), seed=4))
        for transforms in (
            [ga.ToDtype(torch.float32)],
            [
                ga.RandomHorizontalFlip(),
                ga.ColorJitter(0.5, 0.5, 0.5),
                ga.RandomGrayscale(0.5),
                ga.Normalize(ga.IMAGENET_MEAN, ga.IMAGENET_STD),
            ],
        ):
            out, expected, _ = run(transforms, batch, seed=7)
            torch.testing.assert_close(out, expected, atol=1e-4, rtol=0)

    def test_packed_list_and_batch_inputs_agree_and_replay_bit_for_bit():
        images = images_of((40, 52), (17, 13), hwc=(1,))
        compose = ga.Compose(
            [ga.RandomResizedCrop(16), ga.RandomHorizontalFlip(), ga.ColorJitter(0.4, 0.4, 0.4), ga.ToDtype(torch.float32)],
            backend="triton",
        )
        packed = PackedBatch.from_images(images)
        params = compose.make_params(packed, generator(8))
        assert all(
            torch.equal(value, other) for value, other in zip(params.values(), compose.make_params(images, generator(8)).values())
        )
        first = compose(packed, params=params)
        assert torch.equal(first, compose(packed, params=params))  # integer sums: no atomic-order noise
        assert torch.equal(first, compose(images, params=params))

    def test_ops_after_the_fused_pass_run_on_torch():
        images = images_of((40, 52), (17, 13))
        transforms = [
            ga.RandomResizedCrop(16),
            ga.ColorJitter(0.3, 0.3, 0.3, 0.1),
            ga.Normalize(ga.IMAGENET_MEAN, ga.IMAGENET_STD),
        ]
        fused = ga.Compose(transforms, backend="triton")
        assert fused.plan.prefix == 1  # HSV hue keeps its own pass
        params = fused.make_params(images, generator(9))
        out = fused(images, params=params)
        expected = ga.Compose(transforms, backend="torch")(images, params=params)
        assert out.shape == expected.shape == (2, 3, 16, 16)
        assert (out - expected).abs().max() <= 4 / 255 / min(ga.IMAGENET_STD)

    def test_ragged_images_without_geometry_stay_a_list_as_on_torch():
        packed = PackedBatch.from_images(images_of((12, 10), (9, 14)))
        transforms = [ga.ColorJitter(0.4, 0.4, 0.4), ga.Normalize(ga.IMAGENET_MEAN, ga.IMAGENET_STD)]
        fused = ga.Compose(transforms, backend="triton")
        params = fused.make_params(packed, generator(12))
        out, expected = fused.apply(packed, params), ga.Compose(transforms, backend="torch").apply(packed, params)
        assert isinstance(out, list) and all(torch.equal(a, b) for a, b in zip(out, expected))

    def test_pickled_packed_batch_runs_the_same():
        images = images_of((20, 22), (9, 7), hwc=(0,))
        packed = pickle.loads(pickle.dumps(PackedBatch.from_images(images)))
        compose = ga.Compose([ga.RandomResizedCrop(8)], backend="triton")
        params = compose.make_params(packed, generator(10))
        assert torch.equal(compose(packed, params=params), compose(images, params=params))

    if CUDA and not INTERPRETED:

        def test_launches_per_batch_are_few_whatever_the_batch_size():
            from torch.profiler import ProfilerActivity, profile

            compose = ga.Compose(
                [
                    ga.RandomResizedCrop(224),
                    ga.RandomHorizontalFlip(),
                    ga.ColorJitter(0.4, 0.4, 0.4),
                    ga.Normalize(ga.IMAGENET_MEAN, ga.IMAGENET_STD),
                ]
            )
            for count in (8, 256):
                images = images_of(*[(200 + 7 * (index % 30), 300 - 5 * (index % 20)) for index in range(count)], seed=count)
                packed = PackedBatch.from_images(images)
                params = compose.make_params(packed, generator(11))
                compose(packed, params=params)  # compile
                torch.cuda.synchronize()
                with profile(activities=[ProfilerActivity.CUDA]) as profiler:
                    compose(packed, params=params)
                    torch.cuda.synchronize()
                kernels = [
                    event for event in profiler.events() if event.device_type.name == "CUDA" and "Memcpy" not in event.name
                ]
                assert len(kernels) <= 4, [event.name for event in kernels]

        def test_packed_batch_pins_and_moves():
            packed = PackedBatch.from_images([image.cpu() for image in images_of((5, 6), (7, 3))])
            pinned = packed.pin_memory()
            assert pinned.data.is_pinned() and pinned.sizes == packed.sizes
            moved = pinned.to("cuda")
            assert moved.device.type == "cuda" and torch.equal(moved.image(1).cpu(), packed.image(1))
