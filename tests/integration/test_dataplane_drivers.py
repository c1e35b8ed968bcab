"""The dataplane drivers against the real kernel, in a fresh network namespace per test.

What is proven, each by the kernel's own account (``ip route``, ``ip neigh``,
``bridge fdb``, ``ip monitor``) and by counting every netlink request that
could change it:

Routes:
- desired routes of every kind Flannel and Calico need are written as asked;
- a second apply, and a resync, with nothing changed send no write and cause no kernel event;
- drift is repaired by a resync (a route deleted or changed by hand, a stray pycni route);
- routes dropped from the desired set go; routes of BIRD (12), the user (boot, static) and the
  kernel are never deleted or overwritten, even at the very prefix and metric pycni wants;
- a route whose link appears later is written once the link is up (on the next apply or on its event);
- 1000 routes: the first apply, a no-change apply and a no-change resync, timed.

Neighbours and FDB on real vxlan devices:
- permanent neighbours (tunnel IP -> VTEP MAC) and FDB remotes (VTEP MAC -> host IP) are created,
  replaced (a moved MAC is one replace) and deleted; no-change applies and resyncs write nothing;
- drift is repaired; learnt entries, other devices' entries and the device's own remote stay;
- a device created late or recreated is caught up;
- the layered apply writes neighbour and FDB entries before the routes through them and
  removes them only after those routes.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from ipaddress import ip_address, ip_network
from typing import Any

import pytest

from pycni.dataplane import (
    RTPROT_PYCNI,
    FdbTable,
    NeighbourTable,
    Route,
    RouteTable,
    RouteType,
    apply_layered,
    forward_link_events,
)
from pycni.net import netns as pycni_netns
from pycni.net.linkevents import LinkEvents
from pycni.net.route import RouteMsg
from tests.support.netlink import Counting, Monitor
from tests.support.netns import NetnsPool, run

READS = frozenset({"dump", "get", "show"})
MAC1, MAC2, MAC3 = "02:aa:00:00:00:01", "02:aa:00:00:00:02", "02:aa:00:00:00:03"
ZERO = "00:00:00:00:00:00"


class Node:
    """A fresh namespace with an underlay veth pair (eth0 198.51.100.1/24, peer up) and a pycni socket in it."""

    def __init__(self, pool: NetnsPool) -> None:
        self.name = pool.new("dp")
        self.path = pool.path(self.name)
        # No IPv6 link-local addresses: their late arrival (after DAD) would be kernel events in the monitor.
        run("sysctl", "-qw", "net.ipv6.conf.default.addr_gen_mode=1", "net.ipv6.conf.all.accept_dad=0", netns=self.name)
        self.ip("link", "add", "eth0", "type", "veth", "peer", "name", "uplink")
        self.ip("addr", "add", "198.51.100.1/24", "dev", "eth0")
        self.ip("-6", "addr", "add", "fd00:198::1/64", "dev", "eth0", "nodad")
        self.ip("link", "set", "eth0", "up")
        self.ip("link", "set", "uplink", "up")
        self.ipr = Counting(pycni_netns.iproute(self.path))

    def ip(self, *args: str) -> str:
        return run("ip", *args, netns=self.name).stdout

    def routes(self, *selector: str) -> set[str]:
        """``ip route show <selector>`` (v4 and v6) as a set of lines."""
        lines = (
            self.ip("route", "show", *selector).splitlines() + self.ip("-6", "route", "show", *selector).splitlines()
        )
        return {" ".join(line.split()) for line in lines}

    def ours(self) -> set[str]:
        return self.routes("proto", str(RTPROT_PYCNI))

    def others(self) -> set[str]:
        """Every route that is not pycni's, as ``ip route show`` prints it."""
        return {line for line in self.routes() if f"proto {RTPROT_PYCNI}" not in line}

    def bridge(self, *args: str) -> str:
        return run("bridge", *args, netns=self.name).stdout

    def vxlan(self, name: str, *extra: str) -> None:
        """A vxlan device over eth0 (VNI 1, the kernel's port 8472 unless ``extra`` says otherwise), up."""
        self.ip("link", "add", name, "type", "vxlan", "id", "1", "local", "198.51.100.1", "dev", "eth0", *extra)
        self.ip("link", "set", name, "up")

    def neighbours(self, dev: str = "flannel.1") -> set[str]:
        return {" ".join(line.split()) for line in self.ip("neigh", "show", "dev", dev).splitlines()}

    def fdb(self, dev: str = "flannel.1") -> set[str]:
        return {" ".join(line.split()) for line in self.bridge("fdb", "show", "dev", dev).splitlines()}

    def veth(self, name: str, up: bool = True, peer: str = "") -> None:
        peer = peer or f"p{name}"[:15]
        self.ip("link", "add", name, "type", "veth", "peer", "name", peer)
        self.ip("link", "set", peer, "up")  # a carrier, as a pod's end would give
        if up:
            self.ip("link", "set", name, "up")


