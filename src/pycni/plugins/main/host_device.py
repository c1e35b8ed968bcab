"""host-device: move an existing host device into the container, and back on DEL (reference ``host-device``).

The device is chosen by ``device`` (name), ``hwaddr``, ``kernelpath``
(``/sys/devices/...``), ``pciBusID`` or ``runtimeConfig.deviceID`` (a PCI or
auxiliary-bus device), first match in that order, as in Go. It goes through
a temporary namespace where it is renamed to ``CNI_IFNAME`` and keeps its
host name as alias; DEL moves it back under that name. A PCI function bound
to a DPDK driver (vfio-pci, uio_pci_generic, igb_uio) has no netdev: nothing
is moved and IPAM results are reported but not applied.
Differences, on the safe side: a failed ADD also moves the device back (Go
only releases the address); DEL releases the address even without a netns
and succeeds when the netns or the device is already gone (even a
``runtimeConfig.deviceID`` that no longer exists, where Go's DEL fails); a selector that
finds nothing is code 7.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pycni.net import addr, link, netns, sublink
from pycni.net.link import LinkInfo
from pycni.plugins.common import Ipam, Rollback, config_dns, container_check, prev_result_required
from pycni.skel import CmdArgs, Plugin
from pycni.spec import DNS, CNIError, ErrorCode, Interface, Result

if TYPE_CHECKING:
    from pyroute2 import IPRoute

plugin = Plugin("host-device")


@dataclass
class HostDeviceConf:
    device: str = ""
    hwaddr: str = ""
    kernelpath: str = ""
    pci_address: str = ""
    aux_device: str = ""
    dpdk: bool = False
    dns: DNS | None = None
    device_gone: bool = False  # DEL only: runtimeConfig.deviceID names a device that no longer exists


def load_conf(args: CmdArgs, deleting: bool = False) -> HostDeviceConf:
    """The selectors, with ``runtimeConfig.deviceID`` resolved on the PCI or auxiliary bus.

    ``deleting``: a deviceID that is gone (a removed VF) is not an error; there is nothing to move back.
    """
    conf = args.fields
    parsed = HostDeviceConf(
        device=conf.link_name("device"),
        hwaddr=conf.string("hwaddr"),
        kernelpath=conf.os_string("kernelpath"),
        pci_address=conf.os_string("pciBusID"),
        dns=config_dns(conf),
    )
    device_id = args.runtime_config("deviceID")
    if device_id:
        if not isinstance(device_id, str):
            raise CNIError(ErrorCode.INVALID_NETWORK_CONFIG, "runtimeConfig.deviceID must be a string")
        if os.path.exists(os.path.join(sublink.SYS_BUS_PCI, device_id)):
            parsed.pci_address = device_id
        elif os.path.exists(os.path.join(sublink.SYS_BUS_AUXILIARY, device_id)):
            parsed.pci_address, parsed.aux_device = "", device_id
        elif deleting:
            parsed.device_gone = True
            return parsed
        else:
            raise CNIError(
                ErrorCode.INVALID_NETWORK_CONFIG, f"runtime config DeviceID {device_id} not found or unsupported"
            )
    if not (parsed.device or parsed.hwaddr or parsed.kernelpath or parsed.pci_address or parsed.aux_device):
        raise CNIError(
            ErrorCode.INVALID_NETWORK_CONFIG, 'specify either "device", "hwaddr", "kernelpath" or "pciBusID"'
        )
    if parsed.pci_address:
        parsed.dpdk = dpdk_bound(parsed.pci_address)
    return parsed


def dpdk_bound(pci_address: str) -> bool:
    try:
        return sublink.has_userspace_driver(pci_address)
    except CNIError as error:
        raise CNIError(ErrorCode.INVALID_NETWORK_CONFIG, error.msg) from None


def host_device(host: IPRoute, conf: HostDeviceConf) -> LinkInfo:
    """The device the config selects, looked up in the host (the plugin's own) namespace."""
    try:
        if conf.device:
            name = conf.device
        elif conf.hwaddr:
            found = sublink.link_by_mac(host, conf.hwaddr)
            if found is None:
                raise CNIError(ErrorCode.INVALID_NETWORK_CONFIG, "failed to find physical interface")
            return found
        elif conf.kernelpath:
            name = sublink.kernelpath_netdev(conf.kernelpath)
        elif conf.pci_address:
            name = sublink.pci_netdev(conf.pci_address)
        else:
            name = sublink.auxiliary_netdev(conf.aux_device)
        found = link.find(host, name)
        if found is None:
            raise CNIError(ErrorCode.INVALID_NETWORK_CONFIG, f"{name}: Link not found")
        return found
    except CNIError as error:
        raise CNIError(ErrorCode.INVALID_NETWORK_CONFIG, f"failed to find host device: {error.msg}") from None


def give_back(host: IPRoute, container: IPRoute, ns_fd: int, ifname: str, device: LinkInfo) -> None:
    """Undo a move of a failed ADD: the device returns under its name, and up if it was."""
    if sublink.move_out(container, ns_fd, ifname) and device.up:
        link.set_up(host, device.name)


@plugin.add
def add(args: CmdArgs) -> Result:
    conf = load_conf(args)
    ipam = Ipam(args)
    with (
        netns.handle(args.netns, args.netns_fd) as ns_fd,
        netns.iproute(args.netns, ns_fd) as container,
        netns.iproute_here() as host,
        Rollback() as rollback,
    ):
        iface = Interface(name=args.ifname, sandbox=args.netns)
        if not conf.dpdk:
            device = host_device(host, conf)
            moved = sublink.move_in(host, device, ns_fd, args.ifname)
            rollback.push(f"move of {device.name}", lambda: give_back(host, container, ns_fd, args.ifname, device))
            iface.name, iface.mac = moved.name, moved.mac
        result = Result("1.1.0", interfaces=[iface])
        if ipam:
            ipam_result = ipam.allocate(rollback)
            result.ips, result.routes = ipam_result.ips, ipam_result.routes
            for ip in result.ips:
                ip.interface = 0
            if not conf.dpdk:
                with netns.entered(args.netns, ns_fd):
                    addr.configure_interface(container, args.ifname, result, 0)
            result.dns = conf.dns or DNS()
        rollback.commit(result, args.cni_version)
    return result


@plugin.delete
def delete(args: CmdArgs) -> None:
    conf = load_conf(args, deleting=True)
    Ipam(args).delete()
    if conf.device_gone or conf.dpdk or (not args.netns and args.netns_fd is None):
        return
    try:
        with netns.handle(args.netns, args.netns_fd) as ns_fd, netns.iproute(args.netns, ns_fd) as container:
            sublink.move_out(container, ns_fd, args.ifname)
    except netns.NetnsNotFound:
        pass  # a physical device went back to the initial namespace with it; a virtual one is gone


@plugin.check
def check(args: CmdArgs) -> None:
    conf = load_conf(args)
    Ipam(args).check()
    if conf.dpdk:
        prev_result_required(args)
        return
    with container_check(args) as attached:
        attached.link(None)
        attached.addresses_and_routes()


@plugin.gc
def gc(args: CmdArgs) -> None:
    Ipam(args).gc()


@plugin.status
def status(args: CmdArgs) -> None:
    Ipam(args).status()


if __name__ == "__main__":
    plugin.main()
