"""bandwidth: shape a container's traffic with TBF (reference ``plugins/meta/bandwidth``).

Ingress (into the container) is a TBF on the host end of the container's
veth; egress (out of it) is redirected from that veth's ingress to an ifb
device ``bwp<hash>`` that carries the second TBF. Rates are bits/s and bursts
bits, from top-level keys or ``runtimeConfig.bandwidth`` (top-level wins).
Beyond Go: the ifb carries an alias naming its network and container, so GC
can remove the ifbs of attachments that are gone; a failed ADD removes the
ifb and qdiscs it made.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pycni.net import link, netns, tc
from pycni.plugins.common import Rollback, prev_result_required
from pycni.skel import CmdArgs, Plugin
from pycni.spec import CNIError, ErrorCode, Fields, Interface, Result, versions_from

if TYPE_CHECKING:
    from pyroute2 import IPRoute

plugin = Plugin("bandwidth", versions=versions_from("0.3.0"))

KEYS = ("ingressRate", "ingressBurst", "egressRate", "egressBurst")
MAX_BURST_BYTES = 2**32 - 1
MAX_RATE_BYTES = 2**32 - 1  # the TBF rate field is 32 bits of bytes/s (~34 Gbit/s)
ALIAS_PREFIX = "pycni-bandwidth"
MAX_ALIAS_BYTES = 255  # IFALIASZ - 1


@dataclass(frozen=True)
class Bandwidth:
    ingress_rate: int = 0
    ingress_burst: int = 0
    egress_rate: int = 0
    egress_burst: int = 0

    def is_zero(self) -> bool:
        return not (self.ingress_rate or self.ingress_burst or self.egress_rate or self.egress_burst)


def load_bandwidth(args: CmdArgs) -> Bandwidth:
    conf = args.fields
    source: Fields = conf
    if not any(conf.has(key) for key in KEYS):
        source = Fields(args.runtime_config("bandwidth"), "runtimeConfig.bandwidth")
    values = [source.integer(key, minimum=0) for key in KEYS]
    bandwidth = Bandwidth(*values)
    for kind, rate, burst in (
        ("ingress", bandwidth.ingress_rate, bandwidth.ingress_burst),
        ("egress", bandwidth.egress_rate, bandwidth.egress_burst),
    ):
        if burst == 0 and rate != 0:
            raise CNIError(ErrorCode.INVALID_NETWORK_CONFIG, f"if rate is set, burst must also be set ({kind})")
        if rate == 0 and burst != 0:
            raise CNIError(ErrorCode.INVALID_NETWORK_CONFIG, f"if burst is set, rate must also be set ({kind})")
        if burst // 8 >= MAX_BURST_BYTES:
            raise CNIError(ErrorCode.INVALID_NETWORK_CONFIG, "burst cannot be more than 4GB")
        if rate // 8 > MAX_RATE_BYTES:
            raise CNIError(ErrorCode.INVALID_NETWORK_CONFIG, f"{kind} rate {rate} bit/s is above 34 Gbit/s")
    return bandwidth


def ifb_name(network: str, container_id: str) -> str:
    """``bwp`` + 12 hex digits of sha512(network + container ID), as the reference names it."""
    return "bwp" + hashlib.sha512(f"{network}{container_id}".encode()).hexdigest()[:12]


def ifb_alias(network: str, container_id: str, ifname: str) -> str:
    """``pycni-bandwidth:<network>:<container ID>:<ifname>``, what GC finds an ifb's attachment by.

    The kernel takes at most 255 bytes (longer is ERANGE, and over 64 KiB netlink cannot even
    carry it), while container IDs and network names have no length limit: a long attachment
    is a digest after the network's prefix, a long network a digest itself.
    """
    alias = f"{alias_prefix(network)}{container_id}:{ifname}"
    if len(alias.encode()) <= MAX_ALIAS_BYTES:
        return alias
    return f"{alias_prefix(network)}#{hashlib.sha256(f'{container_id}:{ifname}'.encode()).hexdigest()}"


def alias_prefix(network: str) -> str:
    """The part of :func:`ifb_alias` shared by one network's ifbs."""
    prefix = f"{ALIAS_PREFIX}:{network}:"
    if len(prefix) <= MAX_ALIAS_BYTES // 2:
        return prefix
    return f"{ALIAS_PREFIX}:#{hashlib.sha256(network.encode()).hexdigest()[:32]}:"


