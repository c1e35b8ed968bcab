"""A Calico network's picture: Nodes, IPAM blocks and WorkloadEndpoints from the datastore, BGP from BIRD.

Every node's blocks and pods are in the datastore (a pod is a
WorkloadEndpoint naming its node), so unlike Flannel the whole cluster's pods
are shown. The BGP sessions each node should have are computed as confd
computes them (:func:`pycni.fabric.calico.bgp.plan`: full mesh, route
reflectors, BGPPeers); their state is known only for this node, from its
BIRD (``show protocols``, matched by protocol name). This node is the Node
whose BGP or tunnel address is an address of this network namespace; each
peer's badges say how this node's kernel routes to its blocks (learnt by BGP,
``proto bird``; over ``vxlan.calico`` or ``tunl0``; or not at all).
:func:`read` does the I/O, :func:`build` is pure.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from pycni.datastore import Datastore
from pycni.fabric.calico import bgp
from pycni.fabric.calico.bird import (
    RTPROT_BIRD,
    BirdControl,
    BirdError,
    BirdNotRunning,
    ProtocolStatus,
    parse_protocols,
)
from pycni.fabric.calico.ipam import AllocationBlock
from pycni.fabric.calico.ipam_store import IPAM
from pycni.fabric.calico.model import BGPDefaults, FelixSettings, IPPoolInfo, NodeInfo
from pycni.fabric.calico.resource import Resource
from pycni.fabric.calico.resources import ResourceClient
from pycni.picture import kernel as kernel_state
from pycni.picture.kernel import KernelState
from pycni.picture.model import (
    Badge,
    Link,
    Node,
    Picture,
    PictureError,
    Pod,
    State,
    Subnet,
    natural_key,
    problems_fact,
)
from pycni.spec.errors import CNIError

VXLAN_DEVICE = "vxlan.calico"
IPIP_DEVICE = "tunl0"


@dataclass(frozen=True)
class Bird:
    """What this node's BIRD said: its protocols, or why it could not be asked ("" and None: not asked)."""

    socket: str
    protocols: tuple[ProtocolStatus, ...] | None
    problem: str = ""


@dataclass(frozen=True)
class Sources:
    store: str
    revision: int
    nodes: tuple[NodeInfo, ...]
    pools: tuple[IPPoolInfo, ...]
    blocks: tuple[AllocationBlock, ...]
    endpoints: tuple[Resource, ...]
    bgp_configs: tuple[Resource, ...]
    bgp_peers: tuple[Resource, ...]
    felix: FelixSettings
    kernel: KernelState | None
    bird: Bird


def read_bird(path: str) -> Bird:
    if not path:
        return Bird("", None)
    try:
        return Bird(path, tuple(parse_protocols(BirdControl(path, timeout=3.0).request("show protocols"))))
    except BirdNotRunning as error:
        return Bird(path, None, error.msg)
    except (BirdError, OSError) as error:
        return Bird(path, None, str(error))


def read(store: Datastore, where: str, bird_socket: str, with_kernel: bool = True) -> Sources:
    """Read the cluster from ``store``, this node's BIRD at ``bird_socket`` ("" for none) and its kernel."""
    resources = ResourceClient(store)
    nodes, revision = resources.list("Node")
    if not nodes:
        raise PictureError(
            f"no Calico Node in {where}: is this the datastore pycni calico-node runs on? "
            "(--etcd-endpoints, -c CONFIG, DATASTORE_TYPE/ETCD_ENDPOINTS, or --store FILE for the embedded one)"
        )
    pools, _ = resources.list("IPPool")
    endpoints, _ = resources.list("WorkloadEndpoint")
    configs, _ = resources.list("BGPConfiguration")
    peers, _ = resources.list("BGPPeer")
    felix = resources.find("FelixConfiguration", "default")
    blocks = IPAM(store, resources).list_blocks()
    kernel = kernel_state.read([VXLAN_DEVICE]) if with_kernel else None
    return Sources(
        store=where,
        revision=revision,
        nodes=tuple(NodeInfo.from_resource(n) for n in nodes),
        pools=tuple(IPPoolInfo.from_resource(p) for p in pools),
        blocks=tuple(blocks),
        endpoints=tuple(endpoints),
        bgp_configs=tuple(configs),
        bgp_peers=tuple(peers),
        felix=FelixSettings.from_resources(felix),
        kernel=kernel,
        bird=read_bird(bird_socket),
    )


