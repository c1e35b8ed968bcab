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
"""

from __future__ import annotations

import ipaddress
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


def workload_from_calico(document: Mapping[str, Any]) -> WorkloadEndpoint:
    """A stored projectcalico.org/v3 WorkloadEndpoint (as the calico CNI plugin writes it) as an endpoint."""
    problems = Problems()
    metadata = document.get("metadata") or {}
    spec = document.get("spec") or {}
    namespace = str(metadata.get("namespace") or "default")
    pod = str(spec.get("pod") or spec.get("workload") or metadata.get("name") or "")
    try:
        ips = addresses(spec.get("ipNetworks") or [])
    except ValueError:
        problems.add("spec.ipNetworks", f"not a list of addresses: {spec.get('ipNetworks')!r}")
        ips = ()
    ports = []
    for index, port in enumerate(spec.get("ports") or []):
        if not isinstance(port, dict) or not isinstance(port.get("port"), int):
            problems.add(f"spec.ports[{index}]", "expected {name, protocol, port}")
            continue
        ports.append(NamedPort(str(port.get("name") or ""), str(port.get("protocol") or "TCP").upper(), port["port"]))
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


def effective_labels(endpoint: WorkloadEndpoint, profiles: Mapping[str, Profile]) -> dict[str, str]:
    """The labels selectors match: the endpoint's own, then each profile's labelsToApply (the first one wins)."""
    labels: dict[str, str] = {}
    for name in reversed(endpoint.profiles):
        profile = profiles.get(name)
        if profile is not None:
            labels.update(profile.labels_to_apply)
    labels.update(endpoint.labels)
    return labels
