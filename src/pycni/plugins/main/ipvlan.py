"""ipvlan: an ipvlan sub-interface of a master in the container (reference ``plugins/main/ipvlan``).

Keys: ``master``, ``mode`` (l2, l3, l3s), ``mtu``, ``linkInContainer``,
``ipam``, ``dns``. ipvlan links share their master's MAC.

Chained mode, as in Go: with a ``prevResult`` and no ``master``, the master
is the single named interface of ``prevResult``; with a ``prevResult`` that
has IPs and no ``ipam``, those IPs (and routes) go on the ipvlan link.
Differences, on the safe side: the MTU is checked against the master's
(code 7, where the kernel would say EINVAL), a config with neither IPAM nor
chained IPs is refused before anything is made, a failed ADD removes the
link, and DEL never needs the master (Go's DEL fails without a default route).
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

plugin = Plugin("ipvlan")


@dataclass
class IpvlanConf:
    master: str
    mode: str
    mtu: int
    link_in_container: bool
    dns: DNS | None


def load_conf(args: CmdArgs) -> IpvlanConf:
    """The typed keys; nothing here touches the kernel, so DEL can always load them."""
    conf = args.fields
    return IpvlanConf(
        master=conf.link_name("master"),
        mode=conf.string("mode"),
        mtu=conf.integer("mtu"),
        link_in_container=conf.boolean("linkInContainer"),
        dns=config_dns(conf),
    )


def mode_of(conf: IpvlanConf) -> int:
    return sublink.mode_value("ipvlan", sublink.IPVLAN_MODES, conf.mode, "l2")


def chained_master(prev: Result | None) -> str:
    """With no ``master``: the single named interface of ``prevResult``, or "" for the default route."""
    if prev is None:
        return ""
    if len(prev.interfaces) == 1 and prev.interfaces[0].name:
        return prev.interfaces[0].name
    raise CNIError(
        ErrorCode.INVALID_NETWORK_CONFIG,
        "chained master failure. PrevResult lacks a single named interface",
        'set "master", or chain ipvlan after a plugin that reports exactly one interface',
    )


@plugin.add
def add(args: CmdArgs) -> Result:
    conf = load_conf(args)
    mode = mode_of(conf)
    ipam = Ipam(args)
    prev = args.prev_result()
    prev = prev.as_version("1.1.0") if prev is not None else None
    master_name = conf.master or chained_master(prev)
    chained = prev if not ipam and prev is not None and prev.ips else None
    if not ipam and chained is None:
        raise CNIError(
            ErrorCode.INVALID_NETWORK_CONFIG,
            "ipvlan needs an IPAM configuration (ipam.type) or a prevResult with IPs",
        )

    with (
        netns.handle(args.netns, args.netns_fd) as ns_fd,
        netns.iproute(args.netns, ns_fd) as container,
        netns.iproute_here() as host,
        Rollback() as rollback,
    ):
        parent_ns = container if conf.link_in_container else host
        parent = sublink.master(parent_ns, master_name, conf.mtu)
        created = sublink.create(parent_ns, container, ns_fd, args.ifname, sublink.ipvlan(parent.index, mode, conf.mtu))
        rollback.push(f"ipvlan {args.ifname}", lambda: link.delete(container, args.ifname))

        result = chained if chained is not None else ipam.allocate(rollback)
        for ip in result.ips:
            ip.interface = 0
        result.interfaces = [Interface(name=args.ifname, mac=created.mac, sandbox=args.netns)]
        with netns.entered(args.netns, ns_fd):
            sublink.announce(args.ifname)
            addr.configure_interface(container, args.ifname, result, 0)
        result.dns = conf.dns or DNS()  # the config's, even over a chained prevResult's (as Go)
        rollback.commit(result, args.cni_version)
    return result


@plugin.delete
def delete(args: CmdArgs) -> None:
    load_conf(args)
    Ipam(args).delete()  # chained without ipam: the addresses belong to the previous plugin
    delete_container_link(args)


@plugin.check
def check(args: CmdArgs) -> None:
    conf = load_conf(args)
    mode = mode_of(conf)
    ipam = Ipam(args)
    ipam.check()
    with container_check(args, host=True) as attached:
        if conf.master or ipam:  # chained without master: ADD took it from a prevResult CHECK does not have
            sublink.master(attached.parent_ns(conf.link_in_container), conf.master)
        found = attached.link("ipvlan")
        actual = sublink.info_data(attached.container, found.index).get("IFLA_IPVLAN_MODE")
        if actual is not None and actual != mode:
            raise CNIError(
                ErrorCode.INTERNAL,
                f"Container IPVlan mode {sublink.mode_name(sublink.IPVLAN_MODES, actual)} does not match "
                f"expected value: {sublink.mode_name(sublink.IPVLAN_MODES, mode)}",
            )
        attached.addresses_and_routes()


@plugin.gc
def gc(args: CmdArgs) -> None:
    load_conf(args)
    Ipam(args).gc()


@plugin.status
def status(args: CmdArgs) -> None:
    Ipam(args).status()


if __name__ == "__main__":
    plugin.main()
