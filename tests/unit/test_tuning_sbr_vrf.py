"""tuning, sbr and vrf without a kernel: config parsing, saved state, and the netlink requests made.

The kernel here lacks VRF, so the vrf plugin's netlink conversation is held
to a recording fake of pyroute2's ``IPRoute`` that behaves like the kernel
where it matters (enslaving flushes a link's routes and global IPv6
addresses; a re-added address gets its host route in the VRF's table).
"""

from __future__ import annotations

import errno
import ipaddress
import json
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from pyroute2.netlink.exceptions import NetlinkError

from pycni.net import netns, rule
from pycni.net import vrf as vrfdev
from pycni.plugins.meta import sbr, tuning, vrf
from pycni.skel import CmdArgs
from pycni.spec import CNIError, Result

# -- a recording IPRoute -------------------------------------------------------


class Msg(dict[str, Any]):
    """A netlink message as pyroute2 shows it: ``get`` and ``get_nested``."""

    def get_nested(self, *keys: str) -> Any:
        value: Any = self
        for key in keys:
            if not isinstance(value, dict):
                return None
            value = value.get(key)
        return value


class FakeIPRoute:
    """Links, addresses and routes in memory; every request is recorded in ``calls``."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, dict[str, Any]]] = []
        self.links: dict[int, dict[str, Any]] = {}
        self.addrs: list[dict[str, Any]] = []
        self.routes: list[dict[str, Any]] = []
        self.rules: list[dict[str, Any]] = []
        self.fail_on: tuple[str, str] | None = None

    # context manager and bookkeeping
    def __enter__(self) -> FakeIPRoute:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def close(self) -> None:
        pass

    def add_link(self, name: str, kind: str = "veth", master: int = 0, table: int = 0) -> int:
        index = max(self.links, default=1) + 1
        self.links[index] = {"ifname": name, "kind": kind, "master": master, "table": table}
        return index

    def _record(self, method: str, command: str, kwargs: dict[str, Any]) -> None:
        self.calls.append((method, command, kwargs))
        if self.fail_on == (method, command):
            from pyroute2.netlink.exceptions import NetlinkError

            raise NetlinkError(22, "Invalid argument")

    def requests(self, method: str) -> list[tuple[str, dict[str, Any]]]:
        return [(command, kwargs) for m, command, kwargs in self.calls if m == method]

    # links
    def _link_msg(self, index: int) -> Msg:
        link = self.links[index]
        info: dict[str, Any] = {"IFLA_INFO_KIND": link["kind"]}
        if link["kind"] == "vrf":
            info["IFLA_INFO_DATA"] = {"IFLA_VRF_TABLE": link["table"]}
        return Msg(
            index=index,
            ifname=link["ifname"],
            flags=0,
            mtu=1500,
            address=f"02:00:00:00:00:{index:02x}",
            master=link["master"],
            IFLA_LINKINFO=info,
        )

    def get_links(self, *indexes: int, ifname: str | None = None) -> list[Msg]:
        if ifname is not None:
            return [self._link_msg(i) for i, link in self.links.items() if link["ifname"] == ifname]
        if indexes:
            return [self._link_msg(i) for i in indexes if i in self.links]
        return [self._link_msg(i) for i in sorted(self.links)]

    def link(self, command: str, **kwargs: Any) -> list[Any]:
        if command == "get":  # a lookup (RTM_GETLINK by name or index), not a change: not recorded
            found = self.get_links(kwargs["index"]) if "index" in kwargs else self.get_links(ifname=kwargs["ifname"])
            if not found:
                raise NetlinkError(errno.ENODEV, "No such device")
            return found
        self._record("link", command, kwargs)
        if command == "add":
            self.add_link(kwargs["ifname"], kwargs["kind"], table=kwargs.get("vrf_table", 0))
        elif command == "del":
            self.links.pop(kwargs["index"], None)
        elif command == "set" and "master" in kwargs:
            index = kwargs["index"]
            self.links[index]["master"] = kwargs["master"]
            # The kernel flushes the link's routes and (without keep_addr_on_down) its global IPv6 addresses.
            self.routes = [r for r in self.routes if r["oif"] != index]
            self.addrs = [a for a in self.addrs if not (a["index"] == index and a["family"] == socket.AF_INET6)]
        return []

    # addresses
    def get_addr(self, index: int, family: int | None = None) -> list[Msg]:
        return [
            Msg(address=a["address"], prefixlen=a["prefixlen"], scope=0, flags=a.get("flags", 0))
            for a in self.addrs
            if a["index"] == index and (family is None or a["family"] == family)
        ]

    def addr(self, command: str, **kwargs: Any) -> list[Any]:
        self._record("addr", command, kwargs)
        if command == "add":
            index = kwargs["index"]
            self.addrs.append({**kwargs, "family": kwargs.get("family", socket.AF_INET)})
            master = self.links[index]["master"]
            if master:  # the kernel puts the host route into the VRF's table
                table = self.links[master]["table"]
                self.add_route(socket.AF_INET6, kwargs["address"], 128, index, table, scope=0, type=2)
        return []

    # routes
    def add_route(self, family: int, dst: str | None, dst_len: int, oif: int, table: int = 254, **extra: Any) -> None:
        route = {"family": family, "dst": dst, "dst_len": dst_len, "oif": oif, "table": table}
        self.routes.append({"scope": 0, "proto": 3, "type": 1, "flags": 0, **route, **extra})

    def get_routes(self, family: int = 255) -> list[Msg]:
        return [Msg(r) for r in self.routes if family in (255, r["family"])]

    def route(self, command: str, **kwargs: Any) -> list[Any]:
        self._record("route", command, kwargs)
        return []

    # rules
    def get_rules(self, family: int) -> list[Msg]:
        return [Msg({"action": 1, "src_len": 0, **r}) for r in self.rules if r["family"] == family]

    def rule(self, command: str, **kwargs: Any) -> list[Any]:
        self._record("rule", command, kwargs)
        return []


def make_args(config: dict[str, Any], command: str = "ADD", cni_args: str = "", ifname: str = "eth0") -> CmdArgs:
    config = {"cniVersion": "1.0.0", "name": "unitnet", **config}
    return CmdArgs(
        command=command,
        container_id="cid1",
        netns="/run/netns/unit-fake",
        ifname=ifname,
        args=cni_args,
        path=["/nonexistent"],
        stdin=json.dumps(config).encode(),
        config=config,
    )


PREV = {
    "cniVersion": "1.0.0",
    "interfaces": [{"name": "eth0", "mac": "02:00:00:00:00:aa", "sandbox": "/run/netns/unit-fake"}],
    "ips": [{"address": "10.0.0.2/24", "gateway": "10.0.0.1", "interface": 0}],
}


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeIPRoute:
    """``netns.handle``/``netns.iproute`` hand out the fake instead of entering a namespace."""
    ipr = FakeIPRoute()

    @contextmanager
    def handle(path: str, fd: int | None = None) -> Iterator[int]:
        yield -1

    monkeypatch.setattr(netns, "handle", handle)
    monkeypatch.setattr(netns, "iproute", lambda path, fd=None: ipr)
    return ipr


# -- tuning: configuration -----------------------------------------------------


def test_tuning_mac_precedence_is_gos() -> None:
    """config mac < CNI_ARGS MAC < runtimeConfig.mac < args.cni.mac."""
    config: dict[str, Any] = {"mac": "c2:00:00:00:00:00"}
    assert tuning.load_conf(make_args(config)).mac == "c2:00:00:00:00:00"
    assert tuning.load_conf(make_args(config, cni_args="MAC=c2:00:00:00:00:01")).mac == "c2:00:00:00:00:01"
    config["runtimeConfig"] = {"mac": "C2-00-00-00-00-02"}
    assert tuning.load_conf(make_args(config, cni_args="MAC=c2:00:00:00:00:01")).mac == "c2:00:00:00:00:02"
    config["args"] = {"cni": {"mac": "c200.0000.0003"}}
    assert tuning.load_conf(make_args(config, cni_args="MAC=c2:00:00:00:00:01")).mac == "c2:00:00:00:00:03"
    config["args"] = {"cni": {"mac": ""}}
    assert tuning.load_conf(make_args(config)).mac == "", "an empty args.cni.mac clears it, as in Go"


def test_tuning_args_cni_overrides_and_optional_keys() -> None:
    config = {
        "sysctl": {"net.a": "1", "net.b": "2"},
        "promisc": True,
        "mtu": 1400,
        "args": {"cni": {"sysctl": {"net.b": "3"}, "promisc": False, "mtu": 1300, "allmulti": False, "txQLen": 0}},
    }
    conf = tuning.load_conf(make_args(config))
    assert conf.sysctl == {"net.a": "1", "net.b": "3"}
    assert (conf.promisc, conf.mtu, conf.allmulti, conf.txqlen) == (False, 1300, False, 0)
    assert conf.data_dir == "/run/cni/tuning"
    bare = tuning.load_conf(make_args({}))
    assert (bare.allmulti, bare.txqlen, bare.changes_link) == (None, None, False)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"mtu": "1500"}, "mtu: expected an integer"),
        ({"sysctl": {"net.a": 1}}, "sysctl.net.a: expected a string"),
        ({"args": {"cni": {"sysctl": {"net.a": True}}}}, "args.cni.sysctl.net.a: expected a string"),
        ({"mac": "00:11:22:33:44"}, "invalid args 00:11:22:33:44 for MAC addr"),
        ({"txQLen": 2**32}, "txQLen: must be between 0 and 4294967295"),
    ],
)
def test_tuning_bad_config_is_code_7(config: dict[str, Any], message: str) -> None:
    with pytest.raises(CNIError) as caught:
        tuning.load_conf(make_args(config))
    assert caught.value.code == 7
    assert message in caught.value.msg


def test_tuning_duplicated_sysctl_keys() -> None:
    top = b'{"name": "n", "sysctl": {"net.a": "1", "net.b": "1", "net.a": "0"}}'
    nested = b'{"name": "n", "args": {"cni": {"sysctl": {"net.x": "1", "net.x": "2"}}}}'
    for stdin in (top, nested):
        with pytest.raises(CNIError) as caught:
            tuning.reject_duplicate_sysctls(stdin)
        assert caught.value.code == 7
        assert caught.value.msg == "duplicated sysctl keys are not allowed"
    tuning.reject_duplicate_sysctls(b'{"name": "n", "sysctl": {"net.a": "1"}, "other": {"k": 1, "k": 2}}')


def test_tuning_sysctl_paths() -> None:
    assert tuning.sysctl_path("net.ipv4.conf.IFNAME.arp_notify", "eth0.100") == "net/ipv4/conf/eth0.100/arp_notify"
    assert tuning.sysctl_path("net.IFNAME.IFNAME", "e0") == "net/e0/IFNAME", "only the first IFNAME"
    assert tuning.sysctl_path("/net.core.somaxconn", "e0") == "net/core/somaxconn"
    for key in ("kernel.hostname", "net", "netfilter.x", "/proc/sys/kernel/x"):
        with pytest.raises(CNIError) as caught:
            tuning.sysctl_path(key, "eth0")
        assert caught.value.code == 7 and caught.value.msg.startswith("invalid net sysctl key: ")


def test_tuning_allowlist(tmp_path: Path) -> None:
    path = tmp_path / "allowlist.conf"
    tuning.check_allowlist(["kernel.anything"], str(path))  # absent: everything allowed
    path.write_text("  ^net\\.ipv4\\.conf\\.all\\.[a-z_]*$ \n\nsomaxconn\n")
    tuning.check_allowlist(["net.ipv4.conf.all.arp_ignore", "net.core.somaxconn"], str(path))
    with pytest.raises(CNIError) as caught:
        tuning.check_allowlist(["net.ipv4.conf.eth0.arp_ignore"], str(path))
    assert caught.value.code == 7
    assert caught.value.msg == (
        "Sysctl net.ipv4.conf.eth0.arp_ignore is not allowed. Only the following sysctls are allowed: "
        "[^net\\.ipv4\\.conf\\.all\\.[a-z_]*$ somaxconn]"
    )
    path.write_text("net.(\n")
    with pytest.raises(CNIError) as caught:
        tuning.check_allowlist(["net.a"], str(path))
    assert caught.value.code == 999 and "invalid regular expression" in caught.value.msg


# -- tuning: saved state, DEL and GC -------------------------------------------


def test_tuning_saved_file_reads_gos_and_writes_gos_keys() -> None:
    go_file = b'{\n "mac": "02:00:00:00:00:01",\n "promisc": false,\n "mtu": 1500,\n "allmulti": true\n}'
    saved = tuning.Saved.from_json(go_file)
    assert (saved.mac, saved.promisc, saved.mtu, saved.allmulti, saved.txqlen) == (
        "02:00:00:00:00:01",
        False,
        1500,
        True,
        None,
    )
    saved.txqlen, saved.sysctl, saved.network = 1000, {"net/core/somaxconn": "4096"}, "n"
    data = json.loads(saved.to_json())
    assert list(data) == ["mac", "promisc", "mtu", "allmulti", "txQLen", "sysctl", "network"]
    assert tuning.Saved.from_json(saved.to_json()) == saved
    with pytest.raises(ValueError):
        tuning.Saved.from_json(b'["mtu"]')


def test_tuning_saved_file_damaged_inside_keeps_what_is_readable() -> None:
    """The corruption campaign's "wrong types": one bad field no longer loses every other one."""
    damaged = b'{"mtu": "big", "mac": "zz", "promisc": [], "sysctl": {"net/core/somaxconn": "128", "net/x": 5}}'
    saved = tuning.Saved.from_json(damaged)
    assert (saved.mtu, saved.mac, saved.promisc) == (0, "", None)
    assert saved.sysctl == {"net/core/somaxconn": "128"}
    assert len(saved.problems) == 4
    assert tuning.Saved.from_json(b'{"sysctl": []}').problems == [
        "saved values.sysctl: expected an object, got array []"
    ]


