"""flanneld for the SIGKILL campaign: two nodes (vxlan, etcd), the agent of node 1 killed while pods come and go."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from tests.campaigns import sigkill_syscalls as syscalls
from tests.campaigns.sigkill_common import (
    DEL_ATTEMPTS,
    FORWARDING,
    GROUP_TIMEOUT,
    IFNAME,
    RECALIBRATE_EVERY,
    SYSTEM_PATH,
    Call,
    Container,
    Kill,
    Killer,
    Windows,
    call_problems,
    first_line,
    pythonpath,
    run_call,
    wait_group,
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
from tests.support.netns import NetnsPool, run

FLANNEL_NETWORK = "10.247.0.0/16"
FLANNEL_CNI = "cbr0"
CONVERGE_SECONDS = 30.0


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
        self.known: set[str] = set()  # leaks already charged to a kill: not charged again to the next ones
        self.trace_dir = work / "traces"
        self.start_effects: list[str] = []  # the system calls of the agent's start-up that change something

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
            problem, _ready = self.start_agent(node)
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

    def start_agent(self, node: Any, strace: list[str] | None = None) -> tuple[str, bool]:
        """Start ``node``'s agent (under ``strace`` if given); wait until it logs "ready": (problem or "", ready)."""
        offset = self.agent_log_size(node)
        argv = self.cluster.agent_argv(node, "--iptables-resync", "1", "--ip-masq")
        if strace:
            argv = [*argv[:4], *strace, *argv[4:]]  # inside `ip netns exec NODE`
        with node.log.open("ab") as log:
            started = time.monotonic()
            node.agent = subprocess.Popen(argv, stdout=log, stderr=log, start_new_session=True)
        while time.monotonic() - started < 60:
            with node.log.open("rb") as log:
                log.seek(offset)
                if b"flanneld: ready" in log.read():
                    return "", True
            if node.agent.poll() is not None:
                return (
                    f"flanneld exited with {node.agent.returncode} while starting: {self.log_tail(node, offset)}",
                    False,
                )
            time.sleep(0.005)
        return f"flanneld did not become ready within 60 s: {self.log_tail(node, offset)}", False

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
        """The subnet leases (key and value), and etcd's leases by the keys attached (an orphan has none)."""
        out = self.etcd.etcdctl("get", "--prefix", "/coreos.com/network/subnets/").stdout.splitlines()
        found = [f"{key} {value}" for key, value in zip(out[::2], out[1::2], strict=False)]
        orphans = 0
        for lease_id in self.etcd.etcdctl("lease", "list").stdout.split()[2:]:  # "found N leases" first
            ttl = self.etcd.etcdctl("lease", "timetolive", lease_id, "--keys", check=False).stdout
            keys = re.search(r"attached keys\((.*)\)", ttl)
            if keys is None:
                continue  # expired between the two calls
            if keys.group(1) in ("", "[]"):
                orphans += 1
            else:
                found.append(f"etcd lease attached to {keys.group(1)}")
        if orphans:
            found.append(f"etcd leases attached to no key: {orphans}")
        return sorted(found)

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
            left = [line for line in diff(self.steady, self.state()) if line not in self.known]
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
        """Kill the agent before one of the effects of its start-up (drawn uniformly), start it for good, check.

        Between two system calls that change something, where a kill falls
        makes no difference to what it leaves; so these kills are aimed at
        the calls themselves (strace, :mod:`tests.campaigns.sigkill_syscalls`),
        on the agent's first thread, which does the whole start-up.
        """
        if not self.start_effects:
            kill.problems += self.trace_start()
        self.kill_agent(node)
        trace = self.trace_dir / "agent.trace"
        aim = syscalls.choose({"flanneld": syscalls.names(self.start_effects)}, kill.fraction)
        kill.process, kill.effect, kill.effects = aim.process, aim.n, aim.total
        syscalls.clear(self.trace_dir)
        self.start_agent(node, syscalls.prefix(trace, aim))
        where = syscalls.killed_at(self.trace_dir, "agent")
        if where:
            kill.killed = f"flanneld at effect {aim.n}/{aim.total}: {where}"
        self.kill_agent(node)  # killed; or it came up before the aim (a miss)
        self.restart(kill, node)
        self.check(kill, None)

    def trace_start(self) -> list[str]:
        """An uncut start of node 1's agent, traced: the effects of its start-up, up to "ready"."""
        node = self.nodes[0]
        self.kill_agent(node)
        syscalls.clear(self.trace_dir)
        trace = self.trace_dir / "agent.trace"
        problem, _ready = self.start_agent(node, syscalls.prefix(trace, None))
        self.kill_agent(node)
        self.start_effects = syscalls.calls_until(trace, "flanneld: ready")
        problem2, _ready = self.start_agent(node)
        return [p for p in (problem, problem2) if p]

    def restart(self, kill: Kill, node: Any) -> None:
        self.restarts += 1
        for _attempt in range(3):
            problem, _ready = self.start_agent(node)
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
            self.known.update(line for line in kill.leaks if not line.startswith("container "))

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
