"""Concurrency campaign: many calls at once, through the daemon (issue 9, part 3).

Run as root from the repository::

    .venv/bin/python -m tests.campaigns.concurrency --adds 200 --pairs 50 --json concurrency.json

``make test`` runs a small one (``tests/integration/test_concurrency_campaign.py``).

Part 1, one host-local network: ``--adds`` containers are ADDed at once
(bridge + host-local through the plugin executables, each served by the
daemon or, with ``--in-process``, each its own process racing on
host-local's lock), while GC runs again and again with the valid list a
runtime would send (every container it is creating, so none of theirs).
Before that, containers that died without a DEL left reservations behind;
GC must remove exactly those. Checked: every ADD succeeds, no address is
given twice, each valid container holds exactly one reservation, no stale
one survives, and after every DEL and a last GC the node is as fresh.

Part 2, each plugin type: ``--pairs`` containers ADDed at once through the
runtime (``pycni add``, whose plugin executables the daemon serves), then
DELed at once; every call succeeds, and the node compares equal with a
fresh one (the devices a type keeps by design, such as the bridge, aside).
Types whose kernel module this machine lacks (ipvlan, vlan, dummy, vrf) are
reported as skipped with that reason; dhcp needs a DHCP server and is
covered by its own integration test.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.daemon import DaemonProcess
from tests.support.kernel import PROBES, missing_link_kind
from tests.support.netns import NetnsPool, netns_pool, run
from tests.support.node import differences, snapshot
from tests.support.progress import Progress
from tests.support.progress import progress as show_progress

STALE = 20  # containers that die without a DEL before part 1 starts


@dataclass
class Outcome:
    name: str
    calls: int = 0
    failed: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0
    skipped: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "calls": self.calls,
            "failed": len(self.failed),
            "first_failures": self.failed[:3],
            "problems": self.problems,
            "seconds": round(self.seconds, 1),
            **({"skipped": self.skipped} if self.skipped else {}),
        }


class Node:
    """A fresh node namespace with the plugin executables, a daemon and per-campaign state directories."""

    def __init__(self, pool: NetnsPool, work: Path, plugin_dir: str, in_process: bool) -> None:
        self.pool = pool
        self.name = pool.new("cc-node")
        self.work = work
        self.plugin_dir = plugin_dir
        self.socket_path = work / "run" / "pycni.sock"
        self.in_process = in_process
        self.lock = threading.Lock()

    def env(self, **extra: str) -> dict[str, str]:
        env = {
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            "CNI_PATH": self.plugin_dir,
            "PYCNI_SOCKET": str(self.socket_path),
            "PYCNI_CACHE_DIR": str(self.work / "cache"),
            "NETCONFPATH": str(self.work / "net.d"),
            **extra,
        }
        if self.in_process:
            env["PYCNI_NO_DAEMON"] = "1"
        return env

    def plugin(self, plugin_type: str, verb: str, config: dict[str, Any], container: str, cid: str) -> tuple[int, str]:
        env = self.env(
            CNI_COMMAND=verb, CNI_CONTAINERID=cid, CNI_NETNS=NetnsPool.path(container) if container else "",
            CNI_IFNAME="eth0",
        )  # fmt: skip
        proc = subprocess.run(
            ["ip", "netns", "exec", self.name, os.path.join(self.plugin_dir, plugin_type)],
            input=json.dumps(config).encode(), env=env, capture_output=True, check=False, timeout=300,
        )  # fmt: skip
        return proc.returncode, proc.stdout.decode()

    def runtime(self, verb: str, network: str, container: str, **extra: str) -> tuple[int, str]:
        pycni = os.path.join(os.path.dirname(sys.executable), "pycni")
        proc = subprocess.run(
            ["ip", "netns", "exec", self.name, pycni, verb, network, NetnsPool.path(container)],
            env=self.env(**extra), capture_output=True, text=True, check=False, timeout=300,
        )  # fmt: skip
        return proc.returncode, proc.stdout + proc.stderr


def parallel(
    count: int, work: Callable[[int], tuple[int, str]], outcome: Outcome, label: str, bar: Progress
) -> list[str]:
    """Run ``work(i)`` for every i at once; failures go to ``outcome``; returns the outputs."""

    def call(index: int) -> tuple[int, str]:
        reply = work(index)
        bar.advance(detail=f"{label} {index}")
        return reply

    with ThreadPoolExecutor(max_workers=count) as pool:
        replies = list(pool.map(call, range(count)))
    outcome.calls += count
    for index, (rc, out) in enumerate(replies):
        if rc != 0:
            outcome.failed.append(f"{label} {index}: {out.strip()[:200]}")
    return [out for _, out in replies]


def reservations(data_dir: Path, network: str) -> dict[str, str]:
    """host-local's reservation files: address -> the container ID on their first line."""
    directory = data_dir / network
    found = {}
    for path in directory.glob("*") if directory.exists() else []:
        if path.name[0].isdigit() or ":" in path.name:
            found[path.name] = path.read_text().splitlines()[0]
    return found


