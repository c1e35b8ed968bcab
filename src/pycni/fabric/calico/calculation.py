"""The agent's calculation: cluster state in, this node's desired dataplane out. Pure: no I/O, no clock.

What Felix's calculation graph (L3RouteResolver, VXLANResolver,
EncapsulationResolver) and its managers decide, for one node:

* a **blackhole** for each block this node holds a confirmed affinity for, so
  an unused address of its own block is dropped, not sent to the default route;
* per remote block (the block's ``affinity`` names another known node) one
  route, by the block's pool:

  - ``vxlanMode: Always``, or ``CrossSubnet`` with the peer on another subnet:
    ``<block> via <peer's VXLAN tunnel IP> dev vxlan.calico onlink``;
  - ``ipipMode: Always``, or ``CrossSubnet`` across subnets:
    ``<block> via <peer's IP> dev tunl0 onlink``;
  - otherwise, with the peer on this node's subnet and no BGP backend (so
    nobody else would route it): ``<block> via <peer's IP> dev <parent>``, the
    no-encap route Felix programs in VXLAN-only mode; with ``bird`` BIRD learns
    these from BGP and the agent leaves them to it;

  "Same subnet" is Felix's test: the peer's IP inside the prefix of this
  node's ``spec.bgp.ipv4Address``;
* a ``/32`` the same way for each address another node **borrowed** from a
  block (an allocation whose ``node`` attribute is not the block's host),
  also on the block's own node, where it is longer than the blackhole;
* the **vxlan.calico** device (VNI 4096, port 4789, this node's tunnel
  address, MAC from the Node or Felix's default) when a VXLAN pool exists and
  the node has its tunnel address, and per remote VTEP one neighbour (tunnel
  IP → MAC) and one FDB entry (MAC → node IP);
* **tunl0** when an IPIP pool exists;
* the **natOutgoing** sets: every IPv4 pool, and those with ``natOutgoing``;
* the **pod MTU** (Felix's ``determinePodMTU``): the host MTU less the
  largest overhead of the encapsulations in use (VXLAN 50, IPIP 20), or the
  configured ``vxlanMTU``/``ipipMTU``.

:func:`calculate` also says which tunnel addresses the node needs
(:class:`TunnelNeeds`: a VXLAN or IPIP pool selects it), which the agent
obtains from IPAM and publishes in its Node; they come back through the
syncer and the next calculation uses them.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pycni.dataplane import Route, RouteType
from pycni.fabric.calico.ipam import Network
from pycni.fabric.calico.model import FelixSettings, IPPoolInfo, NodeInfo
from pycni.fabric.calico.syncer import ClusterState

VXLAN_DEVICE = "vxlan.calico"
IPIP_DEVICE = "tunl0"
VXLAN_OVERHEAD = 50  # outer Ethernet 14 + IPv4 20 + UDP 8 + VXLAN 8 (int_dataplane.go)
IPIP_OVERHEAD = 20
GROUP_TUNNEL = "tunnel"
GROUP_NOENCAP = "noencap"
GROUP_BLACKHOLE = "blackhole"
# A key wanted by two groups goes to the earlier: the block object (a remote node's) beats a stale local affinity.
GROUP_ORDER = (GROUP_TUNNEL, GROUP_NOENCAP, GROUP_BLACKHOLE)
GROUPS = GROUP_ORDER
DEFAULT_HOST_MTU = 1500


@dataclass(frozen=True)
class LocalNode:
    """Who the calculation is for: the node's name, its routing backend, the interface of its IP."""

    name: str
    backend: str = "vxlan"
    parent: str = "eth0"


def felix_settings(state: ClusterState, nodename: str, env: Mapping[str, Any] | None = None) -> FelixSettings:
    """The FelixConfiguration values in force on ``nodename``: ``default``, then ``node.<name>``, then ``FELIX_*``."""
    return FelixSettings.from_resources(
        state.felix_configs.get("default"), state.felix_configs.get(f"node.{nodename}"), env=env
    )


