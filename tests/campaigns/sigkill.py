"""SIGKILL campaign: processes killed at random points of ADD and DEL, then DEL and GC must leave nothing (issue 9).

Run as root from the repository (a full run: at least 200 kills, under 30 minutes here)::

    .venv/bin/python -m tests.campaigns.sigkill --kills 200 --seed 1 --json sigkill.json
    .venv/bin/python -m tests.campaigns.sigkill --seed 1 --kills 200 --replay 37   # one kill of that run again
    .venv/bin/python -m tests.campaigns.sigkill --kills 20 --targets worker,supervisor

``make test`` runs a small one (``tests/integration/test_sigkill_campaign.py``).

Targets (what receives the SIGKILL):

==========  ==================================================================================
plugin      one plugin executable the runtime is running (in-process path, ``PYCNI_NO_DAEMON=1``),
            chosen at random among those alive at that moment (a delegated host-local included);
            the runtime sees it fail and cleans up as ``pycni add`` does
runtime     the runtime ``pycni`` with every plugin it runs (its process group: a runtime whose
            cgroup is killed); nothing of it cleans up
worker      the ``pycni daemon`` worker serving the call (the shims reach the campaign's daemon)
supervisor  the daemon's main process while a worker serves the call; its workers must finish
            the call and exit; the daemon is then started again, as systemd would
flanneld    the node agent of the node where a pod is being added or deleted through the flannel
            CNI plugin; restarted, and half the time killed again while starting (phase ``start``)
==========  ==================================================================================

The chain of the first four: bridge (host-local, IPv4 and IPv6, ipMasq, isGateway), tuning
(sysctls, MTU, promisc, its own dataDir), portmap (a host port per container), firewall
(``same-bridge`` isolation) and bandwidth (ingress and egress: a TBF and an ifb). flanneld's
node runs the flannel plugin (bridge + host-local underneath) with a vxlan backend on etcd.

Each kill, on a node that is a fresh network namespace with its own state directories (result
cache, host-local, tuning, flannel), and a new container namespace:

* phase ADD: ``pycni add`` with the kill at a delay drawn uniformly over an uncut ADD's duration
  (the median of the last uncut calls of that kind, so the window follows the machine's load);
  phase DEL: a whole ADD, then ``pycni del`` with the kill. For ``worker`` and ``supervisor`` the
  kill waits, from that delay on, for a worker to be serving (a thread beyond its idle ones).
* Everything the kill left running finishes (the process group is waited for), then ``pycni
  del`` as a runtime repeats it (up to 3 times, until it exits 0).
* The node is compared with its steady state (the bystanders' attachments only) and the
  container namespace with what it was when new. Anything left is run through ``pycni gc``
  keeping the bystanders (also every ``--gc-every`` kills); what GC leaves too is a leak.

Compared: links, addresses, routes and rules of every table, tc qdiscs, permanent neighbours
and FDB entries, the nftables ruleset (handles and counters left out, set elements unordered),
every ``net.*`` sysctl, every file under the state directories (cursors by name only) and
pycni's attachment records for the node's namespace; for flanneld also the other node and the
leases in etcd (expiry left out). After the last kill: ``pycni gc --all``, and the node against
the FRESH one taken before the first ADD: only the bridge (and flanneld's vxlan device), their
addresses, routes and sysctls, and the forwarding switches the bridge plugin turns on
(``ip_forward``, ``forwarding``: Go's bridge leaves them too) may differ.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
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
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.support.daemon import DaemonProcess
from tests.support.netns import NetnsPool, run
from tests.support.node import differences, process_tree

NETWORK = "kknet"
BRIDGE = "kkbr0"
SUBNET4, SUBNET6 = "10.93.0.0/24", "fd93::/64"
IFNAME = "eth0"
CHAIN = ("bridge", "tuning", "portmap", "firewall", "bandwidth")
CONTAINER_SYSCTLS = {"net.ipv4.conf.all.arp_ignore": "2", "net.core.somaxconn": "1024"}
FLANNEL_NETWORK = "10.247.0.0/16"
FLANNEL_CNI = "cbr0"

TARGETS = ("plugin", "runtime", "worker", "supervisor", "flanneld")
CHAIN_TARGETS = TARGETS[:4]
PHASES = ("ADD", "DEL")
CALL_TIMEOUT = 120.0
GROUP_TIMEOUT = 60.0
DEL_ATTEMPTS = 3
CONVERGE_SECONDS = 30.0
WINDOW_SAMPLES = 10
RECALIBRATE_EVERY = 20
VOLATILE_SYSCTLS = re.compile(r"nf_conntrack_count$|\.stable_secret$|\.base_reachable_time$|neigh\..*\.ucast_solicit")
# What a node may keep after the last attachment: the forwarding switches the bridge plugin turns on
# (and conf.all.accept_redirects, which the kernel clears whenever IPv4 forwarding goes on).
FORWARDING = re.compile(
    r"^net\.ipv4\.ip_forward$|^net\.ipv[46]\.conf\.[^.]+\.forwarding$|^net\.ipv4\.conf\.all\.accept_redirects$"
)
SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
RECORDS_ROOT = "/run/pycni/attachments"
LOCKS_ROOT = "/run/pycni/locks"


# -- observing a namespace ----------------------------------------------------------------------


def _ns(ns: str, *cmd: str) -> str:
    return run(*cmd, netns=ns, timeout=30).stdout


def _nft_view(ns: str) -> list[str]:
    """The ruleset as sorted lines of JSON: tables, chains, rules (in chain order), sets and each element."""
    out = _ns(ns, "nft", "-j", "list", "ruleset")
    lines: list[str] = []
    position: dict[tuple[str, str, str], int] = {}
    for obj in json.loads(out).get("nftables", []) if out.strip() else []:
        for kind, body in obj.items():
            if kind == "metainfo":
                continue
            fields = {k: v for k, v in body.items() if k not in ("handle", "elem")}
            if kind == "rule":
                key = (fields["family"], fields["table"], fields["chain"])
                position[key] = position.get(key, 0) + 1
                fields["position"] = position[key]
            lines.append(f"{kind} {_drop_counters(json.dumps(fields, sort_keys=True))}")
            for element in body.get("elem", []) if kind in ("set", "map") else []:
                where = f"{fields['family']} {fields['table']} {fields['name']}"
                lines.append(f"element {where} {_drop_counters(json.dumps(element, sort_keys=True))}")
    return sorted(lines)


def _drop_counters(text: str) -> str:
    text = re.sub(r'"counter": \{[^}]*\}', '"counter": {}', text)
    return re.sub(r'"(expires|packets|bytes)": \d+', r'"\1": 0', text)


def sysctls(ns: str) -> dict[str, str]:
    """Every ``net.*`` sysctl of the namespace (those that change by themselves left out)."""
    out = run("sysctl", "-a", netns=ns, check=False, timeout=30).stdout
    values = {}
    for line in out.splitlines():
        key, sep, value = line.partition(" = ")
        if sep and key.startswith("net.") and not VOLATILE_SYSCTLS.search(key):
            values[key] = " ".join(value.split())
    return values


def kernel_state(ns: str) -> dict[str, list[str]]:
    """What an attachment can leave in a namespace's kernel, as lines (interface indexes and counters removed)."""
    links = re.sub(r"^\d+: ", "", _ns(ns, "ip", "-o", "link", "show"), flags=re.M)
    qdiscs = _ns(ns, "tc", "qdisc", "show")
    fdb = [line for line in _ns(ns, "bridge", "fdb", "show").splitlines() if "permanent" in line or " dst " in line]
    return {
        "links": sorted(re.sub(r"@if\d+", "@if", links).splitlines()),
        "addresses": sorted(re.sub(r"^\d+: ", "", _ns(ns, "ip", "-o", "addr", "show"), flags=re.M).splitlines()),
        "routes": sorted(
            (_ns(ns, "ip", "route", "show", "table", "all") + _ns(ns, "ip", "-6", "route", "show", "table", "all"))
            .strip()
            .splitlines()
        ),
        "rules": sorted((_ns(ns, "ip", "rule", "show") + _ns(ns, "ip", "-6", "rule", "show")).strip().splitlines()),
        "qdiscs": sorted(re.sub(r"qdisc (\S+) [0-9a-f]+: ", r"qdisc \1 ", qdiscs).splitlines()),
        "neighbours": sorted(_ns(ns, "ip", "neigh", "show", "nud", "permanent").splitlines()),
        "fdb": sorted(fdb),
        "nftables": _nft_view(ns),
        "sysctls": sorted(f"{k} = {v}" for k, v in sysctls(ns).items()),
    }


