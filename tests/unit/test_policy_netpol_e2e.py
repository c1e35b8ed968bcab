"""The Kubernetes netpol e2e suite's scenarios, judged by pycni's evaluator.

Each test mirrors one ``f.It`` of kubernetes ``test/e2e/network/netpol/network_policy.go``
(@ 9db638c0; numbered as in ``reference/calico.md`` §5.2): the same policies,
built as upstream's helpers build them (``SetSpecIngressRules`` adds
``Ingress`` to policyTypes, ``SetSpecEgressRules`` adds ``Egress``), on the
same model (namespaces x, y, z; pods a, b, c labelled ``pod: <name>``; every
pod serving ports 80 and 81 over TCP and UDP on ports named
``serve-<port>-<proto>``; here over two nodes), and the expected reachability
written out exactly as upstream writes it (``ExpectPeer``, ``ExpectAllIngress``,
``ExpectAllEgress``, ``Expect``). Loopback is ignored as upstream ignores it.
A failure prints the expected, observed and comparison tables side by side.
"""

from __future__ import annotations

from typing import Any

import pytest

from pycni.policy.cluster import ClusterState, PolicyObject
from pycni.policy.k8s_semantics import PodView, Reference
from pycni.policy.matrix import NetpolModel, Peer, Reachability, evaluator_probe

MODEL = NetpolModel()
SCTP_MODEL = NetpolModel(protocols=("SCTP",))
X, Y, Z = "x", "y", "z"
NS_KEY = "kubernetes.io/metadata.name"  # upstream's namespaceLabelKey (and v1.LabelMetadataName)


def cluster(model: NetpolModel = MODEL) -> ClusterState:
    state = ClusterState()
    objects: list[PolicyObject] = [*model.namespace_objects(), *model.pod_objects(), *model.hosts()]
    for item in objects:
        state.apply(item)
    return state


@pytest.fixture
def state() -> ClusterState:
    return cluster()


def policy(
    name: str,
    *,
    labels: dict[str, str] | None = None,
    selector: dict[str, Any] | None = None,
    ingress: list[dict[str, Any]] | None = None,
    egress: list[dict[str, Any]] | None = None,
    types: list[str] | None = None,
    namespace: str = X,
) -> dict[str, Any]:
    """GenNetworkPolicyWithNameAndPodMatchLabel / ...PodSelector with SetSpecIngressRules / SetSpecEgressRules."""
    spec: dict[str, Any] = {"podSelector": selector if selector is not None else {"matchLabels": labels or {}}}
    policy_types = []
    if ingress is not None:
        spec["ingress"] = ingress
        policy_types.append("Ingress")
    if egress is not None:
        spec["egress"] = egress
        policy_types.append("Egress")
    if types is not None:
        policy_types = types
    if policy_types:
        spec["policyTypes"] = policy_types
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def reachability(model: NetpolModel = MODEL) -> Reachability:
    return Reachability(model.pod_strings(), True)


def validate(
    state: ClusterState, expected: Reachability, port: int, protocol: str = "TCP", model: NetpolModel = MODEL
) -> None:
    """ValidateOrFail: probe every pair; every non-loopback cell must be as expected.

    The API-reference reading of the same policies (:mod:`pycni.policy.k8s_semantics`)
    must agree with upstream's expectations too, so the two opinions check each other.
    """
    connected = evaluator_probe(model, state.evaluator(), port, protocol)
    for source in model.pod_strings():
        for target in model.pod_strings():
            expected.observe(source, target, connected(source, target))
    _, wrong, _, _ = expected.summary(ignore_loopback=True)
    assert wrong == 0, f"{port}/{protocol}: {wrong} wrong results in the reachability matrix\n{expected.report()}"
    views = [
        PodView(e.namespace, e.pod, e.labels, e.ips[0], model.pod_object(e.key).ports) for e in state.endpoints.values()
    ]
    reference = Reference(state.k8s_policies.values(), state.namespaces.values(), views)
    for source in model.pod_strings():
        for target in model.pod_strings():
            if source != target:
                allowed = reference.allowed(model.ip_of(source), model.ip_of(target), protocol, port)
                assert allowed == expected.expected.get(source, target), ("reference", source, target)


