"""The policy engine's input from the datastore's keys: the cluster's policy objects and this node's interfaces.

Felix in etcd mode reads policy, tiers, profiles, network sets and every
WorkloadEndpoint of the cluster from ``/calico/resources/v3/``; the Kubernetes
stand-ins (Namespace, Pod, NetworkPolicy) are under ``/pycni/k8s/registry/``,
where kube-controllers would have read them from the API server. They are
combined as Calico combines them:

* every WorkloadEndpoint is an endpoint (its IPs, node, profiles, ports);
* a stored Pod with the same ``<namespace>/<pod>`` gives it its labels, service
  account and named ports (kube-controllers copy a Pod's labels into its
  endpoint), so ``calicoctl apply`` of a relabelled Pod moves it between sets
  on every node; a Pod with no endpoint is not a workload yet and is left out;
* Namespaces become ``kns.<ns>`` profiles, NetworkPolicies ``knp.default.<name>``;
  a namespace an endpoint is in but no Namespace was stored for gets the profile
  of an unlabelled namespace (Kubernetes has no pod outside a namespace);
* Nodes are hosts (their BGP and tunnel addresses), for "host to local pod is not policed".

Values read as :class:`~pycni.fabric.calico.resources.ResourceClient` reads them
(a policy's stored name and tier); an object pycni.policy refuses is left out
and reported in :attr:`PolicyInputs.problems` (the manager logs it once).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pycni.datastore import KeyValue
from pycni.fabric.calico.errors import CalicoError
from pycni.fabric.calico.resources import KUBERNETES_PREFIX, RESOURCES_PREFIX, ResourceClient
from pycni.policy import k8s
from pycni.policy.calico_model import parse_calico
from pycni.policy.cluster import ClusterState
from pycni.policy.endpoints import Host, WorkloadEndpoint, addresses, workload_from_calico
from pycni.policy.errors import PolicyError

# The v3 plurals the policy engine reads (kinds.py names them).
CALICO_PLURALS = (
    "networkpolicies",
    "globalnetworkpolicies",
    "tiers",
    "globalnetworksets",
    "profiles",
    "workloadendpoints",
    "felixconfigurations",
    "nodes",
)
PREFIXES = (RESOURCES_PREFIX, KUBERNETES_PREFIX)
ENDPOINT_TO_HOST = {"accept": "Accept", "drop": "Drop", "return": "Return"}
DEFAULT_ENDPOINT_TO_HOST = "Accept"  # calico.yaml's FELIX_DEFAULTENDPOINTTOHOSTACTION (Felix's own default is Drop)


def wanted(key: str) -> bool:
    """Whether the policy engine reads ``key``."""
    if key.startswith(KUBERNETES_PREFIX):
        return True
    if not key.startswith(RESOURCES_PREFIX):
        return False
    return key[len(RESOURCES_PREFIX) :].split("/", 1)[0] in CALICO_PLURALS


@dataclass
class PolicyInputs:
    """The cluster's policy objects, this node's workload interfaces and what was left out."""

    state: ClusterState
    interfaces: dict[str, str] = field(default_factory=dict)  # host interface -> <namespace>/<pod>, this node's
    endpoint_to_host: str = DEFAULT_ENDPOINT_TO_HOST
    problems: dict[str, str] = field(default_factory=dict)  # key -> why it was left out


def _host(resource: Mapping[str, Any]) -> Host:
    spec = resource.get("spec") or {}
    bgp = spec.get("bgp") or {}
    found = [bgp.get("ipv4Address"), bgp.get("ipv4IPIPTunnelAddr"), spec.get("ipv4VXLANTunnelAddr")]
    ips = addresses(str(a) for a in found if a)
    return Host(str((resource.get("metadata") or {}).get("name") or ""), ips)


def _endpoint_to_host(configs: Mapping[str, Mapping[str, Any]], nodename: str, env: Mapping[str, Any]) -> str:
    """``defaultEndpointToHostAction``: the agent's FELIX_ setting, else node.<name>'s, else default's."""
    for value in (
        env.get("defaultEndpointToHostAction"),
        (configs.get(f"node.{nodename}") or {}).get("defaultEndpointToHostAction"),
        (configs.get("default") or {}).get("defaultEndpointToHostAction"),
    ):
        if value and str(value).lower() in ENDPOINT_TO_HOST:
            return ENDPOINT_TO_HOST[str(value).lower()]
    return DEFAULT_ENDPOINT_TO_HOST


