"""One key-value store with revisions, for every fabric and the policy engine.

Three backends keep one contract (:class:`Datastore`), with etcd v3's semantics:

* :class:`~pycni.datastore.etcd.EtcdDatastore`: etcd v3 through its JSON gateway, many nodes;
* :class:`~pycni.datastore.sqlite.SqliteDatastore`: one WAL-mode sqlite file, several
  processes on one machine, no server;
* :class:`~pycni.datastore.memory.MemoryDatastore`: in-process, an injected clock, for unit tests.

:func:`open_datastore` picks one. Nothing here knows Flannel's or Calico's keys;
their layers (lease store, IPAM blocks, resources) are thin code on top.

Data
    A :class:`KeyValue` is ``key`` (str), ``value`` (str: JSON text usually), and
    etcd's counters: ``create_revision``, ``mod_revision``, ``version``, plus
    ``lease`` (etcd's lease ID) and ``expires_at`` for a key with a TTL.

Revisions
    One global revision per store, increasing by one with every write
    transaction (a create, update, put, delete, a ``delete_prefix``, each TTL
    expiry); a failed compare-and-set and a read change nothing. A write returns
    the key with its new ``mod_revision``; ``list`` returns the revision it read at.

Reads
    ``get(key) -> KeyValue | None``; ``list(prefix) -> (keys sorted by key,
    revision)``. A prefix is a plain string prefix: ``"/a/"`` matches ``"/a/x"``
    but not ``"/ab"``; ``""`` matches everything. Sorting is by code point
    (= UTF-8 bytes, etcd's order).

Writes
    ``create(key, value, ttl=None)`` raises :class:`AlreadyExists` if the key
    exists (etcd: ``If(Version(key)==0) Then(Put) Else(Get)``).
    ``update(key, value, revision, ttl=None)`` writes only if the key's
    ``mod_revision`` is ``revision``: :class:`Conflict` if it changed,
    :class:`NotFound` if the key is gone (etcd: ``If(ModRevision(key)==rev)``).
    ``put(key, value, ttl=None)`` writes unconditionally.
    ``delete(key, revision=None)`` returns what the key held; :class:`NotFound`
    if absent, :class:`Conflict` if ``revision`` is given and differs.
    ``delete_prefix(prefix)`` removes a whole subtree in one revision.

TTL
    ``ttl`` is whole seconds (etcd leases); the key disappears ``ttl`` seconds
    after the write unless written again, and every write sets the TTL anew
    (``ttl=None``: the key never expires). An expiry is a DELETE event carrying
    the expired value as ``prev``, seen once by every watcher. A key whose TTL
    has run out is never returned by ``get``/``list``; on etcd its DELETE may
    come a moment later than the read, so a watcher can see a DELETE for a key
    its listing did not have: treat that as nothing to do.

Watch
    ``watch(prefix, since_revision)`` returns a :class:`Watch`, an iterator of
    non-empty ``list[Event]`` batches, blocking in between: every event under
    the prefix with ``mod_revision > since_revision``, in revision order, none
    lost, none repeated, expiries included. ``list`` then ``watch`` from the
    list's revision is the way to follow a subtree. Iteration raises
    :class:`Unavailable` when the store goes away (a silent etcd is probed and
    given up on within seconds), and :class:`Compacted` (a subclass) when the
    history from ``since_revision`` was compacted: re-list and watch again.
    After an Unavailable, watching again from ``Watch.revision`` loses nothing.
    ``Watch.close()`` (any thread) ends the iteration.

Errors
    All are :class:`DatastoreError`, a :class:`~pycni.spec.errors.CNIError`:
    Unavailable/Compacted/AlreadyExists/Conflict map to code 11 (retry),
    InvalidArgument to 7, NotFound to 999 (the caller should have handled it).
    Messages name the endpoint or file and what to do.

Limits (the same in every backend, so memory-tested code runs on etcd)
    Keys: non-empty Unicode without NUL. Values: at most ``MAX_VALUE_BYTES``
    (1 MiB) of UTF-8. TTL: 1 .. ``MAX_TTL`` seconds.
"""

from __future__ import annotations

from collections.abc import Sequence

from pycni.datastore.errors import (
    AlreadyExists,
    Compacted,
    Conflict,
    DatastoreError,
    InvalidArgument,
    NotFound,
    Unavailable,
)
from pycni.datastore.model import MAX_TTL, MAX_VALUE_BYTES, Event, EventType, KeyValue, Listing
from pycni.datastore.protocol import Datastore
from pycni.datastore.watch import Watch

__all__ = [
    "MAX_TTL",
    "MAX_VALUE_BYTES",
    "AlreadyExists",
    "Compacted",
    "Conflict",
    "Datastore",
    "DatastoreError",
    "Event",
    "EventType",
    "InvalidArgument",
    "KeyValue",
    "Listing",
    "NotFound",
    "Unavailable",
    "Watch",
    "open_datastore",
]


def open_datastore(
    endpoints: str | Sequence[str] | None = None,
    path: str | None = None,
    *,
    memory: bool = False,
    timeout: float = 5.0,
) -> Datastore:
    """etcd at ``endpoints`` (URLs, a list or comma-separated), or the sqlite file at ``path``, or memory.

    Exactly one must be chosen. Opening contacts nobody (an agent may start
    while etcd is still away); the sqlite file and its tables are created.
    """
    if isinstance(endpoints, str):
        urls = [url.strip() for url in endpoints.split(",") if url.strip()]
    else:
        urls = [url.strip() for url in endpoints or () if url.strip()]
    chosen = [name for name, given in (("etcd endpoints", urls), ("a sqlite path", path), ("memory", memory)) if given]
    if len(chosen) != 1:
        what = "none" if not chosen else " and ".join(chosen)
        raise InvalidArgument(
            f"choose one datastore: etcd endpoints (e.g. http://127.0.0.1:2379), a sqlite file path, "
            f"or memory; got {what}"
        )
    if urls:
        from pycni.datastore.etcd import EtcdDatastore  # imports requests: only when etcd is used

        return EtcdDatastore(urls, timeout=timeout)
    if path:
        from pycni.datastore.sqlite import SqliteDatastore

        return SqliteDatastore(path)
    from pycni.datastore.memory import MemoryDatastore

    return MemoryDatastore()