def pods(**labels: str) -> dict[str, Any]:
    return {"podSelector": {"matchLabels": labels}}


def namespaces(**labels: str) -> dict[str, Any]:
    return {"namespaceSelector": {"matchLabels": labels}}


# -- "NetworkPolicy between server and client" ----------------------------------------------


def test_01_default_deny_ingress(state: ClusterState) -> None:
    state.apply(policy("deny-ingress", selector={}, ingress=[]))
    r = reachability()
    r.expect_peer(Peer(), Peer(X), False)
    validate(state, r, 80)


def test_02_default_deny_all(state: ClusterState) -> None:
    state.apply(policy("deny-all", selector={}, ingress=[], egress=[]))
    r = reachability()
    r.expect_peer(Peer(), Peer(X), False)
    r.expect_peer(Peer(X), Peer(), False)
    validate(state, r, 80)


def test_03_allow_from_pod_within_namespace(state: ClusterState) -> None:
    state.apply(policy("x-a-allows-x-b", labels={"pod": "a"}, ingress=[{"from": [pods(pod="b")]}]))
    r = reachability()
    r.expect_all_ingress("x/a", False)
    r.expect("x/b", "x/a", True)
    validate(state, r, 80)


def test_04_allow_ingress_for_a_target(state: ClusterState) -> None:
    state.apply(policy("deny-all", selector={}, ingress=[]))
    peer: dict[str, Any] = {"podSelector": {}, "namespaceSelector": {}}
    state.apply(policy("allow-all-to-a", labels={"pod": "a"}, ingress=[{"from": [peer]}]))
    r = reachability()
    r.expect_all_ingress("x/a", True)
    r.expect_all_ingress("x/b", False)
    r.expect_all_ingress("x/c", False)
    validate(state, r, 80)


def test_05_allow_ingress_from_all_namespaces(state: ClusterState) -> None:
    state.apply(policy("allow-from-another-ns", labels={"pod": "a"}, ingress=[{"from": [namespaces()]}]))
    validate(state, reachability(), 80)


def test_06_allow_only_from_another_namespace(state: ClusterState) -> None:
    rule = {"from": [namespaces(**{NS_KEY: Y})]}
    state.apply(policy("allow-client-a-via-ns-selector", labels={"pod": "a"}, ingress=[rule]))
    r = reachability()
    r.expect_peer(Peer(X), Peer(X, "a"), False)
    r.expect_peer(Peer(Z), Peer(X, "a"), False)
    validate(state, r, 80)


def test_07_pod_selector_match_expressions(state: ClusterState) -> None:
    peer = {"podSelector": {"matchExpressions": [{"key": "pod", "operator": "In", "values": ["b"]}]}}
    state.apply(policy("x-a-allows-x-b", labels={"pod": "a"}, ingress=[{"from": [peer]}]))
    r = reachability()
    r.expect_all_ingress("x/a", False)
    r.expect("x/b", "x/a", True)
    validate(state, r, 80)


def test_08_namespace_selector_match_expressions(state: ClusterState) -> None:
    peer = {"namespaceSelector": {"matchExpressions": [{"key": NS_KEY, "operator": "In", "values": [Y]}]}}
    state.apply(policy("allow-ns-y-match-selector", labels={"pod": "a"}, ingress=[{"from": [peer]}]))
    r = reachability()
    r.expect_peer(Peer(X), Peer(X, "a"), False)
    r.expect_peer(Peer(Z), Peer(X, "a"), False)
    validate(state, r, 80)


NOT_IN_X = {"namespaceSelector": {"matchExpressions": [{"key": NS_KEY, "operator": "NotIn", "values": [X]}]}}


def test_09_pod_selector_or_namespace_selector(state: ClusterState) -> None:
    state.apply(policy("allow-ns-y-match-selector", labels={"pod": "a"}, ingress=[{"from": [NOT_IN_X, pods(pod="b")]}]))
    r = reachability()
    r.expect("x/a", "x/a", False)
    r.expect("x/c", "x/a", False)
    validate(state, r, 80)