@pytest.fixture
def node(netns: NetnsPool) -> Iterator[Node]:
    made = Node(netns)
    try:
        yield made
    finally:
        made.ipr.close()


@pytest.fixture
def monitor(node: Node) -> Iterator[Monitor]:
    watcher = Monitor(node.name)
    try:
        yield watcher
    finally:
        watcher.close()


def net(text: str) -> Any:
    return ip_network(text)


def addr(text: str) -> Any:
    return ip_address(text)


def calico_and_flannel_routes() -> list[Route]:
    """One of each kind the fabrics write."""
    return [
        Route(net("10.42.1.5/32"), dev="cali1"),  # a pod's /32 to its veth, scope link
        Route(net("10.42.2.0/26"), dev="vxlan.calico", gateway=addr("10.42.2.0"), onlink=True),  # a block via a VTEP
        Route(net("10.42.1.0/26"), type=RouteType.BLACKHOLE),  # this node's own block
        Route(net("10.42.3.0/24"), dev="eth0", gateway=addr("198.51.100.3")),  # host-gw via the peer's address
        Route(net("10.42.4.0/24"), dev="vxlan.calico", gateway=addr("10.42.4.0"), onlink=True, mtu=1400),
        Route(net("10.42.5.0/24"), dev="eth0", gateway=addr("198.51.100.5"), src=addr("198.51.100.1"), metric=20),
        Route(net("fd42:1::/64"), dev="cali1"),
        Route(net("fd42:2::/64"), type=RouteType.BLACKHOLE),
    ]


EXPECTED = {
    "10.42.1.5 dev cali1 scope link",
    "10.42.2.0/26 via 10.42.2.0 dev vxlan.calico onlink",
    "blackhole 10.42.1.0/26",
    "10.42.3.0/24 via 198.51.100.3 dev eth0",
    "10.42.4.0/24 via 10.42.4.0 dev vxlan.calico onlink mtu 1400",
    "10.42.5.0/24 via 198.51.100.5 dev eth0 src 198.51.100.1 metric 20",
    "fd42:1::/64 dev cali1 metric 1024 pref medium",
    "blackhole fd42:2::/64 dev lo metric 1024 pref medium",
}


def ready(node: Node) -> RouteTable:
    node.vxlan("vxlan.calico")
    node.veth("cali1")
    table = RouteTable(node.ipr, families=(2, 10))
    table.set_routes(calico_and_flannel_routes())
    return table


def test_desired_routes_are_written_as_asked(node: Node) -> None:
    table = ready(node)
    result = table.apply()
    assert node.ours() == EXPECTED
    assert (result.added, result.removed, result.failed, result.waiting, result.conflicts) == (8, 0, 0, 0, 0)
    assert result.resynced  # the first apply reads the kernel first
    assert len(node.ipr.writes) == 8


def test_a_second_apply_and_a_resync_write_nothing(node: Node, monitor: Monitor) -> None:
    table = ready(node)
    table.apply()
    node.ipr.writes.clear()
    with monitor.changes() as events:
        again = table.apply()
        resynced = table.resync()
        table.set_routes(calico_and_flannel_routes())  # the same desired set handed over again
        third = table.apply()
    assert node.ipr.writes == []
    assert events == []
    for result in (again, resynced, third):
        assert (result.writes, result.unchanged, result.changed) == (0, 8, False), result
    assert resynced.resynced and not again.resynced
    assert node.ours() == EXPECTED
    assert table.in_sync and set(table.owned()) == {route.key for route in calico_and_flannel_routes()}
    table.update(Route(net("10.42.6.0/24"), dev="eth0", gateway=addr("198.51.100.6")))
    assert not table.in_sync