# -- pure from here -------------------------------------------------------------------------


def _local(sources: Sources) -> NodeInfo | None:
    if sources.kernel is None:
        return None
    mine = set(sources.kernel.addresses)
    for node in sources.nodes:
        owned = [str(node.ipv4_address.ip) if node.ipv4_address else "", node.ipv4_vxlan_tunnel_addr]
        if mine & {address for address in owned if address}:
            return node
    return None


def _plans(sources: Sources) -> tuple[dict[str, bgp.BGPPlan], str]:
    """Each node's BGP plan (the sessions confd would give it), or why they could not be computed."""
    plans: dict[str, bgp.BGPPlan] = {}
    try:
        for node in sources.nodes:
            inputs = bgp.BGPInputs(
                node=node.name,
                nodes=sources.nodes,
                configs=sources.bgp_configs,
                peers=sources.bgp_peers,
                pools=sources.pools,
            )
            plans[node.name] = bgp.plan(inputs)
    except CNIError as error:
        return {}, f"the BGP sessions could not be computed: {error.msg}"
    return plans, ""


def _session_state(session: bgp.Session, bird: Bird) -> Badge:
    if bird.protocols is None:
        why = bird.problem or "BIRD not read (give --bird-socket)"
        return Badge("BGP ?", State.FAIL if bird.problem else State.UNKNOWN, why)
    row = next((p for p in bird.protocols if p.name == session.name), None)
    if row is None:
        return Badge("no BGP session", State.FAIL, f"BIRD has no protocol {session.name}")
    word = row.bgp_state or row.state
    return Badge(f"BGP {word}", State.OK if word == "Established" else State.FAIL, f"{session.name}: {row.info}")


def _route_badge(blocks: Sequence[AllocationBlock], kernel: KernelState) -> Badge | None:
    """How this node routes to a peer's blocks: by BGP, a tunnel, or not."""
    ways: set[str] = set()
    missing = []
    for block in blocks:
        if not isinstance(block.cidr, ipaddress.IPv4Network):
            continue
        route = kernel.route_to(block.cidr)
        if route is None:
            missing.append(str(block.cidr))
        elif route.device == VXLAN_DEVICE:
            ways.add("vxlan")
        elif route.device == IPIP_DEVICE:
            ways.add("ipip")
        elif route.proto == RTPROT_BIRD:
            ways.add(f"BGP via {route.gateway}" if route.gateway else "BGP")
        else:
            ways.add(f"via {route.device}")
    if missing:
        return Badge(f"no route to {len(missing)} block(s)", State.FAIL, ", ".join(missing))
    if not ways:
        return None
    return Badge("route " + ", ".join(sorted(ways)), State.OK, "how this node's kernel routes to this node's blocks")


def _pod(endpoint: Resource) -> Pod:
    spec = endpoint.spec
    name = spec.get("pod") or spec.get("workload") or endpoint.name
    namespace = endpoint.namespace
    addresses = []
    for net in spec.get("ipNetworks") or []:
        try:
            addresses.append(str(ipaddress.ip_interface(net).ip))
        except (ValueError, TypeError):
            addresses.append(f"{net!r}?")  # shown as stored: the endpoint is damaged, not the picture
    return Pod(f"{namespace}/{name}" if namespace else str(name), tuple(addresses))


def _encapsulation(pool: IPPoolInfo, felix: FelixSettings) -> str:
    if pool.vxlan_mode != "Never":
        mode = "" if pool.vxlan_mode == "Always" else " CrossSubnet"
        return f"VXLAN{mode} (VNI {felix.vxlan_vni}, UDP {felix.vxlan_port})"
    if pool.ipip_mode != "Never":
        return "IPIP" + ("" if pool.ipip_mode == "Always" else " CrossSubnet")
    return "no encapsulation"


