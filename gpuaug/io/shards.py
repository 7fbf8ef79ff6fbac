"""WebDataset tar shards as a map-style byte source, from a folder or any fsspec location.

A shard is a tar file in the WebDataset layout: the members of one sample share a key
(``00000012_dog_b.jpg`` + ``00000012_dog_b.cls``). :class:`WebDataset` gives random access to
them: ``source[i] == (image bytes, label)``, like ``ImageFolder``, so the loader's path (and its
seeded per-index draws) is unchanged, and the same images in shards and in a folder, in the same
order, give the same batches.

* **Index.** Every shard gets an index of its members' data offsets, sizes and the samples'
  labels (``<shard>.index.json``; ``python -m gpuaug shards`` writes them), built once by
  streaming the shard and cached beside it when that location is writable, else in
  ``cache_dir``. An index whose recorded shard size differs from the shard's is rebuilt (with a
  warning). Every read checks the member's own tar header (name, size, checksum) and the label
  read from the shard against the index's: a stale index is a :class:`DecodeError` naming the
  shard and member, never a silently mislabelled sample.
* **Reads.** Local shards: positioned reads (``os.pread``). Remote shards (``http://``,
  ``s3://`` with s3fs, ``memory://``, any fsspec URL): range reads with a timeout, or, with
  ``cache_bytes``, whole shards fetched once into a local LRU cache of at most that many bytes
  (a shard larger than the cache is range-read).
* **Bad input.** A truncated or corrupt shard, a sample without an image or a label, an
  unreachable URL: a :class:`DecodeError` naming the shard (and member). Sample faults are raised
  when the sample is read, so ``GPULoader(on_error="skip")`` skips them; shard faults are raised
  when the source is built, or the shard is left out with a warning under ``on_error="skip"``.

Example:
    >>> import io, tarfile, tempfile, os
    >>> folder = tempfile.mkdtemp()
    >>> with tarfile.open(os.path.join(folder, "shard-0.tar"), "w") as tar:
    ...     for key, data in (("a.jpg", b"JPEG"), ("a.cls", b"3")):
    ...         info = tarfile.TarInfo(key); info.size = len(data); tar.addfile(info, io.BytesIO(data))
    >>> source = WebDataset(os.path.join(folder, "shard-{0..0}.tar"))
    >>> len(source), source[0], source.samples[0][0].endswith("shard-0.tar#a.jpg")
    (1, (b'JPEG', 3), True)
"""

from __future__ import annotations

import bisect
import contextlib
import hashlib
import json
import os
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from gpuaug.io.decode import DecodeError
from gpuaug.io.sources import DEFAULT_MAX_BYTES, FileList, MemberPath
from gpuaug.io.tar_index import (
    BLOCK,
    IMAGE_KEYS,
    INDEX_FORMAT,
    INDEX_SUFFIX,
    LABEL_KEYS,
    LabelRule,
    atomic_file,
    expand_urls,
    index_stream,
    is_local,
    open_fs,
    parse_size,
    write_json_atomically,
)

__all__ = ["ShardCache", "ShardMember", "WebDataset", "header_matches"]


def _number(field: bytes) -> int | None:
    """A tar number field: octal text, or GNU's base-256 (first byte 0x80 or 0xff); None if neither."""
    if field[:1] in (b"\x80", b"\xff"):
        value = int.from_bytes(field[1:], "big")
        return value - (1 << (8 * len(field) - 8)) if field[0] == 0xFF else value
    try:
        return int(field.split(b"\0", 1)[0].strip() or b"0", 8)
    except ValueError:
        return None


