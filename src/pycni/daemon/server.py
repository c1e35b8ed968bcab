"""``pycni daemon``: run plugin calls handed over by the shim, with everything already imported.

Processes: a supervisor (the main PID, what systemd and operators signal)
and forked workers that share its listening socket (plugin calls spend their
time in Python, so one process would be bound by the GIL). One thread per
connection. A request carries the caller's network namespace (and the
container's) as descriptors; the worker thread enters the caller's namespace
for the duration of the call, so the plugin sees exactly what an exec'd
plugin would. Delegation to pycni's own IPAM plugins happens in-process
(:mod:`pycni.daemon.executor`).

Stopping never fails a call (see :mod:`pycni.daemon.wire` for why the shim
can tell): on SIGTERM the supervisor removes the socket path if it is still
its own, and every process stops accepting at once (a wake-up pipe ends the
accept loop within a system call); connections already accepted are
finished, including work deferred until after the reply; then each process
exits. Connections still in the backlog when the last process closes the
socket are reset, before READY, so their shims run the call in-process. A
supervisor that dies outright (SIGKILL) is noticed by its workers through
``PR_SET_PDEATHSIG``: they stop the same way, so no accepted call is lost
then either.

Only root (or the daemon's own user) may connect: the socket is 0600 in a
0700 directory, and each peer's credentials are checked as well. A client
that goes away mid-request does not disturb the daemon: the call completes
(DEL, GC and the runtime's retry clean up), and only the reply is lost.

With ``--metrics-addr`` (:mod:`pycni.daemon.metrics`), every call a worker
serves is counted, with its CNI error code and its duration, at the one
place a reply is made (:meth:`Daemon._serve`); the supervisor serves the
scrapes and sums the workers' values (prometheus_client's multiprocess mode).
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import json
import logging
import os
import selectors
import signal
import socket
import struct
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import TYPE_CHECKING, TypeVar

from pycni import lazy_pyroute2
from pycni.daemon import systemd, wire
from pycni.daemon.executor import InProcessExecutor
from pycni.daemon.listener import Listener, acquire, serving
from pycni.net.netns import setns
from pycni.plugins import PLUGIN_MODULES
from pycni.runtime import delegate
from pycni.skel.dispatch import run_deferred
from pycni.spec.errors import CNIError, ErrorCode
from pycni.spec.version import CURRENT_VERSION

if TYPE_CHECKING:
    from pycni.daemon.metrics import DaemonMetrics
    from pycni.metrics.address import ListenAddress
    from pycni.metrics.cni import CallMetrics
    from pycni.skel import Plugin
    from pycni.skel.plugin import Deferred, Reply

log = logging.getLogger("pycni.daemon")

MAX_CONCURRENT = 64
DRAIN_SECONDS = 120.0  # longest a stopping process waits for its calls (systemd's TimeoutStopSec is the outer bound)
PR_SET_PDEATHSIG = 1
M_ARENA_MAX = -8  # glibc mallopt parameter
MALLOC_ARENAS = 1
STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}
T = TypeVar("T")


def load_plugins() -> dict[str, Plugin]:
    """Import every plugin module now, and the netlink library they use on demand, so no call pays for it."""
    plugins = {name: importlib.import_module(module).plugin for name, module in PLUGIN_MODULES.items()}
    lazy_pyroute2.load_everything()  # the workers are forked per call: what is not imported here, each imports
    return plugins


def _error_reply(code: int, msg: str) -> bytes:
    return wire.encode_reply(1, (CNIError(code, msg).to_json(CURRENT_VERSION) + "\n").encode(), b"")


def _reply_code(reply: Reply) -> int:
    """The CNI error code a plugin's reply carries (0: success), for the call metrics."""
    if reply.exit_code == 0:
        return 0
    try:
        code = json.loads(reply.stdout).get("code")
    except (ValueError, AttributeError):
        return int(ErrorCode.INTERNAL)
    return code if isinstance(code, int) and not isinstance(code, bool) else int(ErrorCode.INTERNAL)


