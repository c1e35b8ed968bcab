"""pycni's macvlan plugin in real namespaces, held to the Go reference plugin.

Each test makes a 'node' namespace whose master is a veth pair (``m0`` and
its peer, both up, so the macvlans have carrier) and container namespaces;
the machine's own network is never touched. Results are compared with the
Go macvlan plugin's for the same config, MACs and sandboxes blanked.

The helpers here (:class:`Node`, the ``ours``/``go`` fixtures) are shared
with the host-device/tap and ipvlan/vlan/dummy tests.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pycni.spec import ALL_VERSIONS
from tests.support.cni import Call, exec_plugin, normalize
from tests.support.netns import NetnsPool, run

NODE_LINKS = {"lo", "m0", "m0peer"}
SUBNET = "10.40.0.0/24"  # pods; never the machine's 192.0.2.0/24


class Node:
    """A node namespace with a master link ``m0``, running one set of plugins."""

    def __init__(self, pool: NetnsPool, plugin_dir: str, data_dir: Path, label: str = "node") -> None:
        self.pool = pool
        self.name = pool.new(label)
        self.plugin_dir = plugin_dir
        self.data_dir = data_dir
        run("ip", "link", "add", "m0", "type", "veth", "peer", "name", "m0peer", netns=self.name)
        for name in ("m0", "m0peer"):
            run("ip", "link", "set", name, "up", netns=self.name)

    def container(self) -> str:
        return self.pool.new("ctr", lo_up=True)

    def call(
        self, command: str, config: dict[str, Any], ctr: str, cid: str = "", ifname: str = "eth0", **kw: Any
    ) -> Call:
        """Run the plugin in the node; ``plugin_dir`` runs another implementation here (with its IPAM)."""
        plugin_dir = kw.pop("plugin_dir", self.plugin_dir)
        return exec_plugin(
            os.path.join(plugin_dir, config["type"]),
            command,
            config,
            netns=kw.pop("netns_path", self.pool.path(ctr)),
            cni_path=plugin_dir,
            container_id=cid or f"cid-{ctr}",
            ifname=ifname,
            node=self.name,
            **kw,
        )

    def conf(self, plugin_type: str, version: str = "1.0.0", ipam: bool = True, **keys: Any) -> dict[str, Any]:
        """A config for this node's network ``testnet``; host-local keeps its files in the test's dir."""
        config: dict[str, Any] = {"cniVersion": version, "name": "testnet", "type": plugin_type, **keys}
        if ipam:
            config["ipam"] = {"type": "host-local", "subnet": SUBNET, "dataDir": str(self.data_dir)}
        elif "ipam" not in keys:
            config["ipam"] = {}
        return config

    def ip_files(self, network: str = "testnet") -> list[str]:
        directory = self.data_dir / network
        if not directory.exists():
            return []
        return sorted(n for n in os.listdir(directory) if n != "lock" and not n.startswith("last_reserved_ip"))

    def assert_clean(self, *containers: str, node_links: set[str] = NODE_LINKS) -> None:
        """Nothing left: the node has only what the test made, the containers only ``lo``, no address held."""
        assert set(links(self.name)) == node_links, "a link was left in (or taken from) the node"
        for ctr in containers:
            assert links(ctr) == ["lo"], f"a link was left in {ctr}"
        assert self.ip_files() == [], "an address is still reserved"


def links(netns: str) -> list[str]:
    out = run("ip", "-o", "link", "show", netns=netns).stdout
    return [line.split(": ")[1].split("@")[0] for line in out.splitlines()]


def link_json(netns: str, name: str) -> dict[str, Any]:
    out = run("ip", "-d", "-j", "link", "show", name, netns=netns).stdout
    data: dict[str, Any] = json.loads(out)[0]
    return data


def curl(netns: str, url: str) -> str:
    proc = run("curl", "-sS", "-m", "3", url, netns=netns, check=False)
    for _ in range(20):
        if proc.returncode == 0:
            break
        time.sleep(0.1)
        proc = run("curl", "-sS", "-m", "3", url, netns=netns, check=False)
    assert proc.returncode == 0, f"{url} from {netns}: {proc.stderr}"
    return proc.stdout


def ping(netns: str, address: str) -> None:
    proc = run("busybox", "ping", "-c", "1", "-W", "2", address, netns=netns, check=False)
    assert proc.returncode == 0, f"{netns} cannot reach {address}: {proc.stdout}{proc.stderr}"


@pytest.fixture
def ours(netns: NetnsPool, pycni_plugin_dir: str, tmp_path: Path) -> Node:
    if not os.path.exists(os.path.join(pycni_plugin_dir, "host-local")):
        pytest.skip("pycni host-local is not installed yet")
    return Node(netns, pycni_plugin_dir, tmp_path / "ours")


@pytest.fixture
def go(netns: NetnsPool, go_plugin_dir: str, tmp_path: Path) -> Node:
    return Node(netns, go_plugin_dir, tmp_path / "go", "gonode")


@pytest.fixture
def www(tmp_path: Path) -> Iterator[Path]:
    root = tmp_path / "www"
    root.mkdir()
    (root / "index.html").write_text("macvlan-seed\n")
    yield root


class TestSeedScenario:
    def test_two_containers_on_one_master_reach_each_other(self, ours: Node, go: Node, www: Path) -> None:
        config = ours.conf("macvlan", "0.4.0", master="m0", mode="bridge")
        ctr1, ctr2 = ours.container(), ours.container()
        run("busybox", "httpd", "-p", "80", "-h", str(www), netns=ctr1)

        first = ours.call("ADD", config, ctr1)
        assert first.rc == 0, first.out
        second = ours.call("ADD", config, ctr2)
        assert second.rc == 0, second.out
        assert first.out["ips"][0]["address"] == "10.40.0.2/24"
        assert second.out["ips"][0]["address"] == "10.40.0.3/24"
        assert first.out["interfaces"][0]["mac"] != second.out["interfaces"][0]["mac"]

        ping(ctr2, "10.40.0.2")
        assert curl(ctr2, "http://10.40.0.2/") == "macvlan-seed\n", "containers on one master reach each other"
        info = link_json(ctr1, "eth0")
        assert info["linkinfo"]["info_kind"] == "macvlan" and info["linkinfo"]["info_data"]["mode"] == "bridge"
        assert info["link_index"] == link_json(ours.name, "m0")["ifindex"], "the master is m0 of the node"

        go_ctr = go.container()
        go_added = go.call("ADD", go.conf("macvlan", "0.4.0", master="m0", mode="bridge"), go_ctr)
        assert go_added.rc == 0, go_added.out
        assert normalize(first.out) == normalize(go_added.out)

        assert ours.call("CHECK", config | {"prevResult": first.out}, ctr1).rc == 0
        for ctr in (ctr1, ctr2):
            deleted = ours.call("DEL", config, ctr)
            assert deleted.rc == 0, deleted.out
        ours.assert_clean(ctr1, ctr2)
        assert ours.call("DEL", config, ctr1).rc == 0, "DEL is idempotent"
        assert go.call("DEL", go.conf("macvlan", "0.4.0", master="m0", mode="bridge"), go_ctr).rc == 0

    def test_go_and_ours_share_the_address_store_and_the_wire(self, ours: Node, go_plugin_dir: str) -> None:
        """Go's macvlan on the same node and data dir: next address, the containers talk, each cleans up the other."""
        config = ours.conf("macvlan", master="m0")
        ctr1, ctr2 = ours.container(), ours.container()
        added = ours.call("ADD", config, ctr1)
        assert added.rc == 0, added.out
        go_added = ours.call("ADD", config, ctr2, plugin_dir=go_plugin_dir)
        assert go_added.rc == 0, go_added.out
        assert go_added.out["ips"][0]["address"] == "10.40.0.3/24"
        ping(ctr1, "10.40.0.3")
        go_checked = ours.call("CHECK", config | {"prevResult": added.out}, ctr1, plugin_dir=go_plugin_dir)
        assert go_checked.rc == 0, go_checked.out
        checked = ours.call("CHECK", config | {"prevResult": go_added.out}, ctr2)
        assert checked.rc == 0, checked.out
        assert ours.call("DEL", config, ctr1, plugin_dir=go_plugin_dir).rc == 0
        assert ours.call("DEL", config, ctr2).rc == 0
        ours.assert_clean(ctr1, ctr2)