def test_drift_is_repaired_by_a_resync_and_only_the_drift_is_written(node: Node, monitor: Monitor) -> None:
    table = ready(node)
    table.apply()
    node.ip("route", "del", "10.42.3.0/24")  # deleted by hand
    node.ip("route", "replace", "10.42.1.5/32", "dev", "eth0", "proto", str(RTPROT_PYCNI))  # changed by hand
    node.ip("route", "add", "10.42.9.0/24", "dev", "eth0", "proto", str(RTPROT_PYCNI))  # a stray of ours
    node.ip("route", "add", "10.42.8.0/24", "dev", "eth0", "proto", "static")  # the user's: not ours
    node.ipr.writes.clear()
    assert table.apply().writes == 0  # between resyncs the driver trusts what it wrote
    with monitor.changes() as events:
        result = table.resync()
    assert (result.added, result.updated, result.removed, result.unchanged) == (1, 1, 1, 6)
    assert len(node.ipr.writes) == 3 and len(events) == 3, events
    assert node.ours() == EXPECTED
    assert "10.42.8.0/24 dev eth0 proto static scope link" in node.routes()


def test_routes_dropped_from_the_desired_set_go(node: Node) -> None:
    table = ready(node)
    table.apply()
    kept = [route for route in calico_and_flannel_routes() if route.type is RouteType.BLACKHOLE]
    table.set_routes(kept)
    result = table.apply()
    assert (result.removed, result.unchanged) == (6, 2)
    assert node.ours() == {"blackhole 10.42.1.0/26", "blackhole fd42:2::/64 dev lo metric 1024 pref medium"}
    table.set_routes([])
    assert table.apply().removed == 2
    assert node.ours() == set()


def test_bird_user_and_kernel_routes_are_never_touched_even_at_our_prefix(node: Node) -> None:
    node.vxlan("vxlan.calico")
    # At exactly the keys pycni will want (same prefix, same metric 0):
    node.ip("route", "add", "10.42.2.0/26", "via", "198.51.100.2", "dev", "eth0", "proto", "bird")
    node.ip("route", "add", "10.42.3.0/24", "via", "198.51.100.9", "dev", "eth0")  # the user's (boot)
    # The same prefix at another metric, and others inside the network:
    node.ip("route", "add", "10.42.4.0/24", "via", "198.51.100.4", "dev", "eth0", "proto", "static", "metric", "50")
    node.ip("route", "add", "10.42.7.0/24", "via", "198.51.100.7", "dev", "eth0", "proto", "bird")
    foreign_before = node.others()
    table = RouteTable(node.ipr)
    wanted = [
        Route(net("10.42.2.0/26"), dev="vxlan.calico", gateway=addr("10.42.2.0"), onlink=True),
        Route(net("10.42.3.0/24"), dev="eth0", gateway=addr("198.51.100.3")),
        Route(net("10.42.4.0/24"), dev="eth0", gateway=addr("198.51.100.5")),
    ]
    table.set_routes(wanted)
    result = table.apply()
    assert (result.added, result.conflicts, result.failed) == (1, 2, 0)
    assert set(table.conflicts()) == {wanted[0].key, wanted[1].key}
    assert {msg.proto for msg in table.conflicts().values()} == {12, 3}
    assert node.ours() == {"10.42.4.0/24 via 198.51.100.5 dev eth0"}
    assert node.others() == foreign_before
    # Conflicts are states, not failures: later applies and resyncs do not retry them, or write anything.
    node.ipr.writes.clear()
    assert table.apply().writes == 0 and table.resync().writes == 0
    # Our routes go when no longer wanted; theirs stay.
    table.set_routes([])
    table.apply()
    assert node.ours() == set()
    assert node.others() == foreign_before
    # Once the other owner's route goes, ours is written (at the next resync).
    table.set_routes(wanted)
    node.ip("route", "del", "10.42.2.0/26", "proto", "bird")
    result = table.resync()
    assert result.conflicts == 1 and "10.42.2.0/26 via 10.42.2.0 dev vxlan.calico onlink" in node.ours()


