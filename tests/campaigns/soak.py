"""Resource soak: ``pycni daemon`` through thousands of ADD/DEL cycles (issue 9, part 3).

Run as root from the repository::

    .venv/bin/python -m tests.campaigns.soak --cycles 10000 --json soak.json

``make test`` runs a short one (``tests/integration/test_campaigns.py``).

One cycle is the seed's Case 2 chain on one container: bridge ADD (Case 1's
``bridge.json``: host-local, ipMasq), portmap ADD (a hostPort, with the
bridge's result as prevResult), portmap DEL, bridge DEL; two client threads
each cycle their own container, so both daemon workers are busy. Calls go
to the daemon's socket directly from this process, as the shim sends them,
so what is measured is the daemon, not plugin start-up.

Measured on the daemon's processes (supervisor and workers, summed): RSS,
open descriptors and threads, when it has started (before any call), after
the first 100 cycles (caches filled: libnftables, pyroute2 sockets, imported
code's first-use state), and every 1000 cycles after. The verdict is on
growth from the 100-cycle mark to the end (RSS) and from the start (fds,
threads: these must come back exactly). At the end the node is compared with
a fresh one: only the bridge device may remain (the Go bridge plugin keeps it
too); no veth, address reservation, masquerade or port-mapping rule.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.support.daemon import DaemonProcess, call_direct
from tests.support.netns import NetnsPool, netns_pool, run
from tests.support.node import differences, process_usage, snapshot
from tests.support.progress import progress as show_progress
from tests.support.seed import case1

CLIENTS = 2
WORKERS = 2
SETTLE_SECONDS = 1.0
RSS_GROWTH_LIMIT_KIB = 8 * 1024  # over 10,000 cycles after warm-up; a leak of one object per call shows as far more


def settled_usage(pid: int, processes: int, timeout: float = 15.0) -> dict[str, int]:
    """The daemon's usage once it holds still: ``processes`` processes and two samples alike, SETTLE_SECONDS apart.

    A worker that is still setting up (its wakeup pipe and poller come after
    the first worker answers) or still doing a DEL's deferred clean-up holds a
    descriptor for a moment; that is not a leak, and counting it would make
    the start and end figures depend on the machine's load.
    """
    deadline = time.monotonic() + timeout
    last = process_usage(pid)
    while time.monotonic() < deadline:
        time.sleep(SETTLE_SECONDS)
        now = process_usage(pid)
        if now == last and now["processes"] == processes:
            break
        last = now
    return last


class Soak:
    def __init__(self, pool: NetnsPool, work: Path, plugin_dir: str) -> None:
        self.node = pool.new("soak-node")
        self.containers = [pool.new(f"soak-c{i}") for i in range(CLIENTS)]
        self.work = work
        self.plugin_dir = plugin_dir
        self.socket_path = work / "run" / "pycni.sock"
        self.bridge = case1(work / "ipam", cniVersion="1.0.0")
        self.failures: list[str] = []
        self.calls = 0
        self.lock = threading.Lock()

    def _call(self, plugin_type: str, verb: str, client: int, cycle: int, config: dict[str, Any]) -> dict[str, Any]:
        env = {
            "CNI_COMMAND": verb,
            "CNI_CONTAINERID": f"soak-{client}-{cycle}",
            "CNI_NETNS": NetnsPool.path(self.containers[client]),
            "CNI_IFNAME": "eth0",
            "CNI_PATH": self.plugin_dir,
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        }
        rc, out, _err = call_direct(
            self.socket_path,
            plugin_type,
            env,
            json.dumps(config).encode(),
            NetnsPool.path(self.node),
            NetnsPool.path(self.containers[client]),
        )
        with self.lock:
            self.calls += 1
            if rc != 0:
                self.failures.append(f"{plugin_type} {verb} {env['CNI_CONTAINERID']}: {out.decode()[:200]}")
        return json.loads(out) if rc == 0 and out.strip() else {}

    def cycle(self, client: int, cycle: int) -> None:
        result = self._call("bridge", "ADD", client, cycle, self.bridge)
        portmap = {
            "cniVersion": "1.0.0",
            "name": "mynet",
            "type": "portmap",
            "capabilities": {"portMappings": True},
            "runtimeConfig": {"portMappings": [{"hostPort": 8080 + client, "containerPort": 80, "protocol": "tcp"}]},
            "prevResult": result,
        }
        self._call("portmap", "ADD", client, cycle, portmap)
        self._call("portmap", "DEL", client, cycle, portmap)
        self._call("bridge", "DEL", client, cycle, self.bridge)

    def run_cycles(self, first: int, count: int, cycled: Callable[[int], None] = lambda cycle: None) -> None:
        """``count`` cycles, split between the client threads; ``cycled(n)`` after each (from its thread)."""

        def client_loop(client: int) -> None:
            for cycle in range(first + client, first + count, CLIENTS):
                self.cycle(client, cycle)
                cycled(cycle)

        threads = [threading.Thread(target=client_loop, args=(i,)) for i in range(CLIENTS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()


def soak(cycles: int, progress: bool = True) -> dict[str, Any]:
    from pycni.cli.install import install

    with tempfile.TemporaryDirectory(prefix="pycni-soak-") as tmp, netns_pool("soak") as pool:
        work = Path(tmp)
        plugin_dir = work / "bin"
        install(str(plugin_dir))
        campaign = Soak(pool, work, str(plugin_dir))
        fresh = snapshot(campaign.node)
        daemon = DaemonProcess(campaign.socket_path, workers=WORKERS, log_path=work / "daemon.log")
        daemon.start()
        samples: list[dict[str, Any]] = []
        started = time.monotonic()
        try:
            samples.append({"cycles": 0, **settled_usage(daemon.pid, 1 + WORKERS)})
            marks = sorted({m for m in (100, *range(1000, cycles + 1, 1000), cycles) if m <= cycles})
            done = 0
            with show_progress("soak campaign", total=cycles, unit="cycle", enabled=progress) as bar:
                for mark in marks:
                    campaign.run_cycles(done, mark - done, lambda cycle: bar.advance(detail=f"cycle {cycle}"))
                    done = mark
                    usage = settled_usage(daemon.pid, 1 + WORKERS)  # the last DELs' clean-up runs after their replies
                    samples.append({"cycles": done, "seconds": round(time.monotonic() - started, 1), **usage})
                    bar.note(f"soak: {samples[-1]}")
        finally:
            daemon.stop()
        leftovers = differences(fresh, snapshot(campaign.node))
        leftover_bridge_only = all(
            part in ("links", "addresses", "routes") and all("mynet0" in line for line in new) and not gone
            for part, (gone, new) in leftovers.items()
        )
        reservations = [p.name for p in (work / "ipam" / "mynet").glob("*") if p.name[0].isdigit()]
        veths = run("ip", "-o", "link", "show", "type", "veth", netns=campaign.node).stdout.splitlines()
    warm = next(s for s in samples if s["cycles"] == min(100, cycles))
    end = samples[-1]
    return {
        "cycles": cycles,
        "calls": campaign.calls,
        "failed_calls": len(campaign.failures),
        "first_failures": campaign.failures[:5],
        "seconds": round(time.monotonic() - started, 1),
        "samples": samples,
        "rss_growth_after_warmup_kib": end["rss_kib"] - warm["rss_kib"],
        "fds_start_end": [samples[0]["fds"], end["fds"]],
        "threads_start_end": [samples[0]["threads"], end["threads"]],
        "leftovers": {part: new for part, (_gone, new) in leftovers.items()},
        "only_the_bridge_left": leftover_bridge_only,
        "reservations_left": len(reservations),
        "veths_left": len(veths),
    }


def verdict(report: dict[str, Any]) -> list[str]:
    """What is wrong, one line each; empty when the soak passed."""
    problems = []
    if report["failed_calls"]:
        problems.append(f"{report['failed_calls']} calls failed: {report['first_failures']}")
    if report["rss_growth_after_warmup_kib"] > RSS_GROWTH_LIMIT_KIB:
        problems.append(f"RSS grew {report['rss_growth_after_warmup_kib']} KiB after warm-up")
    if report["fds_start_end"][0] != report["fds_start_end"][1]:
        problems.append(f"open descriptors {report['fds_start_end']}")
    if report["threads_start_end"][0] != report["threads_start_end"][1]:
        problems.append(f"threads {report['threads_start_end']}")
    if not report["only_the_bridge_left"] or report["reservations_left"] or report["veths_left"]:
        problems.append(f"left behind: {report['leftovers']}, {report['reservations_left']} reservations")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cycles", type=int, default=10000)
    parser.add_argument("--json", help="write the report here")
    opts = parser.parse_args(argv)
    report = soak(opts.cycles)
    problems = verdict(report)
    report["problems"] = problems
    if opts.json:
        Path(opts.json).write_text(json.dumps(report, indent=2) + "\n")
    summary = {k: v for k, v in report.items() if k not in ("samples", "first_failures")}
    print(json.dumps(summary, indent=2))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
