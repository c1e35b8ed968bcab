"""Conversion of CNI results between every spec version, held to the Go reference.

``pycni.spec.result`` must decode, convert and encode results exactly as
``github.com/containernetworking/cni/pkg/types/{020,040,100}`` do. The expected
JSON lives in ``tests/unit/fixtures/results/`` and is compared as decoded dicts
(semantic equality, key order ignored, as Gomega's ``MatchJSON``).

Fixture provenance. The data is re-authored as JSON from the reference
(containernetworking/cni, Apache-2.0); no Go code is copied:

* ``full_1.1.0``, ``full_0.4.0``, ``full_0.1.0``: ``pkg/types/100/types_test.go``
  ("correctly encodes a 1.1.0 / 0.4.0 / 0.1.0 Result", all from its ``testResult``).
* ``full_1.0.0``: ``pkg/types/100/types_test.go`` ("correctly converts a 1.0.0 Result
  to 1.1.0": the same result, only ``cniVersion`` differs).
* ``full_0.3.1``: ``pkg/types/040/types_test.go`` ("correctly encodes a 0.3.x Result").
* ``full_0.3.0``: the 0.4.0 encoding with ``cniVersion`` 0.3.0, as
  ``pkg/types/100/types.go`` ``convertTo04x`` produces (no Go test pins 0.3.0 itself).
* ``full_0.2.0``: ``pkg/types/020/types_test.go`` (``testResult`` JSON at 0.2.0; its
  0.1.0 form equals ``full_0.1.0``).
* ``legacy_no_route_gw_0.2.0``: ``pkg/types/040/types_test.go`` ("correctly round-trips
  a 0.2.0 Result without route gateways").
* ``no_ips_0.3.1``: ``pkg/types/040/types_test.go`` ("fails when downconverting a config
  to 0.2.0 that has no IPs": its ``testResult`` with IPs and routes removed).
* ``via_04x_*`` / ``via_02x_*``: ``full_*`` after passing through 0.3.x/0.4.0 or
  0.1.0/0.2.0, per the converters in ``pkg/types/100/types.go`` (``convertFrom04x``,
  ``convertFrom02x``) and ``pkg/types/040/types.go`` (``convertFrom02x``, ``convertTo02x``).
* ``multi_*``, ``v4_only_*``, ``v6_only_*``: written for this module; the expected
  encodings follow ``pkg/types/040/types.go`` ``convertTo02x`` and the shared
  ``pkg/types/types.go`` ``Route``, and were checked against the reference's
  ``pkg/types`` compiled from source.
* ``spec_appendix_examples``: the results in ``SPEC.md`` "Appendix: Examples".

Section 6 at the bottom pins the few places where pycni deliberately differs
from Go (inputs Go itself would mangle); each test says how Go behaves.
"""

from __future__ import annotations

import copy
import itertools
import json
from pathlib import Path
from typing import Any

import pytest

from pycni.spec.errors import CNIError, ErrorCode
from pycni.spec.result import Result

FIXTURES = Path(__file__).parent / "fixtures" / "results"

