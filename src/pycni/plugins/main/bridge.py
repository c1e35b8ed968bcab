"""bridge: a veth pair from the container to a Linux bridge (reference ``plugins/main/bridge``).

Keys, defaults and behaviour follow the Go plugin; see
``../shared/reference/cni-spec.md`` §3.1. Differences, all on the safe side:
ipMasq uses the reference's nftables layout (never legacy iptables); a
failed ADD removes the veth, rules and address it made (the Go plugin only
releases the IPAM address); DEL removes masquerade and spoof-check rules even
when the container's namespace is already gone; GC removes the masquerade
rules of attachments that are no longer valid; the network's masquerade rule
goes with its last container (see :mod:`pycni.nft.masquerade`), where Go
keeps the table.
"""

from __future__ import annotations

import ipaddress
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pycni.net import addr, bridge, link, netns, sysctl, veth
from pycni.net.link import LinkInfo
from pycni.nft import masquerade, spoofcheck
from pycni.plugins.common import (
    MAX_MTU,
    Ipam,
    Rollback,
    check_addresses_and_routes,
    config_dns,
    delete_container_link,
    gc_masquerade_and_ipam,
    prev_result_required,
    requested_mac,
)
from pycni.skel import CmdArgs, Plugin
from pycni.spec import DNS, CNIError, ErrorCode, Fields, Interface, Result, Route
from pycni.spec.result import IPInterface

if TYPE_CHECKING:
    from pyroute2 import IPRoute

plugin = Plugin("bridge")

DEFAULT_BRIDGE = "cni0"
OPER_UP_TIMEOUT = 2.55  # seconds, the sum of the reference's retry steps


@dataclass
class BridgeConf:
    network: str
    bridge: str = DEFAULT_BRIDGE
    is_gateway: bool = False
    is_default_gateway: bool = False
    force_address: bool = False
    ip_masq: bool = False
    mtu: int = 0
    hairpin: bool = False
    promisc: bool = False
    vlan: int = 0
    vlan_trunk: list[int] = field(default_factory=list)
    preserve_default_vlan: bool = False
    mac_spoof_check: bool = False
    enable_dad: bool = False
    disable_container_interface: bool = False
    port_isolation: bool = False
    mac: str = ""
    dns: DNS | None = None

    @property
    def vlan_filtering(self) -> bool:
        return self.vlan != 0 or bool(self.vlan_trunk)


def load_conf(args: CmdArgs) -> BridgeConf:
    conf = args.fields
    name = conf.link_name("bridge", DEFAULT_BRIDGE)
    vlan = conf.integer("vlan")
    if not 0 <= vlan <= 4094:
        raise CNIError(ErrorCode.INVALID_NETWORK_CONFIG, f"invalid VLAN ID {vlan} (must be between 0 and 4094)")
    parsed = BridgeConf(
        network=args.name,
        bridge=name,
        is_gateway=conf.boolean("isGateway"),
        is_default_gateway=conf.boolean("isDefaultGateway"),
        force_address=conf.boolean("forceAddress"),
        ip_masq=conf.boolean("ipMasq"),
        mtu=conf.integer("mtu", minimum=0, maximum=MAX_MTU),
        hairpin=conf.boolean("hairpinMode"),
        promisc=conf.boolean("promiscMode"),
        vlan=vlan,
        vlan_trunk=vlan_trunk(conf),
        preserve_default_vlan=conf.boolean("preserveDefaultVlan"),
        mac_spoof_check=conf.boolean("macspoofchk"),
        enable_dad=conf.boolean("enabledad"),
        disable_container_interface=conf.boolean("disableContainerInterface"),
        port_isolation=conf.boolean("portIsolation"),
        mac=requested_mac(args),
        dns=config_dns(conf),
    )
    if parsed.is_default_gateway:
        parsed.is_gateway = True
    backend = conf.string("ipMasqBackend")
    if backend not in ("", "nftables", "iptables"):
        raise CNIError(
            ErrorCode.INVALID_NETWORK_CONFIG, f'ipMasqBackend must be "nftables" or "iptables", not {backend!r}'
        )
    return parsed