def test_10_pod_selector_and_namespace_selector(state: ClusterState) -> None:
    peer = {**NOT_IN_X, **pods(pod="b")}
    state.apply(policy("allow-ns-y-podselector-and-nsselector", labels={"pod": "a"}, ingress=[{"from": [peer]}]))
    r = reachability()
    r.expect_all_ingress("x/a", False)
    r.expect("y/b", "x/a", True)
    r.expect("z/b", "x/a", True)
    validate(state, r, 80)


def test_11_multiple_pod_selectors_and_namespace_selectors(state: ClusterState) -> None:
    peer = {**NOT_IN_X, "podSelector": {"matchExpressions": [{"key": "pod", "operator": "In", "values": ["b", "c"]}]}}
    state.apply(policy("allow-ns-y-z-pod-b-c", labels={"pod": "a"}, ingress=[{"from": [peer]}]))
    r = reachability()
    r.expect_peer(Peer(X), Peer(X, "a"), False)
    r.expect("y/a", "x/a", False)
    r.expect("z/a", "x/a", False)
    validate(state, r, 80)


def test_12_any_pod_selectors(state: ClusterState) -> None:
    state.apply(policy("allow-ns-x-pod-b-c", labels={"pod": "a"}, ingress=[{"from": [pods(pod="b"), pods(pod="c")]}]))
    r = reachability()
    r.expect_all_ingress("x/a", False)
    r.expect("x/b", "x/a", True)
    r.expect("x/c", "x/a", True)
    validate(state, r, 80)


def _pod_a_in_y(state: ClusterState, port: int, protocol: str, model: NetpolModel = MODEL) -> None:
    peer = {**namespaces(**{NS_KEY: Y}), **pods(pod="a")}
    state.apply(policy("allow-ns-y-pod-a-via-namespace-pod-selector", labels={"pod": "a"}, ingress=[{"from": [peer]}]))
    r = reachability(model)
    r.expect_all_ingress("x/a", False)
    r.expect("y/a", "x/a", True)
    validate(state, r, port, protocol, model)


def test_13_only_from_a_pod_in_another_namespace(state: ClusterState) -> None:
    _pod_a_in_y(state, 80, "TCP")


def _port_81_from_y(protocol: str) -> dict[str, Any]:
    return {"from": [namespaces(**{NS_KEY: Y})], "ports": [{"port": 81, "protocol": protocol}]}


def test_14_ports(state: ClusterState) -> None:
    state.apply(policy("allow-client-a-via-ns-selector", labels={"pod": "a"}, ingress=[_port_81_from_y("TCP")]))
    r = reachability()
    r.expect_peer(Peer(X), Peer(X, "a"), False)
    r.expect_peer(Peer(Y), Peer(X, "a"), True)
    r.expect_peer(Peer(Z), Peer(X, "a"), False)
    validate(state, r, 81)


def test_15_multiple_stacked_policies_with_overlapping_pod_selectors(state: ClusterState) -> None:
    state.apply(policy("allow-client-a-via-ns-selector", labels={"pod": "a"}, ingress=[_port_81_from_y("TCP")]))
    allow = reachability()
    allow.expect_peer(Peer(X), Peer(X, "a"), False)
    allow.expect_peer(Peer(Y), Peer(X, "a"), True)
    allow.expect_peer(Peer(Z), Peer(X, "a"), False)
    validate(state, allow, 81)
    deny = reachability()
    deny.expect_all_ingress("x/a", False)
    validate(state, deny, 80)
    rule = {"from": [namespaces(**{NS_KEY: Y})], "ports": [{"port": 80, "protocol": "TCP"}]}
    state.apply(policy("allow-client-a-via-ns-selector-80", labels={"pod": "a"}, ingress=[rule]))
    validate(state, allow, 80)


def test_16_allow_all(state: ClusterState) -> None:
    state.apply(policy("allow-all", labels={}, ingress=[{}]))
    validate(state, reachability(), 80)
    validate(state, reachability(), 81)


def test_17_ingress_on_one_named_port(state: ClusterState) -> None:
    state.apply(policy("allow-all", labels={}, ingress=[{"ports": [{"port": "serve-81-tcp"}]}]))
    validate(state, reachability(), 81)
    r = reachability()
    r.expect_peer(Peer(), Peer(X), False)
    validate(state, r, 80)


