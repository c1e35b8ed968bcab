"""Routes by their full identity, for reconcilers: dump a table's routes with every attribute, write and delete exactly.

:mod:`pycni.net.rule` copies a link's routes between tables; this module
serves :mod:`pycni.dataplane`, which compares what it wants with what the
kernel holds and so needs what ``rule.KernelRoute`` leaves out (onlink, MTU,
TOS) and needs a write to say *how* it failed: an ``add`` is refused with
EEXIST when any route holds the key (the reconciler never overwrites a route
it does not own), a write to a missing or down link fails with ENODEV or
ENETDOWN (the route waits for its link). So writes raise
:class:`~pycni.net.errors.NetError` with the kernel's errno and ignore nothing.

The kernel keys a route by (table, destination, TOS, metric): a second route
with the same key is refused by ``add`` and overwritten by ``replace``,
whoever owns it. A delete that names the protocol only matches a route of
that protocol, so a reconciler's delete can never remove a route someone else
put at the same key.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pyroute2.netlink.exceptions import NetlinkError

from pycni.net import link
from pycni.net.errors import NetError, netlink

if TYPE_CHECKING:
    from pyroute2 import IPRoute

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

RT_TABLE_MAIN = 254
RT_SCOPE_UNIVERSE = 0
RT_SCOPE_LINK = 253
RT_SCOPE_HOST = 254
RT_SCOPE_NOWHERE = 255  # a delete's wildcard for the scope (what `ip route del` sends)
RTN_UNSPEC = 0  # a delete's wildcard for the type
RTN_UNICAST = 1
RTN_LOCAL = 2
RTN_BLACKHOLE = 6
RTN_UNREACHABLE = 7
RTN_PROHIBIT = 8
RTN_THROW = 9
RTNH_F_ONLINK = 0x4
RTM_F_CLONED = 0x200  # cache entries in a dump, not configuration
IPV6_DEFAULT_METRIC = 1024  # the kernel stores metric 0 of an IPv6 route as 1024
_GONE = (errno.ESRCH, errno.ENOENT)


@dataclass(frozen=True, slots=True)
class RouteMsg:
    """One route as the kernel reports it (or as it is to be written), every attribute a reconciler compares."""

    dst: IPNetwork
    table: int = RT_TABLE_MAIN
    metric: int = 0
    tos: int = 0
    type: int = RTN_UNICAST
    proto: int = 0
    scope: int = RT_SCOPE_UNIVERSE
    oif: int = 0
    gateway: IPAddress | None = None
    onlink: bool = False
    src: IPAddress | None = None
    mtu: int = 0

    @property
    def family(self) -> int:
        return socket.AF_INET if self.dst.version == 4 else socket.AF_INET6

    def __str__(self) -> str:
        kind = "" if self.type == RTN_UNICAST else f"type {self.type} "
        via = f" via {self.gateway}" if self.gateway is not None else ""
        dev = f" dev #{self.oif}" if self.oif else ""
        onlink = " onlink" if self.onlink else ""
        return f"{kind}{self.dst}{via}{dev}{onlink} proto {self.proto} metric {self.metric} table {self.table}"


def _mtu(msg: Any) -> int:
    metrics = msg.get("RTA_METRICS")
    if not metrics:
        return 0
    return int(dict(metrics.get("attrs", [])).get("RTAX_MTU") or 0)


def parse(msg: Any) -> RouteMsg:
    """A :class:`RouteMsg` from a pyroute2 RTM_NEWROUTE message."""
    family = int(msg["family"])
    dst = msg.get("RTA_DST") or ("0.0.0.0" if family == socket.AF_INET else "::")
    gateway, src = msg.get("RTA_GATEWAY"), msg.get("RTA_PREFSRC")
    return RouteMsg(
        dst=ipaddress.ip_network(f"{dst}/{msg['dst_len']}"),
        table=int(msg.get("RTA_TABLE") or msg["table"]),
        metric=int(msg.get("RTA_PRIORITY") or 0),
        tos=int(msg["tos"]),
        type=int(msg["type"]),
        proto=int(msg["proto"]),
        scope=int(msg["scope"]),
        oif=int(msg.get("RTA_OIF") or 0),
        gateway=ipaddress.ip_address(gateway) if gateway else None,
        onlink=bool(int(msg["flags"]) & RTNH_F_ONLINK),
        src=ipaddress.ip_address(src) if src else None,
        mtu=_mtu(msg),
    )


def dump(ipr: IPRoute, family: int, tables: Collection[int] | None = None) -> Iterator[RouteMsg]:
    """The routes of ``family`` in ``tables`` (all tables if ``None``); cache clones left out.

    ``dump_filter=None`` asks pyroute2 for the plain dump: its own table filter
    re-checks every message in Python and costs more than the check below.
    """
    with netlink("failed to list routes"):
        for msg in ipr.route("dump", family=family, dump_filter=None):
            if int(msg["flags"]) & RTM_F_CLONED:
                continue
            if tables is not None and int(msg.get("RTA_TABLE") or msg["table"]) not in tables:
                continue
            yield parse(msg)


def _request(route: RouteMsg) -> dict[str, Any]:
    request: dict[str, Any] = {
        "family": route.family,
        "dst": str(route.dst.network_address),
        "dst_len": route.dst.prefixlen,
        "table": route.table,
        "tos": route.tos,
        "type": route.type,
        "proto": route.proto,
        "scope": route.scope,
    }
    if route.metric:
        request["priority"] = route.metric
    if route.oif:
        request["oif"] = route.oif
    if route.gateway is not None:
        request["gateway"] = str(route.gateway)
    if route.onlink:
        request["flags"] = RTNH_F_ONLINK
    if route.src is not None:
        request["prefsrc"] = str(route.src)
    if route.mtu:
        request["metrics"] = {"mtu": route.mtu}
    return request


def add(ipr: IPRoute, route: RouteMsg) -> None:
    """``ip route add``: refused with EEXIST if any route holds the key (raised, not ignored)."""
    with netlink(f"failed to add route {route}"):
        ipr.route("add", **_request(route))


def replace(ipr: IPRoute, route: RouteMsg) -> None:
    """``ip route replace``: overwrites whatever route holds the key, so only for a key the caller owns."""
    with netlink(f"failed to replace route {route}"):
        ipr.route("replace", **_request(route))


def delete(ipr: IPRoute, route: RouteMsg) -> bool:
    """Delete the route at ``route``'s key if it has ``route.proto``; ``False`` if there was none.

    Type and scope are sent as wildcards (as ``ip route del`` does), so a
    route whose type or scope changed behind our back still goes; the
    protocol is not a wildcard, so a route of another protocol never does.
    The link and gateway are sent too: IPv4 reads metric 0 as "any metric",
    and they keep the delete on this route rather than a sibling with another.
    """
    request: dict[str, Any] = {
        "family": route.family,
        "dst": str(route.dst.network_address),
        "dst_len": route.dst.prefixlen,
        "table": route.table,
        "tos": route.tos,
        "proto": route.proto,
        "scope": RT_SCOPE_NOWHERE,
        "type": RTN_UNSPEC,
    }
    if route.metric:
        request["priority"] = route.metric
    if route.oif:
        request["oif"] = route.oif
    if route.gateway is not None:
        request["gateway"] = str(route.gateway)
    try:
        with netlink(f"failed to delete route {route}"):
            ipr.route("del", **request)
    except NetError as exc:
        if exc.errno in _GONE:
            return False
        raise
    return True


# -- the links routes name -----------------------------------------------------

IFF_UP = 0x1


@dataclass(frozen=True, slots=True)
class LinkState:
    """What a route writer needs of a link: its index and whether it is up (a down link refuses routes)."""

    index: int
    up: bool


def link_states(ipr: IPRoute) -> dict[str, LinkState]:
    """Every link of the namespace by name, in one dump (routes name links by index; callers know names)."""
    states = {}
    with netlink("failed to list links"):
        for msg in ipr.link("dump"):
            name = msg.get("IFLA_IFNAME")
            if name:
                states[str(name)] = LinkState(int(msg["index"]), bool(int(msg["flags"]) & IFF_UP))
    return states


def link_state(ipr: IPRoute, name: str) -> LinkState | None:
    """One link's state by name (a direct RTM_GETLINK), or ``None`` if there is no such link."""
    try:
        found = link.find(ipr, name)
    except NetlinkError as exc:
        raise NetError(f"look up link {name}", int(exc.code)) from None
    return LinkState(found.index, found.up) if found is not None else None


def link_index_exists(ipr: IPRoute, index: int) -> bool:
    """Whether a link with ``index`` exists (under any name)."""
    try:
        return link.by_index(ipr, index) is not None
    except NetlinkError as exc:
        raise NetError(f"look up link #{index}", int(exc.code)) from None
