"""The corruption campaign (tests/campaigns/corruption.py) in small, inside ``make test``.

One kind of damage for each of four plugin state files (the result cache,
tuning's saved values, a live attachment's reservation, host-local's lock)
and each of the fabric's three (the embedded store, ``subnet.env``, the VTEP
MAC file), picked from the seed; the whole matrix runs with
``.venv/bin/python -m tests.campaigns.corruption --rounds N``.
``PYCNI_CAMPAIGN_SEED`` picks other kinds.
"""

from __future__ import annotations

import os
import random

from tests.campaigns.corruption import kinds_for, render_table, run_campaign

SEED = int(os.environ.get("PYCNI_CAMPAIGN_SEED", "9"))
TARGETS = ("cache", "tuning", "reservation-live", "lock", "store", "subnet-env", "vtep-mac")
SLOW = {"store": ("locked",)}  # holds the store's lock past its 10 s busy timeout twice: ~50 s, in the full run only


def test_corruption_campaign_sample() -> None:
    rng = random.Random(SEED)
    only = [
        f"{target}:{rng.choice([k for k in kinds_for(target) if k not in SLOW.get(target, ())])}" for target in TARGETS
    ]
    report = run_campaign(rounds=1, seed=SEED, only=only)
    assert len(report["cases"]) == len(TARGETS)
    failures = [f"{c['name']}: {f}" for c in report["cases"] for f in c["failures"]]
    assert not failures, "\n".join([*failures, *report["rerun"], render_table(report)])
