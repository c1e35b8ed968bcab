"""The object ``watch()`` returns: an iterator of event batches that another thread can stop.

A bare generator cannot be stopped while it blocks (``close()`` from another
thread raises "generator already executing"), and an agent with several
watches must end one without closing the store. So each backend writes its
watch as a generator that sleeps through :meth:`Watch.wait` (or registers a
waker with :meth:`Watch.on_close`) and returns once :attr:`Watch.closed`;
this wrapper owns the cancellation and remembers the last revision handed
out, which is where a caller resumes after :class:`~pycni.datastore.errors.Unavailable`.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable, Generator, Iterator
from types import TracebackType

from pycni.datastore.model import Event

Batches = Generator[list[Event], None, None]


class Watch(Iterator[list[Event]]):
    """Batches of events with ``mod_revision > since_revision`` under ``prefix``, in revision order.

    Iterating blocks until the next batch. It raises ``Unavailable`` when the
    store goes away and ``Compacted`` when the history is gone; it simply
    ends after :meth:`close` (from any thread). :attr:`revision` is the
    revision through which every event has been delivered: watch again from
    it after an ``Unavailable`` and nothing is lost or repeated.
    """

    def __init__(self, prefix: str, since_revision: int, start: Callable[[Watch], Batches]) -> None:
        self.prefix = prefix
        self.revision = since_revision
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._wakers: list[Callable[[], None]] = []
        self._batches = start(self)  # a generator: nothing runs before the first next()

    def __iter__(self) -> Watch:
        return self

    def __next__(self) -> list[Event]:
        if self._closed.is_set():
            self._batches.close()  # runs the backend's cleanup in this (the consuming) thread
            raise StopIteration
        batch = next(self._batches)
        self.revision = max(self.revision, batch[-1].revision)
        return batch

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def wait(self, timeout: float) -> bool:
        """Sleep up to ``timeout`` seconds; True at once when the watch is closed (for polling backends)."""
        return self._closed.wait(timeout)

    def on_close(self, waker: Callable[[], None]) -> None:
        """Call ``waker`` when the watch is closed (at once if it already is): it unblocks the backend."""
        with self._lock:
            if not self._closed.is_set():
                self._wakers.append(waker)
                return
        waker()

    def close(self) -> None:
        """End the watch; safe from any thread and more than once. The iteration stops at its next step."""
        with self._lock:
            self._closed.set()
            wakers, self._wakers = self._wakers, []
        for waker in wakers:
            waker()

    def __enter__(self) -> Watch:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()
        if inspect.getgeneratorstate(self._batches) != inspect.GEN_RUNNING:
            self._batches.close()
