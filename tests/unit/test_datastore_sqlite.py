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
from pycni.datastore.errors import Unusable
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


# -- a damaged file (pycni issue 9): refused with the path and what to do, never emptied or replaced --------------


def _filled(path: str, keys: int = 30) -> None:
    with SqliteDatastore(path) as store:
        for index in range(keys):
            store.put(f"/k/{index}", "v" * 100)


def _digest(path: Path) -> bytes:
    return path.read_bytes()


def test_a_symlink_is_refused_and_nothing_is_made_beside_its_target(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    _filled(str(outside / "real.db"))
    before = sorted(os.listdir(outside))
    for target in (outside / "real.db", outside / "dangling.db"):
        link = tmp_path / "store.db"
        link.unlink(missing_ok=True)
        link.symlink_to(target)
        with pytest.raises(Unusable, match="is a symlink") as error:
            SqliteDatastore(str(link))
        assert error.value.code == 5 and str(link) in error.value.msg and "real path" in error.value.msg
    assert sorted(os.listdir(outside)) == before, "no -wal, -shm or dangling target made outside"


def test_a_directory_and_a_foreign_database_are_refused(tmp_path: Path) -> None:
    (tmp_path / "dir.db").mkdir()
    with pytest.raises(Unusable, match="is a directory"):
        SqliteDatastore(str(tmp_path / "dir.db"))
    foreign = tmp_path / "app.db"
    db = sqlite3.connect(foreign)
    db.execute("CREATE TABLE users (name TEXT)")
    db.commit()
    db.close()
    before = _digest(foreign)
    with pytest.raises(Unusable, match=r"something else \(tables users\)"):
        SqliteDatastore(str(foreign))
    assert _digest(foreign) == before, "no table of ours was added to someone else's database"
    with SqliteDatastore(str(foreign), adopt=["users"]) as store:  # a layout the caller migrates
        store.put("/k", "v")


def test_a_newer_schema_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    path = tmp_path / "newer.db"
    _filled(str(path))
    db = sqlite3.connect(path)
    db.execute("UPDATE kv_meta SET value = 2 WHERE name = 'schema'")
    db.commit()
    db.close()
    before = _digest(path)
    with pytest.raises(Unusable, match="schema 2, written by a newer pycni"):
        SqliteDatastore(str(path))
    assert _digest(path) == before


@pytest.mark.parametrize("cut", [0.5, 50 / 30720])
def test_garbage_and_truncated_files_are_refused_and_kept(tmp_path: Path, cut: float) -> None:
    path = tmp_path / "store.db"
    _filled(str(path))
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * cut)])
    with pytest.raises(Unusable, match="is truncated") as error:
        SqliteDatastore(str(path))
    assert "restore it from a backup" in error.value.msg
    path.write_bytes(os.urandom(3000))
    garbage = _digest(path)
    with pytest.raises(Unusable, match="is not a sqlite database"):
        SqliteDatastore(str(path))
    assert _digest(path) == garbage and not os.path.exists(f"{path}-wal"), "the file is never replaced"


