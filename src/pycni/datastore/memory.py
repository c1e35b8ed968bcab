"""The datastore in process memory: the contract's reference model, for unit tests of pure logic.

Calico IPAM's compare-and-set loop, a policy syncer, Flannel's lease logic:
each can be tested against this store with no server, no file and no real
time. The clock is injected; a key expires when the clock passes its
``expires_at``, swept into a DELETE event by the next call, or by a waiting
watch (which re-checks the clock every ``poll_interval`` seconds of real time).
The whole history is kept until :meth:`compact`.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from pycni.datastore.base import ClosingMixin
from pycni.datastore.errors import (
    Compacted,
    InvalidArgument,
    Unavailable,
    already_exists,
    conflict,
    not_found,
)
from pycni.datastore.keys import check_key, check_prefix, check_revision, check_ttl, check_value
from pycni.datastore.model import Event, EventType, KeyValue, Listing, tombstone
from pycni.datastore.watch import Batches, Watch


class MemoryDatastore(ClosingMixin):
    """The :class:`~pycni.datastore.Datastore` contract in a dict, safe across threads."""

    def __init__(self, clock: Callable[[], float] = time.time, *, poll_interval: float = 0.05) -> None:
        self.clock = clock
        self.poll_interval = poll_interval
        self._changed = threading.Condition(threading.RLock())
        self._data: dict[str, KeyValue] = {}
        self._history: list[Event] = []  # every event, ascending revision, from _compact_revision on
        self._revision = 0
        self._compact_revision = 0
        self._closed = False

    # -- plumbing ---------------------------------------------------------------

    @contextmanager
    def _state(self) -> Iterator[None]:
        """The lock held, the store open and every due expiry already a DELETE."""
        with self._changed:
            if self._closed:
                raise Unavailable("the in-memory datastore is closed")
            self._sweep()
            yield

    def _sweep(self) -> None:
        now = self.clock()
        due = [kv for kv in self._data.values() if kv.expires_at is not None and kv.expires_at <= now]
        for kv in sorted(due, key=lambda kv: (kv.expires_at or 0.0, kv.key)):
            del self._data[kv.key]
            self._append(Event(EventType.DELETE, tombstone(kv.key, self._bump()), kv))

    def _bump(self) -> int:
        self._revision += 1
        return self._revision

    def _append(self, event: Event) -> None:
        self._history.append(event)
        self._changed.notify_all()

    def _write(self, key: str, value: str, ttl: int | None, prev: KeyValue | None) -> KeyValue:
        revision = self._bump()
        kv = KeyValue(
            key,
            value,
            create_revision=prev.create_revision if prev else revision,
            mod_revision=revision,
            version=prev.version + 1 if prev else 1,
            expires_at=self.clock() + ttl if ttl else None,
        )
        self._data[key] = kv
        self._append(Event(EventType.PUT, kv, prev))
        return kv

    # -- reads ------------------------------------------------------------------

    def get(self, key: str) -> KeyValue | None:
        check_key(key)
        with self._state():
            return self._data.get(key)

    def list(self, prefix: str) -> Listing:
        check_prefix(prefix)
        with self._state():
            found = sorted((kv for kv in self._data.values() if kv.key.startswith(prefix)), key=lambda kv: kv.key)
            return found, self._revision

    def revision(self) -> int:
        with self._state():
            return self._revision

    # -- writes -----------------------------------------------------------------

    def create(self, key: str, value: str, ttl: int | None = None) -> KeyValue:
        check_value(check_key(key), value)
        ttl = check_ttl(ttl)
        with self._state():
            existing = self._data.get(key)
            if existing is not None:
                raise already_exists(key, existing)
            return self._write(key, value, ttl, None)

    def update(self, key: str, value: str, revision: int, ttl: int | None = None) -> KeyValue:
        check_value(check_key(key), value)
        ttl, revision = check_ttl(ttl), check_revision(revision)
        with self._state():
            current = self._data.get(key)
            if current is None:
                raise not_found(key)
            if current.mod_revision != revision:
                raise conflict(key, revision, current)
            return self._write(key, value, ttl, current)

    def put(self, key: str, value: str, ttl: int | None = None) -> KeyValue:
        check_value(check_key(key), value)
        ttl = check_ttl(ttl)
        with self._state():
            return self._write(key, value, ttl, self._data.get(key))

    def delete(self, key: str, revision: int | None = None) -> KeyValue:
        check_key(key)
        if revision is not None:
            check_revision(revision)
        with self._state():
            current = self._data.get(key)
            if current is None:
                raise not_found(key)
            if revision is not None and current.mod_revision != revision:
                raise conflict(key, revision, current)
            del self._data[key]
            self._append(Event(EventType.DELETE, tombstone(key, self._bump()), current))
            return current

    def delete_prefix(self, prefix: str) -> int:
        check_prefix(prefix)
        with self._state():
            doomed = sorted(key for key in self._data if key.startswith(prefix))
            if not doomed:
                return 0
            revision = self._bump()
            for key in doomed:
                self._append(Event(EventType.DELETE, tombstone(key, revision), self._data.pop(key)))
            return len(doomed)

    # -- history ----------------------------------------------------------------

    def watch(self, prefix: str, since_revision: int) -> Watch:
        check_prefix(prefix)
        check_revision(since_revision, "watch revision")
        return Watch(prefix, since_revision, lambda watch: self._batches(watch, prefix, since_revision))

    def _batches(self, watch: Watch, prefix: str, since: int) -> Batches:
        watch.on_close(self._wake)
        while True:
            with self._state():
                if watch.closed:
                    return
                if since + 1 < self._compact_revision:
                    raise Compacted(
                        f"the in-memory datastore forgot revisions before {self._compact_revision}; "
                        f"cannot watch from {since}: re-list and watch from the list's revision",
                        since,
                        self._compact_revision,
                    )
                start = bisect.bisect_right(self._history, since, key=lambda event: event.revision)
                batch = [event for event in self._history[start:] if event.key.startswith(prefix)]
                since = max(since, self._revision)
                if not batch:
                    self._changed.wait(self.poll_interval)  # woken by writes, close(); re-checks the clock
                    continue
            yield batch

    def _wake(self) -> None:
        with self._changed:
            self._changed.notify_all()

    def compact(self, revision: int) -> None:
        check_revision(revision, "compaction revision")
        with self._state():
            if revision > self._revision:
                raise InvalidArgument(f"cannot compact to revision {revision}: the store is at {self._revision}")
            if revision <= self._compact_revision:
                return
            start = bisect.bisect_left(self._history, revision, key=lambda event: event.revision)
            del self._history[:start]
            self._compact_revision = revision

    def close(self) -> None:
        with self._changed:
            self._closed = True
            self._changed.notify_all()
