"""The host-gw backend: a plain route per peer, the peer's node address as the gateway.

Ground truth: flannel ``pkg/backend/hostgw/hostgw.go`` and ``pkg/backend/route_network.go``.
No encapsulation, so the MTU is the underlay's, but every node must be an
L2 neighbour of every other: the gateway has to be on-link.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from pycni.fabric.backends import ExternalInterface
from pycni.fabric.backends.common import (
    DEFAULT_STATE_DIR,
    NetlinkOwner,
    ipv4_network,
    peers,
    raise_errors,
    remove_stale_routes,
    sync_each,
)
from pycni.fabric.model import ConfigError, Lease, NetworkConfig
from pycni.net import overlay

if TYPE_CHECKING:
    from pyroute2 import IPRoute

log = logging.getLogger("pycni.fabric.backends.host_gw")

NAT_ERROR = (
    "your PublicIP differs from interface IP, meaning that probably you're on a NAT, "
    "which is not supported by host-gw backend"
)


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

    def prepare(self) -> dict[str, Any]:
        """No device to make; the lease carries no backend data."""
        return {}

    def configure(self, lease: Lease) -> None:
        self._own = lease

    def resolve_clash(self, leases: list[Lease]) -> dict[str, Any] | None:
        """Nothing to clash: a host-gw node is known by its public IP alone, which the lease keeps."""
        return None

    def _program(self, ipr: IPRoute, lease: Lease) -> None:
        overlay.route_replace(ipr, lease.subnet, lease.attrs.public_ip, self.ext.index)

    def add_peer(self, lease: Lease) -> None:
        if peers([lease], self.accepts, self._own):
            with self.netlink() as ipr:
                self._program(ipr, lease)

    def remove_peer(self, lease: Lease) -> None:
        if peers([lease], self.accepts, self._own):
            with self.netlink() as ipr:
                overlay.route_del(ipr, lease.subnet, lease.attrs.public_ip, self.ext.index)

    def sync(self, leases: list[Lease]) -> None:
        """Re-add missing routes (Flannel's 10 s ``routeCheck``) and drop routes of vanished peers.

        Only routes inside the cluster network that leave through the
        external interface with a gateway are candidates for removal.
        """
        wanted = peers(leases, self.accepts, self._own)
        with self.netlink() as ipr:
            errors = sync_each(wanted, lambda lease: self._program(ipr, lease), "host-gw sync")
            remove_stale_routes(
                ipr,
                self.network,
                self._own,
                wanted,
                lambda route: route.oif == self.ext.index and route.gateway is not None,
            )
        raise_errors(errors, "host-gw sync")

    def close(self) -> None:
        self.close_netlink()
