"""Overlay plumbing for the fabric backends: vxlan links, neighbours, FDB, onlink routes, TUN.

Every function takes a pyroute2 ``IPRoute`` bound to the node's namespace
(see :func:`pycni.net.netns.iproute`). Adds replace what is there, so a
replayed event converges; deletes treat "already gone" as success. The
netlink requests are Flannel's (``pkg/backend/vxlan/device.go``): a
neighbour is ``NeighSet`` (create or replace), an FDB entry is ``NeighSet``
with ``AF_BRIDGE`` and ``NTF_SELF``, a route is ``RouteReplace``.
"""

from __future__ import annotations

import errno
import fcntl
import ipaddress
import os
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pyroute2.netlink.exceptions import NetlinkError

from pycni.net.addr import RTPROT_BOOT, add_address, addresses, del_address
from pycni.net.errors import NetError, netlink
from pycni.net.sublink import IFF_NO_PI, TUN_DEVICE, TUNSETIFF, TUNSETPERSIST, ifreq

if TYPE_CHECKING:
    from pyroute2 import IPRoute

AF_BRIDGE = 7
NUD_PERMANENT = 0x80
NTF_SELF = 0x02
RTNH_F_ONLINK = 0x4
RT_TABLE_MAIN = 254
IFF_TUN = 0x0001
VXLAN_DEFAULT_PORT = 8472  # the Linux default (IANA's 4789 is not what the kernel picks)
_GONE = (errno.ENOENT, errno.ESRCH, errno.ENODEV, errno.EADDRNOTAVAIL)


# -- vxlan links ---------------------------------------------------------------


@dataclass(frozen=True)
class VxlanSpec:
    """What a vxlan device should be (``netlink.Vxlan`` as Flannel fills it)."""

    name: str
    vni: int
    local: str
    link_index: int
    port: int = VXLAN_DEFAULT_PORT
    learning: bool = False
    gbp: bool = False
    mtu: int = 0
    mac: str = ""


@dataclass(frozen=True)
class VxlanInfo:
    """A link called like our device, as the kernel reports it (``kind`` may not be vxlan)."""

    index: int
    name: str
    kind: str
    mac: str
    mtu: int
    up: bool
    vni: int = 0
    local: str = ""
    link_index: int = 0
    port: int = 0
    learning: bool = False
    gbp: bool = False
    group: str = ""
    l2miss: bool = False


