"""The udp backend (debug only): a TUN device ``flannel0`` and a userspace proxy over UDP 8285.

Ground truth: flannel ``pkg/backend/udp/{udp_amd64.go,udp_network_amd64.go}``.
Every packet crosses userspace twice, so it is slow; it needs nothing from
the kernel but TUN, which makes it the backend of last resort.

Peers live in the proxy's table, not the kernel's. The one route, the whole
network through ``flannel0``, is a :class:`~pycni.dataplane.RouteTable`'s
(pycni's protocol; the protocol-boot one an earlier pycni wrote is adopted),
so a sync repairs it if it went and otherwise writes nothing.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
from typing import TYPE_CHECKING, Any

from pycni.dataplane import ApplyResult, Route, RouteTable
from pycni.fabric.flannel.backends import ExternalInterface
from pycni.fabric.flannel.backends.common import (
    DEFAULT_STATE_DIR,
    RTPROT_BOOT,
    BackendError,
    NetlinkOwner,
    ipv4_network,
    option_int,
    peers,
    raise_problems,
)
from pycni.fabric.flannel.backends.udp_proxy import PeerTable, UdpProxy
from pycni.fabric.flannel.model import Lease, NetworkConfig
from pycni.net import link, overlay, sysctl
from pycni.net.errors import NetError
from pycni.net.route import RT_SCOPE_UNIVERSE, RouteMsg

if TYPE_CHECKING:
    from pyroute2 import IPRoute

log = logging.getLogger("pycni.fabric.flannel.backends.udp")

ENCAP_OVERHEAD = 28  # IPv4 header 20 + UDP header 8
DEFAULT_PORT = 8285
TUN_NAME = "flannel0"


class UdpBackend(NetlinkOwner):
    """``flannel0`` (TUN) plus a proxy thread; peers live in the proxy's table, not the kernel's."""

    accepts: tuple[str, ...] = ("udp", "")  # Flannel's own udp leases carry no backend type

    def __init__(
        self,
        ext: ExternalInterface,
        config: NetworkConfig,
        *,
        state_dir: str = DEFAULT_STATE_DIR,  # unused: the TUN device itself is the state; accepted like the others
        ipr: IPRoute | None = None,
    ) -> None:
        super().__init__(ipr)
        self.ext = ext
        self.network = ipv4_network(config, "udp")
        self.port = option_int(config.backend, "Port", DEFAULT_PORT, 1, 65535, "udp")
        self.mtu = ext.mtu - ENCAP_OVERHEAD
        self.name = TUN_NAME
        self.table = PeerTable()
        self._tun_fd = -1
        self._sock: socket.socket | None = None
        self._proxy: UdpProxy | None = None
        self._own: Lease | None = None
        self._routes: RouteTable | None = None
        self._tun_index = 0
        self.last_apply: list[ApplyResult] = []

    def prepare(self) -> dict[str, Any]:
        """Attach to (or create) the persistent TUN, bind the socket, start the proxy. No BackendData."""
        if self._proxy is not None:
            return {}
        try:
            self._tun_fd = overlay.open_tun(self.name)
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self._sock = sock
            try:
                sock.bind((self.ext.address, self.port))
            except OSError as exc:
                raise BackendError(f"failed to listen on UDP {self.ext.address}:{self.port}: {exc.strerror}") from None
            with self.netlink() as ipr:
                tun = link.get(ipr, self.name)
                if tun.mtu != self.mtu:
                    link.set_attrs(ipr, tun, mtu=self.mtu)
            self._proxy = UdpProxy(self._tun_fd, sock, self.table)
            self._proxy.start()
        except BaseException:
            self._release()
            raise
        return {}

    def configure(self, lease: Lease) -> None:
        """The lease's network address as a /32 and a route to the whole Network through the TUN (as Flannel).

        The more specific local subnet route (``cni0``) wins for local pods;
        everything else in the Network reaches the proxy.
        """
        address = ipaddress.IPv4Interface(f"{lease.subnet.network_address}/32")
        with self.netlink() as ipr:
            tun = link.get(ipr, self.name)
            overlay.ensure_only_address(ipr, tun.index, address, self.network, self.name)
            if not tun.up:
                link.set_up(ipr, self.name)
            self._tun_index = tun.index
            self._apply_route(ipr, resync=True)
        # The proxy's ICMP errors come from this node's own flannel0 address; without accept_local
        # the kernel drops them as martians (Flannel's C proxy has the same problem, unfixed).
        sysctl.write(f"net/ipv4/conf/{self.name}/accept_local", "1")
        if self._proxy is not None:
            self._proxy.tun_address = lease.subnet.network_address.packed
        self._own = lease

    def _adopt(self, msg: RouteMsg) -> bool:
        """The network's route through ``flannel0`` as an earlier pycni wrote it (protocol boot)."""
        return msg.proto == RTPROT_BOOT and msg.dst == self.network and msg.oif == self._tun_index and not msg.gateway

    def _apply_route(self, ipr: IPRoute, resync: bool) -> None:
        if self._routes is None:
            self._routes = RouteTable(ipr, within=[self.network], adopt=self._adopt, name=f"{self.name} network")
            self._routes.set_routes([Route(self.network, dev=self.name, scope=RT_SCOPE_UNIVERSE)])
        if resync:
            self._routes.queue_resync()
        self.last_apply = [self._routes.apply()]
        raise_problems(self.last_apply, [], f"{self.name} route")

    def resolve_clash(self, leases: list[Lease]) -> dict[str, Any] | None:
        """Nothing to clash: a udp node is known by its public IP alone, which the lease keeps."""
        return None

    def add_peer(self, lease: Lease) -> None:
        for peer in peers([lease], self.accepts, self._own):
            self.table.set(peer.subnet, peer.attrs.public_ip, self.port)

    def remove_peer(self, lease: Lease) -> None:
        for peer in peers([lease], self.accepts, self._own):
            self.table.delete(peer.subnet)

    def sync(self, leases: list[Lease]) -> None:
        """The proxy's table becomes exactly the given peers; the network's route is checked against the kernel."""
        self.table.replace(
            {peer.subnet: (peer.attrs.public_ip, self.port) for peer in peers(leases, self.accepts, self._own)}
        )
        if self._routes is None:
            return  # not configured yet: configure() writes the route
        with self.netlink() as ipr:
            tun = link.find(ipr, self.name)
            self._tun_index = tun.index if tun is not None else 0  # gone: the route waits for it
            self._apply_route(ipr, resync=True)

    @property
    def running(self) -> bool:
        return self._proxy is not None and self._proxy.running

    def _release(self) -> None:
        if self._proxy is not None:
            self._proxy.stop()
            self._proxy = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._tun_fd >= 0:
            try:
                os.close(self._tun_fd)
            except OSError as exc:
                raise NetError(f"failed to close {self.name}", exc.errno or 0) from None
            finally:
                self._tun_fd = -1

    def close(self) -> None:
        """Stop the proxy and close its descriptors; ``flannel0`` and its routes stay for the next agent."""
        try:
            self._release()
        finally:
            with self.netlink():
                self._routes = None  # it holds the socket that closes now
            self.close_netlink()
