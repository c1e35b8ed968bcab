"""``/run/flannel/subnet.env``: the handoff from the node agent to the flannel CNI plugin.

Written exactly as flanneld writes it (``pkg/subnet/subnet.go`` ``WriteSubnetFile``):
``FLANNEL_SUBNET`` is the lease's first usable address (the bridge's gateway
address) with the lease prefix, not the network address.

Read by :func:`load`, stricter than Go's ``loadFlannelSubnetEnv``, because a
damaged file must not become a wrong pod network (pycni issue 9). Go skips
lines it does not know, takes the last of duplicated keys and treats any
``FLANNEL_IPMASQ`` but ``true`` as false. Here every problem is a CNI error
naming the file and the key: a missing key (Go's "``<file> is missing
FLANNEL_MTU``"), a value that does not parse, an MTU outside 68..65535,
``FLANNEL_IPMASQ`` neither ``true`` nor ``false``, a subnet outside the network,
a key given twice with different values, a line that is not ``KEY=VALUE``,
bytes that are not UTF-8 (code 7); a symlink, a directory or an unreadable
file (code 5: the agent writes a regular file, and nothing else is read).
CRLF line ends are accepted, as Go's line scanner accepts them. A missing
file is code 11: the agent has not written it yet.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import re
from dataclasses import dataclass

from pycni import fsutil
from pycni.fabric.flannel import defaults
from pycni.fabric.flannel.model import IPv4Net, IPv6Net
from pycni.fsutil import write_atomic
from pycni.spec.errors import CNIError, ErrorCode

DEFAULT_PATH = defaults.SUBNET_ENV_PATH
REQUIRED = ("FLANNEL_NETWORK", "FLANNEL_SUBNET", "FLANNEL_MTU", "FLANNEL_IPMASQ")
_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
REWRITE = "pycni flanneld writes it again at its next start or resync"


@dataclass(frozen=True)
class SubnetEnv:
    """What the flannel plugin needs from the file, validated."""

    network: ipaddress.IPv4Network
    subnet: ipaddress.IPv4Interface  # the gateway address with the lease's prefix
    mtu: int
    ipmasq: bool


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
    """Atomically; whatever is at the path (a symlink, a directory, garbage) is replaced, never written through."""
    try:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        write_atomic(path, text.encode(), mode=0o644, replace_directory=True)
    except OSError as exc:
        raise CNIError(ErrorCode.IO_FAILURE, f"cannot write {path}: {exc.strerror}") from None


def read_bytes(path: str) -> bytes | None:
    """The file's bytes (None if there is none); a symlink, a non-regular or unreadable file is code 5."""
    try:
        return fsutil.read_state(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            reason = "is a symlink; only the regular file the agent writes is read"
        elif exc.errno == errno.EISDIR:
            reason = "is not a regular file (a directory?)"
        else:
            reason = f"cannot be read: {exc.strerror}"
        raise CNIError(ErrorCode.IO_FAILURE, f"{path} {reason}; remove it: {REWRITE}") from None


def parse(path: str, data: bytes) -> dict[str, str]:
    """``KEY=VALUE`` lines (blank and ``#`` lines skipped); code 7 for anything that is not that."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CNIError(
            ErrorCode.INVALID_NETWORK_CONFIG, f"{path} is not UTF-8 text (byte {exc.start}): damaged; {REWRITE}"
        ) from None
    values: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not _KEY.match(key):
            raise CNIError(
                ErrorCode.INVALID_NETWORK_CONFIG, f"{path} line {number} is not KEY=VALUE: {line[:60]!r}; {REWRITE}"
            )
        if key in values and values[key] != value:
            raise CNIError(
                ErrorCode.INVALID_NETWORK_CONFIG,
                f"{path} gives {key} twice ({values[key]!r}, then {value!r}): which lease is this node's? {REWRITE}",
            )
        values[key] = value
    return values


def validate(path: str, values: dict[str, str]) -> SubnetEnv:
    """The four keys the plugin needs, each checked; code 7 naming the file and the key."""
    missing = [key for key in REQUIRED if key not in values]
    if missing:
        what = "is empty" if not values else f"is missing {', '.join(missing)}"
        raise CNIError(ErrorCode.INVALID_NETWORK_CONFIG, f"{path} {what}; {REWRITE}")

    def bad(key: str, why: str) -> CNIError:
        return CNIError(ErrorCode.INVALID_NETWORK_CONFIG, f"{path}: {key}={values[key]!r} {why}; {REWRITE}")

    try:
        network = ipaddress.IPv4Network(values["FLANNEL_NETWORK"], strict=False)
    except ValueError:
        raise bad("FLANNEL_NETWORK", "is not an IPv4 network (e.g. 10.244.0.0/16)") from None
    try:
        subnet = ipaddress.IPv4Interface(values["FLANNEL_SUBNET"])
    except ValueError:
        raise bad("FLANNEL_SUBNET", "is not an IPv4 address with a prefix (e.g. 10.244.1.1/24)") from None
    if not subnet.network.subnet_of(network):
        raise bad("FLANNEL_SUBNET", f"is not inside FLANNEL_NETWORK {network}")
    text = values["FLANNEL_MTU"]
    if not text.isdigit() or not 68 <= int(text) <= 65535:
        raise bad("FLANNEL_MTU", "is not an MTU (a whole number from 68 to 65535)")
    if values["FLANNEL_IPMASQ"] not in ("true", "false"):
        raise bad("FLANNEL_IPMASQ", "is neither true nor false")
    return SubnetEnv(network, subnet, int(text), values["FLANNEL_IPMASQ"] == "true")


def load(path: str) -> SubnetEnv | None:
    """The validated file, or None if there is none yet; a CNI error naming the file if it is damaged."""
    data = read_bytes(path)
    if data is None:
        return None
    return validate(path, parse(path, data))


def problem(path: str, expected: str) -> str:
    """Why the file at ``path`` is not ``expected`` ("" if it is): for the agent's rewrite."""
    try:
        data = read_bytes(path)
    except CNIError as error:
        return error.msg
    if data is None:
        return "it is missing"
    if data.decode("utf-8", "replace") == expected:
        return ""
    try:
        values = parse(path, data)
        validate(path, values)
    except CNIError as error:
        return error.msg
    if values == parse(path, expected.encode()):
        return "it is not written as the agent writes it"
    return "it holds other values than this node's lease"


def read(path: str) -> dict[str, str]:
    """``KEY=VALUE`` lines, leniently (for tools and tests); a missing file is an empty dict."""
    data = read_bytes(path)
    values = {}
    for line in (data or b"").decode("utf-8", "replace").splitlines():
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