def vlan_trunk(conf: Fields) -> list[int]:
    """``vlanTrunk`` entries (``{"id"}`` or ``{"minID","maxID"}``) as a sorted list of VLAN IDs."""
    vlans: set[int] = set()
    for entry in conf.objects("vlanTrunk"):
        has_min, has_max = entry.has("minID"), entry.has("maxID")
        if has_min and has_max:
            low = entry.integer("minID")
            high = entry.integer("maxID")
            if not 0 < low <= 4094:
                raise CNIError(ErrorCode.INVALID_NETWORK_CONFIG, "incorrect trunk minID parameter")
            if not 0 < high <= 4094:
                raise CNIError(ErrorCode.INVALID_NETWORK_CONFIG, "incorrect trunk maxID parameter")
            if high < low:
                raise CNIError(ErrorCode.INVALID_NETWORK_CONFIG, "minID is greater than maxID in trunk parameter")
            vlans.update(range(low, high + 1))
        elif has_max:
            raise CNIError(
                ErrorCode.INVALID_NETWORK_CONFIG,
                "minID and maxID should be configured simultaneously, minID is missing",
            )
        elif has_min:
            raise CNIError(
                ErrorCode.INVALID_NETWORK_CONFIG,
                "minID and maxID should be configured simultaneously, maxID is missing",
            )
        if entry.has("id"):
            vid = entry.integer("id")
            if not 0 < vid <= 4094:
                raise CNIError(ErrorCode.INVALID_NETWORK_CONFIG, "incorrect trunk id parameter")
            vlans.add(vid)
    return sorted(vlans)


def unique_id(args: CmdArgs) -> str:
    return f"{args.container_id}-{args.ifname}"


# -- ADD ---------------------------------------------------------------------


@plugin.add
def add(args: CmdArgs) -> Result:
    conf = load_conf(args)
    ipam = Ipam(args)
    if ipam and conf.disable_container_interface:
        raise CNIError(ErrorCode.INVALID_NETWORK_CONFIG, "cannot use IPAM when DisableContainerInterface flag is set")
    if conf.hairpin and conf.promisc:
        raise CNIError(
            ErrorCode.INVALID_NETWORK_CONFIG, "cannot set hairpin mode and promiscuous mode at the same time"
        )

    with (
        netns.handle(args.netns, args.netns_fd) as ns_fd,
        netns.iproute(args.netns, ns_fd) as container,
        netns.iproute_here() as host,
        Rollback() as rollback,
    ):
        br = bridge.ensure_bridge(host, conf.bridge, conf.mtu, conf.promisc, conf.vlan_filtering)
        host_veth, cont_veth = veth.create_pair(host, container, ns_fd, args.ifname, conf.mtu, conf.mac)
        rollback.push(f"veth {host_veth.name}", lambda: link.delete(host, host_veth.name))
        attach_port(host, br, host_veth, conf)

        result = Result(
            "1.1.0",
            interfaces=[
                Interface(name=br.name, mac=br.mac),
                Interface(name=host_veth.name, mac=host_veth.mac),
                Interface(name=args.ifname, mac=cont_veth.mac, sandbox=args.netns),
            ],
        )
        if conf.mac_spoof_check:
            spoofcheck.setup(host_veth.name, cont_veth.mac, unique_id(args))
            rollback.push("mac spoof check", lambda: spoofcheck.teardown(unique_id(args)))

        if ipam:
            ipam_result = ipam.allocate(rollback)
            result.ips, result.routes, result.dns = ipam_result.ips, ipam_result.routes, ipam_result.dns
            gateways = calc_gateways(result, conf)
            with netns.entered(args.netns, ns_fd):
                dad = "1" if conf.enable_dad else "0"
                if conf.enable_dad:
                    sysctl.write(f"net/ipv6/conf/{args.ifname}/enhanced_dad", "1", missing_ok=True)
                sysctl.write(f"net/ipv6/conf/{args.ifname}/accept_dad", dad, missing_ok=True)
                sysctl.write(f"net/ipv4/conf/{args.ifname}/arp_notify", "1", missing_ok=True)
                addr.configure_interface(container, args.ifname, result, 2)
            if conf.is_gateway:
                for gateway in gateways:
                    ensure_bridge_address(host, br, gateway, conf.force_address)
                sysctl.enable_forwarding(
                    ipv4=any(g.version == 4 for g in gateways), ipv6=any(g.version == 6 for g in gateways)
                )
            if conf.ip_masq:
                rollback.push(
                    "ipMasq rules",
                    lambda: masquerade.teardown(conf.network, args.ifname, args.container_id, args.after_reply),
                )
                addresses = [ip.address for ip in result.ips]
                masquerade.setup(addresses, conf.network, args.ifname, args.container_id, args.after_reply)
        elif not conf.disable_container_interface:
            link.set_up(container, args.ifname)

        if not conf.disable_container_interface:
            wait_oper_up(host, host_veth.name)
        result.interfaces[0].mac = link.get(host, br.name).mac
        result.interfaces[1].mac = link.get(host, host_veth.name).mac
        if conf.dns is not None:
            result.dns = conf.dns
        rollback.commit(result, args.cni_version)
    return result


