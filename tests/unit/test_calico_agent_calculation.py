"""The node agent's pure calculation over many topologies: what each node's dataplane must hold.

Cluster states are built directly (the syncer's output); each test names a
topology and asserts the routes by class, the VXLAN device and its VTEP
entries, natOutgoing pools, the pod MTU and the tunnel addresses asked for.
"""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from pycni.dataplane import Route, RouteType
from pycni.fabric.calico import bgp
from pycni.fabric.calico.calculation import (
    GROUP_BLACKHOLE,
    GROUP_NOENCAP,
    GROUP_TUNNEL,
    IPIP_DEVICE,
    VXLAN_DEVICE,
    Desired,
    LocalNode,
    calculate,
    default_vtep_mac,
    felix_settings,
)
from pycni.fabric.calico.model import FelixSettings, IPPoolInfo, NodeInfo, new_resource
from pycni.fabric.calico.syncer import BlockInfo, ClusterState

net = ipaddress.ip_network
ip = ipaddress.ip_address

# node -> (address, own block)
NODES = {
    "n1": ("198.51.100.11/24", "10.244.1.0/26"),
    "n2": ("198.51.100.12/24", "10.244.2.0/26"),
    "n3": ("203.0.113.13/24", "10.244.3.0/26"),
}


def tunnel_of(name: str) -> str:
    return str(net(NODES[name][1]).network_address)


def node(name: str, *, tunnel: bool = True, labels: dict[str, str] | None = None, **spec: Any) -> NodeInfo:
    body: dict[str, Any] = {"bgp": {"ipv4Address": NODES[name][0]}}
    if tunnel:
        body["ipv4VXLANTunnelAddr"] = tunnel_of(name)
    body.update(spec)
    resource = new_resource("Node", name, body)
    if labels:
        resource.metadata["labels"] = labels
    return NodeInfo.from_resource(resource)


def pool(
    cidr: str = "10.244.0.0/16", vxlan: str = "Never", ipip: str = "Never", name: str = "p", **spec: Any
) -> IPPoolInfo:
    body = {"cidr": cidr, "vxlanMode": vxlan, "ipipMode": ipip, "natOutgoing": True, "blockSize": 26, **spec}
    return IPPoolInfo.from_resource(new_resource("IPPool", name, body))


def cluster(
    *nodes: NodeInfo,
    pools: tuple[IPPoolInfo, ...] = (),
    blocks: dict[str, str] | None = None,
    affinities: dict[tuple[str, str], str] | None = None,
    borrowed: dict[str, tuple[tuple[str, str], ...]] | None = None,
    felix: dict[str, dict[str, Any]] | None = None,
) -> ClusterState:
    """Blocks default to each node's own, affine and confirmed."""
    if blocks is None:
        blocks = {NODES[n.name][1]: n.name for n in nodes}
    if affinities is None:
        affinities = {(host, cidr): "confirmed" for cidr, host in blocks.items()}
    lent = borrowed or {}
    return ClusterState(
        nodes={n.name: n for n in nodes},
        pools={p.name: p for p in pools},
        blocks={
            net(cidr): BlockInfo(net(cidr), host, tuple((ip(a), owner) for a, owner in lent.get(cidr, ())))
            for cidr, host in blocks.items()
        },
        affinities={(host, net(cidr)): state for (host, cidr), state in affinities.items()},
        felix_configs={name: new_resource("FelixConfiguration", name, spec) for name, spec in (felix or {}).items()},
    )


def routes(desired: Desired, group: str) -> dict[str, Route]:
    return {str(route.dst): route for route in desired.routes.get(group, ())}


def vxlan_route(block: str, peer: str) -> Route:
    return Route(net(block), dev=VXLAN_DEVICE, gateway=ip(tunnel_of(peer)), onlink=True)


def direct_route(block: str, peer: str, dev: str = "eth0") -> Route:
    return Route(net(block), dev=dev, gateway=ip(NODES[peer][0].split("/")[0]))


