"""Kubernetes objects policy needs: networking.k8s.io/v1 NetworkPolicy, v1 Namespace and v1 Pod.

Parsed from decoded YAML/JSON, validated as the API server validates them
(``pkg/apis/networking/validation``: ports, endPort, peers, ipBlock except a
strict subset of cidr, label selectors) and defaulted as it defaults them
(``pkg/apis/networking/v1/defaults.go``: a port's protocol is TCP; policyTypes
is ``[Ingress]``, plus ``Egress`` when egress rules are present). A Namespace
carries ``kubernetes.io/metadata.name``; a Pod carries what Calico reads:
labels, service account, node, IPs and container ports with their names.
Every problem is collected into one :class:`~pycni.policy.errors.PolicyError`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pycni.policy import decode
from pycni.policy.errors import Problems
from pycni.policy.names import (
    dns_label_problem,
    dns_subdomain_problem,
    label_key_problem,
    label_problem,
    label_value_problem,
    port_name_problem,
)

NETWORKING_V1 = "networking.k8s.io/v1"
CORE_V1 = "v1"
METADATA_NAME_LABEL = "kubernetes.io/metadata.name"
PROTOCOLS = ("TCP", "UDP", "SCTP")
POLICY_TYPES = ("Ingress", "Egress")
OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class Requirement:
    """One ``matchExpressions`` term."""

    key: str
    operator: str
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        if self.operator == "In":
            return present and labels[self.key] in self.values
        if self.operator == "NotIn":
            return not present or labels[self.key] not in self.values
        return present if self.operator == "Exists" else not present


@dataclass(frozen=True)
class LabelSelector:
    """metav1.LabelSelector: every matchLabels pair and every expression must hold; empty selects everything."""

    match_labels: tuple[tuple[str, str], ...] = ()
    match_expressions: tuple[Requirement, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.match_labels and not self.match_expressions

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(labels.get(k) == v for k, v in self.match_labels) and all(
            r.matches(labels) for r in self.match_expressions
        )


@dataclass(frozen=True)
class IPBlock:
    """``cidr`` as written (host bits allowed, as the API's legacy CIDR rule allows) and its network."""

    cidr: str
    network: IPNetwork
    except_: tuple[IPNetwork, ...] = ()
    except_text: tuple[str, ...] = ()

    def contains(self, address: IPAddress) -> bool:
        return address in self.network and not any(address in n for n in self.except_)


@dataclass(frozen=True)
class Peer:
    """One ``from``/``to`` item: pod and namespace selectors (AND when both), or an ipBlock alone."""

    pod_selector: LabelSelector | None = None
    namespace_selector: LabelSelector | None = None
    ip_block: IPBlock | None = None


@dataclass(frozen=True)
class PolicyPort:
    """protocol (TCP by default), port (a number, a named port, or None for every port), endPort."""

    protocol: str = "TCP"
    port: int | str | None = None
    end_port: int | None = None


@dataclass(frozen=True)
class PolicyRule:
    """An ingress rule (peers are ``from``) or an egress rule (peers are ``to``); empty lists mean everything."""

    peers: tuple[Peer, ...] = ()
    ports: tuple[PolicyPort, ...] = ()


@dataclass(frozen=True)
class NetworkPolicy:
    namespace: str
    name: str
    pod_selector: LabelSelector = field(default_factory=LabelSelector)
    ingress: tuple[PolicyRule, ...] = ()
    egress: tuple[PolicyRule, ...] = ()
    policy_types: tuple[str, ...] = ("Ingress",)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class Namespace:
    name: str
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ContainerPort:
    name: str
    container_port: int
    protocol: str = "TCP"
    host_port: int = 0


@dataclass(frozen=True)
class Pod:
    """What policy reads of a Pod; ``ips`` may be empty (the CNI plugin's endpoint then supplies them)."""

    namespace: str
    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    service_account: str = "default"
    node_name: str = ""
    host_network: bool = False
    ips: tuple[IPAddress, ...] = ()
    ports: tuple[ContainerPort, ...] = ()

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


# -- parsing -------------------------------------------------------------------


def _label_selector(value: Any, path: str, problems: Problems) -> LabelSelector:
    spec = decode.mapping(value, path, problems, ("matchLabels", "matchExpressions"), "a label selector")
    labels = decode.string_map(spec.get("matchLabels"), decode.join(path, "matchLabels"), problems, label_problem)
    expressions = []
    for item_path, item in decode.items(spec.get("matchExpressions"), decode.join(path, "matchExpressions"), problems):
        term = decode.mapping(item, item_path, problems, ("key", "operator", "values"), "a label selector requirement")
        key = decode.string(term.get("key"), decode.join(item_path, "key"), problems)
        operator = decode.string(term.get("operator"), decode.join(item_path, "operator"), problems)
        values = decode.strings(term.get("values"), decode.join(item_path, "values"), problems)
        key_problem = label_key_problem(key) if key else "required: the label key to test"
        if key_problem:
            problems.add(decode.join(item_path, "key"), key_problem)
        if operator not in OPERATORS:
            problems.add(decode.join(item_path, "operator"), f"got {operator!r}; use one of {', '.join(OPERATORS)}")
        elif operator in ("In", "NotIn") and not values:
            problems.add(decode.join(item_path, "values"), f"must be non-empty when operator is {operator}")
        elif operator in ("Exists", "DoesNotExist") and values:
            problems.add(decode.join(item_path, "values"), f"must be empty when operator is {operator}")
        for index, text in enumerate(values):
            problem = label_value_problem(text)
            if problem:
                problems.add(decode.join(decode.join(item_path, "values"), index), problem)
        expressions.append(Requirement(key, operator, values))
    return LabelSelector(tuple(labels.items()), tuple(expressions))


def _cidr(text: str, path: str, problems: Problems) -> IPNetwork | None:
    try:
        if "/" not in text:
            raise ValueError(text)
        return ipaddress.ip_interface(text).network
    except ValueError:
        problems.add(path, f"{text!r} is not a valid CIDR: write an address and a prefix length, e.g. 10.0.0.0/24")
        return None


def _ip_block(value: Any, path: str, problems: Problems) -> IPBlock | None:
    spec = decode.mapping(value, path, problems, ("cidr", "except"), "an ipBlock")
    text = decode.string(spec.get("cidr"), decode.join(path, "cidr"), problems)
    if not text:
        problems.add(decode.join(path, "cidr"), "required: the CIDR this peer allows, e.g. 10.0.0.0/16")
        return None
    network = _cidr(text, decode.join(path, "cidr"), problems)
    excepts: list[IPNetwork] = []
    except_text = decode.strings(spec.get("except"), decode.join(path, "except"), problems)
    for index, item in enumerate(except_text):
        item_path = decode.join(decode.join(path, "except"), index)
        inner = _cidr(item, item_path, problems)
        if inner is None or network is None:
            continue
        inside = inner.version == network.version and network.supernet_of(inner)  # type: ignore[arg-type]
        if not inside or inner.prefixlen <= network.prefixlen:
            problems.add(item_path, f"must be a strict subset of `cidr` ({text}): a longer prefix inside it")
            continue
        excepts.append(inner)
    if network is None:
        return None
    return IPBlock(text, network, tuple(excepts), except_text)


def _peer(value: Any, path: str, problems: Problems) -> Peer:
    spec = decode.mapping(value, path, problems, ("podSelector", "namespaceSelector", "ipBlock"), "a peer")
    given = [k for k in ("podSelector", "namespaceSelector", "ipBlock") if spec.get(k) is not None]
    if not given:
        problems.add(path, "must specify a peer: podSelector, namespaceSelector (or both), or ipBlock")
    elif "ipBlock" in given and len(given) > 1:
        problems.add(path, "may not specify both ipBlock and another peer: put the selectors in a separate peer")
    return Peer(
        pod_selector=_label_selector(spec["podSelector"], decode.join(path, "podSelector"), problems)
        if "podSelector" in given
        else None,
        namespace_selector=_label_selector(spec["namespaceSelector"], decode.join(path, "namespaceSelector"), problems)
        if "namespaceSelector" in given
        else None,
        ip_block=_ip_block(spec["ipBlock"], decode.join(path, "ipBlock"), problems) if "ipBlock" in given else None,
    )


def _port(value: Any, path: str, problems: Problems) -> PolicyPort:
    spec = decode.mapping(value, path, problems, ("protocol", "port", "endPort"), "a port")
    protocol = decode.string(spec.get("protocol"), decode.join(path, "protocol"), problems, default="TCP")
    if protocol not in PROTOCOLS:
        hint = f" (write {protocol.upper()})" if protocol.upper() in PROTOCOLS else ""
        problems.add(decode.join(path, "protocol"), f"got {protocol!r}; use one of TCP, UDP, SCTP{hint}")
    raw, port_path = spec.get("port"), decode.join(path, "port")
    port: int | str | None = None
    if isinstance(raw, str):
        problem = port_name_problem(raw)
        if problem:
            problems.add(port_path, f"{raw!r} is not a port number or name: {problem}")
        port = raw
    elif raw is not None:
        port = decode.integer(raw, port_path, problems, 1, 65535)
    end_port = decode.integer(spec.get("endPort"), decode.join(path, "endPort"), problems, 1, 65535)
    if end_port is not None:
        if raw is None:
            problems.add(decode.join(path, "endPort"), "may not be specified when `port` is not: set port to the start")
        elif isinstance(port, str):
            problems.add(decode.join(path, "endPort"), "may not be specified when `port` is a name: use a number")
        elif isinstance(port, int) and end_port < port:
            problems.add(decode.join(path, "endPort"), f"{end_port} must be greater than or equal to `port` ({port})")
    return PolicyPort(protocol, port, end_port)


def _rule(value: Any, path: str, problems: Problems, peers_key: str) -> PolicyRule:
    what = "an ingress rule" if peers_key == "from" else "an egress rule"
    spec = decode.mapping(value, path, problems, (peers_key, "ports"), what)
    peer_items = decode.items(spec.get(peers_key), decode.join(path, peers_key), problems)
    port_items = decode.items(spec.get("ports"), decode.join(path, "ports"), problems)
    peers = [_peer(v, p, problems) for p, v in peer_items]
    ports = [_port(v, p, problems) for p, v in port_items]
    return PolicyRule(tuple(peers), tuple(ports))


def parse_network_policy(document: Any) -> NetworkPolicy:
    """A networking.k8s.io/v1 NetworkPolicy, validated and defaulted; raises PolicyError listing every problem."""
    document = decode.check_kind(document, NETWORKING_V1, "NetworkPolicy")
    problems = Problems()
    decode.mapping(document, "", problems, ("apiVersion", "kind", "metadata", "spec", "status"), "a NetworkPolicy")
    name, namespace, _ = decode.metadata(document.get("metadata"), problems, label_problem)
    namespace = namespace or "default"
    _check_name(name, namespace, problems)
    spec = decode.mapping(
        document.get("spec"), "spec", problems, ("podSelector", "ingress", "egress", "policyTypes"), "spec"
    )
    selector = _label_selector(spec.get("podSelector"), "spec.podSelector", problems)
    ingress = [_rule(v, p, problems, "from") for p, v in decode.items(spec.get("ingress"), "spec.ingress", problems)]
    egress = [_rule(v, p, problems, "to") for p, v in decode.items(spec.get("egress"), "spec.egress", problems)]
    types = decode.strings(spec.get("policyTypes"), "spec.policyTypes", problems)
    if len(types) > 2:
        problems.add("spec.policyTypes", "may not specify more than two policyTypes (Ingress, Egress)")
    for index, kind in enumerate(types):
        if kind not in POLICY_TYPES:
            problems.add(f"spec.policyTypes[{index}]", f"got {kind!r}; use Ingress or Egress")
    if not types:
        types = ("Ingress", "Egress") if egress else ("Ingress",)
    problems.check(f"NetworkPolicy {namespace}/{name}")
    return NetworkPolicy(namespace, name, selector, tuple(ingress), tuple(egress), types)


def _check_name(name: str, namespace: str, problems: Problems) -> None:
    if name:
        problem = dns_subdomain_problem(name)
        if problem:
            problems.add("metadata.name", problem)
    problem = dns_label_problem(namespace)
    if problem:
        problems.add("metadata.namespace", problem)


def parse_namespace(document: Any) -> Namespace:
    """A v1 Namespace; ``kubernetes.io/metadata.name`` is set to its name, as the API server does."""
    document = decode.check_kind(document, CORE_V1, "Namespace")
    problems = Problems()
    decode.mapping(document, "", problems, ("apiVersion", "kind", "metadata", "spec", "status"), "a Namespace")
    name, _, labels = decode.metadata(document.get("metadata"), problems, label_problem)
    if name:
        problem = dns_label_problem(name)
        if problem:
            problems.add("metadata.name", problem)
    problems.check(f"Namespace {name}")
    return namespace(name, labels)


def namespace(name: str, labels: Mapping[str, str] | None = None) -> Namespace:
    """A Namespace built in code, with the label the API server adds."""
    return Namespace(name, dict(sorted({**(labels or {}), METADATA_NAME_LABEL: name}.items())))


def _container_ports(spec: Mapping[str, Any], problems: Problems) -> list[ContainerPort]:
    ports: list[ContainerPort] = []
    names: dict[str, str] = {}
    for key in ("containers", "initContainers"):
        for container_path, container in decode.items(spec.get(key), f"spec.{key}", problems):
            if not isinstance(container, dict):
                problems.add(container_path, f"expected a mapping (a container), got {decode.describe(container)}")
                continue
            for path, item in decode.items(container.get("ports"), decode.join(container_path, "ports"), problems):
                port = _container_port(item, path, problems)
                if port is None:
                    continue
                if port.name and port.name in names:
                    problems.add(decode.join(path, "name"), f"{port.name!r} is already used at {names[port.name]}")
                names.setdefault(port.name, path)
                ports.append(port)
    return ports


def _container_port(value: Any, path: str, problems: Problems) -> ContainerPort | None:
    if not isinstance(value, dict):
        problems.add(path, f"expected a mapping (a container port), got {decode.describe(value)}")
        return None
    name = decode.string(value.get("name"), decode.join(path, "name"), problems)
    if name:
        problem = port_name_problem(name)
        if problem:
            problems.add(decode.join(path, "name"), problem)
    number = decode.integer(value.get("containerPort"), decode.join(path, "containerPort"), problems, 1, 65535)
    if value.get("containerPort") is None:
        problems.add(decode.join(path, "containerPort"), "required: the port number the container listens on")
    protocol = decode.string(value.get("protocol"), decode.join(path, "protocol"), problems, default="TCP")
    if protocol not in PROTOCOLS:
        problems.add(decode.join(path, "protocol"), f"got {protocol!r}; use one of TCP, UDP, SCTP")
    host_port = decode.integer(value.get("hostPort"), decode.join(path, "hostPort"), problems, 0, 65535) or 0
    return ContainerPort(name, number, protocol, host_port) if number is not None else None


def _pod_ips(status: Mapping[str, Any], problems: Problems) -> list[IPAddress]:
    texts: list[tuple[str, Any]] = [(f"status.podIPs[{i}].ip", v) for i, v in enumerate(status.get("podIPs") or [])]
    texts = [(p, v.get("ip") if isinstance(v, dict) else v) for p, v in texts]
    if not texts and status.get("podIP"):
        texts = [("status.podIP", status["podIP"])]
    ips: list[IPAddress] = []
    for path, text in texts:
        try:
            ips.append(ipaddress.ip_address(str(text)))
        except ValueError:
            problems.add(path, f"{text!r} is not an IP address")
    return ips


def parse_pod(document: Any) -> Pod:
    """A v1 Pod: labels, serviceAccountName (``default`` when unset, as admission sets it), nodeName, IPs, ports.

    Only the fields policy reads are checked; the rest of a Pod (images,
    commands, volumes) is accepted and ignored.
    """
    document = decode.check_kind(document, CORE_V1, "Pod")
    problems = Problems()
    name, pod_namespace, labels = decode.metadata(document.get("metadata"), problems, label_problem)
    pod_namespace = pod_namespace or "default"
    _check_name(name, pod_namespace, problems)
    spec = {} if document.get("spec") is None else document["spec"]
    status = {} if document.get("status") is None else document["status"]
    for key, value in (("spec", spec), ("status", status)):
        if not isinstance(value, dict):
            problems.add(key, f"expected a mapping, got {decode.describe(value)}")
    spec = spec if isinstance(spec, dict) else {}
    status = status if isinstance(status, dict) else {}
    account = decode.string(spec.get("serviceAccountName"), "spec.serviceAccountName", problems) or "default"
    node = decode.string(spec.get("nodeName"), "spec.nodeName", problems)
    host_network = decode.boolean(spec.get("hostNetwork"), "spec.hostNetwork", problems)
    ports = _container_ports(spec, problems)
    ips = _pod_ips(status, problems)
    problems.check(f"Pod {pod_namespace}/{name}")
    return Pod(pod_namespace, name, labels, account, node, host_network, tuple(ips), tuple(ports))
