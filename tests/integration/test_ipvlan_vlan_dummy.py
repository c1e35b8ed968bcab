"""pycni's ipvlan, vlan and dummy plugins in real namespaces, where the kernel has the link types.

This machine's kernel lacks ipvlan, 8021q and dummy: the tests that need a
link of that kind probe for it in a scratch namespace and skip with the
kernel's answer. What does not need the module runs everywhere: bad input
is refused with code 7 before anything is made, and on a kernel without the
module the ADD fails with a message that says so and leaves nothing behind.
The netlink requests themselves are unit-tested in
``tests/unit/test_sublink_requests.py``.
"""

from __future__ import annotations

from typing import Any

import pytest

from pycni.spec import ALL_VERSIONS
from tests.integration.test_macvlan import Node, go, link_json, links, ours, ping
from tests.support.cni import normalize
from tests.support.netns import NetnsPool, run

__all__ = ["go", "ours"]  # shared fixtures

PROBES: dict[str, list[str]] = {
    "ipvlan": ["link", "p0", "type", "ipvlan"],
    "vlan": ["link", "p0", "type", "vlan", "id", "10"],
    "dummy": ["type", "dummy"],
}
_support: dict[str, str] = {}  # kind -> "" (supported) or the kernel's refusal, probed once per session


def missing_kernel_support(pool: NetnsPool, kind: str) -> str:
    """Why this kernel cannot make a ``kind`` link ("" if it can), tried in a scratch namespace."""
    if kind not in _support:
        scratch = pool.new("probe")
        run("ip", "link", "add", "p0", "type", "veth", "peer", "name", "p1", netns=scratch)
        proc = run("ip", "link", "add", "probe0", *PROBES[kind], netns=scratch, check=False)
        _support[kind] = "" if proc.returncode == 0 else (proc.stderr.strip() or f"exit status {proc.returncode}")
        run("ip", "netns", "del", scratch)
        pool.names.remove(scratch)
    return _support[kind]


@pytest.fixture
def needs(netns: NetnsPool) -> Any:
    def require(kind: str) -> None:
        reason = missing_kernel_support(netns, kind)
        if reason:
            pytest.skip(f"this kernel cannot create {kind} links: {reason}")

    return require


@pytest.fixture
def lacks(netns: NetnsPool) -> Any:
    def require(kind: str) -> None:
        if not missing_kernel_support(netns, kind):
            pytest.skip(f"this kernel has {kind}: the missing-module path cannot be shown here")

    return require


# -- ipvlan ------------------------------------------------------------------


