"""host-local allocation, the disk store, and the plugin's verbs, without root.

Ports ``allocator_test.go`` (round-robin table, broadcast, requested IPs,
exhaustion) against the real disk store in a temp dir, and
``host_local_test.go`` through the plugin's in-process ``invoke`` at every
spec version; adds rollback, GC, STATUS and the store's exact bytes.
"""

from __future__ import annotations

import ipaddress
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from pycni.ipam import store as store_module
from pycni.ipam.allocator import allocate, allocate_one
from pycni.ipam.config import RequestedIP, parse_resolv_conf
from pycni.ipam.ranges import RangeSet, make_range, make_range_set
from pycni.ipam.store import Store
from pycni.plugins.ipam.host_local import plugin
from pycni.spec import ALL_VERSIONS, CNIError, Result
from pycni.spec.result import IPAddress

LINE_BREAK = "\r\n"


def ip(text: str) -> IPAddress:
    return ipaddress.ip_address(text)


def range_set(*subnets: str, start: str | None = None, end: str | None = None) -> RangeSet:
    return make_range_set(
        [make_range(ipaddress.ip_interface(s), ip(start) if start else None, ip(end) if end else None) for s in subnets]
    )


def new_store(tmp_path: Path, ipmap: dict[str, str] | None = None, last: str = "", range_id: str = "0") -> Store:
    """A store in ``tmp_path/net`` holding ``ipmap`` (address -> owner ID) and a cursor."""
    store = Store("net", str(tmp_path))
    store.create()
    for address, owner in (ipmap or {}).items():
        Path(store.path_of(ip(address))).write_text(owner + LINE_BREAK + "eth0")
    if last:
        Path(store.dir, f"last_reserved_ip.{range_id}").write_text(last)
    return store


def get(store: Store, s: RangeSet, container_id: str = "ID", request: str | None = None) -> str:
    wanted = RequestedIP(ip(request), "args.cni.ips[0]") if request else None
    with store.locked():
        return str(allocate_one(store, s, "0", container_id, "eth0", wanted).to_ip_config().address)


def files(store: Store) -> dict[str, str]:
    return {
        name: Path(store.dir, name).read_bytes().decode() for name in sorted(os.listdir(store.dir)) if name != "lock"
    }


ROUND_ROBIN = [
    # fresh start
    (["10.0.0.0/29"], {}, "", "10.0.0.2"),
    (["2001:db8:1::0/64"], {}, "", "2001:db8:1::2"),
    (["10.0.0.0/30"], {}, "", "10.0.0.2"),
    (["10.0.0.0/29"], {"10.0.0.2": "id"}, "", "10.0.0.3"),
    # next address after the last reserved one
    (["10.0.0.0/29"], {}, "10.0.0.5", "10.0.0.6"),
    (["10.0.0.0/29"], {"10.0.0.4": "id", "10.0.0.5": "id"}, "10.0.0.3", "10.0.0.6"),
    # round robin to the beginning
    (["10.0.0.0/29"], {"10.0.0.6": "id"}, "10.0.0.5", "10.0.0.2"),
    # the cursor is outside the range
    (["10.0.0.0/29"], {"10.0.0.2": "id"}, "10.0.0.128", "10.0.0.3"),
    # full except for the cursor itself: wrap around and take it
    (["10.0.0.0/29"], {"10.0.0.2": "id", "10.0.0.4": "id", "10.0.0.5": "id", "10.0.0.6": "id"}, "10.0.0.3", "10.0.0.3"),
    # several subnets
    (["10.0.0.0/30", "10.0.1.0/30"], {}, "", "10.0.0.2"),
    (["10.0.0.0/30", "10.0.1.0/30"], {}, "10.0.0.2", "10.0.1.2"),
    (["10.0.0.0/30", "10.0.1.0/30", "10.0.2.0/30"], {}, "10.0.2.2", "10.0.0.2"),
]


