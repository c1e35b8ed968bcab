"""pycni's host-local executable next to Go's (Debian 1.1.1): same results, same files, one shared dataDir.

host-local only touches files, so no namespace is made; CNI_NETNS is still
set (ADD requires it) to a path nobody opens. Every dataDir is a pytest temp
dir, removed by pytest.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest

NETNS = "/run/netns/pycni-host-local-unused"
GO_VERSIONS = ("0.3.0", "0.3.1", "0.4.0", "1.0.0")  # Debian's Go plugins stop at 1.0.0


def exec_plugin(
    plugin: str,
    command: str,
    config: dict[str, Any],
    container_id: str = "c0",
    ifname: str = "eth0",
    cni_args: str = "",
    prefix: tuple[str, ...] = (),
) -> tuple[int, Any]:
    env = {
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": container_id,
        "CNI_NETNS": NETNS,
        "CNI_IFNAME": ifname,
        "CNI_ARGS": cni_args,
        "CNI_PATH": os.path.dirname(plugin),
        "PATH": "/usr/bin:/bin",
    }
    proc = subprocess.run(
        [*prefix, plugin], input=json.dumps(config).encode(), env=env, capture_output=True, check=False, timeout=30
    )
    assert b"Traceback" not in proc.stderr
    out = proc.stdout.decode()
    return proc.returncode, json.loads(out) if out.strip() else None


def without_empty_dns(result: dict[str, Any]) -> dict[str, Any]:
    """Go plugins 1.1.1 print an empty ``dns`` at 1.0.0; current libcni omits it."""
    return {k: v for k, v in result.items() if not (k == "dns" and v == {} and result["cniVersion"].startswith("1."))}


def config(version: str, data_dir: Path, name: str = "hlnet", **ipam: Any) -> dict[str, Any]:
    return {
        "cniVersion": version,
        "name": name,
        "type": "bridge",
        "ipam": {"type": "host-local", "dataDir": str(data_dir), **ipam},
    }


def state(data_dir: Path, name: str = "hlnet") -> dict[str, bytes]:
    """Every file of the network's directory but the lock, with its bytes."""
    directory = data_dir / name
    if not directory.exists():
        return {}
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.name != "lock"}


def ip_files(data_dir: Path, name: str = "hlnet") -> list[str]:
    return [n for n in state(data_dir, name) if not n.startswith("last_reserved_ip.")]


@pytest.fixture
def ours(pycni_plugin_dir: str) -> str:
    return os.path.join(pycni_plugin_dir, "host-local")


@pytest.fixture
def go(go_plugin_dir: str) -> str:
    return os.path.join(go_plugin_dir, "host-local")