@dataclass(frozen=True)
class VxlanDevice:
    """vxlan.calico as it should be."""

    vni: int
    port: int
    local: ipaddress.IPv4Address
    parent: str
    mac: str
    address: ipaddress.IPv4Address
    mtu: int
    name: str = VXLAN_DEVICE


@dataclass(frozen=True)
class IpipDevice:
    """tunl0 as it should be (its address may not be assigned yet)."""

    address: ipaddress.IPv4Address | None
    mtu: int
    name: str = IPIP_DEVICE


@dataclass(frozen=True)
class TunnelNeeds:
    """Which tunnel addresses this node needs from IPAM (an enabled pool of that kind selects it)."""

    vxlan: bool = False
    ipip: bool = False


@dataclass(frozen=True)
class Desired:
    """This node's dataplane as it should be."""

    routes: Mapping[str, tuple[Route, ...]] = field(default_factory=dict)  # group -> routes
    vxlan: VxlanDevice | None = None
    vxlan_in_use: bool = False  # some pool uses VXLAN: keep an existing device even while ``vxlan`` waits
    ipip: IpipDevice | None = None
    neighbours: Mapping[ipaddress.IPv4Address, str] = field(default_factory=dict)
    fdb: Mapping[str, ipaddress.IPv4Address] = field(default_factory=dict)
    nat_pools: tuple[ipaddress.IPv4Network, ...] = ()
    nat_masq: tuple[ipaddress.IPv4Network, ...] = ()
    pod_mtu: int = DEFAULT_HOST_MTU
    needs: TunnelNeeds = field(default_factory=TunnelNeeds)
    problems: tuple[str, ...] = ()
    owned: tuple[Network, ...] = ()  # every block and affine block: where this agent's routes may be (none elsewhere)

    def all_routes(self) -> list[Route]:
        return [route for group in GROUP_ORDER for route in self.routes.get(group, ())]


def default_vtep_mac(nodename: str) -> str:
    """Felix's VTEP MAC for a node whose Node carries none: ``66`` + the first 5 bytes of sha1(name).

    0x66 is a locally administered unicast octet; the MAC is the same on
    every node that computes it, so peers agree without it being published.
    """
    digest = hashlib.sha1(nodename.encode()).digest()
    return ":".join(f"{b:02x}" for b in (0x66, *digest[:5]))


def vtep_mac(node: NodeInfo) -> str:
    return (node.vxlan_tunnel_mac or default_vtep_mac(node.name)).lower()


def _ipv4(text: str) -> ipaddress.IPv4Address | None:
    try:
        return ipaddress.IPv4Address(text) if text else None
    except ValueError:
        return None


def sort_key(network: Network) -> tuple[int, int, int]:
    return (network.version, int(network.network_address), network.prefixlen)


def same_subnet(me: NodeInfo, peer: NodeInfo) -> bool:
    """Felix's CrossSubnet test: the peer's IP is inside the prefix of this node's ``ipv4Address``."""
    if me.ipv4_address is None or peer.ipv4_address is None:
        return False
    return peer.ipv4_address.ip in me.ipv4_address.network


def selects(pool: IPPoolInfo, node: NodeInfo) -> bool:
    return pool.node_selector.matches(node.labels)


def pool_of(network: Network, pools: Mapping[str, IPPoolInfo]) -> IPPoolInfo | None:
    """The pool a block (or address) lies in; disabled pools count (their pods still need routes)."""
    for pool in pools.values():
        if pool.cidr.version == network.version and network.subnet_of(pool.cidr):  # type: ignore[arg-type]
            return pool
    return None


def needs_for(state: ClusterState, me: NodeInfo) -> TunnelNeeds:
    """calico/node's ``determineEnabledPoolCIDRs``: enabled IPv4 pools of each kind that select this node."""
    v4 = [p for p in state.pools.values() if p.version == 4 and not p.disabled and selects(p, me)]
    return TunnelNeeds(
        vxlan=any(p.vxlan_mode != "Never" for p in v4),
        ipip=any(p.ipip_mode != "Never" for p in v4),
    )


