"""One node's BGP plan, computed from Calico's resources as confd computes it (pure: no I/O).

:func:`plan` turns :class:`BGPInputs` (this node, every Node, the
BGPConfigurations, BGPPeers and IPPools, this node's block affinities and
borrowed addresses) into a :class:`BGPPlan`: the sessions BIRD must run and
what it advertises and programs. :mod:`pycni.fabric.calico.bird` renders it.

The rules are those of Calico v3.28's confd (``confd/pkg/backends/calico/
client.go`` ``updatePeersV1``/``nodeAsBGPPeers``/``nodesWithIPPortAndAS`` and
the ``bird.cfg``/``bird_aggr.cfg``/``bird_ipam.cfg`` templates), IPv4 only:

* **mesh**: with ``nodeToNodeMeshEnabled`` (default) a session ``Mesh_<ip>``
  to every other node with an IPv4 address, except route reflectors (nodes
  with ``routeReflectorClusterID``); a route reflector itself joins no mesh.
  The node with the lexicographically greater address (as strings, as the
  template's ``gt`` compares) is passive, so exactly one side connects.
* **explicit peers**: a BGPPeer without ``node``/``nodeSelector`` is global
  (``Global_<ip>``), with one it is node-specific (``Node_<ip>``); a
  ``peerSelector`` expands to the selected nodes' addresses (their AS, port
  and cluster ID); every BGPPeer also gets its reverse peering on the nodes
  it names (so both ends of a selector peering configure it); the first
  peering for a key wins, globals before node-specific ones. A peer on
  another port is ``..._port_<p>``. Sessions with the same AS are internal.
  ``rr client`` when this node is a route reflector and the peer (same AS)
  is not in its cluster.
* **advertised**: every *confirmed* block affinity of this node (legacy empty
  state counts as confirmed; ``pending``/``pendingDeletion`` do not) as a
  blackhole static that ``calico_aggr`` exports exactly (nothing beneath it),
  borrowed addresses as /32s, within pools without ``disableBGPExport``.
* **kernel programming** (:class:`KernelRoutes` per pool): BIRD installs the
  routes it learns for pools with no encapsulation, and for CrossSubnet pools
  only those whose BGP next hop is on this node's subnet; the node agent
  programs VXLAN/IPIP routes (Calico's ``programClusterRoutes`` split, where
  Felix owns tunnel routes). :func:`kernel_route_owner` tells the agent which
  side owns a remote block's route.

Not rendered (Calico features pycni does not carry): IPv6 peerings, BGP
passwords (Kubernetes secrets), BGPFilters, communities and prefix
advertisements, service address advertisement, ``localASNumber``.
"""

from __future__ import annotations

import enum
import hashlib
import ipaddress
import json
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from pycni.datastore import KeyValue
from pycni.fabric.calico.ipam import AFFINITY_HOST, STATE_CONFIRMED, parse_affinity_key
from pycni.fabric.calico.kinds import DEFAULT_AS_NUMBER, split_ip_port
from pycni.fabric.calico.model import IPPoolInfo, NodeInfo
from pycni.fabric.calico.resource import Resource
from pycni.policy.selector import SelectorError
from pycni.policy.selector import parse as parse_selector

log = logging.getLogger(__name__)

IPv4Network = ipaddress.IPv4Network
IPv4Address = ipaddress.IPv4Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

DEFAULT_BGP_PORT = 179
NODE_CONFIG_PREFIX = "node."
SOURCE_NODE_IP = "UseNodeIP"


class KernelRoutes(enum.Enum):
    """Which of a pool's BGP-learnt routes BIRD writes into the kernel."""

    ALL = "all"  # no encapsulation: BIRD programs every remote block of the pool
    SAME_SUBNET = "same-subnet"  # CrossSubnet: BIRD for next hops on this node's subnet, the agent's tunnel beyond
    NONE = "none"  # Always (VXLAN or IPIP): the node agent programs the tunnel routes


class SessionKind(enum.Enum):
    """The three kinds of sessions, named as Calico names BIRD's protocols."""

    MESH = "Mesh"
    GLOBAL = "Global"
    NODE = "Node"


