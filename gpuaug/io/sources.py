"""Byte sources: what DataLoader workers read (file bytes and labels), nothing decoded.

``ImageFolder`` has torchvision's ``ImageFolder`` layout, classes, labels, extensions and
ordering (it uses torchvision's own ``find_classes``/``make_dataset``), but ``dataset[i]`` is
``(bytes, label)``: the decoding happens later, on the device.

Example:
    >>> import tempfile, pathlib
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> for name in ("cat/a.jpg", "dog/b.png"):
    ...     (root / name).parent.mkdir(parents=True, exist_ok=True); _ = (root / name).write_bytes(b"x")
    >>> folder = ImageFolder(root)
    >>> folder.classes, folder.targets, folder[1][1]
    (['cat', 'dog'], [0, 1], 1)
"""

from __future__ import annotations

import numbers
import os
import stat
from collections.abc import Callable, Sequence
from pathlib import Path

from torch.utils.data import Dataset
from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

from gpuaug.io.decode import DecodeError

__all__ = ["DEFAULT_MAX_BYTES", "IMG_EXTENSIONS", "FileList", "ImageFolder", "MemberPath", "read_bytes"]


# The largest file the pixel limit can need: an uncompressed RGBA image of DEFAULT_MAX_PIXELS
# pixels is 716 MB (a BMP or TIFF); compressed formats are far smaller.
DEFAULT_MAX_BYTES = 1 << 30


class MemberPath(str):
    """A path naming a member of a container (a tar shard): :func:`read_bytes` asks it to ``read`` itself.

    A container source (``gpuaug.io.shards.WebDataset``) puts these in its ``samples``, so the
    workers' one read path (``read_bytes(path)``) reads a member by offset. It pickles as a plain
    ``str`` (the name that errors and ``stats.skipped_paths`` show).
    """

    __slots__ = ()

    def read(self, max_bytes: int | None) -> bytes:  # pragma: no cover - containers override it
        raise NotImplementedError

    def __reduce__(self) -> tuple:
        return (str, (str(self),))


def read_bytes(path: str, max_bytes: int | None = DEFAULT_MAX_BYTES) -> bytes:
    """The whole file, or a :class:`DecodeError` naming it (so ``on_error="skip"`` can count it).

    Only regular files are read: a FIFO, a device (``/dev/zero``), a socket or a folder named like
    an image is refused by name, without blocking (opened with ``O_NONBLOCK``, its type checked on
    the open descriptor). A file larger than ``max_bytes`` (default :data:`DEFAULT_MAX_BYTES`, 1 GiB;
    None: no limit) is refused before it is read.

    Args:
        path: the file.
        max_bytes: the largest file accepted.

    Raises:
        DecodeError: naming ``path``: missing, unreadable, not a regular file, or too large.

    Example:
        >>> read_bytes("/dev/zero")
        Traceback (most recent call last):
        gpuaug.io.decode.DecodeError: cannot decode /dev/zero: not a regular file (a character device)
    """
    if isinstance(path, MemberPath):
        return path.read(max_bytes)
    try:
        descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except OSError as error:
        raise DecodeError(path, f"cannot read the file ({error.strerror or error})") from None
    try:
        mode = os.fstat(descriptor)
        if not stat.S_ISREG(mode.st_mode):
            raise DecodeError(path, f"not a regular file ({_file_kind(mode.st_mode)})")
        if max_bytes is not None and mode.st_size > max_bytes:
            raise DecodeError(path, f"the file has {mode.st_size:,} bytes, more than max_bytes={max_bytes:,}")
        with open(descriptor, "rb", closefd=False) as file:
            data = file.read() if max_bytes is None else file.read(max_bytes + 1)
    except OSError as error:
        raise DecodeError(path, f"cannot read the file ({error.strerror or error})") from None
    finally:
        os.close(descriptor)
    if max_bytes is not None and len(data) > max_bytes:  # it grew while being read
        raise DecodeError(path, f"the file has more than max_bytes={max_bytes:,} bytes")
    return data


def _file_kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISDIR, "a folder"),
    ):
        if test(mode):
            return name
    return "not a plain file"


class FileList(Dataset):
    """A list of ``(path, label)`` as a byte source: ``source[i] == (bytes, label)``.

    Args:
        samples: ``(path, label)`` pairs; labels are integers (Python or numpy).
    """

    def __init__(self, samples: Sequence[tuple[str | os.PathLike, int]]) -> None:
        checked = []
        for position, sample in enumerate(samples):
            if not isinstance(sample, (tuple, list)) or len(sample) != 2:
                raise ValueError(f"sample {position} must be a (path, label) pair, got {sample!r}")
            path, label = sample
            if not isinstance(path, (str, os.PathLike)) or isinstance(label, bool) or not isinstance(label, numbers.Integral):
                raise ValueError(f"sample {position} must be (path: str, label: int), got {sample!r}")
            checked.append((os.fspath(path), int(label)))
        self.samples = checked
        self.targets = [label for _, label in checked]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[bytes, int]:
        path, label = self.samples[index]
        return read_bytes(path), label


class ImageFolder(FileList):
    """torchvision's ``ImageFolder`` as a byte source: ``root/<class>/<image>``.

    Same ``classes`` (sorted folder names), ``class_to_idx``, ``samples``, ``targets``,
    ``extensions`` and order as ``torchvision.datasets.ImageFolder(root)``.

    Args:
        root: the folder holding one sub-folder per class.
        extensions: accepted file extensions (torchvision's ``IMG_EXTENSIONS`` by default).
        is_valid_file: alternatively, a function of the path deciding which files count.
        allow_empty: accept class folders without images.

    Raises:
        FileNotFoundError: naming ``root`` when it is missing, has no class folders, or has no
            image with an accepted extension.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        extensions: tuple[str, ...] | None = IMG_EXTENSIONS,
        is_valid_file: Callable[[str], bool] | None = None,
        allow_empty: bool = False,
    ) -> None:
        root = os.fspath(root)
        if not os.path.isdir(root):
            raise FileNotFoundError(f"ImageFolder root {root!r} is not a folder; expected {root}/<class>/<image files>")
        try:
            classes, class_to_idx = find_classes(root)
        except FileNotFoundError:
            raise FileNotFoundError(
                f"ImageFolder root {root!r} has no class folders; expected {root}/<class>/<image files>"
            ) from None
        if is_valid_file is not None:
            extensions = None
        try:
            samples = make_dataset(root, class_to_idx, extensions, is_valid_file, allow_empty=allow_empty)
        except FileNotFoundError as error:
            raise FileNotFoundError(f"ImageFolder root {root!r}: {error}") from None
        super().__init__(samples)
        self.root = root
        self.classes = classes
        self.class_to_idx = class_to_idx
        self.extensions = extensions
        self.imgs = self.samples

    def __repr__(self) -> str:
        return f"ImageFolder(root={self.root!r}, classes={len(self.classes)}, images={len(self)})"


def is_file_list(dataset: object) -> bool:
    """Whether ``dataset`` is a plain list of ``(path, label)`` pairs."""
    return (
        isinstance(dataset, (list, tuple))
        and len(dataset) > 0
        and all(isinstance(item, (list, tuple)) and len(item) == 2 and isinstance(item[0], (str, Path)) for item in dataset)
    )
