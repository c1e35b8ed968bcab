"""What the backends share: option parsing with Go's rules, errors, the peer filter, the stale-route sweep."""

from __future__ import annotations

import ipaddress
import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from pycni.fabric.model import ConfigError, Lease, NetworkConfig
from pycni.net import overlay
from pycni.spec.errors import CNIError, ErrorCode
from pycni.spec.jsonutil import get_key

if TYPE_CHECKING:
    from pyroute2 import IPRoute

log = logging.getLogger("pycni.fabric.backends")

DEFAULT_STATE_DIR = "/run/flannel"


class BackendError(CNIError):
    """The backend could not program the dataplane; ``errors`` lists every failure of a sync."""

    def __init__(self, message: str, errors: list[Exception] | None = None) -> None:
        super().__init__(ErrorCode.INTERNAL, message)
        self.errors = errors or []


def option_int(options: dict[str, Any], key: str, default: int, low: int, high: int, backend: str) -> int:
    """An integer option as Go decodes it (keys case-insensitive), range-checked."""
    value = get_key(options, key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"error decoding {backend} backend config: {key} must be an integer")
    if not low <= value <= high:
        raise ConfigError(f"error decoding {backend} backend config: {key} {value} is out of range {low}..{high}")
    return value


def option_bool(options: dict[str, Any], key: str, backend: str) -> bool:
    value = get_key(options, key)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise ConfigError(f"error decoding {backend} backend config: {key} must be true or false")
    return value


def ipv4_network(config: NetworkConfig, backend: str) -> ipaddress.IPv4Network:
    """The cluster network; the backends program IPv4 only (IPv6 is not implemented yet)."""
    if config.network is None:
        raise ConfigError(f"the {backend} backend needs an IPv4 Network (IPv6-only networks are not supported)")
    return config.network


def peers(leases: Iterable[Lease], accepts: tuple[str, ...], own: Lease | None) -> list[Lease]:
    """The leases this backend can forward to: a type it ``accepts`` (Flannel ignores the others), not our own."""
    kept = []
    for lease in leases:
        if own is not None and lease.subnet == own.subnet:
            continue
        if lease.attrs.backend_type not in accepts:
            log.warning("ignoring non-%s subnet %s: type=%s", accepts[0], lease.subnet, lease.attrs.backend_type)
            continue
        kept.append(lease)
    return kept


def remove_stale_routes(
    ipr: IPRoute,
    network: ipaddress.IPv4Network,
    own: Lease | None,
    wanted: list[Lease],
    ours: Callable[[overlay.RouteEntry], bool],
) -> None:
    """Delete routes into ``network`` that are ``ours`` but belong to no wanted peer.

    The cluster network's own route and this node's subnet are never touched.
    """
    subnets = {lease.subnet for lease in wanted}
    own_subnet = own.subnet if own is not None else None
    for route in overlay.routes(ipr):
        if (
            ours(route)
            and route.dst.subnet_of(network)
            and route.dst not in (network, own_subnet)
            and route.dst not in subnets
        ):
            log.info("removing stale route %s via %s", route.dst, route.gateway)
            overlay.route_del(ipr, route.dst, route.gateway, route.oif)


def sync_each(leases: list[Lease], program: Callable[[Lease], None], what: str) -> list[Exception]:
    """Program every lease; one failure does not stop the rest. Returns the failures."""
    errors: list[Exception] = []
    for lease in leases:
        try:
            program(lease)
        except CNIError as exc:
            log.error("%s: %s: %s", what, lease.subnet, exc)
            errors.append(exc)
    return errors


def raise_errors(errors: list[Exception], what: str) -> None:
    """One :class:`BackendError` for the failures of a sync, if there were any."""
    if errors:
        raise BackendError(f"{what}: {len(errors)} peers failed; first: {errors[0]}", errors)


class NetlinkOwner:
    """A lazily opened netlink socket (in the namespace of the first call) and a lock for it.

    pyroute2 sockets are not safe to share between threads, and the agent
    calls ``sync`` from its timer and ``add_peer`` from its watch.
    """

    def __init__(self, ipr: IPRoute | None) -> None:
        self._ipr = ipr
        self._own_socket = ipr is None
        self._lock = threading.RLock()

    @contextmanager
    def netlink(self) -> Iterator[IPRoute]:
        with self._lock:
            if self._ipr is None:
                from pycni.net.netns import iproute_here

                self._ipr = iproute_here()
            yield self._ipr

    def close_netlink(self) -> None:
        with self._lock:
            if self._ipr is not None and self._own_socket:
                self._ipr.close()
                self._ipr = None
