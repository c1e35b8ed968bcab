"""The Kubernetes netpol e2e suite's scenarios, written once for every judge.

Each scenario mirrors one ``f.It`` of kubernetes ``test/e2e/network/netpol/network_policy.go``
(@ 9db638c0; numbered as in ``reference/calico.md`` §5.2): the same policies,
built as upstream's helpers build them (``SetSpecIngressRules`` adds
``Ingress`` to policyTypes, ``SetSpecEgressRules`` adds ``Egress``), on the
same model (namespaces x, y, z; pods a, b, c labelled ``pod: <name>``; every
pod serving ports 80 and 81 over TCP and UDP on ports named
``serve-<port>-<proto>``; over two nodes), and the expected reachability
written out exactly as upstream writes it (``ExpectPeer``, ``ExpectAllIngress``,
``ExpectAllEgress``, ``Expect``).

A scenario talks to a :class:`World`: the evaluator alone (the unit tests), or
real pods on real nodes with the evaluator beside them (the conformance
matrix on Calico and on Canal). Scenarios that probe SCTP are marked: the
real matrix runs the TCP and UDP ones.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol

from pycni.policy.cluster import ClusterState, PolicyObject
from pycni.policy.k8s_semantics import PodView, Reference
from pycni.policy.matrix import NetpolModel, Peer, Reachability, evaluator_probe

MODEL = NetpolModel()
SCTP_MODEL = NetpolModel(protocols=("SCTP",))
X, Y, Z = "x", "y", "z"
NS_KEY = "kubernetes.io/metadata.name"  # upstream's namespaceLabelKey (and v1.LabelMetadataName)


class World(Protocol):
    """Where a scenario's objects go and where its expectations are checked."""

    def apply(self, document: dict[str, Any]) -> None: ...
    def delete_all_policies(self) -> None: ...
    def set_namespace_labels(self, name: str, labels: Mapping[str, str]) -> None: ...
    def set_pod_labels(self, key: str, labels: Mapping[str, str]) -> None: ...
    def ip_of(self, pod: str) -> str: ...
    def validate(self, expected: Reachability, port: int, protocol: str = "TCP") -> None: ...


@dataclass(frozen=True)
class Scenario:
    name: str
    run: Callable[[World], None]
    model: NetpolModel = MODEL  # the model whose pods serve the protocols the scenario probes

    @property
    def probes_sctp(self) -> bool:
        return "SCTP" in self.model.protocols


SCENARIOS: dict[str, Scenario] = {}


def scenario(run: Callable[[World], None]) -> Callable[[World], None]:
    """Register ``case_<number>_<name>`` under ``<number>_<name>``."""
    name = run.__name__.removeprefix("case_")
    SCENARIOS[name] = Scenario(name, run)
    return run


class EvaluatorWorld:
    """The model's cluster in a :class:`ClusterState`; validation asks the evaluator and the API reference."""

    def __init__(self, model: NetpolModel = MODEL) -> None:
        self.model = model
        self.state = ClusterState()
        objects: list[PolicyObject] = [*model.namespace_objects(), *model.pod_objects(), *model.hosts()]
        for item in objects:
            self.state.apply(item)

    def apply(self, document: dict[str, Any]) -> None:
        self.state.apply(document)

    def delete_all_policies(self) -> None:
        self.state.delete_all_policies()

    def set_namespace_labels(self, name: str, labels: Mapping[str, str]) -> None:
        self.state.set_namespace_labels(name, labels)

    def set_pod_labels(self, key: str, labels: Mapping[str, str]) -> None:
        self.state.set_pod_labels(key, labels)

    def ip_of(self, pod: str) -> str:
        return str(self.model.ip_of(pod))

    def validate(self, expected: Reachability, port: int, protocol: str = "TCP") -> None:
        """ValidateOrFail: probe every pair; every non-loopback cell must be as expected."""
        model, state = self.model, self.state
        connected = evaluator_probe(model, state.evaluator(), port, protocol)
        for source in model.pod_strings():
            for target in model.pod_strings():
                expected.observe(source, target, connected(source, target))
        _, wrong, _, _ = expected.summary(ignore_loopback=True)
        assert wrong == 0, f"{port}/{protocol}: {wrong} wrong results in the reachability matrix\n{expected.report()}"
        views = [
            PodView(e.namespace, e.pod, e.labels, e.ips[0], model.pod_object(e.key).ports)
            for e in state.endpoints.values()
        ]
        reference = Reference(state.k8s_policies.values(), state.namespaces.values(), views)
        for source in model.pod_strings():
            for target in model.pod_strings():
                if source != target:
                    allowed = reference.allowed(model.ip_of(source), model.ip_of(target), protocol, port)
                    assert allowed == expected.expected.get(source, target), ("reference", source, target)


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


