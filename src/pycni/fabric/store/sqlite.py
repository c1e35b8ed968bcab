"""Leases in one sqlite file: the etcd store's semantics for a single machine, no server.

Several agents on one machine (e.g. one per node namespace in a test or a lab)
share the file. sqlite serialises writers across processes, and WAL mode lets
readers (the watchers' polls) run while one writes. Three tables:

* ``config(prefix, value)``: the network config JSON, per prefix;
* ``leases(key, value, expires_at)``: ``<prefix>/subnets/<key>`` = ``LeaseAttrs``
  JSON; ``expires_at`` is wall-clock seconds, NULL for a reservation;
* ``changes(revision, key, kind, value)``: every PUT and DELETE with a
  monotonically increasing revision (``AUTOINCREMENT``: never reused, even
  after pruning). A revision is assigned inside the writer's transaction, so a
  reader that saw revision N has seen every change before it.

Expiry: whoever touches the store first after a lease's ``expires_at`` deletes
the row and logs a DELETE in the same transaction, so every watcher sees one
REMOVED, exactly once. ``create_lease`` is an INSERT on the unique key after
that sweep, so an expired row counts as free. ``watch_leases`` polls the log.
The log is pruned to its last ``keep_changes`` entries; a watch from before
that raises :class:`StoreUnavailable`, like an etcd compaction.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from pycni.fabric.model import (
    DEFAULT_PREFIX,
    ConfigError,
    EventType,
    Lease,
    LeaseEvent,
    NetworkConfig,
)
from pycni.fabric.store import KeyLayout, StoreUnavailable

_SCHEMA = """
CREATE TABLE IF NOT EXISTS config (prefix TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS leases (key TEXT PRIMARY KEY, value TEXT NOT NULL, expires_at REAL);
CREATE INDEX IF NOT EXISTS leases_expiry ON leases (expires_at) WHERE expires_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS changes (
    revision INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('PUT', 'DELETE')),
    value TEXT NOT NULL,
    expires_at REAL
);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""
BUSY_TIMEOUT = 10.0  # seconds a writer waits for another process's transaction


