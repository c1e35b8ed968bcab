"""The SIGKILL campaign (tests/campaigns/sigkill.py) with a small count: one kill per target, nothing left.

The full run (at least 200 kills) is the script: ``.venv/bin/python -m
tests.campaigns.sigkill --kills 200 --seed 1 --json sigkill.json``.
"""

from __future__ import annotations

import os

import pytest

from tests.campaigns.sigkill import TARGETS, render_table, run_campaign


def test_sigkill_campaign_short() -> None:
    if not os.access("/usr/bin/etcd", os.X_OK):
        pytest.skip("etcd is not installed (apt-get install etcd-server etcd-client)")
    report = run_campaign(len(TARGETS), seed=1, targets=TARGETS, time_limit=150)
    table = render_table(report)
    assert {row["target"] for row in report["summary"]} == set(TARGETS), table
    assert report["kills"] == len(TARGETS), table  # a call that ended before its kill came is retried, not counted
    assert report["leaks"] == 0, table
    assert report["problems"] == 0, table
    for name, final in report["final"].items():
        assert final["left_after_gc_all"] == [], f"{name}: {table}"
        assert final["problems"] == [], f"{name}: {table}"