def reachability() -> Reachability:
    return Reachability(MODEL.pod_strings(), True)


def pods(**labels: str) -> dict[str, Any]:
    return {"podSelector": {"matchLabels": labels}}


def namespaces(**labels: str) -> dict[str, Any]:
    return {"namespaceSelector": {"matchLabels": labels}}


# -- "NetworkPolicy between server and client" ----------------------------------------------


@scenario
def case_01_default_deny_ingress(world: World) -> None:
    world.apply(policy("deny-ingress", selector={}, ingress=[]))
    r = reachability()
    r.expect_peer(Peer(), Peer(X), False)
    world.validate(r, 80)


@scenario
def case_02_default_deny_all(world: World) -> None:
    world.apply(policy("deny-all", selector={}, ingress=[], egress=[]))
    r = reachability()
    r.expect_peer(Peer(), Peer(X), False)
    r.expect_peer(Peer(X), Peer(), False)
    world.validate(r, 80)


@scenario
def case_03_allow_from_pod_within_namespace(world: World) -> None:
    world.apply(policy("x-a-allows-x-b", labels={"pod": "a"}, ingress=[{"from": [pods(pod="b")]}]))
    r = reachability()
    r.expect_all_ingress("x/a", False)
    r.expect("x/b", "x/a", True)
    world.validate(r, 80)


@scenario
def case_04_allow_ingress_for_a_target(world: World) -> None:
    world.apply(policy("deny-all", selector={}, ingress=[]))
    peer: dict[str, Any] = {"podSelector": {}, "namespaceSelector": {}}
    world.apply(policy("allow-all-to-a", labels={"pod": "a"}, ingress=[{"from": [peer]}]))
    r = reachability()
    r.expect_all_ingress("x/a", True)
    r.expect_all_ingress("x/b", False)
    r.expect_all_ingress("x/c", False)
    world.validate(r, 80)


@scenario
def case_05_allow_ingress_from_all_namespaces(world: World) -> None:
    world.apply(policy("allow-from-another-ns", labels={"pod": "a"}, ingress=[{"from": [namespaces()]}]))
    world.validate(reachability(), 80)


@scenario
def case_06_allow_only_from_another_namespace(world: World) -> None:
    rule = {"from": [namespaces(**{NS_KEY: Y})]}
    world.apply(policy("allow-client-a-via-ns-selector", labels={"pod": "a"}, ingress=[rule]))
    r = reachability()
    r.expect_peer(Peer(X), Peer(X, "a"), False)
    r.expect_peer(Peer(Z), Peer(X, "a"), False)
    world.validate(r, 80)


@scenario
def case_07_pod_selector_match_expressions(world: World) -> None:
    peer = {"podSelector": {"matchExpressions": [{"key": "pod", "operator": "In", "values": ["b"]}]}}
    world.apply(policy("x-a-allows-x-b", labels={"pod": "a"}, ingress=[{"from": [peer]}]))
    r = reachability()
    r.expect_all_ingress("x/a", False)
    r.expect("x/b", "x/a", True)
    world.validate(r, 80)


@scenario
def case_08_namespace_selector_match_expressions(world: World) -> None:
    peer = {"namespaceSelector": {"matchExpressions": [{"key": NS_KEY, "operator": "In", "values": [Y]}]}}
    world.apply(policy("allow-ns-y-match-selector", labels={"pod": "a"}, ingress=[{"from": [peer]}]))
    r = reachability()
    r.expect_peer(Peer(X), Peer(X, "a"), False)
    r.expect_peer(Peer(Z), Peer(X, "a"), False)
    world.validate(r, 80)


