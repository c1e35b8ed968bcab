"""Links made for one container: sub-interfaces of a master, dummies, taps, and moved host devices.

macvlan, ipvlan and vlan links are created on a master under a random
temporary name directly inside the container's namespace, then renamed
there to ``CNI_IFNAME``: creating them under the final name could collide
with a host link of that name while the kernel still checks the creator's
namespace (the reference's "kernel bug" comment). Taps are created inside the
container the same way; dummies get their final name at once, as in Go.

host-device moves an existing device through a temporary namespace, where it
is renamed and given its host name as alias (so DEL can restore it), never
through a second name on the host where udev or NetworkManager would race.

Every function takes pyroute2 ``IPRoute`` sockets bound to the namespaces it
acts in (:func:`pycni.net.netns.iproute`). A failure undoes what the function
did, so callers see either the finished link or nothing.
"""

from __future__ import annotations

import errno
import fcntl
import glob
import os
import re
import socket
import struct
import subprocess
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg, macvx_data

from pycni.net import link, netns, sysctl
from pycni.net.errors import NetError, netlink
from pycni.net.link import LinkInfo
from pycni.spec.errors import CNIError, ErrorCode
from pycni.spec.result import Interface, Result

if TYPE_CHECKING:
    from pyroute2 import IPRoute

MACVLAN_MODES: dict[str, int] = {"private": 1, "vepa": 2, "bridge": 4, "passthru": 8}
IPVLAN_MODES: dict[str, int] = {"l2": 0, "l3": 1, "l3s": 2}
RT_TABLE_MAIN = 254


def _register_macvlan_bcqueuelen() -> None:
    """Teach pyroute2 (0.9.7 stops at IFLA_MACVLAN_MACADDR_COUNT) the macvlan broadcast queue attributes."""
    current = ifinfmsg.ifinfo.data_map["macvlan"]
    if any(name == "IFLA_MACVLAN_BC_QUEUE_LEN" for name, *_ in current.nla_map):
        return

    nla_map = (
        *macvx_data.nla_map,
        ("IFLA_MACVLAN_BC_QUEUE_LEN", "uint32"),
        ("IFLA_MACVLAN_BC_QUEUE_LEN_USED", "uint32"),
    )
    ifinfmsg.ifinfo.data_map["macvlan"] = type("macvlan_data", (current,), {"nla_map": nla_map})


_register_macvlan_bcqueuelen()


# -- configuration values ----------------------------------------------------

_MAC_COLON = re.compile(r"^[0-9a-fA-F]{2}([:-])[0-9a-fA-F]{2}(\1[0-9a-fA-F]{2}){4}$")
_MAC_DOTTED = re.compile(r"^[0-9a-fA-F]{4}\.[0-9a-fA-F]{4}\.[0-9a-fA-F]{4}$")


def parse_mac(text: str) -> str:
    """An Ethernet MAC in any of Go's ``net.ParseMAC`` 48-bit spellings, as ``aa:bb:...`` (code 7 if not)."""
    if _MAC_COLON.match(text):
        return text.replace("-", ":").lower()
    if _MAC_DOTTED.match(text):
        digits = text.replace(".", "").lower()
        return ":".join(digits[i : i + 2] for i in range(0, 12, 2))
    raise CNIError(ErrorCode.INVALID_NETWORK_CONFIG, f"invalid args {text} for MAC addr: invalid MAC address")


def mode_value(kind: str, modes: dict[str, int], mode: str, default: str) -> int:
    """The kernel's number for a ``mode`` key; empty means ``default``; unknown is code 7."""
    value = modes.get(mode or default)
    if value is None:
        choices = ", ".join(f'"{m}"' for m in modes)
        raise CNIError(ErrorCode.INVALID_NETWORK_CONFIG, f'unknown {kind} mode: "{mode}"', f"use one of {choices}")
    return value


def mode_name(modes: dict[str, int], value: int | str) -> str:
    """A mode as the config spells it, from the number (or name) the kernel reports."""
    if isinstance(value, str):
        return value
    return next((name for name, number in modes.items() if number == value), str(value))


# -- the master --------------------------------------------------------------


def default_route_interface(ipr: IPRoute) -> str:
    """The link of the first default route in the main table, IPv4 before IPv6 (Go's default master)."""
    for msg in ipr.get_routes(family=socket.AF_UNSPEC, table=RT_TABLE_MAIN):
        if msg["dst_len"] != 0 or msg.get("dst"):
            continue
        oif = msg.get("oif")
        if oif:
            found = link.by_index(ipr, int(oif))
            if found is not None:
                return found.name
    raise CNIError(
        ErrorCode.INVALID_NETWORK_CONFIG,
        "no default route interface found",
        'set "master": without it the master is the interface of the first default route',
    )