def files_state(roots: dict[str, Path], by_name_only: tuple[str, ...] = ()) -> list[str]:
    """Every entry under the state directories: kind and content (a digest), names matching ``by_name_only`` aside."""
    found = []
    for label, root in roots.items():
        for directory, dirs, files in os.walk(root):
            for name in sorted(dirs + files):
                path = Path(directory, name)
                rel = f"{label}/{path.relative_to(root)}"
                if path.is_symlink() or not path.is_file():
                    found.append(f"{rel} ({'directory' if path.is_dir() else 'other'})")
                elif any(re.search(pattern, name) for pattern in by_name_only):
                    found.append(rel)
                else:
                    found.append(f"{rel} {hashlib.sha256(path.read_bytes()).hexdigest()[:12]}")
    return sorted(found)


def records_state(ns: str) -> list[str]:
    """pycni's attachment records (``/run/pycni/attachments/<table>-<inode>/<group>/<member>``) of namespace ``ns``."""
    inode = os.stat(NetnsPool.path(ns)).st_ino
    found = []
    for table_dir in Path(RECORDS_ROOT).glob(f"*-{inode}"):
        for group in table_dir.iterdir():
            if group.is_dir():
                found += [f"{table_dir.name}/{group.name}/{member.name}" for member in group.iterdir()]
    return sorted(found)


def diff(before: dict[str, list[str]], after: dict[str, list[str]]) -> list[str]:
    """``+ part: line`` for what is new, ``- part: line`` for what is gone."""
    lines = []
    joined_before = {part: "\n".join(v) for part, v in before.items()}
    joined_after = {part: "\n".join(after.get(part, [])) for part in before}
    for part, (gone, new) in differences(joined_before, joined_after).items():
        lines += [f"+ {part}: {line}" for line in new] + [f"- {part}: {line}" for line in gone]
    return lines


def settled(look: Callable[[], dict[str, list[str]]]) -> dict[str, list[str]]:
    """A state once two looks a second apart agree (new IPv6 addresses leave "tentative", routes follow)."""
    state = look()
    for _ in range(20):
        time.sleep(1.0)
        again = look()
        tentative = any("tentative" in line for part, lines in again.items() if "addresses" in part for line in lines)
        if again == state and not tentative:
            return state
        state = again
    raise RuntimeError(f"the state does not settle: {diff(state, look())[:5]}")


def drop_namespace(pool: NetnsPool, name: str) -> None:
    """Delete one namespace of ``pool`` now (the pool removes the rest at the end)."""
    run("ip", "netns", "del", name, check=False)
    with contextlib.suppress(ValueError):
        pool.names.remove(name)


def remove_namespace_records(inode: int) -> None:
    """Records and lock files pycni keeps under /run for a namespace we made (the node's, now gone)."""
    for path in Path(RECORDS_ROOT).glob(f"*-{inode}"):
        shutil.rmtree(path, ignore_errors=True)
    for path in Path(LOCKS_ROOT).glob(f"*-{inode}.lock"):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


# -- processes ---------------------------------------------------------------------------------


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


# -- the chain's node ----------------------------------------------------------------------------


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


