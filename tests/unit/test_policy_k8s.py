"""Kubernetes NetworkPolicy, Namespace and Pod parsing: the API server's validation, its defaults, clear errors.

Rules from ``pkg/apis/networking/validation/validation.go`` (ports, endPort,
peers, ipBlock, policyTypes), ``apimachinery`` label selector validation and
``pkg/apis/networking/v1/defaults.go``; every problem of a document is
reported at once, each with its field path and what to do.
"""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from pycni.policy import k8s
from pycni.policy.errors import PolicyError
from pycni.spec.errors import CNIError


def netpol(spec: Any, name: str = "p", namespace: str | None = "x") -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name}
    if namespace is not None:
        metadata["namespace"] = namespace
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": metadata, "spec": spec}


def problems_of(document: dict[str, Any]) -> list[str]:
    with pytest.raises(PolicyError) as caught:
        k8s.parse_network_policy(document)
    return [str(p) for p in caught.value.problems]


def test_defaults() -> None:
    policy = k8s.parse_network_policy(
        netpol({"podSelector": {}, "ingress": [{"ports": [{"port": 80}]}]}, namespace=None)
    )
    assert policy.namespace == "default"
    assert policy.policy_types == ("Ingress",)
    assert policy.ingress[0].ports == (k8s.PolicyPort("TCP", 80),)
    with_egress = k8s.parse_network_policy(netpol({"podSelector": {}, "egress": [{}]}))
    assert with_egress.policy_types == ("Ingress", "Egress")
    explicit = k8s.parse_network_policy(netpol({"podSelector": {}, "egress": [{}], "policyTypes": ["Egress"]}))
    assert explicit.policy_types == ("Egress",)
    # podSelector omitted is the empty selector: every pod of the namespace
    assert k8s.parse_network_policy(netpol({})).pod_selector.empty


def test_empty_lists_and_null_mean_no_rules() -> None:
    empty: tuple[Any, ...] = (None, [])
    for ingress in empty:
        assert k8s.parse_network_policy(netpol({"podSelector": {}, "ingress": ingress})).ingress == ()
    allow_all = k8s.parse_network_policy(netpol({"podSelector": {}, "ingress": [{}]}))
    assert allow_all.ingress == (k8s.PolicyRule(),)


def test_peers_and_ip_block() -> None:
    policy = k8s.parse_network_policy(
        netpol(
            {
                "podSelector": {"matchLabels": {"pod": "a"}},
                "egress": [
                    {
                        "to": [
                            {"namespaceSelector": {"matchLabels": {"ns": "y"}}, "podSelector": {}},
                            {"ipBlock": {"cidr": "10.244.0.5/4", "except": ["10.244.0.6/32"]}},
                        ]
                    }
                ],
            }
        )
    )
    first, second = policy.egress[0].peers
    assert first.namespace_selector == k8s.LabelSelector((("ns", "y"),)) and first.pod_selector == k8s.LabelSelector()
    assert second.ip_block is not None
    assert second.ip_block.network == ipaddress.ip_network("0.0.0.0/4")  # host bits allowed (legacy CIDR rule)
    assert second.ip_block.contains(ipaddress.ip_address("10.244.0.7"))
    assert not second.ip_block.contains(ipaddress.ip_address("10.244.0.6"))


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (
            {"ingress": [{"ports": [{"port": 80, "endPort": 79}]}]},
            "spec.ingress[0].ports[0].endPort: 79 must be greater",
        ),
        (
            {"ingress": [{"ports": [{"port": "http", "endPort": 90}]}]},
            "endPort: may not be specified when `port` is a name",
        ),
        ({"ingress": [{"ports": [{"endPort": 90}]}]}, "endPort: may not be specified when `port` is not"),
        ({"ingress": [{"ports": [{"port": 0}]}]}, "spec.ingress[0].ports[0].port: 0 is out of range: use an integer"),
        ({"ingress": [{"ports": [{"port": "80"}]}]}, "at least one letter (a number must be written without quotes)"),
        ({"ingress": [{"ports": [{"port": "Serve_80"}]}]}, "only a-z, 0-9 and '-'"),
        ({"ingress": [{"ports": [{"protocol": "tcp"}]}]}, "got 'tcp'; use one of TCP, UDP, SCTP (write TCP)"),
        ({"ingress": [{"ports": [{"protocol": "ICMP"}]}]}, "got 'ICMP'; use one of TCP, UDP, SCTP"),
        ({"ingress": [{"from": [{}]}]}, "spec.ingress[0].from[0]: must specify a peer"),
        (
            {"egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}}]}]},
            "may not specify both ipBlock and another peer",
        ),
        ({"egress": [{"to": [{"ipBlock": {}}]}]}, "spec.egress[0].to[0].ipBlock.cidr: required"),
        ({"egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0"}}]}]}, "is not a valid CIDR"),
        (
            {"egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/16", "except": ["10.1.0.0/24"]}}]}]},
            "except[0]: must be a strict subset of `cidr` (10.0.0.0/16)",
        ),
        (
            {"egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/16", "except": ["10.0.0.0/16"]}}]}]},
            "must be a strict subset",
        ),
        ({"policyTypes": ["Ingress", "Egress", "Ingress"]}, "may not specify more than two policyTypes"),
        ({"policyTypes": ["ingress"]}, "spec.policyTypes[0]: got 'ingress'; use Ingress or Egress"),
        (
            {"podSelector": {"matchExpressions": [{"key": "a", "operator": "In"}]}},
            "spec.podSelector.matchExpressions[0].values: must be non-empty when operator is In",
        ),
        (
            {"podSelector": {"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]}},
            "must be empty when operator is Exists",
        ),
        ({"podSelector": {"matchExpressions": [{"key": "a", "operator": "Equals"}]}}, "use one of In, NotIn, Exists"),
        ({"podSelector": {"matchLabels": {"bad key!": "v"}}}, "label key 'bad key!'"),
        ({"podSelector": {"matchLabels": {"k": "v" * 64}}}, "label value"),
        ({"podSelector": {"matchLabels": {"k": 5}}}, "expected a string value, got the number 5 (quote it)"),
        ({"ingres": []}, "spec.ingres: unknown field; did you mean 'ingress'? spec has: podSelector"),
        ({"ingress": {"from": []}}, "spec.ingress: expected a list, got a mapping"),
    ],
)
def test_validation_problems(spec: dict[str, Any], expected: str) -> None:
    assert any(expected in p for p in problems_of(netpol(spec))), problems_of(netpol(spec))


