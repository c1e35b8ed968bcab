"""loopback: bring ``lo`` up in the container (reference ``plugins/main/loopback``).

The interface name from ``CNI_IFNAME`` is ignored: this plugin only ever
works on ``lo``. With a ``prevResult`` it passes it through; otherwise it
reports ``lo`` with the loopback addresses it found.
"""

from __future__ import annotations

import socket

from pycni.net import addr, link, netns
from pycni.skel import CmdArgs, Plugin
from pycni.spec import CNIError, ErrorCode, Interface, IPConfig, Result

plugin = Plugin("loopback")


@plugin.add
def add(args: CmdArgs) -> Result:
    prev = args.prev_result()
    with netns.iproute(args.netns, args.netns_fd) as ipr:
        index = link.set_up(ipr, "lo")
        found = {family: addr.addresses(ipr, index, family) for family in (socket.AF_INET, socket.AF_INET6)}
    for addresses in found.values():
        for address in addresses:
            if not address.ip.is_loopback:
                raise CNIError(ErrorCode.INTERNAL, f"loopback interface found with non-loopback address {address}")
    if prev is not None:
        return prev
    result = Result(args.cni_version)
    index = result.add_interface(Interface(name="lo", mac="00:00:00:00:00:00", sandbox=args.netns))
    for family in (socket.AF_INET, socket.AF_INET6):
        if found[family]:
            result.ips.append(IPConfig(address=found[family][0], interface=index))
    return result


@plugin.delete
def delete(args: CmdArgs) -> None:
    if not args.netns and args.netns_fd is None:
        return
    try:
        with netns.iproute(args.netns, args.netns_fd) as ipr:
            link.set_up(ipr, "lo", up=False)
    except netns.NetnsNotFound:
        return  # the container is already gone: nothing to undo


@plugin.check
def check(args: CmdArgs) -> None:
    with netns.iproute(args.netns, args.netns_fd) as ipr:
        if not link.is_up(ipr, "lo"):
            raise CNIError(ErrorCode.INTERNAL, "loopback interface is down")


if __name__ == "__main__":
    plugin.main()