def master(ipr: IPRoute, name: str, mtu: int | None = None) -> LinkInfo:
    """The master ``name`` (or the default-route link), checking a requested ``mtu`` against its own.

    A missing master and an MTU above the master's are configuration errors (code 7).
    """
    name = name or default_route_interface(ipr)
    found = link.find(ipr, name)
    if found is None:
        raise CNIError(ErrorCode.INVALID_NETWORK_CONFIG, f'failed to lookup master "{name}": Link not found')
    if mtu is not None and not 0 <= mtu <= found.mtu:
        raise CNIError(ErrorCode.INVALID_NETWORK_CONFIG, f"invalid MTU {mtu}, must be [0, master MTU({found.mtu})]")
    return found


# -- sub-interfaces of a master (macvlan, ipvlan, vlan) ------------------------


@dataclass
class SubLink:
    """What to create on a master: kind, parent index, common attributes and IFLA_INFO_DATA keywords."""

    kind: str
    master: int
    mtu: int = 0
    mac: str = ""
    data: dict[str, Any] = field(default_factory=dict)


def macvlan(master_index: int, mode: int, mtu: int = 0, mac: str = "", bcqueuelen: int = 0) -> SubLink:
    data: dict[str, Any] = {"macvlan_mode": mode}
    if bcqueuelen:
        data["macvlan_bc_queue_len"] = bcqueuelen
    return SubLink("macvlan", master_index, mtu, mac, data)


def ipvlan(master_index: int, mode: int, mtu: int = 0) -> SubLink:
    return SubLink("ipvlan", master_index, mtu, data={"ipvlan_mode": mode})


def vlan(master_index: int, vlan_id: int, mtu: int = 0) -> SubLink:
    return SubLink("vlan", master_index, mtu, data={"vlan_id": vlan_id})


def _create_error(kind: str, exc: NetlinkError) -> NetError:
    error = NetError(f"failed to create {kind}", int(exc.code))
    if exc.code == errno.EOPNOTSUPP:
        error.details = f"this kernel has no {kind} support (module not built or not loaded)"
    return error


def create(creator: IPRoute, container: IPRoute, container_fd: int, ifname: str, spec: SubLink) -> LinkInfo:
    """Create ``spec`` from ``creator``'s namespace straight into the container, named ``ifname``.

    ``creator`` is where the master lives (the host, or the container with
    ``linkInContainer``). The link is left down.
    """
    temp = link.random_name()
    attrs: dict[str, Any] = {
        "ifname": temp,
        "kind": spec.kind,
        "link": spec.master,
        "net_ns_fd": container_fd,
        **spec.data,
    }
    if spec.mtu:
        attrs["mtu"] = spec.mtu
    if spec.mac:
        attrs["address"] = spec.mac
    try:
        creator.link("add", **attrs)
    except NetlinkError as exc:
        raise _create_error(spec.kind, exc) from None
    rename_new(container, temp, ifname, spec.kind)
    return link.get(container, ifname)


def rename_new(ipr: IPRoute, temp: str, ifname: str, kind: str) -> None:
    """Rename a just-created link to its final name; on failure delete it (it is ours and useless)."""
    created = link.get(ipr, temp)
    try:
        ipr.link("set", index=created.index, ifname=ifname)
    except NetlinkError as exc:
        link.delete(ipr, temp)
        error = NetError(f'failed to rename {kind} to "{ifname}"', int(exc.code))
        if exc.code == errno.EEXIST:
            error.details = "an interface of that name is already in the container: choose another CNI_IFNAME"
        raise error from None


def create_dummy(container: IPRoute, ifname: str) -> LinkInfo:
    """A dummy link named ``ifname`` in the container (left down)."""
    try:
        container.link("add", ifname=ifname, kind="dummy")
    except NetlinkError as exc:
        error = _create_error("dummy", exc)
        if exc.code == errno.EEXIST:
            error.details = "an interface of that name is already in the container: choose another CNI_IFNAME"
        raise error from None
    return link.get(container, ifname)


def announce(ifname: str, ndisc: bool = True) -> None:
    """Have the kernel announce the link's MAC and addresses (arp_notify, ndisc_notify) once it is up.

    Call in the container's namespace. As in the reference, a failure here is ignored.
    """
    names = [f"net/ipv4/conf/{ifname}/arp_notify"]
    if ndisc:
        names.append(f"net/ipv6/conf/{ifname}/ndisc_notify")
    for name in names:
        with suppress(CNIError):
            sysctl.write(name, "1", missing_ok=True)