class TestIpvlan:
    def test_two_containers_and_same_result_as_go(self, needs: Any, ours: Node, go: Node) -> None:
        needs("ipvlan")
        config = ours.conf("ipvlan", "0.4.0", master="m0")
        ctr1, ctr2, go_ctr = ours.container(), ours.container(), go.container()
        first = ours.call("ADD", config, ctr1)
        assert first.rc == 0, first.out
        assert ours.call("ADD", config, ctr2).rc == 0
        info = link_json(ctr1, "eth0")
        assert info["linkinfo"]["info_kind"] == "ipvlan" and info["address"] == link_json(ours.name, "m0")["address"]
        ping(ctr2, "10.40.0.2")
        go_added = go.call("ADD", go.conf("ipvlan", "0.4.0", master="m0"), go_ctr)
        assert go_added.rc == 0, go_added.out
        assert normalize(first.out) == normalize(go_added.out)
        assert ours.call("CHECK", config | {"prevResult": first.out}, ctr1).rc == 0
        for ctr in (ctr1, ctr2):
            assert ours.call("DEL", config, ctr).rc == 0
        ours.assert_clean(ctr1, ctr2)

    @pytest.mark.parametrize("version", ALL_VERSIONS)
    def test_versions(self, version: str, needs: Any, ours: Node, go: Node) -> None:
        needs("ipvlan")
        config = ours.conf("ipvlan", version, master="m0", mode="l3")
        ctr, go_ctr = ours.container(), go.container()
        added = ours.call("ADD", config, ctr)
        assert added.rc == 0, added.out
        if version != "1.1.0":
            go_added = go.call("ADD", go.conf("ipvlan", version, master="m0", mode="l3"), go_ctr)
            assert go_added.rc == 0, go_added.out
            assert normalize(added.out) == normalize(go_added.out)
        if version >= "0.4.0":
            assert ours.call("CHECK", config | {"prevResult": added.out}, ctr).rc == 0
            wrong = ours.call("CHECK", config | {"mode": "l2", "prevResult": added.out}, ctr)
            assert wrong.rc == 1 and "does not match expected value: l2" in wrong.error["msg"]
        assert ours.call("DEL", config, ctr).rc == 0
        ours.assert_clean(ctr)

    def test_chained_takes_master_and_ips_from_prev_result(self, needs: Any, ours: Node) -> None:
        needs("ipvlan")
        prev = {
            "cniVersion": "1.0.0",
            "interfaces": [{"name": "m0"}],
            "ips": [{"address": "10.40.0.9/24", "gateway": "10.40.0.1", "interface": 0}],
            "dns": {"nameservers": ["10.40.0.53"]},
        }
        config = ours.conf("ipvlan", ipam=False, prevResult=prev)
        ctr = ours.container()
        added = ours.call("ADD", config, ctr)
        assert added.rc == 0, added.out
        assert added.out["ips"] == [{"interface": 0, "address": "10.40.0.9/24", "gateway": "10.40.0.1"}]
        assert "dns" not in added.out, "the config's (empty) dns replaces the chained one, as in Go"
        assert "10.40.0.9/24" in run("ip", "addr", "show", "eth0", netns=ctr).stdout
        assert ours.call("DEL", config, ctr).rc == 0
        ours.assert_clean(ctr)

    def test_missing_module_fails_cleanly(self, lacks: Any, ours: Node) -> None:
        lacks("ipvlan")
        ctr = ours.container()
        failed = ours.call("ADD", ours.conf("ipvlan", master="m0"), ctr)
        assert failed.rc == 1
        assert failed.error["msg"] == "failed to create ipvlan: Operation not supported"
        assert "no ipvlan support" in failed.error["details"]
        ours.assert_clean(ctr)
        assert ours.call("DEL", ours.conf("ipvlan", master="m0"), ctr).rc == 0, "DEL of nothing succeeds"

    @pytest.mark.parametrize(
        ("keys", "message"),
        [
            ({"master": "m0", "mode": "l4"}, 'unknown ipvlan mode: "l4"'),
            ({"master": "nope0"}, 'failed to lookup master "nope0": Link not found'),
            ({"master": "m0", "mtu": 1501}, "invalid MTU 1501, must be [0, master MTU(1500)]"),
            ({"master": "m0", "mtu": "big"}, "mtu: expected an integer"),
            ({"master": "m0", "ipam": {}}, "ipvlan needs an IPAM configuration (ipam.type) or a prevResult with IPs"),
            (
                {"prevResult": {"cniVersion": "1.0.0", "interfaces": [{"name": "m0"}, {"name": "x"}]}},
                "chained master failure. PrevResult lacks a single named interface",
            ),
        ],
    )
    def test_bad_input(self, keys: dict[str, Any], message: str, ours: Node) -> None:
        ctr = ours.container()
        config = ours.conf("ipvlan") | keys
        failed = ours.call("ADD", config, ctr)
        assert failed.rc == 1 and failed.error["code"] == 7, failed.out
        assert message in failed.error["msg"]
        ours.assert_clean(ctr)


# -- vlan --------------------------------------------------------------------