class _Builder:
    """Accumulates one calculation (routes by group and key, problems) for :func:`calculate`."""

    def __init__(self, state: ClusterState, local: LocalNode, me: NodeInfo) -> None:
        self.state = state
        self.local = local
        self.me = me
        self.routes: dict[str, dict[Network, Route]] = {group: {} for group in GROUP_ORDER}
        self.problems: list[str] = []
        self.vxlan: VxlanDevice | None = None
        self.ipip: IpipDevice | None = None

    def route_to(self, dst: Network, pool: IPPoolInfo, peer: NodeInfo) -> None:
        """The route to ``dst`` (a block or a borrowed /32) living on ``peer``, by the pool's modes."""
        if peer.ipv4_address is None or self.me.ipv4_address is None or dst.version != 4:
            return
        same = same_subnet(self.me, peer)
        peer_ip = peer.ipv4_address.ip
        if pool.vxlan_mode == "Always" or (pool.vxlan_mode == "CrossSubnet" and not same):
            tunnel = _ipv4(peer.ipv4_vxlan_tunnel_addr)
            if self.vxlan is None or tunnel is None:
                return  # no local VTEP yet, or the peer has not published its tunnel address
            route = Route(dst, dev=VXLAN_DEVICE, gateway=tunnel, onlink=True)
            self.routes[GROUP_TUNNEL][dst] = route
        elif pool.ipip_mode == "Always" or (pool.ipip_mode == "CrossSubnet" and not same):
            if self.ipip is None:
                return
            self.routes[GROUP_TUNNEL][dst] = Route(dst, dev=IPIP_DEVICE, gateway=peer_ip, onlink=True)
        elif same and self.local.backend != "bird" and self.local.parent:
            self.routes[GROUP_NOENCAP][dst] = Route(dst, dev=self.local.parent, gateway=peer_ip)

    def blackholes(self) -> None:
        for block in self.state.confirmed_blocks(self.me.name):
            if block.version != 4:
                continue
            info = self.state.blocks.get(block)
            if info is not None and info.host and info.host != self.me.name:
                self.problems.append(
                    f"block {block}: this node's affinity is confirmed but the block is affine to {info.host}"
                )
                continue
            self.routes[GROUP_BLACKHOLE][block] = Route(block, type=RouteType.BLACKHOLE)

    def remote_blocks(self) -> None:
        nodes, pools = self.state.nodes, self.state.pools
        for block in sorted(self.state.blocks.values(), key=lambda b: sort_key(b.cidr)):
            pool = pool_of(block.cidr, pools)
            if pool is None:
                continue
            peer = nodes.get(block.host)
            if block.host and block.host != self.me.name and peer is not None:
                self.route_to(block.cidr, pool, peer)
            for address, owner in block.borrowed:
                borrower = nodes.get(owner)
                if owner != self.me.name and borrower is not None:
                    self.route_to(ipaddress.ip_network(address), pool, borrower)

    def vteps(self) -> tuple[dict[ipaddress.IPv4Address, str], dict[str, ipaddress.IPv4Address]]:
        """One neighbour and one FDB entry per remote VTEP; a MAC claimed twice is programmed for one node only."""
        neighbours: dict[ipaddress.IPv4Address, str] = {}
        fdb: dict[str, ipaddress.IPv4Address] = {}
        if self.vxlan is None:
            return neighbours, fdb
        owners: dict[str, str] = {self.vxlan.mac: self.me.name}
        for name in sorted(self.state.nodes):
            peer = self.state.nodes[name]
            tunnel = _ipv4(peer.ipv4_vxlan_tunnel_addr)
            if name == self.me.name or tunnel is None or peer.ipv4_address is None:
                continue
            mac = vtep_mac(peer)
            if mac in owners:
                self.problems.append(f"node {name} publishes VTEP MAC {mac}, which is {owners[mac]}'s: not programmed")
                continue
            owners[mac] = name
            neighbours[tunnel] = mac
            fdb[mac] = peer.ipv4_address.ip
        return neighbours, fdb


