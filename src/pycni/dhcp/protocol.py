"""The protocol between the ``dhcp`` plugin and ``pycni dhcp-daemon``.

Go's plugin talks to its daemon with Go ``net/rpc`` (gob), which only Go
speaks, so pycni's plugin talks to pycni's own daemon with this instead.

Transport: a unix stream socket, by default ``/run/cni/pycni-dhcp.sock``
(``ipam.daemonSocketPath`` overrides it, as in Go), mode 0600: root only. One
request per connection: the plugin writes one JSON object and a newline, the
daemon writes one JSON object and a newline and closes. UTF-8 throughout;
at most 1 MiB each way.

Requests are ``{"version": 1, "op": OP, ...}``::

    ping      {}
              -> {"ok": true, "daemon": "pycni 0.1.0", "leases": N}
    allocate  {"containerID", "network", "ifname", "netns": absolute path,
               "request": [option code, ...],            # parameter request list
               "provide": [{"code": n, "value": text}]}  # sent to the server
              -> {"ok": true, "lease": LEASE}      # the held lease if there is one
    check     {"containerID", "network", "ifname"}
              -> {"ok": true, "lease": LEASE}      # error if none or not bound
    release   {"containerID", "network", "ifname"}
              -> {"ok": true, "released": bool}    # false: there was none (still ok)
    gc        {"network", "valid": [{"containerID", "ifname"}, ...]}
              -> {"ok": true, "released": [clientID, ...]}
    list      {}
              -> {"ok": true, "leases": [LEASE, ...]}

A failure is ``{"ok": false, "error": {"code", "msg", "details"}}``: a CNI
error the plugin reports unchanged. A LEASE is::

    {"clientID", "containerID", "network", "ifname", "netns",
     "state": "bound" | "renewing" | "rebinding" | "expired" | "lost" | "gone",
     "address": "10.66.0.10/24", "gateway": "10.66.0.1" (if a router was given),
     "routes": [{"dst", "gw"?, "scope"?}],
     "dns": {"nameservers": [...], "domain": "", "search": [...]},
     "serverID", "leaseTime", "expiresIn", "renewIn" (seconds; null if infinite),
     "renewals", "lastError"?}

Standard library only (and :mod:`pycni.spec.errors`): the plugin imports it.
"""

from __future__ import annotations

import json
import socket
from typing import Any

from pycni.spec.errors import CNIError, ErrorCode

PROTOCOL_VERSION = 1
DEFAULT_SOCKET_PATH = "/run/cni/pycni-dhcp.sock"
MAX_MESSAGE = 1 << 20
REPLY_TIMEOUT = 300.0  # an allocate waits for the DHCP server; never forever
OPS = ("ping", "allocate", "check", "release", "gc", "list")


class DaemonUnavailable(CNIError):
    """Nothing answers on the socket: code 50, and what to do about it."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(
            ErrorCode.PLUGIN_NOT_AVAILABLE,
            f"dhcp: the pycni DHCP daemon is not answering on {path} ({reason}); start it with `pycni dhcp-daemon`",
        )
        self.path = path


def encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


def decode(line: bytes) -> dict[str, Any]:
    """One message; ``ValueError`` if it is not a JSON object."""
    if len(line) > MAX_MESSAGE:
        raise ValueError(f"message longer than {MAX_MESSAGE} bytes")
    value = json.loads(line.decode())
    if not isinstance(value, dict):
        raise ValueError("a message must be a JSON object")
    return value


def read_message(sock: socket.socket) -> dict[str, Any]:
    """Read one newline-terminated message (the peer may also just close after it)."""
    with sock.makefile("rb") as stream:
        line = stream.readline(MAX_MESSAGE + 1)
    if not line:
        raise ValueError("the peer closed the connection without a message")
    return decode(line)


def error_reply(exc: CNIError) -> dict[str, Any]:
    return {"ok": False, "error": {"code": exc.code, "msg": exc.msg, "details": exc.details}}


def call(
    socket_path: str, op: str, fields: dict[str, Any] | None = None, timeout: float = REPLY_TIMEOUT
) -> dict[str, Any]:
    """Send one request and return the reply; a failure reply is raised as its CNIError."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        try:
            sock.connect(socket_path)
        except FileNotFoundError:
            raise DaemonUnavailable(socket_path, "no such socket") from None
        except OSError as exc:
            raise DaemonUnavailable(socket_path, exc.strerror or str(exc)) from None
        try:
            sock.sendall(encode({"version": PROTOCOL_VERSION, "op": op, **(fields or {})}))
            reply = read_message(sock)
        except TimeoutError:
            raise CNIError(
                ErrorCode.IO_FAILURE, f"dhcp: no reply from the daemon on {socket_path} within {timeout:g}s"
            ) from None
        except (OSError, ValueError) as exc:
            raise CNIError(ErrorCode.IO_FAILURE, f"dhcp: bad reply from the daemon on {socket_path}: {exc}") from None
    finally:
        sock.close()
    if reply.get("ok") is True:
        return reply
    error = reply.get("error")
    try:
        failure = CNIError.from_dict(error) if isinstance(error, dict) else None
    except ValueError:
        failure = None
    if failure is not None:
        raise failure
    raise CNIError(ErrorCode.IO_FAILURE, f"dhcp: the daemon sent a malformed reply: {reply!r:.200}")