NOT_IN_X = {"namespaceSelector": {"matchExpressions": [{"key": NS_KEY, "operator": "NotIn", "values": [X]}]}}


@scenario
def case_09_pod_selector_or_namespace_selector(world: World) -> None:
    world.apply(policy("allow-ns-y-match-selector", labels={"pod": "a"}, ingress=[{"from": [NOT_IN_X, pods(pod="b")]}]))
    r = reachability()
    r.expect("x/a", "x/a", False)
    r.expect("x/c", "x/a", False)
    world.validate(r, 80)


@scenario
def case_10_pod_selector_and_namespace_selector(world: World) -> None:
    peer = {**NOT_IN_X, **pods(pod="b")}
    world.apply(policy("allow-ns-y-podselector-and-nsselector", labels={"pod": "a"}, ingress=[{"from": [peer]}]))
    r = reachability()
    r.expect_all_ingress("x/a", False)
    r.expect("y/b", "x/a", True)
    r.expect("z/b", "x/a", True)
    world.validate(r, 80)


@scenario
def case_11_multiple_pod_selectors_and_namespace_selectors(world: World) -> None:
    peer = {**NOT_IN_X, "podSelector": {"matchExpressions": [{"key": "pod", "operator": "In", "values": ["b", "c"]}]}}
    world.apply(policy("allow-ns-y-z-pod-b-c", labels={"pod": "a"}, ingress=[{"from": [peer]}]))
    r = reachability()
    r.expect_peer(Peer(X), Peer(X, "a"), False)
    r.expect("y/a", "x/a", False)
    r.expect("z/a", "x/a", False)
    world.validate(r, 80)


@scenario
def case_12_any_pod_selectors(world: World) -> None:
    world.apply(policy("allow-ns-x-pod-b-c", labels={"pod": "a"}, ingress=[{"from": [pods(pod="b"), pods(pod="c")]}]))
    r = reachability()
    r.expect_all_ingress("x/a", False)
    r.expect("x/b", "x/a", True)
    r.expect("x/c", "x/a", True)
    world.validate(r, 80)


def _pod_a_in_y(world: World, port: int, protocol: str) -> None:
    peer = {**namespaces(**{NS_KEY: Y}), **pods(pod="a")}
    world.apply(policy("allow-ns-y-pod-a-via-namespace-pod-selector", labels={"pod": "a"}, ingress=[{"from": [peer]}]))
    r = reachability()
    r.expect_all_ingress("x/a", False)
    r.expect("y/a", "x/a", True)
    world.validate(r, port, protocol)


@scenario
def case_13_only_from_a_pod_in_another_namespace(world: World) -> None:
    _pod_a_in_y(world, 80, "TCP")


def _port_81_from_y(protocol: str) -> dict[str, Any]:
    return {"from": [namespaces(**{NS_KEY: Y})], "ports": [{"port": 81, "protocol": protocol}]}


@scenario
def case_14_ports(world: World) -> None:
    world.apply(policy("allow-client-a-via-ns-selector", labels={"pod": "a"}, ingress=[_port_81_from_y("TCP")]))
    r = reachability()
    r.expect_peer(Peer(X), Peer(X, "a"), False)
    r.expect_peer(Peer(Y), Peer(X, "a"), True)
    r.expect_peer(Peer(Z), Peer(X, "a"), False)
    world.validate(r, 81)


@scenario
def case_15_multiple_stacked_policies_with_overlapping_pod_selectors(world: World) -> None:
    world.apply(policy("allow-client-a-via-ns-selector", labels={"pod": "a"}, ingress=[_port_81_from_y("TCP")]))
    allow = reachability()
    allow.expect_peer(Peer(X), Peer(X, "a"), False)
    allow.expect_peer(Peer(Y), Peer(X, "a"), True)
    allow.expect_peer(Peer(Z), Peer(X, "a"), False)
    world.validate(allow, 81)
    deny = reachability()
    deny.expect_all_ingress("x/a", False)
    world.validate(deny, 80)
    rule = {"from": [namespaces(**{NS_KEY: Y})], "ports": [{"port": 80, "protocol": "TCP"}]}
    world.apply(policy("allow-client-a-via-ns-selector-80", labels={"pod": "a"}, ingress=[rule]))
    world.validate(allow, 80)


