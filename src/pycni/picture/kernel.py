"""This node's kernel as the picture needs it, read once: addresses, links, IPv4 routes, overlay neighbours and FDB.

Both collectors judge a peer by what this node has for it (a route to its
subnet or block, the vxlan neighbour and FDB entry), so they read one
:class:`KernelState` of the calling thread's network namespace and decide from
that; nothing here is written.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field

from pycni.net import neigh as net_neigh
from pycni.net import netns
from pycni.net import overlay as net_overlay
from pycni.net import route as net_route

IPv4Network = ipaddress.IPv4Network


@dataclass(frozen=True)
class Device:
    name: str
    kind: str
    mac: str
    mtu: int
    up: bool
    vni: int = 0
    port: int = 0


@dataclass(frozen=True)
class KernelRoute:
    """An IPv4 route of the main table: ``device`` "" for a blackhole; ``proto`` the kernel's number."""

    dst: IPv4Network
    gateway: str
    device: str
    proto: int
    onlink: bool
    blackhole: bool


@dataclass(frozen=True)
class KernelState:
    addresses: dict[str, ipaddress.IPv4Interface | ipaddress.IPv6Interface]  # address -> with its prefix
    devices: dict[str, Device]
    routes: tuple[KernelRoute, ...]
    neighbours: dict[str, dict[str, str]] = field(default_factory=dict)  # device -> {ip: mac}
    fdb: dict[str, dict[str, str]] = field(default_factory=dict)  # device -> {mac: dst}

    def route_to(self, dst: IPv4Network) -> KernelRoute | None:
        """The route whose destination is exactly ``dst`` (a node's subnet or block)."""
        return next((route for route in self.routes if route.dst == dst and not route.blackhole), None)

    def routes_within(self, network: IPv4Network) -> list[KernelRoute]:
        return [route for route in self.routes if route.dst.subnet_of(network)]

    def network_of(self, address: str) -> str:
        """The connected network of this node's own ``address`` (``198.51.100.0/24``); "" if it is not ours."""
        found = self.addresses.get(address)
        return str(found.network) if found is not None else ""


def read(overlay_devices: Iterable[str] = ()) -> KernelState:
    """The calling thread's network namespace; neighbours and FDB only of ``overlay_devices`` that exist."""
    ipr = netns.iproute_here()
    try:
        addresses: dict[str, ipaddress.IPv4Interface | ipaddress.IPv6Interface] = {}
        for msg in ipr.get_addr():
            if msg.get("address"):
                address = str(msg.get("address"))
                addresses[address] = ipaddress.ip_interface(f"{address}/{msg['prefixlen']}")
        devices: dict[str, Device] = {}
        by_index: dict[int, str] = {}
        for msg in ipr.get_links():
            name = str(msg.get("ifname"))
            by_index[int(msg["index"])] = name
            devices[name] = Device(
                name=name,
                kind=str(msg.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND") or ""),
                mac=str(msg.get("address") or "").lower(),
                mtu=int(msg.get("mtu") or 0),
                up=bool(int(msg["flags"]) & 0x1),
            )
        routes = tuple(
            KernelRoute(
                dst=route.dst,
                gateway=str(route.gateway or ""),
                device=by_index.get(route.oif, ""),
                proto=route.proto,
                onlink=route.onlink,
                blackhole=route.type == net_route.RTN_BLACKHOLE,
            )
            for route in net_route.dump(ipr, socket.AF_INET, tables=[net_route.RT_TABLE_MAIN])
            if isinstance(route.dst, IPv4Network)
        )
        neighbours: dict[str, dict[str, str]] = {}
        fdb: dict[str, dict[str, str]] = {}
        for name in overlay_devices:
            if name not in devices:
                continue
            vxlan = net_overlay.find_vxlan(ipr, name)
            if vxlan is not None and vxlan.kind == "vxlan":
                devices[name] = dataclasses.replace(devices[name], vni=vxlan.vni, port=vxlan.port)
            index = next(i for i, n in by_index.items() if n == name)
            neighbours[name] = {str(e.ip): e.mac for e in net_neigh.neighbours(ipr, index) if e.mac}
            fdb[name] = {e.mac: str(e.dst) for e in net_neigh.fdb_entries(ipr, index)}
        return KernelState(addresses, devices, routes, neighbours, fdb)
    finally:
        ipr.close()