def header_matches(header: bytes, name: str, size: int) -> bool:
    """Whether ``header`` is a valid tar header block (tar's checksum, unsigned or signed, as ``tarfile``
    accepts) of a member called ``name`` (or the part of it a header holds) with ``size`` bytes.

    The fields are read where tar keeps them: ``tarfile.TarInfo.frombuf`` parses every field and cost
    ~60 us a read, more than the positioned read itself.

    Example:
        >>> import tarfile
        >>> info = tarfile.TarInfo("a/b.jpg"); info.size = 4
        >>> block = info.tobuf()
        >>> damaged = block[:-1] + b"x"
        >>> header_matches(block, "a/b.jpg", 4), header_matches(block, "a/b.jpg", 5), header_matches(damaged, "a/b.jpg", 4)
        (True, False, False)
    """
    if len(header) != BLOCK:
        return False
    stored = _number(header[148:156])
    unsigned = sum(header) - sum(header[148:156]) + 8 * 32  # the checksum field counts as spaces
    if stored != unsigned:
        signed = unsigned - 256 * sum(1 for byte in header[:148] + header[156:] if byte > 127)
        if stored != signed:
            return False
    if _number(header[124:136]) != size:
        return False
    member = header[:100].split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
    prefix = header[345:500].split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
    if prefix and header[156:157] not in (b"L", b"K", b"S"):  # a ustar long name (tarfile's rule)
        member = f"{prefix}/{member}"
    return member == name or name.startswith(member) or name.endswith(member)


class ShardCache:
    """A folder of whole remote shards, at most ``max_bytes`` in all, the least recently used evicted.

    Shared by the worker processes (downloads land under a temporary name and are renamed; a
    reader keeps its open descriptor if another process evicts the file).

    Example:
        >>> import tempfile
        >>> cache = ShardCache(tempfile.mkdtemp(), "1MB")
        >>> cache.max_bytes, cache.used()
        (1000000, 0)
    """

    def __init__(self, directory: str | os.PathLike, max_bytes: int | str) -> None:
        self.directory = os.fspath(directory)
        self.max_bytes = parse_size(max_bytes)

    def path(self, url: str) -> str:
        digest = hashlib.sha1(url.encode()).hexdigest()[:16]
        return os.path.join(self.directory, f"{digest}-{os.path.basename(url.rstrip('/'))[-80:]}")

    def used(self) -> int:
        """Bytes of finished shards held now."""
        return sum(size for _, size, _ in self._entries())

    def _entries(self) -> list[tuple[float, int, str]]:
        entries = []
        with os.scandir(self.directory) if os.path.isdir(self.directory) else contextlib.nullcontext([]) as found:
            for entry in found:
                if entry.name.startswith(".") or not entry.is_file():
                    continue
                try:
                    status = entry.stat()
                except FileNotFoundError:
                    continue
                entries.append((status.st_mtime_ns, status.st_size, entry.path))
        return entries

    def open(self, fs: Any, path: str, url: str, size: int) -> int | None:
        """A descriptor of the cached whole shard (fetched now if missing), or None when it cannot fit."""
        if size > self.max_bytes:
            return None
        local = self.path(url)
        try:
            descriptor = os.open(local, os.O_RDONLY)
            os.utime(local)  # most recently used
            return descriptor
        except FileNotFoundError:
            pass
        with atomic_file(local) as out:
            with fs.open(path, "rb") as remote:
                while chunk := remote.read(1 << 22):
                    out.write(chunk)
            if out.tell() != size:
                raise DecodeError(url, f"the download has {out.tell():,} bytes, the shard {size:,}")
            out.flush()
            descriptor = os.open(out.name, os.O_RDONLY)  # kept if another process evicts the file
        self.evict(keep=local)
        return descriptor

    def evict(self, keep: str | None = None) -> None:
        """Delete the least recently used shards until at most ``max_bytes`` remain."""
        entries = sorted(self._entries())
        total = sum(size for _, size, _ in entries)
        for _, size, path in entries:
            if total <= self.max_bytes:
                break
            if path == keep:
                continue
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            total -= size


@dataclass
class _Shard:
    url: str
    size: int
    keys: list[str]
    members: list[list[list[Any]]]
    labels: list[int | None]


@dataclass(frozen=True)
class _Plan:
    """How to read one sample: its shard and row, image and label members, and the byte ranges to read."""

    shard: _Shard
    row: int
    key: str
    image: list[Any]
    label: list[Any]
    where: str
    spans: list[tuple[int, int]]  # each member's header block and data
    reads: list[tuple[int, int]]  # the ranges read: one covering both spans where they are close


