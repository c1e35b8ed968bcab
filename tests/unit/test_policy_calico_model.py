"""Calico's projectcalico.org/v3 policy kinds: field names, defaults, calicoctl's validation, the stored JSON.

Defaults and rules from ``api/pkg/apis/projectcalico/v3`` (field names, Tier
defaultAction), clientv3 ``defaultPolicyTypesField`` and
``libcalico-go/lib/validator/v3/validator.go`` (``validateRule``, names,
GlobalNetworkPolicy flags) with the CRD's CEL rules (ICMP, global(), HTTP).
"""

from __future__ import annotations

from typing import Any

import pytest

from pycni.policy.calico_model import CalicoPolicy, GlobalNetworkSet, Profile, Tier, parse_calico
from pycni.policy.errors import PolicyError
from pycni.policy.rules import ICMP, EntityRule, Port, Protocol, Rule


def doc(kind: str, spec: Any, name: str = "p", namespace: str | None = None, **meta: Any) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, **meta}
    if namespace is not None:
        metadata["namespace"] = namespace
    return {"apiVersion": "projectcalico.org/v3", "kind": kind, "metadata": metadata, "spec": spec}


def problems(document: dict[str, Any]) -> str:
    with pytest.raises(PolicyError) as caught:
        parse_calico(document)
    return str(caught.value)


def test_network_policy_defaults() -> None:
    policy = parse_calico(doc("NetworkPolicy", {"selector": "app == 'web'", "ingress": [{"action": "Allow"}]}))
    assert isinstance(policy, CalicoPolicy)
    assert (policy.namespace, policy.tier, policy.order, policy.types) == ("default", "default", None, ("Ingress",))
    assert policy.key == "default/p"


@pytest.mark.parametrize(
    ("ingress", "egress", "types"),
    [
        ([], [], ("Ingress",)),
        ([{"action": "Allow"}], [], ("Ingress",)),
        ([], [{"action": "Allow"}], ("Egress",)),
        ([{"action": "Allow"}], [{"action": "Deny"}], ("Ingress", "Egress")),
    ],
)
def test_types_default_from_rules(ingress: list[Any], egress: list[Any], types: tuple[str, ...]) -> None:
    # clientv3 defaultPolicyTypesField
    policy = parse_calico(doc("GlobalNetworkPolicy", {"ingress": ingress, "egress": egress}))
    assert isinstance(policy, CalicoPolicy) and policy.types == types


def test_rule_fields_and_json() -> None:
    policy = parse_calico(
        doc(
            "GlobalNetworkPolicy",
            {
                "tier": "security",
                "order": 10,
                "selector": "all()",
                "namespaceSelector": "env == 'prod'",
                "ingress": [
                    {
                        "action": "Allow",
                        "protocol": "TCP",
                        "source": {"nets": ["10.0.0.0/8"], "notNets": ["10.1.0.0/16"], "selector": "role == 'db'"},
                        "destination": {"ports": [80, "8080:8090", "http"], "notPorts": [8085]},
                    },
                    {"action": "Deny", "protocol": "ICMP", "icmp": {"type": 8, "code": 0}, "ipVersion": 4},
                    {"action": "Log", "notProtocol": 17, "notICMP": None},
                    {"action": "Pass", "source": {"namespaceSelector": "global()"}},
                ],
            },
            name="security.allow-web",
        )
    )
    assert isinstance(policy, CalicoPolicy)
    first, second, third, fourth = policy.ingress
    assert first == Rule(
        "Allow",
        protocol=Protocol("TCP"),
        source=EntityRule(nets=("10.0.0.0/8",), selector="role == 'db'", not_nets=("10.1.0.0/16",)),
        destination=EntityRule(
            ports=(Port.single(80), Port(8080, 8090), Port(name="http")), not_ports=(Port.single(8085),)
        ),
    )
    assert second.icmp == ICMP(8, 0) and second.ip_version == 4
    assert third.not_protocol == Protocol(17)
    assert fourth.source.namespace_selector == "global()"
    assert policy.to_dict() == {
        "kind": "GlobalNetworkPolicy",
        "apiVersion": "projectcalico.org/v3",
        "metadata": {"name": "security.allow-web"},
        "spec": {
            "tier": "security",
            "order": 10.0,
            "ingress": [
                {
                    "action": "Allow",
                    "protocol": "TCP",
                    "source": {"nets": ["10.0.0.0/8"], "selector": "role == 'db'", "notNets": ["10.1.0.0/16"]},
                    "destination": {"ports": [80, "8080:8090", "http"], "notPorts": [8085]},
                },
                {
                    "action": "Deny",
                    "ipVersion": 4,
                    "protocol": "ICMP",
                    "icmp": {"type": 8, "code": 0},
                    "source": {},
                    "destination": {},
                },
                {"action": "Log", "notProtocol": 17, "source": {}, "destination": {}},
                {"action": "Pass", "source": {"namespaceSelector": "global()"}, "destination": {}},
            ],
            "selector": "all()",
            "types": ["Ingress"],
            "namespaceSelector": "env == 'prod'",
        },
    }