class StopSignal:
    """SIGTERM/SIGINT as a flag plus a descriptor that becomes readable at once (``set_wakeup_fd``).

    The handler only sets a flag, never takes a lock: a second signal that
    arrives while the first handler runs (a worker gets SIGTERM from its
    supervisor and from a ``kill`` of the process group at once) runs its
    handler inside the first one, in the same thread, and a
    ``threading.Event.set()`` there waits forever for the lock the first
    ``set()`` holds (the signal module's docs warn against locks in handlers;
    CPython issue 126434 is the same deadlock with ``multiprocessing.Event``).
    Seen here as a worker that never exited after ``kill -TERM -- -PGID``,
    and in 1 of 40 double SIGTERMs to a bare StopSignal on a loaded machine.
    """

    def __init__(self) -> None:
        self._stopped = False
        self.read_fd, self.write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(self.write_fd, warn_on_full_buffer=False)
        for sig in STOP_SIGNALS:
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._stopped = True

    def is_set(self) -> bool:
        return self._stopped

    def close(self) -> None:
        signal.set_wakeup_fd(-1)
        os.close(self.read_fd)
        os.close(self.write_fd)


class Daemon:
    def __init__(
        self,
        listener: Listener,
        plugins: dict[str, Plugin],
        log_calls: bool = False,
        metrics: DaemonMetrics | None = None,
    ) -> None:
        self.listener = listener
        self.log_calls = log_calls
        self.plugins = plugins
        self.metrics = metrics
        self.calls: CallMetrics | None = None  # a worker's, made in the worker
        self.own_netns = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        self.slots = threading.BoundedSemaphore(MAX_CONCURRENT)
        self.active: set[threading.Thread] = set()
        self.active_lock = threading.Lock()
        self.allowed_uids = {0, os.getuid()}
        delegate.set_executor(InProcessExecutor(self.plugins))

    # -- the supervisor -------------------------------------------------------

    def serve_forever(self, workers: int = 1) -> None:
        """Serve until SIGTERM/SIGINT in ``workers`` forked processes (at least one).

        The supervisor itself never runs a call, so killing it outright still
        lets the workers finish theirs.
        """
        workers = max(1, workers)
        stop = StopSignal()
        children = {self._spawn(stop) for _ in range(workers)}
        how = "from systemd" if self.listener.activated else "bound"
        log.info("serving %s (%s, %d plugins, %d workers)", self.listener.path, how, len(self.plugins), workers)
        systemd.notify(f"READY=1\nSTATUS=serving with {workers} workers")
        try:
            while not stop.is_set():
                _wait_readable(stop.read_fd, 0.5)
                while (pid := _reap_one()) is not None:
                    self._worker_exited(pid)
                    if pid in children and not stop.is_set():
                        children.discard(pid)
                        log.warning("worker %d exited; starting another", pid)
                        children.add(self._spawn(stop))
            systemd.notify("STOPPING=1")
            self.listener.release_path()
            self.listener.close()
            for pid in children:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
            for pid in children:
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, 0)
                self._worker_exited(pid)
            log.info("stopped")
        finally:
            stop.close()

    def _worker_exited(self, pid: int) -> None:
        if self.metrics is not None:
            self.metrics.worker_exited(pid)

    def _spawn(self, supervisor_stop: StopSignal) -> int:
        supervisor = os.getpid()
        # Stop signals wait until the child has its own handlers (a SIGTERM in
        # between would set the supervisor's event in the child's copy, unseen).
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                supervisor_stop.close()
                stop = StopSignal()
                signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
                _die_with(supervisor)
                if self.metrics is not None:
                    self.metrics.in_worker()
                    self.calls = self.metrics.recorder(self.plugins)
                self._work(stop)
            except BaseException:  # a worker must exit, never unwind into the supervisor's code
                log.exception("worker failed")
                code = 1
            logging.shutdown()
            os._exit(code)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
        return pid

    # -- a worker -------------------------------------------------------------

    def _work(self, stop: StopSignal) -> None:
        self.listener.sock.setblocking(False)  # workers race for each connection; the losers must not block
        with selectors.DefaultSelector() as selector:
            selector.register(self.listener.sock, selectors.EVENT_READ)
            selector.register(stop.read_fd, selectors.EVENT_READ)
            while not stop.is_set():
                for key, _ in selector.select():
                    if key.fileobj is self.listener.sock and not stop.is_set():
                        self._accept_one(stop)
        # Stop reaching this process at once, then finish what it took.
        self.listener.release_path()  # the supervisor's job, unless it died (then ours)
        self.listener.close()
        self._drain()
        stop.close()

    def _accept_one(self, stop: StopSignal) -> None:
        try:
            conn, _ = self.listener.sock.accept()
        except (BlockingIOError, InterruptedError):
            return  # another worker took it
        conn.setblocking(True)
        while not self.slots.acquire(timeout=0.2):
            if stop.is_set():
                break  # serve it anyway: it was accepted, and the slot limit is only a brake
        thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
        with self.active_lock:
            self.active.add(thread)
        thread.start()

    def _drain(self) -> None:
        deadline = time.monotonic() + DRAIN_SECONDS
        with self.active_lock:
            threads = list(self.active)
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        left = sum(thread.is_alive() for thread in threads)
        if left:
            log.error("stopping with %d calls unfinished after %.0f s", left, DRAIN_SECONDS)

    # -- one connection -------------------------------------------------------

    def _serve(self, conn: socket.socket) -> None:
        fds: list[int] = []
        started = time.perf_counter()
        try:
            if not self._peer_allowed(conn):
                conn.sendall(_error_reply(ErrorCode.INVALID_ENVIRONMENT_VARIABLES, "permission denied: root only"))
                return
            conn.sendall(wire.READY_FRAME)
            reader = wire.Reader(conn)
            try:
                reader.magic()
                nfds = reader.take(1)[0]
                plugin_type = reader.blob().decode()
                env = wire.decode_env(reader.blob())
                stdin = reader.blob()
            finally:
                fds = reader.fds
            conn.sendall(wire.TAKEN_FRAME)  # from here on, the shim counts on this process
            deferred: list[Deferred] = []
            reply, code = self._call(plugin_type, env, stdin, fds, nfds, deferred)
            with contextlib.suppress(OSError):  # a client that went away loses only the reply
                conn.sendall(reply)
            conn.close()
            if self.calls is not None:  # what the caller waited for; deferred work is not
                self.calls.observe(plugin_type, env.get("CNI_COMMAND", ""), code, time.perf_counter() - started)
            if deferred:
                self._in_caller_netns(fds[0], lambda: run_deferred(deferred))
            level = logging.INFO if self.log_calls else logging.DEBUG
            elapsed = 1000 * (time.perf_counter() - started)
            log.log(level, "%s %s %s %.1f ms", plugin_type, env.get("CNI_COMMAND"), env.get("CNI_CONTAINERID"), elapsed)
        except (OSError, wire.WireError) as exc:
            log.debug("dropped a connection: %s", exc)
        finally:
            for fd in fds:
                os.close(fd)
            conn.close()
            self.slots.release()
            with self.active_lock:
                self.active.discard(threading.current_thread())

    def _peer_allowed(self, conn: socket.socket) -> bool:
        creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        _pid, uid, _gid = struct.unpack("3i", creds)
        return uid in self.allowed_uids

    def _call(
        self,
        plugin_type: str,
        env: dict[str, str],
        stdin: bytes,
        fds: list[int],
        nfds: int,
        deferred: list[Deferred],
    ) -> tuple[bytes, int]:
        """The reply frame, and the CNI error code it carries (0: success)."""
        plugin = self.plugins.get(plugin_type)
        if plugin is None:
            msg = f"pycni daemon has no plugin of type {plugin_type!r}"
            return _error_reply(ErrorCode.INTERNAL, msg), ErrorCode.INTERNAL
        if nfds < 1 or len(fds) < nfds:
            msg = "pycni daemon: the caller's namespace did not arrive"
            return _error_reply(ErrorCode.INTERNAL, msg), ErrorCode.INTERNAL
        container_fd = fds[1] if nfds > 1 else None
        try:
            reply = self._in_caller_netns(
                fds[0], lambda: plugin.invoke(env, stdin, netns_fd=container_fd, deferred=deferred)
            )
        except CNIError as error:
            return _error_reply(error.code, f"pycni daemon: {error.msg}"), error.code
        frame = wire.encode_reply(reply.exit_code, reply.stdout.encode(), reply.stderr.encode())
        return frame, _reply_code(reply)

    def _in_caller_netns(self, caller_fd: int, work: Callable[[], T]) -> T:
        setns(caller_fd, "the caller's namespace")
        try:
            return work()
        finally:
            setns(self.own_netns, "the daemon's namespace")


