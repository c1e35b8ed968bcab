"""The evaluator's Calico semantics: tiers, order, Pass, defaultAction, profiles, network sets, Log, hosts.

Expectations follow Felix's endpoint chains (``felix/rules/endpoints.go``:
tiers in order, "End of tier <t>. Drop if no policies passed packet" unless
defaultAction Pass, then the profiles, "Drop if no profiles matched"), the
policy sorter (``felix/calc/policy_sorter.go``: order, then name; no order
last; undefined tiers last), rule rendering (``felix/rules/policy.go``:
``FilterRuleToIPVersion``) and filter OUTPUT (host-to-local-workload traffic is
not policed). Every case is on the x/y/z x a/b/c model over two nodes.
"""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from pycni.policy import k8s
from pycni.policy.calico_model import CalicoPolicy, parse_calico
from pycni.policy.cluster import ClusterState, PolicyObject
from pycni.policy.convert import namespace_to_profile
from pycni.policy.endpoints import Host, NamedPort, WorkloadEndpoint
from pycni.policy.errors import PolicyError
from pycni.policy.evaluate import Evaluator, Reason, Verdict
from pycni.policy.match import Packet
from pycni.policy.matrix import NetpolModel

MODEL = NetpolModel()
EXTERNAL = "203.0.113.7"  # an address no endpoint or host holds
KNS_X = namespace_to_profile(k8s.namespace("x"))


@pytest.fixture
def state() -> ClusterState:
    state = ClusterState()
    objects: list[PolicyObject] = [*MODEL.namespace_objects(), *MODEL.pod_objects(), *MODEL.hosts()]
    for item in objects:
        state.apply(item)
    return state


def calico(kind: str, name: str, spec: dict[str, Any], namespace: str = "", **meta: Any) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, **meta}
    if namespace:
        metadata["namespace"] = namespace
    return {"apiVersion": "projectcalico.org/v3", "kind": kind, "metadata": metadata, "spec": spec}


def gnp(document: dict[str, Any]) -> CalicoPolicy:
    policy = parse_calico(document)
    assert isinstance(policy, CalicoPolicy)
    return policy


def k8s_allow_all_ingress(namespace: str = "x") -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "allow-all", "namespace": namespace},
        "spec": {"podSelector": {}, "ingress": [{}]},
    }


def k8s_deny_ingress(namespace: str = "x") -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "deny", "namespace": namespace},
        "spec": {"podSelector": {}, "policyTypes": ["Ingress"]},
    }


def check(
    state: ClusterState, source: str, target: str, port: int | None = 80, protocol: str = "TCP", **kw: Any
) -> Verdict:
    src = MODEL.ip_of(source) if "/" in source else source
    dst = MODEL.ip_of(target) if "/" in target else target
    return state.evaluator().evaluate(Packet.make(src, dst, protocol, port, **kw))


def test_no_policy_profile_allows(state: ClusterState) -> None:
    verdict = check(state, "y/a", "x/a")
    assert verdict.allowed
    assert verdict.egress is not None and verdict.egress.reason is Reason.PROFILE and verdict.egress.policy == "kns.y"
    assert verdict.ingress is not None and verdict.ingress.policy == "kns.x" and verdict.ingress.rule_index == 0
    assert "no policy applies, profile kns.x ingress rule 0 (Allow)" in verdict.describe()


def test_deny_before_allow_by_order(state: ClusterState) -> None:
    state.apply(k8s_allow_all_ingress())  # order 1000, Allow everything into x
    deny = {
        "order": 10,
        "selector": "pod == 'a'",
        "ingress": [{"action": "Deny", "source": {"selector": "pod == 'b'"}}],
    }
    state.apply(calico("NetworkPolicy", "deny-b", deny, namespace="x"))
    denied = check(state, "x/b", "x/a")
    assert not denied.allowed
    assert denied.ingress is not None
    assert (denied.ingress.reason, denied.ingress.tier, denied.ingress.policy, denied.ingress.rule_index) == (
        Reason.RULE,
        "default",
        "x/deny-b",
        0,
    )
    assert "ingress of x/a denied by tier default, policy x/deny-b, ingress rule 0 (Deny)" in denied.describe()
    allowed = check(state, "x/c", "x/a")  # deny-b has no matching rule: next policy, the k8s allow
    assert allowed.allowed and allowed.ingress is not None and allowed.ingress.policy == "x/knp.default.allow-all"
    # y/b is pod b too, but a namespaced rule selector only matches its own namespace
    assert check(state, "y/b", "x/a").allowed
    state.apply(calico("NetworkPolicy", "deny-b", {**deny, "order": 2000}, namespace="x"))
    assert check(state, "x/b", "x/a").allowed  # the k8s policy at 1000 now allows first


