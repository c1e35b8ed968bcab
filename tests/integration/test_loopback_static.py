"""pycni's loopback and static plugins in real namespaces, through the runtime and alone.

Each result is compared with what the Go reference plugin returns for the
same request at every spec version.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from pycni.runtime import CNIRuntime, RuntimeConf
from pycni.spec import ALL_VERSIONS, NetworkConfigList, Result
from tests.support.netns import NetnsPool, run


def exec_plugin(plugin: str, command: str, config: dict[str, Any], netns: str, cni_path: str) -> tuple[int, Any]:
    env = {
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": "ctr-" + os.path.basename(netns),
        "CNI_NETNS": netns,
        "CNI_IFNAME": "eth0",
        "CNI_PATH": cni_path,
        "PATH": "/usr/bin:/bin",
    }
    proc = subprocess.run(
        [plugin], input=json.dumps(config).encode(), env=env, capture_output=True, check=False, timeout=30
    )
    out = proc.stdout.decode()
    return proc.returncode, json.loads(out) if out.strip() else None


def without_empty_dns(result: dict[str, Any]) -> dict[str, Any]:
    """Go plugins 1.1.1 print an empty ``dns`` at 1.0.0; current libcni omits it."""
    return {k: v for k, v in result.items() if not (k == "dns" and v == {} and result["cniVersion"].startswith("1."))}


def lo_is_up(name: str) -> bool:
    return "UP" in run("ip", "-o", "link", "show", "lo", netns=name).stdout.split(">")[0]


class TestLoopback:
    @pytest.mark.parametrize("version", ALL_VERSIONS)
    def test_same_result_as_go_at_every_version(
        self, version: str, netns: NetnsPool, pycni_plugin_dir: str, go_plugin_dir: str
    ) -> None:
        if version == "1.1.0":
            pytest.skip("the Debian Go plugins (1.1.1) stop at spec 1.0.0")
        config = {"cniVersion": version, "name": "lo-net", "type": "loopback"}
        ours_ns, go_ns = netns.new("ours", lo_up=False), netns.new("go", lo_up=False)
        ours_rc, ours = exec_plugin(
            f"{pycni_plugin_dir}/loopback", "ADD", config, netns.path(ours_ns), pycni_plugin_dir
        )
        go_rc, go = exec_plugin(f"{go_plugin_dir}/loopback", "ADD", config, netns.path(go_ns), go_plugin_dir)
        assert (ours_rc, go_rc) == (0, 0)
        assert lo_is_up(ours_ns) and lo_is_up(go_ns)
        # Go's loopback builds a 1.0 result and labels it with the config's version
        # without converting it, so below 1.0.0 its output has the wrong shape (no
        # ips[].version, interfaces at 0.2.0). Ours is converted; compare content.
        expected = Result.from_dict({**go, "cniVersion": "1.0.0"}).to_dict(version)
        for result in (ours, expected):
            for iface in result.get("interfaces", []):
                iface["sandbox"] = "<netns>"
        assert ours == without_empty_dns(expected)

    def test_add_check_del_and_del_again(self, netns: NetnsPool, pycni_plugin_dir: str) -> None:
        name = netns.new("lo", lo_up=False)
        config = {"cniVersion": "1.0.0", "name": "lo-net", "type": "loopback"}
        plugin = f"{pycni_plugin_dir}/loopback"
        assert exec_plugin(plugin, "ADD", config, netns.path(name), pycni_plugin_dir)[0] == 0
        assert exec_plugin(plugin, "CHECK", config, netns.path(name), pycni_plugin_dir) == (0, None)
        assert exec_plugin(plugin, "DEL", config, netns.path(name), pycni_plugin_dir) == (0, None)
        assert not lo_is_up(name)
        rc, error = exec_plugin(plugin, "CHECK", config, netns.path(name), pycni_plugin_dir)
        assert (rc, error["msg"]) == (1, "loopback interface is down")
        assert exec_plugin(plugin, "DEL", config, netns.path(name), pycni_plugin_dir) == (0, None)

    def test_missing_netns_add_fails_del_succeeds_and_nothing_is_created(self, pycni_plugin_dir: str) -> None:
        ghost = "/run/netns/pycni-test-does-not-exist"
        config = {"cniVersion": "1.0.0", "name": "lo-net", "type": "loopback"}
        plugin = f"{pycni_plugin_dir}/loopback"
        rc, error = exec_plugin(plugin, "ADD", config, ghost, pycni_plugin_dir)
        assert rc == 1
        assert error["code"] == 4
        assert error["msg"] == f"CNI_NETNS: network namespace {ghost} does not exist"
        assert exec_plugin(plugin, "DEL", config, ghost, pycni_plugin_dir) == (0, None)
        assert not os.path.exists(ghost)

    def test_path_that_is_not_a_netns(self, pycni_plugin_dir: str, tmp_path: Path) -> None:
        fake = tmp_path / "not-a-netns"
        fake.write_text("")
        config = {"cniVersion": "1.0.0", "name": "lo-net", "type": "loopback"}
        rc, error = exec_plugin(f"{pycni_plugin_dir}/loopback", "ADD", config, str(fake), pycni_plugin_dir)
        assert rc == 1
        assert error["msg"] == f"CNI_NETNS: {fake} is not a network namespace"


STATIC = {
    "type": "static",
    "addresses": [
        {"address": "10.10.0.1/24", "gateway": "10.10.0.254"},
        {"address": "3ffe:ffff:0:01ff::1/64", "gateway": "3ffe:ffff:0::1"},
    ],
    "routes": [{"dst": "0.0.0.0/0"}, {"dst": "192.168.0.0/16", "gw": "10.10.5.1"}, {"dst": "3ffe:ffff:0:01ff::1/64"}],
    "dns": {"nameservers": ["8.8.8.8"], "domain": "example.com", "search": ["example.com"]},
}


class TestStatic:
    @pytest.mark.parametrize("version", ["0.3.0", "0.3.1", "0.4.0", "1.0.0"])
    def test_same_result_as_go(self, version: str, pycni_plugin_dir: str, go_plugin_dir: str) -> None:
        config = {"cniVersion": version, "name": "static-net", "type": "x", "ipam": STATIC}
        ours = exec_plugin(f"{pycni_plugin_dir}/static", "ADD", config, "/run/netns/unused", pycni_plugin_dir)
        go = exec_plugin(f"{go_plugin_dir}/static", "ADD", config, "/run/netns/unused", go_plugin_dir)
        assert ours[0] == go[0] == 0
        assert ours[1] == without_empty_dns(go[1])

    @pytest.mark.parametrize("version", ["0.1.0", "0.2.0"])
    def test_legacy_versions_refuse_two_addresses_per_family_like_go(
        self, version: str, pycni_plugin_dir: str, go_plugin_dir: str
    ) -> None:
        ipam = {**STATIC, "addresses": [{"address": "10.0.0.2/24"}, {"address": "10.0.0.3/24"}]}
        config = {"cniVersion": version, "name": "static-net", "type": "x", "ipam": ipam}
        ours = exec_plugin(f"{pycni_plugin_dir}/static", "ADD", config, "/x", pycni_plugin_dir)
        go = exec_plugin(f"{go_plugin_dir}/static", "ADD", config, "/x", go_plugin_dir)
        assert ours[0] == go[0] == 1
        assert (
            ours[1]["msg"] == go[1]["msg"] == f"CNI version {version} does not support more than 1 address per family"
        )

    def test_runtime_config_ips_and_cni_args(self, pycni_plugin_dir: str) -> None:
        config = {
            "cniVersion": "1.0.0",
            "name": "static-net",
            "type": "x",
            "ipam": {"type": "static"},
            "runtimeConfig": {"IPs": ["10.5.0.9/24"]},
        }
        rc, result = exec_plugin(f"{pycni_plugin_dir}/static", "ADD", config, "/x", pycni_plugin_dir)
        assert rc == 0
        assert result["ips"] == [{"address": "10.5.0.9/24"}]

    @pytest.mark.parametrize(
        ("ipam", "message"),
        [
            ({"type": "static", "addresses": [{"address": "10.0.0.2"}]}, "not in CIDR notation"),
            ({"type": "static", "addresses": "10.0.0.2/24"}, "ipam.addresses: expected a list"),
            ({"type": "static", "addresses": [{"address": "10.0.0.2/24", "gateway": "nope"}]}, "not an IP address"),
            ({"type": "static", "routes": [{"dst": 5}]}, "ipam.routes[0].dst: expected a string"),
        ],
    )
    def test_bad_config(self, ipam: dict[str, Any], message: str, pycni_plugin_dir: str) -> None:
        config = {"cniVersion": "1.0.0", "name": "static-net", "type": "x", "ipam": ipam}
        rc, error = exec_plugin(f"{pycni_plugin_dir}/static", "ADD", config, "/x", pycni_plugin_dir)
        assert rc == 1
        assert error["code"] == 7
        assert message in error["msg"]

    def test_missing_ipam_section(self, pycni_plugin_dir: str) -> None:
        config = {"cniVersion": "1.0.0", "name": "static-net", "type": "static"}
        rc, error = exec_plugin(f"{pycni_plugin_dir}/static", "ADD", config, "/x", pycni_plugin_dir)
        assert (rc, error["msg"]) == (1, "IPAM config missing 'ipam' key")


class TestThroughRuntime:
    def test_loopback_chain_add_check_gc(self, netns: NetnsPool, pycni_plugin_dir: str, tmp_path: Path) -> None:
        name = netns.new("rt", lo_up=False)
        network = NetworkConfigList.from_bytes(
            json.dumps({"cniVersion": "1.1.0", "name": "lonet", "plugins": [{"type": "loopback"}]}).encode()
        )
        runtime = CNIRuntime([pycni_plugin_dir], cache_dir=str(tmp_path))
        rt = RuntimeConf("ctr-a", netns.path(name), "lo")
        result = runtime.add(network, rt)
        assert result.interfaces[0].name == "lo"
        runtime.check(network, rt)
        runtime.status(network)
        runtime.gc(network, None)  # DELs the cached attachment: lo goes down
        assert not lo_is_up(name)
        assert os.listdir(tmp_path / "results") == []
