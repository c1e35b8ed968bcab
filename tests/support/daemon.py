"""A ``pycni daemon`` under test: started like systemd starts it, ready when it says so.

Readiness comes from the daemon itself (``sd_notify`` READY=1 on a
NOTIFY_SOCKET this harness listens on), never from the socket file
appearing: during a restart the old daemon's file may still be there.
With ``activated``, the harness plays systemd's socket unit: it holds the
listening socket for the whole test and passes it to every daemon it starts
as descriptor 3 with LISTEN_FDS/LISTEN_PID.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

# Sets LISTEN_PID to its own pid (which exec keeps), moves the socket to fd 3, then becomes the daemon.
LAUNCHER = """
import os, sys
fd = int(sys.argv[1])
if fd != 3:
    os.dup2(fd, 3)
    os.close(fd)
os.environ["LISTEN_FDS"] = "1"
os.environ["LISTEN_PID"] = str(os.getpid())
os.execv(sys.executable, [sys.executable, *sys.argv[2:]])
"""


class SocketUnit:
    """What ``pycni.socket`` is to systemd: one listening socket that outlives every daemon."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        os.chmod(path, 0o600)
        self.sock.listen(1024)

    def close(self) -> None:
        self.sock.close()
        path = self.path
        if path.exists():
            path.unlink()


class DaemonProcess:
    def __init__(
        self,
        socket_path: Path,
        workers: int = 2,
        log_path: Path | None = None,
        unit: SocketUnit | None = None,
        log_calls: bool = False,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.socket_path = socket_path
        self.workers = workers
        self.log_path = log_path
        self.unit = unit
        self.log_calls = log_calls
        self.extra_args = extra_args  # more ``pycni daemon`` flags, e.g. ("--metrics-addr", "unix:/PATH")
        self.proc: subprocess.Popen[bytes] | None = None
        self.started = 0.0
        self.bound = 0.0  # when the socket became this daemon's: calls from then on wait for it, not run in-process
        self.ready = 0.0

    def argv(self) -> list[str]:
        argv = ["-m", "pycni.cli.entry", "daemon", "--socket", str(self.socket_path), "--workers", str(self.workers)]
        if self.log_calls:
            argv.append("--log")
        argv += self.extra_args
        if self.unit is None:
            return [sys.executable, *argv]
        return [sys.executable, "-c", LAUNCHER, str(self.unit.sock.fileno()), *argv]

    def start(self, timeout: float = 20.0) -> None:
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify_path = f"\0pycni-test-notify-{os.getpid()}-{time.monotonic_ns()}"
        notify.bind(notify_path)
        notify.settimeout(timeout)
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115 - lives with the process
        try:
            self.started = time.monotonic()
            self.proc = subprocess.Popen(
                self.argv(),
                env={**os.environ, "NOTIFY_SOCKET": "@" + notify_path[1:]},
                pass_fds=(self.unit.sock.fileno(),) if self.unit else (),
                start_new_session=True,  # its own process group: killpg reaches every worker
                stderr=log,
            )
            while True:
                try:
                    message = notify.recv(4096)
                except TimeoutError:
                    raise AssertionError(f"the daemon did not report ready within {timeout} s") from None
                now, lines = time.monotonic(), message.split(b"\n")
                if any(line.startswith(b"STATUS=listening on ") for line in lines):
                    self.bound = now
                if b"READY=1" in lines:
                    self.ready = now
                    self.bound = self.bound or now
                    return
        finally:
            notify.close()
            if not isinstance(log, int):
                log.close()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def send(self, sig: int) -> None:
        """Signal the main process only, as systemd's ExecStop/KillMode=mixed and an operator's kill do."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, sig)

    def kill_group(self, sig: int = signal.SIGKILL) -> None:
        """Signal every process of the daemon (the main one and its workers) and wait for the main one."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            self.proc.wait(timeout=30)
        self.proc = None

    def wait_gone(self, timeout: float = 60.0) -> None:
        """Wait until the main process and every worker have exited."""
        if self.proc is None:
            return
        self.proc.wait(timeout=timeout)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                os.killpg(self.proc.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.02)
        raise AssertionError(f"daemon {self.proc.pid}'s workers did not exit within {timeout} s")

    def stop(self) -> None:
        self.kill_group(signal.SIGTERM)


class Daemon(DaemonProcess):
    """The simple form most tests want: start it, kill its whole process group at the end."""

    def kill(self, sig: int = signal.SIGKILL) -> None:
        self.kill_group(sig)


def call_direct(
    socket_path: Path, plugin_type: str, env: dict[str, str], stdin: bytes, caller_netns: str, netns: str | None
) -> tuple[int, bytes, bytes]:
    """One call to the daemon as the shim makes it, from this process (no plugin executable start-up).

    For campaigns that load the daemon itself: ``caller_netns`` is the
    namespace the call runs in (the node), ``netns`` the container's.
    """
    from pycni.daemon import wire

    paths = [caller_netns] + ([netns] if netns else [])
    fds = [os.open(path, os.O_RDONLY | os.O_CLOEXEC) for path in paths]
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(str(socket_path))
        reader = wire.Reader(sock)
        if reader.kind() != wire.READY:
            raise AssertionError("the daemon refused the call")
        raw_env = {k.encode(): v.encode() for k, v in env.items()}
        sock.sendmsg([wire.encode_request(plugin_type, raw_env, stdin, len(fds))], wire.fds_ancillary(fds))
        if reader.kind() != wire.TAKEN or reader.kind() != wire.REPLY:
            raise AssertionError("the daemon broke the protocol")
        return reader.reply_body()
    finally:
        sock.close()
        for fd in fds:
            os.close(fd)
