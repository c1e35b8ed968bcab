"""The pure core of the dataplane drivers: the delta between desired and actual is always exact.

Property: after any sequence of changes to either side, the pending updates
are exactly the keys desired but absent or different in actual, the pending
deletions exactly the keys in actual not desired; applying them (deletions
removed, updates written) makes actual equal desired and leaves nothing pending.
A partial apply leaves exactly the rest pending.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from pycni.dataplane.delta import DeltaTracker
from tests.support import strategies as _profiles  # noqa: F401  (registers and loads the hypothesis profiles)

# Cheap pure checks: more examples than the fast profile's default, never fewer than a campaign's.
many = settings(max_examples=max(100, settings.default.max_examples))

keys = st.integers(0, 12)
values = st.sampled_from(["a", "b", "c"])
mappings = st.dictionaries(keys, values, max_size=10)
operations = st.one_of(
    st.tuples(st.just("set_desired"), keys, values),
    st.tuples(st.just("delete_desired"), keys, st.none()),
    st.tuples(st.just("replace_desired"), mappings, st.none()),
    st.tuples(st.just("set_actual"), keys, values),
    st.tuples(st.just("delete_actual"), keys, st.none()),
    st.tuples(st.just("replace_actual"), mappings, st.none()),
)


def run(tracker: DeltaTracker[int, str], ops: list[tuple[str, Any, Any]]) -> tuple[dict[int, str], dict[int, str]]:
    """Apply ``ops`` to ``tracker`` and to two plain dicts (the model); returns the model."""
    desired: dict[int, str] = {}
    actual: dict[int, str] = {}
    for name, arg, value in ops:
        side = desired if name.endswith("desired") else actual
        if name.startswith("set"):
            side[arg] = value
        elif name.startswith("delete"):
            side.pop(arg, None)
        else:
            side.clear()
            side.update(arg)
        getattr(tracker, name)(*((arg, value) if name.startswith("set") else (arg,)))
    return desired, actual


def expected_delta(desired: dict[int, str], actual: dict[int, str]) -> tuple[dict[int, str], dict[int, str]]:
    updates = {k: v for k, v in desired.items() if actual.get(k) != v}
    deletions = {k: v for k, v in actual.items() if k not in desired}
    return updates, deletions


@many
@given(st.lists(operations, max_size=30))
def test_the_delta_is_exactly_the_difference(ops: list[tuple[str, Any, Any]]) -> None:
    tracker: DeltaTracker[int, str] = DeltaTracker()
    desired, actual = run(tracker, ops)
    updates, deletions = expected_delta(desired, actual)
    assert dict(tracker.pending_updates) == updates
    assert dict(tracker.pending_deletions) == deletions
    assert dict(tracker.desired_items()) == desired
    assert dict(tracker.actual_items()) == actual
    assert tracker.in_sync == (not updates and not deletions)


@many
@given(st.lists(operations, max_size=30))
def test_applying_the_delta_to_actual_yields_desired(ops: list[tuple[str, Any, Any]]) -> None:
    tracker: DeltaTracker[int, str] = DeltaTracker()
    desired, _ = run(tracker, ops)
    for key, _ in tracker.pending_deletions:
        tracker.deleted(key)
    for key, _ in tracker.pending_updates:
        tracker.applied(key)
    assert dict(tracker.actual_items()) == desired
    assert tracker.in_sync
    assert tracker.pending_updates == [] and tracker.pending_deletions == []


@many
@given(st.lists(operations, max_size=30), st.sets(keys))
def test_a_partial_apply_leaves_exactly_the_rest_pending(ops: list[tuple[str, Any, Any]], failing: set[int]) -> None:
    tracker: DeltaTracker[int, str] = DeltaTracker()
    desired, actual = run(tracker, ops)
    for key, _ in tracker.pending_deletions:
        if key not in failing:
            tracker.deleted(key)
            actual.pop(key)
    for key, value in tracker.pending_updates:
        if key not in failing:
            tracker.applied(key)
            actual[key] = value
    updates, deletions = expected_delta(desired, actual)
    assert dict(tracker.pending_updates) == updates
    assert dict(tracker.pending_deletions) == deletions
    assert set(updates) | set(deletions) <= failing


@many
@given(mappings, mappings)
def test_a_resync_that_finds_the_kernel_as_desired_has_nothing_to_do(
    desired: dict[int, str], extra: dict[int, str]
) -> None:
    tracker: DeltaTracker[int, str] = DeltaTracker()
    tracker.replace_desired(desired)
    tracker.replace_actual(desired)
    assert tracker.in_sync
    # Drift on the kernel side shows up as exactly that drift.
    drifted = {**desired, **extra}
    tracker.replace_actual(drifted)
    updates, deletions = expected_delta(desired, drifted)
    assert dict(tracker.pending_updates) == updates
    assert dict(tracker.pending_deletions) == deletions


def test_pending_work_comes_in_the_order_it_arose() -> None:
    tracker: DeltaTracker[str, int] = DeltaTracker()
    for name in ("c", "a", "b"):
        tracker.set_desired(name, 1)
    assert [key for key, _ in tracker.pending_updates] == ["c", "a", "b"]


def test_a_custom_equality_decides_what_is_different() -> None:
    tracker: DeltaTracker[str, str] = DeltaTracker(equal=lambda a, b: a.lower() == b.lower())
    tracker.set_actual("mac", "AA:BB")
    tracker.set_desired("mac", "aa:bb")
    assert tracker.in_sync


def test_values_that_are_none_still_track_presence() -> None:
    tracker: DeltaTracker[str, None] = DeltaTracker()
    tracker.set_actual("x", None)
    assert dict(tracker.pending_deletions) == {"x": None}
    tracker.set_desired("x", None)
    assert tracker.in_sync
    tracker.delete_desired("x")
    assert dict(tracker.pending_deletions) == {"x": None}