@dataclass(frozen=True)
class Session:
    """One BGP session (one BIRD ``protocol bgp``)."""

    name: str
    kind: SessionKind
    peer_ip: IPv4Address
    peer_as: int
    port: int | None = None  # the peer's port when not BGP's 179 (or when given explicitly)
    source_address: IPv4Address | None = None
    passive: bool = False
    internal: bool = True  # same AS: exported with calico_export_to_bgp_peers(true)
    route_reflector_client: bool = False
    route_reflector_cluster_id: str = ""
    ttl_security: int = 0  # 0: "ttl security off; multihop;" on explicit peers
    keep_next_hop: bool = False
    restart_time: int | None = None  # graceful restart time, seconds
    allow_local_as: int = 0
    peer_node: str = ""  # the Node this session reaches, when it is a Calico node
    origin: str = ""  # where it came from (a v1-style key), for the rendered comment


@dataclass(frozen=True)
class Block:
    """One of this node's block affinities and whether it is advertised."""

    cidr: Network
    state: str  # "" (legacy: implicitly confirmed), confirmed, pending, pendingDeletion

    @property
    def confirmed(self) -> bool:
        return self.state in (STATE_CONFIRMED, "")


@dataclass(frozen=True)
class PoolRoutes:
    """What BIRD does with one pool's routes: export them to peers, program them into the kernel."""

    cidr: IPv4Network
    export: bool  # not disableBGPExport
    kernel: KernelRoutes


@dataclass(frozen=True)
class PeerRoute:
    """A static route to a peer through ``reachableBy`` (so the TCP session finds its way)."""

    peer: IPv4Network
    gateway: IPv4Address


@dataclass(frozen=True)
class BGPInputs:
    """Everything the plan depends on, as the node agent has it from the datastore.

    ``configs``: BGPConfiguration resources (``default`` and any
    ``node.<name>``); ``peers``: BGPPeer resources; ``blocks``: this node's
    IPv4 block affinities with their state (:func:`block_states` reads them
    from the affinity keys); ``borrowed``: addresses this node's workloads
    hold in blocks affine to other nodes; ``router_id``: ``CALICO_ROUTER_ID``
    (an IPv4 address, ``hash``, or empty for the node's address).
    """

    node: str
    nodes: Sequence[NodeInfo]
    configs: Sequence[Resource] = ()
    peers: Sequence[Resource] = ()
    pools: Sequence[IPPoolInfo] = ()
    blocks: Mapping[Network, str] = field(default_factory=dict)
    borrowed: Sequence[ipaddress.IPv4Address | ipaddress.IPv6Address] = ()
    router_id: str = ""


@dataclass(frozen=True)
class BGPPlan:
    """What one node's BIRD does; ``address`` None means IPv4 BGP is off on this node (no sessions)."""

    node: str
    router_id: IPv4Address | None
    address: ipaddress.IPv4Interface | None  # the node's BGP address and its subnet
    local_as: int
    listen_address: IPv4Address | None = None  # bindMode NodeIP
    listen_port: int | None = None
    log_level: str = "info"  # debug | info | none (BIRD's debug all | debug {states} | nothing)
    ignored_interfaces: tuple[str, ...] = ()
    route_reflector_cluster_id: str = ""
    mesh: bool = True  # nodeToNodeMeshEnabled (a route reflector ignores it)
    sessions: tuple[Session, ...] = ()
    blocks: tuple[Block, ...] = ()
    borrowed: tuple[IPv4Network, ...] = ()
    pools: tuple[PoolRoutes, ...] = ()
    peer_routes: tuple[PeerRoute, ...] = ()

    @property
    def advertised_blocks(self) -> tuple[Network, ...]:
        return tuple(b.cidr for b in self.blocks if b.confirmed)

    def session(self, name: str) -> Session | None:
        return next((s for s in self.sessions if s.name == name), None)


# -- reading helpers (pure) ------------------------------------------------------------------