class ChainNode:
    """A fresh node namespace running the chain, with its own state directories and bystanders."""

    def __init__(self, pool: NetnsPool, work: Path, pycni: str, plugin_dir: str, daemon: Daemon) -> None:
        self.pool = pool
        self.work = work
        self.pycni_bin = pycni
        self.plugin_dir = plugin_dir
        self.daemon = daemon
        self.host = pool.new("node")
        self.inode = os.stat(NetnsPool.path(self.host)).st_ino
        self.state_dirs = {
            "cache": work / "cache",
            "host-local": work / "host-local",
            "tuning": work / "tuning",
        }
        self.conf_dir = work / "net.d"
        self.conf_dir.mkdir(parents=True)
        self.write_conflist()
        self.ports = iter(range(20000, 30000))
        self.bystanders: list[Container] = []
        self.fresh = self.state()  # before the first ADD: what the node must come back to
        self.steady: dict[str, list[str]] = {}

    def write_conflist(self) -> None:
        ranges = [[{"subnet": SUBNET4}], [{"subnet": SUBNET6}]]
        plugins: dict[str, dict[str, Any]] = {
            "bridge": {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": True,
                "ipMasq": True,
                "hairpinMode": True,
                "ipam": {"type": "host-local", "ranges": ranges, "dataDir": str(self.state_dirs["host-local"])},
            },
            "tuning": {
                "type": "tuning",
                "mtu": 1400,
                "promisc": True,
                "sysctl": {**CONTAINER_SYSCTLS, "net.ipv4.conf.IFNAME.log_martians": "1"},
                "dataDir": str(self.state_dirs["tuning"]),
            },
            "portmap": {"type": "portmap", "capabilities": {"portMappings": True}},
            "firewall": {"type": "firewall", "ingressPolicy": "same-bridge"},
            "bandwidth": {
                "type": "bandwidth",
                "ingressRate": 8_000_000,
                "ingressBurst": 800_000,
                "egressRate": 8_000_000,
                "egressBurst": 800_000,
            },
        }
        conflist = {"cniVersion": "1.1.0", "name": NETWORK, "plugins": [plugins[p] for p in CHAIN]}
        (self.conf_dir / f"{NETWORK}.conflist").write_text(json.dumps(conflist))

    # -- observing

    def state(self) -> dict[str, list[str]]:
        state = kernel_state(self.host)
        state["files"] = files_state(self.state_dirs, by_name_only=(r"^last_reserved_ip\.",))
        state["records"] = records_state(self.host)
        return state

    def container(self, label: str) -> Container:
        ctr = Container(label, self.pool.new(f"c{label}"), next(self.ports))
        ctr.fresh = kernel_state(ctr.netns)
        return ctr

    # -- the runtime

    def env(self, ctr: Container | None, via_daemon: bool) -> dict[str, str]:
        env = {
            "PATH": SYSTEM_PATH,
            "NETCONFPATH": str(self.conf_dir),
            "CNI_PATH": self.plugin_dir,
            "PYCNI_CACHE_DIR": str(self.state_dirs["cache"]),
        }
        if via_daemon:
            env["PYCNI_SOCKET"] = str(self.daemon.socket)
        else:
            env["PYCNI_NO_DAEMON"] = "1"
        if ctr is not None:
            env["CAP_ARGS"] = json.dumps({"portMappings": [{"hostPort": ctr.port, "containerPort": 80}]})
        return env | pythonpath()

    def pycni(
        self, verb: str, ctr: Container, via_daemon: bool, killer: Killer | None = None, delay: float = 0.0
    ) -> Call:
        argv = ["ip", "netns", "exec", self.host, self.pycni_bin, verb, NETWORK, ctr.path]
        return run_call(argv, self.env(ctr, via_daemon), killer, delay)

    def gc(self, keep_bystanders: bool = True) -> Call:
        flags = [f"--keep={b.container_id}/{IFNAME}" for b in self.bystanders] if keep_bystanders else ["--all"]
        argv = ["ip", "netns", "exec", self.host, self.pycni_bin, "gc", NETWORK, *flags]
        return run_call(argv, self.env(None, via_daemon=self.daemon.process is not None))

    def close(self) -> None:
        remove_namespace_records(self.inode)


# -- one kill ------------------------------------------------------------------------------------


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


def schedule(seed: int, index: int, targets: tuple[str, ...]) -> Kill:
    """Kill ``index`` of the run with ``seed``: each block of kills has every target once, in a shuffled order;
    a target's phase turns from block to block, so targets and phases are evenly covered."""
    block, slot = divmod(index, len(targets))
    order = list(targets)
    random.Random(f"{seed}:block:{block}").shuffle(order)
    target = order[slot]
    phases = phases_of(target)
    phase = phases[(block + random.Random(f"{seed}:{target}").randrange(len(phases))) % len(phases)]
    return Kill(index, target, phase, random.Random(f"{seed}:kill:{index}").random())


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