def test_18_ingress_from_namespace_on_one_named_port(state: ClusterState) -> None:
    rule = {"from": [namespaces(**{NS_KEY: Y})], "ports": [{"port": "serve-80-tcp", "protocol": "TCP"}]}
    state.apply(policy("allow-client-a-via-ns-selector-80", labels={"pod": "a"}, ingress=[rule]))
    r = reachability()
    r.expect_peer(Peer(X), Peer(X, "a"), False)
    r.expect_peer(Peer(Z), Peer(X, "a"), False)
    validate(state, r, 80)
    fail = reachability()
    fail.expect_all_ingress("x/a", False)
    validate(state, fail, 81)


def test_19_egress_on_one_named_port(state: ClusterState) -> None:
    state.apply(policy("allow-egress", labels={}, egress=[{"ports": [{"port": "serve-80-tcp"}]}]))
    validate(state, reachability(), 80)
    r = reachability()
    r.expect_peer(Peer(X), Peer(), False)
    validate(state, r, 81)


def test_20_updated_policy(state: ClusterState) -> None:
    document = policy("allow-all-mutate-to-deny-all", labels={}, ingress=[{}])
    state.apply(document)
    validate(state, reachability(), 81)
    document["spec"]["ingress"] = []
    state.apply(document)  # UpdatePolicy: same name, replaced
    r = reachability()
    r.expect_peer(Peer(), Peer(X), False)
    validate(state, r, 81)


def test_21_ingress_from_updated_namespace(state: ClusterState) -> None:
    state.apply(
        policy("allow-client-a-via-ns-selector", labels={"pod": "a"}, ingress=[{"from": [namespaces(ns2="updated")]}])
    )
    r = reachability()
    r.expect_all_ingress("x/a", False)
    validate(state, r, 80)
    state.set_namespace_labels(Y, {"ns": Y, "ns2": "updated"})  # AddNamespaceLabel
    with_label = reachability()
    with_label.expect_all_ingress("x/a", False)
    with_label.expect_peer(Peer(Y), Peer(), True)
    validate(state, with_label, 80)


def test_22_ingress_from_updated_pod(state: ClusterState) -> None:
    state.apply(
        policy(
            "allow-client-a-via-pod-selector", labels={"pod": "a"}, ingress=[{"from": [pods(pod="b", pod2="updated")]}]
        )
    )
    r = reachability()
    r.expect_all_ingress("x/a", False)
    validate(state, r, 80)
    state.set_pod_labels("x/b", {"pod": "b", "pod2": "updated"})  # AddPodLabels
    with_label = reachability()
    with_label.expect_all_ingress("x/a", False)
    with_label.expect("x/b", "x/a", True)
    validate(state, with_label, 80)


def test_23_deny_ingress_from_pods_in_other_namespaces(state: ClusterState) -> None:
    state.apply(policy("deny-empty-policy", selector={}, ingress=[{"from": [{"podSelector": {"matchLabels": {}}}]}]))
    r = reachability()
    r.expect_peer(Peer(Y), Peer(X), False)
    r.expect_peer(Peer(Z), Peer(X), False)
    validate(state, r, 80)


def test_24_deny_ingress_to_updated_pod(state: ClusterState) -> None:
    state.apply(policy("deny-ingress-via-label-selector", selector={"matchLabels": {"target": "isolated"}}, ingress=[]))
    validate(state, reachability(), 80)
    state.set_pod_labels("x/a", {"pod": "a", "target": "isolated"})
    isolated = reachability()
    isolated.expect_all_ingress("x/a", False)
    validate(state, isolated, 80)


def test_25_deny_egress_by_pod_selector(state: ClusterState) -> None:
    state.apply(policy("deny-egress-pod-a", selector={"matchLabels": {"pod": "a"}}, egress=[]))
    r = reachability()
    r.expect_all_egress("x/a", False)
    validate(state, r, 80)