class TestSharedDataDir:
    def test_alternating_50_then_cross_release(self, ours: str, go: str, tmp_path: Path) -> None:
        conf = config("1.0.0", tmp_path, ranges=[[{"subnet": "10.77.0.0/24"}]])
        made_by: dict[str, str] = {}
        addresses = []
        for i in range(50):
            plugin = go if i % 2 else ours
            rc, result = exec_plugin(plugin, "ADD", conf, f"c{i}")
            assert rc == 0, result
            addresses.append(result["ips"][0]["address"])
            made_by[f"c{i}"] = plugin
        assert len(set(addresses)) == 50
        # Both follow the shared round-robin cursor, so the order is the same as one plugin's.
        assert addresses == [f"10.77.0.{i + 2}/24" for i in range(50)]
        files = state(tmp_path)
        assert files["last_reserved_ip.0"] == b"10.77.0.51"
        assert {files[f"10.77.0.{i + 2}"] for i in range(50)} == {f"c{i}\r\neth0".encode() for i in range(50)}

        for i in range(50):
            other = ours if made_by[f"c{i}"] == go else go
            assert exec_plugin(other, "DEL", conf, f"c{i}") == (0, None)
        assert sorted(os.listdir(tmp_path / "hlnet")) == ["last_reserved_ip.0", "lock"]

    def test_concurrent_adds_never_collide(self, ours: str, go: str, tmp_path: Path) -> None:
        conf = config("1.0.0", tmp_path, ranges=[[{"subnet": "10.77.1.0/24"}]])
        results: dict[str, tuple[int, Any]] = {}

        def run(plugin: str, prefix: str) -> None:
            for i in range(15):
                results[f"{prefix}{i}"] = exec_plugin(plugin, "ADD", conf, f"{prefix}{i}")

        threads = [threading.Thread(target=run, args=(ours, "py")), threading.Thread(target=run, args=(go, "go"))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert all(rc == 0 for rc, _ in results.values()), results
        addresses = {result["ips"][0]["address"] for _, result in results.values()}
        assert len(addresses) == 30
        assert len(ip_files(tmp_path)) == 30

        gc = {**config("1.1.0", tmp_path, ranges=[[{"subnet": "10.77.1.0/24"}]]), "cni.dev/valid-attachments": []}
        assert exec_plugin(ours, "GC", gc) == (0, None)
        assert sorted(os.listdir(tmp_path / "hlnet")) == ["last_reserved_ip.0", "lock"]


GO_SCENARIO = {
    "ranges": [[{"subnet": "10.1.2.0/24"}, {"subnet": "10.2.2.0/24"}], [{"subnet": "2001:db8:1::0/64"}]],
    "routes": [
        {"dst": "0.0.0.0/0"},
        {"dst": "::/0"},
        {"dst": "192.168.0.0/16", "gw": "1.1.1.1"},
        {"dst": "2001:db8:2::0/64", "gw": "2001:db8:3::1"},
    ],
}


def side_by_side(ours: str, go: str, tmp_path: Path, version: str, **ipam: Any) -> tuple[Path, Path, Any, Any]:
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver 192.0.2.3\nsearch example.com\n")
    ours_dir, go_dir = tmp_path / "ours", tmp_path / "go"
    ours_rc, ours_result = exec_plugin(ours, "ADD", config(version, ours_dir, resolvConf=str(resolv), **ipam), "dummy")
    go_rc, go_result = exec_plugin(go, "ADD", config(version, go_dir, resolvConf=str(resolv), **ipam), "dummy")
    assert (ours_rc, go_rc) == (0, 0), (ours_result, go_result)
    return ours_dir, go_dir, ours_result, go_result


class TestSameAsGo:
    @pytest.mark.parametrize("version", GO_VERSIONS)
    def test_the_reference_scenario(self, version: str, ours: str, go: str, tmp_path: Path) -> None:
        ours_dir, go_dir, ours_result, go_result = side_by_side(ours, go, tmp_path, version, **GO_SCENARIO)
        assert ours_result == without_empty_dns(go_result)
        assert [ip["address"] for ip in ours_result["ips"]] == ["10.1.2.2/24", "2001:db8:1::2/64"]
        assert [ip["gateway"] for ip in ours_result["ips"]] == ["10.1.2.1", "2001:db8:1::1"]
        assert (
            state(ours_dir)
            == state(go_dir)
            == {
                "10.1.2.2": b"dummy\r\neth0",
                "2001:db8:1::2": b"dummy\r\neth0",
                "last_reserved_ip.0": b"10.1.2.2",
                "last_reserved_ip.1": b"2001:db8:1::2",
            }
        )
        if version in ("0.4.0", "1.0.0"):
            for plugin, data_dir in ((ours, ours_dir), (go, go_dir)):
                assert exec_plugin(plugin, "CHECK", config(version, data_dir, **GO_SCENARIO), "dummy") == (0, None)
        for plugin, data_dir in ((ours, ours_dir), (go, go_dir)):
            assert exec_plugin(plugin, "DEL", config(version, data_dir, **GO_SCENARIO), "dummy") == (0, None)
        assert state(ours_dir) == state(go_dir)
        assert ip_files(ours_dir) == []

    @pytest.mark.parametrize("version", ["0.1.0", "0.2.0"])
    @pytest.mark.parametrize(
        "ranges",
        [
            [[{"subnet": "10.1.2.0/24"}, {"subnet": "10.2.2.0/24"}]],
            [[{"subnet": "10.1.2.0/24"}], [{"subnet": "2001:db8:1::/64"}]],
        ],
        ids=["one-set", "one-per-family"],
    )
    def test_legacy_versions(self, version: str, ranges: list[Any], ours: str, go: str, tmp_path: Path) -> None:
        routes = [{"dst": "0.0.0.0/0"}, {"dst": "::/0", "gw": "2001:db8:1::9"}]
        ours_dir, go_dir, ours_result, go_result = side_by_side(
            ours, go, tmp_path, version, ranges=ranges, routes=routes
        )
        assert ours_result == go_result
        assert state(ours_dir) == state(go_dir)

    @pytest.mark.parametrize("version", GO_VERSIONS)
    def test_legacy_single_range_and_requested_ips(self, version: str, ours: str, go: str, tmp_path: Path) -> None:
        ipam = {"subnet": "10.4.0.0/16", "rangeStart": "10.4.1.10", "rangeEnd": "10.4.1.20", "gateway": "10.4.0.1"}
        ours_dir, go_dir, ours_result, go_result = side_by_side(ours, go, tmp_path, version, **ipam)
        assert ours_result == without_empty_dns(go_result)
        assert ours_result["ips"][0]["address"] == "10.4.1.10/16"
        for plugin, data_dir in ((ours, ours_dir), (go, go_dir)):
            conf = {**config(version, data_dir, **ipam), "runtimeConfig": {"ips": ["10.4.1.15/16"]}}
            rc, result = exec_plugin(plugin, "ADD", conf, "wanted", cni_args="IgnoreUnknown=1;K8S_POD_NAME=x")
            assert (rc, result["ips"][0]["address"]) == (0, "10.4.1.15/16")
        assert state(ours_dir) == state(go_dir)


def prepare_full_slash_30(plugin: str, data_dir: Path) -> None:
    assert exec_plugin(plugin, "ADD", config("1.0.0", data_dir, subnet="10.66.0.0/30"), "first")[0] == 0


def prepare_taken_5(plugin: str, data_dir: Path) -> None:
    assert (
        exec_plugin(plugin, "ADD", config("1.0.0", data_dir, subnet="10.66.0.0/24"), "first", cni_args="IP=10.66.0.5")[
            0
        ]
        == 0
    )


# (id, config overrides, CNI_ARGS, our code, Go's msg is also ours?, a fragment of ours, set-up)
BAD_INPUT: list[tuple[str, dict[str, Any], str, int, bool, str, Any]] = [
    ("no-ipam", {"ipam": None}, "", 7, True, "IPAM config missing 'ipam' key", None),
    ("no-ranges", {}, "", 7, True, "no IP ranges specified", None),
    ("missing-subnet", {"ranges": [[{"rangeStart": "10.66.0.5"}]]}, "", 7, False, "subnet is missing", None),
    ("subnet-not-string", {"ranges": [[{"subnet": 5}]]}, "", 7, False, "subnet: expected a string", None),
    ("ranges-not-list", {"ranges": {"subnet": "10.66.0.0/24"}}, "", 7, False, "ipam.ranges: expected a list", None),
    ("datadir-not-string", {"subnet": "10.66.0.0/24", "dataDir": 5}, "", 7, False, "ipam.dataDir: expected", None),
    ("not-cidr", {"subnet": "10.66.0.0"}, "", 7, False, "ipam.subnet: '10.66.0.0' is not in CIDR notation", None),
    ("host-bits", {"subnet": "10.66.0.7/24"}, "", 7, True, "the network address is 10.66.0.0", None),
    ("too-small", {"subnet": "10.66.0.0/31"}, "", 7, True, "too small to allocate from", None),
    ("start-outside", {"subnet": "10.66.0.0/24", "rangeStart": "10.67.0.5"}, "", 7, True, "RangeStart 10.67", None),
    (
        "overlap-in-set",
        {"ranges": [[{"subnet": "10.66.0.0/16"}, {"subnet": "10.66.3.0/24"}]]},
        "",
        7,
        True,
        "subnets 10.66.0.1-10.66.255.254 and 10.66.3.1-10.66.3.254 overlap",
        None,
    ),
    (
        "overlap-between-sets",
        {"ranges": [[{"subnet": "10.66.0.0/16"}], [{"subnet": "10.66.3.0/24"}]]},
        "",
        7,
        True,
        "range set 0 overlaps with 1",
        None,
    ),
    (
        "mixed-families",
        {"ranges": [[{"subnet": "10.66.0.0/16"}, {"subnet": "2001:db8::/64"}]]},
        "",
        7,
        True,
        "mixed address families",
        None,
    ),
    ("exhausted", {"subnet": "10.66.0.0/30"}, "", 999, True, "no IP addresses available", prepare_full_slash_30),
    ("requested-outside", {"subnet": "10.66.0.0/24"}, "IP=10.99.0.5", 4, True, "requested IPs: 10.99.0.5", None),
    ("requested-taken", {"subnet": "10.66.0.0/24"}, "IP=10.66.0.5", 999, True, "is not available", prepare_taken_5),
    ("requested-gateway", {"subnet": "10.66.0.0/24"}, "IP=10.66.0.1", 4, True, "is subnet's gateway", None),
    ("requested-bogus", {"subnet": "10.66.0.0/24"}, "IP=bogus", 4, True, "invalid IP address bogus", None),
    ("unknown-cni-args", {"subnet": "10.66.0.0/24"}, "FOO=1", 4, False, "ARGS: unknown args", None),
]


class TestBadInput:
    @pytest.mark.parametrize(
        ("overrides", "cni_args", "code", "same_msg", "fragment", "prepare"),
        [case[1:] for case in BAD_INPUT],
        ids=[case[0] for case in BAD_INPUT],
    )
    def test_clear_error_and_nothing_left(
        self,
        overrides: dict[str, Any],
        cni_args: str,
        code: int,
        same_msg: bool,
        fragment: str,
        prepare: Any,
        ours: str,
        go: str,
        tmp_path: Path,
    ) -> None:
        replies = {}
        for label, plugin in (("ours", ours), ("go", go)):
            data_dir = tmp_path / label
            if prepare:
                prepare(plugin, data_dir)
            before = ip_files(data_dir)
            conf = config("1.0.0", data_dir)
            if overrides.get("ipam", {}) is None:
                del conf["ipam"]
            else:
                conf["ipam"].update(overrides)
            replies[label] = exec_plugin(plugin, "ADD", conf, "victim", cni_args=cni_args)
            assert ip_files(data_dir) == before, f"{label} left a reservation behind"
        (ours_rc, ours_error), (go_rc, go_error) = replies["ours"], replies["go"]
        assert (ours_rc, go_rc) == (1, 1)
        assert ours_error["code"] == code
        assert fragment in ours_error["msg"]
        if same_msg:
            assert ours_error["msg"] == go_error["msg"]

    def test_two_per_family_at_0_2_0(self, ours: str, go: str, tmp_path: Path) -> None:
        ipam = {"ranges": [[{"subnet": "10.66.0.0/24"}], [{"subnet": "10.67.0.0/24"}]]}
        ours_error = exec_plugin(ours, "ADD", config("0.2.0", tmp_path / "ours", **ipam))[1]
        go_error = exec_plugin(go, "ADD", config("0.2.0", tmp_path / "go", **ipam))[1]
        assert ours_error["code"] == 7
        assert (
            ours_error["msg"] == go_error["msg"] == "CNI version 0.2.0 does not support more than 1 address per family"
        )

    def test_del_is_idempotent(self, ours: str, tmp_path: Path) -> None:
        conf = config("1.0.0", tmp_path, subnet="10.66.0.0/24")
        assert exec_plugin(ours, "DEL", conf, "nobody") == (0, None)
        assert exec_plugin(ours, "ADD", conf, "somebody")[0] == 0
        assert exec_plugin(ours, "DEL", conf, "somebody") == (0, None)
        assert exec_plugin(ours, "DEL", conf, "somebody") == (0, None)
        assert ip_files(tmp_path) == []


class TestGCAndStatus:
    def test_gc_keeps_valid_attachments_made_by_either_plugin(self, ours: str, go: str, tmp_path: Path) -> None:
        add = config("1.0.0", tmp_path, subnet="10.66.0.0/24")
        for cid, plugin in (("a", ours), ("b", go), ("c", ours), ("d", go)):
            assert exec_plugin(plugin, "ADD", add, cid)[0] == 0
        gc = {
            **config("1.1.0", tmp_path, subnet="10.66.0.0/24"),
            "cni.dev/valid-attachments": [
                {"containerID": "a", "ifname": "eth0"},
                {"containerID": "d", "ifname": "eth0"},
            ],
        }
        assert exec_plugin(ours, "GC", gc) == (0, None)
        assert {state(tmp_path)[name] for name in ip_files(tmp_path)} == {b"a\r\neth0", b"d\r\neth0"}
        assert "last_reserved_ip.0" in state(tmp_path)

    def test_status(self, ours: str, tmp_path: Path) -> None:
        conf = config("1.1.0", tmp_path, ranges=[[{"subnet": "10.66.0.0/24"}], [{"subnet": "2001:db8:66::/126"}]])
        assert exec_plugin(ours, "STATUS", conf) == (0, None)
        assert exec_plugin(ours, "ADD", conf, "a")[0] == 0  # ::1 is the gateway, ::2 and ::3 are left
        assert exec_plugin(ours, "STATUS", conf) == (0, None)
        assert exec_plugin(ours, "ADD", conf, "b")[0] == 0
        rc, error = exec_plugin(ours, "STATUS", conf)
        assert (rc, error["code"]) == (1, 50)
        assert error["msg"] == (
            "range set 1 is exhausted: no IP addresses available in range set: 2001:db8:66::1-2001:db8:66::3"
        )
        (tmp_path / "blocker").write_text("")
        rc, error = exec_plugin(ours, "STATUS", config("1.1.0", tmp_path / "blocker", subnet="10.66.0.0/24"))
        assert (rc, error["code"]) == (1, 50)
        assert "is not usable" in error["msg"]


# Without CAP_DAC_OVERRIDE/CAP_DAC_READ_SEARCH, so that mode 000 means unreadable for root too.
NO_DAC = ("setpriv", "--bounding-set=-dac_override,-dac_read_search", "--")


def damage(path: Path, how: str, outside: Path) -> None:
    """What tests/campaigns/corruption.py does to a state file, one kind at a time."""
    original = path.read_bytes()
    if how == "unreadable":
        path.chmod(0)
        return
    path.unlink()
    if how == "directory":
        path.mkdir()
        (path / "out").symlink_to(outside)
    elif how == "symlink":
        path.symlink_to(outside)
    elif how == "truncated":
        path.write_bytes(original[: len(original) // 2])
    else:
        path.write_bytes({"empty": b"", "garbage": b"\xff\x00garbage"}[how])


class TestDamagedState:
    """Regressions of the corruption campaign (tests/campaigns/corruption.py), each on the real executable."""

    KINDS = ("empty", "truncated", "garbage", "directory", "unreadable", "symlink")

    @pytest.mark.parametrize("how", KINDS)
    def test_a_live_attachments_damaged_reservation_keeps_its_address(
        self, ours: str, tmp_path: Path, how: str
    ) -> None:
        """GC once freed it (it named no valid attachment), and the next ADD handed it out twice."""
        data = tmp_path / "data"
        outside = tmp_path / "outside"
        outside.write_text("live\r\neth0")
        add = config("1.1.0", data, subnet="10.66.0.0/24")
        rc, result = exec_plugin(ours, "ADD", add, "live")
        assert rc == 0
        address = result["ips"][0]["address"].split("/")[0]
        damage(data / "hlnet" / address, how, outside)
        gc = {**add, "cni.dev/valid-attachments": [{"containerID": "live", "ifname": "eth0"}]}
        assert exec_plugin(ours, "GC", gc, prefix=NO_DAC) == (0, None)
        assert os.path.lexists(data / "hlnet" / address)
        rc, other = exec_plugin(ours, "ADD", add, "other", prefix=NO_DAC)
        assert rc == 0 and other["ips"][0]["address"].split("/")[0] != address
        assert exec_plugin(ours, "DEL", add, "live", prefix=NO_DAC) == (0, None)
        # Told that nothing is valid, GC removes it, whatever it is, never through a symlink.
        assert exec_plugin(ours, "GC", {**add, "cni.dev/valid-attachments": []}, prefix=NO_DAC) == (0, None)
        assert ip_files(data) == []
        assert outside.read_bytes() == b"live\r\neth0"

    def test_gc_drops_a_stale_reservation_and_keeps_one_cut_from_a_valid_owner(self, ours: str, tmp_path: Path) -> None:
        add = config("1.1.0", tmp_path, subnet="10.66.0.0/24")
        for cid in ("stale", "live"):
            assert exec_plugin(ours, "ADD", add, cid)[0] == 0
        names = {state(tmp_path)[name]: name for name in ip_files(tmp_path)}
        (tmp_path / "hlnet" / names[b"live\r\neth0"]).write_bytes(b"live\r\net")  # cut short
        gc = {**add, "cni.dev/valid-attachments": [{"containerID": "live", "ifname": "eth0"}]}
        assert exec_plugin(ours, "GC", gc) == (0, None)
        assert [state(tmp_path)[name] for name in ip_files(tmp_path)] == [b"live\r\net"]

    @pytest.mark.parametrize("how", ["directory", "unreadable", "symlink"])
    def test_a_damaged_lock_is_replaced_never_followed(self, ours: str, tmp_path: Path, how: str) -> None:
        """DEL and ADD failed with "cannot open lock file"; a symlink's target would have been created."""
        data = tmp_path / "data"
        add = config("1.1.0", data, subnet="10.66.0.0/24")
        assert exec_plugin(ours, "ADD", add, "a")[0] == 0
        lock = data / "hlnet" / "lock"
        outside = tmp_path / "absent-target"
        if how == "symlink":
            lock.unlink()
            lock.symlink_to(outside)  # dangling: O_CREAT would create it
        else:
            damage(lock, how, outside)
        assert exec_plugin(ours, "DEL", add, "a", prefix=NO_DAC) == (0, None)
        assert exec_plugin(ours, "ADD", add, "b", prefix=NO_DAC)[0] == 0
        assert lock.is_file() and not lock.is_symlink() and not os.path.lexists(outside)
        assert [state(data)[name] for name in ip_files(data)] == [b"b\r\neth0"]

    @pytest.mark.parametrize("how", ["directory", "unreadable", "symlink", "garbage"])
    def test_a_damaged_cursor_is_rewritten(self, ours: str, tmp_path: Path, how: str) -> None:
        """A directory there failed every later ADD ("cannot write ... last_reserved_ip.0")."""
        data = tmp_path / "data"
        outside = tmp_path / "outside"
        outside.write_text("10.66.0.200")
        add = config("1.1.0", data, subnet="10.66.0.0/24")
        assert exec_plugin(ours, "ADD", add, "a")[0] == 0
        damage(data / "hlnet" / "last_reserved_ip.0", how, outside)
        rc, result = exec_plugin(ours, "ADD", add, "b", prefix=NO_DAC)
        assert rc == 0
        assert result["ips"][0]["address"] == "10.66.0.3/24"  # the cursor read as absent: first free address
        assert state(data)["last_reserved_ip.0"] == b"10.66.0.3"
        assert outside.read_text() == "10.66.0.200"
