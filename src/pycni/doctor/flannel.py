"""The Flannel fabric on this node: ``subnet.env``, and with a datastore the leases and the routes built from them.

Without ``--etcd-endpoints`` only the node's files are read: the subnet file
each flannel network names (missing, damaged, or disagreeing with the bridge
its pods are on). With it, this node's lease (the lease whose ``PublicIP`` is
an address of this network namespace) must be the one ``FLANNEL_SUBNET``
names and must not be about to expire, no two leases may publish one VTEP MAC,
and no route of the agent's may lead to a subnet no node holds any more.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from dataclasses import dataclass

from pycni.dataplane import RTPROT_PYCNI
from pycni.doctor.context import Network, Node
from pycni.doctor.model import Check, Finding, fail, listed, ok, warn
from pycni.fabric.flannel import subnetenv
from pycni.fabric.flannel.backends.vxlan import normalize_mac
from pycni.fabric.flannel.leases import LeaseStore
from pycni.fabric.flannel.model import ConfigError, Lease, NetworkConfig
from pycni.net import link as net_link
from pycni.net import route as net_route
from pycni.plugins.main.bridge import DEFAULT_BRIDGE
from pycni.spec.errors import CNIError
from pycni.spec.jsonutil import get_key

RESTART = "restart pycni flanneld on this node: it takes a lease and writes the subnet file again"


def subnet_files(node: Node) -> dict[str, list[Network]]:
    """Each subnet file the flannel networks read, with those networks (the default file alone if none does)."""
    files: dict[str, list[Network]] = {}
    for network in node.networks_of("flannel"):
        plugin = network.plugin("flannel") or {}
        files.setdefault(str(plugin.get("subnetFile") or node.options.subnet_file), []).append(network)
    return files


def _bridge_of(network: Network) -> str | None:
    plugin = network.plugin("flannel") or {}
    delegate = plugin.get("delegate")
    delegate = delegate if isinstance(delegate, dict) else {}
    if delegate.get("type", "bridge") != "bridge":
        return None
    return str(delegate.get("bridge") or DEFAULT_BRIDGE)


def _one_file(node: Node, path: str, networks: list[Network]) -> Finding:
    names = listed([n.name for n in networks]) or "no network"
    try:
        env = subnetenv.load(path)
    except CNIError as error:
        return fail("subnet_env", error.msg, f"remove it and {RESTART}")
    if env is None:
        return fail(
            "subnet_env",
            f"{path} is missing, but {names} read it: every pod ADD fails (loadFlannelSubnetEnv failed)",
            f"start pycni flanneld (--subnet-file {path}): it writes the file once it holds a lease",
        )
    for network in networks:
        bridge = _bridge_of(network)
        if bridge is None:
            continue
        addresses = [a for a in node.addresses_of(bridge) if a.version == 4]
        if addresses and env.subnet not in addresses:
            return fail(
                "subnet_env",
                f"{bridge} has {listed([str(a) for a in addresses])} but {path} says FLANNEL_SUBNET={env.subnet}: "
                f"the node's subnet changed under {network.name}'s pods (ADD fails: the bridge has another address)",
                f"move the pods off this node, delete {bridge} (ip link del {bridge}) and re-create them in the "
                "new subnet; if the subnet file is the stale one, " + RESTART,
            )
    return ok("subnet_env", f"{path}: FLANNEL_SUBNET={env.subnet} FLANNEL_MTU={env.mtu} (for {names})")


def check_subnet_env(node: Node) -> list[Finding]:
    files = subnet_files(node)
    if not files:
        default = node.options.subnet_file
        if not os.path.lexists(default):
            return []
        files = {default: []}
    return [_one_file(node, path, networks) for path, networks in files.items()]


# -- with a datastore -------------------------------------------------------------------------


@dataclass
class Fabric:
    """One read of the Flannel network in the datastore, and what this node's files say about it."""

    config: NetworkConfig | None
    config_problem: str
    leases: list[Lease]
    own_subnet: ipaddress.IPv4Network | None  # FLANNEL_SUBNET's network
    subnet_file: str

    def mine(self, node: Node) -> list[Lease]:
        return [lease for lease in self.leases if lease.attrs.public_ip in node.local_addresses]

    def lease_of(self, subnet: ipaddress.IPv4Network) -> Lease | None:
        return next((lease for lease in self.leases if lease.subnet == subnet), None)