def block_states(kvs: Iterable[KeyValue], node: str, version: int = 4) -> dict[Network, str]:
    """``/calico/ipam/v2/host/<node>/ipv<v>/block/<cidr>`` keys (their values) as {block: state}."""
    states: dict[Network, str] = {}
    for kv in kvs:
        parsed = parse_affinity_key(kv.key)
        if parsed is None or parsed[:2] != (AFFINITY_HOST, node) or parsed[2].version != version:
            continue
        try:
            data = json.loads(kv.value) if kv.value else {}
        except ValueError:
            data = {}
        state = data.get("state", "") if isinstance(data, dict) else ""
        states[parsed[2]] = str(state or "")
    return states


_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def duration_seconds(text: str) -> int:
    """A Go duration (``120s``, ``2m``, ``1m30s``) as whole seconds, rounded as Calico's ``math.Round``."""
    text = text.strip()
    sign = -1 if text.startswith("-") else 1
    total = sum(float(n) * _UNITS[u] for n, u in _DURATION_PART.findall(text.lstrip("+-")))
    return sign * int(total + 0.5)


def hash_router_id(node: str) -> IPv4Address:
    """confd's ``hashToIPv4``: the first 4 bytes of sha256(node), the first below 224."""
    digest = hashlib.sha256(node.encode()).digest()
    first = digest[0] - 32 if digest[0] > 223 else digest[0]
    return IPv4Address(bytes([first, *digest[1:4]]))


def protocol_name(kind: SessionKind, ip: IPv4Address, port: int | None = None) -> str:
    """``Mesh_10_0_0_2``, ``Node_10_0_0_3_port_500``: the names calicoctl node status parses."""
    name = f"{kind.value}_{str(ip).replace('.', '_')}"
    return f"{name}_port_{port}" if port else name


def kernel_route_owner(pool: IPPoolInfo, local: ipaddress.IPv4Interface, next_hop: IPv4Address) -> str:
    """``"bird"`` or ``"agent"``: who writes the kernel route to a remote block of ``pool`` via ``next_hop``.

    The node agent asks this before programming a remote block's route, so it
    and BIRD never both program one (see :class:`KernelRoutes`).
    """
    mode = pool_kernel_routes(pool)
    if mode is KernelRoutes.ALL or (mode is KernelRoutes.SAME_SUBNET and next_hop in local.network):
        return "bird"
    return "agent"


def pool_kernel_routes(pool: IPPoolInfo) -> KernelRoutes:
    modes = {pool.vxlan_mode, pool.ipip_mode}
    if "Always" in modes:
        return KernelRoutes.NONE
    if "CrossSubnet" in modes:
        return KernelRoutes.SAME_SUBNET
    return KernelRoutes.ALL


# -- the plan ----------------------------------------------------------------------------------


@dataclass
class _PeerRecord:
    """confd's v1 ``bgpPeer`` value (``client.go``): what the template reads for one explicit peering."""

    ip: IPv4Address
    as_num: int
    rr_cluster_id: str = ""
    source_addr: str = SOURCE_NODE_IP
    port: int = 0
    keep_next_hop: bool = False
    restart_time: int | None = None
    calico_node: bool = False
    num_allow_local_as: int = 0
    ttl_security: int = 0
    reachable_by: IPv4Address | None = None