def test_ties_broken_by_name_and_no_order_last(state: ClusterState) -> None:
    allow = {"selector": "pod == 'a'", "ingress": [{"action": "Allow"}]}
    deny = {"selector": "pod == 'a'", "ingress": [{"action": "Deny"}]}
    state.apply(calico("NetworkPolicy", "b-allow", {**allow, "order": 5}, namespace="x"))
    state.apply(calico("NetworkPolicy", "a-deny", {**deny, "order": 5}, namespace="x"))
    first = check(state, "y/a", "x/a").ingress
    assert first is not None and first.policy == "x/a-deny"
    state.apply(calico("NetworkPolicy", "a-deny", deny, namespace="x"))  # no order: after every ordered policy
    verdict = check(state, "y/a", "x/a")
    assert verdict.allowed and verdict.ingress is not None and verdict.ingress.policy == "x/b-allow"


def test_pass_goes_to_the_next_tier(state: ClusterState) -> None:
    state.apply(calico("Tier", "security", {"order": 100}))
    state.apply(k8s_deny_ingress())
    rules = [
        {"action": "Pass", "source": {"namespaceSelector": "ns == 'y'"}},
        {"action": "Allow", "source": {"namespaceSelector": "ns == 'z'"}},
    ]
    state.apply(
        calico("GlobalNetworkPolicy", "security.triage", {"tier": "security", "selector": "all()", "ingress": rules})
    )
    passed = check(state, "y/a", "x/a")  # security passes it on; default tier's k8s deny-all isolates x
    assert not passed.allowed and passed.ingress is not None
    assert (passed.ingress.reason, passed.ingress.tier, passed.ingress.passed) == (
        Reason.END_OF_TIER,
        "default",
        ("security",),
    )
    assert (
        "end of tier default, defaultAction Deny: selected by x/knp.default.deny but none allowed" in passed.describe()
    )
    allowed = check(state, "z/a", "x/a")
    assert allowed.allowed and allowed.ingress is not None and allowed.ingress.tier == "security"
    # from x: security applies to x/a but no rule matches, so its end of tier drops
    dropped = check(state, "x/b", "x/a")
    assert dropped.ingress is not None and (dropped.ingress.reason, dropped.ingress.tier) == (
        Reason.END_OF_TIER,
        "security",
    )
    # y/b is not selected by the deny: after Pass, no policy of default applies, so the profile decides
    to_y = check(state, "y/a", "y/b")
    assert to_y.allowed and to_y.ingress is not None and to_y.ingress.reason is Reason.PROFILE
    assert to_y.ingress.passed == ("security",) and "tiers security passed, profile kns.y" in to_y.describe()


def test_tier_default_action_pass(state: ClusterState) -> None:
    state.apply(calico("Tier", "observe", {"order": 50, "defaultAction": "Pass"}))
    log_only = {"tier": "observe", "selector": "pod == 'a'", "ingress": [{"action": "Log"}]}
    state.apply(calico("GlobalNetworkPolicy", "observe.log-a", log_only))
    verdict = check(state, "y/c", "x/a")
    assert verdict.allowed and verdict.ingress is not None and verdict.ingress.passed == ("observe",)
    assert [str(h) for h in verdict.logs] == ["ingress of x/a: tier observe policy observe.log-a ingress rule 0 (Log)"]
    state.apply(calico("Tier", "observe", {"order": 50, "defaultAction": "Deny"}))
    denied = check(state, "y/c", "x/a")
    assert not denied.allowed and denied.ingress is not None
    assert (denied.ingress.reason, denied.ingress.tier) == (Reason.END_OF_TIER, "observe")
    assert len(denied.logs) == 1  # logged, then dropped at the end of the tier


