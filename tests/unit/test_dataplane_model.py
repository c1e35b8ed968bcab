"""The dataplane drivers' pure parts: route validation and kernel form, group precedence, MACs, link events.

No kernel here: what a driver does with netlink is in tests/integration/test_dataplane_*.py.
"""

from __future__ import annotations

import socket
import struct
from ipaddress import ip_address, ip_network
from typing import Any

import pytest

from pycni.dataplane import RTPROT_PYCNI, FdbTable, NeighbourTable, Route, RouteKey, RouteTable, RouteType
from pycni.dataplane.neighbours import floods, normalize_mac
from pycni.dataplane.routes import normalize
from pycni.dataplane.stats import ApplyResult, Counters
from pycni.net.linkevents import RTM_DELLINK, RTM_NEWLINK, parse
from pycni.net.route import RT_SCOPE_HOST, RT_SCOPE_LINK, RT_SCOPE_UNIVERSE, RouteMsg

NO_SOCKET: Any = None  # set_routes and friends do no I/O; only apply/resync touch the socket


def test_the_protocol_number_is_none_of_the_kernels_nor_birds_nor_felixs() -> None:
    assert RTPROT_PYCNI not in {0, 1, 2, 3, 4, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 42, 80, 99, 186, 187, 188}
    assert 0 < RTPROT_PYCNI < 256


@pytest.mark.parametrize(
    ("route", "scope"),
    [
        (Route(ip_network("10.0.0.5/32"), dev="cali1"), RT_SCOPE_LINK),
        (Route(ip_network("10.1.0.0/26"), dev="vxlan.calico", gateway=ip_address("10.1.0.1"), onlink=True), 0),
        (Route(ip_network("10.2.0.0/26"), type=RouteType.BLACKHOLE), RT_SCOPE_UNIVERSE),
        (Route(ip_network("10.3.0.1/32"), dev="lo", type=RouteType.LOCAL, table=255), RT_SCOPE_HOST),
        (Route(ip_network("10.4.0.0/24"), dev="eth0", scope=RT_SCOPE_LINK, gateway=ip_address("10.9.0.1")), 253),
        (Route(ip_network("fd00::/64"), dev="eth0"), RT_SCOPE_UNIVERSE),  # IPv6 has no scopes
    ],
)
def test_scope_defaults_are_what_ip_route_picks(route: Route, scope: int) -> None:
    assert route.effective_scope == scope
    assert route.kernel(7, RTPROT_PYCNI).scope == scope