class ChainCampaign:
    """Kills of the plugin, runtime, worker and supervisor targets on one chain node."""

    def __init__(self, pool: NetnsPool, work: Path, pycni: str, plugin_dir: str, gc_every: int) -> None:
        self.daemon = Daemon(work, plugin_dir)
        self.node = ChainNode(pool, work, pycni, plugin_dir, self.daemon)
        self.windows = Windows()
        self.gc_every = gc_every
        self.kills_since_gc = 0
        self.runs = 0
        self.paths: set[bool] = set()  # via_daemon of the calls killed so far (calibrated)

    def start(self) -> None:
        self.daemon.start()
        node = self.node
        for label in ("b1", "b2"):
            ctr = node.container(label)
            call = self.uncut("add", ctr, via_daemon=True)
            if call.rc != 0:
                raise RuntimeError(f"bystander ADD failed: {call.stderr.strip()[-800:]}")
            node.bystanders.append(ctr)
        node.steady = settled(node.state)

    def uncut(self, verb: str, ctr: Container, via_daemon: bool) -> Call:
        """A call nothing kills; its duration (for the daemon: its time in workers) is a window sample."""
        if not via_daemon:
            call = self.node.pycni(verb, ctr, False)
            self.windows.observe(f"exec {verb}", call)
            return call
        busy: list[float] = []
        call = self.node.pycni(verb, ctr, True, self.daemon.measure(busy))
        self.windows.observe(f"daemon {verb}", call)
        if busy:
            self.windows.observe(f"daemon busy {verb}", dataclasses.replace(call, seconds=busy[0]))
        return call

    def calibrate(self, paths: set[bool]) -> list[str]:
        """One uncut ADD and DEL per path (``via_daemon``): the windows, and a health check of each."""
        problems = []
        for via_daemon in sorted(paths):
            kind = "daemon" if via_daemon else "exec"
            ctr = self.node.container(f"cal{kind}")
            try:
                for verb in ("add", "del"):
                    call = self.uncut(verb, ctr, via_daemon)
                    if call.rc != 0:
                        problems.append(f"calibration {kind} {verb} failed: {first_line(call.stderr)}")
                left = diff(ctr.fresh, kernel_state(ctr.netns))
                if left:
                    problems.append(f"calibration {kind}: the container differs from a new one: {left[:5]}")
                left = diff(self.node.steady, self.node.state())
                if left:
                    problems.append(f"calibration {kind}: an uncut ADD and DEL left {left[:5]}")
            finally:
                drop_namespace(self.node.pool, ctr.netns)
        return problems

    def killer(self, kill: Kill, rng: random.Random) -> tuple[Killer, float]:
        """The kill and its delay: wall time for the plugin executables, time in workers for the daemon."""
        verb = kill.phase.lower()
        if kill.target in ("plugin", "runtime"):
            window = self.windows.get(f"exec {verb}")
            kill.window_ms = round(1000 * window, 1)
            if kill.target == "plugin":
                return kill_plugin(self.node.plugin_dir, rng), kill.fraction * window
            return kill_runtime(self.node.plugin_dir), kill.fraction * window
        window = self.windows.get(f"daemon busy {verb}")
        kill.window_ms = round(1000 * window, 1)
        if kill.target == "worker":
            return self.daemon.kill_worker(rng, kill.fraction * window), 0.0
        return self.daemon.kill_supervisor(kill.fraction * window), 0.0

    def run(self, kill: Kill) -> None:
        node = self.node
        via_daemon = kill.target in ("worker", "supervisor")
        self.runs += 1
        if via_daemon not in self.paths:
            self.paths.add(via_daemon)
            kill.problems += self.calibrate({via_daemon})
        elif self.runs % RECALIBRATE_EVERY == 0:
            kill.problems += self.calibrate(self.paths)  # windows for the load of the moment; ADD still works
        rng = random.Random(f"{kill.index}:{kill.fraction}")
        ctr = node.container(f"k{kill.index}")
        calls: list[tuple[str, Call]] = []
        try:
            if kill.phase == "DEL":
                pre = self.uncut("add", ctr, via_daemon)
                calls.append(("ADD before the kill", pre))
                if pre.rc != 0:
                    kill.problems.append(f"the ADD before the killed DEL failed: {first_line(pre.stderr)}")
            killer, delay = self.killer(kill, rng)
            cut = node.pycni(kill.phase.lower(), ctr, via_daemon, killer, delay)
            calls.append((f"killed {kill.phase}", cut))
            kill.killed, kill.kill_ms, kill.call_rc = cut.killed, cut.kill_ms, cut.rc
            if via_daemon:
                kill.kill_ms = round(1000 * self.daemon.killed_at, 1)
            kill.call_error = first_line(cut.stderr) if cut.rc else ""
            if kill.target == "supervisor" and cut.killed:
                problem = self.daemon.restart_after_supervisor_kill()
                if problem:
                    kill.problems.append(problem)
                if cut.rc != 0:
                    kill.problems.append(f"{kill.phase} failed though the daemon drains: {kill.call_error}")
            for attempt in range(DEL_ATTEMPTS):
                again = node.pycni("del", ctr, via_daemon)
                calls.append((f"DEL {attempt + 1}", again))
                kill.del_rcs.append(again.rc)
                if again.rc == 0:
                    break
            else:
                kill.problems.append(f"DEL failed {DEL_ATTEMPTS} times: {first_line(calls[-1][1].stderr)}")
            for name, call in calls:
                kill.problems += call_problems(name, call)
            kill.left_after_del = self.leftovers(ctr)
            self.kills_since_gc += 1
            if kill.left_after_del or self.kills_since_gc >= self.gc_every:
                kill.gc_ran = True
                self.kills_since_gc = 0
                gc = node.gc()
                kill.problems += call_problems("GC", gc)
                if gc.rc != 0:
                    kill.problems.append(f"GC failed: {first_line(gc.stderr)}")
                kill.leaks = self.leftovers(ctr)
        finally:
            drop_namespace(node.pool, ctr.netns)

    def leftovers(self, ctr: Container) -> list[str]:
        left = diff(self.node.steady, self.node.state())
        left += [f"container {line}" for line in diff(ctr.fresh, kernel_state(ctr.netns))]
        return left

    def finish(self) -> dict[str, Any]:
        """``gc --all``, then the node against the fresh one."""
        node = self.node
        problems = self.calibrate(self.paths)  # ADD still works after every kill, and its DEL leaves nothing
        gc = node.gc(keep_bystanders=False)
        problems += call_problems("GC --all", gc)
        if gc.rc != 0:
            problems.append(f"GC --all failed: {first_line(gc.stderr)}")
        problems += [
            f"bystander {b.label}: {line}" for b in node.bystanders for line in diff(b.fresh, kernel_state(b.netns))
        ]
        left = [line for line in diff(node.fresh, node.state()) if not self.allowed_at_end(line)]
        problems += self.daemon.log_problems()
        return {"left_after_gc_all": left, "problems": problems, "daemon_restarts": self.daemon.restarts}

    @staticmethod
    def allowed_at_end(line: str) -> bool:
        """What the network keeps after its last attachment, as Go's bridge plugin does: the bridge, forwarding."""
        _sign, _, rest = line.partition(" ")
        part, _, text = rest.partition(": ")
        if part in ("links", "addresses", "routes", "qdiscs", "fdb", "sysctls") and BRIDGE in text:
            return True
        if part == "files":  # directories, and host-local's lock and cursors (Go's host-local keeps them too)
            return text.endswith(" (directory)") or bool(
                re.match(rf"host-local/{NETWORK}/(lock|last_reserved_ip)", text)
            )
        return part == "sysctls" and bool(FORWARDING.search(text.split(" = ")[0]))

    def close(self) -> None:
        self.daemon.stop()
        self.node.close()


# -- flanneld ------------------------------------------------------------------------------------


