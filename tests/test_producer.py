"""The producer thread and the device stage (issue 9), the DataLoader signature and worker faults
(issue 12 #3-#6, #17), on the CPU: the same code that runs on CUDA, with CPU tensors."""

from __future__ import annotations

import gc
import inspect
import io
import multiprocessing
import os
import pickle
import platform
import signal
import subprocess
import sys
import textwrap
import threading
import warnings
from pathlib import Path

import pytest
import torch
from torch.utils.data import BatchSampler, DataLoader, SequentialSampler

import gpuaug as ga
from gpuaug.loader import device_stage
from gpuaug.loader import gpu_loader as loader_module
from gpuaug.loader.producer import Producer, hand_over
from tests.corpus import TRAIN, epoch

ROOT = Path(__file__).resolve().parents[1]
# Seconds a join or a wait may take before it counts as a hang: only so that a broken build fails
# instead of hanging; a passing run never gets near it, and no assertion reads a clock.
GUARD = 120


@pytest.fixture(scope="module")
def files(corpus) -> list[tuple[str, int]]:
    return [(str(path), index) for index, path in enumerate(sorted(corpus.rglob("*.jpg")))]


def _run(files, **options):
    loader = ga.GPULoader(
        files, batch_size=5, shuffle=True, transform=ga.Compose(TRAIN), generator=torch.Generator().manual_seed(1), **options
    )
    return epoch(loader)


def _two_epochs(files, **options):
    loader = ga.GPULoader(
        files, batch_size=4, shuffle=True, transform=ga.Compose(TRAIN), generator=torch.Generator().manual_seed(5), **options
    )
    return [epoch(loader) for _ in range(2)]


def _producer_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == "gpuaug-producer"]


