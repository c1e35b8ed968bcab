"""Does a compiled rule match a packet? Felix's rule semantics, one field at a time.

Every field a rule sets must match (``CalculateRuleMatch``): IP version,
protocol / notProtocol, ICMP type and code, and on each side nets (any of),
notNets (none of), the selector's IP set, the notSelector's IP set (not in),
ports (numeric ranges OR named ports) and notPorts. A rule whose nets of some
field are all of the other IP family does not exist for this packet's family
(``FilterRuleToIPVersion``). Packets carry what the first packet of a flow
carries; replies of an allowed connection are conntrack's business, not a
rule's.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from pycni.policy.compile import CompiledEntity, CompiledRule
from pycni.policy.index import EndpointIndex
from pycni.policy.rules import PROTOCOL_NUMBERS

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
PROTOCOL_NAMES = {number: name for name, number in PROTOCOL_NUMBERS.items()}


@dataclass(frozen=True)
class Packet:
    """The first packet of a flow: addresses, IP protocol number, ports or ICMP type/code."""

    src: IPAddress
    dst: IPAddress
    protocol: int = 6
    dst_port: int | None = None
    src_port: int | None = None
    icmp_type: int | None = None
    icmp_code: int | None = None

    @classmethod
    def make(
        cls,
        src: IPAddress | str,
        dst: IPAddress | str,
        protocol: int | str = "TCP",
        dst_port: int | None = None,
        *,
        src_port: int | None = None,
        icmp_type: int | None = None,
        icmp_code: int | None = None,
    ) -> Packet:
        """A packet from text; ``protocol`` a Calico name (any case: tcp, UDP, ICMPv6) or a number."""
        if isinstance(protocol, str):
            names = {name.lower(): number for name, number in PROTOCOL_NUMBERS.items()}
            number = int(protocol) if protocol.isdigit() else names.get(protocol.lower())
            if number is None:
                raise ValueError(f"unknown protocol {protocol!r}: use one of {', '.join(PROTOCOL_NUMBERS)} or 0-255")
            protocol = number
        source = src if isinstance(src, IPAddress) else ipaddress.ip_address(src)
        destination = dst if isinstance(dst, IPAddress) else ipaddress.ip_address(dst)
        if source.version != destination.version:
            raise ValueError(f"{source} and {destination} are not of one IP family")
        return cls(source, destination, protocol, dst_port, src_port, icmp_type, icmp_code)

    def __str__(self) -> str:
        name = PROTOCOL_NAMES.get(self.protocol, str(self.protocol))
        port = f"/{self.dst_port}" if self.dst_port is not None else ""
        if self.icmp_type is not None:
            port = f" type {self.icmp_type}" + (f" code {self.icmp_code}" if self.icmp_code is not None else "")
        return f"{self.src} -> {self.dst} {name}{port}"


def exists_for_family(rule: CompiledRule, version: int) -> bool:
    """``FilterRuleToIPVersion``: is the rule rendered at all for this IP family?"""
    if rule.ip_version is not None and rule.ip_version != version:
        return False
    for side in (rule.source, rule.destination):
        for nets in (side.nets, side.not_nets):
            if nets and not any(n.version == version for n in nets):
                return False
    return True


def _ports_match(
    side: CompiledEntity, rule: CompiledRule, packet: Packet, ip: IPAddress, port: int | None, index: EndpointIndex
) -> bool:
    def named(name: str) -> bool:
        return port is not None and index.named_port(side.selector, ip, name, rule.protocol, packet.protocol, port)

    if side.ports or side.named_ports:
        numeric = port is not None and any(p.contains(port) for p in side.ports)
        if not numeric and not any(named(n) for n in side.named_ports):
            return False
    if port is not None and any(p.contains(port) for p in side.not_ports):
        return False
    return not any(named(n) for n in side.not_named_ports)


def _side_matches(
    side: CompiledEntity, rule: CompiledRule, packet: Packet, ip: IPAddress, port: int | None, index: EndpointIndex
) -> bool:
    nets = [n for n in side.nets if n.version == ip.version]
    if nets and not any(ip in n for n in nets):
        return False
    if any(ip in n for n in side.not_nets if n.version == ip.version):
        return False
    if side.selector is not None and not index.matches(side.selector, ip):
        return False
    if side.not_selector is not None and index.matches(side.not_selector, ip):
        return False
    return _ports_match(side, rule, packet, ip, port, index)


def rule_matches(rule: CompiledRule, packet: Packet, index: EndpointIndex) -> bool:
    if not exists_for_family(rule, packet.src.version):
        return False
    if rule.protocol is not None and packet.protocol != rule.protocol:
        return False
    if rule.not_protocol is not None and packet.protocol == rule.not_protocol:
        return False
    if rule.icmp is not None and not rule.icmp.matches(packet.icmp_type, packet.icmp_code):
        return False
    if rule.not_icmp is not None and rule.not_icmp.matches(packet.icmp_type, packet.icmp_code):
        return False
    return _side_matches(rule.source, rule, packet, packet.src, packet.src_port, index) and _side_matches(
        rule.destination, rule, packet, packet.dst, packet.dst_port, index
    )