class FlannelCampaign:
    """Kills of ``pycni flanneld`` on node 1 of two (vxlan, etcd) while pods come and go through the flannel plugin."""

    def __init__(self, pool: NetnsPool, work: Path, pycni: str, plugin_dir: str, gc_every: int) -> None:
        from tests.support.etcd import EtcdServer
        from tests.support.fabric import UNDERLAY_GATEWAY, Cluster

        self.pool = pool
        self.pycni_bin = pycni
        self.windows = Windows()
        self.gc_every = gc_every
        self.kills_since_gc = 0
        self.cluster = Cluster(pool, work, pycni, plugin_dir, f"http://{UNDERLAY_GATEWAY}:2379", ("--ip-masq",), True)
        self.etcd = EtcdServer(host=UNDERLAY_GATEWAY, netns=self.cluster.underlay)
        self.nodes = []
        self.fresh: dict[str, list[str]] = {}
        self.steady: dict[str, list[str]] = {}
        self.bystanders: list[Container] = []
        self.ports = iter(range(20000, 30000))
        self.restarts = 0
        self.runs = 0

    # -- the cluster

    def start(self) -> None:
        self.etcd.start(timeout=60)
        backend = {"Type": "vxlan"}
        self.etcd.etcdctl(
            "put", "/coreos.com/network/config", json.dumps({"Network": FLANNEL_NETWORK, "Backend": backend})
        )
        self.nodes = [self.cluster.add_node(start_agent=False) for _ in range(2)]
        self.fresh = settled(lambda: self.node_state(self.nodes[0]))
        for node in self.nodes:
            problem = self.start_agent(node)
            if problem:
                raise RuntimeError(problem)
        for node in self.nodes:
            ctr = self.container(node, "b")
            call = self.pycni("add", node, ctr)
            if call.rc != 0:
                raise RuntimeError(f"bystander pod ADD failed: {call.stderr.strip()[-800:]}")
            www = self.cluster.tmp / f"www-{ctr.netns}"
            www.mkdir()
            (www / "index.html").write_text(f"{ctr.netns}\n")
            run("busybox", "httpd", "-p", "80", "-h", str(www), netns=ctr.netns)
            self.bystanders.append(ctr)
        problems = self.calibrate()
        if problems:
            raise RuntimeError(f"pods cannot be added and deleted: {problems}")
        self.kill_agent(self.nodes[0])  # a window for the agent's start: one restart
        self.start_agent(self.nodes[0])
        if self.unreachable(CONVERGE_SECONDS):
            raise RuntimeError(f"the bystander pods do not reach each other: {self.unreachable(0)}")
        self.steady = settled(self.state)

    def calibrate(self) -> list[str]:
        """An uncut pod ADD and DEL on node 1: the windows, and a health check."""
        ctr = self.container(self.nodes[0], "cal")
        problems = []
        try:
            for verb in ("add", "del"):
                call = self.pycni(verb, self.nodes[0], ctr)
                self.windows.observe(f"flannel {verb}", call)
                if call.rc != 0:
                    problems.append(f"calibration {verb} failed: {first_line(call.stderr)}")
        finally:
            drop_namespace(self.pool, ctr.netns)
        return problems

    def agent_log_size(self, node: Any) -> int:
        try:
            return int(node.log.stat().st_size)
        except FileNotFoundError:
            return 0

    def start_agent(self, node: Any, kill_at: float | None = None) -> str:
        """Start ``node``'s agent; wait until it logs "ready" (or SIGKILL it ``kill_at`` s in). A problem, or ""."""
        offset = self.agent_log_size(node)
        argv = self.cluster.agent_argv(node, "--iptables-resync", "1", "--ip-masq")
        with node.log.open("ab") as log:
            started = time.monotonic()
            node.agent = subprocess.Popen(argv, stdout=log, stderr=log, start_new_session=True)
        while time.monotonic() - started < 60:
            if kill_at is not None and time.monotonic() - started >= kill_at:
                self.kill_agent(node)
                return ""
            with node.log.open("rb") as log:
                log.seek(offset)
                if b"flanneld: ready" in log.read():
                    if kill_at is None:
                        self.windows.observe("flanneld start", Call([], rc=0, seconds=time.monotonic() - started))
                        return ""
                    self.kill_agent(node)  # ready before the kill came: kill it now
                    return ""
            if node.agent.poll() is not None:
                return f"flanneld exited with {node.agent.returncode} while starting: {self.log_tail(node, offset)}"
            time.sleep(0.005)
        return f"flanneld did not become ready within 60 s: {self.log_tail(node, offset)}"

    @staticmethod
    def log_tail(node: Any, offset: int) -> str:
        with node.log.open("rb") as log:
            log.seek(offset)
            return log.read().decode(errors="replace")[-600:]

    @staticmethod
    def kill_agent(node: Any) -> None:
        if node.agent is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(node.agent.pid, signal.SIGKILL)
            node.agent.wait(timeout=30)
            wait_group(node.agent.pid, GROUP_TIMEOUT)
            node.agent = None

    # -- pods

    def container(self, node: Any, label: str) -> Container:
        ctr = Container(label, self.pool.new(f"p{node.index}{label}"), next(self.ports))
        ctr.fresh = kernel_state(ctr.netns)
        return ctr

    def env(self, node: Any) -> dict[str, str]:
        env = self.cluster.cni_env(node)  # writes the flannel conflist
        keep = {k: env[k] for k in ("CNI_PATH", "NETCONFPATH", "PYCNI_CACHE_DIR")}
        return {**keep, "PATH": SYSTEM_PATH, "PYCNI_NO_DAEMON": "1"} | pythonpath()

    def pycni(self, verb: str, node: Any, ctr: Container, killer: Killer | None = None, delay: float = 0.0) -> Call:
        argv = ["ip", "netns", "exec", node.name, self.pycni_bin, verb, FLANNEL_CNI, ctr.path]
        return run_call(argv, self.env(node), killer, delay)

    def gc(self, node: Any, keep: list[Container] | None) -> Call:
        flags = [f"--keep={c.container_id}/{IFNAME}" for c in keep] if keep is not None else ["--all"]
        argv = ["ip", "netns", "exec", node.name, self.pycni_bin, "gc", FLANNEL_CNI, *flags]
        return run_call(argv, self.env(node))

    def fetch(self, src: Container, dst: Container) -> bool:
        ip = json.loads(run("ip", "-j", "-4", "addr", "show", "dev", IFNAME, netns=dst.netns).stdout)[0]
        address = ip["addr_info"][0]["local"]
        proc = run("curl", "-sS", "-m", "2", f"http://{address}/", netns=src.netns, check=False)
        return proc.returncode == 0 and proc.stdout == f"{dst.netns}\n"

    def unreachable(self, within: float) -> list[str]:
        a, b = self.bystanders
        deadline = time.monotonic() + within
        while True:
            missing = [f"{s.label}{s.netns}->{d.netns}" for s, d in ((a, b), (b, a)) if not self.fetch(s, d)]
            if not missing or time.monotonic() >= deadline:
                return missing
            time.sleep(0.2)

    # -- observing

    def leases(self) -> list[str]:
        out = self.etcd.etcdctl("get", "--prefix", "/coreos.com/network/subnets/").stdout.splitlines()
        return sorted(f"{key} {value}" for key, value in zip(out[::2], out[1::2], strict=False))

    def node_state(self, node: Any) -> dict[str, list[str]]:
        state = kernel_state(node.name)
        state["files"] = [
            line
            for line in files_state({"home": node.home}, by_name_only=(r"^last_reserved_ip\.",))
            if not line.startswith("home/flanneld.log")
        ]
        state["records"] = records_state(node.name)
        return state

    def state(self) -> dict[str, list[str]]:
        state = {f"node1 {k}": v for k, v in self.node_state(self.nodes[0]).items()}
        state |= {f"node2 {k}": v for k, v in kernel_state(self.nodes[1].name).items()}
        state["leases"] = self.leases()
        return state

    def converged(self, ctr: Container | None) -> list[str]:
        """What differs from the steady state after up to CONVERGE_SECONDS (the agent reprograms in its resync)."""
        deadline = time.monotonic() + CONVERGE_SECONDS
        while True:
            left = diff(self.steady, self.state())
            if ctr is not None:
                left += [f"container {line}" for line in diff(ctr.fresh, kernel_state(ctr.netns))]
            if not left or time.monotonic() >= deadline:
                return left
            time.sleep(0.5)

    # -- one kill

    def run(self, kill: Kill) -> None:
        node = self.nodes[0]
        self.runs += 1
        if self.runs % RECALIBRATE_EVERY == 0:
            kill.problems += self.calibrate()
        if kill.phase == "start":
            self.run_start(kill, node)
            return
        ctr = self.container(node, f"k{kill.index}")
        calls: list[tuple[str, Call]] = []
        try:
            if kill.phase == "DEL":
                pre = self.pycni("add", node, ctr)
                self.windows.observe("flannel add", pre)
                calls.append(("ADD before the kill", pre))
                if pre.rc != 0:
                    kill.problems.append(f"the ADD before the killed DEL failed: {first_line(pre.stderr)}")
            verb = kill.phase.lower()
            window = self.windows.get(f"flannel {verb}")
            kill.window_ms = round(1000 * window, 1)

            def killer(proc: subprocess.Popen[bytes], deadline: float) -> str:
                self.kill_agent(node)
                return "flanneld"

            cut = self.pycni(verb, node, ctr, killer, kill.fraction * window)
            calls.append((f"{kill.phase} while flanneld was killed", cut))
            kill.killed, kill.kill_ms, kill.call_rc = cut.killed, cut.kill_ms, cut.rc
            kill.call_error = first_line(cut.stderr) if cut.rc else ""
            if cut.killed and cut.rc != 0:
                kill.problems.append(f"{kill.phase} failed because flanneld was killed: {kill.call_error}")
            if not cut.killed:
                self.kill_agent(node)  # the call was over before the kill: still a restart to check
                kill.killed, kill.kill_ms = "flanneld (after the call)", round(1000 * cut.seconds, 1)
            self.restart(kill, node)
            for attempt in range(DEL_ATTEMPTS):
                again = self.pycni("del", node, ctr)
                calls.append((f"DEL {attempt + 1}", again))
                kill.del_rcs.append(again.rc)
                if again.rc == 0:
                    break
            else:
                kill.problems.append(f"DEL failed {DEL_ATTEMPTS} times: {first_line(calls[-1][1].stderr)}")
            for name, call in calls:
                kill.problems += call_problems(name, call)
            self.check(kill, ctr)
        finally:
            drop_namespace(self.pool, ctr.netns)

    def run_start(self, kill: Kill, node: Any) -> None:
        """Kill the agent while it starts (after an ordinary kill), then start it for good and check."""
        self.kill_agent(node)
        window = self.windows.get("flanneld start")
        kill.window_ms = round(1000 * window, 1)
        kill.kill_ms = round(1000 * kill.fraction * window, 1)
        problem = self.start_agent(node, kill_at=kill.fraction * window)
        kill.killed = "flanneld (starting)"
        if problem:
            kill.problems.append(problem)
        self.restart(kill, node)
        self.check(kill, None)

    def restart(self, kill: Kill, node: Any) -> None:
        self.restarts += 1
        for _attempt in range(3):
            problem = self.start_agent(node)
            if not problem:
                return
            kill.problems.append(problem)
        raise RuntimeError(f"flanneld does not start again after kill {kill.index}")

    def check(self, kill: Kill, ctr: Container | None) -> None:
        kill.left_after_del = self.converged(ctr)
        missing = self.unreachable(CONVERGE_SECONDS)
        if missing:
            kill.problems.append(f"bystander pods unreachable after the restart: {missing}")
        self.kills_since_gc += 1
        if kill.left_after_del or self.kills_since_gc >= self.gc_every:
            kill.gc_ran = True
            self.kills_since_gc = 0
            gc = self.gc(self.nodes[0], [self.bystanders[0]])
            kill.problems += call_problems("GC", gc)
            if gc.rc != 0:
                kill.problems.append(f"GC failed: {first_line(gc.stderr)}")
            kill.leaks = self.converged(ctr)

    def finish(self) -> dict[str, Any]:
        """``gc --all`` on node 1, its agent stopped cleanly; node 1 against the fresh one."""
        node = self.nodes[0]
        problems = []
        gc = self.gc(node, None)
        problems += call_problems("GC --all", gc)
        if gc.rc != 0:
            problems.append(f"GC --all failed: {first_line(gc.stderr)}")
        self.cluster.stop_agent(node, signal.SIGTERM)
        left = [line for line in diff(self.fresh, self.node_state(node)) if not self.allowed_at_end(line)]
        return {"left_after_gc_all": left, "problems": problems, "agent_restarts": self.restarts}

    @staticmethod
    def allowed_at_end(line: str) -> bool:
        """The agent's devices and routes stay after it exits (as flanneld's do), its state files, the pod bridge."""
        _sign, _, rest = line.partition(" ")
        part, _, text = rest.partition(": ")
        if part in ("links", "addresses", "routes", "qdiscs", "fdb", "neighbours", "sysctls"):
            return any(name in text for name in ("cni0", "flannel.", "flannel/")) or bool(
                FORWARDING.search(text.split(" = ")[0])
            )
        if part == "files":
            if text.endswith(" (directory)"):
                return True
            kept = (
                r"^home/subnet\.env",
                r"^home/state/",
                r"^home/net\.d/",
                r"^home/ipam/\S+/(lock|last_reserved_ip\.\d)",
            )
            return any(re.match(pattern, text) for pattern in kept)
        return False

    def close(self) -> None:
        try:
            self.cluster.close()
        finally:
            self.etcd.cleanup()
            for node in self.nodes:
                remove_namespace_records(node.netns_inode)