def test_26_deny_egress_from_all_pods_in_a_namespace(state: ClusterState) -> None:
    state.apply(policy("deny-egress-ns-x", selector={}, egress=[]))
    r = reachability()
    r.expect_peer(Peer(X), Peer(), False)
    validate(state, r, 80)


def test_27_ingress_and_egress_specified_together(state: ClusterState) -> None:
    document = policy("allow-client-a-via-pod-selector", labels={"pod": "a"}, ingress=[{"from": [pods(pod="b")]}])
    document["spec"]["egress"] = [{"ports": [{"port": 80}]}]
    document["spec"]["policyTypes"] = ["Egress", "Ingress"]
    state.apply(document)
    port80 = reachability()
    port80.expect_all_ingress("x/a", False)
    port80.expect("x/b", "x/a", True)
    validate(state, port80, 80)
    port81 = reachability()
    port81.expect_all_ingress("x/a", False)
    port81.expect_all_egress("x/a", False)
    port81.expect("x/b", "x/a", True)
    validate(state, port81, 81)


def test_28_deny_egress_on_the_client_side_even_if_the_server_allows(state: ClusterState) -> None:
    to_y_a = {**namespaces(**{NS_KEY: Y}), **pods(pod="a")}
    state.apply(policy("allow-to-ns-y-pod-a", labels={"pod": "a"}, egress=[{"to": [to_y_a]}]))
    from_x_a = {"from": [{**namespaces(**{NS_KEY: X}), **pods(pod="a")}]}
    state.apply(policy("allow-from-xa-on-ya-match-selector", labels={"pod": "a"}, ingress=[from_x_a], namespace=Y))
    state.apply(policy("allow-from-xa-on-yb-match-selector", labels={"pod": "b"}, ingress=[from_x_a], namespace=Y))
    r = reachability()
    r.expect_peer(Peer(X, "a"), Peer(), False)
    r.expect_peer(Peer(), Peer(Y, "a"), False)
    r.expect_peer(Peer(X, "a"), Peer(Y, "a"), True)
    r.expect_peer(Peer(), Peer(Y, "b"), False)
    validate(state, r, 80)


def test_29_egress_to_a_server_in_another_namespace_by_pod_and_namespace_selector(state: ClusterState) -> None:
    to_y_a = {**namespaces(**{NS_KEY: Y}), **pods(pod="a")}
    state.apply(policy("allow-to-ns-y-pod-a", labels={"pod": "a"}, egress=[{"to": [to_y_a]}]))
    r = reachability()
    r.expect_all_egress("x/a", False)
    r.expect("x/a", "y/a", True)
    validate(state, r, 80)


def test_30_any_port_on_a_specific_protocol(state: ClusterState) -> None:
    state.apply(policy("allow-ingress-by-proto", labels={"pod": "a"}, ingress=[{"ports": [{"protocol": "TCP"}]}]))
    validate(state, reachability(), 80, "TCP")
    udp = reachability()
    udp.expect_peer(Peer(), Peer(X, "a"), False)
    validate(state, udp, 80, "UDP")


def test_31_multiple_ingress_policies_allow_all_takes_precedence(state: ClusterState) -> None:
    state.apply(policy("allow-ingress-port-80", labels={}, ingress=[{"ports": [{"port": 80}]}]))
    r = reachability()
    r.expect_peer(Peer(), Peer(X), False)
    validate(state, r, 81)
    state.apply(policy("allow-ingress", labels={}, ingress=[{}]))
    validate(state, reachability(), 81)


def test_32_multiple_egress_policies_allow_all_takes_precedence(state: ClusterState) -> None:
    state.apply(policy("allow-egress-port-80", labels={}, egress=[{"ports": [{"port": 80}]}]))
    r = reachability()
    r.expect_peer(Peer(X), Peer(), False)
    validate(state, r, 81)
    state.apply(policy("allow-egress", labels={}, egress=[{}]))
    validate(state, reachability(), 81)


def test_33_stop_enforcing_policies_after_they_are_deleted(state: ClusterState) -> None:
    state.apply(policy("deny-all", selector={}, ingress=[], egress=[]))
    r = reachability()
    r.expect_peer(Peer(X), Peer(), False)
    r.expect_peer(Peer(), Peer(X), False)
    validate(state, r, 80)
    state.delete_all_policies()  # cleanNetworkPolicies
    validate(state, reachability(), 80)