def blackhole(block: str) -> Route:
    return Route(net(block), type=RouteType.BLACKHOLE)


ALL = ("n1", "n2", "n3")


# -- VXLAN Always -----------------------------------------------------------------


def test_vxlan_always_every_remote_block_over_vxlan_with_one_neighbour_and_fdb_entry_per_vtep() -> None:
    state = cluster(*(node(n) for n in ALL), pools=(pool(vxlan="Always"),))
    desired = calculate(state, LocalNode("n1"))
    assert routes(desired, GROUP_TUNNEL) == {
        "10.244.2.0/26": vxlan_route("10.244.2.0/26", "n2"),
        "10.244.3.0/26": vxlan_route("10.244.3.0/26", "n3"),
    }
    assert routes(desired, GROUP_NOENCAP) == {}
    assert routes(desired, GROUP_BLACKHOLE) == {"10.244.1.0/26": blackhole("10.244.1.0/26")}
    assert desired.vxlan is not None
    assert (desired.vxlan.vni, desired.vxlan.port, desired.vxlan.mtu) == (4096, 4789, 1450)
    assert desired.vxlan.local == ip("198.51.100.11") and desired.vxlan.address == ip("10.244.1.0")
    assert desired.vxlan.mac == default_vtep_mac("n1") and desired.vxlan.parent == "eth0"
    assert desired.neighbours == {ip("10.244.2.0"): default_vtep_mac("n2"), ip("10.244.3.0"): default_vtep_mac("n3")}
    assert desired.fdb == {default_vtep_mac("n2"): ip("198.51.100.12"), default_vtep_mac("n3"): ip("203.0.113.13")}
    assert desired.pod_mtu == 1450 and desired.needs.vxlan and not desired.needs.ipip
    assert desired.problems == ()


def test_each_node_sees_the_others_symmetrically() -> None:
    state = cluster(*(node(n) for n in ALL), pools=(pool(vxlan="Always"),))
    for me in ALL:
        desired = calculate(state, LocalNode(me))
        others = {NODES[n][1] for n in ALL if n != me}
        assert set(routes(desired, GROUP_TUNNEL)) == others
        assert set(routes(desired, GROUP_BLACKHOLE)) == {NODES[me][1]}
        assert ip(tunnel_of(me)) not in desired.neighbours


def test_a_published_vtep_mac_is_used_instead_of_the_default() -> None:
    state = cluster(node("n1"), node("n2", vxlanTunnelMACAddr="02:00:00:00:00:02"), pools=(pool(vxlan="Always"),))
    desired = calculate(state, LocalNode("n1"))
    assert desired.neighbours == {ip("10.244.2.0"): "02:00:00:00:00:02"}
    assert desired.fdb == {"02:00:00:00:00:02": ip("198.51.100.12")}


# -- CrossSubnet ------------------------------------------------------------------


def test_cross_subnet_routes_same_subnet_peers_directly_and_encapsulates_across() -> None:
    state = cluster(*(node(n) for n in ALL), pools=(pool(vxlan="CrossSubnet"),))
    desired = calculate(state, LocalNode("n1", backend="vxlan"))
    assert routes(desired, GROUP_NOENCAP) == {"10.244.2.0/26": direct_route("10.244.2.0/26", "n2")}
    assert routes(desired, GROUP_TUNNEL) == {"10.244.3.0/26": vxlan_route("10.244.3.0/26", "n3")}
    # VTEPs are programmed for every peer (as Felix does), whichever way its blocks are routed.
    assert set(desired.neighbours) == {ip("10.244.2.0"), ip("10.244.3.0")}
    from_n3 = calculate(state, LocalNode("n3", backend="vxlan"))
    assert set(routes(from_n3, GROUP_TUNNEL)) == {"10.244.1.0/26", "10.244.2.0/26"}
    assert routes(from_n3, GROUP_NOENCAP) == {}


