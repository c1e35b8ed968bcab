"""ptp: a routed point-to-point veth per container (reference ``plugins/main/ptp``).

The container reaches everything through the gateway: its connected subnet
route is replaced by ``<gw>/32 dev eth0 scope link`` and ``<subnet> via <gw>``,
so even same-subnet traffic is routed by the host. The host end carries the
gateway address (/32) and a host route to the container address.
Differences from Go, on the safe side: IPv6 DAD is off on the container end
(ADD never waits seconds), ipMasq uses nftables, a failed ADD removes what it
made, DEL removes masquerade rules even when the namespace is gone, and the
network's masquerade rule goes with its last container.
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING

from pycni.net import addr, link, netns, sysctl, veth
from pycni.net.link import LinkInfo
from pycni.nft import masquerade
from pycni.plugins.common import (
    MAX_MTU,
    Ipam,
    Rollback,
    check_addresses_and_routes,
    config_dns,
    delete_container_link,
    gc_masquerade_and_ipam,
    prev_result_required,
)
from pycni.skel import CmdArgs, Plugin
from pycni.spec import CNIError, ErrorCode, Interface, Result

if TYPE_CHECKING:
    from pyroute2 import IPRoute

plugin = Plugin("ptp")


@plugin.add
def add(args: CmdArgs) -> Result:
    conf = args.fields
    mtu = conf.integer("mtu", minimum=0, maximum=MAX_MTU)
    ip_masq = conf.boolean("ipMasq")
    dns = config_dns(conf)
    ipam = Ipam.required(args, "ptp")

    with (
        netns.handle(args.netns, args.netns_fd) as ns_fd,
        netns.iproute(args.netns, ns_fd) as container,
        netns.iproute_here() as host,
        Rollback() as rollback,
    ):
        result = ipam.allocate(rollback)
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
            rollback.push(
                "ipMasq rules", lambda: masquerade.teardown(args.name, args.ifname, args.container_id, args.after_reply)
            )
            masquerade.setup(
                [ip.address for ip in result.ips], args.name, args.ifname, args.container_id, args.after_reply
            )
        if dns is not None:
            result.dns = dns
        rollback.commit(result, args.cni_version)
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
    Ipam.required(args, "ptp").delete()
    delete_container_link(args)
    if ip_masq:
        masquerade.teardown(args.name, args.ifname, args.container_id, args.after_reply)


@plugin.check
def check(args: CmdArgs) -> None:
    ipam = Ipam.required(args, "ptp")
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
        check_addresses_and_routes(args, container, ns_fd, result, index)


@plugin.gc
def gc(args: CmdArgs) -> None:
    Ipam.required(args, "ptp")
    gc_masquerade_and_ipam(args, args.name, args.fields.boolean("ipMasq"))


@plugin.status
def status(args: CmdArgs) -> None:
    Ipam.required(args, "ptp").status()


if __name__ == "__main__":
    plugin.main()
