"""tap: a persistent tap device in the container, for a VM monitor to open (reference ``plugins/main/tap``).

Keys: ``mac`` (and ``runtimeConfig.mac``, ``CNI_ARGS`` ``MAC``), ``mtu``,
``multiQueue``, ``owner`` and ``group`` (uid/gid allowed to open it; unset
leaves it ownerless), ``selinuxContext`` (the tap is created by
``runcon CONTEXT ip tuntap``, as Go does through ``ip``), ``bridge`` (a
bridge already in the container to attach the tap to), ``ipam``, ``dns``.
Differences, on the safe side: taps are made with the tun ioctls directly
(same flags as Go ends up with); MAC and MTU are applied on every path (Go
drops them when both owner and group are set); a missing bridge, or one
that is not a bridge, is code 7; CHECK also verifies the tap itself.
"""

from __future__ import annotations

from pycni.net import addr, link, netns, sublink
from pycni.plugins.common import (
    MAX_MTU,
    Ipam,
    Rollback,
    config_dns,
    container_check,
    delete_container_link,
    requested_mac,
)
from pycni.skel import CmdArgs, Plugin
from pycni.spec import DNS, CNIError, ErrorCode, Interface, Result

plugin = Plugin("tap")

UINT32_MAX = 2**32 - 1


def load_tap(args: CmdArgs) -> sublink.Tap:
    """The tap's keys, typed (and the MAC normalised): configuration errors are code 7."""
    conf = args.fields
    mac = requested_mac(args, "mac")
    mtu = conf.integer("mtu", minimum=0)
    if mtu > MAX_MTU:
        raise CNIError(ErrorCode.INVALID_NETWORK_CONFIG, f"mtu: {mtu} is above the largest a tap takes, {MAX_MTU}")
    return sublink.Tap(
        mtu=mtu,
        mac=sublink.parse_mac(mac) if mac else "",
        multi_queue=conf.boolean("multiQueue"),
        owner=conf.integer("owner", minimum=0, maximum=UINT32_MAX) if conf.has("owner") else None,
        group=conf.integer("group", minimum=0, maximum=UINT32_MAX) if conf.has("group") else None,
        selinux_context=conf.os_string("selinuxContext"),
    )


@plugin.add
def add(args: CmdArgs) -> Result:
    spec = load_tap(args)
    bridge = args.fields.link_name("bridge")
    dns = config_dns(args.fields)
    ipam = Ipam(args)

    with (
        netns.handle(args.netns, args.netns_fd) as ns_fd,
        netns.iproute(args.netns, ns_fd) as container,
        Rollback() as rollback,
    ):
        created = sublink.create_tap(container, args.netns, ns_fd, args.ifname, spec, bridge)
        rollback.push(f"tap {args.ifname}", lambda: link.delete(container, args.ifname))
        result = Result("1.1.0", interfaces=[Interface(name=args.ifname, mac=created.mac, sandbox=args.netns)])
        if ipam:
            ipam_result = ipam.allocate(rollback)
            result.ips, result.routes = ipam_result.ips, ipam_result.routes
            for ip in result.ips:
                ip.interface = 0
            with netns.entered(args.netns, ns_fd):
                sublink.announce(args.ifname, ndisc=False)
                addr.configure_interface(container, args.ifname, result, 0)
        result.dns = dns or DNS()
        rollback.commit(result, args.cni_version)
    return result


@plugin.delete
def delete(args: CmdArgs) -> None:
    args.fields.link_name("bridge")
    Ipam(args).delete()
    delete_container_link(args)


@plugin.check
def check(args: CmdArgs) -> None:
    load_tap(args)
    Ipam(args).check()
    with container_check(args) as attached:
        attached.link("tun")
        attached.addresses_and_routes()


@plugin.gc
def gc(args: CmdArgs) -> None:
    Ipam(args).gc()


@plugin.status
def status(args: CmdArgs) -> None:
    Ipam(args).status()


if __name__ == "__main__":
    plugin.main()
