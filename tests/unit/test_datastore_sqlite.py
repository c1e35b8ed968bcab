"""SqliteDatastore beyond the contract: one file shared by stores and processes, expiry swept once, pruning.

No root needed. Expiry runs on a fake clock where one process is enough and
in real time where several processes share the file.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pycni.datastore import AlreadyExists, Compacted, Unavailable, open_datastore
from pycni.datastore.sqlite import SqliteDatastore
from tests.support.datastore import Clock, Collector, summary

REPO = str(Path(__file__).resolve().parents[2])


@pytest.fixture
def path(tmp_path: Path) -> str:
    return str(tmp_path / "store.db")


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(path: str, clock: Clock) -> Iterator[SqliteDatastore]:
    with SqliteDatastore(path, clock=clock, poll_interval=0.01) as store:
        yield store


def test_open_datastore_makes_the_file_in_wal_mode(tmp_path: Path) -> None:
    path = str(tmp_path / "deep" / "dir" / "store.db")
    store = open_datastore(path=path)
    try:
        assert isinstance(store, SqliteDatastore)
        store.put("/k", "v")
    finally:
        store.close()
    db = sqlite3.connect(path)
    try:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert tables == {"kv_data", "kv_log", "kv_meta"}
    finally:
        db.close()


def test_two_stores_on_one_file_see_one_expiry_once(path: str, clock: Clock) -> None:
    first = SqliteDatastore(path, clock=clock, poll_interval=0.01)
    second = SqliteDatastore(path, clock=clock, poll_interval=0.01)
    try:
        written = first.create("/t/k", "v", ttl=10)
        with pytest.raises(AlreadyExists):
            second.create("/t/k", "other")
        watches = [Collector(store.watch("/t/", written.mod_revision)) for store in (first, second)]
        clock.advance(10)
        for watch in watches:
            assert summary(watch.wait_for(1)) == [("DELETE", "/t/k", written.mod_revision + 1, "v")]
        assert [summary(watch.settle(0.2)) for watch in watches] == [
            [("DELETE", "/t/k", written.mod_revision + 1, "v")]
        ] * 2
        for watch in watches:
            watch.stop()
        assert first.revision() == second.revision() == written.mod_revision + 1
    finally:
        first.close()
        second.close()


def test_a_failed_compare_and_set_leaves_no_trace(store: SqliteDatastore, clock: Clock) -> None:
    """The sweep that runs first in a write is rolled back with the failed write; the next call redoes it."""
    kept = store.create("/k", "v")
    store.create("/e", "v", ttl=1)
    clock.advance(2)
    before = store.revision()  # a read sweeps: the expiry is revision before
    with pytest.raises(AlreadyExists):
        store.create("/k", "again")
    assert store.revision() == before
    assert store.get("/k") == kept


WATCHER = """
import json, sys, threading
from pycni.datastore.sqlite import SqliteDatastore
store = SqliteDatastore(sys.argv[1], poll_interval=0.02)
since = int(sys.argv[2])
print("ready", flush=True)
watch = store.watch("/t/", since)
seen = []
threading.Timer(float(sys.argv[3]), watch.close).start()
for batch in watch:
    seen.extend((event.type.value, event.key, event.revision) for event in batch)
print(json.dumps(seen))
store.close()
"""


def test_expiry_is_swept_once_when_several_processes_watch(path: str) -> None:
    store = SqliteDatastore(path)
    try:
        since = store.revision()
        watchers = [
            subprocess.Popen(
                [sys.executable, "-c", WATCHER, path, str(since), "4"],
                stdout=subprocess.PIPE,
                text=True,
                cwd=REPO,
            )
            for _ in range(3)
        ]
        try:
            for watcher in watchers:
                assert watcher.stdout is not None
                assert watcher.stdout.readline().strip() == "ready"
            written = store.create("/t/lease", "v", ttl=1)
            store.close()  # nobody but the watchers' polls is left to notice the expiry
            outputs = [json.loads(watcher.communicate(timeout=30)[0]) for watcher in watchers]
        finally:
            for watcher in watchers:
                if watcher.poll() is None:
                    watcher.kill()
                    watcher.wait()
        expected = [["PUT", "/t/lease", written.mod_revision], ["DELETE", "/t/lease", written.mod_revision + 1]]
        assert outputs == [expected] * 3
    finally:
        store.close()
    db = sqlite3.connect(path)
    try:
        assert db.execute("SELECT count(*) FROM kv_log WHERE kind = 'DELETE'").fetchone() == (1,)
    finally:
        db.close()


RACER = """
import sys
from pycni.datastore import AlreadyExists
from pycni.datastore.sqlite import SqliteDatastore
store = SqliteDatastore(sys.argv[1])
sys.stdin.readline()
try:
    store.create("/claim", sys.argv[2], ttl=60)
    print("won")
except AlreadyExists:
    print("lost")
store.close()
"""


def test_create_race_between_processes_has_one_winner(path: str) -> None:
    SqliteDatastore(path).close()  # the schema, once
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", RACER, path, f"node{index}"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )
        for index in range(6)
    ]
    time.sleep(0.5)
    for racer in racers:
        assert racer.stdin is not None
        racer.stdin.write("go\n")
        racer.stdin.flush()
    results = [racer.communicate(timeout=30)[0].strip() for racer in racers]
    assert sorted(results) == ["lost"] * 5 + ["won"]
    with SqliteDatastore(path) as store:
        held = store.get("/claim")
        assert held is not None and held.value == f"node{results.index('won')}"


def test_the_log_is_pruned_to_keep_revisions(path: str) -> None:
    with SqliteDatastore(path, keep_revisions=150) as store:
        for index in range(400):
            store.put(f"/k/{index % 3}", str(index))
        with pytest.raises(Compacted) as error:
            next(store.watch("/k/", 10))
        assert error.value.compact_revision == 400 - 150
        assert "re-list" in error.value.msg
        listed, at = store.list("/k/")
        assert [kv.value for kv in listed] == ["399", "397", "398"] and at == 400
        events = next(store.watch("/k/", at - 3))
        assert [event.kv.value for event in events] == ["397", "398", "399"]


def test_unusable_files_are_unavailable_with_the_path(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(Unavailable, match="cannot open the datastore file") as error:
        SqliteDatastore(str(blocker / "store.db"))
    assert str(blocker) in error.value.msg and error.value.code == 11
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(os.urandom(4096))
    with pytest.raises(Unavailable, match=str(garbage)):
        SqliteDatastore(str(garbage))
    newer = str(tmp_path / "newer.db")
    SqliteDatastore(newer).close()
    db = sqlite3.connect(newer)
    db.execute("UPDATE kv_meta SET value = 99 WHERE name = 'schema'")
    db.commit()
    db.close()
    with pytest.raises(Unavailable, match="schema 99"):
        SqliteDatastore(newer)
