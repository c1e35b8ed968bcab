"""The fabric backends without root: options, MTUs, BackendData, the vxlan device, and the peers' entries.

The vxlan device's life (create, reuse, recreate, MAC clash) runs against
:class:`FakeIPRoute`, which keeps links and addresses in dicts and records
every request. What the peers need (routes, neighbours, FDB remotes) is a
pure desired state, checked here; how the dataplane drivers bring the kernel
to it is proven on the real kernel in ``tests/integration/test_fabric_backends.py``.
The udp proxy runs for real over loopback UDP with a SOCK_SEQPACKET pair
standing in for the TUN device.
"""

from __future__ import annotations

import errno
import ipaddress
import json
import os
import socket
import struct
import time
from pathlib import Path
from typing import Any

import pytest
from pyroute2.iproute.linux import get_arguments_processor
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

from pycni.dataplane import Route
from pycni.fabric.flannel.backends import BACKENDS, ExternalInterface
from pycni.fabric.flannel.backends import vxlan as vxlan_module
from pycni.fabric.flannel.backends.common import legacy_route, peers
from pycni.fabric.flannel.backends.host_gw import NAT_ERROR, HostGwBackend, desired_routes
from pycni.fabric.flannel.backends.udp import UdpBackend
from pycni.fabric.flannel.backends.udp_proxy import PeerTable, UdpProxy, checksum, decrement_ttl, net_unreachable
from pycni.fabric.flannel.backends.vxlan import VxlanBackend, VxlanOptions, desired_entries, incompatibility
from pycni.fabric.flannel.model import ConfigError, Lease, LeaseAttrs, NetworkConfig
from pycni.net import overlay
from pycni.net.route import RouteMsg

EXT = ExternalInterface(name="eth0", index=2, address="198.51.100.11", public_ip="198.51.100.11", mtu=1500)
MAC2, MAC3 = "0e:00:00:00:00:02", "0e:00:00:00:00:03"


def config(backend_type: str = "vxlan", **options: Any) -> NetworkConfig:
    return NetworkConfig.from_dict({"Network": "10.42.0.0/16", "Backend": {"Type": backend_type, **options}})


def lease(number: int, mac: str | None = None, backend_type: str = "vxlan") -> Lease:
    data = {"VNI": 1, "VtepMAC": mac} if mac else {}
    return Lease(
        ipaddress.IPv4Network(f"10.42.{number}.0/24"), LeaseAttrs(f"198.51.100.{10 + number}", backend_type, data)
    )


# -- a fake kernel -------------------------------------------------------------------


class FakeMsg(dict[str, Any]):
    """Answers pyroute2-style lookups by short name (``ifname``) or NLA name (``IFLA_IFNAME``)."""

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        for prefix in ("IFLA_", "NDA_", "RTA_", "IFA_"):
            if key.startswith(prefix):
                key = key[len(prefix) :].lower()
        return super().get(key, default)

    def get_nested(self, *path: str) -> Any:
        if path == ("IFLA_LINKINFO", "IFLA_INFO_KIND"):
            return self.get("kind")
        if path == ("IFLA_LINKINFO", "IFLA_INFO_DATA"):
            return {"attrs": list(self.get("info_data", {}).items())}
        return None


