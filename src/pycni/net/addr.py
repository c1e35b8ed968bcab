"""Addresses and routes: applying a CNI result to an interface, and checking it.

:func:`configure_interface` is the reference's ``ipam.ConfigureIface``: add
the result's addresses for one interface, bring it up, then add the routes
(a route without ``gw`` uses the first gateway of its family). Adding what is
already there is success, so a retried ADD converges.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import time
from typing import TYPE_CHECKING, Any

from pyroute2.netlink.exceptions import NetlinkError

from pycni.net import link, sysctl
from pycni.net.errors import NetError, netlink
from pycni.spec.errors import CNIError, ErrorCode
from pycni.spec.result import IPAddress, IPInterface, Result, Route

if TYPE_CHECKING:
    from pyroute2 import IPRoute

RT_SCOPE_UNIVERSE = 0
RT_SCOPE_LINK = 253
RT_SCOPE_NOWHERE = 255
RTPROT_BOOT = 3  # what the kernel records when a route's origin is not given (Go's netlink sends none)


def family_of(version: int) -> int:
    return socket.AF_INET if version == 4 else socket.AF_INET6


def addresses(ipr: IPRoute, index: int, family: int | None = None) -> list[IPInterface]:
    """The addresses of a link, in kernel order."""
    kwargs: dict[str, Any] = {"index": index}
    if family is not None:
        kwargs["family"] = family
    return [
        ipaddress.ip_interface(f"{msg.get('address')}/{msg['prefixlen']}")
        for msg in ipr.get_addr(**kwargs)
        if msg.get("address")
    ]


def add_address(ipr: IPRoute, index: int, address: IPInterface, ifname: str = "") -> None:
    """Add ``address`` (IPv4 with its broadcast address, as ``ip addr`` does); already present is success."""
    extra: dict[str, Any] = {}
    if address.version == 4 and address.network.prefixlen < 31:
        extra["broadcast"] = str(address.network.broadcast_address)
    with netlink(f"failed to add IP addr {address} to {ifname or index}", ignore=(errno.EEXIST,)):
        ipr.addr("add", index=index, address=str(address.ip), prefixlen=address.network.prefixlen, **extra)


def del_address(ipr: IPRoute, index: int, address: IPInterface) -> None:
    with netlink(f"failed to delete IP addr {address}", ignore=(errno.EADDRNOTAVAIL, errno.ENODEV, errno.ENOENT)):
        ipr.addr("del", index=index, address=str(address.ip), prefixlen=address.network.prefixlen)


def add_route(
    ipr: IPRoute,
    dst: IPInterface,
    gateway: IPAddress | None = None,
    oif: int | None = None,
    scope: int | None = None,
    table: int | None = None,
    priority: int = 0,
    src: IPAddress | None = None,
) -> None:
    """Add a route; an identical route already present is success."""
    network = dst.network
    kwargs: dict[str, Any] = {
        "dst": f"{network.network_address}/{network.prefixlen}",
        "family": family_of(dst.version),
        "proto": RTPROT_BOOT,
    }
    if gateway is not None:
        kwargs["gateway"] = str(gateway)
    if oif is not None:
        kwargs["oif"] = oif
    if scope is not None:
        kwargs["scope"] = scope
    if table is not None:
        kwargs["table"] = table
    if priority:
        kwargs["priority"] = priority
    if src is not None:
        kwargs["prefsrc"] = str(src)
    try:
        ipr.route("add", **kwargs)
    except NetlinkError as exc:
        if exc.code != errno.EEXIST:
            via = f" via {gateway}" if gateway else ""
            raise NetError(f"failed to add route '{network}{via}'", int(exc.code)) from None


def del_route(ipr: IPRoute, dst: IPInterface, oif: int | None = None) -> None:
    """Delete the route to ``dst`` whatever its scope and origin; already gone is success."""
    network = dst.network
    kwargs: dict[str, Any] = {
        "dst": f"{network.network_address}/{network.prefixlen}",
        "family": family_of(dst.version),
        "scope": RT_SCOPE_NOWHERE,  # the kernel's wildcard for deletion
        "proto": 0,
    }
    if oif is not None:
        kwargs["oif"] = oif
    with netlink(f"failed to delete route {network}", ignore=(errno.ESRCH, errno.ENOENT, errno.ENODEV)):
        ipr.route("del", **kwargs)


IFA_F_DADFAILED = 0x08
IFA_F_TENTATIVE = 0x40
SETTLE_TIMEOUT = 5.0


def settle_ipv6(ipr: IPRoute, index: int, ifname: str, timeout: float = SETTLE_TIMEOUT) -> None:
    """Wait until no IPv6 address of the link is tentative (``ip.SettleAddresses``).

    Even with DAD off, an address added while the link was down stays
    tentative until the kernel's address worker runs after the link comes up;
    a route with that address as its source fails until then.
    """
    deadline = time.monotonic() + timeout
    while True:
        flags = [int(msg.get("IFA_FLAGS") or msg["flags"]) for msg in ipr.get_addr(index=index, family=socket.AF_INET6)]
        if any(f & IFA_F_DADFAILED for f in flags):
            raise CNIError(ErrorCode.INTERNAL, f"{ifname}: IPv6 duplicate address detection failed")
        if not any(f & IFA_F_TENTATIVE for f in flags):
            return
        if time.monotonic() > deadline:
            raise CNIError(ErrorCode.INTERNAL, f"{ifname}: IPv6 addresses still tentative after {timeout:.0f} s")
        time.sleep(0.005)


def route_gateway(result: Result, route: Route) -> IPAddress | None:
    """The route's own gateway, else the first ``ips`` gateway of its family."""
    if route.gw is not None:
        return route.gw
    for ip in result.ips:
        if ip.gateway is not None and ip.gateway.version == route.dst.version:
            return ip.gateway
    return None