VERSIONS = ("0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
LEGACY = ("0.1.0", "0.2.0")
V04X = ("0.3.0", "0.3.1", "0.4.0")
V1X = ("1.0.0", "1.1.0")
NON_LEGACY = V04X + V1X

PAIRS = list(itertools.product(VERSIONS, VERSIONS))
PAIR_IDS = [f"{a}->{b}" for a, b in PAIRS]

NO_IP_ERROR = "cannot convert: no valid IP addresses"


def load(name: str) -> Any:
    """A fresh copy of ``fixtures/results/<name>.json``."""
    with (FIXTURES / f"{name}.json").open() as f:
        return json.load(f)


def decode(data: Any, default_version: str = "") -> Result:
    return Result.from_dict(copy.deepcopy(data), default_version)


def encode(data: Any, version: str | None = None) -> dict[str, Any]:
    """Decode ``data`` at its own version and encode it at ``version``."""
    return decode(data).to_dict(version)


def info_level(version: str) -> int:
    """How much a version's result type carries: 0 legacy, 1 0.3.x/0.4.0, 2 1.x."""
    return 0 if version in LEGACY else 1 if version in V04X else 2


def full_at(version: str, level: int) -> dict[str, Any]:
    """The Go test result encoded at ``version`` after passing through ``level``."""
    if version in LEGACY:
        return load(f"full_{version}")
    if level == 0:
        return load(f"via_02x_{version}")
    if level == 1 and version in V1X:
        return load(f"via_04x_{version}")
    return load(f"full_{version}")


# ---------------------------------------------------------------------------
# 1. The encodings the reference's types_test.go files check
# ---------------------------------------------------------------------------


def test_fixture_set_is_consistent() -> None:
    """Every version of the Go test result names its own version."""
    for version in VERSIONS:
        assert load(f"full_{version}")["cniVersion"] == version


@pytest.mark.parametrize("version", VERSIONS)
def test_full_result_encodes_at_every_version(version: str) -> None:
    result = decode(load("full_1.1.0"))
    assert result.cni_version == "1.1.0"
    assert result.to_dict(version) == load(f"full_{version}")
    converted = result.as_version(version)
    assert converted.cni_version == version
    assert converted.to_dict() == load(f"full_{version}")
    assert json.loads(converted.to_json()) == load(f"full_{version}")
    # Converting never changes the source.
    assert result.cni_version == "1.1.0"
    assert result.to_dict() == load("full_1.1.0")


@pytest.mark.parametrize("version", VERSIONS)
def test_each_encoding_decodes_and_reencodes_unchanged(version: str) -> None:
    text = json.dumps(load(f"full_{version}"))
    result = Result.from_json(text)
    assert result.cni_version == version
    assert result.to_dict() == load(f"full_{version}")
    assert Result.from_json(text.encode()).to_dict() == load(f"full_{version}")


@pytest.mark.parametrize("version", VERSIONS)
def test_ip_version_field_only_in_0_3_and_0_4(version: str) -> None:
    out = encode(load("full_1.1.0"), version)
    if version in LEGACY:
        assert "ips" not in out
        return
    for ip in out["ips"]:
        if version in V04X:
            assert ip["version"] == ("6" if ":" in ip["address"] else "4")
        else:
            assert "version" not in ip


@pytest.mark.parametrize("version", VERSIONS)
def test_interface_1x_fields_only_at_1x(version: str) -> None:
    out = encode(load("full_1.1.0"), version)
    if version in LEGACY:
        assert "interfaces" not in out
        return
    (eth0,) = out["interfaces"]
    if version in V1X:
        assert (eth0["mtu"], eth0["socketPath"], eth0["pciID"]) == (1500, "/path/to/vhost/fd", "8086:9a01")
    else:
        assert set(eth0) == {"name", "mac", "sandbox"}


@pytest.mark.parametrize("version", LEGACY)
def test_legacy_encoding_nests_routes_with_dst_and_gw_only(version: str) -> None:
    out = encode(load("multi_1.1.0"), version)
    assert set(out) == {"cniVersion", "ip4", "ip6", "dns"}
    for block in (out["ip4"], out["ip6"]):
        assert block["routes"]
        for route in block["routes"]:
            assert set(route) <= {"dst", "gw"}


@pytest.mark.parametrize("version", VERSIONS)
def test_empty_dns_printed_at_0x_omitted_at_1x(version: str) -> None:
    out = encode(load("multi_1.1.0"), version)
    if version in V1X:
        assert "dns" not in out
    else:
        assert out["dns"] == {}


@pytest.mark.parametrize("version", VERSIONS)
def test_dns_with_only_empty_members_is_empty(version: str) -> None:
    data = {
        "cniVersion": "1.1.0",
        "ips": [{"address": "10.1.2.3/24"}],
        "dns": {"nameservers": [], "domain": "", "search": [], "options": []},
    }
    out = encode(data, version)
    if version in V1X:
        assert "dns" not in out
    else:
        assert out["dns"] == {}


def test_1_0_0_and_1_1_0_differ_only_in_version() -> None:
    """pkg/types/100/types_test.go: "correctly converts a 1.0.0 Result to 1.1.0"."""
    original = decode(load("full_1.1.0"))
    as_100 = original.as_version("1.0.0")
    assert as_100.cni_version == "1.0.0"
    back = as_100.as_version("1.1.0")
    assert back == original
    assert back.to_dict() == load("full_1.1.0")


# ---------------------------------------------------------------------------
# 2. Every ordered pair of versions
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(("source", "target"), PAIRS, ids=PAIR_IDS)
def test_convert_every_pair(source: str, target: str) -> None:
    expected = full_at(target, min(info_level(source), info_level(target)))
    result = decode(load(f"full_{source}"))
    converted = result.as_version(target)
    assert converted.cni_version == target
    assert converted.to_dict() == expected
    assert result.to_dict(target) == expected
    assert result.to_dict() == load(f"full_{source}")


@pytest.mark.parametrize(("source", "target"), PAIRS, ids=PAIR_IDS)
def test_round_trip_every_pair(source: str, target: str) -> None:
    """A->B->A keeps everything that both A and B carry (lossless within a level)."""
    there = decode(load(f"full_{source}")).to_dict(target)
    back = decode(there).to_dict(source)
    assert back == full_at(source, min(info_level(source), info_level(target)))
    if info_level(source) <= info_level(target):
        assert back == load(f"full_{source}")


@pytest.mark.parametrize(
    ("source", "target"),
    list(itertools.product(NON_LEGACY, VERSIONS)),
    ids=[f"{a}->{b}" for a, b in itertools.product(NON_LEGACY, VERSIONS)],
)
def test_multi_address_result_every_pair(source: str, target: str) -> None:
    """Several addresses per family, route extras, no DNS: lossless above 0.2.0."""
    assert encode(load(f"multi_{source}"), target) == load(f"multi_{target}")


@pytest.mark.parametrize("version", NON_LEGACY)
def test_route_extras_survive_every_non_legacy_version(version: str) -> None:
    """types.Route is shared by 040 and 100, so mtu/advmss/priority/table/scope carry over."""
    routes = encode(load("multi_1.1.0"), version)["routes"]
    assert routes[0] == {
        "dst": "0.0.0.0/0",
        "gw": "10.1.0.1",
        "mtu": 1400,
        "advmss": 1360,
        "priority": 100,
        "table": 0,
        "scope": 0,
    }
    assert routes[1] == {"dst": "::/0", "gw": "fd00:10::1", "priority": 5, "table": 200, "scope": 253}
    assert routes[3] == {"dst": "fd00:30::/48", "mtu": 1280}


@pytest.mark.parametrize("version", LEGACY)
def test_legacy_keeps_first_address_of_each_family(version: str) -> None:
    out = encode(load("multi_1.1.0"), version)
    assert out["ip4"]["ip"] == "10.1.0.5/16"  # second in the list, first IPv4
    assert out["ip4"]["gateway"] == "10.1.0.1"
    assert out["ip6"]["ip"] == "fd00:10::5/64"
    assert out["ip6"]["gateway"] == "fd00:10::1"
    assert [r["dst"] for r in out["ip4"]["routes"]] == ["0.0.0.0/0", "10.3.0.0/16"]
    assert [r["dst"] for r in out["ip6"]["routes"]] == ["::/0", "fd00:30::/48"]


def test_legacy_drops_routes_of_a_family_without_address_v4_only() -> None:
    out = encode(load("v4_only_1.0.0"), "0.2.0")
    assert out == load("v4_only_0.2.0")
    assert "ip6" not in out


def test_legacy_drops_routes_of_a_family_without_address_v6_only() -> None:
    out = encode(load("v6_only_0.4.0"), "0.1.0")
    assert out == load("v6_only_0.1.0")
    assert "ip4" not in out


@pytest.mark.parametrize(
    ("source", "target"),
    list(itertools.product(NON_LEGACY, LEGACY)),
    ids=[f"{a}->{b}" for a, b in itertools.product(NON_LEGACY, LEGACY)],
)
def test_no_ips_cannot_convert_to_legacy(source: str, target: str) -> None:
    """pkg/types/040/types_test.go: "fails when downconverting ... that has no IPs"."""
    result = decode(load("no_ips_0.3.1")).as_version(source)
    with pytest.raises(CNIError) as info:
        result.as_version(target)
    assert info.value.msg == NO_IP_ERROR
    with pytest.raises(CNIError) as info:
        result.to_dict(target)
    assert info.value.msg == NO_IP_ERROR


@pytest.mark.parametrize("target", NON_LEGACY)
def test_no_ips_converts_between_non_legacy_versions(target: str) -> None:
    out = encode(load("no_ips_0.3.1"), target)
    assert out["cniVersion"] == target
    assert out["interfaces"] == [{"name": "eth0", "mac": "00:11:22:33:44:55", "sandbox": "/proc/3553/ns/net"}]
    assert "ips" not in out
    assert "routes" not in out
    assert out["dns"] == load("full_0.3.1")["dns"]


def test_no_ips_and_no_anything_cannot_convert_to_legacy() -> None:
    with pytest.raises(CNIError) as info:
        decode({"cniVersion": "1.1.0"}).as_version("0.2.0")
    assert info.value.msg == NO_IP_ERROR


@pytest.mark.parametrize("legacy", LEGACY)
@pytest.mark.parametrize("target", NON_LEGACY)
def test_up_conversion_from_legacy_has_no_interfaces(legacy: str, target: str) -> None:
    out = encode(load(f"full_{legacy}"), target)
    assert out == load(f"via_02x_{target}")
    assert "interfaces" not in out
    assert all("interface" not in ip for ip in out["ips"])


@pytest.mark.parametrize("fixture", ["full_0.2.0", "legacy_no_route_gw_0.2.0"])
def test_legacy_round_trips_through_0_4_0(fixture: str) -> None:
    """pkg/types/040/types_test.go: "correctly round-trips a 0.2.0 Result with/without route gateways"."""
    as_040 = decode(load(fixture)).as_version("0.4.0")
    assert as_040.to_dict()["routes"] == [r for block in ("ip4", "ip6") for r in load(fixture)[block]["routes"]]
    assert as_040.as_version("0.2.0").to_dict() == load(fixture)


def test_as_version_same_version_is_an_independent_copy() -> None:
    original = decode(load("full_1.1.0"))
    same = original.as_version("1.1.0")
    assert same == original
    same.ips[0].interface = 7
    same.interfaces[0].name = "eth9"
    same.routes.clear()
    same.dns.nameservers.append("9.9.9.9")
    assert original.to_dict() == load("full_1.1.0")


def test_as_version_does_not_share_state_with_source() -> None:
    original = decode(load("full_0.4.0"))
    converted = original.as_version("1.1.0")
    converted.interfaces[0].mtu = 9000
    converted.routes[0].mtu = 1400
    converted.dns.search.append("x")
    assert original.to_dict() == load("full_0.4.0")


def test_as_version_empty_target_means_0_1_0() -> None:
    """internal/convert.go Convert: an empty target version is 0.1.0."""
    converted = decode(load("full_1.1.0")).as_version("")
    assert converted.cni_version == "0.1.0"
    assert converted.to_dict() == load("full_0.1.0")


@pytest.mark.parametrize("target", ["0.5.0", "2.0.0", "1.0", "0.3", "v1.0.0"])
def test_as_version_unknown_target_is_an_error(target: str) -> None:
    with pytest.raises(CNIError) as info:
        decode(load("full_1.1.0")).as_version(target)
    assert info.value.msg == f"no converter for CNI result version 1.1.0 to {target}"


# ---------------------------------------------------------------------------
# 3. Decoding quirks
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("marker", ["absent", "empty", "null"])
def test_missing_cni_version_is_0_1_0(marker: str) -> None:
    """pkg/types/020/types_test.go: "creates a 0.1.0 result passing CNIVersion ''"."""
    data = load("full_0.1.0")
    if marker == "absent":
        del data["cniVersion"]
    else:
        data["cniVersion"] = "" if marker == "empty" else None
    result = decode(data)
    assert result.cni_version == "0.1.0"
    assert result.to_dict() == load("full_0.1.0")


def test_missing_cni_version_reads_a_1x_shaped_body_as_legacy() -> None:
    """At 0.1.0 the ``ips``/``interfaces`` keys are unknown fields, ignored as by Go."""
    data = load("full_1.1.0")
    del data["cniVersion"]
    del data["dns"]
    assert encode(data) == {"cniVersion": "0.1.0", "dns": {}}


def test_legacy_keys_ignored_at_1x() -> None:
    assert encode({"cniVersion": "1.0.0", "ip4": {"ip": "10.0.0.2/24"}}) == {"cniVersion": "1.0.0"}


def test_default_version_applies_only_when_result_names_none() -> None:
    data = load("full_1.1.0")
    del data["cniVersion"]
    assert decode(data, "1.1.0").to_dict() == load("full_1.1.0")
    assert decode(load("full_0.4.0"), "1.1.0").to_dict() == load("full_0.4.0")


@pytest.mark.parametrize("version", ["0.5.0", "2.0.0", "1.0", "0.3", " 1.0.0", "v1.0.0", "1.0.0-rc1"])
def test_unknown_result_version_is_rejected(version: str) -> None:
    with pytest.raises(CNIError) as info:
        decode({"cniVersion": version, "ips": [{"address": "10.1.2.3/24"}]})
    assert "unsupported CNI result version" in info.value.msg


@pytest.mark.parametrize("target", ["1.0.0", "0.4.0", "0.2.0"])
def test_host_bits_kept_in_addresses_and_route_destinations(target: str) -> None:
    data = {
        "cniVersion": "1.1.0",
        "ips": [
            {"address": "10.1.2.3/24", "gateway": "10.1.2.1"},
            {"address": "1111:dddd::aaaa/80"},
        ],
        "routes": [{"dst": "10.9.8.7/8", "gw": "10.1.2.1"}, {"dst": "1111:dddd::aaaa/80"}],
    }
    out = encode(data, target)
    back = encode(out, "1.1.0")
    for encoded in (out, back):
        text = json.dumps(encoded)
        for cidr in ("10.1.2.3/24", "1111:dddd::aaaa/80", "10.9.8.7/8"):
            assert f'"{cidr}"' in text
    assert [ip["address"] for ip in back["ips"]] == ["10.1.2.3/24", "1111:dddd::aaaa/80"]
    assert [r["dst"] for r in back["routes"]] == ["10.9.8.7/8", "1111:dddd::aaaa/80"]


def test_host_bits_kept_in_legacy_blocks() -> None:
    data = {"cniVersion": "0.2.0", "ip4": {"ip": "10.1.2.3/24", "routes": [{"dst": "10.9.8.7/8"}]}}
    assert encode(data) == {**data, "dns": {}}
    assert encode(data, "0.4.0")["routes"] == [{"dst": "10.9.8.7/8"}]


def test_ipv6_is_printed_canonically() -> None:
    data = {
        "cniVersion": "1.0.0",
        "ips": [{"address": "ABCD:1234:FFFF:0:0:0:0:CDDE/64", "gateway": "ABCD:1234:FFFF::1"}],
    }
    assert encode(data)["ips"] == [{"address": "abcd:1234:ffff::cdde/64", "gateway": "abcd:1234:ffff::1"}]


@pytest.mark.parametrize("target", VERSIONS)
@pytest.mark.parametrize("absent", ["", None], ids=["empty", "null"])
def test_empty_gateway_is_absent(absent: str | None, target: str) -> None:
    data = {
        "cniVersion": "1.0.0",
        "ips": [{"address": "10.1.2.3/24", "gateway": absent}],
        "routes": [{"dst": "0.0.0.0/0", "gw": absent}],
    }
    out = encode(data, target)
    if target in LEGACY:
        assert out["ip4"] == {"ip": "10.1.2.3/24", "routes": [{"dst": "0.0.0.0/0"}]}
    else:
        assert "gateway" not in out["ips"][0]
        assert out["routes"] == [{"dst": "0.0.0.0/0"}]


def test_empty_gateway_is_absent_in_legacy_block() -> None:
    data = {
        "cniVersion": "0.2.0",
        "ip4": {"ip": "10.1.2.3/24", "gateway": "", "routes": [{"dst": "0.0.0.0/0", "gw": ""}]},
    }
    assert encode(data) == {
        "cniVersion": "0.2.0",
        "ip4": {"ip": "10.1.2.3/24", "routes": [{"dst": "0.0.0.0/0"}]},
        "dns": {},
    }
    assert encode(data, "1.0.0")["ips"] == [{"address": "10.1.2.3/24"}]


def test_keys_match_case_insensitively() -> None:
    data = {
        "CNIVersion": "1.0.0",
        "Interfaces": [{"Name": "eth0", "MTU": 9000, "SocketPath": "/s", "PCIID": "p", "Sandbox": "/ns"}],
        "IPs": [{"Address": "10.1.2.3/24", "GATEWAY": "10.1.2.1", "Interface": 0}],
        "Routes": [{"DST": "10.9.9.9/8", "GW": "10.1.2.1", "Priority": 3, "Table": 0}],
        "DNS": {"Nameservers": ["1.1.1.1"], "DOMAIN": "example.com", "Search": ["a"], "Options": ["b"]},
    }
    assert encode(data) == {
        "cniVersion": "1.0.0",
        "interfaces": [{"name": "eth0", "mtu": 9000, "sandbox": "/ns", "socketPath": "/s", "pciID": "p"}],
        "ips": [{"interface": 0, "address": "10.1.2.3/24", "gateway": "10.1.2.1"}],
        "routes": [{"dst": "10.9.9.9/8", "gw": "10.1.2.1", "priority": 3, "table": 0}],
        "dns": {"nameservers": ["1.1.1.1"], "domain": "example.com", "search": ["a"], "options": ["b"]},
    }


def test_legacy_keys_match_case_insensitively() -> None:
    data = {
        "cniVersion": "0.2.0",
        "IP4": {"IP": "10.1.2.3/24", "Gateway": "10.1.2.1", "Routes": [{"Dst": "0.0.0.0/0"}]},
    }
    assert encode(data) == {
        "cniVersion": "0.2.0",
        "ip4": {"ip": "10.1.2.3/24", "gateway": "10.1.2.1", "routes": [{"dst": "0.0.0.0/0"}]},
        "dns": {},
    }


@pytest.mark.parametrize("version", NON_LEGACY)
def test_interface_index_zero_is_kept_and_missing_index_not_invented(version: str) -> None:
    """pkg/types/{040,100}/types_test.go: "correctly marshals and unmarshals interface index 0"."""
    data = {"cniVersion": version, "ips": [{"interface": 0, "address": "10.1.2.3/24"}, {"address": "10.1.2.4/24"}]}
    ips = encode(data)["ips"]
    assert ips[0]["interface"] == 0
    assert "interface" not in ips[1]
    result = decode(data)
    assert result.ips[0].interface == 0
    assert result.ips[1].interface is None


def test_null_members_are_absent() -> None:
    data = {
        "cniVersion": "1.0.0",
        "interfaces": None,
        "ips": [{"address": "10.1.2.3/24", "interface": None}],
        "routes": None,
        "dns": None,
    }
    assert encode(data) == {"cniVersion": "1.0.0", "ips": [{"address": "10.1.2.3/24"}]}


def test_unknown_fields_are_ignored() -> None:
    data = {
        "cniVersion": "1.0.0",
        "interfaces": [{"name": "eth0", "unknown": 1}],
        "ips": [{"address": "10.1.2.3/24", "version": "6", "extra": True}],
        "extra": {},
    }
    assert encode(data) == {
        "cniVersion": "1.0.0",
        "interfaces": [{"name": "eth0"}],
        "ips": [{"address": "10.1.2.3/24"}],
    }


def test_zero_table_and_scope_are_kept_zero_mtu_is_not() -> None:
    data = {
        "cniVersion": "1.0.0",
        "routes": [{"dst": "0.0.0.0/0", "mtu": 0, "advmss": 0, "priority": 0, "table": 0, "scope": 0}],
    }
    assert encode(data)["routes"] == [{"dst": "0.0.0.0/0", "table": 0, "scope": 0}]


WRONG_TYPES = {
    "address number": {"cniVersion": "1.0.0", "ips": [{"address": 5}]},
    "address without prefix": {"cniVersion": "1.0.0", "ips": [{"address": "10.1.2.3"}]},
    "address prefix too long": {"cniVersion": "1.0.0", "ips": [{"address": "10.1.2.3/33"}]},
    "address leading zero octet": {"cniVersion": "1.0.0", "ips": [{"address": "010.1.2.3/24"}]},
    "address with spaces": {"cniVersion": "1.0.0", "ips": [{"address": " 10.1.2.3/24"}]},
    "interface string": {"cniVersion": "1.0.0", "ips": [{"address": "10.1.2.3/24", "interface": "0"}]},
    "interface float": {"cniVersion": "1.0.0", "ips": [{"address": "10.1.2.3/24", "interface": 0.0}]},
    "interface bool": {"cniVersion": "1.0.0", "ips": [{"address": "10.1.2.3/24", "interface": True}]},
    "gateway number": {"cniVersion": "1.0.0", "ips": [{"address": "10.1.2.3/24", "gateway": 5}]},
    "gateway malformed": {"cniVersion": "1.0.0", "ips": [{"address": "10.1.2.3/24", "gateway": "10.1.2"}]},
    "ips object": {"cniVersion": "1.0.0", "ips": {"address": "10.1.2.3/24"}},
    "ips of strings": {"cniVersion": "1.0.0", "ips": ["10.1.2.3/24"]},
    "interfaces of strings": {"cniVersion": "1.0.0", "interfaces": ["eth0"]},
    "interface name number": {"cniVersion": "1.0.0", "interfaces": [{"name": 5}]},
    "interface mtu string": {"cniVersion": "1.0.0", "interfaces": [{"name": "eth0", "mtu": "1500"}]},
    "interface mtu float": {"cniVersion": "1.0.0", "interfaces": [{"name": "eth0", "mtu": 1500.0}]},
    "route dst number": {"cniVersion": "1.0.0", "routes": [{"dst": 5}]},
    "route table string": {"cniVersion": "1.0.0", "routes": [{"dst": "0.0.0.0/0", "table": "1"}]},
    "dns list": {"cniVersion": "1.0.0", "dns": []},
    "dns nameservers string": {"cniVersion": "1.0.0", "dns": {"nameservers": "1.1.1.1"}},
    "dns domain number": {"cniVersion": "1.0.0", "dns": {"domain": 5}},
    "0.4.0 address number": {"cniVersion": "0.4.0", "ips": [{"version": "4", "address": 5}]},
    "legacy ip4 string": {"cniVersion": "0.2.0", "ip4": "10.1.2.3/24"},
    "legacy ip number": {"cniVersion": "0.2.0", "ip4": {"ip": 5}},
    "legacy route dst number": {"cniVersion": "0.1.0", "ip4": {"ip": "10.1.2.3/24", "routes": [{"dst": 5}]}},
    "cniVersion number": {"cniVersion": 1, "ips": [{"address": "10.1.2.3/24"}]},
    "not an object": [],
    "string": "x",
}


@pytest.mark.parametrize("data", list(WRONG_TYPES.values()), ids=list(WRONG_TYPES))
def test_wrong_types_are_decoding_failures(data: Any) -> None:
    with pytest.raises(CNIError) as info:
        decode(data)
    assert info.value.code == ErrorCode.DECODING_FAILURE == 6


@pytest.mark.parametrize("text", ["{", "", "nope", b"\xff\xfe"])
def test_malformed_json_is_a_decoding_failure(text: str | bytes) -> None:
    with pytest.raises(CNIError) as info:
        Result.from_json(text)
    assert info.value.code == 6


# ---------------------------------------------------------------------------
# 4. The results in SPEC.md "Appendix: Examples"
# ---------------------------------------------------------------------------

SPEC_EXAMPLES = load("spec_appendix_examples")["examples"]


@pytest.mark.parametrize("example", SPEC_EXAMPLES, ids=[e["source"] for e in SPEC_EXAMPLES])
def test_spec_appendix_result_reencodes_unchanged(example: dict[str, Any]) -> None:
    version = example["cniVersion"]
    # A prevResult carries no cniVersion: its version is the configuration's
    # (pkg/version ParsePrevResult injects it), and the encoding names it.
    result = decode(example["result"], default_version=version)
    assert result.cni_version == version
    expected = {"cniVersion": version, **example["result"]}
    assert result.to_dict() == expected
    assert decode(expected).to_dict() == expected
    # The 1.0.0 and 1.1.0 result types are the same.
    assert result.to_dict("1.0.0") == {**expected, "cniVersion": "1.0.0"}


def test_spec_appendix_bridge_result_at_older_versions() -> None:
    example = next(e for e in SPEC_EXAMPLES if "result of the bridge plugin" in e["source"])
    result = decode(example["result"], default_version="1.1.0")
    assert result.to_dict("0.4.0")["ips"] == [
        {"version": "4", "interface": 2, "address": "10.1.0.5/16", "gateway": "10.1.0.1"}
    ]
    assert result.to_dict("0.2.0") == {
        "cniVersion": "0.2.0",
        "ip4": {"ip": "10.1.0.5/16", "gateway": "10.1.0.1", "routes": [{"dst": "0.0.0.0/0"}]},
        "dns": {"nameservers": ["10.1.0.1"]},
    }


# ---------------------------------------------------------------------------
# 5. Go's decoding rules that pycni follows (each was once a difference; checked
#    against the reference's pkg/types compiled from source)
# ---------------------------------------------------------------------------


# Go behaviour pycni follows:
# treats any falsy cniVersion as absent. Go's create.DecodeVersion unmarshals it
# into a string, so 0, false, [] and {} are decoding errors (only null/"" mean 0.1.0).
@pytest.mark.parametrize("value", [0, False, [], {}], ids=["zero", "false", "list", "object"])
def test_go_non_string_falsy_cni_version_is_rejected(value: Any) -> None:
    with pytest.raises(CNIError) as info:
        decode({"cniVersion": value})
    assert info.value.code == 6


# Go behaviour pycni follows:
# `ip_address`) accept netmask and hostmask prefixes and IPv6 zones. Go's
# net.ParseCIDR takes only a decimal prefix length and no zone; net.ParseIP no zone.
@pytest.mark.parametrize(
    "data",
    [
        {"cniVersion": "1.0.0", "ips": [{"address": "10.1.2.3/255.255.255.0"}]},
        {"cniVersion": "1.0.0", "ips": [{"address": "10.1.2.3/0.0.0.255"}]},
        {"cniVersion": "1.0.0", "routes": [{"dst": "10.0.0.0/255.0.0.0"}]},
        {"cniVersion": "1.0.0", "ips": [{"address": "fe80::1%eth0/64"}]},
        {"cniVersion": "1.0.0", "ips": [{"address": "10.1.2.3/24", "gateway": "fe80::1%eth0"}]},
        {"cniVersion": "1.0.0", "routes": [{"dst": "::/0", "gw": "fe80::1%eth0"}]},
    ],
    ids=["netmask", "hostmask", "route-netmask", "address-zone", "gateway-zone", "route-gw-zone"],
)
def test_go_only_prefix_length_cidrs_and_zoneless_ips_accepted(data: dict[str, Any]) -> None:
    with pytest.raises(CNIError) as info:
        decode(data)
    assert info.value.code == 6


# Go behaviour pycni follows:
# IPv6 addresses as IPv6. Go's net.IP holds them as IPv4, so it prints
# "::ffff:1.2.3.4/120" as "1.2.3.4/24" and counts it as version "4".
def test_go_ipv4_mapped_addresses_print_as_ipv4() -> None:
    data = {"cniVersion": "1.0.0", "ips": [{"address": "::ffff:1.2.3.4/120", "gateway": "::ffff:1.2.3.1"}]}
    assert encode(data)["ips"] == [{"address": "1.2.3.4/24", "gateway": "1.2.3.1"}]
    assert encode(data, "0.4.0")["ips"] == [{"version": "4", "address": "1.2.3.4/24", "gateway": "1.2.3.1"}]
    assert encode(data, "0.2.0")["ip4"] == {"ip": "1.2.3.4/24", "gateway": "1.2.3.1"}


# Go behaviour pycni follows:
# mtu/socketPath/pciID at every version). The 040 Interface type has no such
# fields, so Go drops them when decoding a 0.3.x/0.4.0 result and they do not
# reappear when it is converted up to 1.x.
@pytest.mark.parametrize("target", V1X)
def test_go_0_4_0_interface_has_no_1x_fields(target: str) -> None:
    data = {"cniVersion": "0.4.0", "interfaces": [{"name": "eth0", "mtu": 1500, "socketPath": "/s", "pciID": "p"}]}
    assert encode(data, target) == {"cniVersion": target, "interfaces": [{"name": "eth0"}]}


# Go behaviour pycni follows:
# legacy encoding). Go's 020 IPConfig holds full types.Route values: a 0.1.0/0.2.0
# result keeps route mtu/advmss/priority/table/scope when re-encoded at its own
# version or converted 0.1.0<->0.2.0. Only 040 convertTo02x (down from 0.3.0+)
# keeps just dst and gw.
@pytest.mark.parametrize("target", LEGACY)
def test_go_legacy_result_keeps_its_route_extras(target: str) -> None:
    route = {"dst": "0.0.0.0/0", "gw": "10.0.0.1", "mtu": 1400, "advmss": 1360, "priority": 7, "table": 5, "scope": 0}
    for source in LEGACY:
        data = {"cniVersion": source, "ip4": {"ip": "10.0.0.2/24", "routes": [route]}}
        assert encode(data, target) == {
            "cniVersion": target,
            "ip4": {"ip": "10.0.0.2/24", "routes": [route]},
            "dns": {},
        }
    # Down-conversion from 0.3.0+ does strip them (this part agrees).
    assert encode({"cniVersion": "0.2.0", "ip4": {"ip": "10.0.0.2/24", "routes": [route]}}, "0.4.0")["routes"] == [
        route
    ]
    down = encode(
        {"cniVersion": "0.4.0", "ips": [{"version": "4", "address": "10.0.0.2/24"}], "routes": [route]}, target
    )
    assert down["ip4"]["routes"] == [{"dst": "0.0.0.0/0", "gw": "10.0.0.1"}]


# ---------------------------------------------------------------------------
# 6. Deliberate differences from Go, for results Go itself would mangle
# ---------------------------------------------------------------------------


def test_0_4_0_ip_version_is_derived_from_the_address() -> None:
    """Go re-encodes a 0.3.x/0.4.0 ``version`` string as decoded ("" when absent,
    "6" on an IPv4 address) and sorts into ip4/ip6 by it when converting down, so
    an IP without ``version`` is silently dropped. pycni derives the version from
    the address, which is what every well-formed result says anyway."""
    data = {"cniVersion": "0.4.0", "ips": [{"address": "10.0.0.2/24"}, {"version": "6", "address": "10.0.0.3/24"}]}
    assert encode(data)["ips"] == [
        {"version": "4", "address": "10.0.0.2/24"},
        {"version": "4", "address": "10.0.0.3/24"},
    ]
    assert encode(data, "0.2.0") == {"cniVersion": "0.2.0", "ip4": {"ip": "10.0.0.2/24"}, "dns": {}}


def test_legacy_routes_are_grouped_by_destination_family() -> None:
    """Go keeps a route in whichever ip4/ip6 block it was written in, even an IPv6
    route under ip4; pycni files routes by their destination's family."""
    both = {
        "cniVersion": "0.2.0",
        "ip4": {"ip": "10.0.0.2/24", "routes": [{"dst": "::/0"}]},
        "ip6": {"ip": "fd00::2/64"},
    }
    assert encode(both) == {
        "cniVersion": "0.2.0",
        "ip4": {"ip": "10.0.0.2/24"},
        "ip6": {"ip": "fd00::2/64", "routes": [{"dst": "::/0"}]},
        "dns": {},
    }


def test_exact_key_wins_over_case_variants() -> None:
    """Go assigns every case-insensitive match in document order (the last wins);
    pycni prefers the exactly spelled key and uses a variant only when it is absent."""
    text = '{"cniVersion": "1.0.0", "ips": [{"address": "10.1.2.3/24", "Address": "10.9.9.9/24"}]}'
    assert Result.from_json(text).to_dict()["ips"] == [{"address": "10.1.2.3/24"}]
    assert Result.from_json('{"CNIVERSION": "0.4.0"}').cni_version == "0.4.0"