class FakeIPRoute:
    """Links and addresses, what the vxlan device's life touches; every request is recorded."""

    def __init__(self) -> None:
        self.links: dict[str, FakeMsg] = {
            "eth0": FakeMsg(index=2, ifname="eth0", kind="veth", address="0e:00:00:00:00:01", mtu=1500, flags=1),
            "cni0": FakeMsg(index=3, ifname="cni0", kind="bridge", address="0e:00:00:00:00:0c", mtu=1450, flags=1),
        }
        self.addrs: dict[int, list[tuple[str, int]]] = {}
        self.calls: list[tuple[str, str, dict[str, Any]]] = []
        self.fail: dict[tuple[str, str], int] = {}
        self.next_index = 10

    def _record(self, method: str, command: str, kw: dict[str, Any]) -> None:
        if command not in ("get", "dump"):
            self.calls.append((method, command, dict(kw)))
        code = self.fail.get((method, command))
        if code:
            raise NetlinkError(code)

    def requests(self, method: str | None = None) -> list[tuple[str, str, dict[str, Any]]]:
        return [call for call in self.calls if method is None or call[0] == method]

    def close(self) -> None:
        pass

    # links
    def link(self, command: str, **kw: Any) -> list[FakeMsg]:
        self._record("link", command, kw)
        if command == "get":
            found = [m for m in self.links.values() if m["ifname"] == kw.get("ifname") or m["index"] == kw.get("index")]
            if not found:
                raise NetlinkError(errno.ENODEV)
            return found
        if command == "add":
            if kw["ifname"] in self.links:
                raise NetlinkError(errno.EEXIST)
            self.next_index += 1
            data = {
                "IFLA_VXLAN_ID": kw["vxlan_id"],
                "IFLA_VXLAN_LOCAL": kw["vxlan_local"],
                "IFLA_VXLAN_LINK": kw["vxlan_link"],
                "IFLA_VXLAN_PORT": kw["vxlan_port"],
                "IFLA_VXLAN_LEARNING": kw["vxlan_learning"],
            }
            self.links[kw["ifname"]] = FakeMsg(
                index=self.next_index,
                ifname=kw["ifname"],
                kind=kw["kind"],
                address=kw.get("address") or "0e:99:99:99:99:99",
                mtu=kw.get("mtu", 1500),
                flags=0,
                info_data=data,
            )
        elif command == "set":
            target = next(m for m in self.links.values() if m["index"] == kw["index"])
            if kw.get("state") == "up":
                target["flags"] |= 1
            for key in ("mtu", "address"):
                if key in kw:
                    target[key] = kw[key]
        elif command == "del":
            self.links = {name: m for name, m in self.links.items() if m["index"] != kw["index"]}
        return []

    # addresses
    def get_addr(self, index: int, family: int | None = None) -> list[FakeMsg]:
        return [FakeMsg(address=a, prefixlen=p) for a, p in self.addrs.get(index, [])]

    def addr(self, command: str, **kw: Any) -> list[FakeMsg]:
        self._record("addr", command, kw)
        entries = self.addrs.setdefault(kw["index"], [])
        entry = (kw["address"], kw["prefixlen"])
        if command == "add":
            entries.append(entry)
        elif command == "del":
            entries.remove(entry)
        return []


@pytest.fixture
def ipr() -> FakeIPRoute:
    return FakeIPRoute()


@pytest.fixture(autouse=True)
def no_sysctls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """The backends write sysctls of their devices; here nothing touches /proc/sys."""
    written: list[tuple[str, str]] = []
    monkeypatch.setattr("pycni.net.sysctl.write", lambda name, value, missing_ok=False: written.append((name, value)))
    return written


def vxlan(ipr: FakeIPRoute, tmp_path: Path, **options: Any) -> VxlanBackend:
    backend = VxlanBackend(EXT, config("vxlan", **options), state_dir=str(tmp_path), ipr=ipr)  # type: ignore[arg-type]
    backend.prepare()
    backend.configure(lease(1, "0e:00:00:00:00:01"))
    ipr.calls.clear()
    return backend


# -- options, MTU, BackendData ---------------------------------------------------------


def test_registry_names_flannel_types() -> None:
    assert dict(BACKENDS) == {"vxlan": VxlanBackend, "host-gw": HostGwBackend, "udp": UdpBackend}


def test_vxlan_defaults_and_mtu() -> None:
    options = VxlanOptions.parse({"Type": "vxlan"}, 1500)
    assert options == VxlanOptions(vni=1, port=8472, gbp=False, direct_routing=False, learning=False, mtu=1500)
    backend = VxlanBackend(EXT, config())
    assert (backend.name, backend.mtu) == ("flannel.1", 1450)
    jumbo = ExternalInterface("eth0", 2, "198.51.100.11", "198.51.100.11", 9000)
    assert VxlanBackend(jumbo, config()).mtu == 8950
    assert VxlanBackend(EXT, config(MTU=1400)).mtu == 1350