class TestVersions:
    @pytest.mark.parametrize("version", ALL_VERSIONS)
    def test_same_result_as_go(self, version: str, ours: Node, go: Node) -> None:
        config = ours.conf("macvlan", version, master="m0")
        ctr, go_ctr = ours.container(), go.container()
        added = ours.call("ADD", config, ctr)
        assert added.rc == 0, added.out
        assert added.out["cniVersion"] == version
        if version != "1.1.0":  # the Debian Go plugins stop at 1.0.0
            go_config = go.conf("macvlan", version, master="m0")
            go_added = go.call("ADD", go_config, go_ctr)
            assert go_added.rc == 0, go_added.out
            assert normalize(added.out) == normalize(go_added.out)
            if version >= "0.4.0":
                checked_by_go = go.call("CHECK", go_config | {"prevResult": go_added.out}, go_ctr)
                assert checked_by_go.rc == 0, checked_by_go.out
            assert go.call("DEL", go_config, go_ctr).rc == 0
        if version >= "0.4.0":
            checked = ours.call("CHECK", config | {"prevResult": added.out}, ctr)
            assert checked.rc == 0, checked.out
        assert ours.call("DEL", config | {"prevResult": added.out}, ctr).rc == 0
        ours.assert_clean(ctr)

    @pytest.mark.parametrize("version", ["0.3.1", "1.0.0"])
    def test_l2_only_same_result_as_go(self, version: str, ours: Node, go: Node) -> None:
        config = ours.conf("macvlan", version, ipam=False, master="m0", dns={"nameservers": ["10.40.0.53"]})
        ctr, go_ctr = ours.container(), go.container()
        added = ours.call("ADD", config, ctr)
        assert added.rc == 0, added.out
        assert "ips" not in added.out and added.out["dns"] == {"nameservers": ["10.40.0.53"]}
        assert "UP" in link_json(ctr, "eth0")["flags"]
        go_added = go.call("ADD", go.conf("macvlan", version, ipam=False, master="m0", dns=config["dns"]), go_ctr)
        assert go_added.rc == 0, go_added.out
        assert normalize(added.out) == normalize(go_added.out)
        assert ours.call("DEL", config, ctr).rc == 0
        ours.assert_clean(ctr)

    def test_l2_only_cannot_be_printed_before_0_3_0(self, ours: Node) -> None:
        """A result without IPs has no 0.2.0 form: the ADD fails, and (unlike Go) leaves no link behind."""
        ctr = ours.container()
        failed = ours.call("ADD", ours.conf("macvlan", "0.2.0", ipam=False, master="m0"), ctr)
        assert failed.rc == 1
        assert failed.error["msg"] == "cannot convert: no valid IP addresses"
        ours.assert_clean(ctr)


