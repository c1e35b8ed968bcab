"""The BGP plan (mesh, route reflectors, BGPPeers) and its BIRD 2 rendering, without root or a network.

The scenarios are confd's template test cases (Calico v3.28
``confd/tests/mock_data/calicoctl/<case>/input.yaml``: nodes kube-master
10.192.0.2/16, kube-node-1 10.192.0.3/16, kube-node-2 10.192.0.4/16, pool
192.168.0.0/16, blocks from ``mock_data/etcd/block``); each test asserts the
sessions Calico's compiled ``bird.cfg`` for that case has (names, neighbours,
AS numbers, ports, passive side, source address, rr client, internal or
external export), and pins pycni's BIRD 2 translation in a golden file
(``tests/unit/golden/bird/``; regenerate with ``PYCNI_UPDATE_GOLDEN=1`` and
review). Every rendered config is also loaded by ``bird -p``.
"""

from __future__ import annotations

import ipaddress
import itertools
import os
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from pycni.datastore import KeyValue
from pycni.fabric.calico.bgp import (
    BGPInputs,
    BGPPlan,
    KernelRoutes,
    SessionKind,
    block_states,
    duration_seconds,
    hash_router_id,
    kernel_route_owner,
    plan,
)
from pycni.fabric.calico.bird import (
    BirdControl,
    BirdError,
    Reply,
    check_config,
    parse_protocols,
    render,
)
from pycni.fabric.calico.model import IPPoolInfo, NodeInfo, apply_defaults, new_resource
from pycni.fabric.calico.resource import Resource

GOLDEN = Path(__file__).parent / "golden" / "bird"
MASTER, NODE1, NODE2 = "kube-master", "kube-node-1", "kube-node-2"
net = ipaddress.ip_network
ip = ipaddress.ip_address

# mock_data/etcd/block: kube-master's affinities (legacy empty state = implicitly confirmed).
CONFD_BLOCKS = {
    net("192.168.221.192/26"): "",
    net("192.168.221.0/26"): "pending",
    net("192.168.221.64/26"): "confirmed",
    net("10.0.0.0/30"): "",
    net("10.1.0.0/24"): "",
    net("10.2.0.1/32"): "",
}

RENDERED: list[str] = []  # every config rendered here, loaded by bird -p at the end


def node(name: str, address: str | None, labels: dict[str, str] | None = None, **bgp: Any) -> NodeInfo:
    spec: dict[str, Any] = {}
    if address or bgp:
        spec["bgp"] = {**({"ipv4Address": address} if address else {}), **bgp}
    resource = new_resource("Node", name, spec)
    if labels:
        resource.set_meta("labels", labels)
    return NodeInfo.from_resource(resource)


def pool(cidr: str = "192.168.0.0/16", **spec: Any) -> IPPoolInfo:
    resource = new_resource("IPPool", cidr.replace("/", "-").replace(".", "-"), {"cidr": cidr, **spec})
    apply_defaults(resource)
    return IPPoolInfo.from_resource(resource)


def bgpconfig(name: str = "default", **spec: Any) -> Resource:
    return new_resource("BGPConfiguration", name, spec)


def peer(name: str, **spec: Any) -> Resource:
    return new_resource("BGPPeer", name, spec)


def three_nodes(**labels: dict[str, str]) -> list[NodeInfo]:
    return [
        node(MASTER, "10.192.0.2/16", labels.get("master")),
        node(NODE1, "10.192.0.3/16", labels.get("node1")),
        node(NODE2, "10.192.0.4/16", labels.get("node2")),
    ]


def make_plan(nodes: Sequence[NodeInfo], me: str = MASTER, **kw: Any) -> BGPPlan:
    kw.setdefault("pools", [pool(ipipMode="Always", natOutgoing=True)])
    result = plan(BGPInputs(me, nodes, **kw))
    RENDERED.append(render(result))
    return result


