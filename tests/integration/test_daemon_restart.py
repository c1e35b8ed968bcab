"""Restarting ``pycni daemon`` under load fails no call and leaks no container.

Four loops run the seed's Case 1 (``bridge.json``: bridge + host-local with
ipMasq) as ADD then DEL through the installed plugin executables, without
pause, while the daemon is restarted again and again: its main process gets
SIGTERM (``systemctl restart``) or SIGKILL, and a new daemon is started at
once, before the old one is gone. Once without socket activation (each daemon
binds and renames its own socket over the path) and once with it (this test
holds the listening socket, as ``pycni.socket`` makes systemd do, and passes
it to every daemon). Every call must succeed, every container must be gone at
the end, and each new daemon must take every call within 1 s of its start:
from the moment its socket is at the path (it binds before importing the
plugins when no daemon serves the path) every call waits for it and is
served by it, none runs in-process; and it answers them well within the
shim's wait for READY.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import statistics
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.daemon import DaemonProcess, SocketUnit
from tests.support.netns import NetnsPool, run
from tests.support.seed import case1

RESTARTS = int(os.environ.get("PYCNI_RESTARTS", "10"))  # per mode; two modes make the 20
LOOPS = 4
WARM_WITHIN = 1.0  # seconds from a daemon's start until every call is its own (its socket is at the path)
SERVE_WITHIN = 5.0  # seconds from a daemon's start until READY: the shim's PYCNI_DAEMON_WAIT for a READY frame

pytestmark = pytest.mark.serial  # it measures how fast a daemon starts: nothing else may share the CPU


@dataclass
class Call:
    loop: int
    verb: str
    container_id: str
    start: float
    end: float
    exit_code: int
    stdout: bytes


@dataclass
class Start:
    log: Path
    started: float
    bound: float
    ready: float
    signalled: float = float("inf")


class Loops:
    """``LOOPS`` threads doing ADD then DEL of Case 1 until told to stop, and one prober.

    The prober asks for VERSION every 20 ms: the Case 1 loops may be in the
    middle of an in-process call (~1 s) when a daemon comes back, so they
    cannot say how soon it serves; the prober can.
    """

    def __init__(self, node: str, containers: list[str], plugin_dir: str, socket_path: Path, data_dir: Path) -> None:
        self.node = node
        self.containers = containers
        self.plugin_dir = plugin_dir
        self.socket_path = socket_path
        self.config = json.dumps(case1(data_dir)).encode()
        self.calls: list[Call] = []
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._loop, args=(i,), daemon=True) for i in range(LOOPS)]
        self.threads.append(threading.Thread(target=self._probe, daemon=True))

    def __enter__(self) -> Loops:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=120)

    def _call(self, loop: int, verb: str, container_id: str) -> Call:
        env = {
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            "CNI_COMMAND": verb,
            "CNI_CONTAINERID": container_id,
            "CNI_NETNS": NetnsPool.path(self.containers[loop % LOOPS]),
            "CNI_IFNAME": "eth0",
            "CNI_PATH": self.plugin_dir,
            "PYCNI_SOCKET": str(self.socket_path),
        }
        argv = ["ip", "netns", "exec", self.node, os.path.join(self.plugin_dir, "bridge")]
        start = time.monotonic()
        proc = subprocess.run(argv, input=self.config, env=env, capture_output=True, check=False, timeout=120)
        return Call(loop, verb, container_id, start, time.monotonic(), proc.returncode, proc.stdout)

    def _probe(self) -> None:
        serial = 0
        while not self.stop.is_set():
            self.calls.append(self._call(LOOPS, "VERSION", f"probe-{serial}"))
            serial += 1
            time.sleep(0.02)

    def _loop(self, loop: int) -> None:
        serial = 0
        while not self.stop.is_set():
            container_id = f"restart-{loop}-{serial}"
            self.calls.append(self._call(loop, "ADD", container_id))
            self.calls.append(self._call(loop, "DEL", container_id))  # after a failed ADD too, as runtimes do
            serial += 1


def served_by(log: Path) -> set[tuple[str, str]]:
    """(verb, container ID) of every call a daemon's ``--log`` lines say it served."""
    text = log.read_text(errors="replace") if log.exists() else ""
    return {(m[1], m[2]) for m in re.finditer(r"bridge (ADD|DEL|VERSION) ((?:restart|probe)-[\d-]+) ", text)}


