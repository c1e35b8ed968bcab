"""``pycni dhcp-daemon``: the unix socket, request dispatch, start and stop.

Runs in the foreground (systemd's ``Type=simple``; ``contrib/pycni-dhcp.service``).
The socket is created with mode 0600 under a 0700 directory, and a peer
that is neither root nor the daemon's own user is refused (SO_PEERCRED), in
case ``--socket-path`` points into a shared directory. A stale socket file
is replaced; a live daemon on the same path is not. SIGTERM and SIGINT stop
the daemon without releasing leases (the containers still use their
addresses), as Go's daemon does.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import socketserver
import stat
import struct
import threading
from collections.abc import Iterator
from typing import Any

from pycni import __version__
from pycni.dhcp import protocol
from pycni.dhcp.manager import Attachment, Environment, LeaseManager
from pycni.spec.errors import CNIError, ErrorCode

log = logging.getLogger("pycni.dhcp")


class BadRequest(CNIError):
    def __init__(self, msg: str) -> None:
        super().__init__(ErrorCode.DECODING_FAILURE, f"dhcp daemon: {msg}")


# -- dispatch (no sockets: unit-testable) ---------------------------------------


def handle_request(manager: LeaseManager, request: dict[str, Any]) -> dict[str, Any]:
    """The reply to one request; never raises."""
    try:
        return {"ok": True, **_dispatch(manager, request)}
    except CNIError as exc:
        return protocol.error_reply(exc)
    except Exception as exc:  # report it and keep serving
        log.exception("request %r failed", request.get("op"))
        return protocol.error_reply(CNIError(ErrorCode.INTERNAL, f"dhcp daemon: {exc}"))


def _dispatch(manager: LeaseManager, request: dict[str, Any]) -> dict[str, Any]:
    version = request.get("version")
    if version != protocol.PROTOCOL_VERSION:
        raise BadRequest(f"protocol version {version!r} is not supported (this daemon speaks 1)")
    op = request.get("op")
    if op not in protocol.OPS:
        raise BadRequest(f"unknown op {op!r} (one of {', '.join(protocol.OPS)})")
    if op == "ping":
        return {"daemon": f"pycni {__version__}", "leases": len(manager)}
    if op == "list":
        return {"leases": manager.describe()}
    if op == "gc":
        valid = []
        for entry in _list(request, "valid"):
            if not isinstance(entry, dict):
                raise BadRequest("gc: 'valid' entries must be objects")
            valid.append((_str(entry, "containerID"), _str(entry, "ifname")))
        return {"released": manager.gc(_str(request, "network"), valid)}
    cid, network, ifname = _str(request, "containerID"), _str(request, "network"), _str(request, "ifname")
    if op == "release":
        return {"released": manager.release(cid, network, ifname)}
    if op == "check":
        return {"lease": manager.check(cid, network, ifname)}
    if op == "allocate":
        netns = _str(request, "netns")
        if not os.path.isabs(netns):
            raise BadRequest(f"allocate: netns {netns!r} is not an absolute path")
        attachment = Attachment(cid, network, ifname, netns)
        return {"lease": manager.allocate(attachment, _request_list(request), _provide(request))}
    raise AssertionError(f"op {op!r} is listed but not handled")


def _str(data: dict[str, Any], key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value:
        raise BadRequest(f"{key!r} must be a non-empty string")
    return value


def _list(data: dict[str, Any], key: str) -> list[Any]:
    value = data.get(key, [])
    if not isinstance(value, list):
        raise BadRequest(f"{key!r} must be a list")
    return value


def _code(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 255:
        raise BadRequest(f"{where}: option codes are integers 1-254, got {value!r}")
    return value


def _request_list(request: dict[str, Any]) -> tuple[int, ...]:
    return tuple(_code(code, "request") for code in _list(request, "request"))


def _provide(request: dict[str, Any]) -> dict[int, bytes]:
    provided: dict[int, bytes] = {}
    for entry in _list(request, "provide"):
        if not isinstance(entry, dict) or not isinstance(entry.get("value"), str):
            raise BadRequest("provide: entries are {code, value} with a string value")
        value = entry["value"].encode()
        if len(value) > 255:
            raise BadRequest(f"provide: the value of option {entry.get('code')} is longer than 255 bytes")
        provided[_code(entry.get("code"), "provide")] = value
    return provided


# -- the socket -----------------------------------------------------------------


class _Handler(socketserver.BaseRequestHandler):
    server: DaemonServer

    def handle(self) -> None:
        conn: socket.socket = self.request
        if not self.server.peer_allowed(conn):
            conn.sendall(protocol.encode(protocol.error_reply(BadRequest("permission denied"))))
            return
        try:
            request = protocol.read_message(conn)
        except (OSError, ValueError) as exc:
            reply = protocol.error_reply(BadRequest(f"unreadable request: {exc}"))
        else:
            reply = handle_request(self.server.manager, request)
        with contextlib.suppress(OSError):  # the plugin may have given up
            conn.sendall(protocol.encode(reply))


class DaemonServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, socket_path: str, manager: LeaseManager) -> None:
        self.manager = manager
        self.socket_path = socket_path
        super().__init__(socket_path, _Handler, bind_and_activate=False)
        try:
            with _umask(0o177):
                self.server_bind()
            os.chmod(socket_path, 0o600)
            self.server_activate()
        except OSError:
            self.server_close()
            raise
        self._inode = os.stat(socket_path).st_ino

    def peer_allowed(self, conn: socket.socket) -> bool:
        creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        _pid, uid, _gid = struct.unpack("3i", creds)
        return uid in (0, os.geteuid())

    def remove_socket(self) -> None:
        """Unlink the socket file if it is still ours (not a successor's)."""
        with contextlib.suppress(OSError):
            if os.stat(self.socket_path).st_ino == self._inode:
                os.unlink(self.socket_path)


@contextlib.contextmanager
def _umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def prepare_socket_path(path: str) -> None:
    """Make the parent directory (0700) and clear a stale socket; refuse to evict a live daemon."""
    directory = os.path.dirname(path) or "."
    if not os.path.isdir(directory):
        os.makedirs(directory, mode=0o700, exist_ok=True)
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise RuntimeError(f"{path} exists and is not a socket")
    try:
        protocol.call(path, "ping", timeout=2.0)
    except protocol.DaemonUnavailable:
        os.unlink(path)
        return
    except CNIError:
        pass
    raise RuntimeError(f"another DHCP daemon is already answering on {path}")


def run(socket_path: str = protocol.DEFAULT_SOCKET_PATH, timeout: float = 10.0, broadcast: bool = False) -> int:
    """Serve until SIGTERM/SIGINT; the exit status."""
    if os.geteuid() != 0:
        log.warning("not running as root: entering namespaces and packet sockets will fail")
    try:
        prepare_socket_path(socket_path)
        manager = LeaseManager(Environment(timeout=timeout, broadcast=broadcast))
        server = DaemonServer(socket_path, manager)
    except (OSError, RuntimeError) as exc:
        log.error("cannot start: %s", exc)
        return 1
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, name="dhcp-server")
    thread.start()
    log.info("listening on %s (timeout %gs%s)", socket_path, timeout, ", broadcast" if broadcast else "")
    try:
        while not stop.wait(1.0):
            pass
    finally:
        log.info("stopping; %d lease(s) are not released and stay with their containers", len(manager))
        server.shutdown()
        thread.join()
        server.remove_socket()
        server.server_close()
        manager.shutdown()
    return 0