def _shm_entries() -> set[str]:
    return set(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else set()


def _assert_everything_stopped() -> None:
    """No producer thread and no worker process is left running: each is joined (one that never
    ends fails the test after GUARD seconds), then none may be alive."""
    for thread in _producer_threads():
        thread.join(GUARD)
    for process in multiprocessing.active_children():
        process.join(GUARD)
    assert not _producer_threads()
    assert not multiprocessing.active_children()


class _Blocking(torch.utils.data.Dataset):
    """Items from ``first_blocked`` on set ``loading``, then wait for ``release`` (set by the test,
    or never) before they set ``finished`` and return: a worker that hangs for as long as the test says."""

    def __init__(self, first_blocked: int) -> None:
        self.first_blocked = first_blocked
        self.loading, self.release, self.finished = multiprocessing.Event(), multiprocessing.Event(), multiprocessing.Event()

    def __len__(self) -> int:
        return 8

    def __getitem__(self, index: int):
        if index >= self.first_blocked:
            self.loading.set()
            self.release.wait(GUARD)
            self.finished.set()
        return torch.zeros(3, 8, 8, dtype=torch.uint8), index


# ----------------------------------------------------------------------------------------------
# The device stage in its thread gives the batches of the unthreaded worker path
# ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def reference_epochs(files):
    """Two epochs without workers (the workers' path, run in the main process), per reduced_decode."""
    cache = {}

    def get(reduced_decode: bool):
        if reduced_decode not in cache:
            cache[reduced_decode] = _two_epochs(files, reduced_decode=reduced_decode)
        return cache[reduced_decode]

    return get


@pytest.mark.parametrize("reduced_decode", [False, True], ids=["full-decode", "reduced-decode"])
@pytest.mark.parametrize(
    "options",
    [
        {},
        {"num_workers": 2},
        {"num_workers": 2, "persistent_workers": True},
        {"augment_in": "device"},
        {"augment_in": "device", "num_workers": 2},
    ],
    ids=["again", "workers", "persistent-workers", "device-stage", "device-stage-workers"],
)
def test_same_seed_same_batches_whatever_the_workers_and_the_stage(files, reference_epochs, reduced_decode, options):
    """The batches of each epoch depend on the seed only: not on the number of workers, their
    persistence over epochs, or whether the device stage (in its thread) or the workers augment."""
    reference = reference_epochs(reduced_decode)
    epochs = _two_epochs(files, reduced_decode=reduced_decode, **options)
    for (images, labels), (expected_images, expected_labels) in zip(epochs, reference):
        assert torch.equal(labels, expected_labels)
        assert torch.equal(images, expected_images)
    assert not torch.equal(reference[0][1], reference[1][1])  # epochs still reshuffle


def test_nvimgcodec_cpu_backend_through_the_loader(files):
    pytest.importorskip("nvidia.nvimgcodec")
    pytest.importorskip("gpuaug.io.nvdecode")
    reference = _run(files, reduced_decode=False)
    decoded = _run(files, decode="nvimgcodec")
    assert torch.equal(reference[1], decoded[1])
    # the same crops and draws; only the JPEG decoders' rounding differs
    assert (reference[0] - decoded[0]).abs().mean() * 255 < 1.0


def test_a_file_the_device_decoder_fails_is_skipped_from_its_batch_alone(files, monkeypatch):
    """A file that passes the workers' header check but fails the device decoder, under on_error="skip":
    its row leaves its batch (labels, params and the other rows' images unchanged), the other batches are
    as without the failure."""
    pytest.importorskip("nvidia.nvimgcodec")
    decoders = pytest.importorskip("gpuaug.io.decoders")
    indexed = [(path, number) for number, (path, _) in enumerate(files[:8])]

    def run():
        loader = ga.GPULoader(
            indexed, batch_size=4, shuffle=True, transform=ga.Compose(TRAIN), decode="nvimgcodec", on_error="skip",
            generator=torch.Generator().manual_seed(3),
        )  # fmt: skip
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the skip warning
            return [(images.clone(), labels.clone()) for images, labels in loader], loader.stats.skipped_paths

    reference, _ = run()
    victim = indexed[5][0]
    real_decode = decoders.NvImageCodecDecoder.decode

    def failing(self, datas, paths, headers, regions):
        result = real_decode(self, datas, paths, headers, regions)
        for position, path in enumerate(paths):
            if path == victim:
                result.images[position] = None
                result.failed.append((position, ga.DecodeError(path, "made to fail")))
        return result

    monkeypatch.setattr(decoders.NvImageCodecDecoder, "decode", failing)
    skipped, skipped_paths = run()
    assert list(skipped_paths) == [victim]
    for (images, labels), (kept_images, kept_labels) in zip(reference, skipped):
        keep = labels != 5
        assert torch.equal(kept_labels, labels[keep]) and torch.equal(kept_images, images[keep])
    assert sum(len(labels) for _, labels in skipped) == len(indexed) - 1


# ----------------------------------------------------------------------------------------------
# Errors and shutdown
# ----------------------------------------------------------------------------------------------
class _Boom(RuntimeError):
    pass


def test_producer_error_reaches_the_consumer_with_type_and_message():
    def work(item, number):
        if number == 2:
            raise _Boom(f"item {item} failed")
        return item

    seen = []
    with pytest.raises(_Boom, match="item c failed"):
        for item in Producer(iter("abcd"), work, depth=1):
            seen.append(item)
    assert seen == ["a", "b"]
    assert not _producer_threads()


def test_decode_error_in_the_device_stage_names_the_file(files, bad):
    broken = files[:3] + [(str(bad["truncated"]), 0)]
    with pytest.raises(ga.DecodeError) as caught:
        list(ga.GPULoader(broken, batch_size=2, transform=ga.Compose(TRAIN), augment_in="device"))
    assert caught.value.path == broken[-1][0] and broken[-1][0] in str(caught.value)
    assert not _producer_threads()


@pytest.mark.parametrize("how", ["break", "del", "exception", "end"])
def test_stopping_leaves_no_thread_process_or_shared_memory(files, how):
    shm_before = _shm_entries()
    loader = ga.GPULoader(files, batch_size=2, num_workers=2, transform=ga.Compose(TRAIN), augment_in="device", prefetch_factor=1)
    if how == "break":
        for _ in loader:
            break
    elif how == "del":
        iterator = iter(loader)
        next(iterator)
        del iterator
    elif how == "exception":
        with pytest.raises(KeyboardInterrupt):
            for _ in loader:
                raise KeyboardInterrupt
    else:
        list(loader)
    gc.collect()
    _assert_everything_stopped()
    assert _shm_entries() <= shm_before


def test_keyboard_interrupt_while_waiting_stops_cleanly():
    """The interrupt lands while next() waits: the first batch's items are held until it arrives
    (the handler does what Python's own does, after letting the worker go on)."""
    dataset = _Blocking(first_blocked=0)

    def interrupt(signum, frame):
        dataset.release.set()
        raise KeyboardInterrupt

    def send_when_loading():
        dataset.loading.wait(GUARD)
        signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)

    iterator = iter(ga.GPULoader(dataset, batch_size=4, num_workers=1))
    previous = signal.signal(signal.SIGINT, interrupt)
    sender = threading.Thread(target=send_when_loading)
    try:
        sender.start()
        with pytest.raises(KeyboardInterrupt):
            next(iterator)  # no batch can arrive before the interrupt: the worker waits for it
        sender.join()
    finally:
        signal.signal(signal.SIGINT, previous)
    assert dataset.loading.is_set()  # the interrupt came while a worker was loading the batch next() waited for
    iterator.close()
    _assert_everything_stopped()