def test_the_key_is_the_kernels_and_ipv6_metric_zero_is_1024() -> None:
    assert Route(ip_network("10.0.0.0/24"), dev="x").key == RouteKey(254, ip_network("10.0.0.0/24"), 0)
    assert Route(ip_network("fd00::/64"), dev="x").key.metric == 1024
    assert Route(ip_network("fd00::/64"), dev="x", metric=5).key.metric == 5
    assert Route(ip_network("10.0.0.0/24"), dev="x", metric=7, table=100).key == RouteKey(
        100, ip_network("10.0.0.0/24"), 7
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"dst": "10.0.0.0/24", "dev": "x"}, "ipaddress network"),
        ({"dst": ip_network("10.0.0.0/24")}, "needs a dev"),
        ({"dst": ip_network("10.0.0.0/24"), "type": RouteType.BLACKHOLE, "dev": "x"}, "takes no dev"),
        ({"dst": ip_network("10.0.0.0/24"), "dev": "x", "onlink": True}, "onlink needs a gateway"),
        ({"dst": ip_network("10.0.0.0/24"), "dev": "x", "gateway": ip_address("fd00::1")}, "family"),
        ({"dst": ip_network("10.0.0.0/24"), "dev": "x", "mtu": 70000}, "mtu"),
        ({"dst": ip_network("10.0.0.0/24"), "dev": "x", "table": 0}, "table"),
        ({"dst": ip_network("10.0.0.0/24"), "dev": "x", "metric": -1}, "metric"),
    ],
)
def test_a_route_that_cannot_be_written_is_refused_when_made(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises((ValueError, TypeError), match=message):
        Route(**kwargs)


def test_dumped_routes_compare_equal_to_what_was_written() -> None:
    blackhole6 = Route(ip_network("fd01::/64"), type=RouteType.BLACKHOLE)
    dumped = RouteMsg(ip_network("fd01::/64"), metric=1024, type=6, proto=RTPROT_PYCNI, oif=1)  # over lo
    assert normalize(dumped) == blackhole6.kernel(0, RTPROT_PYCNI)
    pod = Route(ip_network("10.0.0.5/32"), dev="cali1", src=ip_address("10.0.0.1"), mtu=1400)
    written = pod.kernel(9, RTPROT_PYCNI)
    assert normalize(written) == written


def test_the_driver_refuses_routes_it_does_not_manage() -> None:
    table = RouteTable(NO_SOCKET, within=[ip_network("10.42.0.0/16")])
    with pytest.raises(ValueError, match="outside"):
        table.set_routes([Route(ip_network("10.43.0.0/24"), dev="x")])
    with pytest.raises(ValueError, match="table 100"):
        table.set_routes([Route(ip_network("10.42.0.0/24"), dev="x", table=100)])
    with pytest.raises(ValueError, match="IPv6"):
        table.set_routes([Route(ip_network("fd00::/64"), dev="x")])
    with pytest.raises(ValueError, match="two routes"):
        table.set_routes([Route(ip_network("10.42.1.0/24"), dev="x"), Route(ip_network("10.42.1.0/24"), dev="y")])
    for protocol in (0, 2, 3, 4, 256):
        with pytest.raises(ValueError, match="protocol"):
            RouteTable(NO_SOCKET, protocol=protocol)


def test_the_earlier_group_wins_a_key_and_the_other_takes_over_when_it_lets_go() -> None:
    table = RouteTable(NO_SOCKET, group_order=("workload", "tunnel"))
    dst = ip_network("10.0.1.7/32")
    pod = Route(dst, dev="cali1")
    tunnel = Route(dst, dev="vxlan.calico", gateway=ip_address("10.0.9.1"), onlink=True)
    table.set_routes([tunnel], group="tunnel")
    table.set_routes([pod], group="workload")
    assert table.routes() == [pod]
    assert table.routes("tunnel") == [tunnel]
    table.set_routes([], group="workload")
    assert table.routes() == [tunnel]
    table.update(pod, group="workload")
    assert table.routes() == [pod]
    table.remove(pod.key, group="workload")
    assert table.routes() == [tunnel]


def test_routes_wait_for_links_the_driver_has_not_seen() -> None:
    table = RouteTable(NO_SOCKET)
    table.set_routes(
        [Route(ip_network("10.0.0.5/32"), dev="cali1"), Route(ip_network("10.9.0.0/26"), type=RouteType.BLACKHOLE)]
    )
    assert table.waiting() == {RouteKey(254, ip_network("10.0.0.5/32"), 0): "cali1"}


def test_macs_are_normalized_and_classified() -> None:
    assert normalize_mac("AA-BB-CC-dd-ee-01") == "aa:bb:cc:dd:ee:01"
    for bad in ("aa:bb:cc:dd:ee", "zz:bb:cc:dd:ee:ff", "", "aabbccddeeff"):
        with pytest.raises(ValueError, match="MAC"):
            normalize_mac(bad)
    assert floods("00:00:00:00:00:00") and floods("01:00:5e:00:00:01") and not floods("02:00:00:00:00:01")


def test_desired_layer2_entries_are_validated() -> None:
    fdb = FdbTable(NO_SOCKET, "vx0")
    with pytest.raises(ValueError, match="two remotes"):
        fdb.set_entries(
            [("02:00:00:00:00:01", ip_address("198.51.100.2")), ("02:00:00:00:00:01", ip_address("198.51.100.3"))]
        )
    zero = "00:00:00:00:00:00"
    fdb.set_entries([(zero, ip_address("198.51.100.2")), (zero, ip_address("198.51.100.3"))])  # flooding: many remotes
    assert len(fdb.entries()) == 2
    neighbours = NeighbourTable(NO_SOCKET, "vx0")
    with pytest.raises(ValueError, match="IPv4"):
        neighbours.set_neighbours({ip_address("fd00::1"): "02:00:00:00:00:01"})
    neighbours.set_neighbours({ip_address("10.0.0.1"): "02-00-00-00-00-0A"})
    assert neighbours.neighbours() == {ip_address("10.0.0.1"): "02:00:00:00:00:0a"}
    with pytest.raises(ValueError, match="family"):
        NeighbourTable(NO_SOCKET, "vx0", family=socket.AF_BRIDGE)


def _link_message(kind: int, index: int, flags: int, name: bytes) -> bytes:
    attr = struct.pack("=HH", 4 + len(name) + 1, 3) + name + b"\0"
    attr += b"\0" * (-len(attr) % 4)
    body = struct.pack("=BxHiII", 0, 1, index, flags, 0) + attr
    return struct.pack("=IHHII", 16 + len(body), kind, 0, 0, 0) + body


def test_link_events_are_decoded_from_the_kernels_messages() -> None:
    data = _link_message(RTM_NEWLINK, 7, 0x1, b"cali1") + _link_message(RTM_DELLINK, 8, 0, b"veth12345678")
    events = parse(data)
    assert [(e.name, e.index, e.up, e.deleted) for e in events] == [
        ("cali1", 7, True, False),
        ("veth12345678", 8, False, True),
    ]
    assert parse(data[:10]) == []  # a truncated datagram is not misread


def test_counters_add_up_results() -> None:
    totals = Counters()
    totals.add(ApplyResult("routes", "t", added=2, writes=2, resynced=True))
    totals.add(ApplyResult("routes", "t", unchanged=2))
    assert (totals.applies, totals.resyncs, totals.added, totals.unchanged, totals.writes) == (2, 1, 2, 2, 2)
    assert ApplyResult("routes", "t").summary().endswith("nothing to do")