def wait_served(log: Path, kind: str, timeout: float = 30.0) -> None:
    """Wait until the daemon writing ``log`` has served a call of ``kind`` (``restart`` or ``probe``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(cid.startswith(kind) for _, cid in served_by(log)):
            return
        time.sleep(0.02)
    raise AssertionError(f"{log.name}: no {kind} call served within {timeout} s")


@pytest.mark.parametrize("activated", [False, True], ids=["own-socket", "socket-activated"])
def test_restarts_fail_no_call(activated: bool, netns: NetnsPool, pycni_plugin_dir: str, tmp_path: Path) -> None:
    node = netns.new("rnode")
    containers = [netns.new(f"rc{i}") for i in range(LOOPS)]
    socket_path = tmp_path / "run" / "pycni.sock"
    unit = SocketUnit(socket_path) if activated else None
    rng = random.Random(1234)
    starts: list[Start] = []
    daemons: list[DaemonProcess] = []

    def start_daemon() -> None:
        log = tmp_path / f"daemon-{len(starts)}.log"
        daemon = DaemonProcess(socket_path, workers=2, log_path=log, unit=unit, log_calls=True)
        daemon.start()
        daemons.append(daemon)
        starts.append(Start(log, daemon.started, daemon.bound, daemon.ready))

    try:
        start_daemon()
        with Loops(node, containers, pycni_plugin_dir, socket_path, tmp_path / "ipam") as loops:
            for restart in range(RESTARTS):
                # So the signal lands on a daemon with Case 1 calls in flight, and each daemon is seen serving.
                wait_served(starts[-1].log, "restart")
                wait_served(starts[-1].log, "probe")
                time.sleep(rng.uniform(0.1, 0.5))
                starts[-1].signalled = time.monotonic()
                daemons[-1].send(signal.SIGTERM if restart % 2 == 0 else signal.SIGKILL)
                start_daemon()  # at once, as a supervisor would, while the old one may still be draining
            wait_served(starts[-1].log, "restart")  # the last daemon serves Case 1 too
            wait_served(starts[-1].log, "probe")
        calls = loops.calls
        starts[-1].signalled = time.monotonic()
        daemons[-1].send(signal.SIGTERM)
        for daemon in daemons:
            daemon.wait_gone()  # every daemon exits, workers included
    finally:
        for daemon in daemons:
            daemon.kill_group()
        if unit is not None:
            unit.close()

    failed = [c for c in calls if c.exit_code != 0]
    assert not failed, f"{len(failed)} of {len(calls)} calls failed, first: {failed[0].verb} {failed[0].stdout!r}"

    # Each daemon's socket is at the path within WARM_WITHIN of its start, and every call made wholly
    # between then and its signal is served by it: none falls back to the in-process path.
    served = [served_by(start.log) for start in starts]
    bound = [start.bound - start.started for start in starts]
    readiness = [start.ready - start.started for start in starts]
    cold_while_ready = [
        (index, c.verb, c.container_id)
        for index, (start, mine) in enumerate(zip(starts, served, strict=True))
        for c in calls
        if start.bound < c.start and c.end < start.signalled and (c.verb, c.container_id) not in mine
    ]
    case1 = [c for c in calls if c.verb != "VERSION"]
    by_daemon = sum(1 for s in served for _, cid in s if cid.startswith("restart"))
    print(
        f"\n{'socket-activated' if activated else 'own socket'}: {RESTARTS} restarts, {len(case1)} Case 1 calls "
        f"and {len(calls) - len(case1)} probes, {len(failed)} failed; Case 1 calls served by a daemon {by_daemon}, "
        f"in-process {len(case1) - by_daemon}; start to socket at the path: median {statistics.median(bound):.2f} s, "
        f"max {max(bound):.2f} s; start to READY: median {statistics.median(readiness):.2f} s, "
        f"max {max(readiness):.2f} s; calls started after a daemon had the socket that it did not serve: "
        f"{len(cold_while_ready)}"
    )
    assert max(bound) < WARM_WITHIN, f"a daemon took {max(bound):.2f} s to have its socket at the path"
    assert max(readiness) < SERVE_WITHIN, f"a daemon took {max(readiness):.2f} s to serve after its start"
    assert not cold_while_ready, f"calls run in-process while a daemon had the socket: {cold_while_ready[:5]}"

    # Nothing leaked: no container interface, no veth on the node, no address reserved.
    assert run("ip", "-o", "link", "show", "type", "veth", netns=node).stdout == ""
    for ctr in containers:
        assert "eth0" not in run("ip", "-o", "link", "show", netns=ctr).stdout
    reservations = [n for n in os.listdir(tmp_path / "ipam" / "mynet") if n[0].isdigit()]
    assert reservations == [], f"addresses still reserved: {reservations}"
    if not activated:
        assert not socket_path.exists(), "a daemon stopped by SIGTERM removes its socket"