def info_data(ipr: IPRoute, index: int) -> dict[str, Any]:
    """A link's kind-specific attributes (IFLA_INFO_DATA), e.g. ``IFLA_MACVLAN_MODE``, for CHECK."""
    found = ipr.get_links(index)
    data = found[0].get_nested("IFLA_LINKINFO", "IFLA_INFO_DATA") if found else None
    if not data:
        return {}
    return dict(data.get("attrs", []))


# -- taps --------------------------------------------------------------------

TUN_DEVICE = "/dev/net/tun"
TUNSETIFF = 0x400454CA
TUNSETPERSIST = 0x400454CB
TUNSETOWNER = 0x400454CC
TUNSETGROUP = 0x400454CE
IFF_TAP = 0x0002
IFF_MULTI_QUEUE = 0x0100
IFF_NO_PI = 0x1000
IFF_VNET_HDR = 0x4000


@dataclass
class Tap:
    """A tap as the tap plugin's keys describe it; ``None`` owner/group leaves the tap ownerless."""

    mtu: int = 0
    mac: str = ""
    multi_queue: bool = False
    owner: int | None = None
    group: int | None = None
    selinux_context: str = ""

    @property
    def flags(self) -> int:
        """TUNSETIFF flags as the reference ends up with them.

        Go creates a tap with both owner and group through netlink
        (``IFF_VNET_HDR``, plus ``IFF_NO_PI`` with multi-queue) and every
        other tap through ``ip tuntap`` (always ``IFF_NO_PI``).
        """
        if self.owner is not None and self.group is not None and not self.selinux_context:
            flags = IFF_TAP | IFF_VNET_HDR
            return flags | IFF_MULTI_QUEUE | IFF_NO_PI if self.multi_queue else flags
        flags = IFF_TAP | IFF_NO_PI
        return flags | IFF_MULTI_QUEUE if self.multi_queue else flags


def ifreq(name: str, flags: int) -> bytes:
    """``struct ifreq`` with a name and ``ifr_flags`` (40 bytes on Linux)."""
    return struct.pack("16sH22x", name.encode(), flags)


