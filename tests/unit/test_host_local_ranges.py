"""host-local ranges and range sets: defaults, checks, overlap, iteration order, config loading.

Cases and messages are those of the reference's ``range_test.go``,
``range_set_test.go``, ``config_test.go`` and ``allocator_test.go`` (RangeIter).
"""

from __future__ import annotations

import ipaddress
import json
from typing import Any

import pytest

from pycni.ipam.ranges import Range, RangeError, RangeSet, candidates, make_range, make_range_set
from pycni.plugins.ipam.host_local import HostLocalConfig, load_config
from pycni.skel import CmdArgs
from pycni.spec import CNIError
from pycni.spec.result import IPAddress


def ip(text: str) -> IPAddress:
    return ipaddress.ip_address(text)


def rng(subnet: str, start: str | None = None, end: str | None = None, gateway: str | None = None) -> Range:
    return make_range(
        ipaddress.ip_interface(subnet),
        ip(start) if start else None,
        ip(end) if end else None,
        ip(gateway) if gateway else None,
    )


def range_set(*subnets: str) -> RangeSet:
    return make_range_set([rng(s) for s in subnets])


class TestRangeDefaults:
    def test_ipv4_clean_prefix(self) -> None:
        r = rng("192.0.2.0/24")
        assert (str(r.subnet), r.start, r.end, r.gateway) == (
            "192.0.2.0/24",
            ip("192.0.2.1"),
            ip("192.0.2.254"),
            ip("192.0.2.1"),
        )

    def test_smaller_ipv4_subnet_excludes_broadcast(self) -> None:
        r = rng("192.0.2.0/25")
        assert (r.start, r.end, r.gateway) == (ip("192.0.2.1"), ip("192.0.2.126"), ip("192.0.2.1"))

    def test_ipv6_includes_the_all_ones_address(self) -> None:
        r = rng("2001:DB8:1::/64")
        assert (r.start, r.end, r.gateway) == (
            ip("2001:db8:1::1"),
            ip("2001:db8:1::ffff:ffff:ffff:ffff"),
            ip("2001:db8:1::1"),
        )

    def test_all_fields_given(self) -> None:
        r = rng("192.0.2.0/24", "192.0.2.40", "192.0.2.50", "192.0.2.254")
        assert (r.start, r.end, r.gateway) == (ip("192.0.2.40"), ip("192.0.2.50"), ip("192.0.2.254"))
        assert str(r) == "192.0.2.40-192.0.2.50"

    def test_a_slash_30_leaves_two(self) -> None:
        r = rng("10.0.0.0/30")
        assert (r.start, r.end, r.capacity()) == (ip("10.0.0.1"), ip("10.0.0.2"), 1)


class TestRangeErrors:
    @pytest.mark.parametrize(
        ("subnet", "message"),
        [
            (
                "192.0.2.12/24",
                "Network has host bits set. For a subnet mask of length 24 the network address is 192.0.2.0",
            ),
            (
                "2001:DB8:1::24:19ff:fee1:c44a/64",
                "Network has host bits set. For a subnet mask of length 64 the network address is 2001:db8:1::",
            ),
            (
                "2001:DB8:24:19ff::/63",
                "Network has host bits set. For a subnet mask of length 63 the network address is 2001:db8:24:19fe::",
            ),
            (
                "192.168.127.0/23",
                "Network has host bits set. For a subnet mask of length 23 the network address is 192.168.126.0",
            ),
            ("192.0.2.0/31", "Network 192.0.2.0/31 too small to allocate from"),
            ("192.0.2.7/32", "Network 192.0.2.7/32 too small to allocate from"),
            ("2001:db8::/127", "Network 2001:db8::/127 too small to allocate from"),
            ("2001:db8::/128", "Network 2001:db8::/128 too small to allocate from"),
        ],
    )
    def test_bad_subnet(self, subnet: str, message: str) -> None:
        with pytest.raises(RangeError) as caught:
            rng(subnet)
        assert str(caught.value) == message

    def test_start_and_end_must_be_inside_and_in_order(self) -> None:
        with pytest.raises(RangeError, match=r"^RangeStart 192\.0\.3\.0 not in network 192\.0\.2\.0/24$"):
            rng("192.0.2.0/24", start="192.0.3.0")
        with pytest.raises(RangeError, match=r"^RangeEnd 192\.0\.4\.0 not in network 192\.0\.2\.0/24$"):
            rng("192.0.2.0/24", end="192.0.4.0")
        with pytest.raises(RangeError, match=r"^RangeStart 192\.0\.2\.50 not in network 192\.0\.2\.0/24$"):
            rng("192.0.2.0/24", start="192.0.2.50", end="192.0.2.40")
        with pytest.raises(RangeError, match="RangeStart 2001:db8::5 not in network"):
            rng("192.0.2.0/24", start="2001:db8::5")

    def test_gateway_of_the_other_family(self) -> None:
        with pytest.raises(RangeError, match="Gateway 2001:db8::1 is not an IPv4 address"):
            rng("192.0.2.0/24", gateway="2001:db8::1")