@scenario
def case_16_allow_all(world: World) -> None:
    world.apply(policy("allow-all", labels={}, ingress=[{}]))
    world.validate(reachability(), 80)
    world.validate(reachability(), 81)


@scenario
def case_17_ingress_on_one_named_port(world: World) -> None:
    world.apply(policy("allow-all", labels={}, ingress=[{"ports": [{"port": "serve-81-tcp"}]}]))
    world.validate(reachability(), 81)
    r = reachability()
    r.expect_peer(Peer(), Peer(X), False)
    world.validate(r, 80)


@scenario
def case_18_ingress_from_namespace_on_one_named_port(world: World) -> None:
    rule = {"from": [namespaces(**{NS_KEY: Y})], "ports": [{"port": "serve-80-tcp", "protocol": "TCP"}]}
    world.apply(policy("allow-client-a-via-ns-selector-80", labels={"pod": "a"}, ingress=[rule]))
    r = reachability()
    r.expect_peer(Peer(X), Peer(X, "a"), False)
    r.expect_peer(Peer(Z), Peer(X, "a"), False)
    world.validate(r, 80)
    fail = reachability()
    fail.expect_all_ingress("x/a", False)
    world.validate(fail, 81)


@scenario
def case_19_egress_on_one_named_port(world: World) -> None:
    world.apply(policy("allow-egress", labels={}, egress=[{"ports": [{"port": "serve-80-tcp"}]}]))
    world.validate(reachability(), 80)
    r = reachability()
    r.expect_peer(Peer(X), Peer(), False)
    world.validate(r, 81)


@scenario
def case_20_updated_policy(world: World) -> None:
    document = policy("allow-all-mutate-to-deny-all", labels={}, ingress=[{}])
    world.apply(document)
    world.validate(reachability(), 81)
    document["spec"]["ingress"] = []
    world.apply(document)  # UpdatePolicy: same name, replaced
    r = reachability()
    r.expect_peer(Peer(), Peer(X), False)
    world.validate(r, 81)


@scenario
def case_21_ingress_from_updated_namespace(world: World) -> None:
    world.apply(
        policy("allow-client-a-via-ns-selector", labels={"pod": "a"}, ingress=[{"from": [namespaces(ns2="updated")]}])
    )
    r = reachability()
    r.expect_all_ingress("x/a", False)
    world.validate(r, 80)
    world.set_namespace_labels(Y, {"ns": Y, "ns2": "updated"})  # AddNamespaceLabel
    with_label = reachability()
    with_label.expect_all_ingress("x/a", False)
    with_label.expect_peer(Peer(Y), Peer(), True)
    world.validate(with_label, 80)


@scenario
def case_22_ingress_from_updated_pod(world: World) -> None:
    world.apply(
        policy(
            "allow-client-a-via-pod-selector", labels={"pod": "a"}, ingress=[{"from": [pods(pod="b", pod2="updated")]}]
        )
    )
    r = reachability()
    r.expect_all_ingress("x/a", False)
    world.validate(r, 80)
    world.set_pod_labels("x/b", {"pod": "b", "pod2": "updated"})  # AddPodLabels
    with_label = reachability()
    with_label.expect_all_ingress("x/a", False)
    with_label.expect("x/b", "x/a", True)
    world.validate(with_label, 80)


@scenario
def case_23_deny_ingress_from_pods_in_other_namespaces(world: World) -> None:
    world.apply(policy("deny-empty-policy", selector={}, ingress=[{"from": [{"podSelector": {"matchLabels": {}}}]}]))
    r = reachability()
    r.expect_peer(Peer(Y), Peer(X), False)
    r.expect_peer(Peer(Z), Peer(X), False)
    world.validate(r, 80)


@scenario
def case_24_deny_ingress_to_updated_pod(world: World) -> None:
    world.apply(policy("deny-ingress-via-label-selector", selector={"matchLabels": {"target": "isolated"}}, ingress=[]))
    world.validate(reachability(), 80)
    world.set_pod_labels("x/a", {"pod": "a", "target": "isolated"})
    isolated = reachability()
    isolated.expect_all_ingress("x/a", False)
    world.validate(isolated, 80)