def test_cross_subnet_direct_routes_use_the_parent_device() -> None:
    state = cluster(*(node(n) for n in ALL), pools=(pool(vxlan="CrossSubnet"),))
    desired = calculate(state, LocalNode("n1", backend="none", parent="ens3"))
    assert routes(desired, GROUP_NOENCAP)["10.244.2.0/26"] == direct_route("10.244.2.0/26", "n2", dev="ens3")
    assert desired.vxlan is not None and desired.vxlan.parent == "ens3"


def test_cross_subnet_with_bird_leaves_same_subnet_routes_to_bgp() -> None:
    state = cluster(*(node(n) for n in ALL), pools=(pool(vxlan="CrossSubnet"),))
    desired = calculate(state, LocalNode("n1", backend="bird"))
    assert routes(desired, GROUP_NOENCAP) == {}
    assert set(routes(desired, GROUP_TUNNEL)) == {"10.244.3.0/26"}


@pytest.mark.parametrize("vxlan,ipip", [("Always", "Never"), ("CrossSubnet", "Never"), ("Never", "Never")])
def test_with_bird_the_agent_and_bird_never_both_program_a_remote_block(vxlan: str, ipip: str) -> None:
    """The agent's routes are exactly those bgp.kernel_route_owner gives to the agent."""
    the_pool = pool(vxlan=vxlan, ipip=ipip)
    state = cluster(*(node(n) for n in ALL), pools=(the_pool,))
    desired = calculate(state, LocalNode("n1", backend="bird"))
    me = state.nodes["n1"].ipv4_address
    assert me is not None
    for peer in ("n2", "n3"):
        peer_address = state.nodes[peer].ipv4_address
        assert peer_address is not None
        owner = bgp.kernel_route_owner(the_pool, me, peer_address.ip)
        programmed = NODES[peer][1] in {str(r.dst) for r in desired.all_routes()}
        assert programmed == (owner == "agent"), (peer, owner)


# -- no encapsulation ---------------------------------------------------------------


def test_never_pool_without_bgp_routes_only_the_own_subnet_and_makes_no_vxlan_device() -> None:
    state = cluster(*(node(n, tunnel=False) for n in ALL), pools=(pool(),))
    desired = calculate(state, LocalNode("n1", backend="vxlan"))
    assert routes(desired, GROUP_NOENCAP) == {"10.244.2.0/26": direct_route("10.244.2.0/26", "n2")}
    assert routes(desired, GROUP_TUNNEL) == {}
    assert desired.vxlan is None and desired.neighbours == {} and desired.fdb == {}
    assert desired.pod_mtu == 1500 and not desired.needs.vxlan


def test_never_pool_with_bird_programs_only_blackholes() -> None:
    state = cluster(*(node(n, tunnel=False) for n in ALL), pools=(pool(),))
    desired = calculate(state, LocalNode("n1", backend="bird"))
    assert [str(r.dst) for r in desired.all_routes()] == ["10.244.1.0/26"]
    assert desired.all_routes()[0].type is RouteType.BLACKHOLE


# -- IPIP ---------------------------------------------------------------------------


def test_ipip_always_routes_via_tunl0_onlink_to_the_peer_address() -> None:
    state = cluster(
        node("n1", tunnel=False, bgp={"ipv4Address": NODES["n1"][0], "ipv4IPIPTunnelAddr": "10.244.1.1"}),
        node("n2", tunnel=False),
        node("n3", tunnel=False),
        pools=(pool(ipip="Always"),),
    )
    desired = calculate(state, LocalNode("n1", backend="vxlan"))
    assert routes(desired, GROUP_TUNNEL)["10.244.2.0/26"] == Route(
        net("10.244.2.0/26"), dev=IPIP_DEVICE, gateway=ip("198.51.100.12"), onlink=True
    )
    assert desired.ipip is not None and desired.ipip.address == ip("10.244.1.1") and desired.ipip.mtu == 1480
    assert desired.vxlan is None and desired.pod_mtu == 1480
    assert desired.needs.ipip and not desired.needs.vxlan