def test_a_route_that_appears_after_the_dump_is_not_overwritten(node: Node) -> None:
    table = RouteTable(node.ipr)
    table.set_routes([Route(net("10.42.3.0/24"), dev="eth0", gateway=addr("198.51.100.3"))])
    table.apply()
    node.ip("route", "add", "10.42.6.0/24", "via", "198.51.100.66", "dev", "eth0", "proto", "bird")  # after the dump
    table.update(Route(net("10.42.6.0/24"), dev="eth0", gateway=addr("198.51.100.6")))
    result = table.apply()  # add (NLM_F_EXCL) is refused; the driver re-reads and records the conflict
    assert result.resynced and result.conflicts == 1 and result.failed == 0
    assert "10.42.6.0/24 via 198.51.100.66 dev eth0 proto bird" in node.routes()


def test_routes_wait_for_a_link_that_appears_later(node: Node) -> None:
    table = RouteTable(node.ipr)
    pod = Route(net("10.42.1.9/32"), dev="cali9")
    table.set_routes([pod, Route(net("10.42.1.0/26"), type=RouteType.BLACKHOLE)])
    first = table.apply()
    assert (first.added, first.waiting) == (1, 1)
    assert table.waiting() == {pod.key: "cali9"}
    node.veth("cali9", up=False)  # created, still down: the kernel would refuse the route
    assert table.apply().waiting == 1
    node.ip("link", "set", "cali9", "up")
    result = table.apply()  # the next apply looks the awaited link up again
    assert (result.added, result.waiting) == (1, 0)
    assert "10.42.1.9 dev cali9 scope link" in node.ours()
    # The link goes away: its route with it; recreated, the route comes back over the new index.
    node.ip("link", "del", "cali9")
    table.link_changed("cali9")
    assert table.apply().waiting == 1
    node.veth("cali9")
    table.link_changed("cali9")
    assert table.apply().added == 1
    assert "10.42.1.9 dev cali9 scope link" in node.ours()


def test_a_link_recreated_while_no_route_used_it_is_looked_up_again_when_one_does(node: Node) -> None:
    """The CI flake of calico-node (a pool leaving VXLAN and coming back): a stale index must not be used.

    The table read vxlan.calico's index at its first dump; no route used the
    device when it was deleted and made again (so its events were not for
    this table), and the first route through it then went to the old index:
    ENODEV, the route left waiting until some later apply.
    """
    node.vxlan("vxlan.calico")
    table = RouteTable(node.ipr)
    via_eth0 = Route(net("10.42.2.0/26"), dev="eth0", gateway=addr("198.51.100.2"))
    table.set_routes([via_eth0])
    assert table.apply().added == 1  # the dump read every link, vxlan.calico's index among them
    node.ip("link", "del", "vxlan.calico")
    table.link_changed("vxlan.calico")
    table.set_routes([])
    assert table.apply().removed == 1
    node.vxlan("vxlan.calico")  # a new index
    table.link_changed("vxlan.calico")
    table.set_routes([Route(net("10.42.2.0/26"), dev="vxlan.calico", gateway=addr("10.42.2.0"), onlink=True)])
    result = table.apply()
    assert (result.added, result.waiting, result.failed) == (1, 0, 0), result.summary()
    assert node.ours() == {"10.42.2.0/26 via 10.42.2.0 dev vxlan.calico onlink"}


def test_a_write_refused_for_a_gone_index_is_retried_on_the_new_one_in_the_same_apply(node: Node) -> None:
    node.veth("cali4")
    table = RouteTable(node.ipr)
    table.set_routes([Route(net("10.42.1.4/32"), dev="cali4")])
    assert table.apply().added == 1
    node.ip("link", "del", "cali4")  # no event reaches the table: it still holds the old index
    node.veth("cali4")
    table.set_routes([Route(net("10.42.1.4/32"), dev="cali4", mtu=1400)])
    result = table.apply()
    assert (result.added + result.updated, result.waiting, result.failed) == (1, 0, 0), result.summary()
    assert node.ours() == {"10.42.1.4 dev cali4 scope link mtu 1400"}


def test_link_events_bring_a_waiting_route_in(node: Node) -> None:
    table = RouteTable(node.ipr)
    table.set_routes([Route(net("10.42.1.7/32"), dev="cali7")])
    table.apply()
    with LinkEvents(node.path) as events:
        node.veth("cali7")
        deadline = time.monotonic() + 5
        while table.waiting() and time.monotonic() < deadline:
            forward_link_events(events.poll(0.5), [table])
            table.apply()
    assert table.waiting() == {}
    assert node.ours() == {"10.42.1.7 dev cali7 scope link"}