# -- part 1 ---------------------------------------------------------------------------


def one_network(node: Node, adds: int, bar: Progress) -> Outcome:
    outcome = Outcome(f"host-local: {adds} parallel ADDs with GC running")
    started = time.monotonic()
    data_dir = node.work / "ipam"
    config = {
        "cniVersion": "1.1.0",
        "name": "ccnet",
        "type": "bridge",
        "bridge": "cc0",
        "isGateway": True,
        "ipam": {"type": "host-local", "subnet": "10.30.0.0/16", "dataDir": str(data_dir)},
    }
    fresh = snapshot(node.name)

    # Containers that die without a DEL: their netns goes (and the veth with it), their reservation stays.
    dead = [node.pool.new("cc-dead") for _ in range(STALE)]
    parallel(STALE, lambda i: node.plugin("bridge", "ADD", config, dead[i], f"stale-{i}"), outcome, "stale ADD", bar)
    for name in dead:
        run("ip", "netns", "del", name)
    stale = set(reservations(data_dir, "ccnet").values())
    if len(stale) != STALE:
        outcome.problems.append(f"{len(stale)} stale reservations planted, not {STALE}")

    containers = [node.pool.new("cc") for _ in range(adds)]
    valid = [{"containerID": f"cc-{i}", "ifname": "eth0"} for i in range(adds)]
    gc_config = {**config, "cni.dev/valid-attachments": valid}
    gc_runs = 0
    adding = threading.Event()
    adding.set()

    def gc_loop() -> None:
        nonlocal gc_runs
        while adding.is_set():
            rc, out = node.plugin("bridge", "GC", gc_config, "", "")
            gc_runs += 1
            if rc != 0:
                outcome.failed.append(f"GC: {out.strip()[:200]}")
            time.sleep(0.05)

    collector = threading.Thread(target=gc_loop)
    collector.start()
    try:
        outputs = parallel(adds, lambda i: node.plugin("bridge", "ADD", config, containers[i], f"cc-{i}"), outcome,
                           "ADD", bar)  # fmt: skip
    finally:
        adding.clear()
        collector.join()
    outcome.calls += gc_runs
    rc, out = node.plugin("bridge", "GC", gc_config, "", "")  # one GC after the last ADD, as a runtime's next pass
    if rc != 0:
        outcome.failed.append(f"final GC: {out}")

    given = [json.loads(out)["ips"][0]["address"] for out in outputs if out.strip().startswith("{") and '"ips"' in out]
    held = reservations(data_dir, "ccnet")
    if len(set(given)) != len(given):
        outcome.problems.append(f"an address was given twice: {len(given) - len(set(given))} duplicates")
    if sorted(held.values()) != sorted(f"cc-{i}" for i in range(adds)):
        kept_stale = sorted(set(held.values()) & stale)
        missing = sorted({f"cc-{i}" for i in range(adds)} - set(held.values()))
        outcome.problems.append(f"reservations wrong: stale kept {kept_stale[:5]}, valid lost {missing[:5]}")
    if sorted(address.split("/")[0] for address in given) != sorted(held):
        outcome.problems.append("the addresses given are not the addresses reserved")

    parallel(adds, lambda i: node.plugin("bridge", "DEL", config, containers[i], f"cc-{i}"), outcome, "DEL", bar)
    node.plugin("bridge", "GC", {**config, "cni.dev/valid-attachments": []}, "", "")
    if reservations(data_dir, "ccnet"):
        outcome.problems.append(f"reservations left after DEL: {len(reservations(data_dir, 'ccnet'))}")
    leftovers = differences(fresh, snapshot(node.name))
    kept = {part: new for part, (gone, new) in leftovers.items() if gone or any("cc0" not in line for line in new)}
    if kept:
        outcome.problems.append(f"node differs from fresh beyond the bridge: {kept}")
    for name in containers:
        run("ip", "netns", "del", name)
        node.pool.names.remove(name)
    outcome.seconds = time.monotonic() - started
    return outcome