def test_ipip_cross_subnet_goes_direct_on_the_subnet() -> None:
    state = cluster(*(node(n, tunnel=False) for n in ALL), pools=(pool(ipip="CrossSubnet"),))
    desired = calculate(state, LocalNode("n1", backend="none"))
    assert set(routes(desired, GROUP_NOENCAP)) == {"10.244.2.0/26"}
    assert routes(desired, GROUP_TUNNEL)["10.244.3.0/26"].dev == IPIP_DEVICE


# -- node join and leave, missing pieces -------------------------------------------------


def test_a_node_joining_adds_its_routes_and_vtep() -> None:
    before = cluster(node("n1"), node("n2"), pools=(pool(vxlan="Always"),))
    after = cluster(node("n1"), node("n2"), node("n3"), pools=(pool(vxlan="Always"),))
    old, new = calculate(before, LocalNode("n1")), calculate(after, LocalNode("n1"))
    assert set(routes(new, GROUP_TUNNEL)) - set(routes(old, GROUP_TUNNEL)) == {"10.244.3.0/26"}
    assert set(new.fdb) - set(old.fdb) == {default_vtep_mac("n3")}


def test_a_node_leaving_takes_its_routes_and_vtep_even_while_its_block_remains() -> None:
    """The Node is gone but its block (and affinity) are still in IPAM: nothing to route to any more."""
    blocks = {NODES[n][1]: n for n in ALL}
    after = cluster(node("n1"), node("n2"), blocks=blocks, pools=(pool(vxlan="Always"),))
    desired = calculate(after, LocalNode("n1"))
    assert set(routes(desired, GROUP_TUNNEL)) == {"10.244.2.0/26"}
    assert ip("10.244.3.0") not in desired.neighbours and default_vtep_mac("n3") not in desired.fdb


def test_a_peer_without_its_tunnel_address_yet_gets_no_vxlan_route_but_still_a_direct_one() -> None:
    state = cluster(node("n1"), node("n2", tunnel=False), node("n3", tunnel=False), pools=(pool(vxlan="CrossSubnet"),))
    desired = calculate(state, LocalNode("n1", backend="vxlan"))
    assert set(routes(desired, GROUP_NOENCAP)) == {"10.244.2.0/26"}
    assert routes(desired, GROUP_TUNNEL) == {}
    assert desired.neighbours == {}


def test_this_node_without_a_tunnel_address_asks_for_one_and_waits_for_the_device() -> None:
    state = cluster(node("n1", tunnel=False), node("n2"), pools=(pool(vxlan="Always"),))
    desired = calculate(state, LocalNode("n1"))
    assert desired.needs.vxlan and desired.vxlan is None
    assert desired.vxlan_in_use, "an existing device is kept while the address is on its way"
    assert routes(desired, GROUP_TUNNEL) == {} and desired.fdb == {}
    assert set(routes(desired, GROUP_BLACKHOLE)) == {"10.244.1.0/26"}


def test_an_unregistered_node_gets_nothing_and_says_why() -> None:
    desired = calculate(cluster(node("n2"), pools=(pool(vxlan="Always"),)), LocalNode("n1"))
    assert desired.all_routes() == [] and desired.vxlan is None
    assert desired.problems == ("node n1 is not registered in the datastore",)


def test_a_node_without_an_ipv4_address_routes_nothing_remote() -> None:
    me = NodeInfo.from_resource(new_resource("Node", "n1", {"ipv4VXLANTunnelAddr": "10.244.1.0"}))
    state = cluster(me, node("n2"), pools=(pool(vxlan="Always"),))
    desired = calculate(state, LocalNode("n1"))
    assert routes(desired, GROUP_TUNNEL) == {} and desired.vxlan is None
    assert set(routes(desired, GROUP_BLACKHOLE)) == {"10.244.1.0/26"}


# -- pool changes ----------------------------------------------------------------------