class TestOptions:
    @pytest.mark.parametrize("mode", ["private", "vepa", "passthru"])
    def test_mode(self, mode: str, ours: Node) -> None:
        config = ours.conf("macvlan", master="m0", mode=mode)
        ctr = ours.container()
        added = ours.call("ADD", config, ctr)
        assert added.rc == 0, added.out
        assert link_json(ctr, "eth0")["linkinfo"]["info_data"]["mode"] == mode
        assert ours.call("CHECK", config | {"prevResult": added.out}, ctr).rc == 0
        wrong = ours.call("CHECK", config | {"mode": "bridge", "prevResult": added.out}, ctr)
        assert wrong.rc == 1
        assert wrong.error["msg"] == f"container macvlan mode {mode} does not match expected value: bridge"
        assert ours.call("DEL", config, ctr).rc == 0
        ours.assert_clean(ctr)

    def test_mtu_mac_bcqueuelen(self, ours: Node) -> None:
        config = ours.conf("macvlan", master="m0", mtu=1400, mac="02:40:00:00:00:11", bcqueuelen=300)
        ctr = ours.container()
        added = ours.call("ADD", config, ctr)
        assert added.rc == 0, added.out
        info = link_json(ctr, "eth0")
        assert info["mtu"] == 1400 and info["address"] == "02:40:00:00:00:11"
        assert info["linkinfo"]["info_data"]["bcqueuelen"] == 300
        assert added.out["interfaces"][0]["mac"] == "02:40:00:00:00:11"
        assert ours.call("DEL", config, ctr).rc == 0
        ours.assert_clean(ctr)

    def test_mac_precedence_runtime_config_over_cni_args_over_key(self, ours: Node) -> None:
        base = ours.conf("macvlan", master="m0", mac="02:40:00:00:00:01")
        ctr1, ctr2 = ours.container(), ours.container()
        from_args = ours.call("ADD", base, ctr1, cni_args="IgnoreUnknown=1;MAC=02:40:00:00:00:02")
        assert from_args.rc == 0, from_args.out
        assert from_args.out["interfaces"][0]["mac"] == "02:40:00:00:00:02"
        runtime = base | {"runtimeConfig": {"mac": "02:40:00:00:00:03"}}
        from_runtime = ours.call("ADD", runtime, ctr2, cni_args="IgnoreUnknown=1;MAC=02:40:00:00:00:02")
        assert from_runtime.rc == 0, from_runtime.out
        assert link_json(ctr2, "eth0")["address"] == "02:40:00:00:00:03"
        for ctr in (ctr1, ctr2):
            assert ours.call("DEL", base, ctr).rc == 0
        ours.assert_clean(ctr1, ctr2)

    def test_default_master_is_the_default_route_interface(self, ours: Node, go: Node) -> None:
        for node in (ours, go):
            run("ip", "addr", "add", "198.51.100.10/24", "dev", "m0", netns=node.name)
            run("ip", "route", "add", "default", "via", "198.51.100.1", "dev", "m0", netns=node.name)
        config = ours.conf("macvlan")
        ctr, go_ctr = ours.container(), go.container()
        added = ours.call("ADD", config, ctr)
        assert added.rc == 0, added.out
        assert link_json(ctr, "eth0")["link_index"] == link_json(ours.name, "m0")["ifindex"]
        go_added = go.call("ADD", go.conf("macvlan"), go_ctr)
        assert go_added.rc == 0, go_added.out
        assert normalize(added.out) == normalize(go_added.out)
        assert ours.call("DEL", config, ctr).rc == 0
        assert go.call("DEL", go.conf("macvlan"), go_ctr).rc == 0
        ours.assert_clean(ctr)

    def test_link_in_container(self, ours: Node) -> None:
        ctr = ours.container()
        run("ip", "link", "add", "net1", "type", "veth", "peer", "name", "net1peer", netns=ctr)
        for name in ("net1", "net1peer"):
            run("ip", "link", "set", name, "up", netns=ctr)
        config = ours.conf("macvlan", master="net1", linkInContainer=True, mtu=1500)
        added = ours.call("ADD", config, ctr)
        assert added.rc == 0, added.out
        assert link_json(ctr, "eth0")["link"] == "net1", "the master is in the container itself"
        assert ours.call("CHECK", config | {"prevResult": added.out}, ctr).rc == 0
        assert ours.call("DEL", config, ctr).rc == 0
        assert sorted(links(ctr)) == ["lo", "net1", "net1peer"]
        ours.assert_clean()


