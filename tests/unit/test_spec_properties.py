"""Property tests of the spec library: conversion round trips, and nothing but ``CNIError`` on bad input.

Results of every shape the spec allows are generated at every version and
converted to every other version; where the reference says a conversion is
lossless (``/work/shared/reference/cni-spec.md`` §1.12, ``cni/pkg/types/{020,040,100}``)
the round trip must give the result back, and where it is lossy the loss must
be exactly Go's (an oracle below re-implements ``convertTo02x``/``convertFrom02x``
on the JSON). Configs, ``CNI_ARGS`` strings and capability arguments, valid,
mutated or random, may only ever raise :class:`CNIError`.

Profiles (``tests/support/strategies.py``): ``pycni-fast`` (the default, derandomized, what
``make test`` runs) and ``campaign`` (``HYPOTHESIS_PROFILE=campaign``: many more examples).
"""

from __future__ import annotations

import ipaddress
import json
import os
import tempfile
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pycni.spec import DNS, CNIError, ErrorCode, Fields, Interface, IPConfig, NetworkConfigList, PluginConfig, Result
from pycni.spec.args import format_pairs, load_args, split_pairs
from pycni.spec.config import decode_json_object
from pycni.spec.jsonutil import loads
from pycni.spec.result import Route
from pycni.spec.validate import validate_container_id, validate_interface_name, validate_network_name
from pycni.spec.version import ALL_VERSIONS, CURRENT_VERSION, VersionError, parse_version
from tests.support.strategies import ints, json_values, mutated, only_cni_errors

LEGACY = ("0.1.0", "0.2.0")
V04X = ("0.3.0", "0.3.1", "0.4.0")
V1X = ("1.0.0", "1.1.0")

# ---------------------------------------------------------------------------
# Strategies: results of every shape
# ---------------------------------------------------------------------------

small_text = st.text(max_size=12)
# IPv4-mapped IPv6 addresses decode as IPv4 (Go's To4()), so they cannot round-trip as IPv6.
ipv4 = st.ip_addresses(v=4)
ipv6 = st.ip_addresses(v=6).filter(lambda ip: ip.ipv4_mapped is None)
any_ip = st.one_of(ipv4, ipv6)
cidr4 = st.builds(lambda ip, plen: ipaddress.IPv4Interface((ip, plen)), ipv4, st.integers(0, 32))
cidr6 = st.builds(lambda ip, plen: ipaddress.IPv6Interface((ip, plen)), ipv6, st.integers(0, 128))
any_cidr = st.one_of(cidr4, cidr6)

interfaces = st.builds(
    Interface,
    name=small_text,
    mac=st.one_of(st.just(""), small_text),
    mtu=st.one_of(st.just(0), ints),
    sandbox=st.one_of(st.just(""), small_text),
    socket_path=st.one_of(st.just(""), small_text),
    pci_id=st.one_of(st.just(""), small_text),
)
ip_configs = st.builds(IPConfig, address=any_cidr, gateway=st.none() | any_ip, interface=st.none() | ints)
routes = st.builds(
    Route,
    dst=any_cidr,
    gw=st.none() | any_ip,
    mtu=st.one_of(st.just(0), ints),
    advmss=st.one_of(st.just(0), ints),
    priority=st.one_of(st.just(0), ints),
    table=st.none() | ints,
    scope=st.none() | ints,
)
plain_routes = st.builds(Route, dst=any_cidr, gw=st.none() | any_ip)
dns = st.builds(
    DNS,
    nameservers=st.lists(small_text, max_size=3),
    domain=st.one_of(st.just(""), small_text),
    search=st.lists(small_text, max_size=3),
    options=st.lists(small_text, max_size=3),
)
models = st.builds(
    Result,
    cni_version=st.just(CURRENT_VERSION),
    interfaces=st.lists(interfaces, max_size=3),
    ips=st.lists(ip_configs, max_size=4),
    routes=st.lists(st.one_of(routes, plain_routes), max_size=4),
    dns=dns,
)