def test_tiers_ordered_by_order_then_name_undefined_last(state: ClusterState) -> None:
    for name, order in (("b-tier", 10), ("a-tier", 10), ("late", 20)):
        state.apply(calico("Tier", name, {"order": order}))
        state.apply(calico("GlobalNetworkPolicy", f"{name}.p", {"tier": name, "ingress": [{"action": "Deny"}]}))
    evaluator = state.evaluator()
    endpoint = evaluator.index.endpoints["x/a"]
    assert [t.name for t, _ in evaluator.applicable(endpoint, "ingress")] == ["a-tier", "b-tier", "late"]
    assert [t.name for t in evaluator.tier_order] == [
        "a-tier",
        "b-tier",
        "late",
        "kube-admin",
        "default",
        "kube-baseline",
    ]
    # a policy in a tier nobody defined: sorted after every defined tier, and it denies at its end
    ghost = calico(
        "GlobalNetworkPolicy", "ghost.p", {"tier": "ghost", "selector": "pod == 'c'", "ingress": [{"action": "Log"}]}
    )
    state.apply(ghost)
    evaluator = state.evaluator()
    assert evaluator.tier_order[-1].name == "ghost"
    verdict = evaluator.evaluate(Packet.make(MODEL.ip_of("y/a"), MODEL.ip_of("x/c"), "TCP", 80))
    assert verdict.ingress is not None and verdict.ingress.tier == "a-tier"  # the earliest tier decides first


def test_undefined_tier_denies_at_its_end(state: ClusterState) -> None:
    ghost = {"tier": "ghost", "selector": "pod == 'c'", "ingress": [{"action": "Log"}]}
    state.apply(calico("GlobalNetworkPolicy", "ghost.p", ghost))
    verdict = check(state, "y/a", "x/c")
    assert verdict.ingress is not None and (verdict.ingress.reason, verdict.ingress.tier) == (
        Reason.END_OF_TIER,
        "ghost",
    )


def test_global_network_policy_across_namespaces(state: ClusterState) -> None:
    spec = {
        "order": 1,
        "selector": "pod == 'a'",
        "ingress": [{"action": "Deny", "source": {"namespaceSelector": "ns == 'z'"}}, {"action": "Allow"}],
    }
    state.apply(calico("GlobalNetworkPolicy", "no-z-to-a", spec))
    for namespace in ("x", "y", "z"):
        assert not check(state, "z/b", f"{namespace}/a").allowed
        assert check(state, "y/b", f"{namespace}/a").allowed
        assert check(state, "z/b", f"{namespace}/b").allowed  # not selected
    verdict = check(state, "z/c", "y/a")
    assert verdict.ingress is not None and (verdict.ingress.policy, verdict.ingress.rule_index) == ("no-z-to-a", 0)
    # a namespaceSelector on the policy itself limits where it applies
    state.apply(calico("GlobalNetworkPolicy", "no-z-to-a", {**spec, "namespaceSelector": "ns == 'x'"}))
    assert not check(state, "z/b", "x/a").allowed and check(state, "z/b", "y/a").allowed


