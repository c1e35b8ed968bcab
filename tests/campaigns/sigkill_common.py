"""The SIGKILL campaign's processes: running a call with a kill, the killers, the daemon, one kill's record."""

from __future__ import annotations

import compileall
import contextlib
import dataclasses
import hashlib
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from tests.support.daemon import DaemonProcess
from tests.support.netns import NetnsPool
from tests.support.node import process_tree

IFNAME = "eth0"
CALL_TIMEOUT = 120.0
GROUP_TIMEOUT = 60.0
DEL_ATTEMPTS = 3
WINDOW_SAMPLES = 10
RECALIBRATE_EVERY = 20
SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
# What a node may keep after the last attachment: the forwarding switches the bridge plugin turns on
# (and conf.all.accept_redirects, which the kernel clears whenever IPv4 forwarding goes on).
FORWARDING = re.compile(
    r"^net\.ipv4\.ip_forward$|^net\.ipv[46]\.conf\.[^.]+\.forwarding$|^net\.ipv4\.conf\.all\.accept_redirects$"
)


def cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def threads_of(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Threads:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def wait_group(pgid: int, timeout: float) -> bool:
    """Wait until no process of group ``pgid`` is left; SIGKILL them after ``timeout`` (returns False then)."""
    deadline = time.monotonic() + timeout
    while group_alive(pgid):
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
            return False
        time.sleep(0.01)
    return True


def pythonpath() -> dict[str, str]:
    """``PYTHONPATH`` as this process has it (a frozen source, see :func:`freeze_source`)."""
    return {"PYTHONPATH": os.environ["PYTHONPATH"]} if os.environ.get("PYTHONPATH") else {}


@dataclasses.dataclass
class Call:
    """One runtime command: how it ended, and what a kill did to it."""

    argv: list[str]
    rc: int | None = None
    stdout: str = ""
    stderr: str = ""
    seconds: float = 0.0
    killed: str = ""  # what received the SIGKILL, "" if nothing did
    kill_ms: float = 0.0  # when, after the start
    hung: bool = False


# A killer is handed the running runtime and returns what it killed ("" when nothing).
Killer = Callable[[subprocess.Popen[bytes], float], str]


def run_call(argv: list[str], env: dict[str, str], killer: Killer | None = None, delay: float = 0.0) -> Call:
    """Run ``argv`` in its own process group, ``killer`` called ``delay`` s in; wait for the whole group."""
    call = Call(argv)
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.monotonic()
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=err, stdin=subprocess.DEVNULL, start_new_session=True)
        if killer is not None:
            time.sleep(max(0.0, started + delay - time.monotonic()))
            if proc.poll() is None:
                call.killed = killer(proc, started + CALL_TIMEOUT)
                call.kill_ms = round(1000 * (time.monotonic() - started), 1)
        try:
            call.rc = proc.wait(timeout=max(1.0, started + CALL_TIMEOUT - time.monotonic()))
        except subprocess.TimeoutExpired:
            call.hung = True
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            call.rc = proc.wait()
        call.seconds = time.monotonic() - started
        if not wait_group(proc.pid, GROUP_TIMEOUT):
            call.hung = True
        out.seek(0)
        err.seek(0)
        call.stdout, call.stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    return call


def plugin_processes(root: int, plugin_dir: str) -> list[tuple[int, str]]:
    """(pid, type) of the plugin executables running under ``root`` (``python -IS DIR/TYPE``)."""
    found = []
    for pid in process_tree(root)[1:]:
        for arg in cmdline(pid)[1:3]:
            if arg.startswith(plugin_dir + "/"):
                found.append((pid, os.path.basename(arg)))
    return found


def kill_plugin(plugin_dir: str, rng: random.Random) -> Killer:
    """SIGKILL one plugin process alive at that moment (the first to start, if none is)."""

    def killer(proc: subprocess.Popen[bytes], deadline: float) -> str:
        while proc.poll() is None and time.monotonic() < deadline:
            running = plugin_processes(proc.pid, plugin_dir)
            if running:
                pid, plugin_type = rng.choice(running)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                    return plugin_type
            time.sleep(0.002)
        return ""

    return killer


def kill_runtime(plugin_dir: str) -> Killer:
    """SIGKILL the runtime and everything it runs (its process group)."""

    def killer(proc: subprocess.Popen[bytes], deadline: float) -> str:
        running = [name for _, name in plugin_processes(proc.pid, plugin_dir)]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
            return "+".join(["pycni", *running])
        return ""

    return killer


# -- the daemon ----------------------------------------------------------------------------------