def test_every_problem_is_reported_at_once() -> None:
    document = netpol(
        {"ingress": [{"ports": [{"port": 0}, {"protocol": "ICMP"}]}], "policyTypes": ["Sideways"]}, name="Bad_Name"
    )
    with pytest.raises(PolicyError) as caught:
        k8s.parse_network_policy(document)
    error = caught.value
    assert len(error.problems) == 4
    assert str(error).startswith("NetworkPolicy x/Bad_Name: 4 problems:")
    assert "metadata.name: must be lower case letters" in str(error)
    assert isinstance(error, ValueError) and isinstance(error, CNIError) and error.code == 7


def test_wrong_kind_and_version() -> None:
    with pytest.raises(PolicyError, match="apiVersion: got the string 'v1'; a NetworkPolicy is apiVersion"):
        k8s.parse_network_policy({"apiVersion": "v1", "kind": "NetworkPolicy", "metadata": {"name": "p"}})
    with pytest.raises(PolicyError, match="expected a NetworkPolicy"):
        k8s.parse_network_policy(["not", "a", "mapping"])
    with pytest.raises(PolicyError, match=r"metadata.name: required"):
        k8s.parse_network_policy({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {}})


def test_label_selector_semantics() -> None:
    selector = k8s.LabelSelector(
        (("app", "web"),),
        (
            k8s.Requirement("tier", "In", ("a", "b")),
            k8s.Requirement("env", "NotIn", ("prod",)),
            k8s.Requirement("team", "Exists"),
            k8s.Requirement("legacy", "DoesNotExist"),
        ),
    )
    assert selector.matches({"app": "web", "tier": "a", "team": "t"})
    assert selector.matches({"app": "web", "tier": "b", "team": "t", "env": "dev"})
    assert not selector.matches({"app": "web", "tier": "c", "team": "t"})  # In needs the value
    assert not selector.matches({"app": "web", "tier": "a", "team": "t", "env": "prod"})
    assert not selector.matches({"app": "web", "tier": "a"})  # Exists
    assert not selector.matches({"app": "web", "tier": "a", "team": "t", "legacy": ""})
    assert not selector.matches({"tier": "a", "team": "t"})  # matchLabels
    assert k8s.LabelSelector().matches({})


def test_namespace_gets_metadata_name_label() -> None:
    namespace = k8s.parse_namespace(
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": "y", "labels": {"ns": "y", "kubernetes.io/metadata.name": "forged"}},
        }
    )
    assert namespace.labels == {"kubernetes.io/metadata.name": "y", "ns": "y"}
    with pytest.raises(PolicyError, match=r"metadata\.name: must be lower case"):
        k8s.parse_namespace({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "Y.z"}})


def test_pod_fields_policy_reads() -> None:
    pod = k8s.parse_pod(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "a", "namespace": "x", "labels": {"pod": "a"}},
            "spec": {
                "nodeName": "node-1",
                "containers": [
                    {"name": "c80", "image": "agnhost", "ports": [{"containerPort": 80, "name": "serve-80-tcp"}]},
                    {"name": "c81", "ports": [{"containerPort": 81, "name": "serve-81-udp", "protocol": "UDP"}]},
                ],
                "initContainers": [{"name": "init", "ports": [{"containerPort": 9000}]}],
            },
            "status": {"podIP": "10.244.0.2", "podIPs": [{"ip": "10.244.0.2"}, {"ip": "fd00::2"}]},
        }
    )
    assert (pod.namespace, pod.name, pod.labels, pod.node_name) == ("x", "a", {"pod": "a"}, "node-1")
    assert pod.service_account == "default"  # admission sets it when unset
    assert pod.ips == (ipaddress.ip_address("10.244.0.2"), ipaddress.ip_address("fd00::2"))
    assert pod.ports == (
        k8s.ContainerPort("serve-80-tcp", 80, "TCP"),
        k8s.ContainerPort("serve-81-udp", 81, "UDP"),
        k8s.ContainerPort("", 9000, "TCP"),
    )


def test_pod_problems() -> None:
    with pytest.raises(PolicyError) as caught:
        k8s.parse_pod(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "a"},
                "spec": {
                    "containers": [
                        {"ports": [{"containerPort": 80, "name": "web"}, {"containerPort": 81, "name": "web"}]},
                        {"ports": [{"name": "x"}, {"containerPort": 70000}, {"containerPort": 82, "protocol": "ICMP"}]},
                    ]
                },
                "status": {"podIP": "10.0.0.300"},
            }
        )
    text = str(caught.value)
    assert text.startswith("Pod default/a: 5 problems")
    for part in (
        "spec.containers[0].ports[1].name: 'web' is already used at spec.containers[0].ports[0]",
        "spec.containers[1].ports[0].containerPort: required",
        "spec.containers[1].ports[1].containerPort: 70000 is out of range",
        "spec.containers[1].ports[2].protocol: got 'ICMP'",
        "status.podIP: '10.0.0.300' is not an IP address",
    ):
        assert part in text
