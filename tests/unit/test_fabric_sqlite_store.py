"""The embedded lease store: CAS, TTL expiry seen once, reservations, revisions, watch, sharing one file.

No root needed. Most tests drive expiry with a fake clock; one uses real time,
and one races separate processes on the same file.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pycni.fabric.model import ConfigError, EventType, IPv4Net, Lease, LeaseAttrs, LeaseEvent
from pycni.fabric.store import Store, StoreUnavailable, open_store
from pycni.fabric.store.sqlite import SqliteStore

CONFIG = '{"Network": "10.5.0.0/16", "Backend": {"Type": "vxlan"}}'


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def lease(subnet: str, ip: str = "198.51.100.1", mac: str = "c6:d2:32:6f:8f:44") -> Lease:
    return Lease(IPv4Net(subnet), LeaseAttrs(ip, "vxlan", {"VNI": 1, "VtepMAC": mac}))


@pytest.fixture
def path(tmp_path: Path) -> str:
    return str(tmp_path / "leases.db")


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(path: str, clock: Clock) -> Iterator[SqliteStore]:
    store = SqliteStore(path, clock=clock, poll_interval=0.01)
    yield store
    store.close()


def take(watch: Iterator[list[LeaseEvent]], count: int, timeout: float = 5.0) -> list[LeaseEvent]:
    """The next ``count`` events from a watch, read in a thread so a hang fails instead of blocking."""
    events: list[LeaseEvent] = []

    def read() -> None:
        for batch in watch:
            events.extend(batch)
            if len(events) >= count:
                return

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"only {len(events)} of {count} events within {timeout} s: {events}"
    return events


def kinds(events: list[LeaseEvent]) -> list[tuple[EventType, str]]:
    return [(event.type, str(event.lease.subnet)) for event in events]


def test_store_satisfies_the_protocol(store: SqliteStore) -> None:
    checked: Store = store
    assert checked is store


def test_config_missing_then_set(store: SqliteStore, path: str) -> None:
    with pytest.raises(ConfigError, match="--net-config-path"):
        store.get_network_config()
    store.set_network_config(CONFIG)
    assert store.get_network_config() == CONFIG
    store.set_network_config(CONFIG.replace("vxlan", "host-gw"))
    assert json.loads(store.get_network_config())["Backend"]["Type"] == "host-gw"
    with pytest.raises(ConfigError):
        store.set_network_config('{"Network": "10.5.0.1/16"}')  # validated before it is stored
    # Another prefix is another network in the same file.
    other = SqliteStore(path, "/other.net/network/")
    try:
        with pytest.raises(ConfigError, match=r"/other\.net/network"):
            other.get_network_config()
    finally:
        other.close()


def test_create_is_compare_and_set(store: SqliteStore) -> None:
    first = lease("10.5.1.0/24", "198.51.100.1")
    second = lease("10.5.1.0/24", "198.51.100.2")
    assert store.create_lease(first, 60)
    assert not store.create_lease(second, 60)
    leases, _ = store.list_leases()
    assert [item.attrs.public_ip for item in leases] == ["198.51.100.1"]
    store.delete_lease(first)
    assert store.create_lease(second, 60)
    assert [item.attrs.public_ip for item in store.list_leases()[0]] == ["198.51.100.2"]


def test_leases_round_trip_with_expiration(store: SqliteStore, clock: Clock) -> None:
    store.create_lease(lease("10.5.2.0/24"), 60)
    store.create_lease(lease("10.5.1.0/24", "198.51.100.2"), None)
    leases, _ = store.list_leases()
    assert [str(item.subnet) for item in leases] == ["10.5.1.0/24", "10.5.2.0/24"]
    assert leases[0].expiration is None  # a reservation
    assert leases[1].expiration == clock.now + 60
    assert leases[1].attrs == lease("10.5.2.0/24").attrs


def test_ttl_expiry_is_removed_exactly_once(store: SqliteStore, path: str, clock: Clock) -> None:
    _, start = store.list_leases()
    store.create_lease(lease("10.5.1.0/24"), 10)
    clock.now += 11
    other = SqliteStore(path, clock=clock, poll_interval=0.01)
    try:
        assert other.list_leases()[0] == []  # the sweep logs one DELETE
        assert store.list_leases()[0] == []  # and a second look finds nothing more to do
        store.create_lease(lease("10.5.9.0/24"), 60)  # a marker after the expiry
        for watcher in (store, other):
            events = take(watcher.watch_leases(start), 3)
            assert kinds(events) == [
                (EventType.ADDED, "10.5.1.0/24"),
                (EventType.REMOVED, "10.5.1.0/24"),
                (EventType.ADDED, "10.5.9.0/24"),
            ]
            assert events[1].lease.attrs.public_ip == "198.51.100.1"  # what went away
    finally:
        other.close()
    db = sqlite3.connect(path)
    try:
        assert db.execute("SELECT count(*) FROM changes WHERE kind = 'DELETE'").fetchone() == (1,)
    finally:
        db.close()


def test_expiry_in_real_time_reaches_a_waiting_watch(path: str) -> None:
    store = SqliteStore(path, poll_interval=0.05)
    try:
        _, start = store.list_leases()
        store.create_lease(lease("10.5.1.0/24"), 1)
        began = time.monotonic()
        events = take(store.watch_leases(start), 2, timeout=5)
        assert kinds(events) == [(EventType.ADDED, "10.5.1.0/24"), (EventType.REMOVED, "10.5.1.0/24")]
        assert 0.9 < time.monotonic() - began < 3
    finally:
        store.close()


def test_an_expired_lease_counts_as_free(store: SqliteStore, clock: Clock) -> None:
    _, start = store.list_leases()
    assert store.create_lease(lease("10.5.1.0/24", "198.51.100.1"), 10)
    clock.now += 10
    assert store.create_lease(lease("10.5.1.0/24", "198.51.100.2"), 10)
    events = take(store.watch_leases(start), 3)
    assert [(event.type, event.lease.attrs.public_ip) for event in events] == [
        (EventType.ADDED, "198.51.100.1"),
        (EventType.REMOVED, "198.51.100.1"),
        (EventType.ADDED, "198.51.100.2"),
    ]


@pytest.mark.parametrize("ttl", [None, 0])
def test_reservations_never_expire(store: SqliteStore, clock: Clock, ttl: int | None) -> None:
    """None and 0 both mean no TTL, as in the etcd store."""
    store.create_lease(lease("10.5.1.0/24"), ttl)
    clock.now += 10 * 365 * 24 * 3600
    leases, _ = store.list_leases()
    assert [item.expiration for item in leases] == [None]


def test_renewal_extends_and_can_turn_into_a_reservation(store: SqliteStore, clock: Clock) -> None:
    item = lease("10.5.1.0/24")
    store.create_lease(item, 10)
    clock.now += 8
    store.update_lease(item, 10)
    clock.now += 8
    assert [lease.expiration for lease in store.list_leases()[0]] == [clock.now + 2]
    store.update_lease(item, None)
    clock.now += 1000
    assert [lease.expiration for lease in store.list_leases()[0]] == [None]


def test_revisions_increase_with_every_change_only(store: SqliteStore) -> None:
    _, r0 = store.list_leases()
    item = lease("10.5.1.0/24")
    store.create_lease(item, 60)
    _, r1 = store.list_leases()
    assert not store.create_lease(item, 60)
    store.delete_lease(lease("10.5.7.0/24"))  # absent: no change
    _, r2 = store.list_leases()
    store.update_lease(item, 60)
    store.delete_lease(item)
    _, r3 = store.list_leases()
    assert r0 < r1 == r2 < r3
    assert r3 == r1 + 2


def test_watch_from_a_revision(store: SqliteStore) -> None:
    store.create_lease(lease("10.5.1.0/24"), 60)
    _, middle = store.list_leases()
    store.create_lease(lease("10.5.2.0/24"), 60)
    store.delete_lease(lease("10.5.1.0/24"))
    assert kinds(take(store.watch_leases(middle), 2)) == [
        (EventType.ADDED, "10.5.2.0/24"),
        (EventType.REMOVED, "10.5.1.0/24"),
    ]
    assert kinds(take(store.watch_leases(0), 3))[0] == (EventType.ADDED, "10.5.1.0/24")


def test_watch_blocks_until_a_change_then_yields_it(store: SqliteStore, clock: Clock) -> None:
    _, start = store.list_leases()
    watch = store.watch_leases(start)
    timer = threading.Timer(0.3, lambda: store.create_lease(lease("10.5.3.0/24"), 60))
    timer.start()
    try:
        events = take(watch, 1)
    finally:
        timer.cancel()
    assert kinds(events) == [(EventType.ADDED, "10.5.3.0/24")]
    assert events[0].lease.expiration == clock.now + 60


def test_watch_ignores_other_prefixes(path: str, store: SqliteStore) -> None:
    other = SqliteStore(path, "/other/network")
    try:
        _, start = store.list_leases()
        other.create_lease(lease("10.5.1.0/24"), 60)
        store.create_lease(lease("10.5.2.0/24"), 60)
        assert kinds(take(store.watch_leases(start), 1)) == [(EventType.ADDED, "10.5.2.0/24")]
        assert [str(item.subnet) for item in other.list_leases()[0]] == ["10.5.1.0/24"]
    finally:
        other.close()


def test_two_stores_on_one_file_share_cas_and_watch(path: str, clock: Clock) -> None:
    one = SqliteStore(path, clock=clock, poll_interval=0.01)
    two = SqliteStore(path, clock=clock, poll_interval=0.01)
    try:
        _, start = one.list_leases()
        assert one.create_lease(lease("10.5.1.0/24", "198.51.100.1"), 60)
        assert not two.create_lease(lease("10.5.1.0/24", "198.51.100.2"), 60)
        assert two.create_lease(lease("10.5.2.0/24", "198.51.100.2"), 60)
        assert kinds(take(one.watch_leases(start), 2)) == [
            (EventType.ADDED, "10.5.1.0/24"),
            (EventType.ADDED, "10.5.2.0/24"),
        ]
        assert one.list_leases() == two.list_leases()
    finally:
        one.close()
        two.close()


RACER = """
import sys
from pycni.fabric.model import IPv4Net, Lease, LeaseAttrs
from pycni.fabric.store.sqlite import SqliteStore
store = SqliteStore(sys.argv[1])
sys.stdin.readline()  # start together
won = store.create_lease(Lease(IPv4Net("10.5.1.0/24"), LeaseAttrs(sys.argv[2], "vxlan")), 60)
print("won" if won else "lost")
"""


def test_concurrent_processes_exactly_one_wins(path: str) -> None:
    SqliteStore(path).close()  # create the file and schema once
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", RACER, path, f"198.51.100.{index}"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for index in range(1, 7)
    ]
    time.sleep(0.5)  # let every racer import and open the file
    for racer in racers:
        assert racer.stdin is not None
        racer.stdin.write("go\n")
        racer.stdin.flush()
    results = [racer.communicate(timeout=30)[0].strip() for racer in racers]
    assert sorted(results) == ["lost"] * 5 + ["won"]
    store = SqliteStore(path)
    try:
        leases, _ = store.list_leases()
        winner = results.index("won") + 1
        assert [item.attrs.public_ip for item in leases] == [f"198.51.100.{winner}"]
    finally:
        store.close()


def test_wal_mode(store: SqliteStore, path: str) -> None:
    db = sqlite3.connect(path)
    try:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    finally:
        db.close()


def test_pruned_log_makes_an_old_watch_fail(path: str) -> None:
    store = SqliteStore(path, keep_changes=100, poll_interval=0.01)
    try:
        item = lease("10.5.1.0/24")
        store.create_lease(item, 60)
        for _ in range(1000):
            store.update_lease(item, 60)
        _, now = store.list_leases()
        with pytest.raises(StoreUnavailable, match="re-list"):
            next(store.watch_leases(1))
        # From a recent revision the watch works (and sees the next change).
        timer = threading.Timer(0.1, lambda: store.delete_lease(item))
        timer.start()
        assert kinds(take(store.watch_leases(now), 1)) == [(EventType.REMOVED, "10.5.1.0/24")]
        timer.join()
    finally:
        store.close()


def test_close_stops_a_watch_with_store_unavailable(store: SqliteStore) -> None:
    errors: list[BaseException] = []

    def watch() -> None:
        try:
            for _ in store.watch_leases(0):
                pass
        except StoreUnavailable as error:
            errors.append(error)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    time.sleep(0.1)
    store.close()
    thread.join(2)
    assert not thread.is_alive()
    assert errors and "closed" in str(errors[0])


def test_unwritable_path_is_store_unavailable(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(StoreUnavailable, match="cannot open"):
        SqliteStore(str(blocker / "leases.db"))


def test_open_store_picks_the_store(path: str) -> None:
    store = open_store(None, "/coreos.com/network", path)
    assert isinstance(store, SqliteStore)
    store.close()
    from pycni.fabric.store.etcd import EtcdStore

    etcd = open_store("http://127.0.0.1:1, http://127.0.0.1:2", "/coreos.com/network", path)
    assert isinstance(etcd, EtcdStore)  # opening contacts nobody
    assert etcd.endpoints == ["http://127.0.0.1:1", "http://127.0.0.1:2"]
    etcd.close()
    with pytest.raises(Exception, match="no lease store"):
        open_store("", "/coreos.com/network", None)


def test_a_file_that_is_not_sqlite_is_store_unavailable(tmp_path: Path) -> None:
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database, just some bytes" * 100)
    with pytest.raises(StoreUnavailable, match="not a database"):
        SqliteStore(str(junk))
