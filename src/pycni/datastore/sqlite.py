"""The datastore in one sqlite file: etcd's semantics on one machine, shared by its processes.

Several agents and CLIs on one machine (one per node namespace in a test or a
lab) open the same file. sqlite serialises writers across processes
(``BEGIN IMMEDIATE`` takes the write lock before anything is read, so a
read-then-write cannot deadlock), and WAL mode lets readers and the watchers'
polls run while one writes. Tables (prefixed, so they can share a file with
other tables):

* ``kv_data``: the live keys with etcd's counters and ``expires_at``
  (wall-clock seconds, NULL: never expires);
* ``kv_log``: every event, ``(revision, key)``, with the new and the previous value;
* ``kv_meta``: ``revision`` (the store's, bumped once per write transaction),
  ``compact_revision`` (the log holds every revision from it on).

Revisions are assigned inside the writer's transaction, so a reader that saw
revision N has seen every change up to N: a watch can never skip one.

Expiry: whoever writes, or reads and finds a key past ``expires_at``, deletes
it and logs its DELETE in one write transaction, so every watcher of every
process sees one DELETE, exactly once. An idle watcher's poll does the same
after a cheap check, so expiries reach watchers in real time.

The log is pruned to the last ``keep_revisions`` revisions (an automatic
:meth:`compact`); a watch from before that raises ``Compacted``.

A damaged file (pycni issue 9): what is at the path is checked before sqlite
touches it (:mod:`pycni.datastore.sqlite_file`: symlinks, directories, garbage,
truncation, a stale or foreign ``-wal``), then its tables: ours, with our
columns and a schema version this code reads; a database with other tables and
none of ours is someone else's file and is refused, unless the caller
``adopts`` those tables (Flannel's pre-datastore lease tables, migrated into
ours). A file is never emptied or replaced: everything that cannot be used is
:class:`~pycni.datastore.errors.Unusable` (code 5) with the path and what to do,
and an empty file is a new store. A file that can only be read opens read-only.
Another process holding the write lock longer than ``BUSY_TIMEOUT`` is
``Unavailable`` (try again), named as such.

While open, every transaction first checks that the path still names the file
that was opened and that it still starts as a sqlite file. If not (replaced,
removed, overwritten in place), or sqlite finds it corrupt, the connection is
closed at once (sqlite moves the WAL's committed pages into the file it had
opened, so nothing committed is dropped) and every call raises ``Unusable``
until the path holds a good store again, which the next call then opens (a
removed or emptied file is not: a new, empty store under a running process
would drop every key without a word). A running agent treats that as an
outage: it keeps its dataplane and retries. A mode changed under an open store
changes nothing for it (the file is open already), as for any daemon.
Restore a store only with every process using it stopped, moving its ``-wal``
with it: sqlite cannot tell a WAL from an older copy, and neither can anyone.
"""

from __future__ import annotations

import logging
import os
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager, suppress
from typing import Any

from pycni.datastore import sqlite_file
from pycni.datastore.base import ClosingMixin
from pycni.datastore.errors import (
    Compacted,
    DatastoreError,
    InvalidArgument,
    Unavailable,
    Unusable,
    already_exists,
    conflict,
    not_found,
)
from pycni.datastore.keys import check_key, check_prefix, check_revision, check_ttl, check_value, prefix_end
from pycni.datastore.model import Event, EventType, KeyValue, Listing, tombstone
from pycni.datastore.watch import Batches, Watch

log = logging.getLogger("pycni.datastore.sqlite")

SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS kv_data (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    create_revision INTEGER NOT NULL,
    mod_revision INTEGER NOT NULL,
    version INTEGER NOT NULL,
    expires_at REAL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS kv_data_expiry ON kv_data (expires_at) WHERE expires_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS kv_log (
    revision INTEGER NOT NULL,
    key TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('PUT', 'DELETE')),
    value TEXT, create_revision INTEGER, version INTEGER, expires_at REAL,
    prev_value TEXT, prev_create_revision INTEGER, prev_mod_revision INTEGER, prev_version INTEGER,
    prev_expires_at REAL,
    PRIMARY KEY (revision, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS kv_meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO kv_meta (name, value) VALUES ('revision', 0), ('compact_revision', 0), ('schema', 1);
"""
TABLES = {
    "kv_data": ("key", "value", "create_revision", "mod_revision", "version", "expires_at"),
    "kv_log": (
        "revision", "key", "kind", "value", "create_revision", "version", "expires_at",
        "prev_value", "prev_create_revision", "prev_mod_revision", "prev_version", "prev_expires_at",
    ),
    "kv_meta": ("name", "value"),
}  # fmt: skip
# sqlite's primary result codes that say something about the file (sqlite3.h)
SQLITE_PERM, SQLITE_BUSY, SQLITE_LOCKED, SQLITE_READONLY = 3, 5, 6, 8
SQLITE_CORRUPT, SQLITE_FULL, SQLITE_CANTOPEN, SQLITE_NOTADB = 11, 13, 14, 26
_COLUMNS = "key, value, create_revision, mod_revision, version, expires_at"
_LOG_COLUMNS = (
    "revision, key, kind, value, create_revision, version, expires_at, "
    "prev_value, prev_create_revision, prev_mod_revision, prev_version, prev_expires_at"
)
BUSY_TIMEOUT = 10.0  # seconds a writer waits for another process's transaction before Unavailable
PRUNE_EVERY = 100  # revisions between automatic prunes of the log


def _row_kv(row: tuple[Any, ...]) -> KeyValue:
    key, value, create_revision, mod_revision, version, expires_at = row
    return KeyValue(key, value, create_revision, mod_revision, version, expires_at=expires_at)


def _log_event(row: tuple[Any, ...]) -> Event:
    revision, key, kind, value, create_revision, version, expires_at = row[:7]
    prev_value, prev_create, prev_mod, prev_version, prev_expires = row[7:]
    prev = None
    if prev_mod is not None:
        prev = KeyValue(key, prev_value, prev_create, prev_mod, prev_version, expires_at=prev_expires)
    if kind == "DELETE":
        return Event(EventType.DELETE, tombstone(key, revision), prev)
    return Event(EventType.PUT, KeyValue(key, value, create_revision, revision, version, expires_at=expires_at), prev)


class SqliteDatastore(ClosingMixin):
    """The :class:`~pycni.datastore.Datastore` contract on a local sqlite file."""

    def __init__(
        self,
        path: str,
        *,
        poll_interval: float = 0.1,
        keep_revisions: int = 10000,
        clock: Callable[[], float] = time.time,
        adopt: Collection[str] = (),
    ) -> None:
        """Open (or create) the store at ``path``; ``adopt`` names tables another layout left that may be there."""
        self.path = path
        self.poll_interval = poll_interval
        self.keep_revisions = keep_revisions
        self.clock = clock  # wall clock: expiry times are shared between processes
        self.read_only = False
        self._adopt = frozenset(adopt)
        self._lock = threading.Lock()
        self._closed = False
        self._db: sqlite3.Connection | None = None
        self._identity: tuple[int, int] | None = None
        self._fd: int | None = None  # the opened file, read by _changed (see sqlite_file: never closed under sqlite)
        self._opened = False  # once open, a removed or emptied file is never made a new store
        self._was_empty = False
        self._open()

    # -- opening ----------------------------------------------------------------

    def _open(self) -> None:
        """Check what is at the path, connect, and check or create the tables (see the module docstring)."""
        path = self.path
        state = sqlite_file.inspect(path)
        if self._opened and (state.identity is None or state.empty):
            raise Unusable(
                f"the datastore file {path} was {'removed' if state.identity is None else 'emptied'} while this "
                f"process used it: not made a new store under a running process; {sqlite_file.MOVE_AWAY}"
            )
        if state.identity is not None and not state.empty:
            sqlite_file.check_wal(path)
        try:
            if state.identity is None:
                os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            # Read-only is mode=ro, never immutable=1: whoever may write the file (root) can do so while it
            # is read here, and only mode=ro takes sqlite's locks and sees the changes (immutable reads torn
            # pages, or stale ones for good). sqlite may make a -wal and -shm with the store's mode beside it
            # (see sqlite_file.check_companions).
            db = sqlite3.connect(
                sqlite_file.uri(path, mode="ro" if state.read_only else "rwc"),
                uri=True,
                timeout=BUSY_TIMEOUT,
                isolation_level=None,
                check_same_thread=False,
            )
        except (OSError, sqlite3.Error) as error:
            raise Unavailable(
                f"cannot open the datastore file {path}: {error}; check the path and its permissions"
            ) from None
        sqlite_file.opened(path)
        self._db, self.read_only = db, state.read_only
        self._was_empty = state.identity is not None and state.empty
        try:
            self._fd = sqlite_file.open_readable(path)
        except OSError as error:
            self._drop()
            raise Unusable(f"the datastore file {path} changed while it was opened ({error.strerror}); retry") from None
        st = os.fstat(self._fd)
        self._identity = st.st_dev, st.st_ino
        try:
            self._prepare(db)
        except BaseException:
            self._drop()
            raise
        self._opened = True

    def _prepare(self, db: sqlite3.Connection) -> None:
        """Our tables with our columns at a schema this code reads, created in a file that has none."""
        try:
            query = "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'"
            tables = {row[0] for row in db.execute(query)}
            ours = tables & TABLES.keys()
            if not ours:
                self._create(db, tables)
            elif ours != TABLES.keys():
                missing = ", ".join(sorted(TABLES.keys() - ours))
                raise Unusable(
                    f"the datastore file {self.path} is damaged: its table(s) {missing} are missing; "
                    f"{sqlite_file.MOVE_AWAY}"
                )
            self._check_tables(db)
            if not self.read_only and db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                db.execute("PRAGMA journal_mode=WAL")  # persistent in the file
            if not self.read_only and db.execute("SELECT 1 FROM kv_meta WHERE name = 'store_id'").fetchone() is None:
                db.execute("INSERT OR IGNORE INTO kv_meta (name, value) VALUES ('store_id', ?)", (_store_id(),))
        except sqlite3.Error as error:
            raise self._translate(error) from None

    def _create(self, db: sqlite3.Connection, tables: set[str]) -> None:
        foreign = sorted(tables - self._adopt)
        if foreign:
            listed = ", ".join(foreign[:6]) + (", ..." if len(foreign) > 6 else "")
            raise Unusable(
                f"the datastore file {self.path} is a sqlite database of something else (tables {listed}), "
                f"not a pycni datastore: give another path (pycni keeps its keys in tables kv_data, kv_log, kv_meta)"
            )
        if self.read_only:
            raise Unusable(f"the datastore file {self.path} is read-only and holds no datastore yet: make it writable")
        if self._was_empty:
            log.warning("the datastore file %s was empty: it becomes a new, empty store", self.path)
        db.execute("PRAGMA journal_mode=WAL")
        db.executescript(
            "BEGIN IMMEDIATE;"
            + _SCHEMA
            + f"INSERT OR IGNORE INTO kv_meta (name, value) VALUES ('store_id', {_store_id()});COMMIT;"
        )

    def _check_tables(self, db: sqlite3.Connection) -> None:
        for table, columns in TABLES.items():
            found = tuple(row[1] for row in db.execute(f"PRAGMA table_info({table})"))
            if found != columns:
                raise Unusable(
                    f"the datastore file {self.path} has a table {table} that is not the datastore's (columns "
                    f"{', '.join(found)}): it is not a pycni store of this version; give another path"
                )
        row = db.execute("SELECT value FROM kv_meta WHERE name = 'schema'").fetchone()
        if row is None or not isinstance(row[0], int):
            raise Unusable(f"the datastore file {self.path} is damaged: kv_meta has no schema version")
        if row[0] != SCHEMA_VERSION:
            newer = "a newer" if row[0] > SCHEMA_VERSION else "an unknown"
            raise Unusable(
                f"the datastore file {self.path} has schema {row[0]}, written by {newer} pycni; this pycni reads "
                f"schema {SCHEMA_VERSION}: run the pycni that wrote it (or a newer one)"
            )

    def _drop(self) -> None:
        """Close the connection (sqlite checkpoints what it holds into the file it opened)."""
        if self._db is not None:
            db, self._db = self._db, None
            with suppress(sqlite3.Error):
                db.close()
            if self._fd is not None:
                sqlite_file.release(self.path, self._fd)
                self._fd = None
            sqlite_file.closed(self.path)

    def _translate(self, error: sqlite3.Error) -> DatastoreError:
        """A sqlite error as the datastore error a caller acts on, naming the file and what to do."""
        code = (getattr(error, "sqlite_errorcode", 0) or 0) & 0xFF
        path = self.path
        if code in (SQLITE_CORRUPT, SQLITE_NOTADB):
            self._drop()  # reopened, with every check, by the next call
            return Unusable(f"the datastore file {path} is damaged ({error}); {sqlite_file.MOVE_AWAY}")
        if code == SQLITE_READONLY:
            return Unusable(f"the datastore file {path} is read-only ({error}): make it writable to change the store")
        if code in (SQLITE_BUSY, SQLITE_LOCKED):
            return Unavailable(
                f"the datastore file {path} is locked: another process has held its write lock for more than "
                f"{BUSY_TIMEOUT:.0f} s; retry, or find that process (fuser {path})"
            )
        if code in (SQLITE_PERM, SQLITE_CANTOPEN):
            return Unusable(f"cannot use the datastore file {path}: {error}; check the path and its permissions")
        if code == SQLITE_FULL:
            return Unavailable(f"the datastore file {path} cannot grow: the disk is full")
        return Unavailable(f"datastore {path}: {error}")

    def _usable(self) -> sqlite3.Connection:
        """The connection, if the path still names the good file it was opened on; else reopened, or Unusable."""
        if self._closed:
            raise Unavailable(f"the datastore {self.path} is closed")
        if self._db is not None:
            problem = self._changed()
            if problem:
                self._drop()
                raise Unusable(f"{problem}; the store is reopened once the path holds a good store again")
        if self._db is None:
            self._open()
        assert self._db is not None
        return self._db

    def _changed(self) -> str:
        """Why the file at the path is no longer the store this connection uses ("" if it still is)."""
        path = self.path
        now = sqlite_file.identity(path)
        if now is None:
            return f"the datastore file {path} was removed"
        if now != self._identity:
            return f"the datastore file {path} was replaced by another file"
        assert self._fd is not None
        try:  # the descriptor kept open: opening and closing the file would drop sqlite's locks on it
            head = os.pread(self._fd, len(sqlite_file.MAGIC), 0)
        except OSError as error:
            return f"the datastore file {path} cannot be read any more: {error.strerror}"
        if head != sqlite_file.MAGIC:
            return f"the datastore file {path} was overwritten: it no longer starts as a sqlite database"
        return ""

    # -- plumbing ---------------------------------------------------------------

    @contextmanager
    def _guard(self) -> Iterator[sqlite3.Connection]:
        """The connection, for one thread at a time; sqlite errors become the datastore's."""
        with self._lock:
            db = self._usable()
            try:
                yield db
            except BaseException as error:
                if self._db is not None and db.in_transaction:
                    try:
                        db.rollback()
                    except sqlite3.Error:
                        self._drop()
                if isinstance(error, sqlite3.Error):
                    raise self._translate(error) from None
                raise

    @contextmanager
    def _transaction(self, write: bool) -> Iterator[sqlite3.Connection]:
        """One snapshot (deferred BEGIN), or the write lock first (BEGIN IMMEDIATE) with due expiries swept."""
        with self._guard() as db:
            db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            if write:
                self._sweep(db)
            yield db
            db.execute("COMMIT")

    @staticmethod
    def _meta(db: sqlite3.Connection, name: str) -> int:
        row = db.execute("SELECT value FROM kv_meta WHERE name = ?", (name,)).fetchone()
        return int(row[0]) if row else 0

    def _bump(self, db: sqlite3.Connection) -> int:
        row = db.execute("UPDATE kv_meta SET value = value + 1 WHERE name = 'revision' RETURNING value").fetchone()
        revision = int(row[0])
        if revision % PRUNE_EVERY == 0 and revision > self.keep_revisions:
            self._compact(db, revision - self.keep_revisions)
        return revision

    @staticmethod
    def _compact(db: sqlite3.Connection, revision: int) -> None:
        db.execute("DELETE FROM kv_log WHERE revision < ?", (revision,))
        db.execute(
            "UPDATE kv_meta SET value = max(value, ?) WHERE name = 'compact_revision'",
            (revision,),
        )

    @staticmethod
    def _log(
        db: sqlite3.Connection, revision: int, kind: str, key: str, new: KeyValue | None, prev: KeyValue | None
    ) -> None:
        db.execute(
            f"INSERT INTO kv_log ({_LOG_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                revision,
                key,
                kind,
                *((new.value, new.create_revision, new.version, new.expires_at) if new else (None,) * 4),
                *(
                    (prev.value, prev.create_revision, prev.mod_revision, prev.version, prev.expires_at)
                    if prev
                    else (None,) * 5
                ),
            ),
        )

    def _sweep(self, db: sqlite3.Connection) -> None:
        """Delete the keys past their expiry, each in its own revision (as etcd revokes each lease)."""
        rows = db.execute(
            f"DELETE FROM kv_data WHERE expires_at IS NOT NULL AND expires_at <= ? RETURNING {_COLUMNS}",
            (self.clock(),),
        ).fetchall()
        for kv in sorted(map(_row_kv, rows), key=lambda kv: (kv.expires_at or 0.0, kv.key)):
            self._log(db, self._bump(db), "DELETE", kv.key, None, kv)

    def _due(self, db: sqlite3.Connection) -> bool:
        row = db.execute(
            "SELECT 1 FROM kv_data WHERE expires_at IS NOT NULL AND expires_at <= ? LIMIT 1", (self.clock(),)
        ).fetchone()
        return row is not None

    def _read(self, query: Callable[[sqlite3.Connection], Any]) -> Any:
        """``query`` on one snapshot in which nothing is past its expiry.

        Usually one read transaction; if a key is due, the read is redone in a
        write transaction after sweeping it, so the answer and its revision agree.
        """
        with self._transaction(write=False) as db:
            if not self._due(db) or self.read_only:  # read-only: the queries leave out what is past its expiry
                return query(db)
        with self._transaction(write=True) as db:
            return query(db)

    def _live(self) -> tuple[str, tuple[float, ...]]:
        """The condition leaving out keys past their expiry, where no sweep can delete them (a read-only file)."""
        if not self.read_only:
            return "", ()
        return " AND (expires_at IS NULL OR expires_at > ?)", (self.clock(),)

    def _current(self, db: sqlite3.Connection, key: str) -> KeyValue | None:
        live, now = self._live()
        row = db.execute(f"SELECT {_COLUMNS} FROM kv_data WHERE key = ?{live}", (key, *now)).fetchone()
        return _row_kv(row) if row else None

    def _range(self, prefix: str) -> tuple[str, tuple[str, ...]]:
        """The WHERE clause and arguments selecting the keys under ``prefix`` (index-friendly)."""
        end = prefix_end(prefix)
        if end is None:
            return "key >= ?", (prefix,)
        return "key >= ? AND key < ?", (prefix, end)

    def _write(self, db: sqlite3.Connection, key: str, value: str, ttl: int | None, prev: KeyValue | None) -> KeyValue:
        revision = self._bump(db)
        kv = KeyValue(
            key,
            value,
            create_revision=prev.create_revision if prev else revision,
            mod_revision=revision,
            version=prev.version + 1 if prev else 1,
            expires_at=self.clock() + ttl if ttl else None,
        )
        db.execute(
            f"INSERT INTO kv_data ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (key) DO UPDATE SET "
            "value = excluded.value, mod_revision = excluded.mod_revision, version = excluded.version, "
            "expires_at = excluded.expires_at",
            (kv.key, kv.value, kv.create_revision, kv.mod_revision, kv.version, kv.expires_at),
        )
        self._log(db, revision, "PUT", key, kv, prev)
        return kv

    # -- reads ------------------------------------------------------------------

    def get(self, key: str) -> KeyValue | None:
        check_key(key)
        kv: KeyValue | None = self._read(lambda db: self._current(db, key))
        return kv

    def list(self, prefix: str) -> Listing:
        where, args = self._range(check_prefix(prefix))

        def query(db: sqlite3.Connection) -> Listing:
            live, now = self._live()
            rows = db.execute(
                f"SELECT {_COLUMNS} FROM kv_data WHERE {where}{live} ORDER BY key", (*args, *now)
            ).fetchall()
            return [_row_kv(row) for row in rows], self._meta(db, "revision")

        listing: Listing = self._read(query)
        return listing

    def revision(self) -> int:
        revision: int = self._read(lambda db: self._meta(db, "revision"))
        return revision

    # -- writes -----------------------------------------------------------------

    def create(self, key: str, value: str, ttl: int | None = None) -> KeyValue:
        check_value(check_key(key), value)
        ttl = check_ttl(ttl)
        with self._transaction(write=True) as db:
            existing = self._current(db, key)
            if existing is not None:
                raise already_exists(key, existing)
            return self._write(db, key, value, ttl, None)

    def update(self, key: str, value: str, revision: int, ttl: int | None = None) -> KeyValue:
        check_value(check_key(key), value)
        ttl, revision = check_ttl(ttl), check_revision(revision)
        with self._transaction(write=True) as db:
            current = self._current(db, key)
            if current is None:
                raise not_found(key)
            if current.mod_revision != revision:
                raise conflict(key, revision, current)
            return self._write(db, key, value, ttl, current)

    def put(self, key: str, value: str, ttl: int | None = None) -> KeyValue:
        check_value(check_key(key), value)
        ttl = check_ttl(ttl)
        with self._transaction(write=True) as db:
            return self._write(db, key, value, ttl, self._current(db, key))

    def delete(self, key: str, revision: int | None = None) -> KeyValue:
        check_key(key)
        if revision is not None:
            check_revision(revision)
        with self._transaction(write=True) as db:
            current = self._current(db, key)
            if current is None:
                raise not_found(key)
            if revision is not None and current.mod_revision != revision:
                raise conflict(key, revision, current)
            db.execute("DELETE FROM kv_data WHERE key = ?", (key,))
            self._log(db, self._bump(db), "DELETE", key, None, current)
            return current

    def delete_prefix(self, prefix: str) -> int:
        where, args = self._range(check_prefix(prefix))
        with self._transaction(write=True) as db:
            rows = db.execute(f"DELETE FROM kv_data WHERE {where} RETURNING {_COLUMNS}", args).fetchall()
            if not rows:
                return 0
            revision = self._bump(db)
            for kv in sorted(map(_row_kv, rows), key=lambda kv: kv.key):
                self._log(db, revision, "DELETE", kv.key, None, kv)
            return len(rows)

    # -- history ----------------------------------------------------------------

    def watch(self, prefix: str, since_revision: int) -> Watch:
        check_prefix(prefix)
        check_revision(since_revision, "watch revision")
        return Watch(prefix, since_revision, lambda watch: self._batches(watch, prefix, since_revision))

    def _batches(self, watch: Watch, prefix: str, since: int) -> Batches:
        where, args = self._range(prefix)
        while not watch.closed:
            with self._transaction(write=False) as db:  # one snapshot: the compaction mark, the log, the revision
                due = self._due(db)
                compacted = self._meta(db, "compact_revision")
                if since + 1 < compacted:
                    raise Compacted(
                        f"the datastore log of {self.path} was pruned to revisions from {compacted}; cannot watch "
                        f"from {since}: re-list and watch from the list's revision",
                        since,
                        compacted,
                    )
                rows = db.execute(
                    f"SELECT {_LOG_COLUMNS} FROM kv_log WHERE revision > ? AND {where} ORDER BY revision, key",
                    (since, *args),
                ).fetchall()
                since = max(since, self._meta(db, "revision"))
            if rows:
                yield [_log_event(row) for row in rows]
            elif due and not self.read_only:  # an idle store: this poll turns the expiry into its DELETE
                with self._transaction(write=True):
                    pass  # the write transaction sweeps when it begins
            else:
                watch.wait(self.poll_interval)

    def compact(self, revision: int) -> None:
        check_revision(revision, "compaction revision")
        with self._transaction(write=True) as db:
            current = self._meta(db, "revision")
            if revision > current:
                raise InvalidArgument(f"cannot compact {self.path} to revision {revision}: the store is at {current}")
            self._compact(db, revision)

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._drop()


def _store_id() -> int:
    """A random identity for a new store, so a WAL of another store is told apart (:func:`sqlite_file.check_wal`)."""
    return random.SystemRandom().randrange(1, 1 << 62)