def born_at(model: Result, version: str) -> Result:
    """A result as a plugin of ``version`` prints it: whatever that version's JSON cannot hold is gone.

    A 0.1.0/0.2.0 result holds at most one address per family and no interfaces.
    """
    if version in LEGACY:
        first: dict[int, IPConfig] = {}
        for ip in model.ips:
            first.setdefault(ip.address.version, IPConfig(ip.address, ip.gateway))
        model = Result(version, ips=[first[f] for f in (4, 6) if f in first], routes=model.routes, dns=model.dns)
    else:
        model = model.copy()
        model.cni_version = version
    return Result.from_json(model.to_json())


def results_at(version: str) -> st.SearchStrategy[Result]:
    return models.map(lambda model: born_at(model, version))


def wire(result: Result, version: str) -> Result:
    """``result`` printed at ``version`` and read back, as a plugin's stdout reaches the next one."""
    return Result.from_json(result.to_json(version))


# ---------------------------------------------------------------------------
# What the reference says is lost, and Go's converters as an oracle
# ---------------------------------------------------------------------------


def family(version: str) -> str:
    return "legacy" if version in LEGACY else "0.4" if version in V04X else "1.x"


def has_route_extras(result: Result) -> bool:
    return any(r.mtu or r.advmss or r.priority or r.table is not None or r.scope is not None for r in result.routes)


def legacy_shaped(result: Result) -> bool:
    """Whether a 0.3.0+ result survives 0.1.0/0.2.0: one address per family (IPv4 first), no
    interfaces or interface indexes, plain routes of the kept families, IPv4 routes first."""
    families = [ip.address.version for ip in result.ips]
    route_families = [r.dst.version for r in result.routes]
    return (
        not result.interfaces
        and all(ip.interface is None for ip in result.ips)
        and families in ([], [4], [6], [4, 6])
        and not has_route_extras(result)
        and set(route_families) <= set(families)
        and route_families == sorted(route_families)
    )


def lossless(result: Result, source: str, target: str) -> bool:
    """The reference's matrix: which ``source -> target -> source`` trips give ``result`` back."""
    a, b = family(source), family(target)
    if a == b:
        return True  # relabelling (0.1<->0.2, 0.3.x<->0.4.0, 1.0<->1.1)
    if b == "legacy":
        return legacy_shaped(result)  # ✗ "lower-version output is missing some data"
    if a == "legacy":
        return not has_route_extras(result)  # 040 convertTo02x keeps only dst and gw
    if a == "1.x":  # 1.x -> 0.3/0.4: interface mtu/socketPath/pciID are dropped
        return not any(i.mtu or i.socket_path or i.pci_id for i in result.interfaces)
    return True  # 0.3/0.4 -> 1.x -> 0.3/0.4


def go_to_02x(data040: dict[str, Any], version: str) -> dict[str, Any]:
    """``types040.convertTo02x`` on a 0.4.0 JSON object (``ValueError`` for no IPs)."""
    blocks: dict[str, dict[str, Any]] = {}
    for ip in data040.get("ips", []):
        key = "ip" + ip["version"]
        if key not in blocks:
            blocks[key] = {"ip": ip["address"], **({"gateway": ip["gateway"]} if "gateway" in ip else {})}
    for route in data040.get("routes", []):
        key = "ip" + str(ipaddress.ip_interface(route["dst"]).version)
        if key in blocks:
            blocks[key].setdefault("routes", []).append({k: route[k] for k in ("dst", "gw") if k in route})
    if not blocks:
        raise ValueError("cannot convert: no valid IP addresses")
    return {"cniVersion": version, **{k: blocks[k] for k in ("ip4", "ip6") if k in blocks}, "dns": data040["dns"]}


def go_from_02x(data020: dict[str, Any], version: str) -> dict[str, Any]:
    """``types040.convertFrom02x`` (and ``types100.convertFrom02x`` via 0.4.0) on a legacy JSON object."""
    ips, route_list = [], []
    for family_number in ("4", "6"):
        block = data020.get("ip" + family_number)
        if block is None:
            continue
        ip = {"address": block["ip"], **({"gateway": block["gateway"]} if "gateway" in block else {})}
        ips.append(ip if version in V1X else {"version": family_number, **ip})
        route_list.extend(block.get("routes", []))
    data: dict[str, Any] = {"cniVersion": version}
    if ips:
        data["ips"] = ips
    if route_list:
        data["routes"] = route_list
    if version not in V1X or data020["dns"]:
        data["dns"] = data020["dns"]
    return data


