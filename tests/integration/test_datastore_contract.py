"""The datastore contract, the same tests on all three backends: memory, a sqlite file, a real etcd.

etcd is Debian's etcd-server 3.4 on free loopback ports (``tests/support/etcd.py``):
one server for the module, emptied before each test; the outage tests in
``test_datastore_etcd.py`` start their own. What the contract promises is in
``pycni.datastore``'s docstring; each test names the promise it checks.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest

from pycni.datastore import (
    MAX_VALUE_BYTES,
    AlreadyExists,
    Compacted,
    Conflict,
    Datastore,
    EventType,
    InvalidArgument,
    KeyValue,
    NotFound,
    Unavailable,
    open_datastore,
)
from pycni.datastore.etcd import EtcdDatastore
from pycni.datastore.memory import MemoryDatastore
from pycni.datastore.sqlite import SqliteDatastore
from tests.support.datastore import Backend, Collector, increment, summary, together
from tests.support.etcd import EtcdServer, etcd_server

KINDS = ["memory", "sqlite", "etcd"]


@pytest.fixture(scope="module")
def shared_etcd() -> Iterator[EtcdServer]:
    with etcd_server() as server:
        yield server


@pytest.fixture(params=KINDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    kind = request.param
    if kind == "memory":
        memory = MemoryDatastore(poll_interval=0.02)
        made = Backend(kind, lambda: memory)
    elif kind == "sqlite":
        path = str(tmp_path / "store.db")
        made = Backend(kind, lambda: SqliteDatastore(path, poll_interval=0.02), location=path)
    else:
        server: EtcdServer = request.getfixturevalue("shared_etcd")
        made = Backend(kind, lambda: EtcdDatastore([server.url], timeout=3), location=server.url)
    first = made.client()
    first.delete_prefix("")  # the module's etcd keeps earlier tests' keys
    try:
        yield made
    finally:
        made.close_all()


@pytest.fixture
def store(backend: Backend) -> Datastore:
    return backend.opened[0]


def watch_all(store: Datastore, prefix: str, since: int) -> Collector:
    return Collector(store.watch(prefix, since))


# -- shape ---------------------------------------------------------------------


def test_backends_satisfy_the_protocol(store: Datastore) -> None:
    checked: Datastore = store
    assert checked is store


def test_open_datastore_picks_the_backend(tmp_path: Path, shared_etcd: EtcdServer) -> None:
    for chosen, kind in (
        (open_datastore(memory=True), MemoryDatastore),
        (open_datastore(path=str(tmp_path / "x.db")), SqliteDatastore),
        (open_datastore(f" {shared_etcd.url} ,"), EtcdDatastore),
        (open_datastore([shared_etcd.url]), EtcdDatastore),
    ):
        try:
            assert isinstance(chosen, kind)
            chosen.revision()
        finally:
            chosen.close()
    for wrong in ({}, {"path": str(tmp_path / "y.db"), "memory": True}, {"endpoints": ",", "path": ""}):
        with pytest.raises(InvalidArgument, match="choose one datastore") as error:
            open_datastore(**wrong)  # type: ignore[arg-type]
        assert error.value.code == 7
    assert not (tmp_path / "y.db").exists()


# -- writes and their counters -------------------------------------------------


def test_create_update_put_counters(store: Datastore) -> None:
    start = store.revision()
    created = store.create("/c/k", '{"a": 1}')
    assert created == KeyValue("/c/k", '{"a": 1}', start + 1, start + 1, 1, 0, None)
    assert store.get("/c/k") == created
    updated = store.update("/c/k", '{"a": 2}', created.mod_revision)
    assert (updated.create_revision, updated.mod_revision, updated.version) == (start + 1, start + 2, 2)
    put = store.put("/c/k", '{"a": 3}')
    assert (put.create_revision, put.mod_revision, put.version, put.value) == (start + 1, start + 3, 3, '{"a": 3}')
    fresh = store.put("/c/new", "v")  # put creates
    assert (fresh.create_revision, fresh.mod_revision, fresh.version) == (start + 4, start + 4, 1)
    assert store.get("/c/k") == put
    assert store.get("/c/missing") is None
    # Deleted and created again: the counters start over, the revision goes on.
    store.delete("/c/k")
    again = store.create("/c/k", "x")
    assert (again.create_revision, again.version) == (start + 6, 1)


def test_create_of_an_existing_key_is_already_exists(store: Datastore) -> None:
    first = store.create("/c/k", "mine")
    before = store.revision()
    with pytest.raises(AlreadyExists) as error:
        store.create("/c/k", "theirs", ttl=60)
    assert error.value.code == 11
    assert "/c/k already exists" in error.value.msg
    assert error.value.existing is not None and error.value.existing.value == "mine"
    assert error.value.existing.mod_revision == first.mod_revision
    assert store.get("/c/k") == first
    assert store.revision() == before  # a failed compare-and-set writes nothing


def test_update_is_compare_and_set_on_mod_revision(store: Datastore) -> None:
    first = store.create("/c/k", "1")
    second = store.update("/c/k", "2", first.mod_revision)
    before = store.revision()
    with pytest.raises(Conflict) as error:
        store.update("/c/k", "stale", first.mod_revision)
    assert error.value.code == 11
    assert f"its revision is {second.mod_revision}, not {first.mod_revision}" in error.value.msg
    assert error.value.current is not None and error.value.current.value == "2"
    with pytest.raises(NotFound) as missing:
        store.update("/c/nothing", "x", second.mod_revision)
    assert "/c/nothing does not exist" in missing.value.msg
    # Revision 0 is what etcd compares a missing key's ModRevision as: still NotFound, and Conflict if present.
    with pytest.raises(NotFound):
        store.update("/c/nothing", "x", 0)
    with pytest.raises(Conflict):
        store.update("/c/k", "x", 0)
    assert store.revision() == before
    assert store.get("/c/nothing") is None
    assert store.get("/c/k") == second


def test_delete_returns_what_went_and_may_be_conditional(store: Datastore) -> None:
    kept = store.create("/d/a", "A")
    store.create("/d/b", "B")
    with pytest.raises(NotFound):
        store.delete("/d/none")
    with pytest.raises(Conflict) as error:
        store.delete("/d/a", kept.mod_revision + 100)
    assert error.value.current == kept
    assert store.get("/d/a") == kept
    assert store.delete("/d/a", kept.mod_revision) == kept
    gone = store.delete("/d/b")
    assert (gone.key, gone.value) == ("/d/b", "B")
    with pytest.raises(NotFound):
        store.delete("/d/b")
    with pytest.raises(NotFound):
        store.delete("/d/a", kept.mod_revision)
    assert store.list("/d/")[0] == []


def test_every_write_bumps_the_one_revision(store: Datastore) -> None:
    revisions = [store.revision()]
    revisions.append(store.create("/r/a", "1").mod_revision)
    revisions.append(store.put("/r/b", "1").mod_revision)
    revisions.append(store.update("/r/a", "2", revisions[1]).mod_revision)
    store.delete("/r/b")
    revisions.append(store.revision())
    assert revisions == list(range(revisions[0], revisions[0] + 5))
    listed, at = store.list("/r/")
    assert at == store.revision() == revisions[-1]
    assert [kv.key for kv in listed] == ["/r/a"]


def test_delete_prefix_is_one_revision(store: Datastore) -> None:
    for key in ("/p/a", "/p/b/c", "/p/z", "/pq", "/q"):
        store.put(key, key)
    before = store.revision()
    watch = watch_all(store, "", before)
    assert store.delete_prefix("/p/") == 3
    assert store.revision() == before + 1
    assert [kv.key for kv in store.list("")[0]] == ["/pq", "/q"]
    events = watch.wait_for(3)
    assert summary(events) == [("DELETE", key, before + 1, key) for key in ("/p/a", "/p/b/c", "/p/z")]
    assert store.delete_prefix("/p/") == 0
    assert store.revision() == before + 1  # deleting nothing is no change
    watch.stop()


# -- keys, prefixes and values ---------------------------------------------------


def test_prefix_boundaries(store: Datastore) -> None:
    keys = ["/a", "/a/", "/a/x", "/a/x/y", "/a0", "/ab", "/a\uffff", "/a/\U0010ffff", "/a/\U0010ffff/z", "/b", "a"]
    for key in keys:
        store.put(key, "v")
    every, _ = store.list("")
    assert [kv.key for kv in every] == sorted(keys)  # code point order, which is UTF-8 byte order
    for prefix in ("/a/", "/a", "/a/x", "/a/\U0010ffff", "/a\uffff", "/", "/c", "a", "/a/x/y/"):
        listed, _ = store.list(prefix)
        assert [kv.key for kv in listed] == sorted(key for key in keys if key.startswith(prefix)), prefix
    assert [kv.key for kv in store.list("/a/")[0]] == ["/a/", "/a/x", "/a/x/y", "/a/\U0010ffff", "/a/\U0010ffff/z"]
    assert "/ab" not in [kv.key for kv in store.list("/a/")[0]]
    # A watch on a prefix sees exactly the same boundary.
    since = store.revision()
    watch = watch_all(store, "/a/", since)
    for key in keys:
        store.put(key, "w")
    events = watch.wait_for(5)
    assert [event.key for event in watch.settle()] == [key for key in keys if key.startswith("/a/")]
    assert all(event.revision > since for event in events)
    watch.stop()


@pytest.mark.parametrize(
    "value",
    [
        "",
        "plain",
        '{"name": "n\\u00e9", "list": [1, 2]}',
        "gr\u00fc\u00df dich, \u4f60\u597d, \u0645\u0631\u062d\u0628\u0627, \U0001f680\U0001f9ea",
        "lines\nand\ttabs\r\n",
        "a NUL \x00 inside",
        "\U0010ffff\ue000\ud7ff",
    ],
)
def test_unicode_values_round_trip(store: Datastore, value: str) -> None:
    key = "/u/\u00e9t\u00e9/\U0001f680"
    written = store.put(key, value)
    assert written.value == value
    assert store.get(key) == written
    assert store.list("/u/\u00e9")[0] == [written]
    watch = watch_all(store, "/u/", written.mod_revision - 1)
    assert watch.wait_for(1)[0].kv.value == value
    watch.stop()


def test_large_values(store: Datastore) -> None:
    biggest = ("\u00e9" * (MAX_VALUE_BYTES // 2))[: MAX_VALUE_BYTES // 2]  # 2 bytes each: exactly the limit
    assert len(biggest.encode()) == MAX_VALUE_BYTES
    for index in range(3):
        store.put(f"/big/{index}", biggest[:-1] + str(index))
    listed, _ = store.list("/big/")
    assert [kv.value[-1] for kv in listed] == ["0", "1", "2"]
    assert all(len(kv.value) == len(biggest) for kv in listed)
    before = store.revision()
    with pytest.raises(InvalidArgument) as error:
        store.put("/big/over", biggest + "x")
    assert error.value.code == 7
    assert f"at most {MAX_VALUE_BYTES} bytes" in error.value.msg
    assert store.revision() == before
    watch = watch_all(store, "/big/", before - 3)
    assert [len(event.kv.value) for event in watch.wait_for(3)] == [len(biggest)] * 3
    watch.stop()


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda store: store.put("", "v"), "must not be empty"),
        (lambda store: store.put("/a\x00b", "v"), "NUL"),
        (lambda store: store.get("/bad\ud800"), "not valid Unicode"),
        (lambda store: store.put("/k", "\udfff"), "not valid Unicode"),
        (lambda store: store.put("/k", 5), "must be a string"),
        (lambda store: store.create("/k", "v", ttl=0), "between 1 and"),
        (lambda store: store.create("/k", "v", ttl=-3), "between 1 and"),
        (lambda store: store.put("/k", "v", ttl=1.5), "whole seconds"),
        (lambda store: store.put("/k", "v", ttl=True), "whole seconds"),
        (lambda store: store.update("/k", "v", -1), "revision must be an int >= 0"),
        (lambda store: store.delete("/k", revision="3"), "revision must be"),
        (lambda store: store.watch("/k", -1), "watch revision"),
        (lambda store: store.list("/\x00"), "NUL"),
    ],
)
def test_bad_arguments_are_invalid_argument(store: Datastore, call: object, message: str) -> None:
    before = store.revision()
    with pytest.raises(InvalidArgument, match=message) as error:
        call(store)  # type: ignore[operator]
    assert error.value.code == 7
    assert store.revision() == before


# -- watch -----------------------------------------------------------------------


def test_watch_from_any_revision_sees_exactly_what_came_after(store: Datastore) -> None:
    base = store.revision()
    store.create("/w/a", "1")
    store.put("/w/b", "1")
    store.put("/other", "x")
    store.update("/w/a", "2", base + 1)
    store.delete("/w/b")
    store.put("/w/c", "1", ttl=600)
    store.delete_prefix("/w/")
    history = [
        ("PUT", "/w/a", base + 1, "1"),
        ("PUT", "/w/b", base + 2, "1"),
        ("PUT", "/w/a", base + 4, "2"),
        ("DELETE", "/w/b", base + 5, "1"),
        ("PUT", "/w/c", base + 6, "1"),
        ("DELETE", "/w/a", base + 7, "2"),
        ("DELETE", "/w/c", base + 7, "1"),
    ]
    for since in range(base, base + 8):
        expected = [row for row in history if row[2] > since]
        watch = watch_all(store, "/w/", since)
        if expected:
            watch.wait_for(len(expected))
        assert summary(watch.settle(0.2)) == expected, since
        watch.stop()
    # The events carry etcd's fields: prev on an overwrite and on a delete, a tombstone kv on delete.
    watch = watch_all(store, "/w/", base)
    events = watch.wait_for(7)
    watch.stop()
    overwrite, deleted = events[2], events[3]
    assert overwrite.prev is not None and (overwrite.prev.value, overwrite.prev.mod_revision) == ("1", base + 1)
    assert (overwrite.kv.create_revision, overwrite.kv.version) == (base + 1, 2)
    assert deleted.kv == KeyValue("/w/b", "", 0, base + 5, 0)
    assert events[0].prev is None
    assert events[4].kv.expires_at is not None


def test_a_watch_from_a_revision_still_to_come_waits_for_it(store: Datastore) -> None:
    now = store.revision()
    watch = watch_all(store, "/f/", now + 3)
    written = [store.put("/f/k", str(index)) for index in range(5)]
    watch.wait_for(2)
    assert summary(watch.settle()) == [("PUT", "/f/k", now + 4, "3"), ("PUT", "/f/k", now + 5, "4")]
    assert written[-1].mod_revision == now + 5
    watch.stop()


def test_a_live_watch_loses_and_repeats_nothing(backend: Backend) -> None:
    store = backend.opened[0]
    writer = backend.client()
    since = store.revision()
    watch = watch_all(store, "/live/", since)
    count = 300

    def write() -> None:
        for index in range(count):
            writer.put(f"/live/{index % 7}", str(index))
            if index % 50 == 0:
                writer.put("/elsewhere", str(index))

    thread = threading.Thread(target=write)
    thread.start()
    thread.join(60)
    events = watch.wait_for(count, timeout=30)
    assert [event.kv.value for event in watch.settle()] == [str(index) for index in range(count)]
    revisions = [event.revision for event in events]
    assert revisions == sorted(set(revisions)) and revisions[0] > since
    assert watch.watch.revision == revisions[-1]
    watch.stop()
    # Resuming from the last revision handed out yields only what came after it.
    writer.put("/live/after", "x")
    resumed = watch_all(store, "/live/", watch.watch.revision)
    assert summary(resumed.wait_for(1)) == [("PUT", "/live/after", revisions[-1] + 1, "x")]
    resumed.stop()


def test_watch_close_ends_the_iteration_and_store_close_raises_unavailable(backend: Backend) -> None:
    store = backend.opened[0]
    since = store.revision()
    watch = watch_all(store, "/x/", since)
    time.sleep(0.3)
    began = time.monotonic()
    watch.stop(timeout=3)
    assert watch.error is None  # just ended
    assert time.monotonic() - began < 3
    store.put("/x/still", "works")  # the store itself is untouched
    other = backend.client() if backend.kind != "memory" else store
    blocked = watch_all(other, "/x/", store.revision())
    time.sleep(0.3)
    other.close()
    blocked.join(5)
    assert isinstance(blocked.error, Unavailable)
    with pytest.raises(Unavailable):
        other.get("/x/still")


def test_compacted_history_asks_for_a_relist(store: Datastore) -> None:
    base = store.revision()
    for index in range(5):
        store.put("/h/k", str(index))
    store.compact(base + 3)
    with pytest.raises(Compacted) as error:
        next(store.watch("/h/", base + 1))
    assert error.value.code == 11
    assert isinstance(error.value, Unavailable)  # a caller that re-lists on Unavailable does right
    assert error.value.compact_revision == base + 3
    assert "re-list" in error.value.msg
    # From the compaction point on, the history is whole.
    watch = watch_all(store, "/h/", base + 2)
    assert [event.kv.value for event in watch.wait_for(3)] == ["2", "3", "4"]
    watch.stop()
    store.compact(base + 2)  # behind the last compaction: nothing to do
    store.compact(base + 3)
    with pytest.raises(InvalidArgument, match="revision"):
        store.compact(store.revision() + 10)
    listed, at = store.list("/h/")
    assert [kv.value for kv in listed] == ["4"] and at == base + 5


# -- TTL -------------------------------------------------------------------------


def test_ttl_expiry_is_a_delete_event_with_the_value(store: Datastore) -> None:
    since = store.revision()
    watch = watch_all(store, "/t/", since)
    began = time.time()
    written = store.create("/t/lease", '{"node": "n1"}', ttl=1)
    store.put("/t/forever", "stays")
    assert written.has_ttl and written.expires_at is not None and began < written.expires_at <= time.time() + 1.5
    events = watch.wait_for(3, timeout=10)
    took = time.time() - began
    assert 0.8 < took < 6, took
    put, forever, expired = events
    assert (put.type, forever.type, expired.type) == (EventType.PUT, EventType.PUT, EventType.DELETE)
    assert expired.key == "/t/lease" and expired.prev is not None
    assert expired.prev.value == '{"node": "n1"}' and expired.prev.mod_revision == written.mod_revision
    assert expired.revision > forever.revision
    assert store.get("/t/lease") is None
    listed, at = store.list("/t/")
    assert [kv.key for kv in listed] == ["/t/forever"] and at >= expired.revision
    assert [event.type for event in watch.settle(1.0)] == [EventType.PUT, EventType.PUT, EventType.DELETE]
    watch.stop()
    # The key is free again: create succeeds.
    assert store.create("/t/lease", "again").version == 1


def gone_within(store: Datastore, key: str, seconds: float) -> float:
    """Seconds until ``key`` is gone (the test fails if it outlives ``seconds``)."""
    began = time.monotonic()
    while store.get(key) is not None:
        assert time.monotonic() - began < seconds, f"{key} outlived its TTL by far"
        time.sleep(0.05)
    return time.monotonic() - began


def test_rewriting_renews_and_ttl_none_makes_permanent(store: Datastore) -> None:
    current = store.create("/t/k", "v", ttl=1)
    for _ in range(5):  # 2.5 s in all: well past the TTL
        time.sleep(0.5)
        current = store.update("/t/k", "v", current.mod_revision, ttl=1)
        assert store.get("/t/k") is not None
    permanent = store.update("/t/k", "v", current.mod_revision)
    assert not permanent.has_ttl
    time.sleep(1.6)  # past the last TTL and etcd's 0.5 s expiry sweep
    found = store.get("/t/k")
    assert found is not None and found.expires_at is None and found.lease == 0
    # And a put with a TTL gives a permanent key one.
    store.put("/t/k", "v", ttl=1)
    assert gone_within(store, "/t/k", 4) > 0.5


def test_expiry_between_list_and_watch_is_seen_once(store: Datastore) -> None:
    store.create("/t/a", "1", ttl=1)
    listed, at = store.list("/t/")
    assert [kv.key for kv in listed] == ["/t/a"]
    time.sleep(1.5)
    watch = watch_all(store, "/t/", at)
    events = watch.wait_for(1, timeout=6)
    assert summary(watch.settle(1.0)) == [("DELETE", "/t/a", events[0].revision, "1")]
    watch.stop()


# -- races -----------------------------------------------------------------------


def test_cas_increments_from_threads_are_never_lost(backend: Backend) -> None:
    store = backend.opened[0]
    start = store.create("/race/counter", "0")
    watch = watch_all(store, "/race/", start.mod_revision)
    clients = [backend.client() for _ in range(4)]
    per = 25
    conflicts: list[int] = []
    barrier = threading.Barrier(len(clients))

    def run(client: Datastore) -> None:
        barrier.wait()
        conflicts.append(increment(client, "/race/counter", per))

    threads = [threading.Thread(target=run, args=(client,)) for client in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    total = per * len(clients)
    final = store.get("/race/counter")
    assert final is not None and final.value == str(total) and final.version == total + 1
    # Every successful update is one event, values 1..total in revision order: none lost, none doubled.
    events = watch.wait_for(total, timeout=30)
    assert [event.kv.value for event in watch.settle()] == [str(n) for n in range(1, total + 1)]
    assert [event.revision for event in events] == list(range(start.mod_revision + 1, start.mod_revision + total + 1))
    watch.stop()
    assert len(conflicts) == len(clients)


def test_create_and_conditional_delete_races_have_one_winner(backend: Backend) -> None:
    clients = [backend.client() for _ in range(4)]
    for round_number in range(5):
        key = f"/race/claim/{round_number}"
        claims = together([partial(client.create, key, f"node{index}", ttl=60) for index, client in enumerate(clients)])
        won = [index for index, result in enumerate(claims) if isinstance(result, KeyValue)]
        assert len(won) == 1 and all(
            isinstance(result, AlreadyExists) for result in claims if result is not claims[won[0]]
        )
        held = clients[0].get(key)
        assert held is not None and held.value == f"node{won[0]}"
        # Everyone deletes it at the revision they read: exactly one does; the others find it gone or changed.
        releases = together([partial(client.delete, key, held.mod_revision) for client in clients])
        deleted = [result for result in releases if isinstance(result, KeyValue)]
        assert [(kv.value, kv.mod_revision) for kv in deleted] == [(held.value, held.mod_revision)]
        assert all(isinstance(result, (NotFound, Conflict)) for result in releases if result is not deleted[0])
        assert clients[0].get(key) is None


RACER = """
import sys
from pycni.datastore import open_datastore
from tests.support.datastore import increment
kind, location, times = sys.argv[1], sys.argv[2], int(sys.argv[3])
store = open_datastore(endpoints=location) if kind == "etcd" else open_datastore(path=location)
sys.stdin.readline()  # start together
print(increment(store, "/race/counter", times))
store.close()
"""


@pytest.mark.parametrize("processes", [4])
def test_cas_increments_from_processes_are_never_lost(backend: Backend, processes: int) -> None:
    if backend.kind == "memory":
        pytest.skip("the memory store lives in one process")
    store = backend.opened[0]
    start = store.create("/race/counter", "0")
    watch = watch_all(store, "/race/", start.mod_revision)
    per = 20
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", RACER, backend.kind, backend.location, str(per)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=str(Path(__file__).resolve().parents[2]),
        )
        for _ in range(processes)
    ]
    try:
        time.sleep(1.0)  # every racer imported and opened the store
        for racer in racers:
            assert racer.stdin is not None
            racer.stdin.write("go\n")
            racer.stdin.flush()
        outputs = [racer.communicate(timeout=120)[0].strip() for racer in racers]
    finally:
        for racer in racers:
            if racer.poll() is None:
                racer.kill()
                racer.wait()
    assert [racer.returncode for racer in racers] == [0] * processes, outputs
    total = per * processes
    final = store.get("/race/counter")
    assert final is not None and final.value == str(total)
    watch.wait_for(total, timeout=30)
    assert [event.kv.value for event in watch.settle()] == [str(n) for n in range(1, total + 1)]
    watch.stop()
