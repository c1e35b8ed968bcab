"""Flannel's lease layer on the etcd datastore, against a real etcd (Debian's etcd-server 3.4) and etcdctl.

Each test gets its own etcd on free loopback ports (``tests/support/etcd.py``),
killed and deleted afterwards whatever happens. Covered: the config key, the
CAS race, TTL expiry and renewal as etcd leases (a renewal keeps the key's own
etcd lease), watch from a revision, compaction, outages (stopped, frozen, dead
endpoints) and interop with etcdctl on Flannel's exact keys and values.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import replace

import pytest

from pycni.datastore import Compacted, Unavailable
from pycni.datastore.etcd import EtcdDatastore
from pycni.fabric.flannel.leases import LeaseStore
from pycni.fabric.flannel.model import ConfigError, EventType, IPv4Net, IPv6Net, Lease, LeaseAttrs, LeaseEvent
from tests.support.etcd import EtcdServer, etcd_server, free_port
from tests.support.netns import NetnsPool, run

PREFIX = "/coreos.com/network"
CONFIG = '{"Network": "10.5.0.0/16", "Backend": {"Type": "vxlan"}}'
FLANNEL_VALUE = (
    '{"PublicIP":"192.168.64.3","PublicIPv6":null,"BackendType":"vxlan",'
    '"BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}}'
)


@pytest.fixture
def etcd() -> Iterator[EtcdServer]:
    with etcd_server() as server:
        yield server


def etcd_store(*endpoints: str, prefix: str = PREFIX, timeout: float = 5.0) -> LeaseStore:
    return LeaseStore(EtcdDatastore(endpoints, timeout=timeout), prefix)


@pytest.fixture
def store(etcd: EtcdServer) -> Iterator[LeaseStore]:
    store = etcd_store(etcd.url, timeout=2)
    yield store
    store.close()


def lease(subnet: str, ip: str = "192.168.64.3", mac: str = "c6:d2:32:6f:8f:44") -> Lease:
    return Lease(IPv4Net(subnet), LeaseAttrs(ip, "vxlan", {"VNI": 1, "VtepMAC": mac}))


class Watcher:
    """Runs ``watch_leases`` in a thread, collecting events or the error that ended it."""

    def __init__(self, store: LeaseStore, since: int) -> None:
        self.events: list[LeaseEvent] = []
        self.error: BaseException | None = None
        self.ended_at = 0.0
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._run, args=(store, since), daemon=True)
        self._thread.start()

    def _run(self, store: LeaseStore, since: int) -> None:
        try:
            for batch in store.watch_leases(since):
                with self._changed:
                    self.events.extend(batch)
                    self._changed.notify_all()
        except BaseException as error:  # noqa: BLE001 - handed to the test
            self.error = error
        finally:
            self.ended_at = time.monotonic()

    def wait_for(self, count: int, timeout: float) -> list[LeaseEvent]:
        with self._changed:
            self._changed.wait_for(lambda: len(self.events) >= count or self.error is not None, timeout)
            assert len(self.events) >= count, f"{self.events} / {self.error!r}"
            return list(self.events)

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the watch is still blocked"


def kinds(events: list[LeaseEvent]) -> list[tuple[EventType, str]]:
    return [(event.type, str(event.lease.subnet)) for event in events]


def test_network_config(etcd: EtcdServer, store: LeaseStore) -> None:
    with pytest.raises(ConfigError) as error:
        store.get_network_config()
    assert f"etcdctl put {PREFIX}/config" in error.value.msg
    etcd.etcdctl("put", f"{PREFIX}/config", CONFIG)
    assert store.get_network_config() == CONFIG
    # Go's path.Join: a trailing slash on the prefix changes nothing.
    other = etcd_store(etcd.url, prefix=PREFIX + "/")
    try:
        assert other.get_network_config() == CONFIG
    finally:
        other.close()


def test_interop_with_etcdctl(etcd: EtcdServer, store: LeaseStore) -> None:
    attrs = LeaseAttrs("192.168.64.3", "vxlan", {"VNI": 1, "VtepMAC": "c6:d2:32:6f:8f:44"})
    assert store.create_lease(Lease(IPv4Net("10.5.52.0/24"), attrs), 3600)
    out = etcd.etcdctl("get", "--prefix", f"{PREFIX}/subnets").stdout.splitlines()
    assert out == [f"{PREFIX}/subnets/10.5.52.0-24", FLANNEL_VALUE]
    # The TTL is an etcd lease attached to the key, as flanneld writes it.
    got = json.loads(etcd.etcdctl("get", f"{PREFIX}/subnets/10.5.52.0-24", "-w", "json").stdout)
    lease_id = got["kvs"][0]["lease"]
    ttl = etcd.etcdctl("lease", "timetolive", format(lease_id, "x")).stdout
    assert "granted with TTL(3600s)" in ttl
    # And the other way: what a Flannel user writes with etcdctl (a reservation has no lease).
    dual = f"{PREFIX}/subnets/10.5.53.0-24&fd00:5:0:35::-64"
    etcd.etcdctl("put", dual, FLANNEL_VALUE.replace("64.3", "64.4"))
    etcd.etcdctl("put", f"{PREFIX}/subnets/not-a-subnet", "{}")  # skipped, as Flannel does
    leases, _ = store.list_leases()
    assert [(str(item.subnet), item.ipv6_subnet, item.attrs.public_ip) for item in leases] == [
        ("10.5.52.0/24", None, "192.168.64.3"),
        ("10.5.53.0/24", IPv6Net("fd00:5:0:35::/64"), "192.168.64.4"),
    ]
    assert leases[0].expiration is not None and 3500 < leases[0].expiration - time.time() <= 3600
    assert leases[1].expiration is None


def test_cas_race_exactly_one_wins(etcd: EtcdServer) -> None:
    stores = [etcd_store(etcd.url) for _ in range(2)]
    barrier = threading.Barrier(2)
    results: dict[int, bool] = {}

    def race(index: int) -> None:
        barrier.wait()
        results[index] = stores[index].create_lease(lease("10.5.1.0/24", f"192.168.64.{index + 10}"), 60)

    try:
        for _ in range(10):  # a few rounds, to make the race real
            results.clear()
            threads = [threading.Thread(target=race, args=(index,)) for index in range(2)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(10)
            assert sorted(results.values()) == [False, True]
            winner = next(index for index, won in results.items() if won)
            leases, _ = stores[0].list_leases()
            assert [item.attrs.public_ip for item in leases] == [f"192.168.64.{winner + 10}"]
            stores[0].delete_lease(leases[0])
        # The losers' etcd leases were revoked, and so were the winners' when their keys went.
        assert etcd.etcdctl("lease", "list").stdout.startswith("found 0 leases")
    finally:
        for store in stores:
            store.close()


def test_ttl_expiry_is_seen_by_watch_as_removed(store: LeaseStore) -> None:
    _, start = store.list_leases()
    watcher = Watcher(store, start)
    assert store.create_lease(lease("10.5.1.0/24"), 2)
    began = time.monotonic()
    events = watcher.wait_for(2, timeout=10)
    assert kinds(events) == [(EventType.ADDED, "10.5.1.0/24"), (EventType.REMOVED, "10.5.1.0/24")]
    assert 1.5 < time.monotonic() - began < 6
    added, removed = events
    assert added.lease.expiration is not None and added.lease.expiration - time.time() < 3
    assert removed.lease.attrs == lease("10.5.1.0/24").attrs  # decoded from prev_kv
    assert store.list_leases()[0] == []
    store.close()
    watcher.join(5)


def test_renewal_keeps_the_lease(etcd: EtcdServer, store: LeaseStore) -> None:
    item = lease("10.5.1.0/24")
    assert store.create_lease(item, 2)
    for _ in range(4):  # twice the TTL in all
        time.sleep(1)
        store.update_lease(item, 2)
        assert [str(found.subnet) for found in store.list_leases()[0]] == ["10.5.1.0/24"]
    # A renewal may make a reservation of it; then it never expires.
    store.update_lease(item, None)
    time.sleep(2.5)
    leases, _ = store.list_leases()
    assert [found.expiration for found in leases] == [None]
    assert (
        "lease" not in json.loads(etcd.etcdctl("get", f"{PREFIX}/subnets/10.5.1.0-24", "-w", "json").stdout)["kvs"][0]
    )


def etcd_lease_of(etcd: EtcdServer, key: str) -> int:
    return int(json.loads(etcd.etcdctl("get", key, "-w", "json").stdout)["kvs"][0].get("lease", 0))


def test_a_renewal_refreshes_the_keys_own_etcd_lease(etcd: EtcdServer, store: LeaseStore) -> None:
    """No renewal grants a lease while the key's own can be kept, so no kill between two requests orphans one.

    The kept lease is refreshed to its full TTL; another TTL, or a lease that
    also holds someone else's key, gets a new lease (and the old one is
    revoked when nothing holds it any more).
    """
    key = f"{PREFIX}/subnets/10.5.1.0-24"
    item = lease("10.5.1.0/24")
    assert store.create_lease(item, 600)
    first = etcd_lease_of(etcd, key)
    etcd.etcdctl("lease", "keep-alive", "--once", format(first, "x"))
    written = store.datastore.put(key, item.attrs.to_json(), 600)
    assert written.lease == first and etcd_lease_of(etcd, key) == first
    assert written.expires_at is not None and 595 < written.expires_at - time.time() <= 600
    renewed = replace(item, attrs=replace(item.attrs, backend_data={"VNI": 1, "VtepMAC": "0e:00:00:00:00:01"}))
    store.update_lease(renewed, 600)
    assert etcd_lease_of(etcd, key) == first
    assert [found.attrs for found in store.list_leases()[0]] == [renewed.attrs], "the new value, under the old lease"
    assert etcd.etcdctl("lease", "list").stdout.startswith("found 1 leases")
    store.update_lease(renewed, 300)  # another TTL: a lease granted for it, the old one revoked
    second = etcd_lease_of(etcd, key)
    assert second != first
    assert "granted with TTL(300s)" in etcd.etcdctl("lease", "timetolive", format(second, "x")).stdout
    assert etcd.etcdctl("lease", "list").stdout.startswith("found 1 leases")
    etcd.etcdctl("put", "--lease", format(second, "x"), "/elsewhere/theirs", "x")  # the lease is shared now
    store.update_lease(renewed, 300)
    third = etcd_lease_of(etcd, key)
    assert third not in (first, second), "a lease another key holds is not refreshed for ours"
    assert etcd.etcdctl("get", "/elsewhere/theirs", "--print-value-only").stdout.strip() == "x"
    assert etcd.etcdctl("lease", "list").stdout.startswith("found 2 leases")


def test_watch_from_a_revision(etcd: EtcdServer, store: LeaseStore) -> None:
    store.create_lease(lease("10.5.1.0/24"), 60)
    _, middle = store.list_leases()
    store.create_lease(lease("10.5.2.0/24", "192.168.64.4"), 60)
    store.delete_lease(lease("10.5.1.0/24"))
    etcd.etcdctl("put", f"{PREFIX}/config", CONFIG)  # outside subnets/: not an event
    etcd.etcdctl("put", f"{PREFIX}/subnets/10.5.3.0-24", FLANNEL_VALUE)
    watcher = Watcher(store, middle)
    events = watcher.wait_for(3, timeout=5)
    assert kinds(events) == [
        (EventType.ADDED, "10.5.2.0/24"),
        (EventType.REMOVED, "10.5.1.0/24"),
        (EventType.ADDED, "10.5.3.0/24"),
    ]
    assert events[2].lease.expiration is None  # etcdctl put: no lease
    from_start = Watcher(store, 0)
    assert kinds(from_start.wait_for(4, timeout=5))[0] == (EventType.ADDED, "10.5.1.0/24")
    store.close()
    watcher.join(5)
    from_start.join(5)


def test_watch_behind_compaction_asks_for_a_relist(etcd: EtcdServer, store: LeaseStore) -> None:
    for index in range(1, 4):
        store.create_lease(lease(f"10.5.{index}.0/24"), 60)
    _, revision = store.list_leases()
    etcd.etcdctl("compact", str(revision))
    watcher = Watcher(store, 1)
    watcher.join(5)
    assert isinstance(watcher.error, Compacted) and isinstance(watcher.error, Unavailable)
    assert "compacted" in watcher.error.msg and "re-list" in watcher.error.msg


def test_outage_and_recovery(etcd: EtcdServer, store: LeaseStore) -> None:
    item = lease("10.5.1.0/24")
    assert store.create_lease(item, 600)
    _, revision = store.list_leases()
    watcher = Watcher(store, revision)
    time.sleep(0.5)
    etcd.stop()
    stopped = time.monotonic()
    watcher.join(5)
    assert isinstance(watcher.error, Unavailable)
    assert watcher.ended_at - stopped < 5
    for call in (store.list_leases, store.get_network_config, lambda: store.create_lease(lease("10.5.2.0/24"), 60)):
        began = time.monotonic()
        with pytest.raises(Unavailable) as error:
            call()
        assert time.monotonic() - began < 5
        assert etcd.url in error.value.msg
        assert error.value.code == 11
    with pytest.raises(Unavailable):
        next(iter(store.watch_leases(revision)))
    etcd.start()
    leases, _ = store.list_leases()  # the same store object works again, data kept
    assert [str(found.subnet) for found in leases] == ["10.5.1.0/24"]
    watcher = Watcher(store, revision)
    store.delete_lease(item)
    assert kinds(watcher.wait_for(1, timeout=5)) == [(EventType.REMOVED, "10.5.1.0/24")]
    store.close()
    watcher.join(5)


def test_a_frozen_etcd_does_not_block_the_watch(etcd: EtcdServer, store: LeaseStore) -> None:
    _, revision = store.list_leases()
    watcher = Watcher(store, revision)
    time.sleep(0.5)
    etcd.freeze()  # connections stay open; nothing answers
    try:
        frozen = time.monotonic()
        watcher.join(10)
        assert isinstance(watcher.error, Unavailable)
        assert "stopped answering" in watcher.error.msg
        assert watcher.ended_at - frozen < 6
        began = time.monotonic()
        with pytest.raises(Unavailable, match="timed out"):
            store.list_leases()
        assert time.monotonic() - began < 4  # the store's 2 s timeout
    finally:
        etcd.thaw()
    assert store.list_leases()[0] == []


def test_endpoints_are_tried_in_order(etcd: EtcdServer) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    store = etcd_store(dead, etcd.url)
    try:
        assert store.create_lease(lease("10.5.1.0/24"), 60)
        _, revision = store.list_leases()
        watcher = Watcher(store, revision - 1)
        assert kinds(watcher.wait_for(1, timeout=5)) == [(EventType.ADDED, "10.5.1.0/24")]
    finally:
        store.close()
    nobody = etcd_store(dead, f"http://127.0.0.1:{free_port()}")
    try:
        with pytest.raises(Unavailable) as error:
            nobody.list_leases()
        assert all(url in error.value.msg for url in nobody.datastore.endpoints)  # type: ignore[attr-defined]
        assert "Connection refused" in error.value.msg
    finally:
        nobody.close()


def test_close_ends_a_blocked_watch(store: LeaseStore) -> None:
    watcher = Watcher(store, store.list_leases()[1])
    time.sleep(0.3)
    store.close()
    watcher.join(3)
    assert isinstance(watcher.error, Unavailable)


NODE_SCRIPT = """
import sys
from pycni.fabric.flannel.leases import open_lease_store
from pycni.fabric.flannel.model import IPv4Net, Lease, LeaseAttrs
store = open_lease_store(sys.argv[1], "/coreos.com/network", None)
print(store.create_lease(Lease(IPv4Net("10.5.7.0/24"), LeaseAttrs("198.51.100.1", "vxlan")), 60))
"""


def test_etcd_in_an_underlay_namespace(netns: NetnsPool, python: str) -> None:
    """How the multi-node tests run it: in its own namespace, on an underlay address."""
    underlay = netns.new("underlay")
    run("ip", "link", "add", "br0", "type", "bridge", netns=underlay)
    run("ip", "addr", "add", "198.51.100.1/24", "dev", "br0", netns=underlay)
    run("ip", "link", "set", "br0", "up", netns=underlay)
    with etcd_server(host="198.51.100.1", netns=underlay) as server:
        assert server.url == "http://198.51.100.1:2379"
        result = run(python, "-c", NODE_SCRIPT, server.url, netns=underlay)
        assert result.stdout.strip() == "True"
        out = server.etcdctl("get", "--prefix", f"{PREFIX}/subnets").stdout.splitlines()
        assert out == [
            f"{PREFIX}/subnets/10.5.7.0-24",
            '{"PublicIP":"198.51.100.1","PublicIPv6":null,"BackendType":"vxlan"}',
        ]
        pid = server.process.pid if server.process else 0
    assert not os.path.exists(f"/proc/{pid}"), "etcd outlived its context"
    assert not os.path.exists(server.workdir)