def test_tuning_del_forgets_unusable_or_namespaceless_state(tmp_path: Path) -> None:
    config = {"type": "tuning", "dataDir": str(tmp_path / "state")}
    corrupt = tmp_path / "state" / "cid1_eth0.json"
    corrupt.parent.mkdir()
    corrupt.write_text("{not json")
    args = make_args(config, "DEL")
    tuning.delete(args)
    assert not corrupt.exists()
    outside = tmp_path / "outside"
    outside.write_text('{"mtu": 1500}')
    for damage in (corrupt.mkdir, lambda: corrupt.symlink_to(outside), lambda: os.mkfifo(corrupt)):
        damage()
        tuning.delete(args)  # nothing readable to restore: removed, a symlink itself
        assert not os.path.lexists(corrupt)
    assert outside.read_text() == '{"mtu": 1500}'
    corrupt.write_text('{"mtu": 1500}')
    args.netns = ""
    tuning.delete(args)
    assert not corrupt.exists(), "no namespace to restore into: the file goes"
    tuning.delete(args)  # nothing saved: nothing to do


def test_tuning_gc(tmp_path: Path) -> None:
    def saved(name: str, network: str | None) -> Path:
        path = tmp_path / name
        path.write_text(json.dumps({"mtu": 1500, **({"network": network} if network else {})}))
        return path

    keep, stale = saved("keep_eth0.json", "unitnet"), saved("stale_eth0.json", "unitnet")
    other, go = saved("stale_net1.json", "othernet"), saved("go_eth0.json", None)
    (tmp_path / ".tmp-x").write_text("")
    config: dict[str, Any] = {"cniVersion": "1.1.0", "type": "tuning", "dataDir": str(tmp_path)}
    tuning.gc(make_args(config, "GC"))
    assert stale.exists(), "no list: nothing removed"
    config["cni.dev/valid-attachments"] = [{"containerID": "keep", "ifname": "eth0"}]
    tuning.gc(make_args(config, "GC"))
    assert keep.exists() and other.exists() and go.exists() and not stale.exists()
    config["dataDir"] = str(tmp_path / "absent")
    tuning.gc(make_args(config, "GC"))


