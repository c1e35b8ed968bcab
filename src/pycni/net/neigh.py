"""Neighbour (ARP/NDP) and vxlan FDB entries with their state, for reconcilers.

:mod:`pycni.net.overlay` writes Flannel's entries (IPv4 only) and lists
``(ip, mac)`` pairs; a reconciler also needs each entry's state (only
permanent entries are anyone's configuration: the rest the kernel learnt and
ages out), IPv6 neighbours, and FDB ``append`` (the all-zeros flood MAC may
have many remotes; ``replace`` would overwrite the first).

Dumps ask pyroute2 for everything (``dump_filter=None``) and filter on the
message header: pyroute2's own ``ifindex`` filter compares the ``NDA_IFINDEX``
attribute where present, and so drops the FDB entry a vxlan device's
``remote`` makes (its ``NDA_IFINDEX`` names the underlay link).

Writes raise :class:`~pycni.net.errors.NetError` with the kernel's errno;
deletes of what is already gone return ``False``.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pycni.net.errors import NetError, netlink

if TYPE_CHECKING:
    from pyroute2 import IPRoute

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

AF_BRIDGE = 7
NUD_PERMANENT = 0x80
NTF_SELF = 0x02
_GONE = (errno.ENOENT, errno.ESRCH, errno.ENODEV, errno.EADDRNOTAVAIL)


@dataclass(frozen=True, slots=True)
class Neighbour:
    """One neighbour entry: ``ip`` reached at link-layer address ``mac`` on link ``ifindex``."""

    ifindex: int
    ip: IPAddress
    mac: str  # lower case, colon form; "" if the entry has none (INCOMPLETE, FAILED)
    state: int

    @property
    def permanent(self) -> bool:
        return bool(self.state & NUD_PERMANENT)


@dataclass(frozen=True, slots=True)
class FdbEntry:
    """One vxlan FDB remote: frames for ``mac`` go to ``dst`` (``bridge fdb ... dst``)."""

    ifindex: int
    mac: str
    dst: IPAddress
    state: int
    flags: int

    @property
    def permanent(self) -> bool:
        return bool(self.state & NUD_PERMANENT)


def _family(ip: IPAddress) -> int:
    return socket.AF_INET if ip.version == 4 else socket.AF_INET6


def neighbours(ipr: IPRoute, ifindex: int, family: int = socket.AF_INET) -> list[Neighbour]:
    """Every ``family`` neighbour entry on link ``ifindex``, whatever its state."""
    found = []
    with netlink("failed to list neighbours"):
        for msg in ipr.neigh("dump", family=family, dump_filter=None):
            if int(msg["ifindex"]) != ifindex or int(msg["family"]) != family:
                continue
            dst = msg.get("NDA_DST")
            if not dst:
                continue
            mac = str(msg.get("NDA_LLADDR") or "").lower()
            found.append(Neighbour(ifindex, ipaddress.ip_address(dst), mac, int(msg["state"])))
    return found


def set_neighbour(ipr: IPRoute, ifindex: int, ip: IPAddress, mac: str) -> None:
    """A permanent neighbour ``ip`` -> ``mac`` (``ip neigh replace ... nud permanent``)."""
    with netlink(f"failed to set neighbour {ip} lladdr {mac}"):
        ipr.neigh("replace", ifindex=ifindex, dst=str(ip), lladdr=mac, state=NUD_PERMANENT, family=_family(ip))


def delete_neighbour(ipr: IPRoute, ifindex: int, ip: IPAddress) -> bool:
    """Remove the neighbour entry of ``ip``; ``False`` if there was none."""
    return _delete(f"failed to delete neighbour {ip}", ipr, ifindex=ifindex, dst=str(ip), family=_family(ip))


def fdb_entries(ipr: IPRoute, ifindex: int) -> list[FdbEntry]:
    """The FDB entries of link ``ifindex`` that name a remote (a vxlan device's own table)."""
    found = []
    with netlink("failed to list fdb entries"):
        for msg in ipr.neigh("dump", family=AF_BRIDGE, dump_filter=None):
            if int(msg["ifindex"]) != ifindex:
                continue
            dst, mac = msg.get("NDA_DST"), msg.get("NDA_LLADDR")
            if not dst or not mac:
                continue
            found.append(
                FdbEntry(ifindex, str(mac).lower(), ipaddress.ip_address(dst), int(msg["state"]), int(msg["flags"]))
            )
    return found


def set_fdb(ipr: IPRoute, ifindex: int, mac: str, dst: IPAddress, append: bool = False) -> None:
    """``bridge fdb replace|append <mac> dev <vxlan> dst <dst> self permanent``.

    ``replace`` moves a unicast MAC to ``dst`` in one step; the kernel refuses
    it for the all-zeros and multicast MACs, which take ``append`` (one more remote).
    """
    command = "append" if append else "replace"
    with netlink(f"failed to {command} fdb entry {mac} dst {dst}"):
        ipr.neigh(
            command, family=AF_BRIDGE, ifindex=ifindex, lladdr=mac, dst=str(dst), state=NUD_PERMANENT, flags=NTF_SELF
        )


def delete_fdb(ipr: IPRoute, ifindex: int, mac: str, dst: IPAddress) -> bool:
    """Remove the remote ``dst`` of ``mac`` only (other remotes of the MAC stay); ``False`` if it was gone."""
    return _delete(
        f"failed to delete fdb entry {mac} dst {dst}",
        ipr,
        family=AF_BRIDGE,
        ifindex=ifindex,
        lladdr=mac,
        dst=str(dst),
        flags=NTF_SELF,
    )


def _delete(action: str, ipr: IPRoute, **request: Any) -> bool:
    try:
        with netlink(action):
            ipr.neigh("del", **request)
    except NetError as exc:
        if exc.errno in _GONE:
            return False
        raise
    return True