def test_vxlan_options_as_go_decodes_them() -> None:
    options = VxlanOptions.parse({"vni": 42, "port": 4789, "gbp": True, "directRouting": True, "Learning": True}, 1500)
    assert (options.vni, options.port, options.gbp, options.direct_routing, options.learning) == (
        42,
        4789,
        True,
        True,
        True,
    )
    assert VxlanBackend(EXT, config(VNI=42)).name == "flannel.42"
    assert VxlanOptions.parse({"Port": 0}, 1500).port == 8472


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"VNI": "1"}, "VNI must be an integer"),
        ({"VNI": True}, "VNI must be an integer"),
        ({"VNI": 1 << 24}, "VNI 16777216 is out of range"),
        ({"Port": 70000}, "Port 70000 is out of range"),
        ({"GBP": "yes"}, "GBP must be true or false"),
        ({"DirectRouting": 1}, "DirectRouting must be true or false"),
        ({"MTU": 100}, "MTU 100 is out of range"),
    ],
)
def test_vxlan_bad_options(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        VxlanBackend(EXT, config(**options))


def test_backend_data_json_is_flannels(tmp_path: Path, ipr: FakeIPRoute) -> None:
    backend = VxlanBackend(EXT, config(), state_dir=str(tmp_path), ipr=ipr)  # type: ignore[arg-type]
    data = backend.prepare()
    attrs = LeaseAttrs(public_ip=EXT.public_ip, backend_type="vxlan", backend_data=data)
    text = attrs.to_json()
    assert f'"BackendData":{{"VNI":1,"VtepMAC":"{data["VtepMAC"]}"}}' in text
    assert LeaseAttrs.from_json(text).backend_data == data


def test_host_gw_refuses_nat_and_has_no_overhead() -> None:
    nat = ExternalInterface("eth0", 2, "198.51.100.11", "203.0.113.7", 1500)
    with pytest.raises(ConfigError) as info:
        HostGwBackend(nat, config("host-gw"))
    assert info.value.msg == NAT_ERROR and "probably you're on a NAT" in NAT_ERROR
    backend = HostGwBackend(EXT, config("host-gw"))
    assert backend.mtu == 1500 and backend.prepare() == {}


def test_udp_options_and_mtu() -> None:
    backend = UdpBackend(EXT, config("udp"))
    assert (backend.mtu, backend.port, backend.name) == (1472, 8285, "flannel0")
    assert UdpBackend(EXT, config("udp", Port=9999)).port == 9999
    with pytest.raises(ConfigError, match="Port must be an integer"):
        UdpBackend(EXT, config("udp", Port="8285"))


@pytest.mark.parametrize("backend_type", ["vxlan", "host-gw", "udp"])
def test_ipv6_only_networks_are_refused(backend_type: str) -> None:
    v6 = NetworkConfig.from_dict(
        {"EnableIPv4": False, "EnableIPv6": True, "IPv6Network": "fd00:42::/48", "Backend": {"Type": backend_type}}
    )
    with pytest.raises(ConfigError, match="IPv6-only"):
        BACKENDS[backend_type](EXT, v6)


# -- the vxlan device ------------------------------------------------------------------


def encode_link(request: dict[str, Any]) -> dict[str, Any]:
    """The IFLA_VXLAN_* attributes pyroute2 would put on the wire for ``request``."""
    processor = get_arguments_processor("link", "add", dict(request))
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
    return dict(decoded.get_nested("IFLA_LINKINFO", "IFLA_INFO_DATA")["attrs"])


def test_vxlan_link_request_is_unambiguous() -> None:
    spec = overlay.VxlanSpec("flannel.1", 1, "198.51.100.11", 2, mtu=1450, mac=MAC2)
    attrs = encode_link(overlay.vxlan_request(spec))
    assert attrs["IFLA_VXLAN_ID"] == 1
    assert attrs["IFLA_VXLAN_LOCAL"] == "198.51.100.11"
    assert attrs["IFLA_VXLAN_LINK"] == 2
    assert attrs["IFLA_VXLAN_PORT"] == 8472
    assert attrs["IFLA_VXLAN_LEARNING"] == 0
    assert "IFLA_VXLAN_GBP" not in attrs
    gbp = encode_link(overlay.vxlan_request(overlay.VxlanSpec("flannel.1", 1, "198.51.100.11", 2, gbp=True)))
    assert gbp["IFLA_VXLAN_GBP"] is True


def mac_file(state_dir: Path, inode: int | None = None) -> Path:
    """Where a backend on :data:`EXT` in this process's namespace (or ``inode``'s) keeps its MAC."""
    netns = vxlan_module.netns_inode() if inode is None else inode
    return Path(vxlan_module.mac_state_path(str(state_dir), "flannel.1", EXT.public_ip, netns))


def test_prepare_creates_the_device_and_persists_its_mac(tmp_path: Path, ipr: FakeIPRoute) -> None:
    backend = VxlanBackend(EXT, config(), state_dir=str(tmp_path / "run"), ipr=ipr)  # type: ignore[arg-type]
    data = backend.prepare()
    mac = data["VtepMAC"]
    first = int(mac.split(":")[0], 16)
    assert first & 0x02 and not first & 0x01, "locally administered unicast"
    (_, _, request), *_ = ipr.requests("link")
    assert request["address"] == mac and request["mtu"] == 1450 and request["vxlan_port"] == 8472
    assert mac_file(tmp_path / "run").read_text() == f"{mac}\n"
    assert os.listdir(tmp_path / "run") == [mac_file(tmp_path / "run").name]
    # A restart on the existing device: no new link, the same MAC.
    ipr.calls.clear()
    again = VxlanBackend(EXT, config(), state_dir=str(tmp_path / "run"), ipr=ipr)  # type: ignore[arg-type]
    assert again.prepare() == data
    assert ipr.requests("link") == []
    # The device is gone: its MAC comes back from the state file.
    del ipr.links["flannel.1"]
    assert VxlanBackend(EXT, config(), state_dir=str(tmp_path / "run"), ipr=ipr).prepare() == data  # type: ignore[arg-type]


def test_the_mac_file_is_keyed_to_the_node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two nodes sharing one state directory (the default /run/flannel) never read each other's MAC."""
    macs = []
    for inode in (4026532001, 4026532002):
        monkeypatch.setattr(vxlan_module, "netns_inode", lambda inode=inode: inode)
        macs.append(VxlanBackend(EXT, config(), state_dir=str(tmp_path), ipr=FakeIPRoute()).prepare()["VtepMAC"])  # type: ignore[arg-type]
    assert macs[0] != macs[1]
    assert mac_file(tmp_path, 4026532001).read_text() == f"{macs[0]}\n"
    assert mac_file(tmp_path, 4026532002).read_text() == f"{macs[1]}\n"
    other_ip = ExternalInterface("eth0", 2, "198.51.100.12", "198.51.100.12", 1500)
    third = VxlanBackend(other_ip, config(), state_dir=str(tmp_path), ipr=FakeIPRoute()).prepare()  # type: ignore[arg-type]
    assert third["VtepMAC"] not in macs, "same namespace, another public IP: another node"
    # The unkeyed file of earlier versions, which every node on the machine shared, is not read.
    (tmp_path / "flannel.1.mac").write_text(f"{MAC3}\n")
    monkeypatch.setattr(vxlan_module, "netns_inode", lambda: 4026532003)
    assert VxlanBackend(EXT, config(), state_dir=str(tmp_path), ipr=FakeIPRoute()).prepare()["VtepMAC"] != MAC3  # type: ignore[arg-type]


def test_prepare_ignores_a_garbled_state_file(tmp_path: Path, ipr: FakeIPRoute) -> None:
    mac_file(tmp_path).write_text("not a mac\n")
    data = VxlanBackend(EXT, config(), state_dir=str(tmp_path), ipr=ipr).prepare()  # type: ignore[arg-type]
    assert data["VtepMAC"] != "not a mac" and vxlan_module.normalize_mac(data["VtepMAC"]) == data["VtepMAC"]


def test_a_peer_publishing_our_mac_makes_us_take_a_new_one(
    tmp_path: Path, ipr: FakeIPRoute, caplog: pytest.LogCaptureFixture
) -> None:
    backend = VxlanBackend(EXT, config(), state_dir=str(tmp_path), ipr=ipr)  # type: ignore[arg-type]
    old = backend.prepare()["VtepMAC"]
    backend.configure(lease(1))
    ipr.calls.clear()
    assert backend.resolve_clash([lease(2, MAC2), lease(3, MAC3)]) is None
    assert backend.resolve_clash([lease(1, old)]) is None, "our own lease is no clash"
    assert backend.resolve_clash([lease(4, old, backend_type="host-gw")]) is None, "a lease we do not forward to"
    assert ipr.calls == []
    with caplog.at_level("WARNING", logger="pycni.fabric.flannel.backends.vxlan"):
        data = backend.resolve_clash([lease(2, MAC2), lease(3, old.upper().replace(":", "-"))])
    assert data is not None and data["VNI"] == 1
    new = data["VtepMAC"]
    assert new not in (old, MAC2) and vxlan_module.normalize_mac(new) == new
    assert [(m, c, kw.get("address")) for m, c, kw in ipr.requests()] == [("link", "set", new)]
    assert ipr.links["flannel.1"]["address"] == new and backend.mac == new
    assert mac_file(tmp_path).read_text() == f"{new}\n"
    (record,) = caplog.records
    assert old in record.getMessage() and new in record.getMessage() and "198.51.100.13" in record.getMessage()
    assert backend.resolve_clash([lease(3, old)]) is None, "the old MAC is no longer ours"


def test_prepare_recreates_an_incompatible_device_keeping_its_mac(tmp_path: Path, ipr: FakeIPRoute) -> None:
    ipr.link(
        "add",
        ifname="flannel.1",
        kind="vxlan",
        vxlan_id=1,
        vxlan_local="198.51.100.11",
        vxlan_link=2,
        vxlan_port=4789,
        vxlan_learning=0,
        address=MAC3,
    )
    ipr.calls.clear()
    data = VxlanBackend(EXT, config(), state_dir=str(tmp_path), ipr=ipr).prepare()  # type: ignore[arg-type]
    assert data["VtepMAC"] == MAC3
    assert [command for _, command, _ in ipr.requests("link")] == ["del", "add"]
    assert ipr.links["flannel.1"]["info_data"]["IFLA_VXLAN_PORT"] == 8472


def test_incompatibility_reasons() -> None:
    want = overlay.VxlanSpec("flannel.1", 1, "198.51.100.11", 2)
    have = overlay.VxlanInfo(
        5, "flannel.1", "vxlan", MAC2, 1450, True, vni=1, local="198.51.100.11", link_index=2, port=8472
    )
    assert incompatibility(want, have) == ""
    assert incompatibility(want, have.__class__(**{**have.__dict__, "vni": 2})) == "vni: 2 vs 1"
    assert incompatibility(want, have.__class__(**{**have.__dict__, "local": "198.51.100.99"})).startswith(
        "vtep (external) IP"
    )
    assert incompatibility(want, have.__class__(**{**have.__dict__, "kind": "bridge"})) == "link type: bridge vs vxlan"
    assert incompatibility(want, have.__class__(**{**have.__dict__, "learning": True})) == "learning: True vs False"


def test_configure_sets_the_slash_32_and_drops_an_old_one(
    tmp_path: Path, ipr: FakeIPRoute, no_sysctls: list[tuple[str, str]]
) -> None:
    backend = VxlanBackend(EXT, config(), state_dir=str(tmp_path), ipr=ipr)  # type: ignore[arg-type]
    backend.prepare()
    index = ipr.links["flannel.1"]["index"]
    ipr.addrs[index] = [("10.42.7.0", 32), ("192.168.50.1", 24)]
    backend.configure(lease(1))
    assert ipr.addrs[index] == [("192.168.50.1", 24), ("10.42.1.0", 32)], "outside the Network stays"
    assert ipr.links["flannel.1"]["flags"] & 1
    assert ("net/ipv6/conf/flannel.1/accept_ra", "0") in no_sysctls


# -- the peers' desired entries (pure); the kernel side is tests/integration/test_fabric_backends.py --


def addr(text: str) -> ipaddress.IPv4Address:
    return ipaddress.IPv4Address(text)


def test_vxlan_entries_per_peer_route_neighbour_and_fdb() -> None:
    entries = desired_entries([lease(3, MAC3), lease(2, MAC2)], "flannel.1", "eth0", lambda lease: False)
    assert entries.neighbours == {addr("10.42.2.0"): MAC2, addr("10.42.3.0"): MAC3}
    assert entries.fdb == {MAC2: addr("198.51.100.12"), MAC3: addr("198.51.100.13")}
    assert entries.routes == [
        Route(ipaddress.IPv4Network("10.42.2.0/24"), dev="flannel.1", gateway=addr("10.42.2.0"), onlink=True),
        Route(ipaddress.IPv4Network("10.42.3.0/24"), dev="flannel.1", gateway=addr("10.42.3.0"), onlink=True),
    ], "in subnet order, each via the peer's VTEP address on-link"
    assert entries.problems == []


def test_vxlan_direct_routing_peers_get_a_route_via_their_public_ip_only() -> None:
    on_link = {"10.42.2.0/24"}  # node3 is behind a router
    entries = desired_entries(
        [lease(2, MAC2), lease(3, MAC3)], "flannel.1", "eth0", lambda lease: str(lease.subnet) in on_link
    )
    assert entries.routes[0] == Route(ipaddress.IPv4Network("10.42.2.0/24"), dev="eth0", gateway=addr("198.51.100.12"))
    assert entries.routes[1].dev == "flannel.1"
    assert list(entries.neighbours) == [addr("10.42.3.0")] and list(entries.fdb) == [MAC3]


def test_vxlan_peers_that_cannot_be_programmed_are_named_and_the_rest_kept() -> None:
    bad_ip = Lease(ipaddress.IPv4Network("10.42.5.0/24"), LeaseAttrs("not-an-ip", "vxlan", {"VtepMAC": MAC2}))
    entries = desired_entries(
        [lease(2, "zz:00:00:00:00:02"), lease(3, MAC3.upper().replace(":", "-")), lease(4), bad_ip],
        "flannel.1",
        "eth0",
        lambda lease: False,
    )
    assert entries.fdb == {MAC3: addr("198.51.100.13")}, "a dash-form, upper-case MAC is normalised"
    assert [problem.split(":")[0] for problem in entries.problems] == [
        "lease 10.42.2.0/24",
        "lease 10.42.4.0/24",
        "lease 10.42.5.0/24",
    ]
    assert "no valid VtepMAC" in entries.problems[0] and "not an IPv4 address" in entries.problems[2]


def test_vxlan_a_mac_two_peers_publish_is_sent_to_the_first(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING", logger="pycni.fabric.flannel.backends.vxlan"):
        entries = desired_entries([lease(2, MAC2), lease(3, MAC2)], "flannel.1", "eth0", lambda lease: False)
    assert entries.fdb == {MAC2: addr("198.51.100.12")} and len(entries.routes) == 2
    assert "198.51.100.13" in caplog.text


def test_the_peer_filter() -> None:
    own = lease(1, MAC2)
    outside = Lease(ipaddress.IPv4Network("10.99.0.0/24"), LeaseAttrs("198.51.100.19", "vxlan", {}))
    kept = peers([own, lease(2, MAC2), lease(3, MAC3, "host-gw"), outside], ("vxlan",), own, config().network)
    assert [str(peer.subnet) for peer in kept] == ["10.42.2.0/24"]


def route_msg(dst: str, proto: int, oif: int, gateway: str | None = None) -> RouteMsg:
    return RouteMsg(ipaddress.IPv4Network(dst), proto=proto, oif=oif, gateway=addr(gateway) if gateway else None)


def test_the_routes_an_earlier_pycni_wrote_are_recognised() -> None:
    """Protocol boot, on the device or via the external interface with a gateway: the old stale-route sweep's test."""
    network, own, device = ipaddress.IPv4Network("10.42.0.0/16"), lease(1), 7

    def old(msg: RouteMsg) -> bool:
        return legacy_route(msg, network, own, device, EXT.index)

    assert old(route_msg("10.42.2.0/24", 3, device, "10.42.2.0"))
    assert old(route_msg("10.42.3.0/24", 3, EXT.index, "198.51.100.13"))
    assert not old(route_msg("10.42.0.0/16", 3, EXT.index, "198.51.100.1")), "the network's own route"
    assert not old(route_msg("10.42.1.0/24", 3, device, "10.42.1.0")), "this node's subnet"
    assert not old(route_msg("10.42.4.0/24", 3, EXT.index)), "via the underlay without a gateway"
    assert not old(route_msg("10.42.5.0/24", 3, 9, "10.42.5.0")), "another device"
    for proto in (2, 4, 12):  # kernel, static, BIRD: never the old backends'
        assert not old(route_msg("10.42.6.0/24", proto, device, "10.42.6.0"))
    assert not legacy_route(route_msg("10.42.2.0/24", 3, 0), network, own, 0, EXT.index), "host-gw has no device"


def test_host_gw_routes_per_peer() -> None:
    bad = Lease(ipaddress.IPv4Network("10.42.5.0/24"), LeaseAttrs("", "host-gw"))
    routes, problems = desired_routes([lease(3, backend_type="host-gw"), lease(2, backend_type="host-gw"), bad], "eth0")
    assert routes == [
        Route(ipaddress.IPv4Network("10.42.2.0/24"), dev="eth0", gateway=addr("198.51.100.12")),
        Route(ipaddress.IPv4Network("10.42.3.0/24"), dev="eth0", gateway=addr("198.51.100.13")),
    ]
    assert problems == ["lease 10.42.5.0/24: PublicIP '' is not an IPv4 address"]


# -- udp ---------------------------------------------------------------------------------


def ipv4_packet(src: str, dst: str, ttl: int = 64, proto: int = 6, payload: bytes = b"x" * 20, frag: int = 0) -> bytes:
    header = bytearray(
        struct.pack(
            "!BBHHHBBH4s4s",
            0x45,
            0,
            20 + len(payload),
            1,
            frag,
            ttl,
            proto,
            0,
            socket.inet_aton(src),
            socket.inet_aton(dst),
        )
    )
    struct.pack_into("!H", header, 10, checksum(bytes(header)))
    return bytes(header) + payload


def test_decrement_ttl_patches_the_checksum() -> None:
    for ttl in (2, 64, 255):
        packet = bytearray(ipv4_packet("10.42.1.2", "10.42.2.2", ttl=ttl))
        assert decrement_ttl(packet)
        assert packet[8] == ttl - 1
        assert checksum(bytes(packet[:20])) == 0, "a valid header sums to zero"
    assert not decrement_ttl(bytearray(ipv4_packet("10.42.1.2", "10.42.2.2", ttl=1)))


def test_net_unreachable_quotes_the_offender() -> None:
    offender = ipv4_packet("10.42.1.2", "10.42.9.2")
    reply = net_unreachable(offender, socket.inet_aton("10.42.1.0"))
    assert reply is not None
    assert checksum(reply[:20]) == 0 and checksum(reply[20:]) == 0
    assert reply[9] == 1 and reply[12:16] == socket.inet_aton("10.42.1.0") and reply[16:20] == offender[12:16]
    assert reply[20:22] == b"\x03\x00" and reply[28:] == offender[:28]
    assert net_unreachable(ipv4_packet("10.42.1.2", "10.42.9.2", proto=1), b"\0" * 4) is None, "no ICMP about ICMP"
    assert net_unreachable(ipv4_packet("10.42.1.2", "10.42.9.2", frag=185), b"\0" * 4) is None, "first fragment only"


def test_peer_table() -> None:
    table = PeerTable()
    table.set(ipaddress.IPv4Network("10.42.2.0/24"), "198.51.100.12", 8285)
    table.set(ipaddress.IPv4Network("10.42.3.0/24"), "198.51.100.13", 8285)
    assert table.lookup(int(ipaddress.IPv4Address("10.42.2.77"))) == ("198.51.100.12", 8285)
    assert table.lookup(int(ipaddress.IPv4Address("10.42.4.1"))) is None
    assert table.knows("198.51.100.13") and not table.knows("198.51.100.99")
    table.delete(ipaddress.IPv4Network("10.42.2.0/24"))
    assert table.lookup(int(ipaddress.IPv4Address("10.42.2.77"))) is None and not table.knows("198.51.100.12")
    table.replace({ipaddress.IPv4Network("10.42.5.0/24"): ("198.51.100.15", 8285)})
    assert table.entries() == {ipaddress.IPv4Network("10.42.5.0/24"): ("198.51.100.15", 8285)}


def test_udp_backend_peer_table_follows_events() -> None:
    backend = UdpBackend(EXT, config("udp"))
    backend.add_peer(lease(2, backend_type="udp"))
    backend.add_peer(lease(3, backend_type=""))  # Flannel's own udp leases carry no type
    backend.add_peer(lease(4, backend_type="vxlan"))
    assert set(backend.table.entries()) == {
        ipaddress.IPv4Network("10.42.2.0/24"),
        ipaddress.IPv4Network("10.42.3.0/24"),
    }
    backend.remove_peer(lease(2, backend_type="udp"))
    backend.sync([lease(5, backend_type="udp")])
    assert backend.table.entries() == {ipaddress.IPv4Network("10.42.5.0/24"): ("198.51.100.15", 8285)}
    backend.close()


def read_packet(fd: int, timeout: float = 2.0) -> bytes:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            return os.read(fd, 65535)
        except BlockingIOError:
            time.sleep(0.01)
    raise AssertionError("no packet arrived")


def test_udp_proxies_carry_packets_both_ways_over_loopback() -> None:
    """Two proxies, each with a SOCK_SEQPACKET pair as its "TUN": what one node's kernel routes, the other's gets."""
    tun_a, kernel_a = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    tun_b, kernel_b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    sock_a, sock_b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM), socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock_a.bind(("127.0.0.1", 0))
    sock_b.bind(("127.0.0.1", 0))
    table_a, table_b = PeerTable(), PeerTable()
    table_a.set(ipaddress.IPv4Network("10.42.2.0/24"), "127.0.0.1", sock_b.getsockname()[1])
    table_b.set(ipaddress.IPv4Network("10.42.1.0/24"), "127.0.0.1", sock_a.getsockname()[1])
    proxy_a, proxy_b = UdpProxy(tun_a.fileno(), sock_a, table_a), UdpProxy(tun_b.fileno(), sock_b, table_b)
    proxy_a.tun_address = socket.inet_aton("10.42.1.0")
    kernel_a.setblocking(False)
    kernel_b.setblocking(False)
    try:
        proxy_a.start()
        proxy_b.start()
        request = ipv4_packet("10.42.1.2", "10.42.2.2", payload=b"GET / HTTP/1.0\r\n\r\n" + b"." * 1400)
        kernel_a.send(request)
        arrived = read_packet(kernel_b.fileno())
        assert arrived[8] == 62 and arrived[20:] == request[20:] and checksum(arrived[:20]) == 0
        kernel_b.send(ipv4_packet("10.42.2.2", "10.42.1.2", payload=b"HTTP/1.0 200 OK\r\n"))
        assert read_packet(kernel_a.fileno())[20:] == b"HTTP/1.0 200 OK\r\n"
        kernel_a.send(ipv4_packet("10.42.1.2", "10.42.9.2"))  # nobody owns 10.42.9.0/24
        reply = read_packet(kernel_a.fileno())
        assert reply[9] == 1 and reply[20] == 3 and reply[12:16] == socket.inet_aton("10.42.1.0")
    finally:
        proxy_a.stop()
        proxy_b.stop()
        for thing in (tun_a, kernel_a, tun_b, kernel_b, sock_a, sock_b):
            thing.close()
    assert not proxy_a.running and not proxy_b.running


def test_udp_proxy_drops_datagrams_from_strangers() -> None:
    tun, kernel = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    sock, stranger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM), socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    proxy = UdpProxy(tun.fileno(), sock, PeerTable())
    kernel.setblocking(False)
    try:
        proxy.start()
        stranger.sendto(ipv4_packet("10.42.7.2", "10.42.1.2"), sock.getsockname())
        with pytest.raises(AssertionError, match="no packet"):
            read_packet(kernel.fileno(), timeout=0.3)
    finally:
        proxy.stop()
        for thing in (tun, kernel, sock, stranger):
            thing.close()


def test_json_roundtrip_of_a_hand_made_lease() -> None:
    text = LeaseAttrs("198.51.100.12", "vxlan", {"VNI": 1, "VtepMAC": MAC2}).to_json()
    assert json.loads(text)["BackendData"] == {"VNI": 1, "VtepMAC": MAC2}