# -- sbr -----------------------------------------------------------------------


def test_sbr_config() -> None:
    conf = sbr.load_conf(make_args({"table": 0, "gateways": ["::ffff:10.0.0.9", "fd00::1"], "addSourceHints": True}))
    assert conf.table == 0, "table 0 is a table, as Go's *int"
    assert {v: str(g) for v, g in conf.gateways.items()} == {4: "10.0.0.9", 6: "fd00::1"}
    assert sbr.load_conf(make_args({})).table is None
    with pytest.raises(CNIError) as caught:
        sbr.load_conf(make_args({"gateways": ["fd00::1", "fd00::2"]}))
    assert caught.value.code == 7
    assert caught.value.msg == "gateways list contains multiple IPv6 addresses: fd00::1 and fd00::2"


def test_sbr_interface_ips_follow_go() -> None:
    result = Result.from_dict(
        {
            "cniVersion": "1.0.0",
            "interfaces": [{"name": "eth0"}, {"name": "net1"}],
            "ips": [
                {"address": "10.0.0.2/24", "interface": 0},
                {"address": "10.1.0.2/24", "interface": 1},
                {"address": "10.2.0.2/24"},
                {"address": "10.3.0.2/24", "interface": 7},
            ],
        }
    )
    assert [str(ip.address) for ip in sbr.interface_ips(result, "eth0")] == [
        "10.0.0.2/24",
        "10.2.0.2/24",
        "10.3.0.2/24",
    ]
    with pytest.raises(CNIError, match="No IP addresses supplied on interface: eth0"):
        sbr.interface_ips(Result("1.0.0"), "eth0")


