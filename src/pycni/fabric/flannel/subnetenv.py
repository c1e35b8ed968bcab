"""``/run/flannel/subnet.env``: the handoff from the node agent to the flannel CNI plugin.

Written exactly as flanneld writes it (``pkg/subnet/subnet.go`` ``WriteSubnetFile``):
``FLANNEL_SUBNET`` is the lease's first usable address (the bridge's gateway
address) with the lease prefix, not the network address.
"""

from __future__ import annotations

import ipaddress
import os

from pycni.fabric.flannel.model import IPv4Net, IPv6Net
from pycni.fsutil import write_atomic
from pycni.spec.errors import CNIError, ErrorCode

DEFAULT_PATH = "/run/flannel/subnet.env"


def render(network: IPv4Net, subnet: IPv4Net, mtu: int, ipmasq: bool, ipv6_network: IPv6Net | None = None,
           ipv6_subnet: IPv6Net | None = None) -> str:  # fmt: skip
    lines = [f"FLANNEL_NETWORK={network}", f"FLANNEL_SUBNET={subnet.network_address + 1}/{subnet.prefixlen}"]
    if ipv6_network is not None and ipv6_subnet is not None:
        lines += [
            f"FLANNEL_IPV6_NETWORK={ipv6_network}",
            f"FLANNEL_IPV6_SUBNET={ipv6_subnet.network_address + 1}/{ipv6_subnet.prefixlen}",
        ]
    lines += [f"FLANNEL_MTU={mtu}", f"FLANNEL_IPMASQ={'true' if ipmasq else 'false'}"]
    return "\n".join(lines) + "\n"


def write(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    write_atomic(path, text.encode(), mode=0o644)


def read(path: str) -> dict[str, str]:
    """``KEY=VALUE`` lines; a missing file is an empty dict; one that cannot be read is code 5 naming it."""
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            text = handle.read()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise CNIError(ErrorCode.IO_FAILURE, f"cannot read {path}: {exc.strerror}") from None
    values = {}
    for line in text.splitlines():
        key, sep, value = line.strip().partition("=")
        if sep and key and not key.startswith("#"):
            values[key] = value
    return values


def subnet_of(values: dict[str, str]) -> IPv4Net | None:
    text = values.get("FLANNEL_SUBNET")
    try:
        return ipaddress.IPv4Interface(text).network if text else None
    except ValueError:
        return None