def test_field_names_fold_case_as_encoding_json_does() -> None:
    policy = parse_calico(doc("NetworkPolicy", {"Ingress": [{"Action": "Allow", "Protocol": "UDP"}]}, namespace="x"))
    assert isinstance(policy, CalicoPolicy) and policy.ingress == (Rule("Allow", protocol=Protocol("UDP")),)


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ({}, "spec.ingress[0].action: required: use one of Allow, Deny, Log, Pass"),
        ({"action": "allow"}, "got 'allow'; use one of Allow"),
        ({"action": "Allow", "protocol": "tcp"}, "protocol name 'tcp' is invalid: write 'TCP'"),
        ({"action": "Allow", "protocol": 0}, "protocol number 0 is invalid"),
        (
            {"action": "Allow", "destination": {"ports": [80]}},
            "destination.ports: rules with numeric port or port range must set protocol to TCP or UDP or SCTP",
        ),
        (
            {"action": "Allow", "protocol": "ICMP", "destination": {"ports": [80]}},
            "rules that specify ports must set protocol to TCP or UDP or SCTP",
        ),
        (
            {"action": "Allow", "protocol": "TCP", "destination": {"ports": ["90:80"]}},
            "minimum port number (90) is greater than maximum port number (80)",
        ),
        (
            {"action": "Allow", "protocol": "TCP", "destination": {"ports": [0]}},
            "port numbers must be between 1 and 65535",
        ),
        ({"action": "Allow", "icmp": {"type": 8}}, "spec.ingress[0].icmp: ICMP fields require protocol"),
        ({"action": "Allow", "protocol": "ICMP", "icmp": {"code": 1}}, "ICMP code specified without an ICMP type"),
        ({"action": "Allow", "protocol": "ICMP", "icmp": {"type": 255}}, "icmp.type: 255 is out of range"),
        ({"action": "Allow", "protocol": "ICMP", "ipVersion": 6}, "protocol ICMP requires ipVersion 4"),
        ({"action": "Allow", "ipVersion": 5}, "5 is not an IP version"),
        ({"action": "Allow", "source": {"nets": ["10.0.0.1/8"]}}, "'10.0.0.1/8' has host bits set: write 10.0.0.0/8"),
        ({"action": "Allow", "source": {"nets": ["10.0.0.1"]}}, "needs a prefix length: write 10.0.0.1/32"),
        (
            {"action": "Allow", "source": {"nets": ["10.0.0.0/8"]}, "destination": {"nets": ["fd00::/64"]}},
            "rule contains both IPv4 and IPv6 CIDRs",
        ),
        ({"action": "Allow", "ipVersion": 6, "source": {"nets": ["10.0.0.0/8"]}}, "rule IP version doesn't match"),
        ({"action": "Allow", "source": {"notNets": ["0.0.0.0/0"]}}, "a catch-all CIDR in notNets matches no traffic"),
        (
            {"action": "Allow", "source": {"selector": "global()"}},
            "global() can only be used in an EntityRule namespaceSelector",
        ),
        (
            {"action": "Allow", "source": {"namespaceSelector": "global() && a == 'b'"}},
            "global() cannot be combined with other selectors",
        ),
        ({"action": "Allow", "source": {"selector": "a == "}}, "invalid selector 'a == '"),
        ({"action": "Allow", "destination": {"services": {"name": "kube-dns"}}}, "not supported by pycni"),
        ({"action": "Deny", "http": {"methods": ["GET"]}}, "HTTP match is only valid on Allow rules"),
        ({"action": "Allow", "protocol": "UDP", "http": {"methods": ["GET"]}}, "must have protocol TCP or unset"),
        ({"action": "Allow", "source": {"sellector": "a == 'b'"}}, "did you mean 'selector'?"),
    ],
)
def test_rule_problems(rule: dict[str, Any], expected: str) -> None:
    text = problems(doc("NetworkPolicy", {"ingress": [rule]}, namespace="x"))
    assert expected in text, text