def test_changing_a_pool_from_cross_subnet_to_always_moves_same_subnet_routes_into_the_tunnel() -> None:
    nodes = [node(n) for n in ALL]
    cross = calculate(cluster(*nodes, pools=(pool(vxlan="CrossSubnet"),)), LocalNode("n1", backend="vxlan"))
    always = calculate(cluster(*nodes, pools=(pool(vxlan="Always"),)), LocalNode("n1", backend="vxlan"))
    assert routes(cross, GROUP_NOENCAP)["10.244.2.0/26"].dev == "eth0"
    assert routes(always, GROUP_TUNNEL)["10.244.2.0/26"].dev == VXLAN_DEVICE
    assert routes(always, GROUP_NOENCAP) == {}


def test_removing_the_last_vxlan_pool_drops_the_device_and_the_tunnel_address_need() -> None:
    nodes = [node(n) for n in ALL]
    desired = calculate(cluster(*nodes, pools=(pool(),)), LocalNode("n1", backend="bird"))
    assert desired.vxlan is None and not desired.needs.vxlan and desired.neighbours == {}
    assert not desired.vxlan_in_use, "the device goes"


def test_blocks_of_two_pools_follow_each_pools_mode() -> None:
    blocks = {"10.244.2.0/26": "n2", "10.250.2.0/26": "n2", "10.244.1.0/26": "n1"}
    state = cluster(
        node("n1"),
        node("n2"),
        blocks=blocks,
        pools=(pool(vxlan="Always", name="a"), pool("10.250.0.0/16", name="b", natOutgoing=False)),
    )
    desired = calculate(state, LocalNode("n1", backend="vxlan"))
    assert set(routes(desired, GROUP_TUNNEL)) == {"10.244.2.0/26"}
    assert set(routes(desired, GROUP_NOENCAP)) == {"10.250.2.0/26"}
    assert desired.nat_pools == (net("10.244.0.0/16"), net("10.250.0.0/16"))
    assert desired.nat_masq == (net("10.244.0.0/16"),)


def test_a_block_outside_every_pool_is_not_routed() -> None:
    state = cluster(node("n1"), node("n2"), blocks={"10.99.0.0/26": "n2"}, pools=(pool(vxlan="Always"),))
    assert routes(calculate(state, LocalNode("n1")), GROUP_TUNNEL) == {}


def test_a_disabled_pool_still_routes_its_blocks_but_asks_for_no_tunnel_address() -> None:
    state = cluster(*(node(n) for n in ALL), pools=(pool(vxlan="Always", disabled=True),))
    desired = calculate(state, LocalNode("n1"))
    assert set(routes(desired, GROUP_TUNNEL)) == {"10.244.2.0/26", "10.244.3.0/26"}
    assert not desired.needs.vxlan
    assert desired.nat_masq == (net("10.244.0.0/16"),)


def test_a_node_selector_decides_which_nodes_need_tunnel_addresses() -> None:
    selective = pool(vxlan="Always", nodeSelector="zone == 'a'")
    state = cluster(node("n1", labels={"zone": "a"}), node("n2", labels={"zone": "b"}), pools=(selective,))
    assert calculate(state, LocalNode("n1")).needs.vxlan
    assert not calculate(state, LocalNode("n2")).needs.vxlan


def test_no_pool_with_nat_outgoing_means_no_masquerade() -> None:
    state = cluster(node("n1"), pools=(pool(vxlan="Always", natOutgoing=False),))
    desired = calculate(state, LocalNode("n1"))
    assert desired.nat_masq == () and desired.nat_pools == (net("10.244.0.0/16"),)


# -- affinities and borrowed addresses ----------------------------------------------------


def test_only_confirmed_affinities_get_blackholes() -> None:
    affinities = {
        ("n1", "10.244.1.0/26"): "confirmed",
        ("n1", "10.244.1.64/26"): "pending",
        ("n1", "10.244.1.128/26"): "",
    }
    state = cluster(node("n1"), affinities=affinities, blocks={}, pools=(pool(vxlan="Always"),))
    desired = calculate(state, LocalNode("n1"))
    assert set(routes(desired, GROUP_BLACKHOLE)) == {"10.244.1.0/26", "10.244.1.128/26"}  # "" is legacy confirmed