@scenario
def case_25_deny_egress_by_pod_selector(world: World) -> None:
    world.apply(policy("deny-egress-pod-a", selector={"matchLabels": {"pod": "a"}}, egress=[]))
    r = reachability()
    r.expect_all_egress("x/a", False)
    world.validate(r, 80)


@scenario
def case_26_deny_egress_from_all_pods_in_a_namespace(world: World) -> None:
    world.apply(policy("deny-egress-ns-x", selector={}, egress=[]))
    r = reachability()
    r.expect_peer(Peer(X), Peer(), False)
    world.validate(r, 80)


@scenario
def case_27_ingress_and_egress_specified_together(world: World) -> None:
    document = policy("allow-client-a-via-pod-selector", labels={"pod": "a"}, ingress=[{"from": [pods(pod="b")]}])
    document["spec"]["egress"] = [{"ports": [{"port": 80}]}]
    document["spec"]["policyTypes"] = ["Egress", "Ingress"]
    world.apply(document)
    port80 = reachability()
    port80.expect_all_ingress("x/a", False)
    port80.expect("x/b", "x/a", True)
    world.validate(port80, 80)
    port81 = reachability()
    port81.expect_all_ingress("x/a", False)
    port81.expect_all_egress("x/a", False)
    port81.expect("x/b", "x/a", True)
    world.validate(port81, 81)


@scenario
def case_28_deny_egress_on_the_client_side_even_if_the_server_allows(world: World) -> None:
    to_y_a = {**namespaces(**{NS_KEY: Y}), **pods(pod="a")}
    world.apply(policy("allow-to-ns-y-pod-a", labels={"pod": "a"}, egress=[{"to": [to_y_a]}]))
    from_x_a = {"from": [{**namespaces(**{NS_KEY: X}), **pods(pod="a")}]}
    world.apply(policy("allow-from-xa-on-ya-match-selector", labels={"pod": "a"}, ingress=[from_x_a], namespace=Y))
    world.apply(policy("allow-from-xa-on-yb-match-selector", labels={"pod": "b"}, ingress=[from_x_a], namespace=Y))
    r = reachability()
    r.expect_peer(Peer(X, "a"), Peer(), False)
    r.expect_peer(Peer(), Peer(Y, "a"), False)
    r.expect_peer(Peer(X, "a"), Peer(Y, "a"), True)
    r.expect_peer(Peer(), Peer(Y, "b"), False)
    world.validate(r, 80)


@scenario
def case_29_egress_to_a_server_in_another_namespace_by_pod_and_namespace_selector(world: World) -> None:
    to_y_a = {**namespaces(**{NS_KEY: Y}), **pods(pod="a")}
    world.apply(policy("allow-to-ns-y-pod-a", labels={"pod": "a"}, egress=[{"to": [to_y_a]}]))
    r = reachability()
    r.expect_all_egress("x/a", False)
    r.expect("x/a", "y/a", True)
    world.validate(r, 80)


@scenario
def case_30_any_port_on_a_specific_protocol(world: World) -> None:
    world.apply(policy("allow-ingress-by-proto", labels={"pod": "a"}, ingress=[{"ports": [{"protocol": "TCP"}]}]))
    world.validate(reachability(), 80, "TCP")
    udp = reachability()
    udp.expect_peer(Peer(), Peer(X, "a"), False)
    world.validate(udp, 80, "UDP")


@scenario
def case_31_multiple_ingress_policies_allow_all_takes_precedence(world: World) -> None:
    world.apply(policy("allow-ingress-port-80", labels={}, ingress=[{"ports": [{"port": 80}]}]))
    r = reachability()
    r.expect_peer(Peer(), Peer(X), False)
    world.validate(r, 81)
    world.apply(policy("allow-ingress", labels={}, ingress=[{}]))
    world.validate(reachability(), 81)


