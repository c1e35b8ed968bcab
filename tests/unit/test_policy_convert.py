"""Kubernetes NetworkPolicy -> Calico NetworkPolicy, and Calico policy -> the selectors Felix enforces.

Golden cases are the expectations of Calico's own tests, so pycni converts as
Calico does:

* ``libcalico-go/lib/backend/k8s/conversion/conversion_test.go`` (v3.31.0):
  names, order 1000, selectors, one rule per (protocol, peer), ports merged
  (``SimplifyPorts`` table), ipBlock except as notNets, empty ports and peers,
  endPort ranges, named ports, the namespace profile;
* ``libcalico-go/lib/backend/syncersv1/updateprocessors/rules_test.go``,
  ``networkpolicyprocessor_test.go`` and ``globalnetworkpolicyprocessor_test.go``:
  the selector strings rule sides and policies are compiled to.
"""

from __future__ import annotations

import ipaddress

import pytest

from pycni.policy import k8s
from pycni.policy.calico_model import CalicoPolicy
from pycni.policy.compile import compile_policy, entity_selector_text, policy_selector_text
from pycni.policy.convert import namespace_to_profile, network_policy_to_calico, simplify_ports
from pycni.policy.errors import Problems
from pycni.policy.rules import EntityRule, Port, Protocol, Rule, ServiceAccountMatch, parse_port


def _policy(spec: dict[str, object], name: str = "test.policy", namespace: str = "default") -> CalicoPolicy:
    document = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }
    return network_policy_to_calico(k8s.parse_network_policy(document))


LABEL_VALUE = {"matchLabels": {"label": "value", "label2": "value2"}}
TCP = Protocol("TCP")
UDP = Protocol("UDP")


def test_basic_policy_named_and_numbered_ports() -> None:
    # conversion_test.go "should parse a basic k8s NetworkPolicy to a NetworkPolicy"
    policy = _policy(
        {
            "podSelector": LABEL_VALUE,
            "ingress": [
                {
                    "ports": [{"port": 80}, {"port": "foo"}],
                    "from": [{"podSelector": {"matchLabels": {"k": "v", "k2": "v2"}}}],
                }
            ],
            "policyTypes": ["Ingress"],
        }
    )
    assert policy.name == "knp.default.test.policy"
    assert policy.namespace == "default"
    assert policy.order == 1000
    assert policy.tier == "default"
    assert policy.selector == "projectcalico.org/orchestrator == 'k8s' && label == 'value' && label2 == 'value2'"
    assert policy.ingress == (
        Rule(
            "Allow",
            protocol=TCP,  # defaulted to TCP
            source=EntityRule(selector="projectcalico.org/orchestrator == 'k8s' && k == 'v' && k2 == 'v2'"),
            destination=EntityRule(ports=(Port.single(80), Port(name="foo"))),
        ),
    )
    assert policy.types == ("Ingress",)
    assert policy.egress == ()


def test_no_ports_means_no_protocol() -> None:
    # "should parse a k8s NetworkPolicy with no ports": protocol nil, destination empty
    policy = _policy(
        {"podSelector": LABEL_VALUE, "ingress": [{"from": [{"podSelector": {"matchLabels": {"k": "v"}}}]}]}
    )
    assert policy.ingress == (
        Rule("Allow", source=EntityRule(selector="projectcalico.org/orchestrator == 'k8s' && k == 'v'")),
    )
    assert policy.ingress[0].to_dict() == {
        "action": "Allow",
        "source": {"selector": "projectcalico.org/orchestrator == 'k8s' && k == 'v'"},
        "destination": {},
    }


def test_blank_port_allows_every_tcp_port() -> None:
    # "should parse a k8s NetworkPolicy with blank ports": {} makes the protocol's port list nil
    policy = _policy(
        {"podSelector": LABEL_VALUE, "ingress": [{"ports": [{"port": 80}, {}], "from": [{"podSelector": {}}]}]}
    )
    assert policy.ingress == (
        Rule("Allow", protocol=TCP, source=EntityRule(selector="projectcalico.org/orchestrator == 'k8s'")),
    )


