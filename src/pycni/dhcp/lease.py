"""What a DHCPACK granted, read the way Go's plugin reads it, and its timers.

* address: ``yiaddr`` with the subnet-mask option (no mask is an error, as in Go);
* gateway: the first router;
* routes: the classless static routes (121) if present, which by RFC 3442
  replace both the static routes (33) and the router; a 121 route without a
  router is on-link (gateway 0.0.0.0, scope link, so a main plugin does not
  route it through the gateway). Otherwise option 33, then a default route via
  the gateway, which the CNI spec wants even when ``gateway`` is set;
* dns: domain-name-servers (6), domain-name (15), domain-search (119);
* times: lease time (51, default one hour as in Go), T1 (58, default 50%)
  and T2 (59, default 87.5% as RFC 2131 says; Go uses 85%).
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass, field
from typing import Any

from pycni.dhcp import options as o
from pycni.dhcp.options import Opt
from pycni.dhcp.packet import Message

IPv4Address = ipaddress.IPv4Address
IPv4Interface = ipaddress.IPv4Interface

DEFAULT_LEASE_TIME = 3600
INFINITE = 0xFFFFFFFF
SCOPE_LINK = 253
DEFAULT_ROUTE = IPv4Interface("0.0.0.0/0")
UNSPECIFIED = IPv4Address(0)

log = logging.getLogger("pycni.dhcp")


class LeaseError(ValueError):
    """An ACK that cannot be turned into an address (no subnet mask)."""


@dataclass(frozen=True)
class LeaseRoute:
    dst: IPv4Interface
    gw: IPv4Address | None = None
    scope: int | None = None

    def to_wire(self) -> dict[str, Any]:
        data: dict[str, Any] = {"dst": str(self.dst)}
        if self.gw is not None:
            data["gw"] = str(self.gw)
        if self.scope is not None:
            data["scope"] = self.scope
        return data


@dataclass
class Lease:
    """One bound lease; times are seconds on the daemon's clock (``acquired_at`` + offsets)."""

    address: IPv4Interface
    server_id: IPv4Address
    server_mac: bytes
    acquired_at: float
    lease_time: int
    renewal_time: int
    rebinding_time: int
    routers: list[IPv4Address] = field(default_factory=list)
    routes: list[LeaseRoute] = field(default_factory=list)
    nameservers: list[IPv4Address] = field(default_factory=list)
    domain: str = ""
    search: list[str] = field(default_factory=list)

    @property
    def gateway(self) -> IPv4Address | None:
        return self.routers[0] if self.routers else None

    @property
    def infinite(self) -> bool:
        return self.lease_time == INFINITE

    @property
    def renew_at(self) -> float:
        return self.acquired_at + self.renewal_time

    @property
    def rebind_at(self) -> float:
        return self.acquired_at + self.rebinding_time

    @property
    def expires_at(self) -> float:
        return self.acquired_at + self.lease_time

    @classmethod
    def from_ack(cls, ack: Message, server_mac: bytes, now: float) -> Lease:
        mask = o.ip(ack.option(Opt.SUBNET_MASK) or b"")
        if mask is None:
            raise LeaseError("DHCP option Subnet Mask not found in DHCPACK")
        try:
            address = IPv4Interface(f"{ack.yiaddr}/{mask}")
        except ValueError:
            raise LeaseError(f"DHCPACK has an invalid subnet mask {mask}") from None
        server_id = o.ip(ack.option(Opt.SERVER_ID) or b"") or ack.siaddr
        lease_time = o.u32(ack.option(Opt.LEASE_TIME) or b"")
        if lease_time is None:
            lease_time = DEFAULT_LEASE_TIME
        renewal, rebinding = _timers(
            lease_time, o.u32(ack.option(Opt.RENEWAL_TIME) or b""), o.u32(ack.option(Opt.REBINDING_TIME) or b"")
        )
        routers = o.ip_list(ack.option(Opt.ROUTERS) or b"")
        return cls(
            address=address,
            server_id=server_id,
            server_mac=server_mac,
            acquired_at=now,
            lease_time=lease_time,
            renewal_time=renewal,
            rebinding_time=rebinding,
            routers=routers,
            routes=_routes(ack, routers[0] if routers else None),
            nameservers=o.ip_list(ack.option(Opt.DOMAIN_NAME_SERVERS) or b""),
            domain=o.text(ack.option(Opt.DOMAIN_NAME) or b""),
            search=_search(ack.option(Opt.DOMAIN_SEARCH)),
        )

    def to_wire(self, now: float) -> dict[str, Any]:
        """The lease as the daemon reports it to the plugin (see :mod:`pycni.dhcp.protocol`)."""
        data: dict[str, Any] = {
            "address": str(self.address),
            "routes": [route.to_wire() for route in self.routes],
            "dns": {"nameservers": [str(ns) for ns in self.nameservers], "domain": self.domain, "search": self.search},
            "serverID": str(self.server_id),
            "leaseTime": self.lease_time,
            "expiresIn": None if self.infinite else round(self.expires_at - now, 1),
            "renewIn": None if self.infinite else round(self.renew_at - now, 1),
        }
        if self.gateway is not None:
            data["gateway"] = str(self.gateway)
        return data


def _timers(lease_time: int, t1: int | None, t2: int | None) -> tuple[int, int]:
    """T1 and T2, defaulted and clamped so that T1 <= T2 <= lease time."""
    if lease_time == INFINITE:
        return INFINITE, INFINITE
    rebinding = t2 if t2 is not None and 0 < t2 <= lease_time else lease_time * 7 // 8
    renewal = t1 if t1 is not None and 0 < t1 <= rebinding else min(lease_time // 2, rebinding)
    return renewal, rebinding


def _routes(ack: Message, gateway: IPv4Address | None) -> list[LeaseRoute]:
    classless = ack.option(Opt.CLASSLESS_STATIC_ROUTES)
    if classless:
        try:
            parsed = o.classless_static_routes(classless)
        except ValueError as exc:
            log.warning("ignoring option 121: %s", exc)
        else:
            return [LeaseRoute(dst, gw, SCOPE_LINK if gw == UNSPECIFIED else None) for dst, gw in parsed]
    routes = [LeaseRoute(dst, gw) for dst, gw in o.static_routes(ack.option(Opt.STATIC_ROUTES) or b"")]
    if gateway is not None:
        routes.append(LeaseRoute(DEFAULT_ROUTE, gateway))
    return routes


def _search(value: bytes | None) -> list[str]:
    if not value:
        return []
    try:
        return o.domain_names(value)
    except ValueError as exc:
        log.warning("ignoring option 119: %s", exc)
        return []
