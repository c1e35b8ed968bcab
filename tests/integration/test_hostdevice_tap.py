"""pycni's host-device and tap plugins in real namespaces.

host-device moves a veth end (``hd0``, created up in the node) into a
container and back, and is compared with the Go plugin. tap has no Go
counterpart in Debian's plugins, so its results are checked against the
shape Go's code builds and the kernel's view of the tap.
"""

from __future__ import annotations

import glob
import os
from typing import Any

import pytest

from pycni.spec import ALL_VERSIONS
from tests.integration.test_macvlan import NODE_LINKS, Node, go, link_json, links, ours, ping
from tests.support.cni import normalize
from tests.support.netns import NetnsPool, run

__all__ = ["go", "ours"]  # shared fixtures

HD_NODE_LINKS = NODE_LINKS | {"hd0", "hd0peer"}


def add_device(node: Node, name: str = "hd0", up: bool = True) -> dict[str, Any]:
    """A veth pair ``name``/``name``peer in the node; returns ``name``'s attributes."""
    run("ip", "link", "add", name, "type", "veth", "peer", "name", f"{name}peer", netns=node.name)
    if up:
        run("ip", "link", "set", name, "up", netns=node.name)
        run("ip", "link", "set", f"{name}peer", "up", netns=node.name)
    return link_json(node.name, name)


def hd_conf(node: Node, version: str = "1.0.0", ipam: bool = False, **keys: Any) -> dict[str, Any]:
    return node.conf("host-device", version, ipam=ipam, **({"device": "hd0"} | keys))


