"""``pycni daemon``: run plugin calls handed over by the shim, with everything already imported.

One thread per connection. A request carries the caller's network namespace
(and the container's) as descriptors; the worker thread enters the caller's
namespace for the duration of the call, so the plugin sees exactly what an
exec'd plugin would, whichever namespace the runtime runs in. Delegation to
pycni's own IPAM plugins happens in-process (:mod:`pycni.daemon.executor`).

Only root (or the daemon's own user) may connect: the socket is 0600 in a
0700 directory, and each peer's credentials are checked as well. A client
that goes away mid-request does not disturb the daemon: the call completes
(DEL, GC and the runtime's retry clean up), and only the reply is lost.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import signal
import socket
import struct
import sys
import threading
import time
from types import FrameType
from typing import TYPE_CHECKING

from pycni.daemon import wire
from pycni.daemon.executor import InProcessExecutor
from pycni.net.netns import setns
from pycni.plugins import PLUGIN_MODULES
from pycni.runtime import delegate
from pycni.spec.errors import CNIError, ErrorCode
from pycni.spec.version import CURRENT_VERSION

if TYPE_CHECKING:
    from pycni.skel import Plugin

MAX_CONCURRENT = 64


def load_plugins() -> dict[str, Plugin]:
    """Import every plugin module now, so no call pays for it."""
    return {name: importlib.import_module(module).plugin for name, module in PLUGIN_MODULES.items()}


def _error_reply(code: int, msg: str) -> bytes:
    return wire.encode_reply(1, (CNIError(code, msg).to_json(CURRENT_VERSION) + "\n").encode(), b"")


class Daemon:
    def __init__(self, socket_path: str = wire.DEFAULT_SOCKET, log: bool = False) -> None:
        self.socket_path = socket_path
        self.log = log
        self.plugins = load_plugins()
        self.own_netns = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        self.slots = threading.BoundedSemaphore(MAX_CONCURRENT)
        self.stopping = threading.Event()
        self.listener: socket.socket | None = None
        self.allowed_uids = {0, os.getuid()}
        delegate.set_executor(InProcessExecutor(self.plugins))

    # -- lifecycle ----------------------------------------------------------

    def bind(self) -> None:
        directory = os.path.dirname(self.socket_path)
        os.makedirs(directory, mode=0o700, exist_ok=True)
        if os.path.exists(self.socket_path):
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                probe.connect(self.socket_path)
                raise CNIError(ErrorCode.INTERNAL, f"a pycni daemon is already serving {self.socket_path}")
            except OSError:
                os.unlink(self.socket_path)  # left by a daemon that died
            finally:
                probe.close()
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)
        try:
            listener.bind(self.socket_path)
        finally:
            os.umask(old_umask)
        listener.listen(256)
        self.listener = listener

    def serve_forever(self, workers: int = 1) -> None:
        """Serve until SIGTERM/SIGINT; with ``workers`` > 1, in that many forked processes.

        Plugin calls spend most of their time in Python, so one process is
        bound by the GIL; forked workers (after every import, sharing the
        listening socket) use all cores, as concurrent exec'd plugins would.
        """
        if self.listener is None:
            self.bind()
        self._say(f"pycni daemon: serving {self.socket_path} ({len(self.plugins)} plugins, {workers} workers)")
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        try:
            if workers <= 1:
                self._accept_loop()
            else:
                self._supervise(workers)
        finally:
            self.close()

    def _accept_loop(self) -> None:
        assert self.listener is not None
        self.listener.settimeout(0.5)
        while not self.stopping.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                if self.stopping.is_set():
                    break
                raise
            conn.settimeout(None)
            self.slots.acquire()
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _spawn(self) -> int:
        pid = os.fork()
        if pid == 0:  # a worker: serve, never touch the socket file
            code = 0
            try:
                self._accept_loop()
            except BaseException:  # noqa: BLE001 - a worker must exit, not unwind into the parent's code
                code = 1
            os._exit(code)
        return pid

    def _supervise(self, workers: int) -> None:
        children = {self._spawn() for _ in range(workers)}
        while not self.stopping.is_set():
            time.sleep(0.2)
            pid, _status = os.waitpid(-1, os.WNOHANG)
            if pid in children and not self.stopping.is_set():
                children.discard(pid)
                self._say(f"pycni daemon: worker {pid} exited; starting another")
                children.add(self._spawn())
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        for pid in children:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.stopping.set()

    def close(self) -> None:
        if self.listener is not None:
            self.listener.close()
            self.listener = None
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.socket_path)

    # -- one connection -------------------------------------------------------

    def _serve(self, conn: socket.socket) -> None:
        fds: list[int] = []
        started = time.perf_counter()
        try:
            if not self._peer_allowed(conn):
                conn.sendall(_error_reply(ErrorCode.INVALID_ENVIRONMENT_VARIABLES, "permission denied: root only"))
                return
            reader = wire.Reader(conn)
            try:
                reader.magic()
                nfds = reader.take(1)[0]
                plugin_type = reader.blob().decode()
                env = wire.decode_env(reader.blob())
                stdin = reader.blob()
            finally:
                fds = reader.fds
            reply = self._call(plugin_type, env, stdin, fds, nfds)
            with contextlib.suppress(OSError):  # a client that went away loses only the reply
                conn.sendall(reply)
            if self.log:
                elapsed = 1000 * (time.perf_counter() - started)
                self._say(f"{plugin_type} {env.get('CNI_COMMAND')} {env.get('CNI_CONTAINERID')} {elapsed:.1f} ms")
        except (OSError, wire.WireError) as exc:
            if self.log:
                self._say(f"dropped a connection: {exc}")
        finally:
            for fd in fds:
                os.close(fd)
            conn.close()
            self.slots.release()

    def _peer_allowed(self, conn: socket.socket) -> bool:
        creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        _pid, uid, _gid = struct.unpack("3i", creds)
        return uid in self.allowed_uids

    def _call(self, plugin_type: str, env: dict[str, str], stdin: bytes, fds: list[int], nfds: int) -> bytes:
        plugin = self.plugins.get(plugin_type)
        if plugin is None:
            return _error_reply(ErrorCode.INTERNAL, f"pycni daemon has no plugin of type {plugin_type!r}")
        if nfds < 1 or len(fds) < nfds:
            return _error_reply(ErrorCode.INTERNAL, "pycni daemon: the caller's namespace did not arrive")
        container_fd = fds[1] if nfds > 1 else None
        try:
            setns(fds[0], "the caller's namespace")
        except CNIError as error:
            return _error_reply(error.code, f"pycni daemon: {error.msg}")
        try:
            reply = plugin.invoke(env, stdin, netns_fd=container_fd)
        finally:
            setns(self.own_netns, "the daemon's namespace")
        return wire.encode_reply(reply.exit_code, reply.stdout.encode(), reply.stderr.encode())

    def _say(self, line: str) -> None:
        print(line, file=sys.stderr, flush=True)


def main(socket_path: str, log: bool, workers: int = 0) -> int:
    try:
        daemon = Daemon(socket_path, log)
        daemon.bind()
    except CNIError as error:
        print(f"pycni daemon: {error}", file=sys.stderr)
        return 1
    daemon.serve_forever(workers or os.cpu_count() or 1)
    return 0