class TestVlan:
    @pytest.mark.parametrize("version", ALL_VERSIONS)
    def test_versions_same_result_as_go(self, version: str, needs: Any, ours: Node, go: Node) -> None:
        needs("vlan")
        config = ours.conf("vlan", version, master="m0", vlanId=100, mtu=1400)
        ctr, go_ctr = ours.container(), go.container()
        added = ours.call("ADD", config, ctr)
        assert added.rc == 0, added.out
        info = link_json(ctr, "eth0")
        assert info["linkinfo"]["info_data"]["id"] == 100 and info["mtu"] == 1400
        if version != "1.1.0":
            go_added = go.call("ADD", go.conf("vlan", version, master="m0", vlanId=100, mtu=1400), go_ctr)
            assert go_added.rc == 0, go_added.out
            assert normalize(added.out) == normalize(go_added.out)
        if version >= "0.4.0":
            assert ours.call("CHECK", config | {"prevResult": added.out}, ctr).rc == 0
            wrong = ours.call("CHECK", config | {"vlanId": 101, "prevResult": added.out}, ctr)
            assert wrong.rc == 1 and "has VLAN ID 100, expected 101" in wrong.error["msg"]
        assert ours.call("DEL", config, ctr).rc == 0
        ours.assert_clean(ctr)

    def test_containers_on_two_vlans(self, needs: Any, ours: Node) -> None:
        needs("vlan")
        ctr1, ctr2 = ours.container(), ours.container()
        assert ours.call("ADD", ours.conf("vlan", master="m0", vlanId=10), ctr1).rc == 0
        same_id = ours.call("ADD", ours.conf("vlan", master="m0", vlanId=10), ctr2)
        assert same_id.rc == 1, "one VLAN link per ID on a master"
        assert links(ctr2) == ["lo"] and len(ours.ip_files()) == 1
        assert ours.call("ADD", ours.conf("vlan", master="m0", vlanId=11), ctr2).rc == 0
        for ctr, vid in ((ctr1, 10), (ctr2, 11)):
            assert ours.call("DEL", ours.conf("vlan", master="m0", vlanId=vid), ctr).rc == 0
        ours.assert_clean(ctr1, ctr2)

    def test_missing_module_fails_cleanly(self, lacks: Any, ours: Node) -> None:
        lacks("vlan")
        ctr = ours.container()
        config = ours.conf("vlan", master="m0", vlanId=100)
        failed = ours.call("ADD", config, ctr)
        assert failed.rc == 1
        assert failed.error["msg"] == "failed to create vlan: Operation not supported"
        ours.assert_clean(ctr)
        assert ours.call("DEL", config, ctr).rc == 0

    @pytest.mark.parametrize(
        ("keys", "message"),
        [
            ({"vlanId": 100}, '"master" field is required'),
            ({"master": "m0", "vlanId": 4095}, "invalid VLAN ID 4095"),
            ({"master": "m0", "vlanId": -1}, "invalid VLAN ID -1"),
            ({"master": "m0", "vlanId": "100"}, "vlanId: expected an integer"),
            ({"master": "nope0", "vlanId": 100}, 'failed to lookup master "nope0": Link not found'),
            ({"master": "m0", "vlanId": 100, "mtu": 9000}, "invalid MTU 9000, must be [0, master MTU(1500)]"),
            ({"master": "m0", "vlanId": 100, "ipam": {}}, "vlan requires an IPAM configuration"),
        ],
    )
    def test_bad_input(self, keys: dict[str, Any], message: str, ours: Node) -> None:
        ctr = ours.container()
        failed = ours.call("ADD", ours.conf("vlan") | keys, ctr)
        assert failed.rc == 1 and failed.error["code"] == 7, failed.out
        assert message in failed.error["msg"]
        ours.assert_clean(ctr)

    def test_del_needs_neither_master_nor_valid_id(self, ours: Node) -> None:
        ctr = ours.container()
        assert ours.call("DEL", ours.conf("vlan", vlanId=9999), ctr).rc == 0


# -- dummy -------------------------------------------------------------------


class TestDummy:
    @pytest.mark.parametrize("version", ["0.2.0", "0.4.0", "1.0.0", "1.1.0"])
    def test_add_check_del(self, version: str, needs: Any, ours: Node) -> None:
        needs("dummy")
        ctr = ours.container()
        config = ours.conf("dummy", version)
        added = ours.call("ADD", config, ctr)
        assert added.rc == 0, added.out
        if version >= "0.3.0":
            assert added.out["interfaces"][0]["name"] == "eth0"
            assert added.out["ips"][0]["address"] == "10.40.0.2/24" and added.out["ips"][0]["interface"] == 0
        assert link_json(ctr, "eth0")["linkinfo"]["info_kind"] == "dummy"
        if version >= "0.4.0":
            assert ours.call("CHECK", config | {"prevResult": added.out}, ctr).rc == 0
        assert ours.call("DEL", config, ctr).rc == 0
        ours.assert_clean(ctr)

    def test_missing_module_fails_cleanly(self, lacks: Any, ours: Node) -> None:
        lacks("dummy")
        ctr = ours.container()
        failed = ours.call("ADD", ours.conf("dummy"), ctr)
        assert failed.rc == 1
        assert failed.error["msg"] == "failed to create dummy: Operation not supported"
        ours.assert_clean(ctr)

    @pytest.mark.parametrize("ipam", [None, {}])
    def test_requires_ipam(self, ipam: dict[str, Any] | None, ours: Node) -> None:
        ctr = ours.container()
        config = ours.conf("dummy")
        if ipam is None:
            del config["ipam"]
        else:
            config["ipam"] = ipam
        failed = ours.call("ADD", config, ctr)
        assert failed.rc == 1 and failed.error["code"] == 7
        assert failed.error["msg"] == "dummy interface requires an IPAM configuration"
        ours.assert_clean(ctr)

    def test_existing_interface_name(self, ours: Node) -> None:
        ctr = ours.container()
        run("ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0peer", netns=ctr)
        failed = ours.call("ADD", ours.conf("dummy"), ctr)
        assert failed.rc == 1
        assert failed.error["msg"] in (
            "failed to create dummy: File exists",
            "failed to create dummy: Operation not supported",
        )
        assert sorted(links(ctr)) == ["eth0", "eth0peer", "lo"]
        ours.assert_clean()
