"""WebDataset shards (issue 17): the tool and webdataset's TarWriter read back as the folder, the same batches
from shards and folder, memory:// and a loopback HTTP server with a bounded cache, equal steps on every rank,
and every bad input named (shard and member), skippable where a sample is at fault."""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import tarfile
import warnings
from pathlib import Path

import fsspec
import numpy as np
import pytest
import torch
from PIL import Image

import gpuaug as ga
from benchmarks.serve import serve_directory
from gpuaug.__main__ import main
from gpuaug.io.shards import WebDataset, header_matches
from gpuaug.loader.samplers import DistributedShardSampler, ShardSampler
from gpuaug.tools.shards import write_shards

CLASSES = ("ant", "bee", "cat")


def make_folder(root: Path, count: int = 18) -> Path:
    """An ImageFolder of small JPEGs and PNGs of different sizes (deterministic)."""
    rng = np.random.default_rng(0)
    for number in range(count):
        folder = root / CLASSES[number % len(CLASSES)]
        folder.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, (20 + number, 24 + 2 * number, 3), dtype=np.uint8)
        kind = "png" if number % 4 == 3 else "jpg"
        Image.fromarray(pixels).save(folder / f"img.{number:02d}.{kind}", quality=90)  # a dot in the stem
    return root


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return make_folder(tmp_path_factory.mktemp("folder"))


@pytest.fixture(scope="module")
def shards(folder, tmp_path_factory) -> list[Path]:
    return write_shards(folder, tmp_path_factory.mktemp("shards"), size="16KB")


def pattern(paths: list[Path]) -> str:
    return str(paths[0].parent / f"shard-{{000000..{len(paths) - 1:06d}}}.tar")


def read_all(source) -> list:
    return [source[index] for index in range(len(source))]


def test_tool_and_tarwriter_read_back_as_the_folder(folder, shards, tmp_path):
    expected = read_all(ga.ImageFolder(folder))
    assert len(shards) > 3  # several shards, samples in the folder's order
    assert read_all(WebDataset(pattern(shards))) == expected
    listing = json.loads((shards[0].parent / "shards.json").read_text())
    assert sum(item["nsamples"] for item in listing["shardlist"]) == len(expected) and listing["classes"] == list(CLASSES)

    import webdataset as wds  # the field's own writer: any WebDataset-layout shard reads the same

    files = ga.ImageFolder(folder)
    for number, start in enumerate(range(0, len(files), 7)):
        with wds.TarWriter(str(tmp_path / f"wds-{number}.tar")) as sink:
            for index in range(start, min(start + 7, len(files))):
                path, label = files.samples[index]
                sink.write({"__key__": f"sample{index:04d}", path.rsplit(".", 1)[1]: Path(path).read_bytes(), "cls": label})
    source = WebDataset([tmp_path / f"wds-{number}.tar" for number in range(3)])
    assert read_all(source) == expected and source.targets == files.targets
    assert all(os.path.exists(tmp_path / f"wds-{number}.tar.index.json") for number in range(3))  # cached beside


def test_shards_stay_within_their_size_with_tars_record_padding(folder, tmp_path):
    """Every shard of several samples is at most ``size`` bytes on disk, tarfile's closing padding to a
    10 KiB record included (the limit used to count only the two end blocks)."""
    written = write_shards(folder, tmp_path / "out", size="12KB")
    counts = []
    for path in written:
        with tarfile.open(path) as tar:
            counts.append(len([name for name in tar.getnames() if name.endswith(".cls")]))
    assert len(written) > 2 and sum(counts) == len(ga.ImageFolder(folder))
    assert all(path.stat().st_size <= 12_000 for path, count in zip(written, counts) if count > 1)


def test_cli_writes_shards(folder, tmp_path, capsys):
    assert main(["shards", str(folder), str(tmp_path / "out"), "--size", "1GB"]) == 0
    assert "wrote 1 shard(s)" in capsys.readouterr().out
    assert read_all(WebDataset(str(tmp_path / "out" / "shard-000000.tar"))) == read_all(ga.ImageFolder(folder))
    assert main(["shards", str(tmp_path / "missing"), str(tmp_path / "x")]) == 2
    assert main(["shards", str(folder), str(tmp_path / "y"), "--size", "lots"]) == 2