def normalise_ips(data: dict[str, Any]) -> dict[str, Any]:
    """Key order of ``ips`` entries does not matter in JSON; compare decoded objects."""
    return json.loads(json.dumps(data, sort_keys=True))


# ---------------------------------------------------------------------------
# Conversion properties
# ---------------------------------------------------------------------------


def outcome(call: Callable[[], dict[str, Any]]) -> dict[str, Any] | tuple[int, str]:
    """The value, or the CNI error's code and message: two ways of converting must agree on either."""
    try:
        return call()
    except CNIError as error:
        return (error.code, error.msg)


@pytest.mark.parametrize("source", ALL_VERSIONS)
@given(data=st.data())
def test_printing_is_a_fixpoint(source: str, data: st.DataObject) -> None:
    """Reading a printed result and printing it again changes nothing, at every version."""
    result = data.draw(results_at(source))
    for target in ALL_VERSIONS:
        try:
            printed = result.to_dict(target)
        except CNIError as error:
            assert error.code == ErrorCode.INCOMPATIBLE_CNI_VERSION and not result.ips
            continue
        assert printed["cniVersion"] == target
        assert wire(result, target).to_dict() == printed


@pytest.mark.parametrize("source", ALL_VERSIONS)
@given(data=st.data())
def test_conversion_in_memory_equals_conversion_on_the_wire(source: str, data: st.DataObject) -> None:
    """``as_version`` loses exactly what printing at that version loses (the runtime converts
    cached results in memory; plugins see them through JSON)."""
    result = data.draw(results_at(source))
    for target in ALL_VERSIONS:
        there = outcome(lambda t=target: result.as_version(t).to_dict())  # type: ignore[misc]
        assert there == outcome(lambda t=target: wire(result, t).to_dict())  # type: ignore[misc]
        back = outcome(lambda t=target: result.as_version(t).to_dict(source))  # type: ignore[misc]
        assert back == outcome(lambda t=target: wire(wire(result, t), source).to_dict())  # type: ignore[misc]


@pytest.mark.parametrize("source", ALL_VERSIONS)
@given(data=st.data())
def test_round_trips_are_lossless_exactly_where_the_reference_says(source: str, data: st.DataObject) -> None:
    result = data.draw(results_at(source))
    for target in ALL_VERSIONS:
        try:
            there = wire(result, target)
        except CNIError:
            assert family(target) == "legacy" and not result.ips
            continue
        try:
            back = there.to_dict(source)
        except CNIError:  # a 0.1.0/0.2.0 result without addresses has no way back down (as in Go)
            assert family(source) == "legacy" and not result.ips
            continue
        expected = lossless(result, source, target)
        assert (back == result.to_dict()) == expected, (source, target, result.to_dict(), back)


@pytest.mark.parametrize("source", V04X + V1X)
@pytest.mark.parametrize("target", LEGACY)
@given(data=st.data())
def test_down_conversion_to_legacy_is_gos(source: str, target: str, data: st.DataObject) -> None:
    result = data.draw(results_at(source))
    try:
        expected = go_to_02x(result.to_dict("0.4.0"), target)
    except ValueError:
        with pytest.raises(CNIError) as info:
            result.to_dict(target)
        assert info.value.code == ErrorCode.INCOMPATIBLE_CNI_VERSION
        assert info.value.msg == "cannot convert: no valid IP addresses"
        return
    assert result.to_dict(target) == expected


@pytest.mark.parametrize("source", LEGACY)
@pytest.mark.parametrize("target", V04X + V1X)
@given(data=st.data())
def test_up_conversion_from_legacy_is_gos(source: str, target: str, data: st.DataObject) -> None:
    result = data.draw(results_at(source))
    assert normalise_ips(result.to_dict(target)) == normalise_ips(go_from_02x(result.to_dict(), target))


