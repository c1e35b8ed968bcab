"""firewall on a live kernel: allow rules per container, same-bridge isolation, clean removal."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from pycni.cli.main import container_id_for
from tests.support.netns import NetnsPool, run


def network(name: str, bridge: str, subnet: str, data_dir: Path, **firewall: Any) -> dict[str, Any]:
    return {
        "cniVersion": "1.1.0",
        "name": name,
        "plugins": [
            {
                "type": "bridge",
                "bridge": bridge,
                "isDefaultGateway": True,
                "ipam": {"type": "host-local", "subnet": subnet, "dataDir": str(data_dir)},
            },
            {"type": "firewall", **firewall},
        ],
    }


class Node:
    def __init__(self, pool: NetnsPool, plugin_dir: str, pycni_bin: str, tmp: Path) -> None:
        self.pool, self.pycni_bin = pool, pycni_bin
        self.name = pool.new("fwnode")
        self.conf_dir = tmp / "net.d"
        self.conf_dir.mkdir()
        self.data_dir = tmp / "ipam"
        self.env = {
            **os.environ,
            "CNI_PATH": plugin_dir,
            "NETCONFPATH": str(self.conf_dir),
            "PYCNI_CACHE_DIR": str(tmp / "cache"),
        }

    def define(self, config: dict[str, Any]) -> None:
        (self.conf_dir / f"{config['name']}.conflist").write_text(json.dumps(config))

    def pycni(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ip", "netns", "exec", self.name, self.pycni_bin, *args],
            env=self.env,
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )

    def ruleset(self) -> str:
        return run("nft", "list", "ruleset", netns=self.name).stdout


def reaches(src: str, ip: str, attempts: int = 10) -> bool:
    for _ in range(attempts):
        if run("busybox", "ping", "-c1", "-W1", ip, netns=src, check=False).returncode == 0:
            return True
        time.sleep(0.1)
    return False


@pytest.fixture
def node(netns: NetnsPool, pycni_plugin_dir: str, pycni_bin: str, tmp_path: Path) -> Node:
    return Node(netns, pycni_plugin_dir, pycni_bin, tmp_path)


def test_allow_rules_follow_the_container(node: Node) -> None:
    node.define(network("fwopen", "fwbr0", "10.50.0.0/24", node.data_dir))
    ctr = node.pool.new("fwctr")
    added = node.pycni("add", "fwopen", node.pool.path(ctr))
    assert added.returncode == 0, added.stderr
    ruleset = node.ruleset()
    cid = container_id_for(node.pool.path(ctr))
    assert '10.50.0.2 comment "' in ruleset and f":{cid}:eth0" in ruleset
    assert "ip saddr @allow4 accept" in ruleset
    assert node.pycni("check", "fwopen", node.pool.path(ctr)).returncode == 0
    assert node.pycni("del", "fwopen", node.pool.path(ctr)).returncode == 0
    assert "pycni_firewall" not in node.ruleset(), "the last DEL drops the table"


def test_same_bridge_policy_isolates_networks(node: Node) -> None:
    node.define(network("neta", "fwbra", "10.51.0.0/24", node.data_dir, ingressPolicy="same-bridge"))
    node.define(network("netb", "fwbrb", "10.52.0.0/24", node.data_dir, ingressPolicy="same-bridge"))
    node.define(network("netc", "fwbrc", "10.53.0.0/24", node.data_dir))
    a, b, c = node.pool.new("a"), node.pool.new("b"), node.pool.new("c")
    for net, ctr in (("neta", a), ("netb", b), ("netc", c)):
        added = node.pycni("add", net, node.pool.path(ctr))
        assert added.returncode == 0, added.stderr
    run("sysctl", "-qw", "net.ipv4.ip_forward=1", netns=node.name)
    assert reaches(a, "10.51.0.1"), "the node is reachable"
    assert not reaches(a, "10.52.0.2", attempts=2), "isolated network A cannot reach isolated network B"
    assert not reaches(b, "10.51.0.2", attempts=2), "nor B reach A"
    assert reaches(c, "10.51.0.2"), "an open network still forwards to A (as the reference)"
    assert 'iifname "fwbra" oifname != "fwbra" oifname @isolated_bridges drop' in node.ruleset()
    for net, ctr in (("neta", a), ("netb", b), ("netc", c)):
        assert node.pycni("del", net, node.pool.path(ctr)).returncode == 0
    assert "pycni_firewall" not in node.ruleset()


def test_gc_and_bad_config(node: Node) -> None:
    node.define(network("fwgc", "fwbr1", "10.54.0.0/24", node.data_dir))
    keep, stale = node.pool.new("keep"), node.pool.new("stale")
    for ctr in (keep, stale):
        assert node.pycni("add", "fwgc", node.pool.path(ctr)).returncode == 0
    gc = node.pycni("gc", "fwgc", "--keep", f"{container_id_for(node.pool.path(keep))}/eth0")
    assert gc.returncode == 0, gc.stderr
    ruleset = node.ruleset()
    assert "10.54.0.2" in ruleset and "10.54.0.3" not in ruleset
    assert node.pycni("del", "fwgc", node.pool.path(keep)).returncode == 0

    node.define(network("fwbad", "fwbr2", "10.55.0.0/24", node.data_dir, ingressPolicy="closed"))
    ctr = node.pool.new("bad")
    failed = node.pycni("add", "fwbad", node.pool.path(ctr))
    assert failed.returncode == 1
    assert "ingressPolicy must be one of open, same-bridge, isolated, not 'closed'" in failed.stderr
    assert run("ip", "-o", "link", "show", "type", "veth", netns=node.name).stdout == "", "rolled back"
    node.define(network("fwbad", "fwbr2", "10.55.0.0/24", node.data_dir, backend="firewalld"))
    failed = node.pycni("add", "fwbad", node.pool.path(ctr))
    assert failed.returncode == 1 and "(CNI error code 2)" in failed.stderr
