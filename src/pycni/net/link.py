"""Links: lookup, state, attributes, bridge ports and deletion.

Every function takes a pyroute2 ``IPRoute`` bound to the namespace it acts
in (see :func:`pycni.net.netns.iproute`). Deletion tolerates a missing link,
so DEL can always be retried.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pyroute2.netlink.exceptions import NetlinkError

from pycni.net.errors import LinkNotFound, netlink

if TYPE_CHECKING:
    from pyroute2 import IPRoute

IFF_UP = 0x1
IFF_PROMISC = 0x100
IFF_ALLMULTI = 0x200


@dataclass
class LinkInfo:
    """The attributes of a link that plugins decide on."""

    index: int
    name: str
    kind: str
    mac: str
    mtu: int
    flags: int
    operstate: str
    master: int
    peer_index: int  # IFLA_LINK: a veth's peer, a macvlan's parent (0 if none)
    alias: str

    @property
    def up(self) -> bool:
        return bool(self.flags & IFF_UP)

    @property
    def promisc(self) -> bool:
        return bool(self.flags & IFF_PROMISC)


def _info(msg: Any) -> LinkInfo:
    return LinkInfo(
        index=int(msg["index"]),
        name=str(msg.get("ifname")),
        kind=str(msg.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND") or ""),
        mac=str(msg.get("address") or ""),
        mtu=int(msg.get("mtu") or 0),
        flags=int(msg["flags"]),
        operstate=str(msg.get("operstate") or ""),
        master=int(msg.get("master") or 0),
        peer_index=int(msg.get("link") or 0),
        alias=str(msg.get("ifalias") or ""),
    )


def find(ipr: IPRoute, name: str) -> LinkInfo | None:
    """The link called ``name``, or ``None``.

    A direct RTM_GETLINK by name: ``get_links(ifname=...)`` would dump every
    link and filter in Python, which costs ~3x as much and grows with the
    number of containers on the host.
    """
    try:
        found = ipr.link("get", ifname=name)
    except NetlinkError as exc:
        if exc.code == errno.ENODEV:
            return None
        raise
    return _info(found[0]) if found else None


def get(ipr: IPRoute, name: str) -> LinkInfo:
    link = find(ipr, name)
    if link is None:
        raise LinkNotFound(name)
    return link


def by_index(ipr: IPRoute, index: int) -> LinkInfo | None:
    try:
        found = ipr.link("get", index=index)
    except NetlinkError as exc:
        if exc.code == errno.ENODEV:
            return None
        raise
    return _info(found[0]) if found else None


def index_of(ipr: IPRoute, name: str) -> int:
    return get(ipr, name).index


def set_up(ipr: IPRoute, name: str, up: bool = True) -> int:
    """Bring ``name`` up (or down); returns its index."""
    index = index_of(ipr, name)
    with netlink(f"set {name} {'up' if up else 'down'}"):
        ipr.link("set", index=index, state="up" if up else "down")
    return index


def is_up(ipr: IPRoute, name: str) -> bool:
    return get(ipr, name).up


def set_attrs(ipr: IPRoute, link: LinkInfo, **attrs: Any) -> None:
    """Set plain link attributes (``mtu``, ``address``, ``master``, ``ifname``, ``ifalias``)."""
    with netlink(f"set {', '.join(attrs)} of {link.name}"):
        ipr.link("set", index=link.index, **attrs)


def set_promisc(ipr: IPRoute, link: LinkInfo, on: bool = True) -> None:
    with netlink(f"set promiscuous mode of {link.name}"):
        ipr.link("set", index=link.index, flags=IFF_PROMISC if on else 0, change=IFF_PROMISC)


def set_allmulti(ipr: IPRoute, link: LinkInfo, on: bool = True) -> None:
    """Receive all multicast (``ip link set allmulticast``)."""
    with netlink(f"set all-multicast mode of {link.name}"):
        ipr.link("set", index=link.index, flags=IFF_ALLMULTI if on else 0, change=IFF_ALLMULTI)


def txqlen(ipr: IPRoute, link: LinkInfo) -> int:
    """The link's transmit queue length (``IFLA_TXQLEN``)."""
    with netlink(f"read the transmit queue length of {link.name}"):
        found = ipr.get_links(link.index)
    return int(found[0].get("txqlen") or 0)


def set_bridge_port(ipr: IPRoute, link: LinkInfo, hairpin: bool = False, isolated: bool = False) -> None:
    """Bridge-port flags of an enslaved link (hairpin = IFLA_BRPORT_MODE)."""
    if not (hairpin or isolated):
        return
    attrs = {}
    if hairpin:
        attrs["mode"] = 1
    if isolated:
        attrs["isolated"] = 1
    with netlink(f"set bridge port flags of {link.name}"):
        ipr.brport("set", index=link.index, **attrs)


def bridge_vlan_add(ipr: IPRoute, link: LinkInfo, vid: int, pvid: bool = False, untagged: bool = False) -> None:
    """Add VLAN ``vid`` to a bridge port (``bridge vlan add``)."""
    flags = (0x2 if pvid else 0) | (0x4 if untagged else 0)
    with netlink(f"add vlan {vid} to {link.name}"):
        ipr.vlan_filter("add", index=link.index, vlan_info={"vid": vid, "flags": flags})


def bridge_vlan_del(ipr: IPRoute, link: LinkInfo, vid: int) -> None:
    with netlink(f"remove vlan {vid} from {link.name}"):
        ipr.vlan_filter("del", index=link.index, vlan_info={"vid": vid})


def delete(ipr: IPRoute, name: str) -> bool:
    """Delete ``name``; ``False`` if it was already gone."""
    link = find(ipr, name)
    if link is None:
        return False
    try:
        ipr.link("del", index=link.index)
    except NetlinkError as exc:
        if exc.code in (errno.ENODEV, errno.ENOENT):
            return False
        raise
    return True


def random_name(prefix: str = "veth") -> str:
    """``veth`` + 8 hex digits, as the reference names host-side links."""
    return prefix + os.urandom(4).hex()
