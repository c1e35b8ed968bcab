"""The chain's node for the SIGKILL campaign: plugin, runtime, syscall, worker and supervisor kills."""

from __future__ import annotations

import dataclasses
import json
import os
import random
import re
from pathlib import Path
from typing import Any

from tests.campaigns import sigkill_syscalls as syscalls
from tests.campaigns.sigkill_common import (
    DEL_ATTEMPTS,
    FORWARDING,
    IFNAME,
    RECALIBRATE_EVERY,
    SYSTEM_PATH,
    Call,
    Container,
    Daemon,
    Kill,
    Killer,
    Windows,
    call_problems,
    first_line,
    kill_plugin,
    kill_runtime,
    pythonpath,
    run_call,
)
from tests.campaigns.sigkill_state import (
    diff,
    drop_namespace,
    files_state,
    kernel_state,
    records_state,
    remove_namespace_records,
    settled,
)
from tests.support.netns import NetnsPool

NETWORK = "kknet"
BRIDGE = "kkbr0"
SUBNET4, SUBNET6 = "10.93.0.0/24", "fd93::/64"
CHAIN = ("bridge", "tuning", "portmap", "firewall", "bandwidth")
CONTAINER_SYSCTLS = {"net.ipv4.conf.all.arp_ignore": "2", "net.core.somaxconn": "1024"}


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
        self.wrapper_dir = work / "strace-bin"  # the plugins under strace (the syscall target)
        self.trace_dir = work / "traces"
        syscalls.install_wrappers(self.wrapper_dir, Path(plugin_dir), [*CHAIN, "host-local"])
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

    def traced(self, verb: str, ctr: Container, process: str, aim: syscalls.Aim | None) -> Call:
        """``pycni VERB`` (plugin executables) with ``process`` ("*": all) under strace, killed at ``aim``."""
        syscalls.clear(self.trace_dir)
        env = self.env(ctr, via_daemon=False) | {"CNI_PATH": str(self.wrapper_dir)}
        prefix: list[str] = []
        if process in (syscalls.RUNTIME, "*"):
            prefix = syscalls.runtime_prefix(self.trace_dir, aim)
        if process != syscalls.RUNTIME:
            env |= syscalls.plugin_env(self.trace_dir, process, verb, aim)
        argv = ["ip", "netns", "exec", self.host, *prefix, self.pycni_bin, verb, NETWORK, ctr.path]
        return run_call(argv, env)

    def gc(self, keep_bystanders: bool = True) -> Call:
        flags = [f"--keep={b.container_id}/{IFNAME}" for b in self.bystanders] if keep_bystanders else ["--all"]
        argv = ["ip", "netns", "exec", self.host, self.pycni_bin, "gc", NETWORK, *flags]
        return run_call(argv, self.env(None, via_daemon=self.daemon.process is not None))

    def close(self) -> None:
        remove_namespace_records(self.inode)


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
        self.effects: dict[str, dict[str, list[str]]] = {}  # verb -> process -> effects of an uncut call
        self.known: set[str] = set()  # leaks already charged to a kill: not charged again to the next ones

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
                left = [line for line in diff(self.node.steady, self.node.state()) if line not in self.known]
                if left:
                    problems.append(f"calibration {kind}: an uncut ADD and DEL left {left[:5]}")
            finally:
                drop_namespace(self.node.pool, ctr.netns)
        return problems

    def count_effects(self) -> list[str]:
        """Uncut ADDs and DELs with the runtime and every plugin traced: effects per process and verb.

        The second round counts: the first may include one-time work (bytecode written, directories made).
        """
        problems = []
        ctr = self.node.container("calsys")
        try:
            for _round in range(2):
                for verb in ("add", "del"):
                    call = self.node.traced(verb, ctr, "*", None)
                    if call.rc != 0:
                        problems.append(f"traced calibration {verb} failed: {first_line(call.stderr)}")
                    self.effects[verb] = syscalls.effects_of(self.node.trace_dir)
            left = diff(ctr.fresh, kernel_state(ctr.netns))
            left += [line for line in diff(self.node.steady, self.node.state()) if line not in self.known]
            if left:
                problems.append(f"traced calibration: an uncut ADD and DEL left {left[:5]}")
        finally:
            drop_namespace(self.node.pool, ctr.netns)
        return problems

    def killed_call(self, kill: Kill, ctr: Container, rng: random.Random, aim: syscalls.Aim | None) -> Call:
        """The call the kill is for, with the kill."""
        verb = kill.phase.lower()
        if kill.target == "syscall":
            aim = aim or syscalls.choose(self.effects[verb], kill.fraction)
            kill.process, kill.effect, kill.effects = aim.process, aim.n, aim.total
            cut = self.node.traced(verb, ctr, aim.process, aim)
            where = syscalls.killed_at(self.node.trace_dir, kill.process)
            point = f"effect {aim.n}/{aim.total}" if aim.total else f"{aim.syscall} #{aim.occurrence}"
            cut.killed = f"{kill.process} at {point}: {where}" if where else ""
            return cut
        killer, delay = self.killer(kill, rng)
        cut = self.node.pycni(verb, ctr, kill.target in ("worker", "supervisor"), killer, delay)
        if kill.target in ("worker", "supervisor"):
            cut.kill_ms = round(1000 * self.daemon.killed_at, 1)
        return cut

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

    def run(self, kill: Kill, aim: syscalls.Aim | None = None) -> None:
        """One kill (for the syscall target, at ``aim`` if given, else drawn from ``kill.fraction``)."""
        node = self.node
        via_daemon = kill.target in ("worker", "supervisor")
        self.runs += 1
        if kill.target == "syscall":
            if not self.effects and aim is None:
                kill.problems += self.count_effects()
        elif via_daemon not in self.paths:
            self.paths.add(via_daemon)
            kill.problems += self.calibrate({via_daemon})
        if self.runs % RECALIBRATE_EVERY == 0:
            kill.problems += self.calibrate(self.paths)  # windows for the load of the moment; ADD still works
        rng = random.Random(f"{kill.index}:{kill.fraction}")
        ctr = node.container(f"k{kill.index}")
        calls: list[tuple[str, Call]] = []
        try:
            if kill.phase == "DEL":  # made through the daemon, whatever the kill's path: the same plugin code, faster
                pre = self.uncut("add", ctr, via_daemon=True)
                calls.append(("ADD before the kill", pre))
                if pre.rc != 0:
                    kill.problems.append(f"the ADD before the killed DEL failed: {first_line(pre.stderr)}")
            cut = self.killed_call(kill, ctr, rng, aim)
            calls.append((f"killed {kill.phase}", cut))
            kill.killed, kill.kill_ms, kill.call_rc = cut.killed, cut.kill_ms, cut.rc
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
                self.known.update(line for line in kill.leaks if not line.startswith("container "))
        finally:
            drop_namespace(node.pool, ctr.netns)

    def leftovers(self, ctr: Container) -> list[str]:
        """What differs from the steady state (leaks earlier kills were charged with aside) and in the container."""
        left = [line for line in diff(self.node.steady, self.node.state()) if line not in self.known]
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
