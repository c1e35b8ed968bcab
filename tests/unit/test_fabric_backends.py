"""The fabric backends without root: options, MTUs, BackendData, and the netlink requests per peer.

The vxlan and host-gw backends run against :class:`FakeIPRoute`, which
keeps links, addresses, neighbours, FDB entries and routes in dicts and
records every request, so the order and content of what a peer costs are
checked exactly. The udp proxy runs for real over loopback UDP with a
SOCK_SEQPACKET pair standing in for the TUN device.
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

from pycni.fabric.backends import BACKENDS, ExternalInterface
from pycni.fabric.backends import vxlan as vxlan_module
from pycni.fabric.backends.common import BackendError
from pycni.fabric.backends.host_gw import NAT_ERROR, HostGwBackend
from pycni.fabric.backends.udp import UdpBackend
from pycni.fabric.backends.udp_proxy import PeerTable, UdpProxy, checksum, decrement_ttl, net_unreachable
from pycni.fabric.backends.vxlan import VxlanBackend, VxlanOptions, incompatibility
from pycni.fabric.model import ConfigError, Lease, LeaseAttrs, NetworkConfig
from pycni.net import overlay
from pycni.net.errors import NetError

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
    """Links, addresses, neighbours (AF_INET and AF_BRIDGE) and routes; every request is recorded."""

    def __init__(self) -> None:
        self.links: dict[str, FakeMsg] = {
            "eth0": FakeMsg(index=2, ifname="eth0", kind="veth", address="0e:00:00:00:00:01", mtu=1500, flags=1),
            "cni0": FakeMsg(index=3, ifname="cni0", kind="bridge", address="0e:00:00:00:00:0c", mtu=1450, flags=1),
        }
        self.addrs: dict[int, list[tuple[str, int]]] = {}
        self.neigh_table: dict[tuple[int, int, str, str], FakeMsg] = {}  # (family, ifindex, dst, mac)
        self.route_table: dict[str, FakeMsg] = {"10.42.1.0/24": FakeMsg(dst="10.42.1.0", dst_len=24, oif=3, flags=0)}
        self.calls: list[tuple[str, str, dict[str, Any]]] = []
        self.fail: dict[tuple[str, str], int] = {}
        self.gateway_to: dict[str, str] = {}  # route get answers: ip -> gateway
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

    # neighbours and FDB
    def neigh(self, command: str, **kw: Any) -> list[FakeMsg]:
        self._record("neigh", command, kw)
        family, index = kw.get("family", socket.AF_INET), kw["ifindex"]
        if command == "dump":
            return [m for (f, i, _, _), m in self.neigh_table.items() if f == family and i == index]
        if command == "replace":
            if family == socket.AF_INET:  # one entry per IP
                self._drop(lambda f, i, d, m: (f, i, d) == (family, index, kw["dst"]))
            else:  # vxlan FDB: one entry per MAC (replace swaps the remote)
                self._drop(lambda f, i, d, m: (f, i, m) == (family, index, kw["lladdr"]))
            self.neigh_table[(family, index, kw["dst"], kw["lladdr"])] = FakeMsg(
                ifindex=index, dst=kw["dst"], lladdr=kw["lladdr"], state=kw["state"]
            )
        elif command == "del":
            before = len(self.neigh_table)
            self._drop(
                lambda f, i, d, m: (
                    (f, i, d) == (family, index, kw["dst"]) and (family == socket.AF_INET or m == kw["lladdr"])
                )
            )
            if len(self.neigh_table) == before:
                raise NetlinkError(errno.ENOENT)
        return []

    def _drop(self, match: Any) -> None:
        self.neigh_table = {key: m for key, m in self.neigh_table.items() if not match(*key)}

    def neighbours(self, family: int = socket.AF_INET) -> set[tuple[int, str, str]]:
        return {(i, d, m) for (f, i, d, m) in self.neigh_table if f == family}

    # routes
    def route(self, command: str, **kw: Any) -> list[FakeMsg]:
        self._record("route", command, kw)
        if command == "get":
            gateway = self.gateway_to.get(kw["dst"])
            return [FakeMsg(gateway=gateway, oif=2)]
        if command in ("replace", "add"):
            self.route_table[kw["dst"]] = FakeMsg(
                dst=kw["dst"].split("/")[0],
                dst_len=int(kw["dst"].split("/")[1]),
                gateway=kw.get("gateway"),
                oif=kw["oif"],
                flags=kw.get("flags", 0),
            )
        elif command == "del":
            found = self.route_table.get(kw["dst"])
            if found is None or found["oif"] != kw["oif"] or found.get("gateway") != kw.get("gateway"):
                raise NetlinkError(errno.ESRCH)
            del self.route_table[kw["dst"]]
        return []

    def get_routes(self, family: int, table: int) -> list[FakeMsg]:
        return list(self.route_table.values())


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
    with caplog.at_level("WARNING", logger="pycni.fabric.backends.vxlan"):
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


# -- vxlan peers -------------------------------------------------------------------------


def test_add_peer_neighbour_fdb_route_in_that_order(tmp_path: Path, ipr: FakeIPRoute) -> None:
    backend = vxlan(ipr, tmp_path)
    index = ipr.links["flannel.1"]["index"]
    backend.add_peer(lease(2, MAC2))
    neighbour = {"ifindex": index, "dst": "10.42.2.0", "lladdr": MAC2, "state": 0x80, "family": socket.AF_INET}
    fdb = {"family": 7, "ifindex": index, "lladdr": MAC2, "dst": "198.51.100.12", "state": 0x80, "flags": 2}
    route = {"dst": "10.42.2.0/24", "gateway": "10.42.2.0", "oif": index, "family": socket.AF_INET, "proto": 3}
    assert ipr.calls == [
        ("neigh", "replace", neighbour),
        ("neigh", "replace", fdb),
        ("route", "replace", {**route, "table": 254, "flags": 4}),  # RTNH_F_ONLINK
    ]
    ipr.calls.clear()
    backend.add_peer(lease(2, MAC2))  # a replayed event: the same requests, the same state
    assert len(ipr.neighbours()) == 1 and len(ipr.neighbours(7)) == 1


def test_remove_peer_route_fdb_neighbour_and_tolerates_missing(tmp_path: Path, ipr: FakeIPRoute) -> None:
    backend = vxlan(ipr, tmp_path)
    index = ipr.links["flannel.1"]["index"]
    backend.add_peer(lease(2, MAC2))
    backend.add_peer(lease(3, MAC3))
    ipr.calls.clear()
    backend.remove_peer(lease(2, MAC2))
    assert [(method, command, kw.get("family")) for method, command, kw in ipr.calls] == [
        ("route", "del", socket.AF_INET),
        ("neigh", "del", 7),
        ("neigh", "del", socket.AF_INET),
    ]
    assert ipr.neighbours() == {(index, "10.42.3.0", MAC3)}
    assert ipr.neighbours(7) == {(index, "198.51.100.13", MAC3)}
    assert "10.42.2.0/24" not in ipr.route_table and "10.42.3.0/24" in ipr.route_table
    backend.remove_peer(lease(2, MAC2))  # everything already gone: ESRCH/ENOENT are success


def test_remove_peer_without_backend_data_finds_the_mac(tmp_path: Path, ipr: FakeIPRoute) -> None:
    backend = vxlan(ipr, tmp_path)
    backend.add_peer(lease(2, MAC2))
    backend.remove_peer(lease(2))  # a delete event that carries no value
    assert ipr.neighbours() == set() and ipr.neighbours(7) == set()


def test_add_peer_rolls_back_when_the_fdb_fails(tmp_path: Path, ipr: FakeIPRoute) -> None:
    backend = vxlan(ipr, tmp_path)
    real_neigh = ipr.neigh

    def neigh(command: str, **kw: Any) -> list[FakeMsg]:
        if command == "replace" and kw.get("family") == 7:
            raise NetlinkError(errno.EINVAL)
        return real_neigh(command, **kw)

    ipr.neigh = neigh  # type: ignore[method-assign]
    with pytest.raises(NetError, match="failed to set fdb entry"):
        backend.add_peer(lease(2, MAC2))
    assert ipr.neighbours() == set() and "10.42.2.0/24" not in ipr.route_table


def test_add_peer_with_a_new_mac_drops_the_old_fdb_entry(tmp_path: Path, ipr: FakeIPRoute) -> None:
    backend = vxlan(ipr, tmp_path)
    index = ipr.links["flannel.1"]["index"]
    backend.add_peer(lease(2, MAC2))
    backend.add_peer(lease(2, MAC3))  # the peer's device was recreated with a new MAC
    assert ipr.neighbours() == {(index, "10.42.2.0", MAC3)}
    assert ipr.neighbours(7) == {(index, "198.51.100.12", MAC3)}


def test_peers_of_other_types_and_our_own_subnet_are_ignored(tmp_path: Path, ipr: FakeIPRoute) -> None:
    backend = vxlan(ipr, tmp_path)
    backend.add_peer(lease(1, MAC2))
    backend.add_peer(lease(2, MAC2, backend_type="host-gw"))
    assert ipr.calls == []


def test_bad_vtep_mac_is_an_error(tmp_path: Path, ipr: FakeIPRoute) -> None:
    backend = vxlan(ipr, tmp_path)
    with pytest.raises(BackendError, match="no valid VtepMAC"):
        backend.add_peer(lease(2, "zz:00:00:00:00:02"))


def test_direct_routing_when_the_peer_is_on_link(tmp_path: Path, ipr: FakeIPRoute) -> None:
    backend = vxlan(ipr, tmp_path, DirectRouting=True)
    ipr.gateway_to["198.51.100.13"] = "198.51.100.1"  # node3 is behind a router
    backend.add_peer(lease(2, MAC2))
    backend.add_peer(lease(3, MAC3))
    assert ipr.route_table["10.42.2.0/24"]["gateway"] == "198.51.100.12" and ipr.route_table["10.42.2.0/24"]["oif"] == 2
    assert ipr.route_table["10.42.3.0/24"]["gateway"] == "10.42.3.0"
    assert {dst for _, dst, _ in ipr.neighbours()} == {"10.42.3.0"}
    backend.remove_peer(lease(2, MAC2))
    assert "10.42.2.0/24" not in ipr.route_table


def test_sync_programs_peers_and_removes_only_stale_entries(tmp_path: Path, ipr: FakeIPRoute) -> None:
    backend = vxlan(ipr, tmp_path)
    index = ipr.links["flannel.1"]["index"]
    backend.add_peer(lease(2, MAC2))
    backend.add_peer(lease(9, "0e:00:00:00:00:09"))  # a peer that has since gone
    ipr.route("replace", dst="10.42.8.0/24", gateway="198.51.100.18", oif=2)  # stale, direct-routed
    ipr.route("replace", dst="10.99.0.0/24", gateway="198.51.100.12", oif=2)  # outside the Network
    ipr.route("replace", dst="10.42.0.0/16", gateway="198.51.100.1", oif=2)  # the Network itself
    ipr.neigh("replace", ifindex=2, dst="198.51.100.77", lladdr="0e:00:00:00:00:77", state=0x80)  # on eth0
    ipr.calls.clear()
    backend.sync([lease(2, MAC2), lease(3, MAC3)])
    assert ipr.neighbours() == {
        (index, "10.42.2.0", MAC2),
        (index, "10.42.3.0", MAC3),
        (2, "198.51.100.77", "0e:00:00:00:00:77"),
    }
    assert ipr.neighbours(7) == {(index, "198.51.100.12", MAC2), (index, "198.51.100.13", MAC3)}
    assert set(ipr.route_table) == {"10.42.1.0/24", "10.42.2.0/24", "10.42.3.0/24", "10.99.0.0/24", "10.42.0.0/16"}
    ipr.calls.clear()
    backend.sync([lease(2, MAC2), lease(3, MAC3)])
    assert all(command == "replace" for _, command, _ in ipr.calls), "a second sync only re-asserts"


def test_sync_reports_a_failed_peer_and_still_programs_and_prunes_the_rest(tmp_path: Path, ipr: FakeIPRoute) -> None:
    backend = vxlan(ipr, tmp_path)
    index = ipr.links["flannel.1"]["index"]
    backend.add_peer(lease(9, "0e:00:00:00:00:09"))
    real_route = ipr.route

    def route(command: str, **kw: Any) -> list[FakeMsg]:
        if command == "replace" and kw["dst"] == "10.42.2.0/24":
            raise NetlinkError(errno.ENETUNREACH)
        return real_route(command, **kw)

    ipr.route = route  # type: ignore[method-assign]
    with pytest.raises(BackendError, match="1 peers failed") as info:
        backend.sync([lease(2, MAC2), lease(3, MAC3)])
    assert len(info.value.errors) == 1 and "10.42.2.0/24" in str(info.value.errors[0])
    assert ipr.neighbours() == {(index, "10.42.3.0", MAC3)}, "peer 2 rolled back, the gone peer 9 pruned"
    assert set(ipr.route_table) == {"10.42.1.0/24", "10.42.3.0/24"}


# -- host-gw -----------------------------------------------------------------------------


def test_host_gw_route_per_peer_and_sync(ipr: FakeIPRoute) -> None:
    backend = HostGwBackend(EXT, config("host-gw"), ipr=ipr)  # type: ignore[arg-type]
    backend.configure(lease(1, backend_type="host-gw"))
    backend.add_peer(lease(2, backend_type="host-gw"))
    assert ipr.calls == [
        (
            "route",
            "replace",
            {
                "dst": "10.42.2.0/24",
                "gateway": "198.51.100.12",
                "oif": 2,
                "family": socket.AF_INET,
                "proto": 3,
                "table": 254,
            },
        ),
    ]
    ipr.route("replace", dst="10.42.9.0/24", gateway="198.51.100.19", oif=2)
    ipr.route("replace", dst="10.99.0.0/24", gateway="198.51.100.12", oif=2)
    del ipr.route_table["10.42.2.0/24"]  # someone deleted it: the periodic sync puts it back
    backend.sync([lease(2, backend_type="host-gw"), lease(3, backend_type="host-gw")])
    assert set(ipr.route_table) == {"10.42.1.0/24", "10.42.2.0/24", "10.42.3.0/24", "10.99.0.0/24"}
    backend.remove_peer(lease(3, backend_type="host-gw"))
    backend.remove_peer(lease(3, backend_type="host-gw"))
    assert "10.42.3.0/24" not in ipr.route_table


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