def configure_interface(ipr: IPRoute, ifname: str, result: Result, interface_index: int) -> None:
    """Apply ``result``'s addresses and routes to ``ifname`` (``ipam.ConfigureIface``).

    ``ipr`` and the calling thread must both be in the container's namespace
    (IPv6 needs sysctls written there).
    """
    target = link.get(ipr, ifname)
    mine = [ip for ip in result.ips if ip.interface == interface_index]
    if any(ip.address.version == 6 for ip in mine):
        for name in ("lo", ifname):
            sysctl.write(f"net/ipv6/conf/{name}/disable_ipv6", "0", missing_ok=True)
        sysctl.write(f"net/ipv6/conf/{ifname}/keep_addr_on_down", "1", missing_ok=True)
    for ip in mine:
        add_address(ipr, target.index, ip.address, ifname)
    with netlink(f"failed to set {ifname} up"):
        ipr.link("set", index=target.index, state="up")
    if any(ip.address.version == 6 for ip in mine):
        settle_ipv6(ipr, target.index, ifname)
    for route in result.routes:
        add_route(
            ipr,
            route.dst,
            route_gateway(result, route),
            oif=target.index,
            scope=route.scope,
            table=route.table,
            priority=route.priority,
        )


def validate_interface_addresses(ipr: IPRoute, ifname: str, result: Result, interface_index: int) -> None:
    """CHECK: every address the result gave ``ifname`` is on it."""
    target = link.get(ipr, ifname)
    present = {str(a) for a in addresses(ipr, target.index)}
    for ip in result.ips:
        if ip.interface == interface_index and str(ip.address) not in present:
            raise CNIError(ErrorCode.INTERNAL, f"Failed to match addr {ip.address} on interface {ifname}")


def routes(ipr: IPRoute, version: int) -> list[tuple[IPInterface, IPAddress | None]]:
    """``(destination, gateway)`` of every route in the main table of one family."""
    found = []
    for msg in ipr.get_routes(family=family_of(version), table=254):
        dst = msg.get("dst") or ("0.0.0.0" if version == 4 else "::")
        gateway = msg.get("gateway")
        found.append(
            (ipaddress.ip_interface(f"{dst}/{msg['dst_len']}"), ipaddress.ip_address(gateway) if gateway else None)
        )
    return found


def validate_routes(ipr: IPRoute, result: Result) -> None:
    """CHECK: every route of the result exists in the namespace."""
    present: dict[int, list[tuple[IPInterface, IPAddress | None]]] = {}
    for route in result.routes:
        version = route.dst.version
        if version not in present:  # one dump per family, not per route
            present[version] = routes(ipr, version)
        table = present[version]
        gateway = route_gateway(result, route)
        wanted = route.dst.network
        if not any(dst.network == wanted and (gateway is None or gw == gateway) for dst, gw in table):
            via = f" via {gateway}" if gateway else ""
            raise CNIError(ErrorCode.INTERNAL, f"Failed to match route {wanted}{via} in the container")


def output_interface(ipr: IPRoute, destination: IPAddress) -> str | None:
    """The name of the link the kernel would send to ``destination`` through (``ip route get``)."""
    try:
        found = ipr.route("get", dst=str(destination))
    except NetlinkError:
        return None
    for msg in found:
        oif = msg.get("RTA_OIF") or msg.get("oif")
        if oif:
            out = link.by_index(ipr, int(oif))
            return out.name if out else None
    return None
