"""Property tests of the IPAM building blocks: ranges, range sets and the shared config readers.

Any subnet, start, end and gateway, of either family, is either a canonical range or a
``RangeError`` with the reference's message (never a ``TypeError`` from comparing an IPv4
with an IPv6 address); a canonical range's walk hands out each address once. Profiles come
from ``tests/support/strategies.py`` (``HYPOTHESIS_PROFILE``).
"""

from __future__ import annotations

import ipaddress
from typing import Any

from hypothesis import example, given
from hypothesis import strategies as st

from pycni.ipam.config import parse_dns, parse_ip_or_cidr, parse_routes, read_resolv_conf, requested_ips
from pycni.ipam.ranges import Range, RangeError, candidates, make_range, make_range_set
from pycni.spec import CNIError, ErrorCode, Fields
from tests.support.strategies import json_values, only_cni_errors

# Small subnets near each other, so starts, ends and gateways often fall inside.
subnets4 = st.builds(
    lambda third, plen: ipaddress.IPv4Interface((f"10.1.{third}.0", plen)), st.integers(0, 3), st.integers(20, 32)
)
subnets6 = st.builds(lambda plen: ipaddress.IPv6Interface(("fd00::", plen)), st.integers(116, 128))
addresses = st.one_of(
    st.builds(
        lambda third, host: ipaddress.IPv4Address(f"10.1.{third}.{host}"), st.integers(0, 3), st.integers(0, 255)
    ),
    st.builds(lambda host: ipaddress.IPv6Address(host | (0xFD00 << 112)), st.integers(0, 4096)),
)


@given(st.one_of(subnets4, subnets6), st.none() | addresses, st.none() | addresses, st.none() | addresses)
@example(ipaddress.ip_interface("10.1.0.0/24"), ipaddress.ip_address("10.1.0.5"), ipaddress.ip_address("fd00::1"), None)
def test_any_range_is_canonical_or_a_range_error(subnet: Any, start: Any, end: Any, gateway: Any) -> None:
    try:
        made = make_range(subnet, start, end, gateway)
    except RangeError as error:
        assert str(error).split()[0] in ("Network", "Gateway", "RangeStart", "RangeEnd")
        return
    network = subnet.network
    assert made.subnet == network and made.gateway.version == network.version
    assert made.start in network and made.end in network and made.start <= made.end
    assert made.contains(made.start) and made.contains(made.end)


aligned4 = st.builds(
    lambda third, plen: ipaddress.IPv4Interface((f"10.1.{third}.0", plen)), st.integers(0, 3), st.integers(24, 30)
)


@given(st.lists(st.builds(make_range, aligned4), min_size=1, max_size=3), st.none() | addresses)
def test_a_range_set_walk_hands_out_every_address_once(ranges: list[Range], last: Any) -> None:
    try:
        range_set = make_range_set(ranges)
    except RangeError as error:
        assert "overlap" in str(error)
        return
    if sum(r.capacity() for r in range_set) > 5000:
        return
    walked = [ip for ip, _ in candidates(range_set, last)]
    assert len(walked) == len(set(walked)) == sum(r.capacity() for r in range_set)
    assert all(range_set.contains(ip) and ip not in [r.gateway for r in range_set] for ip in walked)
    if last is not None and range_set.contains(last) and last in walked:
        assert walked[-1] == last, "the walk ends with the last reserved address"


@given(json_values)
def test_ipam_config_readers_raise_only_cni_errors(value: Any) -> None:
    ipam = Fields({"routes": value, "dns": value, "resolvConf": value}, "ipam")
    for read in (lambda: parse_routes(ipam), lambda: parse_dns(ipam.obj("dns"))):
        error = only_cni_errors(read)
        if error is not None:
            assert error.code == ErrorCode.INVALID_NETWORK_CONFIG
    error = only_cni_errors(lambda: requested_ips({}, Fields({"args": {"cni": {"ips": value}}}), value))
    assert error is None or error.code == ErrorCode.INVALID_NETWORK_CONFIG
    if isinstance(value, str):
        assert parse_ip_or_cidr(value) is None or parse_ip_or_cidr(value) == parse_ip_or_cidr(value)


@given(st.sampled_from(["/nonexistent/resolv.conf", "/etc/a\x00b", "/", "/proc/self/ns/net", ""]))
def test_an_unreadable_resolv_conf_is_the_keys_fault(path: str) -> None:
    try:
        read_resolv_conf(path)
    except CNIError as error:
        assert error.code == ErrorCode.INVALID_NETWORK_CONFIG and error.msg.startswith("ipam.resolvConf: cannot read")


def test_an_end_of_the_other_family_is_gos_range_end_error() -> None:
    """Go compares start and end as 16-byte addresses, so the end is the one reported."""
    subnet = ipaddress.ip_interface("10.1.0.0/24")
    try:
        make_range(subnet, ipaddress.ip_address("10.1.0.5"), ipaddress.ip_address("fd00::1"))
    except RangeError as error:
        assert str(error) == "RangeEnd fd00::1 not in network 10.1.0.0/24"
    else:
        raise AssertionError("a range ending in another family was accepted")
