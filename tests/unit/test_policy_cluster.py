"""The object store the evaluator is built from, and workload identity from Pods and stored WorkloadEndpoints.

Identity follows libcalico-go's ``podToDefaultWorkloadEndpoint`` (labels
``projectcalico.org/namespace``, ``/orchestrator``, ``/serviceaccount``;
profiles ``kns.<ns>``, ``ksa.<ns>.<sa>``; named ports) and Felix's label
inheritance (the endpoint's own labels first, then its profiles' in order).
"""

from __future__ import annotations

import ipaddress

import pytest

from pycni.policy import k8s
from pycni.policy.calico_model import CalicoPolicy, Profile, Tier
from pycni.policy.cluster import ClusterState, parse_object
from pycni.policy.endpoints import (
    NamedPort,
    WorkloadEndpoint,
    effective_labels,
    workload_from_calico,
    workload_from_pod,
)
from pycni.policy.errors import PolicyError
from pycni.policy.match import Packet

POD = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "web", "namespace": "shop", "labels": {"app": "web"}},
    "spec": {
        "serviceAccountName": "frontend",
        "nodeName": "node-1",
        "containers": [{"ports": [{"containerPort": 8080, "name": "http"}, {"containerPort": 9000}]}],
    },
    "status": {"podIP": "10.244.0.9"},
}


def test_workload_from_pod() -> None:
    endpoint = workload_from_pod(k8s.parse_pod(POD))
    assert endpoint.key == "shop/web" and endpoint.node == "node-1"
    assert endpoint.ips == (ipaddress.ip_address("10.244.0.9"),)
    assert endpoint.labels == {
        "app": "web",
        "projectcalico.org/namespace": "shop",
        "projectcalico.org/orchestrator": "k8s",
        "projectcalico.org/serviceaccount": "frontend",
    }
    assert endpoint.profiles == ("kns.shop", "ksa.shop.frontend")
    assert endpoint.ports == (NamedPort("http", "TCP", 8080),)  # unnamed ports without a host port are not kept
    moved = workload_from_pod(k8s.parse_pod(POD), ["10.244.1.9/32"], "node-2")
    assert (moved.ips, moved.node) == ((ipaddress.ip_address("10.244.1.9"),), "node-2")


def test_effective_labels_own_first_then_profiles_in_order() -> None:
    endpoint = WorkloadEndpoint("x", "a", labels={"k": "own"}, profiles=("p1", "p2"))
    profiles = {
        "p1": Profile("p1", labels_to_apply={"k": "p1", "one": "p1", "both": "p1"}),
        "p2": Profile("p2", labels_to_apply={"both": "p2", "two": "p2"}),
    }
    assert effective_labels(endpoint, profiles) == {"k": "own", "one": "p1", "both": "p1", "two": "p2"}


def test_workload_from_a_stored_calico_endpoint() -> None:
    # the shape the calico CNI plugin stores (reference/calico.md §4.2)
    stored = {
        "kind": "WorkloadEndpoint",
        "apiVersion": "projectcalico.org/v3",
        "metadata": {
            "name": "node1-k8s-a-eth0",
            "namespace": "x",
            "labels": {"pod": "a", "projectcalico.org/namespace": "x", "projectcalico.org/orchestrator": "k8s"},
        },
        "spec": {
            "orchestrator": "k8s",
            "node": "node1",
            "pod": "a",
            "endpoint": "eth0",
            "serviceAccountName": "default",
            "ipNetworks": ["10.65.79.1/32"],
            "profiles": ["kns.x", "ksa.x.default"],
            "interfaceName": "cali12ab34cd56e",
            "ports": [{"name": "serve-80-tcp", "protocol": "TCP", "port": 80, "hostPort": 0, "hostIP": ""}],
        },
    }
    endpoint = workload_from_calico(stored)
    assert (endpoint.key, endpoint.node, endpoint.profiles) == ("x/a", "node1", ("kns.x", "ksa.x.default"))
    assert endpoint.ips == (ipaddress.ip_address("10.65.79.1"),)
    assert endpoint.ports == (NamedPort("serve-80-tcp", "TCP", 80),)
    with pytest.raises(PolicyError, match=r"spec\.ipNetworks: not a list of addresses"):
        workload_from_calico({"metadata": {"name": "w"}, "spec": {"ipNetworks": ["nope"]}})


def test_parse_object_by_kind() -> None:
    assert isinstance(parse_object(POD), k8s.Pod)
    assert isinstance(parse_object({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x"}}), k8s.Namespace)
    tier = {"apiVersion": "projectcalico.org/v3", "kind": "Tier", "metadata": {"name": "t"}, "spec": {}}
    assert parse_object(tier) == Tier("t")
    with pytest.raises(PolicyError, match="kind: got the string 'Service'; expected NetworkPolicy"):
        parse_object({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}})


def test_relabelling_keeps_addresses_and_host_network_pods_are_no_endpoints() -> None:
    state = ClusterState()
    state.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}})
    state.apply(POD)
    without_ip = {**POD, "metadata": {**POD["metadata"], "labels": {"app": "api"}}, "status": {}}  # type: ignore[dict-item]
    state.apply(without_ip)  # the Pod changes labels after ADD; its endpoint keeps its address
    endpoint = state.endpoints["shop/web"]
    assert endpoint.ips == (ipaddress.ip_address("10.244.0.9"),) and endpoint.labels["app"] == "api"
    host = {**POD, "spec": {**POD["spec"], "hostNetwork": True}}  # type: ignore[dict-item]
    state.apply(host)
    assert "shop/web" not in state.endpoints


def test_profiles_derived_from_namespaces_and_service_accounts() -> None:
    state = ClusterState()
    state.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop", "labels": {"env": "prod"}}})
    state.apply(POD)
    names = {p.name: p for p in state.all_profiles()}
    assert set(names) == {"kns.shop", "ksa.shop.frontend"}
    assert names["ksa.shop.frontend"].labels_to_apply == {"pcsa.projectcalico.org/name": "frontend"}
    state.apply(Profile("kns.shop"))  # an explicit profile of that name replaces the derived one
    assert {p.name: p for p in state.all_profiles()}["kns.shop"].ingress == ()
    # a namespaceSelector sees the namespace's labels through the kns profile
    state.delete(Profile("kns.shop"))
    spec = {"ingress": [{"action": "Deny", "source": {"namespaceSelector": "env == 'prod'"}}]}
    state.apply(
        {"apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkPolicy", "metadata": {"name": "g"}, "spec": spec}
    )
    client = WorkloadEndpoint("shop", "client", (ipaddress.ip_address("10.244.0.10"),), profiles=("kns.shop",))
    state.apply(client)
    verdict = state.evaluator().evaluate(Packet.make("10.244.0.10", "10.244.0.9", "TCP", 8080))
    assert not verdict.allowed and verdict.ingress is not None and verdict.ingress.policy == "g"
    assert isinstance(next(iter(state.policies.values())), CalicoPolicy)


def test_pod_spec_must_be_a_mapping() -> None:
    with pytest.raises(PolicyError, match="spec: expected a mapping, got a list"):
        k8s.parse_pod({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": []})