def _overlay(sources: Sources, plans: dict[str, bgp.BGPPlan]) -> str:
    pools = "; ".join(
        f"pool {p.cidr} {_encapsulation(p, sources.felix)}{' natOutgoing' if p.nat_outgoing else ''}"
        for p in sorted(sources.pools, key=lambda p: natural_key(str(p.cidr)))
        if not p.disabled
    )
    pairs = {frozenset((name, s.peer_node)) for name, plan in plans.items() for s in plan.sessions if s.peer_node}
    reflectors = [n.name for n in sources.nodes if n.route_reflector_cluster_id]
    defaults = bgp_defaults(sources)
    if reflectors:
        topology = f"BGP via route reflector(s) {', '.join(reflectors)}"
    elif defaults.node_to_node_mesh:
        topology = "BGP full mesh"
    else:
        topology = "BGP peers"
    return f"overlay: {pools or 'no IP pool'} \u00b7 {topology} (AS {defaults.as_number}, {len(pairs)} sessions)"


def bgp_defaults(sources: Sources) -> BGPDefaults:
    return BGPDefaults.from_resource(next((c for c in sources.bgp_configs if c.name == "default"), None))


def build(sources: Sources) -> Picture:
    local = _local(sources)
    kernel = sources.kernel
    plans, plan_problem = _plans(sources)
    blocks_of: dict[str, list[AllocationBlock]] = {}
    for block in sources.blocks:
        blocks_of.setdefault(block.host, []).append(block)
    pods_of: dict[str, list[Pod]] = {}
    for endpoint in sources.endpoints:
        pods_of.setdefault(str(endpoint.spec.get("node") or ""), []).append(_pod(endpoint))
    sessions = (
        {s.peer_node: s for s in plans[local.name].sessions if s.peer_node} if local and local.name in plans else {}
    )
    nodes = []
    for info in sorted(sources.nodes, key=lambda n: natural_key(n.name)):
        is_local = local is not None and info.name == local.name
        badges: list[Badge] = []
        if is_local:
            badges += _local_badges(sources, plans.get(info.name))
        elif local is not None and kernel is not None:
            if info.name in sessions:
                badges.append(_session_state(sessions[info.name], sources.bird))
            route = _route_badge(blocks_of.get(info.name, []), kernel)
            if route is not None:
                badges.append(route)
        nodes.append(_node(info, blocks_of.get(info.name, []), pods_of.get(info.name, []), badges, is_local))
    known = {n.name for n in sources.nodes}
    for name in sorted(set(pods_of) - known, key=natural_key):  # endpoints naming a node that is gone
        badge = Badge("no Node resource", State.FAIL, "WorkloadEndpoints name this node but no Node exists")
        nodes.append(
            Node(
                name or "(no node)",
                pods=tuple(sorted(pods_of[name], key=lambda p: natural_key(p.name))),
                badges=(badge,),
            )
        )
    links = _links(plans, local, sessions, sources.bird)
    orphans = [str(b.cidr) for b in sources.blocks if b.host not in known]
    pods = sum(len(p) for p in pods_of.values())
    facts = [
        f"{len(sources.nodes)} node(s) \u00b7 {len(sources.blocks)} IPAM block(s) \u00b7 {pods} pod(s) "
        f"(WorkloadEndpoints) \u00b7 {sources.store}, revision {sources.revision}",
        _seen_from(local, sources),
        problems_fact(nodes),
    ]
    if orphans:
        facts.append(f"blocks affine to no Node: {', '.join(orphans)}")
    if plan_problem:
        facts.append(plan_problem)
    title = "Calico network " + ", ".join(str(p.cidr) for p in sources.pools if not p.disabled)
    return Picture(title.rstrip(), _overlay(sources, plans), tuple(facts), tuple(nodes), tuple(links))


