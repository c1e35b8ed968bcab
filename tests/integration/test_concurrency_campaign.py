"""The concurrency campaign (tests/campaigns/concurrency.py) with small counts."""

from __future__ import annotations

from tests.campaigns.concurrency import campaign, problems


def test_parallel_adds_and_pairs_through_the_daemon() -> None:
    report = campaign(adds=24, pairs=3, progress=False)  # make campaign-concurrency: 200 and 50
    assert problems(report) == []
    ran = [o for o in report["outcomes"] if not o.get("skipped")]
    assert len(ran) >= 13, "every plugin type this kernel supports ran"
    assert all(o["calls"] > 0 for o in ran)


def test_parallel_adds_each_in_its_own_process() -> None:
    """No daemon: every ADD and GC its own process, so host-local's file lock is what keeps order."""
    report = campaign(adds=12, pairs=0, in_process=True, progress=False)
    assert problems(report) == []