def test_global_network_set_and_nets_only_peers(state: ClusterState) -> None:
    state.apply(calico("GlobalNetworkSet", "partners", {"nets": ["203.0.113.0/28"]}, labels={"role": "partner"}))
    spec = {
        "selector": "pod == 'a'",
        "ingress": [{"action": "Allow", "source": {"selector": "role == 'partner'"}}],
        "egress": [{"action": "Allow", "destination": {"selector": "role == 'partner'"}}],
    }
    state.apply(calico("GlobalNetworkPolicy", "partners-only", spec))
    inbound = check(state, EXTERNAL, "x/a")
    assert inbound.allowed and inbound.egress is None  # an address outside the cluster has no egress policy
    assert not check(state, "203.0.113.77", "x/a").allowed  # outside the set
    assert not check(state, "y/b", "x/a").allowed  # endpoints do not carry role=partner
    assert check(state, "x/a", EXTERNAL).allowed and not check(state, "x/a", "203.0.113.77").allowed
    outbound = check(state, "x/a", EXTERNAL)
    assert outbound.ingress is None and outbound.egress is not None and outbound.egress.policy == "partners-only"
    # k8s selectors carry projectcalico.org/orchestrator == 'k8s': a network set never matches them
    state.apply(calico("GlobalNetworkSet", "partners", {"nets": ["203.0.113.0/28"]}, labels={"pod": "b"}))
    state.apply(
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "from-b", "namespace": "y"},
            "spec": {"podSelector": {}, "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "b"}}}]}]},
        }
    )
    assert not check(state, EXTERNAL, "y/c").allowed and check(state, "y/b", "y/c").allowed
    # a namespaceSelector of global() picks network sets only
    state.apply(
        calico(
            "NetworkPolicy",
            "sets",
            {
                "order": 1,
                "ingress": [{"action": "Allow", "source": {"namespaceSelector": "global()", "selector": "pod == 'b'"}}],
            },
            namespace="y",
        )
    )
    assert check(state, EXTERNAL, "y/c").allowed and check(state, "y/b", "y/c").allowed
    from_set = check(state, EXTERNAL, "y/c").ingress
    assert from_set is not None and from_set.policy == "y/sets"


def test_log_then_allow(state: ClusterState) -> None:
    spec = {
        "selector": "pod == 'b'",
        "ingress": [
            {"action": "Log", "protocol": "TCP"},
            {"action": "Log", "protocol": "UDP"},
            {"action": "Allow", "source": {"selector": "pod == 'a'"}},
        ],
        "egress": [{"action": "Log"}, {"action": "Allow"}],
    }
    state.apply(calico("NetworkPolicy", "log-b", spec, namespace="x"))
    verdict = check(state, "x/a", "x/b")
    assert verdict.allowed and verdict.ingress is not None and verdict.ingress.rule_index == 2
    assert [(h.direction, h.rule_index) for h in verdict.logs] == [("ingress", 0)]
    out = check(state, "x/b", "y/a")
    assert out.allowed and [(h.direction, h.policy, h.rule_index) for h in out.logs] == [("egress", "x/log-b", 0)]
    denied = check(state, "x/c", "x/b", protocol="UDP")
    assert not denied.allowed and [h.rule_index for h in denied.logs] == [1]
    assert "log: ingress of x/b: tier default policy x/log-b ingress rule 1 (Log)" in denied.describe()


def test_profiles_decide_when_no_tier_does(state: ClusterState) -> None:
    state.apply(
        calico(
            "Profile",
            "kns.z",
            {
                "ingress": [{"action": "Deny", "source": {"selector": "pod == 'c'"}}, {"action": "Allow"}],
                "egress": [{"action": "Allow"}],
            },
        )
    )
    verdict = check(state, "x/c", "z/a")
    assert not verdict.allowed and verdict.ingress is not None
    assert (verdict.ingress.reason, verdict.ingress.policy, verdict.ingress.rule_index) == (Reason.PROFILE, "kns.z", 0)
    assert check(state, "x/b", "z/a").allowed
    # no namespace, so no kns profile: nothing accepts
    state.delete(state.namespaces["y"])
    gone = check(state, "x/a", "y/a")
    assert not gone.allowed and gone.ingress is not None and gone.ingress.reason is Reason.NO_PROFILE
    assert "no policy decided and no profile accepted" in gone.describe()


