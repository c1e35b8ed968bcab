"""Calico's policy Rule (projectcalico.org/v3 ``policy_common.go``): actions, protocols, ports, ICMP, entity matches.

A :class:`Rule` is parsed from decoded YAML/JSON and checked as calicoctl
checks it (``libcalico-go/lib/validator/v3/validator.go`` ``validateRule`` and
the CRD's CEL rules): numeric ports need protocol TCP, UDP or SCTP; ICMP fields
need protocol ICMP/ICMPv6 and a type before a code; nets are masked CIDRs of
one family, agreeing with ``ipVersion``; ``global()`` only alone in a
namespaceSelector; HTTP matches only on Allow rules over TCP. Protocol names
are Calico's (``TCP UDP ICMP ICMPv6 SCTP UDPLite``, exact case) or 1-255;
ports are numbers, ``min:max`` ranges or names (numorstring). ``to_dict`` is
the JSON Calico stores, in Go's field order (``source``/``destination`` are
written ``{}`` when empty, as encoding/json writes a struct value).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pycni.policy import decode
from pycni.policy.errors import Problems
from pycni.policy.names import calico_port_name_problem
from pycni.policy.selector import SelectorError
from pycni.policy.selector import parse as parse_selector

ACTIONS = ("Allow", "Deny", "Log", "Pass")
PROTOCOL_NUMBERS = {"TCP": 6, "UDP": 17, "ICMP": 1, "ICMPv6": 58, "SCTP": 132, "UDPLite": 136}
PORT_PROTOCOLS = frozenset({6, 17, 132})
MAX_RULES = 1024


@dataclass(frozen=True)
class Protocol:
    """numorstring.Protocol: a Calico protocol name or a number 1-255."""

    value: int | str

    @property
    def number(self) -> int:
        return self.value if isinstance(self.value, int) else PROTOCOL_NUMBERS[self.value]

    @property
    def supports_ports(self) -> bool:
        return self.number in PORT_PROTOCOLS

    def to_json(self) -> int | str:
        return self.value

    def __str__(self) -> str:
        return str(self.value)

    @classmethod
    def of(cls, text: str) -> Protocol:
        """A protocol from a Kubernetes name (TCP, UDP, SCTP) as ``ProtocolFromString`` normalises it."""
        for name in PROTOCOL_NUMBERS:
            if name.lower() == text.lower():
                return cls(name)
        return cls(text)


def parse_protocol(value: Any, path: str, problems: Problems) -> Protocol | None:
    if value is None:
        return None
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        if not 1 <= value <= 255:
            problems.add(path, f"protocol number {value} is invalid: use 1-255 or a name (TCP, UDP, ...)")
            return None
        return Protocol(value)
    if isinstance(value, str) and value in PROTOCOL_NUMBERS:
        return Protocol(value)
    close = [n for n in PROTOCOL_NUMBERS if isinstance(value, str) and n.lower() == value.lower()]
    hint = f"write {close[0]!r}; " if close else ""
    problems.add(path, f"protocol name {value!r} is invalid: {hint}use one of {', '.join(PROTOCOL_NUMBERS)} or 1-255")
    return None


@dataclass(frozen=True, order=True)
class Port:
    """numorstring.Port: a number (min == max), a range, or a named port (resolved per endpoint)."""

    min_port: int = 0
    max_port: int = 0
    name: str = ""

    @classmethod
    def single(cls, port: int) -> Port:
        return cls(port, port)

    def contains(self, port: int) -> bool:
        return not self.name and self.min_port <= port <= self.max_port

    def to_json(self) -> int | str:
        if self.name:
            return self.name
        return self.min_port if self.min_port == self.max_port else f"{self.min_port}:{self.max_port}"

    def __str__(self) -> str:
        return str(self.to_json())


_RANGE = re.compile(r"^(\d+):(\d+)$")


def parse_port(value: Any, path: str, problems: Problems) -> Port | None:
    """``PortFromString`` plus the validator's 1-65535 and min <= max checks."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        problems.add(path, f"expected a port (a number, 'min:max' or a name), got {decode.describe(value)}")
        return None
    text = str(value)
    numbers: tuple[int, int] | None = None
    if text.isdigit():
        numbers = (int(text), int(text))
    elif match := _RANGE.match(text):
        numbers = (int(match.group(1)), int(match.group(2)))
    if numbers is None:
        problem = calico_port_name_problem(text)
        if problem:
            problems.add(path, problem)
            return None
        return Port(name=text)
    low, high = numbers
    if not (1 <= low <= 65535 and 1 <= high <= 65535):
        problems.add(path, f"port range invalid: {text}: port numbers must be between 1 and 65535")
        return None
    if low > high:
        problems.add(path, f"minimum port number ({low}) is greater than maximum port number ({high}) in port range")
        return None
    return Port(low, high)