def _cidr(pod: str, mask: int) -> str:
    return f"{MODEL.ip_of(pod)}/{mask}"


def test_34_egress_to_a_server_in_a_cidr_block(state: ClusterState) -> None:
    rule = {"to": [{"ipBlock": {"cidr": _cidr("y/b", 32)}}]}
    state.apply(policy("allow-client-a-via-cidr-egress-rule", labels={"pod": "a"}, egress=[rule]))
    r = reachability()
    r.expect_all_egress("x/a", False)
    r.expect("x/a", "y/b", True)
    validate(state, r, 80)


def test_35_except_clause_of_an_egress_cidr_block(state: ClusterState) -> None:
    rule = {"to": [{"ipBlock": {"cidr": _cidr("x/a", 4), "except": [_cidr("x/b", 32)]}}]}
    state.apply(policy("allow-client-a-via-cidr-egress-rule", labels={"pod": "a"}, egress=[rule]))
    r = reachability()
    r.expect("x/a", "x/b", False)
    validate(state, r, 80)


def test_36_an_ip_in_both_cidr_and_except_is_allowed_by_another_block(state: ClusterState) -> None:
    rule = {"to": [{"ipBlock": {"cidr": _cidr("x/a", 4), "except": [_cidr("x/b", 32)]}}]}
    state.apply(policy("allow-client-a-via-cidr-egress-rule", labels={"pod": "a"}, egress=[rule]))
    r = reachability()
    r.expect("x/a", "x/b", False)
    validate(state, r, 80)
    rule3 = {"to": [{"ipBlock": {"cidr": _cidr("x/b", 32)}}]}
    state.apply(policy("allow-client-a-via-cidr-egress-rule", labels={"pod": "a"}, egress=[rule3]))  # UpdatePolicy
    allow = reachability()
    allow.expect_all_egress("x/a", False)
    allow.expect("x/a", "x/b", True)
    validate(state, allow, 80)


def test_37_ingress_and_egress_controlled_independently(state: ClusterState) -> None:
    target = {"matchLabels": {"pod": "a"}}
    state.apply(policy("allow-egress-for-target", selector=target, egress=[{}]))
    validate(state, reachability(), 80)
    state.apply(policy("deny-ingress-via-label-selector", selector=target, ingress=[]))
    r = reachability()
    r.expect_all_ingress("x/a", False)
    validate(state, r, 80)


def test_38_sctp_is_not_tcp(state: ClusterState) -> None:
    state.apply(policy("deny-ingress", selector={}, ingress=[]))
    rule = {"ports": [{"port": 81, "protocol": "SCTP"}]}
    state.apply(policy("allow-only-sctp-ingress-on-port-81", labels={"pod": "a"}, ingress=[rule]))
    r = reachability()
    r.expect_peer(Peer(), Peer(X), False)
    validate(state, r, 81)


def test_39_a_policy_allowing_sctp_isolates_its_pods(state: ClusterState) -> None:
    rule = {"ports": [{"port": 80, "protocol": "SCTP"}]}
    state.apply(policy("allow-only-sctp-ingress-on-port-80", labels={"pod": "a"}, ingress=[rule]))
    r = reachability()
    r.expect_all_ingress("x/a", False)
    validate(state, r, 81)


def test_40_no_tcp_when_a_policy_specifies_only_udp(state: ClusterState) -> None:
    rule = {"ports": [{"port": 81, "protocol": "UDP"}]}
    state.apply(policy("allow-only-udp-ingress-on-port-81", labels={"pod": "a"}, ingress=[rule]))
    r = reachability()
    r.expect_all_ingress("x/a", False)
    validate(state, r, 81)


def test_41_namespace_selector_match_labels_default_label(state: ClusterState) -> None:
    rule = {"from": [namespaces(**{"kubernetes.io/metadata.name": Y})]}
    state.apply(policy("allow-client-a-via-ns-selector-for-immutable-ns-label", labels={"pod": "a"}, ingress=[rule]))
    r = reachability()
    r.expect_peer(Peer(X), Peer(X, "a"), False)
    r.expect_peer(Peer(Z), Peer(X, "a"), False)
    validate(state, r, 80)