class Daemon:
    """The campaign's ``pycni daemon`` (2 workers, its own socket); which worker is serving, by its threads."""

    def __init__(self, work: Path, plugin_dir: str) -> None:
        self.plugin_dir = plugin_dir
        self.socket = work / "run" / "pycni.sock"
        self.log = work / "daemon.log"
        self.process: DaemonProcess | None = None
        self.idle_threads: dict[int, int] = {}
        self.restarts = 0
        self.killed_at = 0.0  # the busy time at the last kill

    def start(self) -> None:
        self.process = DaemonProcess(self.socket, workers=2, log_path=self.log)
        self.process.start(timeout=60)
        deadline = time.monotonic() + 10
        while len(self.workers()) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.3)  # the workers' first moments (selector set-up) are not a call
        self.idle_threads = {pid: threads_of(pid) for pid in self.workers()}

    def workers(self) -> list[int]:
        assert self.process is not None
        return process_tree(self.process.pid)[1:]

    def busy_workers(self) -> list[int]:
        """Workers with a connection thread: a call (or its after-reply clean-up) is running there."""
        busy = []
        for pid in self.workers():
            idle = self.idle_threads.setdefault(pid, 1)  # a respawned worker: forked from an idle supervisor
            if threads_of(pid) > idle:
                busy.append(pid)
        return busy

    def watch(self, proc: subprocess.Popen[bytes], deadline: float, busy_for: float | None) -> tuple[float, list[int]]:
        """Follow the call's time in workers (1 ms polls) until it adds up to ``busy_for`` seconds.

        Returns the busy time seen and the workers busy at that moment; no
        workers when the call ended first (or ``busy_for`` is None: measuring).
        """
        busy_time, last = 0.0, time.monotonic()
        while proc.poll() is None and time.monotonic() < deadline:
            busy = self.busy_workers()
            now = time.monotonic()
            if busy:
                busy_time += now - last
                if busy_for is not None and busy_time >= busy_for:
                    self.killed_at = busy_time
                    return busy_time, busy
            last = now
            time.sleep(0.001)
        return busy_time, []

    def measure(self, into: list[float]) -> Killer:
        """A watcher that kills nothing: the call's time in workers, appended to ``into``."""

        def watcher(proc: subprocess.Popen[bytes], deadline: float) -> str:
            into.append(self.watch(proc, deadline, None)[0])
            return ""

        return watcher

    def kill_worker(self, rng: random.Random, busy_for: float) -> Killer:
        """SIGKILL the worker serving the call once the call has spent ``busy_for`` seconds in workers."""

        def killer(proc: subprocess.Popen[bytes], deadline: float) -> str:
            _, busy = self.watch(proc, deadline, busy_for)
            if not busy:
                return ""
            pid = rng.choice(busy)
            shims = "+".join(name for _, name in plugin_processes(proc.pid, self.plugin_dir)) or "no shim"
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
                self.idle_threads.pop(pid, None)
                return f"worker (serving; {shims})"
            return ""

        return killer

    def kill_supervisor(self, busy_for: float) -> Killer:
        """SIGKILL the main process once the call has spent ``busy_for`` seconds in workers (one is serving)."""

        def killer(proc: subprocess.Popen[bytes], deadline: float) -> str:
            _, busy = self.watch(proc, deadline, busy_for)
            if not busy:
                return ""
            assert self.process is not None
            shims = "+".join(name for _, name in plugin_processes(proc.pid, self.plugin_dir)) or "no shim"
            os.kill(self.process.pid, signal.SIGKILL)
            return f"supervisor (serving; {shims})"

        return killer

    def restart_after_supervisor_kill(self) -> str:
        """Wait for the drained workers to exit, then start a new daemon; what went wrong, if anything."""
        assert self.process is not None
        problem = ""
        try:
            self.process.wait_gone(timeout=60)
        except AssertionError as exc:
            problem = str(exc)
            self.process.kill_group()
        self.restarts += 1
        self.start()
        return problem

    def stop(self) -> None:
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError, subprocess.TimeoutExpired):
                self.process.stop()
            self.process = None

    def log_problems(self) -> list[str]:
        try:
            text = self.log.read_text(errors="replace")
        except FileNotFoundError:
            return []
        return [line for line in text.splitlines() if "Traceback" in line or "worker failed" in line][:5]


