"""The runtime (libcni equivalent) driving scripted test-double plugins.

No root needed: the test double never touches the kernel; it records what it
received and replies as its config tells it to.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

import pytest

from pycni.runtime import CNIRuntime, RuntimeConf, build_plugin_config, load_network
from pycni.runtime.conf import NetworkNotFound, NoConfigsFound
from pycni.spec import CNIError, ErrorCode, NetworkConfigList, PluginConfig, Result
from tests.support.plugins import install_noop

RESULT_040 = {
    "cniVersion": "0.4.0",
    "interfaces": [{"name": "eth0", "sandbox": "/var/run/netns/x"}],
    "ips": [{"version": "4", "address": "10.1.0.5/16", "gateway": "10.1.0.1", "interface": 0}],
}

RESULT_110 = {"cniVersion": "1.1.0", "ips": [{"address": "10.1.0.5/16"}]}


class Env:
    """A CNI_PATH with test doubles, a cache dir and the call log."""

    def __init__(self, tmp_path: Path) -> None:
        self.bin = tmp_path / "bin"
        self.bin.mkdir()
        install_noop(self.bin, "first", "second", "third")
        self.log = tmp_path / "calls.jsonl"
        self.cache_dir = tmp_path / "cache"
        self.runtime = CNIRuntime([str(self.bin)], cache_dir=str(self.cache_dir))
        self.rt = RuntimeConf("ctr1", "/var/run/netns/x", "eth0", [("K8S_POD_NAME", "p")], {"portMappings": [1]})

    def network(self, *plugins: dict[str, Any], version: str = "0.4.0", **extra: Any) -> NetworkConfigList:
        listed = [{"log": str(self.log), **p} for p in plugins]
        return NetworkConfigList.from_bytes(
            json.dumps({"cniVersion": version, "name": "testnet", "plugins": listed, **extra}).encode()
        )

    def calls(self) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def cache_file(self) -> Path:
        return self.cache_dir / "results" / "testnet-ctr1-eth0"


@pytest.fixture
def env(tmp_path: Path) -> Env:
    return Env(tmp_path)


class TestAdd:
    def test_chains_prev_result_and_injects_name_version_runtime_config(self, env: Env) -> None:
        network = env.network(
            {"type": "first", "result": RESULT_040},
            {"type": "second", "capabilities": {"PORTMAPPINGS": True, "bandwidth": True}, "addIP": "10.9.0.1/8"},
        )
        result = env.runtime.add(network, env.rt)
        first, second = env.calls()
        assert [c["command"] for c in (first, second)] == ["ADD", "ADD"]
        assert "prevResult" not in first["stdin"]
        assert second["stdin"]["prevResult"] == RESULT_040 | {"dns": {}}
        assert second["stdin"]["name"] == "testnet" and second["stdin"]["cniVersion"] == "0.4.0"
        # Declared capabilities match the runtime's arguments ignoring case; undeclared ones are not sent.
        assert second["stdin"]["runtimeConfig"] == {"PORTMAPPINGS": [1]}
        assert "runtimeConfig" not in first["stdin"]
        assert first["env"] == {
            "CNI_COMMAND": "ADD",
            "CNI_CONTAINERID": "ctr1",
            "CNI_NETNS": "/var/run/netns/x",
            "CNI_IFNAME": "eth0",
            "CNI_ARGS": "K8S_POD_NAME=p",
            "CNI_PATH": str(env.bin),
        }
        assert [str(ip.address) for ip in result.ips] == ["10.1.0.5/16", "10.9.0.1/8"]

    def test_caches_in_libcni_format(self, env: Env) -> None:
        network = env.network({"type": "first", "result": RESULT_040})
        env.runtime.add(network, env.rt)
        cached = json.loads(env.cache_file().read_text())
        assert cached["kind"] == "cniCacheV1"
        assert cached["containerId"] == "ctr1"
        assert cached["ifName"] == "eth0"
        assert cached["networkName"] == "testnet"
        assert cached["netns"] == "/var/run/netns/x"
        assert cached["cniArgs"] == [["K8S_POD_NAME", "p"]]
        assert cached["capabilityArgs"] == {"portMappings": [1]}
        assert base64.b64decode(cached["config"]) == network.source
        assert cached["result"] == RESULT_040 | {"dns": {}}
        assert oct(env.cache_file().stat().st_mode & 0o777) == "0o600"

    def test_result_without_version_takes_config_version(self, env: Env) -> None:
        network = env.network({"type": "first", "result": {"ips": [{"version": "4", "address": "10.0.0.2/24"}]}})
        assert env.runtime.add(network, env.rt).cni_version == "0.4.0"

    def test_result_of_another_version_family_is_rejected(self, env: Env) -> None:
        network = env.network({"type": "first", "result": {"cniVersion": "1.0.0"}}, version="0.4.0")
        with pytest.raises(CNIError, match=r"1\.0\.0 result for a 0\.4\.0"):
            env.runtime.add(network, env.rt)

    def test_stops_at_first_failure_and_keeps_plugin_code(self, env: Env) -> None:
        network = env.network(
            {"type": "first", "fail": {"ADD": {"code": 11, "msg": "busy", "details": "d"}}},
            {"type": "second"},
        )
        with pytest.raises(CNIError) as info:
            env.runtime.add(network, env.rt)
        assert info.value.code == 11
        assert info.value.msg == 'plugin type="first" name="testnet" failed (add): busy'
        assert info.value.details == "d"
        assert [c["type"] for c in env.calls()] == ["first"]
        assert not env.cache_file().exists()

    @pytest.mark.parametrize(
        ("behaviour", "message"),
        [
            ({"garbage": ["ADD"], "exitCode": 1}, "error parsing its diagnostic message 'this is not JSON'"),
            ({"crash": ["ADD"]}, "netplugin failed with no error message: killed by signal 9"),
            ({"crash": ["ADD"], "stderr": "oops"}, "netplugin failed: 'oops': killed by signal 9"),
            ({"garbage": ["ADD"]}, "plugin printed something that is not a CNI result"),
        ],
    )
    def test_misbehaving_plugins(self, env: Env, behaviour: dict[str, Any], message: str) -> None:
        with pytest.raises(CNIError) as info:
            env.runtime.add(env.network({"type": "first", **behaviour}), env.rt)
        assert message in info.value.msg
        assert not env.cache_file().exists()

    def test_plugin_not_found(self, env: Env) -> None:
        with pytest.raises(CNIError) as info:
            env.runtime.add(env.network({"type": "missing"}), env.rt)
        assert f"failed to find plugin 'missing' in path ['{env.bin}']" in info.value.msg

    def test_empty_cni_path(self, env: Env) -> None:
        runtime = CNIRuntime([], cache_dir=str(env.cache_dir))
        with pytest.raises(CNIError, match="set CNI_PATH"):
            runtime.add(env.network({"type": "first"}), env.rt)

    @pytest.mark.parametrize(
        ("field", "value", "code"),
        [("container_id", "", 3), ("container_id", "bad id", 4), ("ifname", "x" * 16, 4)],
    )
    def test_validates_attachment_before_running_anything(self, env: Env, field: str, value: str, code: int) -> None:
        setattr(env.rt, field, value)
        with pytest.raises(CNIError) as info:
            env.runtime.add(env.network({"type": "first"}), env.rt)
        assert info.value.code == code
        assert env.calls() == []


class TestDelCheck:
    def test_del_runs_in_reverse_with_cached_result_and_removes_cache(self, env: Env) -> None:
        network = env.network({"type": "first", "result": RESULT_040}, {"type": "second"}, {"type": "third"})
        env.runtime.add(network, env.rt)
        env.log.unlink()
        env.runtime.delete(network, env.rt)
        calls = env.calls()
        assert [c["type"] for c in calls] == ["third", "second", "first"]
        assert all(c["stdin"]["prevResult"] == RESULT_040 | {"dns": {}} for c in calls)
        assert not env.cache_file().exists()

    def test_del_is_idempotent_without_cache(self, env: Env) -> None:
        network = env.network({"type": "first"})
        env.runtime.delete(network, env.rt)
        env.runtime.delete(network, env.rt)
        assert all("prevResult" not in c["stdin"] for c in env.calls())

    def test_del_tolerates_a_corrupt_cache(self, env: Env) -> None:
        network = env.network({"type": "first"})
        env.cache_file().parent.mkdir(parents=True)
        env.cache_file().write_text('{"kind": "cniCacheV1", "result": {"cniVersion": "0.4.0", "ips": [{"addr')
        env.runtime.delete(network, env.rt)
        assert "prevResult" not in env.calls()[0]["stdin"]
        assert not env.cache_file().exists()

    def test_del_reads_legacy_bare_result_cache(self, env: Env) -> None:
        network = env.network({"type": "first"})
        env.cache_file().parent.mkdir(parents=True)
        env.cache_file().write_text(json.dumps(RESULT_040))
        env.runtime.delete(network, env.rt)
        assert env.calls()[0]["stdin"]["prevResult"]["ips"][0]["address"] == "10.1.0.5/16"

    def test_failed_del_keeps_the_cache_for_a_retry(self, env: Env) -> None:
        network = env.network({"type": "first", "result": RESULT_040, "fail": {"DEL": {"code": 5, "msg": "io"}}})
        env.runtime.add(network, env.rt)
        with pytest.raises(CNIError):
            env.runtime.delete(network, env.rt)
        assert env.cache_file().exists()

    def test_best_effort_del_goes_past_a_failing_plugin(self, env: Env) -> None:
        network = env.network({"type": "first"}, {"type": "second", "fail": {"DEL": {"code": 7, "msg": "bad"}}})
        with pytest.raises(CNIError, match="bad"):
            env.runtime.delete(network, env.rt, best_effort=True)
        assert [c["type"] for c in env.calls()] == ["second", "first"], "the first plugin is still cleaned up"
        env.log.unlink()
        with pytest.raises(CNIError):
            env.runtime.delete(network, env.rt)
        assert [c["type"] for c in env.calls()] == ["second"], "a normal DEL stops at the first error"

    def test_pre_0_4_0_del_sends_no_prev_result(self, env: Env) -> None:
        network = env.network({"type": "first", "result": {"cniVersion": "0.3.1"}}, version="0.3.1")
        env.runtime.add(network, env.rt)
        env.runtime.delete(network, env.rt)
        assert "prevResult" not in env.calls()[-1]["stdin"]

    def test_check_forward_with_cached_result(self, env: Env) -> None:
        network = env.network({"type": "first", "result": RESULT_040}, {"type": "second"})
        env.runtime.add(network, env.rt)
        env.log.unlink()
        env.runtime.check(network, env.rt)
        assert [(c["type"], c["command"]) for c in env.calls()] == [("first", "CHECK"), ("second", "CHECK")]
        assert env.calls()[0]["stdin"]["prevResult"]["ips"][0]["address"] == "10.1.0.5/16"

    def test_check_refused_before_0_4_0(self, env: Env) -> None:
        with pytest.raises(CNIError, match="does not support the CHECK command"):
            env.runtime.check(env.network({"type": "first"}, version="0.3.1"), env.rt)

    def test_disable_check(self, env: Env) -> None:
        env.runtime.check(env.network({"type": "first"}, disableCheck=True), env.rt)
        assert env.calls() == []


class TestGcStatus:
    def test_gc_dels_stale_attachments_then_gcs_plugins(self, env: Env) -> None:
        network = env.network({"type": "first", "result": RESULT_110}, version="1.1.0")
        for cid in ("keep", "stale"):
            env.runtime.add(network, RuntimeConf(cid, f"/run/netns/{cid}", "eth0", capability_args={"mac": "x"}))
        env.log.unlink()
        env.runtime.gc(network, [("keep", "eth0")])
        calls = env.calls()
        assert [(c["command"], c["env"]["CNI_CONTAINERID"]) for c in calls] == [("DEL", "stale"), ("GC", "")]
        assert calls[0]["env"]["CNI_NETNS"] == "/run/netns/stale"
        gc_stdin = calls[1]["stdin"]
        assert gc_stdin["cni.dev/valid-attachments"] == [{"containerID": "keep", "ifname": "eth0"}]
        assert gc_stdin["cni.dev/attachments"] == gc_stdin["cni.dev/valid-attachments"]
        assert "prevResult" not in gc_stdin and "runtimeConfig" not in gc_stdin
        remaining = sorted(os.listdir(env.cache_dir / "results"))
        assert remaining == ["testnet-keep-eth0"]

    def test_gc_without_valid_list_removes_every_attachment(self, env: Env) -> None:
        network = env.network({"type": "first", "result": RESULT_110}, version="1.1.0")
        env.runtime.add(network, env.rt)
        env.runtime.gc(network, None)
        assert "cni.dev/valid-attachments" not in env.calls()[-1]["stdin"]
        assert os.listdir(env.cache_dir / "results") == []

    def test_gc_continues_after_errors_and_reports_them_all(self, env: Env) -> None:
        network = env.network(
            {"type": "first", "fail": {"GC": {"code": 5, "msg": "first broke"}}},
            {"type": "second", "fail": {"GC": {"code": 5, "msg": "second broke"}}},
            version="1.1.0",
        )
        with pytest.raises(CNIError) as info:
            env.runtime.gc(network, [])
        assert "first broke" in info.value.msg and "second broke" in info.value.msg

    def test_gc_skips_plugins_before_1_1_0_and_honours_disable_gc(self, env: Env) -> None:
        env.runtime.gc(env.network({"type": "first"}, version="1.0.0"), [])
        env.runtime.gc(env.network({"type": "first"}, version="1.1.0", disableGC=True), [])
        assert env.calls() == []

    def test_status_stops_at_first_error_keeping_its_code(self, env: Env) -> None:
        network = env.network(
            {"type": "first", "fail": {"STATUS": {"code": 50, "msg": "daemon down"}}},
            {"type": "second"},
            version="1.1.0",
        )
        with pytest.raises(CNIError) as info:
            env.runtime.status(network)
        assert info.value.code == 50
        assert [c["type"] for c in env.calls()] == ["first"]
        assert env.calls()[0]["env"]["CNI_CONTAINERID"] == ""

    def test_status_is_a_no_op_before_1_1_0(self, env: Env) -> None:
        env.runtime.status(env.network({"type": "first"}, version="1.0.0"))
        assert env.calls() == []

    def test_validate_and_version_info(self, env: Env) -> None:
        network = env.network({"type": "first", "capabilities": {"mac": True, "ips": False}}, version="1.1.0")
        assert env.runtime.validate(network) == ["mac"]
        assert env.runtime.version_info("first").supported_versions[-1] == "1.1.0"


class TestDamagedCache:
    """What the corruption campaign (tests/campaigns/corruption.py) found; each case once, without a kernel."""

    def damage(self, env: Env, how: str, outside: Path) -> Path:
        path = env.cache_file()
        path.parent.mkdir(parents=True, exist_ok=True)
        if how == "directory":
            path.mkdir()
            (path / "out").symlink_to(outside)
        elif how == "symlink":
            path.symlink_to(outside)
        else:
            path.write_text(how)
        return path

    @pytest.mark.parametrize("how", ["directory", "symlink", "[]", '{"kind": "cniCacheV1", "result": "x"}'])
    def test_del_removes_whatever_is_at_the_path_and_never_follows_it(self, env: Env, tmp_path: Path, how: str) -> None:
        outside = tmp_path / "outside"
        outside.write_text(json.dumps({"kind": "cniCacheV1", "result": RESULT_040}))
        path = self.damage(env, how, outside)
        env.runtime.delete(env.network({"type": "first"}), env.rt)
        assert "prevResult" not in env.calls()[0]["stdin"]  # a symlink's target is not read either
        assert not os.path.lexists(path)
        assert json.loads(outside.read_text())["result"] == RESULT_040

    @pytest.mark.parametrize("how", ["directory", "symlink", "garbage", "[]", '{"kind": "cniCacheV1"}'])
    def test_check_names_the_damaged_file(self, env: Env, tmp_path: Path, how: str) -> None:
        outside = tmp_path / "outside"
        outside.write_text(json.dumps(RESULT_040))
        path = self.damage(env, how, outside)
        with pytest.raises(CNIError) as info:
            env.runtime.check(env.network({"type": "first"}), env.rt)
        assert str(path) in info.value.msg
        assert env.calls() == []

    def test_add_replaces_a_directory_at_its_cache_path(self, env: Env, tmp_path: Path) -> None:
        outside = tmp_path / "outside"
        outside.write_text("canary")
        path = self.damage(env, "directory", outside)
        env.runtime.add(env.network({"type": "first", "result": RESULT_040}), env.rt)
        assert json.loads(path.read_text())["kind"] == "cniCacheV1"
        assert outside.read_text() == "canary"

    @pytest.mark.parametrize(
        "change",
        [
            {"containerId": ""},
            {"ifName": 5},
            {"cniArgs": 5},
            {"capabilityArgs": []},
            {"config": 7},
            {"containerId": "other"},  # names another attachment than the file's own name
        ],
    )
    def test_gc_dels_nothing_a_damaged_file_names(self, env: Env, change: dict[str, Any]) -> None:
        network = env.network({"type": "first", "result": RESULT_110}, version="1.1.0")
        env.runtime.add(network, env.rt)
        data = json.loads(env.cache_file().read_text())
        env.cache_file().write_text(json.dumps(data | change))
        env.log.unlink()
        env.runtime.gc(network, [])
        assert [c["command"] for c in env.calls()] == ["GC"]

    def test_gc_goes_on_to_the_plugins_when_the_cache_cannot_be_listed(self, env: Env) -> None:
        env.cache_dir.mkdir()
        (env.cache_dir / "results").write_text("not a directory")
        with pytest.raises(CNIError) as info:
            env.runtime.gc(env.network({"type": "first"}, version="1.1.0"), [])
        assert "cannot list" in info.value.msg
        assert [c["command"] for c in env.calls()] == ["GC"]


class TestBuildConfig:
    def test_keys_sorted_unknown_kept_capabilities_kept(self) -> None:
        network = NetworkConfigList.from_bytes(
            b'{"cniVersion": "1.0.0", "name": "n", "plugins": [{"type": "t", "z": 1, "capabilities": {"mac": true}}]}'
        )
        stdin = build_plugin_config(network, network.plugins[0], None, RuntimeConf("c", capability_args={"mac": "m"}))
        assert json.loads(stdin) == {
            "capabilities": {"mac": True},
            "cniVersion": "1.0.0",
            "name": "n",
            "runtimeConfig": {"mac": "m"},
            "type": "t",
            "z": 1,
        }

    def test_prev_result_is_converted_to_list_version(self) -> None:
        network = NetworkConfigList.from_bytes(b'{"cniVersion": "0.2.0", "name": "n", "plugins": [{"type": "t"}]}')
        prev = Result.from_dict(RESULT_040).as_version("0.2.0")
        stdin = json.loads(build_plugin_config(network, network.plugins[0], prev))
        assert stdin["prevResult"] == {
            "cniVersion": "0.2.0",
            "ip4": {"ip": "10.1.0.5/16", "gateway": "10.1.0.1"},
            "dns": {},
        }


class TestLoadFromDirectory:
    def write(self, directory: Path, name: str, data: dict[str, Any]) -> None:
        (directory / name).write_text(json.dumps(data))

    def test_conflist_wins_over_conf_and_files_are_sorted(self, tmp_path: Path) -> None:
        self.write(tmp_path, "10-a.conf", {"cniVersion": "0.4.0", "name": "net", "type": "from-conf"})
        self.write(tmp_path, "20-b.conflist", {"cniVersion": "0.4.0", "name": "net", "plugins": [{"type": "second"}]})
        self.write(tmp_path, "15-c.conflist", {"cniVersion": "0.4.0", "name": "net", "plugins": [{"type": "first"}]})
        assert [p.type for p in load_network(str(tmp_path), "net").plugins] == ["first"]

    def test_legacy_conf_is_up_converted(self, tmp_path: Path) -> None:
        self.write(tmp_path, "10-x.json", {"cniVersion": "0.3.1", "name": "other", "type": "x"})
        self.write(tmp_path, "20-y.conf", {"cniVersion": "0.3.1", "name": "net", "type": "bridge", "k": 1})
        config = load_network(str(tmp_path), "net")
        assert (config.name, config.cni_version) == ("net", "0.3.1")
        assert config.plugins[0].raw == {"cniVersion": "0.3.1", "name": "net", "type": "bridge", "k": 1}

    def test_sibling_folder_plugins_are_appended_unless_only_inlined(self, tmp_path: Path) -> None:
        self.write(tmp_path, "net.conflist", {"cniVersion": "1.1.0", "name": "net", "plugins": [{"type": "a"}]})
        (tmp_path / "net").mkdir()
        self.write(tmp_path / "net", "20-c.conf", {"type": "c"})
        self.write(tmp_path / "net", "10-b.conf", {"type": "b"})
        self.write(tmp_path / "net", "30-ignored.json", {"type": "ignored"})
        assert [p.type for p in load_network(str(tmp_path), "net").plugins] == ["a", "b", "c"]
        self.write(
            tmp_path,
            "net.conflist",
            {"cniVersion": "1.1.0", "name": "net", "loadOnlyInlinedPlugins": True, "plugins": [{"type": "a"}]},
        )
        assert [p.type for p in load_network(str(tmp_path), "net").plugins] == ["a"]

    def test_list_without_plugins_uses_the_folder(self, tmp_path: Path) -> None:
        self.write(tmp_path, "net.conflist", {"cniVersion": "1.1.0", "name": "net"})
        (tmp_path / "net").mkdir()
        self.write(tmp_path / "net", "a.conf", {"type": "a"})
        assert [p.type for p in load_network(str(tmp_path), "net").plugins] == ["a"]

    def test_list_with_no_plugins_anywhere(self, tmp_path: Path) -> None:
        self.write(tmp_path, "net.conflist", {"cniVersion": "1.1.0", "name": "net"})
        with pytest.raises(CNIError, match="no plugin configs found"):
            load_network(str(tmp_path), "net")

    def test_errors(self, tmp_path: Path) -> None:
        with pytest.raises(NoConfigsFound):
            load_network(str(tmp_path / "missing"), "net")
        self.write(tmp_path, "a.conflist", {"cniVersion": "1.0.0", "name": "a", "plugins": [{"type": "x"}]})
        with pytest.raises(NetworkNotFound, match='no net configuration with name "net"'):
            load_network(str(tmp_path), "net")

    def test_broken_conflist_names_its_file(self, tmp_path: Path) -> None:
        (tmp_path / "bad.conflist").write_text("{ nope")
        with pytest.raises(CNIError) as info:
            load_network(str(tmp_path), "net")
        assert str(tmp_path / "bad.conflist") in info.value.msg
        assert info.value.code == ErrorCode.DECODING_FAILURE

    def test_plugin_config_requires_type(self) -> None:
        with pytest.raises(CNIError, match="missing 'type'"):
            PluginConfig.from_bytes(b'{"name": "x"}')
