"""EtcdDatastore beyond the shared contract: outages, fail-over, a hung member, etcd's own leases, etcdctl.

Each test gets its own etcd (Debian's etcd-server 3.4, free loopback ports,
``tests/support/etcd.py``), stopped, frozen and restarted as the test needs
and removed afterwards whatever happens.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from pycni.datastore import Compacted, EventType, Unavailable
from pycni.datastore.etcd import EtcdDatastore
from tests.support.datastore import Collector, summary
from tests.support.etcd import EtcdServer, etcd_server, free_port


@pytest.fixture
def etcd() -> Iterator[EtcdServer]:
    with etcd_server() as server:
        yield server


@pytest.fixture
def store(etcd: EtcdServer) -> Iterator[EtcdDatastore]:
    store = EtcdDatastore([etcd.url], timeout=2)
    yield store
    store.close()


def leases(etcd: EtcdServer) -> str:
    return etcd.etcdctl("lease", "list").stdout.splitlines()[0]


def test_outage_is_unavailable_within_seconds_and_the_same_object_recovers(
    etcd: EtcdServer, store: EtcdDatastore
) -> None:
    kept = store.create("/o/kept", "v")
    watch = Collector(store.watch("/o/", kept.mod_revision))
    time.sleep(0.5)
    etcd.stop()
    stopped = time.monotonic()
    watch.join(6)
    assert isinstance(watch.error, Unavailable) and watch.error.code == 11
    assert watch.ended_at is not None and watch.ended_at - stopped < 5
    for call in (
        lambda: store.get("/o/kept"),
        lambda: store.list("/o/"),
        lambda: store.create("/o/new", "v", ttl=60),
        lambda: store.update("/o/kept", "v2", kept.mod_revision),
        lambda: store.delete("/o/kept"),
        store.revision,
    ):
        began = time.monotonic()
        with pytest.raises(Unavailable) as error:
            call()
        assert time.monotonic() - began < 5
        assert etcd.url in error.value.msg and "Connection refused" in error.value.msg
        assert error.value.code == 11
    with pytest.raises(Unavailable):
        next(store.watch("/o/", kept.mod_revision))
    etcd.start()
    # The same object works again, the data kept; a watch from where the lost one stopped misses nothing.
    assert store.get("/o/kept") == kept
    resumed = Collector(store.watch("/o/", watch.watch.revision))
    after = store.put("/o/after", "x")
    assert summary(resumed.wait_for(1)) == [("PUT", "/o/after", after.mod_revision, "x")]
    assert summary(resumed.settle()) == [("PUT", "/o/after", after.mod_revision, "x")]
    resumed.stop()


def test_a_frozen_member_ends_the_watch_and_bounds_every_call(etcd: EtcdServer, store: EtcdDatastore) -> None:
    watch = Collector(store.watch("/f/", store.revision()))
    time.sleep(0.5)
    etcd.freeze()  # connections stay open; nothing answers
    try:
        frozen = time.monotonic()
        watch.join(10)
        assert isinstance(watch.error, Unavailable)
        assert "stopped answering" in watch.error.msg
        assert watch.ended_at is not None and watch.ended_at - frozen < 6
        began = time.monotonic()
        with pytest.raises(Unavailable, match="timed out"):
            store.list("/f/")
        assert time.monotonic() - began < 4  # the store's 2 s timeout
        # A write that timed out may have been applied: the error says so instead of trying elsewhere.
        with pytest.raises(Unavailable, match="may or may not have been applied"):
            store.put("/f/k", "v")
    finally:
        etcd.thaw()
    found = store.get("/f/k")  # applied after the thaw, or not at all: never twice
    assert found is None or found.version == 1


def test_endpoints_are_tried_in_order_for_reads_writes_and_watch(etcd: EtcdServer) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    store = EtcdDatastore([dead, etcd.url], timeout=2)
    try:
        written = store.create("/e/k", "v")  # connection refused: nothing was sent, so the write moves on
        watch = Collector(store.watch("/e/", written.mod_revision - 1))
        assert summary(watch.wait_for(1)) == [("PUT", "/e/k", written.mod_revision, "v")]
        watch.stop()
    finally:
        store.close()
    nobody = EtcdDatastore([dead, f"http://127.0.0.1:{free_port()}"])
    try:
        with pytest.raises(Unavailable) as error:
            nobody.list("/")
        assert all(url in error.value.msg for url in nobody.endpoints)
        assert "Connection refused" in error.value.msg
        assert "check that etcd runs" in error.value.msg
    finally:
        nobody.close()


def test_ttl_is_an_etcd_lease_and_none_pile_up(etcd: EtcdServer, store: EtcdDatastore) -> None:
    created = store.create("/l/k", "v", ttl=600)
    raw = json.loads(etcd.etcdctl("get", "/l/k", "-w", "json").stdout)["kvs"][0]
    assert raw["lease"] == created.lease and raw["mod_revision"] == created.mod_revision
    assert "granted with TTL(600s)" in etcd.etcdctl("lease", "timetolive", format(created.lease, "x")).stdout
    assert created.expires_at is not None and 595 < created.expires_at - time.time() <= 600
    listed = store.get("/l/k")
    assert listed is not None and listed.expires_at is not None and 590 < listed.expires_at - time.time() <= 600
    current = created
    for _ in range(3):  # renewals: each write has a fresh lease, the old one is revoked
        current = store.update("/l/k", "v", current.mod_revision, ttl=600)
    assert leases(etcd) == "found 1 leases"
    with pytest.raises(Exception, match="already exists"):
        store.create("/l/k", "lost", ttl=600)  # the loser's lease is revoked too
    assert leases(etcd) == "found 1 leases"
    current = store.put("/l/k", "permanent")
    assert current.lease == 0 and leases(etcd) == "found 0 leases"
    store.put("/l/k", "v", ttl=600)
    store.delete("/l/k")
    store.put("/l/a", "v", ttl=600)
    store.put("/l/b", "v", ttl=600)
    assert store.delete_prefix("/l/") == 2
    assert leases(etcd) == "found 0 leases"


def test_a_lease_another_key_still_holds_is_left_alone(etcd: EtcdServer, store: EtcdDatastore) -> None:
    granted = etcd.etcdctl("lease", "grant", "600").stdout.split()[1]  # "lease 694d... granted with TTL(600s)"
    etcd.etcdctl("put", "--lease", granted, "/s/mine", "1")
    etcd.etcdctl("put", "--lease", granted, "/s/theirs", "2")
    mine = store.get("/s/mine")
    assert mine is not None and mine.lease == int(granted, 16) and mine.expires_at is not None
    store.delete("/s/mine")
    assert leases(etcd) == "found 1 leases"
    assert etcd.etcdctl("get", "/s/theirs", "--print-value-only").stdout.strip() == "2"


def test_interop_with_etcdctl(etcd: EtcdServer, store: EtcdDatastore) -> None:
    since = store.revision()
    watch = Collector(store.watch("/i/", since))
    etcd.etcdctl("put", "/i/a", '{"from": "etcdctl"}')
    store.put("/i/b", "\u00e9\U0001f680")
    assert etcd.etcdctl("get", "/i/b", "--print-value-only").stdout == "\u00e9\U0001f680\n"
    etcd.etcdctl("del", "/i/a")
    events = watch.wait_for(3)
    assert summary(events) == [
        ("PUT", "/i/a", since + 1, '{"from": "etcdctl"}'),
        ("PUT", "/i/b", since + 2, "\u00e9\U0001f680"),
        ("DELETE", "/i/a", since + 3, '{"from": "etcdctl"}'),
    ]
    header = json.loads(etcd.etcdctl("get", "/i/b", "-w", "json").stdout)["header"]
    assert header["revision"] == store.revision() == since + 3
    watch.stop()


def test_expiry_through_etcd_reaches_the_watch_and_compaction_is_etcds(etcd: EtcdServer, store: EtcdDatastore) -> None:
    since = store.revision()
    watch = Collector(store.watch("/x/", since))
    written = store.create("/x/k", "v", ttl=1)
    events = watch.wait_for(2, timeout=8)
    assert [event.type for event in events] == [EventType.PUT, EventType.DELETE]
    assert events[1].prev is not None and events[1].prev.lease == written.lease
    watch.stop()
    etcd.etcdctl("compact", str(store.revision()))  # compacted by someone else
    with pytest.raises(Compacted) as error:
        next(store.watch("/x/", since))
    assert str(etcd.url) in error.value.msg