def _read_fabric(node: Node) -> Fabric | None:
    store = node.store
    files = subnet_files(node)
    if store is None or not (files or os.path.lexists(node.options.subnet_file)):
        return None
    leases_store = LeaseStore(store, node.options.flannel_prefix)
    path = next(iter(files), node.options.subnet_file)
    try:
        values = subnetenv.read(path)
    except CNIError:
        values = {}
    config, problem = None, ""
    try:
        config = NetworkConfig.from_json(leases_store.get_network_config())
    except ConfigError as error:
        problem = error.msg
    leases, _revision = leases_store.list_leases()
    return Fabric(config, problem, leases, subnetenv.subnet_of(values), path)


def fabric_of(node: Node) -> Fabric | None:
    """The datastore's Flannel network, read once per run; None without a datastore or a flannel network."""
    return node.memo("flannel", lambda: _read_fabric(node))


def check_lease(node: Node) -> list[Finding]:
    fabric = fabric_of(node)
    if fabric is None:
        return []
    prefix = node.options.flannel_prefix
    findings: list[Finding] = []
    if fabric.config is None:
        findings.append(fail("flannel_lease", fabric.config_problem, "write the network config before the agents"))
    mine = fabric.mine(node)
    theirs = ", ".join(str(lease.subnet) for lease in mine) or "none"
    if fabric.own_subnet is None:
        if not mine:
            findings.append(
                fail(
                    "flannel_lease",
                    f"no lease under {prefix}/subnets has a PublicIP of this node "
                    f"({listed(sorted(node.local_addresses))})",
                    RESTART,
                )
            )
        lease = mine[0] if mine else None
    else:
        lease = fabric.lease_of(fabric.own_subnet)
        if lease is None:
            findings.append(
                fail(
                    "flannel_lease",
                    f"FLANNEL_SUBNET {fabric.own_subnet} of {fabric.subnet_file} has no lease under {prefix}/subnets "
                    f"(expired or deleted; this node's leases: {theirs}): another node may take the subnet",
                    RESTART + "; pods keep their old addresses until re-created",
                )
            )
        elif lease.attrs.public_ip not in node.local_addresses:
            findings.append(
                fail(
                    "flannel_lease",
                    f"FLANNEL_SUBNET {fabric.own_subnet} of {fabric.subnet_file} is leased to PublicIP "
                    f"{lease.attrs.public_ip}, not to this node (this node's leases: {theirs}): the file is stale",
                    RESTART,
                )
            )
            lease = None
    if lease is not None:
        findings.append(_expiry(node, lease))
    return findings


def _expiry(node: Node, lease: Lease) -> Finding:
    if lease.expiration is None:
        return ok("flannel_lease", f"this node holds {lease.subnet} as a reservation (no expiry)")
    left = lease.expiration - node.options.clock()
    margin = node.options.lease_margin
    if left <= 0:
        return fail("flannel_lease", f"this node's lease {lease.subnet} has expired", RESTART)
    if left < margin:
        return warn(
            "flannel_lease",
            f"this node's lease {lease.subnet} expires in {left:.0f} s; the agent renews it {margin:.0f} s before "
            "expiry, so renewals are failing or the agent is down",
            "check that pycni flanneld runs on this node and reaches etcd (its log names the failed renewal)",
        )
    return ok("flannel_lease", f"this node holds {lease.subnet}, expiring in {left / 3600:.1f} h")


def check_vtep_macs(node: Node) -> list[Finding]:
    fabric = fabric_of(node)
    if fabric is None:
        return []
    by_mac: dict[str, list[Lease]] = {}
    for lease in fabric.leases:
        if lease.attrs.backend_type == "vxlan":
            mac = normalize_mac(get_key(lease.attrs.backend_data, "VtepMAC"))
            if mac is not None:
                by_mac.setdefault(mac, []).append(lease)
    clashes = {mac: leases for mac, leases in by_mac.items() if len(leases) > 1}
    if not by_mac:
        return []
    findings = _own_device(node, fabric)
    if not clashes:
        return findings or [ok("vtep_macs", f"{len(by_mac)} vxlan lease(s), each with its own VTEP MAC")]
    text = "; ".join(
        f"{mac} by {', '.join(f'{lease.subnet} ({lease.attrs.public_ip})' for lease in leases)}"
        for mac, leases in sorted(clashes.items())
    )
    return [
        *findings,
        fail(
            "vtep_macs",
            f"leases publish one VTEP MAC: {text}: a vxlan FDB holds one destination per MAC, so peers reach "
            "only one of these nodes",
            "restart the agent of all but one of them (pycni flanneld keeps the MAC of its flannel.N device: delete "
            "the device and its MAC state file in --state-dir first so it takes a new one)",
        ),
    ]


