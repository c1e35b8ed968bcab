"""IPv4 autodetection as calico/node does it (``node/pkg/lifecycle/startup/autodetection``), in this namespace.

* ``first-found``: the first interface (in kernel index order) that is not one
  of calico/node's excluded kinds (``docker.*``, ``cbr.*``, ``dummy.*``,
  ``virbr.*``, ``lxcbr.*``, ``veth.*``, ``lo``, ``cali.*``, ``tunl.*``,
  ``flannel.*``, ``kube-ipvs.*``, ``cni.*``, ``vxlan.calico``, ...) with a global IPv4 address;
* ``interface=REGEX[,REGEX]``: the first interface whose name matches one of
  them (Go's ``regexp.MatchString``: a search, not a full match);
* ``skip-interface=REGEX[,...]``: first-found, skipping those too;
* ``can-reach=DEST``: the source address the kernel picks for DEST (``ip route get``);
* ``cidr=CIDR[,...]``: the first address inside one of the CIDRs.

The address keeps its interface's prefix length (``198.51.100.11/24``): the
Node's ``spec.bgp.ipv4Address`` is a CIDR, and CrossSubnet decides "same
subnet" from it. Link-local (169.254/16) and loopback addresses never count.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pycni.fabric.calico.config import ConfigError
from pycni.fabric.calico.nodeconfig import AutodetectMethod
from pycni.net import addr
from pycni.net.errors import NetlinkError

if TYPE_CHECKING:
    from pyroute2 import IPRoute

EXCLUDED_INTERFACES = (
    "docker.*",
    "cbr.*",
    "dummy.*",
    "virbr.*",
    "lxcbr.*",
    "veth.*",
    "lo",
    "cali.*",
    "tunl.*",
    "flannel.*",
    "kube-ipvs.*",
    "cni.*",
    "vxlan.calico",
    "vxlan-v6.calico",
    "wireguard.cali",
    "wg-v6.cali",
    "nodelocaldns.*",
)
_LINK_LOCAL = ipaddress.IPv4Network("169.254.0.0/16")


@dataclass(frozen=True)
class HostAddress:
    """The node's address and the interface that holds it (the VXLAN device's parent)."""

    interface: str
    index: int
    mtu: int
    address: ipaddress.IPv4Interface


def _usable(address: ipaddress.IPv4Interface) -> bool:
    return not (address.ip.is_loopback or address.ip in _LINK_LOCAL or address.ip.is_multicast)


def interfaces(ipr: IPRoute) -> list[tuple[str, int, int, list[ipaddress.IPv4Interface]]]:
    """``(name, index, mtu, IPv4 addresses)`` of every link, in index order."""
    found = []
    for msg in sorted(ipr.get_links(), key=lambda m: int(m["index"])):
        name = str(msg.get_attr("IFLA_IFNAME") or "")
        index = int(msg["index"])
        v4 = [a for a in addr.addresses(ipr, index, socket.AF_INET) if isinstance(a, ipaddress.IPv4Interface)]
        found.append((name, index, int(msg.get_attr("IFLA_MTU") or 0), v4))
    return found


def _matches(name: str, patterns: tuple[str, ...], full: bool = False) -> bool:
    return any((re.fullmatch if full else re.search)(pattern, name) for pattern in patterns)


def _first(
    links: list[tuple[str, int, int, list[ipaddress.IPv4Interface]]],
    include: tuple[str, ...] = (),
    skip: tuple[str, ...] = (),
    within: tuple[ipaddress.IPv4Network, ...] = (),
    *,
    defaults: bool = True,
) -> HostAddress | None:
    for name, index, mtu, addresses in links:
        if include and not _matches(name, include):
            continue
        if defaults and _matches(name, EXCLUDED_INTERFACES, full=True):
            continue
        if skip and _matches(name, skip):
            continue
        for address in addresses:
            if _usable(address) and (not within or any(address.ip in net for net in within)):
                return HostAddress(name, index, mtu, address)
    return None


def _can_reach(ipr: IPRoute, destination: str, links: list[Any]) -> HostAddress | None:
    try:
        target = socket.gethostbyname(destination)
        found = ipr.route("get", dst=target)
    except (OSError, NetlinkError) as exc:
        raise ConfigError(f"IP autodetection can-reach={destination}: no route to it ({exc})") from None
    if not found:
        return None
    source, oif = found[0].get_attr("RTA_PREFSRC"), int(found[0].get_attr("RTA_OIF") or 0)
    for name, index, mtu, addresses in links:
        for address in addresses:
            if str(address.ip) == source and (index == oif or not oif):
                return HostAddress(name, index, mtu, address)
    for name, index, mtu, addresses in links:  # the source lives on another link than the route's (a loopback)
        for address in addresses:
            if str(address.ip) == source:
                return HostAddress(name, index, mtu, address)
    return None


def autodetect(ipr: IPRoute, method: AutodetectMethod) -> HostAddress:
    """This node's IPv4 address by ``method``; :class:`ConfigError` saying what was looked for if none."""
    links = interfaces(ipr)
    found: HostAddress | None
    if method.kind == "interface":
        found = _first(links, include=method.values, defaults=False)
    elif method.kind == "skip-interface":
        found = _first(links, skip=method.values)
    elif method.kind == "cidr":
        networks = tuple(ipaddress.IPv4Network(v, strict=False) for v in method.values)
        found = _first(links, within=networks, defaults=False)
    elif method.kind == "can-reach":
        found = _can_reach(ipr, method.values[0], links)
    else:
        found = _first(links)
    if found is None:
        raise ConfigError(
            f"IP autodetection ({method}) found no IPv4 address on this node's interfaces "
            f"({', '.join(name for name, *_ in links) or 'none'}): set IP, or IP_AUTODETECTION_METHOD=interface=NAME"
        )
    return found


def holder(ipr: IPRoute, address: ipaddress.IPv4Address) -> HostAddress | None:
    """The interface holding ``address`` (with its prefix length), or None."""
    for name, index, mtu, addresses in interfaces(ipr):
        for present in addresses:
            if present.ip == address:
                return HostAddress(name, index, mtu, present)
    return None