# -- the campaign --------------------------------------------------------------------------------


def phases_of(target: str) -> tuple[str, ...]:
    return (*PHASES, "start") if target == "flanneld" else PHASES


def leak_class(line: str) -> str:
    """A short name for what a leftover line is, for the table of leak classes."""
    _sign, _, rest = line.partition(" ")
    where = "container " if rest.startswith("container ") else ""
    rest = rest.removeprefix("container ")
    _sign, _, rest = rest.partition(" ") if where else ("", "", rest)
    part, _, text = rest.partition(": ")
    part = part.split(" ")[-1]  # "node1 links" -> "links"
    if part == "files":
        if "/.tmp" in text or ".tmp" in text.split(" ")[0]:
            return f"{where}temporary file"
        for name, label in (("host-local/", "reservation"), ("cache/", "cache file"), ("tuning/", "tuning file")):
            if text.startswith(name) or f"/{name}" in text:
                return f"{where}{label}"
        return f"{where}state file"
    if part == "links" and " bwp" in f" {text}":
        return f"{where}ifb"
    if part == "nftables":
        return f"{where}nft {text.split(' ')[0]}"
    return f"{where}{part}"


def summarize(kills: list[Kill]) -> list[dict[str, Any]]:
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for kill in kills:
        row = rows.setdefault(
            (kill.target, kill.phase),
            {"target": kill.target, "phase": kill.phase, "attempts": 0, "kills": 0, "left_after_del": 0,
             "cleaned_by_gc": 0, "leaks": 0, "problems": 0, "call_failed": 0, "kill_ms": [], "window_ms": []},
        )  # fmt: skip
        row["attempts"] += 1
        if not kill.counted:
            continue
        row["kills"] += 1
        row["left_after_del"] += bool(kill.left_after_del)
        row["cleaned_by_gc"] += bool(kill.left_after_del) and not kill.leaks
        row["leaks"] += bool(kill.leaks)
        row["problems"] += bool(kill.problems)
        row["call_failed"] += kill.call_rc not in (0, None)
        row["kill_ms"].append(kill.kill_ms)
        row["window_ms"].append(kill.window_ms)
    for row in rows.values():
        for key in ("kill_ms", "window_ms"):
            values = row.pop(key)
            row[f"{key}_range"] = [min(values), max(values)] if values else []
    return sorted(rows.values(), key=lambda r: (TARGETS.index(r["target"]), ("ADD", "DEL", "start").index(r["phase"])))


