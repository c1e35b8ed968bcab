"""A lease file from before :mod:`pycni.datastore` becomes datastore keys, once.

An earlier pycni kept Flannel's leases in its own tables (``config(prefix,
value)``, ``leases(key, value, expires_at)``, ``changes``, ``meta``); the
datastore keeps its keys in ``kv_*`` tables of the same file. Without this a
node upgraded in place would find no config and no leases: a reservation
would be lost, and every node sharing the file would take a new subnet.

The copy goes through the datastore (``create``: a key it already holds is
newer and wins, so the copy is idempotent), then the old tables are renamed
to ``flannel_v1_*`` in one transaction, which marks the file done and keeps
the old rows for whoever wants to look. A crash in between makes the next
start copy again. A lease whose TTL ran out is not copied; one that has
time left keeps it (rounded up to whole seconds, the datastore's unit).

Several agents opening the file at once may all copy; they write the same
keys and only the first ``create`` of each lands. What cannot be excluded
without holding sqlite's write lock across the copy (which the datastore's
own connection would then wait on) is an agent deleting a copied lease
while another, slower, migration is still copying it: it would come back,
and expire with its TTL. That needs two agents to start on a never-migrated
file within the same fraction of a second and one to release its lease.
"""

from __future__ import annotations

import logging
import math
import sqlite3
import time
from collections.abc import Callable

from pycni.datastore import AlreadyExists, Datastore, Unavailable

log = logging.getLogger("pycni.fabric.flannel.migrate")

OLD_TABLES = ("config", "leases", "changes", "meta")
RENAMED_PREFIX = "flannel_v1_"
BUSY_TIMEOUT = 10.0


def _old_rows(db: sqlite3.Connection) -> tuple[list[tuple[str, str]], list[tuple[str, str, float | None]]] | None:
    tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if "leases" not in tables or "config" not in tables:
        return None
    configs = db.execute("SELECT prefix, value FROM config ORDER BY prefix").fetchall()
    leases = db.execute("SELECT key, value, expires_at FROM leases ORDER BY key").fetchall()
    return configs, leases


def _free_name(present: set[str], name: str) -> str:
    """``name``, or ``name_2``, ``name_3``...: a file migrated before may have been written by an old pycni again."""
    candidate, number = name, 1
    while candidate in present:
        number += 1
        candidate = f"{name}_{number}"
    present.add(candidate)
    return candidate


def migrate_lease_file(path: str, datastore: Datastore, clock: Callable[[], float] = time.time) -> int:
    """Copy the old tables' config and live leases into ``datastore`` and retire the tables; keys copied.

    0 (and nothing done) for a file without the old tables: a new file, or one migrated already.
    """
    try:
        db = sqlite3.connect(path, timeout=BUSY_TIMEOUT, isolation_level=None)
    except sqlite3.Error as error:
        raise Unavailable(f"cannot open {path} to look for pre-datastore lease tables: {error}") from None
    try:
        found = _old_rows(db)
        if found is None:
            return 0
        configs, leases = found
        now = clock()
        rows: list[tuple[str, str, int | None]] = [(f"{prefix}/config", value, None) for prefix, value in configs]
        rows += [(key, value, None if expires is None else math.ceil(expires - now)) for key, value, expires in leases]
        copied = 0
        for key, value, ttl in rows:
            if ttl is not None and ttl <= 0:
                continue  # expired: the old store would have swept it
            try:
                datastore.create(key, value, ttl)
                copied += 1
            except AlreadyExists:
                pass  # newer data, or another agent's copy
        db.execute("BEGIN IMMEDIATE")
        present = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        for table in OLD_TABLES:
            if table in present:
                db.execute(f"ALTER TABLE {table} RENAME TO {_free_name(present, RENAMED_PREFIX + table)}")
        db.execute("COMMIT")
        log.info(
            "migrated %s: %d of %d config and lease rows copied into the datastore; old tables kept as %s*",
            path,
            copied,
            len(rows),
            RENAMED_PREFIX,
        )
        return copied
    except sqlite3.Error as error:
        raise Unavailable(f"migrating the lease tables of {path} failed: {error}; retry") from None
    finally:
        db.close()