@given(result=results_at("1.1.0"), version=st.sampled_from(ALL_VERSIONS))
def test_conversion_never_changes_the_original(result: Result, version: str) -> None:
    before = result.to_dict()
    try:
        result.as_version(version)
        result.to_json(version)
    except CNIError:
        pass
    assert result.to_dict() == before


# ---------------------------------------------------------------------------
# Strategies: JSON, valid documents, and mutations of them
# ---------------------------------------------------------------------------


def result_documents() -> st.SearchStrategy[dict[str, Any]]:
    return st.builds(lambda model, version: born_at(model, version).to_dict(), models, st.sampled_from(ALL_VERSIONS))


plugin_objects = st.fixed_dictionaries(
    {"type": st.sampled_from(["bridge", "host-local", "portmap"])},
    optional={
        "capabilities": st.dictionaries(st.sampled_from(["portMappings", "ips", "mac", "bandwidth"]), st.booleans()),
        "ipam": st.just({"type": "host-local", "subnet": "10.1.0.0/16"}),
        "isGateway": st.booleans(),
    },
)
version_strings = st.sampled_from([*ALL_VERSIONS, "", "0.4", "1", "2.0.0", "1.10.0", "+1.0.0"])
conflists = st.fixed_dictionaries(
    {"name": st.sampled_from(["net", "a.b-c_d"]), "plugins": st.lists(plugin_objects, min_size=1, max_size=3)},
    optional={
        "cniVersion": version_strings,
        "cniVersions": st.lists(version_strings, max_size=4),
        "disableCheck": st.sampled_from([True, False, "TRUE", "false"]),
        "disableGC": st.sampled_from([True, "False"]),
        "loadOnlyInlinedPlugins": st.booleans(),
    },
)


# ---------------------------------------------------------------------------
# Robustness: results
# ---------------------------------------------------------------------------


def decode_and_print(data: Any) -> None:
    result = Result.from_dict(data)
    for version in ALL_VERSIONS:
        only_cni_errors(lambda v=version: result.to_json(v))  # type: ignore[misc]


@given(st.one_of(json_values, mutated(result_documents())))
def test_result_decoding_raises_only_cni_errors(data: Any) -> None:
    error = only_cni_errors(lambda: decode_and_print(data))
    if error is not None:
        assert error.code in (ErrorCode.DECODING_FAILURE, ErrorCode.INCOMPATIBLE_CNI_VERSION)


