"""The tar index behind ``WebDataset``: members' offsets and labels, read by streaming a shard once.

A WebDataset-layout tar holds samples as members sharing a key (``key.jpg`` + ``key.cls``; the
key is the path up to the first dot of the file name, WebDataset's rule). :func:`build_index`
streams a tar (any binary file object: a local file, an fsspec remote file) and records every
sample's members (``[extension, data offset, size]``) and label (by a :class:`LabelRule`). The
index file (``<shard>.index.json``) is JSON, not pickle (as ``wids`` writes), so an index read from
a shared location runs no code. Python's ``tarfile`` ends a listing silently at a damaged header or
at a truncation on a block boundary; :func:`build_index` and :func:`index_shard` check that the
end-of-archive blocks follow the last member, and say where the damage starts.

Example:
    >>> import io, tarfile
    >>> buffer = io.BytesIO()
    >>> with tarfile.open(fileobj=buffer, mode="w") as tar:
    ...     for name, data in (("a.jpg", b"JPEG"), ("a.cls", b"3"), ("b.png", b"PNG")):
    ...         info = tarfile.TarInfo(name); info.size = len(data); tar.addfile(info, io.BytesIO(data))
    >>> built = build_index(io.BytesIO(buffer.getvalue()), "mem.tar")
    >>> built["keys"], built["members"][0], built["labels"]
    (['a', 'b'], [['jpg', 512, 4], ['cls', 1536, 1]], [3, None])
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tarfile
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO

import braceexpand
import fsspec

from gpuaug.io.decode import DecodeError

__all__ = [
    "IMAGE_KEYS",
    "INDEX_FORMAT",
    "INDEX_SUFFIX",
    "LABEL_KEYS",
    "LabelRule",
    "atomic_file",
    "build_index",
    "check_end",
    "expand_urls",
    "index_shard",
    "index_stream",
    "is_local",
    "open_fs",
    "parse_size",
    "write_json_atomically",
]

INDEX_SUFFIX = ".index.json"
INDEX_FORMAT = "gpuaug.tar-index"
IMAGE_KEYS = ("jpg", "jpeg", "png", "webp", "ppm", "bmp", "pgm", "tif", "tiff")  # torchvision's IMG_EXTENSIONS
LABEL_KEYS = ("cls", "txt")
BLOCK = tarfile.BLOCKSIZE
_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12, "kib": 2**10, "mib": 2**20, "gib": 2**30}
_UNITS["tib"] = 2**40


def parse_size(size: int | str) -> int:
    """Bytes from ``1GB`` (10^9), ``512MiB`` (2^29), ``1.5gb`` or an int.

    Example:
        >>> parse_size("1GB"), parse_size("2KiB"), parse_size(7)
        (1000000000, 2048, 7)
    """
    if isinstance(size, int) and not isinstance(size, bool):
        if size < 0:
            raise ValueError(f"a size must be >= 0, got {size}")
        return size
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(size))
    if match is None or match.group(2).lower() not in _UNITS:
        raise ValueError(f"cannot read {size!r} as a size; use e.g. 1GB, 512MB, 2GiB or a number of bytes")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def expand_urls(urls: str | os.PathLike | Sequence[str | os.PathLike]) -> list[str]:
    """Shard paths or URLs from one path, a brace pattern (``shard-{000..127}.tar``) or a list of them.

    Example:
        >>> expand_urls("s3://bucket/shard-{00..02}.tar")
        ['s3://bucket/shard-00.tar', 's3://bucket/shard-01.tar', 's3://bucket/shard-02.tar']
    """
    items = [urls] if isinstance(urls, (str, os.PathLike)) else list(urls)
    expanded = [url for item in items for url in braceexpand.braceexpand(os.fspath(item))]
    if not expanded:
        raise ValueError("no shards given")
    return expanded


def _split_name(name: str) -> tuple[str, str]:
    """WebDataset's rule: the key is the path up to the first dot of the file name, the rest is the extension."""
    folder, _, base = name.rpartition("/")
    stem, dot, extension = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), extension.lower() if dot else ""


@dataclass(frozen=True)
class LabelRule:
    """Where a sample's label comes from: the first member in ``keys`` (text: an int, or a name in
    ``classes``), or, when ``field`` is set, that field of the sample's ``.json`` member."""

    keys: tuple[str, ...] = LABEL_KEYS
    field: str | None = None
    classes: tuple[str, ...] | None = None

    def members(self) -> tuple[str, ...]:
        return ("json",) if self.field is not None else self.keys

    def parse(self, data: bytes, where: str) -> int:
        """The label in a label member's bytes, or a :class:`DecodeError` naming ``where``."""
        try:
            value: Any = json.loads(data)[self.field] if self.field is not None else data.decode("utf-8").strip()
        except (ValueError, KeyError, TypeError) as error:
            raise DecodeError(where, f"no label: {type(error).__name__}: {error}") from None
        if isinstance(value, str) and self.classes is not None and value in self.classes:
            return self.classes.index(value)
        try:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
        except (ValueError, TypeError):
            hint = "" if self.classes is not None else "; pass classes=[...] to map class names to labels"
            raise DecodeError(where, f"the label {value!r} is not an integer{hint}") from None

    def describe(self) -> dict[str, Any]:
        return {"keys": list(self.keys), "field": self.field, "classes": list(self.classes) if self.classes else None}


def open_fs(url: str, storage_options: dict[str, Any], timeout: float) -> tuple[Any, str]:
    """The fsspec filesystem and path of ``url``; HTTP gets a total timeout on every request."""
    options = dict(storage_options)
    if url.startswith(("http://", "https://")) and "client_kwargs" not in options:
        import aiohttp  # fsspec's HTTP filesystem needs it; only HTTP sources import it

        options["client_kwargs"] = {"timeout": aiohttp.ClientTimeout(total=timeout)}
    return fsspec.core.url_to_fs(url, **options)


