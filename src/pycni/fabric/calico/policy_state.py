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
* Nodes are hosts (their BGP and tunnel addresses), for "host to local pod is not policed";
* HostEndpoints of this node name the host interfaces policed (``interfaceName``, or ``*``);
  one with only expectedIPs is in the selector sets but not enforced here (pycni does not
  look an interface up by address); FelixConfiguration's failsafe ports open them.

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
from pycni.policy import k8s, nft_names
from pycni.policy.calico_model import parse_calico
from pycni.policy.cluster import ClusterState
from pycni.policy.endpoints import (
    FAILSAFE_INBOUND,
    FAILSAFE_OUTBOUND,
    FailsafePort,
    Host,
    HostEndpoint,
    WorkloadEndpoint,
    addresses,
    failsafe_ports,
    host_endpoint_from_calico,
    workload_from_calico,
)
from pycni.policy.errors import PolicyError
from pycni.policy.evaluate import VXLAN_PORT, Evaluator

# The v3 plurals the policy engine reads (kinds.py names them).
CALICO_PLURALS = (
    "networkpolicies",
    "globalnetworkpolicies",
    "tiers",
    "globalnetworksets",
    "profiles",
    "workloadendpoints",
    "hostendpoints",
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
    host_interfaces: dict[str, str] = field(default_factory=dict)  # this node's host endpoints: interface or * -> key
    failsafe_inbound: tuple[FailsafePort, ...] = FAILSAFE_INBOUND
    failsafe_outbound: tuple[FailsafePort, ...] = FAILSAFE_OUTBOUND
    vxlan_port: int = VXLAN_PORT  # FelixConfiguration vxlanPort: the overlay let through at host endpoints

    def evaluator(self) -> Evaluator:
        return self.state.evaluator(
            self.endpoint_to_host, self.failsafe_inbound, self.failsafe_outbound, self.vxlan_port
        )


def _host(resource: Mapping[str, Any]) -> Host:
    spec = resource.get("spec") or {}
    bgp = spec.get("bgp") or {}
    found = [bgp.get("ipv4Address"), bgp.get("ipv4IPIPTunnelAddr"), spec.get("ipv4VXLANTunnelAddr")]
    ips = addresses(str(a) for a in found if a)
    return Host(str((resource.get("metadata") or {}).get("name") or ""), ips)


def _felix_sources(
    configs: Mapping[str, Mapping[str, Any]], nodename: str, env: Mapping[str, Any]
) -> tuple[Mapping[str, Any], ...]:
    """Where a FelixConfiguration field is read, first first: the agent's FELIX_ settings, node.<name>, default."""
    return (env, configs.get(f"node.{nodename}") or {}, configs.get("default") or {})


def _felix_value(configs: Mapping[str, Mapping[str, Any]], nodename: str, env: Mapping[str, Any], name: str) -> Any:
    """A FelixConfiguration field in force: the first source that sets it (None if none does)."""
    for source in _felix_sources(configs, nodename, env):
        if source.get(name) is not None:
            return source[name]
    return None


def _endpoint_to_host(configs: Mapping[str, Mapping[str, Any]], nodename: str, env: Mapping[str, Any]) -> str:
    """``defaultEndpointToHostAction``: the first source with a valid value (one it cannot read is passed over)."""
    for source in _felix_sources(configs, nodename, env):
        value = source.get("defaultEndpointToHostAction")
        if value and str(value).lower() in ENDPOINT_TO_HOST:
            return ENDPOINT_TO_HOST[str(value).lower()]
    return DEFAULT_ENDPOINT_TO_HOST


@dataclass(frozen=True)
class Decoded:
    """What one key becomes: an object of ``group`` (or a problem), whatever else the datastore holds."""

    group: str  # endpoint, host, felix, namespaces, pods, networkpolicies, calico; "" for a key read for nothing
    value: Any = None
    interface: str = ""  # an endpoint's host-side interface
    problem: str = ""


class DecodeCache:
    """Decoded keys by their value, kept from one build to the next.

    A change of one object re-decodes that object only: the rest of the cluster
    (a thousand endpoints, hundreds of policies) is looked up, not parsed again,
    which is most of an update's cost at scale. Keys that are gone are dropped
    at the end of each build. Decoding is a pure function of the stored value.
    """

    def __init__(self) -> None:
        self._by_key: dict[str, tuple[str, Decoded]] = {}
        self._seen: set[str] = set()

    def get(self, kv: KeyValue, decoder: ResourceClient) -> Decoded:
        self._seen.add(kv.key)
        held = self._by_key.get(kv.key)
        if held is not None and held[0] == kv.value:
            return held[1]
        decoded = decode(kv, decoder)
        self._by_key[kv.key] = (kv.value, decoded)
        return decoded

    def __len__(self) -> int:
        return len(self._by_key)

    def prune(self) -> None:
        """Forget the keys not asked for since the last prune."""
        for key in self._by_key.keys() - self._seen:
            del self._by_key[key]
        self._seen = set()


_K8S_PARSERS: dict[str, Callable[[Any], k8s.Namespace | k8s.Pod | k8s.NetworkPolicy]] = {
    "namespaces": k8s.parse_namespace,
    "pods": k8s.parse_pod,
    "networkpolicies": k8s.parse_network_policy,
}


def decode(kv: KeyValue, decoder: ResourceClient) -> Decoded:
    """One key's object (values read as :class:`ResourceClient` reads them); a problem instead of an error."""
    try:
        if kv.key.startswith(KUBERNETES_PREFIX):
            plural = kv.key[len(KUBERNETES_PREFIX) :].split("/", 1)[0]
            parse = _K8S_PARSERS.get(plural)
            return Decoded(plural, parse(json.loads(kv.value))) if parse else Decoded("")
        document = decoder.decode(kv).to_dict()
        document.pop("status", None)  # a stored Tier carries "status": {}; pycni.policy reads no status
        kind = document.get("kind")
        if kind == "WorkloadEndpoint":
            interface = (document.get("spec") or {}).get("interfaceName") or ""
            return Decoded("endpoint", workload_from_calico(document), str(interface))
        if kind == "FelixConfiguration":
            return Decoded("felix", (str(document["metadata"]["name"]), document.get("spec") or {}))
        if kind == "Node":
            return Decoded("host", _host(document))
        if kind == "HostEndpoint":
            return Decoded("hostendpoint", host_endpoint_from_calico(document))
        return Decoded("calico", parse_calico(document))
    except (CalicoError, PolicyError, ValueError, TypeError, KeyError) as exc:
        return Decoded("", problem=str(exc))


def build(
    kvs: Iterable[KeyValue],
    nodename: str,
    decoder: ResourceClient,
    felix_env: Mapping[str, Any] | None = None,
    cache: DecodeCache | None = None,
) -> PolicyInputs:
    """The policy inputs from the keys under :data:`PREFIXES` (others are ignored); ``decoder`` reads v3 values.

    ``cache`` (the manager keeps one) spares decoding the keys whose values did not change.
    """
    inputs = PolicyInputs(ClusterState())
    groups: dict[str, list[tuple[str, Decoded]]] = {}
    for kv in kvs:
        if not wanted(kv.key):
            continue
        decoded = cache.get(kv, decoder) if cache is not None else decode(kv, decoder)
        if decoded.problem:
            inputs.problems[kv.key] = decoded.problem
        else:
            groups.setdefault(decoded.group, []).append((kv.key, decoded))
    if cache is not None:
        cache.prune()
    state = inputs.state
    for _, decoded in groups.get("endpoint", []):
        endpoint: WorkloadEndpoint = decoded.value
        state.apply(endpoint)
        if endpoint.node == nodename and decoded.interface:
            inputs.interfaces[decoded.interface] = endpoint.key
    for _, decoded in groups.get("host", []):
        state.apply(decoded.value)
    _host_endpoints(inputs, [decoded.value for _, decoded in groups.get("hostendpoint", [])], nodename)
    for plural in _K8S_PARSERS:  # namespaces, then pods, then policies
        for _, decoded in groups.get(plural, []):
            obj = decoded.value
            if isinstance(obj, k8s.Pod) and obj.key not in state.endpoints:
                continue  # no endpoint yet: not a workload of the cluster
            state.apply(obj)
    for endpoint in list(state.endpoints.values()):
        if endpoint.namespace not in state.namespaces:
            state.apply(k8s.namespace(endpoint.namespace, {}))
    for key, decoded in groups.get("calico", []):
        try:
            state.apply(decoded.value)
        except PolicyError as exc:
            inputs.problems[key] = str(exc)
    _unrendered_policy_options(inputs)
    felix = dict(decoded.value for _, decoded in groups.get("felix", []))
    inputs.endpoint_to_host = _endpoint_to_host(felix, nodename, felix_env or {})
    port = _felix_value(felix, nodename, felix_env or {}, "vxlanPort")
    if isinstance(port, int) and 0 < port < 65536:
        inputs.vxlan_port = port
    for name, default, attribute in (
        ("failsafeInboundHostPorts", FAILSAFE_INBOUND, "failsafe_inbound"),
        ("failsafeOutboundHostPorts", FAILSAFE_OUTBOUND, "failsafe_outbound"),
    ):
        try:
            value = _felix_value(felix, nodename, felix_env or {}, name)
            setattr(inputs, attribute, failsafe_ports(value, default, name))
        except ValueError as exc:
            inputs.problems[f"FelixConfiguration {name}"] = f"{exc}; Felix's defaults are used"
    return inputs


def _host_endpoints(inputs: PolicyInputs, heps: list[HostEndpoint], nodename: str) -> None:
    """Each HostEndpoint into the state, and this node's by interface, in name order.

    Left out, with the reason in ``problems``: one whose expectedIP is a pod's
    (the evaluator would refuse the whole set, and every node would stop
    following the datastore), one on a workload interface or ``lo`` (not a host
    interface). The later name of two on one interface of this node is kept in
    the selector sets but not enforced: Felix keeps the alphabetically earliest.
    """
    state = inputs.state
    pod_ips = {ip: endpoint.key for endpoint in state.endpoints.values() for ip in endpoint.ips}
    for hep in sorted(heps, key=lambda h: h.name):
        subject = f"HostEndpoint {hep.name}"
        clash = next((ip for ip in hep.ips if ip in pod_ips), None)
        if clash is not None:
            inputs.problems[subject] = f"expected IP {clash} is pod {pod_ips[clash]}'s: the endpoint is left out"
            continue
        if hep.interface and not nft_names.is_host_interface(hep.interface):
            inputs.problems[subject] = f"interface {hep.interface} is not a host interface: the endpoint is left out"
            continue
        state.apply(hep)
        if hep.node != nodename or not hep.interface:
            continue
        held = inputs.host_interfaces.setdefault(hep.interface, hep.key)
        if held != hep.key:
            inputs.problems[subject] = (
                f"interface {hep.interface} is already {held.removeprefix('hep:')}'s (the earliest name wins, "
                "as in Felix): not enforced"
            )


def _unrendered_policy_options(inputs: PolicyInputs) -> None:
    """Say which policy options pycni does not render, rather than ignore them in silence."""
    for policy in inputs.state.policies.values():
        subject = f"{policy.kind} {policy.key}"
        if policy.pre_dnat or policy.do_not_track:
            option = "preDNAT" if policy.pre_dnat else "doNotTrack"
            inputs.problems[subject] = f"{option} policies are not enforced by pycni: the policy is left out"
        elif policy.apply_on_forward:
            inputs.problems[subject] = (
                "applyOnForward: pycni polices only the host's own traffic at host endpoints, not forwarded traffic"
            )


def local_endpoints(inputs: PolicyInputs) -> dict[str, WorkloadEndpoint]:
    """This node's endpoints by interface name."""
    return {
        iface: inputs.state.endpoints[key] for iface, key in inputs.interfaces.items() if key in inputs.state.endpoints
    }
