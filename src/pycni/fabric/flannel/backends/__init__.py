"""Backends turn the peers' leases into forwarding on this node (Flannel's ``pkg/backend``).

The agent drives a backend in this order::

    backend = BACKENDS[config.backend_type](ext, config)   # validate options
    data = backend.prepare()            # devices exist; BackendData for the lease (e.g. VtepMAC)
    backend.configure(own_lease)        # device addresses that depend on the lease
    backend.sync(all_other_leases)      # reconcile: program missing peers, remove stale ones
    backend.resolve_clash(leases)       # a peer publishes our identity (VtepMAC)? new BackendData
    backend.add_peer(lease) / backend.remove_peer(lease)   # then, per lease event
    backend.mtu                         # for subnet.env (FLANNEL_MTU)
    backend.close()                     # stop helpers (udp's proxy); leaves devices and routes

Every operation is idempotent: replaying an event or a sync changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from pycni.dataplane.stats import ApplyResult
from pycni.fabric.flannel.model import Lease, NetworkConfig


@dataclass(frozen=True)
class ExternalInterface:
    """The node's underlay interface: where encapsulated traffic leaves, and the address peers use."""

    name: str
    index: int
    address: str  # the interface's IPv4 address
    public_ip: str  # what peers send to (--public-ip, default: address)
    mtu: int


class Backend(Protocol):
    mtu: int
    accepts: tuple[str, ...]  # lease backend types this backend forwards to (Flannel ignores the others)
    last_apply: list[ApplyResult]  # the drivers' results of the latest apply (the agent's dataplane metrics)

    def prepare(self) -> dict[str, Any]: ...

    def configure(self, lease: Lease) -> None: ...

    def sync(self, leases: list[Lease]) -> None: ...

    def resolve_clash(self, leases: list[Lease]) -> dict[str, Any] | None: ...

    def add_peer(self, lease: Lease) -> None: ...

    def remove_peer(self, lease: Lease) -> None: ...

    def close(self) -> None: ...


class BackendClass(Protocol):
    """How the agent makes a backend: validate the options, touch nothing yet."""

    def __call__(
        self, ext: ExternalInterface, config: NetworkConfig, *, state_dir: str = ..., ipr: Any = ...
    ) -> Backend: ...


# The backend modules import ExternalInterface from here, so they come after it.
from pycni.fabric.flannel.backends.host_gw import HostGwBackend  # noqa: E402
from pycni.fabric.flannel.backends.udp import UdpBackend  # noqa: E402
from pycni.fabric.flannel.backends.vxlan import VxlanBackend  # noqa: E402

BACKENDS: dict[str, BackendClass] = {"vxlan": VxlanBackend, "host-gw": HostGwBackend, "udp": UdpBackend}
