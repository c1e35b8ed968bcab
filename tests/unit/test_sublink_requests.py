"""The netlink requests behind macvlan, ipvlan, vlan, dummy and tap links, without root or kernel modules.

This machine's kernel has no ipvlan, 8021q or dummy, so what those plugins
send is checked here: :mod:`pycni.net.sublink` runs against a fake IPRoute
that records ``link()`` calls and keeps links per namespace, and the keywords
are encoded with pyroute2's own request filters to see the netlink
attributes the kernel would get. Config errors are checked through the
plugins themselves: they are all refused before any kernel work.
"""

from __future__ import annotations

import errno
import json
import os
import re
import socket
import struct
from pathlib import Path
from typing import Any

import pytest
from pyroute2.iproute.linux import get_arguments_processor
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

from pycni.net import sublink
from pycni.net.errors import NetError
from pycni.plugins.main import dummy, host_device, ipvlan, macvlan, tap, vlan
from pycni.skel import Plugin
from pycni.spec import CNIError, Interface, Result

TEMP_NAME = re.compile(r"^veth[0-9a-f]{8}$")


# -- a fake kernel -------------------------------------------------------------


class FakeMsg(dict[str, Any]):
    """Just enough of pyroute2's ifinfmsg for :func:`pycni.net.link._info`."""

    def get_nested(self, *path: str) -> Any:
        return self.get("kind") if path == ("IFLA_LINKINFO", "IFLA_INFO_KIND") else None


class FakeKernel:
    """Namespaces by fd; each holds links by name. Failures are scripted per (namespace, command)."""

    def __init__(self) -> None:
        self.links: dict[int, dict[str, FakeMsg]] = {}
        self.next_index = 10

    def ns(self, fd: int) -> FakeIPRoute:
        self.links.setdefault(fd, {})
        return FakeIPRoute(self, fd)

    def add(self, fd: int, name: str, kind: str, **attrs: Any) -> FakeMsg:
        self.next_index += 1
        msg = FakeMsg(index=self.next_index, ifname=name, kind=kind, flags=0, mtu=1500, address="02:00:00:00:00:01")
        msg.update(attrs)
        self.links[fd][name] = msg
        return msg


class FakeIPRoute:
    def __init__(self, kernel: FakeKernel, fd: int) -> None:
        self.kernel = kernel
        self.fd = fd
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.fail: dict[str, int] = {}  # command -> errno
        self.routes: list[dict[str, Any]] = []

    @property
    def links(self) -> dict[str, FakeMsg]:
        return self.kernel.links[self.fd]

    def link(self, command: str, **kw: Any) -> list[FakeMsg] | None:
        if command == "get":  # a lookup, as RTM_GETLINK by name or index answers it
            found = self.get_links(kw["index"]) if "index" in kw else self.get_links(ifname=kw["ifname"])
            if not found:
                raise NetlinkError(errno.ENODEV)
            return found
        self.calls.append((command, kw))
        if command in self.fail:
            raise NetlinkError(self.fail[command])
        if command == "add":
            target = kw.get("net_ns_fd", self.fd)
            if kw["ifname"] in self.kernel.links[target]:
                raise NetlinkError(errno.EEXIST)
            self.kernel.add(target, kw["ifname"], kw["kind"], link=kw.get("link", 0))
        elif command == "set":
            current = next(m for m in self.links.values() if m["index"] == kw["index"])
            if "ifname" in kw:
                if kw["ifname"] in self.links:
                    raise NetlinkError(errno.EEXIST)
                del self.links[current["ifname"]]
                current["ifname"] = kw["ifname"]
                self.links[kw["ifname"]] = current
        elif command == "del":
            name = next(n for n, m in self.links.items() if m["index"] == kw["index"])
            del self.links[name]
        return None

    def get_links(self, *indexes: int, ifname: str | None = None) -> list[FakeMsg]:
        if ifname is not None:
            return [self.links[ifname]] if ifname in self.links else []
        return [m for m in self.links.values() if not indexes or m["index"] in indexes]

    def get_routes(self, family: int, table: int) -> list[dict[str, Any]]:
        assert family == socket.AF_UNSPEC and table == 254
        return self.routes

    def adds(self) -> list[dict[str, Any]]:
        return [kw for command, kw in self.calls if command == "add"]