def _batches(dataset, **options) -> list[tuple[torch.Tensor, torch.Tensor]]:
    transform = ga.Compose([ga.RandomResizedCrop(16), ga.RandomHorizontalFlip(), ga.ColorJitter(0.3, 0.3)])
    loader = ga.GPULoader(
        dataset, batch_size=4, device="cpu", transform=transform, generator=torch.Generator().manual_seed(5), **options
    )
    return list(loader)


def test_same_batches_from_shards_and_folder(folder, shards):
    from_folder = _batches(ga.ImageFolder(folder), shuffle=True)
    from_shards = _batches(WebDataset(pattern(shards)), shuffle=True)
    assert len(from_folder) == len(from_shards) == 5
    for (images, labels), (shard_images, shard_labels) in zip(from_folder, from_shards):
        assert torch.equal(images, shard_images) and torch.equal(labels, shard_labels)


def test_shard_sampler_keeps_windows_of_shards(shards):
    source = WebDataset(pattern(shards))
    order = list(ShardSampler(source, window=1, generator=torch.Generator().manual_seed(0)))
    assert sorted(order) == list(range(len(source)))
    shard_of = [next(n for n, (a, b) in enumerate(source.shard_ranges) if a <= i < b) for i in order]
    assert sum(1 for a, b in zip(shard_of, shard_of[1:]) if a != b) == len(shards) - 1  # one shard at a time
    again = list(ShardSampler(source, window=1, generator=torch.Generator().manual_seed(0)))
    assert order == again


@pytest.fixture
def server(shards):
    with serve_directory(shards[0].parent) as url:
        yield url


def test_http_with_range_reads_and_a_bounded_cache(folder, shards, server, tmp_path):
    expected = read_all(ga.ImageFolder(folder))
    url = f"{server}/shard-{{000000..{len(shards) - 1:06d}}}.tar"
    assert read_all(WebDataset(url, cache_dir=tmp_path / "a")) == expected  # range reads, the tool's indexes
    bound = 2 * max(path.stat().st_size for path in shards)
    cached = WebDataset(url, cache_dir=tmp_path / "b", cache_bytes=bound)
    assert read_all(cached) == expected
    assert 0 < cached.cache.used() <= bound and len(os.listdir(tmp_path / "b" / "shards")) == 2
    tiny = WebDataset(url, cache_dir=tmp_path / "c", cache_bytes=100)  # every shard too big: range reads
    assert read_all(tiny) == expected and tiny.cache.used() == 0


def test_a_batch_of_range_reads_equals_one_by_one_and_names_its_failures(folder, shards, tmp_path):
    """``read_images`` (a worker's batch: remote range requests all at once) gives what ``read_image``
    gives, each failure in its own entry naming shard and member, the other samples still read."""
    expected = [data for data, _ in read_all(ga.ImageFolder(folder))]
    order = list(range(len(expected)))[::-1]
    with serve_directory(shards[0].parent) as url:
        remote = WebDataset(f"{url}/shard-{{000000..{len(shards) - 1:06d}}}.tar", cache_dir=tmp_path / "a", timeout=30)
        assert remote.read_images(order) == [expected[index] for index in order]
        one_shard = [index for index in order if remote.locate(index)[0] is remote.shards[0]]
        other = [index for index in order if index not in one_shard]
        (shards[0].parent / shards[0].name).rename(tmp_path / "moved.tar")  # the server loses one shard
        try:
            results = remote.read_images(order)
        finally:
            (tmp_path / "moved.tar").rename(shards[0])
    for index, result in zip(order, results):
        if index in one_shard:
            assert isinstance(result, ga.DecodeError) and f"{shards[0].name}#" in result.path, result
        else:
            assert result == expected[index]
    assert one_shard and other
    local = WebDataset(pattern(shards))
    assert local.read_images(order) == [expected[index] for index in order]
    with pytest.raises(IndexError):
        local.read_images([len(expected)])


def test_memory_filesystem_builds_its_index(folder, shards):
    memory = fsspec.filesystem("memory")
    for path in shards:
        memory.pipe_file(f"/set17/{path.name}", path.read_bytes())
    source = WebDataset([f"memory://set17/{path.name}" for path in shards])
    assert read_all(source) == read_all(ga.ImageFolder(folder))
    assert memory.exists(f"/set17/{shards[0].name}.index.json")  # written beside, in the memory filesystem


