"""The plugin SDK's dispatcher: env matrix, validation, version gates, error shape.

Cases follow ``cni/pkg/skel/skel_test.go`` where the reference has them.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from pycni.skel import CmdArgs, Plugin
from pycni.spec import CNIError, ErrorCode, Interface, IPConfig, Result
from pycni.spec.result import parse_cidr

CONFIG = {"cniVersion": "1.0.0", "name": "testnet", "type": "test"}


def env_for(command: str, **overrides: str) -> dict[str, str]:
    env = {
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": "some-container-id",
        "CNI_NETNS": "/some/netns/path",
        "CNI_IFNAME": "eth0",
        "CNI_ARGS": "",
        "CNI_PATH": "/some/cni/path",
    }
    env.update(overrides)
    return {k: v for k, v in env.items() if v is not None}


def make_plugin(calls: list[CmdArgs], versions: tuple[str, ...] | None = None) -> Plugin:
    plugin = Plugin("test", versions=versions) if versions else Plugin("test")

    @plugin.add
    def add(args: CmdArgs) -> Result:
        calls.append(args)
        result = Result("1.1.0")
        index = result.add_interface(Interface(name=args.ifname, sandbox=args.netns))
        result.ips.append(IPConfig(address=parse_cidr("10.0.0.2/24", "x"), interface=index))
        return result

    @plugin.delete
    def delete(args: CmdArgs) -> None:
        calls.append(args)

    @plugin.check
    def check(args: CmdArgs) -> None:
        calls.append(args)

    return plugin


def error_of(stdout: str) -> dict[str, Any]:
    data = json.loads(stdout)
    assert isinstance(data, dict)
    return data


def invoke(plugin: Plugin, env: dict[str, str], config: object = CONFIG) -> tuple[int, str, str]:
    stdin = config if isinstance(config, bytes) else json.dumps(config).encode()
    reply = plugin.invoke(env, stdin)
    return reply.exit_code, reply.stdout, reply.stderr


class TestEnvironmentMatrix:
    @pytest.mark.parametrize(
        ("command", "missing"),
        [
            ("ADD", ["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"]),
            ("CHECK", ["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"]),
            ("DEL", ["CNI_CONTAINERID", "CNI_IFNAME", "CNI_PATH"]),
            ("GC", ["CNI_PATH"]),
            ("STATUS", ["CNI_PATH"]),
        ],
    )
    def test_reports_all_missing_variables_not_just_the_first(self, command: str, missing: list[str]) -> None:
        env = {"CNI_COMMAND": command}
        code, stdout, _ = invoke(make_plugin([]), env)
        assert code == 1
        err = error_of(stdout)
        assert err["code"] == ErrorCode.INVALID_ENVIRONMENT_VARIABLES
        assert err["msg"] == f"required env variables [{','.join(missing)}] missing"

    def test_del_does_not_require_netns(self) -> None:
        calls: list[CmdArgs] = []
        code, stdout, _ = invoke(make_plugin(calls), env_for("DEL", CNI_NETNS=""))
        assert (code, stdout) == (0, "")
        assert calls[0].netns == ""

    def test_version_requires_only_the_command(self) -> None:
        code, stdout, _ = invoke(make_plugin([]), {"CNI_COMMAND": "VERSION"}, b"")
        assert code == 0
        assert json.loads(stdout) == {
            "cniVersion": "1.1.0",
            "supportedVersions": ["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"],
        }

    def test_no_command_prints_about_on_stderr_and_succeeds(self) -> None:
        code, stdout, stderr = invoke(make_plugin([]), {})
        assert (code, stdout) == (0, "")
        assert "CNI test plugin" in stderr
        assert "CNI protocol versions supported: 0.1.0, 0.2.0" in stderr

    def test_unknown_command(self) -> None:
        code, stdout, _ = invoke(make_plugin([]), env_for("NOPE"))
        assert code == 1
        assert error_of(stdout)["code"] == 4
        assert error_of(stdout)["msg"] == "unknown CNI_COMMAND: NOPE"


class TestValidation:
    @pytest.mark.parametrize(
        ("ifname", "msg"),
        [
            ("a" * 16, "interface name is too long"),
            (".", "interface name is . or .."),
            ("..", "interface name is . or .."),
            ("eth/0", "interface name contains / or : or whitespace characters"),
            ("eth:0", "interface name contains / or : or whitespace characters"),
            ("eth 0", "interface name contains / or : or whitespace characters"),
        ],
    )
    def test_bad_interface_names(self, ifname: str, msg: str) -> None:
        calls: list[CmdArgs] = []
        code, stdout, _ = invoke(make_plugin(calls), env_for("ADD", CNI_IFNAME=ifname))
        assert code == 1
        assert error_of(stdout)["code"] == 4
        assert error_of(stdout)["msg"] == msg
        assert calls == []

    def test_fifteen_character_interface_name_is_fine(self) -> None:
        code, _, _ = invoke(make_plugin([]), env_for("ADD", CNI_IFNAME="a" * 15))
        assert code == 0

    @pytest.mark.parametrize("cid", ["-leading-dash", "has space", "semi;colon", "slash/no"])
    def test_bad_container_ids(self, cid: str) -> None:
        code, stdout, _ = invoke(make_plugin([]), env_for("ADD", CNI_CONTAINERID=cid))
        assert code == 1
        assert error_of(stdout) == {
            "cniVersion": "1.1.0",
            "code": 4,
            "msg": "invalid characters in containerID",
            "details": cid,
        }

    def test_malformed_json_is_code_6(self) -> None:
        code, stdout, _ = invoke(make_plugin([]), env_for("ADD"), b'{"name": "x",')
        assert code == 1
        assert error_of(stdout)["code"] == ErrorCode.DECODING_FAILURE
        assert error_of(stdout)["msg"].startswith("error unmarshall network config")

    def test_non_object_json_is_code_6(self) -> None:
        code, stdout, _ = invoke(make_plugin([]), env_for("ADD"), b"[1, 2]")
        assert code == 1
        assert error_of(stdout)["code"] == ErrorCode.DECODING_FAILURE

    def test_missing_network_name_is_code_7(self) -> None:
        code, stdout, _ = invoke(make_plugin([]), env_for("ADD"), {"cniVersion": "1.0.0"})
        assert code == 1
        assert error_of(stdout)["code"] == ErrorCode.INVALID_NETWORK_CONFIG
        assert error_of(stdout)["msg"] == "missing network name"

    def test_invalid_network_name_is_code_7(self) -> None:
        code, stdout, _ = invoke(make_plugin([]), env_for("ADD"), {"cniVersion": "1.0.0", "name": "bad name"})
        assert code == 1
        assert error_of(stdout)["code"] == 7
        assert error_of(stdout)["details"] == "bad name"


class TestVersionGates:
    def test_missing_cni_version_means_0_1_0(self) -> None:
        calls: list[CmdArgs] = []
        code, stdout, _ = invoke(make_plugin(calls), env_for("ADD"), {"name": "testnet"})
        assert code == 0
        assert calls[0].cni_version == "0.1.0"
        assert json.loads(stdout) == {"cniVersion": "0.1.0", "ip4": {"ip": "10.0.0.2/24"}, "dns": {}}

    @pytest.mark.parametrize("version", ["1.2.0", "2.0.0", "0.5.0", "banana"])
    def test_unknown_or_too_new_version_is_code_1(self, version: str) -> None:
        calls: list[CmdArgs] = []
        code, stdout, _ = invoke(make_plugin(calls), env_for("ADD"), {**CONFIG, "cniVersion": version})
        assert code == 1
        err = error_of(stdout)
        assert err["code"] == ErrorCode.INCOMPATIBLE_CNI_VERSION
        assert err["msg"] == "incompatible CNI versions"
        assert err["details"].startswith(f'config is "{version}", plugin supports ["0.1.0"')
        assert calls == []

    def test_version_not_supported_by_plugin(self) -> None:
        plugin = make_plugin([], versions=("0.4.0", "1.0.0"))
        code, stdout, _ = invoke(plugin, env_for("ADD"), {**CONFIG, "cniVersion": "0.3.1"})
        assert code == 1
        assert error_of(stdout)["details"] == 'config is "0.3.1", plugin supports ["0.4.0" "1.0.0"]'

    @pytest.mark.parametrize("version", ["0.1.0", "0.2.0", "0.3.0", "0.3.1"])
    def test_check_needs_0_4_0(self, version: str) -> None:
        code, stdout, _ = invoke(make_plugin([]), env_for("CHECK"), {**CONFIG, "cniVersion": version})
        assert code == 1
        assert error_of(stdout)["msg"] == "config version does not allow CHECK"

    def test_check_when_plugin_lacks_new_enough_version(self) -> None:
        plugin = make_plugin([], versions=("0.1.0", "0.2.0", "0.3.1"))
        code, stdout, _ = invoke(plugin, env_for("CHECK"), {**CONFIG, "cniVersion": "0.4.0"})
        assert code == 1
        assert error_of(stdout)["msg"] == "plugin version does not allow CHECK"

    @pytest.mark.parametrize("verb", ["GC", "STATUS"])
    def test_gc_and_status_need_1_1_0(self, verb: str) -> None:
        code, stdout, _ = invoke(make_plugin([]), env_for(verb), CONFIG)
        assert code == 1
        assert error_of(stdout)["msg"] == f"config version does not allow {verb}"

    @pytest.mark.parametrize("verb", ["GC", "STATUS"])
    def test_gc_and_status_without_handler_succeed(self, verb: str) -> None:
        code, stdout, _ = invoke(make_plugin([]), env_for(verb), {**CONFIG, "cniVersion": "1.1.0"})
        assert (code, stdout) == (0, "")


class TestResultsAndErrors:
    @pytest.mark.parametrize("version", ["0.3.1", "0.4.0", "1.0.0", "1.1.0"])
    def test_add_result_is_printed_at_config_version(self, version: str) -> None:
        code, stdout, _ = invoke(make_plugin([]), env_for("ADD"), {**CONFIG, "cniVersion": version})
        assert code == 0
        assert json.loads(stdout)["cniVersion"] == version

    def test_cni_error_keeps_its_code_and_config_version(self) -> None:
        plugin = Plugin("failing")

        @plugin.add
        def add(args: CmdArgs) -> Result:
            raise CNIError(ErrorCode.TRY_AGAIN_LATER, "busy", "come back later")

        code, stdout, _ = invoke(plugin, env_for("ADD"), {**CONFIG, "cniVersion": "0.4.0"})
        assert code == 1
        assert error_of(stdout) == {"cniVersion": "0.4.0", "code": 11, "msg": "busy", "details": "come back later"}

    def test_unexpected_exception_is_code_999_one_line_no_traceback(self) -> None:
        plugin = Plugin("buggy")

        @plugin.add
        def add(args: CmdArgs) -> Result:
            raise KeyError("multi\nline")

        code, stdout, stderr = invoke(plugin, env_for("ADD"))
        assert code == 1
        err = error_of(stdout)
        assert err["code"] == 999
        assert "\n" not in err["msg"]
        assert err["msg"].startswith("KeyError:")
        assert "Traceback" not in stdout
        assert stderr == ""

    def test_debug_env_puts_traceback_on_stderr(self) -> None:
        plugin = Plugin("buggy")

        @plugin.add
        def add(args: CmdArgs) -> Result:
            raise RuntimeError("boom")

        code, stdout, stderr = invoke(plugin, env_for("ADD", PYCNI_DEBUG="1"))
        assert code == 1
        assert "Traceback" in stderr
        assert "Traceback" not in stdout

    def test_own_netns_is_refused_before_the_handler_runs(self) -> None:
        calls: list[CmdArgs] = []
        code, stdout, _ = invoke(make_plugin(calls), env_for("ADD", CNI_NETNS="/proc/self/ns/net"))
        assert code == 1
        assert error_of(stdout)["code"] == ErrorCode.INVALID_NETNS
        assert calls == []

    def test_netns_override_skips_the_own_netns_check(self) -> None:
        calls: list[CmdArgs] = []
        env = env_for("ADD", CNI_NETNS="/proc/self/ns/net", CNI_NETNS_OVERRIDE="true")
        code, _, _ = invoke(make_plugin(calls), env)
        assert code == 0
        assert len(calls) == 1

    def test_bad_prev_result_is_a_decoding_error(self) -> None:
        plugin = Plugin("chained")

        @plugin.add
        def add(args: CmdArgs) -> Result:
            prev = args.prev_result()
            assert prev is not None
            return prev

        config = {**CONFIG, "prevResult": {"cniVersion": "1.0.0", "ips": [{"address": "not-an-ip"}]}}
        code, stdout, _ = invoke(plugin, env_for("ADD"), config)
        assert code == 1
        assert error_of(stdout)["code"] == ErrorCode.DECODING_FAILURE
        assert "prevResult" in error_of(stdout)["msg"]

    def test_prev_result_without_version_takes_config_version(self) -> None:
        seen: list[Result | None] = []
        plugin = Plugin("chained")

        @plugin.add
        def add(args: CmdArgs) -> Result:
            prev = args.prev_result()
            seen.append(prev)
            assert prev is not None
            return prev

        config = {**CONFIG, "cniVersion": "0.4.0", "prevResult": {"ips": [{"version": "4", "address": "10.1.1.2/24"}]}}
        code, stdout, _ = invoke(plugin, env_for("ADD"), config)
        assert code == 0
        assert seen[0] is not None and seen[0].cni_version == "0.4.0"
        assert json.loads(stdout)["ips"] == [{"version": "4", "address": "10.1.1.2/24"}]


class TestCmdArgsHelpers:
    def test_runtime_config_is_case_insensitive(self) -> None:
        args = CmdArgs("ADD", "c", "", "eth0", "", [], b"", {"runtimeConfig": {"PortMappings": [1]}})
        assert args.runtime_config("portMappings") == [1]
        assert args.runtime_config("bandwidth") is None

    def test_valid_attachments_accepts_both_keys(self) -> None:
        legacy = CmdArgs(
            "GC", "", "", "", "", [], b"", {"cni.dev/attachments": [{"containerID": "a", "ifname": "eth0"}]}
        )
        assert legacy.valid_attachments() == [("a", "eth0")]
        current = CmdArgs(
            "GC", "", "", "", "", [], b"", {"cni.dev/valid-attachments": [{"containerID": "b", "ifname": "net1"}]}
        )
        assert current.valid_attachments() == [("b", "net1")]

    def test_no_list_is_none_not_empty(self) -> None:
        """No list means "nothing known to be stale"; an empty list means "all stale"."""
        assert CmdArgs("GC", "", "", "", "", [], b"", {}).valid_attachments() is None
        empty = CmdArgs("GC", "", "", "", "", [], b"", {"cni.dev/valid-attachments": []})
        assert empty.valid_attachments() == []
