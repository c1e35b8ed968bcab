"""vrf: put the container interface into a VRF (reference ``plugins/meta/vrf``).

Keys: ``vrfname`` (required) and ``table`` (optional; otherwise the first
table no other VRF uses). ADD finds or creates the VRF in the container and
enslaves ``CNI_IFNAME``, keeping its global IPv6 addresses and moving its
routes into the VRF's table (:mod:`pycni.net.vrf`); it echoes ``prevResult``.
DEL takes the interface out and deletes the VRF when it has no members left.
Supported from spec 0.3.1, as in Go. No state is kept, so GC and STATUS have
nothing to do.

Differences from Go, on the safe side: configuration errors are code 7 (Go
reports 999); a failed ADD deletes a VRF it created and releases the
interface; a retried ADD that finds the interface already in the VRF is
success (Go fails: "already has a master"); DEL tolerates a missing
interface, and only releases the interface from *this* VRF (Go resets any
master); DEL of a name that is not a VRF leaves it alone.
"""

from __future__ import annotations

from dataclasses import dataclass

from pycni.net import netns
from pycni.net import vrf as vrfdev
from pycni.plugins.common import Rollback
from pycni.skel import CmdArgs, Plugin
from pycni.spec import CNIError, ErrorCode, Result
from pycni.spec.version import versions_from

plugin = Plugin("vrf", versions=versions_from("0.3.1"))


@dataclass
class VrfConf:
    name: str
    table: int


def load_conf(args: CmdArgs) -> VrfConf:
    conf = args.fields
    name = conf.link_name("vrfname")
    if not name:
        raise CNIError(ErrorCode.INVALID_NETWORK_CONFIG, "configuration is expected to have a valid vrf name")
    return VrfConf(name, conf.integer("table", minimum=0, maximum=vrfdev.MAX_TABLE))


def _prev_result(args: CmdArgs) -> Result:
    prev = args.prev_result()
    if prev is None:
        raise CNIError(ErrorCode.INVALID_NETWORK_CONFIG, "missing prevResult from earlier plugin")
    return prev


@plugin.add
def add(args: CmdArgs) -> Result:
    conf = load_conf(args)
    prev = _prev_result(args)
    with (
        netns.handle(args.netns, args.netns_fd) as ns_fd,
        netns.iproute(args.netns, ns_fd) as ipr,
        Rollback() as rollback,
    ):
        vrf = vrfdev.find(ipr, conf.name)
        if vrf is not None and conf.table and vrf.table != conf.table:
            raise CNIError(
                ErrorCode.INVALID_NETWORK_CONFIG,
                f"VRF {conf.name} already exist with different routing table {vrf.table}",
            )
        if vrf is None:
            vrf = vrfdev.create(ipr, conf.name, conf.table)
            created = vrf
            rollback.push(f"VRF {conf.name}", lambda: vrfdev.delete(ipr, created))
        if args.ifname not in vrfdev.members(ipr, vrf):  # a retried ADD finds it done
            enslaving = vrf
            rollback.push(f"{args.ifname} in VRF {conf.name}", lambda: vrfdev.release(ipr, enslaving, args.ifname))
            vrfdev.enslave(ipr, vrf, args.ifname)
        rollback.commit()
    return prev


@plugin.delete
def delete(args: CmdArgs) -> None:
    conf = load_conf(args)
    if not args.netns and args.netns_fd is None:
        return
    try:
        with netns.iproute(args.netns, args.netns_fd) as ipr:
            try:
                vrf = vrfdev.find(ipr, conf.name)
            except CNIError:
                return  # the name is taken by something that is not a VRF: not ours
            if vrf is None:
                return
            vrfdev.release(ipr, vrf, args.ifname)
            if not vrfdev.members(ipr, vrf):
                vrfdev.delete(ipr, vrf)
    except netns.NetnsNotFound:
        return  # the container is gone, and its VRF with it


@plugin.check
def check(args: CmdArgs) -> None:
    conf = load_conf(args)
    _prev_result(args)
    with netns.iproute(args.netns, args.netns_fd) as ipr:
        vrf = vrfdev.find(ipr, conf.name)
        if vrf is None:
            raise CNIError(ErrorCode.INTERNAL, f"VRF {conf.name} not found")
        if args.ifname not in vrfdev.members(ipr, vrf):
            raise CNIError(ErrorCode.INTERNAL, f"failed to find {args.ifname} associated to vrf {conf.name}")


if __name__ == "__main__":
    plugin.main()
