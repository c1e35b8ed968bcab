"""A Flannel network's picture: every lease in the datastore, this node's kernel, the pods in the result cache.

Flannel keeps no registry of pods: the only pods known are those in the CNI
result caches read (``--cni-cache-dir``, this node's by default), each placed
on the node whose lease holds its address. A lease carries no node name, so a
node is named by its ``PublicIP``. This node is the one whose lease's
``PublicIP`` is an address of this network namespace; each peer gets a badge
for what this node's kernel has for it (for vxlan: the route onlink via
``flannel.<VNI>``, the neighbour and the FDB entry with the peer's VTEP MAC;
for host-gw: the route via the peer's address; for udp: the network's route
into ``flannel0``). :func:`read` does the I/O, :func:`build` is pure.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass

from pycni.fabric.flannel.backends.udp import DEFAULT_PORT as UDP_PORT
from pycni.fabric.flannel.backends.udp import TUN_NAME
from pycni.fabric.flannel.backends.vxlan import ENCAP_OVERHEAD, VxlanOptions, normalize_mac
from pycni.fabric.flannel.leases import LeaseStore
from pycni.fabric.flannel.model import Lease, NetworkConfig
from pycni.picture import kernel as kernel_state
from pycni.picture.kernel import KernelState
from pycni.picture.model import Badge, Link, Node, Picture, Pod, State, Subnet, natural_key, problems_fact
from pycni.runtime.cache import Attachment, ResultCache
from pycni.spec.jsonutil import get_key

RENEW_MARGIN = 3600.0  # pycni flanneld renews a lease this long before it expires


@dataclass(frozen=True)
class Sources:
    """Everything the picture is made of, as read."""

    config: NetworkConfig
    leases: tuple[Lease, ...]
    revision: int
    store: str  # where the leases were read, for the header
    attachments: tuple[Attachment, ...]
    cache_dirs: tuple[str, ...]
    kernel: KernelState | None
    now: float


def overlay_device(config: NetworkConfig) -> str:
    if config.backend_type == "vxlan":
        return f"flannel.{_vxlan(config).vni}"
    return TUN_NAME if config.backend_type == "udp" else ""


def _vxlan(config: NetworkConfig) -> VxlanOptions:
    return VxlanOptions.parse(config.backend, 1500)


def read(store: LeaseStore, where: str, cache_dirs: Sequence[str], now: float, with_kernel: bool = True) -> Sources:
    """Read the network config and leases, the result caches and (``with_kernel``) this namespace's kernel."""
    config = NetworkConfig.from_json(store.get_network_config())
    leases, revision = store.list_leases()
    attachments = [a for directory in cache_dirs for a in ResultCache(directory).attachments()]
    device = overlay_device(config)
    kernel = kernel_state.read([device] if device else []) if with_kernel else None
    return Sources(config, tuple(leases), revision, where, tuple(attachments), tuple(cache_dirs), kernel, now)


# -- pure from here -------------------------------------------------------------------------


def pod_name(attachment: Attachment) -> str:
    """``namespace/name`` from the runtime's K8S_POD_* arguments, else the netns's name, else the container ID."""
    args = dict(attachment.cni_args)
    if args.get("K8S_POD_NAME"):
        namespace = args.get("K8S_POD_NAMESPACE")
        return f"{namespace}/{args['K8S_POD_NAME']}" if namespace else args["K8S_POD_NAME"]
    if attachment.netns:
        return os.path.basename(attachment.netns.rstrip("/")) or attachment.container_id[:12]
    return attachment.container_id[:12]


def attachment_addresses(attachment: Attachment) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    found = []
    for ip in (attachment.result or {}).get("ips") or []:
        try:
            found.append(ipaddress.ip_interface(str(ip.get("address"))).ip if isinstance(ip, dict) else None)
        except ValueError:
            continue
    return [address for address in found if address is not None]


def _pods_of(lease: Lease, attachments: Sequence[Attachment]) -> tuple[Pod, ...]:
    nets = [net for net in (lease.subnet, lease.ipv6_subnet) if net is not None]
    pods = []
    for attachment in attachments:
        inside = [a for a in attachment_addresses(attachment) if any(a in net for net in nets)]
        if inside:
            pods.append(Pod(pod_name(attachment), tuple(str(a) for a in inside)))
    return tuple(sorted(pods, key=lambda p: natural_key(p.name)))


def _lease_badge(lease: Lease, now: float) -> Badge:
    if lease.expiration is None:
        return Badge("reservation", State.OK, "a lease without TTL: it never expires")
    left = lease.expiration - now
    if left <= 0:
        return Badge("lease expired", State.FAIL)
    if left < RENEW_MARGIN:
        text = f"lease {left / 60:.0f} min"
        return Badge(text, State.WARN, "the agent renews an hour before expiry: its renewals are failing")
    return Badge(f"lease {left / 3600:.1f} h", State.OK, "time left on the lease")