class TestMembershipAndOverlap:
    def test_v4_window(self) -> None:
        r = rng("192.0.2.0/24", "192.0.2.40", "192.0.2.50", "192.0.2.254")
        assert not r.contains(ip("192.0.3.0"))
        assert not r.contains(ip("192.0.2.39"))
        assert r.contains(ip("192.0.2.40"))
        assert r.contains(ip("192.0.2.50"))
        assert not r.contains(ip("192.0.2.51"))
        assert not r.contains(ip("::ffff:192.0.2.45"))

    def test_v6_window(self) -> None:
        r = rng("2001:DB8:1::/64", "2001:db8:1::40", "2001:db8:1::50")
        assert not r.contains(ip("2001:db8:2::"))
        assert not r.contains(ip("2001:db8:1::39"))
        assert r.contains(ip("2001:db8:1::40"))
        assert r.contains(ip("2001:db8:1::50"))
        assert not r.contains(ip("2001:db8:1::51"))

    @pytest.mark.parametrize(
        ("first", "second", "expected"),
        [
            (rng("10.0.0.0/24"), rng("10.0.1.0/24"), False),
            (rng("0.0.0.0/24"), rng("::/24"), False),  # the bits overlap, the families do not
            (rng("10.0.0.0/24"), rng("10.0.0.0/24"), True),
            (rng("10.0.0.0/20"), rng("10.0.1.0/24"), True),
            (rng("10.0.0.0/24", end="10.0.0.127"), rng("10.0.0.0/24", start="10.0.0.128"), False),
            (rng("10.0.0.0/24", end="10.0.0.127"), rng("10.0.0.0/24", start="10.0.0.127"), True),
        ],
    )
    def test_overlap_is_commutative(self, first: Range, second: Range, expected: bool) -> None:
        assert first.overlaps(second) is expected
        assert second.overlaps(first) is expected

    def test_set_membership(self) -> None:
        s = range_set("192.168.0.0/24", "172.16.1.0/24")
        assert s.contains(ip("192.168.0.55"))
        assert s.range_for(ip("192.168.0.55")) is s.ranges[0]
        assert s.range_for(ip("192.168.99.99")) is None
        assert str(s) == "192.168.0.1-192.168.0.254,172.16.1.1-172.16.1.254"

    def test_overlap_within_a_set(self) -> None:
        with pytest.raises(RangeError) as caught:
            range_set("192.168.0.0/20", "192.168.2.0/24")
        assert str(caught.value) == "subnets 192.168.0.1-192.168.15.254 and 192.168.2.1-192.168.2.254 overlap"

    def test_overlap_between_sets(self) -> None:
        first, second = range_set("192.168.0.0/20"), range_set("192.168.2.0/24")
        assert first.overlaps(second) and second.overlaps(first)

    def test_empty_and_mixed_sets(self) -> None:
        with pytest.raises(RangeError, match=r"^empty range set$"):
            make_range_set([])
        with pytest.raises(RangeError, match=r"^mixed address families$"):
            range_set("10.1.0.0/22", "2001:db8:5::/64")

    def test_free_address_count(self) -> None:
        s = range_set("10.0.0.0/30", "10.0.1.0/30")
        assert s.has_free([])
        assert s.has_free([ip("10.0.0.2")])
        assert s.has_free([ip("10.0.0.1"), ip("10.0.0.2"), ip("10.0.0.3")])  # gateway and broadcast do not count
        assert not s.has_free([ip("10.0.0.2"), ip("10.0.1.2"), ip("192.0.2.9")])


