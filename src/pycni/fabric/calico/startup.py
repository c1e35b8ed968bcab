"""calico-node's writes to the datastore: register the Node, seed pools and config, keep tunnel addresses.

Start-up (``node/pkg/lifecycle/startup/startup.go``), in its order:

1. clientv3's ``EnsureInitialized`` (ClusterInformation ``default``, the default tiers);
2. the Node: created, or its ``spec.bgp.ipv4Address`` (and ``asNumber`` when
   ``AS`` is given) refreshed; another Node already using this IPv4 address is
   an error, as calico/node's ``checkConflictingNodes`` makes it;
3. the default IPv4 pool(s), only when the cluster has no IPv4 pool at all;
4. FelixConfiguration ``default`` when absent (reportingInterval 0s,
   logSeverityScreen Info, as calico/node writes it).

While running (``node/pkg/allocateip``): when an enabled VXLAN (or IPIP) pool
selects the node it holds one tunnel address from IPAM under the handle
``vxlan-tunnel-addr-<node>`` (``ipip-tunnel-addr-<node>``), published as
``spec.ipv4VXLANTunnelAddr`` (``spec.bgp.ipv4IPIPTunnelAddr``); an address
that IPAM does not hold for that handle, or that left the pools, is replaced;
when no such pool is left it is released and the field cleared. The VTEP
MAC (``spec.vxlanTunnelMACAddr``) is published too: the one already there,
else Felix's default for the node name. Every Node write is a
compare-and-swap on its revision, retried on conflict.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
from collections.abc import Callable, Sequence
from typing import Any

from pycni.fabric.calico.calculation import TunnelNeeds, default_vtep_mac
from pycni.fabric.calico.config import ConfigError
from pycni.fabric.calico.errors import ResourceAlreadyExists, UpdateConflict
from pycni.fabric.calico.ipam_store import IPAM, IPAMError, NotAssigned, tunnel_pools
from pycni.fabric.calico.model import NodeInfo, Resource, new_resource
from pycni.fabric.calico.resources import ResourceClient
from pycni.fabric.calico.syncer import ClusterState

log = logging.getLogger("pycni.fabric.calico.startup")

FELIX_DEFAULT = {"reportingInterval": "0s", "logSeverityScreen": "Info"}
_ATTEMPTS = 10
_LABELS = {"vxlan": "VXLAN", "ipip": "IPIP"}


def tunnel_handle(kind: str, nodename: str) -> str:
    return f"{kind}-tunnel-addr-{nodename}"


def update_node(resources: ResourceClient, nodename: str, mutate: Callable[[dict[str, Any]], None]) -> bool:
    """Apply ``mutate`` to the Node's spec and write it if it changed (CAS, retried); whether it wrote."""
    for _ in range(_ATTEMPTS):
        node = resources.get("Node", nodename)
        changed = node.copy()
        mutate(changed.spec)
        if changed.spec == node.spec:
            return False
        try:
            resources.update(changed)
            return True
        except UpdateConflict:
            continue
    raise UpdateConflict(f"Node({nodename})", "it kept changing under the agent")


def check_conflicting_nodes(resources: ResourceClient, nodename: str, address: ipaddress.IPv4Interface) -> None:
    nodes, _ = resources.list("Node")
    for node in nodes:
        other = NodeInfo.from_resource(node)
        if other.name != nodename and other.ipv4_address is not None and other.ipv4_address.ip == address.ip:
            raise ConfigError(
                f"Calico node '{other.name}' is already using the IPv4 address {address.ip}: "
                "give each node its own address (IP or IP_AUTODETECTION_METHOD), or delete the stale Node"
            )


def register_node(
    resources: ResourceClient,
    nodename: str,
    address: ipaddress.IPv4Interface | None,
    as_number: int | None,
) -> bool:
    """Create this node's Node or refresh its BGP address; whether it created it."""
    if address is not None:
        check_conflicting_nodes(resources, nodename, address)

    def bgp_spec(spec: dict[str, Any]) -> None:
        bgp = dict(spec.get("bgp") or {})
        if address is not None:
            bgp["ipv4Address"] = str(address)
        else:
            bgp.pop("ipv4Address", None)
        if as_number is not None:
            bgp["asNumber"] = as_number
        if bgp:
            spec["bgp"] = bgp
        else:
            spec.pop("bgp", None)

    if resources.find("Node", nodename) is None:
        spec: dict[str, Any] = {}
        bgp_spec(spec)
        try:
            resources.create(new_resource("Node", nodename, spec))
            log.info("registered node %s (%s)", nodename, address or "no IPv4 address")
            return True
        except ResourceAlreadyExists:
            pass  # a restart racing itself: refresh below
    if update_node(resources, nodename, bgp_spec):
        log.info("node %s: IPv4 address %s", nodename, address or "none")
    return False