class TestAllocator:
    @pytest.mark.parametrize(("subnets", "ipmap", "last", "expected"), ROUND_ROBIN)
    def test_round_robin(
        self, subnets: list[str], ipmap: dict[str, str], last: str, expected: str, tmp_path: Path
    ) -> None:
        store = new_store(tmp_path, ipmap, last)
        assert get(store, range_set(*subnets)).split("/")[0] == expected
        assert Path(store.dir, "last_reserved_ip.0").read_text() == expected

    def test_never_the_broadcast_address(self, tmp_path: Path) -> None:
        store, s = new_store(tmp_path), range_set("192.168.1.0/29")
        for i in range(2, 7):
            assert get(store, s, f"ID{i}") == f"192.168.1.{i}/29"
        with pytest.raises(CNIError) as caught:
            get(store, s, "ID8")
        assert caught.value.msg == "no IP addresses available in range set: 192.168.1.1-192.168.1.6"

    def test_round_robin_after_release(self, tmp_path: Path) -> None:
        store, s = new_store(tmp_path), range_set("192.168.1.0/29")
        assert get(store, s) == "192.168.1.2/29"
        with store.locked():
            assert store.release_by_id("ID", "eth0") == 1
        assert get(store, s) == "192.168.1.3/29"

    def test_requested_ip(self, tmp_path: Path) -> None:
        store, s = new_store(tmp_path), range_set("192.168.1.0/29")
        assert get(store, s, request="192.168.1.5") == "192.168.1.5/29"
        with pytest.raises(CNIError) as caught:
            get(store, s, "other", request="192.168.1.5")
        assert (
            caught.value.msg == "requested IP address 192.168.1.5 is not available in range set 192.168.1.1-192.168.1.6"
        )

    def test_requested_ip_outside_the_window(self, tmp_path: Path) -> None:
        store = new_store(tmp_path)
        with pytest.raises(CNIError, match="not in range set"):
            get(store, range_set("192.168.1.0/29", end="192.168.1.4"), request="192.168.1.5")
        with pytest.raises(CNIError, match="not in range set"):
            get(store, range_set("192.168.1.0/29", start="192.168.1.3"), request="192.168.1.2")
        assert files(store) == {}

    def test_requested_gateway(self, tmp_path: Path) -> None:
        with pytest.raises(CNIError, match=r"^requested ip 192\.168\.1\.1 is subnet's gateway$"):
            get(new_store(tmp_path), range_set("192.168.1.0/29"), request="192.168.1.1")

    @pytest.mark.parametrize(
        ("subnets", "ipmap"),
        [
            (["10.0.0.0/30"], {"10.0.0.2": "id"}),
            (["10.0.0.0/29"], {f"10.0.0.{i}": "id" for i in range(2, 7)}),
            (["10.0.0.0/30", "10.0.1.0/30"], {"10.0.0.2": "id", "10.0.1.2": "id"}),
        ],
    )
    def test_out_of_addresses(self, subnets: list[str], ipmap: dict[str, str], tmp_path: Path) -> None:
        with pytest.raises(CNIError) as caught:
            get(new_store(tmp_path, ipmap), range_set(*subnets))
        assert caught.value.msg.startswith("no IP addresses available in range set")
        assert caught.value.code == 999

    def test_duplicate_allocation_in_the_same_set(self, tmp_path: Path) -> None:
        store, s = new_store(tmp_path), range_set("10.1.2.0/24")
        get(store, s, "dummy")
        with pytest.raises(CNIError) as caught:
            get(store, s, "dummy")
        assert caught.value.msg == "10.1.2.2 has been allocated to dummy, duplicate allocation is not allowed"
        assert get(store, range_set("10.1.3.0/24"), "dummy") == "10.1.3.2/24"  # another set is fine

    def test_failed_set_rolls_back_only_this_call(self, tmp_path: Path) -> None:
        store = new_store(tmp_path)
        earlier = range_set("10.9.0.0/24")
        get(store, earlier, "dummy")
        sets = [range_set("10.1.2.0/24"), range_set("10.1.3.0/30")]
        with store.locked():
            store.reserve(ip("10.1.3.2"), "other", "eth0", "1")
        with pytest.raises(CNIError) as caught:
            allocate(store, sets, "dummy", "eth0")
        assert (
            caught.value.msg
            == "failed to allocate for range 1: no IP addresses available in range set: 10.1.3.1-10.1.3.2"
        )
        assert set(files(store)) == {"10.9.0.2", "10.1.3.2", "last_reserved_ip.0", "last_reserved_ip.1"}

    def test_requests_are_matched_before_anything_is_reserved(self, tmp_path: Path) -> None:
        store = new_store(tmp_path)
        sets = [range_set("10.1.2.0/24"), range_set("10.1.3.0/24")]
        wanted = [RequestedIP(ip("10.1.2.88"), "args.cni.ips[0]"), RequestedIP(ip("10.1.2.77"), "args.cni.ips[1]")]
        with pytest.raises(CNIError) as caught:
            allocate(store, sets, "dummy", "eth0", wanted)
        assert caught.value.msg == "failed to allocate all requested IPs: 10.1.2.77"
        assert "range set 0, which already serves args.cni.ips[0] 10.1.2.88" in caught.value.details
        assert files(store) == {}