# -- part 2 ---------------------------------------------------------------------------


def ipam(node: Node, subnet: str) -> dict[str, Any]:
    return {"type": "host-local", "subnet": subnet, "dataDir": str(node.work / "ipam")}


def bridge(node: Node, index: int) -> dict[str, Any]:
    return {"type": "bridge", "bridge": f"ccb{index}", "isGateway": True, "ipam": ipam(node, f"10.{40 + index}.0.0/16")}


def type_matrix(node: Node) -> dict[str, Callable[[int], list[dict[str, Any]]]]:
    """Each type's conflist plugins (for container i, where a type needs per-container settings)."""
    subnet_env = node.work / "subnet.env"
    subnet_env.write_text("FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.7.1/24\nFLANNEL_MTU=1450\n"
                          "FLANNEL_IPMASQ=true\n")  # fmt: skip
    return {
        "bridge": lambda i: [bridge(node, 1)],
        "ptp": lambda i: [{"type": "ptp", "ipMasq": True, "ipam": ipam(node, "10.61.0.0/16")}],
        "macvlan": lambda i: [
            {"type": "macvlan", "master": "ccmaster", "mode": "bridge", "ipam": ipam(node, "10.62.0.0/16")}
        ],
        "host-device": lambda i: [{"type": "host-device", "device": f"cchd{i}"}],
        "tap": lambda i: [{"type": "tap", "ipam": ipam(node, "10.63.0.0/16")}],
        "loopback": lambda i: [{"type": "loopback"}],
        "static": lambda i: [
            {
                "type": "bridge",
                "bridge": "ccst",
                "ipam": {"type": "static", "addresses": [{"address": f"10.64.{i // 200}.{i % 200 + 2}/16"}]},
            }
        ],
        "portmap": lambda i: [bridge(node, 2), {"type": "portmap", "capabilities": {"portMappings": True}}],
        "bandwidth": lambda i: [
            bridge(node, 3),
            {
                "type": "bandwidth",
                "ingressRate": 8_000_000,
                "ingressBurst": 80_000,
                "egressRate": 8_000_000,
                "egressBurst": 80_000,
            },
        ],
        "firewall": lambda i: [bridge(node, 4), {"type": "firewall"}],
        "tuning": lambda i: [
            bridge(node, 5),
            {"type": "tuning", "dataDir": str(node.work / "tuning"), "sysctl": {"net.ipv4.conf.eth0.arp_notify": "1"}},
        ],
        "sbr": lambda i: [bridge(node, 6), {"type": "sbr"}],
        "ipvlan": lambda i: [{"type": "ipvlan", "master": "ccmaster", "ipam": ipam(node, "10.65.0.0/16")}],
        "vlan": lambda i: [{"type": "vlan", "master": "ccmaster", "vlanId": 100, "ipam": ipam(node, "10.66.0.0/16")}],
        "dummy": lambda i: [{"type": "dummy", "ipam": ipam(node, "10.67.0.0/16")}],
        "vrf": lambda i: [bridge(node, 7), {"type": "vrf", "vrfname": "ccvrf"}],
        "flannel": lambda i: [
            {
                "type": "flannel",
                "subnetFile": str(subnet_env),
                "dataDir": str(node.work / "flannel"),
                # host-local's reservations under the campaign's directory, not the machine's /var/lib/cni
                "delegate": {"bridge": "ccfl0", "ipam": {"dataDir": str(node.work / "flannel-ipam")}},
            }
        ],
    }


