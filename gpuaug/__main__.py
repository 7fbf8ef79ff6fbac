"""Command line: ``python -m gpuaug preview IMAGE -t "TRANSFORM" --rows 2 --cols 4 -o grid.png``."""

from __future__ import annotations

import argparse
import sys

from gpuaug.tools.parse import TransformSyntaxError, parse_transform

# The seed's combined augmentation (d2l, "Image Augmentation": flip, colour, shape).
DEFAULT_TRANSFORM = (
    "RandomHorizontalFlip(), ColorJitter(brightness=0.5, contrast=0.5, saturation=0.5, hue=0.5), "
    "RandomResizedCrop(200, scale=(0.1, 1), ratio=(0.5, 2))"
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m gpuaug", description="gpuaug tools")
    commands = parser.add_subparsers(dest="command", required=True)
    preview = commands.add_parser(
        "preview",
        help="apply a transform to many copies of one image and save them as a grid",
        description="Apply a transform to rows x cols copies of IMAGE (a different random draw each) "
        "and save the grid as an image.",
    )
    preview.add_argument("image", help="image file, or skimage:NAME for a bundled photo (e.g. skimage:chelsea)")
    preview.add_argument(
        "-t",
        "--transform",
        default=DEFAULT_TRANSFORM,
        help='transform text, e.g. "RandomResizedCrop(200, scale=(0.1, 1), ratio=(0.5, 2))"; '
        "several comma-separated calls make a Compose; Kornia's augmentations as K.Name(...), e.g. K.RandomAffine(30) "
        "(default: the d2l flip + colour + shape augmentation)",
    )
    preview.add_argument("--rows", type=int, default=2, help="grid rows (default 2)")
    preview.add_argument("--cols", type=int, default=4, help="grid columns (default 4)")
    preview.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    preview.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    preview.add_argument("-o", "--output", default="grid.png", help="output image file (default grid.png)")
    return parser


def _one_line(error: BaseException, limit: int = 500) -> str:
    """The first line of an error's message, at most ``limit`` characters (torch appends C++ frames)."""
    lines = str(error).strip().splitlines()
    text = lines[0] if lines else ""
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from gpuaug.tools.preview import grid

    try:
        transform = parse_transform(args.transform)
        picture = grid(args.image, transform, rows=args.rows, cols=args.cols, seed=args.seed, device=args.device)
        picture.save(args.output)
    except TransformSyntaxError as error:
        print(f"error: bad transform: {_one_line(error)}", file=sys.stderr)
        return 2
    except (ValueError, TypeError, OSError, RuntimeError, MemoryError) as error:
        # RuntimeError: torch's own (out of memory, a CUDA fault); one line, no C++ frames
        print(f"error: {_one_line(error) or type(error).__name__}", file=sys.stderr)
        return 2
    print(f"wrote {args.output} ({args.rows}x{args.cols}, {transform!r})".replace("\n", ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
