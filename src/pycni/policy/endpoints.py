"""Who a packet's addresses belong to: workload endpoints (pods), hosts (nodes), and labels they carry.

A :class:`WorkloadEndpoint` is what Felix knows of a pod: namespace, pod name,
node, IPs, its own labels (the pod's plus ``projectcalico.org/namespace``,
``projectcalico.org/orchestrator: k8s`` and ``projectcalico.org/serviceaccount``),
the profiles it inherits labels and default rules from (``kns.<ns>``,
``ksa.<ns>.<sa>``) and its named ports. :func:`workload_from_pod` builds one
as ``podToDefaultWorkloadEndpoint`` does; :func:`workload_from_calico` reads a
stored projectcalico.org/v3 WorkloadEndpoint. :func:`effective_labels` is what
selectors see: the endpoint's own labels, then each profile's
``labelsToApply`` in order for the keys it lacks (Felix's ``InheritIndex``).
An address that belongs to no endpoint and no host is a "nets only" peer:
rules match it by ``nets`` and by GlobalNetworkSets.

A :class:`HostEndpoint` is a host interface (``interfaceName``, or ``*`` for
all of the host's interfaces) that policy protects: traffic the host receives
through it or sends out of it. Only GlobalNetworkPolicies can select one (a
namespaced policy's selector carries its namespace, which a host endpoint has
not); with no policy and no profile for it, its traffic is denied, except the
failsafe ports (:data:`FAILSAFE_INBOUND`, :data:`FAILSAFE_OUTBOUND`).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pycni.policy import k8s
from pycni.policy.calico_model import Profile
from pycni.policy.convert import (
    LABEL_NAMESPACE,
    LABEL_ORCHESTRATOR,
    LABEL_SERVICE_ACCOUNT,
    NAMESPACE_PROFILE_PREFIX,
    ORCHESTRATOR_K8S,
    SERVICE_ACCOUNT_PROFILE_PREFIX,
)
from pycni.policy.errors import Problems

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class NamedPort:
    """A named container port: rules naming it match this endpoint's port number over this protocol."""

    name: str
    protocol: str
    port: int


@dataclass(frozen=True)
class WorkloadEndpoint:
    namespace: str
    pod: str
    ips: tuple[IPAddress, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    node: str = ""
    profiles: tuple[str, ...] = ()
    ports: tuple[NamedPort, ...] = ()
    service_account: str = ""

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.pod}"


_INTERFACE_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")  # what the table may quote as an ifname
ALL_INTERFACES = "*"  # a HostEndpoint's interfaceName for every interface of the host but workloads' and lo


@dataclass(frozen=True)
class HostEndpoint:
    """A projectcalico.org/v3 HostEndpoint: one interface of a node (or ``*``: all of them) under policy."""

    name: str
    node: str
    interface: str = ""  # "" = the interface holding expectedIPs (not enforced by pycni); ALL_INTERFACES
    ips: tuple[IPAddress, ...] = ()  # expectedIPs: members of the selector sets that match the endpoint
    labels: Mapping[str, str] = field(default_factory=dict)
    profiles: tuple[str, ...] = ()
    ports: tuple[NamedPort, ...] = ()

    @property
    def key(self) -> str:
        """Distinct from any ``<namespace>/<pod>`` (no namespace holds a colon)."""
        return f"hep:{self.name}"


@dataclass(frozen=True)
class FailsafePort:
    """Felix's ProtoPort: a port always open to (inbound) or from (outbound) the host, optionally for one net."""

    protocol: str  # tcp, udp or sctp
    port: int
    net: ipaddress.IPv4Network | ipaddress.IPv6Network | None = None

    def __str__(self) -> str:
        return f"{self.protocol}:{self.port}" + (f" ({self.net})" if self.net else "")


def _failsafe_entry(item: str) -> dict[str, Any] | None:
    """One item of Felix's PortListParam: ``22`` (TCP), ``udp:68``, ``tcp:10.0.0.0/8:22``, ``tcp:[fd00::/8]:22``."""
    head, sep, port = item.rpartition(":")
    if not port.isdigit():
        return None
    if not sep:
        return {"protocol": "tcp", "port": int(port)}
    protocol, sep, net = head.partition(":")
    entry: dict[str, Any] = {"protocol": protocol, "port": int(port)}
    if sep:
        entry["net"] = net[1:-1] if net.startswith("[") and net.endswith("]") else net
    return entry