HOST_FD, CONTAINER_FD = 3, 4


@pytest.fixture
def kernel() -> FakeKernel:
    k = FakeKernel()
    k.ns(HOST_FD)
    k.ns(CONTAINER_FD)
    k.add(HOST_FD, "eth1", "veth", mtu=9000)
    return k


def encode(command: str, **kw: Any) -> ifinfmsg:
    """Build the RTM_NEWLINK message pyroute2 would send for these keywords, and decode it back."""
    processor = get_arguments_processor("link", command, dict(kw))
    msg = ifinfmsg()
    for name, *_ in msg.fields:
        msg[name] = processor.get_value(name, 0)
    for key, value in processor.items():
        nla = ifinfmsg.name2nla(key)
        if msg.valid_nla(nla) and value is not None:
            msg["attrs"].append([nla, value])
    msg["header"]["type"], msg["header"]["flags"] = 16, 1
    msg.encode()
    decoded = ifinfmsg(msg.data)
    decoded.decode()
    return decoded


def info_data(msg: ifinfmsg) -> dict[str, Any]:
    data = msg.get_nested("IFLA_LINKINFO", "IFLA_INFO_DATA")
    return dict(data["attrs"]) if data else {}


# -- sub-interfaces ------------------------------------------------------------


class TestSubLinkCreate:
    def test_macvlan_is_made_on_the_host_master_into_the_container_then_renamed(self, kernel: FakeKernel) -> None:
        host, container = kernel.ns(HOST_FD), kernel.ns(CONTAINER_FD)
        master = sublink.master(host, "eth1", 1400)
        spec = sublink.macvlan(master.index, sublink.MACVLAN_MODES["vepa"], 1400, "02:11:22:33:44:55", 300)
        made = sublink.create(host, container, CONTAINER_FD, "eth0", spec)

        (request,) = host.adds()
        assert TEMP_NAME.match(request.pop("ifname"))
        assert request == {
            "kind": "macvlan",
            "link": master.index,
            "net_ns_fd": CONTAINER_FD,
            "macvlan_mode": 2,
            "macvlan_bc_queue_len": 300,
            "mtu": 1400,
            "address": "02:11:22:33:44:55",
        }
        assert container.calls == [("set", {"index": made.index, "ifname": "eth0"})]
        assert made.name == "eth0" and made.kind == "macvlan"
        assert list(host.links) == ["eth1"], "nothing is created in the host namespace"

    def test_defaults_send_no_mtu_mac_or_bcqueuelen(self, kernel: FakeKernel) -> None:
        host, container = kernel.ns(HOST_FD), kernel.ns(CONTAINER_FD)
        sublink.create(host, container, CONTAINER_FD, "eth0", sublink.macvlan(11, 4))
        (request,) = host.adds()
        assert set(request) == {"ifname", "kind", "link", "net_ns_fd", "macvlan_mode"}

    @pytest.mark.parametrize(("mode", "value"), [("", 0), ("l2", 0), ("l3", 1), ("l3s", 2)])
    def test_ipvlan_request(self, kernel: FakeKernel, mode: str, value: int) -> None:
        host, container = kernel.ns(HOST_FD), kernel.ns(CONTAINER_FD)
        number = sublink.mode_value("ipvlan", sublink.IPVLAN_MODES, mode, "l2")
        sublink.create(host, container, CONTAINER_FD, "eth0", sublink.ipvlan(11, number, 1500))
        (request,) = host.adds()
        assert request["kind"] == "ipvlan" and request["ipvlan_mode"] == value and request["mtu"] == 1500
        assert "address" not in request, "ipvlan links take their master's MAC"
        assert info_data(encode("add", **request)) == {"IFLA_IPVLAN_MODE": value}

    def test_vlan_request(self, kernel: FakeKernel) -> None:
        host, container = kernel.ns(HOST_FD), kernel.ns(CONTAINER_FD)
        sublink.create(host, container, CONTAINER_FD, "eth0", sublink.vlan(11, 100))
        (request,) = host.adds()
        assert request["kind"] == "vlan" and request["vlan_id"] == 100 and request["link"] == 11
        message = encode("add", **request)
        assert info_data(message) == {"IFLA_VLAN_ID": 100}
        assert message.get("link") == 11 and message.get("net_ns_fd") == CONTAINER_FD

    def test_link_in_container_creates_from_the_container(self, kernel: FakeKernel) -> None:
        container = kernel.ns(CONTAINER_FD)
        kernel.add(CONTAINER_FD, "net1", "veth")
        master = sublink.master(container, "net1")
        sublink.create(container, container, CONTAINER_FD, "eth0", sublink.vlan(master.index, 7))
        assert container.adds()[0]["link"] == master.index
        assert set(container.links) == {"net1", "eth0"}

    def test_macvlan_attributes_encode_including_bcqueuelen(self) -> None:
        message = encode(
            "add", ifname="vethx", kind="macvlan", link=3, net_ns_fd=9, macvlan_mode=4, macvlan_bc_queue_len=300
        )
        assert info_data(message) == {"IFLA_MACVLAN_MODE": "bridge", "IFLA_MACVLAN_BC_QUEUE_LEN": 300}
        assert message.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND") == "macvlan"

    def test_name_taken_in_container_deletes_the_new_link(self, kernel: FakeKernel) -> None:
        host, container = kernel.ns(HOST_FD), kernel.ns(CONTAINER_FD)
        kernel.add(CONTAINER_FD, "eth0", "veth")
        with pytest.raises(NetError) as failed:
            sublink.create(host, container, CONTAINER_FD, "eth0", sublink.ipvlan(11, 0))
        assert failed.value.msg == 'failed to rename ipvlan to "eth0": File exists'
        assert "already in the container" in failed.value.details
        assert list(container.links) == ["eth0"], "the temporary link was removed, the existing one kept"
        assert container.calls[-1][0] == "del"

    def test_missing_kernel_module_says_so(self, kernel: FakeKernel) -> None:
        host, container = kernel.ns(HOST_FD), kernel.ns(CONTAINER_FD)
        host.fail["add"] = errno.EOPNOTSUPP
        with pytest.raises(NetError) as failed:
            sublink.create(host, container, CONTAINER_FD, "eth0", sublink.vlan(11, 5))
        assert failed.value.msg == "failed to create vlan: Operation not supported"
        assert "no vlan support" in failed.value.details
        assert container.links == {}

    def test_dummy_is_created_under_its_final_name(self, kernel: FakeKernel) -> None:
        container = kernel.ns(CONTAINER_FD)
        made = sublink.create_dummy(container, "dummy0")
        assert container.adds() == [{"ifname": "dummy0", "kind": "dummy"}]
        assert made.kind == "dummy"
        with pytest.raises(NetError, match="failed to create dummy: File exists"):
            sublink.create_dummy(container, "dummy0")


