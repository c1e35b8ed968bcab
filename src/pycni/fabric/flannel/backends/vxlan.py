"""The vxlan backend (Flannel's default): one route, one neighbour and one FDB entry per peer.

Ground truth: flannel ``pkg/backend/vxlan/{vxlan.go,vxlan_network.go,device.go}``.
No L2/L3-miss callbacks: every peer is programmed statically, so the
dataplane keeps working while the agent is down or restarting.

The peers' entries are a desired state (:func:`desired_entries`, pure) that
three :mod:`pycni.dataplane` drivers reconcile with the kernel: permanent
neighbours and FDB remotes on ``flannel.N``, and routes into the network with
pycni's protocol. A sync re-reads the kernel and writes only what differs, so
the periodic resync writes nothing on a node in order (Flannel rewrites every
peer). Routes an earlier pycni wrote with protocol boot are adopted: taken
over with one replace each, never duplicated (:func:`common.legacy_route`).

The VTEP MAC is what peers hold in their neighbour and FDB tables, so it must
survive a restart, and it must be this node's alone: a vxlan FDB holds one
destination per MAC, so two nodes publishing one MAC cut every peer off from
one of them, silently. Where it comes from, in order:

1. the ``flannel.N`` device already in this node's network namespace (as
   Flannel: ``ensureLink`` keeps an existing compatible device, MAC and all);
2. the state file keyed to this node, :func:`mac_state_path` (``--state-dir``,
   public IP, network-namespace inode), for a device that was deleted while the
   namespace lived on;
3. a new random locally administered MAC (Flannel's ``mac.NewHardwareAddr``).

A state file that is damaged (empty, garbage, not a MAC, a directory, a
symlink, unreadable) is never trusted nor followed: the device gets a new MAC,
a warning names the file and why, the lease publishes the new MAC (peers
reprogram from it), and the file is replaced by a regular one holding it.

Where Flannel differs: in etcd mode it persists nothing (``LocalManager.
GetStoredMacAddresses`` returns ""), so a deleted device comes back with a new
MAC; in kube mode it reads the MAC from its own Node's ``backend-data``
annotation, which is keyed to the node by name. The state file here is the
etcd-mode stand-in for that annotation, and so it is keyed to the node too: an
earlier pycni kept one ``flannel.1.mac`` per state directory, and every agent
on a machine sharing the default ``/run/flannel`` (one per network namespace)
came up with the same MAC (pycni issue 9). Flannel also does not notice a peer
publishing its MAC; :meth:`VxlanBackend.resolve_clash` does, and moves.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import os
import re
from collections.abc import Callable, Iterable
from contextlib import suppress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pycni.dataplane import ApplyResult, FdbTable, NeighbourTable, Route, RouteTable, apply_layered
from pycni.fabric.flannel.backends import ExternalInterface
from pycni.fabric.flannel.backends.common import (
    DEFAULT_STATE_DIR,
    DeviceMissing,
    NetlinkOwner,
    ipv4_network,
    legacy_route,
    option_bool,
    option_int,
    peers,
    raise_problems,
)
from pycni.fabric.flannel.model import Lease, NetworkConfig
from pycni.fsutil import read_state, write_atomic
from pycni.net import link, overlay, sysctl
from pycni.net.errors import NetError
from pycni.net.neigh import IPAddress
from pycni.net.route import RouteMsg
from pycni.spec.errors import CNIError
from pycni.spec.jsonutil import get_key

if TYPE_CHECKING:
    from pyroute2 import IPRoute

log = logging.getLogger("pycni.fabric.flannel.backends.vxlan")

ENCAP_OVERHEAD = 50  # outer Ethernet 14 + IPv4 20 + UDP 8 + VXLAN 8
MAX_VNI = (1 << 24) - 1
_MAC = re.compile(r"^[0-9a-f]{2}([:-])[0-9a-f]{2}(\1[0-9a-f]{2}){4}$")


@dataclass(frozen=True)
class VxlanOptions:
    """``Backend`` keys of a vxlan network, with Flannel's defaults."""

    vni: int = 1
    port: int = overlay.VXLAN_DEFAULT_PORT
    gbp: bool = False
    direct_routing: bool = False
    learning: bool = False
    mtu: int = 1500  # the underlay MTU the device is sized from

    @classmethod
    def parse(cls, options: dict[str, Any], ext_mtu: int) -> VxlanOptions:
        port = option_int(options, "Port", 0, 0, 65535, "vxlan")
        return cls(
            vni=option_int(options, "VNI", 1, 0, MAX_VNI, "vxlan"),
            port=port or overlay.VXLAN_DEFAULT_PORT,
            gbp=option_bool(options, "GBP", "vxlan"),
            direct_routing=option_bool(options, "DirectRouting", "vxlan"),
            learning=option_bool(options, "Learning", "vxlan"),
            mtu=option_int(options, "MTU", ext_mtu, ENCAP_OVERHEAD + 68, 65535, "vxlan"),
        )


