"""What the backends share: option parsing with Go's rules, errors, the peer filter, the dataplane drivers' apply."""

from __future__ import annotations

import ipaddress
import logging
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from pycni.dataplane import ApplyResult
from pycni.fabric.flannel.model import ConfigError, Lease, NetworkConfig
from pycni.net.route import RouteMsg
from pycni.spec.errors import CNIError, ErrorCode
from pycni.spec.jsonutil import get_key

if TYPE_CHECKING:
    from pyroute2 import IPRoute

log = logging.getLogger("pycni.fabric.flannel.backends")

DEFAULT_STATE_DIR = "/run/flannel"
RTPROT_BOOT = 3  # the protocol of ``ip route add``, and of the routes pycni's backends wrote before the dataplane


class BackendError(CNIError):
    """The backend could not program the dataplane; ``problems`` lists every failure of a sync, one line each."""

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(ErrorCode.INTERNAL, message)
        self.problems = problems or []


class DeviceMissing(BackendError):
    """The backend's device is gone (deleted by hand, or its module unloaded): ``prepare()`` makes it again."""


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


def peers(
    leases: Iterable[Lease], accepts: tuple[str, ...], own: Lease | None, network: ipaddress.IPv4Network | None = None
) -> list[Lease]:
    """The leases this backend can forward to: a type it ``accepts`` (Flannel ignores the others), not our own.

    With ``network``, a lease outside it (left in the store by another
    config) is skipped too: the backend's routes are owned inside the network only.
    """
    kept = []
    for lease in leases:
        if own is not None and lease.subnet == own.subnet:
            continue
        if lease.attrs.backend_type not in accepts:
            log.warning("ignoring non-%s subnet %s: type=%s", accepts[0], lease.subnet, lease.attrs.backend_type)
            continue
        if network is not None and not lease.subnet.subnet_of(network):
            log.warning("ignoring subnet %s of %s: outside network %s", lease.subnet, lease.attrs.public_ip, network)
            continue
        kept.append(lease)
    return kept


def legacy_route(
    msg: RouteMsg, network: ipaddress.IPv4Network, own: Lease | None, device_index: int, ext_index: int
) -> bool:
    """A route into ``network`` an earlier pycni backend wrote, to be adopted by the route driver.

    Those routes carry protocol boot and are the ones the old stale-route
    sweep called its own: on the backend's device (``device_index``, 0 for
    none), or via the external interface with a gateway. The network's own
    route and this node's subnet were never the backend's.
    """
    if msg.proto != RTPROT_BOOT or msg.dst == network or (own is not None and msg.dst == own.subnet):
        return False
    return (device_index != 0 and msg.oif == device_index) or (msg.oif == ext_index and msg.gateway is not None)


def raise_problems(results: Iterable[ApplyResult], problems: list[str], what: str) -> None:
    """One :class:`BackendError` for an apply's failures, if there were any.

    ``problems`` are the peers that could not even be turned into entries
    (bad BackendData); a write the kernel refused stays pending in its
    driver, and the next apply tries it again.
    """
    problems = problems + [f"{result.kind} {result.target}: {error}" for result in results for error in result.errors]
    if problems:
        raise BackendError(f"{what}: {len(problems)} failed; first: {problems[0]}", problems)


def writes(results: Iterable[ApplyResult]) -> int:
    """Netlink requests that could change the kernel, over an apply's results (0 when nothing changed)."""
    return sum(result.writes for result in results)


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