def test_host_traffic(state: ClusterState) -> None:
    state.apply(k8s_deny_ingress())
    node = MODEL.node_of("x/a")
    other = next(n for n in MODEL.nodes if n != node)
    own = check(state, str(MODEL.node_ip(node)), "x/a")
    assert own.allowed and own.ingress is not None and own.ingress.reason is Reason.NOT_POLICED
    assert "Felix does not police host-to-local-pod traffic" in own.describe()
    remote = check(state, str(MODEL.node_ip(other)), "x/a")
    assert not remote.allowed and remote.ingress is not None and remote.ingress.reason is Reason.END_OF_TIER
    to_host = state.evaluator(endpoint_to_host="Drop").evaluate(
        Packet.make(MODEL.ip_of("x/a"), MODEL.node_ip(node), "TCP", 10250)
    )
    assert not to_host.allowed and to_host.egress is not None and to_host.egress.reason is Reason.TO_HOST
    assert check(state, "x/a", str(MODEL.node_ip(node)), 10250).allowed  # Accept, the manifests' setting
    self_traffic = check(state, "x/a", "x/a")
    assert self_traffic.allowed and self_traffic.egress is None and "own address" in self_traffic.note


def test_named_ports_resolve_per_destination_pod() -> None:
    a = WorkloadEndpoint("x", "a", (ipaddress.ip_address("10.0.0.1"),), {"app": "client"}, profiles=("kns.x",))
    b = WorkloadEndpoint(
        "x",
        "b",
        (ipaddress.ip_address("10.0.0.2"),),
        {"app": "web"},
        profiles=("kns.x",),
        ports=(NamedPort("http", "TCP", 8080),),
    )
    c = WorkloadEndpoint(
        "x",
        "c",
        (ipaddress.ip_address("10.0.0.3"),),
        {"app": "web"},
        profiles=("kns.x",),
        ports=(NamedPort("http", "UDP", 9090),),
    )
    policy = gnp(
        calico(
            "GlobalNetworkPolicy",
            "web",
            {"selector": "app == 'client'", "egress": [{"action": "Allow", "destination": {"ports": ["http"]}}]},
        )
    )
    evaluator = Evaluator([policy], profiles=[KNS_X], endpoints=[a, b, c])

    def ok(dst: str, protocol: str, port: int) -> bool:
        return evaluator.evaluate(Packet.make("10.0.0.1", dst, protocol, port)).allowed

    assert ok("10.0.0.2", "TCP", 8080) and not ok("10.0.0.2", "TCP", 9090) and not ok("10.0.0.2", "UDP", 8080)
    assert ok("10.0.0.3", "UDP", 9090) and not ok("10.0.0.3", "TCP", 9090)  # no protocol on the rule: any
    tcp_only = gnp(
        calico(
            "GlobalNetworkPolicy",
            "web",
            {
                "selector": "app == 'client'",
                "egress": [{"action": "Allow", "protocol": "TCP", "destination": {"ports": ["http"]}}],
            },
        )
    )
    evaluator = Evaluator([tcp_only], profiles=[KNS_X], endpoints=[a, b, c])
    assert ok("10.0.0.2", "TCP", 8080) and not ok("10.0.0.3", "UDP", 9090)


def rule_of(verdict: Verdict) -> int | str | None:
    """The ingress rule index that decided, or the reason when no rule did."""
    decision = verdict.ingress
    assert decision is not None
    return decision.rule_index if decision.reason is Reason.RULE else decision.reason.value


def test_negations_icmp_and_nets(state: ClusterState) -> None:
    rules = [
        # a notSelector alone still limits the rule to the policy's namespace (GetEntityRuleSelector)
        {"action": "Deny", "source": {"notSelector": "pod == 'b'"}, "protocol": "UDP"},
        {"action": "Deny", "protocol": "TCP", "destination": {"notPorts": [80]}},
        {"action": "Allow", "protocol": "ICMP", "icmp": {"type": 8}},
        {"action": "Deny", "notProtocol": "TCP"},
        {"action": "Allow", "source": {"notNets": ["10.244.1.0/24"]}},  # node-2's pods excluded
    ]
    state.apply(calico("NetworkPolicy", "mixed", {"selector": "pod == 'a'", "ingress": rules}, namespace="x"))
    assert MODEL.node_of("x/b") == "node-2" and MODEL.node_of("x/c") == MODEL.node_of("y/b") == "node-1"
    assert rule_of(check(state, "x/c", "x/a", protocol="UDP")) == 0
    assert rule_of(check(state, "x/b", "x/a", protocol="UDP")) == 3
    assert rule_of(check(state, "y/b", "x/a", protocol="UDP")) == 3  # not in x: rule 0 does not match
    assert rule_of(check(state, "x/c", "x/a", 81)) == 1
    assert check(state, "x/c", "x/a", None, "ICMP", icmp_type=8).allowed
    assert rule_of(check(state, "x/c", "x/a", None, "ICMP", icmp_type=0)) == 3
    assert rule_of(check(state, "x/c", "x/a")) == 4 and rule_of(check(state, "y/b", "x/a")) == 4
    assert rule_of(check(state, "x/b", "x/a")) == "end of tier"


