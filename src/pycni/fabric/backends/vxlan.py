"""The vxlan backend (Flannel's default): one route, one neighbour and one FDB entry per peer.

Ground truth: flannel ``pkg/backend/vxlan/{vxlan.go,vxlan_network.go,device.go}``.
No L2/L3-miss callbacks: every peer is programmed statically, so the
dataplane keeps working while the agent is down or restarting.

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
from contextlib import suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pycni.fabric.backends import ExternalInterface
from pycni.fabric.backends.common import (
    DEFAULT_STATE_DIR,
    BackendError,
    NetlinkOwner,
    ipv4_network,
    option_bool,
    option_int,
    peers,
    raise_errors,
    remove_stale_routes,
    sync_each,
)
from pycni.fabric.model import Lease, NetworkConfig
from pycni.fsutil import write_atomic
from pycni.net import link, overlay, sysctl
from pycni.net.errors import NetError
from pycni.spec.errors import CNIError
from pycni.spec.jsonutil import get_key

if TYPE_CHECKING:
    from pyroute2 import IPRoute

log = logging.getLogger("pycni.fabric.backends.vxlan")

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


def vtep_mac(lease: Lease) -> str:
    """The peer's VTEP MAC from its BackendData (``{"VNI": 1, "VtepMAC": "..."}``)."""
    mac = normalize_mac(get_key(lease.attrs.backend_data, "VtepMAC"))
    if mac is None:
        raise BackendError(f"lease {lease.subnet}: BackendData has no valid VtepMAC: {lease.attrs.backend_data}")
    return mac


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
        mac = mac or self._stored_mac() or overlay.random_mac()
        try:
            return overlay.create_vxlan(ipr, self.spec(mac))
        except NetError as exc:
            raced = overlay.find_vxlan(ipr, self.name) if exc.errno == errno.EEXIST else None
            if raced is not None and not incompatibility(self.spec(), raced):
                return raced
            raise

    def _stored_mac(self) -> str | None:
        try:
            with open(self.state_path) as handle:
                return normalize_mac(handle.read())
        except OSError:
            return None

    def _store_mac(self, mac: str) -> None:
        if self._stored_mac() == mac:
            return
        try:
            os.makedirs(os.path.dirname(self.state_path) or ".", exist_ok=True)
            write_atomic(self.state_path, f"{mac}\n".encode(), mode=0o644)
        except OSError as exc:
            log.warning("cannot persist the VTEP MAC of %s in %s: %s", self.name, self.state_path, exc)

    def _device(self, ipr: IPRoute) -> overlay.VxlanInfo:
        device = overlay.find_vxlan(ipr, self.name)
        if device is None or device.kind != "vxlan":
            raise BackendError(f"vxlan device {self.name} does not exist (run prepare() again)")
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

    def _direct(self, ipr: IPRoute, lease: Lease) -> bool:
        if not self.options.direct_routing:
            return False
        try:
            return overlay.on_link(ipr, lease.attrs.public_ip)
        except NetError as exc:
            log.error("DirectRouting: %s", exc)
            return False

    def _program(self, ipr: IPRoute, device: overlay.VxlanInfo, lease: Lease) -> bool:
        """Neighbour, FDB, then route (the kernel would ARP for the gateway otherwise); ``True`` if direct."""
        if self._direct(ipr, lease):
            overlay.route_replace(ipr, lease.subnet, lease.attrs.public_ip, self.ext.index)
            return True
        mac = vtep_mac(lease)
        gateway = str(lease.subnet.network_address)
        overlay.neigh_set(ipr, device.index, gateway, mac)
        try:
            overlay.fdb_set(ipr, device.index, mac, lease.attrs.public_ip)
        except CNIError:
            overlay.neigh_del(ipr, device.index, gateway)
            raise
        try:
            overlay.route_replace(ipr, lease.subnet, gateway, device.index, onlink=True)
        except CNIError:
            overlay.fdb_del(ipr, device.index, mac, lease.attrs.public_ip)
            overlay.neigh_del(ipr, device.index, gateway)
            raise
        return False

    def add_peer(self, lease: Lease) -> None:
        """Program one peer; an FDB entry its previous VTEP MAC left for the same address goes."""
        if not peers([lease], self.accepts, self._own):
            return
        with self.netlink() as ipr:
            device = self._device(ipr)
            if self._program(ipr, device, lease):
                return
            mac = vtep_mac(lease)
            for old_mac, dst in overlay.fdb_entries(ipr, device.index):
                if dst == lease.attrs.public_ip and old_mac != mac:
                    overlay.fdb_del(ipr, device.index, old_mac, dst)

    def remove_peer(self, lease: Lease) -> None:
        """Route, FDB entry, neighbour: the reverse of :meth:`add_peer`; anything missing is fine."""
        if not peers([lease], self.accepts, self._own):
            return
        gateway = str(lease.subnet.network_address)
        with self.netlink() as ipr:
            if self.options.direct_routing:
                overlay.route_del(ipr, lease.subnet, lease.attrs.public_ip, self.ext.index)
            device = overlay.find_vxlan(ipr, self.name)
            if device is None:
                return
            overlay.route_del(ipr, lease.subnet, gateway, device.index)
            mac = normalize_mac(get_key(lease.attrs.backend_data, "VtepMAC"))
            if mac is None:  # a removal event without the value: the neighbour entry knows the MAC
                mac = dict(overlay.neighbours(ipr, device.index)).get(gateway)
            if mac:
                overlay.fdb_del(ipr, device.index, mac, lease.attrs.public_ip)
            overlay.neigh_del(ipr, device.index, gateway)

    def sync(self, leases: list[Lease]) -> None:
        """Program every given peer, then remove what no given peer accounts for.

        Only routes inside the cluster network that use ``flannel.N`` (or,
        direct-routed, the external interface with a gateway), and only
        neighbours and FDB entries on ``flannel.N``, are ever removed. A peer
        that failed to program keeps whatever entries it already had.
        """
        wanted = peers(leases, self.accepts, self._own)
        with self.netlink() as ipr:
            device = self._device(ipr)
            direct: set[ipaddress.IPv4Network] = set()

            def program(lease: Lease) -> None:
                if self._program(ipr, device, lease):
                    direct.add(lease.subnet)

            errors = sync_each(wanted, program, f"{self.name} sync")
            self._remove_stale(ipr, device, wanted, [lease for lease in wanted if lease.subnet not in direct])
        raise_errors(errors, f"{self.name} sync")

    def _remove_stale(
        self, ipr: IPRoute, device: overlay.VxlanInfo, wanted: list[Lease], encapsulated: list[Lease]
    ) -> None:
        remove_stale_routes(
            ipr,
            self.network,
            self._own,
            wanted,
            lambda route: route.oif == device.index or (route.oif == self.ext.index and route.gateway is not None),
        )
        gateways = {str(lease.subnet.network_address) for lease in encapsulated}
        for ip, _ in overlay.neighbours(ipr, device.index):
            if ip not in gateways:
                log.info("removing stale neighbour %s on %s", ip, self.name)
                overlay.neigh_del(ipr, device.index, ip)
        remotes = set()
        for lease in encapsulated:
            mac = normalize_mac(get_key(lease.attrs.backend_data, "VtepMAC"))
            if mac:
                remotes.add((mac, lease.attrs.public_ip))
        for mac, dst in overlay.fdb_entries(ipr, device.index):
            if (mac.lower(), dst) not in remotes:
                log.info("removing stale fdb entry %s dst %s on %s", mac, dst, self.name)
                overlay.fdb_del(ipr, device.index, mac, dst)

    def close(self) -> None:
        """Nothing runs in the background; the device, routes and entries stay for the next agent."""
        self.close_netlink()
