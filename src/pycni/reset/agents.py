"""Is a pycni agent of this node still running? Reset refuses then: it stops nothing it did not start.

This node's agents are the processes in this network namespace running
``pycni flanneld`` or ``pycni calico-node``, and the pid calico-node wrote to
its pid file (``calicoctl node status`` reads the same file).
"""

from __future__ import annotations

import contextlib
import os

AGENT_COMMANDS = ("flanneld", "calico-node")


def _netns(pid: str) -> tuple[int, int] | None:
    try:
        info = os.stat(f"/proc/{pid}/ns/net")
    except OSError:
        return None
    return info.st_dev, info.st_ino


def _cmdline(pid: str) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return [a.decode(errors="replace") for a in handle.read().split(b"\0") if a]
    except OSError:
        return []


def agent_of(argv: list[str]) -> str | None:
    """``flanneld`` or ``calico-node`` if ``argv`` runs that pycni command, else None."""
    if not any("pycni" in os.path.basename(a) or a.startswith("pycni") for a in argv):
        return None
    return next((a for a in argv[1:] if a in AGENT_COMMANDS), None)


def running(pid_files: list[str]) -> list[str]:
    """One line per agent of this node still running: what it is and its pid."""
    here = _netns("self")
    found: dict[int, str] = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid() or _netns(pid) != here:
            continue
        agent = agent_of(_cmdline(pid))
        if agent is not None:
            found[int(pid)] = f"pycni {agent} (pid {pid})"
    for path in pid_files:
        with contextlib.suppress(OSError, ValueError):
            with open(path, encoding="utf-8") as handle:
                number = int(handle.read().strip())
            if number not in found and os.path.exists(f"/proc/{number}") and _netns(str(number)) == here:
                found[number] = f"the agent in {path} (pid {number})"
    return [found[pid] for pid in sorted(found)]