def test_rules_of_the_other_family_do_not_exist() -> None:
    client = WorkloadEndpoint("x", "a", (ipaddress.ip_address("fd00::1"),), profiles=("kns.x",))
    server = WorkloadEndpoint("x", "b", (ipaddress.ip_address("fd00::2"),), {"app": "web"}, profiles=("kns.x",))

    # FilterRuleToIPVersion: notNets of IPv4 only mean the rule is not rendered for IPv6 at all
    policy = gnp(
        calico(
            "GlobalNetworkPolicy",
            "p",
            {"selector": "app == 'web'", "ingress": [{"action": "Allow", "source": {"notNets": ["10.0.0.0/8"]}}]},
        )
    )
    evaluator = Evaluator([policy], profiles=[KNS_X], endpoints=[client, server])
    verdict = evaluator.evaluate(Packet.make("fd00::1", "fd00::2", "TCP", 80))
    assert verdict.ingress is not None and verdict.ingress.reason is Reason.END_OF_TIER
    with pytest.raises(ValueError, match="not of one IP family"):
        Packet.make("fd00::1", "10.0.0.1")


def test_egress_only_policy_leaves_ingress_open(state: ClusterState) -> None:
    state.apply(
        calico("NetworkPolicy", "out", {"selector": "pod == 'a'", "egress": [{"action": "Deny"}]}, namespace="x")
    )
    assert check(state, "y/a", "x/a").allowed
    denied = check(state, "x/a", "y/a")
    assert not denied.allowed and denied.ingress is None  # dropped at egress: ingress never sees it


def test_untracked_and_pre_dnat_policies_do_not_apply_to_workloads(state: ClusterState) -> None:
    spec = {"selector": "all()", "doNotTrack": True, "applyOnForward": True, "ingress": [{"action": "Deny"}]}
    state.apply(calico("GlobalNetworkPolicy", "raw", spec))
    assert check(state, "y/a", "x/a").allowed


def test_one_address_one_endpoint() -> None:
    a = WorkloadEndpoint("x", "a", (ipaddress.ip_address("10.0.0.1"),))
    b = WorkloadEndpoint("x", "b", (ipaddress.ip_address("10.0.0.1"),))
    with pytest.raises(PolicyError, match=r"10\.0\.0\.1 already belongs to x/a"):
        Evaluator(endpoints=[a, b])
    with pytest.raises(PolicyError, match="is both this node's address and x/a's"):
        Evaluator(endpoints=[a], hosts=[Host("n1", (ipaddress.ip_address("10.0.0.1"),))])


def test_packet_text() -> None:
    assert str(Packet.make("10.0.0.1", "10.0.0.2", "udp", 53)) == "10.0.0.1 -> 10.0.0.2 UDP/53"
    assert (
        str(Packet.make("10.0.0.1", "10.0.0.2", "ICMP", icmp_type=8, icmp_code=0))
        == "10.0.0.1 -> 10.0.0.2 ICMP type 8 code 0"
    )
    assert Packet.make("10.0.0.1", "10.0.0.2", "47").protocol == 47
    with pytest.raises(ValueError, match="unknown protocol 'tcpp'"):
        Packet.make("10.0.0.1", "10.0.0.2", "tcpp")
