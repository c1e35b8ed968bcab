"""Config lists, version selection, CNI_ARGS, name validation and typed fields.

Version-selection and list-parsing cases follow ``libcni/conf_test.go``.
"""

from __future__ import annotations

import json

import pytest

from pycni.spec import CNIError, ErrorCode, Fields, NetworkConfigList, load_args, split_pairs
from pycni.spec.validate import validate_container_id, validate_interface_name, validate_network_name
from pycni.spec.version import VersionError, greater_than_or_equal, parse_version


def conflist(**extra: object) -> bytes:
    data: dict[str, object] = {"cniVersion": "1.0.0", "name": "net", "plugins": [{"type": "bridge"}]}
    data.update(extra)
    return json.dumps(data).encode()


class TestVersions:
    def test_empty_is_0_1_0(self) -> None:
        assert parse_version("") == (0, 1, 0)

    @pytest.mark.parametrize(("text", "parsed"), [("1", (1, 0, 0)), ("0.4", (0, 4, 0)), ("1.1.0", (1, 1, 0))])
    def test_missing_parts_are_zero(self, text: str, parsed: tuple[int, int, int]) -> None:
        assert parse_version(text) == parsed

    @pytest.mark.parametrize("text", ["1.2.3.4", "a.b.c", "1..0", "1.x"])
    def test_malformed(self, text: str) -> None:
        with pytest.raises(VersionError):
            parse_version(text)

    def test_numeric_comparison(self) -> None:
        assert greater_than_or_equal("0.10.0", "0.4.0")
        assert not greater_than_or_equal("0.3.1", "0.4.0")


class TestConfigList:
    def test_selects_highest_of_cni_versions(self) -> None:
        config = NetworkConfigList.from_bytes(conflist(cniVersion="0.4.0", cniVersions=["0.3.1", "1.0.0", "0.4.0"]))
        assert config.cni_version == "1.0.0"

    def test_drops_versions_newer_than_implemented(self) -> None:
        config = NetworkConfigList.from_bytes(conflist(cniVersion="4.0.0", cniVersions=["1.0.0", "1.1.0", "2.5.0"]))
        assert config.cni_version == "1.1.0"

    def test_empty_cni_versions_falls_back_to_cni_version(self) -> None:
        assert NetworkConfigList.from_bytes(conflist(cniVersion="0.4.0", cniVersions=[])).cni_version == "0.4.0"

    def test_without_cni_versions_the_version_is_taken_as_is(self) -> None:
        # libcni does not reject a too-new cniVersion: the plugin does, with code 1.
        assert NetworkConfigList.from_bytes(conflist(cniVersion="9.9.9")).cni_version == "9.9.9"

    @pytest.mark.parametrize(
        ("extra", "message"),
        [
            ({"cniVersions": "1.0.0"}, "invalid type for cniVersions"),
            ({"cniVersions": [1]}, "invalid type for cniVersions index 0"),
            ({"cniVersions": ["x.y"]}, "invalid cniVersions entry x.y at index 0"),
            ({"cniVersion": 1}, "invalid cniVersion type"),
            ({"name": 5}, "invalid name type"),
            ({"plugins": []}, "no plugins in list"),
            ({"plugins": {"type": "x"}}, "invalid 'plugins' type"),
            ({"plugins": [{"ipam": {}}]}, "missing 'type'"),
            ({"disableCheck": "yes"}, "invalid value 'yes' for disableCheck"),
            ({"disableGC": 1}, "invalid type number for disableGC"),
        ],
    )
    def test_invalid_lists(self, extra: dict[str, object], message: str) -> None:
        with pytest.raises(CNIError) as info:
            NetworkConfigList.from_bytes(conflist(**extra))
        assert info.value.code == ErrorCode.INVALID_NETWORK_CONFIG
        assert message in info.value.msg

    def test_missing_name(self) -> None:
        with pytest.raises(CNIError, match="no name"):
            NetworkConfigList.from_bytes(b'{"cniVersion": "1.0.0", "plugins": [{"type": "x"}]}')

    def test_not_json(self) -> None:
        with pytest.raises(CNIError) as info:
            NetworkConfigList.from_bytes(b"{not json")
        assert info.value.code == ErrorCode.DECODING_FAILURE

    @pytest.mark.parametrize("value", [True, "true", "TRUE", "True"])
    def test_booleans_accept_strings_in_any_case(self, value: object) -> None:
        config = NetworkConfigList.from_bytes(conflist(disableCheck=value, disableGC=value))
        assert config.disable_check and config.disable_gc

    def test_load_only_inlined_without_plugins_is_an_error(self) -> None:
        with pytest.raises(CNIError, match="loadOnlyInlinedPlugins"):
            NetworkConfigList.from_bytes(b'{"name": "n", "cniVersion": "1.1.0", "loadOnlyInlinedPlugins": true}')

    def test_plugin_objects_keep_unknown_keys(self) -> None:
        raw = {"type": "bridge", "custom": {"deep": [1, 2]}, "cni.dev/x": 1}
        config = NetworkConfigList.from_bytes(conflist(plugins=[raw]))
        assert config.plugins[0].raw == raw

    def test_source_bytes_are_kept_for_the_cache(self) -> None:
        data = conflist()
        assert NetworkConfigList.from_bytes(data).source == data