def prepare(node: Node, plugin_type: str, pairs: int) -> None:
    """Host-side devices a type attaches to."""
    if plugin_type in ("macvlan", "ipvlan", "vlan"):
        run("ip", "link", "add", "ccmaster", "type", "veth", "peer", "name", "ccmaster-p", netns=node.name)
        run("ip", "link", "set", "ccmaster", "up", netns=node.name)
    if plugin_type == "host-device":
        for i in range(pairs):
            run("ip", "link", "add", f"cchd{i}", "type", "veth", "peer", "name", f"cchd{i}p", netns=node.name)


def one_type(
    node: Node, plugin_type: str, plugins: Callable[[int], list[dict[str, Any]]], pairs: int, bar: Progress
) -> Outcome:
    outcome = Outcome(f"{plugin_type}: {pairs} parallel ADD/DEL pairs")
    missing = missing_link_kind(plugin_type) if plugin_type in PROBES else ""
    if missing:
        outcome.skipped = f"this kernel cannot create {plugin_type} links: {missing}"
        bar.advance(2 * pairs, detail=f"{plugin_type} skipped")
        return outcome
    started = time.monotonic()
    prepare(node, plugin_type, pairs)
    fresh = snapshot(node.name)
    conf_dir = node.work / "net.d"
    conf_dir.mkdir(exist_ok=True)
    containers = [node.pool.new("cct", lo_up=False) for _ in range(pairs)]
    network = f"t-{plugin_type}"

    def conflist(i: int) -> dict[str, Any]:
        return {"cniVersion": "1.1.0", "name": network, "plugins": plugins(i)}

    # One config file per container where the type needs per-container settings (host-device, static),
    # all written before the first ADD: the runtime reads every file in the directory, as libcni does.
    for i in range(pairs):
        name = f"{network}-{i}"
        (conf_dir / f".{name}.tmp").write_text(json.dumps({**conflist(i), "name": name}))
        (conf_dir / f".{name}.tmp").rename(conf_dir / f"{name}.conflist")

    def add(i: int) -> tuple[int, str]:
        cap = json.dumps({"portMappings": [{"hostPort": 30000 + i, "containerPort": 80, "protocol": "tcp"}]})
        return node.runtime("add", f"{network}-{i}", containers[i], CAP_ARGS=cap)

    def delete(i: int) -> tuple[int, str]:
        return node.runtime("del", f"{network}-{i}", containers[i])

    parallel(pairs, add, outcome, f"{plugin_type} ADD", bar)
    parallel(pairs, delete, outcome, f"{plugin_type} DEL", bar)
    for i in range(pairs):
        (conf_dir / f"{network}-{i}.conflist").unlink()
    leftovers = differences(fresh, snapshot(node.name))
    by_design = ("ccb", "ccst", "ccfl0")  # bridges outlive their last container, as in Go
    kept = {
        part: new
        for part, (gone, new) in leftovers.items()
        if any(not any(name in line for name in by_design) for line in gone + new)
    }
    if kept:
        outcome.problems.append(f"node differs from fresh: {kept}")
    reference = node.pool.new("cc-fresh", lo_up=False)
    if plugin_type == "loopback":
        # The kernel gives lo its noqueue qdisc the first time it comes up, and keeps it when it goes
        # down again (a fresh lo shows "noop"): nothing DEL could undo, so compare with lo up then down.
        run("ip", "link", "set", "lo", "up", netns=reference)
        run("ip", "link", "set", "lo", "down", netns=reference)
    fresh_container = snapshot(reference)
    for name in containers:
        if differences(fresh_container, snapshot(name)):
            outcome.problems.append(f"{name} after DEL: {differences(fresh_container, snapshot(name))}")
            break
    cache = node.work / "cache" / "results"
    if cache.exists() and any(p.name.startswith(network) for p in cache.iterdir()):
        outcome.problems.append("result cache entries left")
    for name in [*containers, node.pool.names[-1]]:
        run("ip", "netns", "del", name)
        node.pool.names.remove(name)
    outcome.seconds = time.monotonic() - started
    return outcome


