"""Flannel's data model: net-conf defaults and errors (``pkg/subnet/config.go``), keys, LeaseAttrs JSON."""

from __future__ import annotations

import ipaddress
import json

import pytest

from pycni.fabric.flannel.model import (
    ConfigError,
    IPv4Net,
    IPv6Net,
    Lease,
    LeaseAttrs,
    NetworkConfig,
    make_key,
    parse_key,
)

# Documentation/reservations.md, byte for byte: what `etcdctl get` shows for a flanneld lease.
FLANNEL_VXLAN_VALUE = (
    '{"PublicIP":"192.168.64.3","PublicIPv6":null,"BackendType":"vxlan",'
    '"BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}}'
)


def config(**fields: object) -> NetworkConfig:
    return NetworkConfig.from_json(json.dumps(fields))


# -- network config -------------------------------------------------------------


def test_defaults_for_a_large_network() -> None:
    cfg = config(Network="10.5.0.0/16")
    assert cfg.network == IPv4Net("10.5.0.0/16")
    assert cfg.subnet_len == 24
    assert cfg.subnet_min == IPv4Net("10.5.1.0/24")  # the first subnet is skipped
    assert cfg.subnet_max == IPv4Net("10.5.255.0/24")
    assert cfg.backend_type == "vxlan"
    assert cfg.ipv6_network is None
    subnets = list(cfg.subnets())
    assert len(subnets) == 255
    assert subnets[0] == IPv4Net("10.5.1.0/24") and subnets[-1] == IPv4Net("10.5.255.0/24")


@pytest.mark.parametrize(
    ("network", "length", "low", "high"),
    [
        ("10.0.0.0/22", 24, "10.0.1.0/24", "10.0.3.0/24"),  # /22 still gets /24s
        ("10.0.0.0/23", 25, "10.0.0.128/25", "10.0.1.128/25"),  # smaller: prefix + 2
        ("10.0.0.0/26", 28, "10.0.0.16/28", "10.0.0.48/28"),
        ("10.0.0.0/28", 30, "10.0.0.4/30", "10.0.0.12/30"),  # the smallest useful network
    ],
)
def test_subnet_len_default_is_24_or_prefix_plus_2(network: str, length: int, low: str, high: str) -> None:
    cfg = config(Network=network)
    assert cfg.subnet_len == length
    assert cfg.subnet_min == IPv4Net(low)
    assert cfg.subnet_max == IPv4Net(high)


def test_subnet_len_zero_means_default_as_in_flannel() -> None:
    assert config(Network="10.5.0.0/16", SubnetLen=0).subnet_len == 24


def test_explicit_range_and_backend() -> None:
    cfg = config(
        Network="10.0.0.0/8",
        SubnetLen=20,
        SubnetMin="10.10.0.0",
        SubnetMax="10.99.0.0",
        Backend={"Type": "host-gw", "DirectRouting": True},
    )
    assert cfg.subnet_len == 20
    assert cfg.subnet_min == IPv4Net("10.10.0.0/20")
    assert cfg.subnet_max == IPv4Net("10.99.0.0/20")
    assert cfg.backend_type == "host-gw"
    assert cfg.backend == {"Type": "host-gw", "DirectRouting": True}


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({}, "Network"),
        ({"Network": "10.5.0.1/16"}, "host bits"),
        ({"Network": "fd00::/48"}, "not an IPv4 network"),
        ({"Network": "10.5.0.0/16", "SubnetLen": 31}, "less than /31"),
        ({"Network": "10.5.0.0/16", "SubnetLen": 17}, "at least four subnets"),
        ({"Network": "10.5.0.0/24", "SubnetLen": 25}, "at least four subnets"),
        ({"Network": "10.0.0.0/29"}, "/31"),  # too small for four /30s
        ({"Network": "10.5.0.0/16", "SubnetMin": "10.5.1.128"}, "not aligned"),
        ({"Network": "10.5.0.0/16", "SubnetMax": "10.5.7.1"}, "not aligned"),
        ({"Network": "10.5.0.0/16", "SubnetMin": "10.6.0.0"}, "inside 10.5.0.0/16"),
        ({"Network": "10.5.0.0/16", "SubnetMin": "10.5.9.0", "SubnetMax": "10.5.8.0"}, "greater than"),
        ({"Network": "10.5.0.0/16", "SubnetLen": "24"}, "integer"),
        ({"Network": "10.5.0.0/16", "Backend": "vxlan"}, "Backend must be an object"),
        ({"EnableIPv4": False}, "neither"),
        ({"Network": "10.5.0.0/16", "EnableIPv6": True}, "IPv6Network"),
    ],
)
def test_config_errors(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as error:
        NetworkConfig.from_dict(fields)
    assert message in error.value.msg
    assert error.value.code == 7


def test_not_json_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="not JSON"):
        NetworkConfig.from_json("{Network: 10.5.0.0/16")