class _Cluster:
    """The cluster as confd's caches see it: node labels, addresses, AS numbers, listen ports."""

    def __init__(self, inputs: BGPInputs) -> None:
        self.nodes = {n.name: n for n in sorted(inputs.nodes, key=lambda n: n.name)}
        configs = {c.name: c.spec for c in inputs.configs}
        default = configs.get("default", {})
        self.global_as: int = default.get("asNumber") or DEFAULT_AS_NUMBER
        self.global_port: int = default.get("listenPort") or 0
        self.mesh: bool = default.get("nodeToNodeMeshEnabled", True) is not False
        self.bind_mode: str = default.get("bindMode") or ""
        self.ignored: tuple[str, ...] = tuple(default.get("ignoredInterfaces") or ())
        restart = default.get("nodeMeshMaxRestartTime")
        self.mesh_restart: int | None = duration_seconds(restart) if restart else None
        self.node_ports: dict[str, int] = {}
        self.node_log: dict[str, str] = {}
        for name, spec in configs.items():
            if name.startswith(NODE_CONFIG_PREFIX):
                node = name[len(NODE_CONFIG_PREFIX) :]
                if spec.get("listenPort"):
                    self.node_ports[node] = spec["listenPort"]
                if spec.get("logSeverityScreen"):
                    self.node_log[node] = spec["logSeverityScreen"]
        self.global_log: str = default.get("logSeverityScreen") or ""
        self.node_ips = {str(n.ipv4_address.ip) for n in self.nodes.values() if n.ipv4_address} | {
            str(n.ipv6_address.ip) for n in self.nodes.values() if n.ipv6_address
        }

    def as_of(self, node: NodeInfo) -> int:
        return node.as_number or self.global_as

    def port_of(self, name: str) -> int:
        return self.node_ports.get(name) or self.global_port

    def matching(self, selector: str) -> list[str]:
        try:
            parsed = parse_selector(selector)
        except SelectorError as exc:
            log.error("BGPPeer selector %r does not parse (%s): it selects no node", selector, exc)
            return []
        return [name for name, node in self.nodes.items() if parsed.matches(node.labels)]

    def nodes_with_ip(self, ip: str, as_number: int, port: int) -> list[str]:
        """nodesWithIPPortAndAS, with its handling of ports kept."""
        wanted_as = as_number or self.global_as
        found = []
        for name, node in self.nodes.items():
            addresses = {str(a.ip) for a in (node.ipv4_address, node.ipv6_address) if a}
            if ip not in addresses or self.as_of(node) != wanted_as:
                continue
            if port:
                node_port = self.node_ports.get(name)
                if node_port is not None and port != node_port:
                    continue
                if self.global_port and self.global_port != port:  # (Calico checks this even for a node's own port)
                    continue
            found.append(name)
        return found

    def node_as_peer(self, name: str, spec: Mapping[str, Any]) -> _PeerRecord | None:
        """nodeAsBGPPeers for IPv4: a Calico node as the far end of a selector or reverse peering."""
        node = self.nodes.get(name)
        if node is None or node.ipv4_address is None:
            return None
        return _PeerRecord(
            ip=node.ipv4_address.ip,
            as_num=self.as_of(node),
            rr_cluster_id=node.route_reflector_cluster_id,
            port=self.port_of(name),
            ttl_security=spec.get("ttlSecurity") or 0,
            reachable_by=_v4(spec.get("reachableBy")),
        )


def _v4(text: Any) -> IPv4Address | None:
    if not text:
        return None
    try:
        return IPv4Address(str(text))
    except ValueError:
        return None


def _peer_from_ip(cluster: _Cluster, spec: Mapping[str, Any]) -> _PeerRecord | None:
    parsed = split_ip_port(str(spec.get("peerIP") or ""))
    if parsed is None:
        log.error("BGPPeer peerIP %r is not an address: skipped", spec.get("peerIP"))
        return None
    host, port = parsed[0], parsed[1] or 0
    ip = _v4(host)
    if ip is None:
        return None  # an IPv6 peer: not in the IPv4 plan
    as_number = spec.get("asNumber") or 0
    if not port:
        names = cluster.nodes_with_ip(host, as_number, 0)
        if names:
            port = cluster.node_ports.get(names[0]) or cluster.global_port
    reachable = _v4(spec.get("reachableBy"))
    if spec.get("reachableBy") and reachable is None:
        log.error("BGPPeer reachableBy %r is not an IPv4 address like peerIP: skipped", spec.get("reachableBy"))
        return None
    return _PeerRecord(
        ip=ip,
        as_num=as_number,
        port=port,
        keep_next_hop=bool(spec.get("keepOriginalNextHop")),
        calico_node=host in cluster.node_ips,
        num_allow_local_as=spec.get("numAllowedLocalASNumbers") or 0,
        ttl_security=spec.get("ttlSecurity") or 0,
        reachable_by=reachable,
    )


def _finish(peer: _PeerRecord, spec: Mapping[str, Any]) -> _PeerRecord:
    """setPeerConfigFieldsFromV3Resource: source address (default UseNodeIP) and restart time."""
    peer.source_addr = spec.get("sourceAddress") or SOURCE_NODE_IP
    if spec.get("maxRestartTime"):
        peer.restart_time = duration_seconds(spec["maxRestartTime"])
    return peer


