"""The corruption campaign (tests/campaigns/corruption.py) in small, inside ``make test``.

One kind of damage for each of four state files, picked from the seed: two
of the plugins' (the result cache and a live attachment's host-local
reservation, the two a crashed node most often has damaged) and two of the
fabric's (the embedded store and the VTEP MAC file). The other targets
(tuning's saved values, host-local's lock and ``last_reserved_ip``,
``subnet.env``) and every kind of every target run in the whole matrix:
``make campaign-corruption`` (``--rounds N``). ``PYCNI_CAMPAIGN_SEED`` picks
other kinds here.
"""

from __future__ import annotations

import os
import random

from tests.campaigns.corruption import kinds_for, render_table, run_campaign

SEED = int(os.environ.get("PYCNI_CAMPAIGN_SEED", "9"))
TARGETS = ("cache", "reservation-live", "store", "vtep-mac")  # make test's CPU budget: ~9 s of CPU a case
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