def _tap_by_ioctl(name: str, spec: Tap) -> None:
    """Create a persistent tap in the calling thread's namespace (where ``/dev/net/tun`` is opened)."""
    try:
        fd = os.open(TUN_DEVICE, os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        raise CNIError(ErrorCode.INTERNAL, f"failed to create tap: cannot open {TUN_DEVICE}: {exc.strerror}") from None
    try:
        fcntl.ioctl(fd, TUNSETIFF, ifreq(name, spec.flags))
        if spec.owner is not None:
            fcntl.ioctl(fd, TUNSETOWNER, spec.owner)
        if spec.group is not None:
            fcntl.ioctl(fd, TUNSETGROUP, spec.group)
        fcntl.ioctl(fd, TUNSETPERSIST, 1)
    except OSError as exc:
        raise NetError("failed to create tap", exc.errno or errno.EIO) from None
    finally:
        os.close(fd)


def ip_tuntap_argv(name: str, spec: Tap) -> list[str]:
    """``ip tuntap add`` under ``runcon``: a tap's SELinux label is its creating process's."""
    argv = ["runcon", spec.selinux_context, "ip", "tuntap", "add", "mode", "tap", "name", name]
    if spec.multi_queue:
        argv.append("multi_queue")
    if spec.owner is not None:
        argv += ["user", str(spec.owner)]
    if spec.group is not None:
        argv += ["group", str(spec.group)]
    return argv


def _tap_by_ip_tool(name: str, spec: Tap) -> None:
    proc = subprocess.run(ip_tuntap_argv(name, spec), capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        output = (proc.stderr or proc.stdout).strip()
        raise CNIError(
            ErrorCode.INTERNAL, f"failed to create tap with SELinux context {spec.selinux_context}: {output}"
        )


def create_tap(
    container: IPRoute, container_path: str, container_fd: int, ifname: str, spec: Tap, bridge: str = ""
) -> LinkInfo:
    """A tap named ``ifname`` in the container, with MAC, MTU and bridge port set, and up."""
    temp = link.random_name()
    with netns.entered(container_path, container_fd):
        if spec.selinux_context:
            _tap_by_ip_tool(temp, spec)
        else:
            _tap_by_ioctl(temp, spec)
    try:
        created = link.get(container, temp)
        attrs: dict[str, Any] = {}
        if spec.mtu:
            attrs["mtu"] = spec.mtu
        if spec.mac:
            attrs["address"] = spec.mac
        if attrs:
            link.set_attrs(container, created, **attrs)
    except BaseException:
        link.delete(container, temp)
        raise
    rename_new(container, temp, ifname, "tap")  # deletes the tap itself if the name is taken
    try:
        if bridge:
            port = bridge_port(container, bridge)
            link.set_attrs(container, link.get(container, ifname), master=port.index)
        link.set_up(container, ifname)
    except BaseException:
        link.delete(container, ifname)
        raise
    return link.get(container, ifname)


def bridge_port(ipr: IPRoute, name: str) -> LinkInfo:
    """The bridge a tap is to join; missing or not a bridge is a configuration error."""
    found = link.find(ipr, name)
    if found is None:
        raise CNIError(ErrorCode.INVALID_NETWORK_CONFIG, f"failed to get bridge {name}: Link not found")
    if found.kind != "bridge":
        raise CNIError(ErrorCode.INVALID_NETWORK_CONFIG, f"{name} is a {found.kind or 'plain'} link, not a bridge")
    return found


# -- moving a host device (host-device) -------------------------------------


def _quietly(step: Callable[[], object]) -> Callable[[], None]:
    """An undo step whose failure must not hide the error being unwound."""

    def run() -> None:
        with suppress(Exception):  # best effort: the error being unwound is what the caller sees
            step()

    return run


def _move(ipr: IPRoute, index: int, target_fd: int) -> None:
    ipr.link("set", index=index, net_ns_fd=target_fd)


def _move_named(ipr: IPRoute, names: tuple[str, ...], target_fd: int) -> None:
    for name in names:
        found = link.find(ipr, name)
        if found is not None:
            _move(ipr, found.index, target_fd)
            return


def _rename(ipr: IPRoute, old: str, new: str) -> None:
    ipr.link("set", index=link.index_of(ipr, old), ifname=new)


def _set_alias(ipr: IPRoute, name: str, alias: str) -> None:
    ipr.link("set", index=link.index_of(ipr, name), ifalias=alias)


@contextmanager
def _own_netns() -> Iterator[int]:
    with netns.handle("/proc/thread-self/ns/net") as fd:
        yield fd


def move_in(host: IPRoute, device: LinkInfo, container_fd: int, ifname: str) -> LinkInfo:
    """Move host ``device`` into the container as ``ifname`` (up), its host name saved as the alias.

    Each step is undone on failure, so the device ends back on the host,
    under its name and in its former up/down state.
    """
    with (
        _own_netns() as host_fd,
        netns.temporary() as temp_fd,
        netns.iproute("", temp_fd) as temp,
        netns.iproute("", container_fd) as container,
        ExitStack() as undo,
    ):
        if device.up:
            undo.callback(_quietly(lambda: link.set_up(host, device.name)))
        with netlink(f'failed to move "{device.name}" to tempNS'):
            _move(host, device.index, temp_fd)
        undo.callback(_quietly(lambda: _move_named(temp, (device.name, ifname), host_fd)))
        with netlink(f'failed to rename host device "{device.name}" to "{ifname}"'):
            _rename(temp, device.name, ifname)
        undo.callback(_quietly(lambda: _rename(temp, ifname, device.name)))
        with netlink(f'failed to set alias to "{device.name}"'):
            _set_alias(temp, ifname, device.name)
        undo.callback(_quietly(lambda: _set_alias(temp, ifname, "")))
        with netlink(f'failed to move "{ifname}" (host: "{device.name}") to container NS'):
            _move(temp, link.index_of(temp, ifname), container_fd)
        undo.callback(_quietly(lambda: _move_named(container, (ifname,), temp_fd)))
        link.set_up(container, ifname)
        moved = link.get(container, ifname)
        undo.pop_all()
    return moved


def move_out(container: IPRoute, container_fd: int, ifname: str) -> bool:
    """Move ``ifname`` back to the host under the name in its alias, alias cleared, left down.

    ``False`` if the container has no such link (already moved back, or gone).
    """
    device = link.find(container, ifname)
    if device is None:
        return False
    original = device.alias
    if not original:
        raise CNIError(ErrorCode.INTERNAL, f'failed to find original ifname for "{ifname}" (alias is not set)')
    with (
        _own_netns() as host_fd,
        netns.temporary() as temp_fd,
        netns.iproute("", temp_fd) as temp,
        ExitStack() as undo,
    ):
        if device.up:
            undo.callback(_quietly(lambda: link.set_up(container, ifname)))
        with netlink(f'failed to move "{ifname}" to tempNS'):
            _move(container, device.index, temp_fd)
        undo.callback(_quietly(lambda: _move_named(temp, (ifname, original), container_fd)))
        with netlink(f'failed to rename device "{ifname}" to "{original}"'):
            _rename(temp, ifname, original)
        undo.callback(_quietly(lambda: _rename(temp, original, ifname)))
        with netlink(f'failed to unset alias of "{original}"'):
            _set_alias(temp, original, "")
        undo.callback(_quietly(lambda: _set_alias(temp, original, original)))
        with netlink(f'failed to move "{original}" to hostNS'):
            _move(temp, link.index_of(temp, original), host_fd)
        undo.pop_all()
    return True


# -- finding a host device (host-device) -------------------------------------

SYS_BUS_PCI = "/sys/bus/pci/devices"
SYS_BUS_AUXILIARY = "/sys/bus/auxiliary/devices"
USERSPACE_DRIVERS = ("vfio-pci", "uio_pci_generic", "igb_uio")


def _first_netdev(directory: str) -> str:
    try:
        entries = sorted(os.listdir(directory))
    except OSError as exc:
        raise CNIError(ErrorCode.INTERNAL, f"failed to read directory {directory}: {exc.strerror}") from None
    if not entries:
        raise CNIError(ErrorCode.INTERNAL, f"failed to find network device in path {directory}")
    return entries[0]


def pci_netdev(pci_address: str, sys_bus_pci: str = SYS_BUS_PCI) -> str:
    """The netdev name of a PCI function (or of its virtio child)."""
    net_dir = os.path.join(sys_bus_pci, pci_address, "net")
    if not os.path.lexists(net_dir):
        matches = sorted(glob.glob(os.path.join(sys_bus_pci, pci_address, "virtio*", "net")))
        if not matches:
            raise CNIError(ErrorCode.INTERNAL, f"no net directory under pci device {pci_address}")
        net_dir = matches[0]
    return _first_netdev(net_dir)


def kernelpath_netdev(kernelpath: str) -> str:
    """The netdev under a sysfs device path, which must be absolute under /sys/devices/."""
    if not os.path.isabs(kernelpath) or not kernelpath.startswith("/sys/devices/"):
        raise CNIError(
            ErrorCode.INVALID_NETWORK_CONFIG,
            f'kernel device path "{kernelpath}" must be absolute and begin with /sys/devices/',
        )
    return _first_netdev(os.path.join(kernelpath, "net"))


def auxiliary_netdev(device: str, sys_bus_auxiliary: str = SYS_BUS_AUXILIARY) -> str:
    return _first_netdev(os.path.join(sys_bus_auxiliary, device, "net"))


def has_userspace_driver(pci_address: str, sys_bus_pci: str = SYS_BUS_PCI) -> bool:
    """Whether the PCI function is bound to a DPDK (userspace) driver, so it has no netdev to move."""
    driver = os.path.join(sys_bus_pci, pci_address, "driver")
    try:
        target = os.path.realpath(driver, strict=True)
    except OSError as exc:
        raise CNIError(ErrorCode.INTERNAL, f"error with host device: {driver}: {exc.strerror}") from None
    return os.path.basename(target) in USERSPACE_DRIVERS


def link_by_mac(ipr: IPRoute, mac: str) -> LinkInfo | None:
    wanted = parse_mac(mac)
    for msg in ipr.get_links():
        if str(msg.get("address") or "").lower() == wanted:
            return link.by_index(ipr, int(msg["index"]))
    return None


# -- CHECK -------------------------------------------------------------------


def expected_interface(result: Result, ifname: str, sandbox: str) -> tuple[int, Interface]:
    """The ``prevResult`` interface ADD reported for ``ifname`` in ``sandbox``, with its index."""
    for index, iface in enumerate(result.interfaces):
        if iface.name == ifname and iface.sandbox == sandbox:
            return index, iface
    raise CNIError(
        ErrorCode.INTERNAL,
        f"Sandbox in prevResult doesn't match configured netns: {sandbox}",
        f"prevResult has no interface {ifname} in that sandbox",
    )


def check_container_link(ipr: IPRoute, iface: Interface, kind: str | None) -> LinkInfo:
    """CHECK: the container link exists, is of ``kind`` (if given) and has the reported MAC."""
    found = link.find(ipr, iface.name)
    if found is None:
        raise CNIError(ErrorCode.INTERNAL, f"Container Interface name in prevResult: {iface.name} not found")
    if kind is not None and found.kind != kind:
        raise CNIError(ErrorCode.INTERNAL, f"Error: Container interface {iface.name} not of type {kind}")
    if iface.mac and iface.mac.lower() != found.mac.lower():
        raise CNIError(
            ErrorCode.INTERNAL, f"Interface {iface.name} Mac {iface.mac} doesn't match container Mac: {found.mac}"
        )
    return found