def _wait_readable(fd: int, timeout: float) -> None:
    """Sleep until ``fd`` is readable (a signal arrived) or ``timeout`` passes; empty the pipe."""
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        if selector.select(timeout):
            with contextlib.suppress(BlockingIOError):
                os.read(fd, 512)


def _reap_one() -> int | None:
    try:
        pid, _status = os.waitpid(-1, os.WNOHANG)
    except ChildProcessError:
        return None
    return pid or None


def _die_with(supervisor: int) -> None:
    """Get SIGTERM when the supervisor dies (a SIGKILL it cannot pass on), and drain as on any stop."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        log.warning("PR_SET_PDEATHSIG failed (errno %d): a killed supervisor leaves this worker", ctypes.get_errno())
    if os.getppid() != supervisor:  # it died before the prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


def _limit_malloc_arenas() -> None:
    """Keep glibc from giving every connection thread its own malloc arena.

    A thread per connection makes glibc create arenas up to 8 per core; freed
    memory then stays spread over them, and the daemon's RSS crept up by ~3 MB
    per 1000 ADD/DEL cycles (tests/campaigns/soak.py) with no Python object
    leaked (tracemalloc). The GIL serialises the threads' allocations anyway,
    so one arena costs nothing: RSS grew 1 MB over 3000 cycles (9 MB without).
    """
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).mallopt(M_ARENA_MAX, MALLOC_ARENAS)


def _take(socket_path: str) -> Listener:
    """The listening socket; from here on calls reach this daemon (``STATUS=`` says so to systemd and tests)."""
    listener = acquire(socket_path)
    systemd.notify(f"STATUS=listening on {listener.path}")
    return listener


def main(socket_path: str, log_calls: bool, workers: int = 0, metrics_addr: ListenAddress | None = None) -> int:
    """Take the socket as soon as that costs no call anything, import every plugin, then serve.

    When no daemon serves the path (a first start, or a restart after the old
    one let go), the socket is bound before the plugins are imported: calls
    that arrive meanwhile wait in its backlog for the shim's READY (the shim
    waits ``PYCNI_DAEMON_WAIT`` for it), as they do behind systemd's socket,
    instead of each running in-process, which would be slower for them and
    would take the CPU this start needs. When a live daemon serves the path
    (a take-over), the plugins are imported first, so the old daemon keeps
    answering until the rename and no call waits at all.

    ``metrics_addr`` is bound first of all: an address that cannot be served
    stops the start before the socket is taken.
    """
    _limit_malloc_arenas()
    metrics: DaemonMetrics | None = None
    if metrics_addr is not None:
        from pycni.daemon.metrics import DaemonMetrics

        try:
            metrics = DaemonMetrics.start(metrics_addr)
        except OSError as error:
            log.error("%s", error)
            return 1
    try:
        try:
            listener = None if serving(socket_path) else _take(socket_path)
            plugins = load_plugins()
            listener = listener or _take(socket_path)
        except CNIError as error:
            log.error("%s", error)
            return 1
        except OSError as error:
            log.error("cannot serve %s: %s", socket_path, error)
            return 1
        Daemon(listener, plugins, log_calls, metrics).serve_forever(workers or os.cpu_count() or 1)
        return 0
    finally:
        if metrics is not None:
            metrics.close()