def test_rule_requests() -> None:
    ipr = FakeIPRoute()
    ipr.rules = [
        {"family": socket.AF_INET, "FRA_TABLE": 254, "table": 254, "FRA_PRIORITY": 32766},
        {"family": socket.AF_INET, "FRA_TABLE": 100, "table": 100, "FRA_SRC": "10.0.0.2", "src_len": 32},
    ]
    ipr.add_route(socket.AF_INET, "10.9.0.0", 24, oif=2, table=101)
    assert rule.first_free_table(rule.used_tables(ipr), 100) == 102
    assert rule.add_source_rule(ipr, ipaddress.ip_address("10.0.0.2"), 100) is False, "already there"
    assert ipr.requests("rule") == []
    assert rule.add_source_rule(ipr, ipaddress.ip_address("fd00::2"), 102) is True
    assert ipr.requests("rule") == [
        ("add", {"family": socket.AF_INET6, "src": "fd00::2", "src_len": 128, "table": 102, "priority": None})
    ]


def test_sbr_del_removes_rules_of_the_link_addresses_and_their_tables() -> None:
    ipr = FakeIPRoute()
    eth0 = ipr.add_link("eth0")
    ipr.addrs = [{"index": eth0, "family": socket.AF_INET, "address": "10.0.0.2", "prefixlen": 24}]
    ipr.rules = [
        {
            "family": socket.AF_INET,
            "FRA_TABLE": 100,
            "table": 100,
            "FRA_SRC": "10.0.0.2",
            "src_len": 32,
            "FRA_PRIORITY": 32765,
        },
        {
            "family": socket.AF_INET,
            "FRA_TABLE": 101,
            "table": 101,
            "FRA_SRC": "10.0.0.3",
            "src_len": 32,
            "FRA_PRIORITY": 32764,
        },
    ]
    ipr.add_route(socket.AF_INET, None, 0, oif=eth0, table=100, gateway="10.0.0.1")
    ipr.add_route(socket.AF_INET, "10.5.0.0", 16, oif=eth0 + 50, table=100, gateway="10.0.0.1")
    sbr.tidy_rules(ipr, "eth0", None)
    assert ipr.requests("rule") == [
        (
            "del",
            {"family": socket.AF_INET, "table": 100, "action": 1, "priority": 32765, "src": "10.0.0.2", "src_len": 32},
        )
    ]
    deleted = ipr.requests("route")
    assert [(c, k["table"], k["oif"], k["dst_len"]) for c, k in deleted] == [("del", 100, eth0, 0)], "only this link's"
    sbr.tidy_rules(ipr, "missing0", None)  # a link that is gone: nothing to do


