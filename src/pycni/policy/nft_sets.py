"""The policy table's named sets: who a selector picks out, and who has a named port, per IP family.

A rule's selector becomes ``ip saddr @<set>``: the set of every address a
selector matches cluster-wide (workload endpoints by their effective labels,
host endpoints at their expectedIPs, GlobalNetworkSets by theirs, the nets of the latter as intervals), which is
what :meth:`~pycni.policy.index.EndpointIndex.matches` asks of one address. A
set is shared by every rule using the same selector and family, and only the
sets some rendered rule names exist. A named port becomes ``ip daddr . meta
l4proto . th dport @<set>``: the (address, protocol, port) of every endpoint
the side's selector matches (all endpoints without one) whose port of that
name serves that protocol, as
:meth:`~pycni.policy.index.EndpointIndex.named_port` answers for one packet.

Interval sets may not hold overlapping elements, so members are collapsed
(``10.0.0.0/8`` swallows a pod's ``10.0.0.5``) and written as nft lists them: an
address for a single host, a prefix otherwise.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property

from pycni.nft.objects import Set
from pycni.policy import nft_names
from pycni.policy.index import PORT_PROTOCOL_NUMBERS, Endpoint, EndpointIndex
from pycni.policy.selector import Selector, parse

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
ALL = parse("all()")
ADDRESS_TYPE = {4: "ipv4_addr", 6: "ipv6_addr"}


@dataclass(frozen=True)
class _NamedPortKey:
    selector: Selector
    port: str
    protocol: int | None
    family: int


def element(network: IPNetwork) -> str:
    """A network as nft lists it in an interval set: a plain address for one host."""
    return str(network.network_address) if network.prefixlen == network.max_prefixlen else str(network)


def collapse(networks: Iterable[IPNetwork], family: int) -> frozenset[str]:
    """The fewest prefixes covering ``networks`` of one family (none overlapping, as an interval set needs)."""
    if family == 4:
        merged: Iterable[IPNetwork] = ipaddress.collapse_addresses(
            n for n in networks if isinstance(n, ipaddress.IPv4Network)
        )
    else:
        merged = ipaddress.collapse_addresses(n for n in networks if isinstance(n, ipaddress.IPv6Network))
    return frozenset(element(n) for n in merged)


class SetRegistry:
    """Allocates set names while rules are rendered, and computes their members from the endpoint index."""

    def __init__(self, index: EndpointIndex) -> None:
        self.index = index
        self._selectors: dict[str, tuple[Selector, int]] = {}
        self._named_ports: dict[str, _NamedPortKey] = {}

    def selector(self, selector: Selector, family: int) -> str:
        name = nft_names.selector_set(selector, family)
        self._selectors[name] = (selector, family)
        return name

    def named_port(self, selector: Selector | None, port: str, protocol: int | None, family: int) -> str:
        """The set for a named port of a rule side; ``protocol`` is the one the port is looked up for."""
        chosen = selector if selector is not None else ALL
        name = nft_names.named_port_set(chosen, port, protocol, family)
        self._named_ports[name] = _NamedPortKey(chosen, port, protocol, family)
        return name

    def _all_endpoints(self) -> list[Endpoint]:
        """Workload endpoints, then host endpoints (members at their expectedIPs, as in Felix's IP sets)."""
        return [*self.index.endpoints.values(), *self.index.host_endpoints.values()]

    @cached_property
    def _by_labels(self) -> list[tuple[Mapping[str, str], list[IPNetwork]]]:
        """The endpoints' networks grouped by their labels: a selector is matched once per distinct label set."""
        groups: dict[tuple[tuple[str, str], ...], tuple[Mapping[str, str], list[IPNetwork]]] = {}
        for endpoint in self._all_endpoints():
            labels = self.index.labels(endpoint)
            held = groups.setdefault(tuple(sorted(labels.items())), (labels, []))
            held[1].extend(ipaddress.ip_network(ip) for ip in endpoint.ips)
        return list(groups.values())

    def selector_members(self, selector: Selector, family: int) -> frozenset[str]:
        networks: list[IPNetwork] = []
        for labels, owned in self._by_labels:
            if selector.matches(labels):
                networks += owned
        for network_set in self.index.network_sets:
            if selector.matches(network_set.labels):
                networks += network_set.networks
        return collapse(networks, family)

    def named_port_members(self, key: _NamedPortKey) -> frozenset[str]:
        members = set()
        for endpoint in self._all_endpoints():
            if not key.selector.matches(self.index.labels(endpoint)):
                continue
            for named in endpoint.ports:
                number = PORT_PROTOCOL_NUMBERS.get(named.protocol.upper())
                if named.name != key.port or number is None or key.protocol not in (None, number):
                    continue
                members |= {f"{ip} . {number} . {named.port}" for ip in endpoint.ips if ip.version == key.family}
        return frozenset(members)

    def sets(self) -> dict[str, Set]:
        """Every set named so far, with its members."""
        out = {}
        for name, (selector, family) in sorted(self._selectors.items()):
            members = self.selector_members(selector, family)
            out[name] = Set(name, ADDRESS_TYPE[family], ("interval",), members)
        for name, key in sorted(self._named_ports.items()):
            type_ = f"{ADDRESS_TYPE[key.family]} . inet_proto . inet_service"
            out[name] = Set(name, type_, (), self.named_port_members(key))
        return out