@dataclasses.dataclass
class Container:
    label: str
    netns: str
    port: int
    fresh: dict[str, list[str]] = dataclasses.field(default_factory=dict)

    @property
    def path(self) -> str:
        return NetnsPool.path(self.netns)

    @property
    def container_id(self) -> str:
        # cnitool's derivation (pycni.cli.main.container_id_for), as `pycni add` computes it
        return "cnitool-" + hashlib.sha512(self.path.encode()).digest()[:10].hex()


@dataclasses.dataclass
class Kill:
    """One scheduled kill and everything observed about it."""

    index: int
    target: str
    phase: str
    fraction: float  # of the call's window, where the kill falls
    window_ms: float = 0.0
    killed: str = ""  # what got the SIGKILL; "" = the call ended before anything could be killed
    kill_ms: float = 0.0
    process: str = ""  # syscall target: the process aimed at, killed before its effect (state-changing system call)
    effect: int = 0  # ... number ``effect``
    effects: int = 0  # ... of this many it makes in an uncut call
    call_rc: int | None = None
    call_error: str = ""
    del_rcs: list[int | None] = dataclasses.field(default_factory=list)
    left_after_del: list[str] = dataclasses.field(default_factory=list)
    gc_ran: bool = False
    leaks: list[str] = dataclasses.field(default_factory=list)
    problems: list[str] = dataclasses.field(default_factory=list)  # not leaks: failed DEL, tracebacks, hangs
    seconds: float = 0.0

    @property
    def counted(self) -> bool:
        return bool(self.killed)


class Windows:
    """How long uncut calls of each kind take (median of the latest), for drawing kill delays over them."""

    def __init__(self) -> None:
        self.samples: dict[str, list[float]] = {}

    def observe(self, kind: str, call: Call) -> None:
        if call.rc == 0 and not call.killed:
            self.samples.setdefault(kind, []).append(call.seconds)
            del self.samples[kind][:-WINDOW_SAMPLES]

    def get(self, kind: str) -> float:
        return statistics.median(self.samples[kind])

    def summary(self) -> dict[str, float]:
        return {kind: round(1000 * statistics.median(v), 1) for kind, v in self.samples.items()}


def call_problems(name: str, call: Call) -> list[str]:
    problems = []
    if "Traceback" in call.stderr:
        problems.append(f"{name}: traceback: {call.stderr.strip()[-500:]}")
    if call.hung:
        problems.append(f"{name}: did not finish within {CALL_TIMEOUT:.0f} s (or left processes behind)")
    return problems


def first_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


def freeze_source(work: Path, plugin_dir: Path) -> None:
    """Run a copy of pycni's source, so the daemon, agents, runtime and plugins all run one version.

    The checkout may change during a long run (others work in it); a daemon
    started before an edit would otherwise serve old code beside executables
    running new code. The runtime, daemon and agents get it through
    ``PYTHONPATH``; the plugin executables (``-I``) through their own paths.
    """
    import pycni

    source = Path(pycni.__file__).resolve().parent
    frozen = work / "src"
    shutil.copytree(source, frozen / "pycni", ignore=shutil.ignore_patterns("__pycache__"))
    compileall.compile_dir(str(frozen), quiet=1)  # no process writes bytecode during the run (strace counts writes)
    os.environ["PYTHONPATH"] = str(frozen)
    for executable in plugin_dir.iterdir():
        text = executable.read_text()
        executable.write_text(text.replace(repr(str(source.parent)), repr(str(frozen))))


@dataclasses.dataclass
class Bench:
    """What every part of a run shares: namespaces, a work directory, the pycni command and plugin executables."""

    pool: NetnsPool
    work: Path
    pycni: str
    plugin_dir: str

    def dir(self, name: str) -> Path:
        path = self.work / name
        path.mkdir()
        return path


@contextlib.contextmanager
def bench(frozen: bool = False) -> Iterator[Bench]:
    """A work directory with pycni's plugin executables (a frozen copy of the source if asked); all removed after."""
    from pycni.cli.install import install

    pycni = shutil.which("pycni", path=os.path.dirname(sys.executable)) or "pycni"
    work = Path(tempfile.mkdtemp(prefix="pycni-sigkill-"))
    plugin_dir = work / "bin"
    saved_pythonpath = os.environ.get("PYTHONPATH")
    pool = NetnsPool(prefix=f"sk{uuid.uuid4().hex[:4]}")
    try:
        install(str(plugin_dir))
        if frozen:
            freeze_source(work, plugin_dir)
        yield Bench(pool, work, pycni, str(plugin_dir))
    finally:
        pool.cleanup()
        shutil.rmtree(work, ignore_errors=True)
        if saved_pythonpath is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved_pythonpath
