"""The producer thread: the loader's device stage runs here, off the training thread.

The training thread does nothing for the data but wait: a :class:`Producer` thread owns the device
stage (its own CUDA stream), takes host batches from the DataLoader workers, runs the stage and
puts ``(images, labels, event)`` into a bounded queue. The consumer takes a batch and calls
:func:`hand_over`: its stream waits on *that batch's* event (not on the side stream, which may
already run the next batch) and the tensors are recorded on its stream so their memory is not
reused too early.

Errors raised in the producer reach the consumer with their type and message (a ``DecodeError``
still names the file). Closing the consumer's iterator (``break``, ``del``, garbage collection,
``KeyboardInterrupt``, the end of an epoch) stops the thread.

Example:
    >>> producer = Producer(iter([1, 2, 3]), lambda item, number: (item * 10, None), depth=2)
    >>> list(producer)
    [(10, None), (20, None), (30, None)]
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch

__all__ = ["Producer", "hand_over"]

_END = object()


class _Failure:
    """An exception raised in the producer, carried to the consumer."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


class Producer:
    """Runs ``work(item, number)`` over ``items`` in a thread; iterate it to take the results in order.

    ``work`` returns a result or None (nothing to deliver for that item). At most ``depth``
    results wait in the queue. Iteration re-raises the producer's exception; ``close()`` (also
    called when iteration ends or the iterator is closed) stops the thread and joins it.

    Args:
        items: an iterator (consumed in the producer thread only).
        work: ``(item, number) -> result | None``.
        depth: queue length (the loader's ``prefetch_factor``).
        on_stopped: called once in the consumer after the thread has stopped (the loader lets its
            workers go or keeps them for the next epoch).
        wake: called in the consumer when the thread is still stuck on its input 2 s after being
            asked to stop (the loader shuts its workers down, which wakes it); ``on_stopped`` is then
            not called.
        stream: a CUDA stream made current in the producer thread.
    """

    def __init__(
        self,
        items: Iterator[Any],
        work: Callable[[Any, int], Any],
        depth: int = 2,
        on_stopped: Callable[[], None] | None = None,
        wake: Callable[[], None] | None = None,
        stream: torch.cuda.Stream | None = None,
    ) -> None:
        self._items, self._work, self._stream = items, work, stream
        self._on_stopped, self._wake = on_stopped, wake
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="gpuaug-producer", daemon=True)
        self._thread.start()

    # -- producer thread ---------------------------------------------------------------------------
    def _run(self) -> None:
        context = torch.cuda.stream(self._stream) if self._stream is not None else contextlib.nullcontext()
        try:
            with context:
                for number, item in enumerate(self._items):
                    if self._stop.is_set():
                        return
                    result = self._work(item, number)
                    if result is not None and not self._put(result):
                        return
            self._put(_END)
        except BaseException as error:  # noqa: BLE001 - every failure goes to the consumer
            self._put(_Failure(error))

    def _put(self, item: Any) -> bool:
        """Put ``item``, waiting for room; False when asked to stop meanwhile."""
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    # -- consumer ----------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[Any]:
        try:
            while True:
                item = self._take()
                if item is _END:
                    return
                if isinstance(item, _Failure):
                    raise item.error
                yield item
        finally:
            self.close()

    def _take(self) -> Any:
        while True:
            try:
                return self._queue.get(timeout=0.1)
            except queue.Empty:
                if not self._thread.is_alive() and self._queue.empty():
                    raise RuntimeError("gpuaug's producer thread stopped without a result or an error") from None

    def close(self) -> None:
        """Stop the thread (it finishes the item in hand), join it, then call ``on_stopped``.

        A thread still waiting after 2 s (on a slow or hung worker) gets ``wake()`` instead, which
        shuts the workers down and wakes it; after 10 s more it is left to die with the process (a
        daemon) rather than hang the caller.
        """
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        started, woken = time.monotonic(), False
        while self._thread.is_alive() and time.monotonic() - started < 12:
            with contextlib.suppress(queue.Empty):  # make room so a blocked put returns
                while True:
                    self._queue.get_nowait()
            self._thread.join(timeout=0.05)
            if not woken and self._wake is not None and time.monotonic() - started > 2:
                woken = True
                self._wake()
        if not woken and self._on_stopped is not None:
            self._on_stopped()

    @property
    def thread(self) -> threading.Thread:
        return self._thread


def hand_over(images: torch.Tensor, labels: torch.Tensor, event: torch.cuda.Event | None) -> None:
    """On the consumer: wait for this batch's own event and keep its memory alive for this stream."""
    if event is None:
        return
    consumer = torch.cuda.current_stream(images.device)
    consumer.wait_event(event)
    images.record_stream(consumer)
    labels.record_stream(consumer)