@scenario
def case_32_multiple_egress_policies_allow_all_takes_precedence(world: World) -> None:
    world.apply(policy("allow-egress-port-80", labels={}, egress=[{"ports": [{"port": 80}]}]))
    r = reachability()
    r.expect_peer(Peer(X), Peer(), False)
    world.validate(r, 81)
    world.apply(policy("allow-egress", labels={}, egress=[{}]))
    world.validate(reachability(), 81)


@scenario
def case_33_stop_enforcing_policies_after_they_are_deleted(world: World) -> None:
    world.apply(policy("deny-all", selector={}, ingress=[], egress=[]))
    r = reachability()
    r.expect_peer(Peer(X), Peer(), False)
    r.expect_peer(Peer(), Peer(X), False)
    world.validate(r, 80)
    world.delete_all_policies()  # cleanNetworkPolicies
    world.validate(reachability(), 80)


def _cidr(world: World, pod: str, mask: int) -> str:
    return f"{world.ip_of(pod)}/{mask}"


@scenario
def case_34_egress_to_a_server_in_a_cidr_block(world: World) -> None:
    rule = {"to": [{"ipBlock": {"cidr": _cidr(world, "y/b", 32)}}]}
    world.apply(policy("allow-client-a-via-cidr-egress-rule", labels={"pod": "a"}, egress=[rule]))
    r = reachability()
    r.expect_all_egress("x/a", False)
    r.expect("x/a", "y/b", True)
    world.validate(r, 80)


@scenario
def case_35_except_clause_of_an_egress_cidr_block(world: World) -> None:
    rule = {"to": [{"ipBlock": {"cidr": _cidr(world, "x/a", 4), "except": [_cidr(world, "x/b", 32)]}}]}
    world.apply(policy("allow-client-a-via-cidr-egress-rule", labels={"pod": "a"}, egress=[rule]))
    r = reachability()
    r.expect("x/a", "x/b", False)
    world.validate(r, 80)


@scenario
def case_36_an_ip_in_both_cidr_and_except_is_allowed_by_another_block(world: World) -> None:
    rule = {"to": [{"ipBlock": {"cidr": _cidr(world, "x/a", 4), "except": [_cidr(world, "x/b", 32)]}}]}
    world.apply(policy("allow-client-a-via-cidr-egress-rule", labels={"pod": "a"}, egress=[rule]))
    r = reachability()
    r.expect("x/a", "x/b", False)
    world.validate(r, 80)
    rule3 = {"to": [{"ipBlock": {"cidr": _cidr(world, "x/b", 32)}}]}
    world.apply(policy("allow-client-a-via-cidr-egress-rule", labels={"pod": "a"}, egress=[rule3]))  # UpdatePolicy
    allow = reachability()
    allow.expect_all_egress("x/a", False)
    allow.expect("x/a", "x/b", True)
    world.validate(allow, 80)


@scenario
def case_37_ingress_and_egress_controlled_independently(world: World) -> None:
    target = {"matchLabels": {"pod": "a"}}
    world.apply(policy("allow-egress-for-target", selector=target, egress=[{}]))
    world.validate(reachability(), 80)
    world.apply(policy("deny-ingress-via-label-selector", selector=target, ingress=[]))
    r = reachability()
    r.expect_all_ingress("x/a", False)
    world.validate(r, 80)


@scenario
def case_38_sctp_is_not_tcp(world: World) -> None:
    world.apply(policy("deny-ingress", selector={}, ingress=[]))
    rule = {"ports": [{"port": 81, "protocol": "SCTP"}]}
    world.apply(policy("allow-only-sctp-ingress-on-port-81", labels={"pod": "a"}, ingress=[rule]))
    r = reachability()
    r.expect_peer(Peer(), Peer(X), False)
    world.validate(r, 81)


@scenario
def case_39_a_policy_allowing_sctp_isolates_its_pods(world: World) -> None:
    rule = {"ports": [{"port": 80, "protocol": "SCTP"}]}
    world.apply(policy("allow-only-sctp-ingress-on-port-80", labels={"pod": "a"}, ingress=[rule]))
    r = reachability()
    r.expect_all_ingress("x/a", False)
    world.validate(r, 81)


