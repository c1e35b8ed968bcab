"""A real single-member etcd for tests, removed afterwards even when a test fails.

``etcd_server()`` starts ``/usr/bin/etcd`` on loopback (free ports) or, with
``netns=``, inside a network namespace on a given address (the multi-node
tests run it in their "underlay" namespace). It waits until etcd answers,
and on exit kills it and removes its data directory. ``stop()`` and
``start()`` simulate an outage with the same data; ``freeze()`` (SIGSTOP)
simulates a member that hangs with its connections open.

Test modules wrap it in their own fixture::

    @pytest.fixture
    def etcd() -> Iterator[EtcdServer]:
        with etcd_server() as server:
            yield server
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress

ETCD = "/usr/bin/etcd"
ETCDCTL = "/usr/bin/etcdctl"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


class EtcdServer:
    """One etcd process and its data directory (kept across stop/start)."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        netns: str | None = None,
        client_port: int | None = None,
        peer_port: int | None = None,
    ) -> None:
        self.host = host
        self.netns = netns
        # A fresh namespace has no other listeners, so etcd's own ports are free there.
        self.client_port = client_port or (2379 if netns else free_port(host))
        self.peer_port = peer_port or (2380 if netns else free_port(host))
        self.workdir = tempfile.mkdtemp(prefix="pycni-etcd-")
        self.data_dir = os.path.join(self.workdir, "data")
        self.log_path = os.path.join(self.workdir, "etcd.log")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.client_port}"

    def _wrap(self, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.netns, *argv] if self.netns else argv

    def start(self, timeout: float = 15.0) -> None:
        assert self.process is None, "etcd is already running"
        peer = f"http://{self.host}:{self.peer_port}"
        argv = [
            ETCD,
            "--name=pyt",
            f"--data-dir={self.data_dir}",
            f"--listen-client-urls={self.url}",
            f"--advertise-client-urls={self.url}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=pyt={peer}",
            "--logger=zap",
            "--log-outputs=stderr",
            # A single member elects itself after one election timeout: 0.2 s instead of 1 s.
            "--heartbeat-interval=20",
            "--election-timeout=200",
        ]
        with open(self.log_path, "ab") as log:
            # `ip netns exec` execs etcd itself, so this pid is etcd's.
            self.process = subprocess.Popen(self._wrap(argv), stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while not self.healthy():
            if self.process.poll() is not None:
                self.process = None
                raise RuntimeError(f"etcd exited while starting:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"etcd did not answer at {self.url} within {timeout} s:\n{self.log_tail()}")
            time.sleep(0.1)

    def healthy(self) -> bool:
        result = self.etcdctl("endpoint", "health", "--command-timeout=300ms", check=False, dial_timeout="200ms")
        return result.returncode == 0

    def etcdctl(self, *args: str, check: bool = True, dial_timeout: str = "1s") -> subprocess.CompletedProcess[str]:
        argv = self._wrap([ETCDCTL, f"--endpoints={self.url}", f"--dial-timeout={dial_timeout}", *args])
        env = dict(os.environ, ETCDCTL_API="3")
        return subprocess.run(argv, capture_output=True, text=True, check=check, env=env, timeout=30)

    def freeze(self) -> None:
        """SIGSTOP: connections stay open but nothing answers (a hung or partitioned member)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        """Terminate etcd (SIGKILL after 5 s); the data directory stays for ``start()``."""
        process, self.process = self.process, None
        if process is None:
            return
        with suppress(ProcessLookupError):
            process.send_signal(signal.SIGCONT)  # a frozen etcd would never see SIGTERM
            process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)

    def cleanup(self) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def log_tail(self, lines: int = 20) -> str:
        try:
            with open(self.log_path, errors="replace") as handle:
                return "".join(handle.readlines()[-lines:])
        except OSError:
            return ""


@contextmanager
def etcd_server(host: str = "127.0.0.1", netns: str | None = None) -> Iterator[EtcdServer]:
    """A running etcd, killed and deleted on exit whatever happened."""
    if not os.access(ETCD, os.X_OK):
        import pytest

        pytest.skip("etcd is not installed (apt-get install etcd-server etcd-client)")
    server = EtcdServer(host=host, netns=netns)
    try:
        server.start()
        yield server
    finally:
        server.cleanup()