# -- vrf -----------------------------------------------------------------------


def test_vrf_create_picks_the_first_table_no_vrf_uses() -> None:
    ipr = FakeIPRoute()
    ipr.add_link("red", "vrf", table=1)
    ipr.add_link("green", "vrf", table=2)
    ipr.add_link("eth0", "veth", table=3)
    ipr.add_link("pink", "vrf", table=4)
    created = vrfdev.create(ipr, "blue")
    assert created.table == 3
    assert ipr.requests("link") == [
        ("add", {"ifname": "blue", "kind": "vrf", "vrf_table": 3}),
        ("set", {"index": created.index, "state": "up"}),
    ]
    assert vrfdev.create(ipr, "gold", 77).table == 77
    assert vrfdev.find(ipr, "gold") == vrfdev.Vrf(created.index + 1, "gold", 77)
    assert vrfdev.find(ipr, "nothing") is None
    with pytest.raises(CNIError, match="Netlink eth0 is not a VRF"):
        vrfdev.find(ipr, "eth0")


def test_vrf_enslave_keeps_ipv6_addresses_and_moves_universe_routes() -> None:
    ipr = FakeIPRoute()
    blue = vrfdev.create(ipr, "blue", 10)
    eth0 = ipr.add_link("eth0")
    ipr.addrs = [
        {"index": eth0, "family": socket.AF_INET6, "address": "fd00::2", "prefixlen": 64, "flags": 0x02},
        {"index": eth0, "family": socket.AF_INET, "address": "10.0.0.2", "prefixlen": 24},
    ]
    ipr.add_route(socket.AF_INET, None, 0, oif=eth0, gateway="10.0.0.1")
    ipr.add_route(socket.AF_INET, "10.0.0.0", 24, oif=eth0, scope=253, proto=2, prefsrc="10.0.0.2")
    ipr.add_route(socket.AF_INET, "10.9.0.0", 16, oif=eth0 + 1, gateway="10.0.0.1")
    ipr.calls.clear()

    vrfdev.enslave(ipr, blue, "eth0")
    assert ipr.requests("link") == [("set", {"index": eth0, "master": blue.index})]
    assert ipr.requests("addr") == [
        (
            "add",
            {"index": eth0, "family": socket.AF_INET6, "address": "fd00::2", "prefixlen": 64, "flags": 0x02},
        )
    ]
    moved = ipr.requests("route")
    assert moved == [
        (
            "replace",
            {
                "family": socket.AF_INET,
                "dst": "0.0.0.0",
                "dst_len": 0,
                "table": 10,
                "oif": eth0,
                "scope": 0,
                "proto": 3,
                "type": 1,
                "gateway": "10.0.0.1",
            },
        )
    ], "only the universe-scope route of this link, into the VRF's table"

    with pytest.raises(CNIError, match="interface eth0 has already a master set: blue"):
        vrfdev.enslave(ipr, blue, "eth0")