def is_local(fs: Any) -> bool:
    return "file" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,))


def check_end(tail: bytes, shard: str, last: str) -> None:
    """A tar ends with zero blocks; anything else where tarfile stopped is damage it passes over silently."""
    after = f" after member {last}" if last else ""
    if len(tail) < BLOCK:
        inside = f" inside or right after member {last}" if last else ""
        raise DecodeError(shard, f"truncated tar: it ends{inside}, without the end-of-archive blocks")
    if tail.strip(b"\0"):
        raise DecodeError(shard, f"corrupt tar: an invalid member header{after}")


def build_index(stream: Any, shard: str, rule: LabelRule = LabelRule(), partial: bool = False) -> dict[str, Any]:
    """Index a tar by streaming it once: every sample's members ``[extension, data offset, size]`` and label.

    ``stream`` is a binary file object at the shard's start. A label that cannot be read is stored
    as None (the sample is refused when read, naming it). ``end`` is where the members end (the
    end-of-archive blocks should follow), ``last`` the last member read.

    Raises:
        DecodeError: naming the shard and the last good member when the tar is truncated or corrupt
            (with ``partial``, returned as ``error`` beside the samples indexed before it instead).
    """
    keys: list[str] = []
    members: list[list[list[Any]]] = []
    labels: list[int | None] = []
    position: dict[str, int] = {}
    built: dict[str, Any] = {"keys": keys, "members": members, "labels": labels, "end": 0, "last": "", "error": None}
    complete: set[str] = set()  # keys whose members were all read before a failure
    try:
        with tarfile.open(fileobj=stream, mode="r|") as tar:
            for info in tar:
                if not info.isfile():
                    continue
                key, extension = _split_name(info.name)
                if key not in position:
                    complete.update(keys[-1:])
                    position[key] = len(keys)
                    keys.append(key)
                    members.append([])
                    labels.append(None)
                row = position[key]
                if extension in rule.members() and labels[row] is None and info.size <= 1 << 20:
                    data = tar.extractfile(info).read()
                    if len(data) != info.size:
                        raise tarfile.ReadError("unexpected end of data")
                    try:
                        labels[row] = rule.parse(data, f"{shard}#{info.name}")
                    except DecodeError:
                        labels[row] = None
                members[row].append([extension, info.offset_data, info.size])
                built["last"] = info.name
            built["end"] = tar.offset
    except (tarfile.TarError, EOFError, OSError, ValueError) as error:
        where = f" after member {built['last']}" if built["last"] else ""
        failure = DecodeError(shard, f"truncated or corrupt tar{where} ({type(error).__name__}: {error})")
        if not partial:
            raise failure from None
        keep = len([key for key in keys if key in complete])
        del keys[keep:], members[keep:], labels[keep:]
        built["error"] = failure
    return built


def index_stream(
    stream: Any, shard: str, size: int, rule: LabelRule = LabelRule(), partial: bool = False
) -> tuple[dict[str, Any], DecodeError | None]:
    """The index file's content for the tar ``stream`` (``size`` bytes, a seekable binary file at its start),
    streamed once, its end blocks read from the same stream; and the damage found (None: whole).

    ``partial``: damage is returned, the index keeping the complete samples before it (a sample right
    before a bad end may miss members: left out); otherwise it is raised.

    Raises:
        DecodeError: naming the shard when it is truncated or corrupt (not ``partial``).
    """
    built = build_index(stream, shard, rule, partial=partial)
    if built["error"] is None:
        stream.seek(built["end"])
        try:
            check_end(stream.read(BLOCK), shard, built["last"])
        except DecodeError as error:
            if not partial:
                raise
            built["error"] = error
            for field in ("keys", "members", "labels"):
                del built[field][-1:]
    index = {"format": INDEX_FORMAT, "version": 1, "shard_bytes": size, "label": rule.describe()}
    index.update(keys=built["keys"], members=built["members"], labels=built["labels"])
    return index, built["error"]


def index_shard(path: str, rule: LabelRule = LabelRule()) -> dict[str, Any]:
    """The index file's content for the local shard ``path`` (what ``WebDataset`` writes beside it).

    Raises:
        DecodeError: naming the shard when it is truncated or corrupt.
    """
    with open(path, "rb") as stream:
        return index_stream(stream, path, os.path.getsize(path), rule)[0]


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, prefix: str = ".part-") -> Iterator[BinaryIO]:
    """A new binary file beside ``path`` (its temporary name in ``.name``) that replaces ``path`` when the
    block ends, and is removed if the block raises: readers see the old file or the whole new one.

    Example:
        >>> import tempfile
        >>> target = os.path.join(tempfile.mkdtemp(), "a.bin")
        >>> with atomic_file(target) as file:
        ...     _ = file.write(b"whole")
        >>> open(target, "rb").read()
        b'whole'
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=prefix)
    os.close(handle)
    try:
        with open(temporary, "wb") as file:
            yield file
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


def write_json_atomically(path: str, value: Any) -> None:
    """Write JSON to a temporary file beside ``path`` and rename it over ``path`` (any fsspec URL; local: atomic)."""
    fs, target = fsspec.core.url_to_fs(path)
    text = json.dumps(value, separators=(",", ":")).encode()
    if not is_local(fs):
        fs.pipe_file(target, text)
        return
    with atomic_file(target, prefix=".index-") as file:
        file.write(text)
