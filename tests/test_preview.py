"""Preview grid, the safe transform parser and the `python -m gpuaug preview` command."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as tv1

import gpuaug as ga
from gpuaug.__main__ import main
from gpuaug.tools.parse import TransformSyntaxError, parse_transform
from gpuaug.tools.preview import GAP, grid
from gpuaug.tools.samples import load_photo


def test_grid_shape_seed_and_per_tile_draws():
    photo = load_photo("chelsea")
    transform = ga.Compose([ga.RandomResizedCrop(64, scale=(0.1, 1)), ga.ColorJitter(0.5, 0.5, 0.5, 0.2)])
    picture = grid(photo, transform, rows=2, cols=3, seed=1)
    assert picture.size == (3 * 64 + 2 * GAP, 2 * 64 + GAP)
    assert np.array_equal(np.asarray(picture), np.asarray(grid(photo, transform, rows=2, cols=3, seed=1)))
    assert not np.array_equal(np.asarray(picture), np.asarray(grid(photo, transform, rows=2, cols=3, seed=2)))
    tiles = [np.asarray(picture)[:64, col * (64 + GAP) : col * (64 + GAP) + 64] for col in range(3)]
    assert not np.array_equal(tiles[0], tiles[1]) and not np.array_equal(tiles[1], tiles[2])
    assert (np.asarray(picture)[:, 64 : 64 + GAP] == 255).all()  # white gaps


def test_grid_undoes_normalize_and_takes_torchvision():
    photo = load_photo("astronaut").resize((64, 64))
    picture = grid(photo, ga.Compose([ga.Normalize(ga.IMAGENET_MEAN, ga.IMAGENET_STD)]), rows=1, cols=1)
    assert np.abs(np.asarray(picture).astype(int) - np.asarray(photo).astype(int)).max() <= 1
    flipped = grid(photo, tv1.Compose([tv1.RandomHorizontalFlip(p=1.0)]), rows=1, cols=1)
    assert np.array_equal(np.asarray(flipped), np.asarray(photo)[:, ::-1])


def test_parser_builds_transforms():
    crop = parse_transform("RandomResizedCrop(200, scale=(0.1, 1), ratio=(0.5, 2))")
    assert isinstance(crop, ga.RandomResizedCrop) and crop.scale == (0.1, 1.0) and crop.ratio == (0.5, 2.0)
    pipeline = parse_transform(
        "Compose([RandomHorizontalFlip(), ColorJitter(brightness=0.5, hue=0.1), ToDtype(torch.bfloat16), "
        "Normalize(IMAGENET_MEAN, IMAGENET_STD)])"
    )
    assert [type(t).__name__ for t in pipeline.transforms] == ["RandomHorizontalFlip", "ColorJitter", "ToDtype", "Normalize"]
    assert pipeline.transforms[2].dtype == torch.bfloat16
    assert len(parse_transform("[ga.RandomVerticalFlip(0.2), CenterCrop((10, 20))]").transforms) == 2


@pytest.mark.parametrize(
    "text,fragment",
    [
        ("__import__('os').system('true')", "unknown transform"),
        ("RandomResizedCrop(open('x'))", "unknown transform"),
        ("RandomResizedCrop(size=x)", "unknown name"),
        ("RandomResizedCrop(224", "cannot parse"),
        ("RandomResizedCrop(224, scale=(0.9, 0.1))", "scale"),
        ("RandomResizedCrop(224, colour=1)", "unexpected keyword"),
        ("ColorJitter(**{'hue': 0.1})", "kwargs"),
        ("42", "expected a transform call"),
        ("RandomHorizontalFlip(p=[1 for _ in ()])", "not a literal"),
    ],
)
def test_parser_rejects_in_one_line(text, fragment):
    with pytest.raises(TransformSyntaxError, match=fragment) as caught:
        parse_transform(text)
    assert "\n" not in str(caught.value)


def test_cli_writes_grid(tmp_path):
    out = tmp_path / "grid.png"
    code = main(
        [
            "preview",
            "skimage:chelsea",
            "-t",
            "RandomResizedCrop(50, scale=(0.1, 1), ratio=(0.5, 2))",
            "--rows",
            "2",
            "--cols",
            "4",
            "-o",
            str(out),
        ]
    )
    assert code == 0
    assert Image.open(out).size == (4 * 50 + 3 * GAP, 2 * 50 + GAP)


def test_cli_bad_inputs_exit_2_with_one_line(tmp_path, capsys):
    for args in (
        ["preview", "skimage:chelsea", "-t", "Rotate(30)", "-o", str(tmp_path / "a.png")],
        ["preview", str(tmp_path / "missing.jpg"), "-o", str(tmp_path / "b.png")],
        ["preview", "skimage:unicorn", "-o", str(tmp_path / "c.png")],
    ):
        assert main(args) == 2
        error = capsys.readouterr().err
        assert error.count("\n") == 1 and error.startswith("error:")
    # and as a real process: no traceback, exit status 2
    result = subprocess.run(
        [sys.executable, "-m", "gpuaug", "preview", "skimage:chelsea", "-t", "Rotate(30)"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


# ----------------------------------------------------------------------------------------------
# Hostile input (issue 12, rows #7 and #7b): exit 2 with one line, before anything large is built
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text, fragment",
    [
        ("-" * 500 + "1", "nested 502 levels deep"),  # was RecursionError in the recursive walk
        ("RandomHorizontalFlip(p=" + "-" * 500 + "1)", "nested"),
        ("1+" * 20000, "40000 characters long"),  # was RecursionError in ast.parse
        ("not " * 5000, "20000 characters long"),
        ("not " * 2000 + "1", "nested 2002 levels deep"),
        ("a." * 3000 + "b", "nested too deeply"),  # the parser's own RecursionError, caught
        ("x" * 100_000, "100000 characters long"),
        ("CenterCrop(" + "9" * 5000 + ")", "cannot parse"),  # int of more than 4300 digits
        ("Resize(1\x00)", "null bytes"),
        ("CenterCrop(10000000000000000000000000000000)", "at most 65535"),  # 10**31 as a literal
        ("ColorJitter(brightness=1e999)", "brightness must be a finite number"),
        ("ColorJitter(brightness=10" + "0" * 400 + ")", "brightness must be a finite number"),
    ],
)
def test_parser_refuses_hostile_text_in_one_line(text, fragment):
    with pytest.raises(TransformSyntaxError, match=fragment) as caught:
        parse_transform(text)
    message = str(caught.value)
    assert "\n" not in message and len(message) < 400


def test_parser_limits_leave_real_transforms_alone():
    from gpuaug.__main__ import DEFAULT_TRANSFORM
    from gpuaug.tools.parse import MAX_DEPTH

    assert len(parse_transform(DEFAULT_TRANSFORM).transforms) == 3
    assert parse_transform("Compose([ColorJitter(hue=(-0.1, 0.1)), Normalize(mean=[-0.5], std=[2])])").transforms[0].hue
    assert MAX_DEPTH >= 16


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--transform=" + "-" * 500 + "1"], "bad transform: transform text is nested"),
        (["--transform=" + "1+" * 20000], "bad transform: transform text is 40000 characters long"),
        (["--transform=" + "not " * 5000], "bad transform: transform text is 20000 characters long"),
        (["-t", "x" * 100_000], "characters long"),
        (["-t", "CenterCrop(10000000000000000000000000000000)"], "size must be at most 65535"),
        (["-t", "Resize(100000)"], "size must be at most 65535"),
        (["-t", "Resize(60000)"], "in the output of Resize"),  # 8 tiles of 60000x90200: refused before allocating
        (["-t", "Compose([Resize(20000), CenterCrop(8)])"], "in the output of Resize"),  # a huge step in between
        (["--rows", "100000"], "at most 256 tiles"),
        (["--seed", str(10**30)], "seed must be an int"),
        (["--device", "nonsense"], "unknown device"),
        (["--device", "cuda:99"], "cuda:99"),
    ],
)
def test_cli_hostile_arguments_exit_2_with_one_line(tmp_path, capsys, args, fragment):
    out = tmp_path / "grid.png"
    assert main(["preview", "skimage:chelsea", *args, "-o", str(out)]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith("error:") and fragment in error
    assert not out.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without a GPU")
def test_cli_cuda_without_a_gpu_exits_2(tmp_path, capsys):
    assert main(["preview", "skimage:chelsea", "--device", "cuda", "-o", str(tmp_path / "g.png")]) == 2
    assert "no CUDA GPU is available here" in capsys.readouterr().err


def test_grid_bounds_are_checked_before_allocating():
    from gpuaug.tools.preview import MAX_PIXELS, MAX_TILES

    photo = torch.zeros(3, 4000, 3000, dtype=torch.uint8)
    with pytest.raises(ValueError, match="in the input copies"):  # 16 x 12 MP > MAX_PIXELS
        grid(photo, ga.RandomHorizontalFlip(), rows=4, cols=4)
    assert 16 * 4000 * 3000 > MAX_PIXELS >= 8 * 4000 * 3000  # a 12 MP photo still previews in 8 tiles
    with pytest.raises(ValueError, match="tiles"):
        grid(photo, ga.RandomHorizontalFlip(), rows=MAX_TILES + 1, cols=1)


def test_parser_builds_kornia_modules_and_the_preview_runs_them(tmp_path):
    import kornia.augmentation as K

    pipeline = parse_transform(
        "RandomResizedCrop(40), K.RandomAffine(degrees=(-20, 20), p=1.0), kornia.augmentation.RandomErasing(p=1.0)"
    )
    crop, affine, erasing = pipeline.transforms
    assert isinstance(affine, ga.KorniaTransform) and isinstance(affine.module, K.RandomAffine)
    assert affine.module.p == 1.0 and isinstance(erasing.module, K.RandomErasing)
    nested = parse_transform("K.AugmentationSequential(K.RandomAffine(10), K.RandomErasing())")
    assert isinstance(nested, ga.KorniaTransform) and len(list(nested.module.children())) == 2
    picture = grid(load_photo("chelsea"), pipeline, rows=1, cols=3, seed=0)
    assert picture.size == (3 * 40 + 2 * GAP, 40)
    assert np.array_equal(np.asarray(picture), np.asarray(grid(load_photo("chelsea"), pipeline, rows=1, cols=3, seed=0)))
    assert (np.asarray(picture) == 0).all(axis=2).any()  # RandomErasing(p=1) blacked out a patch


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("K.Nope(1)", "unknown Kornia augmentation 'K.Nope'"),
        ("K.__class__(1)", "unknown Kornia augmentation"),
        ("K.RandomAffine(degrees=-5)", "RandomAffine: "),  # Kornia's own check, in one line
        ("K.RandomResizedCrop(8)", "RandomResizedCrop: "),  # Kornia's TypeError/AssertionError
        ("K.RandomGaussianBlur((100001, 100001), (0.1, 2.0))", "at most 65535"),
        ("K.RandomAffine(open('x'))", "unknown transform 'open'"),
    ],
)
def test_parser_refuses_bad_kornia_calls_in_one_line(text, fragment):
    with pytest.raises(TransformSyntaxError, match=fragment) as caught:
        parse_transform(text)
    assert "\n" not in str(caught.value)


# ----------------------------------------------------------------------------------------------
# Issue 18 (low row) and #24: -o that is no image file, and argparse's own errors, in one line
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "output, fragment",
    [
        ("{tmp}", "is a folder; give an image file name such as"),  # was "unknown file extension:"
        ("", "-o/--output is empty"),
        ("/dev/full", "exists and is not a regular file"),
        ("{tmp}/grid", "has no image file extension; use one of"),
        ("{tmp}/grid.xyz", "unknown image file extension '.xyz'"),
        ("{tmp}/missing/grid.png", "cannot write"),  # names the file, not only "[Errno 2]"
    ],
)
def test_cli_output_that_is_no_image_file_exits_2_with_one_line(tmp_path, capsys, output, fragment):
    if output == "/dev/full" and not os.path.exists(output):
        pytest.skip("no /dev/full here")
    output = output.format(tmp=tmp_path)
    assert main(["preview", "skimage:chelsea", "-t", "CenterCrop(8)", "-o", output]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith("error:") and fragment in error, error
    assert "unknown file extension:" not in error


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["preview", "skimage:chelsea", "--rows", "abc"], "argument --rows: invalid int value: 'abc'"),
        (["preview", "skimage:chelsea", "--seed", "1.5"], "argument --seed: invalid int value"),
        (["preview"], "the following arguments are required: image"),
        (["preview", "skimage:chelsea", "--bogus"], "unrecognized arguments: --bogus"),
        (["nope"], "invalid choice: 'nope'"),
        ([], "the following arguments are required: command"),
    ],
)
def test_cli_argparse_errors_are_one_line(capsys, args, fragment):
    """argparse printed its usage block (4 lines) before the message: one line now, still exit 2."""
    with pytest.raises(SystemExit) as caught:
        main(args)
    assert caught.value.code == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith("error:") and fragment in error and "--help" in error, error
