"""What this kernel can do, probed by trying it in a scratch namespace (modprobe may be absent)."""

from __future__ import annotations

import functools
import subprocess
import uuid

PROBES: dict[str, list[str]] = {
    "ipvlan": ["link", "p0", "type", "ipvlan"],
    "vlan": ["link", "p0", "type", "vlan", "id", "10"],
    "dummy": ["type", "dummy"],
    "vrf": ["type", "vrf", "table", "10"],
    "ipip": ["type", "ipip"],
}


@functools.cache
def missing_link_kind(kind: str) -> str:
    """Why this kernel cannot make a ``kind`` link ("" if it can), tried once per process."""
    scratch = f"pyt-probe-{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "netns", "add", scratch], check=True)
    try:
        subprocess.run(["ip", "-n", scratch, "link", "add", "p0", "type", "veth", "peer", "name", "p1"], check=True)
        proc = subprocess.run(
            ["ip", "-n", scratch, "link", "add", "probe0", *PROBES[kind]], capture_output=True, text=True, check=False
        )
        return "" if proc.returncode == 0 else (proc.stderr.strip() or f"exit status {proc.returncode}")
    finally:
        subprocess.run(["ip", "netns", "del", scratch], check=False)
