"""Dead DataLoader workers, reported as one clear error naming the worker and its exit code.

A worker that dies (killed, crashed, ``os._exit``) shows up in the main process as torch's own
RuntimeError, a ``ConnectionResetError``, an ``EOFError`` or a broken pipe, depending on when it
died, and torch's SIGCHLD handler may raise wherever the main thread happens to be. The loader
unregisters its workers from that handler (:func:`unregister_sigchld`) and reads its host batches
through :class:`HostBatches`, which turns every such sign into one ``RuntimeError`` naming the
worker and how it died.

Example:
    >>> torch_says_worker_died(RuntimeError("DataLoader worker (pid 7) exited unexpectedly"))
    True
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from typing import Any

from gpuaug.loader.host_batch import HostBatch

__all__ = ["HostBatches", "torch_says_worker_died", "unregister_sigchld", "worker_exit_error"]


def worker_exit_error(iterator: Any, error: BaseException, wait: float) -> RuntimeError | None:
    """A clear error when a DataLoader worker process died (killed, crashed, ``os._exit``), else None.

    A dead worker shows up as torch's own RuntimeError, a ``ConnectionResetError``, an
    ``EOFError`` or a broken pipe, depending on when it died; the process's exit code says what
    happened. ``wait`` seconds are given to the dead process to be reaped.
    """
    workers = list(getattr(iterator, "_workers", []) or [])
    deadline = time.monotonic() + wait
    while True:
        # a worker that failed first; the others may since have been stopped with exit code 0
        dead = [(number, worker) for number, worker in enumerate(workers) if worker.exitcode not in (None, 0)]
        if dead or time.monotonic() >= deadline:
            break
        time.sleep(0.02)
    if not dead:
        return None
    number, worker = dead[0]
    code = worker.exitcode
    how = f"killed by {signal.Signals(-code).name}" if code < 0 and -code in signal.valid_signals() else f"exit code {code}"
    return RuntimeError(
        f"DataLoader worker {number} (pid {worker.pid}) exited unexpectedly ({how}); "
        f"the batch it was loading is lost. Cause seen in the main process: {type(error).__name__}: {error}"
    )


_DEATH_SIGNS = (ConnectionError, EOFError, BrokenPipeError, FileNotFoundError)


def unregister_sigchld(iterator: Any) -> None:
    """Unregister the DataLoader iterator's workers from torch's SIGCHLD handler.

    That handler raises its own RuntimeError in the main thread, wherever it happens to be (in
    the training loop's own code too), when a worker dies; unregistered, a dead worker is found
    by the producer thread instead (torch's queue reads check the workers every 5 s), which
    reports it as one error naming the worker and its exit code.
    """
    if getattr(iterator, "_worker_pids_set", False):
        from torch.utils.data._utils import signal_handling

        signal_handling._remove_worker_pids(id(iterator))
        iterator._worker_pids_set = False


def torch_says_worker_died(error: BaseException) -> bool:
    """torch's own words for a dead worker (from its SIGCHLD handler or its result queue)."""
    text = str(error)
    return "DataLoader worker" in text and ("exited unexpectedly" in text or "killed by signal" in text)


class HostBatches:
    """The DataLoader iterator's batches, with a dead worker reported as one clear error."""

    def __init__(self, iterator: Any) -> None:
        self.iterator = iterator

    def __iter__(self) -> Iterator[HostBatch]:
        while True:
            try:
                batch = next(self.iterator)
            except StopIteration:
                return
            except Exception as error:
                died = isinstance(error, _DEATH_SIGNS) or torch_says_worker_died(error)
                explained = worker_exit_error(self.iterator, error, wait=10.0 if died else 0.0)
                if explained is not None:
                    raise explained from error
                raise
            yield batch
