"""The Kubernetes netpol e2e suite's scenarios (:mod:`tests.support.netpol_scenarios`), judged by the evaluator.

Every scenario runs on the model's cluster in a :class:`ClusterState`; the
evaluator's answer for every pair must be upstream's expectation (loopback
ignored as upstream ignores it), and so must the API-reference reading of the
same policies (:mod:`pycni.policy.k8s_semantics`), so the two opinions check
each other. A failure prints the expected, observed and comparison tables
side by side. The same scenarios run on real pods in
``tests/integration/test_netpol_conformance.py``.
"""

from __future__ import annotations

import pytest

from tests.support.netpol_scenarios import SCENARIOS, EvaluatorWorld, policy, reachability


def test_the_upstream_list_is_complete() -> None:
    numbers = {int(name.split("_", 1)[0]) for name in SCENARIOS}
    assert numbers == set(range(1, 51)), sorted(set(range(1, 51)) - numbers)


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_scenario(name: str) -> None:
    scenario = SCENARIOS[name]
    scenario.run(EvaluatorWorld(scenario.model))


def test_failure_prints_tables_side_by_side() -> None:
    world = EvaluatorWorld()
    world.apply(policy("deny-ingress", selector={}, ingress=[]))
    wrong = reachability()  # expects all allowed: 9 x 3 cells into x are not, 3 of them loopback
    with pytest.raises(AssertionError) as caught:
        world.validate(wrong, 80)
    text = str(caught.value)
    assert "24 wrong results" in text
    assert "expected:" in text and "observed:" in text and "comparison:" in text
    header = next(line for line in text.splitlines() if line.strip().startswith("- "))
    assert header.count("x/a") == 3  # three tables side by side