def leak_classes(kills: list[Kill]) -> dict[str, dict[str, Any]]:
    """Per class: how many kills left it after DEL, how many after GC too, and one example each."""
    classes: dict[str, dict[str, Any]] = {}
    for kill in kills:
        for key, lines in (("after_del", kill.left_after_del), ("after_gc", kill.leaks)):
            for name in sorted({leak_class(line) for line in lines}):
                entry = classes.setdefault(name, {"after_del": 0, "after_gc": 0, "example": "", "kills": []})
                entry[key] += 1
                if not entry["example"]:
                    entry["example"] = next(line for line in lines if leak_class(line) == name)[:300]
                if kill.index not in entry["kills"]:
                    entry["kills"].append(kill.index)
    return classes


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
    os.environ["PYTHONPATH"] = str(frozen)
    for executable in plugin_dir.iterdir():
        text = executable.read_text()
        executable.write_text(text.replace(repr(str(source.parent)), repr(str(frozen))))


def run_campaign(
    kills: int,
    seed: int,
    targets: tuple[str, ...] = TARGETS,
    time_limit: float = 1500.0,
    gc_every: int = 10,
    replay: int | None = None,
    progress: bool = False,
    frozen: bool = False,
) -> dict[str, Any]:
    """Kill until ``kills`` kills landed (or ``time_limit`` seconds passed); the report as a dict."""
    from pycni.cli.install import install

    started = time.monotonic()
    pycni = shutil.which("pycni", path=os.path.dirname(sys.executable)) or "pycni"
    work = Path(tempfile.mkdtemp(prefix="pycni-sigkill-"))
    plugin_dir = work / "bin"
    install(str(plugin_dir))
    saved_pythonpath = os.environ.get("PYTHONPATH")
    if frozen:
        freeze_source(work, plugin_dir)
    pool = NetnsPool(prefix=f"sk{uuid.uuid4().hex[:4]}")
    campaigns: dict[str, ChainCampaign | FlannelCampaign] = {}
    done: list[Kill] = []
    final: dict[str, Any] = {}
    stopped = ""
    try:
        if any(t in CHAIN_TARGETS for t in targets):
            chain_work = work / "chain"
            chain_work.mkdir()
            chain = ChainCampaign(pool, chain_work, pycni, str(plugin_dir), gc_every)
            campaigns["chain"] = chain
            chain.start()
        if "flanneld" in targets:
            fabric_work = work / "fabric"
            fabric_work.mkdir()
            flannel = FlannelCampaign(pool, fabric_work, pycni, str(plugin_dir), gc_every)
            campaigns["flanneld"] = flannel
            flannel.start()
        setup_seconds = time.monotonic() - started
        index = replay if replay is not None else 0
        while True:
            if replay is None and sum(k.counted for k in done) >= kills:
                break
            if replay is None and index >= 3 * kills:
                stopped = f"only {sum(k.counted for k in done)} of {index} attempts killed something"
                break
            if time.monotonic() - started > time_limit:
                stopped = f"time limit of {time_limit:.0f} s reached"
                break
            kill = schedule(seed, index, targets)
            began = time.monotonic()
            try:
                campaigns["flanneld" if kill.target == "flanneld" else "chain"].run(kill)
            except Exception as exc:  # noqa: BLE001 - a harness fault is the kill's problem, the campaign goes on
                kill.problems.append(f"campaign harness: {type(exc).__name__}: {exc}")
            kill.seconds = round(time.monotonic() - began, 2)
            done.append(kill)
            if progress:
                print(progress_line(kill), file=sys.stderr, flush=True)
            if replay is not None:
                break
            index += 1
        for name, campaign in campaigns.items():
            final[name] = campaign.finish()
    finally:
        for campaign in campaigns.values():
            with contextlib.suppress(Exception):
                campaign.close()
        pool.cleanup()
        shutil.rmtree(work, ignore_errors=True)
        if saved_pythonpath is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved_pythonpath
    windows = {name: c.windows.summary() for name, c in campaigns.items()}
    return {
        "campaign": "sigkill",
        "seed": seed,
        "kills_asked": kills,
        "targets": list(targets),
        "kills": sum(k.counted for k in done),
        "attempts": len(done),
        "leaks": sum(bool(k.leaks) for k in done),
        "left_after_del": sum(bool(k.left_after_del) for k in done),
        "problems": sum(bool(k.problems) for k in done),
        "stopped": stopped,
        "seconds": round(time.monotonic() - started, 1),
        "setup_seconds": round(setup_seconds, 1) if campaigns else 0.0,
        "windows_ms": windows,
        "summary": summarize(done),
        "leak_classes": leak_classes(done),
        "final": final,
        "kill_log": [dataclasses.asdict(k) for k in done],
        "rerun": [rerun_command(seed, targets, k.index) for k in done if k.leaks or k.problems],
    }


