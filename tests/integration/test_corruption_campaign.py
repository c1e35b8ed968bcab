"""The corruption campaign (tests/campaigns/corruption.py) in small, inside ``make test``.

One kind of damage for each of four state files (the result cache, tuning's
saved values, a live attachment's reservation, host-local's lock), picked
from the seed; the whole matrix runs with
``.venv/bin/python -m tests.campaigns.corruption --rounds N``.
``PYCNI_CAMPAIGN_SEED`` picks other kinds.
"""

from __future__ import annotations

import os
import random

from tests.campaigns.corruption import kinds_for, render_table, run_campaign

SEED = int(os.environ.get("PYCNI_CAMPAIGN_SEED", "9"))
TARGETS = ("cache", "tuning", "reservation-live", "lock")


def test_corruption_campaign_sample() -> None:
    rng = random.Random(SEED)
    only = [f"{target}:{rng.choice(kinds_for(target))}" for target in TARGETS]
    report = run_campaign(rounds=1, seed=SEED, only=only)
    assert len(report["cases"]) == len(TARGETS)
    failures = [f"{c['name']}: {f}" for c in report["cases"] for f in c["failures"]]
    assert not failures, "\n".join([*failures, *report["rerun"], render_table(report)])