# ----------------------------------------------------------------------------------------------
# The handover waits on its own batch's event
# ----------------------------------------------------------------------------------------------
def test_each_batch_is_handed_over_with_its_own_event(files, monkeypatch):
    """Today's CUDA path waited on the side stream after launching the next batch: step n waited
    for batch n+1's work too. Each batch must come with the event recorded after its own work."""
    made, waited = [], []
    real_stage = device_stage.DeviceStage.__call__

    def tagged(self, host, number):
        images, labels, _ = real_stage(self, host, number)
        token = ("event of batch", number, tuple(labels.tolist()))
        made.append(token)
        return images, labels, token

    monkeypatch.setattr(device_stage.DeviceStage, "__call__", tagged)
    monkeypatch.setattr(loader_module, "hand_over", lambda images, labels, event: waited.append((event, tuple(labels.tolist()))))
    loader = ga.GPULoader(files, batch_size=3, transform=ga.Compose(TRAIN), augment_in="device", prefetch_factor=3)
    delivered = [tuple(labels.tolist()) for _, labels in loader]
    assert [labels for _, labels in waited] == delivered
    assert [event for event, _ in waited] == made
    assert all(event[2] == labels for event, labels in waited)  # the event belongs to the batch it releases


def test_hand_over_waits_on_the_event_not_the_stream(monkeypatch):
    calls = []

    class Stream:
        def wait_event(self, event):
            calls.append(("wait_event", event))

        def wait_stream(self, stream):  # pragma: no cover - must not be called
            calls.append(("wait_stream", stream))

    class Tensor:
        device = torch.device("cpu")

        def record_stream(self, stream):
            calls.append(("record_stream", self))

    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: Stream())
    images, labels = Tensor(), Tensor()
    hand_over(images, labels, "event 7")
    assert calls == [("wait_event", "event 7"), ("record_stream", images), ("record_stream", labels)]


# ----------------------------------------------------------------------------------------------
# DataLoader's whole signature (issue 12 #6), timeouts (#5), mixed dtypes (#4)
# ----------------------------------------------------------------------------------------------
def test_signature_is_dataloaders():
    ours = list(inspect.signature(ga.GPULoader).parameters.values())
    theirs = list(inspect.signature(DataLoader).parameters.values())
    positional = [p.name for p in theirs if p.kind == p.POSITIONAL_OR_KEYWORD]
    assert [p.name for p in ours[: len(positional)]] == positional
    assert {p.name for p in theirs} <= {p.name for p in ours}


