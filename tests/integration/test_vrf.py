"""pycni's vrf plugin in real namespaces, held to Go's vrf — where the kernel has VRF support.

This machine's kernel has no ``vrf`` module: the fixture tries to create a
VRF in a scratch namespace and skips with the kernel's answer. The netlink
requests the plugin makes are unit-tested against a recording fake
(``tests/unit/test_tuning_sbr_vrf.py``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_bridge import Node, with_data_dir
from tests.support.cni import Call, exec_plugin, normalize
from tests.support.netns import NetnsPool, run

BRIDGE: dict[str, Any] = {
    "cniVersion": "1.0.0",
    "name": "vrfnet",
    "type": "bridge",
    "bridge": "vrfbr0",
    "isDefaultGateway": True,
    "ipam": {"type": "host-local", "subnet": "10.43.0.0/24", "routes": [{"dst": "10.99.0.0/16"}]},
}


@pytest.fixture(scope="module")
def vrf_kernel() -> None:
    """Skip unless a VRF can be created (tried in a namespace of its own)."""
    pool = NetnsPool("pyt-vrfprobe")
    try:
        scratch = pool.new("probe")
        probe = run("ip", "link", "add", "vrfprobe", "type", "vrf", "table", "10", netns=scratch, check=False)
    finally:
        pool.cleanup()
    if probe.returncode != 0:
        pytest.skip(f"kernel lacks VRF support (ip link add type vrf: {probe.stderr.strip()})")


class Setup:
    def __init__(self, node: Node, tmp: Path) -> None:
        self.node = node
        self.bridge = with_data_dir(BRIDGE, tmp / "ipam")

    def attach(self, ifname: str = "eth0", ctr: str | None = None) -> tuple[str, dict[str, Any]]:
        ctr = ctr or self.node.container()
        added = self.node.call("ADD", self.bridge, ctr, ifname=ifname)
        assert added.rc == 0, added.out
        return ctr, added.out

    def vrf(self, command: str, ctr: str, prev: dict[str, Any] | None, ifname: str = "eth0", **keys: Any) -> Call:
        config: dict[str, Any] = {"cniVersion": "1.0.0", "name": "vrfnet", "type": "vrf", "vrfname": "blue", **keys}
        if prev is not None:
            config["prevResult"] = prev
        return exec_plugin(
            os.path.join(self.node.plugin_dir, "vrf"),
            command,
            config,
            netns=self.node.pool.path(ctr),
            cni_path=self.node.plugin_dir,
            ifname=ifname,
            node=self.node.name,
        )


def vrf_state(ctr: str) -> dict[str, Any]:
    links = json.loads(run("ip", "-j", "-d", "link", "show", netns=ctr).stdout)
    vrfs = {
        i["ifname"]: i["linkinfo"]["info_data"]["table"]
        for i in links
        if i.get("linkinfo", {}).get("info_kind") == "vrf"
    }
    masters = {i["ifname"]: i.get("master", "") for i in links}
    return {"vrfs": vrfs, "masters": masters}


@pytest.fixture
def ours(vrf_kernel: None, netns: NetnsPool, pycni_plugin_dir: str, tmp_path: Path) -> Setup:
    return Setup(Node(netns, pycni_plugin_dir, tmp_path / "ours"), tmp_path / "ours")


@pytest.fixture
def go(vrf_kernel: None, netns: NetnsPool, go_plugin_dir: str, tmp_path: Path) -> Setup:
    return Setup(Node(netns, go_plugin_dir, tmp_path / "go", "gonode"), tmp_path / "go")


def test_enslaves_and_moves_routes_like_go(ours: Setup, go: Setup) -> None:
    ctr, prev = ours.attach()
    go_ctr, go_prev = go.attach()
    added, go_added = ours.vrf("ADD", ctr, prev), go.vrf("ADD", go_ctr, go_prev)
    assert added.rc == 0, added.out
    assert go_added.rc == 0, go_added.out
    assert normalize(added.out) == normalize(go_added.out)
    assert vrf_state(ctr) == vrf_state(go_ctr)
    assert vrf_state(ctr)["masters"]["eth0"] == "blue"
    table = run("ip", "route", "show", "vrf", "blue", netns=ctr).stdout
    assert "default via 10.43.0.1 dev eth0" in table and "10.99.0.0/16 via 10.43.0.1 dev eth0" in table
    assert ours.vrf("CHECK", ctr, added.out).rc == 0
    assert ours.vrf("DEL", ctr, None).rc == 0
    assert vrf_state(ctr)["vrfs"] == {}, "the last member's DEL deletes the VRF"
    assert ours.vrf("DEL", ctr, None).rc == 0, "DEL again is fine"
    assert go.vrf("DEL", go_ctr, None).rc == 0


def test_second_member_keeps_the_vrf_and_tables_conflict(ours: Setup) -> None:
    ctr, prev = ours.attach()
    _, prev2 = ours.attach("net1", ctr)
    assert ours.vrf("ADD", ctr, prev, table=1001).rc == 0
    conflict = ours.vrf("ADD", ctr, prev2, "net1", table=1002)
    assert conflict.rc == 1 and "already exist with different routing table 1001" in conflict.error["msg"]
    assert ours.vrf("ADD", ctr, prev2, "net1", table=1001).rc == 0
    assert vrf_state(ctr)["vrfs"] == {"blue": 1001}
    assert ours.vrf("DEL", ctr, None).rc == 0
    assert vrf_state(ctr)["vrfs"] == {"blue": 1001}, "net1 is still a member"
    assert ours.vrf("DEL", ctr, None, "net1").rc == 0
    assert vrf_state(ctr)["vrfs"] == {}


def test_bad_input_and_missing_namespace(ours: Setup) -> None:
    ctr, prev = ours.attach()
    nameless = ours.vrf("ADD", ctr, prev, vrfname="")
    assert nameless.rc == 1 and nameless.error["code"] == 7
    assert nameless.error["msg"] == "configuration is expected to have a valid vrf name"
    unchained = ours.vrf("ADD", ctr, None)
    assert unchained.rc == 1 and unchained.error["msg"] == "missing prevResult from earlier plugin"
    assert vrf_state(ctr)["vrfs"] == {}
    run("ip", "netns", "del", ctr)
    assert ours.vrf("DEL", ctr, None).rc == 0
