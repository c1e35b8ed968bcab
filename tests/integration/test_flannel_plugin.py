"""The flannel CNI plugin on its own (no agent): subnet.env in, bridge + host-local out, and damaged state."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_bridge import Node
from tests.support.netns import NetnsPool


@pytest.fixture
def node(netns: NetnsPool, pycni_plugin_dir: str, tmp_path: Path) -> Node:
    return Node(netns, pycni_plugin_dir, tmp_path / "ipam")


def flannel_conf(tmp_path: Path) -> dict[str, Any]:
    subnet_env = tmp_path / "subnet.env"
    subnet_env.write_text(
        "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.7.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n"
    )
    return {
        "cniVersion": "1.1.0",
        "name": "cbr0",
        "type": "flannel",
        "subnetFile": str(subnet_env),
        "dataDir": str(tmp_path / "flannel"),
        "delegate": {"bridge": "fltest0", "ipam": {"dataDir": str(tmp_path / "ipam")}},
    }


@pytest.mark.parametrize("damage", ["garbage", "no-type", "directory"])
def test_del_with_a_damaged_saved_config_still_cleans_up(node: Node, tmp_path: Path, damage: str) -> None:
    """Go's flannel fails every DEL once its saved delegate config is damaged; pycni rebuilds it from subnet.env."""
    conf = flannel_conf(tmp_path)
    ctr = node.container()
    added = node.call("ADD", conf, ctr)
    assert added.rc == 0, added.out
    assert node.ip_files("cbr0") and node.veths()
    saved = tmp_path / "flannel" / f"cid-{ctr}"
    assert saved.is_file()
    saved.unlink()
    if damage == "garbage":
        saved.write_bytes(b"\x00{not json")
    elif damage == "no-type":
        saved.write_text('{"name": "cbr0"}')
    else:
        (saved / "inner").mkdir(parents=True)

    deleted = node.call("DEL", conf, ctr)
    assert deleted.rc == 0, deleted.out
    assert node.ip_files("cbr0") == [], "the address is released"
    assert node.veths() == [], "and the veth is gone"
    assert not saved.exists(), "and so is the damaged file"
    assert node.call("DEL", conf, ctr).rc == 0, "DEL stays idempotent"


def test_gc_removes_a_directory_where_a_saved_config_should_be(node: Node, tmp_path: Path) -> None:
    conf = flannel_conf(tmp_path)
    (tmp_path / "flannel" / "stale-container" / "x").mkdir(parents=True)
    gc = node.call("GC", {**conf, "cni.dev/valid-attachments": []}, node.container())
    assert gc.rc == 0, gc.out
    assert not (tmp_path / "flannel" / "stale-container").exists()


def test_an_unreadable_subnet_file_is_an_error_naming_it(node: Node, tmp_path: Path) -> None:
    conf = flannel_conf(tmp_path)
    (tmp_path / "subnet.env").unlink()
    (tmp_path / "subnet.env").mkdir()
    added = node.call("ADD", conf, node.container())
    assert added.rc == 1
    assert added.out["code"] == 5 and str(tmp_path / "subnet.env") in added.out["msg"]
    assert node.veths() == []


@pytest.mark.parametrize(
    ("content", "key"),
    [
        (
            b"FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.7.1/24\nFLANNEL_MTU=abc\nFLANNEL_IPMASQ=false\n",
            "MTU",
        ),
        (b"FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.7.1/24\n", "missing FLANNEL_MTU, FLANNEL_IPMASQ"),
        (b"", "is empty"),
    ],
)
def test_a_damaged_subnet_env_fails_add_naming_it_and_del_gc_still_clean_up(
    node: Node, tmp_path: Path, content: bytes, key: str
) -> None:
    conf = flannel_conf(tmp_path)
    live, gone, leaked = node.container(), node.container(), node.container()
    for ctr in (live, gone, leaked):
        assert node.call("ADD", conf, ctr).rc == 0
    (tmp_path / "flannel" / f"cid-{leaked}").unlink()  # its DEL never comes: only GC can release its address
    (tmp_path / "subnet.env").write_bytes(content)

    added = node.call("ADD", conf, node.container())
    assert added.rc == 1 and added.out["code"] == 7, added.out
    assert str(tmp_path / "subnet.env") in added.out["msg"] and key in added.out["msg"]
    assert len(node.veths()) == 3 and len(node.ip_files("cbr0")) == 3, "the failed ADD made nothing"

    assert node.call("DEL", conf, gone).rc == 0
    assert len(node.veths()) == 2 and len(node.ip_files("cbr0")) == 2
    valid = [{"containerID": f"cid-{live}", "ifname": "eth0"}]
    gc = node.call("GC", {**conf, "cni.dev/valid-attachments": valid}, live)
    assert gc.rc == 0, gc.out
    assert len(node.ip_files("cbr0")) == 1, "GC ran the delegate with the saved config: the leaked address went"
    assert node.call("DEL", conf, live).rc == 0
    assert node.ip_files("cbr0") == [] and len(node.veths()) == 1, "only the leaked container's veth is left"


def test_del_with_both_its_saved_config_and_subnet_env_damaged_uses_another_saved_config(
    node: Node, tmp_path: Path
) -> None:
    conf = flannel_conf(tmp_path)
    first, second = node.container(), node.container()
    assert node.call("ADD", conf, first).rc == 0 and node.call("ADD", conf, second).rc == 0
    (tmp_path / "flannel" / f"cid-{first}").write_bytes(b"\x00garbage")
    (tmp_path / "subnet.env").unlink()
    (tmp_path / "subnet.env").mkdir()

    deleted = node.call("DEL", conf, first)
    assert deleted.rc == 0, deleted.out
    assert len(node.veths()) == 1 and len(node.ip_files("cbr0")) == 1, "the first container's veth and address went"
    assert not (tmp_path / "flannel" / f"cid-{first}").exists()
    assert node.call("DEL", conf, second).rc == 0
    node.assert_clean("cbr0")