def test_named_ports_need_no_protocol() -> None:
    policy = parse_calico(doc("NetworkPolicy", {"ingress": [{"action": "Allow", "destination": {"ports": ["http"]}}]}))
    assert isinstance(policy, CalicoPolicy) and policy.ingress[0].destination.ports == (Port(name="http"),)


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        (doc("NetworkPolicy", {}, name="Bad"), "metadata.name: must be lower case letters"),
        (doc("NetworkPolicy", {}, name="a.b.c"), "metadata.name: must be lower case letters"),
        (doc("NetworkPolicy", {"types": ["Ingress", "Ingress"]}), "'Ingress' type specified more than once"),
        (doc("NetworkPolicy", {"types": ["ingress"]}), "spec.types[0]: got 'ingress'"),
        (doc("NetworkPolicy", {"selector": "global()"}), "global() can only be used"),
        (doc("NetworkPolicy", {"doNotTrack": True}), "spec.doNotTrack: unknown field"),
        (doc("GlobalNetworkPolicy", {}, namespace="x"), "namespace should not be specified"),
        (doc("GlobalNetworkPolicy", {"doNotTrack": True}), "spec.applyOnForward: must be true when doNotTrack"),
        (
            doc("GlobalNetworkPolicy", {"doNotTrack": True, "preDNAT": True, "applyOnForward": True}),
            "PreDNAT and DoNotTrack cannot both be true",
        ),
        (
            doc("GlobalNetworkPolicy", {"preDNAT": True, "applyOnForward": True, "egress": [{"action": "Allow"}]}),
            "PreDNAT policy cannot have any egress rules",
        ),
        (
            doc("GlobalNetworkPolicy", {"egress": [{"action": "Allow", "http": {"methods": ["GET"]}}]}),
            "spec.egress[0].http: not allowed in egress rules",
        ),
        (doc("GlobalNetworkPolicy", {"performanceHints": ["Fast"]}), "the only hint is AssumeNeededOnEveryNode"),
        (doc("GlobalNetworkPolicy", {"order": "first"}), "spec.order: expected a number"),
        (doc("Tier", {"defaultAction": "Allow"}), "got 'Allow'; use Deny or Pass"),
        (doc("Tier", {"defaultAction": "Pass"}, name="default"), "The 'default' tier must have default action 'Deny'"),
        (doc("Tier", {}, name="a.b"), "metadata.name: must be lower case letters, digits and '-'"),
        (doc("GlobalNetworkSet", {"nets": ["10.0.0.0/33"]}), "'10.0.0.0/33' is not a CIDR or IP address"),
        (
            doc("GlobalNetworkSet", {}, labels={"projectcalico.org/namespace": "x"}),
            "projectcalico.org/namespace is not",
        ),
        (doc("Profile", {"labelsToApply": {"a": "b c"}}), "label value 'b c'"),
        (doc("HostEndpoint", {}), "kind: got the string 'HostEndpoint'; expected NetworkPolicy"),
        ({"apiVersion": "projectcalico.org/v2", "kind": "Tier", "metadata": {"name": "t"}}, "a Tier is apiVersion"),
    ],
)
def test_resource_problems(document: dict[str, Any], expected: str) -> None:
    text = problems(document)
    assert expected in text, text


def test_tier_network_set_profile() -> None:
    tier = parse_calico(doc("Tier", {"order": 100}, name="security"))
    assert tier == Tier("security", 100.0, "Deny")
    assert tier.to_dict()["spec"] == {"order": 100.0, "defaultAction": "Deny"}
    assert parse_calico(doc("Tier", {"defaultAction": "Pass"}, name="kube-admin")) == Tier("kube-admin", None, "Pass")
    network_set = parse_calico(
        doc("GlobalNetworkSet", {"nets": ["198.51.100.0/28", "198.51.100.77"]}, labels={"z": "1"})
    )
    assert isinstance(network_set, GlobalNetworkSet)
    assert [str(n) for n in network_set.networks] == ["198.51.100.0/28", "198.51.100.77/32"]
    profile = parse_calico(doc("Profile", {"ingress": [{"action": "Allow"}], "labelsToApply": {"b": "2", "a": "1"}}))
    assert isinstance(profile, Profile)
    assert profile.to_dict()["spec"] == {
        "ingress": [{"action": "Allow", "source": {}, "destination": {}}],
        "labelsToApply": {"a": "1", "b": "2"},
    }
