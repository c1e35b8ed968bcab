"""Every object policy depends on, keyed as the datastore keys them, and the evaluator for the current set.

:class:`ClusterState` is what the syncer will feed and what tests drive:
apply or delete Kubernetes objects (NetworkPolicy, Namespace, Pod) and Calico
objects (policies, tiers, network sets, profiles, host endpoints) and workload endpoints,
change labels, then :meth:`ClusterState.evaluator` compiles the current set.
Kubernetes objects are converted as Calico converts them: a NetworkPolicy into
``knp.default.<name>``, a Namespace into the profile ``kns.<ns>``, a service
account into ``ksa.<ns>.<sa>``, a Pod into a workload endpoint (keeping the
addresses its endpoint already has when the Pod carries none, so a label
change after ADD keeps the pod's IPs).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from pycni.policy import k8s
from pycni.policy.calico_model import (
    API_VERSION,
    CalicoObject,
    CalicoPolicy,
    GlobalNetworkSet,
    Profile,
    Tier,
    parse_calico,
)
from pycni.policy.convert import namespace_to_profile, network_policy_to_calico, service_account_profile
from pycni.policy.endpoints import (
    FAILSAFE_INBOUND,
    FAILSAFE_OUTBOUND,
    FailsafePort,
    Host,
    HostEndpoint,
    WorkloadEndpoint,
    host_endpoint_from_calico,
    workload_from_pod,
)
from pycni.policy.evaluate import VXLAN_PORT, Evaluator

K8sObject = k8s.NetworkPolicy | k8s.Namespace | k8s.Pod
PolicyObject = K8sObject | CalicoObject | WorkloadEndpoint | Host | HostEndpoint


def parse_object(document: Any) -> K8sObject | CalicoObject | HostEndpoint:
    """A Kubernetes or Calico object from its decoded YAML/JSON, by apiVersion and kind."""
    version = document.get("apiVersion") if isinstance(document, dict) else None
    kind = document.get("kind") if isinstance(document, dict) else None
    if version == API_VERSION and kind == "HostEndpoint":
        return host_endpoint_from_calico(document)
    if version == API_VERSION:
        return parse_calico(document)
    if kind == "Namespace":
        return k8s.parse_namespace(document)
    if kind == "Pod":
        return k8s.parse_pod(document)
    return k8s.parse_network_policy(document)  # reports a wrong apiVersion or kind with what is accepted


class ClusterState:
    def __init__(self) -> None:
        self.namespaces: dict[str, k8s.Namespace] = {}
        self.k8s_policies: dict[str, k8s.NetworkPolicy] = {}
        self.policies: dict[str, CalicoPolicy] = {}
        self.tiers: dict[str, Tier] = {}
        self.network_sets: dict[str, GlobalNetworkSet] = {}
        self.profiles: dict[str, Profile] = {}
        self.endpoints: dict[str, WorkloadEndpoint] = {}
        self.hosts: dict[str, Host] = {}
        self.host_endpoints: dict[str, HostEndpoint] = {}

    def apply(self, obj: PolicyObject | Mapping[str, Any]) -> PolicyObject:
        """Create or replace an object (a decoded document is parsed first); returns what was stored."""
        if isinstance(obj, Mapping):
            obj = parse_object(dict(obj))
        if isinstance(obj, k8s.NetworkPolicy):
            self.k8s_policies[obj.key] = obj
        elif isinstance(obj, k8s.Namespace):
            self.namespaces[obj.name] = obj
        elif isinstance(obj, k8s.Pod) and obj.host_network:
            self.endpoints.pop(obj.key, None)  # a host-networked pod is no workload endpoint: its traffic is the host's
        elif isinstance(obj, k8s.Pod):
            known = self.endpoints.get(obj.key)
            ips = obj.ips or (known.ips if known else ())
            self.endpoints[obj.key] = workload_from_pod(obj, ips, obj.node_name or (known.node if known else ""))
        elif isinstance(obj, CalicoPolicy):
            self.policies[f"{obj.kind}/{obj.key}"] = obj
        elif isinstance(obj, Tier):
            self.tiers[obj.name] = obj
        elif isinstance(obj, GlobalNetworkSet):
            self.network_sets[obj.name] = obj
        elif isinstance(obj, Profile):
            self.profiles[obj.name] = obj
        elif isinstance(obj, WorkloadEndpoint):
            self.endpoints[obj.key] = obj
        elif isinstance(obj, HostEndpoint):
            self.host_endpoints[obj.name] = obj
        else:
            self.hosts[obj.name] = obj
        return obj

    def delete(self, obj: PolicyObject) -> None:
        """Remove an object (no error if it is already gone)."""
        if isinstance(obj, k8s.NetworkPolicy):
            self.k8s_policies.pop(obj.key, None)
        elif isinstance(obj, k8s.Namespace):
            self.namespaces.pop(obj.name, None)
        elif isinstance(obj, k8s.Pod | WorkloadEndpoint):
            self.endpoints.pop(obj.key, None)
        elif isinstance(obj, CalicoPolicy):
            self.policies.pop(f"{obj.kind}/{obj.key}", None)
        elif isinstance(obj, Tier):
            self.tiers.pop(obj.name, None)
        elif isinstance(obj, GlobalNetworkSet):
            self.network_sets.pop(obj.name, None)
        elif isinstance(obj, Profile):
            self.profiles.pop(obj.name, None)
        elif isinstance(obj, HostEndpoint):
            self.host_endpoints.pop(obj.name, None)
        else:
            self.hosts.pop(obj.name, None)

    def delete_all_policies(self) -> None:
        self.k8s_policies.clear()
        self.policies.clear()

    def set_namespace_labels(self, name: str, labels: Mapping[str, str]) -> None:
        """Replace a namespace's labels (``kubernetes.io/metadata.name`` stays)."""
        self.namespaces[name] = k8s.namespace(name, labels)

    def set_pod_labels(self, key: str, labels: Mapping[str, str]) -> None:
        """Replace a pod's labels (``<namespace>/<pod>``), as ``kubectl label --overwrite`` then the syncer do."""
        endpoint = self.endpoints[key]
        pod = k8s.Pod(endpoint.namespace, endpoint.pod, dict(labels), endpoint.service_account, endpoint.node)
        self.endpoints[key] = replace(endpoint, labels=workload_from_pod(pod, endpoint.ips).labels)

    def all_policies(self) -> list[CalicoPolicy]:
        converted = [network_policy_to_calico(p) for p in self.k8s_policies.values()]
        return converted + list(self.policies.values())

    def all_profiles(self) -> list[Profile]:
        """Explicit profiles, plus ``kns.<ns>`` per namespace and ``ksa.<ns>.<sa>`` per service account in use."""
        derived = {p.name: p for p in (namespace_to_profile(ns) for ns in self.namespaces.values())}
        for endpoint in self.endpoints.values():
            if endpoint.service_account:
                profile = service_account_profile(endpoint.namespace, endpoint.service_account)
                derived.setdefault(profile.name, profile)
        return list({**derived, **self.profiles}.values())

    def evaluator(
        self,
        endpoint_to_host: str = "Accept",
        failsafe_inbound: tuple[FailsafePort, ...] = FAILSAFE_INBOUND,
        failsafe_outbound: tuple[FailsafePort, ...] = FAILSAFE_OUTBOUND,
        vxlan_port: int = VXLAN_PORT,
    ) -> Evaluator:
        return Evaluator(
            self.all_policies(),
            tiers=self.tiers.values(),
            profiles=self.all_profiles(),
            network_sets=self.network_sets.values(),
            endpoints=self.endpoints.values(),
            hosts=self.hosts.values(),
            host_endpoints=self.host_endpoints.values(),
            endpoint_to_host=endpoint_to_host,
            failsafe_inbound=failsafe_inbound,
            failsafe_outbound=failsafe_outbound,
            vxlan_port=vxlan_port,
        )