def summary(p: BGPPlan) -> list[tuple[Any, ...]]:
    """(name, neighbour, AS, port, source address, passive, internal, rr client) per session, in order."""
    return [
        (
            s.name,
            str(s.peer_ip),
            s.peer_as,
            s.port,
            str(s.source_address) if s.source_address else None,
            s.passive,
            s.internal,
            s.route_reflector_client,
        )
        for s in p.sessions
    ]


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("PYCNI_UPDATE_GOLDEN"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert text == path.read_text(), f"{name} changed; rerun with PYCNI_UPDATE_GOLDEN=1 and review the diff"


# -- confd's cases -------------------------------------------------------------------------------


def test_mesh_ipip_always() -> None:
    """mesh/ipip-always: two Mesh_ sessions from kube-master, both passive (the peers' addresses sort higher)."""
    p = make_plan(three_nodes(), configs=[bgpconfig()], blocks=CONFD_BLOCKS)
    assert str(p.router_id) == "10.192.0.2" and p.local_as == 64512 and p.log_level == "info"
    assert summary(p) == [
        ("Mesh_10_192_0_3", "10.192.0.3", 64512, None, "10.192.0.2", True, True, False),
        ("Mesh_10_192_0_4", "10.192.0.4", 64512, None, "10.192.0.2", True, True, False),
    ]
    # bird_aggr.cfg: blackholes for confirmed blocks that are not /32; calico_aggr lines for every confirmed one.
    assert p.advertised_blocks == (
        net("10.0.0.0/30"),
        net("10.1.0.0/24"),
        net("10.2.0.1/32"),
        net("192.168.221.192/26"),
        net("192.168.221.64/26"),
    )
    text = render(p)
    assert "route 192.168.221.0/26" not in text and "if ( net = 192.168.221.0/26 )" not in text
    assert "# Block 192.168.221.0/26 is pending" in text
    assert "route 10.2.0.1/32 blackhole;" not in text and "if ( net = 10.2.0.1/32 ) then { accept; }" in text
    check_golden("mesh_ipip_always.conf", text)
    # The other two nodes: node-1 connects to master (master is passive), node-2 is the passive side for node-1.
    assert [(s.name, s.passive) for s in make_plan(three_nodes(), me=NODE1).sessions] == [
        ("Mesh_10_192_0_2", False),
        ("Mesh_10_192_0_4", True),
    ]
    assert [(s.name, s.passive) for s in make_plan(three_nodes(), me=NODE2).sessions] == [
        ("Mesh_10_192_0_2", False),
        ("Mesh_10_192_0_3", False),
    ]


def test_explicit_global_peers() -> None:
    """explicit_peering/global: mesh off, AS 64567, listen port 150, bindMode NodeIP, Debug logging."""
    configs = [
        bgpconfig(
            nodeToNodeMeshEnabled=False, logSeverityScreen="Debug", asNumber=64567, listenPort=150, bindMode="NodeIP"
        )
    ]
    peers = [
        peer("bgppeer-1", peerIP="10.192.0.3", asNumber=64567, sourceAddress="None"),
        peer("bgppeer-2", peerIP="10.192.0.1:166", asNumber=64567),
        peer("bgppeer-3", peerIP="10.192.0.1", asNumber=64567),
    ]
    nodes = [node(MASTER, "10.192.0.2/16"), node(NODE1, "10.192.0.3/16"), node(NODE2, "10.192.0.1/16")]
    p = make_plan(nodes, configs=configs, peers=peers)
    assert (str(p.listen_address), p.listen_port, p.log_level, p.local_as) == ("10.192.0.2", 150, "debug", 64567)
    # A peer that is a Calico node is reached on the cluster's listen port; bgppeer-1 uses no source address
    # and, being a Calico node with a higher address, connects to us.
    assert summary(p) == [
        ("Global_10_192_0_1_port_150", "10.192.0.1", 64567, 150, "10.192.0.2", False, True, False),
        ("Global_10_192_0_1_port_166", "10.192.0.1", 64567, 166, "10.192.0.2", False, True, False),
        ("Global_10_192_0_3_port_150", "10.192.0.3", 64567, 150, None, True, True, False),
    ]
    text = render(p)
    assert "local 10.192.0.2 port 150 as 64567;\n  strict bind on;" in text
    assert "debug all;" in text and "debug { states }" not in text
    check_golden("explicit_global.conf", text)


def test_explicit_node_specific_peers() -> None:
    """explicit_peering/specific_node: two Node_ peers of kube-master, the second external (AS 64566)."""
    peers = [
        peer("bgppeer-1", peerIP="10.192.0.3", asNumber=64512, node=MASTER),
        peer("bgppeer-2", peerIP="10.192.0.4", asNumber=64566, node=MASTER),
    ]
    p = make_plan(three_nodes(), configs=[bgpconfig(nodeToNodeMeshEnabled=False)], peers=peers)
    assert summary(p) == [
        ("Node_10_192_0_3", "10.192.0.3", 64512, None, "10.192.0.2", False, True, False),
        ("Node_10_192_0_4", "10.192.0.4", 64566, None, "10.192.0.2", False, False, False),
    ]
    text = render(p)
    assert "calico_export_to_bgp_peers(false)" in text
    check_golden("explicit_specific_node.conf", text)
    # The reverse peering: kube-node-1 (same address and AS) peers back; kube-node-2 has AS 64512, not 64566.
    assert [
        s.name
        for s in make_plan(
            three_nodes(), me=NODE1, configs=[bgpconfig(nodeToNodeMeshEnabled=False)], peers=peers
        ).sessions
    ] == ["Node_10_192_0_2"]
    assert (
        make_plan(three_nodes(), me=NODE2, configs=[bgpconfig(nodeToNodeMeshEnabled=False)], peers=peers).sessions == ()
    )


def rr_inputs() -> dict[str, Any]:
    """explicit_peering/route_reflector: kube-master is the RR (cluster 10.0.0.1) with an eBGP ToR peer."""
    nodes = [
        node(MASTER, "10.192.0.2/16", {"routeReflector": "true"}, routeReflectorClusterID="10.0.0.1"),
        node(NODE1, "10.192.0.3/16"),
        node(NODE2, "10.192.0.4/16"),
    ]
    peers = [
        peer("bgppeer-1", peerIP="172.19.4.87", asNumber=64533, nodeSelector="has(routeReflector)"),
        peer("bgppeer-v6", peerIP="[ac13::57]:50", asNumber=64533, nodeSelector="has(routeReflector)"),
        peer("bgppeer-other-nodes", nodeSelector="has(routeReflector)", peerSelector="!has(routeReflector)"),
    ]
    return {"nodes": nodes, "configs": [bgpconfig(asNumber=64532, nodeToNodeMeshEnabled=False)], "peers": peers}


def test_route_reflector() -> None:
    inputs = rr_inputs()
    p = make_plan(**inputs)
    assert p.route_reflector_cluster_id == "10.0.0.1"
    assert summary(p) == [
        ("Node_10_192_0_3", "10.192.0.3", 64532, None, "10.192.0.2", False, True, True),
        ("Node_10_192_0_4", "10.192.0.4", 64532, None, "10.192.0.2", False, True, True),
        ("Node_172_19_4_87", "172.19.4.87", 64533, None, "10.192.0.2", False, False, False),
    ]
    text = render(p)
    assert text.count("rr cluster id 10.0.0.1;") == 2
    assert "configured as a route reflector with cluster ID 10.0.0.1" in text
    check_golden("route_reflector.conf", text)
    # A client peers with the RR only (the reverse of bgppeer-other-nodes), as a plain iBGP session.
    client = make_plan(me=NODE1, **inputs)
    assert summary(client) == [("Node_10_192_0_2", "10.192.0.2", 64532, None, "10.192.0.3", False, True, False)]
    check_golden("route_reflector_client.conf", render(client))


def test_route_reflector_with_mesh_enabled() -> None:
    """mesh/route-reflector-mesh-enabled: the mesh skips the RR (kube-node-2); the RR peering is explicit."""
    inputs = rr_inputs()
    inputs["configs"] = [bgpconfig(asNumber=64532, nodeToNodeMeshEnabled=True)]
    inputs["nodes"] = [
        node(MASTER, "10.192.0.2/16"),
        node(NODE1, "10.192.0.3/16"),
        node(NODE2, "10.192.0.4/16", {"routeReflector": "true"}, routeReflectorClusterID="10.0.0.1"),
    ]
    p = make_plan(**inputs)
    assert summary(p) == [
        ("Mesh_10_192_0_3", "10.192.0.3", 64532, None, "10.192.0.2", True, True, False),
        ("Node_10_192_0_4", "10.192.0.4", 64532, None, "10.192.0.2", False, True, False),
    ]
    # The RR itself ignores the mesh and serves both as clients.
    rr = make_plan(me=NODE2, **inputs)
    assert [(s.name, s.route_reflector_client) for s in rr.sessions] == [
        ("Node_10_192_0_2", True),
        ("Node_10_192_0_3", True),
        ("Node_172_19_4_87", False),
    ]


def test_peer_selectors_and_per_node_listen_port() -> None:
    """explicit_peering/selectors: group one peers with group two; node.kube-node-1 listens on port 500."""
    nodes = three_nodes(master={"group": "one"}, node1={"group": "two"}, node2={"group": "two"})
    configs = [bgpconfig(nodeToNodeMeshEnabled=False), bgpconfig("node.kube-node-1", listenPort=500)]
    peers = [peer("bgppeer-1", nodeSelector="group=='one'", peerSelector="group=='two'")]
    p = make_plan(nodes, configs=configs, peers=peers)
    assert summary(p) == [
        ("Node_10_192_0_3_port_500", "10.192.0.3", 64512, 500, "10.192.0.2", False, True, False),
        ("Node_10_192_0_4", "10.192.0.4", 64512, None, "10.192.0.2", False, True, False),
    ]
    check_golden("selectors.conf", render(p))
    node1 = make_plan(nodes, me=NODE1, configs=configs, peers=peers)
    assert node1.listen_port == 500 and "local port 500 as 64512;" in render(node1)
    assert [s.name for s in node1.sessions] == ["Node_10_192_0_2"]
    assert [s.name for s in make_plan(nodes, me=NODE2, configs=configs, peers=peers).sessions] == ["Node_10_192_0_2"]


# -- pycni's own cases ------------------------------------------------------------------------


def mesh_nodes(count: int) -> list[NodeInfo]:
    return [node(f"node-{i}", f"198.51.100.{10 + i}/24") for i in range(count)]


@pytest.mark.parametrize("count", [2, 3, 7])
def test_full_mesh_of_n(count: int) -> None:
    nodes = mesh_nodes(count)
    plans = {n.name: make_plan(nodes, me=n.name, pools=[pool("10.244.0.0/16")]) for n in nodes}
    for name, p in plans.items():
        assert len(p.sessions) == count - 1
        assert all(s.kind is SessionKind.MESH and s.internal for s in p.sessions)
        assert name not in {s.peer_node for s in p.sessions}
    for a, b in itertools.combinations(nodes, 2):
        assert a.ipv4_address and b.ipv4_address
        ab = plans[a.name].session(f"Mesh_{str(b.ipv4_address.ip).replace('.', '_')}")
        ba = plans[b.name].session(f"Mesh_{str(a.ipv4_address.ip).replace('.', '_')}")
        assert ab is not None and ba is not None
        assert ab.passive != ba.passive, "exactly one side of each mesh pair connects"


def test_mesh_passive_side_compares_addresses_as_strings() -> None:
    """The template's ``gt`` compares strings: 10.192.0.9 > 10.192.0.10, so .10 waits for .9."""
    nodes = [node("a", "10.192.0.9/24"), node("b", "10.192.0.10/24")]
    assert [s.passive for s in make_plan(nodes, me="b").sessions] == [True]
    assert [s.passive for s in make_plan(nodes, me="a").sessions] == [False]


def test_mesh_skips_nodes_without_ipv4_and_a_node_without_ipv4_has_no_bgp() -> None:
    nodes = [*mesh_nodes(2), node("v6only", None, ipv6Address="fd00::5/64")]
    assert [s.name for s in make_plan(nodes, me="node-0").sessions] == ["Mesh_198_51_100_11"]
    off = make_plan(nodes, me="v6only")
    assert off.address is None and off.sessions == ()
    text = render(off)
    assert "# IPv4 disabled on this node." in text and "protocol bgp" not in text and "router id" not in text
    absent = make_plan(nodes, me="not-registered")
    assert absent.address is None and absent.sessions == ()


def test_per_node_as_numbers() -> None:
    nodes = [
        node("a", "198.51.100.10/24", asNumber=64600),
        node("b", "198.51.100.11/24"),
        node("c", "198.51.100.12/24"),
    ]
    a = make_plan(nodes, me="a", configs=[bgpconfig(asNumber=64700)])
    assert a.local_as == 64600
    assert [(s.peer_as, s.internal) for s in a.sessions] == [(64700, True), (64700, True)]
    assert "local as 64600;" in render(a)
    b = make_plan(nodes, me="b", configs=[bgpconfig(asNumber=64700)])
    assert b.local_as == 64700 and [s.peer_as for s in b.sessions] == [64600, 64700]


def test_two_route_reflector_clusters() -> None:
    """Mesh off, two RRs in different clusters, every other node peering with both (a peerSelector)."""
    nodes = [
        node("rr-a", "198.51.100.10/24", {"rr": "a"}, routeReflectorClusterID="10.0.0.1"),
        node("rr-b", "198.51.100.11/24", {"rr": "b"}, routeReflectorClusterID="10.0.0.2"),
        node("c1", "198.51.100.20/24"),
        node("c2", "198.51.100.21/24"),
    ]
    peers = [peer("to-rrs", nodeSelector="all()", peerSelector="has(rr)")]
    configs = [bgpconfig(nodeToNodeMeshEnabled=False)]
    rr_a = make_plan(nodes, me="rr-a", configs=configs, peers=peers)
    # The other RR is in another cluster, so it is served as a client too (what Calico's template does).
    assert [(s.name, s.route_reflector_client, s.route_reflector_cluster_id) for s in rr_a.sessions] == [
        ("Node_198_51_100_11", True, "10.0.0.1"),
        ("Node_198_51_100_20", True, "10.0.0.1"),
        ("Node_198_51_100_21", True, "10.0.0.1"),
    ]
    c1 = make_plan(nodes, me="c1", configs=configs, peers=peers)
    assert [(s.name, s.route_reflector_client) for s in c1.sessions] == [
        ("Node_198_51_100_10", False),
        ("Node_198_51_100_11", False),
    ]
    # Two RRs of one cluster do not treat each other as clients.
    same = [node("rr-a", "198.51.100.10/24", {"rr": "a"}, routeReflectorClusterID="10.0.0.1"),
            node("rr-b", "198.51.100.11/24", {"rr": "b"}, routeReflectorClusterID="10.0.0.1")]  # fmt: skip
    assert [s.route_reflector_client for s in make_plan(same, me="rr-a", configs=configs, peers=peers).sessions] == [
        False
    ]


def test_global_peer_duplicate_on_a_node_is_dropped_and_self_is_skipped() -> None:
    nodes = mesh_nodes(2)
    peers = [
        peer("tor", peerIP="198.51.100.1", asNumber=64512),
        peer("tor-again", peerIP="198.51.100.1", asNumber=64512, node="node-0"),
        peer("me", peerIP="198.51.100.10", asNumber=64512),
    ]
    p = make_plan(nodes, me="node-0", configs=[bgpconfig(nodeToNodeMeshEnabled=False)], peers=peers)
    # Its own address as a global peer is skipped; the reverse of that peering (every node peers with
    # node-0) gives node-0 a node-specific session to node-1; tor-again duplicates the global tor.
    assert [s.name for s in p.sessions] == ["Global_198_51_100_1", "Node_198_51_100_11"]
    # node-1 sees the "me" peer as a global Calico-node peer with a lower address: it connects actively.
    other = make_plan(nodes, me="node-1", configs=[bgpconfig(nodeToNodeMeshEnabled=False)], peers=peers)
    assert [(s.name, s.passive, s.peer_node) for s in other.sessions] == [
        ("Global_198_51_100_1", False, ""),
        ("Global_198_51_100_10", False, "node-0"),
    ]


def test_peer_options() -> None:
    peers = [
        peer(
            "ebgp",
            peerIP="203.0.113.1",
            asNumber=65001,
            node="node-0",
            keepOriginalNextHop=True,
            maxRestartTime="2m",
            numAllowedLocalASNumbers=2,
            ttlSecurity=3,
            reachableBy="198.51.100.1",
        )
    ]
    p = make_plan(mesh_nodes(1), me="node-0", configs=[bgpconfig(nodeMeshMaxRestartTime="90s")], peers=peers)
    (s,) = p.sessions
    assert (s.keep_next_hop, s.restart_time, s.allow_local_as, s.ttl_security, s.internal) == (True, 120, 2, 3, False)
    assert [(str(r.peer), str(r.gateway)) for r in p.peer_routes] == [("203.0.113.1/32", "198.51.100.1")]
    text = render(p)
    for line in (
        "ttl security on;\n  multihop 3;",
        "graceful restart time 120;",
        "allow local as 2;",
        "next hop keep;",
        "route 203.0.113.1/32 via 198.51.100.1;",
        'if ( proto = "static_peers" ) then accept;',
    ):
        assert line in text
    check_golden("peer_options.conf", text)
    mesh = make_plan(mesh_nodes(2), me="node-0", configs=[bgpconfig(nodeMeshMaxRestartTime="90s")])
    assert [x.restart_time for x in mesh.sessions] == [90]


def test_pools_export_and_kernel_programming() -> None:
    pools = [
        pool("10.244.0.0/16"),
        pool("10.245.0.0/16", vxlanMode="CrossSubnet"),
        pool("10.246.0.0/16", vxlanMode="Always"),
        pool("10.247.0.0/16", ipipMode="CrossSubnet", disableBGPExport=True),
        pool("fd00:10::/48"),
    ]
    p = make_plan(mesh_nodes(2), me="node-0", pools=pools)
    assert [(str(x.cidr), x.export, x.kernel) for x in p.pools] == [
        ("10.244.0.0/16", True, KernelRoutes.ALL),
        ("10.245.0.0/16", True, KernelRoutes.SAME_SUBNET),
        ("10.246.0.0/16", True, KernelRoutes.NONE),
        ("10.247.0.0/16", False, KernelRoutes.SAME_SUBNET),
    ]
    text = render(p)
    assert "if ( net ~ 10.247.0.0/16 ) then { reject; }" in text  # reject_disabled_pools
    assert "# Skip 10.247.0.0/16 as BGP export is disabled for it" in text
    assert "bgp_next_hop ~ 198.51.100.0/24" in text
    check_golden("pools.conf", text)
    me = ipaddress.IPv4Interface("198.51.100.10/24")
    assert kernel_route_owner(pools[0], me, ipaddress.IPv4Address("203.0.113.9")) == "bird"
    assert kernel_route_owner(pools[1], me, ipaddress.IPv4Address("198.51.100.11")) == "bird"
    assert kernel_route_owner(pools[1], me, ipaddress.IPv4Address("203.0.113.9")) == "agent"
    assert kernel_route_owner(pools[2], me, ipaddress.IPv4Address("198.51.100.11")) == "agent"


def test_borrowed_addresses_are_advertised() -> None:
    p = make_plan(
        mesh_nodes(2),
        me="node-0",
        pools=[pool("10.244.0.0/16")],
        blocks={net("10.244.3.0/26"): "confirmed"},
        borrowed=[ip("10.244.9.7"), ip("fd00::1")],
    )
    assert [str(b) for b in p.borrowed] == ["10.244.9.7/32"]
    assert "route 10.244.9.7/32 blackhole;" in render(p)
    assert p.advertised_blocks == (net("10.244.3.0/26"),)


def test_router_id_choices() -> None:
    nodes = mesh_nodes(1)
    assert str(make_plan(nodes, me="node-0", router_id="10.9.9.9").router_id) == "10.9.9.9"
    hashed = make_plan(nodes, me="node-0", router_id="hash").router_id
    assert hashed == hash_router_id("node-0") and hashed is not None and int(str(hashed).split(".")[0]) <= 223


def test_log_levels() -> None:
    nodes = mesh_nodes(2)
    assert make_plan(nodes, me="node-0", configs=[bgpconfig(logSeverityScreen="Warning")]).log_level == "none"
    per_node = [bgpconfig(logSeverityScreen="Info"), bgpconfig("node.node-0", logSeverityScreen="Debug")]
    assert make_plan(nodes, me="node-0", configs=per_node).log_level == "debug"
    assert make_plan(nodes, me="node-1", configs=per_node).log_level == "info"
    assert "debug" not in render(make_plan(nodes, me="node-0", configs=[bgpconfig(logSeverityScreen="Error")]))


def test_ignored_interfaces() -> None:
    p = make_plan(mesh_nodes(2), me="node-0", configs=[bgpconfig(ignoredInterfaces=["eth9", "vxlan*"])])
    assert 'interface -"eth9", -"vxlan*", -"cali*", -"kube-ipvs*", "*";' in render(p)


def test_render_is_deterministic_and_changes_only_with_the_plan() -> None:
    nodes = mesh_nodes(3)
    first = render(make_plan(nodes, me="node-0", blocks={net("10.244.1.0/26"): "confirmed"}))
    again = render(make_plan(list(reversed(nodes)), me="node-0", blocks={net("10.244.1.0/26"): "confirmed"}))
    assert first == again
    assert first != render(make_plan(nodes, me="node-0", blocks={net("10.244.1.0/26"): "pending"}))


def test_helpers() -> None:
    assert [duration_seconds(t) for t in ("120s", "2m", "1m30s", "1.5s", "0", "500ms")] == [120, 120, 90, 2, 0, 1]
    kvs = [
        KeyValue("/calico/ipam/v2/host/n1/ipv4/block/10.244.1.0-26", '{"state":"confirmed","deleted":false}', 1, 1, 1),
        KeyValue("/calico/ipam/v2/host/n1/ipv4/block/10.244.2.0-26", '{"state":"pending"}', 2, 2, 1),
        KeyValue("/calico/ipam/v2/host/n1/ipv4/block/10.244.3.0-26", "", 3, 3, 1),
        KeyValue("/calico/ipam/v2/host/n2/ipv4/block/10.244.4.0-26", '{"state":"confirmed"}', 4, 4, 1),
        KeyValue("/calico/ipam/v2/host/n1/ipv6/block/fd00::-122", '{"state":"confirmed"}', 5, 5, 1),
    ]
    assert block_states(kvs, "n1") == {
        net("10.244.1.0/26"): "confirmed",
        net("10.244.2.0/26"): "pending",
        net("10.244.3.0/26"): "",
    }


# -- the control socket's replies (BIRD 2.0.12's own bytes, reference/calico.md §3.7) -----------------

SHOW_PROTOCOLS = (
    b"0001 BIRD 2.0.12 ready.\n"
    b"2002-Name       Proto      Table      State  Since         Info\n"
    b"1002-device1    Device     ---        up     20:42:04.760  \n"
    b" static_blocks Static     master4    up     20:42:04.760  \n"
    b" Mesh_127_0_0_2 BGP        ---        up     20:42:06.652  Established   \n"
    b" Node_10_0_0_3 BGP        ---        start  20:42:18.783  Active        Socket: Connection refused\n"
    b"0000 \n"
)


def test_reply_reading_and_show_protocols() -> None:
    lines = iter(SHOW_PROTOCOLS.splitlines(keepends=True))
    banner = BirdControl._read(lines)
    assert banner == [Reply(1, "BIRD 2.0.12 ready.")]
    reply = BirdControl._read(lines)
    rows = parse_protocols(reply)
    assert [(r.name, r.proto, r.state, r.since, r.info) for r in rows] == [
        ("device1", "Device", "up", "20:42:04.760", ""),
        ("static_blocks", "Static", "up", "20:42:04.760", ""),
        ("Mesh_127_0_0_2", "BGP", "up", "20:42:06.652", "Established"),
        ("Node_10_0_0_3", "BGP", "start", "20:42:18.783", "Active Socket: Connection refused"),
    ]
    assert rows[3].bgp_state == "Active"
    # BIRD 1.x's header is accepted too; anything else is refused.
    assert parse_protocols([Reply(2002, "name     proto    table    state  since       info")]) == []
    with pytest.raises(BirdError, match="unknown BIRD table output format"):
        parse_protocols([Reply(2002, "Name Proto Table State")])
    with pytest.raises(BirdError, match="unexpected line"):
        BirdControl._read(iter([b"garbage\n"]))
    with pytest.raises(BirdError, match="middle of a reply"):
        BirdControl._read(iter([b"1002-row\n"]))


# -- every config rendered above loads in BIRD 2 ---------------------------------------------------------


def _configs() -> Iterator[str]:
    yield from RENDERED
    yield from (path.read_text() for path in sorted(GOLDEN.glob("*.conf")))


def test_every_rendered_config_loads_in_bird() -> None:
    """``bird -p`` on each config rendered by the tests above (and each golden file)."""
    if shutil.which("bird") is None and not os.path.exists("/usr/sbin/bird"):
        pytest.skip("BIRD 2 is not installed (apt-get install bird2)")
    configs = list(dict.fromkeys(_configs()))
    assert len(configs) >= 8, "the golden files at least (run with the plan tests, every config they rendered)"
    for text in configs:
        check_config(text)
    with pytest.raises(BirdError, match="syntax error"):
        check_config(configs[0] + "\nthis is not bird;\n")


def test_node_status_rows() -> None:
    """calicoctl's row parsing: BGP protocols named Mesh_/Node_/Global_ only, by family, info joined."""
    from pycni.cli.calicoctl import bgp_peer_rows
    from pycni.fabric.calico.bird import ProtocolStatus

    protocols = [
        ProtocolStatus("device1", "Device", "---", "up", "20:42:04.760", ""),
        ProtocolStatus("Mesh_10_192_0_3", "BGP", "---", "up", "20:42:06.652", "Established"),
        ProtocolStatus("Node_10_192_0_4_port_500", "BGP", "---", "start", "20:42:18.783", "Active Socket: refused"),
        ProtocolStatus("Global_fd00__1", "BGP", "---", "up", "2024-01-02", "Established"),
        ProtocolStatus("Mesh_10_0_0_9", "Static", "master4", "up", "20:42:04.760", ""),
        ProtocolStatus("tor", "BGP", "---", "up", "20:42:04.760", "Established"),
    ]
    assert bgp_peer_rows(protocols, 4) == [
        ["10.192.0.3", "node-to-node mesh", "up", "20:42:06.652", "Established"],
        ["10.192.0.4.port.500", "node specific", "start", "20:42:18.783", "Active Socket: refused"],
    ]
    assert bgp_peer_rows(protocols, 6) == [["fd00::1", "global", "up", "2024-01-02", "Established"]]