def test_a_stale_affinity_for_a_block_owned_elsewhere_is_reported_not_blackholed() -> None:
    state = cluster(
        node("n1"),
        node("n2"),
        blocks={"10.244.2.0/26": "n2"},
        affinities={("n1", "10.244.2.0/26"): "confirmed"},
        pools=(pool(vxlan="Always"),),
    )
    desired = calculate(state, LocalNode("n1"))
    assert routes(desired, GROUP_BLACKHOLE) == {}
    assert routes(desired, GROUP_TUNNEL) == {"10.244.2.0/26": vxlan_route("10.244.2.0/26", "n2")}
    assert desired.problems == ("block 10.244.2.0/26: this node's affinity is confirmed but the block is affine to n2",)


def test_a_borrowed_address_gets_a_host_route_to_the_borrower_everywhere_but_on_it() -> None:
    """n2 borrowed 10.244.1.5 from n1's block (it could claim no block of its own)."""
    state = cluster(
        *(node(n) for n in ALL),
        pools=(pool(vxlan="Always"),),
        borrowed={"10.244.1.0/26": (("10.244.1.5", "n2"),)},
    )
    on_owner = calculate(state, LocalNode("n1"))
    assert routes(on_owner, GROUP_TUNNEL)["10.244.1.5/32"] == vxlan_route("10.244.1.5/32", "n2")
    assert "10.244.1.0/26" in routes(on_owner, GROUP_BLACKHOLE)  # the /32 is longer than the blackhole
    on_other = calculate(state, LocalNode("n3"))
    assert routes(on_other, GROUP_TUNNEL)["10.244.1.5/32"] == vxlan_route("10.244.1.5/32", "n2")
    assert routes(on_other, GROUP_TUNNEL)["10.244.1.0/26"] == vxlan_route("10.244.1.0/26", "n1")
    on_borrower = calculate(state, LocalNode("n2"))
    assert "10.244.1.5/32" not in routes(on_borrower, GROUP_TUNNEL)


def test_a_borrowed_address_in_a_cross_subnet_pool_follows_the_borrower_subnet() -> None:
    state = cluster(
        *(node(n) for n in ALL),
        pools=(pool(vxlan="CrossSubnet"),),
        borrowed={"10.244.3.0/26": (("10.244.3.9", "n2"),)},
    )
    desired = calculate(state, LocalNode("n1", backend="vxlan"))
    assert routes(desired, GROUP_NOENCAP)["10.244.3.9/32"] == direct_route("10.244.3.9/32", "n2")
    assert routes(desired, GROUP_TUNNEL)["10.244.3.0/26"] == vxlan_route("10.244.3.0/26", "n3")


def test_blocks_of_size_32_borrowed_by_their_neighbour_have_one_route() -> None:
    state = cluster(
        node("n1"),
        node("n2"),
        blocks={"10.244.9.9/32": "n2"},
        borrowed={"10.244.9.9/32": (("10.244.9.9", "n1"),)},
        pools=(pool(vxlan="Always", blockSize=32),),
    )
    on_n2 = calculate(state, LocalNode("n2"))
    assert on_n2.routes[GROUP_BLACKHOLE] == ()  # its own /32 block is n1's address: routed there, not dropped
    assert routes(on_n2, GROUP_TUNNEL) == {"10.244.9.9/32": vxlan_route("10.244.9.9/32", "n1")}


# -- VTEP MACs -------------------------------------------------------------------------


def test_two_peers_publishing_one_mac_are_reported_and_only_one_is_programmed() -> None:
    shared = "02:00:00:00:00:99"
    state = cluster(
        node("n1"),
        node("n2", vxlanTunnelMACAddr=shared),
        node("n3", vxlanTunnelMACAddr=shared),
        pools=(pool(vxlan="Always"),),
    )
    desired = calculate(state, LocalNode("n1"))
    assert desired.fdb == {shared: ip("198.51.100.12")}
    assert desired.problems == (f"node n3 publishes VTEP MAC {shared}, which is n2's: not programmed",)


