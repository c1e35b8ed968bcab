"""dummy: a dummy link with IPAM addresses in the container (reference ``plugins/main/dummy``).

A dummy transmits nothing: it gives the container a routable, non-loopback
address, usually next to another plugin's interface. IPAM is required, and
the result keeps IPAM's DNS (unlike the sub-interface plugins, Go's dummy
does not replace it with the config's).
"""

from __future__ import annotations

from pycni.net import addr, link, netns, sublink
from pycni.plugins.common import Ipam, Rollback, delete_container_link
from pycni.skel import CmdArgs, Plugin
from pycni.spec import CNIError, ErrorCode, Interface, Result

plugin = Plugin("dummy")


@plugin.add
def add(args: CmdArgs) -> Result:
    ipam = Ipam.required(args, "dummy interface")
    with (
        netns.handle(args.netns, args.netns_fd) as ns_fd,
        netns.iproute(args.netns, ns_fd) as container,
        Rollback() as rollback,
    ):
        created = sublink.create_dummy(container, args.ifname)
        rollback.push(f"dummy {args.ifname}", lambda: link.delete(container, args.ifname))
        result = ipam.allocate(rollback)
        for ip in result.ips:
            ip.interface = 0
        result.interfaces = [Interface(name=args.ifname, mac=created.mac, sandbox=args.netns)]
        with netns.entered(args.netns, ns_fd):
            addr.configure_interface(container, args.ifname, result, 0)
        rollback.commit(result, args.cni_version)
    return result


@plugin.delete
def delete(args: CmdArgs) -> None:
    Ipam(args).delete()
    delete_container_link(args)


@plugin.check
def check(args: CmdArgs) -> None:
    Ipam.required(args, "dummy interface").check()
    prev = args.prev_result()
    if prev is None:
        raise CNIError(ErrorCode.INVALID_NETWORK_CONFIG, "dummy: Required prevResult missing")
    result = prev.as_version("1.1.0")
    index, iface = sublink.expected_interface(result, args.ifname, args.netns)
    with netns.handle(args.netns, args.netns_fd) as ns_fd, netns.iproute(args.netns, ns_fd) as container:
        found = sublink.check_container_link(container, iface, "dummy")
        if not found.up:
            raise CNIError(ErrorCode.INTERNAL, f"Interface {iface.name} is down")
        with netns.entered(args.netns, ns_fd):
            addr.validate_interface_addresses(container, args.ifname, result, index)


@plugin.gc
def gc(args: CmdArgs) -> None:
    Ipam(args).gc()


@plugin.status
def status(args: CmdArgs) -> None:
    Ipam(args).status()


if __name__ == "__main__":
    plugin.main()