class TestStoreOnDisk:
    def test_layout_modes_and_bytes(self, tmp_path: Path) -> None:
        store = Store("mynet", str(tmp_path / "data"))
        store.create()
        with store.locked():
            assert store.reserve(ip("10.1.2.2"), "dummy", "eth0", "0")
            assert store.reserve(ip("2001:db8:1:0::2"), "dummy", "eth0", "1")
            assert not store.reserve(ip("10.1.2.2"), "other", "eth0", "0")
        assert stat.S_IMODE(os.stat(store.dir).st_mode) == 0o755 & ~_umask()
        assert stat.S_IMODE(os.stat(store.path_of(ip("10.1.2.2"))).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(os.path.join(store.dir, "lock")).st_mode) == 0o750 & ~_umask()
        assert Path(store.dir, "10.1.2.2").read_bytes() == b"dummy\r\neth0"
        assert Path(store.dir, "2001:db8:1::2").read_bytes() == b"dummy\r\neth0"
        assert Path(store.dir, "last_reserved_ip.0").read_bytes() == b"10.1.2.2"
        assert Path(store.dir, "last_reserved_ip.1").read_bytes() == b"2001:db8:1::2"
        assert sorted(os.listdir(store.dir)) == [
            "10.1.2.2",
            "2001:db8:1::2",
            "last_reserved_ip.0",
            "last_reserved_ip.1",
            "lock",
        ]

    def test_container_id_is_trimmed(self, tmp_path: Path) -> None:
        store = new_store(tmp_path)
        with store.locked():
            store.reserve(ip("10.1.2.2"), "   dummy\n ", "eth0", "0")
            assert Path(store.dir, "10.1.2.2").read_bytes() == b"dummy\r\neth0"
            assert store.find("   dummy\n ", "eth0")
            assert store.release_by_id("   dummy\n ", "eth0") == 1

    def test_legacy_id_only_files(self, tmp_path: Path) -> None:
        store = new_store(tmp_path)
        Path(store.dir, "10.1.2.2").write_text("dummy")
        Path(store.dir, "10.1.2.3").write_text("dummy\r\neth1")
        with store.locked():
            assert store.ips_of("dummy", "eth0") == [ip("10.1.2.2")]
            assert store.find("dummy", "eth0")
            assert store.release_by_id("dummy", "eth1") == 1  # the exact match wins; the legacy file stays
            assert store.release_by_id("dummy", "eth0") == 1
        assert files(store) == {}

    def test_a_cursor_never_matches_a_container_id(self, tmp_path: Path) -> None:
        store = new_store(tmp_path, last="10.1.2.2")
        with store.locked():
            assert store.release_by_id("10.1.2.2", "eth0") == 0
        assert "last_reserved_ip.0" in files(store)

    def test_the_lock_is_an_flock(self, tmp_path: Path) -> None:
        import fcntl

        store = new_store(tmp_path)
        with store.locked(), store.locked():  # re-entrant within one store
            fd = os.open(os.path.join(store.dir, "lock"), os.O_RDONLY)
            try:
                with pytest.raises(BlockingIOError):
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            finally:
                os.close(fd)
        with pytest.raises(RuntimeError):
            store.reserve(ip("10.0.0.2"), "x", "eth0", "0")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# -- the plugin, in process ---------------------------------------------------


def call(
    command: str, config: dict[str, Any], container_id: str = "dummy", ifname: str = "eth0", cni_args: str = ""
) -> tuple[int, Any]:
    env = {
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": container_id,
        "CNI_NETNS": "/some/where",
        "CNI_IFNAME": ifname,
        "CNI_ARGS": cni_args,
        "CNI_PATH": "/opt/cni/bin",
    }
    reply = plugin.invoke(env, json.dumps(config).encode())
    return reply.exit_code, json.loads(reply.stdout) if reply.stdout.strip() else None