def test_a_peer_publishing_our_mac_is_not_programmed() -> None:
    state = cluster(node("n1"), node("n2", vxlanTunnelMACAddr=default_vtep_mac("n1")), pools=(pool(vxlan="Always"),))
    desired = calculate(state, LocalNode("n1"))
    assert desired.fdb == {} and len(desired.problems) == 1


def test_the_default_vtep_mac_is_deterministic_unicast_and_locally_administered() -> None:
    macs = {default_vtep_mac(f"node{i}") for i in range(200)}
    assert len(macs) == 200
    for mac in macs:
        first = int(mac[:2], 16)
        assert mac.startswith("66:") and first & 1 == 0 and first & 2 == 2
    assert default_vtep_mac("node1") == default_vtep_mac("node1")


# -- Felix settings and MTU --------------------------------------------------------------


def test_felix_settings_default_then_node_then_environment() -> None:
    state = cluster(
        node("n1"),
        felix={
            "default": {"vxlanVNI": 5000, "vxlanPort": 4790, "routeRefreshInterval": "30s"},
            "node.n1": {"vxlanPort": 4791, "vxlanMTU": 1400, "mtuIfacePattern": "^ens"},
        },
    )
    params = felix_settings(state, "n1", {"vxlanMTU": 1300})
    assert (params.vxlan_vni, params.vxlan_port, params.vxlan_mtu, params.route_refresh) == (5000, 4791, 1300, 30.0)
    assert params.mtu_iface_pattern == "^ens"
    other = felix_settings(state, "n2", {"routeRefreshInterval": 2.5})
    assert (other.vxlan_port, other.route_refresh) == (4790, 2.5)
    assert other.mtu_iface_pattern == FelixSettings().mtu_iface_pattern


def test_configured_vxlan_mtu_and_host_mtu_decide_the_pod_mtu() -> None:
    state = cluster(*(node(n) for n in ALL), pools=(pool(vxlan="Always"),))
    assert calculate(state, LocalNode("n1"), host_mtu=9000).pod_mtu == 8950
    tuned = calculate(state, LocalNode("n1"), FelixSettings(vxlan_mtu=1410))
    assert tuned.pod_mtu == 1410 and tuned.vxlan is not None and tuned.vxlan.mtu == 1410


def test_vxlan_and_ipip_pools_together_take_the_smaller_mtu() -> None:
    state = cluster(node("n1"), pools=(pool(vxlan="Always", name="a"), pool("10.250.0.0/16", ipip="Always", name="b")))
    assert calculate(state, LocalNode("n1")).pod_mtu == 1450


def test_routes_are_ordered_by_destination() -> None:
    many = {f"10.244.{i}.0/26": ("n2" if i % 2 else "n3") for i in range(10, 0, -1)}
    many["10.244.1.0/26"] = "n1"
    state = cluster(*(node(n) for n in ALL), blocks=many, pools=(pool(vxlan="Always"),))
    dsts = [r.dst for r in calculate(state, LocalNode("n1")).routes[GROUP_TUNNEL]]
    assert dsts == sorted(dsts, key=lambda d: int(d.network_address))


def test_calico_node_owns_routes_only_in_blocks_and_affine_blocks_not_in_whole_pools() -> None:
    """A Canal node: a pool over Flannel's network, no Calico block (host-local): no route there is ours."""
    from pycni.fabric.calico.calculation import owned_networks

    assert owned_networks(cluster(pools=(pool(),), blocks={}, affinities={})) == ()
    state = cluster(
        pools=(pool(),), blocks={"10.244.3.0/26": "node-2"}, affinities={("node-1", "10.244.9.0/26"): "confirmed"}
    )
    assert owned_networks(state) == (net("10.244.3.0/26"), net("10.244.9.0/26"))