def attach_port(host: IPRoute, br: LinkInfo, host_veth: LinkInfo, conf: BridgeConf) -> None:
    """Enslave the host veth and set its port flags and VLANs."""
    ipr = host
    link.set_attrs(ipr, host_veth, master=br.index)
    link.set_bridge_port(ipr, host_veth, hairpin=conf.hairpin, isolated=conf.port_isolation)
    if conf.vlan_filtering and not conf.preserve_default_vlan:
        link.bridge_vlan_del(ipr, host_veth, 1)
    if conf.vlan:
        link.bridge_vlan_add(ipr, host_veth, conf.vlan, pvid=True, untagged=True)
    for vid in conf.vlan_trunk:
        link.bridge_vlan_add(ipr, host_veth, vid)
    if not conf.vlan and conf.vlan_trunk:
        link.bridge_vlan_add(ipr, host_veth, 1, pvid=True, untagged=True)


def calc_gateways(result: Result, conf: BridgeConf) -> list[IPInterface]:
    """Point every IP at the container veth (index 2), fill in gateways and the default route.

    Returns the ``gateway/prefix`` addresses the bridge must carry when it is the gateway.
    """
    gateways: list[IPInterface] = []
    default_found: set[int] = set()
    for ip in result.ips:
        family = ip.address.version
        ip.interface = 2
        if ip.gateway is None and conf.is_gateway:
            ip.gateway = ip.address.network.network_address + 1
        if conf.is_default_gateway and family not in default_found:
            default = ipaddress.ip_interface("0.0.0.0/0" if family == 4 else "::/0")
            if not any(r.gw is not None and r.dst == default for r in result.routes):
                result.routes.append(Route(dst=default, gw=ip.gateway))
            default_found.add(family)
        if conf.is_gateway and ip.gateway is not None:
            gateways.append(ipaddress.ip_interface(f"{ip.gateway}/{ip.address.network.prefixlen}"))
    return gateways


def ensure_bridge_address(host: IPRoute, br: LinkInfo, gateway: IPInterface, force: bool) -> None:
    """Give the bridge the gateway address; a conflicting one is an error unless ``forceAddress``."""
    ipr = host
    family = addr.family_of(gateway.version)
    for existing in addr.addresses(ipr, br.index, family):
        if existing == gateway:
            return
        conflicts = gateway.version == 4 or gateway.ip in existing.network or existing.ip in gateway.network
        if conflicts:
            if not force:
                raise CNIError(
                    ErrorCode.INTERNAL,
                    f'"{br.name}" already has an IP address different from {gateway}',
                    "set forceAddress to replace it, or use another bridge",
                )
            addr.del_address(ipr, br.index, existing)
    addr.add_address(ipr, br.index, gateway, br.name)
    # Pin the bridge MAC, or it takes the lowest MAC of its ports and changes as they come and go.
    current = link.get(ipr, br.name)
    link.set_attrs(ipr, current, address=current.mac)