def mac_state_path(state_dir: str, device: str, public_ip: str, netns_inode: int) -> str:
    """The file that keeps one node's VTEP MAC, keyed by its public IP and its network namespace.

    The namespace's inode is unique among the namespaces alive on a machine
    and stays the same for as long as the namespace lives, so an agent
    restarting in its node finds its own file and no other node can name it.
    The public IP keeps two agents in one namespace (two networks) apart, and
    a copied state directory on a machine with another address unread.
    """
    return os.path.join(state_dir, f"{device}.{public_ip}.net{netns_inode}.mac")


def netns_inode() -> int:
    """The inode of the calling thread's network namespace (``ip netns identify`` compares the same)."""
    return os.stat("/proc/thread-self/ns/net").st_ino


def normalize_mac(text: object) -> str | None:
    """``aa:bb:cc:dd:ee:ff`` for a MAC in colon or dash form, else ``None``."""
    if not isinstance(text, str):
        return None
    folded = text.strip().lower()
    return folded.replace("-", ":") if _MAC.match(folded) else None


def unicast(mac: str) -> bool:
    """Whether a normalized MAC can be a device's own address (not multicast, broadcast or all zeros)."""
    first = int(mac[:2], 16)
    return not first & 1 and mac != "00:00:00:00:00:00"


def incompatibility(want: overlay.VxlanSpec, have: overlay.VxlanInfo) -> str:
    """Why an existing device cannot be reused, or ``""`` (Flannel's ``vxlanLinksIncompat``, plus learning)."""
    if have.kind != "vxlan":
        return f"link type: {have.kind or 'unknown'} vs vxlan"
    if have.vni != want.vni:
        return f"vni: {have.vni} vs {want.vni}"
    if have.link_index and want.link_index and have.link_index != want.link_index:
        return f"vtep (external) interface: {have.link_index} vs {want.link_index}"
    if have.local and want.local and have.local != want.local:
        return f"vtep (external) IP: {have.local} vs {want.local}"
    if have.group:
        return f"group address: {have.group} vs none"
    if have.l2miss:
        return "l2miss: true vs false"
    if have.port and have.port != want.port:
        return f"port: {have.port} vs {want.port}"
    if have.gbp != want.gbp:
        return f"gbp: {have.gbp} vs {want.gbp}"
    if have.learning != want.learning:
        return f"learning: {have.learning} vs {want.learning}"
    return ""


@dataclass
class Entries:
    """What the peers need on this node: ``flannel.N``'s neighbours and FDB remotes, and the routes."""

    neighbours: dict[IPAddress, str] = field(default_factory=dict)  # peer's VTEP address -> VTEP MAC
    fdb: dict[str, ipaddress.IPv4Address] = field(default_factory=dict)  # VTEP MAC -> peer's public IP
    routes: list[Route] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # peers left out, and why


