"""Measurements the benchmarks share: iperf3 between namespaces, a process's resident memory."""

from __future__ import annotations

import json
import subprocess
import time

from tests.support.netns import run


def iperf(client_ns: str, server_ns: str, server_ip: str, seconds: int, extra: tuple[str, ...] = ()) -> float:
    """Bits per second received by a one-shot iperf3 server in ``server_ns`` from a client in ``client_ns``."""
    server = subprocess.Popen(["ip", "netns", "exec", server_ns, "iperf3", "-s", "-1"], stdout=subprocess.DEVNULL)
    try:
        time.sleep(0.3)
        out = run(
            "iperf3", "-c", server_ip, "-t", str(seconds), "-O", "1", "-J", *extra,
            netns=client_ns, timeout=seconds + 30,
        )  # fmt: skip
        return float(json.loads(out.stdout)["end"]["sum_received"]["bits_per_second"])
    finally:
        server.wait(timeout=30)


def rss_kib(pid: int) -> int:
    """The process's resident set (VmRSS), KiB."""
    with open(f"/proc/{pid}/status") as handle:
        return next(int(line.split()[1]) for line in handle if line.startswith("VmRSS:"))