@scenario
def case_40_no_tcp_when_a_policy_specifies_only_udp(world: World) -> None:
    rule = {"ports": [{"port": 81, "protocol": "UDP"}]}
    world.apply(policy("allow-only-udp-ingress-on-port-81", labels={"pod": "a"}, ingress=[rule]))
    r = reachability()
    r.expect_all_ingress("x/a", False)
    world.validate(r, 81)


@scenario
def case_41_namespace_selector_match_labels_default_label(world: World) -> None:
    rule = {"from": [namespaces(**{"kubernetes.io/metadata.name": Y})]}
    world.apply(policy("allow-client-a-via-ns-selector-for-immutable-ns-label", labels={"pod": "a"}, ingress=[rule]))
    r = reachability()
    r.expect_peer(Peer(X), Peer(X, "a"), False)
    r.expect_peer(Peer(Z), Peer(X, "a"), False)
    world.validate(r, 80)


@scenario
def case_42_namespace_selector_match_expressions_default_label(world: World) -> None:
    peer = {"namespaceSelector": {"matchExpressions": [{"key": NS_KEY, "operator": "NotIn", "values": [Y]}]}}
    world.apply(
        policy("allow-ns-y-match-selector-for-immutable-ns-label", labels={"pod": "a"}, egress=[{"to": [peer]}])
    )
    r = reachability()
    r.expect_peer(Peer(X, "a"), Peer(Y), False)
    world.validate(r, 80)


# -- "NetworkPolicy between server and client using UDP" / "using SCTP" ----------------------


def _default_deny_ingress(world: World, protocol: str) -> None:
    world.apply(policy("deny-all", selector={}, ingress=[]))
    r = reachability()
    r.expect_peer(Peer(), Peer(X), False)
    world.validate(r, 80, protocol)


def _ports(world: World, protocol: str) -> None:
    world.apply(policy("allow-ingress-on-port-81-ns-x", labels={"pod": "a"}, ingress=[_port_81_from_y(protocol)]))
    r = reachability()
    r.expect_peer(Peer(X), Peer(X, "a"), False)
    r.expect_peer(Peer(Z), Peer(X, "a"), False)
    world.validate(r, 81, protocol)


for _number, _name, _run in (
    (43, "default_deny_ingress", _default_deny_ingress),
    (44, "ports", _ports),
    (45, "only_from_a_pod_in_another_namespace", partial(_pod_a_in_y, port=80)),
):
    for _offset, (_protocol, _model) in enumerate((("UDP", MODEL), ("SCTP", SCTP_MODEL))):
        _key = f"{_number + 3 * _offset}_{_protocol.lower()}_{_name}"
        SCENARIOS[_key] = Scenario(_key, partial(_run, protocol=_protocol), _model)


# -- beyond the upstream list: endPort, DNS-only egress (expectations by the API reference) ----


@scenario
def case_49_end_port_range(world: World) -> None:
    # ports 80-81 open to everyone on x; then a range 81-81 leaves 80 closed
    world.apply(policy("allow-80-81", labels={}, ingress=[{"ports": [{"port": 80, "endPort": 81}]}]))
    world.validate(reachability(), 80)
    world.validate(reachability(), 81)
    world.apply(policy("allow-80-81", labels={}, ingress=[{"ports": [{"port": 81, "endPort": 81}]}]))
    closed = reachability()
    closed.expect_peer(Peer(), Peer(X), False)
    world.validate(closed, 80)
    world.validate(reachability(), 81)


@scenario
def case_50_deny_all_but_dns_like_udp(world: World) -> None:
    # GetDenyAllWithEgressDNS: x denies all ingress and all egress but UDP/53
    world.apply(
        policy("deny-all-tcp-allow-dns", selector={}, ingress=[], egress=[{"ports": [{"protocol": "UDP", "port": 53}]}])
    )
    r = reachability()
    r.expect_peer(Peer(X), Peer(), False)
    r.expect_peer(Peer(), Peer(X), False)
    world.validate(r, 80, "TCP")
    world.validate(r, 80, "UDP")
    dns = reachability()
    dns.expect_peer(Peer(), Peer(X), False)  # x's egress to 53 is allowed, x's ingress is not
    world.validate(dns, 53, "UDP")