class TestHostDevice:
    def test_moved_in_and_back_with_its_name(self, ours: Node, go: Node) -> None:
        device = add_device(ours)
        add_device(go)
        ctr, go_ctr = ours.container(), go.container()
        config = hd_conf(ours)
        added = ours.call("ADD", config, ctr)
        assert added.rc == 0, added.out
        assert added.out["interfaces"] == [
            {"name": "eth0", "mac": device["address"], "sandbox": ours.pool.path(ctr)}
        ], "the device keeps its MAC; it is renamed to CNI_IFNAME"
        inside = link_json(ctr, "eth0")
        assert inside["ifalias"] == "hd0" and "UP" in inside["flags"]
        assert "hd0" not in links(ours.name)

        go_added = go.call("ADD", hd_conf(go), go_ctr)
        assert go_added.rc == 0, go_added.out
        assert normalize(added.out) == normalize(go_added.out)

        assert ours.call("CHECK", config | {"prevResult": added.out}, ctr).rc == 0
        deleted = ours.call("DEL", config, ctr)
        assert deleted.rc == 0, deleted.out
        back = link_json(ours.name, "hd0")
        assert back["address"] == device["address"] and "ifalias" not in back
        assert "UP" not in back["flags"], "as Go: the device comes back down"
        assert ours.call("DEL", config, ctr).rc == 0, "DEL is idempotent"
        ours.assert_clean(ctr, node_links=HD_NODE_LINKS)
        assert go.call("DEL", hd_conf(go), go_ctr).rc == 0

    @pytest.mark.parametrize("version", ALL_VERSIONS)
    def test_with_ipam_same_result_as_go(self, version: str, ours: Node, go: Node) -> None:
        add_device(ours)
        add_device(go)
        ctr, go_ctr = ours.container(), go.container()
        config = hd_conf(ours, version, ipam=True)
        added = ours.call("ADD", config, ctr)
        assert added.rc == 0, added.out
        assert "10.40.0.2/24" in run("ip", "-4", "addr", "show", "eth0", netns=ctr).stdout
        if version != "1.1.0":
            go_config = hd_conf(go, version, ipam=True)
            go_added = go.call("ADD", go_config, go_ctr)
            assert go_added.rc == 0, go_added.out
            assert normalize(added.out) == normalize(go_added.out)
            assert go.call("DEL", go_config, go_ctr).rc == 0
        if version >= "0.4.0":
            checked = ours.call("CHECK", config | {"prevResult": added.out}, ctr)
            assert checked.rc == 0, checked.out
        assert ours.call("DEL", config, ctr).rc == 0
        ours.assert_clean(ctr, node_links=HD_NODE_LINKS)

    def test_device_reaches_its_peer(self, ours: Node) -> None:
        add_device(ours)
        run("ip", "addr", "add", "10.40.0.1/24", "dev", "hd0peer", netns=ours.name)
        ctr = ours.container()
        config = hd_conf(ours, ipam=True)
        assert ours.call("ADD", config, ctr).rc == 0
        ping(ctr, "10.40.0.1")
        assert ours.call("DEL", config, ctr).rc == 0
        ours.assert_clean(ctr, node_links=HD_NODE_LINKS)

    @pytest.mark.parametrize("selector", ["hwaddr", "kernelpath"])
    def test_other_selectors(self, selector: str, ours: Node, go: Node) -> None:
        device = add_device(ours, "aa0")  # first in sorted order under /sys/devices/virtual/net
        add_device(go, "aa0")
        value = device["address"] if selector == "hwaddr" else "/sys/devices/virtual"
        config = ours.conf("host-device", ipam=False, **{selector: value})
        ctr, go_ctr = ours.container(), go.container()
        added = ours.call("ADD", config, ctr)
        assert added.rc == 0, added.out
        assert link_json(ctr, "eth0")["ifalias"] == "aa0"
        if selector == "kernelpath":
            go_added = go.call("ADD", go.conf("host-device", ipam=False, **{selector: value}), go_ctr)
            assert go_added.rc == 0, go_added.out
            assert link_json(go_ctr, "eth0")["ifalias"] == "aa0", "Go picks the same device"
        assert ours.call("DEL", config, ctr).rc == 0
        ours.assert_clean(ctr, node_links=NODE_LINKS | {"aa0", "aa0peer"})

    def test_go_deletes_what_ours_added(self, ours: Node, go_plugin_dir: str) -> None:
        add_device(ours)
        ctr = ours.container()
        config = hd_conf(ours)
        assert ours.call("ADD", config, ctr).rc == 0
        assert ours.call("DEL", config, ctr, plugin_dir=go_plugin_dir).rc == 0
        assert "hd0" in links(ours.name), "Go restored the name from our alias"
        ours.assert_clean(ctr, node_links=HD_NODE_LINKS)

    def test_del_after_container_is_gone(self, ours: Node, netns: NetnsPool) -> None:
        """Go fails here; pycni releases the address and succeeds (a veth dies with its namespace)."""
        add_device(ours)
        ctr = ours.container()
        config = hd_conf(ours, ipam=True)
        assert ours.call("ADD", config, ctr).rc == 0
        run("ip", "netns", "del", ctr)
        netns.names.remove(ctr)
        deleted = ours.call("DEL", config, ctr)
        assert deleted.rc == 0, deleted.out
        assert ours.ip_files() == []

    def test_failed_add_moves_the_device_back(self, ours: Node) -> None:
        add_device(ours)
        config = hd_conf(ours, ipam=True)
        config["ipam"]["subnet"] = "10.40.0.0/30"
        add_device(ours, "hd1")
        first, second = ours.container(), ours.container()
        assert ours.call("ADD", config | {"device": "hd1"}, first).rc == 0
        failed = ours.call("ADD", config, second)
        assert failed.rc == 1
        assert "no IP addresses available" in failed.error["msg"]
        back = link_json(ours.name, "hd0")
        assert "UP" in back["flags"] and "ifalias" not in back, "back on the node, named, up as before"
        assert links(second) == ["lo"]
        assert ours.call("DEL", config | {"device": "hd1"}, first).rc == 0
        ours.assert_clean(first, second, node_links=HD_NODE_LINKS | {"hd1", "hd1peer"})

    def test_existing_interface_name_in_container(self, ours: Node) -> None:
        add_device(ours)
        ctr = ours.container()
        run("ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0peer", netns=ctr)
        failed = ours.call("ADD", hd_conf(ours, ipam=True), ctr)
        assert failed.rc == 1
        assert failed.error["msg"] == 'failed to move "eth0" (host: "hd0") to container NS: File exists'
        back = link_json(ours.name, "hd0")
        assert "UP" in back["flags"] and "ifalias" not in back
        assert sorted(links(ctr)) == ["eth0", "eth0peer", "lo"]
        ours.assert_clean(node_links=HD_NODE_LINKS)

    @pytest.mark.parametrize(
        ("keys", "message"),
        [
            ({"device": "nope0"}, "failed to find host device: nope0: Link not found"),
            ({"device": None, "hwaddr": "02:00:00:00:99:99"}, "failed to find host device: failed to find physical"),
            ({"device": None, "hwaddr": "02:00"}, "invalid args 02:00 for MAC addr"),
            ({"device": None, "kernelpath": "/tmp/x"}, "must be absolute and begin with /sys/devices/"),
            ({"device": None}, 'specify either "device", "hwaddr", "kernelpath" or "pciBusID"'),
            ({"device": 3}, "device: expected a string"),
            ({"device": None, "pciBusID": "0000:99:00.0"}, "error with host device"),
        ],
    )
    def test_bad_input(self, keys: dict[str, Any], message: str, ours: Node) -> None:
        add_device(ours)
        ctr = ours.container()
        failed = ours.call("ADD", hd_conf(ours, ipam=True, **keys), ctr)
        assert failed.rc == 1
        assert failed.error["code"] == 7, failed.error
        assert message in failed.error["msg"]
        ours.assert_clean(ctr, node_links=HD_NODE_LINKS)
        assert "UP" in link_json(ours.name, "hd0")["flags"]

    def test_del_succeeds_when_the_device_id_is_gone(self, ours: Node) -> None:
        """A removed VF: ADD refuses the unknown deviceID, DEL has nothing to move back and succeeds."""
        ctr = ours.container()
        config = hd_conf(ours, ipam=True, device=None, runtimeConfig={"deviceID": "0000:99:1f.7"})
        failed = ours.call("ADD", config, ctr)
        assert failed.rc == 1 and failed.error["code"] == 7
        assert "runtime config DeviceID 0000:99:1f.7 not found or unsupported" in failed.error["msg"]
        deleted = ours.call("DEL", config, ctr)
        assert deleted.rc == 0, deleted.out
        assert ours.call("DEL", config, ctr).rc == 0, "DEL can be repeated"

    def test_pci_device_not_in_this_namespace(self, ours: Node) -> None:
        """The VM's own NIC is a virtio PCI device of the root namespace: from a node it is never found."""
        devices = "/sys/bus/pci/devices"
        virtio = next((a for a in sorted(os.listdir(devices)) if glob.glob(f"{devices}/{a}/virtio*/net")), None)
        if virtio is None:
            pytest.skip("no PCI network device on this machine")
        ctr = ours.container()
        failed = ours.call("ADD", hd_conf(ours, device=None, runtimeConfig={"deviceID": virtio}), ctr)
        assert failed.rc == 1 and failed.error["code"] == 7, failed.out
        assert failed.error["msg"].startswith("failed to find host device")
        ours.assert_clean(ctr)