def _vxlan_info(msg: Any) -> VxlanInfo:
    kind = str(msg.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND") or "")
    data = msg.get_nested("IFLA_LINKINFO", "IFLA_INFO_DATA")
    attrs: dict[str, Any] = dict(data.get("attrs", [])) if data else {}
    return VxlanInfo(
        index=int(msg["index"]),
        name=str(msg.get("IFLA_IFNAME") or ""),
        kind=kind,
        mac=str(msg.get("IFLA_ADDRESS") or ""),
        mtu=int(msg.get("IFLA_MTU") or 0),
        up=bool(int(msg["flags"]) & 0x1),
        vni=int(attrs.get("IFLA_VXLAN_ID") or 0),
        local=str(attrs.get("IFLA_VXLAN_LOCAL") or ""),
        link_index=int(attrs.get("IFLA_VXLAN_LINK") or 0),
        port=int(attrs.get("IFLA_VXLAN_PORT") or 0),
        learning=bool(attrs.get("IFLA_VXLAN_LEARNING")),
        gbp=bool(attrs.get("IFLA_VXLAN_GBP")),
        group=str(attrs.get("IFLA_VXLAN_GROUP") or ""),
        l2miss=bool(attrs.get("IFLA_VXLAN_L2MISS")),
    )


def find_vxlan(ipr: IPRoute, name: str) -> VxlanInfo | None:
    """The link called ``name`` with its vxlan attributes, or ``None``."""
    try:
        found = ipr.link("get", ifname=name)
    except NetlinkError as exc:
        if exc.code == errno.ENODEV:
            return None
        raise NetError(f"look up {name}", int(exc.code)) from None
    return _vxlan_info(found[0]) if found else None


def vxlan_request(spec: VxlanSpec) -> dict[str, Any]:
    """The ``link("add")`` keywords for ``spec``: id, local, dev, dstport and learning always explicit."""
    request: dict[str, Any] = {
        "ifname": spec.name,
        "kind": "vxlan",
        "vxlan_id": spec.vni,
        "vxlan_local": spec.local,
        "vxlan_link": spec.link_index,
        "vxlan_port": spec.port,
        "vxlan_learning": 1 if spec.learning else 0,
    }
    if spec.gbp:
        request["vxlan_gbp"] = True
    if spec.mtu:
        request["mtu"] = spec.mtu
    if spec.mac:
        request["address"] = spec.mac
    return request


def create_vxlan(ipr: IPRoute, spec: VxlanSpec) -> VxlanInfo:
    """Create the device (EEXIST is raised: the caller decides whether the existing one fits)."""
    with netlink(f"failed to create vxlan device {spec.name}"):
        ipr.link("add", **vxlan_request(spec))
    created = find_vxlan(ipr, spec.name)
    if created is None:
        raise NetError(f"vxlan device {spec.name} vanished after creation", errno.ENODEV)
    return created


def random_mac() -> str:
    """A random locally administered unicast MAC (Flannel's ``mac.NewHardwareAddr``)."""
    raw = bytearray(os.urandom(6))
    raw[0] = (raw[0] & 0xFE) | 0x02
    return ":".join(f"{byte:02x}" for byte in raw)


# -- neighbours and FDB ----------------------------------------------------------


def neigh_set(ipr: IPRoute, index: int, ip: str, mac: str) -> None:
    """A permanent neighbour ``ip`` → ``mac`` (``ip neigh replace ... nud permanent``)."""
    with netlink(f"failed to set neighbour {ip} lladdr {mac}"):
        ipr.neigh("replace", ifindex=index, dst=ip, lladdr=mac, state=NUD_PERMANENT, family=socket.AF_INET)


def neigh_del(ipr: IPRoute, index: int, ip: str) -> None:
    with netlink(f"failed to delete neighbour {ip}", ignore=_GONE):
        ipr.neigh("del", ifindex=index, dst=ip, family=socket.AF_INET)


def neighbours(ipr: IPRoute, index: int) -> list[tuple[str, str]]:
    """``(ip, mac)`` of the IPv4 neighbours on link ``index``."""
    found = []
    for msg in ipr.neigh("dump", ifindex=index, family=socket.AF_INET):
        if int(msg.get("ifindex") or 0) != index:
            continue
        dst = msg.get("NDA_DST")
        if dst:
            found.append((str(dst), str(msg.get("NDA_LLADDR") or "")))
    return found


def fdb_set(ipr: IPRoute, index: int, mac: str, dst: str) -> None:
    """``bridge fdb replace <mac> dev <vxlan> dst <dst> self permanent``."""
    with netlink(f"failed to set fdb entry {mac} dst {dst}"):
        ipr.neigh("replace", family=AF_BRIDGE, ifindex=index, lladdr=mac, dst=dst, state=NUD_PERMANENT, flags=NTF_SELF)


def fdb_del(ipr: IPRoute, index: int, mac: str, dst: str) -> None:
    """Remove the remote ``dst`` of ``mac`` only (other remotes of the MAC stay)."""
    with netlink(f"failed to delete fdb entry {mac} dst {dst}", ignore=_GONE):
        ipr.neigh("del", family=AF_BRIDGE, ifindex=index, lladdr=mac, dst=dst, state=NUD_PERMANENT, flags=NTF_SELF)


def fdb_entries(ipr: IPRoute, index: int) -> list[tuple[str, str]]:
    """``(mac, dst)`` of the FDB entries on link ``index`` that name a remote."""
    found = []
    for msg in ipr.neigh("dump", family=AF_BRIDGE, ifindex=index):
        if int(msg.get("ifindex") or 0) != index:
            continue
        dst, mac = msg.get("NDA_DST"), msg.get("NDA_LLADDR")
        if dst and mac:
            found.append((str(mac), str(dst)))
    return found


# -- routes ----------------------------------------------------------------------


@dataclass(frozen=True)
class RouteEntry:
    """An IPv4 route of the main table, as far as the backends care."""

    dst: ipaddress.IPv4Network
    gateway: str | None
    oif: int
    onlink: bool = False


def route_replace(ipr: IPRoute, dst: ipaddress.IPv4Network, gateway: str, oif: int, onlink: bool = False) -> None:
    """``ip route replace <dst> via <gateway> dev <oif> [onlink]``."""
    request: dict[str, Any] = {
        "dst": str(dst),
        "gateway": gateway,
        "oif": oif,
        "family": socket.AF_INET,
        "proto": RTPROT_BOOT,
        "table": RT_TABLE_MAIN,
    }
    if onlink:
        request["flags"] = RTNH_F_ONLINK
    with netlink(f"failed to set route {dst} via {gateway}"):
        ipr.route("replace", **request)


def route_del(ipr: IPRoute, dst: ipaddress.IPv4Network, gateway: str | None, oif: int) -> None:
    """Delete exactly the route to ``dst`` via ``gateway`` on ``oif``; already gone is success."""
    request: dict[str, Any] = {"dst": str(dst), "oif": oif, "family": socket.AF_INET, "table": RT_TABLE_MAIN}
    if gateway:
        request["gateway"] = gateway
    with netlink(f"failed to delete route {dst}", ignore=_GONE):
        ipr.route("del", **request)


def routes(ipr: IPRoute) -> list[RouteEntry]:
    """The IPv4 routes of the main table that have a destination."""
    found = []
    for msg in ipr.get_routes(family=socket.AF_INET, table=RT_TABLE_MAIN):
        dst = msg.get("RTA_DST")
        if not dst:
            continue
        gateway = msg.get("RTA_GATEWAY")
        found.append(
            RouteEntry(
                dst=ipaddress.IPv4Network(f"{dst}/{msg['dst_len']}"),
                gateway=str(gateway) if gateway else None,
                oif=int(msg.get("RTA_OIF") or 0),
                onlink=bool(int(msg["flags"]) & RTNH_F_ONLINK),
            )
        )
    return found


def on_link(ipr: IPRoute, ip: str) -> bool:
    """Whether ``ip route get <ip>`` answers one route without a gateway (Flannel's ``ip.DirectRouting``)."""
    with netlink(f"couldn't look up the route to {ip}"):
        found = ipr.route("get", dst=ip)
    return len(found) == 1 and not found[0].get("RTA_GATEWAY")


# -- addresses -------------------------------------------------------------------


def ensure_only_address(
    ipr: IPRoute, index: int, wanted: ipaddress.IPv4Interface, within: ipaddress.IPv4Network, ifname: str
) -> None:
    """``wanted`` is the one IPv4 address of the link inside ``within`` (``ip.EnsureV4AddressOnLink``).

    A restart with a new lease must not leave the old subnet's address behind;
    addresses outside ``within`` belong to someone else and stay.
    """
    present = False
    for address in addresses(ipr, index, socket.AF_INET):
        if address == wanted:
            present = True
        elif isinstance(address, ipaddress.IPv4Interface) and address.ip in within:
            del_address(ipr, index, address)
    if not present:
        add_address(ipr, index, wanted, ifname)


# -- TUN -------------------------------------------------------------------------


def open_tun(name: str, persist: bool = True) -> int:
    """Open (creating if needed) the layer-3 TUN ``name`` in the calling thread's namespace.

    ``IFF_TUN | IFF_NO_PI``: reads and writes are bare IP packets. A
    persistent device outlives the descriptor, so a restarted agent attaches
    to the same link and its routes stay. The caller owns the returned fd.
    """
    try:
        fd = os.open(TUN_DEVICE, os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        raise NetError(f"failed to open {TUN_DEVICE}", exc.errno or errno.EIO) from None
    try:
        fcntl.ioctl(fd, TUNSETIFF, ifreq(name, IFF_TUN | IFF_NO_PI))
        if persist:
            fcntl.ioctl(fd, TUNSETPERSIST, 1)
    except OSError as exc:
        os.close(fd)
        raise NetError(f"failed to attach TUN device {name}", exc.errno or errno.EIO) from None
    return fd