def _key_part(ip: IPv4Address, port: int) -> str:
    """combineIPAndPort: the port is part of the key unless it is 0 or 179."""
    return str(ip) if port in (0, DEFAULT_BGP_PORT) else f"{ip}-{port}"


def _global_key(peer: _PeerRecord) -> str:
    return f"/calico/bgp/v1/global/peer_v4/{_key_part(peer.ip, peer.port)}"


def _node_key(node: str, peer: _PeerRecord) -> str:
    return f"/calico/bgp/v1/host/{node}/peer_v4/{_key_part(peer.ip, peer.port)}"


class _Peerings:
    """updatePeersV1: every explicit peering of the cluster by its v1 key; the first emitted for a key wins."""

    def __init__(self, cluster: _Cluster, peers: Sequence[Resource]) -> None:
        self.cluster = cluster
        self.emitted: dict[str, _PeerRecord] = {}
        ordered = sorted(peers, key=lambda r: r.name)
        for global_pass in (True, False):  # globals first, so a node-specific duplicate of one is dropped
            for resource in ordered:
                spec = resource.spec
                if global_pass == (not spec.get("nodeSelector") and not spec.get("node")):
                    self._forward(spec, global_pass)
        for resource in ordered:
            self._reverse(resource.spec)

    def _emit(self, key: str, peer: _PeerRecord, global_key: str | None = None) -> None:
        if key not in self.emitted and (global_key is None or global_key not in self.emitted):
            self.emitted[key] = peer

    def _local_nodes(self, spec: Mapping[str, Any], default: Sequence[str]) -> list[str]:
        if spec.get("nodeSelector"):
            return self.cluster.matching(spec["nodeSelector"])
        if spec.get("node"):
            return [spec["node"]]
        return list(default)

    def _forward(self, spec: Mapping[str, Any], global_pass: bool) -> None:
        records: list[_PeerRecord] = []
        if spec.get("peerSelector"):
            for name in self.cluster.matching(spec["peerSelector"]):
                record = self.cluster.node_as_peer(name, spec)
                if record is not None:
                    records.append(record)
        else:
            record = _peer_from_ip(self.cluster, spec)
            if record is not None:
                records.append(record)
        local_nodes = self._local_nodes(spec, ())
        for record in records:
            _finish(record, spec)
            if global_pass:
                self._emit(_global_key(record), record)
            for local in local_nodes:
                self._emit(_node_key(local, record), record, _global_key(record))

    def _reverse(self, spec: Mapping[str, Any]) -> None:
        """The far ends of a BGPPeer get a node-specific peering back to the nodes it names."""
        if spec.get("peerSelector"):
            far_ends = self.cluster.matching(spec["peerSelector"])
        else:
            parsed = split_ip_port(str(spec.get("peerIP") or ""))
            if parsed is None or _v4(parsed[0]) is None:
                return
            far_ends = self.cluster.nodes_with_ip(parsed[0], spec.get("asNumber") or 0, parsed[1] or 0)
        if not far_ends:
            return
        for name in self._local_nodes(spec, list(self.cluster.nodes)):
            record = self.cluster.node_as_peer(name, spec)
            if record is None:
                continue
            _finish(record, spec)
            for far in far_ends:
                self._emit(_node_key(far, record), record, _global_key(record))


def _log_level(cluster: _Cluster, node: str) -> str:
    """confd's loglevel key: Debug -> debug, Info -> info, anything else -> none; unset -> info."""
    severity = cluster.node_log.get(node) or cluster.global_log
    if not severity:
        return "info"
    lowered = severity.lower()
    return lowered if lowered in ("debug", "info") else "none"


def _router_id(inputs: BGPInputs, address: ipaddress.IPv4Interface | None) -> IPv4Address | None:
    if inputs.router_id == "hash":
        return hash_router_id(inputs.node)
    if inputs.router_id:
        return IPv4Address(inputs.router_id)
    return address.ip if address else None


