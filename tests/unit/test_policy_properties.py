"""Property tests of the policy model: the Calico path agrees with Kubernetes semantics read directly.

* Differential: for generated sets of Kubernetes NetworkPolicies on the x/y/z
  model, the evaluator (conversion to Calico, compiled selectors, tiers,
  profiles) and :mod:`pycni.policy.k8s_semantics` (the API reference, no
  Calico) agree on every pod pair, port 80/81, TCP/UDP.
* Union of allows: adding a policy denies nothing that was allowed, except
  traffic of the pods it newly isolates (its selected pods, for its types).
* Converted policies are valid Calico policies: their stored JSON parses back
  (calicoctl's validation) to the same object.
"""

from __future__ import annotations

from typing import Any

import pytest

from pycni.policy import k8s
from pycni.policy.calico_model import parse_calico
from pycni.policy.cluster import ClusterState, PolicyObject
from pycni.policy.convert import network_policy_to_calico
from pycni.policy.k8s_semantics import PodView, Reference
from pycni.policy.match import Packet
from pycni.policy.matrix import NetpolModel

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from tests.support import strategies  # noqa: E402, F401 - pycni's hypothesis profile

MODEL = NetpolModel()
PROBES = [(port, protocol) for port in (80, 81) for protocol in ("TCP", "UDP")]
TEAMS = {"x/a": "red", "y/b": "red", "z/c": "blue"}  # a second label, so selectors can cut across pods

label_values = st.sampled_from(["a", "b", "c"])
pod_selectors = st.one_of(
    st.just({}),
    st.builds(lambda v: {"matchLabels": {"pod": v}}, label_values),
    st.builds(lambda t: {"matchLabels": {"team": t}}, st.sampled_from(["red", "blue"])),
    st.builds(
        lambda op, vs: {"matchExpressions": [{"key": "pod", "operator": op, "values": vs}]},
        st.sampled_from(["In", "NotIn"]),
        st.lists(label_values, min_size=1, max_size=2, unique=True),
    ),
    st.builds(
        lambda op: {"matchExpressions": [{"key": "team", "operator": op}]}, st.sampled_from(["Exists", "DoesNotExist"])
    ),
)
namespace_selectors = st.one_of(
    st.just({}),
    st.builds(lambda v: {"matchLabels": {"ns": v}}, st.sampled_from(["x", "y", "z"])),
    st.builds(
        lambda op, vs: {"matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": op, "values": vs}]},
        st.sampled_from(["In", "NotIn"]),
        st.lists(st.sampled_from(["x", "y", "z"]), min_size=1, max_size=2, unique=True),
    ),
)
pods = st.sampled_from(MODEL.pod_strings())


@st.composite
def ip_blocks(draw: st.DrawFn) -> dict[str, Any]:
    pod = draw(pods)
    if draw(st.booleans()):
        return {"cidr": f"{MODEL.ip_of(pod)}/32"}
    return {"cidr": "10.244.0.0/16", "except": [f"{MODEL.ip_of(pod)}/32"]}


peers = st.one_of(
    st.builds(lambda p: {"podSelector": p}, pod_selectors),
    st.builds(lambda n: {"namespaceSelector": n}, namespace_selectors),
    st.builds(lambda p, n: {"podSelector": p, "namespaceSelector": n}, pod_selectors, namespace_selectors),
    st.builds(lambda b: {"ipBlock": b}, ip_blocks()),
)


@st.composite
def policy_ports(draw: st.DrawFn) -> dict[str, Any]:
    protocol = draw(st.sampled_from(["TCP", "UDP", None]))
    port: dict[str, Any] = {} if protocol is None else {"protocol": protocol}
    kind = draw(st.sampled_from(["none", "number", "range", "name"]))
    if kind == "number":
        port["port"] = draw(st.sampled_from([80, 81, 53]))
    elif kind == "range":
        port.update(port=80, endPort=draw(st.sampled_from([80, 81, 90])))
    elif kind == "name":
        port["port"] = draw(st.sampled_from(["serve-80-tcp", "serve-81-udp", "serve-80-udp", "nothing"]))
    return port


