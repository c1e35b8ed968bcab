"""The datastore syncer: what the node agent needs of ``/calico/``, listed once and then followed by a watch.

Felix's syncer feeds its calculation graph from the datastore; this one keeps
a decoded cache of the keys the agent's calculation reads and hands out
:class:`ClusterState` snapshots of it:

* v3 resources: Nodes, IPPools, FelixConfigurations, BGPConfigurations, BGPPeers;
* IPAM: blocks (their affinity and the addresses borrowed from them), block
  affinities (host, block, state) and the IPAM config.

Everything else under ``/calico/`` (workload endpoints, handles, policy) is
dropped as it arrives, so a pod's ADD or DEL never wakes the calculation
unless it changed a block.

One prefix, one listing, one watch: the listing is a consistent snapshot at one
revision and the watch continues from exactly there. On
:class:`~pycni.datastore.Unavailable` (etcd away) the cache is kept (so is the
dataplane built from it) and the syncer re-lists with a growing back-off,
which also covers :class:`~pycni.datastore.Compacted` (the history is gone).
A value that does not decode is logged once and left out (a later good value
replaces it).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pycni.datastore import Compacted, Datastore, DatastoreError, Event, EventType, KeyValue, Unavailable, Watch
from pycni.fabric.calico.errors import CalicoError
from pycni.fabric.calico.ipam import (
    ATTR_NODE,
    IPAM_CONFIG_KEY,
    Address,
    AllocationBlock,
    BlockAffinity,
    IPAMConfig,
    Network,
    parse_affinity_key,
    parse_block_key,
)
from pycni.fabric.calico.model import IPPoolInfo, NodeInfo, Resource, from_json
from pycni.fabric.calico.resources import RESOURCES_PREFIX

log = logging.getLogger("pycni.fabric.calico.syncer")

PREFIX = "/calico/"
KINDS = {
    "nodes": "Node",
    "ippools": "IPPool",
    "felixconfigurations": "FelixConfiguration",
    "bgpconfigurations": "BGPConfiguration",
    "bgppeers": "BGPPeer",
}
MAX_BACKOFF = 5.0


@dataclass(frozen=True)
class BlockInfo:
    """An IPAM block as routing sees it: its affine host, and the addresses other nodes borrowed from it.

    ``borrowed`` holds ``(address, node)`` for each allocation whose ``node``
    attribute names a node other than the affine host (Calico's borrowed IPs,
    which need /32 routes to the borrower).
    """

    cidr: Network
    host: str
    borrowed: tuple[tuple[Address, str], ...] = ()

    @classmethod
    def from_block(cls, block: AllocationBlock) -> BlockInfo:
        host = block.host if (block.affinity or "").startswith("host:") else ""
        borrowed = []
        for address, attribute in block.in_use():
            node = (attribute.secondary or {}).get(ATTR_NODE, "")
            if node and node != host and attribute.released_at is None:
                borrowed.append((address, node))
        return cls(block.cidr, host, tuple(borrowed))


@dataclass(frozen=True)
class ClusterState:
    """One consistent view of what the agent reads, at ``revision``."""

    nodes: Mapping[str, NodeInfo] = field(default_factory=dict)
    pools: Mapping[str, IPPoolInfo] = field(default_factory=dict)
    blocks: Mapping[Network, BlockInfo] = field(default_factory=dict)
    affinities: Mapping[tuple[str, Network], str] = field(default_factory=dict)  # (host, block) -> state
    felix_configs: Mapping[str, Resource] = field(default_factory=dict)
    bgp_configs: Mapping[str, Resource] = field(default_factory=dict)
    bgp_peers: Mapping[str, Resource] = field(default_factory=dict)
    ipam_config: IPAMConfig = field(default_factory=IPAMConfig)
    revision: int = 0

    def confirmed_blocks(self, host: str) -> list[Network]:
        """The blocks ``host`` holds a confirmed affinity for (pending claims are not owned), sorted."""
        found = [
            block
            for (owner, block), state in self.affinities.items()
            if owner == host and BlockAffinity(state).confirmed
        ]
        return sorted(found, key=lambda n: (n.version, int(n.network_address), n.prefixlen))


class _Cache:
    """Decoded values by key; rebuilt from a listing, patched by events."""

    def __init__(self) -> None:
        self.values: dict[str, tuple[str, Any]] = {}  # key -> (what, decoded)
        self._bad: set[str] = set()

    def load(self, kvs: list[KeyValue]) -> None:
        self.values.clear()
        for kv in kvs:
            self.put(kv)

    def put(self, kv: KeyValue) -> bool:
        """Decode and keep ``kv`` if the agent reads it; whether the cache changed."""
        try:
            decoded = _decode(kv)
        except (CalicoError, ValueError, KeyError, TypeError) as exc:
            if kv.key not in self._bad:
                log.warning("ignoring %s: its value does not decode: %s", kv.key, exc)
                self._bad.add(kv.key)
            return self.values.pop(kv.key, None) is not None
        self._bad.discard(kv.key)
        if decoded is None:
            return False
        if self.values.get(kv.key) == decoded:
            return False
        self.values[kv.key] = decoded
        return True

    def delete(self, key: str) -> bool:
        self._bad.discard(key)
        return self.values.pop(key, None) is not None

    def state(self, revision: int) -> ClusterState:
        nodes: dict[str, NodeInfo] = {}
        pools: dict[str, IPPoolInfo] = {}
        blocks: dict[Network, BlockInfo] = {}
        affinities: dict[tuple[str, Network], str] = {}
        felix: dict[str, Resource] = {}
        bgp_configs: dict[str, Resource] = {}
        peers: dict[str, Resource] = {}
        ipam_config = IPAMConfig()
        for what, value in self.values.values():
            if what == "Node":
                nodes[value.name] = value
            elif what == "IPPool":
                pools[value.name] = value
            elif what == "block":
                blocks[value.cidr] = value
            elif what == "affinity":
                host, network, state = value
                affinities[(host, network)] = state
            elif what == "FelixConfiguration":
                felix[value.name] = value
            elif what == "BGPConfiguration":
                bgp_configs[value.name] = value
            elif what == "BGPPeer":
                peers[value.name] = value
            elif what == "ipam-config":
                ipam_config = value
        return ClusterState(nodes, pools, blocks, affinities, felix, bgp_configs, peers, ipam_config, revision)


def _decode(kv: KeyValue) -> tuple[str, Any] | None:
    key = kv.key
    if key.startswith(RESOURCES_PREFIX):
        plural = key[len(RESOURCES_PREFIX) :].split("/", 1)[0]
        kind = KINDS.get(plural)
        if kind is None:
            return None
        resource = from_json(kv.value, key)
        if kind == "Node":
            return ("Node", NodeInfo.from_resource(resource))
        if kind == "IPPool":
            return ("IPPool", IPPoolInfo.from_resource(resource))
        return (kind, resource)
    if key == IPAM_CONFIG_KEY:
        return ("ipam-config", IPAMConfig.from_json(kv.value))
    network = parse_block_key(key)
    if network is not None:
        return ("block", BlockInfo.from_block(AllocationBlock.from_json(kv.value)))
    affinity = parse_affinity_key(key)
    if affinity is not None:
        affinity_type, host, block = affinity
        if affinity_type != "host":
            return None
        value = json.loads(kv.value) if kv.value else {}
        if not isinstance(value, dict):
            raise ValueError("a block affinity must be a JSON object")
        return ("affinity", (host, block, str(value.get("state") or "")))
    return None


class Syncer:
    """Lists and watches ``/calico/`` in a thread; :meth:`snapshot` is the latest state once in sync.

    ``on_update`` is called (from the syncer's thread) after every change to
    the cache and after each (re-)listing; it should only wake the consumer.
    ``on_reconnect`` is called each time the watch (or the listing before it)
    failed and the syncer starts over: the agent's watch-reconnects metric.
    """

    def __init__(
        self,
        store: Datastore,
        on_update: Callable[[], None],
        prefix: str = PREFIX,
        on_reconnect: Callable[[], None] = lambda: None,
    ) -> None:
        self.store = store
        self.prefix = prefix
        self._on_update = on_update
        self._on_reconnect = on_reconnect
        self._cache = _Cache()
        self._lock = threading.Lock()
        self._state: ClusterState | None = None
        self._revision = 0
        self._watch: Watch | None = None
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.in_sync = False
        self.outages = 0

    # -- public ----------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="calico-syncer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        watch = self._watch
        if watch is not None:
            watch.close()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def snapshot(self) -> ClusterState | None:
        """The latest consistent state, or None before the first listing."""
        with self._lock:
            return self._state

    def resync_now(self) -> bool:
        """List once in the caller's thread (tests, start-up); False if the store is away."""
        try:
            self._list()
        except Unavailable:
            return False
        return True

    # -- the thread ------------------------------------------------------------

    def _list(self) -> None:
        kvs, revision = self.store.list(self.prefix)
        with self._lock:
            self._cache.load(kvs)
            self._revision = revision
            self._state = self._cache.state(revision)
        if not self.in_sync and self.outages:
            log.info("datastore is back: re-listed at revision %d", revision)
        self.in_sync = True
        self._on_update()

    def _run(self) -> None:
        delay = 0.1
        need_list = self._state is None
        while not self._stopping.is_set():
            try:
                if need_list:
                    self._list()
                    need_list = False
                delay = 0.1
                self._follow()
            except DatastoreError as exc:  # Unavailable, Compacted, or a store refusing the read
                self._on_reconnect()
                self._went_away(exc)
                need_list = True  # a fresh listing also covers a compacted history
                self._stopping.wait(delay)
                delay = min(delay * 2, MAX_BACKOFF)

    def _went_away(self, exc: DatastoreError) -> None:
        if isinstance(exc, Compacted):
            log.info("the datastore's history from revision %d is compacted; re-listing", exc.since_revision)
            return
        if self.in_sync or self.outages == 0:
            self.outages += 1
            log.warning("datastore unavailable (%s); the dataplane stays as it is, re-listing when it is back", exc)
        self.in_sync = False

    def _follow(self) -> None:
        watch = self.store.watch(self.prefix, self._revision)
        self._watch = watch
        try:
            if self._stopping.is_set():
                return
            for batch in watch:
                self._apply(batch, watch.revision)
                if self._stopping.is_set():
                    return
        finally:
            self._watch = None
            watch.close()

    def _apply(self, batch: list[Event], revision: int) -> None:
        changed = False
        with self._lock:
            for event in batch:
                if event.type is EventType.PUT:
                    changed |= self._cache.put(event.kv)
                else:
                    changed |= self._cache.delete(event.key)
            self._revision = revision
            if changed:
                self._state = self._cache.state(revision)
        if changed:
            self._on_update()


__all__ = ["PREFIX", "BlockInfo", "ClusterState", "Syncer"]
