"""The resource soak (tests/campaigns/soak.py) with a small count: flat descriptors and threads, nothing left."""

from __future__ import annotations

import pytest

from tests.campaigns.soak import soak, verdict

pytestmark = pytest.mark.serial  # descriptors and threads are read while the daemon settles; no neighbours


def test_daemon_soak_short() -> None:
    report = soak(150, progress=False)  # make campaign-soak runs 10,000
    assert report["calls"] == 4 * 150
    assert verdict(report) == [], report["leftovers"]
