"""The datastore's data: a key's value with its revisions, and the events a watch yields.

Field names and meanings are etcd v3's (``mvccpb.KeyValue``, ``mvccpb.Event``),
so code written against the in-memory store reads the same on etcd.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import TypeAlias

# Largest value (UTF-8 bytes) any backend accepts: below etcd's default request limit
# (--max-request-bytes 1.5 MiB), so what works on the memory store also works on etcd.
MAX_VALUE_BYTES = 1024 * 1024
# etcd's MaxLeaseTTL (lease/lessor.go): a longer TTL is refused there, so everywhere.
MAX_TTL = 9_000_000_000


@dataclass(frozen=True)
class KeyValue:
    """One key as the store holds it.

    ``create_revision``: the revision that created the key (since it last did not exist);
    ``mod_revision``: the revision of its last write, the token for compare-and-set
    (Calico's ``resourceVersion`` is this as a decimal string);
    ``version``: writes since creation (1 after create, 0 for a deleted key);
    ``lease``: etcd's lease ID when the key has a TTL there (0: none, or not etcd);
    ``expires_at``: wall-clock seconds when a key with a TTL disappears, None if it never
    does (or, for the previous value carried by an event, when not looked up).
    """

    key: str
    value: str
    create_revision: int
    mod_revision: int
    version: int
    lease: int = 0
    expires_at: float | None = None

    @property
    def has_ttl(self) -> bool:
        return self.lease != 0 or self.expires_at is not None


class EventType(Enum):
    PUT = "PUT"
    DELETE = "DELETE"


@dataclass(frozen=True)
class Event:
    """A change seen by a watch.

    For a PUT, ``kv`` is the key as written. For a DELETE (also a TTL expiry),
    ``kv`` is etcd's tombstone: the key, an empty value, ``mod_revision`` = the
    deletion's revision, the other counters 0; ``prev`` is the value that went away.
    ``prev`` is the key's previous value where there was one.
    """

    type: EventType
    kv: KeyValue
    prev: KeyValue | None = None

    @property
    def revision(self) -> int:
        return self.kv.mod_revision

    @property
    def key(self) -> str:
        return self.kv.key


def tombstone(key: str, revision: int) -> KeyValue:
    """The ``kv`` of a DELETE event, as etcd reports it."""
    return KeyValue(key, "", 0, revision, 0)


# ``list()`` answers: the keys sorted by key, and the revision they were read at.
Listing: TypeAlias = tuple[list[KeyValue], int]