def test_vrf_enslave_gives_up_when_the_address_route_never_comes(monkeypatch: pytest.MonkeyPatch) -> None:
    ipr = FakeIPRoute()
    blue = vrfdev.create(ipr, "blue", 10)
    eth0 = ipr.add_link("eth0")
    ipr.addrs = [{"index": eth0, "family": socket.AF_INET6, "address": "fd00::2", "prefixlen": 64}]
    monkeypatch.setattr(ipr, "add_route", lambda *a, **k: None)  # the kernel never adds the host route
    monkeypatch.setattr(vrfdev, "ADDRESS_ROUTE_WAITS", (0.0, 0.0))
    with pytest.raises(CNIError, match="failed getting local/host addresses for eth0 in table 10"):
        vrfdev.enslave(ipr, blue, "eth0")


def test_vrf_release_only_from_its_own_vrf() -> None:
    ipr = FakeIPRoute()
    blue, red = vrfdev.create(ipr, "blue", 10), vrfdev.create(ipr, "red", 11)
    ipr.add_link("eth0", master=red.index)
    ipr.calls.clear()
    vrfdev.release(ipr, blue, "eth0")
    vrfdev.release(ipr, blue, "gone0")
    assert ipr.calls == []
    vrfdev.release(ipr, red, "eth0")
    assert ipr.requests("link") == [("set", {"index": 4, "master": 0})]


