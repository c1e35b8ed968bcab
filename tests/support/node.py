"""A node's network state as text, to compare a node with a fresh one."""

from __future__ import annotations

import os
import re
import subprocess


def _ip(ns: str, *args: str) -> str:
    return subprocess.run(
        ["ip", "netns", "exec", ns, "ip", *args], capture_output=True, text=True, check=True, timeout=30
    ).stdout


def snapshot(ns: str) -> dict[str, str]:
    """Links, addresses, routes and rules of every table, and the nftables ruleset of namespace ``ns``.

    Counters and interface indexes that change without meaning (statistics,
    "if123" names of veth peers, an IPv6 address's passing "tentative" state
    while duplicate address detection runs) are left out, so two snapshots
    are equal exactly when the same objects exist with the same settings.
    """
    links = re.sub(r"^\d+: ", "", _ip(ns, "-o", "link", "show"), flags=re.M)
    return {
        "links": re.sub(r"@if\d+", "@if", links),
        "addresses": re.sub(r"^\d+: | tentative(?= )", "", _ip(ns, "-o", "addr", "show"), flags=re.M),
        "routes": _ip(ns, "route", "show", "table", "all") + _ip(ns, "-6", "route", "show", "table", "all"),
        "rules": _ip(ns, "rule", "show") + _ip(ns, "-6", "rule", "show"),
        "nftables": subprocess.run(
            ["ip", "netns", "exec", ns, "nft", "list", "ruleset"], capture_output=True, text=True, check=True
        ).stdout,
    }


def differences(before: dict[str, str], after: dict[str, str]) -> dict[str, tuple[list[str], list[str]]]:
    """Per part, (lines gone, lines new) where the two snapshots differ."""
    changed = {}
    for part, text in before.items():
        old, new = text.splitlines(), after[part].splitlines()
        if old != new:
            changed[part] = ([line for line in old if line not in new], [line for line in new if line not in old])
    return changed


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants."""
    found = [pid]
    for parent in found:
        try:
            with open(f"/proc/{parent}/task/{parent}/children") as handle:
                found += [int(child) for child in handle.read().split()]
        except OSError:
            continue
    return found


def process_usage(pid: int) -> dict[str, int]:
    """RSS (KiB), open descriptors and threads of ``pid`` and its descendants, summed."""
    usage = {"processes": 0, "rss_kib": 0, "fds": 0, "threads": 0}
    for proc in process_tree(pid):
        try:
            with open(f"/proc/{proc}/status") as handle:
                status = dict(line.split(":", 1) for line in handle if ":" in line)
            fds = len(os.listdir(f"/proc/{proc}/fd"))
        except OSError:
            continue
        usage["processes"] += 1
        usage["rss_kib"] += int(status["VmRSS"].split()[0])
        usage["threads"] += int(status["Threads"])
        usage["fds"] += fds
    return usage
