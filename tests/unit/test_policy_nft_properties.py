"""Property tests of incremental updates: the diff of A -> B applied to a kernel holding A gives B.

"Kernel" is :class:`~pycni.nft.fake.FakeRuleset`, which refuses what the kernel
refuses (a dangling reference, a busy chain or set, overlapping intervals, a
map key bound twice), so a wrongly ordered or incomplete transaction fails.
Two generators: the policy tables of generated clusters (pods coming and going,
relabelled, named ports, network sets, tiers with Pass and defaultAction,
Kubernetes and Calico policies), and arbitrary consistent tables (chains
jumping to chains, sets changing type, maps re-pointed), which reach the paths
the renderer never takes.
"""

from __future__ import annotations

from typing import Any

import pytest

from pycni.nft.fake import FakeRuleset
from pycni.nft.objects import Chain, Hook, Map, Set, Table, create, diff
from pycni.policy import nft_render
from pycni.policy.cluster import ClusterState

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from tests.support import strategies  # noqa: E402, F401 - pycni's hypothesis profile

PODS = {"x/a": "10.65.0.2", "x/b": "10.65.0.3", "y/c": "10.65.0.4", "y/d": "10.65.0.5"}
NAMED_PORTS = {"http": (8080, "TCP"), "web": (80, "TCP"), "dns": (53, "UDP")}
apps = st.sampled_from(["a", "b", "c"])
selectors = st.sampled_from(["all()", "app == 'a'", "app in {'b', 'c'}", "has(team)", "!has(team)", "role == 'infra'"])


@st.composite
def pods(draw: st.DrawFn, key: str) -> dict[str, Any]:
    namespace, name = key.split("/")
    labels = {"app": draw(apps)}
    if draw(st.booleans()):
        labels["team"] = draw(st.sampled_from(["red", "blue"]))
    ports = []
    for name in draw(st.lists(st.sampled_from(sorted(NAMED_PORTS)), max_size=2, unique=True)):
        number, protocol = NAMED_PORTS[name]
        number = draw(st.sampled_from([number, 8081]))  # the same name, another number on some pods
        ports.append({"name": name, "containerPort": number, "protocol": protocol})
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {"nodeName": "node-1", "containers": [{"name": "c", "ports": ports}]},
        "status": {"podIPs": [{"ip": PODS[key]}]},
    }


@st.composite
def entities(draw: st.DrawFn) -> dict[str, Any]:
    entity: dict[str, Any] = {}
    for key, values in (
        ("nets", st.lists(st.sampled_from(["10.65.0.0/30", "10.99.0.0/24", "10.65.0.4/32"]), min_size=1, max_size=2)),
        ("notNets", st.lists(st.sampled_from(["10.65.0.2/32", "10.0.0.0/8"]), min_size=1, max_size=1)),
        ("selector", selectors),
        ("notSelector", selectors),
    ):
        if draw(st.integers(0, 3)) == 0:
            entity[key] = draw(values)
    return entity


@st.composite
def calico_rules(draw: st.DrawFn) -> dict[str, Any]:
    rule: dict[str, Any] = {"action": draw(st.sampled_from(["Allow", "Deny", "Pass", "Log"]))}
    protocol = draw(st.sampled_from([None, "TCP", "UDP", "ICMP"]))
    if protocol:
        rule["protocol"] = protocol
    rule["source"] = draw(entities())
    destination = draw(entities())
    if protocol in ("TCP", "UDP"):
        ports = draw(st.lists(st.sampled_from([80, "8000:8100", "http", "web", "dns"]), max_size=3, unique=True))
        if ports:
            destination["ports"] = ports
        if draw(st.booleans()):
            destination["notPorts"] = [draw(st.sampled_from([81, "http"]))]
    elif protocol == "ICMP" and draw(st.booleans()):
        rule["icmp"] = {"type": 8, **({"code": 0} if draw(st.booleans()) else {})}
    elif protocol is None and draw(st.booleans()):
        destination["ports"] = ["http"]
    rule["destination"] = destination
    return rule


@st.composite
def calico_policies(draw: st.DrawFn, index: int) -> dict[str, Any]:
    is_global = draw(st.booleans())
    tier = draw(st.sampled_from(["default", "t1"]))
    name = f"p{index}" if tier == "default" else f"t1.p{index}"
    spec: dict[str, Any] = {"tier": tier, "selector": draw(selectors)}
    if draw(st.booleans()):
        spec["order"] = draw(st.sampled_from([10, 100, 1000]))
    spec["ingress"] = draw(st.lists(calico_rules(), max_size=3))
    spec["egress"] = draw(st.lists(calico_rules(), max_size=3))
    spec["types"] = draw(st.sampled_from([["Ingress"], ["Egress"], ["Ingress", "Egress"]]))
    metadata: dict[str, Any] = {"name": name}
    if not is_global:
        metadata["namespace"] = draw(st.sampled_from(["x", "y"]))
    kind = "GlobalNetworkPolicy" if is_global else "NetworkPolicy"
    return {"apiVersion": "projectcalico.org/v3", "kind": kind, "metadata": metadata, "spec": spec}


@st.composite
def kubernetes_policies(draw: st.DrawFn, index: int) -> dict[str, Any]:
    peer = draw(st.sampled_from([{}, {"podSelector": {"matchLabels": {"app": "a"}}}, {"namespaceSelector": {}}]))
    ports = draw(st.sampled_from([[], [{"port": 80}], [{"port": "http"}], [{"port": "dns", "protocol": "UDP"}]]))
    rule = {**({"from": [peer]} if peer else {}), **({"ports": ports} if ports else {})}
    spec: dict[str, Any] = {
        "podSelector": draw(st.sampled_from([{}, {"matchLabels": {"app": "b"}}])),
        "ingress": [rule] if draw(st.booleans()) else [],
    }
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": f"k{index}", "namespace": draw(st.sampled_from(["x", "y"]))},
        "spec": spec,
    }