@dataclass(frozen=True)
class ICMP:
    """ICMP type (0-254) and code (0-255); a code needs a type."""

    type: int | None = None
    code: int | None = None

    def matches(self, icmp_type: int | None, icmp_code: int | None) -> bool:
        if self.type is not None and icmp_type != self.type:
            return False
        return self.code is None or icmp_code == self.code

    def to_dict(self) -> dict[str, int]:
        out = {}
        if self.type is not None:
            out["type"] = self.type
        if self.code is not None:
            out["code"] = self.code
        return out


@dataclass(frozen=True)
class ServiceAccountMatch:
    names: tuple[str, ...] = ()
    selector: str = ""

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.names:
            out["names"] = list(self.names)
        if self.selector:
            out["selector"] = self.selector
        return out


@dataclass(frozen=True)
class EntityRule:
    """The source or destination match of a rule; every given field must hold."""

    nets: tuple[str, ...] = ()
    selector: str = ""
    namespace_selector: str = ""
    ports: tuple[Port, ...] = ()
    not_nets: tuple[str, ...] = ()
    not_selector: str = ""
    not_ports: tuple[Port, ...] = ()
    service_accounts: ServiceAccountMatch | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in (
            ("nets", list(self.nets)),
            ("selector", self.selector),
            ("namespaceSelector", self.namespace_selector),
            ("ports", [p.to_json() for p in self.ports]),
            ("notNets", list(self.not_nets)),
            ("notSelector", self.not_selector),
            ("notPorts", [p.to_json() for p in self.not_ports]),
        ):
            if value:
                out[key] = value
        if self.service_accounts is not None:
            out["serviceAccounts"] = self.service_accounts.to_dict()
        return out


@dataclass(frozen=True)
class Rule:
    action: str
    ip_version: int | None = None
    protocol: Protocol | None = None
    icmp: ICMP | None = None
    not_protocol: Protocol | None = None
    not_icmp: ICMP | None = None
    source: EntityRule = field(default_factory=EntityRule)
    destination: EntityRule = field(default_factory=EntityRule)
    http: Mapping[str, Any] | None = None
    annotations: Mapping[str, str] | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"action": self.action}
        if self.ip_version is not None:
            out["ipVersion"] = self.ip_version
        if self.protocol is not None:
            out["protocol"] = self.protocol.to_json()
        if self.icmp is not None:
            out["icmp"] = self.icmp.to_dict()
        if self.not_protocol is not None:
            out["notProtocol"] = self.not_protocol.to_json()
        if self.not_icmp is not None:
            out["notICMP"] = self.not_icmp.to_dict()
        out["source"] = self.source.to_dict()
        out["destination"] = self.destination.to_dict()
        if self.http is not None:
            out["http"] = dict(self.http)
        if self.annotations is not None:
            out["metadata"] = {"annotations": dict(self.annotations)} if self.annotations else {}
        return out


# -- parsing -------------------------------------------------------------------

_ENTITY_FIELDS = (
    "nets",
    "selector",
    "namespaceSelector",
    "services",
    "ports",
    "notNets",
    "notSelector",
    "notPorts",
    "serviceAccounts",
)
_RULE_FIELDS = (
    "action",
    "ipVersion",
    "protocol",
    "icmp",
    "notProtocol",
    "notICMP",
    "source",
    "destination",
    "http",
    "metadata",
)


def selector_text(value: Any, path: str, problems: Problems, *, allow_global: bool = False) -> str:
    """A selector string that parses (at most 1024 characters); ``global()`` only where it is allowed."""
    text = decode.string(value, path, problems)
    if not text:
        return ""
    if len(text) > 1024:
        problems.add(path, f"at most 1024 characters (is {len(text)})")
        return ""
    if not allow_global and "global(" in text:
        problems.add(path, "global() can only be used in an EntityRule namespaceSelector")
        return ""
    try:
        parse_selector(text)
    except SelectorError as exc:
        problems.add(path, f"invalid selector {text!r}: {exc.problem} (at position {exc.position})")
        return ""
    return text