def walk(s: RangeSet, last: str | None = None) -> list[str]:
    return [str(address) for address, _ in candidates(s, ip(last) if last else None)]


class TestIterationOrder:
    """``allocator_test.go`` RangeIter: start after the cursor, wrap, skip the gateway, stop after a loop."""

    def test_from_the_beginning(self) -> None:
        assert walk(range_set("192.168.1.0/29")) == [f"192.168.1.{i}" for i in (2, 3, 4, 5, 6)]

    def test_from_the_end(self) -> None:
        assert walk(range_set("192.168.1.0/29"), "192.168.1.6") == [f"192.168.1.{i}" for i in (2, 3, 4, 5, 6)]

    def test_from_the_middle(self) -> None:
        assert walk(range_set("192.168.1.0/29"), "192.168.1.3") == [f"192.168.1.{i}" for i in (4, 5, 6, 2, 3)]

    def test_cursor_outside_the_set_starts_at_the_beginning(self) -> None:
        assert walk(range_set("10.0.0.0/29"), "10.0.0.128")[0] == "10.0.0.2"

    def test_across_ranges_and_around(self) -> None:
        s = range_set("10.0.0.0/30", "10.0.1.0/30", "10.0.2.0/30")
        assert walk(s) == ["10.0.0.2", "10.0.1.2", "10.0.2.2"]
        assert walk(s, "10.0.0.2") == ["10.0.1.2", "10.0.2.2", "10.0.0.2"]
        assert walk(s, "10.0.2.2") == ["10.0.0.2", "10.0.1.2", "10.0.2.2"]

    def test_the_end_of_one_range_leads_to_the_start_of_the_next(self) -> None:
        # ``newAllocatorWithMultiRanges``: windows that begin at the network address.
        s = RangeSet(
            (
                Range(ipaddress.ip_network("192.168.1.0/30"), ip("192.168.1.0"), ip("192.168.1.3"), ip("192.168.9.9")),
                Range(ipaddress.ip_network("192.168.2.0/30"), ip("192.168.2.0"), ip("192.168.2.3"), ip("192.168.9.9")),
            )
        )
        assert walk(s, "192.168.1.3")[0] == "192.168.2.0"
        assert walk(s)[0] == "192.168.1.0"

    def test_gateway_in_the_middle_is_skipped(self) -> None:
        s = make_range_set([rng("10.0.0.0/29", gateway="10.0.0.4")])
        assert walk(s) == ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.5", "10.0.0.6"]
        assert walk(s, "10.0.0.3") == ["10.0.0.5", "10.0.0.6", "10.0.0.1", "10.0.0.2", "10.0.0.3"]

    def test_ipv6_starts_at_two(self) -> None:
        first = next(candidates(range_set("2001:db8:1::/64"), None))
        assert str(first[0]) == "2001:db8:1::2"


def cmd(config: dict[str, Any], cni_args: str = "") -> CmdArgs:
    return CmdArgs("ADD", "dummy", "/x", "eth0", cni_args, [], json.dumps(config).encode(), config)


def load(ipam: dict[str, Any], version: str = "0.3.1", cni_args: str = "", **top: Any) -> HostLocalConfig:
    config = {"cniVersion": version, "name": "mynet", "type": "ipvlan", "master": "foo0", "ipam": ipam, **top}
    return load_config(cmd(config, cni_args))


def windows(conf: HostLocalConfig) -> list[list[tuple[str, str, str, str]]]:
    return [[(str(r.subnet), str(r.start), str(r.end), str(r.gateway)) for r in s] for s in conf.range_sets]