def host_interface(args: CmdArgs, result: Result, host: IPRoute) -> link.LinkInfo:
    """The host end of the container's veth, which must be one of the result's host interfaces."""
    with netns.iproute(args.netns, args.netns_fd) as container:
        cont = link.find(container, args.ifname)
    if cont is None or cont.kind != "veth" or cont.peer_index <= 0:
        raise CNIError(ErrorCode.INTERNAL, f"container interface {args.ifname} has no veth peer")
    peer = link.by_index(host, cont.peer_index)
    if peer is None:
        raise CNIError(ErrorCode.INTERNAL, f"veth peer with index {cont.peer_index} is not in host ns")
    if not any(i.name == peer.name and not i.sandbox for i in result.interfaces):
        raise CNIError(ErrorCode.INTERNAL, "no veth peer of container interface found in host ns")
    return peer


@plugin.add
def add(args: CmdArgs) -> Result:
    bandwidth = load_bandwidth(args)
    if args.config.get("prevResult") is None:
        raise CNIError(ErrorCode.INVALID_NETWORK_CONFIG, "must be called as chained plugin")
    result = prev_result_required(args)
    if bandwidth.is_zero():
        return result
    with netns.iproute_here() as host, Rollback() as rollback:
        peer = host_interface(args, result, host)
        if bandwidth.ingress_rate:
            tc.add_tbf(host, peer.index, tc.Shape.from_bits(bandwidth.ingress_rate, bandwidth.ingress_burst), peer.name)
            rollback.push("ingress qdisc", lambda: host.tc("del", index=peer.index, handle=tc.ROOT_HANDLE))
        if bandwidth.egress_rate:
            name = ifb_name(args.name, args.container_id)
            ifb = tc.create_ifb(host, name, peer.mtu)
            rollback.push(f"ifb {name}", lambda: link.delete(host, name))
            link.set_attrs(host, ifb, ifalias=ifb_alias(args.name, args.container_id, args.ifname))
            result.interfaces.append(Interface(name=name, mac=ifb.mac))
            tc.redirect_ingress(host, peer.index, ifb.index, peer.name)
            rollback.push("ingress redirect", lambda: host.tc("del", "ingress", index=peer.index))
            tc.add_tbf(host, ifb.index, tc.Shape.from_bits(bandwidth.egress_rate, bandwidth.egress_burst), name)
        rollback.commit()
    return result


@plugin.delete
def delete(args: CmdArgs) -> None:
    """Remove the ifb (the veth's qdiscs go with the veth). Limits are not read: a DEL
    must clean up even after an ADD that failed on invalid limits."""
    with netns.iproute_here() as host:
        link.delete(host, ifb_name(args.name, args.container_id))


@plugin.check
def check(args: CmdArgs) -> None:
    bandwidth = load_bandwidth(args)
    result = prev_result_required(args)
    if bandwidth.is_zero():
        return
    with netns.iproute_here() as host:
        peer = host_interface(args, result, host)
        targets = []
        if bandwidth.ingress_rate:
            targets.append((peer, tc.Shape.from_bits(bandwidth.ingress_rate, bandwidth.ingress_burst)))
        if bandwidth.egress_rate:
            ifb = link.find(host, ifb_name(args.name, args.container_id))
            if ifb is None:
                raise CNIError(ErrorCode.INTERNAL, f"get ifb device: {ifb_name(args.name, args.container_id)} missing")
            targets.append((ifb, tc.Shape.from_bits(bandwidth.egress_rate, bandwidth.egress_burst)))
        for target, shape in targets:
            found = tc.tbf_of(host, target.index)
            if found is None:
                raise CNIError(ErrorCode.INTERNAL, f"Failed to find qdisc on {target.name}")
            for key, want in (("rate", shape.rate), ("limit", shape.limit), ("buffer", tc.expected_buffer(shape))):
                if found[key] != want:
                    raise CNIError(ErrorCode.INTERNAL, f"{key.capitalize()} doesn't match on {target.name}")


@plugin.gc
def gc(args: CmdArgs) -> None:
    """Delete this network's ifbs whose attachment is no longer valid (found by their alias)."""
    listed = args.valid_attachments()
    if listed is None:
        return
    keep = {ifb_alias(args.name, cid, ifname) for cid, ifname in listed}
    prefix = alias_prefix(args.name)
    with netns.iproute_here() as host:
        for msg in host.get_links():
            alias = str(msg.get("ifalias") or "")
            if alias.startswith(prefix) and alias not in keep:
                link.delete(host, str(msg.get("ifname")))


if __name__ == "__main__":
    plugin.main()
