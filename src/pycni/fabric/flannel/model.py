"""Flannel's data model: the network config, leases and lease events.

Field names, defaults and the etcd key layout are Flannel's
(``pkg/subnet/config.go``, ``pkg/lease/lease.go``, ``pkg/subnet/etcd/registry.go``),
so a Flannel user's ``net-conf.json`` and etcd keys work unchanged.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from pycni.fabric.flannel import defaults
from pycni.spec.errors import CNIError, ErrorCode
from pycni.spec.jsonutil import get_key

IPv4Net = ipaddress.IPv4Network
IPv6Net = ipaddress.IPv6Network

DEFAULT_PREFIX = defaults.PREFIX
SUBNET_TTL = defaults.SUBNET_TTL
_KEY = re.compile(r"(\d+\.\d+\.\d+\.\d+)-(\d+)(?:&([a-f\d:]+)-(\d+))?$")


class ConfigError(CNIError):
    def __init__(self, message: str) -> None:
        super().__init__(ErrorCode.INVALID_NETWORK_CONFIG, message)


@dataclass(frozen=True)
class NetworkConfig:
    """``net-conf.json`` / etcd ``<prefix>/config``, validated, with Flannel's defaults filled in."""

    network: IPv4Net | None
    subnet_len: int
    subnet_min: IPv4Net | None
    subnet_max: IPv4Net | None
    ipv6_network: IPv6Net | None = None
    ipv6_subnet_len: int = 64
    ipv6_subnet_min: IPv6Net | None = None
    ipv6_subnet_max: IPv6Net | None = None
    backend_type: str = "vxlan"
    backend: dict[str, Any] = field(default_factory=dict)  # the whole Backend object (Type and options)

    @classmethod
    def from_json(cls, text: str | bytes) -> NetworkConfig:
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ConfigError(f"network config is not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError("network config must be a JSON object")
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NetworkConfig:
        enable_v4 = _bool(data, "EnableIPv4", True)
        enable_v6 = _bool(data, "EnableIPv6", False)
        network = _net(data, "Network", 4) if enable_v4 else None
        if enable_v4 and network is None:
            raise ConfigError("please define a correct Network parameter in the flannel config")
        v6 = _net(data, "IPv6Network", 6) if enable_v6 else None
        if enable_v6 and v6 is None:
            raise ConfigError("please define a correct IPv6Network parameter in the flannel config")
        if network is None and v6 is None:
            raise ConfigError("the network config enables neither IPv4 nor IPv6")
        backend = get_key(data, "Backend") or {}
        if not isinstance(backend, dict):
            raise ConfigError('Backend must be an object, e.g. {"Type": "vxlan"}')
        backend_type = str(get_key(backend, "Type") or "vxlan")
        subnet_len = subnet_min = subnet_max = None
        if isinstance(network, IPv4Net):
            subnet_len, subnet_min, subnet_max = _ranges(data, network, "", 24, 22, 30)
        v6_len, v6_min, v6_max = (None, None, None)
        if isinstance(v6, IPv6Net):
            v6_len, v6_min, v6_max = _ranges(data, v6, "IPv6", 64, 62, 126)
        return cls(
            network=network if isinstance(network, IPv4Net) else None,
            subnet_len=subnet_len or 24,
            subnet_min=subnet_min if isinstance(subnet_min, IPv4Net) else None,
            subnet_max=subnet_max if isinstance(subnet_max, IPv4Net) else None,
            ipv6_network=v6 if isinstance(v6, IPv6Net) else None,
            ipv6_subnet_len=v6_len or 64,
            ipv6_subnet_min=v6_min if isinstance(v6_min, IPv6Net) else None,
            ipv6_subnet_max=v6_max if isinstance(v6_max, IPv6Net) else None,
            backend_type=backend_type,
            backend=dict(backend),
        )

    def subnets(self) -> Iterator[IPv4Net]:
        """Every IPv4 subnet leases may take, SubnetMin to SubnetMax, in order (lazily: a /8 has 65536)."""
        assert self.network is not None and self.subnet_min is not None and self.subnet_max is not None
        first = int(self.subnet_min.network_address)
        last = int(self.subnet_max.network_address)
        step = 1 << (32 - self.subnet_len)
        return (IPv4Net((address, self.subnet_len)) for address in range(first, last + 1, step))


def _bool(data: dict[str, Any], key: str, default: bool) -> bool:
    value = get_key(data, key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ConfigError(f"{key} must be true or false")
    return value


def _net(data: dict[str, Any], key: str, version: int) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    text = get_key(data, key)
    if text is None:
        return None
    try:
        net = ipaddress.ip_network(text, strict=True)
    except (ValueError, TypeError):
        raise ConfigError(f"{key}: {text!r} is not a network in CIDR notation (host bits must be zero)") from None
    if net.version != version:
        raise ConfigError(f"{key}: {text!r} is not an IPv{version} network")
    return net


def _ranges(
    data: dict[str, Any],
    network: ipaddress.IPv4Network | ipaddress.IPv6Network,
    prefix: str,
    default_len: int,
    small: int,
    maximum: int,
) -> tuple[int, ipaddress.IPv4Network | ipaddress.IPv6Network, ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """SubnetLen/Min/Max with Flannel's defaults and checks (``pkg/subnet/config.go``)."""
    length = get_key(data, f"{prefix}SubnetLen")
    if length is None or (type(length) is int and length == 0):  # Flannel: 0 means unset
        length = default_len if network.prefixlen < small else network.prefixlen + 2
    if isinstance(length, bool) or not isinstance(length, int):
        raise ConfigError(f"{prefix}SubnetLen must be an integer")
    if length > maximum:
        raise ConfigError(f"{prefix}SubnetLen must be less than /{maximum + 1}")
    if length < network.prefixlen + 2:
        raise ConfigError(f"{prefix}Network must be able to accommodate at least four subnets")
    step = 1 << (network.max_prefixlen - length)
    base = int(network.network_address)
    cls = type(network)

    def aligned(key: str, fallback: int) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
        text = get_key(data, key)
        if text is None:
            return cls((fallback, length))
        try:
            address = int(ipaddress.ip_address(text))
        except (ValueError, TypeError):
            raise ConfigError(f"{key}: {text!r} is not an address") from None
        if address % step or not network.supernet_of(cls((address, length))):  # type: ignore[arg-type]
            raise ConfigError(f"{key} {text} is not aligned to {prefix}SubnetLen {length} inside {network}")
        return cls((address, length))

    last = base + (1 << (network.max_prefixlen - network.prefixlen)) - step
    low = aligned(f"{prefix}SubnetMin", base + step)
    high = aligned(f"{prefix}SubnetMax", last)
    if int(low.network_address) > int(high.network_address):
        raise ConfigError(f"{prefix}SubnetMin is greater than {prefix}SubnetMax")
    return length, low, high


@dataclass(frozen=True)
class LeaseAttrs:
    """What a node publishes with its lease (Flannel's ``LeaseAttrs`` JSON)."""

    public_ip: str
    backend_type: str
    backend_data: dict[str, Any] = field(default_factory=dict)
    public_ipv6: str | None = None
    backend_v6_data: dict[str, Any] | None = None

    def to_json(self) -> str:
        # Go's struct tags: PublicIPv6 is always written (null when unset); the rest are omitempty.
        data: dict[str, Any] = {"PublicIP": self.public_ip, "PublicIPv6": self.public_ipv6 or None}
        if self.backend_type:
            data["BackendType"] = self.backend_type
        if self.backend_data:
            data["BackendData"] = self.backend_data
        if self.backend_v6_data:
            data["BackendV6Data"] = self.backend_v6_data
        return json.dumps(data, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> LeaseAttrs:
        data = json.loads(text)
        backend = data.get("BackendData") or {}
        return cls(
            public_ip=str(data.get("PublicIP") or ""),
            backend_type=str(data.get("BackendType") or ""),
            backend_data=backend if isinstance(backend, dict) else {},
            public_ipv6=data.get("PublicIPv6") or None,
            backend_v6_data=data.get("BackendV6Data"),
        )


@dataclass(frozen=True)
class Lease:
    """A node's subnet and attributes; ``expiration`` None means a reservation (no TTL)."""

    subnet: IPv4Net
    attrs: LeaseAttrs
    ipv6_subnet: IPv6Net | None = None
    expiration: float | None = None

    @property
    def key(self) -> str:
        return make_key(self.subnet, self.ipv6_subnet)


def make_key(subnet: IPv4Net, ipv6_subnet: IPv6Net | None = None) -> str:
    """``10.5.52.0-24`` (``&fd00::-64`` appended for dual stack), Flannel's ``MakeSubnetKey``."""
    key = f"{subnet.network_address}-{subnet.prefixlen}"
    if ipv6_subnet is not None:
        key += f"&{ipv6_subnet.network_address}-{ipv6_subnet.prefixlen}"
    return key


def parse_key(key: str) -> tuple[IPv4Net, IPv6Net | None] | None:
    match = _KEY.search(key)
    if match is None:
        return None
    v4 = IPv4Net(f"{match.group(1)}/{match.group(2)}")
    v6 = IPv6Net(f"{match.group(3)}/{match.group(4)}") if match.group(3) else None
    return v4, v6


class EventType(Enum):
    ADDED = "added"
    REMOVED = "removed"


@dataclass(frozen=True)
class LeaseEvent:
    type: EventType
    lease: Lease
