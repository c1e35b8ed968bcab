"""vlan: an 802.1q sub-interface of a master in the container (reference ``plugins/main/vlan``).

Keys: ``master`` (required), ``vlanId`` (0..4094), ``mtu`` (up to the
master's), ``linkInContainer``, ``ipam`` (required: Go always runs it),
``dns``. Each container needs its own ``(master, vlanId)`` pair: the kernel
allows one VLAN link per ID on a master.
Differences, on the safe side: a config without IPAM is refused (code 7)
before the link is made (Go makes it, then fails and leaves it behind);
DEL never needs the master (Go's DEL fails once the master is gone).
"""

from __future__ import annotations

from dataclasses import dataclass

from pycni.net import addr, link, netns, sublink
from pycni.plugins.common import (
    Ipam,
    Rollback,
    config_dns,
    container_check,
    delete_container_link,
)
from pycni.skel import CmdArgs, Plugin
from pycni.spec import DNS, CNIError, ErrorCode, Interface, Result

plugin = Plugin("vlan")


@dataclass
class VlanConf:
    master: str
    vlan_id: int
    mtu: int
    link_in_container: bool
    dns: DNS | None


def load_conf(args: CmdArgs, validate: bool = True) -> VlanConf:
    """The typed keys, range-checked unless for DEL (which must clean up whatever the config says)."""
    conf = args.fields
    parsed = VlanConf(
        master=conf.link_name("master"),
        vlan_id=conf.integer("vlanId"),
        mtu=conf.integer("mtu"),
        link_in_container=conf.boolean("linkInContainer"),
        dns=config_dns(conf),
    )
    if not validate:
        return parsed
    if not parsed.master:
        raise CNIError(
            ErrorCode.INVALID_NETWORK_CONFIG,
            '"master" field is required. It specifies the host interface name to create the VLAN for',
        )
    if not 0 <= parsed.vlan_id <= 4094:
        raise CNIError(
            ErrorCode.INVALID_NETWORK_CONFIG, f"invalid VLAN ID {parsed.vlan_id} (must be between 0 and 4094)"
        )
    return parsed


@plugin.add
def add(args: CmdArgs) -> Result:
    conf = load_conf(args)
    ipam = Ipam.required(args, "vlan")

    with (
        netns.handle(args.netns, args.netns_fd) as ns_fd,
        netns.iproute(args.netns, ns_fd) as container,
        netns.iproute_here() as host,
        Rollback() as rollback,
    ):
        parent_ns = container if conf.link_in_container else host
        parent = sublink.master(parent_ns, conf.master, conf.mtu)
        spec = sublink.vlan(parent.index, conf.vlan_id, conf.mtu)
        created = sublink.create(parent_ns, container, ns_fd, args.ifname, spec)
        rollback.push(f"vlan {args.ifname}", lambda: link.delete(container, args.ifname))

        result = ipam.allocate(rollback)
        for ip in result.ips:
            ip.interface = 0
        result.interfaces = [Interface(name=args.ifname, mac=created.mac, sandbox=args.netns)]
        with netns.entered(args.netns, ns_fd):
            addr.configure_interface(container, args.ifname, result, 0)
        result.dns = conf.dns or DNS()
        rollback.commit(result, args.cni_version)
    return result


@plugin.delete
def delete(args: CmdArgs) -> None:
    load_conf(args, validate=False)
    Ipam(args).delete()
    delete_container_link(args)


@plugin.check
def check(args: CmdArgs) -> None:
    conf = load_conf(args)
    Ipam.required(args, "vlan").check()
    with container_check(args, host=True) as attached:
        sublink.master(attached.parent_ns(conf.link_in_container), conf.master)
        found = attached.link("vlan")
        vlan_id = sublink.info_data(attached.container, found.index).get("IFLA_VLAN_ID")
        if vlan_id is not None and vlan_id != conf.vlan_id:
            raise CNIError(
                ErrorCode.INTERNAL, f"Error: container vlan {found.name} has VLAN ID {vlan_id}, expected {conf.vlan_id}"
            )
        if conf.mtu and conf.mtu != found.mtu:
            raise CNIError(
                ErrorCode.INTERNAL, f"Error: configured MTU of {found.name} is {conf.mtu}, current value is {found.mtu}"
            )
        attached.addresses_and_routes()


@plugin.gc
def gc(args: CmdArgs) -> None:
    load_conf(args, validate=False)
    Ipam(args).gc()


@plugin.status
def status(args: CmdArgs) -> None:
    Ipam(args).status()


if __name__ == "__main__":
    plugin.main()