def conf(version: str, data_dir: Path, name: str = "mynet", **ipam: Any) -> dict[str, Any]:
    return {
        "cniVersion": version,
        "name": name,
        "type": "ipvlan",
        "master": "foo0",
        "ipam": {"type": "host-local", "dataDir": str(data_dir), **ipam},
    }


def ips_of(result: dict[str, Any]) -> list[str]:
    return [str(c.address) for c in Result.from_dict(result).ips]


def listing(data_dir: Path, name: str = "mynet") -> list[str]:
    return sorted(os.listdir(data_dir / name)) if (data_dir / name).exists() else []


DUAL_STACK = {
    "ranges": [[{"subnet": "10.1.2.0/24"}, {"subnet": "10.2.2.0/24"}], [{"subnet": "2001:db8:1::0/64"}]],
    "routes": [
        {"dst": "0.0.0.0/0"},
        {"dst": "::/0"},
        {"dst": "192.168.0.0/16", "gw": "1.1.1.1"},
        {"dst": "2001:db8:2::0/64", "gw": "2001:db8:3::1"},
    ],
}


@pytest.mark.parametrize("version", ALL_VERSIONS)
class TestPluginLikeGo:
    """``host_local_test.go``, at every spec version."""

    def test_add_and_del(self, version: str, tmp_path: Path) -> None:
        (tmp_path / "resolv.conf").write_text("nameserver 192.0.2.3")
        config = conf(version, tmp_path, resolvConf=str(tmp_path / "resolv.conf"), **DUAL_STACK)
        rc, result = call("ADD", config)
        assert rc == 0, result
        assert ("version" in json.dumps(result)) == (version in ("0.3.0", "0.3.1", "0.4.0"))
        decoded = Result.from_dict(result)
        assert [(str(c.address), str(c.gateway)) for c in decoded.ips] == [
            ("10.1.2.2/24", "10.1.2.1"),
            ("2001:db8:1::2/64", "2001:db8:1::1"),
        ]
        assert {(str(r.dst), str(r.gw)) for r in decoded.routes} == {  # 0.2.0 groups them by family
            ("0.0.0.0/0", "None"),
            ("::/0", "None"),
            ("192.168.0.0/16", "1.1.1.1"),
            ("2001:db8:2::/64", "2001:db8:3::1"),
        }
        assert decoded.dns.nameservers == ["192.0.2.3"]
        assert not decoded.interfaces and all(c.interface is None for c in decoded.ips)
        directory = tmp_path / "mynet"
        assert (directory / "10.1.2.2").read_bytes() == b"dummy\r\neth0"
        assert (directory / "2001:db8:1::2").read_bytes() == b"dummy\r\neth0"
        assert (directory / "last_reserved_ip.0").read_text() == "10.1.2.2"
        assert (directory / "last_reserved_ip.1").read_text() == "2001:db8:1::2"
        assert call("DEL", config) == (0, None)
        assert listing(tmp_path) == ["last_reserved_ip.0", "last_reserved_ip.1", "lock"]

    def test_per_interface(self, version: str, tmp_path: Path) -> None:
        conf0 = conf(version, tmp_path, "mynet0", ranges=[[{"subnet": "10.1.2.0/24"}]])
        conf1 = conf(version, tmp_path, "mynet1", ranges=[[{"subnet": "10.2.2.0/24"}]])
        assert call("ADD", conf0)[0] == call("ADD", conf1, ifname="eth1")[0] == 0
        assert (tmp_path / "mynet0" / "10.1.2.2").read_bytes() == b"dummy\r\neth0"
        assert (tmp_path / "mynet1" / "10.2.2.2").read_bytes() == b"dummy\r\neth1"
        assert call("DEL", conf0) == (0, None)
        assert not (tmp_path / "mynet0" / "10.1.2.2").exists()
        assert (tmp_path / "mynet1" / "10.2.2.2").read_bytes() == b"dummy\r\neth1"
        assert call("DEL", conf1, ifname="eth1") == (0, None)
        assert not (tmp_path / "mynet1" / "10.2.2.2").exists()

    def test_repeated_add(self, version: str, tmp_path: Path) -> None:
        config = conf(version, tmp_path, "mynet0", ranges=[[{"subnet": "10.1.2.0/24"}]])
        rc, result = call("ADD", config)
        assert (rc, ips_of(result)) == (0, ["10.1.2.2/24"])
        rc, error = call("ADD", config)
        assert (rc, error["code"]) == (1, 999)
        assert error["msg"] == (
            "failed to allocate for range 0: 10.1.2.2 has been allocated to dummy, duplicate allocation is not allowed"
        )
        rc, result = call("ADD", config, "dummy1")
        assert (rc, ips_of(result)) == (0, ["10.1.2.3/24"])
        assert call("ADD", config)[0] == 1
        assert call("DEL", config) == (0, None)
        assert not (tmp_path / "mynet0" / "10.1.2.2").exists()
        assert call("DEL", config, "dummy1") == (0, None)
        assert listing(tmp_path, "mynet0") == ["last_reserved_ip.0", "lock"]

    def test_del_of_a_legacy_id_only_file(self, version: str, tmp_path: Path) -> None:
        config = conf(version, tmp_path, ranges=[[{"subnet": "10.1.2.0/24"}]])
        assert call("ADD", config)[0] == 0
        (tmp_path / "mynet" / "10.1.2.2").write_text("dummy")
        assert call("DEL", config) == (0, None)
        assert not (tmp_path / "mynet" / "10.1.2.2").exists()

    def test_del_of_an_unknown_id(self, version: str, tmp_path: Path) -> None:
        config = conf(version, tmp_path, subnet="10.1.2.0/24")
        assert call("DEL", config) == (0, None)
        assert not (tmp_path / "mynet").exists()  # DEL creates nothing
        assert call("ADD", config, "other")[0] == 0
        assert call("DEL", config) == (0, None)
        assert call("DEL", config) == (0, None)

    def test_requested_ip_from_args(self, version: str, tmp_path: Path) -> None:
        config = {
            **conf(version, tmp_path, ranges=[[{"subnet": "10.1.2.0/24"}]]),
            "args": {"cni": {"ips": ["10.1.2.88"]}},
        }
        rc, result = call("ADD", config)
        assert (rc, ips_of(result)) == (0, ["10.1.2.88/24"])

    def test_requested_ips_from_two_sets(self, version: str, tmp_path: Path) -> None:
        ranges = [[{"subnet": "10.1.2.0/24"}], [{"subnet": "10.1.3.0/24"}]]
        config = {**conf(version, tmp_path, ranges=ranges), "args": {"cni": {"ips": ["10.1.2.88", "10.1.3.77"]}}}
        rc, result = call("ADD", config)
        if version in ("0.1.0", "0.2.0"):
            assert (rc, result["msg"]) == (1, f"CNI version {version} does not support more than 1 address per family")
        else:
            assert (rc, ips_of(result)) == (0, ["10.1.2.88/24", "10.1.3.77/24"])

    def test_requested_ips_of_both_families(self, version: str, tmp_path: Path) -> None:
        ranges = [[{"subnet": "172.16.1.0/24"}, {"subnet": "10.1.2.0/24"}], [{"subnet": "2001:db8:1::/48"}]]
        config = {**conf(version, tmp_path, ranges=ranges), "args": {"cni": {"ips": ["10.1.2.88", "2001:db8:1::999"]}}}
        rc, result = call("ADD", config)
        assert (rc, ips_of(result)) == (0, ["10.1.2.88/24", "2001:db8:1::999/48"])

    def test_unused_requested_ip_fails_and_leaves_nothing(self, version: str, tmp_path: Path) -> None:
        ranges = [[{"subnet": "10.1.2.0/24"}], [{"subnet": "10.1.3.0/24"}]]
        config = {**conf(version, tmp_path, ranges=ranges), "args": {"cni": {"ips": ["10.1.2.88", "10.1.2.77"]}}}
        rc, error = call("ADD", config)
        assert rc == 1
        if version in ("0.1.0", "0.2.0"):
            assert error["msg"] == f"CNI version {version} does not support more than 1 address per family"
        else:
            assert error["msg"].startswith("failed to allocate all requested IPs: 10.1.2.")
            assert error["code"] == 7
        assert not [name for name in listing(tmp_path) if name[0].isdigit()]


