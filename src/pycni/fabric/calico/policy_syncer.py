"""The policy engine's follower: the keys it reads, listed once per prefix and then watched.

The routing :class:`~pycni.fabric.calico.syncer.Syncer` drops endpoints and
policy as they arrive so that a pod's ADD never wakes the route calculation;
policy needs exactly those, plus the Kubernetes stand-ins under
``/pycni/k8s/``. So it has its own follower: one thread per prefix, each a
listing at one revision and a watch from there, keeping the raw values the
predicate wants. :meth:`PolicyFollower.snapshot` is every prefix's keys once
each has been listed, with a generation number that grows with every change,
so the consumer knows whether there is anything new. On a lost store the
cache stays (so does the table built from it) and the prefix is re-listed
with a growing back-off, which also covers a compacted history.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence

from pycni.datastore import Datastore, DatastoreError, EventType, KeyValue, Watch

log = logging.getLogger("pycni.fabric.calico.policy")
MAX_BACKOFF = 5.0


class _Prefix:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.values: dict[str, KeyValue] = {}
        self.revision = 0
        self.listed = False
        self.watch: Watch | None = None


class PolicyFollower:
    """Lists and watches ``prefixes`` in threads; ``on_update`` (from those threads) should only wake the consumer."""

    def __init__(
        self,
        store: Datastore,
        prefixes: Sequence[str],
        on_update: Callable[[], None],
        keep: Callable[[str], bool] = lambda key: True,
    ) -> None:
        self.store = store
        self._prefixes = [_Prefix(p) for p in prefixes]
        self._on_update = on_update
        self._keep = keep
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self.generation = 0

    def start(self) -> None:
        for index, part in enumerate(self._prefixes):
            thread = threading.Thread(target=self._run, args=(part,), name=f"policy-syncer-{index}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stopping.set()
        for part in self._prefixes:
            if part.watch is not None:
                part.watch.close()
        for thread in self._threads:
            thread.join(timeout=10)

    def snapshot(self) -> tuple[int, list[KeyValue]] | None:
        """(generation, every kept key) once every prefix has been listed, else None."""
        with self._lock:
            if not all(part.listed for part in self._prefixes):
                return None
            return self.generation, [kv for part in self._prefixes for kv in part.values.values()]

    def list_now(self) -> None:
        """List every prefix once in the caller's thread (start-up, tests); raises what the store raises."""
        for part in self._prefixes:
            self._list(part)

    # -- the threads ---------------------------------------------------------------------

    def _list(self, part: _Prefix) -> None:
        kvs, revision = self.store.list(part.prefix)
        with self._lock:
            part.values = {kv.key: kv for kv in kvs if self._keep(kv.key)}
            part.revision = revision
            part.listed = True
            self.generation += 1
        self._on_update()

    def _run(self, part: _Prefix) -> None:
        delay, need_list, warned = 0.1, not part.listed, False
        while not self._stopping.is_set():
            try:
                if need_list:
                    self._list(part)
                    need_list = False
                    if warned:
                        log.info("policy: %s re-listed at revision %d", part.prefix, part.revision)
                    warned = False
                delay = 0.1
                self._follow(part)
            except DatastoreError as exc:
                if not warned and not self._stopping.is_set():
                    log.warning("policy: lost the watch of %s (%s); the policy table stays as it is", part.prefix, exc)
                    warned = True
                need_list = True
                self._stopping.wait(delay)
                delay = min(delay * 2, MAX_BACKOFF)

    def _follow(self, part: _Prefix) -> None:
        watch = self.store.watch(part.prefix, part.revision)
        part.watch = watch
        try:
            if self._stopping.is_set():
                return
            for batch in watch:
                changed = False
                with self._lock:
                    for event in batch:
                        if not self._keep(event.key):
                            continue
                        if event.type is EventType.PUT:
                            part.values[event.key] = event.kv
                        else:
                            part.values.pop(event.key, None)
                        changed = True
                    part.revision = watch.revision
                    if changed:
                        self.generation += 1
                if changed:
                    self._on_update()
                if self._stopping.is_set():
                    return
        finally:
            part.watch = None
            watch.close()
