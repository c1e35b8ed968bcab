"""Flannel's lease layer on the datastore: CAS, TTL expiry seen once, reservations, revisions, watch, one file shared.

No root needed. The layer runs on the embedded sqlite datastore (and, where
the file plays no part, on the in-memory one too); most tests drive expiry
with a fake clock, one uses real time, and one races separate processes on
the same file. The last tests migrate a file an earlier pycni wrote with its
own lease tables.
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

from pycni.datastore import Compacted, Unavailable
from pycni.datastore.memory import MemoryDatastore
from pycni.datastore.sqlite import SqliteDatastore
from pycni.fabric.flannel.leases import LeaseStore, open_lease_store
from pycni.fabric.flannel.migrate import OLD_TABLES, migrate_lease_file
from pycni.fabric.flannel.model import ConfigError, EventType, IPv4Net, Lease, LeaseAttrs, LeaseEvent

CONFIG = '{"Network": "10.5.0.0/16", "Backend": {"Type": "vxlan"}}'
PREFIX = "/coreos.com/network"


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


def sqlite_store(path: str, clock: Clock | None = None, prefix: str = PREFIX, **options: float) -> LeaseStore:
    return LeaseStore(SqliteDatastore(path, clock=clock or time.time, poll_interval=0.01, **options), prefix)  # type: ignore[arg-type]


@pytest.fixture(params=["sqlite", "memory"])
def store(request: pytest.FixtureRequest, path: str, clock: Clock) -> Iterator[LeaseStore]:
    """The lease layer on either datastore: it must not care which."""
    if request.param == "sqlite":
        made = sqlite_store(path, clock)
    else:
        made = LeaseStore(MemoryDatastore(clock, poll_interval=0.01))
    yield made
    made.close()


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


def test_config_missing_then_set(path: str) -> None:
    store = sqlite_store(path)
    try:
        with pytest.raises(ConfigError, match="--net-config-path"):
            store.get_network_config()
        store.set_network_config(CONFIG)
        assert store.get_network_config() == CONFIG
        store.set_network_config(CONFIG.replace("vxlan", "host-gw"))
        assert json.loads(store.get_network_config())["Backend"]["Type"] == "host-gw"
        with pytest.raises(ConfigError):
            store.set_network_config('{"Network": "10.5.0.1/16"}')  # validated before it is stored
        assert store.embedded
        # Another prefix is another network in the same file; Go's path.Join: slashes normalised.
        other = sqlite_store(path, prefix="/other.net/network/")
        try:
            with pytest.raises(ConfigError, match=r"/other\.net/network in .*leases\.db"):
                other.get_network_config()
        finally:
            other.close()
    finally:
        store.close()
    raw = sqlite3.connect(path)
    try:
        rows = raw.execute("SELECT key, value FROM kv_data").fetchall()
    finally:
        raw.close()
    assert rows == [(f"{PREFIX}/config", CONFIG.replace("vxlan", "host-gw"))], "a datastore key, Flannel's name"


def test_create_is_compare_and_set(store: LeaseStore) -> None:
    first = lease("10.5.1.0/24", "198.51.100.1")
    second = lease("10.5.1.0/24", "198.51.100.2")
    assert store.create_lease(first, 60)
    assert not store.create_lease(second, 60)
    leases, _ = store.list_leases()
    assert [item.attrs.public_ip for item in leases] == ["198.51.100.1"]
    store.delete_lease(first)
    store.delete_lease(first)  # already gone: fine
    assert store.create_lease(second, 60)
    assert [item.attrs.public_ip for item in store.list_leases()[0]] == ["198.51.100.2"]


def test_leases_round_trip_with_expiration(store: LeaseStore, clock: Clock) -> None:
    store.create_lease(lease("10.5.2.0/24"), 60)
    store.create_lease(lease("10.5.1.0/24", "198.51.100.2"), None)
    store.datastore.put(f"{PREFIX}/subnets/not-a-subnet", "{}")  # skipped, as Flannel does
    store.datastore.put(f"{PREFIX}/subnets/10.5.9.0-24", "not json")
    leases, _ = store.list_leases()
    assert [str(item.subnet) for item in leases] == ["10.5.1.0/24", "10.5.2.0/24"]
    assert leases[0].expiration is None  # a reservation
    assert leases[1].expiration == clock.now + 60
    assert leases[1].attrs == lease("10.5.2.0/24").attrs


def test_ttl_expiry_is_removed_exactly_once(path: str, clock: Clock) -> None:
    store, other = sqlite_store(path, clock), sqlite_store(path, clock)
    try:
        _, start = store.list_leases()
        store.create_lease(lease("10.5.1.0/24"), 10)
        clock.now += 11
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
        store.close()
        other.close()
    db = sqlite3.connect(path)
    try:
        assert db.execute("SELECT count(*) FROM kv_log WHERE kind = 'DELETE'").fetchone() == (1,)
    finally:
        db.close()


def test_expiry_in_real_time_reaches_a_waiting_watch(path: str) -> None:
    store = sqlite_store(path)
    try:
        _, start = store.list_leases()
        store.create_lease(lease("10.5.1.0/24"), 1)
        began = time.monotonic()
        events = take(store.watch_leases(start), 2, timeout=5)
        assert kinds(events) == [(EventType.ADDED, "10.5.1.0/24"), (EventType.REMOVED, "10.5.1.0/24")]
        assert 0.9 < time.monotonic() - began < 3
    finally:
        store.close()


def test_an_expired_lease_counts_as_free(store: LeaseStore, clock: Clock) -> None:
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
def test_reservations_never_expire(store: LeaseStore, clock: Clock, ttl: int | None) -> None:
    """None and 0 both mean no TTL (etcd grants no lease for 0)."""
    store.create_lease(lease("10.5.1.0/24"), ttl)
    clock.now += 10 * 365 * 24 * 3600
    leases, _ = store.list_leases()
    assert [item.expiration for item in leases] == [None]


def test_renewal_extends_and_can_turn_into_a_reservation(store: LeaseStore, clock: Clock) -> None:
    item = lease("10.5.1.0/24")
    store.create_lease(item, 10)
    clock.now += 8
    store.update_lease(item, 10)
    clock.now += 8
    assert [lease.expiration for lease in store.list_leases()[0]] == [clock.now + 2]
    store.update_lease(item, None)
    clock.now += 1000
    assert [lease.expiration for lease in store.list_leases()[0]] == [None]


def test_revisions_increase_with_every_change_only(store: LeaseStore) -> None:
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


def test_watch_from_a_revision(store: LeaseStore) -> None:
    store.create_lease(lease("10.5.1.0/24"), 60)
    _, middle = store.list_leases()
    store.create_lease(lease("10.5.2.0/24"), 60)
    store.delete_lease(lease("10.5.1.0/24"))
    store.set_network_config(CONFIG)  # outside subnets/: not an event
    assert kinds(take(store.watch_leases(middle), 2)) == [
        (EventType.ADDED, "10.5.2.0/24"),
        (EventType.REMOVED, "10.5.1.0/24"),
    ]
    assert kinds(take(store.watch_leases(0), 3))[0] == (EventType.ADDED, "10.5.1.0/24")


def test_watch_blocks_until_a_change_then_yields_it(store: LeaseStore, clock: Clock) -> None:
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


def test_watch_ignores_other_prefixes(path: str) -> None:
    store, other = sqlite_store(path), sqlite_store(path, prefix="/other/network")
    try:
        _, start = store.list_leases()
        other.create_lease(lease("10.5.1.0/24"), 60)
        store.create_lease(lease("10.5.2.0/24"), 60)
        assert kinds(take(store.watch_leases(start), 1)) == [(EventType.ADDED, "10.5.2.0/24")]
        assert [str(item.subnet) for item in other.list_leases()[0]] == ["10.5.1.0/24"]
    finally:
        store.close()
        other.close()


def test_two_stores_on_one_file_share_cas_and_watch(path: str, clock: Clock) -> None:
    one, two = sqlite_store(path, clock), sqlite_store(path, clock)
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
from pycni.fabric.flannel.leases import open_lease_store
from pycni.fabric.flannel.model import IPv4Net, Lease, LeaseAttrs
store = open_lease_store(None, "/coreos.com/network", sys.argv[1])
sys.stdin.readline()  # start together
won = store.create_lease(Lease(IPv4Net("10.5.1.0/24"), LeaseAttrs(sys.argv[2], "vxlan")), 60)
print("won" if won else "lost")
"""