def _nets(value: Any, path: str, problems: Problems, *, negated: bool) -> tuple[str, ...]:
    """Rule nets as the validator wants them: CIDRs with the host bits clear."""
    out = []
    texts = decode.strings(value, path, problems)
    if len(texts) > 256:
        problems.add(path, f"at most 256 CIDRs (has {len(texts)})")
    for index, text in enumerate(texts):
        item = decode.join(path, index)
        try:
            network = ipaddress.ip_network(text, strict=False)
        except ValueError:
            problems.add(item, f"{text!r} is not a CIDR: write e.g. 10.0.0.0/24 (or 10.0.0.1/32 for one address)")
            continue
        if "/" not in text:
            problems.add(item, f"{text!r} needs a prefix length: write {network}")
            continue
        if ipaddress.ip_address(text.split("/")[0]) != network.network_address:
            problems.add(item, f"{text!r} has host bits set: write {network}")
            continue
        if negated and network.prefixlen == 0:
            problems.add(item, "a catch-all CIDR in notNets matches no traffic: remove it or use nets")
            continue
        out.append(text)
    return tuple(out)


def _ports(value: Any, path: str, problems: Problems) -> tuple[Port, ...]:
    ports = []
    for item_path, item in decode.items(value, path, problems):
        port = parse_port(item, item_path, problems)
        if port is not None:
            ports.append(port)
    if len(ports) > 50:
        problems.add(path, f"at most 50 ports (has {len(ports)})")
    return tuple(ports)


def _entity(value: Any, path: str, problems: Problems) -> EntityRule:
    spec = decode.mapping(value, path, problems, _ENTITY_FIELDS, "an EntityRule", fold_case=True)
    if spec.get("services") is not None:
        problems.add(
            decode.join(path, "services"),
            "matching Kubernetes Services is not supported by pycni (it keeps no Service objects): use a selector",
        )
    namespace_selector = selector_text(
        spec.get("namespaceSelector"), decode.join(path, "namespaceSelector"), problems, allow_global=True
    )
    if "global(" in namespace_selector and namespace_selector.strip() != "global()":
        problems.add(decode.join(path, "namespaceSelector"), "global() cannot be combined with other selectors")
    accounts = None
    if spec.get("serviceAccounts") is not None:
        sa_path = decode.join(path, "serviceAccounts")
        sa = decode.mapping(spec["serviceAccounts"], sa_path, problems, ("names", "selector"), "serviceAccounts")
        accounts = ServiceAccountMatch(
            decode.strings(sa.get("names"), decode.join(sa_path, "names"), problems),
            selector_text(sa.get("selector"), decode.join(sa_path, "selector"), problems),
        )
    return EntityRule(
        nets=_nets(spec.get("nets"), decode.join(path, "nets"), problems, negated=False),
        selector=selector_text(spec.get("selector"), decode.join(path, "selector"), problems),
        namespace_selector=namespace_selector,
        ports=_ports(spec.get("ports"), decode.join(path, "ports"), problems),
        not_nets=_nets(spec.get("notNets"), decode.join(path, "notNets"), problems, negated=True),
        not_selector=selector_text(spec.get("notSelector"), decode.join(path, "notSelector"), problems),
        not_ports=_ports(spec.get("notPorts"), decode.join(path, "notPorts"), problems),
        service_accounts=accounts,
    )


def _icmp(value: Any, path: str, problems: Problems) -> ICMP | None:
    if value is None:
        return None
    spec = decode.mapping(value, path, problems, ("type", "code"), "icmp", fold_case=True)
    icmp = ICMP(
        decode.integer(spec.get("type"), decode.join(path, "type"), problems, 0, 254),
        decode.integer(spec.get("code"), decode.join(path, "code"), problems, 0, 255),
    )
    if icmp.code is not None and icmp.type is None:
        problems.add(path, "ICMP code specified without an ICMP type: add type")
    return icmp


def parse_rule(value: Any, path: str, problems: Problems) -> Rule:
    spec = decode.mapping(value, path, problems, _RULE_FIELDS, "a Rule", fold_case=True)
    action = decode.string(spec.get("action"), decode.join(path, "action"), problems)
    if action not in ACTIONS:
        got = f"got {action!r}; " if action else "required: "
        problems.add(decode.join(path, "action"), f"{got}use one of {', '.join(ACTIONS)}")
    ip_version = decode.integer(spec.get("ipVersion"), decode.join(path, "ipVersion"), problems, 0, 255)
    if ip_version not in (None, 4, 6):
        problems.add(decode.join(path, "ipVersion"), f"{ip_version} is not an IP version: use 4 or 6")
        ip_version = None
    rule = Rule(
        action=action,
        ip_version=ip_version,
        protocol=parse_protocol(spec.get("protocol"), decode.join(path, "protocol"), problems),
        icmp=_icmp(spec.get("icmp"), decode.join(path, "icmp"), problems),
        not_protocol=parse_protocol(spec.get("notProtocol"), decode.join(path, "notProtocol"), problems),
        not_icmp=_icmp(spec.get("notICMP"), decode.join(path, "notICMP"), problems),
        source=_entity(spec.get("source"), decode.join(path, "source"), problems),
        destination=_entity(spec.get("destination"), decode.join(path, "destination"), problems),
        http=_http(spec.get("http"), decode.join(path, "http"), problems),
        annotations=_metadata(spec.get("metadata"), decode.join(path, "metadata"), problems),
    )
    _check_rule(rule, path, problems)
    return rule


