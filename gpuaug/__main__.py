"""Command line: ``python -m gpuaug preview IMAGE -t "TRANSFORM" --rows 2 --cols 4 -o grid.png``."""

from __future__ import annotations

import argparse
import os
import stat
import sys

from gpuaug.tools.parse import TransformSyntaxError, parse_transform
from gpuaug.tools.shards import write_shards

# The seed's combined augmentation (d2l, "Image Augmentation": flip, colour, shape).
DEFAULT_TRANSFORM = (
    "RandomHorizontalFlip(), ColorJitter(brightness=0.5, contrast=0.5, saturation=0.5, hue=0.5), "
    "RandomResizedCrop(200, scale=(0.1, 1), ratio=(0.5, 2))"
)


class _OneLineParser(argparse.ArgumentParser):
    """argparse's errors in one line (``error: ...``, exit 2) instead of the usage block and the message."""

    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"error: {message.splitlines()[0] if message else 'bad arguments'} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(prog="python -m gpuaug", description="gpuaug tools")
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
    shards = commands.add_parser(
        "shards",
        help="write an ImageFolder as WebDataset tar shards (for ga.WebDataset)",
        description="Write the ImageFolder SRC as tar shards in DST, in the folder's order (sorted keys, labels as .cls), "
        "an index beside each shard and a shards.json listing them.",
    )
    shards.add_argument("source", metavar="SRC", help="ImageFolder root (SRC/<class>/<image>)")
    shards.add_argument("destination", metavar="DST", help="folder for the shards (created)")
    shards.add_argument("--size", default="1GB", help="largest shard, e.g. 1GB, 512MB, 2GiB (default 1GB)")
    shards.add_argument("--prefix", default="shard-", help="shard name prefix (default shard-)")
    return parser


def _one_line(error: BaseException, limit: int = 500) -> str:
    """The first line of an error's message, at most ``limit`` characters (torch appends C++ frames)."""
    lines = str(error).strip().splitlines()
    text = lines[0] if lines else ""
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


def _output_problem(output: str) -> str | None:
    """Why ``-o`` cannot take the grid, before anything is computed (PIL says only "unknown file extension")."""
    from PIL import Image

    if not output:
        return "-o/--output is empty; give an image file name such as grid.png"
    if os.path.isdir(output):
        return f"-o {output!r} is a folder; give an image file name such as {os.path.join(output, 'grid.png')!r}"
    try:
        mode = os.stat(output).st_mode
    except OSError:
        mode = None
    if mode is not None and not stat.S_ISREG(mode):  # a FIFO would block, a device (/dev/full) is no image file
        return f"-o {output!r} exists and is not a regular file; give an image file name such as grid.png"
    extension = os.path.splitext(output)[1].lower()
    if extension not in Image.registered_extensions():
        known = ", ".join(sorted({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tiff"} & set(Image.registered_extensions())))
        what = f"unknown image file extension {extension!r}" if extension else "no image file extension"
        return f"-o {output!r} has {what}; use one of {known}"
    return None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "shards":
        try:
            written = write_shards(args.source, args.destination, size=args.size, prefix=args.prefix)
        except (ValueError, OSError) as error:  # DecodeError is a ValueError
            print(f"error: {_one_line(error) or type(error).__name__}", file=sys.stderr)
            return 2
        print(f"wrote {len(written)} shard(s) to {args.destination}")
        return 0
    from gpuaug.tools.preview import grid

    problem = _output_problem(args.output)
    if problem is not None:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    try:
        transform = parse_transform(args.transform)
        picture = grid(args.image, transform, rows=args.rows, cols=args.cols, seed=args.seed, device=args.device)
        try:
            picture.save(args.output)
        except OSError as error:  # a missing folder, no permission, a full disk: name the file
            raise OSError(f"cannot write {args.output!r}: {error.strerror or error}") from None
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
