"""The two systemd protocols the daemon speaks: socket activation and readiness.

Both are a few lines over the standard library (``sd_listen_fds`` and
``sd_notify`` in libsystemd), so no binding to libsystemd is needed.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import MutableMapping

from pycni.spec.errors import CNIError, ErrorCode

log = logging.getLogger("pycni.daemon")

LISTEN_FDS_START = 3


def listen_socket(env: MutableMapping[str, str]) -> socket.socket | None:
    """The listening socket systemd passed (``sd_listen_fds``), or None.

    The variables are removed either way, as ``sd_listen_fds(1)`` does, so
    nothing this process starts mistakes them for its own.
    """
    pid, count = env.pop("LISTEN_PID", ""), env.pop("LISTEN_FDS", "")
    env.pop("LISTEN_FDNAMES", None)
    if not pid or pid != str(os.getpid()) or not count.isdigit() or int(count) < 1:
        return None
    if int(count) > 1:
        log.warning("systemd passed %s sockets; serving the first, fd %d", count, LISTEN_FDS_START)
    sock = socket.socket(fileno=LISTEN_FDS_START)
    os.set_inheritable(sock.fileno(), False)
    if sock.family != socket.AF_UNIX or sock.type != socket.SOCK_STREAM:
        raise CNIError(ErrorCode.INTERNAL, "systemd passed a socket that is not a unix stream socket")
    if not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
        raise CNIError(ErrorCode.INTERNAL, "systemd passed a socket that is not listening")
    return sock


def notify(state: str, env: MutableMapping[str, str] | None = None) -> None:
    """``sd_notify``: tell systemd (``Type=notify``) e.g. ``READY=1``; nothing without NOTIFY_SOCKET."""
    address = (os.environ if env is None else env).get("NOTIFY_SOCKET", "")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]  # an abstract socket
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        try:
            sock.sendto(state.encode(), address)
        except OSError as exc:
            log.debug("could not notify systemd (%s): %s", address, exc)  # only readiness is lost