class TestMaster:
    def test_missing_master_is_a_config_error(self, kernel: FakeKernel) -> None:
        with pytest.raises(CNIError) as failed:
            sublink.master(kernel.ns(HOST_FD), "nope0")
        assert failed.value.code == 7 and failed.value.msg == 'failed to lookup master "nope0": Link not found'

    @pytest.mark.parametrize("mtu", [9001, -1])
    def test_mtu_outside_the_masters_is_a_config_error(self, kernel: FakeKernel, mtu: int) -> None:
        with pytest.raises(CNIError) as failed:
            sublink.master(kernel.ns(HOST_FD), "eth1", mtu)
        assert failed.value.code == 7
        assert failed.value.msg == f"invalid MTU {mtu}, must be [0, master MTU(9000)]"

    def test_default_master_is_the_first_default_routes_link(self, kernel: FakeKernel) -> None:
        host = kernel.ns(HOST_FD)
        eth2 = kernel.add(HOST_FD, "eth2", "veth")
        host.routes = [
            {"dst_len": 24, "dst": "198.51.100.0", "oif": 11},
            {"dst_len": 0, "oif": eth2["index"]},
            {"dst_len": 0, "oif": 11},
        ]
        assert sublink.master(host, "").name == "eth2"

    def test_no_default_route(self, kernel: FakeKernel) -> None:
        with pytest.raises(CNIError) as failed:
            sublink.master(kernel.ns(HOST_FD), "")
        assert failed.value.code == 7 and failed.value.msg == "no default route interface found"


