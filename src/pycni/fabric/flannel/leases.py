"""Flannel's leases on the shared datastore: Flannel's keys and values, and nothing else.

:mod:`pycni.datastore` keeps the semantics (revisions, compare-and-set, TTLs,
watch) on etcd v3, an embedded sqlite file or memory; this layer is Flannel's
``pkg/subnet/etcd/registry.go`` on top of it, so a Flannel node and a pycni
node can share one etcd:

* the network config is the JSON at ``<prefix>/config`` (``get``; ``put`` for
  ``--net-config-path`` on the embedded store);
* a lease is ``<prefix>/subnets/<key>`` holding ``LeaseAttrs`` JSON, with a TTL
  (etcd deletes an expired lease, watchers see it removed) or without one (a
  reservation, which never expires);
* creating a lease is the datastore's ``create`` (compare-and-set: taken is
  ``False``); renewing is ``put`` with the TTL (on etcd the key keeps its own
  etcd lease, so a killed agent orphans none: :meth:`EtcdDatastore.put`);
* the lease watch is the datastore's watch of ``<prefix>/subnets/``: a PUT is
  ADDED, a DELETE (an expiry too) is REMOVED with the attributes that went away.

Errors are the datastore's: :class:`~pycni.datastore.Unavailable` (and its
subclass ``Compacted``) means keep the dataplane as it is, re-list and retry.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import suppress

from pycni.datastore import AlreadyExists, Datastore, NotFound, open_datastore
from pycni.datastore import EventType as Change
from pycni.fabric.flannel.model import (
    DEFAULT_PREFIX,
    ConfigError,
    EventType,
    Lease,
    LeaseAttrs,
    LeaseEvent,
    NetworkConfig,
    parse_key,
)

EXAMPLE_CONFIG = '{"Network": "10.5.0.0/16", "Backend": {"Type": "vxlan"}}'
# What a DELETE without its previous value decodes as: the key still names the subnet.
_NO_ATTRS = '{"PublicIP":""}'


class KeyLayout:
    """Flannel's keys under a prefix."""

    def __init__(self, prefix: str) -> None:
        # Flannel builds keys with Go's ``path.Join``: one leading slash, no trailing one.
        self.prefix = "/" + "/".join(part for part in prefix.split("/") if part)

    @property
    def config_key(self) -> str:
        return f"{self.prefix}/config"

    @property
    def subnets_prefix(self) -> str:
        return f"{self.prefix}/subnets/"

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


class LeaseStore(KeyLayout):
    """The network config and the subnet leases of one Flannel network (``prefix``) in a datastore."""

    def __init__(self, datastore: Datastore, prefix: str = DEFAULT_PREFIX) -> None:
        super().__init__(prefix)
        self.datastore = datastore

    @property
    def embedded(self) -> bool:
        """True unless the datastore is etcd: then the agent loads ``--net-config-path`` into it."""
        return not getattr(self.datastore, "endpoints", None)

    def _missing_config(self) -> ConfigError:
        endpoints = getattr(self.datastore, "endpoints", None)
        if endpoints:
            return ConfigError(
                f"no network config at {self.config_key} in etcd ({', '.join(endpoints)}); "
                f"write one, e.g.: etcdctl put {self.config_key} '{EXAMPLE_CONFIG}'"
            )
        where = getattr(self.datastore, "path", None) or "the in-memory datastore"
        return ConfigError(
            f"no network config for {self.prefix} in {where}; start the agent with "
            "--net-config-path FILE (a Flannel net-conf.json), which stores it there"
        )

    # -- the network config -----------------------------------------------------

    def get_network_config(self) -> str:
        """The raw JSON of the network config; ConfigError (saying how to write one) if there is none."""
        found = self.datastore.get(self.config_key)
        if found is None:
            raise self._missing_config()
        return found.value

    def set_network_config(self, json_text: str) -> None:
        """Store the network config (``--net-config-path``); validated first, so a bad file fails here."""
        NetworkConfig.from_json(json_text)
        self.datastore.put(self.config_key, json_text)

    # -- leases -------------------------------------------------------------------

    def list_leases(self) -> tuple[list[Lease], int]:
        """All leases and the store revision they were read at (watch from it to follow them)."""
        kvs, revision = self.datastore.list(self.subnets_prefix)
        leases = [self.decode_lease(kv.key, kv.value, kv.expires_at) for kv in kvs]
        return [lease for lease in leases if lease is not None], revision

    def create_lease(self, lease: Lease, ttl: int | None) -> bool:
        """Create ``lease`` if its key is free (``ttl`` seconds; None or 0: a reservation); False if taken."""
        try:
            self.datastore.create(self.lease_key(lease), lease.attrs.to_json(), ttl or None)
        except AlreadyExists:
            return False
        return True

    def update_lease(self, lease: Lease, ttl: int | None) -> None:
        """Write ``lease`` again with a fresh TTL (renewal; None or 0 makes it a reservation)."""
        self.datastore.put(self.lease_key(lease), lease.attrs.to_json(), ttl or None)

    def delete_lease(self, lease: Lease) -> None:
        """Remove ``lease``; one already gone is fine."""
        with suppress(NotFound):
            self.datastore.delete(self.lease_key(lease))

    def watch_leases(self, since_revision: int) -> Iterator[list[LeaseEvent]]:
        """Batches of lease events after ``since_revision``, blocking between them.

        Raises :class:`~pycni.datastore.Unavailable` when the store goes away
        (or ``Compacted``, a subclass, when the history is gone); the caller
        re-lists and watches again from the new revision.
        """
        with self.datastore.watch(self.subnets_prefix, since_revision) as watch:
            for batch in watch:
                events = []
                for event in batch:
                    if event.type is Change.PUT:
                        lease = self.decode_lease(event.key, event.kv.value, event.kv.expires_at)
                        kind = EventType.ADDED
                    else:
                        previous = event.prev.value if event.prev is not None else _NO_ATTRS
                        lease = self.decode_lease(event.key, previous)
                        kind = EventType.REMOVED
                    if lease is not None:
                        events.append(LeaseEvent(kind, lease))
                if events:
                    yield events

    def close(self) -> None:
        """Close the datastore; open watches end with Unavailable."""
        self.datastore.close()


def open_lease_store(endpoints: str | None, prefix: str, path: str | None) -> LeaseStore:
    """etcd when ``endpoints`` (comma-separated URLs) is given, else the sqlite file at ``path``.

    Neither contacts anything beyond opening the file, so an agent can start
    while etcd is still away and wait for it. A file an earlier pycni wrote
    (its own lease tables) is migrated into the datastore's tables once.
    """
    urls = [url.strip() for url in (endpoints or "").split(",") if url.strip()]
    if urls:
        return LeaseStore(open_datastore(urls), prefix)
    if path:
        from pycni.datastore.sqlite import SqliteDatastore
        from pycni.fabric.flannel.migrate import OLD_TABLES, migrate_lease_file

        datastore = SqliteDatastore(path, adopt=OLD_TABLES)  # a file of an earlier pycni is Flannel's to migrate
        try:
            if not datastore.read_only:  # (a read-only file cannot be migrated; its reads still work)
                migrate_lease_file(path, datastore)
        except BaseException:
            datastore.close()
            raise
        return LeaseStore(datastore, prefix)
    raise ConfigError("no lease store: give etcd endpoints or a sqlite file path")