def _own_device(node: Node, fabric: Fabric) -> list[Finding]:
    """This node's ``flannel.<VNI>`` must have the MAC its lease publishes: peers address it by that MAC."""
    found: list[Finding] = []
    for lease in fabric.mine(node):
        data = lease.attrs.backend_data
        mac, vni = normalize_mac(get_key(data, "VtepMAC")), get_key(data, "VNI")
        device = node.link(f"flannel.{vni if isinstance(vni, int) else 1}")
        if lease.attrs.backend_type != "vxlan" or mac is None or device is None:
            continue
        if device.mac.lower() != mac:
            found.append(
                fail(
                    "vtep_macs",
                    f"{device.name} has MAC {device.mac} but this node's lease {lease.subnet} publishes {mac}: "
                    "peers send this node's pod traffic to a MAC it does not have",
                    "restart pycni flanneld on this node: it publishes its device's MAC in the lease again",
                )
            )
    return found


def _pycni_routes(node: Node, network: ipaddress.IPv4Network) -> list[net_route.RouteMsg]:
    return [
        route
        for route in net_route.dump(node.ipr, socket.AF_INET, tables=[net_route.RT_TABLE_MAIN])
        if route.proto == RTPROT_PYCNI and isinstance(route.dst, ipaddress.IPv4Network) and route.dst.subnet_of(network)
    ]


def check_routes(node: Node) -> list[Finding]:
    fabric = fabric_of(node)
    if fabric is None or fabric.config is None or fabric.config.network is None:
        return []
    held = {lease.subnet for lease in fabric.leases}
    routes = _pycni_routes(node, fabric.config.network)
    stale = [r for r in routes if r.dst not in held and r.dst != fabric.own_subnet]
    findings = _missing_routes(node, fabric, {r.dst for r in routes if isinstance(r.dst, ipaddress.IPv4Network)})
    if not stale:
        return findings or [
            ok("flannel_routes", f"{len(routes)} route(s) into {fabric.config.network}, each to a leased subnet")
        ]
    names = {r.oif: link.name for r in stale if r.oif and (link := net_link.by_index(node.ipr, r.oif)) is not None}
    text = [f"{r.dst}" + (f" via {r.gateway}" if r.gateway else "") + f" dev {names.get(r.oif, r.oif)}" for r in stale]
    return [
        *findings,
        fail(
            "flannel_routes",
            f"route(s) to subnet(s) no node holds a lease on: {listed(text)}: traffic to a new holder goes astray",
            "the agent removes them at its next resync (is pycni flanneld running?); by hand: "
            + "; ".join(f"ip route del {r.dst}" for r in stale[:3]),
        ),
    ]


ROUTED_BACKENDS = ("vxlan", "host-gw")  # one route per peer lease, of pycni's protocol


def _missing_routes(node: Node, fabric: Fabric, routed: set[ipaddress.IPv4Network]) -> list[Finding]:
    """Peers' leases of this backend with no route here: their pods are unreachable from this node."""
    assert fabric.config is not None
    backend = fabric.config.backend_type
    if backend not in ROUTED_BACKENDS:
        return []
    mine = {lease.subnet for lease in fabric.mine(node)} | ({fabric.own_subnet} if fabric.own_subnet else set())
    missing = sorted(
        (
            lease
            for lease in fabric.leases
            if lease.subnet not in mine and lease.subnet not in routed and lease.attrs.backend_type == backend
        ),
        key=lambda lease: lease.subnet,
    )
    if not missing:
        return []
    text = [f"{lease.subnet} ({lease.attrs.public_ip})" for lease in missing]
    return [
        fail(
            "flannel_routes",
            f"no route to leased subnet(s) {listed(text)}: this node cannot reach the pods there",
            "pycni flanneld programs one route per peer lease: check that it runs on this node (its log names "
            "what it could not program)",
        )
    ]


CHECKS = [
    Check("subnet_env", check_subnet_env, "each flannel network's subnet file present, valid, matching its bridge"),
    Check("flannel_lease", check_lease, "this node's lease is FLANNEL_SUBNET's and not about to expire (etcd)"),
    Check("vtep_macs", check_vtep_macs, "no two leases publish one VTEP MAC (etcd)"),
    Check("flannel_routes", check_routes, "no route of the agent's to a subnet nobody leases (etcd)"),
]
