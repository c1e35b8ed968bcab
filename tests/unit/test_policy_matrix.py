"""Truth tables and reachability as the netpol e2e suite prints and compares them, and the x/y/z model.

``PrettyPrint`` must give upstream's exact text (``truthtable.go``; the example
is the header comment of ``network_policy.go``); the reachability helpers set
cells as ``reachability.go`` does; the model places pods as documented.
"""

from __future__ import annotations

import ipaddress

import pytest

from pycni.policy.matrix import NetpolModel, Peer, Reachability, TruthTable, probe, side_by_side

PODS = NetpolModel().pod_strings()

# network_policy.go, header comment: default-deny-ingress on x/a, as printed by PrettyPrint("")
UPSTREAM_EXAMPLE = """\
-\tx/a\tx/b\tx/c\ty/a\ty/b\ty/c\tz/a\tz/b\tz/c
x/a\tX\t.\t.\t.\t.\t.\t.\t.\t.
x/b\tX\t.\t.\t.\t.\t.\t.\t.\t.
x/c\tX\t.\t.\t.\t.\t.\t.\t.\t.
y/a\t.\t.\t.\t.\t.\t.\t.\t.\t.
y/b\t.\t.\t.\t.\t.\t.\t.\t.\t.
y/c\t.\t.\t.\t.\t.\t.\t.\t.\t.
z/a\tX\t.\t.\t.\t.\t.\t.\t.\t.
z/b\tX\t.\t.\t.\t.\t.\t.\t.\t.
z/c\tX\t.\t.\t.\t.\t.\t.\t.\t."""


def test_pretty_print_is_upstreams() -> None:
    reachability = Reachability(PODS, True)
    reachability.expect_peer(Peer("x"), Peer("x", "a"), False)
    reachability.expect_peer(Peer("z"), Peer("x", "a"), False)
    assert reachability.expected.pretty_print() == UPSTREAM_EXAMPLE
    assert reachability.expected.pretty_print("\t\t").splitlines()[0].startswith("\t\t-\tx/a")


def test_unobserved_cells_print_question_marks_and_summary_needs_them_all() -> None:
    reachability = Reachability(["x/a", "x/b"])
    reachability.observe("x/a", "x/b", True)
    assert reachability.observed.pretty_print() == "-\tx/a\tx/b\nx/a\t?\t.\nx/b\t?\t?"
    with pytest.raises(ValueError, match="observations not complete"):
        reachability.summary()


def test_expectation_helpers() -> None:
    reachability = Reachability(PODS, True)
    reachability.expect_all_ingress("x/a", False)  # a column
    reachability.expect_all_egress("y/b", False)  # a row
    reachability.expect("y/b", "x/a", True)
    table = reachability.expected
    assert [table.get(p, "x/a") for p in PODS] == [False, False, False, False, True, False, False, False, False]
    assert [table.get("y/b", p) for p in PODS] == [True, False, False, False, False, False, False, False, False]
    reachability.allow_loopback()
    assert all(table.get(p, p) for p in PODS)
    with pytest.raises(KeyError, match="x/q -> x/a is not in the table"):
        table.set("x/q", "x/a", True)


def test_summary_ignores_loopback_and_compare_marks_agreement() -> None:
    reachability = Reachability(["x/a", "x/b"], True)
    for source, target, value in (
        ("x/a", "x/a", False),
        ("x/a", "x/b", True),
        ("x/b", "x/a", False),
        ("x/b", "x/b", True),
    ):
        reachability.observe(source, target, value)
    right, wrong, ignored, comparison = reachability.summary()
    assert (right, wrong, ignored) == (1, 1, 2)
    assert comparison.pretty_print() == "-\tx/a\tx/b\nx/a\tX\t.\nx/b\tX\t."
    assert reachability.summary(ignore_loopback=False)[:3] == (2, 2, 0)
    report = reachability.report()
    assert report.splitlines()[0] == "reachability: correct:1, incorrect:1, result=false (2 loopback cases ignored)"
    lines = report.splitlines()[2:]
    assert lines[0].split() == ["expected:", "observed:", "comparison:"]
    assert lines[1].split() == ["-", "x/a", "x/b"] * 3
    assert lines[3].split() == ["x/b", ".", ".", "x/b", "X", ".", "x/b", "X", "."]
    with pytest.raises(ValueError, match="different rows or columns"):
        TruthTable(["a"], ["a"], True).compare(TruthTable(["b"], ["b"], True))


def test_side_by_side_pads_columns() -> None:
    wide = TruthTable(["long-namespace/pod"], ["long-namespace/pod"], True)
    text = side_by_side([("one:", wide), ("two:", TruthTable(["a"], ["a"], False))])
    first, header, row = text.splitlines()
    assert first.startswith("one:") and "two:" in first
    assert header.index("- a") == first.index("two:")  # the second table starts where its title does
    assert row.rstrip().endswith("a X")


def test_model_places_pods_over_nodes() -> None:
    model = NetpolModel()
    assert model.pod_strings() == ["x/a", "x/b", "x/c", "y/a", "y/b", "y/c", "z/a", "z/b", "z/c"]
    assert [model.node_of(p) for p in ("x/a", "x/b", "x/c")] == ["node-1", "node-2", "node-1"]
    assert [str(model.ip_of(p)) for p in ("x/a", "x/b", "x/c", "z/c")] == [
        "10.244.0.2",
        "10.244.1.2",
        "10.244.0.3",
        "10.244.0.6",
    ]
    assert model.node_ip("node-2") == ipaddress.ip_address("198.51.100.11")
    assert len({model.ip_of(p) for p in model.pod_strings()}) == 9
    pod = model.pod_object("y/b")
    assert (pod.namespace, pod.name, pod.labels, pod.service_account) == ("y", "b", {"pod": "b"}, "default")
    assert [(p.name, p.container_port, p.protocol) for p in pod.ports] == [
        ("serve-80-tcp", 80, "TCP"),
        ("serve-80-udp", 80, "UDP"),
        ("serve-81-tcp", 81, "TCP"),
        ("serve-81-udp", 81, "UDP"),
    ]
    assert [ns.labels for ns in model.namespace_objects()][1] == {"kubernetes.io/metadata.name": "y", "ns": "y"}
    endpoint = model.endpoints()[0]
    assert endpoint.labels == {
        "pod": "a",
        "projectcalico.org/namespace": "x",
        "projectcalico.org/orchestrator": "k8s",
        "projectcalico.org/serviceaccount": "default",
    }
    assert endpoint.profiles == ("kns.x", "ksa.x.default")
    table = probe(model, lambda s, t: s.startswith("x"), ["x/a", "y/a"])
    assert table.pretty_print() == "-\tx/a\ty/a\nx/a\t.\t.\ny/a\tX\tX"