def test_a_link_renamed_away_takes_no_route_of_ours_with_it(node: Node) -> None:
    node.veth("cali5")
    table = RouteTable(node.ipr)
    pod = Route(net("10.42.1.5/32"), dev="cali5")
    table.set_routes([pod])
    table.apply()
    with LinkEvents(node.path) as events:
        node.ip("link", "set", "cali5", "name", "old5")  # renamed while up: the kernel keeps its routes
        batch = events.poll(2)
    assert "old5" in batch.names
    forward_link_events(batch, [table])
    result = table.apply()
    assert (result.removed, result.waiting) == (1, 1)  # the route over the renamed link went; ours waits for cali5
    assert node.ours() == set()
    node.veth("cali5", peer="pcali5b")
    table.link_changed("cali5")
    assert table.apply().added == 1
    assert node.ours() == {"10.42.1.5 dev cali5 scope link"}


def test_adopt_takes_over_the_routes_earlier_versions_wrote(node: Node) -> None:
    node.vxlan("flannel.1")
    network = net("10.42.0.0/16")
    node.ip("route", "add", "10.42.2.0/24", "via", "10.42.2.0", "dev", "flannel.1", "onlink", "proto", "boot")
    node.ip("route", "add", "10.42.3.0/24", "via", "10.42.3.0", "dev", "flannel.1", "onlink", "proto", "boot")
    node.ip("route", "add", "10.42.4.0/24", "via", "198.51.100.4", "dev", "eth0", "proto", "boot")  # the user's

    def legacy(msg: RouteMsg) -> bool:
        return msg.proto == 3 and msg.onlink  # pycni's old vxlan routes: boot, onlink

    table = RouteTable(node.ipr, within=[network], adopt=legacy)
    table.set_routes([Route(net("10.42.2.0/24"), dev="flannel.1", gateway=addr("10.42.2.0"), onlink=True)])
    result = table.apply()
    assert (result.updated, result.removed) == (1, 1)  # re-marked as ours; the vanished peer's route removed
    assert node.ours() == {"10.42.2.0/24 via 10.42.2.0 dev flannel.1 onlink"}
    assert "10.42.4.0/24 via 198.51.100.4 dev eth0" in node.routes()


def test_drivers_with_disjoint_networks_share_a_table(node: Node) -> None:
    one = RouteTable(node.ipr, within=[net("10.42.0.0/16")])
    two = RouteTable(node.ipr, within=[net("10.43.0.0/16")])
    one.set_routes([Route(net("10.42.3.0/24"), dev="eth0", gateway=addr("198.51.100.3"))])
    two.set_routes([Route(net("10.43.3.0/24"), dev="eth0", gateway=addr("198.51.100.3"))])
    one.apply()
    two.apply()
    assert one.resync().removed == 0 and two.resync().removed == 0
    assert len(node.ours()) == 2


def test_the_winning_group_moves_with_one_replace(node: Node) -> None:
    node.vxlan("vxlan.calico")
    node.veth("cali1")
    table = RouteTable(node.ipr, group_order=("workload", "tunnel"))
    dst = net("10.42.2.7/32")
    table.set_routes([Route(dst, dev="vxlan.calico", gateway=addr("10.42.2.0"), onlink=True)], group="tunnel")
    table.apply()
    node.ipr.writes.clear()
    table.set_routes([Route(dst, dev="cali1")], group="workload")  # the pod moved onto this node
    result = table.apply()
    assert (result.updated, result.added, result.removed) == (1, 0, 0)
    assert node.ipr.writes == [("route", "replace")]
    assert node.ours() == {"10.42.2.7 dev cali1 scope link"}