class TestDel:
    def test_del_after_container_is_gone(self, ours: Node, netns: NetnsPool) -> None:
        config = ours.conf("macvlan", master="m0")
        ctr = ours.container()
        assert ours.call("ADD", config, ctr).rc == 0
        run("ip", "netns", "del", ctr)
        netns.names.remove(ctr)
        deleted = ours.call("DEL", config, ctr)
        assert deleted.rc == 0, deleted.out
        assert not os.path.exists(netns.path(ctr)), "DEL must not create the namespace"
        ours.assert_clean()

    def test_del_without_netns_releases_the_address(self, ours: Node) -> None:
        config = ours.conf("macvlan", master="m0")
        ctr = ours.container()
        assert ours.call("ADD", config, ctr).rc == 0
        assert ours.call("DEL", config, ctr, netns_path="").rc == 0
        assert ours.ip_files() == []
        assert ours.call("DEL", config, ctr).rc == 0
        ours.assert_clean(ctr)

    def test_del_after_master_is_gone(self, ours: Node) -> None:
        config = ours.conf("macvlan", master="m0")
        ctr = ours.container()
        assert ours.call("ADD", config, ctr).rc == 0
        run("ip", "link", "del", "m0", netns=ours.name)  # the kernel removes the macvlan with it
        deleted = ours.call("DEL", config, ctr)
        assert deleted.rc == 0, deleted.out
        ours.assert_clean(ctr, node_links={"lo"})