def desired_entries(leases: Iterable[Lease], device: str, ext: str, direct: Callable[[Lease], bool]) -> Entries:
    """The entries for ``leases`` (already filtered to peers), in subnet order; pure.

    An encapsulated peer gets ``<subnet> via <subnet address> dev flannel.N
    onlink``, that address's neighbour (the peer's VTEP MAC) and the MAC's
    FDB remote (the peer's public IP): Flannel's ``vxlan_network.go``. A
    ``direct`` peer (DirectRouting, on the same L2) gets ``<subnet> via
    <public IP> dev <ext>`` only. A peer without a valid VtepMAC or public
    IP is left out and named in ``problems``; a MAC two peers publish is sent
    to the first only (the nodes themselves resolve the clash).
    """
    entries = Entries()
    for lease in sorted(leases, key=lambda lease: int(lease.subnet.network_address)):
        try:
            public_ip = ipaddress.IPv4Address(lease.attrs.public_ip)
        except ValueError:
            entries.problems.append(f"lease {lease.subnet}: PublicIP {lease.attrs.public_ip!r} is not an IPv4 address")
            continue
        if direct(lease):
            entries.routes.append(Route(lease.subnet, dev=ext, gateway=public_ip))
            continue
        mac = normalize_mac(get_key(lease.attrs.backend_data, "VtepMAC"))
        if mac is None:
            data = lease.attrs.backend_data
            entries.problems.append(f"lease {lease.subnet}: BackendData has no valid VtepMAC: {data}")
            continue
        gateway = lease.subnet.network_address
        entries.neighbours[gateway] = mac
        holder = entries.fdb.setdefault(mac, public_ip)
        if holder != public_ip:
            log.warning("VTEP MAC %s is published by %s and %s; frames for it go to %s", mac, holder, public_ip, holder)
        entries.routes.append(Route(lease.subnet, dev=device, gateway=gateway, onlink=True))
    return entries


