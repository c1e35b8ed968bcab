"""The SIGKILL campaign (tests/campaigns/sigkill.py) with small counts: a kill per target, nothing left behind.

The full run (at least 200 kills) is the script: ``.venv/bin/python -m
tests.campaigns.sigkill --kills 200 --seed 1 --json sigkill.json``.
"""

from __future__ import annotations

import os
import re

import pytest

from tests.campaigns.sigkill import render_table, run_campaign
from tests.campaigns.sigkill_common import Kill, bench
from tests.campaigns.sigkill_flannel import FlannelCampaign
from tests.campaigns.sigkill_syscalls import Aim

TIMED = ("plugin", "runtime", "worker", "supervisor")  # on the chain; flanneld has its own test below
# bandwidth killed right before it brings its new ifb up (made, down, no alias yet), and before its DEL's one change
AIMS = [("ADD", Aim("bandwidth", 0, 0, "sendto", 6)), ("DEL", Aim("bandwidth", 0, 0, "sendto", 1))]


def test_sigkill_campaign_short() -> None:
    """One kill of each timed target on the chain, phases as seed 1 draws them, and two syscall kills of bandwidth."""
    report = run_campaign(len(TIMED), seed=1, targets=TIMED, time_limit=150, aims=AIMS)
    table = render_table(report)
    assert {row["target"] for row in report["summary"]} == {*TIMED, "syscall"}, table
    assert report["kills"] == len(TIMED) + len(AIMS), table  # a miss (the call ended first) is retried, not counted
    assert report["leaks"] == 0, table
    assert report["problems"] == 0, table
    for name, final in report["final"].items():
        assert final["left_after_gc_all"] == [], f"{name}: {table}"
        assert final["problems"] == [], f"{name}: {table}"


def test_flanneld_killed_before_each_etcd_request_of_its_restart_leaves_no_orphaned_lease() -> None:
    """The agent's restart renews its lease in etcd; a kill between two of those requests used to leave an
    etcd lease attached to no key for a day (grant, put, revoke); now the key's own lease is refreshed.
    Every kill is followed by a restart that must reconverge both nodes (routes, FDB, rules, leases)."""
    if not os.access("/usr/bin/etcd", os.X_OK):
        pytest.skip("etcd is not installed (apt-get install etcd-server etcd-client)")
    with bench() as env:
        campaign = FlannelCampaign(env.pool, env.dir("fabric"), env.pycni, env.plugin_dir, gc_every=1)
        try:
            campaign.start()
            assert not campaign.trace_start()
            calls = campaign.start_effects
            requests = [n for n, call in enumerate(calls, 1) if re.search(r'"POST /v3/(lease|kv/put|kv/txn)', call)]
            assert requests, calls
            for n in requests:
                kill = Kill(n, "flanneld", "start", (n - 0.5) / len(calls))
                campaign.run(kill)
                assert kill.killed, f"the kill before effect {n} ({calls[n - 1][:80]}) did not land"
                assert kill.leaks == [] and kill.left_after_del == [], f"{kill.killed}: {kill.leaks}"
                assert kill.problems == [], kill.problems
            pod = Kill(len(calls) + 1, "flanneld", "ADD", 0.5)  # and once while a pod is being added on its node
            campaign.run(pod)
            assert pod.killed and pod.call_rc == 0 and pod.leaks == [] and pod.problems == [], pod
            assert campaign.finish()["left_after_gc_all"] == []
        finally:
            campaign.close()