# -- tap ---------------------------------------------------------------------


def tap_data(netns: str, name: str = "eth0") -> dict[str, Any]:
    info = link_json(netns, name)
    assert info["linkinfo"]["info_kind"] == "tun"
    data: dict[str, Any] = info["linkinfo"]["info_data"]
    return data


class TestTap:
    def test_mac_mtu_multiqueue(self, ours: Node) -> None:
        ctr = ours.container()
        config = ours.conf("tap", ipam=False, mac="02:40:00:00:00:21", mtu=1400, multiQueue=True)
        added = ours.call("ADD", config, ctr)
        assert added.rc == 0, added.out
        assert added.out == {
            "cniVersion": "1.0.0",
            "interfaces": [{"name": "eth0", "mac": "02:40:00:00:00:21", "sandbox": ours.pool.path(ctr)}],
        }
        info = link_json(ctr, "eth0")
        assert info["mtu"] == 1400 and info["address"] == "02:40:00:00:00:21" and "UP" in info["flags"]
        data = tap_data(ctr)
        assert data["type"] == "tap" and data["multi_queue"] and data["persist"]
        assert not data["pi"], "ownerless taps are made as `ip tuntap` makes them (IFF_NO_PI)"
        assert ours.call("CHECK", config | {"prevResult": added.out}, ctr).rc == 0
        assert ours.call("DEL", config, ctr).rc == 0
        assert ours.call("DEL", config, ctr).rc == 0
        ours.assert_clean(ctr)

    def test_attached_to_a_bridge_in_the_container(self, ours: Node) -> None:
        ctr = ours.container()
        run("ip", "link", "add", "br0", "type", "bridge", netns=ctr)
        config = ours.conf("tap", bridge="br0")
        added = ours.call("ADD", config, ctr)
        assert added.rc == 0, added.out
        assert link_json(ctr, "eth0")["master"] == "br0"
        assert added.out["ips"] == [{"interface": 0, "address": "10.40.0.2/24", "gateway": "10.40.0.1"}]
        assert "10.40.0.2/24" in run("ip", "addr", "show", "eth0", netns=ctr).stdout
        assert ours.call("CHECK", config | {"prevResult": added.out}, ctr).rc == 0
        assert ours.call("DEL", config, ctr).rc == 0
        assert links(ctr) == ["lo", "br0"]
        ours.assert_clean()

    def test_owner_and_group(self, ours: Node) -> None:
        ctr = ours.container()
        config = ours.conf("tap", ipam=False, owner=4242, group=4343)
        assert ours.call("ADD", config, ctr).rc == 0
        data = tap_data(ctr)
        assert (data["user"], data["group"]) == ("4242", "4343") or (data["user"], data["group"]) == (4242, 4343)
        assert data["vnet_hdr"], "with owner and group Go takes the netlink path (IFF_VNET_HDR)"
        assert ours.call("DEL", config, ctr).rc == 0
        ours.assert_clean(ctr)

    @pytest.mark.parametrize("version", ["0.3.1", "0.4.0", "1.1.0"])
    def test_versions_with_ipam(self, version: str, ours: Node) -> None:
        ctr = ours.container()
        config = ours.conf("tap", version)
        added = ours.call("ADD", config, ctr)
        assert added.rc == 0, added.out
        assert added.out["cniVersion"] == version and added.out["ips"][0]["address"] == "10.40.0.2/24"
        if version >= "0.4.0":
            assert ours.call("CHECK", config | {"prevResult": added.out}, ctr).rc == 0
        assert ours.call("DEL", config, ctr).rc == 0
        ours.assert_clean(ctr)

    @pytest.mark.parametrize(
        ("keys", "message"),
        [
            ({"bridge": "nobr0"}, "failed to get bridge nobr0: Link not found"),
            ({"bridge": "lo"}, "lo is a plain link, not a bridge"),
            ({"mac": "02:40"}, "invalid args 02:40 for MAC addr"),
            ({"owner": "root"}, "owner: expected an integer"),
            ({"mtu": -5}, "mtu: must be at least 0"),
        ],
    )
    def test_bad_input(self, keys: dict[str, Any], message: str, ours: Node) -> None:
        ctr = ours.container()
        failed = ours.call("ADD", ours.conf("tap", **keys), ctr)
        assert failed.rc == 1
        assert failed.error["code"] == 7, failed.error
        assert message in failed.error["msg"]
        ours.assert_clean(ctr)

    def test_existing_interface_name_and_exhausted_subnet(self, ours: Node) -> None:
        ctr, other = ours.container(), ours.container()
        run("ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0peer", netns=ctr)
        taken = ours.call("ADD", ours.conf("tap"), ctr)
        assert taken.rc == 1 and taken.error["msg"] == 'failed to rename tap to "eth0": File exists'
        assert sorted(links(ctr)) == ["eth0", "eth0peer", "lo"]
        config = ours.conf("tap")
        config["ipam"]["subnet"] = "10.40.0.0/30"
        assert ours.call("ADD", config, ctr, ifname="tap0").rc == 0
        failed = ours.call("ADD", config, other)
        assert failed.rc == 1 and "no IP addresses available" in failed.error["msg"]
        assert links(other) == ["lo"]
        assert ours.call("DEL", config, ctr, ifname="tap0").rc == 0
        ours.assert_clean(other)
        assert sorted(links(ctr)) == ["eth0", "eth0peer", "lo"]
