"""The host-gw backend: a plain route per peer, the peer's node address as the gateway.

Ground truth: flannel ``pkg/backend/hostgw/hostgw.go`` and ``pkg/backend/route_network.go``.
No encapsulation, so the MTU is the underlay's, but every node must be an
L2 neighbour of every other: the gateway has to be on-link.

The routes are a desired state that a :class:`~pycni.dataplane.RouteTable`
reconciles (pycni's protocol, inside the network only): Flannel's 10 s
``routeCheck`` re-adds every route; here a sync re-reads the kernel and
writes only what is missing, changed or stale. Routes an earlier pycni
wrote with protocol boot are adopted (:func:`common.legacy_route`).
"""

from __future__ import annotations

import ipaddress
import logging
from typing import TYPE_CHECKING, Any

from pycni.dataplane import ApplyResult, Route, RouteTable
from pycni.fabric.flannel.backends import ExternalInterface
from pycni.fabric.flannel.backends.common import (
    DEFAULT_STATE_DIR,
    NetlinkOwner,
    ipv4_network,
    legacy_route,
    peers,
    raise_problems,
)
from pycni.fabric.flannel.model import ConfigError, Lease, NetworkConfig
from pycni.net.route import RouteMsg

if TYPE_CHECKING:
    from pyroute2 import IPRoute

log = logging.getLogger("pycni.fabric.flannel.backends.host_gw")

NAT_ERROR = (
    "your PublicIP differs from interface IP, meaning that probably you're on a NAT, "
    "which is not supported by host-gw backend"
)


def desired_routes(leases: list[Lease], ext: str) -> tuple[list[Route], list[str]]:
    """``<peer subnet> via <peer PublicIP> dev <ext>`` per peer, and the peers left out (no IPv4 PublicIP); pure."""
    routes, problems = [], []
    for lease in sorted(leases, key=lambda lease: int(lease.subnet.network_address)):
        try:
            routes.append(Route(lease.subnet, dev=ext, gateway=ipaddress.IPv4Address(lease.attrs.public_ip)))
        except ValueError:
            problems.append(f"lease {lease.subnet}: PublicIP {lease.attrs.public_ip!r} is not an IPv4 address")
    return routes, problems


class HostGwBackend(NetlinkOwner):
    """``<peer subnet> via <peer PublicIP> dev <ext>`` for every peer."""

    accepts: tuple[str, ...] = ("host-gw",)

    def __init__(
        self,
        ext: ExternalInterface,
        config: NetworkConfig,
        *,
        state_dir: str = DEFAULT_STATE_DIR,  # unused: host-gw keeps no state; accepted like the others
        ipr: IPRoute | None = None,
    ) -> None:
        if ext.public_ip != ext.address:
            raise ConfigError(NAT_ERROR)
        super().__init__(ipr)
        self.ext = ext
        self.network = ipv4_network(config, "host-gw")
        self.mtu = ext.mtu
        self._own: Lease | None = None
        self._peers: dict[ipaddress.IPv4Network, Lease] = {}
        self._routes: RouteTable | None = None
        self.last_apply: list[ApplyResult] = []

    def prepare(self) -> dict[str, Any]:
        """No device to make; the lease carries no backend data."""
        return {}

    def configure(self, lease: Lease) -> None:
        self._own = lease

    def resolve_clash(self, leases: list[Lease]) -> dict[str, Any] | None:
        """Nothing to clash: a host-gw node is known by its public IP alone, which the lease keeps."""
        return None

    def _adopt(self, msg: RouteMsg) -> bool:
        return legacy_route(msg, self.network, self._own, 0, self.ext.index)

    def _apply(self, ipr: IPRoute, resync: bool) -> None:
        if self._routes is None:
            self._routes = RouteTable(ipr, within=[self.network], adopt=self._adopt, name="host-gw peers")
        if resync:
            self._routes.queue_resync()
        routes, problems = desired_routes(list(self._peers.values()), self.ext.name)
        self._routes.set_routes(routes)
        self.last_apply = [self._routes.apply()]
        raise_problems(self.last_apply, problems, "host-gw sync")

    def add_peer(self, lease: Lease) -> None:
        for peer in peers([lease], self.accepts, self._own, self.network):
            with self.netlink() as ipr:
                self._peers[peer.subnet] = peer
                self._apply(ipr, False)

    def remove_peer(self, lease: Lease) -> None:
        for peer in peers([lease], self.accepts, self._own, self.network):
            with self.netlink() as ipr:
                if self._peers.pop(peer.subnet, None) is not None:
                    self._apply(ipr, False)

    def sync(self, leases: list[Lease]) -> None:
        """The given peers' routes, against a fresh read of the kernel: missing ones added, stale ones removed.

        Only routes inside the cluster network with pycni's protocol, or the
        protocol-boot ones via the external interface with a gateway that an
        earlier pycni wrote, are ever removed.
        """
        with self.netlink() as ipr:
            self._peers = {peer.subnet: peer for peer in peers(leases, self.accepts, self._own, self.network)}
            self._apply(ipr, True)

    def close(self) -> None:
        with self.netlink():
            self._routes = None  # it holds the socket that closes now
        self.close_netlink()