@dataclass
class _Read:
    """The kept keys, decoded and grouped by what they become."""

    calico: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    endpoints: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    kube: dict[str, list[tuple[str, Any]]] = field(
        default_factory=lambda: {"namespaces": [], "pods": [], "networkpolicies": []}
    )
    felix: dict[str, Mapping[str, Any]] = field(default_factory=dict)
    hosts: list[Host] = field(default_factory=list)


def _read(kvs: Iterable[KeyValue], decoder: ResourceClient, problems: dict[str, str]) -> _Read:
    read = _Read()
    for kv in kvs:
        if not wanted(kv.key):
            continue
        try:
            if kv.key.startswith(KUBERNETES_PREFIX):
                plural = kv.key[len(KUBERNETES_PREFIX) :].split("/", 1)[0]
                if plural in read.kube:
                    read.kube[plural].append((kv.key, json.loads(kv.value)))
                continue
            document = decoder.decode(kv).to_dict()
            document.pop("status", None)  # a stored Tier carries "status": {}; pycni.policy reads no status
            kind = document.get("kind")
            if kind == "WorkloadEndpoint":
                read.endpoints.append((kv.key, document))
            elif kind == "FelixConfiguration":
                read.felix[str(document["metadata"]["name"])] = document.get("spec") or {}
            elif kind == "Node":
                read.hosts.append(_host(document))
            else:
                read.calico.append((kv.key, document))
        except (CalicoError, ValueError, TypeError, KeyError) as exc:
            problems[kv.key] = str(exc)
    return read


_K8S_PARSERS: dict[str, Callable[[Any], k8s.Namespace | k8s.Pod | k8s.NetworkPolicy]] = {
    "namespaces": k8s.parse_namespace,
    "pods": k8s.parse_pod,
    "networkpolicies": k8s.parse_network_policy,
}


def build(
    kvs: Iterable[KeyValue], nodename: str, decoder: ResourceClient, felix_env: Mapping[str, Any] | None = None
) -> PolicyInputs:
    """The policy inputs from the keys under :data:`PREFIXES` (others are ignored); ``decoder`` reads v3 values."""
    inputs = PolicyInputs(ClusterState())
    read = _read(kvs, decoder, inputs.problems)
    state = inputs.state
    for key, document in read.endpoints:
        try:
            endpoint = workload_from_calico(document)
        except PolicyError as exc:
            inputs.problems[key] = str(exc)
            continue
        state.apply(endpoint)
        interface = (document.get("spec") or {}).get("interfaceName")
        if endpoint.node == nodename and interface:
            inputs.interfaces[str(interface)] = endpoint.key
    for host in read.hosts:
        state.apply(host)
    for plural, parse in _K8S_PARSERS.items():  # namespaces, then pods, then policies
        for key, document in read.kube[plural]:
            try:
                obj = parse(document)
            except PolicyError as exc:
                inputs.problems[key] = str(exc)
                continue
            if isinstance(obj, k8s.Pod) and obj.key not in state.endpoints:
                continue  # no endpoint yet: not a workload of the cluster
            state.apply(obj)
    for endpoint in list(state.endpoints.values()):
        if endpoint.namespace not in state.namespaces:
            state.apply(k8s.namespace(endpoint.namespace, {}))
    for key, document in read.calico:
        try:
            state.apply(parse_calico(document))
        except PolicyError as exc:
            inputs.problems[key] = str(exc)
    inputs.endpoint_to_host = _endpoint_to_host(read.felix, nodename, felix_env or {})
    return inputs


def local_endpoints(inputs: PolicyInputs) -> dict[str, WorkloadEndpoint]:
    """This node's endpoints by interface name."""
    return {
        iface: inputs.state.endpoints[key] for iface, key in inputs.interfaces.items() if key in inputs.state.endpoints
    }
