"""TCP probes inside a network namespace: a listener, and whether a connect gets through."""

from __future__ import annotations

import socket

from pycni.net import netns
from tests.support.netns import NetnsPool


def listen(ns: str, port: int) -> socket.socket:
    """A TCP listener on every address of ``ns`` (the socket is made in ``ns``; the caller closes it)."""
    with netns.entered(NetnsPool.path(ns)):
        server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("0.0.0.0", port))
    server.listen(16)
    return server


def connects(ns: str, address: str, port: int, timeout: float = 1.0) -> bool:
    """Whether a TCP connect from ``ns`` completes within ``timeout`` (a dropped SYN or a refusal: False)."""
    with netns.entered(NetnsPool.path(ns)):
        client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    client.settimeout(timeout)
    try:
        client.connect((address, port))
        return True
    except OSError:
        return False
    finally:
        client.close()
