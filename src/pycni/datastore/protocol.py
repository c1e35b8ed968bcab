"""The contract every backend keeps (see the package docstring for the semantics in full)."""

from __future__ import annotations

from typing import Protocol

from pycni.datastore.model import KeyValue, Listing
from pycni.datastore.watch import Watch


class Datastore(Protocol):
    """A key-value store with one global revision, compare-and-set, TTLs and watch."""

    def get(self, key: str) -> KeyValue | None:
        """The key's current value, or None if it does not exist (or its TTL ran out)."""
        ...

    def list(self, prefix: str) -> Listing:
        """Every key starting with ``prefix``, sorted by key, and the revision they were read at."""
        ...

    def revision(self) -> int:
        """The store's current revision (what ``list`` would return now), to watch from "now"."""
        ...

    def create(self, key: str, value: str, ttl: int | None = None) -> KeyValue:
        """Write ``key`` only if it does not exist; raises ``AlreadyExists`` (with the holder) if it does."""
        ...

    def update(self, key: str, value: str, revision: int, ttl: int | None = None) -> KeyValue:
        """Write ``key`` only if its mod_revision is ``revision``; ``Conflict`` if not, ``NotFound`` if absent.

        The TTL is replaced too: ``ttl=None`` makes the key permanent.
        """
        ...

    def put(self, key: str, value: str, ttl: int | None = None) -> KeyValue:
        """Write ``key`` whatever it holds (created if absent)."""
        ...

    def delete(self, key: str, revision: int | None = None) -> KeyValue:
        """Remove ``key`` and return what it held; ``NotFound`` if absent, ``Conflict`` if ``revision`` differs."""
        ...

    def delete_prefix(self, prefix: str) -> int:
        """Remove every key under ``prefix`` (in one revision); how many there were. For tooling and resets."""
        ...

    def watch(self, prefix: str, since_revision: int) -> Watch:
        """Events under ``prefix`` with mod_revision > ``since_revision``, in order, in blocking batches."""
        ...

    def compact(self, revision: int) -> None:
        """Forget the history before ``revision``: a later watch from further back raises ``Compacted``."""
        ...

    def close(self) -> None:
        """Release connections; open watches end with ``Unavailable``; further calls raise it."""
        ...