def test_dual_stack_defaults() -> None:
    cfg = config(Network="10.5.0.0/16", EnableIPv6=True, IPv6Network="fd00:5::/48")
    assert cfg.ipv6_network == IPv6Net("fd00:5::/48")
    assert cfg.ipv6_subnet_len == 64
    assert cfg.ipv6_subnet_min == IPv6Net("fd00:5:0:1::/64")
    assert cfg.ipv6_subnet_max == IPv6Net("fd00:5:0:ffff::/64")


def test_ipv6_only_and_small_ipv6_network() -> None:
    cfg = config(EnableIPv4=False, EnableIPv6=True, IPv6Network="fd00::/120")
    assert cfg.network is None
    assert cfg.ipv6_subnet_len == 122
    assert cfg.ipv6_subnet_min == IPv6Net("fd00::40/122")
    assert cfg.ipv6_subnet_max == IPv6Net("fd00::c0/122")


def test_ipv6_errors() -> None:
    with pytest.raises(ConfigError, match="less than /127"):
        config(Network="10.5.0.0/16", EnableIPv6=True, IPv6Network="fd00::/48", IPv6SubnetLen=127)
    with pytest.raises(ConfigError, match="not aligned"):
        config(Network="10.5.0.0/16", EnableIPv6=True, IPv6Network="fd00::/48", IPv6SubnetMin="fd00:0:0:1::1")


# -- keys -------------------------------------------------------------------------


def test_key_round_trip() -> None:
    subnet = IPv4Net("10.5.52.0/24")
    assert make_key(subnet) == "10.5.52.0-24"
    assert parse_key("10.5.52.0-24") == (subnet, None)
    assert parse_key("/coreos.com/network/subnets/10.5.52.0-24") == (subnet, None)


def test_dual_stack_key_round_trip() -> None:
    v4, v6 = IPv4Net("10.5.52.0/24"), IPv6Net("fd00:5:0:34::/64")
    key = make_key(v4, v6)
    assert key == "10.5.52.0-24&fd00:5:0:34::-64"
    assert parse_key(key) == (v4, v6)
    assert Lease(v4, LeaseAttrs("192.0.2.9", "vxlan"), v6).key == key


@pytest.mark.parametrize("key", ["config", "10.5.52.0", "10.5.52.0/24", ""])
def test_parse_key_rejects_other_keys(key: str) -> None:
    assert parse_key(key) is None


def test_every_subnet_key_round_trips() -> None:
    for subnet in config(Network="10.5.0.0/16").subnets():
        assert parse_key(make_key(subnet)) == (subnet, None)


# -- LeaseAttrs JSON --------------------------------------------------------------


def test_lease_attrs_json_is_flannels_byte_for_byte() -> None:
    attrs = LeaseAttrs("192.168.64.3", "vxlan", {"VNI": 1, "VtepMAC": "c6:d2:32:6f:8f:44"})
    assert attrs.to_json() == FLANNEL_VXLAN_VALUE
    assert LeaseAttrs.from_json(FLANNEL_VXLAN_VALUE) == attrs


def test_lease_attrs_omit_empty_fields_as_go_does() -> None:
    # Go: PublicIPv6 has no omitempty (always written, null); BackendType/Data are omitempty.
    assert (
        LeaseAttrs("10.0.0.1", "host-gw").to_json()
        == '{"PublicIP":"10.0.0.1","PublicIPv6":null,"BackendType":"host-gw"}'
    )


def test_lease_attrs_dual_stack() -> None:
    attrs = LeaseAttrs(
        "192.168.64.3",
        "vxlan",
        {"VNI": 1, "VtepMAC": "c6:d2:32:6f:8f:44"},
        public_ipv6="fd00::3",
        backend_v6_data={"VNI": 1, "VtepMAC": "c6:d2:32:6f:8f:45"},
    )
    text = attrs.to_json()
    assert list(json.loads(text)) == ["PublicIP", "PublicIPv6", "BackendType", "BackendData", "BackendV6Data"]
    assert LeaseAttrs.from_json(text) == attrs
    assert ipaddress.ip_address(json.loads(text)["PublicIPv6"]).version == 6
