"""Every nftables table pycni's plugins write is gone after the last DEL (pycni issue 9).

Each test starts from a FRESH node: a brand-new network namespace used as the
host, pictured before any ADD. Calls go through the real plugin executables
and pycni's runtime (``pycni add|del|gc`` inside the node), on the path the
``call_path`` fixture names: ``in-process`` (the executable runs the plugin
itself, PYCNI_NO_DAEMON) or ``daemon`` (a private ``pycni daemon``). Work a
plugin hands to ``CmdArgs.after_reply`` may run after the reply on the
daemon path, so there the node is polled for a short while before comparing.
"""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pycni.cli.main import container_id_for
from tests.support.daemon import Daemon
from tests.support.netns import NetnsPool, run
from tests.support.records import attachment_records, netns_cookie

SETTLE_SECONDS = 5.0  # how long deferred clean-up may take on the daemon path


@dataclass
class CallPath:
    name: str
    env: dict[str, str]
    deferred_after_reply: bool  # clean-up may still be running when the reply arrives


@pytest.fixture(params=["in-process", "daemon"])
def call_path(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[CallPath]:
    if request.param == "in-process":
        yield CallPath("in-process", {"PYCNI_NO_DAEMON": "1"}, deferred_after_reply=False)
        return
    daemon = Daemon(tmp_path / "run" / "pycni.sock")
    daemon.start()
    try:
        yield CallPath("daemon", {"PYCNI_SOCKET": str(daemon.socket_path)}, deferred_after_reply=True)
    finally:
        daemon.kill()


def bridge(name: str, subnets: list[str], data_dir: Path, **extra: Any) -> dict[str, Any]:
    """A bridge network on ``subnets`` through host-local; with none, L2 only (no IPAM)."""
    ipam = {"type": "host-local", "ranges": [[{"subnet": s}] for s in subnets], "dataDir": str(data_dir)}
    return {"type": "bridge", "bridge": name, **({"isGateway": True, "ipam": ipam} if subnets else {}), **extra}


def conflist(name: str, *plugins: dict[str, Any]) -> dict[str, Any]:
    return {"cniVersion": "1.1.0", "name": name, "plugins": list(plugins)}


class Node:
    """A brand-new namespace as the host, driven with ``pycni`` against its own conflists."""

    def __init__(self, pool: NetnsPool, plugin_dir: str, pycni_bin: str, tmp: Path, path: CallPath) -> None:
        self.pool, self.pycni_bin, self.tmp, self.path = pool, pycni_bin, tmp, path
        self.name = pool.new("fresh")
        self.conf_dir = tmp / "net.d"
        self.conf_dir.mkdir(exist_ok=True)
        self.ipam = tmp / "ipam"
        self.env = {
            **os.environ,
            "CNI_PATH": plugin_dir,
            "NETCONFPATH": str(self.conf_dir),
            "PYCNI_CACHE_DIR": str(tmp / "cache"),
            **path.env,
        }
        self.env.pop("PYCNI_NO_DAEMON" if path.name == "daemon" else "PYCNI_SOCKET", None)
        self.cookie = netns_cookie(self.name)

    def network(self, config: dict[str, Any]) -> str:
        (self.conf_dir / f"{config['name']}.conflist").write_text(json.dumps(config))
        return str(config["name"])

    def pycni(self, *args: str, cap: dict[str, Any] | None = None) -> subprocess.CompletedProcess[str]:
        env = {**self.env, **({"CAP_ARGS": json.dumps(cap)} if cap else {})}
        return subprocess.run(
            ["ip", "netns", "exec", self.name, self.pycni_bin, *args],
            env=env,
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )

    def add(self, network: str, ctr: str, cap: dict[str, Any] | None = None) -> dict[str, Any]:
        proc = self.pycni("add", network, self.pool.path(ctr), cap=cap)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        result: dict[str, Any] = json.loads(proc.stdout)
        return result

    def delete(self, network: str, ctr: str) -> None:
        proc = self.pycni("del", network, self.pool.path(ctr))
        assert proc.returncode == 0, proc.stdout + proc.stderr

    def check(self, network: str, ctr: str) -> subprocess.CompletedProcess[str]:
        return self.pycni("check", network, self.pool.path(ctr))

    def ruleset(self) -> str:
        return run("nft", "list", "ruleset", netns=self.name).stdout

    def records(self) -> list[str]:
        return attachment_records(self.name, self.cookie)

    def reservations(self) -> list[str]:
        """host-local's reserved addresses (its lock and last_reserved_ip files are bookkeeping)."""
        return sorted(
            os.path.relpath(path, self.ipam)
            for path in glob.glob(str(self.ipam / "*" / "*"))
            if not os.path.basename(path).startswith(("lock", "last_reserved_ip"))
        )

    def picture(self) -> dict[str, Any]:
        return {"nft": self.ruleset(), "records": self.records(), "reservations": self.reservations()}

    def settled(self, expected: dict[str, Any]) -> dict[str, Any]:
        """The node's picture, once deferred clean-up had its chance to match ``expected``."""
        deadline = time.monotonic() + (SETTLE_SECONDS if self.path.deferred_after_reply else 0)
        picture = self.picture()
        while picture != expected and time.monotonic() < deadline:
            time.sleep(0.05)
            picture = self.picture()
        return picture

    def del_losing_deferred_work(self, config: dict[str, Any], plugin_type: str, ctr: str) -> int:
        """DEL of the first plugin of ``config`` whose after_reply work never runs.

        What the daemon does when it dies right after replying: the reply is
        out, the deferred list is lost. Returns how much work was deferred.
        """
        plugin_conf = {"cniVersion": config["cniVersion"], "name": config["name"], **config["plugins"][0]}
        code = (
            "import os, sys\n"
            f"from pycni.plugins.main import {plugin_type} as module\n"
            "lost = []\n"
            "reply = module.plugin.invoke(os.environ, sys.stdin.buffer.read(), deferred=lost)\n"
            "sys.stderr.write(reply.stdout + reply.stderr)\n"
            "print(len(lost))\n"
            "sys.exit(reply.exit_code)\n"
        )
        env = {
            **self.env,
            "CNI_COMMAND": "DEL",
            "CNI_CONTAINERID": container_id_for(self.pool.path(ctr)),
            "CNI_NETNS": self.pool.path(ctr),
            "CNI_IFNAME": "eth0",
        }
        proc = subprocess.run(
            ["ip", "netns", "exec", self.name, sys.executable, "-c", code],
            input=json.dumps(plugin_conf),
            env=env,
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return int(proc.stdout)


@pytest.fixture
def node(netns: NetnsPool, pycni_plugin_dir: str, pycni_bin: str, tmp_path: Path, call_path: CallPath) -> Node:
    return Node(netns, pycni_plugin_dir, pycni_bin, tmp_path, call_path)


# Each case: a network using one table, the table its ADD must write, the CAP_ARGS of the ADD.
CASES: dict[str, tuple[list[dict[str, Any]], str, dict[str, Any] | None]] = {
    "masquerade-bridge": (
        [{"subnets": ["10.91.0.0/24"], "ipMasq": True}],
        "table inet cni_plugins_masquerade",
        None,
    ),
    "masquerade-bridge-dual-stack": (
        [{"subnets": ["10.91.0.0/24", "fd91::/64"], "ipMasq": True}],
        "table inet cni_plugins_masquerade",
        None,
    ),
    "masquerade-ptp": ([{"ptp": True, "subnets": ["10.92.0.0/24"]}], "table inet cni_plugins_masquerade", None),
    "portmap": (
        [{"subnets": ["10.93.0.0/24"]}, {"type": "portmap", "capabilities": {"portMappings": True}}],
        "table inet pycni_hostport",
        {"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]},
    ),
    "firewall": (
        [{"subnets": ["10.94.0.0/24"]}, {"type": "firewall", "ingressPolicy": "same-bridge"}],
        "table inet pycni_firewall",
        None,
    ),
    "firewall-l2-only": ([{"subnets": []}, {"type": "firewall"}], "table inet pycni_firewall", None),
    "firewall-l2-only-isolated": (
        [{"subnets": []}, {"type": "firewall", "ingressPolicy": "isolated"}],
        "table inet pycni_firewall",
        None,
    ),
    "spoofcheck": ([{"subnets": ["10.95.0.0/24"], "macspoofchk": True}], "table bridge nat", None),
}


def case_network(node: Node, case: str, name: str = "freshnet", bridge_name: str = "fresh0") -> str:
    plugins: list[dict[str, Any]] = []
    for spec in CASES[case][0]:
        if "type" in spec:
            plugins.append(spec)
        elif spec.get("ptp"):
            ptp_ipam = bridge("", spec["subnets"], node.ipam)["ipam"]
            plugins.append({"type": "ptp", "ipMasq": True, "ipam": ptp_ipam})
        else:
            extra = {k: v for k, v in spec.items() if k != "subnets"}
            plugins.append(bridge(bridge_name, spec["subnets"], node.ipam, **extra))
    return node.network(conflist(name, *plugins))


@pytest.mark.parametrize("case", list(CASES))
def test_one_add_one_del_leaves_the_fresh_node_as_it_was(node: Node, case: str) -> None:
    """The DEL is ``pycni del`` as a user types it: without the ADD's CAP_ARGS (portmap must not need them)."""
    fresh = node.picture()
    network = case_network(node, case)
    ctr = node.pool.new("ctr")
    node.add(network, ctr, cap=CASES[case][2])
    assert CASES[case][1] in node.ruleset(), "the ADD wrote the table the case is about"
    node.delete(network, ctr)
    assert node.settled(fresh) == fresh, f"{case}: the node differs from its fresh picture after the last DEL"


def test_the_subnet_rule_lives_until_the_last_container_goes(node: Node) -> None:
    fresh = node.picture()
    network = case_network(node, "masquerade-bridge")
    first, second = node.pool.new("ctr"), node.pool.new("ctr")
    node.add(network, first)
    node.add(network, second)
    rule = "ip saddr 10.91.0.0/24 ip daddr != 10.91.0.0/24 masquerade"
    assert node.ruleset().count(rule) == 1, "one rule per network and subnet, not per container"
    node.delete(network, first)
    time.sleep(0.3 if node.path.deferred_after_reply else 0)  # give a wrong reap its chance to run
    assert rule in node.ruleset(), "the second container still needs its subnet's rule"
    checked = node.check(network, second)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    node.delete(network, second)
    assert node.settled(fresh) == fresh


def test_a_lost_reap_is_done_by_the_next_call(node: Node) -> None:
    """The daemon died between DEL's reply and its deferred reap: the next ADD or DEL that lists the table reaps."""
    fresh = node.picture()
    config = json.loads(json.dumps(conflist("lostnet", bridge("lost0", ["10.96.0.0/24"], node.ipam, ipMasq=True))))
    lost = node.network(config)
    other = case_network(node, "masquerade-bridge", name="othernet", bridge_name="other0")
    ctr = node.pool.new("ctr")
    node.add(lost, ctr)
    assert node.del_losing_deferred_work(config, "bridge", ctr) >= 1, "DEL of the last container defers a reap"
    stale = "ip saddr 10.96.0.0/24 ip daddr != 10.96.0.0/24 masquerade"
    assert stale in node.ruleset(), "without its deferred work the DEL left the rule (the crash being simulated)"

    ctr2 = node.pool.new("ctr")
    node.add(other, ctr2)  # another network's ADD lists the table and finds lostnet's orphan
    deadline = time.monotonic() + SETTLE_SECONDS
    while stale in node.ruleset() and time.monotonic() < deadline:
        time.sleep(0.05)
    ruleset = node.ruleset()
    assert stale not in ruleset, "the next call reaped the orphaned rule"
    assert "ip saddr 10.91.0.0/24 ip daddr != 10.91.0.0/24 masquerade" in ruleset, "and kept the live one"
    node.delete(other, ctr2)
    assert node.settled(fresh) == fresh


def test_a_lost_reap_is_done_by_gc(node: Node) -> None:
    fresh = node.picture()
    config = conflist("gcnet", bridge("gc0", ["10.97.0.0/24"], node.ipam, ipMasq=True))
    network = node.network(config)
    ctr = node.pool.new("ctr")
    node.add(network, ctr)
    assert node.del_losing_deferred_work(config, "bridge", ctr) >= 1
    assert "10.97.0.0/24" in node.ruleset()
    # The runtime's cache still lists the attachment: keep it, so GC itself (not a cached DEL) must notice.
    cid = container_id_for(node.pool.path(ctr))
    proc = node.pycni("gc", network, "--keep", f"{cid}/eth0")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert node.settled(fresh) == fresh, "GC reaped the orphaned rule and dropped the empty table"


def test_gc_of_a_vanished_container_leaves_the_fresh_node(node: Node) -> None:
    """No DEL at all: GC with an empty valid list removes the records, the rule and the table."""
    fresh = node.picture()
    network = case_network(node, "masquerade-bridge")
    ctr = node.pool.new("ctr")
    node.add(network, ctr)
    for cached in glob.glob(str(node.tmp / "cache" / "results" / "*")):
        os.remove(cached)  # the runtime forgot it too: only the plugins' GC can clean up
    proc = node.pycni("gc", network, "--all")  # an empty valid list
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert node.settled(fresh) == fresh


def test_concurrent_add_and_last_del_of_one_network(node: Node) -> None:
    """The last DEL's reap against a concurrent ADD of the same network: the new container keeps its rule."""
    fresh = node.picture()
    network = case_network(node, "masquerade-bridge")
    rule = "ip saddr 10.91.0.0/24 ip daddr != 10.91.0.0/24 masquerade"
    current = node.pool.new("ctr")
    node.add(network, current)
    with ThreadPoolExecutor(max_workers=2) as pool:
        for _ in range(6):
            incoming = node.pool.new("ctr")
            leaving = current
            deleting = pool.submit(node.delete, network, leaving)
            adding = pool.submit(node.add, network, incoming)
            deleting.result()
            adding.result()
            time.sleep(0.2 if node.path.deferred_after_reply else 0)  # a late reap would have run by now
            assert rule in node.ruleset(), "the ADD that raced the last DEL kept its subnet's rule"
            checked = node.check(network, incoming)
            assert checked.returncode == 0, checked.stdout + checked.stderr
            current = incoming
    node.delete(network, current)
    assert node.settled(fresh) == fresh


def test_a_bridges_isolation_goes_with_its_last_attachment(node: Node) -> None:
    """Isolation is per bridge: once bridge A has no attachment, a new open network on it is not isolated."""
    fresh = node.picture()
    isolated = node.network(conflist("isonet", bridge("iso0", ["10.98.0.0/24"], node.ipam), {
        "type": "firewall", "ingressPolicy": "same-bridge"}))  # fmt: skip
    other = node.network(conflist("keepnet", bridge("keep0", ["10.99.0.0/24"], node.ipam), {
        "type": "firewall", "ingressPolicy": "same-bridge"}))  # fmt: skip
    a, b = node.pool.new("ctr"), node.pool.new("ctr")
    node.add(isolated, a)
    node.add(other, b)
    assert 'iifname "iso0"' in node.ruleset() and 'iifname "keep0"' in node.ruleset()
    node.delete(isolated, a)
    ruleset = node.ruleset()
    assert 'iifname "iso0"' not in ruleset and '"iso0"' not in ruleset, "iso0's isolation went with its last user"
    assert 'iifname "keep0"' in ruleset, "keep0 still has a container"
    node.delete(other, b)
    assert node.settled(fresh) == fresh