rules = st.builds(
    lambda ps, ports: {**({"from": ps} if ps else {}), **({"ports": ports} if ports else {})},
    st.lists(peers, max_size=2),
    st.lists(policy_ports(), max_size=2),
)


@st.composite
def network_policies(draw: st.DrawFn, name: str) -> dict[str, Any]:
    spec: dict[str, Any] = {"podSelector": draw(pod_selectors)}
    if draw(st.booleans()):
        spec["ingress"] = draw(st.lists(rules, max_size=2))
    if draw(st.booleans()):
        spec["egress"] = [{"to": r.pop("from")} | r if "from" in r else r for r in draw(st.lists(rules, max_size=2))]
    types = draw(st.sampled_from([None, ["Ingress"], ["Egress"], ["Ingress", "Egress"]]))
    if types is not None:
        spec["policyTypes"] = types
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": draw(st.sampled_from(["x", "y", "z"]))},
        "spec": spec,
    }


policy_sets = st.lists(st.integers(0, 1000), min_size=1, max_size=3, unique=True).flatmap(
    lambda ids: st.tuples(*(network_policies(f"p{i}") for i in ids))
)


def state_with(policies: tuple[dict[str, Any], ...]) -> ClusterState:
    state = ClusterState()
    objects: list[PolicyObject] = [*MODEL.namespace_objects(), *MODEL.pod_objects()]
    for item in objects:
        state.apply(item)
    for pod, team in TEAMS.items():
        state.set_pod_labels(pod, {"pod": pod.split("/")[1], "team": team})
    for document in policies:
        state.apply(document)
    return state


def reference_of(state: ClusterState) -> Reference:
    views = [
        PodView(e.namespace, e.pod, e.labels, e.ips[0], MODEL.pod_object(e.key).ports) for e in state.endpoints.values()
    ]
    return Reference(state.k8s_policies.values(), state.namespaces.values(), views)


def matrix(state: ClusterState) -> dict[tuple[str, str, int, str], bool]:
    evaluator = state.evaluator()
    return {
        (s, t, port, protocol): evaluator.evaluate(Packet.make(MODEL.ip_of(s), MODEL.ip_of(t), protocol, port)).allowed
        for s in MODEL.pod_strings()
        for t in MODEL.pod_strings()
        for port, protocol in PROBES
    }


@given(policy_sets)
def test_calico_path_agrees_with_the_api_reference(policies: tuple[dict[str, Any], ...]) -> None:
    state = state_with(policies)
    reference = reference_of(state)
    for (source, target, port, protocol), allowed in matrix(state).items():
        expected = reference.allowed(MODEL.ip_of(source), MODEL.ip_of(target), protocol, port)
        assert allowed == expected, (source, target, port, protocol, policies)


@given(policy_sets, network_policies("added"))
def test_adding_a_policy_only_denies_what_it_newly_isolates(
    policies: tuple[dict[str, Any], ...], added: dict[str, Any]
) -> None:
    before_state = state_with(policies)
    after_state = state_with((*policies, added))
    before, after = matrix(before_state), matrix(after_state)
    evaluator_before, evaluator_after = before_state.evaluator(), after_state.evaluator()

    def isolated(evaluator: Any, pod: str, direction: str) -> bool:
        return bool(evaluator.applicable(evaluator.index.endpoints[pod], direction))

    for (source, target, port, protocol), allowed in before.items():
        if allowed and not after[(source, target, port, protocol)]:
            newly = (
                not isolated(evaluator_before, target, "ingress") and isolated(evaluator_after, target, "ingress")
            ) or (not isolated(evaluator_before, source, "egress") and isolated(evaluator_after, source, "egress"))
            assert newly, (source, target, port, protocol)


@given(policy_sets)
def test_converted_policies_are_valid_calico_policies(policies: tuple[dict[str, Any], ...]) -> None:
    for document in policies:
        converted = network_policy_to_calico(k8s.parse_network_policy(document))
        assert parse_calico(converted.to_dict()) == converted