def test_egress_blank_ports_and_udp_rule() -> None:
    # "should parse a k8s egress NetworkPolicy with blank ports"
    policy = _policy(
        {
            "podSelector": LABEL_VALUE,
            "egress": [
                {"ports": [{}, {"port": 80}], "to": [{"podSelector": {"matchLabels": {"k": "v", "k2": "v2"}}}]},
                {"ports": [{"port": 53, "protocol": "UDP"}]},
            ],
            "policyTypes": ["Egress"],
        }
    )
    assert policy.egress == (
        Rule(
            "Allow",
            protocol=TCP,
            destination=EntityRule(selector="projectcalico.org/orchestrator == 'k8s' && k == 'v' && k2 == 'v2'"),
        ),
        Rule("Allow", protocol=UDP, destination=EntityRule(ports=(Port.single(53),))),
    )
    assert policy.types == ("Egress",)


def test_no_rules_and_default_deny_egress() -> None:
    # "should parse a NetworkPolicy with no rules" / "should parse a default-deny egress NetworkPolicy"
    assert _policy({"podSelector": LABEL_VALUE}).types == ("Ingress",)
    deny = _policy({"podSelector": {}, "policyTypes": ["Egress"]})
    assert (deny.types, deny.ingress, deny.egress, deny.selector) == (
        ("Egress",),
        (),
        (),
        "projectcalico.org/orchestrator == 'k8s'",
    )


def test_multiple_peers_and_ports_one_rule_per_protocol_and_peer() -> None:
    # "should parse a NetworkPolicy with multiple peers and ports": TCP before UDP, peers in order
    policy = _policy(
        {
            "podSelector": {"matchLabels": {"label": "value"}},
            "ingress": [
                {
                    "ports": [{"port": 90, "protocol": "UDP"}, {"port": 80, "protocol": "TCP"}],
                    "from": [
                        {"podSelector": {"matchLabels": {"k": "v"}}},
                        {"podSelector": {"matchLabels": {"k2": "v2"}}},
                    ],
                }
            ],
        }
    )
    got = [(r.protocol, r.source.selector, r.destination.ports) for r in policy.ingress]
    assert got == [
        (TCP, "projectcalico.org/orchestrator == 'k8s' && k == 'v'", (Port.single(80),)),
        (TCP, "projectcalico.org/orchestrator == 'k8s' && k2 == 'v2'", (Port.single(80),)),
        (UDP, "projectcalico.org/orchestrator == 'k8s' && k == 'v'", (Port.single(90),)),
        (UDP, "projectcalico.org/orchestrator == 'k8s' && k2 == 'v2'", (Port.single(90),)),
    ]