class TestValues:
    @pytest.mark.parametrize(
        ("text", "mac"),
        [
            ("02:AA:bb:00:00:01", "02:aa:bb:00:00:01"),
            ("02-aa-bb-00-00-01", "02:aa:bb:00:00:01"),
            ("02aa.bb00.0001", "02:aa:bb:00:00:01"),
        ],
    )
    def test_mac_spellings(self, text: str, mac: str) -> None:
        assert sublink.parse_mac(text) == mac

    @pytest.mark.parametrize("text", ["02:aa:bb:00:00", "zz:aa:bb:00:00:01", "02:aa-bb:00:00:01"])
    def test_bad_mac(self, text: str) -> None:
        with pytest.raises(CNIError) as failed:
            sublink.parse_mac(text)
        assert failed.value.code == 7

    def test_modes(self) -> None:
        assert sublink.mode_value("macvlan", sublink.MACVLAN_MODES, "", "bridge") == 4
        assert sublink.mode_value("macvlan", sublink.MACVLAN_MODES, "passthru", "bridge") == 8
        with pytest.raises(CNIError) as failed:
            sublink.mode_value("macvlan", sublink.MACVLAN_MODES, "l3", "bridge")
        assert failed.value.code == 7 and failed.value.msg == 'unknown macvlan mode: "l3"'
        assert sublink.mode_name(sublink.IPVLAN_MODES, 2) == "l3s"
        assert sublink.mode_name(sublink.MACVLAN_MODES, "vepa") == "vepa"


# -- taps --------------------------------------------------------------------


class TestTap:
    def test_flags_follow_the_path_go_takes(self) -> None:
        assert sublink.Tap().flags == sublink.IFF_TAP | sublink.IFF_NO_PI
        assert sublink.Tap(multi_queue=True).flags == sublink.IFF_TAP | sublink.IFF_NO_PI | sublink.IFF_MULTI_QUEUE
        owned = sublink.Tap(owner=1000, group=1000)
        assert owned.flags == sublink.IFF_TAP | sublink.IFF_VNET_HDR
        owned.multi_queue = True
        assert owned.flags == sublink.IFF_TAP | sublink.IFF_VNET_HDR | sublink.IFF_MULTI_QUEUE | sublink.IFF_NO_PI
        assert sublink.Tap(owner=1, group=1, selinux_context="x").flags & sublink.IFF_VNET_HDR == 0

    def test_ifreq_layout(self) -> None:
        packed = sublink.ifreq("veth0011aabb", 0x1002)
        assert len(packed) == 40
        assert packed[:16].rstrip(b"\0") == b"veth0011aabb"
        assert struct.unpack_from("H", packed, 16)[0] == 0x1002

    def test_selinux_path_runs_ip_under_runcon(self) -> None:
        spec = sublink.Tap(multi_queue=True, owner=5, selinux_context="system_u:system_r:svirt_t:s0")
        assert sublink.ip_tuntap_argv("vethx", spec) == [
            "runcon",
            "system_u:system_r:svirt_t:s0",
            "ip",
            "tuntap",
            "add",
            "mode",
            "tap",
            "name",
            "vethx",
            "multi_queue",
            "user",
            "5",
        ]