def invoke(command: str, config: dict[str, Any], ifname: str = "eth0") -> tuple[int, Any]:
    env = {
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": "cid1",
        "CNI_NETNS": "/run/netns/unit-fake",
        "CNI_NETNS_OVERRIDE": "1",
        "CNI_IFNAME": ifname,
        "CNI_PATH": "/nonexistent",
    }
    config = {"cniVersion": "1.0.0", "name": "unitnet", "type": "vrf", "vrfname": "blue", **config}
    reply = vrf.plugin.invoke(env, json.dumps(config).encode())
    return reply.exit_code, json.loads(reply.stdout) if reply.stdout.strip() else None


def test_vrf_plugin_add_check_del(fake: FakeIPRoute) -> None:
    eth0 = fake.add_link("eth0")
    net1 = fake.add_link("net1")
    rc, out = invoke("ADD", {"table": 42, "prevResult": PREV})
    assert rc == 0, out
    assert out == {**PREV, "cniVersion": "1.0.0"}, "prevResult is echoed"
    blue = vrfdev.find(fake, "blue")
    assert blue is not None and blue.table == 42
    assert fake.links[eth0]["master"] == blue.index
    assert invoke("CHECK", {"prevResult": PREV})[0] == 0
    rc, out = invoke("CHECK", {"prevResult": PREV}, "net1")
    assert rc == 1 and out["msg"] == "failed to find net1 associated to vrf blue"

    rc, out = invoke("ADD", {"table": 43, "prevResult": PREV}, "net1")
    assert rc == 1 and out["code"] == 7 and out["msg"] == "VRF blue already exist with different routing table 42"
    assert invoke("ADD", {"prevResult": PREV}, "net1")[0] == 0, "no table: the VRF's own is fine"
    rc, _ = invoke("ADD", {"prevResult": PREV}, "net1")
    assert rc == 0, "a retried ADD finds the interface in place"

    assert invoke("DEL", {}, "eth0")[0] == 0
    assert fake.links[eth0]["master"] == 0 and vrfdev.find(fake, "blue") is not None, "net1 is still a member"
    assert invoke("DEL", {}, "net1")[0] == 0
    assert fake.links[net1]["master"] == 0 and vrfdev.find(fake, "blue") is None, "the last DEL deletes the VRF"
    assert invoke("DEL", {}, "net1")[0] == 0, "DEL again"


def test_vrf_plugin_bad_input_and_rollback(fake: FakeIPRoute) -> None:
    fake.add_link("eth0")
    assert invoke("ADD", {"vrfname": "", "prevResult": PREV}) == (
        1,
        {"cniVersion": "1.0.0", "code": 7, "msg": "configuration is expected to have a valid vrf name"},
    )
    rc, out = invoke("ADD", {})
    assert rc == 1 and out["msg"] == "missing prevResult from earlier plugin"
    rc, out = invoke("ADD", {"table": -1, "prevResult": PREV})
    assert rc == 1 and out["code"] == 7 and "table: must be between 0 and 4294967295" in out["msg"]
    rc, out = invoke("ADD", {"cniVersion": "0.3.0", "prevResult": PREV})
    assert rc == 1 and out["code"] == 1, "vrf starts at spec 0.3.1, as in Go"
    assert fake.calls == []

    fake.fail_on = ("link", "set")  # creating works, setting it up (or enslaving) does not
    rc, out = invoke("ADD", {"prevResult": PREV})
    assert rc == 1 and "could not set link up for VRF blue" in out["msg"]
    assert vrfdev.find(fake, "blue") is None, "the VRF it created is deleted again"


def test_vrf_plugin_del_tolerates_what_is_gone(monkeypatch: pytest.MonkeyPatch, fake: FakeIPRoute) -> None:
    fake.add_link("blue", "veth")
    assert invoke("DEL", {})[0] == 0, "a non-VRF of that name is not ours"
    assert fake.calls == []

    def gone(path: str, fd: int | None = None) -> FakeIPRoute:
        raise netns.NetnsNotFound(path)

    monkeypatch.setattr(netns, "iproute", gone)
    assert invoke("DEL", {}) == (0, None)