def plan(inputs: BGPInputs) -> BGPPlan:
    """The sessions, advertisements and kernel programming of ``inputs.node`` (see the module docstring)."""
    cluster = _Cluster(inputs)
    me = cluster.nodes.get(inputs.node)
    address = me.ipv4_address if me else None
    local_as = cluster.as_of(me) if me else cluster.global_as
    cluster_id = me.route_reflector_cluster_id if me else ""
    blocks = tuple(
        Block(cidr, state)
        for cidr, state in sorted(inputs.blocks.items(), key=lambda item: _cidr_key(item[0]))
        if cidr.version == 4
    )
    pools = tuple(
        PoolRoutes(p.cidr, not p.disable_bgp_export, pool_kernel_routes(p))
        for p in sorted(inputs.pools, key=lambda p: _cidr_key(p.cidr))
        if isinstance(p.cidr, IPv4Network)
    )
    borrowed = tuple(
        IPv4Network(a) for a in sorted({a for a in inputs.borrowed if isinstance(a, ipaddress.IPv4Address)})
    )
    base = BGPPlan(
        node=inputs.node,
        router_id=_router_id(inputs, address),
        address=address,
        local_as=local_as,
        log_level=_log_level(cluster, inputs.node),
        ignored_interfaces=cluster.ignored,
        route_reflector_cluster_id=cluster_id,
        mesh=cluster.mesh,
        blocks=blocks,
        borrowed=borrowed,
        pools=pools,
    )
    if address is None:
        return base
    my_ip = address.ip
    port = cluster.port_of(inputs.node)
    sessions: list[Session] = []
    if not cluster_id and cluster.mesh:
        for name, node in cluster.nodes.items():
            if node.ipv4_address is None or node.ipv4_address.ip == my_ip or node.route_reflector_cluster_id:
                continue
            peer_ip = node.ipv4_address.ip
            sessions.append(
                Session(
                    name=protocol_name(SessionKind.MESH, peer_ip),
                    kind=SessionKind.MESH,
                    peer_ip=peer_ip,
                    peer_as=cluster.as_of(node),
                    port=cluster.port_of(name) or None,
                    source_address=my_ip,
                    passive=str(peer_ip) > str(my_ip),
                    internal=True,
                    restart_time=cluster.mesh_restart,
                    peer_node=name,
                    origin=f"/bgp/v1/host/{name}/ip_addr_v4",
                )
            )
    peerings = _Peerings(cluster, inputs.peers).emitted
    peer_routes: list[PeerRoute] = []
    by_ip = {str(n.ipv4_address.ip): name for name, n in cluster.nodes.items() if n.ipv4_address}
    sections = (
        ("/calico/bgp/v1/global/peer_v4/", SessionKind.GLOBAL),
        (f"/calico/bgp/v1/host/{inputs.node}/peer_v4/", SessionKind.NODE),
    )
    for prefix, kind in sections:
        for key in sorted(k for k in peerings if k.startswith(prefix)):
            record = peerings[key]
            if record.reachable_by is not None:
                peer_routes.append(PeerRoute(IPv4Network(record.ip), record.reachable_by))
            if record.ip == my_ip:
                continue
            internal = record.as_num == local_as
            sessions.append(
                Session(
                    name=protocol_name(kind, record.ip, record.port or None),
                    kind=kind,
                    peer_ip=record.ip,
                    peer_as=record.as_num,
                    port=record.port or None,
                    source_address=my_ip if record.source_addr == SOURCE_NODE_IP else None,
                    passive=kind is SessionKind.GLOBAL and record.calico_node and str(record.ip) > str(my_ip),
                    internal=internal,
                    route_reflector_client=internal and bool(cluster_id) and record.rr_cluster_id != cluster_id,
                    route_reflector_cluster_id=cluster_id,
                    ttl_security=record.ttl_security,
                    keep_next_hop=not internal and record.keep_next_hop,
                    restart_time=record.restart_time,
                    allow_local_as=record.num_allow_local_as,
                    peer_node=by_ip.get(str(record.ip), ""),
                    origin=key[len("/calico") :],
                )
            )
    return replace(
        base,
        listen_address=my_ip if cluster.bind_mode == "NodeIP" else None,
        listen_port=port or None,
        sessions=tuple(sessions),
        peer_routes=tuple(peer_routes),
    )


def _cidr_key(cidr: Network) -> str:
    """The order of confd's ``ls`` over ``<net>-<len>`` keys (strings)."""
    return f"{cidr.network_address}-{cidr.prefixlen}"
