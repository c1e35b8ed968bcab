"""pycni's ptp plugin in real namespaces, held to the Go reference plugin."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pycni.spec import ALL_VERSIONS
from tests.integration.test_bridge import Node, curl, with_data_dir
from tests.support.cni import normalize
from tests.support.netns import NetnsPool, run

PTP: dict[str, Any] = {
    "cniVersion": "1.0.0",
    "name": "ptpnet",
    "type": "ptp",
    "ipMasq": True,
    "mtu": 1450,
    "ipam": {"type": "host-local", "subnet": "10.20.0.0/24", "routes": [{"dst": "0.0.0.0/0"}]},
}


@pytest.fixture
def ours(netns: NetnsPool, pycni_plugin_dir: str, tmp_path: Path) -> Node:
    return Node(netns, pycni_plugin_dir, tmp_path / "ours")


@pytest.fixture
def go(netns: NetnsPool, go_plugin_dir: str, tmp_path: Path) -> Node:
    return Node(netns, go_plugin_dir, tmp_path / "go", "gonode")


def test_host_and_containers_reach_each_other(ours: Node, go: Node, tmp_path: Path) -> None:
    config = with_data_dir(PTP, ours.data_dir)
    ctr1, ctr2 = ours.container(), ours.container()
    www = tmp_path / "www"
    www.mkdir()
    (www / "index.html").write_text("ptp-ok\n")
    run("busybox", "httpd", "-p", "80", "-h", str(www), netns=ctr1)
    first, second = ours.call("ADD", config, ctr1), ours.call("ADD", config, ctr2)
    assert first.rc == 0, first.out
    assert second.rc == 0, second.out
    go_ctr = go.container()
    go_first = go.call("ADD", with_data_dir(PTP, go.data_dir), go_ctr)
    assert go_first.rc == 0, go_first.out
    assert normalize(first.out) == normalize(go_first.out)

    routes = run("ip", "route", netns=ctr1).stdout
    assert "10.20.0.1 dev eth0 scope link src 10.20.0.2" in routes
    assert "10.20.0.0/24 via 10.20.0.1 dev eth0 src 10.20.0.2" in routes
    assert "mtu 1450" in run("ip", "link", "show", "eth0", netns=ctr1).stdout
    assert curl(ours.name, "http://10.20.0.2/") == "ptp-ok\n"
    assert curl(ctr2, "http://10.20.0.2/") == "ptp-ok\n"
    assert ours.call("CHECK", config | {"prevResult": first.out}, ctr1).rc == 0

    for ctr, result in ((ctr1, first), (ctr2, second)):
        assert ours.call("DEL", config | {"prevResult": result.out}, ctr).rc == 0
    ours.assert_clean("ptpnet")
    assert "10.20.0" not in run("ip", "route", netns=ours.name).stdout, "host routes go with the veth"
    assert ours.call("DEL", config, ctr1).rc == 0
    assert go.call("DEL", with_data_dir(PTP, go.data_dir), go_ctr).rc == 0


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_versions_same_shape_as_go(version: str, ours: Node, go: Node) -> None:
    config = {**PTP, "cniVersion": version}
    ctr, go_ctr = ours.container(), go.container()
    added = ours.call("ADD", with_data_dir(config, ours.data_dir), ctr)
    assert added.rc == 0, added.out
    if version != "1.1.0":
        go_added = go.call("ADD", with_data_dir(config, go.data_dir), go_ctr)
        assert go_added.rc == 0, go_added.out
        assert normalize(added.out) == normalize(go_added.out)
        go.call("DEL", with_data_dir(config, go.data_dir), go_ctr)
    prev = with_data_dir(config, ours.data_dir) | {"prevResult": added.out}
    if version >= "0.4.0":
        assert ours.call("CHECK", prev, ctr).rc == 0
    assert ours.call("DEL", prev, ctr).rc == 0
    ours.assert_clean("ptpnet")


def test_dual_stack(ours: Node) -> None:
    config = with_data_dir(
        {
            **PTP,
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": "10.21.0.0/24"}], [{"subnet": "fd00:21::/64"}]],
            },
        },
        ours.data_dir,
    )
    ctr = ours.container()
    added = ours.call("ADD", config, ctr)
    assert added.rc == 0, added.out
    assert [ip["address"] for ip in added.out["ips"]] == ["10.21.0.2/24", "fd00:21::2/64"]
    assert "fd00:21::2/64" in run("ip", "-6", "addr", "show", "eth0", netns=ctr).stdout
    assert "tentative" not in run("ip", "-6", "addr", "show", "eth0", netns=ctr).stdout
    ping = run("busybox", "ping", "-6", "-c1", "-W2", "fd00:21::2", netns=ours.name, check=False)
    assert ping.returncode == 0, ping.stdout + ping.stderr
    assert ours.call("DEL", config, ctr).rc == 0
    ours.assert_clean("ptpnet")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"ipam": {}}, "ptp requires an IPAM configuration"),
        ({"mtu": "big"}, "mtu: expected an integer"),
        ({"ipMasq": 1}, "ipMasq: expected true or false"),
    ],
)
def test_bad_config(change: dict[str, Any], message: str, ours: Node) -> None:
    ctr = ours.container()
    failed = ours.call("ADD", with_data_dir(PTP, ours.data_dir) | change, ctr)
    assert failed.rc == 1
    assert failed.error["code"] == 7
    assert message in failed.error["msg"]
    ours.assert_clean("ptpnet")


def test_failure_after_veth_rolls_back(ours: Node) -> None:
    """An interface name already taken in the container fails the ADD after IPAM allocated."""
    ctr = ours.container()
    run("ip", "link", "add", "eth0", "type", "veth", "peer", "name", "other", netns=ctr)
    failed = ours.call("ADD", with_data_dir(PTP, ours.data_dir), ctr)
    assert failed.rc == 1
    assert "already exists" in failed.error["msg"]
    ours.assert_clean("ptpnet")