# -- host-device lookups -------------------------------------------------------


@pytest.fixture
def sysfs(tmp_path: Path) -> Path:
    """A fake /sys/bus/pci/devices: one NIC with a netdev, one virtio NIC, one DPDK-bound function."""
    pci = tmp_path / "pci"
    drivers = tmp_path / "drivers"
    for driver in ("e1000e", "virtio-pci", "vfio-pci"):
        (drivers / driver).mkdir(parents=True)
    (pci / "0000:00:1f.6" / "net" / "enp0s31f6").mkdir(parents=True)
    (pci / "0000:00:03.0" / "virtio0" / "net" / "ens3").mkdir(parents=True)
    (pci / "0000:00:04.0").mkdir(parents=True)
    for address, driver in (("0000:00:1f.6", "e1000e"), ("0000:00:03.0", "virtio-pci"), ("0000:00:04.0", "vfio-pci")):
        os.symlink(drivers / driver, pci / address / "driver")
    return pci


class TestHostDeviceLookup:
    def test_pci_netdev_and_virtio_child(self, sysfs: Path) -> None:
        assert sublink.pci_netdev("0000:00:1f.6", str(sysfs)) == "enp0s31f6"
        assert sublink.pci_netdev("0000:00:03.0", str(sysfs)) == "ens3"
        with pytest.raises(CNIError, match=r"no net directory under pci device 0000:00:04\.0"):
            sublink.pci_netdev("0000:00:04.0", str(sysfs))

    def test_userspace_driver_means_dpdk(self, sysfs: Path) -> None:
        assert sublink.has_userspace_driver("0000:00:04.0", str(sysfs))
        assert not sublink.has_userspace_driver("0000:00:1f.6", str(sysfs))
        with pytest.raises(CNIError, match="error with host device"):
            sublink.has_userspace_driver("0000:99:00.0", str(sysfs))

    def test_kernelpath_must_be_under_sys_devices(self) -> None:
        with pytest.raises(CNIError) as failed:
            sublink.kernelpath_netdev("/tmp/devices/x")
        assert failed.value.code == 7
        assert "must be absolute and begin with /sys/devices/" in failed.value.msg

    def test_hwaddr_lookup(self, kernel: FakeKernel) -> None:
        host = kernel.ns(HOST_FD)
        kernel.add(HOST_FD, "eth2", "veth", address="02:00:00:00:00:99")
        found = sublink.link_by_mac(host, "02-00-00-00-00-99")
        assert found is not None and found.name == "eth2"
        assert sublink.link_by_mac(host, "02:00:00:00:00:98") is None


# -- CHECK helpers -----------------------------------------------------------


class TestCheckHelpers:
    def test_expected_interface_needs_name_and_sandbox(self) -> None:
        result = Result(
            "1.1.0",
            interfaces=[Interface("eth0", sandbox="/run/netns/a"), Interface("eth0", sandbox="/run/netns/b")],
        )
        assert sublink.expected_interface(result, "eth0", "/run/netns/b")[0] == 1
        with pytest.raises(CNIError, match="Sandbox in prevResult doesn't match configured netns"):
            sublink.expected_interface(result, "eth1", "/run/netns/a")

    def test_container_link_kind_and_mac(self, kernel: FakeKernel) -> None:
        container = kernel.ns(CONTAINER_FD)
        kernel.add(CONTAINER_FD, "eth0", "macvlan", address="02:00:00:00:00:07")
        assert sublink.check_container_link(container, Interface("eth0", mac="02:00:00:00:00:07"), "macvlan")
        with pytest.raises(CNIError, match="not of type ipvlan"):
            sublink.check_container_link(container, Interface("eth0"), "ipvlan")
        with pytest.raises(CNIError, match="Mac 02:00:00:00:00:08 doesn't match"):
            sublink.check_container_link(container, Interface("eth0", mac="02:00:00:00:00:08"), None)
        with pytest.raises(CNIError, match="eth9 not found"):
            sublink.check_container_link(container, Interface("eth9"), None)