def test_a_thousand_routes_applied_then_a_no_change_apply_and_resync(node: Node, monitor: Monitor) -> None:
    node.vxlan("vxlan.calico")
    routes = [
        Route(
            net(f"10.{40 + i // 250}.{i % 250}.0/24"),
            dev="vxlan.calico",
            gateway=addr(f"10.{40 + i // 250}.{i % 250}.0"),
            onlink=True,
        )
        for i in range(1000)
    ]
    table = RouteTable(node.ipr)
    table.set_routes(routes)
    started = time.monotonic()
    first = table.apply()
    applied = time.monotonic() - started
    assert (first.added, first.failed) == (1000, 0)
    node.ipr.writes.clear()
    with monitor.changes() as events:
        started = time.monotonic()
        again = table.apply()
        no_change_apply = time.monotonic() - started
        started = time.monotonic()
        resynced = table.resync()
        no_change_resync = time.monotonic() - started
    assert node.ipr.writes == [] and events == []
    assert again.unchanged == resynced.unchanged == 1000
    node.ip("route", "del", "10.41.7.0/24")
    started = time.monotonic()
    repaired = table.resync()
    one_drift = time.monotonic() - started
    assert (repaired.added, repaired.writes) == (1, 1)
    assert len(node.ours()) == 1000
    print(
        f"\n1000 routes: first apply {applied * 1000:.0f} ms, no-change apply {no_change_apply * 1000:.2f} ms, "
        f"no-change resync {no_change_resync * 1000:.0f} ms, resync repairing one {one_drift * 1000:.0f} ms"
    )


# -- neighbours and FDB --------------------------------------------------------


@pytest.fixture
def l2(node: Node) -> Node:
    """The node with the vxlan device ``flannel.1`` the layer-2 drivers manage."""
    node.vxlan("flannel.1")
    return node


def test_neighbours_are_created_replaced_and_deleted(l2: Node, monitor: Monitor) -> None:
    table = NeighbourTable(l2.ipr, "flannel.1")
    table.set_neighbours({addr("10.42.2.0"): MAC2, addr("10.42.3.0"): MAC3})
    result = table.apply()
    assert (result.added, result.failed) == (2, 0)
    assert l2.neighbours() == {f"10.42.2.0 lladdr {MAC2} PERMANENT", f"10.42.3.0 lladdr {MAC3} PERMANENT"}
    l2.ipr.writes.clear()
    with monitor.changes() as events:
        assert table.apply().writes == 0
        assert table.resync().unchanged == 2
    assert l2.ipr.writes == [] and events == []
    table.set_neighbours({addr("10.42.2.0"): MAC1})  # a peer's VTEP MAC changed; another peer left
    result = table.apply()
    assert (result.updated, result.removed, result.writes) == (1, 1, 2)
    assert l2.neighbours() == {f"10.42.2.0 lladdr {MAC1} PERMANENT"}


def test_neighbour_drift_is_repaired_and_learnt_entries_are_left_alone(l2: Node) -> None:
    l2.vxlan("other.1", "dstport", "4790")
    l2.ip("neigh", "add", "10.9.9.9", "lladdr", MAC3, "dev", "other.1", "nud", "permanent")  # another device's
    l2.ip("neigh", "add", "10.42.9.9", "lladdr", MAC3, "dev", "flannel.1", "nud", "stale")  # learnt, not configured
    table = NeighbourTable(l2.ipr, "flannel.1")
    table.set_neighbours({addr("10.42.2.0"): MAC2, addr("10.42.3.0"): MAC3})
    table.apply()
    l2.ip("neigh", "del", "10.42.2.0", "dev", "flannel.1")
    l2.ip("neigh", "replace", "10.42.3.0", "lladdr", MAC1, "dev", "flannel.1", "nud", "permanent")
    l2.ip("neigh", "add", "10.42.7.0", "lladdr", MAC1, "dev", "flannel.1", "nud", "permanent")  # a stray of ours
    result = table.resync()
    assert (result.added, result.updated, result.removed) == (1, 1, 1)
    assert f"10.42.3.0 lladdr {MAC3} PERMANENT" in l2.neighbours()
    assert "10.42.7.0" not in " ".join(l2.neighbours())
    assert f"10.42.9.9 lladdr {MAC3} STALE" in l2.neighbours()
    assert l2.neighbours("other.1") == {f"10.9.9.9 lladdr {MAC3} PERMANENT"}


def test_fdb_remotes_are_created_moved_and_deleted(l2: Node, monitor: Monitor) -> None:
    table = FdbTable(l2.ipr, "flannel.1")
    table.set_entries({MAC2: addr("198.51.100.2"), MAC3: addr("198.51.100.3")})
    result = table.apply()
    assert (result.added, result.failed) == (2, 0)
    assert l2.fdb() == {f"{MAC2} dst 198.51.100.2 self permanent", f"{MAC3} dst 198.51.100.3 self permanent"}
    l2.ipr.writes.clear()
    with monitor.changes() as events:
        assert table.apply().writes == 0
        assert table.resync().unchanged == 2
    assert l2.ipr.writes == [] and events == []
    table.set_entries({MAC2: addr("198.51.100.22")})  # a peer's host IP changed; another peer left
    result = table.apply()
    assert (result.updated, result.removed) == (1, 1)
    assert l2.ipr.writes == [("neigh", "replace"), ("neigh", "del")]  # the move is one replace: no gap
    assert l2.fdb() == {f"{MAC2} dst 198.51.100.22 self permanent"}


