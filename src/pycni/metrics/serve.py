"""Serve a registry on a :class:`~pycni.metrics.address.ListenAddress`, in a thread of the calling process.

TCP is prometheus_client's own ``start_http_server``. A unix socket is its
WSGI app (``make_wsgi_app``) on a ``wsgiref`` server bound to an ``AF_UNIX``
socket: prometheus_client has no unix-socket server, and the exposition
format is never written by hand here. The socket is created owner-only
(0600, like the daemon's); a stale file left by a process that died is
replaced, a live one is an error (two processes must not share one path).

Binding happens in :func:`serve` itself, so a port in use or a bad path is
an error the caller reports at start-up, before it takes anything else.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
import socketserver
import stat
import threading
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from prometheus_client import CollectorRegistry, make_wsgi_app, start_http_server

from pycni.metrics.address import ListenAddress

log = logging.getLogger("pycni.metrics")


class ServeError(OSError):
    """The metrics address cannot be served (in use, no such directory, not allowed)."""


class MetricsServer:
    """A running metrics listener; :meth:`close` stops it and removes its unix socket file."""

    def __init__(self, address: ListenAddress, server: WSGIServer, thread: threading.Thread) -> None:
        self.address = address
        self._server = server
        self._thread = thread
        self._inode = os.lstat(address.path).st_ino if address.is_unix else 0

    @property
    def port(self) -> int:
        """The TCP port bound (the one asked for); 0 for a unix socket."""
        return 0 if self.address.is_unix else int(self._server.server_address[1])

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
        if self.address.is_unix:
            _unlink_socket(self.address.path, self._inode)

    def forget(self) -> None:
        """Close the listening descriptor only (in a forked child: the parent keeps serving)."""
        self._server.socket.close()


def serve(address: ListenAddress, registry: CollectorRegistry) -> MetricsServer:
    """Bind ``address`` and serve ``registry`` on it from a daemon thread."""
    try:
        if address.is_unix:
            server, thread = _serve_unix(address.path, registry)
        else:
            server, thread = start_http_server(address.port, address.host, registry)
    except OSError as exc:
        raise ServeError(f"cannot serve metrics on {address}: {exc.strerror or exc}") from None
    if not address.loopback:
        log.warning("metrics on %s are reachable from the network, not only from this node", address)
    else:
        log.info("metrics on %s", address)
    return MetricsServer(address, server, thread)


class _UnixHandler(WSGIRequestHandler):
    """wsgiref's handler, silent (as prometheus_client's), with a peer name a unix socket lacks."""

    def setup(self) -> None:
        self.client_address = ("unix", 0)
        super().setup()

    def log_message(self, format: str, *args: Any) -> None:
        """Log nothing: a scrape every few seconds is not an event."""


class _UnixWSGIServer(socketserver.ThreadingMixIn, WSGIServer):
    address_family = socket.AF_UNIX
    daemon_threads = True

    def server_bind(self) -> None:
        # HTTPServer.server_bind would look up a host name and a port; a unix socket has neither.
        socketserver.TCPServer.server_bind(self)
        os.chmod(self.server_address, 0o600)  # type: ignore[arg-type]
        self.server_name, self.server_port = "localhost", 0
        self.setup_environ()


def _serve_unix(path: str, registry: CollectorRegistry) -> tuple[WSGIServer, threading.Thread]:
    _clear_stale(path)
    server = _UnixWSGIServer(path, _UnixHandler)  # type: ignore[arg-type]
    server.set_app(make_wsgi_app(registry))
    thread = threading.Thread(target=server.serve_forever, name="metrics", daemon=True)
    thread.start()
    return server, thread


def _clear_stale(path: str) -> None:
    """Remove a socket file nobody listens on; refuse a live one or anything that is not a socket."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(info.st_mode):
        raise OSError(errno.EEXIST, f"{path} exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except (ConnectionRefusedError, FileNotFoundError):
        _unlink_socket(path)
        return
    finally:
        probe.close()
    raise OSError(errno.EADDRINUSE, f"another process serves {path}")


def _unlink_socket(path: str, inode: int = 0) -> None:
    """Remove the socket file at ``path`` (only if it is still inode ``inode``, when given)."""
    with contextlib.suppress(FileNotFoundError):
        info = os.lstat(path)
        if stat.S_ISSOCK(info.st_mode) and inode in (0, info.st_ino):
            os.unlink(path)