class TestGcStatus:
    def test_gc_and_status_reach_ipam(self, ours: Node) -> None:
        config = ours.conf("macvlan", "1.1.0", master="m0")
        config["ipam"]["subnet"] = "10.40.0.0/29"  # .2 to .6: five addresses
        keep, stale = ours.container(), ours.container()
        assert ours.call("ADD", config, keep).rc == 0
        assert ours.call("ADD", config, stale).rc == 0
        assert ours.call("STATUS", config, keep).rc == 0
        valid = {"cni.dev/valid-attachments": [{"containerID": f"cid-{keep}", "ifname": "eth0"}]}
        gc = ours.call("GC", config | valid, keep)
        assert gc.rc == 0, gc.out
        assert ours.ip_files() == ["10.40.0.2"], "host-local dropped the stale reservation"
        assert ours.call("DEL", config, stale).rc == 0
        assert ours.call("DEL", config, keep).rc == 0
        ours.assert_clean(keep, stale)

    def test_status_reports_an_exhausted_range(self, ours: Node) -> None:
        config = ours.conf("macvlan", "1.1.0", master="m0")
        config["ipam"]["subnet"] = "10.40.0.0/30"
        ctr = ours.container()
        assert ours.call("ADD", config, ctr).rc == 0
        status = ours.call("STATUS", config, ctr)
        assert status.rc == 1 and status.error["code"] == 50
        assert ours.call("DEL", config, ctr).rc == 0
        ours.assert_clean(ctr)


class TestBadInput:
    @pytest.mark.parametrize(
        ("keys", "message"),
        [
            ({"master": "nope0"}, 'failed to lookup master "nope0": Link not found'),
            ({}, "no default route interface found"),
            ({"master": "m0", "mtu": 9000}, "invalid MTU 9000, must be [0, master MTU(1500)]"),
            ({"master": "m0", "mtu": "1400"}, "mtu: expected an integer, got string '1400'"),
            ({"master": "m0", "mode": "l2"}, 'unknown macvlan mode: "l2"'),
            ({"master": ["m0"]}, "master: expected a string"),
            ({"master": "m0", "bcqueuelen": "big"}, "bcqueuelen: expected an integer"),
            ({"master": "m0", "mac": "02:40:00"}, "invalid args 02:40:00 for MAC addr"),
        ],
    )
    def test_rejected_with_code_7_and_nothing_left(self, keys: dict[str, Any], message: str, ours: Node) -> None:
        ctr = ours.container()
        failed = ours.call("ADD", ours.conf("macvlan", **keys), ctr)
        assert failed.rc == 1
        assert failed.error["code"] == 7, failed.error
        assert message in failed.error["msg"]
        ours.assert_clean(ctr)

    def test_existing_interface_name_in_container(self, ours: Node) -> None:
        ctr = ours.container()
        run("ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0peer", netns=ctr)
        failed = ours.call("ADD", ours.conf("macvlan", master="m0"), ctr)
        assert failed.rc == 1
        assert failed.error["msg"] == 'failed to rename macvlan to "eth0": File exists'
        assert sorted(links(ctr)) == ["eth0", "eth0peer", "lo"], "the temporary macvlan is gone, eth0 untouched"
        ours.assert_clean()

    def test_subnet_exhausted_rolls_back(self, ours: Node) -> None:
        config = ours.conf("macvlan", master="m0")
        config["ipam"]["subnet"] = "10.40.0.0/30"  # one address besides the gateway
        ctr, other = ours.container(), ours.container()
        assert ours.call("ADD", config, ctr).rc == 0
        failed = ours.call("ADD", config, other)
        assert failed.rc == 1
        assert "no IP addresses available" in failed.error["msg"]
        assert links(other) == ["lo"], "the failed ADD removed its macvlan"
        assert ours.ip_files() == ["10.40.0.2"]
        assert ours.call("DEL", config, ctr).rc == 0
        ours.assert_clean(ctr, other)

    def test_missing_ipam_plugin_rolls_back(self, ours: Node) -> None:
        ctr = ours.container()
        config = ours.conf("macvlan", master="m0")
        config["ipam"] = {"type": "no-such-ipam"}
        failed = ours.call("ADD", config, ctr)
        assert failed.rc == 1
        assert "failed to find plugin 'no-such-ipam'" in failed.error["msg"]
        ours.assert_clean(ctr)

    def test_check_needs_prev_result(self, ours: Node) -> None:
        ctr = ours.container()
        checked = ours.call("CHECK", ours.conf("macvlan", ipam=False, master="m0"), ctr)
        assert checked.rc == 1 and checked.error["msg"] == "Required prevResult missing"
