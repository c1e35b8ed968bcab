"""MemoryDatastore with a hand-driven clock: exact TTL boundaries, expiry order, watch life cycle.

No root, no server, no real waiting on TTLs: what unit tests of pure logic
(Calico IPAM's CAS loop, lease logic) get from this backend.
"""

from __future__ import annotations

import threading
import time

import pytest

from pycni.datastore import Compacted, EventType, InvalidArgument, Unavailable, open_datastore
from pycni.datastore.memory import MemoryDatastore
from tests.support.datastore import Clock, Collector, summary


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(clock: Clock) -> MemoryDatastore:
    return MemoryDatastore(clock, poll_interval=0.01)


def test_open_datastore_memory() -> None:
    store = open_datastore(memory=True)
    assert isinstance(store, MemoryDatastore)
    assert store.revision() == 0


def test_a_key_lives_exactly_its_ttl(store: MemoryDatastore, clock: Clock) -> None:
    written = store.create("/k", "v", ttl=10)
    assert written.expires_at == clock.now + 10
    clock.advance(9.999)
    assert store.get("/k") == written
    clock.advance(0.001)
    assert store.get("/k") is None
    assert store.revision() == written.mod_revision + 1  # the expiry is a write
    assert store.list("")[0] == []


def test_expiries_are_deletes_in_expiry_order_one_revision_each(store: MemoryDatastore, clock: Clock) -> None:
    store.put("/late", "1", ttl=30)
    store.put("/early", "2", ttl=5)
    store.put("/b-same", "3", ttl=20)
    store.put("/a-same", "4", ttl=20)
    store.put("/never", "5")
    clock.advance(60)
    listed, at = store.list("")
    assert [kv.key for kv in listed] == ["/never"] and at == 9
    events = list(next(store.watch("", 5)))
    assert summary(events) == [
        ("DELETE", "/early", 6, "2"),
        ("DELETE", "/a-same", 7, "4"),
        ("DELETE", "/b-same", 8, "3"),
        ("DELETE", "/late", 9, "1"),
    ]


def test_every_write_sets_the_ttl_anew(store: MemoryDatastore, clock: Clock) -> None:
    first = store.create("/k", "v", ttl=10)
    clock.advance(8)
    renewed = store.update("/k", "v", first.mod_revision, ttl=10)
    assert renewed.expires_at == clock.now + 10
    clock.advance(8)
    assert store.get("/k") is not None  # 16 s after the create
    permanent = store.put("/k", "v")
    clock.advance(10**6)
    assert store.get("/k") == permanent


def test_a_waiting_watch_sees_the_expiry_when_the_clock_passes(store: MemoryDatastore, clock: Clock) -> None:
    written = store.create("/t/k", "v", ttl=5)
    watch = Collector(store.watch("/t/", written.mod_revision))
    time.sleep(0.05)
    assert watch.events == []
    clock.advance(5)  # nobody calls the store: the watch's own poll sweeps
    events = watch.wait_for(1, timeout=2)
    assert summary(events) == [("DELETE", "/t/k", written.mod_revision + 1, "v")]
    watch.stop()


def test_watch_life_cycle(store: MemoryDatastore) -> None:
    store.put("/w/a", "1")
    # Closed before the first step: ends at once, yields nothing.
    early = store.watch("/w/", 0)
    early.close()
    assert list(early) == []
    # As a context manager.
    with store.watch("/w/", 0) as watch:
        assert summary(next(watch)) == [("PUT", "/w/a", 1, "1")]
        assert watch.revision == 1
    assert watch.closed
    # From a revision still to come: waits for it.
    future = Collector(store.watch("/w/", 5))
    for index in range(6):
        store.put("/w/a", str(index))
    future.wait_for(2)
    assert summary(future.settle()) == [("PUT", "/w/a", 6, "4"), ("PUT", "/w/a", 7, "5")]
    future.stop()
    # Closed from another thread while blocked.
    blocked = Collector(store.watch("/w/", store.revision()))
    threading.Timer(0.1, blocked.watch.close).start()
    blocked.join(2)
    assert blocked.error is None


def test_compaction_and_close(store: MemoryDatastore) -> None:
    for index in range(10):
        store.put("/c", str(index))
    store.compact(6)
    with pytest.raises(Compacted) as error:
        next(store.watch("/", 4))
    assert (error.value.since_revision, error.value.compact_revision) == (4, 6)
    assert [event.kv.value for event in next(store.watch("/", 5))] == ["5", "6", "7", "8", "9"]
    with pytest.raises(InvalidArgument):
        store.compact(11)
    blocked = Collector(store.watch("/", 10))
    time.sleep(0.05)
    store.close()
    blocked.join(2)
    assert isinstance(blocked.error, Unavailable)
    with pytest.raises(Unavailable, match="closed"):
        store.put("/c", "x")


def test_events_share_one_revision_for_delete_prefix(store: MemoryDatastore) -> None:
    for key in ("/p/1", "/p/2", "/q"):
        store.put(key, key)
    assert store.delete_prefix("/p/") == 2
    events = next(store.watch("/p/", 3))
    assert [(event.type, event.revision) for event in events] == [(EventType.DELETE, 4)] * 2