class SqliteStore(KeyLayout):
    """The :class:`~pycni.fabric.store.Store` contract on a local sqlite file."""

    def __init__(
        self,
        path: str,
        prefix: str = DEFAULT_PREFIX,
        *,
        poll_interval: float = 0.1,
        keep_changes: int = 10000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = path
        super().__init__(prefix)
        self.poll_interval = poll_interval
        self.keep_changes = keep_changes
        self.clock = clock  # wall clock: expiry times are shared between processes
        self._lock = threading.Lock()
        self._closed = False
        directory = os.path.dirname(os.path.abspath(path))
        try:
            os.makedirs(directory, exist_ok=True)
            self._db = sqlite3.connect(path, timeout=BUSY_TIMEOUT, isolation_level=None, check_same_thread=False)
        except (OSError, sqlite3.Error) as error:
            raise StoreUnavailable(f"cannot open the lease store {path}: {error}") from None
        try:
            with self._guard() as db:
                db.execute("PRAGMA journal_mode=WAL")  # persistent in the file; a no-op once set
                db.executescript("BEGIN IMMEDIATE;" + _SCHEMA + "COMMIT;")
        except StoreUnavailable:
            self.close()
            raise

    # -- plumbing ---------------------------------------------------------------

    @contextmanager
    def _guard(self) -> Iterator[sqlite3.Connection]:
        """The connection, for one thread at a time; sqlite errors become StoreUnavailable."""
        with self._lock:
            if self._closed:
                raise StoreUnavailable(f"the lease store {self.path} is closed")
            try:
                yield self._db
            except BaseException as error:
                if self._db.in_transaction:
                    self._db.rollback()
                if isinstance(error, sqlite3.Error):
                    raise StoreUnavailable(f"lease store {self.path}: {error}") from None
                raise

    @contextmanager
    def _transaction(self, immediate: bool = False) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE takes the write lock up front, so read-then-write cannot deadlock."""
        with self._guard() as db:
            db.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")
            yield db
            db.execute("COMMIT")

    def _log(self, db: sqlite3.Connection, key: str, kind: str, value: str, expires_at: float | None = None) -> None:
        cursor = db.execute(
            "INSERT INTO changes (key, kind, value, expires_at) VALUES (?, ?, ?, ?)", (key, kind, value, expires_at)
        )
        revision = cursor.lastrowid or 0
        if revision % 1000 == 0 and revision > self.keep_changes:
            horizon = revision - self.keep_changes
            db.execute("DELETE FROM changes WHERE revision <= ?", (horizon,))
            db.execute(
                "INSERT INTO meta (name, value) VALUES ('compacted', ?) "
                "ON CONFLICT (name) DO UPDATE SET value = max(value, excluded.value)",
                (horizon,),
            )

    def _sweep(self, db: sqlite3.Connection, now: float) -> None:
        """Delete expired leases and log their DELETEs (inside a write transaction)."""
        expired = db.execute(
            "DELETE FROM leases WHERE expires_at IS NOT NULL AND expires_at <= ? RETURNING key, value", (now,)
        ).fetchall()
        for key, value in sorted(expired):
            self._log(db, key, "DELETE", value)

    def _reap(self) -> None:
        """Sweep expired leases; a cheap read first, so idle polls never take the write lock."""
        now = self.clock()
        with self._guard() as db:
            due = db.execute(
                "SELECT 1 FROM leases WHERE expires_at IS NOT NULL AND expires_at <= ? LIMIT 1", (now,)
            ).fetchone()
        if due:
            with self._transaction(immediate=True) as db:
                self._sweep(db, now)

    @staticmethod
    def _revision(db: sqlite3.Connection) -> int:
        row = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'changes'").fetchone()
        return int(row[0]) if row else 0

    def _expiry(self, ttl: int | None) -> float | None:
        """No TTL (None or 0) is a reservation, as in the etcd store (etcd grants no lease for 0)."""
        return self.clock() + ttl if ttl else None

    # -- the Store contract -----------------------------------------------------

    def set_network_config(self, json_text: str) -> None:
        """Store the network config (``--net-config-path``); validated first, so a bad file fails here."""
        NetworkConfig.from_json(json_text)
        with self._transaction(immediate=True) as db:
            db.execute(
                "INSERT INTO config (prefix, value) VALUES (?, ?) "
                "ON CONFLICT (prefix) DO UPDATE SET value = excluded.value",
                (self.prefix, json_text),
            )

    def get_network_config(self) -> str:
        with self._guard() as db:
            row = db.execute("SELECT value FROM config WHERE prefix = ?", (self.prefix,)).fetchone()
        if row is None:
            raise ConfigError(
                f"no network config for {self.prefix} in {self.path}; start the agent with "
                "--net-config-path FILE (a Flannel net-conf.json), which stores it there"
            )
        return str(row[0])

    def list_leases(self) -> tuple[list[Lease], int]:
        self._reap()
        low, high = self.subnets_prefix, self.subnets_end
        with self._transaction() as db:  # one snapshot for the rows and the revision
            rows = db.execute(
                "SELECT key, value, expires_at FROM leases WHERE key >= ? AND key < ? "
                "AND (expires_at IS NULL OR expires_at > ?) ORDER BY key",
                (low, high, self.clock()),
            ).fetchall()
            revision = self._revision(db)
        leases = [self.decode_lease(key, value, expires_at) for key, value, expires_at in rows]
        return [lease for lease in leases if lease is not None], revision

    def create_lease(self, lease: Lease, ttl: int | None) -> bool:
        key, value = self.lease_key(lease), lease.attrs.to_json()
        with self._transaction(immediate=True) as db:
            self._sweep(db, self.clock())
            expires_at = self._expiry(ttl)
            inserted = db.execute(
                "INSERT INTO leases (key, value, expires_at) VALUES (?, ?, ?) ON CONFLICT (key) DO NOTHING",
                (key, value, expires_at),
            ).rowcount
            if inserted:
                self._log(db, key, "PUT", value, expires_at)
        return bool(inserted)

    def update_lease(self, lease: Lease, ttl: int | None) -> None:
        key, value = self.lease_key(lease), lease.attrs.to_json()
        with self._transaction(immediate=True) as db:
            self._sweep(db, self.clock())
            expires_at = self._expiry(ttl)
            db.execute(
                "INSERT INTO leases (key, value, expires_at) VALUES (?, ?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at",
                (key, value, expires_at),
            )
            self._log(db, key, "PUT", value, expires_at)

    def delete_lease(self, lease: Lease) -> None:
        key = self.lease_key(lease)
        with self._transaction(immediate=True) as db:
            self._sweep(db, self.clock())
            rows = db.execute("DELETE FROM leases WHERE key = ? RETURNING value", (key,)).fetchall()
            if rows:  # deleting nothing is no change, as in etcd
                self._log(db, key, "DELETE", rows[0][0])

    def watch_leases(self, since_revision: int) -> Iterator[list[LeaseEvent]]:
        low, high = self.subnets_prefix, self.subnets_end
        since = since_revision
        while True:
            self._reap()
            with self._transaction() as db:
                row = db.execute("SELECT value FROM meta WHERE name = 'compacted'").fetchone()
                if row is not None and since < int(row[0]):
                    raise StoreUnavailable(
                        f"the lease log of {self.path} was pruned past revision {since}; re-list and watch again"
                    )
                rows = db.execute(
                    "SELECT revision, key, kind, value, expires_at FROM changes "
                    "WHERE revision > ? AND key >= ? AND key < ? ORDER BY revision",
                    (since, low, high),
                ).fetchall()
            if not rows:
                time.sleep(self.poll_interval)
                continue
            since = rows[-1][0]
            events = []
            for _, key, kind, value, expires_at in rows:
                lease = self.decode_lease(key, value, expires_at if kind == "PUT" else None)
                if lease is not None:
                    events.append(LeaseEvent(EventType.ADDED if kind == "PUT" else EventType.REMOVED, lease))
            if events:
                yield events

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._db.close()