class TestPluginVerbs:
    def test_check(self, tmp_path: Path) -> None:
        config = conf("1.0.0", tmp_path, subnet="10.1.2.0/24")
        rc, error = call("CHECK", config)
        assert (rc, error["code"], error["msg"]) == (
            1,
            999,
            "host-local: Failed to find address added by container dummy",
        )
        assert call("ADD", config)[0] == 0
        assert call("CHECK", config) == (0, None)

    def test_missing_resolv_conf_is_a_config_error(self, tmp_path: Path) -> None:
        rc, error = call("ADD", conf("1.0.0", tmp_path, subnet="10.1.2.0/24", resolvConf=str(tmp_path / "nope")))
        assert (rc, error["code"]) == (1, 7)
        assert error["msg"].startswith("ipam.resolvConf: cannot read")
        assert not (tmp_path / "mynet").exists()

    def test_del_does_not_need_a_servable_config(self, tmp_path: Path) -> None:
        assert call("ADD", conf("1.0.0", tmp_path, subnet="10.1.2.0/24"))[0] == 0
        assert call("DEL", conf("1.0.0", tmp_path, subnet="10.1.2.0/31")) == (0, None)
        assert listing(tmp_path) == ["last_reserved_ip.0", "lock"]

    def test_exhausted_subnet_leaves_no_file(self, tmp_path: Path) -> None:
        config = conf("1.0.0", tmp_path, subnet="10.1.2.0/30")
        assert ips_of(call("ADD", config, "c1")[1]) == ["10.1.2.2/30"]
        rc, error = call("ADD", config, "c2")
        assert (rc, error["code"]) == (1, 999)
        assert (
            error["msg"] == "failed to allocate for range 0: no IP addresses available in range set: 10.1.2.1-10.1.2.2"
        )
        assert listing(tmp_path) == ["10.1.2.2", "last_reserved_ip.0", "lock"]