class ShardMember(MemberPath):
    """``shard#member``: a sample's image in a shard, read by its source (see ``gpuaug.io.sources.MemberPath``)."""

    def __new__(cls, name: str, source: WebDataset, index: int) -> ShardMember:
        member = super().__new__(cls, name)
        member.source, member.index = source, index
        return member

    def read(self, max_bytes: int | None) -> bytes:
        return self.source.read_image(self.index, max_bytes)


class _Samples(Sequence):
    """``samples[i] == (ShardMember, label)``, made on demand."""

    def __init__(self, source: WebDataset) -> None:
        self.source = source

    def __len__(self) -> int:
        return len(self.source.targets)

    def __getitem__(self, index: int) -> tuple[ShardMember, int]:  # type: ignore[override]
        if isinstance(index, slice):
            return [self[position] for position in range(*index.indices(len(self)))]
        shard, row = self.source.locate(index)
        name = f"{shard.url}#{shard.keys[row]}.{self.source.image_member(shard, row)[0]}"
        return ShardMember(name, self.source, index % len(self)), self.source.targets[index]  # locate checked the range


class WebDataset(FileList):
    """WebDataset-layout tar shards as a map-style source: ``source[i] == (image bytes, label)``.

    Samples are numbered in shard order, then in the order of their keys' first members in the
    shard. A ``FileList`` for the loader: ``GPULoader(WebDataset(...))`` reads each image by offset
    in the workers, with every other behaviour of a folder.

    Args:
        urls: shard paths or fsspec URLs, a brace pattern (``shard-{000..127}.tar``) or a list.
        image_keys: image member extensions, the first present is the image.
        label_keys: label member extensions (text: an integer, or a name in ``classes``).
        label_field: take the label from this field of the ``.json`` member instead.
        classes: class names, for labels written as names.
        cache_dir: where remote shards (with ``cache_bytes``) and indexes that cannot be written
            beside their shard are kept (default ``$GPUAUG_CACHE`` or ``~/.cache/gpuaug``).
        cache_bytes: keep up to this many bytes of whole remote shards (``"20GB"``); None or 0:
            range reads only.
        timeout: seconds for one remote request.
        storage_options: passed to fsspec (credentials, endpoints).
        on_error: ``"raise"`` when a shard cannot be read or indexed, or ``"skip"`` it with a
            warning (its complete samples before a truncation are kept).

    Attributes:
        samples: ``(shard#member, label)`` per sample; ``targets``: the labels (-1 where the
            sample has none: reading it raises); ``shard_ranges``: ``(start, stop)`` sample numbers
            per shard (for ``ShardSampler``); ``urls``: the shards.

    Raises:
        DecodeError: naming a shard that cannot be reached, read or indexed (``on_error="raise"``).
    """

    def __init__(
        self,
        urls: str | os.PathLike | Sequence[str | os.PathLike],
        image_keys: Sequence[str] = IMAGE_KEYS,
        label_keys: Sequence[str] = LABEL_KEYS,
        label_field: str | None = None,
        classes: Sequence[str] | None = None,
        cache_dir: str | os.PathLike | None = None,
        cache_bytes: int | str | None = None,
        timeout: float = 60.0,
        storage_options: dict[str, Any] | None = None,
        on_error: str = "raise",
    ) -> None:
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        if not timeout > 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout!r}")
        self.image_keys = tuple(key.lower().lstrip(".") for key in image_keys)
        self.rule = LabelRule(
            tuple(key.lower().lstrip(".") for key in label_keys), label_field, tuple(classes) if classes else None
        )
        self.timeout, self.storage_options = float(timeout), dict(storage_options or {})
        self.cache_dir = os.fspath(cache_dir or os.environ.get("GPUAUG_CACHE") or os.path.expanduser("~/.cache/gpuaug"))
        self.cache = ShardCache(os.path.join(self.cache_dir, "shards"), cache_bytes) if cache_bytes else None
        self.shards: list[_Shard] = []
        for url in expand_urls(urls):
            try:
                self.shards.append(self._load(url, on_error))
            except DecodeError as error:
                if on_error == "raise":
                    raise
                warnings.warn(f"WebDataset leaves out {error}", stacklevel=2)
        self.urls = [shard.url for shard in self.shards]
        self._starts = list(np.cumsum([0] + [len(shard.keys) for shard in self.shards]).tolist())
        self.shard_ranges = list(zip(self._starts[:-1], self._starts[1:]))
        self.targets = [-1 if label is None else label for shard in self.shards for label in shard.labels]
        self.samples = _Samples(self)
        self._handles: OrderedDict[str, tuple[int, int]] = OrderedDict()  # url -> (pid, descriptor)
        self._filesystems: dict[str, tuple[int, Any, str]] = {}  # url -> (pid, fsspec filesystem, path)

    # -- building --------------------------------------------------------------------------------
    def _index_places(self, url: str) -> list[str]:
        digest = hashlib.sha1(json.dumps([url, self.rule.describe()]).encode()).hexdigest()[:20]
        cached = os.path.join(self.cache_dir, "index", f"{digest}{INDEX_SUFFIX}")
        return [url + INDEX_SUFFIX, cached]

    def _load(self, url: str, on_error: str) -> _Shard:
        try:
            fs, path = open_fs(url, self.storage_options, self.timeout)
            size = int(fs.size(path))
        except DecodeError:
            raise
        except Exception as error:  # fsspec and its backends raise many kinds
            raise DecodeError(url, f"cannot reach the shard ({type(error).__name__}: {error})") from None
        beside, cached = self._index_places(url)
        for place in (beside, cached):
            index = self._read_index(place)
            if index is None:
                continue
            if index.get("shard_bytes") == size and index.get("label") == self.rule.describe():
                return _Shard(url, size, index["keys"], index["members"], index["labels"])
            if index.get("shard_bytes") != size:
                warnings.warn(
                    f"the index {place} is for a shard of {index.get('shard_bytes')} bytes, {url} has {size}: rebuilt",
                    stacklevel=3,
                )
        try:
            options = {} if is_local(fs) else {"block_size": 1 << 22}
            with fs.open(path, "rb", **options) as stream:  # the end blocks from the same stream: no second request
                index, damage = index_stream(stream, url, size, self.rule, partial=True)
        except DecodeError:
            raise
        except Exception as error:
            raise DecodeError(url, f"cannot read the shard ({type(error).__name__}: {error})") from None
        if damage is not None:
            if on_error == "raise":
                raise damage
            warnings.warn(f"WebDataset keeps the samples of {url} before the damage: {damage.reason}", stacklevel=3)
        else:
            self._write_index(index, beside, cached)
        return _Shard(url, size, index["keys"], index["members"], index["labels"])

    def _read_index(self, place: str) -> dict[str, Any] | None:
        try:
            fs, path = open_fs(place, self.storage_options, self.timeout)
            with fs.open(path, "rb") as file:
                index = json.load(file)
        except Exception:  # absent, unreachable or unreadable: build it
            return None
        ok = isinstance(index, dict) and index.get("format") == INDEX_FORMAT and index.get("version") == 1
        return index if ok else None

    @staticmethod
    def _write_index(index: dict[str, Any], beside: str, cached: str) -> None:
        for place in (beside, cached):
            try:
                write_json_atomically(place, index)
                return
            except Exception:  # not writable there (read-only folder, HTTP): the next place
                continue

    # -- reading ---------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.targets)

    def locate(self, index: int) -> tuple[_Shard, int]:
        """The shard holding sample ``index`` and the sample's row in it."""
        if not -len(self) <= index < len(self):
            raise IndexError(f"sample {index} out of range for {len(self)} samples")
        index %= len(self)
        number = bisect.bisect_right(self._starts, index) - 1
        return self.shards[number], index - self._starts[number]

    def image_member(self, shard: _Shard, row: int) -> list[Any]:
        """``[extension, offset, size]`` of the sample's image (the first of ``image_keys`` present)."""
        found = {member[0]: member for member in shard.members[row]}
        member = next((found[key] for key in self.image_keys if key in found), None)
        if member is None:
            have = ", ".join(sorted(found)) or "nothing"
            raise DecodeError(f"{shard.url}#{shard.keys[row]}", f"no image member ({'/'.join(self.image_keys)}); it has {have}")
        return member

    def _label_member(self, shard: _Shard, row: int) -> list[Any]:
        found = {member[0]: member for member in shard.members[row]}
        member = next((found[key] for key in self.rule.members() if key in found), None)
        if member is None:
            have = ", ".join(sorted(found)) or "nothing"
            raise DecodeError(
                f"{shard.url}#{shard.keys[row]}", f"no label member ({'/'.join(self.rule.members())}); it has {have}"
            )
        return member

    def read_image(self, index: int, max_bytes: int | None = DEFAULT_MAX_BYTES) -> bytes:
        """The image bytes of sample ``index``, its tar headers and label checked against the index.

        Raises:
            DecodeError: naming ``shard#member``: no image or label, an unreadable label, a stale
                index, a short read, an unreachable shard or an image over ``max_bytes``.
        """
        plan = self._plan(index, max_bytes)
        return self._finish(plan, [self._read(plan.shard, start, stop, plan.where) for start, stop in plan.reads])

    def read_images(self, indices: Sequence[int], max_bytes: int | None = DEFAULT_MAX_BYTES) -> list[bytes | DecodeError]:
        """:meth:`read_image` of several samples (the loader's workers read a batch so): each entry the
        image bytes, or the ``DecodeError`` that sample raised.

        Samples of remote shards read by range (no local copy) get all their range requests at once,
        through fsspec's ``cat_ranges`` (concurrent requests, one pass of its event loop for the batch:
        one request and one loop pass per image cost several times the read itself); the others are
        read one by one, by position.
        """
        results: list[bytes | DecodeError | None] = [None] * len(indices)
        pending: dict[int, tuple[Any, list[tuple[int, _Plan, str]]]] = {}
        for position, index in enumerate(indices):
            try:
                plan = self._plan(index, max_bytes)
                if self._descriptor(plan.shard) is None:
                    fs, path = self._filesystem(plan.shard.url)
                    pending.setdefault(id(fs), (fs, []))[1].append((position, plan, path))
                    continue
                results[position] = self._finish(plan, [self._read(plan.shard, a, b, plan.where) for a, b in plan.reads])
            except DecodeError as error:
                results[position] = error
        for fs, group in pending.values():
            paths = [path for _, plan, path in group for _ in plan.reads]
            starts = [start for _, plan, _ in group for start, _ in plan.reads]
            stops = [stop for _, plan, _ in group for _, stop in plan.reads]
            try:
                blocks = fs.cat_ranges(paths, starts, stops, on_error="return")
            except Exception as error:  # the whole call failed: every sample in it says why
                blocks = [error] * len(paths)
            taken = 0
            for position, plan, _ in group:
                mine = blocks[taken : taken + len(plan.reads)]
                taken += len(plan.reads)
                failed = next((block for block in mine if isinstance(block, BaseException)), None)
                try:
                    if failed is not None:  # fsspec's own exceptions (a request that failed or timed out)
                        raise DecodeError(plan.where, f"cannot read the shard ({type(failed).__name__}: {failed})")
                    results[position] = self._finish(plan, mine)
                except DecodeError as error:
                    results[position] = error
        return results  # type: ignore[return-value]

    def _plan(self, index: int, max_bytes: int | None) -> _Plan:
        """What reading sample ``index`` takes: its members and the byte ranges holding them (one where
        they are close), each checked to lie inside the shard."""
        shard, row = self.locate(index)
        key = shard.keys[row]
        image, label = self.image_member(shard, row), self._label_member(shard, row)
        where = f"{shard.url}#{key}.{image[0]}"
        if max_bytes is not None and image[2] > max_bytes:
            raise DecodeError(where, f"the member has {image[2]:,} bytes, more than max_bytes={max_bytes:,}")
        spans = [(offset - BLOCK, offset + size) for _, offset, size in (image, label)]
        start, stop = min(a for a, _ in spans), max(b for _, b in spans)
        reads = [(start, stop)] if stop - start <= sum(b - a for a, b in spans) + (1 << 16) else spans
        for a, b in reads:
            if a < 0 or b > shard.size:
                raise DecodeError(where, f"the index no longer matches the shard (bytes {a}..{b} of {shard.size})")
        return _Plan(shard, row, key, image, label, where, spans, reads)

    def _finish(self, plan: _Plan, blocks: Sequence[bytes]) -> bytes:
        """The image bytes from the ranges ``plan.reads`` read, after checking lengths, tar headers and label."""
        shard, key = plan.shard, plan.key
        for (a, b), block in zip(plan.reads, blocks):
            if len(block) > b - a:
                raise DecodeError(plan.where, f"the server answered a range request with {len(block):,} bytes, not {b - a:,}")
            if len(block) != b - a:
                raise DecodeError(plan.where, f"short read: {len(block)} of {b - a} bytes (truncated shard?)")
        pieces = []
        for a, b in plan.spans:
            (first, _), block = next(((span, block) for span, block in zip(plan.reads, blocks) if span[0] <= a and b <= span[1]))
            pieces.append((block[a - first : a - first + BLOCK], block[a - first + BLOCK : b - first]))
        for (extension, _, size), (header, _data) in zip([plan.image, plan.label], pieces):
            self._check_header(header, f"{key}.{extension}", size, shard.url)
        value = self.rule.parse(pieces[1][1], f"{shard.url}#{key}.{plan.label[0]}")
        if shard.labels[plan.row] != value:
            indexed = shard.labels[plan.row]
            raise DecodeError(plan.where, f"the index no longer matches the shard: label {indexed} indexed, {value} read")
        return pieces[0][1]

    @staticmethod
    def _check_header(header: bytes, name: str, size: int, url: str) -> None:
        if not header_matches(header, name, size):
            raise DecodeError(
                f"{url}#{name}", "the index no longer matches the shard (no tar header of this member at its offset)"
            )

    def _read(self, shard: _Shard, start: int, stop: int, where: str) -> bytes:
        """Bytes ``start:stop`` of the shard, by position or one range request (``_plan`` checked the
        bounds, ``_finish`` checks the length)."""
        try:
            descriptor = self._descriptor(shard)
            if descriptor is not None:
                data = os.pread(descriptor, stop - start, start)
            else:
                fs, path = self._filesystem(shard.url)
                data = self._read_range(fs, path, shard.url, start, stop)
        except DecodeError as error:
            raise DecodeError(where, error.reason) from None
        except Exception as error:
            raise DecodeError(where, f"cannot read the shard ({type(error).__name__}: {error})") from None
        return data

    @staticmethod
    def _read_range(fs: Any, path: str, url: str, start: int, stop: int) -> bytes:
        if start >= stop:
            return b""
        data = fs.cat_file(path, start=start, end=stop)
        if len(data) > stop - start:
            raise DecodeError(url, f"the server answered a range request with {len(data):,} bytes, not {stop - start:,}")
        return data

    def _filesystem(self, url: str) -> tuple[Any, str]:
        """``open_fs(url)``, kept per process (resolving a URL to its filesystem cost more than a local read)."""
        pid = os.getpid()
        kept = self._filesystems.get(url)
        if kept is None or kept[0] != pid:
            kept = self._filesystems[url] = (pid, *open_fs(url, self.storage_options, self.timeout))
        return kept[1], kept[2]

    def _descriptor(self, shard: _Shard) -> int | None:
        """An open descriptor on the shard's bytes (local, or cached whole), per process; None: range reads."""
        pid = os.getpid()
        held = self._handles.get(shard.url)
        if held is not None and held[0] == pid:
            self._handles.move_to_end(shard.url)
            return held[1]
        fs, path = self._filesystem(shard.url)
        if is_local(fs):
            descriptor = os.open(path, os.O_RDONLY)
        elif self.cache is not None:
            descriptor = self.cache.open(fs, path, shard.url, shard.size)
            if descriptor is None:
                return None
        else:
            return None
        self._handles[shard.url] = (pid, descriptor)
        while len(self._handles) > 16:
            _, (owner, old) = self._handles.popitem(last=False)
            if owner == pid:
                os.close(old)
        return descriptor

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_handles"] = OrderedDict()  # descriptors stay in their process
        state["_filesystems"] = {}  # and filesystems (sessions, event loops)
        return state

    def __repr__(self) -> str:
        return f"WebDataset(shards={len(self.shards)}, samples={len(self)}, first={self.urls[0] if self.urls else None!r})"