@pytest.mark.parametrize(
    ("peer", "selector", "namespace_selector"),
    [
        # "with a namespaceSelector": keys sorted
        (
            {"namespaceSelector": {"matchLabels": {"namespaceRole": "dev", "namespaceFoo": "bar"}}},
            "projectcalico.org/orchestrator == 'k8s'",
            "namespaceFoo == 'bar' && namespaceRole == 'dev'",
        ),
        # "with a nil namespace selector"
        ({"podSelector": {}}, "projectcalico.org/orchestrator == 'k8s'", ""),
        # "with an empty namespaceSelector": all()
        ({"namespaceSelector": {}}, "projectcalico.org/orchestrator == 'k8s'", "all()"),
        # "with pod and namespace selectors"
        (
            {
                "namespaceSelector": {"matchLabels": {"namespaceRole": "dev", "namespaceFoo": "bar"}},
                "podSelector": {"matchLabels": {"podA": "B", "podC": "D"}},
            },
            "projectcalico.org/orchestrator == 'k8s' && podA == 'B' && podC == 'D'",
            "namespaceFoo == 'bar' && namespaceRole == 'dev'",
        ),
        # match expressions, as k8sSelectorToCalico writes them
        (
            {
                "podSelector": {
                    "matchExpressions": [
                        {"key": "k", "operator": "In", "values": ["v1", "v2"]},
                        {"key": "k2", "operator": "NotIn", "values": ["v"]},
                        {"key": "k3", "operator": "Exists"},
                        {"key": "k4", "operator": "DoesNotExist"},
                    ]
                }
            },
            "projectcalico.org/orchestrator == 'k8s' && k in { 'v1', 'v2' } && k2 not in { 'v' } && has(k3)"
            " && ! has(k4)",
            "",
        ),
    ],
)
def test_peer_selectors(peer: dict[str, object], selector: str, namespace_selector: str) -> None:
    policy = _policy({"podSelector": {"matchLabels": {"label": "value"}}, "ingress": [{"from": [peer]}]})
    assert policy.selector == "projectcalico.org/orchestrator == 'k8s' && label == 'value'"
    (rule,) = policy.ingress
    assert (rule.source.selector, rule.source.namespace_selector) == (selector, namespace_selector)


def test_pod_selector_match_expressions() -> None:
    # "should parse a NetworkPolicy with podSelector.MatchExpressions"
    policy = _policy({"podSelector": {"matchExpressions": [{"key": "k", "operator": "In", "values": ["v1", "v2"]}]}})
    assert policy.selector == "projectcalico.org/orchestrator == 'k8s' && k in { 'v1', 'v2' }"
    assert policy.ingress == ()


def test_ports_only_and_port_range() -> None:
    # "with Ports only", "with Port Range only" (32000-32768), and the egress variants
    ingress = _policy({"podSelector": {}, "ingress": [{"ports": [{"protocol": "TCP", "port": 80}]}]})
    assert [(str(r.protocol), [str(p) for p in r.destination.ports]) for r in ingress.ingress] == [("TCP", ["80"])]
    ranged = _policy(
        {"podSelector": {}, "ingress": [{"ports": [{"protocol": "TCP", "port": 32000, "endPort": 32768}]}]}
    )
    assert [str(p) for p in ranged.ingress[0].destination.ports] == ["32000:32768"]
    egress = _policy({"podSelector": {}, "egress": [{"ports": [{"protocol": "TCP", "port": 32000, "endPort": 32768}]}]})
    assert egress.types == ("Ingress", "Egress")  # k8s defaulting adds Egress because egress rules are present
    assert egress.egress[0].to_dict() == {
        "action": "Allow",
        "protocol": "TCP",
        "source": {},
        "destination": {"ports": ["32000:32768"]},
    }


def test_ip_block_with_except_and_ports() -> None:
    # "should parse a NetworkPolicy with an Egress rule with IPBlock and Ports"
    policy = _policy(
        {
            "podSelector": {},
            "egress": [
                {
                    "ports": [{"port": 90, "protocol": "UDP"}, {"port": 80, "protocol": "TCP"}],
                    "to": [
                        {
                            "ipBlock": {
                                "cidr": "192.168.0.0/16",
                                "except": ["192.168.3.0/24", "192.168.4.0/24", "192.168.5.0/24"],
                            }
                        }
                    ],
                }
            ],
            "policyTypes": ["Egress"],
        }
    )
    not_nets = ("192.168.3.0/24", "192.168.4.0/24", "192.168.5.0/24")
    assert policy.egress == (
        Rule(
            "Allow",
            protocol=TCP,
            destination=EntityRule(nets=("192.168.0.0/16",), ports=(Port.single(80),), not_nets=not_nets),
        ),
        Rule(
            "Allow",
            protocol=UDP,
            destination=EntityRule(nets=("192.168.0.0/16",), ports=(Port.single(90),), not_nets=not_nets),
        ),
    )
    assert policy.ingress == ()