def calculate(
    state: ClusterState, local: LocalNode, felix: FelixSettings | None = None, host_mtu: int = DEFAULT_HOST_MTU
) -> Desired:
    """This node's desired dataplane from ``state`` (see the module docstring)."""
    felix = felix or FelixSettings()
    me = state.nodes.get(local.name)
    owned = owned_networks(state)
    if me is None:
        return Desired(problems=(f"node {local.name} is not registered in the datastore",), owned=owned)
    builder = _Builder(state, local, me)
    v4_pools = [p for p in state.pools.values() if p.version == 4]
    vxlan_in_use = any(p.vxlan_mode != "Never" for p in v4_pools)
    ipip_in_use = any(p.ipip_mode != "Never" for p in v4_pools)
    vxlan_mtu = felix.vxlan_mtu or host_mtu - VXLAN_OVERHEAD
    ipip_mtu = felix.ipip_mtu or host_mtu - IPIP_OVERHEAD
    tunnel = _ipv4(me.ipv4_vxlan_tunnel_addr)
    if vxlan_in_use and tunnel is not None and me.ipv4_address is not None:
        builder.vxlan = VxlanDevice(
            vni=felix.vxlan_vni,
            port=felix.vxlan_port,
            local=me.ipv4_address.ip,
            parent=local.parent,
            mac=vtep_mac(me),
            address=tunnel,
            mtu=vxlan_mtu,
        )
    if ipip_in_use:
        builder.ipip = IpipDevice(address=_ipv4(me.ipv4_ipip_tunnel_addr), mtu=ipip_mtu)
    builder.blackholes()
    builder.remote_blocks()
    for group in (GROUP_TUNNEL, GROUP_NOENCAP):  # a borrowed /32 of a /32 block: the borrower's, not a blackhole
        for key in builder.routes[group]:
            builder.routes[GROUP_BLACKHOLE].pop(key, None)
    neighbours, fdb = builder.vteps()
    mtus = [mtu for mtu, used in ((vxlan_mtu, vxlan_in_use), (ipip_mtu, ipip_in_use)) if used]
    ordered = sorted(v4_pools, key=lambda p: sort_key(p.cidr))
    return Desired(
        routes={
            group: tuple(routes[key] for key in sorted(routes, key=sort_key))
            for group, routes in builder.routes.items()
        },
        vxlan=builder.vxlan,
        vxlan_in_use=vxlan_in_use,
        ipip=builder.ipip,
        neighbours=neighbours,
        fdb=fdb,
        nat_pools=tuple(p.cidr for p in ordered if isinstance(p.cidr, ipaddress.IPv4Network)),
        nat_masq=tuple(p.cidr for p in ordered if p.nat_outgoing and isinstance(p.cidr, ipaddress.IPv4Network)),
        pod_mtu=min(mtus) if mtus else host_mtu,
        needs=needs_for(state, me),
        problems=tuple(builder.problems),
        owned=owned,
    )


def owned_networks(state: ClusterState) -> tuple[Network, ...]:
    """The blocks and the blocks claimed by affinities: the only networks calico-node's routes are in.

    Every route the agent writes is to a block or inside one (a blackhole for an
    affine block, a route to a peer's block, a borrowed /32). On a Canal node
    flanneld's routes carry the same protocol (pycni's) in Flannel's network,
    where host-local IPAM makes no Calico block, so they are never this agent's,
    even when a Calico pool covers that network.
    """
    networks = {block.cidr for block in state.blocks.values()} | {block for _host, block in state.affinities}
    return tuple(sorted(networks, key=sort_key))