# -- config errors through the plugins (refused before any kernel work) -------


def invoke(plugin: Plugin, config: dict[str, Any], command: str = "ADD") -> dict[str, Any]:
    env = {
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": "c1",
        "CNI_NETNS": "/run/netns/pycni-unit-does-not-exist",
        "CNI_IFNAME": "eth0",
        "CNI_PATH": "/nonexistent",
    }
    reply = plugin.invoke(env, json.dumps({"cniVersion": "1.0.0", "name": "n", **config}).encode())
    assert reply.exit_code == 1, reply.stdout
    error: dict[str, Any] = json.loads(reply.stdout)
    return error


HOST_LOCAL = {"type": "host-local", "subnet": "10.1.0.0/24"}


@pytest.mark.parametrize(
    ("plugin", "config", "message"),
    [
        (macvlan.plugin, {"master": "eth1", "mode": "l2"}, 'unknown macvlan mode: "l2"'),
        (macvlan.plugin, {"master": 5}, "master: expected a string, got number 5"),
        (macvlan.plugin, {"mtu": "1500"}, "mtu: expected an integer"),
        (macvlan.plugin, {"bcqueuelen": -1}, "bcqueuelen: must be between 0 and 4294967295"),
        (macvlan.plugin, {"linkInContainer": "yes"}, "linkInContainer: expected true or false"),
        (macvlan.plugin, {"mac": "nope"}, "invalid args nope for MAC addr"),
        (ipvlan.plugin, {"master": "eth1", "mode": "l4", "ipam": HOST_LOCAL}, 'unknown ipvlan mode: "l4"'),
        (ipvlan.plugin, {"master": "eth1"}, "ipvlan needs an IPAM configuration (ipam.type) or a prevResult"),
        (
            ipvlan.plugin,
            {"prevResult": {"cniVersion": "1.0.0", "interfaces": [{"name": "a"}, {"name": "b"}]}},
            "chained master failure. PrevResult lacks a single named interface",
        ),
        (vlan.plugin, {"vlanId": 5, "ipam": HOST_LOCAL}, '"master" field is required'),
        (vlan.plugin, {"master": "eth1", "vlanId": 4095, "ipam": HOST_LOCAL}, "invalid VLAN ID 4095"),
        (vlan.plugin, {"master": "eth1", "vlanId": "5"}, "vlanId: expected an integer"),
        (vlan.plugin, {"master": "eth1", "vlanId": 5}, "vlan requires an IPAM configuration"),
        (dummy.plugin, {}, "dummy interface requires an IPAM configuration"),
        (dummy.plugin, {"ipam": {}}, "dummy interface requires an IPAM configuration"),
        (tap.plugin, {"owner": -1}, "owner: must be between 0 and 4294967295"),
        (tap.plugin, {"multiQueue": 1}, "multiQueue: expected true or false"),
        (tap.plugin, {"runtimeConfig": {"mac": "02:zz:00:00:00:01"}}, "invalid args 02:zz:00:00:00:01 for MAC"),
        (host_device.plugin, {}, 'specify either "device", "hwaddr", "kernelpath" or "pciBusID"'),
        (
            host_device.plugin,
            {"runtimeConfig": {"deviceID": "0000:99:99.9"}},
            "runtime config DeviceID 0000:99:99.9 not found or unsupported",
        ),
    ],
)
def test_bad_config_is_code_7(plugin: Plugin, config: dict[str, Any], message: str) -> None:
    error = invoke(plugin, config)
    assert error["code"] == 7, error
    assert message in error["msg"]