def parse_rules(value: Any, path: str, problems: Problems) -> tuple[Rule, ...]:
    rules = tuple(parse_rule(item, item_path, problems) for item_path, item in decode.items(value, path, problems))
    if len(rules) > MAX_RULES:
        problems.add(path, f"at most {MAX_RULES} rules (has {len(rules)})")
    return rules


def _http(value: Any, path: str, problems: Problems) -> Mapping[str, Any] | None:
    if value is None:
        return None
    spec = decode.mapping(value, path, problems, ("methods", "paths"), "http", fold_case=True)
    out: dict[str, Any] = {}
    methods = decode.strings(spec.get("methods"), decode.join(path, "methods"), problems)
    if methods:
        out["methods"] = list(methods)
    paths = []
    for item_path, item in decode.items(spec.get("paths"), decode.join(path, "paths"), problems):
        entry = decode.string_map(item, item_path, problems)
        if len(entry) != 1 or next(iter(entry)) not in ("exact", "prefix"):
            problems.add(item_path, "each path must have exactly one of exact or prefix")
        paths.append(entry)
    if paths:
        out["paths"] = paths
    return out


def _metadata(value: Any, path: str, problems: Problems) -> Mapping[str, str] | None:
    if value is None:
        return None
    spec = decode.mapping(value, path, problems, ("annotations",), "rule metadata", fold_case=True)
    return decode.string_map(spec.get("annotations"), decode.join(path, "annotations"), problems)


def _families(nets: tuple[str, ...]) -> set[int]:
    return {ipaddress.ip_network(n, strict=False).version for n in nets}


def _check_rule(rule: Rule, path: str, problems: Problems) -> None:
    """``validateRule`` and the Rule's CEL rules."""
    sides = (("source", rule.source), ("destination", rule.destination))
    for side, entity in sides:
        for key, ports in (("ports", entity.ports), ("notPorts", entity.not_ports)):
            where = decode.join(decode.join(path, side), key)
            if rule.protocol is None and any(not p.name for p in ports):
                problems.add(where, "rules with numeric port or port range must set protocol to TCP or UDP or SCTP")
            elif rule.protocol is not None and ports and not rule.protocol.supports_ports:
                problems.add(where, "rules that specify ports must set protocol to TCP or UDP or SCTP")
    for key, icmp in (("icmp", rule.icmp), ("notICMP", rule.not_icmp)):
        if icmp is not None and (rule.protocol is None or rule.protocol.number not in (1, 58)):
            problems.add(decode.join(path, key), "ICMP fields require protocol to be ICMP or ICMPv6")
    for key, protocol in (("protocol", rule.protocol), ("notProtocol", rule.not_protocol)):
        if protocol is not None and rule.ip_version is not None:
            wanted = {1: 4, 58: 6}.get(protocol.number)
            if wanted is not None and wanted != rule.ip_version:
                problems.add(decode.join(path, key), f"protocol {protocol} requires ipVersion {wanted}")
    seen: set[int] = set()
    for side, entity in sides:
        for key, nets in (("nets", entity.nets), ("notNets", entity.not_nets)):
            where = decode.join(decode.join(path, side), key)
            families = _families(nets)
            if rule.ip_version is not None and families - {rule.ip_version}:
                problems.add(where, f"rule IP version doesn't match CIDR version (ipVersion is {rule.ip_version})")
            if len(families | seen) > 1:
                problems.add(where, "rule contains both IPv4 and IPv6 CIDRs: split it into one rule per family")
            seen |= families
    if rule.http is not None:
        if rule.action != "Allow":
            problems.add(decode.join(path, "http"), "HTTP match is only valid on Allow rules")
        if rule.protocol is not None and rule.protocol.number != 6:
            problems.add(decode.join(path, "http"), "rules with HTTP match must have protocol TCP or unset")
