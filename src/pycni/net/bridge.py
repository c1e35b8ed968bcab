"""Linux bridges: made on first use, never deleted by a DEL (the reference does not either)."""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING, Any

from pycni.net import link, sysctl
from pycni.net.errors import netlink
from pycni.net.link import LinkInfo
from pycni.spec.errors import CNIError, ErrorCode

if TYPE_CHECKING:
    from pyroute2 import IPRoute


def ensure_bridge(
    ipr: IPRoute, name: str, mtu: int = 0, promisc: bool = False, vlan_filtering: bool = False
) -> LinkInfo:
    """The bridge ``name``, created (and brought up) if missing.

    Concurrent ADDs race to create it: EEXIST is success. An existing link of
    another kind is an error rather than something to enslave to.
    """
    existing = link.find(ipr, name)
    if existing is None:
        attrs: dict[str, Any] = {"ifname": name, "kind": "bridge"}
        if mtu:
            attrs["mtu"] = mtu
        if vlan_filtering:
            attrs["br_vlan_filtering"] = 1
        with netlink(f"could not add {name!r}", ignore=(errno.EEXIST,)):
            ipr.link("add", **attrs)
    bridge = existing if existing is not None else link.get(ipr, name)
    if bridge.kind != "bridge":
        raise CNIError(ErrorCode.INTERNAL, f"{name!r} already exists but is not a bridge")
    if existing is not None and vlan_filtering:
        with netlink(f"enable vlan_filtering on {name}"):
            ipr.link("set", index=bridge.index, kind="bridge", br_vlan_filtering=1)
    changed = False
    if promisc and not bridge.promisc:
        link.set_promisc(ipr, bridge)
        changed = True
    # A bridge must not autoconfigure itself from router advertisements.
    sysctl.write(f"net/ipv6/conf/{name}/accept_ra", "0", missing_ok=True)
    if not bridge.up:
        link.set_attrs(ipr, bridge, state="up")
        changed = True
    return link.get(ipr, name) if changed else bridge
