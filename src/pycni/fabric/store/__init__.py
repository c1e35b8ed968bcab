"""Where leases live. Two interchangeable stores with one contract (:class:`Store`):

* :mod:`pycni.fabric.store.etcd` — etcd v3, Flannel's key layout, for many nodes;
* :mod:`pycni.fabric.store.sqlite` — an embedded file with the same semantics, for one machine.

Semantics both keep (Flannel's ``pkg/subnet/etcd``):

* the network config is the JSON at ``<prefix>/config``;
* a lease is ``<prefix>/subnets/<key>`` holding ``LeaseAttrs`` JSON, with a TTL
  (an expired lease disappears and watchers see it removed); a lease with no TTL
  is a reservation and never expires;
* creating a lease is compare-and-set: it fails if the key exists;
* every change has a revision; ``watch`` yields the changes after a revision.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from pycni.fabric.model import Lease, LeaseAttrs, LeaseEvent, parse_key
from pycni.spec.errors import CNIError, ErrorCode


class StoreUnavailable(CNIError):
    """The store cannot be reached right now; callers keep the dataplane and retry."""

    def __init__(self, message: str) -> None:
        super().__init__(ErrorCode.TRY_AGAIN_LATER, message)


class KeyLayout:
    """Flannel's keys under a prefix, the same in both stores."""

    def __init__(self, prefix: str) -> None:
        # Flannel builds keys with Go's ``path.Join``: one leading slash, no trailing one.
        self.prefix = "/" + "/".join(part for part in prefix.split("/") if part)

    @property
    def config_key(self) -> str:
        return f"{self.prefix}/config"

    @property
    def subnets_prefix(self) -> str:
        return f"{self.prefix}/subnets/"

    @property
    def subnets_end(self) -> str:
        """The first key after every lease key: the prefix's last byte + 1 (etcd's range end)."""
        prefix = self.subnets_prefix
        return prefix[:-1] + chr(ord(prefix[-1]) + 1)

    def lease_key(self, lease: Lease) -> str:
        return self.subnets_prefix + lease.key

    def decode_lease(self, key: str, value: str, expiration: float | None = None) -> Lease | None:
        """The lease a key and its JSON value hold; None for a foreign key or a value Flannel would skip too."""
        if not key.startswith(self.subnets_prefix):
            return None
        subnets = parse_key(key[len(self.subnets_prefix) :])
        if subnets is None:
            return None
        try:
            attrs = LeaseAttrs.from_json(value)
        except (ValueError, AttributeError):
            return None
        return Lease(subnets[0], attrs, subnets[1], expiration)


class Store(Protocol):
    def get_network_config(self) -> str:
        """The raw JSON of the network config (raises :class:`StoreUnavailable` or a CNIError if absent)."""
        ...

    def list_leases(self) -> tuple[list[Lease], int]:
        """All leases and the store revision they were read at."""
        ...

    def create_lease(self, lease: Lease, ttl: int | None) -> bool:
        """Create ``lease`` if its key is free (``ttl`` seconds, or None for a reservation); False if taken."""
        ...

    def update_lease(self, lease: Lease, ttl: int | None) -> None:
        """Write ``lease`` again with a fresh TTL (renewal)."""
        ...

    def delete_lease(self, lease: Lease) -> None: ...

    def watch_leases(self, since_revision: int) -> Iterator[list[LeaseEvent]]:
        """Batches of lease events after ``since_revision``, blocking between them.

        Raises :class:`StoreUnavailable` when the store goes away; the caller
        re-lists and watches again from the new revision.
        """
        ...

    def close(self) -> None: ...


def open_store(endpoints: str | None, prefix: str, path: str | None) -> Store:
    """etcd when ``endpoints`` (comma-separated URLs) is given, else the sqlite file at ``path``.

    Neither store contacts anything here beyond opening the file, so an agent
    can start while etcd is still away and wait for it.
    """
    urls = [url.strip() for url in (endpoints or "").split(",") if url.strip()]
    if urls:
        from pycni.fabric.store.etcd import EtcdStore  # imports requests: only when etcd is used

        return EtcdStore(urls, prefix)
    if path:
        from pycni.fabric.store.sqlite import SqliteStore

        return SqliteStore(path, prefix)
    raise CNIError(ErrorCode.INVALID_NETWORK_CONFIG, "no lease store: give etcd endpoints or a sqlite file path")