def wait_oper_up(host: IPRoute, name: str) -> None:
    """Wait for the host veth to come up as a bridge port (the reference allows ~2.5 s).

    The kernel reports the state change asynchronously, usually within a few
    milliseconds, so poll often at first instead of the reference's fixed steps.
    """
    deadline = time.monotonic() + OPER_UP_TIMEOUT
    delay = 0.001
    while True:
        state = link.get(host, name).operstate
        if state == "UP":
            return
        if time.monotonic() > deadline:
            raise CNIError(ErrorCode.INTERNAL, f"bridge port in error state: {state}")
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


# -- DEL ---------------------------------------------------------------------


@plugin.delete
def delete(args: CmdArgs) -> None:
    """Release IPAM first, while the interface still exists (dhcp sends its DHCPRELEASE
    from it; Go deletes the link first, so its dhcp leases linger until they expire)."""
    conf = load_conf(args)
    ipam = Ipam(args)
    ipam.delete()
    delete_container_link(args)
    if conf.mac_spoof_check:
        spoofcheck.teardown(unique_id(args))
    if ipam and conf.ip_masq:
        masquerade.teardown(conf.network, args.ifname, args.container_id, args.after_reply)


# -- CHECK -------------------------------------------------------------------


@plugin.check
def check(args: CmdArgs) -> None:
    conf = load_conf(args)
    ipam = Ipam(args)
    ipam.check()
    result = prev_result_required(args)
    bridge_iface = next((i for i in result.interfaces if i.name == conf.bridge), None)
    cont_iface = next((i for i in result.interfaces if i.name == args.ifname and i.sandbox == args.netns), None)
    if bridge_iface is None:
        raise CNIError(ErrorCode.INTERNAL, f"CNI created bridge {conf.bridge} in host namespace was not found")
    if cont_iface is None:
        raise CNIError(ErrorCode.INTERNAL, f"CNI created interface in container {args.ifname} not found")
    with netns.iproute_here() as host:
        br = link.find(host, conf.bridge)
        if br is None or br.kind != "bridge":
            raise CNIError(ErrorCode.INTERNAL, f"CNI created bridge {conf.bridge} in host namespace was not found")
        if bridge_iface.mac and br.mac != bridge_iface.mac:
            raise CNIError(ErrorCode.INTERNAL, f"Bridge interface {conf.bridge} Mac doesn't match: {bridge_iface.mac}")
        if br.promisc != conf.promisc:
            raise CNIError(ErrorCode.INTERNAL, f"Error: Expected promiscuous mode {conf.promisc} on {conf.bridge}")
        with netns.handle(args.netns, args.netns_fd) as ns_fd, netns.iproute(args.netns, ns_fd) as container:
            cont = link.find(container, args.ifname)
            if cont is None or cont.kind != "veth":
                raise CNIError(ErrorCode.INTERNAL, f"Error: Container interface {args.ifname} not of type veth")
            if cont_iface.mac and cont.mac != cont_iface.mac:
                raise CNIError(ErrorCode.INTERNAL, f"Interface {args.ifname} Mac {cont.mac} doesn't match")
            peer = link.by_index(host, cont.peer_index)
            if peer is None or peer.master != br.index:
                raise CNIError(ErrorCode.INTERNAL, f"CNI veth created for bridge {conf.bridge} was not found")
            check_addresses_and_routes(args, container, ns_fd, result, result.interfaces.index(cont_iface))
    if conf.ip_masq and Ipam(args):
        unmasked = masquerade.missing([ip.address for ip in result.ips], conf.network, args.ifname, args.container_id)
        if unmasked:
            raise CNIError(ErrorCode.INTERNAL, f"ipMasq: no masquerade rule covers {', '.join(unmasked)}")


# -- GC and STATUS -----------------------------------------------------------


@plugin.gc
def gc(args: CmdArgs) -> None:
    conf = load_conf(args)
    gc_masquerade_and_ipam(args, conf.network, conf.ip_masq)


@plugin.status
def status(args: CmdArgs) -> None:
    Ipam(args).status()


if __name__ == "__main__":
    plugin.main()