def load_error(ipam: dict[str, Any], version: str = "0.3.1", cni_args: str = "", **top: Any) -> CNIError:
    with pytest.raises(CNIError) as caught:
        load(ipam, version, cni_args, **top)
    return caught.value


OLD_STYLE = {
    "type": "host-local",
    "subnet": "10.1.2.0/24",
    "rangeStart": "10.1.2.9",
    "rangeEnd": "10.1.2.20",
    "gateway": "10.1.2.30",
}
THREE_SETS = [
    [{"subnet": "10.1.2.0/24", "rangeStart": "10.1.2.9", "rangeEnd": "10.1.2.20", "gateway": "10.1.2.30"}],
    [{"subnet": "11.1.2.0/24", "rangeStart": "11.1.2.9", "rangeEnd": "11.1.2.20", "gateway": "11.1.2.30"}],
    [{"subnet": "2001:db8:1::/64"}],
]


class TestConfigLoading:
    """``config_test.go``."""

    def test_old_style(self) -> None:
        conf = load(OLD_STYLE)
        assert conf.name == "mynet"
        assert windows(conf) == [[("10.1.2.0/24", "10.1.2.9", "10.1.2.20", "10.1.2.30")]]

    def test_new_style(self) -> None:
        ranges = [[THREE_SETS[0][0], {"subnet": "10.1.4.0/24"}], THREE_SETS[1]]
        conf = load({"type": "host-local", "ranges": ranges})
        assert windows(conf) == [
            [
                ("10.1.2.0/24", "10.1.2.9", "10.1.2.20", "10.1.2.30"),
                ("10.1.4.0/24", "10.1.4.1", "10.1.4.254", "10.1.4.1"),
            ],
            [("11.1.2.0/24", "11.1.2.9", "11.1.2.20", "11.1.2.30")],
        ]

    def test_runtime_ranges_come_first_then_the_old_style_range(self) -> None:
        runtime = {"irrelevant": "a", "ipRanges": [[{"subnet": "12.1.3.0/24"}]]}
        conf = load({**OLD_STYLE, "ranges": [THREE_SETS[1]]}, runtimeConfig=runtime)
        assert [s.ranges[0].subnet.exploded for s in conf.range_sets] == ["12.1.3.0/24", "10.1.2.0/24", "11.1.2.0/24"]
        assert windows(conf)[0] == [("12.1.3.0/24", "12.1.3.1", "12.1.3.254", "12.1.3.1")]

    @pytest.mark.parametrize("value", ["10.1.2.10", "10.1.2.10/24"])
    def test_cni_args_ip_with_or_without_prefix(self, value: str) -> None:
        conf = load({"type": "host-local", "ranges": [THREE_SETS[0]]}, cni_args=f"IP={value}")
        assert [r.ip for r in conf.requested] == [ip("10.1.2.10")]

    @pytest.mark.parametrize("suffixes", [("", "", ""), ("/24", "/24", "/64")])
    def test_all_request_sources_add_up_in_order(self, suffixes: tuple[str, str, str]) -> None:
        ips = [f"10.1.2.11{suffixes[0]}", f"11.11.11.11{suffixes[1]}", f"2001:db8:1::11{suffixes[2]}"]
        conf = load({"type": "host-local", "ranges": THREE_SETS}, cni_args="IP=10.1.2.10", args={"cni": {"ips": ips}})
        assert [str(r.ip) for r in conf.requested] == ["10.1.2.10", "10.1.2.11", "11.11.11.11", "2001:db8:1::11"]
        assert [r.source for r in conf.requested][:2] == ["CNI_ARGS IP", "args.cni.ips[0]"]

    def test_runtime_config_ips(self) -> None:
        runtime = {"ips": ["192.168.0.1", "192.168.0.5/24", "2001:db8::1/64"]}
        conf = load({"type": "host-local", "subnet": "10.1.2.0/24"}, runtimeConfig=runtime)
        assert [str(r.ip) for r in conf.requested] == ["192.168.0.1", "192.168.0.5", "2001:db8::1"]

    def test_overlap_between_range_sets(self) -> None:
        ranges = [
            [{"subnet": "10.1.2.0/24"}, {"subnet": "10.2.2.0/24"}],
            [
                {"subnet": "10.1.4.0/24"},
                {"subnet": "10.1.6.0/24"},
                {"subnet": "10.1.8.0/24"},
                {"subnet": "10.1.2.0/24"},
            ],
        ]
        error = load_error({"type": "host-local", "ranges": ranges})
        assert (error.code, error.msg) == (7, "range set 0 overlaps with 1")
        assert "ipam.ranges[0]" in error.details and "ipam.ranges[1]" in error.details

    def test_overlap_within_a_range_set(self) -> None:
        error = load_error({"type": "host-local", "ranges": [[{"subnet": "10.1.0.0/22"}, {"subnet": "10.1.2.0/24"}]]})
        assert (error.code, error.msg) == (
            7,
            "invalid range set 0: subnets 10.1.0.1-10.1.3.254 and 10.1.2.1-10.1.2.254 overlap",
        )
        assert error.details.startswith("ipam.ranges[0]: ")

    def test_mixed_families(self) -> None:
        error = load_error(
            {"type": "host-local", "ranges": [[{"subnet": "10.1.0.0/22"}, {"subnet": "2001:db8:5::/64"}]]}
        )
        assert (error.code, error.msg) == (7, "invalid range set 0: mixed address families")

    def test_too_many_range_sets_for_0_2_0(self) -> None:
        ranges = [[{"subnet": "10.1.2.0/24"}], [{"subnet": "11.1.2.0/24"}]]
        error = load_error({"type": "host-local", "ranges": ranges}, version="0.2.0")
        assert (error.code, error.msg) == (7, "CNI version 0.2.0 does not support more than 1 address per family")

    def test_one_range_set_per_family_is_fine_for_0_2_0(self) -> None:
        ranges = [[{"subnet": "10.1.2.0/24"}], [{"subnet": "2001:db8:1::/48"}]]
        assert len(load({"type": "host-local", "ranges": ranges}, version="0.2.0").range_sets) == 2

    def test_routes_data_dir_and_resolv_conf(self) -> None:
        routes = [{"dst": "0.0.0.0/0"}, {"dst": "192.168.0.0/16", "gw": "1.1.1.1", "mtu": 1400, "table": 100}]
        conf = load(
            {"type": "host-local", "subnet": "10.1.2.0/24", "dataDir": "/d", "resolvConf": "/r", "routes": routes}
        )
        assert (conf.data_dir, conf.resolv_conf) == ("/d", "/r")
        assert [r.to_dict() for r in conf.routes] == [
            {"dst": "0.0.0.0/0"},
            {"dst": "192.168.0.0/16", "gw": "1.1.1.1", "mtu": 1400, "table": 100},
        ]