def test_ranks_take_equal_steps_over_uneven_shards(shards):
    source = WebDataset(pattern(shards))
    sizes = [stop - start for start, stop in source.shard_ranges]
    assert len(set(sizes)) > 1 and len(source) % 4 != 0  # uneven shards, an uneven split
    for drop_last in (False, True):
        for epoch in (0, 1):
            ranks = [DistributedShardSampler(source, 4, rank, seed=3, drop_last=drop_last) for rank in range(4)]
            for rank in ranks:
                rank.set_epoch(epoch)
            taken = [list(rank) for rank in ranks]
            assert len({len(part) for part in taken}) == 1 and all(len(part) == len(ranks[0]) for part in taken)
            union = [index for part in taken for index in part]
            if drop_last:  # each sample at most once, N % R left out
                assert len(set(union)) == len(union) == len(source) - len(source) % 4
            else:  # each sample at least once, the first ones of the order repeated
                assert set(union) == set(range(len(source))) and len(union) == -(-len(source) // 4) * 4
    loaders = [
        ga.GPULoader(
            source, batch_size=2, device="cpu", transform=ga.Resize((8, 8)), sampler=DistributedShardSampler(source, 2, rank)
        )
        for rank in (0, 1)
    ]
    assert len(loaders[0]) == len(loaders[1]) == len(list(loaders[0])) == len(list(loaders[1]))


class _Uneven(torch.utils.data.Sampler):
    """A naive per-rank split: ranks get different lengths."""

    def __init__(self, size, num_replicas, rank):
        self.indices, self.num_replicas = list(range(rank, size, num_replicas)), num_replicas

    def __iter__(self):
        return iter(self.indices)

    def __len__(self):
        return len(self.indices)


def _gloo_rank(rank, port, pattern_text, results):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        source = WebDataset(pattern_text)
        even = ga.GPULoader(
            source, batch_size=4, device="cpu", transform=ga.Resize((8, 8)), sampler=DistributedShardSampler(source)
        )
        steps = len(list(even))
        try:
            list(
                ga.GPULoader(
                    source, batch_size=1, device="cpu", transform=ga.Resize((8, 8)), sampler=_Uneven(len(source) - 1, 2, rank)
                )
            )
            said = ""
        except RuntimeError as error:
            said = str(error)

        def shuffled() -> ga.GPULoader:  # each rank's loader, epoch 1, as a training job builds it again
            sampler = DistributedShardSampler(source, shuffle=True, seed=3)
            loader = ga.GPULoader(
                source, batch_size=2, device="cpu", transform=ga.RandomResizedCrop(8), sampler=sampler,
                generator=torch.Generator().manual_seed(7),
            )  # fmt: skip
            loader.set_epoch(1)
            return loader

        full = list(shuffled())
        interrupted = shuffled()
        batches = iter(interrupted)
        next(batches)
        next(batches)
        state = interrupted.state_dict()  # a mid-epoch checkpoint of this rank
        del batches
        resumed = shuffled()
        resumed.load_state_dict(state)
        rest = list(resumed)
        same = len(rest) == len(full) - 2 and all(
            torch.equal(a, c) and torch.equal(b, d) for (a, b), (c, d) in zip(full[2:], rest)
        )
        labels = sorted(label for _, batch_labels in full for label in batch_labels.tolist())
        results.put((rank, steps, said, same, labels))
    finally:
        dist.destroy_process_group()


def test_two_gloo_ranks_equal_steps_resume_mid_epoch_and_the_loader_refuses_uneven_ones(shards):
    import torch.multiprocessing as mp

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    results = mp.get_context("spawn").SimpleQueue()
    mp.start_processes(_gloo_rank, args=(port, pattern(shards), results), nprocs=2, join=True, start_method="spawn")
    reports = sorted(results.get() for _ in range(2))
    assert reports[0][1] == reports[1][1] == 3  # 18 samples, 9 a rank, batches of 4
    assert all("different numbers of batches" in report[2] and "9, 8" in report[2] for report in reports)
    # each rank resumed from its own mid-epoch state: the rest of its epoch bit for bit; together the
    # ranks' shuffled epochs still cover every sample once (18 = 2 x 9, no padding needed)
    assert all(report[3] for report in reports)
    everything = sorted(reports[0][4] + reports[1][4])
    assert everything == sorted(WebDataset(pattern(shards)).targets)


# -- bad input ------------------------------------------------------------------------------------------
@pytest.fixture
def one_shard(shards, tmp_path) -> Path:
    copy = tmp_path / "s.tar"
    shutil.copyfile(shards[0], copy)
    return copy


def test_truncated_shard_is_named_or_its_complete_samples_kept(one_shard):
    source = WebDataset(str(one_shard))
    whole = read_all(source)
    last_end = max(offset + size for members in source.shards[0].members for _, offset, size in members)
    data = one_shard.read_bytes()
    os.unlink(str(one_shard) + ".index.json")
    one_shard.write_bytes(data[: last_end - 100])  # inside the last member
    with pytest.raises(ga.DecodeError, match=r"s\.tar: truncated tar: it ends inside or right after member 0000"):
        WebDataset(str(one_shard))
    with pytest.warns(UserWarning, match="before the damage"):
        kept = WebDataset(str(one_shard), on_error="skip")
    assert 0 < len(kept) < len(whole) and read_all(kept) == whole[: len(kept)]
    one_shard.write_bytes(data[: (last_end + 511) // 512 * 512])  # a block boundary, no end-of-archive blocks
    with pytest.raises(
        ga.DecodeError, match="truncated tar: it ends inside or right after member .*, without the end-of-archive blocks"
    ):
        WebDataset(str(one_shard))


def test_corrupt_header_is_named(one_shard):
    source = WebDataset(str(one_shard))
    shard, _ = source.locate(1)
    first_of_second = min(offset for _, offset, _ in shard.members[1]) - 512
    data = bytearray(one_shard.read_bytes())
    data[first_of_second : first_of_second + 100] = b"garbage!" * 12 + b"junk"
    one_shard.write_bytes(bytes(data))
    os.unlink(str(one_shard) + ".index.json")
    with pytest.raises(ga.DecodeError, match="corrupt tar: an invalid member header after member"):
        WebDataset(str(one_shard))


def _write_tar(path: Path, members: list[tuple[str, bytes]]) -> None:
    import webdataset as wds

    with wds.TarWriter(str(path)) as sink:
        for key, extras in members:
            sink.write({"__key__": key, **extras})


def test_samples_without_image_or_label_are_refused_by_name_and_skippable(folder, tmp_path):
    jpeg = next(Path(folder).rglob("*.jpg")).read_bytes()
    _write_tar(
        tmp_path / "odd.tar",
        [
            ("a", {"jpg": jpeg, "cls": 1}),
            ("b", {"cls": 2}),
            ("c", {"jpg": jpeg}),
            ("d", {"jpg": jpeg, "cls": b"dog"}),
            ("e", {"jpg": jpeg, "cls": 0}),
        ],
    )
    source = WebDataset(str(tmp_path / "odd.tar"))
    assert source.targets == [1, 2, -1, -1, 0]  # "b" has a label, no image
    with pytest.raises(ga.DecodeError, match=r"odd\.tar#b: no image member"):
        source[1]
    with pytest.raises(ga.DecodeError, match=r"odd\.tar#c: no label member"):
        source[2]
    with pytest.raises(ga.DecodeError, match=r"odd\.tar#d\.cls: the label 'dog' is not an integer"):
        source[3]
    assert WebDataset(str(tmp_path / "odd.tar"), classes=["cat", "dog"]).targets[3] == 1
    loader = ga.GPULoader(source, batch_size=5, device="cpu", transform=ga.Resize((8, 8)), on_error="skip")
    with pytest.warns(UserWarning, match="skipped 3 file"):
        ((images, labels),) = list(loader)
    assert labels.tolist() == [1, 0] and len(loader.stats.skipped_paths) == 3
    with pytest.raises(ga.DecodeError, match="odd.tar#b"):
        list(ga.GPULoader(source, batch_size=5, device="cpu", transform=ga.Resize((8, 8))))


def test_stale_index_is_named_never_a_wrong_label(one_shard):
    source = WebDataset(str(one_shard))
    shard, _ = source.locate(0)
    _, offset, size = next(member for member in shard.members[0] if member[0] == "cls")
    data = bytearray(one_shard.read_bytes())
    data[offset : offset + size] = str(int(data[offset : offset + size]) + 1).encode()  # same size, other label
    one_shard.write_bytes(bytes(data))
    with pytest.raises(ga.DecodeError, match=r"s\.tar#.*index no longer matches the shard: label 0 indexed, 1 read"):
        WebDataset(str(one_shard))[0]
    index_path = Path(str(one_shard) + ".index.json")
    index = json.loads(index_path.read_text())
    index["members"][1] = [[extension, offset + 512, size] for extension, offset, size in index["members"][1]]
    index_path.write_text(json.dumps(index))
    with pytest.raises(ga.DecodeError, match="index no longer matches the shard"):
        WebDataset(str(one_shard))[1]
    with open(one_shard, "ab") as file:  # another size: the index is rebuilt, with a warning
        file.write(b"\0" * 512)
    with pytest.warns(UserWarning, match="rebuilt"):
        rebuilt = WebDataset(str(one_shard))
    assert rebuilt.targets[0] == 1 and rebuilt[1] == WebDataset(str(one_shard))[1]


def _tarfile_says(block: bytes, name: str, size: int) -> bool:
    """The check as tarfile's full header parser makes it (the reference for ``header_matches``)."""
    try:
        info = tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
    except tarfile.HeaderError:
        return False
    return info.size == size and (info.name == name or name.startswith(info.name) or name.endswith(info.name))


def test_header_check_agrees_with_tarfile():
    """The read-time header check (tar's fields read directly) gives tarfile's answer: every format,
    ustar long names split into prefix and name, GNU base-256 sizes, signed checksums, damage."""
    blocks = []
    for name, size, fmt in (
        ("00000012_dog_b.jpg", 4321, tarfile.USTAR_FORMAT),
        ("k/" * 60 + "deep.cls", 1, tarfile.USTAR_FORMAT),  # over 100 characters: ustar prefix + name
        ("plain.png", 9, tarfile.GNU_FORMAT),
        ("plain.png", 8**11 + 5, tarfile.GNU_FORMAT),  # over the octal field: base-256
        ("caf\u00e9.jpg", 3, tarfile.PAX_FORMAT),
    ):
        info = tarfile.TarInfo(name)
        info.size = size
        block = info.tobuf(format=fmt, encoding="utf-8")[-512:]  # the member's own header block
        blocks.append((block, name, size))
    signed = bytearray(blocks[0][0])
    signed[500] = 0xC8  # a byte above 127: old tars summed bytes as signed
    chksum = sum(b - 256 if b > 127 else b for b in signed[:148] + signed[156:]) + 256
    signed[148:156] = f"{chksum & 0o7777777:07o}\0".encode() if chksum >= 0 else b"-" + f"{-chksum:06o}\0".encode()
    blocks.append((bytes(signed), blocks[0][1], blocks[0][2]))
    cases = []
    for block, name, size in blocks:
        damaged = bytearray(block)
        damaged[10] ^= 0x01
        cases += [(block, name, size), (block, name, size + 1), (block, "other.jpg", size), (bytes(damaged), name, size)]
        cases += [(block[:-1], name, size), (b"\0" * 512, name, size)]
    answers = [(header_matches(block, name, size), _tarfile_says(block, name, size)) for block, name, size in cases]
    assert [ours for ours, _ in answers] == [theirs for _, theirs in answers]
    assert sum(ours for ours, _ in answers) >= 5  # the intact headers of the right name and size pass


def test_unreachable_and_hanging_urls_are_named(tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again: nothing listens
    with pytest.raises(ga.DecodeError, match=rf"127\.0\.0\.1:{port}/x\.tar: cannot reach the shard"):
        WebDataset(f"http://127.0.0.1:{port}/x.tar", cache_dir=tmp_path)
    with pytest.warns(UserWarning, match="leaves out"):
        assert len(WebDataset(f"http://127.0.0.1:{port}/x.tar", cache_dir=tmp_path, on_error="skip")) == 0
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)  # accepts, never answers
    try:
        with pytest.raises(ga.DecodeError, match="cannot reach the shard"):
            WebDataset(f"http://127.0.0.1:{listener.getsockname()[1]}/x.tar", cache_dir=tmp_path, timeout=0.5)
    finally:
        listener.close()
    with pytest.raises(ga.DecodeError, match="cannot reach the shard"):
        WebDataset(str(tmp_path / "missing.tar"))


def test_member_over_the_size_limit_is_refused(shards):
    source = WebDataset(pattern(shards))
    with pytest.raises(ga.DecodeError, match="more than max_bytes=10"):
        source.read_image(0, max_bytes=10)
    assert source.samples[0][0] == source.samples[0][0]  # a str naming shard#member
    assert str(source.samples[0][0]).startswith(str(shards[0])) and isinstance(io.BytesIO(source[0][0]), io.BytesIO)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(source.samples[2:5]) == 3


def test_dali_refuses_shards_naming_the_reader_that_takes_them(shards):
    dali = pytest.importorskip("gpuaug.dali")
    with pytest.raises(TypeError, match=r"shard members \(ga.WebDataset\) are read by GPULoader"):
        dali.DALILoader(ga.WebDataset([str(path) for path in shards]), batch_size=2, device="cpu")