def test_a_flood_list_takes_several_remotes(l2: Node) -> None:
    table = FdbTable(l2.ipr, "flannel.1")
    table.set_entries([(ZERO, addr("198.51.100.2")), (ZERO, addr("198.51.100.3"))])
    assert table.apply().added == 2
    assert l2.fdb() == {f"{ZERO} dst 198.51.100.2 self permanent", f"{ZERO} dst 198.51.100.3 self permanent"}
    table.set_entries([(ZERO, addr("198.51.100.3"))])
    assert table.apply().removed == 1
    assert l2.fdb() == {f"{ZERO} dst 198.51.100.3 self permanent"}


def test_fdb_entries_pycni_does_not_own_stay(l2: Node) -> None:
    l2.vxlan("vx.remote", "dstport", "4791", "remote", "198.51.100.99")  # the device's own default remote
    l2.bridge("fdb", "add", MAC3, "dev", "vx.remote", "dst", "198.51.100.8", "self", "dynamic")  # learnt-like
    before = l2.fdb("vx.remote")
    table = FdbTable(l2.ipr, "vx.remote")
    table.set_entries({MAC2: addr("198.51.100.2")})
    table.apply()
    assert l2.fdb("vx.remote") == before | {f"{MAC2} dst 198.51.100.2 self permanent"}
    table.set_entries({})
    assert table.apply().removed == 1
    assert l2.fdb("vx.remote") == before
    assert any("198.51.100.99" in line for line in before)


def test_a_device_that_comes_late_or_is_recreated_is_caught_up(l2: Node) -> None:
    neighbours = NeighbourTable(l2.ipr, "flannel.2")
    fdb = FdbTable(l2.ipr, "flannel.2")
    neighbours.set_neighbours({addr("10.42.2.0"): MAC2})
    fdb.set_entries({MAC2: addr("198.51.100.2")})
    assert neighbours.apply().waiting == 1 and fdb.apply().waiting == 1
    l2.vxlan("flannel.2", "dstport", "4792")
    assert neighbours.apply().added == 1 and fdb.apply().added == 1  # looked up again on every apply
    l2.ip("link", "del", "flannel.2")
    l2.vxlan("flannel.2", "dstport", "4792")  # new index, empty tables
    for table in (neighbours, fdb):
        table.link_changed("flannel.2")
        assert table.apply().added == 1
    assert l2.neighbours("flannel.2") == {f"10.42.2.0 lladdr {MAC2} PERMANENT"}
    assert l2.fdb("flannel.2") == {f"{MAC2} dst 198.51.100.2 self permanent"}


def test_layered_apply_writes_layer2_before_routes_and_removes_it_after(l2: Node, monitor: Monitor) -> None:
    neighbours = NeighbourTable(l2.ipr, "flannel.1")
    fdb = FdbTable(l2.ipr, "flannel.1")
    routes = RouteTable(l2.ipr, within=[ip_network("10.42.0.0/16")])
    peer = Route(ip_network("10.42.2.0/24"), dev="flannel.1", gateway=addr("10.42.2.0"), onlink=True)
    neighbours.set_neighbours({addr("10.42.2.0"): MAC2})
    fdb.set_entries({MAC2: addr("198.51.100.2")})
    routes.set_routes([peer])
    with monitor.changes() as added:
        apply_layered([neighbours, fdb], [routes])
    assert [line.split()[0] for line in added] == ["10.42.2.0", "198.51.100.2", "10.42.2.0/24"], added
    neighbours.set_neighbours({})
    fdb.set_entries({})
    routes.set_routes([])
    with monitor.changes() as removed:
        apply_layered([neighbours, fdb], [routes])
    # (the kernel announces a deleted neighbour as FAILED first, then Deleted)
    deletions = [line.split()[1] for line in removed if line.startswith("Deleted")]
    assert deletions == ["10.42.2.0/24", "10.42.2.0", "198.51.100.2"], removed