def _seen_from(local: NodeInfo | None, sources: Sources) -> str:
    if local is None:
        return (
            "no Node has an address of this network namespace: blocks and pods from the datastore only, "
            "no kernel or BGP state"
        )
    bird = sources.bird
    if bird.protocols is not None:
        via = f"its BIRD ({bird.socket})"
    elif bird.problem:
        via = f"not its BIRD: {bird.problem}"
    else:
        via = "not its BIRD (--bird-socket names its control socket)"
    return f"seen from {local.name}: its routes and {via}"


def _local_badges(sources: Sources, plan: bgp.BGPPlan | None) -> list[Badge]:
    badges = []
    sessions = plan.sessions if plan is not None else ()
    bird = sources.bird
    if sessions:
        if bird.protocols is None:
            state = State.FAIL if bird.problem else State.UNKNOWN
            badges.append(Badge("BIRD " + ("down" if bird.problem else "not read"), state, bird.problem))
        else:
            up = sum(1 for s in sessions if _session_state(s, bird).state is State.OK)
            state = State.OK if up == len(sessions) else State.FAIL
            badges.append(Badge(f"BGP {up}/{len(sessions)} Established", state))
    kernel = sources.kernel
    needs_vxlan = any(p.vxlan_mode != "Never" and not p.disabled for p in sources.pools)
    if kernel is not None and needs_vxlan:
        device = kernel.devices.get(VXLAN_DEVICE)
        if device is None:
            badges.append(Badge(f"{VXLAN_DEVICE} missing", State.FAIL))
        else:
            badges.append(
                Badge(f"{VXLAN_DEVICE} {'up' if device.up else 'down'}", State.OK if device.up else State.FAIL)
            )
    return badges


def _node(info: NodeInfo, blocks: list[AllocationBlock], pods: list[Pod], badges: list[Badge], local: bool) -> Node:
    details = []
    if info.ipv4_vxlan_tunnel_addr:
        details.append(f"{VXLAN_DEVICE} {info.ipv4_vxlan_tunnel_addr}")
    if info.ipv4_ipip_tunnel_addr:
        details.append(f"{IPIP_DEVICE} {info.ipv4_ipip_tunnel_addr}")
    if info.route_reflector_cluster_id:
        details.append(f"route reflector, cluster {info.route_reflector_cluster_id}")
    if info.as_number:
        details.append(f"AS {info.as_number}")
    subnets = tuple(
        Subnet(str(b.cidr), "block", f"{len(b.in_use())}/{b.num_addresses} used")
        for b in sorted(blocks, key=lambda b: (b.cidr.version, int(b.cidr.network_address)))
    )
    return Node(
        name=info.name,
        address=str(info.ipv4_address.ip) if info.ipv4_address else "",
        segment=str(info.ipv4_address.network) if info.ipv4_address else "",
        subnets=subnets,
        pods=tuple(sorted(pods, key=lambda p: natural_key(p.name))),
        details=tuple(details),
        badges=tuple(badges),
        local=local,
    )


def _links(
    plans: dict[str, bgp.BGPPlan], local: NodeInfo | None, sessions: dict[str, bgp.Session], bird: Bird
) -> list[Link]:
    """One link per pair of nodes with a BGP session; its state where this node is one end."""
    links: dict[frozenset[str], Link] = {}
    for name in sorted(plans, key=natural_key):
        for session in plans[name].sessions:
            pair = frozenset((name, session.peer_node))
            if not session.peer_node or session.peer_node == name or pair in links:
                continue
            if local is not None and local.name in pair:
                peer = session.peer_node if name == local.name else name
                badge = _session_state(sessions[peer], bird) if peer in sessions else Badge("BGP", State.UNKNOWN)
                links[pair] = Link(name, session.peer_node, badge.text, badge.state, badge.detail)
            else:
                links[pair] = Link(name, session.peer_node, "BGP", State.UNKNOWN, "not visible from this node")
    return list(links.values())