def _failsafe_text(text: str, path: str) -> tuple[FailsafePort, ...]:
    """Felix's environment form: comma-separated items, empty ones skipped; ``none`` (or nothing) is none."""
    if text.strip().lower() in ("", "none"):
        return ()
    entries = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        entry = _failsafe_entry(item)
        if entry is None:
            raise ValueError(
                f"{path}: {item!r} is not <port>, <protocol>:<port> or <protocol>:<net>:<port> (e.g. tcp:22)"
            )
        entries.append(entry)
    return failsafe_ports(entries, (), path)


def failsafe_ports(
    value: Any, default: tuple[FailsafePort, ...], path: str = "failsafe ports"
) -> tuple[FailsafePort, ...]:
    """FelixConfiguration's ``failsafeInbound/OutboundHostPorts`` (a list of {protocol, port, net}), else ``default``.

    A string is the FELIX_ environment form (``tcp:22,udp:68``, ``none``).

    ``None`` (absent) is the default; an empty list is none at all. A wrong
    entry raises ValueError naming it.
    """
    if value is None:
        return default
    if isinstance(value, str):  # FELIX_FAILSAFEINBOUNDHOSTPORTS: "tcp:22,udp:68" or "tcp:10.0.0.0/8:22"; "none"
        return _failsafe_text(value, path)
    if not isinstance(value, list):
        raise ValueError(f"{path}: expected a list of {{protocol, port, net}}, got {value!r}")
    ports = []
    for index, entry in enumerate(value):
        if not isinstance(entry, Mapping) or not isinstance(entry.get("port"), int):
            raise ValueError(f"{path}[{index}]: expected {{protocol, port, net}}, got {entry!r}")
        protocol = str(entry.get("protocol") or "tcp").lower()
        if protocol not in ("tcp", "udp", "sctp") or not 0 <= entry["port"] <= 65535:
            raise ValueError(f"{path}[{index}]: protocol tcp, udp or sctp and a port 0-65535, got {entry!r}")
        try:
            net = ipaddress.ip_network(str(entry["net"]), strict=False) if entry.get("net") else None
        except ValueError:
            raise ValueError(f"{path}[{index}]: net {entry['net']!r} is not a network") from None
        ports.append(FailsafePort(protocol, entry["port"], net))
    return tuple(ports)


# Felix's defaults (config_params.go): SSH, DHCP, BGP, etcd, Typha, the API server, kube-proxy's and calico's health.
FAILSAFE_INBOUND = _failsafe_text("tcp:22,udp:68,tcp:179,tcp:2379,tcp:2380,tcp:5473,tcp:6443,tcp:6666,tcp:6667", "")
FAILSAFE_OUTBOUND = _failsafe_text("udp:53,udp:67,tcp:179,tcp:2379,tcp:2380,tcp:5473,tcp:6443,tcp:6666,tcp:6667", "")


@dataclass(frozen=True)
class Host:
    """A node: traffic from a node to its own pods is not policed (Felix's filter OUTPUT returns early)."""

    name: str
    ips: tuple[IPAddress, ...] = ()


def addresses(values: Iterable[IPAddress | str]) -> tuple[IPAddress, ...]:
    """IP addresses from addresses or text (``10.0.0.1`` or ``10.0.0.1/32``)."""
    out = []
    for value in values:
        text = str(value)
        out.append(ipaddress.ip_interface(text).ip if "/" in text else ipaddress.ip_address(text))
    return tuple(out)


def workload_from_pod(
    pod: k8s.Pod, ips: Sequence[IPAddress | str] | None = None, node: str | None = None
) -> WorkloadEndpoint:
    """The endpoint Calico derives from a Pod (``podToDefaultWorkloadEndpoint``); ``ips``/``node`` override its own."""
    labels = dict(pod.labels)
    labels[LABEL_NAMESPACE] = pod.namespace
    labels[LABEL_ORCHESTRATOR] = ORCHESTRATOR_K8S
    profiles = [NAMESPACE_PROFILE_PREFIX + pod.namespace]
    if pod.service_account:
        profiles.append(f"{SERVICE_ACCOUNT_PROFILE_PREFIX}{pod.namespace}.{pod.service_account}")
        if len(pod.service_account) < 63:
            labels[LABEL_SERVICE_ACCOUNT] = pod.service_account
    ports = tuple(
        NamedPort(p.name, p.protocol, p.container_port) for p in pod.ports if p.name or p.host_port
    )  # appendEndpointPorts: named ports (and host ports)
    return WorkloadEndpoint(
        namespace=pod.namespace,
        pod=pod.name,
        ips=addresses(ips) if ips is not None else pod.ips,
        labels=dict(sorted(labels.items())),
        node=node if node is not None else pod.node_name,
        profiles=tuple(profiles),
        ports=ports,
        service_account=pod.service_account,
    )


