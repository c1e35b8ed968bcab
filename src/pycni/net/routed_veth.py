"""A routed veth, Calico's per-pod wiring: a named host end with a fixed MAC, and a /32 host route per address.

There is no bridge and no gateway address. The host end is called by the
caller's rule (``cali`` + 11 hex digits) and carries ``ee:ee:ee:ee:ee:ee``; the
pod reaches everything through the dummy next hop ``169.254.1.1`` (IPv4),
answered by proxy ARP on the host end, or through the host end's link-local
address (IPv6, derived from that MAC). The host reaches the pod by a
``<ip>/32 dev <host end> scope link`` route (``dataplane_linux.go``).

Functions take a pyroute2 ``IPRoute`` bound to the namespace they act in.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import time
from typing import TYPE_CHECKING, Any

from pyroute2.netlink.exceptions import NetlinkError

from pycni.net import addr, link
from pycni.net.errors import NetError, netlink
from pycni.net.link import LinkInfo
from pycni.net.veth import InterfaceExists
from pycni.spec.errors import CNIError, ErrorCode

if TYPE_CHECKING:
    from pyroute2 import IPRoute

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

HOST_MAC = "ee:ee:ee:ee:ee:ee"
HOST_LINK_LOCAL = ipaddress.IPv6Address("fe80::ecee:eeff:feee:eeee")  # EUI-64 of HOST_MAC
NEXT_HOP_V4 = ipaddress.IPv4Address("169.254.1.1")
MAC_TIMEOUT = 5.0
LINK_LOCAL_TIMEOUT = 2.0


def create(
    host: IPRoute,
    container: IPRoute,
    container_fd: int,
    host_name: str,
    ifname: str,
    mtu: int = 0,
    queues: int = 1,
) -> tuple[LinkInfo, LinkInfo]:
    """Make ``host_name`` (host, down) paired with ``ifname`` (container, down).

    An existing host link of that name is deleted first: the name is derived
    from the workload, so it belongs to an earlier sandbox of the same one
    (Calico does the same). An ``ifname`` already in the container is an error.
    """
    if link.find(container, ifname) is not None:
        raise InterfaceExists(ifname)
    link.delete(host, host_name)
    peer: dict[str, Any] = {"ifname": ifname, "net_ns_fd": container_fd}
    extra: dict[str, Any] = {}
    if mtu:
        peer["mtu"] = extra["mtu"] = mtu
    if queues > 1:
        for side in (peer, extra):
            side["num_tx_queues"] = side["num_rx_queues"] = queues
    try:
        host.link("add", ifname=host_name, kind="veth", peer=peer, **extra)
    except NetlinkError as exc:
        if exc.code == errno.EEXIST and link.find(container, ifname) is not None:
            raise InterfaceExists(ifname) from None
        raise NetError(f"failed to create veth {host_name} for {ifname}", int(exc.code)) from None
    try:
        return link.get(host, host_name), link.get(container, ifname)
    except BaseException:
        link.delete(host, host_name)  # made but not handed back: nobody else could remove it
        raise


def set_mac(ipr: IPRoute, host_link: LinkInfo, mac: str = HOST_MAC, timeout: float = MAC_TIMEOUT) -> LinkInfo:
    """Set ``mac`` and read it back until it shows (the kernel has been seen to ignore a first request)."""
    deadline = time.monotonic() + timeout
    while True:
        link.set_attrs(ipr, host_link, address=mac)
        host_link = link.get(ipr, host_link.name)
        if host_link.mac.lower() == mac:
            return host_link
        if time.monotonic() > deadline:
            raise CNIError(
                ErrorCode.INTERNAL, f"timed out waiting for host-side interface {host_link.name!r} to accept MAC {mac}"
            )
        time.sleep(0.1)


def wait_link_local(ipr: IPRoute, host_link: LinkInfo, timeout: float = LINK_LOCAL_TIMEOUT) -> IPAddress:
    """The host end's IPv6 link-local address, the pod's IPv6 next hop; it must be the one of :data:`HOST_MAC`.

    If the kernel derived it from the random MAC the link was made with, the
    link is toggled down and up so it is derived again (as Calico does).
    """
    deadline = time.monotonic() + timeout
    while True:
        found = [a.ip for a in addr.addresses(ipr, host_link.index, socket.AF_INET6) if a.ip.is_link_local]
        if HOST_LINK_LOCAL in found:
            return HOST_LINK_LOCAL
        if found:
            with netlink(f"failed to reset {host_link.name}"):
                ipr.link("set", index=host_link.index, state="down")
                ipr.link("set", index=host_link.index, address=HOST_MAC)
                ipr.link("set", index=host_link.index, state="up")
        if time.monotonic() > deadline:
            got = f"got {found[0]}" if found else "none appeared"
            raise CNIError(
                ErrorCode.INTERNAL,
                f"failed to get the IPv6 link-local address of {host_link.name} ({got}): "
                "IPv6 may be disabled on the host",
            )
        time.sleep(0.05)


def host_route(address: IPAddress) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface:
    bits = 32 if address.version == 4 else 128
    return ipaddress.ip_interface(f"{address}/{bits}")


def add_host_route(ipr: IPRoute, host_link: LinkInfo, address: IPAddress) -> None:
    """``<address>/32 dev <host end> scope link``; present on this link is done, on another link an error.

    The second case is a stale route of an earlier workload that had the same
    address (or another network using it): traffic would go there, so ADD
    fails naming it (``SetupRoutes``).
    """
    dst = host_route(address)
    request = {
        "dst": str(address),
        "dst_len": dst.network.prefixlen,
        "family": addr.family_of(address.version),
        "oif": host_link.index,
        "scope": addr.RT_SCOPE_LINK,
        "proto": addr.RTPROT_BOOT,
    }
    try:
        ipr.route("add", **request)
        return
    except NetlinkError as exc:
        if exc.code != errno.EEXIST:
            raise NetError(f"failed to add route {dst} dev {host_link.name}", int(exc.code)) from None
    holders = route_links(ipr, dst)
    if host_link.index in holders:
        return
    names = ", ".join((found.name if (found := link.by_index(ipr, i)) else f"#{i}") for i in holders) or "unknown"
    raise CNIError(
        ErrorCode.INTERNAL,
        f"route {dst} already exists for an interface other than '{host_link.name}': {names}",
        "an earlier workload's route is left over, or another network uses this address",
    )


def route_links(ipr: IPRoute, dst: ipaddress.IPv4Interface | ipaddress.IPv6Interface) -> list[int]:
    """The output links of the main table's routes to exactly ``dst``."""
    family = addr.family_of(dst.version)
    found = []
    with netlink(f"failed to list routes to {dst}"):
        for msg in ipr.get_routes(family=family, table=254):
            if int(msg["dst_len"]) != dst.network.prefixlen:
                continue
            oif = msg.get_attr("RTA_OIF")
            if msg.get_attr("RTA_DST") == str(dst.ip) and oif:
                found.append(int(oif))
    return found