def progress_line(kill: Kill) -> str:
    verdict = "LEAK" if kill.leaks else "gc" if kill.left_after_del else "PROB" if kill.problems else "ok"
    what = kill.killed or "(missed)"
    line = (
        f"#{kill.index:<4} {kill.target:10} {kill.phase:5} {kill.kill_ms:7.1f}/{kill.window_ms:7.1f} ms "
        f"{what[:34]:34} rc={kill.call_rc} del={kill.del_rcs} {verdict:4} {kill.seconds:5.1f} s"
    )
    details = [*kill.leaks[:6], *kill.problems[:3]] or kill.left_after_del[:3]
    return "\n".join([line, *(f"      {d[:240]}" for d in details)])


def rerun_command(seed: int, targets: tuple[str, ...], index: int) -> str:
    return f".venv/bin/python -m tests.campaigns.sigkill --seed {seed} --targets {','.join(targets)} --replay {index}"


def render_table(report: dict[str, Any]) -> str:
    lines = [
        "| kill target | phase | kills | left after DEL | cleaned by GC | leaks after GC | other problems | "
        "call failed | kill at (ms) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in report["summary"]:
        span = row["kill_ms_range"]
        lines.append(
            f"| {row['target']} | {row['phase']} | {row['kills']} | {row['left_after_del']} | {row['cleaned_by_gc']} | "
            f"{row['leaks']} | {row['problems']} | {row['call_failed']} | {span[0]:.0f}-{span[1]:.0f} |"
            if span
            else f"| {row['target']} | {row['phase']} | 0 | | | | | | |"
        )
    lines.append("")
    lines.append(
        f"{report['kills']} kills ({report['attempts']} attempts), {report['leaks']} with leaks after GC, "
        f"{report['left_after_del']} with something left after DEL, {report['problems']} with other problems, "
        f"{report['seconds']} s{'; stopped: ' + report['stopped'] if report['stopped'] else ''}"
    )
    for name, entry in report["leak_classes"].items():
        lines.append(
            f"leak class {name}: after DEL {entry['after_del']}, after GC {entry['after_gc']}: {entry['example']}"
        )
    for name, final in report["final"].items():
        left = final["left_after_gc_all"]
        lines.append(
            f"{name} after gc --all vs the fresh node: {len(left)} differences {left[:8]}; {final['problems'][:5]}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.campaigns.sigkill", description=__doc__.split("\n")[0])
    parser.add_argument("--kills", type=int, default=200, help="kills to land (default 200)")
    parser.add_argument("--seed", type=int, default=int(time.time()), help="random seed (default: the time)")
    parser.add_argument("--targets", default=",".join(TARGETS), help=f"comma-separated subset of {','.join(TARGETS)}")
    parser.add_argument("--time-limit", type=float, default=1500.0, help="seconds; no kill starts after (default 1500)")
    parser.add_argument("--gc-every", type=int, default=10, help="run pycni gc at least every N kills (default 10)")
    parser.add_argument("--replay", type=int, metavar="INDEX", help="run only kill INDEX of this seed's schedule")
    parser.add_argument("--json", metavar="FILE", help="write the full report here")
    parser.add_argument(
        "--frozen", action="store_true", help="run a copy of the source taken at the start (others edit the checkout)"
    )
    opts = parser.parse_args(argv)
    targets = tuple(t for t in opts.targets.split(",") if t)
    unknown = [t for t in targets if t not in TARGETS]
    if unknown or not targets:
        parser.error(f"unknown targets {unknown}; choose from {', '.join(TARGETS)}")
    if os.geteuid() != 0:
        print("the SIGKILL campaign needs root (network namespaces)", file=sys.stderr)
        return 2
    print(f"sigkill campaign: seed {opts.seed}, targets {','.join(targets)}", file=sys.stderr)
    report = run_campaign(
        opts.kills, opts.seed, targets, opts.time_limit, opts.gc_every, opts.replay, progress=True, frozen=opts.frozen
    )
    report["command"] = " ".join(["python -m tests.campaigns.sigkill", *(argv if argv is not None else sys.argv[1:])])
    if opts.json:
        Path(opts.json).write_text(json.dumps(report, indent=1) + "\n")
    print(render_table(report))
    for command in report["rerun"][:20]:
        print(f"rerun: {command}")
    failed = (
        report["leaks"]
        or report["problems"]
        or any(f["left_after_gc_all"] or f["problems"] for f in report["final"].values())
    )
    return 1 if failed else 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
