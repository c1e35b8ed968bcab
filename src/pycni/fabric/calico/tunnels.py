"""The tunnel devices Felix owns: ``vxlan.calico`` and ``tunl0``, made to match the calculation.

Each manager compares the device with what is desired and writes only the
difference (a link read per apply; no write when it already fits), so a
periodic resync changes nothing on a node in order.

``vxlan.calico`` (``felix/dataplane/linux/vxlan_mgr.go``): VNI, UDP port,
local address (the node's IP), parent device and MAC as desired, learning
off, the tunnel address as its one address (``/32``), up. A device that
differs in VNI, port, local address, parent or learning is deleted and made
again (the kernel cannot change those); MTU and MAC are changed in place.
An existing device that fits is kept, so an agent restart disturbs nothing.
When no VXLAN pool is left the device is deleted (Felix's clean-up).

``tunl0`` (``ipip_mgr.go``): the ipip module's fallback device; created if
missing, MTU and the IPIP tunnel address set, up. This kernel may have no
ipip module at all: the kernel answers EOPNOTSUPP and :class:`NoIPIP` says
so (the agent logs it once and serves the other pools).
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import socket
from typing import TYPE_CHECKING, Any

from pycni.fabric.calico.calculation import IpipDevice, VxlanDevice
from pycni.net import addr, link, overlay, sysctl
from pycni.net.errors import NetError, NetlinkError, netlink
from pycni.spec.errors import CNIError, ErrorCode

if TYPE_CHECKING:
    from pyroute2 import IPRoute

log = logging.getLogger("pycni.fabric.calico.tunnels")


class NoIPIP(CNIError):
    """The kernel cannot make an ipip device (no ipip module)."""

    def __init__(self, name: str) -> None:
        super().__init__(
            ErrorCode.INTERNAL,
            f"{name} cannot be created on this kernel: it has no ipip support (Unknown device type); "
            "pools with ipipMode Always/CrossSubnet cannot be served on this node: use vxlanMode instead",
        )


def vxlan_spec(desired: VxlanDevice, parent_index: int) -> overlay.VxlanSpec:
    return overlay.VxlanSpec(
        name=desired.name,
        vni=desired.vni,
        local=str(desired.local),
        link_index=parent_index,
        port=desired.port,
        learning=False,
        mtu=desired.mtu,
        mac=desired.mac,
    )


def vxlan_mismatch(want: overlay.VxlanSpec, have: overlay.VxlanInfo) -> str:
    """What about an existing device the kernel cannot change in place, or ``""`` if it fits."""
    checks = [
        ("type", have.kind, "vxlan"),
        ("VNI", have.vni, want.vni),
        ("port", have.port, want.port),
        ("local address", have.local, want.local),
        ("parent device", have.link_index, want.link_index),
        ("learning", have.learning, want.learning),
        ("group", have.group, ""),
    ]
    for what, found, wanted in checks:
        if found != wanted:
            return f"{what} {_shown(found)} instead of {_shown(wanted)}"
    return ""


def _shown(value: object) -> str:
    return str(value) if isinstance(value, bool) or value else "none"


def ipip_request(name: str, mtu: int) -> dict[str, Any]:
    """The ``link("add")`` keywords for tunl0 (``ip link add tunl0 type ipip``, Felix's ``netlink.Iptun``)."""
    request: dict[str, Any] = {"ifname": name, "kind": "ipip"}
    if mtu:
        request["mtu"] = mtu
    return request


def _ensure_single_address(
    ipr: IPRoute, index: int, name: str, wanted: ipaddress.IPv4Address | None
) -> tuple[bool, bool]:
    """The device's only IPv4 address is ``wanted``/32 (none if ``wanted`` is None): (wrote, removed one).

    The new address is added before the old one goes: a device left with no IPv4
    address has every IPv4 route through it flushed by the kernel. Routes that
    used the old one as their source go all the same, so a removal is reported
    for the route table to be read back.
    """
    target = ipaddress.IPv4Interface(f"{wanted}/32") if wanted is not None else None
    existing = addr.addresses(ipr, index, socket.AF_INET)
    added = target is not None and target not in existing
    if added and target is not None:
        addr.add_address(ipr, index, target, name)
    removed = [address for address in existing if address != target]
    for address in removed:
        addr.del_address(ipr, index, address)
    return added or bool(removed), bool(removed)


class VxlanManager:
    """Keeps ``vxlan.calico`` as desired; :meth:`apply` returns True when it changed the device."""

    def __init__(self, ipr: IPRoute) -> None:
        self._ipr = ipr
        self.readdressed = False  # an address was replaced: routes using it as source are gone; owner resets

    def apply(self, desired: VxlanDevice | None, name: str = "vxlan.calico") -> bool:
        ipr = self._ipr
        existing = overlay.find_vxlan(ipr, desired.name if desired else name)
        if desired is None:
            if existing is not None and existing.kind == "vxlan":
                link.delete(ipr, existing.name)
                log.info("removed %s: no VXLAN pool is left", existing.name)
                return True
            return False
        parent = link.find(ipr, desired.parent)
        if parent is None:
            raise NetError(f"the parent device {desired.parent} of {desired.name}", errno.ENODEV)
        spec = vxlan_spec(desired, parent.index)
        changed = False
        if existing is not None:
            reason = vxlan_mismatch(spec, existing)
            if reason:
                log.warning("%s exists with %s; recreating it", desired.name, reason)
                link.delete(ipr, desired.name)
                existing = None
        if existing is None:
            existing = overlay.create_vxlan(ipr, spec)
            log.info(
                "created %s (VNI %d, port %d, local %s on %s, MAC %s, MTU %d)",
                desired.name,
                desired.vni,
                desired.port,
                desired.local,
                desired.parent,
                desired.mac,
                desired.mtu,
            )
            sysctl.write(f"net/ipv6/conf/{desired.name}/accept_ra", "0", missing_ok=True)
            changed = True
        attrs: dict[str, Any] = {}
        if existing.mtu != desired.mtu:
            attrs["mtu"] = desired.mtu
        if existing.mac.lower() != desired.mac:
            attrs["address"] = desired.mac
        if attrs:
            link.set_attrs(ipr, link.get(ipr, desired.name), **attrs)
            log.info("%s: set %s", desired.name, ", ".join(f"{k} {v}" for k, v in attrs.items()))
            changed = True
        wrote, removed = _ensure_single_address(ipr, existing.index, desired.name, desired.address)
        self.readdressed |= removed
        if wrote:
            log.info("%s: tunnel address %s/32", desired.name, desired.address)
            changed = True
        if not existing.up:
            link.set_up(ipr, desired.name)
            changed = True
        return changed


class IpipManager:
    """Keeps ``tunl0`` as desired; remembers that the kernel cannot make it, so it asks once per change."""

    def __init__(self, ipr: IPRoute) -> None:
        self._ipr = ipr
        self.unsupported = ""
        self.readdressed = False  # as VxlanManager's

    def apply(self, desired: IpipDevice | None) -> bool:
        if desired is None:
            return False  # tunl0 is the module's own device: Felix leaves it, and so does the agent
        ipr = self._ipr
        existing = link.find(ipr, desired.name)
        changed = False
        if existing is None:
            try:
                ipr.link("add", **ipip_request(desired.name, desired.mtu))
            except NetlinkError as exc:
                if int(exc.code) in (errno.EOPNOTSUPP, errno.ENODEV):
                    self.unsupported = NoIPIP(desired.name).msg
                    raise NoIPIP(desired.name) from None
                raise NetError(f"failed to create {desired.name}", int(exc.code)) from None
            log.info("created %s (MTU %d)", desired.name, desired.mtu)
            existing = link.get(ipr, desired.name)
            changed = True
        self.unsupported = ""
        if existing.mtu != desired.mtu:
            link.set_attrs(ipr, existing, mtu=desired.mtu)
            changed = True
        if desired.address is not None:
            wrote, removed = _ensure_single_address(ipr, existing.index, desired.name, desired.address)
            self.readdressed |= removed
            if wrote:
                log.info("%s: tunnel address %s/32", desired.name, desired.address)
                changed = True
        if not existing.up:
            with netlink(f"set {desired.name} up"):
                ipr.link("set", index=existing.index, state="up")
            changed = True
        return changed