def test_collate_fn_says_why_it_cannot_apply(files):
    with pytest.raises(ValueError, match="collate_fn.*assembles each batch"):
        ga.GPULoader(files, batch_size=2, collate_fn=lambda batch: batch)


def test_dataloader_arguments_are_honoured(files, tmp_path):
    batch_sampler = BatchSampler(SequentialSampler(range(len(files))), batch_size=3, drop_last=True)
    loader = ga.GPULoader(
        files,
        batch_sampler=batch_sampler,
        num_workers=1,
        worker_init_fn=lambda worker: (tmp_path / f"worker{worker}").write_text("started"),
        multiprocessing_context="fork",
        timeout=30,
        pin_memory=True,
        transform=ga.Compose([ga.CenterCrop(16)]),
    )
    labels = [batch_labels.tolist() for _, batch_labels in loader]
    assert labels == [batch.tolist() for batch in DataLoader(range(len(files)), batch_sampler=batch_sampler)]
    assert (tmp_path / "worker0").read_text() == "started"
    with pytest.raises(ValueError, match="mutually exclusive"):
        ga.GPULoader(files, batch_size=4, batch_sampler=batch_sampler)


def test_timeout_turns_a_hanging_worker_into_an_error():
    dataset = _Blocking(first_blocked=0)
    with pytest.raises(RuntimeError, match="timed out"):
        list(ga.GPULoader(dataset, batch_size=2, num_workers=1, timeout=1))
    _assert_everything_stopped()
    assert dataset.loading.is_set() and not dataset.finished.is_set()  # raised while the worker still hung


