"""ptp: a routed point-to-point veth per container (reference ``plugins/main/ptp``).

The container reaches everything through the gateway: its connected subnet
route is replaced by ``<gw>/32 dev eth0 scope link`` and ``<subnet> via <gw>``,
so even same-subnet traffic is routed by the host. The host end carries the
gateway address (/32) and a host route to the container address.
Differences from Go, on the safe side: IPv6 DAD is off on the container end
(ADD never waits seconds), ipMasq uses nftables, a failed ADD removes what it
made, and DEL removes masquerade rules even when the namespace is gone.
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING

from pycni.net import addr, link, netns, sysctl, veth
from pycni.net.link import LinkInfo
from pycni.nft import masquerade
from pycni.plugins.common import Ipam, Rollback, config_dns, prev_result_required
from pycni.skel import CmdArgs, Plugin
from pycni.spec import CNIError, ErrorCode, Interface, Result

if TYPE_CHECKING:
    from pyroute2 import IPRoute

plugin = Plugin("ptp")


def _ipam(args: CmdArgs) -> Ipam:
    ipam = Ipam(args)
    if not ipam:
        raise CNIError(ErrorCode.INVALID_NETWORK_CONFIG, "ptp requires an IPAM configuration: set ipam.type")
    return ipam


@plugin.add
def add(args: CmdArgs) -> Result:
    conf = args.fields
    mtu = conf.integer("mtu", minimum=0)
    ip_masq = conf.boolean("ipMasq")
    dns = config_dns(conf)
    ipam = _ipam(args)

    with (
        netns.handle(args.netns, args.netns_fd) as ns_fd,
        netns.iproute(args.netns, ns_fd) as container,
        netns.iproute_here() as host,
        Rollback() as rollback,
    ):
        result = ipam.add()
        rollback.push(f"IPAM ({ipam.type}) address", ipam.delete)
        if not result.ips:
            raise CNIError(ErrorCode.INTERNAL, "IPAM plugin returned missing IP config")
        for ip in result.ips:
            if ip.gateway is None:
                raise CNIError(ErrorCode.INTERNAL, f"ptp needs a gateway for {ip.address}: IPAM returned none")
        sysctl.enable_forwarding(
            ipv4=any(ip.address.version == 4 for ip in result.ips),
            ipv6=any(ip.address.version == 6 for ip in result.ips),
        )
        host_veth, cont_veth = veth.create_pair(host, container, ns_fd, args.ifname, mtu)
        rollback.push(f"veth {host_veth.name}", lambda: link.delete(host, host_veth.name))
        for ip in result.ips:
            ip.interface = 1
        result.interfaces = [
            Interface(name=host_veth.name, mac=host_veth.mac),
            Interface(name=args.ifname, mac=cont_veth.mac, sandbox=args.netns),
        ]
        with netns.entered(args.netns, ns_fd):
            sysctl.write(f"net/ipv6/conf/{args.ifname}/accept_dad", "0", missing_ok=True)
            configure_container(container, args.ifname, result)
        configure_host(host, host_veth, result)
        if ip_masq:
            masquerade.setup([ip.address for ip in result.ips], args.name, args.ifname, args.container_id)
            rollback.push("ipMasq rules", lambda: masquerade.teardown(args.name, args.ifname, args.container_id))
        if dns is not None:
            result.dns = dns
        rollback.commit()
    return result


def configure_container(ipr: IPRoute, ifname: str, result: Result) -> None:
    """Addresses and routes, then route the subnet through the gateway instead of on-link."""
    addr.configure_interface(ipr, ifname, result, 1)
    index = link.index_of(ipr, ifname)
    for ip in result.ips:
        assert ip.gateway is not None
        bits = 32 if ip.address.version == 4 else 128
        subnet = ipaddress.ip_interface(ip.address.network)
        addr.del_route(ipr, subnet, oif=index)
        addr.add_route(
            ipr,
            ipaddress.ip_interface(f"{ip.gateway}/{bits}"),
            oif=index,
            scope=addr.RT_SCOPE_LINK,
            src=ip.address.ip,
        )
        addr.add_route(ipr, subnet, gateway=ip.gateway, oif=index, src=ip.address.ip)


def configure_host(ipr: IPRoute, host_veth: LinkInfo, result: Result) -> None:
    """The gateway address (/32 or /128) on the host end and a host route to each container address.

    Every host end carries the same gateway address, so IPv6 duplicate address
    detection there can only delay the first packets: it is turned off.
    """
    if any(ip.address.version == 6 for ip in result.ips):
        sysctl.write(f"net/ipv6/conf/{host_veth.name}/accept_dad", "0", missing_ok=True)
    for ip in result.ips:
        bits = 32 if ip.address.version == 4 else 128
        addr.add_address(ipr, host_veth.index, ipaddress.ip_interface(f"{ip.gateway}/{bits}"), host_veth.name)
        addr.add_route(ipr, ipaddress.ip_interface(f"{ip.address.ip}/{bits}"), oif=host_veth.index)


@plugin.delete
def delete(args: CmdArgs) -> None:
    ip_masq = args.fields.boolean("ipMasq")
    _ipam(args).delete()
    if args.netns or args.netns_fd is not None:
        try:
            with netns.iproute(args.netns, args.netns_fd) as container:
                link.delete(container, args.ifname)
        except netns.NetnsNotFound:
            pass  # the container is gone, and its veth with it
    if ip_masq:
        masquerade.teardown(args.name, args.ifname, args.container_id)


@plugin.check
def check(args: CmdArgs) -> None:
    ipam = _ipam(args)
    ipam.check()
    result = prev_result_required(args)
    cont_iface = next((i for i in result.interfaces if i.name == args.ifname and i.sandbox == args.netns), None)
    if cont_iface is None:
        raise CNIError(ErrorCode.INTERNAL, f"Sandbox in prevResult doesn't match configured netns: {args.netns}")
    index = result.interfaces.index(cont_iface)
    with netns.handle(args.netns, args.netns_fd) as ns_fd, netns.iproute(args.netns, ns_fd) as container:
        cont = link.find(container, args.ifname)
        if cont is None or cont.kind != "veth":
            raise CNIError(ErrorCode.INTERNAL, f"Error: Container interface {args.ifname} not of type veth")
        if cont_iface.mac and cont.mac != cont_iface.mac:
            raise CNIError(ErrorCode.INTERNAL, f"Interface {args.ifname} Mac {cont.mac} doesn't match")
        with netns.entered(args.netns, ns_fd):
            addr.validate_interface_addresses(container, args.ifname, result, index)
            addr.validate_routes(container, result)


@plugin.gc
def gc(args: CmdArgs) -> None:
    errors: list[str] = []
    if args.fields.boolean("ipMasq"):
        try:
            listed = args.valid_attachments()
            if listed is not None:
                masquerade.gc(args.name, listed)
        except CNIError as error:
            errors.append(str(error))
    try:
        _ipam(args).gc()
    except CNIError as error:
        errors.append(str(error))
    if errors:
        raise CNIError(ErrorCode.INTERNAL, "; ".join(errors))


@plugin.status
def status(args: CmdArgs) -> None:
    _ipam(args).status()


if __name__ == "__main__":
    plugin.main()
