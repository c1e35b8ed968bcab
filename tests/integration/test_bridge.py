"""pycni's bridge plugin in real namespaces, held to the Go reference plugin.

Each test makes a 'node' namespace (the host) and container namespaces, so
the machine's own network is never touched. Results are compared with the Go
bridge plugin's for the same config, MACs and veth names blanked.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pycni.spec import ALL_VERSIONS
from tests.support.cni import Call, exec_plugin, normalize
from tests.support.netns import NetnsPool, run
from tests.support.seed import case1

# The seed article's Case 1 config, verbatim.
SEED_CASE1: dict[str, Any] = case1()
HOST_LOCAL_DEFAULT = Path("/var/lib/cni/networks")


class Node:
    """A node namespace with containers, running one set of plugins."""

    def __init__(self, pool: NetnsPool, plugin_dir: str, data_dir: Path, label: str = "node") -> None:
        self.pool = pool
        self.name = pool.new(label)
        self.plugin_dir = plugin_dir
        self.data_dir = data_dir

    def container(self) -> str:
        return self.pool.new("ctr", lo_up=True)

    def call(
        self, command: str, config: dict[str, Any], ctr: str, cid: str = "", ifname: str = "eth0", **kw: Any
    ) -> Call:
        return exec_plugin(
            os.path.join(self.plugin_dir, config.get("type", "bridge")),
            command,
            config,
            netns=self.pool.path(ctr),
            cni_path=self.plugin_dir,
            container_id=cid or f"cid-{ctr}",
            ifname=ifname,
            node=self.name,
            **kw,
        )

    def veths(self) -> list[str]:
        out = run("ip", "-o", "link", "show", "type", "veth", netns=self.name).stdout
        return [line.split(": ")[1].split("@")[0] for line in out.splitlines()]

    def nft(self) -> str:
        return run("nft", "list", "ruleset", netns=self.name).stdout

    def ip_files(self, network: str) -> list[str]:
        directory = self.data_dir / network
        if not directory.exists():
            return []
        return sorted(n for n in os.listdir(directory) if n != "lock" and not n.startswith("last_reserved_ip"))

    def assert_clean(self, network: str) -> None:
        assert self.veths() == [], "DEL left a veth"
        assert self.ip_files(network) == [], "DEL left an address reserved"
        ruleset = self.nft()
        assert ", if: " not in ruleset and "id: " not in ruleset, "DEL left a rule of the attachment"
        assert "cni-br-iface" not in ruleset, "DEL left a spoof-check chain"


def with_data_dir(config: dict[str, Any], data_dir: Path) -> dict[str, Any]:
    return {**config, "ipam": {**config["ipam"], "dataDir": str(data_dir)}}


def curl(netns: str, url: str) -> str:
    proc = run("curl", "-sS", "-m", "3", url, netns=netns, check=False)
    for _ in range(20):
        if proc.returncode == 0:
            break
        time.sleep(0.1)
        proc = run("curl", "-sS", "-m", "3", url, netns=netns, check=False)
    assert proc.returncode == 0, f"{url} from {netns}: {proc.stderr}"
    return proc.stdout


@pytest.fixture
def seed_data_dir() -> Iterator[Path]:
    """Case 1 runs verbatim, so host-local uses its default dir; remove what the test made there."""
    network_dir = HOST_LOCAL_DEFAULT / "mynet"
    existed = network_dir.exists()
    yield HOST_LOCAL_DEFAULT
    if not existed:
        shutil.rmtree(network_dir, ignore_errors=True)


@pytest.fixture
def ours(netns: NetnsPool, pycni_plugin_dir: str, tmp_path: Path) -> Node:
    if not os.path.exists(os.path.join(pycni_plugin_dir, "host-local")):
        pytest.skip("pycni host-local is not installed yet")
    return Node(netns, pycni_plugin_dir, tmp_path / "ours")


@pytest.fixture
def go(netns: NetnsPool, go_plugin_dir: str, tmp_path: Path) -> Node:
    return Node(netns, go_plugin_dir, tmp_path / "go", "gonode")


class TestSeedCase1:
    def test_case1_verbatim(self, ours: Node, go: Node, seed_data_dir: Path, tmp_path: Path) -> None:
        ours.data_dir = seed_data_dir
        ctr1, ctr2 = ours.container(), ours.container()
        www = tmp_path / "www"
        www.mkdir()
        (www / "index.html").write_text("seed-case-1\n")
        run("busybox", "httpd", "-p", "80", "-h", str(www), netns=ctr1)

        first = ours.call("ADD", SEED_CASE1, ctr1)
        assert first.rc == 0, first.out
        second = ours.call("ADD", SEED_CASE1, ctr2)
        assert second.rc == 0, second.out
        go_ctr = go.container()
        go_result = go.call("ADD", with_data_dir(SEED_CASE1, go.data_dir), go_ctr)
        assert go_result.rc == 0, go_result.out
        assert normalize(first.out) == normalize(go_result.out)
        assert first.out["ips"][0]["address"] == "10.10.0.2/16"
        assert second.out["ips"][0]["address"] == "10.10.0.3/16"

        assert curl(ours.name, "http://10.10.0.2/") == "seed-case-1\n", "the host reaches the container"
        assert curl(ctr2, "http://10.10.0.2/") == "seed-case-1\n", "containers reach each other"
        assert ours.nft().count("ip saddr 10.10.0.0/16 ip daddr != 10.10.0.0/16 masquerade") == 1, (
            "one masquerade rule for the network, however many containers"
        )
        assert ours.call("CHECK", SEED_CASE1 | {"prevResult": first.out}, ctr1).rc == 0

        for ctr in (ctr1, ctr2):
            deleted = ours.call("DEL", SEED_CASE1 | {"prevResult": first.out}, ctr)
            assert deleted.rc == 0, deleted.out
        ours.assert_clean("mynet")
        assert ours.call("DEL", SEED_CASE1, ctr1).rc == 0, "DEL is idempotent"
        assert go.call("DEL", with_data_dir(SEED_CASE1, go.data_dir), go_ctr).rc == 0

    def test_del_after_container_is_gone(self, ours: Node, netns: NetnsPool) -> None:
        config = with_data_dir(SEED_CASE1, ours.data_dir)
        ctr = ours.container()
        assert ours.call("ADD", config, ctr).rc == 0
        run("ip", "netns", "del", ctr)
        netns.names.remove(ctr)
        deleted = ours.call("DEL", config, ctr)
        assert deleted.rc == 0, deleted.out
        assert not os.path.exists(netns.path(ctr)), "DEL must not create the namespace"
        ours.assert_clean("mynet")


class TestVersions:
    @pytest.mark.parametrize("version", ALL_VERSIONS)
    def test_add_check_del_same_shape_as_go(self, version: str, ours: Node, go: Node) -> None:
        config = {**SEED_CASE1, "cniVersion": version}
        ctr, go_ctr = ours.container(), go.container()
        added = ours.call("ADD", with_data_dir(config, ours.data_dir), ctr)
        assert added.rc == 0, added.out
        assert added.out["cniVersion"] == version
        if version != "1.1.0":  # the Debian Go plugins stop at 1.0.0
            go_added = go.call("ADD", with_data_dir(config, go.data_dir), go_ctr)
            assert go_added.rc == 0, go_added.out
            assert normalize(added.out) == normalize(go_added.out)
            go.call("DEL", with_data_dir(config, go.data_dir), go_ctr)
        with_prev = with_data_dir(config, ours.data_dir) | {"prevResult": added.out}
        if version >= "0.4.0":
            checked = ours.call("CHECK", with_prev, ctr)
            assert checked.rc == 0, checked.out
        assert ours.call("DEL", with_prev, ctr).rc == 0
        ours.assert_clean("mynet")


class TestOptions:
    def test_l2_only_mtu_promisc_isolation(self, ours: Node) -> None:
        config = {
            "cniVersion": "1.0.0",
            "name": "l2net",
            "type": "bridge",
            "bridge": "l2br",
            "mtu": 1400,
            "promiscMode": True,
            "portIsolation": True,
            "ipam": {},
        }
        ctr = ours.container()
        added = ours.call("ADD", config, ctr)
        assert added.rc == 0, added.out
        assert "ips" not in added.out
        bridge = run("ip", "-d", "link", "show", "l2br", netns=ours.name).stdout
        assert "mtu 1400" in bridge and "PROMISC" in bridge
        host_veth = added.out["interfaces"][1]["name"]
        port = run("ip", "-d", "link", "show", host_veth, netns=ours.name).stdout
        assert "isolated on" in port and "master l2br" in port
        assert "mtu 1400" in run("ip", "link", "show", "eth0", netns=ctr).stdout
        assert ours.call("DEL", config, ctr).rc == 0
        assert ours.veths() == []

    def test_mac_from_runtime_config_and_spoof_check(self, ours: Node) -> None:
        config = with_data_dir(SEED_CASE1, ours.data_dir) | {
            "macspoofchk": True,
            "runtimeConfig": {"mac": "02:11:22:33:44:55"},
        }
        ctr = ours.container()
        added = ours.call("ADD", config, ctr)
        assert added.rc == 0, added.out
        assert added.out["interfaces"][2]["mac"] == "02:11:22:33:44:55"
        ruleset = ours.nft()
        assert "ether saddr 02:11:22:33:44:55 return" in ruleset
        assert f"cni-br-iface-cid-{ctr}-eth0" in ruleset
        # A second container joins the existing base chain; its ADD only adds its own chains and rules.
        second = ours.container()
        config2 = config | {"runtimeConfig": {"mac": "02:11:22:33:44:66"}}
        assert ours.call("ADD", config2, second).rc == 0
        ruleset = ours.nft()
        assert ruleset.count("hook prerouting") == 1
        assert "ether saddr 02:11:22:33:44:66 return" in ruleset and f"cni-br-iface-cid-{second}-eth0" in ruleset
        assert ours.call("DEL", config, ctr).rc == 0
        ruleset = ours.nft()
        assert f"cni-br-iface-cid-{ctr}-" not in ruleset and f"cni-br-iface-cid-{second}-eth0" in ruleset
        assert ours.call("DEL", config2, second).rc == 0
        assert "cni-br-iface" not in ours.nft()
        assert "table bridge nat" not in ours.nft(), "the last DEL drops the spoof-check table"
        ours.assert_clean("mynet")

    def test_l2_only_cannot_be_printed_before_0_3_0(self, ours: Node) -> None:
        """A result without IPs has no 0.2.0 form: the ADD fails and rolls back the veth pair."""
        config = {"cniVersion": "0.2.0", "name": "l2old", "type": "bridge", "bridge": "l2old"}
        ctr = ours.container()
        failed = ours.call("ADD", config, ctr)
        assert failed.rc == 1
        assert failed.error["msg"] == "cannot convert: no valid IP addresses"
        assert ours.veths() == [], "the host end of the veth was left behind"
        assert run("ip", "link", "show", "eth0", netns=ctr, check=False).returncode != 0

    def test_force_address(self, ours: Node) -> None:
        run("ip", "link", "add", "mynet0", "type", "bridge", netns=ours.name)
        run("ip", "addr", "add", "10.99.0.1/24", "dev", "mynet0", netns=ours.name)
        config = with_data_dir(SEED_CASE1, ours.data_dir)
        ctr = ours.container()
        refused = ours.call("ADD", config, ctr)
        assert refused.rc == 1
        assert refused.error["msg"] == '"mynet0" already has an IP address different from 10.10.0.1/16'
        ours.assert_clean("mynet")
        forced = ours.call("ADD", config | {"forceAddress": True}, ctr)
        assert forced.rc == 0, forced.out
        addrs = run("ip", "-4", "addr", "show", "mynet0", netns=ours.name).stdout
        assert "10.10.0.1/16" in addrs and "10.99.0.1" not in addrs
        assert ours.call("DEL", config, ctr).rc == 0

    def test_vlan_needs_kernel_vlan_filtering(self, ours: Node) -> None:
        probe = run(
            "ip", "link", "add", "vfprobe", "type", "bridge", "vlan_filtering", "1", netns=ours.name, check=False
        )
        if probe.returncode != 0:
            pytest.skip(f"this kernel has no bridge VLAN filtering: {probe.stderr.strip()}")
        config = with_data_dir(SEED_CASE1, ours.data_dir) | {"vlan": 100}
        ctr = ours.container()
        added = ours.call("ADD", config, ctr)
        assert added.rc == 0, added.out
        host_veth = added.out["interfaces"][1]["name"]
        assert "100 PVID Egress Untagged" in run("bridge", "vlan", "show", "dev", host_veth, netns=ours.name).stdout
        assert ours.call("DEL", config, ctr).rc == 0


class TestBadInput:
    @pytest.mark.parametrize(
        ("change", "code", "message"),
        [
            ({"isGateway": "true"}, 7, "isGateway: expected true or false, got string 'true'"),
            ({"mtu": "1500"}, 7, "mtu: expected an integer"),
            ({"bridge": "a-very-long-bridge-name"}, 7, "is 23 bytes long, at most 15 are allowed"),
            ({"vlan": 5000}, 7, "invalid VLAN ID 5000"),
            ({"hairpinMode": True, "promiscMode": True}, 7, "cannot set hairpin mode and promiscuous mode"),
            ({"vlanTrunk": [{"minID": 10}]}, 7, "maxID is missing"),
            ({"ipam": {"type": "host-local"}}, 7, "no IP ranges specified"),
            ({"ipam": {"type": "no-such-ipam"}}, 7, "failed to find plugin 'no-such-ipam'"),
            ({"ipam": {"type": "host-local", "subnet": "10.10.0.0/30"}}, None, None),
        ],
    )
    def test_rejected_without_leftovers(
        self, change: dict[str, Any], code: int | None, message: str | None, ours: Node
    ) -> None:
        config = with_data_dir(SEED_CASE1, ours.data_dir) | change
        if "ipam" in change:
            config["ipam"] = {**change["ipam"], "dataDir": str(ours.data_dir)}
        ctr = ours.container()
        if code is None:  # a /30 has one address besides the gateway: the second ADD exhausts it
            assert ours.call("ADD", config, ctr).rc == 0
            other = ours.container()
            failed = ours.call("ADD", config, other)
            assert failed.rc == 1
            assert "no IP addresses available" in failed.error["msg"]
            assert len(ours.veths()) == 1, "the failed ADD removed its veth"
            assert run("ip", "-o", "link", "show", "eth0", netns=other, check=False).returncode != 0
            assert ours.call("DEL", config, ctr).rc == 0
            ours.assert_clean("mynet")
            return
        failed = ours.call("ADD", config, ctr)
        assert failed.rc == 1
        assert failed.error["code"] == code
        assert message is not None and message in failed.error["msg"]
        ours.assert_clean("mynet")
        assert run("ip", "-o", "link", "show", "eth0", netns=ctr, check=False).returncode != 0

    def test_existing_interface_in_container(self, ours: Node) -> None:
        config = with_data_dir(SEED_CASE1, ours.data_dir)
        ctr = ours.container()
        run("ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0peer", netns=ctr)
        failed = ours.call("ADD", config, ctr)
        assert failed.rc == 1
        assert failed.error["msg"] == "container veth name provided (eth0) already exists"
        ours.assert_clean("mynet")

    def test_same_ifname_twice(self, ours: Node) -> None:
        config = with_data_dir(SEED_CASE1, ours.data_dir)
        ctr = ours.container()
        assert ours.call("ADD", config, ctr).rc == 0
        again = ours.call("ADD", config, ctr, cid="another-container")
        assert again.rc == 1
        assert "already exists" in again.error["msg"]
        assert len(ours.veths()) == 1
        assert len(ours.ip_files("mynet")) == 1
        assert ours.call("DEL", config, ctr).rc == 0
        ours.assert_clean("mynet")


class TestGcStatus:
    def test_gc_releases_stale_attachments_and_the_last_del_drops_the_network_rule(self, ours: Node) -> None:
        config = with_data_dir(SEED_CASE1, ours.data_dir) | {"cniVersion": "1.1.0"}
        keep, stale = ours.container(), ours.container()
        assert ours.call("ADD", config, keep).rc == 0
        assert ours.call("ADD", config, stale).rc == 0
        run("ip", "netns", "del", stale)
        ours.pool.names.remove(stale)
        valid = {"cni.dev/valid-attachments": [{"containerID": f"cid-{keep}", "ifname": "eth0"}]}
        gc = ours.call("GC", config | valid, keep)
        assert gc.rc == 0, gc.out
        assert ours.ip_files("mynet") == ["10.10.0.2"]
        assert "10.10.0.0/16 masquerade" in ours.nft(), "a valid attachment keeps the network's rule"
        assert ours.call("STATUS", config, keep).rc == 0
        assert ours.call("DEL", config, keep).rc == 0
        ours.assert_clean("mynet")
        assert "cni_plugins_masquerade" not in ours.nft(), "the last DEL drops the network's rule, and the table"
        nothing_valid = ours.call("GC", config | {"cni.dev/valid-attachments": []}, keep)
        assert nothing_valid.rc == 0, nothing_valid.out

    def test_check_notices_a_missing_masquerade_rule(self, ours: Node) -> None:
        config = with_data_dir(SEED_CASE1, ours.data_dir)
        ctr = ours.container()
        added = ours.call("ADD", config, ctr)
        assert added.rc == 0
        run("nft", "flush", "chain", "inet", "cni_plugins_masquerade", "masq_checks", netns=ours.name)
        checked = ours.call("CHECK", config | {"prevResult": added.out}, ctr)
        assert checked.rc == 1
        assert "no masquerade rule covers 10.10.0.2/16" in checked.error["msg"]
        assert ours.call("DEL", config, ctr).rc == 0


def test_result_json_is_a_valid_cni_result(ours: Node) -> None:
    config = with_data_dir(SEED_CASE1, ours.data_dir)
    ctr = ours.container()
    added = ours.call("ADD", config, ctr)
    assert added.rc == 0
    assert json.loads(json.dumps(added.out))["interfaces"][2]["sandbox"] == ours.pool.path(ctr)
    assert ours.call("DEL", config, ctr).rc == 0