class _Mixed(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 2

    def __getitem__(self, index: int):
        if index == 0:
            return torch.full((3, 4, 4), 128, dtype=torch.uint8), 0
        return torch.full((3, 4, 4), 0.25), 1


@pytest.mark.parametrize("augment_in", ["workers", "device"])
def test_items_of_mixed_dtypes_convert_by_their_own_dtype(augment_in):
    images, labels = next(iter(ga.GPULoader(_Mixed(), batch_size=2, augment_in=augment_in)))
    assert labels.tolist() == [0, 1]
    assert torch.allclose(images[0], torch.full((3, 4, 4), 128 / 255)) and torch.allclose(images[1], torch.full((3, 4, 4), 0.25))


def test_fixed_size_resize_alone_makes_a_batch(files):
    transform = ga.Compose([ga.Resize((24, 20))])
    for augment_in in ("workers", "device"):
        images, _ = next(iter(ga.GPULoader(files, batch_size=4, transform=transform, augment_in=augment_in)))
        assert images.shape == (4, 3, 24, 20) and images.dtype == torch.float32


# ----------------------------------------------------------------------------------------------
# A worker that dies (issue 12 #3): one clear error naming the worker and its exit code
# ----------------------------------------------------------------------------------------------
_DYING = textwrap.dedent(
    """
    import os, signal, sys, torch, gpuaug as ga

    how = sys.argv[1]

    class Dying(torch.utils.data.Dataset):
        def __len__(self):
            return 64
        def __getitem__(self, index):
            if index == 20:
                if how == "exit":
                    os._exit(3)
                os.kill(os.getpid(), getattr(signal, how))
            return torch.zeros(3, 8, 8, dtype=torch.uint8), 0

    try:
        for _ in ga.GPULoader(Dying(), batch_size=4, num_workers=2, augment_in=sys.argv[2]):
            pass
    except RuntimeError as error:
        print("RAISED", error)
    """
)


def _die(how: str, augment_in: str = "workers") -> str:
    result = subprocess.run(
        [sys.executable, "-c", _DYING, how, augment_in], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    return result.stdout + result.stderr


@pytest.mark.parametrize(
    ("how", "expected"), [("SIGKILL", "killed by SIGKILL"), ("exit", "exit code 3"), ("SIGSEGV", "killed by SIGSEGV")]
)
def test_dead_worker_raises_naming_worker_and_exit_code(how, expected):
    output = _die(how)
    assert "RAISED DataLoader worker" in output and expected in output, output


@pytest.mark.slow
def test_dead_worker_error_under_load_every_time():
    """Ten runs with two busy CPU loops beside them: the error is the same every time."""
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        outputs = [_die("SIGKILL", "device" if run % 2 else "workers") for run in range(10)]
    finally:
        for burner in burners:
            burner.kill()
            burner.wait()
    failures = [output for output in outputs if "RAISED DataLoader worker" not in output or "SIGKILL" not in output]
    assert not failures, failures[0]


# ----------------------------------------------------------------------------------------------
# What a worker hands over: a fixed number of tensors whatever the batch size
# ----------------------------------------------------------------------------------------------
def _tensors_sent(batch) -> int:
    """How many tensor storages pickling ``batch`` hands over (each one a shared-memory segment
    when a worker sends it to the main process)."""

    class Counting(pickle.Pickler):
        count = 0

        def persistent_id(self, obj):
            if isinstance(obj, (torch.TypedStorage, torch.UntypedStorage)):
                self.count += 1
                return self.count
            return None

    pickler = Counting(io.BytesIO())
    pickler.dump(batch)
    return pickler.count


@pytest.mark.parametrize("mode", ["encoded", "decode"])
def test_a_host_batch_is_a_few_tensors_whatever_its_size(files, mode):
    """Each tensor a worker sends costs the main process a shared-memory segment to receive (256
    files as 256 tensors: 104 ms per batch on this machine, one buffer 2.2 ms): so it sends a few."""
    from gpuaug.io.decoders import device_takes
    from gpuaug.io.sources import FileList
    from gpuaug.loader.worker import WorkerSide

    takes = device_takes if mode == "encoded" else None
    side = WorkerSide(FileList(files), True, None, ga.Compose(TRAIN + [ga.ToDtype(torch.float32)]), augment=False, takes=takes)
    small, large = side.__getitems__([(i, 1) for i in range(4)]), side.__getitems__([(i, 1) for i in range(16)])
    assert len(small) == 4 and len(large) == 16
    assert 0 < _tensors_sent(small) == _tensors_sent(large) <= 20
    if mode == "encoded":
        encoded = large.encoded_files()
        assert len(encoded) == 16
        assert all(bytes(data.numpy()) == Path(path).read_bytes() for data, (path, _) in zip(encoded, files))


def test_break_while_a_worker_hangs_returns_and_cleans_up():
    """The producer is stuck waiting on a hung worker (no timeout set) when the loop breaks: the
    workers are shut down to end its wait, instead of the break hanging with them."""
    dataset = _Blocking(first_blocked=2)  # the second batch never comes
    loader = ga.GPULoader(dataset, batch_size=2, num_workers=1, prefetch_factor=1)
    for _, labels in loader:
        assert labels.tolist() == [0, 1]
        break
    _assert_everything_stopped()
    assert not dataset.finished.is_set()  # returned, and the worker stopped, while it still hung


# ----------------------------------------------------------------------------------------------
# CUDA: the producer thread's batches equal the CPU device stage's (same draws, same crops)
# ----------------------------------------------------------------------------------------------
@pytest.mark.cuda
@pytest.mark.parametrize("decode", ["nvjpeg", "cpu", "nvimgcodec"])
def test_cuda_batches_equal_the_cpu_device_stage(files, decode):
    if decode == "nvimgcodec":
        pytest.importorskip("nvidia.nvimgcodec")
    reference = _run(files, augment_in="device", reduced_decode=False)
    images, labels = _run(files, device="cuda", decode=decode, reduced_decode=False, num_workers=2)
    assert images.device.type == "cuda" and images.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(labels.cpu(), reference[1])
    # the same crops and draws; the GPU JPEG decoders differ from libjpeg-turbo by a level or two
    assert (images.cpu() - reference[0]).abs().mean() * 255 < 1.5


# ----------------------------------------------------------------------------------------------
# The loader's limits reach every decoder (issue 12 #2, #15)
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "options", [{}, {"augment_in": "device"}, {"decode": "nvimgcodec"}], ids=["workers", "device", "nvimgcodec"]
)
def test_pixel_and_file_size_limits_reach_every_decoder(files, options):
    if options.get("decode") == "nvimgcodec":
        pytest.importorskip("nvidia.nvimgcodec")
    sizes = [os.path.getsize(path) for path, _ in files[:4]]
    small, large = min(sizes), max(sizes)
    with pytest.raises(ga.DecodeError, match="exceeds the limit") as caught:
        list(ga.GPULoader(files[:4], batch_size=2, transform=ga.Compose(TRAIN), max_image_pixels=10, **options))
    assert caught.value.path == files[0][0]
    with pytest.raises(ga.DecodeError) as caught:
        list(ga.GPULoader(files[:4], batch_size=2, transform=ga.Compose(TRAIN), max_file_bytes=small - 1, **options))
    assert caught.value.path in {path for path, _ in files[:4]}
    loader = ga.GPULoader(files[:4], batch_size=2, transform=ga.Compose(TRAIN), max_file_bytes=large, on_error="skip", **options)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        images, _ = epoch(loader)
    assert len(images) == 4 and loader.stats.skipped == 0  # a limit equal to the largest file keeps it


class _KeptFlags(torch.utils.data.Dataset):
    """Label of every item: whether the process that loads it has set its allocator (a worker has)."""

    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int):
        from gpuaug.loader import worker

        return torch.zeros(3, 8, 8, dtype=torch.uint8), int((os.getpid(), True) == worker._ALLOCATOR)


