"""VRF devices: find or create one, and move a link into it without losing its config.

Enslaving a link to a VRF makes the kernel flush the link's routes, and its
global IPv6 addresses too unless ``keep_addr_on_down`` is set.
:func:`enslave` saves both first and puts them back, the routes into the
VRF's table, as the reference does. Every function takes a pyroute2
``IPRoute`` bound to the namespace it acts in.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pycni.net import link, rule
from pycni.net.errors import NetError, netlink
from pycni.spec.errors import CNIError, ErrorCode
from pycni.spec.result import IPInterface

if TYPE_CHECKING:
    from pyroute2 import IPRoute

MAX_TABLE = 2**32 - 1
RT_SCOPE_UNIVERSE = 0
IFA_F_NODAD = 0x02
# The reference waits 10 ms, 20 ms, ... 1.28 s (about 2.5 s) for a re-added IPv6 address's route.
ADDRESS_ROUTE_WAITS = tuple(0.01 * 2**n for n in range(8))


@dataclass(frozen=True)
class Vrf:
    index: int
    name: str
    table: int


def _vrf_table(msg: Any) -> int:
    return int(msg.get_nested("IFLA_LINKINFO", "IFLA_INFO_DATA", "IFLA_VRF_TABLE") or 0)


def find(ipr: IPRoute, name: str) -> Vrf | None:
    """The VRF called ``name``, ``None`` if no link has that name; another kind of link is an error."""
    found = link.find(ipr, name)
    if found is None:
        return None
    if found.kind != "vrf":
        raise CNIError(ErrorCode.INTERNAL, f"Netlink {name} is not a VRF")
    msg = ipr.get_links(found.index)[0]
    return Vrf(found.index, found.name, _vrf_table(msg))


def tables(ipr: IPRoute) -> set[int]:
    """The tables of every VRF in the namespace."""
    return {_vrf_table(msg) for msg in ipr.get_links() if msg.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND") == "vrf"}


def first_free_table(taken: set[int]) -> int:
    """The lowest table ID from 1 that no VRF uses."""
    table = rule.first_free_table(taken, 1)
    if table > MAX_TABLE:
        raise CNIError(ErrorCode.INTERNAL, "findFreeRoutingTableID: Failed to find an available routing id")
    return table


def create(ipr: IPRoute, name: str, table: int = 0) -> Vrf:
    """Create the VRF ``name`` (on the first free table when ``table`` is 0) and set it up."""
    if table == 0:
        table = first_free_table(tables(ipr))
    with netlink(f"could not add VRF {name}"):
        ipr.link("add", ifname=name, kind="vrf", vrf_table=table)
    created = link.get(ipr, name)
    try:
        with netlink(f"could not set link up for VRF {name}"):
            ipr.link("set", index=created.index, state="up")
    except NetError:
        link.delete(ipr, name)  # a half-made VRF would be found, and trusted, by the next ADD
        raise
    return Vrf(created.index, created.name, table)


def members(ipr: IPRoute, vrf: Vrf) -> list[str]:
    """The names of the links enslaved to ``vrf``."""
    return [str(msg.get("ifname")) for msg in ipr.get_links() if int(msg.get("master") or 0) == vrf.index]


def _global_ipv6(ipr: IPRoute, index: int) -> list[tuple[IPInterface, int]]:
    """``(address, flags)`` of the link's global-scope IPv6 addresses."""
    return [
        (ipaddress.ip_interface(f"{msg.get('address')}/{msg['prefixlen']}"), int(msg.get("IFA_FLAGS") or msg["flags"]))
        for msg in ipr.get_addr(index=index, family=socket.AF_INET6)
        if msg.get("address") and int(msg["scope"]) == RT_SCOPE_UNIVERSE
    ]


def enslave(ipr: IPRoute, vrf: Vrf, ifname: str) -> None:
    """Make ``vrf`` the master of ``ifname``, keeping its global IPv6 addresses and its routes.

    Routes of universe scope (not the connected or local ones the kernel makes
    itself) are re-added in the VRF's table.
    """
    target = link.find(ipr, ifname)
    if target is None:
        raise CNIError(ErrorCode.INTERNAL, f"could not get link by name {ifname}")
    if target.master:
        master = link.by_index(ipr, target.master)
        held_by = master.name if master else f"index {target.master}"
        raise CNIError(ErrorCode.INTERNAL, f"interface {ifname} has already a master set: {held_by}")
    before = _global_ipv6(ipr, target.index)
    routes = rule.link_routes(ipr, target.index, scope=rule.RT_SCOPE_UNIVERSE)
    with netlink(f"could not set vrf {vrf.name} as master of {ifname}"):
        ipr.link("set", index=target.index, master=vrf.index)
    present = {address for address, _ in _global_ipv6(ipr, target.index)}
    for address, flags in before:
        if address in present:
            continue
        _readd_address(ipr, target.index, address, flags, f"{ifname} @ {vrf.name}")
        _wait_for_local_route(ipr, vrf, target.index, address, ifname)
    for route in routes:
        rule.replace_route(ipr, route, vrf.table)


def _readd_address(ipr: IPRoute, index: int, address: IPInterface, flags: int, where: str) -> None:
    with netlink(f"could not restore address {address} to {where}"):
        ipr.addr(
            "add",
            index=index,
            family=socket.AF_INET6,
            address=str(address.ip),
            prefixlen=address.network.prefixlen,
            flags=flags & IFA_F_NODAD,
        )


def _wait_for_local_route(ipr: IPRoute, vrf: Vrf, index: int, address: IPInterface, ifname: str) -> None:
    """Wait until the kernel has put the re-added address's host route into the VRF's table."""
    host = ipaddress.ip_interface(f"{address.ip}/128")
    for delay in (*ADDRESS_ROUTE_WAITS, None):
        if any(r.dst == host for r in rule.link_routes(ipr, index, vrf.table)):
            return
        if delay is None:
            break
        time.sleep(delay)
    raise CNIError(
        ErrorCode.INTERNAL,
        f"failed getting local/host addresses for {ifname} in table {vrf.table} with dst {address}",
    )


def release(ipr: IPRoute, vrf: Vrf, ifname: str) -> None:
    """Take ``ifname`` out of ``vrf``; a missing link or one in another master is left alone."""
    target = link.find(ipr, ifname)
    if target is None or target.master != vrf.index:
        return
    with netlink(f"resetMaster: could not reset master of {ifname}"):
        ipr.link("set", index=target.index, master=0)


def delete(ipr: IPRoute, vrf: Vrf) -> None:
    link.delete(ipr, vrf.name)