def test_42_namespace_selector_match_expressions_default_label(state: ClusterState) -> None:
    peer = {"namespaceSelector": {"matchExpressions": [{"key": NS_KEY, "operator": "NotIn", "values": [Y]}]}}
    state.apply(
        policy("allow-ns-y-match-selector-for-immutable-ns-label", labels={"pod": "a"}, egress=[{"to": [peer]}])
    )
    r = reachability()
    r.expect_peer(Peer(X, "a"), Peer(Y), False)
    validate(state, r, 80)


# -- "NetworkPolicy between server and client using UDP" / "using SCTP" ----------------------


@pytest.mark.parametrize("protocol", ["UDP", "SCTP"])
def test_43_46_default_deny_ingress(protocol: str) -> None:
    model = MODEL if protocol == "UDP" else SCTP_MODEL
    state = cluster(model)
    state.apply(policy("deny-all", selector={}, ingress=[]))
    r = reachability(model)
    r.expect_peer(Peer(), Peer(X), False)
    validate(state, r, 80, protocol, model)


@pytest.mark.parametrize("protocol", ["UDP", "SCTP"])
def test_44_47_ports(protocol: str) -> None:
    model = MODEL if protocol == "UDP" else SCTP_MODEL
    state = cluster(model)
    state.apply(policy("allow-ingress-on-port-81-ns-x", labels={"pod": "a"}, ingress=[_port_81_from_y(protocol)]))
    r = reachability(model)
    r.expect_peer(Peer(X), Peer(X, "a"), False)
    r.expect_peer(Peer(Z), Peer(X, "a"), False)
    validate(state, r, 81, protocol, model)


@pytest.mark.parametrize("protocol", ["UDP", "SCTP"])
def test_45_48_only_from_a_pod_in_another_namespace(protocol: str) -> None:
    model = MODEL if protocol == "UDP" else SCTP_MODEL
    _pod_a_in_y(cluster(model), 80, protocol, model)


# -- beyond the upstream list: endPort, DNS-only egress (expectations by the API reference) ----


def test_end_port_range(state: ClusterState) -> None:
    # ports 80-81 open to everyone on x; then a range 81-81 leaves 80 closed
    state.apply(policy("allow-80-81", labels={}, ingress=[{"ports": [{"port": 80, "endPort": 81}]}]))
    validate(state, reachability(), 80)
    validate(state, reachability(), 81)
    state.apply(policy("allow-80-81", labels={}, ingress=[{"ports": [{"port": 81, "endPort": 81}]}]))
    closed = reachability()
    closed.expect_peer(Peer(), Peer(X), False)
    validate(state, closed, 80)
    validate(state, reachability(), 81)


def test_deny_all_but_dns_like_udp(state: ClusterState) -> None:
    # GetDenyAllWithEgressDNS: x denies all ingress and all egress but UDP/53
    state.apply(
        policy("deny-all-tcp-allow-dns", selector={}, ingress=[], egress=[{"ports": [{"protocol": "UDP", "port": 53}]}])
    )
    r = reachability()
    r.expect_peer(Peer(X), Peer(), False)
    r.expect_peer(Peer(), Peer(X), False)
    validate(state, r, 80, "TCP")
    validate(state, r, 80, "UDP")
    dns = reachability()
    dns.expect_peer(Peer(), Peer(X), False)  # x's egress to 53 is allowed, x's ingress is not
    validate(state, dns, 53, "UDP")


def test_failure_prints_tables_side_by_side(state: ClusterState) -> None:
    state.apply(policy("deny-ingress", selector={}, ingress=[]))
    wrong = reachability()  # expects all allowed: 9 x 3 cells into x are not, 3 of them loopback
    with pytest.raises(AssertionError) as caught:
        validate(state, wrong, 80)
    text = str(caught.value)
    assert "24 wrong results" in text
    assert "expected:" in text and "observed:" in text and "comparison:" in text
    header = next(line for line in text.splitlines() if line.strip().startswith("- "))
    assert header.count("x/a") == 3  # three tables side by side