def test_ip_block_host_bits_are_masked_and_types_ordered() -> None:
    # "should parse a NetworkPolicy with both an Egress and an Ingress rule": types written Ingress, Egress.
    # Built directly: Calico's converter does not check that except lies inside cidr (the API server does).
    block_in = k8s.IPBlock(
        "192.168.0.0/16",
        ipaddress.ip_network("192.168.0.0/16"),
        (ipaddress.ip_network("192.168.3.0/24"), ipaddress.ip_network("192.168.4.0/24")),
    )
    block_out = k8s.IPBlock(
        "10.10.1.1/16",  # host bits: Calico writes the masked network
        ipaddress.ip_network("10.10.0.0/16"),
        tuple(ipaddress.ip_network(f"192.168.{n}.0/24") for n in (13, 14, 15)),
    )
    policy = network_policy_to_calico(
        k8s.NetworkPolicy(
            "default",
            "test.policy",
            ingress=(k8s.PolicyRule(peers=(k8s.Peer(ip_block=block_in),)),),
            egress=(k8s.PolicyRule(peers=(k8s.Peer(ip_block=block_out),)),),
            policy_types=("Egress", "Ingress"),
        )
    )
    assert policy.types == ("Ingress", "Egress")
    assert policy.egress[0].destination.nets == ("10.10.0.0/16",)
    assert policy.egress[0].destination.not_nets == ("192.168.13.0/24", "192.168.14.0/24", "192.168.15.0/24")
    assert policy.ingress[0].source == EntityRule(
        nets=("192.168.0.0/16",), not_nets=("192.168.3.0/24", "192.168.4.0/24")
    )


def test_no_policy_types_means_ingress_only() -> None:
    # "Test NetworkPolicy conversion (k8s <= 1.7, no policyTypes)": a policy with no types at all is Ingress
    policy = network_policy_to_calico(k8s.NetworkPolicy("default", "p", policy_types=()))
    assert policy.types == ("Ingress",)


def _ports(text: str) -> list[Port]:
    """Ports as the Go table writes them (``0`` allowed: SimplifyPorts takes what it is given)."""
    out = []
    for item in filter(None, text.split(",")):
        low, _, high = item.partition(":")
        out.append(Port(name=item) if not low.isdigit() else Port(int(low), int(high or low)))
    return out


@pytest.mark.parametrize(
    ("given", "simplified"),
    [
        # conversion_test.go DescribeTable "SimplifyPorts"
        ("", ""),
        ("0", "0"),
        ("1", "1"),
        ("65535", "65535"),
        ("0:65535", "0:65535"),
        ("1,2", "1:2"),
        ("2,1", "1:2"),
        ("1,2,4", "1:2,4"),
        ("1,2,3,4,80:81,81:90,9090", "1:4,80:90,9090"),
        ("81:90,4,2,80:81,3,1,9090", "1:4,80:90,9090"),
        ("81:90,4,2,foo,80:81,3,1,9090,http", "foo,http,1:4,80:90,9090"),
        ("foo", "foo"),
    ],
)
def test_simplify_ports(given: str, simplified: str) -> None:
    assert ",".join(str(p) for p in simplify_ports(_ports(given))) == simplified


def test_several_ports_of_a_protocol_are_merged() -> None:
    policy = _policy(
        {"podSelector": {}, "ingress": [{"ports": [{"port": 81}, {"port": 80}, {"port": "serve-80-tcp"}]}]}
    )
    assert [str(p) for p in policy.ingress[0].destination.ports] == ["serve-80-tcp", "80:81"]