def test_concurrent_processes_exactly_one_wins(path: str) -> None:
    open_lease_store(None, PREFIX, path).close()  # create the file and schema once
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
    store = open_lease_store(None, PREFIX, path)
    try:
        leases, _ = store.list_leases()
        winner = results.index("won") + 1
        assert [item.attrs.public_ip for item in leases] == [f"198.51.100.{winner}"]
    finally:
        store.close()


def test_pruned_history_makes_an_old_watch_ask_for_a_relist(path: str) -> None:
    store = sqlite_store(path, keep_revisions=100)
    try:
        item = lease("10.5.1.0/24")
        store.create_lease(item, 60)
        for _ in range(300):
            store.update_lease(item, 60)
        _, now = store.list_leases()
        with pytest.raises(Compacted, match="re-list") as error:
            next(store.watch_leases(1))
        assert isinstance(error.value, Unavailable), "the agent's re-list on Unavailable covers it"
        # From a recent revision the watch works (and sees the next change).
        timer = threading.Timer(0.1, lambda: store.delete_lease(item))
        timer.start()
        assert kinds(take(store.watch_leases(now), 1)) == [(EventType.REMOVED, "10.5.1.0/24")]
        timer.join()
    finally:
        store.close()


def test_close_stops_a_watch_with_unavailable(store: LeaseStore) -> None:
    errors: list[BaseException] = []

    def watch() -> None:
        try:
            for _ in store.watch_leases(0):
                pass
        except Unavailable as error:
            errors.append(error)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    time.sleep(0.1)
    store.close()
    thread.join(2)
    assert not thread.is_alive()
    assert errors and "closed" in str(errors[0])