@given(st.one_of(st.binary(max_size=200), st.builds(lambda d: json.dumps(d)[: len(json.dumps(d)) // 2], json_values)))
def test_result_bytes_raise_only_cni_errors(text: bytes | str) -> None:
    only_cni_errors(lambda: Result.from_json(text))


@given(json_values, st.text(alphabet=st.characters(min_codepoint=0xDC00, max_codepoint=0xDFFF), max_size=3))
def test_json_is_decoded_as_go_decodes_it(value: Any, surrogates: str) -> None:
    """``jsonutil.loads``: what ``json.loads`` gives, except that a lone surrogate is U+FFFD (Go's
    rule), so no decoded string fails to encode as UTF-8 later."""
    document = [value, surrogates, {surrogates: surrogates}]
    for text in (json.dumps(document), json.dumps(document).encode()):
        decoded = loads(text)
        assert json.dumps(decoded, ensure_ascii=False).encode()  # every string encodes
        if not surrogates and not any(0xD800 <= ord(c) <= 0xDFFF for c in json.dumps(value, ensure_ascii=False)):
            assert decoded == json.loads(text)
    assert loads(json.dumps(surrogates))[: len(surrogates)] == "\ufffd" * len(surrogates)


@pytest.mark.parametrize("depth", [100, 5000, 100_000])
def test_deeply_nested_json_is_a_decoding_failure(depth: int) -> None:
    """Python's JSON decoder raises RecursionError (not ValueError) past ~1000 levels."""
    for text in ("[" * depth + "]" * depth, '{"a":' * depth + "1" + "}" * depth):
        errors = [
            only_cni_errors(lambda t=text: Result.from_json('{"cniVersion": "1.0.0", "dns": {"x": ' + t + "}}")),  # type: ignore[misc]
            only_cni_errors(lambda t=text: decode_json_object('{"x": ' + t + "}", "configuration")),  # type: ignore[misc]
        ]
        for error in errors:
            if depth > 1000:
                assert error is not None and error.code == ErrorCode.DECODING_FAILURE
                assert "nested too deeply" in error.msg
            else:
                assert error is None


# ---------------------------------------------------------------------------
# Robustness and Go's rules: network configuration lists and plugin objects
# ---------------------------------------------------------------------------


@given(st.one_of(json_values, conflists, mutated(conflists)))
def test_config_lists_raise_only_cni_errors(data: Any) -> None:
    def parse() -> None:
        config = NetworkConfigList.from_bytes(json.dumps(data).encode())
        assert isinstance(config.name, str) and isinstance(config.cni_version, str)
        for plugin in config.plugins:
            assert isinstance(plugin.type, str) and plugin.type
            assert all(isinstance(v, bool) for v in plugin.capabilities.values())

    error = only_cni_errors(parse)
    if error is not None:
        assert error.code in (ErrorCode.DECODING_FAILURE, ErrorCode.INVALID_NETWORK_CONFIG)


@given(st.one_of(st.binary(max_size=100), st.builds(lambda d: json.dumps(d)[:-1], conflists)))
def test_config_bytes_raise_only_cni_errors(data: bytes | str) -> None:
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    only_cni_errors(lambda: NetworkConfigList.from_bytes(raw))
    only_cni_errors(lambda: PluginConfig.from_bytes(raw))


@given(st.one_of(json_values, plugin_objects, mutated(plugin_objects)))
def test_single_plugin_configs_raise_only_cni_errors(data: Any) -> None:
    def parse() -> None:
        plugin = PluginConfig.from_bytes(json.dumps(data).encode())
        NetworkConfigList.from_single(plugin)

    only_cni_errors(parse)


@given(conflists)
def test_version_selection_is_libcnis(data: dict[str, Any]) -> None:
    """The highest of ``cniVersions`` and ``cniVersion`` not above 1.1.0; ``cniVersion`` if none is."""

    def parsed(version: str) -> tuple[int, int, int] | None:
        try:
            return parse_version(version)
        except VersionError:
            return None

    error = only_cni_errors(lambda: NetworkConfigList.from_bytes(json.dumps(data).encode()))
    version = data.get("cniVersion", "")
    listed = data.get("cniVersions")
    if listed is None:
        assert error is None
        assert NetworkConfigList.from_bytes(json.dumps(data).encode()).cni_version == version
        return
    if any(parsed(v) is None for v in listed) or (version and parsed(version) is None):
        assert error is not None and error.code == ErrorCode.INVALID_NETWORK_CONFIG
        return
    assert error is None
    current = parse_version(CURRENT_VERSION)
    candidates = [v for v in [*listed, *([version] if version else [])] if parse_version(v) <= current]
    selected = NetworkConfigList.from_bytes(json.dumps(data).encode()).cni_version
    if candidates:
        assert parse_version(selected) == max(parse_version(v) for v in candidates)
    else:
        assert selected == version


@given(
    st.lists(st.tuples(st.sampled_from([".conflist", ".conf", ".json", ".txt"]), json_values | conflists), max_size=4)
)
def test_loading_a_directory_of_bad_files_raises_only_cni_errors(files: list[tuple[str, Any]]) -> None:
    from pycni.runtime.conf import load_network

    with tempfile.TemporaryDirectory() as directory:
        for index, (extension, content) in enumerate(files):
            with open(os.path.join(directory, f"{index}{extension}"), "w") as handle:
                json.dump(content, handle)
        only_cni_errors(lambda: load_network(directory, "net"))


@given(json_values, st.text(max_size=6))
def test_typed_fields_raise_only_cni_errors(value: Any, key: str) -> None:
    fields = Fields({key: value, "nested": {key: value}})
    readers: list[Callable[[], object]] = [
        lambda: fields.string(key),
        lambda: fields.boolean(key),
        lambda: fields.integer(key, minimum=0, maximum=65535),
        lambda: fields.obj(key),
        lambda: fields.array(key),
        lambda: fields.objects(key),
        lambda: fields.strings(key),
        lambda: fields.ip(key),
        lambda: fields.cidr(key),
        lambda: fields.obj("nested").cidr(key),
        lambda: fields.link_name(key),
        lambda: fields.os_string(key),
        lambda: Fields(value),
    ]
    for read in readers:
        error = only_cni_errors(read)
        if error is not None:
            assert error.code == ErrorCode.INVALID_NETWORK_CONFIG


@given(st.one_of(st.text(max_size=20), st.binary(max_size=20).map(os.fsdecode)))
def test_config_link_names_are_what_the_kernel_takes(name: str) -> None:
    """``Fields.link_name`` accepts exactly the names ``dev_valid_name`` accepts (and no NUL or
    non-UTF-8, which cannot reach it intact); the runtime's CNI_IFNAME check agrees."""
    try:
        encoded = name.encode()
    except UnicodeEncodeError:
        encoded = None
    valid = (
        encoded is not None
        and 0 < len(encoded) <= 15
        and name not in (".", "..")
        and not any(ch in "/:%\x00" or ch.isspace() for ch in name)
    )
    error = only_cni_errors(lambda: Fields({"master": name}).link_name("master"))
    assert (error is None) == (valid or name == "")
    if error is not None:
        assert error.code == ErrorCode.INVALID_NETWORK_CONFIG and error.msg.startswith("master: ")
    env_error = only_cni_errors(lambda: validate_interface_name(name))
    if valid:
        assert env_error is None
    elif encoded is None:
        assert env_error is not None and env_error.code == ErrorCode.INVALID_ENVIRONMENT_VARIABLES


@given(st.one_of(st.text(max_size=20), st.binary(max_size=20).map(os.fsdecode)))
def test_names_are_validated_with_cni_errors_only(text: str) -> None:
    """Names come from the environment too, where non-UTF-8 bytes arrive as lone surrogates."""
    for validate in (validate_container_id, validate_interface_name, validate_network_name):
        only_cni_errors(lambda v=validate: v(text))  # type: ignore[misc]


# ---------------------------------------------------------------------------
# CNI_ARGS
# ---------------------------------------------------------------------------

arg_text = st.text(alphabet=st.characters(blacklist_characters=";="), max_size=8)
cni_args_strings = st.one_of(
    st.text(max_size=40),
    st.builds(format_pairs, st.lists(st.tuples(arg_text, arg_text), max_size=5)),
    st.lists(
        st.sampled_from(["IP=10.0.0.5", "IgnoreUnknown=1", "IgnoreUnknown=x", "K8S_POD_NAME=p", ";", "=", "a=b=c"])
    ).map(";".join),
)


@given(cni_args_strings, st.lists(st.sampled_from(["IP", "MAC", "GATEWAY", ""]), max_size=3))
def test_cni_args_raise_only_cni_errors(text: str, known: list[str]) -> None:
    for call in (lambda: split_pairs(text), lambda: load_args(text, known)):
        error = only_cni_errors(call)
        if error is not None:
            assert error.code == ErrorCode.INVALID_ENVIRONMENT_VARIABLES


@given(st.lists(st.tuples(arg_text, arg_text), max_size=5), st.sampled_from(["1", "true", "TRUE", "0", "false", None]))
def test_cni_args_follow_gos_load_args(pairs: list[tuple[str, str]], ignore_unknown: str | None) -> None:
    """``split`` inverts ``format``; known keys take their last value; unknown keys fail unless ignored."""
    pairs = [(k, v) for k, v in pairs if k != "IgnoreUnknown"]
    if ignore_unknown is not None:
        pairs.append(("IgnoreUnknown", ignore_unknown))
    text = format_pairs(pairs)
    if pairs != [("", "")]:  # "" is no pairs at all, not one empty pair
        assert split_pairs(text) == pairs
    known = {"IP", "MAC"}
    expected = {k: v for k, v in pairs if k in known}
    unknown = [k for k, _ in pairs if k not in known and k != "IgnoreUnknown"]
    error = only_cni_errors(lambda: load_args(text, known))
    if unknown and ignore_unknown not in ("1", "true", "TRUE") and text:
        assert error is not None and error.code == ErrorCode.INVALID_ENVIRONMENT_VARIABLES
    else:
        assert error is None and load_args(text, known) == expected


# ---------------------------------------------------------------------------
# Capability arguments: runtime side (runtimeConfig) and the plugins' readers
# ---------------------------------------------------------------------------

capability_names = st.sampled_from(["portMappings", "PortMappings", "ips", "ipRanges", "mac", "bandwidth", "dns", "x"])


@given(
    st.dictionaries(capability_names, st.booleans(), max_size=4),
    st.dictionaries(capability_names, json_values, max_size=4),
    st.none() | results_at("1.1.0"),
    st.sampled_from(ALL_VERSIONS),
)
def test_runtime_config_holds_only_declared_capabilities(
    declared: dict[str, bool], provided: dict[str, Any], prev: Result | None, version: str
) -> None:
    from pycni.runtime.api import RuntimeConf, build_plugin_config

    network = NetworkConfigList.from_bytes(
        json.dumps(
            {"name": "net", "cniVersion": version, "plugins": [{"type": "x", "capabilities": declared}]}
        ).encode()
    )
    rt = RuntimeConf(container_id="c", netns="/n", ifname="eth0", capability_args=provided)
    out: list[bytes] = []
    error = only_cni_errors(lambda: out.append(build_plugin_config(network, network.plugins[0], prev, rt)))
    if error is not None:  # only a result with no IP has no 0.1.0/0.2.0 form
        assert prev is not None and not prev.ips and version in LEGACY
        return
    config = json.loads(out[0])
    folded = {k.casefold(): v for k, v in provided.items()}
    expected = {k: folded[k.casefold()] for k, on in declared.items() if on and k.casefold() in folded}
    assert config.get("runtimeConfig", {}) == json.loads(json.dumps(expected))
    assert config["name"] == "net" and config["cniVersion"] == version


def plugin_args(config: dict[str, Any], cni_args: str = "") -> Any:
    from pycni.skel import CmdArgs

    stdin = json.dumps(config).encode()
    return CmdArgs("ADD", "ctr", "/run/netns/x", "eth0", cni_args, [], stdin, config)


def capability_readers() -> dict[str, Callable[[Any], object]]:
    """The plugins' pure readers of ``runtimeConfig`` (no netlink, no files)."""
    from pycni.plugins.common import requested_mac
    from pycni.plugins.ipam import host_local, static
    from pycni.plugins.main import host_device
    from pycni.plugins.meta import bandwidth, portmap, tuning

    return {
        "portMappings": portmap.load_mappings,
        "bandwidth": bandwidth.load_bandwidth,
        "ips": static.load_addresses,
        "ipRanges": host_local.load_config,
        "mac": requested_mac,
        "tuning-mac": tuning.load_conf,
        "deviceID": host_device.load_conf,
    }


@pytest.mark.parametrize("capability", list(capability_readers()))
@given(value=json_values, cni_args=cni_args_strings, data=st.data())
def test_capability_arguments_raise_only_cni_errors(
    capability: str, value: Any, cni_args: str, data: st.DataObject
) -> None:
    key = capability.removeprefix("tuning-")
    base = {
        "cniVersion": data.draw(st.sampled_from(ALL_VERSIONS)),
        "name": "net",
        "type": "x",
        "ipam": {"type": "static", "addresses": [{"address": "10.1.0.5/24"}], "ranges": [[{"subnet": "10.2.0.0/24"}]]},
        "device": "eth9",
    }
    config = {**base, "runtimeConfig": {data.draw(st.sampled_from([key, key.upper()])): value}}
    read = capability_readers()[capability]
    only_cni_errors(lambda: read(plugin_args(config, cni_args)))
    # The SDK hands plugins only configs that are objects.
    bad = data.draw(mutated(st.just(config)).filter(lambda doc: isinstance(doc, dict)))
    only_cni_errors(lambda: read(plugin_args(bad, cni_args)))