class TestCniArgs:
    def test_pairs(self) -> None:
        assert split_pairs("IP=10.0.0.2;K8S_POD_NAME=x") == [("IP", "10.0.0.2"), ("K8S_POD_NAME", "x")]

    @pytest.mark.parametrize("text", ["IP", "IP=1=2", "IP=1;", ";"])
    def test_invalid_pairs(self, text: str) -> None:
        with pytest.raises(CNIError) as info:
            split_pairs(text)
        assert info.value.code == ErrorCode.INVALID_ENVIRONMENT_VARIABLES

    def test_unknown_keys_fail_unless_ignored(self) -> None:
        with pytest.raises(CNIError, match="unknown args"):
            load_args("IP=10.0.0.2;FOO=bar", ("IP",))
        for flag in ("1", "true", "TRUE"):
            assert load_args(f"IgnoreUnknown={flag};IP=10.0.0.2;FOO=bar", ("IP",)) == {"IP": "10.0.0.2"}

    def test_keys_are_case_sensitive(self) -> None:
        with pytest.raises(CNIError):
            load_args("ip=10.0.0.2", ("IP",))

    def test_bad_ignore_unknown_value(self) -> None:
        with pytest.raises(CNIError, match="IgnoreUnknown"):
            load_args("IgnoreUnknown=maybe", ())


class TestNames:
    def test_valid(self) -> None:
        validate_container_id("abc-123_x.y")
        validate_network_name("my.net-1")
        validate_interface_name("eth0")

    def test_codes(self) -> None:
        with pytest.raises(CNIError) as missing:
            validate_container_id("")
        assert missing.value.code == ErrorCode.UNKNOWN_CONTAINER
        with pytest.raises(CNIError) as bad_net:
            validate_network_name("-net")
        assert bad_net.value.code == ErrorCode.INVALID_NETWORK_CONFIG
        with pytest.raises(CNIError) as long_if:
            validate_interface_name("x" * 16)
        assert long_if.value.code == ErrorCode.INVALID_ENVIRONMENT_VARIABLES


class TestFields:
    def test_case_insensitive_keys(self) -> None:
        fields = Fields({"IsGateway": True, "bridge": "br0"})
        assert fields.boolean("isGateway") is True
        assert fields.string("Bridge") == "br0"

    def test_wrong_type_names_key_and_value(self) -> None:
        with pytest.raises(CNIError) as info:
            Fields({"ipam": {"portIsolation": "true"}}).obj("ipam").boolean("portIsolation")
        assert info.value.code == ErrorCode.INVALID_NETWORK_CONFIG
        assert info.value.msg == "ipam.portIsolation: expected true or false, got string 'true'"

    def test_null_means_default(self) -> None:
        assert Fields({"mtu": None}).integer("mtu", 1500) == 1500

    def test_integer_bounds(self) -> None:
        with pytest.raises(CNIError, match="between 0 and 4094"):
            Fields({"vlan": 5000}).integer("vlan", minimum=0, maximum=4094)

    def test_cidr(self) -> None:
        assert str(Fields({"subnet": "10.1.2.3/24"}).cidr("subnet")) == "10.1.2.3/24"
        with pytest.raises(CNIError, match="CIDR"):
            Fields({"subnet": "10.1.2.3"}).cidr("subnet")