def _path_badge(config: NetworkConfig, lease: Lease, kernel: KernelState) -> Badge:
    """What this node's kernel has for reaching ``lease``'s pods."""
    route = kernel.route_to(lease.subnet)
    public = lease.attrs.public_ip
    backend = config.backend_type
    if backend == "udp":
        into = [r for r in kernel.routes if r.device == TUN_NAME and config.network and r.dst == config.network]
        return Badge(f"via {TUN_NAME}", State.OK) if into else Badge(f"no route into {TUN_NAME}", State.FAIL)
    if backend == "host-gw":
        if route is not None and route.gateway == public:
            return Badge(f"route via {public}", State.OK)
        return Badge("no route", State.FAIL, f"expected {lease.subnet} via {public}")
    if backend != "vxlan":
        return Badge(f"backend {backend}", State.UNKNOWN)
    device = overlay_device(config)
    mac = normalize_mac(get_key(lease.attrs.backend_data, "VtepMAC"))
    if route is not None and route.gateway == public and route.device != device:
        return Badge("direct route", State.OK, f"DirectRouting: {lease.subnet} via {public} dev {route.device}")
    missing = []
    if route is None or route.device != device:
        missing.append("route")
    if mac is None or kernel.neighbours.get(device, {}).get(str(lease.subnet.network_address)) != mac:
        missing.append("neighbour")
    if mac is None or kernel.fdb.get(device, {}).get(mac) != public:
        missing.append("fdb")
    if missing:
        return Badge("no " + "/".join(missing), State.FAIL, f"this node lacks the {', '.join(missing)} for {public}")
    return Badge("vxlan ok", State.OK, f"route, neighbour and FDB entry on {device}")


def _own_badge(config: NetworkConfig, kernel: KernelState) -> Badge | None:
    device = overlay_device(config)
    if not device:
        return None
    found = kernel.devices.get(device)
    if found is None:
        return Badge(f"{device} missing", State.FAIL)
    return Badge(f"{device} {'up' if found.up else 'down'}", State.OK if found.up else State.FAIL)


def _details(config: NetworkConfig, lease: Lease, kernel: KernelState | None, local: bool) -> tuple[str, ...]:
    details = []
    mac = normalize_mac(get_key(lease.attrs.backend_data, "VtepMAC"))
    if mac:
        details.append(f"VTEP {mac}")
    if lease.attrs.backend_type and lease.attrs.backend_type != config.backend_type:
        details.append(f"lease backend {lease.attrs.backend_type}")
    device = overlay_device(config)
    if local and kernel is not None and device in kernel.devices:
        details.append(f"{device} MTU {kernel.devices[device].mtu}")
    return tuple(details)


def _overlay(config: NetworkConfig, count: int) -> str:
    pairs = count * (count - 1) // 2
    if config.backend_type == "vxlan":
        options = _vxlan(config)
        direct = ", DirectRouting on the same L2" if options.direct_routing else ""
        return (
            f"overlay: VXLAN VNI {options.vni}, UDP port {options.port}{direct} \u00b7 tunnels: one per pair of nodes "
            f"({pairs}) \u00b7 {ENCAP_OVERHEAD} bytes of overhead per packet"
        )
    if config.backend_type == "host-gw":
        return f"no overlay (host-gw): a route per node via its address, every node on one L2 network ({pairs} pairs)"
    if config.backend_type == "udp":
        return f"overlay: UDP in userspace through {TUN_NAME}, port {UDP_PORT} (for debugging: slow)"
    return f"backend {config.backend_type}"


def build(sources: Sources) -> Picture:
    config, kernel = sources.config, sources.kernel
    leases = sorted(sources.leases, key=lambda lease: int(lease.subnet.network_address))
    local_ips = set(kernel.addresses) if kernel is not None else set()
    local = next((lease for lease in leases if lease.attrs.public_ip in local_ips), None)
    segment = kernel.network_of(local.attrs.public_ip) if kernel is not None and local is not None else ""
    nodes = []
    links = []
    for lease in leases:
        is_local = lease is local
        public = lease.attrs.public_ip
        badges = [_lease_badge(lease, sources.now)]
        if kernel is not None and local is not None:
            extra = _own_badge(config, kernel) if is_local else _path_badge(config, lease, kernel)
            if extra is not None:
                badges.insert(0, extra)
            if not is_local:
                links.append(
                    Link(
                        local.attrs.public_ip,
                        public,
                        extra.text if extra else "",
                        extra.state if extra else State.UNKNOWN,
                    )
                )
        subnets = [Subnet(str(lease.subnet))]
        if lease.ipv6_subnet is not None:
            subnets.append(Subnet(str(lease.ipv6_subnet)))
        in_segment = bool(segment and public) and ipaddress.ip_address(public) in ipaddress.ip_network(segment)
        nodes.append(
            Node(
                name=public or str(lease.subnet),
                address="",
                segment=segment if in_segment else "",
                subnets=tuple(subnets),
                pods=_pods_of(lease, sources.attachments),
                details=_details(config, lease, kernel, is_local),
                badges=tuple(badges),
                local=is_local,
            )
        )
    if config.backend_type in ("vxlan", "udp", "host-gw"):
        names = [n.name for n in nodes]
        seen = {frozenset((k.a, k.b)) for k in links}
        for i, a in enumerate(names):
            for b in names[i + 1 :]:
                if frozenset((a, b)) not in seen:
                    links.append(Link(a, b, config.backend_type, State.UNKNOWN, "not visible from this node"))
    pods = sum(len(n.pods) for n in nodes)
    seen_from = (
        f"seen from {local.attrs.public_ip}: {sources.store} (revision {sources.revision}) and this node's "
        "routes, neighbours and FDB"
        if local is not None
        else f"read from {sources.store} (revision {sources.revision}); no lease is this network namespace's "
        "(none has one of its addresses as PublicIP), so no kernel state is shown"
    )
    facts = (
        f"backend {config.backend_type} \u00b7 subnets /{config.subnet_len} \u00b7 {len(nodes)} node(s) "
        f"\u00b7 {pods} pod(s) \u00b7 nodes named by their lease's PublicIP",
        seen_from,
        problems_fact(nodes),
        f"pods: the CNI result cache ({', '.join(sources.cache_dirs) or 'none read'}); Flannel keeps no registry of "
        "pods, so a node's pods are known only from its own cache",
    )
    return Picture(
        title=f"Flannel network {config.network}",
        overlay=_overlay(config, len(nodes)),
        facts=facts,
        nodes=tuple(nodes),
        links=tuple(links),
    )