def test_unwritable_or_foreign_files_are_unavailable(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(Unavailable, match="cannot open") as error:
        open_lease_store(None, PREFIX, str(blocker / "leases.db"))
    assert error.value.code == 11
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database, just some bytes" * 100)
    with pytest.raises(Unavailable, match="not a database"):
        open_lease_store(None, PREFIX, str(junk))


def test_open_lease_store_picks_the_datastore(path: str) -> None:
    store = open_lease_store(None, PREFIX, path)
    assert isinstance(store.datastore, SqliteDatastore) and store.embedded
    store.close()
    from pycni.datastore.etcd import EtcdDatastore

    etcd = open_lease_store("http://127.0.0.1:1, http://127.0.0.1:2", PREFIX, path)
    assert isinstance(etcd.datastore, EtcdDatastore)  # opening contacts nobody
    assert etcd.datastore.endpoints == ["http://127.0.0.1:1", "http://127.0.0.1:2"] and not etcd.embedded
    etcd.close()
    with pytest.raises(ConfigError, match="no lease store"):
        open_lease_store("", PREFIX, None)


# -- a file an earlier pycni wrote ------------------------------------------------------

# The tables of the lease store before pycni.datastore (pycni.fabric.store.sqlite), as it created them.
OLD_SCHEMA = """
CREATE TABLE config (prefix TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE leases (key TEXT PRIMARY KEY, value TEXT NOT NULL, expires_at REAL);
CREATE INDEX leases_expiry ON leases (expires_at) WHERE expires_at IS NOT NULL;
CREATE TABLE changes (
    revision INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('PUT', 'DELETE')),
    value TEXT NOT NULL,
    expires_at REAL
);
CREATE TABLE meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


def old_file(path: str, leases: list[tuple[Lease, float | None]], config: str = CONFIG) -> None:
    """A lease file as the old store left it: the config, leases with absolute expiries, their PUTs logged."""
    db = sqlite3.connect(path)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.executescript(OLD_SCHEMA)
        db.execute("INSERT INTO config VALUES (?, ?)", (PREFIX, config))
        for item, expires_at in leases:
            key = f"{PREFIX}/subnets/{item.key}"
            db.execute("INSERT INTO leases VALUES (?, ?, ?)", (key, item.attrs.to_json(), expires_at))
            db.execute(
                "INSERT INTO changes (key, kind, value, expires_at) VALUES (?, 'PUT', ?, ?)",
                (key, item.attrs.to_json(), expires_at),
            )
        db.commit()
    finally:
        db.close()


def tables(path: str) -> set[str]:
    db = sqlite3.connect(path)
    try:
        return {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    finally:
        db.close()


def test_an_old_lease_file_is_migrated_once(path: str) -> None:
    now = time.time()
    live, reserved, expired = lease("10.5.1.0/24"), lease("10.5.2.0/24", "198.51.100.2"), lease("10.5.3.0/24")
    old_file(path, [(live, now + 3600.5), (reserved, None), (expired, now - 5)])
    store = open_lease_store(None, PREFIX, path)
    try:
        assert store.get_network_config() == CONFIG
        leases, revision = store.list_leases()
        assert [(str(item.subnet), item.attrs) for item in leases] == [
            ("10.5.1.0/24", live.attrs),
            ("10.5.2.0/24", reserved.attrs),
        ], "the expired lease is not brought back"
        assert leases[0].expiration is not None and abs(leases[0].expiration - (now + 3600.5)) < 2
        assert leases[1].expiration is None, "a reservation stays one"
        # The copied leases behave as any: CAS holds against them.
        assert not store.create_lease(lease("10.5.1.0/24", "198.51.100.9"), 60)
        store.delete_lease(reserved)
    finally:
        store.close()
    assert {"flannel_v1_config", "flannel_v1_leases", "flannel_v1_changes", "flannel_v1_meta"} <= tables(path)
    assert not {"config", "leases", "changes", "meta"} & tables(path)
    again = open_lease_store(None, PREFIX, path)  # done once: the released reservation stays released
    try:
        assert [str(item.subnet) for item in again.list_leases()[0]] == ["10.5.1.0/24"]
        assert again.list_leases()[1] == revision + 1
    finally:
        again.close()


def test_a_migration_cut_short_is_finished_and_keys_already_there_win(path: str) -> None:
    now = time.time()
    old_file(path, [(lease("10.5.1.0/24"), now + 600), (lease("10.5.2.0/24", "198.51.100.2"), now + 600)])
    datastore = SqliteDatastore(path, adopt=OLD_TABLES)  # Flannel's old tables are not foreign to its own store
    try:
        # What the datastore holds already: one lease copied before a crash, then renewed with new attributes.
        renewed = lease("10.5.1.0/24", mac="0e:00:00:00:00:01")
        datastore.put(f"{PREFIX}/subnets/{renewed.key}", renewed.attrs.to_json(), 60)
        assert migrate_lease_file(path, datastore) == 2, "the config and the lease not yet copied"
        assert migrate_lease_file(path, datastore) == 0, "then nothing to do"
    finally:
        datastore.close()
    store = open_lease_store(None, PREFIX, path)
    try:
        leases, _ = store.list_leases()
        assert [(str(item.subnet), item.attrs.backend_data["VtepMAC"]) for item in leases] == [
            ("10.5.1.0/24", "0e:00:00:00:00:01"),
            ("10.5.2.0/24", "c6:d2:32:6f:8f:44"),
        ]
    finally:
        store.close()


def test_a_new_file_needs_no_migration(path: str) -> None:
    datastore = SqliteDatastore(path)
    try:
        assert migrate_lease_file(path, datastore) == 0
    finally:
        datastore.close()
    assert not any(name.startswith("flannel_v1_") for name in tables(path))