@st.composite
def clusters(draw: st.DrawFn) -> tuple[ClusterState, dict[str, str]]:
    state = ClusterState()
    for namespace in ("x", "y"):
        state.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    present = draw(st.lists(st.sampled_from(sorted(PODS)), min_size=1, unique=True))
    for key in present:
        state.apply(draw(pods(key)))
    if draw(st.booleans()):
        action = draw(st.sampled_from(["Deny", "Pass"]))
        state.apply(
            {
                "apiVersion": "projectcalico.org/v3",
                "kind": "Tier",
                "metadata": {"name": "t1"},
                "spec": {"order": 100, "defaultAction": action},
            }
        )
    for index in range(draw(st.integers(0, 2))):
        nets = draw(st.lists(st.sampled_from(["10.65.0.0/30", "10.99.0.0/24", "10.65.0.5/32"]), min_size=1))
        labels = {"role": draw(st.sampled_from(["infra", "edge"]))}
        state.apply(
            {
                "apiVersion": "projectcalico.org/v3",
                "kind": "GlobalNetworkSet",
                "metadata": {"name": f"set{index}", "labels": labels},
                "spec": {"nets": nets},
            }
        )
    for index in range(draw(st.integers(0, 3))):
        state.apply(draw(st.one_of(calico_policies(index), kubernetes_policies(index))))
    local = draw(st.lists(st.sampled_from(present), unique=True))
    return state, {f"cali{key.replace('/', '')}": key for key in local}


def assert_diff_reaches(before: Table, after: Table) -> None:
    fake = FakeRuleset()
    fake.apply(create(before))
    assert fake.table(before.family, before.name) == before
    tx = diff(before, after)
    fake.apply(tx)
    assert fake.table(after.family, after.name) == after
    unchanged = {n for n, c in after.chains.items() if n in before.chains and before.chains[n] == c}
    flushed = {op.name for op in tx.ops if op.verb == "flush"}
    assert not (flushed & unchanged) or any(
        before.sets.get(n) and before.sets[n].declaration() != s.declaration() for n, s in after.sets.items()
    ), "only chains whose rules changed are flushed"
    assert not any(op.kind == "table" and op.verb != "add" for op in tx.ops), "the table is never flushed or deleted"


@given(clusters(), clusters())
def test_policy_table_diff_applied_to_a_gives_b(a: tuple[ClusterState, dict[str, str]], b: Any) -> None:
    before = nft_render.render(a[0].evaluator(), a[1])
    after = nft_render.render(b[0].evaluator(), b[1])
    assert_diff_reaches(before, after)
    assert_diff_reaches(after, before)
    assert diff(after, after).render() == "add table inet pycni-policy\n"


@given(clusters(), st.data())
def test_small_changes_to_one_cluster(start: tuple[ClusterState, dict[str, str]], data: st.DataObject) -> None:
    state, local = start
    before = nft_render.render(state.evaluator(), local)
    key = data.draw(st.sampled_from(sorted(state.endpoints)))
    state.set_pod_labels(key, {"app": data.draw(apps), "team": "red"})
    state.apply(data.draw(calico_policies(9)))
    after = nft_render.render(state.evaluator(), local)
    assert_diff_reaches(before, after)


# -- arbitrary consistent tables -------------------------------------------------------------

CHAINS = ["c0", "c1", "c2", "c3"]
SET_KINDS = {
    "v4": ("ipv4_addr", (), ["10.0.0.1", "10.0.0.2", "10.0.0.3"]),
    "v4i": ("ipv4_addr", ("interval",), ["10.0.0.0/24", "10.1.0.0/16", "10.2.0.1"]),
    "port": ("inet_service", (), ["80", "443", "8080"]),
}


@st.composite
def tables(draw: st.DrawFn) -> Table:
    sets = {}
    for name in draw(st.lists(st.sampled_from(["s0", "s1", "s2"]), unique=True)):
        type_, flags, pool = SET_KINDS[draw(st.sampled_from(sorted(SET_KINDS)))]
        sets[name] = Set(name, type_, flags, frozenset(draw(st.lists(st.sampled_from(pool), unique=True))))
    names = draw(st.lists(st.sampled_from(CHAINS), unique=True))
    chains: dict[str, Chain] = {}
    for position, name in enumerate(names):
        later = names[position + 1 :]  # jumps only go down the list: no loops
        templates = ["accept", "drop", *(f"jump {c}" for c in later), *(f"goto {c}" for c in later)]
        for set_name, declared in sets.items():
            word = "th dport" if declared.type == "inet_service" else "ip saddr"
            templates += [f"{word} @{set_name} accept", f"{word} != @{set_name} drop"]
        rules = tuple(draw(st.lists(st.sampled_from(templates), max_size=3)))
        chains[name] = Chain(name, rules)
    maps = {}
    if draw(st.booleans()):
        keys = draw(st.lists(st.sampled_from(['"if0"', '"if1"', '"if2"']), unique=True)) if names else []
        maps["m"] = Map("m", "ifname : verdict", {k: f"goto {draw(st.sampled_from(names))}" for k in keys})
        if draw(st.booleans()):
            policy = draw(st.sampled_from(["accept", "drop"]))
            chains["base"] = Chain("base", ("iifname vmap @m",), Hook(policy=policy))
    return Table("inet", "t", chains, sets, maps)


@given(tables(), tables())
def test_any_table_diff_applied_to_a_gives_b(before: Table, after: Table) -> None:
    assert_diff_reaches(before, after)
