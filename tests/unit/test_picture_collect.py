"""The collectors' pure half: datastore records and a kernel state in, the picture's nodes, badges and links out.

The I/O half (reading a real store, kernel and BIRD) is exercised by
tests/integration/test_picture.py and the demo (``make pictures``).
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Mapping

from pycni.fabric.calico.bird import RTPROT_BIRD, ProtocolStatus
from pycni.fabric.calico.ipam import AllocationBlock, Attribute
from pycni.fabric.calico.model import FelixSettings, IPPoolInfo, NodeInfo, new_resource
from pycni.fabric.flannel.model import Lease, LeaseAttrs, NetworkConfig
from pycni.picture import collect_calico, collect_flannel
from pycni.picture.kernel import Device, KernelRoute, KernelState
from pycni.picture.model import Badge, State
from pycni.runtime.cache import Attachment

NOW = 1_800_000_000.0
MACS = {11: "aa:00:00:00:00:11", 12: "aa:00:00:00:00:12", 13: "aa:00:00:00:00:13"}


def lease(n: int, backend: str = "vxlan", ttl: float | None = 86400.0) -> Lease:
    data = {"VNI": 1, "VtepMAC": MACS[n]} if backend == "vxlan" else {}
    attrs = LeaseAttrs(f"198.51.100.{n}", backend, data)
    return Lease(ipaddress.IPv4Network(f"10.244.{n}.0/24"), attrs, None, None if ttl is None else NOW + ttl)


def attachment(cid: str, address: str, **args: str) -> Attachment:
    result = {"cniVersion": "1.0.0", "ips": [{"address": f"{address}/24"}]}
    return Attachment(cid, "cbr0", "eth0", netns=f"/run/netns/{cid}-ns", cni_args=list(args.items()), result=result)


def route(dst: str, gateway: str, device: str, proto: int = 112, onlink: bool = False) -> KernelRoute:
    return KernelRoute(ipaddress.IPv4Network(dst), gateway, device, proto, onlink, False)


def flannel_kernel(routes: tuple[KernelRoute, ...], neighbours: dict[str, str], fdb: dict[str, str]) -> KernelState:
    return KernelState(
        addresses={"198.51.100.11": ipaddress.IPv4Interface("198.51.100.11/24")},
        devices={"flannel.1": Device("flannel.1", "vxlan", MACS[11], 1450, True, 1, 8472)},
        routes=routes,
        neighbours={"flannel.1": neighbours},
        fdb={"flannel.1": fdb},
    )


def flannel_sources(
    config: Mapping[str, object], leases: list[Lease], kernel: KernelState | None
) -> collect_flannel.Sources:
    pods = (
        attachment("c1", "10.244.11.2", K8S_POD_NAMESPACE="default", K8S_POD_NAME="web"),
        attachment("c2", "10.244.12.7"),
        attachment("c3", "10.99.0.2"),  # in no lease's subnet: another network's pod
    )
    return collect_flannel.Sources(
        NetworkConfig.from_json(json.dumps(config)),
        tuple(leases),
        42,
        "etcd at http://e:2379",
        pods,
        ("/c",),
        kernel,
        NOW,
    )


def badges(picture_node: object) -> dict[str, State]:
    return {b.text: b.state for b in getattr(picture_node, "badges", ())}


def test_flannel_vxlan_peers_are_judged_by_route_neighbour_and_fdb() -> None:
    kernel = flannel_kernel(
        routes=(route("10.244.12.0/24", "10.244.12.0", "flannel.1", onlink=True),),
        neighbours={"10.244.12.0": MACS[12]},
        fdb={MACS[12]: "198.51.100.12"},
    )
    config = {"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan"}}
    picture = collect_flannel.build(flannel_sources(config, [lease(13), lease(11), lease(12, ttl=600)], kernel))
    assert [n.name for n in picture.nodes] == ["198.51.100.11", "198.51.100.12", "198.51.100.13"]
    me, good, bad = picture.nodes
    assert me.local and not good.local and not bad.local
    assert {n.segment for n in picture.nodes} == {"198.51.100.0/24"}
    assert badges(me) == {"flannel.1 up": State.OK, "lease 24.0 h": State.OK}
    assert "flannel.1 MTU 1450" in me.details and f"VTEP {MACS[11]}" in me.details
    assert badges(good) == {"vxlan ok": State.OK, "lease 10 min": State.WARN}  # renewals are failing
    assert badges(bad) == {"no route/neighbour/fdb": State.FAIL, "lease 24.0 h": State.OK}
    assert [(p.name, p.addresses) for p in me.pods] == [("default/web", ("10.244.11.2",))]
    assert [(p.name, p.addresses) for p in good.pods] == [("c2-ns", ("10.244.12.7",))]
    assert bad.pods == ()
    states = {frozenset((k.a, k.b)): (k.label, k.state) for k in picture.links}
    assert states == {
        frozenset(("198.51.100.11", "198.51.100.12")): ("vxlan ok", State.OK),
        frozenset(("198.51.100.11", "198.51.100.13")): ("no route/neighbour/fdb", State.FAIL),
        frozenset(("198.51.100.12", "198.51.100.13")): ("vxlan", State.UNKNOWN),
    }
    assert picture.title == "Flannel network 10.244.0.0/16"
    assert "VXLAN VNI 1, UDP port 8472" in picture.overlay and "(3)" in picture.overlay
    assert any("revision 42" in fact and "seen from 198.51.100.11" in fact for fact in picture.facts)
    assert "1 node(s) with something down or missing: 198.51.100.13; 1 degraded: 198.51.100.12" in picture.facts


def test_flannel_host_gw_needs_a_route_via_the_peer_and_a_stale_fdb_entry_counts_as_missing() -> None:
    kernel = flannel_kernel((route("10.244.12.0/24", "198.51.100.12", "eth0"),), {}, {})
    config = {"Network": "10.244.0.0/16", "Backend": {"Type": "host-gw"}}
    picture = collect_flannel.build(
        flannel_sources(config, [lease(11, "host-gw"), lease(12, "host-gw"), lease(13, "host-gw", None)], kernel)
    )
    _, good, bad = picture.nodes
    assert badges(good)["route via 198.51.100.12"] is State.OK
    assert badges(bad) == {"no route": State.FAIL, "reservation": State.OK}

    moved = flannel_kernel(
        routes=(route("10.244.12.0/24", "10.244.12.0", "flannel.1", onlink=True),),
        neighbours={"10.244.12.0": MACS[12]},
        fdb={MACS[12]: "198.51.100.99"},  # the FDB still sends the peer's MAC to its old address
    )
    vxlan = {"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan"}}
    _, peer = collect_flannel.build(flannel_sources(vxlan, [lease(11), lease(12)], moved)).nodes
    assert badges(peer)["no fdb"] is State.FAIL


def test_flannel_from_outside_the_cluster_shows_leases_without_kernel_state() -> None:
    config = {"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan"}}
    picture = collect_flannel.build(flannel_sources(config, [lease(11), lease(12)], None))
    assert not any(n.local for n in picture.nodes)
    assert all(set(badges(n)) == {"lease 24.0 h"} for n in picture.nodes)
    assert {k.state for k in picture.links} == {State.UNKNOWN}
    assert any("no kernel state is shown" in fact for fact in picture.facts)


# -- Calico -------------------------------------------------------------------------------------


def calico_node(n: int, subnet: str) -> NodeInfo:
    spec = {"bgp": {"ipv4Address": f"{subnet}.{n}/24"}, "ipv4VXLANTunnelAddr": f"10.244.{n}.0"}
    return NodeInfo.from_resource(new_resource("Node", f"node{n}", spec))


def block(n: int, used: int) -> AllocationBlock:
    made = AllocationBlock.new(ipaddress.IPv4Network(f"10.244.{n}.0/26"), f"host:node{n}")
    made.attributes.append(Attribute(handle_id=f"k8s-pod-network.c{n}"))
    for ordinal in range(used):
        made.allocations[ordinal] = 0
    return made


def endpoint(n: int, node: str) -> object:
    spec = {
        "orchestrator": "k8s",
        "node": node,
        "pod": f"pod{n}",
        "endpoint": "eth0",
        "ipNetworks": [f"10.244.{n}.1/32"],
    }
    return new_resource("WorkloadEndpoint", f"{node}-k8s-pod{n}-eth0", spec, namespace="default")


def bgp_row(peer: str, info: str) -> ProtocolStatus:
    state = "up" if info == "Established" else "start"
    return ProtocolStatus(f"Mesh_{peer.replace('.', '_')}", "BGP", "---", state, "12:00:00", info)


def calico_sources(bird: collect_calico.Bird, kernel: KernelState | None) -> collect_calico.Sources:
    spec = {"cidr": "10.244.0.0/16", "blockSize": 26, "vxlanMode": "CrossSubnet", "natOutgoing": True}
    pool = new_resource("IPPool", "default-ipv4-ippool", spec)
    endpoints = [endpoint(1, "node1"), endpoint(2, "node2"), endpoint(3, "node3"), endpoint(9, "gone")]
    return collect_calico.Sources(
        store="the embedded store /x.db",
        revision=7,
        nodes=(calico_node(1, "198.51.100"), calico_node(2, "198.51.100"), calico_node(3, "203.0.113")),
        pools=(IPPoolInfo.from_resource(pool),),
        blocks=(block(1, 2), block(2, 1), block(3, 1)),
        endpoints=tuple(endpoints),  # type: ignore[arg-type]
        bgp_configs=(),
        bgp_peers=(),
        felix=FelixSettings(),
        kernel=kernel,
        bird=bird,
    )


def calico_kernel(routes: tuple[KernelRoute, ...]) -> KernelState:
    return KernelState(
        addresses={"198.51.100.1": ipaddress.IPv4Interface("198.51.100.1/24")},
        devices={"vxlan.calico": Device("vxlan.calico", "vxlan", "66:00:00:00:00:01", 1450, True, 4096, 4789)},
        routes=routes,
    )


def test_calico_nodes_blocks_pods_and_this_nodes_bgp_sessions_and_routes() -> None:
    rows = (bgp_row("198.51.100.2", "Established"), bgp_row("203.0.113.3", "Active Socket: Connection refused"))
    bird = collect_calico.Bird("/run/bird.ctl", rows)
    kernel = calico_kernel((route("10.244.2.0/26", "198.51.100.2", "eth0", RTPROT_BIRD),))  # node3's block: none
    picture = collect_calico.build(calico_sources(bird, kernel))
    names = [n.name for n in picture.nodes]
    assert names == ["node1", "node2", "node3", "gone"]
    node1, node2, node3, gone = picture.nodes
    assert node1.local and node1.address == "198.51.100.1" and node1.segment == "198.51.100.0/24"
    assert node3.segment == "203.0.113.0/24"
    assert [(s.cidr, s.note) for s in node1.subnets] == [("10.244.1.0/26", "2/64 used")]
    assert [(p.name, p.addresses) for p in node2.pods] == [("default/pod2", ("10.244.2.1",))]
    assert "vxlan.calico 10.244.1.0" in node1.details
    assert badges(node1) == {"BGP 1/2 Established": State.FAIL, "vxlan.calico up": State.OK}
    assert badges(node2) == {"BGP Established": State.OK, "route BGP via 198.51.100.2": State.OK}
    assert badges(node3) == {"BGP Active": State.FAIL, "no route to 1 block(s)": State.FAIL}
    assert badges(gone) == {"no Node resource": State.FAIL}  # its endpoint's node is not registered
    links = {frozenset((k.a, k.b)): (k.label, k.state) for k in picture.links}
    assert links == {
        frozenset(("node1", "node2")): ("BGP Established", State.OK),
        frozenset(("node1", "node3")): ("BGP Active", State.FAIL),
        frozenset(("node2", "node3")): ("BGP", State.UNKNOWN),
    }
    assert "VXLAN CrossSubnet (VNI 4096, UDP 4789) natOutgoing" in picture.overlay
    assert "BGP full mesh (AS 64512, 3 sessions)" in picture.overlay
    assert "3 node(s) with something down or missing: node1, node3, gone" in picture.facts
    assert picture.title == "Calico network 10.244.0.0/16"


def test_calico_without_bird_marks_sessions_unknown_and_a_dead_bird_as_down() -> None:
    kernel = calico_kernel((route("10.244.2.0/26", "10.244.2.0", "vxlan.calico", onlink=True),))
    unread = collect_calico.build(calico_sources(collect_calico.Bird("", None), kernel))
    node1, node2 = unread.nodes[:2]
    assert badges(node1)["BIRD not read"] is State.UNKNOWN
    assert badges(node2) == {"BGP ?": State.UNKNOWN, "route vxlan": State.OK}
    assert any("--bird-socket" in fact for fact in unread.facts)
    down = collect_calico.build(calico_sources(collect_calico.Bird("/x", None, "BIRD is not running"), kernel))
    assert badges(down.nodes[0])["BIRD down"] is State.FAIL
    assert badges(down.nodes[1])["BGP ?"] is State.FAIL


def test_calico_seen_from_no_node_has_only_the_datastore() -> None:
    picture = collect_calico.build(calico_sources(collect_calico.Bird("", None), None))
    assert not any(n.local for n in picture.nodes)
    assert all(n.badges == () for n in picture.nodes[:3])
    assert {k.state for k in picture.links} == {State.UNKNOWN}
    assert Badge("no Node resource", State.FAIL, "WorkloadEndpoints name this node but no Node exists") in (
        picture.nodes[3].badges
    )