def test_an_empty_file_is_a_new_store(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    path.write_bytes(b"")
    with SqliteDatastore(str(path)) as store:
        assert store.put("/k", "v").mod_revision == 1


def test_a_stale_or_foreign_wal_is_refused_and_left_in_place(tmp_path: Path) -> None:
    path = str(tmp_path / "store.db")
    store = SqliteDatastore(path)
    for index in range(20):
        store.put(f"/k/{index}", "old")
    stale = Path(f"{path}-wal").read_bytes()  # a copy taken while the store was in use
    for index in range(20, 40):
        store.put(f"/k/{index}", "new")
    store.close()
    Path(f"{path}-wal").write_bytes(stale)
    with pytest.raises(Unusable, match="stale write-ahead log") as error:
        SqliteDatastore(path)
    assert "from revision 40 to 20" in error.value.msg
    assert Path(f"{path}-wal").read_bytes() == stale, "left for a person to look at"
    other = str(tmp_path / "other.db")
    with SqliteDatastore(other) as second:
        second.put("/z", "other")
        Path(f"{path}-wal").write_bytes(Path(f"{other}-wal").read_bytes())
    with pytest.raises(Unusable, match="belongs to another store"):
        SqliteDatastore(path)
    os.unlink(f"{path}-wal")  # what the message says to do
    with SqliteDatastore(path) as store:
        listed, revision = store.list("/k/")
        assert len(listed) == 40 and revision == 40


@pytest.mark.parametrize("suffix", ["-wal", "-journal"])
def test_a_garbage_wal_or_journal_beside_the_store_loses_nothing(tmp_path: Path, suffix: str) -> None:
    path = str(tmp_path / "store.db")
    _filled(path)
    Path(path + suffix).write_bytes(os.urandom(5000))
    with SqliteDatastore(path) as store:
        assert len(store.list("/k/")[0]) == 30


def test_a_write_lock_held_elsewhere_is_a_bounded_wait_and_reads_go_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = str(tmp_path / "store.db")
    _filled(path)
    monkeypatch.setattr("pycni.datastore.sqlite.BUSY_TIMEOUT", 0.3)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        with SqliteDatastore(path) as store:
            assert len(store.list("/k/")[0]) == 30, "WAL readers do not wait for a writer"
            started = time.monotonic()
            with pytest.raises(Unavailable, match="is locked: another process has held its write lock") as error:
                store.put("/k/x", "v")
            assert time.monotonic() - started < 3 and not isinstance(error.value, Unusable)
            assert error.value.code == 11
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_a_file_damaged_under_an_open_store_is_reported_then_reopened_when_restored(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    _filled(str(path))
    backup = tmp_path / "backup.db"
    backup.write_bytes(path.read_bytes())
    store = SqliteDatastore(str(path))
    try:
        assert store.get("/k/1") is not None
        with open(path, "r+b") as handle:  # in place, as a disk fault would
            handle.write(os.urandom(200))
        with pytest.raises(Unusable, match="no longer starts as a sqlite database"):
            store.get("/k/1")
        with pytest.raises(Unusable, match="is not a sqlite database"):
            store.get("/k/1")  # and so on, until the file is good again
        os.replace(backup, path)  # restored
        assert store.get("/k/1") is not None
        assert store.put("/k/new", "v").mod_revision == 31
    finally:
        store.close()


# -- sqlite's POSIX locks: a descriptor of the file closed in the process drops them all -------------------------

READER = """
import sys
from pycni.datastore.sqlite import SqliteDatastore
with SqliteDatastore(sys.argv[1]) as store:
    kv = store.get(sys.argv[2])
    print(kv.value if kv else "-")
"""


def _read_elsewhere(path: str, key: str) -> str:
    """``key`` as another process sees it, opening and closing the store (the last connection there)."""
    out = subprocess.run(
        [sys.executable, "-c", READER, path, key], capture_output=True, text=True, cwd=REPO, check=False
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_another_process_closing_its_store_never_takes_the_wal_from_an_open_one(path: str) -> None:
    # Each transaction checks the file: by opening and closing it, that dropped the connection's shared lock,
    # so another process's close (then "the last") checkpointed and deleted the -wal; later commits went to
    # the deleted file and nobody else ever saw them.
    with SqliteDatastore(path) as store:
        for index in range(3):
            store.put("/k", str(index))
            assert _read_elsewhere(path, "/k") == str(index)
            assert os.path.exists(f"{path}-wal"), "the open store's -wal was deleted under it"


def test_a_store_opened_and_closed_beside_another_in_one_process_keeps_its_locks(path: str) -> None:
    with SqliteDatastore(path) as first:
        first.put("/k", "1")
        for value in ("2", "3"):
            SqliteDatastore(path).close()  # its checks' and its connection's descriptors of the file
            first.put("/k", value)
            assert _read_elsewhere(path, "/k") == value


def test_a_wal_left_read_only_by_a_read_only_open_gets_the_store_mode_back(tmp_path: Path) -> None:
    # sqlite gives the -wal and -shm it makes the store's mode: a store read while it was 0444 leaves 0444 ones.
    path = tmp_path / "store.db"
    _filled(str(path))
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").write_bytes(b"")
        Path(f"{path}{suffix}").chmod(0o444)
    path.chmod(0o640)
    with SqliteDatastore(str(path)) as store:
        assert not store.read_only
        store.put("/k/new", "v")
    assert _read_elsewhere(str(path), "/k/new") == "v"
    for suffix in ("-wal", "-shm"):
        if os.path.exists(f"{path}{suffix}"):
            assert os.stat(f"{path}{suffix}").st_mode & 0o777 == 0o640


def test_a_companion_that_is_not_a_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    _filled(str(path))
    Path(f"{path}-shm").mkdir()
    with pytest.raises(Unusable, match="-shm is not a regular file"):
        SqliteDatastore(str(path))


@pytest.mark.parametrize("how", ["removed", "emptied"])
def test_a_store_removed_or_emptied_under_an_open_one_is_never_made_a_new_store(tmp_path: Path, how: str) -> None:
    path = tmp_path / "store.db"
    _filled(str(path))
    backup = tmp_path / "backup.db"
    with SqliteDatastore(str(path)) as store:
        assert store.get("/k/1") is not None
        backup.write_bytes(path.read_bytes())
        if how == "removed":
            path.unlink()
        else:
            path.write_bytes(b"")
        with pytest.raises(Unusable, match="the store is reopened once the path holds a good store again"):
            store.get("/k/1")
        for _ in range(2):  # and so on, until the file is good again
            with pytest.raises(Unusable, match=f"was {how} while this process used it: not made a new store"):
                store.get("/k/1")
        assert not path.exists() or path.stat().st_size == 0, "no new store made at the path"
        os.replace(backup, path)
        assert store.get("/k/1") is not None


def test_an_empty_file_made_a_store_is_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "store.db"
    path.write_bytes(b"")
    with SqliteDatastore(str(path)):
        pass
    assert f"the datastore file {path} was empty: it becomes a new, empty store" in caplog.text