def ensure_pools(resources: ResourceClient, pools: Sequence[Resource]) -> list[str]:
    """Create ``pools`` when the cluster has no IPv4 pool (another node may have just done so); names created."""
    existing, _ = resources.list("IPPool")
    if any(":" not in str(pool.spec.get("cidr", "")) for pool in existing):
        return []
    created = []
    for pool in pools:
        try:
            resources.create(pool)
        except ResourceAlreadyExists:
            continue
        created.append(pool.name)
        spec = pool.spec
        log.info(
            "created IPPool %s: %s, blockSize %s, ipipMode %s, vxlanMode %s, natOutgoing %s, nodeSelector %s",
            pool.name,
            spec.get("cidr"),
            spec.get("blockSize"),
            spec.get("ipipMode"),
            spec.get("vxlanMode"),
            str(bool(spec.get("natOutgoing"))).lower(),
            spec.get("nodeSelector"),
        )
    return created


def ensure_felix_defaults(resources: ResourceClient) -> bool:
    if resources.find("FelixConfiguration", "default") is not None:
        return False
    with contextlib.suppress(ResourceAlreadyExists):
        resources.create(new_resource("FelixConfiguration", "default", dict(FELIX_DEFAULT)))
        return True
    return False


class TunnelAddresses:
    """This node's tunnel addresses and VTEP MAC in IPAM and its Node, made to match :class:`TunnelNeeds`."""

    def __init__(self, resources: ResourceClient, ipam: IPAM, nodename: str) -> None:
        self.resources = resources
        self.ipam = ipam
        self.nodename = nodename
        self._verified: dict[str, str] = {}  # kind -> the address IPAM was seen to hold for our handle

    def reconcile(self, state: ClusterState, needs: TunnelNeeds) -> bool:
        """Allocate, verify or release as needed; whether the Node was written (its event follows)."""
        me = state.nodes.get(self.nodename)
        if me is None:
            return False
        wrote = False
        for kind, needed, current in (
            ("vxlan", needs.vxlan, me.ipv4_vxlan_tunnel_addr),
            ("ipip", needs.ipip, me.ipv4_ipip_tunnel_addr),
        ):
            wanted = self._wanted(kind, needed, current, state, me)
            if wanted != current:
                wrote |= self._publish(kind, wanted)
        mac = default_vtep_mac(self.nodename) if needs.vxlan else ""
        if bool(mac) != bool(me.vxlan_tunnel_mac):

            def set_mac(spec: dict[str, Any]) -> None:
                if mac:
                    spec.setdefault("vxlanTunnelMACAddr", mac)
                else:
                    spec.pop("vxlanTunnelMACAddr", None)

            wrote |= update_node(self.resources, self.nodename, set_mac)
        return wrote

    def _pools(self, kind: str, state: ClusterState, me: NodeInfo) -> list[ipaddress.IPv4Network]:
        """The eligible pools from the syncer's snapshot (the same filter IPAM applies, without a re-read)."""
        found = tunnel_pools(state.pools.values(), kind, me.labels)
        return [cidr for cidr in found if isinstance(cidr, ipaddress.IPv4Network)]

    def _wanted(self, kind: str, needed: bool, current: str, state: ClusterState, me: NodeInfo) -> str:
        """The address the Node should carry for ``kind`` ("" for none), allocating or releasing in IPAM."""
        handle = tunnel_handle(kind, self.nodename)
        label = _LABELS[kind]
        if not needed:
            if current or self._verified.get(kind):
                self._release(handle)
                self._verified.pop(kind, None)
                log.info("released the %s tunnel address %s: no %s pool selects this node", label, current, label)
            return ""
        pools = self._pools(kind, state, me)
        address = ipaddress.IPv4Address(current) if current else None
        usable = address is not None and any(address in pool for pool in pools)
        if (
            address is not None
            and usable
            and (self._verified.get(kind) == current or self._holds(kind, handle, address))
        ):
            self._verified[kind] = current
            return current
        self._release(handle)
        assigned = str(self.ipam.assign_tunnel_address(self.nodename, kind=kind, pools=pools).ip)
        self._verified[kind] = assigned
        log.info("assigned the %s tunnel address %s (handle %s)", label, assigned, handle)
        return assigned

    def _holds(self, kind: str, handle: str, address: ipaddress.IPv4Address) -> bool:
        """IPAM holds ``address`` for ``handle`` (if nobody holds it, it is claimed for the handle again)."""
        try:
            attribute = self.ipam.attributes_for(address)
        except NotAssigned:
            try:
                self.ipam.assign_tunnel_address(self.nodename, address, kind)
            except IPAMError:
                return False
            return True
        return attribute.handle == handle

    def _release(self, handle: str) -> None:
        with contextlib.suppress(NotAssigned):
            self.ipam.release_by_handle(handle)

    def _publish(self, kind: str, address: str) -> bool:
        def mutate(spec: dict[str, Any]) -> None:
            if kind == "vxlan":
                if address:
                    spec["ipv4VXLANTunnelAddr"] = address
                else:
                    spec.pop("ipv4VXLANTunnelAddr", None)
                return
            bgp = dict(spec.get("bgp") or {})
            if address:
                bgp["ipv4IPIPTunnelAddr"] = address
            else:
                bgp.pop("ipv4IPIPTunnelAddr", None)
            if bgp:
                spec["bgp"] = bgp
            else:
                spec.pop("bgp", None)

        return update_node(self.resources, self.nodename, mutate)