class TestConfigErrors:
    """Every bad config is code 7; Go's words stay in ``msg``, ``details`` says where and how to fix."""

    @pytest.mark.parametrize(
        ("ipam", "msg", "details"),
        [
            ({"type": "host-local"}, "no IP ranges specified", "ipam.ranges"),
            (
                {"type": "host-local", "ranges": [[{}]]},
                "invalid range set 0: ipam.ranges[0][0].subnet is missing",
                "CIDR",
            ),
            ({"type": "host-local", "ranges": [[]]}, "invalid range set 0: empty range set", "ipam.ranges[0]"),
            (
                {"type": "host-local", "ranges": [[{"subnet": "192.0.2.12/24"}]]},
                "invalid range set 0: Network has host bits set. "
                "For a subnet mask of length 24 the network address is 192.0.2.0",
                "ipam.ranges[0][0].subnet: write the network address, 192.0.2.0/24",
            ),
            (
                {"type": "host-local", "subnet": "10.0.0.0/24", "rangeStart": "10.0.1.5"},
                "invalid range set 0: RangeStart 10.0.1.5 not in network 10.0.0.0/24",
                "ipam.rangeStart: pick an address inside 10.0.0.0/24",
            ),
            (
                {"type": "host-local", "ranges": [[{"subnet": "10.0.0.0/24", "rangeEnd": "10.9.0.1"}]]},
                "invalid range set 0: RangeEnd 10.9.0.1 not in network 10.0.0.0/24",
                "ipam.ranges[0][0].rangeEnd",
            ),
            (
                {"type": "host-local", "ranges": [[{"subnet": "10.0.0.0/31"}]]},
                "invalid range set 0: Network 10.0.0.0/31 too small to allocate from",
                "ipam.ranges[0][0].subnet",
            ),
        ],
    )
    def test_range_problems(self, ipam: dict[str, Any], msg: str, details: str) -> None:
        error = load_error(ipam)
        assert (error.code, error.msg) == (7, msg)
        assert details in error.details

    @pytest.mark.parametrize(
        ("ipam", "msg"),
        [
            (
                {"type": "host-local", "ranges": [[{"subnet": 5}]]},
                "ipam.ranges[0][0].subnet: expected a string, got number",
            ),
            ({"type": "host-local", "ranges": "10.0.0.0/24"}, "ipam.ranges: expected a list, got string"),
            (
                {"type": "host-local", "ranges": [{"subnet": "10.0.0.0/24"}]},
                "ipam.ranges[0]: expected a list of ranges",
            ),
            ({"type": "host-local", "ranges": [["10.0.0.0/24"]]}, "ipam.ranges[0][0]: expected a range object"),
            ({"type": "host-local", "ranges": [[{"subnet": "10.0.0.0"}]]}, "not in CIDR notation"),
            ({"type": "host-local", "subnet": "10.0.0.0/24", "gateway": "nope"}, "ipam.gateway: 'nope' is not an IP"),
            ({"type": "host-local", "subnet": "10.0.0.0/24", "dataDir": 7}, "ipam.dataDir: expected a string"),
            ({"type": "host-local", "subnet": "10.0.0.0/24", "routes": [{"dst": "x"}]}, "ipam.routes[0].dst"),
            ({"type": "host-local", "subnet": "10.0.0.0/24", "routes": [{"dst": "0.0.0.0/0", "mtu": "big"}]}, "mtu"),
        ],
    )
    def test_wrong_types(self, ipam: dict[str, Any], msg: str) -> None:
        error = load_error(ipam)
        assert error.code == 7
        assert msg in error.msg

    def test_missing_ipam(self) -> None:
        with pytest.raises(CNIError) as caught:
            load_config(cmd({"cniVersion": "1.0.0", "name": "mynet", "type": "x"}))
        assert (caught.value.code, caught.value.msg) == (7, "IPAM config missing 'ipam' key")

    def test_runtime_ranges_of_the_wrong_shape(self) -> None:
        error = load_error({"type": "host-local"}, runtimeConfig={"ipRanges": [{"subnet": "10.0.0.0/24"}]})
        assert (error.code, error.msg[:32]) == (7, "runtimeConfig.ipRanges[0]: expec")

    @pytest.mark.parametrize(
        ("where", "kwargs"),
        [
            ("args.cni.ips[0]", {"args": {"cni": {"ips": ["bogus"]}}}),
            ("runtimeConfig.ips[1]", {"runtimeConfig": {"ips": ["10.0.0.5", ""]}}),
        ],
    )
    def test_bad_requested_ip_in_the_config(self, where: str, kwargs: dict[str, Any]) -> None:
        error = load_error({"type": "host-local", "subnet": "10.0.0.0/24"}, **kwargs)
        assert error.code == 7
        assert error.msg.startswith(f"{where}: invalid IP address")

    def test_bad_requested_ip_in_cni_args(self) -> None:
        error = load_error({"type": "host-local", "subnet": "10.0.0.0/24"}, cni_args="IP=bogus")
        assert (error.code, error.msg) == (4, 'ARGS: error parsing value of pair "IP=bogus": invalid IP address bogus')

    def test_unknown_cni_args_need_ignore_unknown(self) -> None:
        ipam = {"type": "host-local", "subnet": "10.0.0.0/24"}
        assert load_error(ipam, cni_args="K8S_POD_NAME=x").code == 4
        assert load(ipam, cni_args="IgnoreUnknown=1;K8S_POD_NAME=x").requested == []
