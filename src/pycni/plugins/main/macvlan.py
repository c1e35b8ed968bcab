"""macvlan: a macvlan sub-interface of a master in the container (reference ``plugins/main/macvlan``).

Keys and behaviour follow the Go plugin (``../shared/reference/cni-spec.md``
§3.1): the master defaults to the interface of the first default route, in
the host or, with ``linkInContainer``, in the container; ``mtu`` may not
exceed the master's; the result's ``dns`` is the config's, never IPAM's.
Differences, on the safe side: bad values (mode, MTU, MAC, a missing master)
are code 7; a failed ADD removes the link and releases the address even when
only the result conversion failed; DEL never needs the master.
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
    requested_mac,
)
from pycni.skel import CmdArgs, Plugin
from pycni.spec import DNS, CNIError, ErrorCode, Interface, Result

plugin = Plugin("macvlan")

UINT32_MAX = 2**32 - 1


@dataclass
class MacvlanConf:
    master: str
    mode: str
    mtu: int
    link_in_container: bool
    bcqueuelen: int
    dns: DNS | None


def load_conf(args: CmdArgs) -> MacvlanConf:
    """The typed keys; nothing here touches the kernel (or CNI_ARGS), so DEL can always load them."""
    conf = args.fields
    return MacvlanConf(
        master=conf.link_name("master"),
        mode=conf.string("mode"),
        mtu=conf.integer("mtu"),
        link_in_container=conf.boolean("linkInContainer"),
        bcqueuelen=conf.integer("bcqueuelen", minimum=0, maximum=UINT32_MAX),
        dns=config_dns(conf),
    )


def mode_of(conf: MacvlanConf) -> int:
    return sublink.mode_value("macvlan", sublink.MACVLAN_MODES, conf.mode, "bridge")


@plugin.add
def add(args: CmdArgs) -> Result:
    conf = load_conf(args)
    mode = mode_of(conf)
    mac = requested_mac(args, "mac")
    mac = sublink.parse_mac(mac) if mac else ""
    ipam = Ipam(args)

    with (
        netns.handle(args.netns, args.netns_fd) as ns_fd,
        netns.iproute(args.netns, ns_fd) as container,
        netns.iproute_here() as host,
        Rollback() as rollback,
    ):
        parent_ns = container if conf.link_in_container else host
        parent = sublink.master(parent_ns, conf.master, conf.mtu)
        spec = sublink.macvlan(parent.index, mode, conf.mtu, mac, conf.bcqueuelen)
        created = sublink.create(parent_ns, container, ns_fd, args.ifname, spec)
        rollback.push(f"macvlan {args.ifname}", lambda: link.delete(container, args.ifname))
        result = Result("1.1.0", interfaces=[Interface(name=args.ifname, mac=created.mac, sandbox=args.netns)])

        if ipam:
            ipam_result = ipam.allocate(rollback)
            result.ips, result.routes = ipam_result.ips, ipam_result.routes
            for ip in result.ips:
                ip.interface = 0
            with netns.entered(args.netns, ns_fd):
                sublink.announce(args.ifname)
                addr.configure_interface(container, args.ifname, result, 0)
        else:
            link.set_up(container, args.ifname)

        result.dns = conf.dns or DNS()
        rollback.commit(result, args.cni_version)
    return result


@plugin.delete
def delete(args: CmdArgs) -> None:
    load_conf(args)
    Ipam(args).delete()
    delete_container_link(args)


@plugin.check
def check(args: CmdArgs) -> None:
    conf = load_conf(args)
    mode = mode_of(conf)
    Ipam(args).check()
    with container_check(args, host=True) as attached:
        sublink.master(attached.parent_ns(conf.link_in_container), conf.master, conf.mtu)
        found = attached.link("macvlan")
        actual = sublink.info_data(attached.container, found.index).get("IFLA_MACVLAN_MODE")
        expected = sublink.mode_name(sublink.MACVLAN_MODES, mode)
        if actual is not None and sublink.mode_name(sublink.MACVLAN_MODES, actual) != expected:
            raise CNIError(
                ErrorCode.INTERNAL,
                f"container macvlan mode {sublink.mode_name(sublink.MACVLAN_MODES, actual)} "
                f"does not match expected value: {expected}",
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