def test_namespace_profile() -> None:
    # conversion_test.go "should parse a Namespace to a Profile" / "... with no labels"
    profile = namespace_to_profile(k8s.Namespace("default", {"foo": "bar", "roger": "rabbit"}))
    assert profile.name == "kns.default"
    assert profile.ingress == (Rule("Allow"),) and profile.egress == (Rule("Allow"),)
    assert profile.labels_to_apply == {
        "pcns.foo": "bar",
        "pcns.projectcalico.org/name": "default",
        "pcns.roger": "rabbit",
    }
    assert namespace_to_profile(k8s.Namespace("default")).labels_to_apply == {"pcns.projectcalico.org/name": "default"}
    # via the parser the API server's label comes along
    parsed = k8s.parse_namespace({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x"}})
    assert namespace_to_profile(parsed).labels_to_apply == {
        "pcns.kubernetes.io/metadata.name": "x",
        "pcns.projectcalico.org/name": "x",
    }


# -- compiled selectors (updateprocessors) --------------------------------------


@pytest.mark.parametrize(
    ("entity", "namespace", "expected"),
    [
        # rules_test.go "should parse a basic rule": selector and notSelector in a namespaced policy
        (
            EntityRule(selector="mylabel = value1", not_selector="has(label1)"),
            "namespace2",
            "(projectcalico.org/namespace == 'namespace2') && (mylabel = value1)",
        ),
        (EntityRule(not_selector="has(label2)"), "namespace2", "projectcalico.org/namespace == 'namespace2'"),
        # namespaceSelector only: prefixed with pcns.
        (
            EntityRule(namespace_selector="namespacelabel1 == 'value1'", not_selector="has(label2)"),
            "namespace1",
            'pcns.namespacelabel1 == "value1"',
        ),
        # "with both a selector and namespace selector"
        (
            EntityRule(selector="projectcalico.org/orchestrator == 'k8s'", namespace_selector="key == 'value'"),
            "namespace",
            "(pcns.key == \"value\") && (projectcalico.org/orchestrator == 'k8s')",
        ),
        # "a complex namespace selector"
        (
            EntityRule(namespace_selector="!has(key) || (has(key) && !key in {'value'})"),
            "namespace",
            '(!has(pcns.key) || (has(pcns.key) && !pcns.key in {"value"}))',
        ),
        # service accounts
        (
            EntityRule(service_accounts=ServiceAccountMatch(("sa1", "sa2"), "key == 'value1'")),
            "namespace",
            "(projectcalico.org/namespace == 'namespace') && "
            '((pcsa.key == "value1") && (projectcalico.org/serviceaccount in {"sa1", "sa2"}))',
        ),
        (
            EntityRule(
                namespace_selector="nskey == 'nsvalue'",
                selector="has(label1)",
                service_accounts=ServiceAccountMatch(("sa3",), "key == 'value2'"),
            ),
            "namespace",
            '(pcns.nskey == "nsvalue") && (((pcsa.key == "value2") && '
            '(projectcalico.org/serviceaccount in {"sa3"})) && (has(label1)))',
        ),
        (
            EntityRule(service_accounts=ServiceAccountMatch(("sa1", "sa2"), "key == 'value1'")),
            "",
            '(pcsa.key == "value1") && (projectcalico.org/serviceaccount in {"sa1", "sa2"})',
        ),
        # "validates the namespaceselector with label and all()" / global()
        (
            EntityRule(namespace_selector="namespace == 'red'", selector="has(label1)"),
            "namespace",
            '(pcns.namespace == "red") && (has(label1))',
        ),
        (
            EntityRule(namespace_selector="all()", selector="has(label2)"),
            "namespace",
            "(has(projectcalico.org/namespace)) && (has(label2))",
        ),
        (
            EntityRule(namespace_selector="global()", selector="has(label3)"),
            "namespace",
            "(!has(projectcalico.org/namespace)) && (has(label3))",
        ),
        # global policy, no namespace: selectors pass through, ports alone select nothing
        (EntityRule(selector="has(foo)"), "", "has(foo)"),
        (EntityRule(ports=(Port.single(80),)), "", ""),
    ],
)
def test_entity_selector(entity: EntityRule, namespace: str, expected: str) -> None:
    assert entity_selector_text(entity, namespace) == expected


def _calico(kind: str, selector: str = "mylabel == 'selectme'", **spec: str) -> CalicoPolicy:
    namespace = "namespace2" if kind == "NetworkPolicy" else ""
    return CalicoPolicy(
        kind,
        "p",
        namespace,
        selector=selector,
        service_account_selector=spec.get("sa", ""),
        namespace_selector=spec.get("ns", ""),
    )


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        # networkpolicyprocessor_test.go
        (_calico("NetworkPolicy"), "(mylabel == 'selectme') && projectcalico.org/namespace == 'namespace2'"),
        (
            _calico("NetworkPolicy", sa="role == 'development'"),
            "((mylabel == 'selectme') && projectcalico.org/namespace == 'namespace2') && pcsa.role == \"development\"",
        ),
        (
            _calico("NetworkPolicy", sa="all()"),
            "((mylabel == 'selectme') && projectcalico.org/namespace == 'namespace2') && all()",
        ),
        (_calico("NetworkPolicy", selector=""), "projectcalico.org/namespace == 'namespace2'"),
        # globalnetworkpolicyprocessor_test.go
        (_calico("GlobalNetworkPolicy"), "mylabel == 'selectme'"),
        (
            _calico("GlobalNetworkPolicy", sa="role == 'development'"),
            "(mylabel == 'selectme') && pcsa.role == \"development\"",
        ),
        (
            _calico("GlobalNetworkPolicy", sa="all()"),
            "(mylabel == 'selectme') && has(projectcalico.org/serviceaccount)",
        ),
        (_calico("GlobalNetworkPolicy", ns="name == 'testing'"), "(mylabel == 'selectme') && pcns.name == \"testing\""),
        (_calico("GlobalNetworkPolicy", ns="all()"), "(mylabel == 'selectme') && has(projectcalico.org/namespace)"),
        (
            _calico("GlobalNetworkPolicy", ns="name == 'testing'", sa="role == 'development'"),
            '((mylabel == \'selectme\') && pcns.name == "testing") && pcsa.role == "development"',
        ),
        (_calico("GlobalNetworkPolicy", selector="", sa="role == 'development'"), 'pcsa.role == "development"'),
        (_calico("GlobalNetworkPolicy", selector="", ns="name == 'testing'"), 'pcns.name == "testing"'),
        (
            _calico("GlobalNetworkPolicy", selector="", ns="name == 'testing'", sa="role == 'development'"),
            '(pcns.name == "testing") && pcsa.role == "development"',
        ),
    ],
)
def test_policy_selector(policy: CalicoPolicy, expected: str) -> None:
    assert policy_selector_text(policy) == expected


def test_converted_policy_compiles_to_felix_selectors() -> None:
    # networkpolicyprocessor_test.go: a converted default-deny and an allow from all namespaces
    policy = _policy({"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": {}}]}]})
    assert (
        policy_selector_text(policy)
        == "(projectcalico.org/orchestrator == 'k8s') && projectcalico.org/namespace == 'default'"
    )
    rule = policy.ingress[0]
    assert entity_selector_text(rule.source, "default") == (
        "(has(projectcalico.org/namespace)) && (projectcalico.org/orchestrator == 'k8s')"
    )
    compiled = compile_policy(policy)
    assert compiled.selector.unique_id().startswith("s:")
    assert compiled.inbound[0].protocol is None and compiled.inbound[0].source.selector is not None


def test_parse_port_forms() -> None:
    problems = Problems()
    assert [parse_port(v, "p", problems) for v in (80, "80", "80:90", "http")] == [
        Port.single(80),
        Port.single(80),
        Port(80, 90),
        Port(name="http"),
    ]
    for bad in ("90:80", "0", 70000, "bad name!", True):
        parse_port(bad, "p", problems)
    assert len(problems.items) == 5
