"""Running CNI plugins the way a runtime does, optionally from inside a 'node' namespace."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from typing import Any


@dataclass
class Call:
    rc: int
    out: Any  # decoded stdout (result or error object), or None
    stderr: str

    @property
    def error(self) -> dict[str, Any]:
        assert self.rc != 0 and isinstance(self.out, dict), f"expected a CNI error, got rc={self.rc} {self.out}"
        return self.out


def exec_plugin(
    plugin: str,
    command: str,
    config: dict[str, Any],
    *,
    netns: str,
    cni_path: str,
    container_id: str = "ctr1",
    ifname: str = "eth0",
    node: str | None = None,
    cni_args: str = "",
    timeout: float = 60,
) -> Call:
    """Run ``plugin`` with the six CNI variables (inside ``node``'s namespace if given)."""
    env = {
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": container_id,
        "CNI_NETNS": netns,
        "CNI_IFNAME": ifname,
        "CNI_ARGS": cni_args,
        "CNI_PATH": cni_path,
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
    }
    argv = ["ip", "netns", "exec", node, plugin] if node else [plugin]
    proc = subprocess.run(
        argv, input=json.dumps(config).encode(), env=env, capture_output=True, check=False, timeout=timeout
    )
    out = proc.stdout.decode()
    return Call(proc.returncode, json.loads(out) if out.strip() else None, proc.stderr.decode())


def normalize(result: dict[str, Any]) -> dict[str, Any]:
    """A result with the values that differ run to run (MACs, veth names, sandboxes) blanked."""
    data = json.loads(json.dumps(result))
    for iface in data.get("interfaces", []):
        if "mac" in iface:
            iface["mac"] = "<mac>"
        if iface.get("name", "").startswith("veth"):
            iface["name"] = "<veth>"
        if "sandbox" in iface:
            iface["sandbox"] = "<netns>"
    if data.get("dns") == {} and data.get("cniVersion", "").startswith("1."):
        del data["dns"]  # Go 1.1.1 prints an empty dns at 1.0.0; current libcni omits it
    return data