def note_trouble(bar: Progress, outcome: Outcome) -> None:
    """An outcome with failed calls or problems, at once (every outcome is in the report)."""
    if outcome.failed or outcome.problems:
        bar.note(f"concurrency: {outcome.as_dict()}")


def campaign(adds: int, pairs: int, in_process: bool = False, types: list[str] | None = None,
             progress: bool = True) -> dict[str, Any]:  # fmt: skip
    from pycni.cli.install import install

    outcomes: list[Outcome] = []
    with tempfile.TemporaryDirectory(prefix="pycni-concurrency-") as tmp, netns_pool("cc") as pool:
        work = Path(tmp)
        install(str(work / "bin"))
        daemon = None
        if not in_process:
            daemon = DaemonProcess(work / "run" / "pycni.sock", workers=2, log_path=work / "daemon.log")
            daemon.start()
        try:
            # A bar per part (10 plain lines each): the calls of part 1 and those of part 2 take different times.
            if adds:
                node = Node(pool, work, str(work / "bin"), in_process)
                with show_progress(
                    "concurrency campaign, part 1", STALE + 2 * adds, unit="call", enabled=progress, lines=10
                ) as bar:
                    outcomes.append(one_network(node, adds, bar))
                    note_trouble(bar, outcomes[-1])
            if pairs:
                node = Node(pool, work, str(work / "bin"), in_process)
                matrix = {t: plugins for t, plugins in type_matrix(node).items() if not types or t in types}
                calls = 2 * pairs * len(matrix)
                with show_progress(
                    "concurrency campaign, part 2", calls, unit="call", enabled=progress, lines=10
                ) as bar:
                    for plugin_type, plugins in matrix.items():
                        outcomes.append(one_type(node, plugin_type, plugins, pairs, bar))
                        note_trouble(bar, outcomes[-1])
        finally:
            if daemon is not None:
                daemon.stop()
    return {"adds": adds, "pairs": pairs, "path": "in-process" if in_process else "daemon",
            "outcomes": [o.as_dict() for o in outcomes]}  # fmt: skip


def problems(report: dict[str, Any]) -> list[str]:
    found = []
    for outcome in report["outcomes"]:
        if outcome["failed"]:
            found.append(f"{outcome['name']}: {outcome['failed']} failed calls: {outcome['first_failures']}")
        found += [f"{outcome['name']}: {problem}" for problem in outcome["problems"]]
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--adds", type=int, default=200, help="parallel ADDs on one host-local network (0: skip)")
    parser.add_argument("--pairs", type=int, default=50, help="parallel ADD/DEL pairs per plugin type (0: skip)")
    parser.add_argument("--in-process", action="store_true", help="no daemon: every plugin call its own process")
    parser.add_argument("--type", action="append", dest="types", help="only these plugin types (part 2)")
    parser.add_argument("--json", help="write the report here")
    opts = parser.parse_args(argv)
    report = campaign(opts.adds, opts.pairs, opts.in_process, opts.types)
    report["problems"] = problems(report)
    if opts.json:
        Path(opts.json).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 1 if report["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
