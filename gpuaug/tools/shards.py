"""``python -m gpuaug shards SRC DST --size 1GB``: an ``ImageFolder`` written as WebDataset tar shards.

Samples go in the folder's order (``ImageFolder``'s: classes sorted, then files), so
``WebDataset(DST/shard-*.tar)`` numbers them as ``ImageFolder(SRC)`` does and the loader gives the
same batches from both. Each sample is ``<key>.<image extension>`` (the file's bytes, unchanged)
and ``<key>.cls`` (its label); keys sort in sample order (``00000012_dog_b``). Each shard gets its
index (``<shard>.index.json``), the set a ``shards.json`` (wids' shard-list format, plus the class
names). Every file is written under a temporary name and renamed, so a killed run leaves no
half-written shard under a final name.

Example:
    >>> import tempfile, pathlib
    >>> from gpuaug.io.shards import WebDataset
    >>> root, out = pathlib.Path(tempfile.mkdtemp()), pathlib.Path(tempfile.mkdtemp())
    >>> for name in ("cat/a.jpg", "dog/b.png", "dog/c.jpg"):
    ...     (root / name).parent.mkdir(parents=True, exist_ok=True); _ = (root / name).write_bytes(name.encode())
    >>> [path.name for path in write_shards(root, out, size="1KB")]
    ['shard-000000.tar', 'shard-000001.tar', 'shard-000002.tar']
    >>> source = WebDataset(str(out / "shard-{000000..000002}.tar"))
    >>> [source[i] for i in range(3)]
    [(b'cat/a.jpg', 0), (b'dog/b.png', 1), (b'dog/c.jpg', 1)]
"""

from __future__ import annotations

import io
import os
import re
import tarfile
from pathlib import Path

from gpuaug.io.sources import ImageFolder, read_bytes
from gpuaug.io.tar_index import INDEX_SUFFIX, atomic_file, index_shard, parse_size, write_json_atomically

__all__ = ["sample_key", "write_shards"]

_RECORD = tarfile.RECORDSIZE


def sample_key(number: int, width: int, path: str, root: str) -> str:
    """``00000012_dog_b``: the sample number (sorting as the folder does), then its path, with no dot or slash.

    Example:
        >>> sample_key(12, 8, "/data/dog/b.v2.jpg", "/data")
        '00000012_dog_b_v2'
    """
    relative = os.path.splitext(os.path.relpath(path, root))[0]
    return f"{number:0{width}d}_{re.sub(r'[^A-Za-z0-9_-]+', '_', relative)}"


def _member(name: str, data: bytes) -> tuple[tarfile.TarInfo, io.BytesIO]:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime, info.uname, info.gname = len(data), 0o444, 0, "", ""
    return info, io.BytesIO(data)


def _tar_bytes(members: list[tuple[str, bytes]]) -> int:
    """The bytes ``members`` take in a USTAR tar: a header block each, data rounded up to whole blocks."""
    return sum(_BLOCK + -(-len(data) // _BLOCK) * _BLOCK for _, data in members)


def _closed_size(member_bytes: int) -> int:
    """A tar's size on disk: its members, the two end blocks, padded to whole records (as tarfile closes it)."""
    return -(-(member_bytes + 2 * _BLOCK) // _RECORD) * _RECORD


_BLOCK = tarfile.BLOCKSIZE


def write_shards(
    source: str | os.PathLike,
    destination: str | os.PathLike,
    size: int | str = "1GB",
    prefix: str = "shard-",
) -> list[Path]:
    """Write the ``ImageFolder`` at ``source`` as tar shards of at most ``size`` bytes in ``destination``.

    A sample larger than ``size`` gets a shard of its own.

    Args:
        source: an ImageFolder root (``source/<class>/<image>``).
        destination: the folder for the shards (created).
        size: the largest shard, ``"1GB"``, ``"512MiB"`` or bytes.
        prefix: shard names are ``<prefix>000000.tar``, ...

    Returns:
        The shards' paths, in order.

    Raises:
        FileNotFoundError: naming ``source`` when it is no ImageFolder.
        DecodeError: naming a file that cannot be read.
    """
    limit = parse_size(size)
    if limit < 1:
        raise ValueError(f"size must be positive, got {size!r}")
    folder = ImageFolder(source)
    out = Path(destination)
    out.mkdir(parents=True, exist_ok=True)
    width = max(8, len(str(len(folder) - 1)))
    shards: list[Path] = []
    listing: list[dict] = []
    pending: list[tuple[str, bytes]] = []
    count = pending_bytes = 0

    def flush() -> None:
        nonlocal pending, count, pending_bytes
        if not count:
            return
        path = out / f"{prefix}{len(shards):06d}.tar"
        with atomic_file(path) as file, tarfile.open(fileobj=file, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            for name, data in pending:
                tar.addfile(*_member(name, data))
        write_json_atomically(str(path) + INDEX_SUFFIX, index_shard(str(path)))
        shards.append(path)
        listing.append({"url": path.name, "nsamples": count, "filesize": path.stat().st_size})
        pending, count, pending_bytes = [], 0, 0

    for number, (path, label) in enumerate(folder.samples):
        key = sample_key(number, width, path, folder.root)
        extension = os.path.splitext(path)[1].lower().lstrip(".")
        sample = [(f"{key}.{extension}", read_bytes(path, max_bytes=None)), (f"{key}.cls", str(label).encode())]
        sample_bytes = _tar_bytes(sample)  # a running total: not the whole pending list again per sample
        if count and _closed_size(pending_bytes + sample_bytes) > limit:
            flush()
        pending += sample
        pending_bytes += sample_bytes
        count += 1
    flush()
    summary = {"__kind__": "wids-shard-index-v1", "wids_version": 1, "name": os.path.basename(os.path.abspath(source))}
    summary.update(shardlist=listing, classes=folder.classes)
    write_json_atomically(str(out / "shards.json"), summary)
    return shards
