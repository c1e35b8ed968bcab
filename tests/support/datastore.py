"""Helpers for the datastore tests: the backends under test, a watch read in a thread, a fake clock.

``Backend`` names one store (memory, a sqlite file, an etcd) and opens more
clients of it, so races run between separate connections, as between agents.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from pycni.datastore import Conflict, Datastore, Event, EventType, Watch

T = TypeVar("T")


@dataclass
class Backend:
    """One store under test; ``open()`` is another client of it (the same object for memory)."""

    kind: str
    open: Callable[[], Datastore]
    location: str = ""  # the sqlite path or the etcd URL, for a client in another process
    opened: list[Datastore] = field(default_factory=list)

    def client(self) -> Datastore:
        store = self.open()
        self.opened.append(store)
        return store

    def close_all(self) -> None:
        for store in self.opened:
            store.close()


class Clock:
    """A wall clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Collector:
    """Iterates a watch in a thread, keeping its events and the error that ended it."""

    def __init__(self, watch: Watch) -> None:
        self.watch = watch
        self.events: list[Event] = []
        self.batches = 0
        self.error: BaseException | None = None
        self.ended_at: float | None = None
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for batch in self.watch:
                assert batch, "a watch yielded an empty batch"
                with self._changed:
                    self.events.extend(batch)
                    self.batches += 1
                    self._changed.notify_all()
        except BaseException as error:  # noqa: BLE001 - handed to the test
            self.error = error
        finally:
            with self._changed:
                self.ended_at = time.monotonic()
                self._changed.notify_all()

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Event]:
        """At least ``count`` events within ``timeout`` s, or the test fails saying what came."""
        with self._changed:
            self._changed.wait_for(lambda: len(self.events) >= count or self.ended_at is not None, timeout)
            assert len(self.events) >= count, f"{len(self.events)} of {count} events: {self.events} / {self.error!r}"
            return list(self.events)

    def settle(self, quiet: float = 0.3) -> list[Event]:
        """The events once none arrived for ``quiet`` s (to check nothing more comes)."""
        while True:
            with self._changed:
                before = len(self.events)
                self._changed.wait(quiet)
                if len(self.events) == before:
                    return list(self.events)

    def join(self, timeout: float = 10.0) -> None:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), f"the watch is still blocked after {timeout} s"

    def stop(self, timeout: float = 10.0) -> None:
        self.watch.close()
        self.join(timeout)


def summary(events: list[Event]) -> list[tuple[str, str, int, str | None]]:
    """(type, key, revision, value: the new one for a PUT, the one that went for a DELETE)."""
    rows: list[tuple[str, str, int, str | None]] = []
    for event in events:
        value = event.kv.value if event.type is EventType.PUT else (event.prev.value if event.prev else None)
        rows.append((event.type.value, event.key, event.revision, value))
    return rows


def increment(store: Datastore, key: str, times: int) -> int:
    """The CAS loop callers use (Calico's IPAM block update): read, write at that revision, retry on Conflict."""
    conflicts = 0
    done = 0
    while done < times:
        current = store.get(key)
        assert current is not None
        try:
            store.update(key, str(int(current.value) + 1), current.mod_revision)
            done += 1
        except Conflict:
            conflicts += 1
    return conflicts


def together(calls: list[Callable[[], T]], timeout: float = 60.0) -> list[T | BaseException]:
    """Run the calls in threads released at once; each one's result or the exception it raised."""
    barrier = threading.Barrier(len(calls))
    results: list[T | BaseException | None] = [None] * len(calls)

    def run(index: int) -> None:
        barrier.wait()
        try:
            results[index] = calls[index]()
        except BaseException as error:  # noqa: BLE001 - the caller asserts on it
            results[index] = error

    threads = [threading.Thread(target=run, args=(index,), daemon=True) for index in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    assert not any(thread.is_alive() for thread in threads), "a racer is still blocked"
    done = [result for result in results if result is not None]
    assert len(done) == len(calls), "a call returned None: together() needs a value from each"
    return done