def _stored_addresses(spec: Mapping[str, Any], name: str, problems: Problems) -> tuple[IPAddress, ...]:
    """A stored endpoint's address list (``ipNetworks``, ``expectedIPs``); a problem if it is not one."""
    try:
        return addresses(spec.get(name) or [])
    except ValueError:
        problems.add(f"spec.{name}", f"not a list of addresses: {spec.get(name)!r}")
        return ()


def _stored_ports(spec: Mapping[str, Any], problems: Problems, *, named: bool) -> list[NamedPort]:
    """A stored endpoint's ``ports`` ({name, protocol, port}; ``named``: a host endpoint's need their name)."""
    ports = []
    for index, port in enumerate(spec.get("ports") or []):
        if not isinstance(port, Mapping) or not isinstance(port.get("port"), int) or (named and not port.get("name")):
            problems.add(f"spec.ports[{index}]", "expected {name, protocol, port}")
            continue
        ports.append(NamedPort(str(port.get("name") or ""), str(port.get("protocol") or "TCP").upper(), port["port"]))
    return ports


def workload_from_calico(document: Mapping[str, Any]) -> WorkloadEndpoint:
    """A stored projectcalico.org/v3 WorkloadEndpoint (as the calico CNI plugin writes it) as an endpoint."""
    problems = Problems()
    metadata = document.get("metadata") or {}
    spec = document.get("spec") or {}
    namespace = str(metadata.get("namespace") or "default")
    pod = str(spec.get("pod") or spec.get("workload") or metadata.get("name") or "")
    ips = _stored_addresses(spec, "ipNetworks", problems)
    ports = _stored_ports(spec, problems, named=False)
    problems.check(f"WorkloadEndpoint {namespace}/{metadata.get('name', '')}")
    return WorkloadEndpoint(
        namespace=namespace,
        pod=pod,
        ips=ips,
        labels=dict(metadata.get("labels") or {}),
        node=str(spec.get("node") or ""),
        profiles=tuple(spec.get("profiles") or ()),
        ports=tuple(ports),
        service_account=str(spec.get("serviceAccountName") or ""),
    )


def host_endpoint_from_calico(document: Mapping[str, Any]) -> HostEndpoint:
    """A stored (or applied) projectcalico.org/v3 HostEndpoint."""
    problems = Problems()
    metadata = document.get("metadata") or {}
    spec = document.get("spec") or {}
    name = str(metadata.get("name") or "")
    node = str(spec.get("node") or "")
    interface = str(spec.get("interfaceName") or "")
    ips = _stored_addresses(spec, "expectedIPs", problems)
    if not node:
        problems.add("spec.node", "the node the endpoint is on must be given")
    if not interface and not ips:
        problems.add("spec", "give interfaceName (an interface, or * for all of them) or expectedIPs")
    elif interface and interface != ALL_INTERFACES and not _INTERFACE_NAME.match(interface):
        problems.add("spec.interfaceName", f"{interface!r} is not an interface name (1-15 of a-z A-Z 0-9 _ . -)")
    ports = _stored_ports(spec, problems, named=True)
    problems.check(f"HostEndpoint {name}")
    return HostEndpoint(
        name=name,
        node=node,
        interface=interface,
        ips=ips,
        labels=dict(metadata.get("labels") or {}),
        profiles=tuple(str(p) for p in spec.get("profiles") or ()),
        ports=tuple(ports),
    )


def effective_labels(endpoint: WorkloadEndpoint | HostEndpoint, profiles: Mapping[str, Profile]) -> dict[str, str]:
    """The labels selectors match: the endpoint's own, then each profile's labelsToApply (the first one wins)."""
    labels: dict[str, str] = {}
    for name in reversed(endpoint.profiles):
        profile = profiles.get(name)
        if profile is not None:
            labels.update(profile.labels_to_apply)
    labels.update(endpoint.labels)
    return labels