@pytest.mark.skipif(sys.platform != "linux" or platform.libc_ver()[0] != "glibc", reason="glibc's allocator settings")
def test_workers_keep_freed_memory_for_the_next_batch():
    """The workers set glibc to keep freed blocks (``keep_freed_memory``): a second round of the same
    allocations then faults few new pages in, where glibc's defaults give the heap back and fault it
    all in again. Each in a fresh interpreter; the user's own process keeps its settings."""
    script = textwrap.dedent(
        """
        import resource, sys, torch
        from gpuaug.loader.worker import keep_freed_memory
        if sys.argv[1] == "kept":
            assert keep_freed_memory() and keep_freed_memory()
        faults = []
        for _ in range(2):
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            blocks = [torch.ones(512 * 1024) for _ in range(40)]  # 40 blocks of 2 MiB
            del blocks
            faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
        print(*faults)
        """
    )
    rounds = {}
    for mode in ("default", "kept"):
        done = subprocess.run([sys.executable, "-c", script, mode], capture_output=True, text=True, cwd=ROOT, timeout=GUARD)
        assert done.returncode == 0, done.stderr
        rounds[mode] = [int(value) for value in done.stdout.split()]
    pages = 40 * 512  # 2 MiB blocks of 4 KiB pages
    assert rounds["default"][0] > pages * 0.9 and rounds["default"][1] > pages // 2, rounds
    assert rounds["kept"][0] > pages * 0.9 and rounds["kept"][1] < pages // 2, rounds

    transform = ga.Compose([ga.CenterCrop(8)])
    in_workers = ga.GPULoader(_KeptFlags(), batch_size=2, num_workers=1, transform=transform, device="cpu")
    assert [labels.tolist() for _, labels in in_workers] == [[1, 1], [1, 1]]
    in_process = ga.GPULoader(_KeptFlags(), batch_size=2, num_workers=0, transform=transform, device="cpu")
    assert [labels.tolist() for _, labels in in_process] == [[0, 0], [0, 0]]
