"""Policy routing: ip rules, and the routes of the tables they select.

sbr sends a container's traffic through a table of its own (``from <ip>
lookup N``) and moves the interface's routes there; vrf re-adds a link's routes
in its VRF's table. This module owns both halves: rules (list, add, delete,
free table IDs) and routes handled *as they are in the kernel*, with their
protocol, scope, metric and source kept, so a route can be copied into another
table or deleted exactly. Adding what is there is success and deleting what is
gone is success, so ADD and DEL can be retried.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from pyroute2.netlink.exceptions import NetlinkError

from pycni.net.errors import NetError, netlink
from pycni.spec.result import IPAddress, IPInterface

if TYPE_CHECKING:
    from pyroute2 import IPRoute

RT_TABLE_MAIN = 254
RESERVED_TABLES = frozenset((253, 254, 255))  # default, main, local
RT_SCOPE_UNIVERSE = 0
RT_SCOPE_LINK = 253
RTPROT_BOOT = 3  # what `ip route` and Go's netlink record when no origin is given
RTN_UNICAST = 1
RTM_F_CLONED = 0x200  # cache entries in a dump, not configuration
FR_ACT_TO_TBL = 1
FAMILIES = (socket.AF_INET, socket.AF_INET6)
_DUMP_ALL_FAMILIES = 255  # the kernel dumps every family for an invalid one (pyroute2's default)


# -- rules -------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    """One ip rule, with what DEL needs to name it exactly."""

    family: int
    table: int
    priority: int | None
    src: IPInterface | None  # ``from <src>/<len>``; None for ``from all``
    action: int = FR_ACT_TO_TBL


def _rule(msg: Any) -> Rule:
    src = msg.get("FRA_SRC")
    return Rule(
        family=int(msg["family"]),
        table=int(msg.get("FRA_TABLE") or msg["table"]),
        priority=msg.get("FRA_PRIORITY"),
        src=ipaddress.ip_interface(f"{src}/{msg['src_len']}") if src else None,
        action=int(msg["action"]),
    )


def rules(ipr: IPRoute, table: int | None = None) -> list[Rule]:
    """The IPv4 and IPv6 rules, in kernel order (only those of ``table`` if given)."""
    found = []
    for family in FAMILIES:
        for msg in ipr.get_rules(family=family):
            parsed = _rule(msg)
            if table is None or parsed.table == table:
                found.append(parsed)
    return found


def add_source_rule(ipr: IPRoute, src: IPAddress, table: int) -> bool:
    """``ip rule add from <src>/32|128 table <table>``; False if that rule already exists.

    No priority is sent, so the kernel places it just above the highest existing
    rule, as ``ip rule add`` and the reference do. The kernel would happily add a
    second identical rule (with the next priority), so existence is checked first.
    """
    host = ipaddress.ip_interface(f"{src}/{src.max_prefixlen}")
    family = socket.AF_INET if src.version == 4 else socket.AF_INET6
    if any(r.family == family and r.src == host and r.table == table for r in rules(ipr)):
        return False
    try:
        ipr.rule("add", family=family, src=str(src), src_len=src.max_prefixlen, table=table, priority=None)
    except NetlinkError as exc:
        if exc.code != errno.EEXIST:
            raise NetError(f"failed to add rule from {host} table {table}", int(exc.code)) from None
        return False  # added by a racing call: not ours to remove
    return True


def delete_rule(ipr: IPRoute, rule: Rule) -> None:
    """Delete exactly ``rule``; already gone is success."""
    kwargs: dict[str, Any] = {"family": rule.family, "table": rule.table, "action": rule.action}
    kwargs["priority"] = rule.priority
    if rule.src is not None:
        kwargs["src"] = str(rule.src.ip)
        kwargs["src_len"] = rule.src.network.prefixlen
    try:
        ipr.rule("del", **kwargs)
    except NetlinkError as exc:
        if exc.code not in (errno.ENOENT, errno.ESRCH):
            source = rule.src or "all"
            raise NetError(f"failed to delete rule from {source} table {rule.table}", int(exc.code)) from None


def used_tables(ipr: IPRoute) -> set[int]:
    """Every table some rule points to or some route lives in."""
    tables = {r.table for r in rules(ipr)}
    tables.update(int(msg.get("table") or msg["table"]) for msg in ipr.get_routes(family=_DUMP_ALL_FAMILIES))
    return tables


def first_free_table(used: Iterable[int], start: int) -> int:
    """The lowest table ID >= ``start`` not in ``used``."""
    taken = set(used)
    table = start
    while table in taken:
        table += 1
    return table


# -- routes as the kernel holds them -------------------------------------------


@dataclass(frozen=True)
class KernelRoute:
    """A route with every attribute that makes it this route (for copying and exact deletion)."""

    family: int
    dst: IPInterface  # 0.0.0.0/0 or ::/0 for a default route
    table: int
    oif: int
    gateway: IPAddress | None = None
    prefsrc: IPAddress | None = None
    scope: int = RT_SCOPE_UNIVERSE
    proto: int = RTPROT_BOOT
    type: int = RTN_UNICAST
    priority: int | None = None

    def __str__(self) -> str:
        via = f" via {self.gateway}" if self.gateway else ""
        src = f" src {self.prefsrc}" if self.prefsrc else ""
        return f"{self.dst.network}{via} dev #{self.oif}{src} table {self.table}"


def _kernel_route(msg: Any) -> KernelRoute:
    family = int(msg["family"])
    dst = msg.get("dst") or ("0.0.0.0" if family == socket.AF_INET else "::")
    gateway, prefsrc = msg.get("gateway"), msg.get("prefsrc")
    return KernelRoute(
        family=family,
        dst=ipaddress.ip_interface(f"{dst}/{msg['dst_len']}"),
        table=int(msg.get("table") or msg["table"]),
        oif=int(msg.get("oif") or 0),
        gateway=ipaddress.ip_address(gateway) if gateway else None,
        prefsrc=ipaddress.ip_address(prefsrc) if prefsrc else None,
        scope=int(msg["scope"]),
        proto=int(msg["proto"]),
        type=int(msg["type"]),
        priority=msg.get("priority"),
    )


def link_routes(ipr: IPRoute, oif: int, table: int = RT_TABLE_MAIN, scope: int | None = None) -> list[KernelRoute]:
    """The routes out of link ``oif`` in ``table`` (both families), optionally of one ``scope``."""
    found = []
    for msg in ipr.get_routes(family=_DUMP_ALL_FAMILIES):
        if int(msg["family"]) not in FAMILIES or int(msg["flags"]) & RTM_F_CLONED:
            continue
        route = _kernel_route(msg)
        if route.oif == oif and route.table == table and (scope is None or route.scope == scope):
            found.append(route)
    return found


def _route_kwargs(route: KernelRoute) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "family": route.family,
        "dst": str(route.dst.network.network_address),
        "dst_len": route.dst.network.prefixlen,
        "table": route.table,
        "oif": route.oif,
        "scope": route.scope,
        "proto": route.proto,
        "type": route.type,
    }
    if route.gateway is not None:
        kwargs["gateway"] = str(route.gateway)
    if route.prefsrc is not None:
        kwargs["prefsrc"] = str(route.prefsrc)
    if route.priority is not None:
        kwargs["priority"] = route.priority
    return kwargs


def replace_route(ipr: IPRoute, route: KernelRoute, table: int | None = None) -> KernelRoute:
    """``ip route replace`` of ``route`` (into ``table`` if given); returns the route as written.

    Flags are not copied: a route the kernel marked (linkdown, offload) would be refused.
    """
    written = replace(route, table=table) if table is not None else route
    with netlink(f"failed to add route '{written}'"):
        ipr.route("replace", **_route_kwargs(written))
    return written


def delete_route(ipr: IPRoute, route: KernelRoute) -> None:
    """Delete exactly ``route``; already gone (or its link gone) is success."""
    with netlink(f"failed to delete route '{route}'", ignore=(errno.ESRCH, errno.ENOENT, errno.ENODEV)):
        ipr.route("del", **_route_kwargs(route))
