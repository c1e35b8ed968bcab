"""Who holds an address and which labels selectors see there: the evaluator's view of Felix's IP sets.

A selector in a rule stands for an IP set: the addresses of every workload
endpoint whose (inherited) labels match it, and the nets of every
GlobalNetworkSet whose labels match it, cluster-wide. Rather than expand each
set, :class:`EndpointIndex` finds the members holding one address (its
endpoint, the network sets containing it) and asks whether the selector
matches any of them (a HostEndpoint is a member at its expectedIPs). Named
ports are looked up the same way: the endpoints at
the address that the rule side's selector matches and that have a port of that
name, protocol and number (Felix's named-port IP sets of ``ip,proto,port``).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from pycni.policy.calico_model import GlobalNetworkSet, Profile
from pycni.policy.endpoints import ALL_INTERFACES, Host, HostEndpoint, NamedPort, WorkloadEndpoint, effective_labels
from pycni.policy.errors import PolicyError, Problem
from pycni.policy.selector import Selector

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Endpoint = WorkloadEndpoint | HostEndpoint
PORT_PROTOCOL_NUMBERS = {"TCP": 6, "UDP": 17, "SCTP": 132}


@dataclass(frozen=True)
class Member:
    """Something a selector can pick out at an address: a workload endpoint or a GlobalNetworkSet."""

    kind: str
    name: str
    labels: Mapping[str, str]
    ports: tuple[NamedPort, ...] = field(default=())


def named_port_protocol(rule_protocol: int | None) -> int | None:
    """``ipsetmember.ProtocolFrom``: the protocol a named port is looked up for (None: any protocol)."""
    if rule_protocol is None:
        return None
    return rule_protocol if rule_protocol in (17, 132) else 6


class EndpointIndex:
    """Endpoints, hosts and network sets by address, with effective labels; one IP belongs to one endpoint."""

    def __init__(
        self,
        endpoints: Iterable[WorkloadEndpoint],
        profiles: Mapping[str, Profile],
        network_sets: Iterable[GlobalNetworkSet] = (),
        hosts: Iterable[Host] = (),
        host_endpoints: Iterable[HostEndpoint] = (),
    ) -> None:
        self.endpoints: dict[str, WorkloadEndpoint] = {}
        self._by_ip: dict[IPAddress, WorkloadEndpoint] = {}
        problems = []
        for endpoint in endpoints:
            self.endpoints[endpoint.key] = endpoint
            for ip in endpoint.ips:
                other = self._by_ip.setdefault(ip, endpoint)
                if other is not endpoint:
                    problems.append(
                        Problem(endpoint.key, f"{ip} already belongs to {other.key}: give each pod its own")
                    )
        self.hosts = {host.name: host for host in hosts}
        self._host_by_ip = {ip: host for host in self.hosts.values() for ip in host.ips}
        for ip, host in self._host_by_ip.items():
            if ip in self._by_ip:
                problems.append(Problem(host.name, f"{ip} is both this node's address and {self._by_ip[ip].key}'s"))
        self.host_endpoints = {hep.key: hep for hep in host_endpoints}
        self._hep_by_ip: dict[IPAddress, HostEndpoint] = {}
        for hep in sorted(self.host_endpoints.values(), key=lambda h: h.name):  # Felix: the earliest name wins
            for ip in self._crossing(hep):
                self._hep_by_ip.setdefault(ip, hep)
            for ip in hep.ips:
                if ip in self._by_ip:
                    problems.append(Problem(hep.key, f"expected IP {ip} is {self._by_ip[ip].key}'s"))
        if problems:
            raise PolicyError("endpoints", problems)
        self._labels = {key: effective_labels(e, profiles) for key, e in self.endpoints.items()}
        self._labels |= {key: effective_labels(e, profiles) for key, e in self.host_endpoints.items()}
        self.network_sets = tuple(network_sets)
        self._members: dict[IPAddress, tuple[Member, ...]] = {}

    def endpoint(self, ip: IPAddress) -> WorkloadEndpoint | None:
        return self._by_ip.get(ip)

    def host(self, ip: IPAddress) -> Host | None:
        return self._host_by_ip.get(ip)

    def _crossing(self, hep: HostEndpoint) -> tuple[IPAddress, ...]:
        """Where the oracle places a host endpoint: the IPv4 addresses a packet to or from crosses it at.

        As the table polices by interface: one named interface is at its expectedIPs, else at the
        node's own address (not its tunnel addresses, which are other interfaces'); ``*`` is at all of
        the node's addresses and its expectedIPs; one with no interface is not enforced, so nowhere.
        Only IPv4: the host chains police IPv4 only.
        """
        node_ips = self.hosts[hep.node].ips if hep.node in self.hosts else ()
        if hep.interface == ALL_INTERFACES:
            found = (*node_ips, *hep.ips)
        elif hep.interface:
            found = hep.ips or node_ips[:1]
        else:
            found = ()
        return tuple(ip for ip in found if ip.version == 4)

    def host_endpoint(self, ip: IPAddress) -> HostEndpoint | None:
        """The host endpoint a packet to or from ``ip`` crosses (see :meth:`_crossing`)."""
        return self._hep_by_ip.get(ip)

    def labels(self, endpoint: Endpoint) -> Mapping[str, str]:
        return self._labels[endpoint.key]

    def members(self, ip: IPAddress) -> tuple[Member, ...]:
        """The endpoint owning ``ip`` and the network sets containing it."""
        cached = self._members.get(ip)
        if cached is None:
            found = []
            endpoint = self._by_ip.get(ip)
            if endpoint is not None:
                found.append(Member("WorkloadEndpoint", endpoint.key, self._labels[endpoint.key], endpoint.ports))
            for hep in self.host_endpoints.values():
                if ip in hep.ips:  # Felix puts a host endpoint's expectedIPs in the sets that select it
                    found.append(Member("HostEndpoint", hep.key, self._labels[hep.key], hep.ports))
            for network_set in self.network_sets:
                if any(ip in net for net in network_set.networks):
                    found.append(Member("GlobalNetworkSet", network_set.name, network_set.labels))
            cached = self._members[ip] = tuple(found)
        return cached

    def matches(self, selector: Selector, ip: IPAddress) -> bool:
        """Is ``ip`` in the IP set of ``selector``?"""
        return any(selector.matches(m.labels) for m in self.members(ip))

    def named_port(
        self, selector: Selector | None, ip: IPAddress, name: str, rule_protocol: int | None, protocol: int, port: int
    ) -> bool:
        """Is (ip, protocol, port) in the named-port IP set for ``name`` filtered by the side's ``selector``?"""
        wanted = named_port_protocol(rule_protocol)
        for member in self.members(ip):
            if selector is not None and not selector.matches(member.labels):
                continue
            for named in member.ports:
                number = PORT_PROTOCOL_NUMBERS.get(named.protocol.upper())
                if named.name == name and number == protocol and named.port == port and wanted in (None, number):
                    return True
        return False

    def selected(self, selector: Selector) -> list[WorkloadEndpoint]:
        """The endpoints a policy selector applies to, in key order."""
        return [e for key, e in sorted(self.endpoints.items()) if selector.matches(self._labels[key])]