def attachments(*pairs: tuple[str, str]) -> list[dict[str, str]]:
    return [{"containerID": cid, "ifname": ifname} for cid, ifname in pairs]


class TestGC:
    def setup_three(self, tmp_path: Path) -> dict[str, Any]:
        config = conf("1.1.0", tmp_path, subnet="10.1.2.0/24")
        for cid, ifname in (("c1", "eth0"), ("c2", "eth0"), ("c2", "eth1")):
            assert call("ADD", config, cid, ifname)[0] == 0
        return config

    def test_releases_what_is_not_valid(self, tmp_path: Path) -> None:
        config = self.setup_three(tmp_path)
        gc = {**config, "cni.dev/valid-attachments": attachments(("c1", "eth0"), ("c2", "eth1"))}
        assert call("GC", gc) == (0, None)
        assert listing(tmp_path) == ["10.1.2.2", "10.1.2.4", "last_reserved_ip.0", "lock"]

    def test_older_key_and_empty_list(self, tmp_path: Path) -> None:
        config = self.setup_three(tmp_path)
        assert call("GC", {**config, "cni.dev/attachments": attachments(("c2", "eth0"))}) == (0, None)
        assert listing(tmp_path) == ["10.1.2.3", "last_reserved_ip.0", "lock"]
        assert call("GC", {**config, "cni.dev/valid-attachments": []}) == (0, None)
        assert listing(tmp_path) == ["last_reserved_ip.0", "lock"]

    def test_legacy_files_survive_while_their_container_is_valid(self, tmp_path: Path) -> None:
        config = conf("1.1.0", tmp_path, subnet="10.1.2.0/24")
        directory = tmp_path / "mynet"
        directory.mkdir()
        (directory / "10.1.2.7").write_text("old")
        (directory / "10.1.2.8").write_text("gone")
        (directory / "notes.txt").write_text("gone")  # not a reservation: never touched
        assert call("GC", {**config, "cni.dev/valid-attachments": attachments(("old", "eth3"))}) == (0, None)
        assert listing(tmp_path) == ["10.1.2.7", "lock", "notes.txt"]

    def test_errors_are_collected_and_the_sweep_goes_on(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        config = self.setup_three(tmp_path)
        real_unlink = os.unlink

        def unlink(path: str) -> None:
            if os.path.basename(path) in ("10.1.2.2", "10.1.2.3"):
                raise PermissionError(13, "Permission denied", path)
            real_unlink(path)

        monkeypatch.setattr(store_module.os, "unlink", unlink)
        rc, error = call("GC", {**config, "cni.dev/valid-attachments": []})
        assert (rc, error["code"]) == (1, 5)
        assert "10.1.2.2: Permission denied" in error["msg"] and "10.1.2.3: Permission denied" in error["msg"]
        assert listing(tmp_path) == ["10.1.2.2", "10.1.2.3", "last_reserved_ip.0", "lock"]

    def test_needs_spec_1_1(self, tmp_path: Path) -> None:
        rc, error = call("GC", conf("1.0.0", tmp_path, subnet="10.1.2.0/24"))
        assert (rc, error["code"]) == (1, 1)


class TestStatus:
    def test_ready_then_exhausted(self, tmp_path: Path) -> None:
        ranges = [[{"subnet": "10.1.2.0/24"}], [{"subnet": "10.1.3.0/30"}]]
        config = conf("1.1.0", tmp_path, ranges=ranges)
        assert call("STATUS", config) == (0, None)
        assert not (tmp_path / "mynet").exists()  # STATUS creates nothing
        assert call("ADD", config, "c1")[0] == 0
        rc, error = call("STATUS", config)
        assert (rc, error["code"]) == (1, 50)
        assert error["msg"] == "range set 1 is exhausted: no IP addresses available in range set: 10.1.3.1-10.1.3.2"
        assert call("DEL", config, "c1") == (0, None)
        assert call("STATUS", config) == (0, None)

    def test_unusable_data_dir(self, tmp_path: Path) -> None:
        (tmp_path / "file").write_text("")
        rc, error = call("STATUS", conf("1.1.0", tmp_path / "file", subnet="10.1.2.0/24"))
        assert (rc, error["code"]) == (1, 50)
        assert "is not usable" in error["msg"]

    def test_bad_config_is_still_code_7(self, tmp_path: Path) -> None:
        rc, error = call("STATUS", conf("1.1.0", tmp_path, subnet="10.1.2.5/24"))
        assert (rc, error["code"]) == (1, 7)


class TestResolvConf:
    """``dns_test.go``."""

    def test_simple(self) -> None:
        dns = parse_resolv_conf("\n\t\tnameserver 192.0.2.0\n\t\tnameserver 192.0.2.1\n\t\t")
        assert dns.to_dict() == {"nameservers": ["192.0.2.0", "192.0.2.1"]}

    def test_comments(self) -> None:
        assert parse_resolv_conf("\nnameserver 192.0.2.0\n;nameserver 192.0.2.1\n").nameservers == ["192.0.2.0"]

    def test_all_fields(self) -> None:
        dns = parse_resolv_conf(
            "nameserver 192.0.2.0\nnameserver 192.0.2.2\ndomain example.com\n;nameserver comment\n"
            "#nameserver comment\nsearch example.net example.org\nsearch example.gov\noptions one two three\n"
            "options four\n"
        )
        assert dns.to_dict() == {
            "nameservers": ["192.0.2.0", "192.0.2.2"],
            "domain": "example.com",
            "search": ["example.net", "example.org", "example.gov"],
            "options": ["one", "two", "three", "four"],
        }


def test_gc_without_a_list_releases_nothing(tmp_path: Path) -> None:
    """A GC that names no valid attachments (cnitool gc after its own DELs) must not wipe the store."""
    conf = {
        "cniVersion": "1.1.0",
        "name": "gcnet",
        "ipam": {"type": "host-local", "subnet": "10.1.2.0/24", "dataDir": str(tmp_path)},
    }
    env = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1", "CNI_NETNS": "/x", "CNI_IFNAME": "eth0", "CNI_PATH": "/x"}
    assert plugin.invoke(env, json.dumps(conf).encode()).exit_code == 0
    gc_env = {"CNI_COMMAND": "GC", "CNI_PATH": "/x"}
    assert plugin.invoke(gc_env, json.dumps(conf).encode()).exit_code == 0
    assert (tmp_path / "gcnet" / "10.1.2.2").exists()
    listed = conf | {"cni.dev/valid-attachments": []}
    assert plugin.invoke(gc_env, json.dumps(listed).encode()).exit_code == 0
    assert not (tmp_path / "gcnet" / "10.1.2.2").exists()