class VxlanBackend(NetlinkOwner):
    """``flannel.<VNI>``: a vxlan device on the external interface, peers programmed statically."""

    accepts: tuple[str, ...] = ("vxlan",)

    def __init__(
        self,
        ext: ExternalInterface,
        config: NetworkConfig,
        *,
        state_dir: str = DEFAULT_STATE_DIR,
        ipr: IPRoute | None = None,
    ) -> None:
        super().__init__(ipr)
        self.ext = ext
        self.network = ipv4_network(config, "vxlan")
        self.options = VxlanOptions.parse(config.backend, ext.mtu)
        self.name = f"flannel.{self.options.vni}"
        self.mtu = self.options.mtu - ENCAP_OVERHEAD
        # The thread that makes the backend is in the node's namespace (the agent's, or a test's netns.entered).
        self.state_path = mac_state_path(state_dir, self.name, ext.public_ip, netns_inode())
        self.mac = ""
        self._own: Lease | None = None
        self._peers: dict[ipaddress.IPv4Network, Lease] = {}
        self._direct: dict[ipaddress.IPv4Network, bool] = {}  # DirectRouting's answer per peer, from the last sync
        self._index = 0  # flannel.N's index at the last look
        self._drivers: tuple[NeighbourTable, FdbTable, RouteTable] | None = None
        self.last_apply: list[ApplyResult] = []

    def spec(self, mac: str = "") -> overlay.VxlanSpec:
        return overlay.VxlanSpec(
            name=self.name,
            vni=self.options.vni,
            local=self.ext.address,
            link_index=self.ext.index,
            port=self.options.port,
            learning=self.options.learning,
            gbp=self.options.gbp,
            mtu=self.mtu,
            mac=mac,
        )

    # -- the device ------------------------------------------------------------

    def prepare(self) -> dict[str, Any]:
        """Reuse a compatible ``flannel.N`` or (re)create it with the MAC it had; BackendData for the lease."""
        with self.netlink() as ipr:
            device = self._ensure_device(ipr)
        self.mac = device.mac
        self._store_mac(device.mac)
        with suppress(CNIError):  # Flannel ignores this too: IPv6 may be off in the node
            sysctl.write(f"net/ipv6/conf/{self.name}/accept_ra", "0", missing_ok=True)
        return {"VNI": self.options.vni, "VtepMAC": device.mac}

    def _ensure_device(self, ipr: IPRoute) -> overlay.VxlanInfo:
        existing = overlay.find_vxlan(ipr, self.name)
        if existing is not None:
            reason = incompatibility(self.spec(), existing)
            if not reason:
                if existing.mtu != self.mtu:
                    link.set_attrs(ipr, link.get(ipr, self.name), mtu=self.mtu)
                return existing
            log.warning("%s already exists with incompatible configuration: %s; recreating device", self.name, reason)
            mac = existing.mac if existing.kind == "vxlan" else ""
            link.delete(ipr, self.name)
        else:
            mac = ""
        if not mac:
            mac = self._stored_mac() or ""
        if not mac:
            mac = overlay.random_mac()
            log.info("%s gets the new MAC %s", self.name, mac)
        try:
            return overlay.create_vxlan(ipr, self.spec(mac))
        except NetError as exc:
            raced = overlay.find_vxlan(ipr, self.name) if exc.errno == errno.EEXIST else None
            if raced is not None and not incompatibility(self.spec(), raced):
                return raced
            raise

    def _stored_mac(self, quiet: bool = False) -> str | None:
        """The MAC the state file keeps; None (with a warning unless ``quiet``) if there is none or it is damaged."""
        try:
            data = read_state(self.state_path)  # a symlink is not followed
        except FileNotFoundError:
            return None
        except OSError as exc:
            why = "a symlink" if exc.errno == errno.ELOOP else exc.strerror or str(exc)
            if not quiet:
                log.warning("VTEP MAC state file %s is unusable (%s): not used", self.state_path, why)
            return None
        mac = normalize_mac(data.decode("ascii", "replace"))
        if mac is not None and not unicast(mac):
            mac = None  # the kernel refuses a multicast or zero address for the device
        if mac is None and not quiet:
            log.warning("VTEP MAC state file %s holds no unicast MAC (%r): not used", self.state_path, data[:40])
        return mac

    def _store_mac(self, mac: str) -> None:
        if self._stored_mac(quiet=True) == mac:
            return
        try:
            os.makedirs(os.path.dirname(self.state_path) or ".", exist_ok=True)
            write_atomic(self.state_path, f"{mac}\n".encode(), mode=0o644, replace_directory=True)
        except OSError as exc:
            log.warning("cannot persist the VTEP MAC of %s in %s: %s", self.name, self.state_path, exc)

    def _device(self, ipr: IPRoute) -> overlay.VxlanInfo:
        device = overlay.find_vxlan(ipr, self.name)
        if device is None or device.kind != "vxlan":
            raise DeviceMissing(f"vxlan device {self.name} does not exist (run prepare() again)")
        return device

    def configure(self, lease: Lease) -> None:
        """The /32 of the lease's network address (a source for host-to-pod traffic, no broadcast routes); up."""
        with self.netlink() as ipr:
            device = self._device(ipr)
            wanted = ipaddress.IPv4Interface(f"{lease.subnet.network_address}/32")
            overlay.ensure_only_address(ipr, device.index, wanted, self.network, self.name)
            if self.mac and device.mac != self.mac:
                # Something (udev's MACAddressPolicy) changed it; peers know ours (Flannel issue 1795).
                log.warning("%s MAC changed to %s; restoring %s", self.name, device.mac, self.mac)
                link.set_attrs(ipr, link.get(ipr, self.name), address=self.mac)
            if not device.up:
                link.set_up(ipr, self.name)
        self._own = lease

    # -- this node's identity among the peers -------------------------------------

    def resolve_clash(self, leases: list[Lease]) -> dict[str, Any] | None:
        """If a peer's lease carries our VTEP MAC, take a new MAC; the BackendData to publish, or ``None``.

        A cloned machine image or a copied state directory can leave two nodes
        with one MAC. Every peer's FDB then sends that MAC to one of them only,
        and nothing fails loudly; so the node that notices moves. Both nodes may
        notice and both move: that costs one extra lease update, never a clash.
        """
        own = self._own.subnet if self._own is not None else None
        clashing = [
            lease
            for lease in leases
            if lease.subnet != own
            and lease.attrs.backend_type in self.accepts
            and normalize_mac(get_key(lease.attrs.backend_data, "VtepMAC")) == self.mac
        ]
        if not self.mac or not clashing:
            return None
        taken = {normalize_mac(get_key(lease.attrs.backend_data, "VtepMAC")) for lease in leases}
        new = overlay.random_mac()
        while new in taken or new == self.mac:
            new = overlay.random_mac()
        with self.netlink() as ipr:
            link.set_attrs(ipr, link.get(ipr, self.name), address=new)
        other = clashing[0]
        log.warning(
            "VTEP MAC %s of %s is also published by the lease of %s (public IP %s); peers' FDB can send a MAC "
            "to one node only, so this node takes the new MAC %s and re-publishes its lease",
            self.mac,
            self.name,
            other.subnet,
            other.attrs.public_ip,
            new,
        )
        self.mac = new
        self._store_mac(new)
        return {"VNI": self.options.vni, "VtepMAC": new}

    # -- peers -----------------------------------------------------------------

    def _tables(self, ipr: IPRoute) -> tuple[NeighbourTable, FdbTable, RouteTable]:
        if self._drivers is None:
            routes = RouteTable(ipr, within=[self.network], adopt=self._adopt, name=f"{self.name} peers")
            self._drivers = (NeighbourTable(ipr, self.name), FdbTable(ipr, self.name), routes)
        return self._drivers

    def _adopt(self, msg: RouteMsg) -> bool:
        return legacy_route(msg, self.network, self._own, self._index, self.ext.index)

    def _is_direct(self, ipr: IPRoute, lease: Lease, look: bool) -> bool:
        """DirectRouting: the peer's public IP is on-link (looked up again if ``look``, else the last answer)."""
        if not self.options.direct_routing:
            return False
        if look or lease.subnet not in self._direct:
            try:
                self._direct[lease.subnet] = overlay.on_link(ipr, lease.attrs.public_ip)
            except NetError as exc:
                log.error("DirectRouting: %s", exc)
                self._direct[lease.subnet] = False
        return self._direct[lease.subnet]

    def _apply(self, ipr: IPRoute, look: frozenset[ipaddress.IPv4Network] | None) -> None:
        """Desired entries for the current peers, then the layered apply; a resync (re-read) when ``look`` is None.

        ``look`` names the peers whose DirectRouting answer is looked up
        again (an event's peer); a resync looks every peer up again.
        """
        self._index = self._device(ipr).index
        neighbours, fdb, routes = self._tables(ipr)
        if look is None:
            for driver in (neighbours, fdb, routes):
                driver.queue_resync()
            self._direct = {subnet: on for subnet, on in self._direct.items() if subnet in self._peers}

        def direct(lease: Lease) -> bool:
            return self._is_direct(ipr, lease, look is None or lease.subnet in look)

        entries = desired_entries(self._peers.values(), self.name, self.ext.name, direct)
        neighbours.set_neighbours(entries.neighbours)
        fdb.set_entries(entries.fdb)
        routes.set_routes(entries.routes)
        self.last_apply = apply_layered([neighbours, fdb], [routes])
        raise_problems(self.last_apply, entries.problems, f"{self.name} sync")

    def add_peer(self, lease: Lease) -> None:
        """Program one peer (a changed VTEP MAC replaces its FDB remote; the old MAC's goes)."""
        for peer in peers([lease], self.accepts, self._own, self.network):
            with self.netlink() as ipr:
                self._peers[peer.subnet] = peer
                self._apply(ipr, frozenset({peer.subnet}))

    def remove_peer(self, lease: Lease) -> None:
        """Route, then FDB remote and neighbour (after the route through them); anything missing is fine."""
        for peer in peers([lease], self.accepts, self._own, self.network):
            with self.netlink() as ipr:
                if self._peers.pop(peer.subnet, None) is not None:
                    self._apply(ipr, frozenset())

    def sync(self, leases: list[Lease]) -> None:
        """Make the given peers the whole desired state, re-read the kernel and write only the difference.

        Only routes inside the cluster network with pycni's protocol (or the
        protocol-boot routes an earlier pycni wrote on ``flannel.N`` or via the
        external interface with a gateway), and only permanent neighbours and
        FDB entries on ``flannel.N``, are ever removed. A peer that cannot be
        programmed is named in the :class:`BackendError` raised after the others are.
        """
        with self.netlink() as ipr:
            self._peers = {peer.subnet: peer for peer in peers(leases, self.accepts, self._own, self.network)}
            self._apply(ipr, None)

    def close(self) -> None:
        """Nothing runs in the background; the device, routes and entries stay for the next agent."""
        with self.netlink():
            self._drivers = None  # they hold the socket that closes now
        self.close_netlink()
