"""host-local IPAM: addresses from configured ranges, reserved as files on the local disk.

Config and on-disk state are the reference's (``plugins/ipam/host-local``), so
this plugin and Go's can serve one network from one ``dataDir`` side by side.
Beyond the reference it implements GC (drop reservations of attachments the
runtime no longer knows) and STATUS (fail with code 50 once a range set is
full). Errors keep Go's words in ``msg``; ``details`` names the key to fix.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from pycni.ipam.allocator import allocate
from pycni.ipam.config import RequestedIP, ipam_section, parse_ip, parse_routes, read_resolv_conf, requested_ips
from pycni.ipam.ranges import Range, RangeError, RangeSet, make_range, make_range_set
from pycni.ipam.store import Reservation, Store, owner_key
from pycni.skel import CmdArgs, Plugin
from pycni.spec import DNS, CNIError, ErrorCode, Fields, Result, Route
from pycni.spec.fields import parse_cidr_field
from pycni.spec.jsonutil import type_name
from pycni.spec.result import IPAddress
from pycni.spec.version import greater_than_or_equal

log = logging.getLogger(__name__)
plugin = Plugin("host-local")

EXAMPLE_RANGES = '[[{"subnet": "10.1.2.0/24"}]]'


@dataclass
class HostLocalConfig:
    """The ``ipam`` section after validation (Go's ``LoadIPAMConfig``)."""

    name: str
    data_dir: str
    range_sets: list[RangeSet]
    routes: list[Route]
    resolv_conf: str
    requested: list[RequestedIP]


def store_for(args: CmdArgs, ipam: Fields) -> Store:
    return Store(args.name, ipam.os_string("dataDir"))


def load_config(args: CmdArgs) -> HostLocalConfig:
    """Everything ADD, CHECK and STATUS need, or code 7 naming what to fix."""
    ipam = ipam_section(args.fields)
    requested = requested_ips(args.cni_args(("IP",)), args.fields, args.runtime_config("ips"))
    range_sets = load_range_sets(args, ipam)
    return HostLocalConfig(
        name=args.name,
        data_dir=ipam.os_string("dataDir"),
        range_sets=range_sets,
        routes=parse_routes(ipam),
        resolv_conf=ipam.string("resolvConf"),
        requested=requested,
    )


def load_range_sets(args: CmdArgs, ipam: Fields) -> list[RangeSet]:
    """``runtimeConfig.ipRanges``, then the legacy top-level range, then ``ipam.ranges``, checked."""
    raw: list[tuple[str, list[Fields]]] = []
    runtime_ranges = args.runtime_config("ipRanges")
    if runtime_ranges is not None:
        raw.extend(_range_set_fields(Fields({"ipRanges": runtime_ranges}, "runtimeConfig"), "ipRanges"))
    if ipam.has("subnet"):
        raw.append(("ipam", [ipam]))
    raw.extend(_range_set_fields(ipam, "ranges"))
    if not raw:
        raise CNIError(
            ErrorCode.INVALID_NETWORK_CONFIG,
            "no IP ranges specified",
            f"give ipam.ranges, a list of range sets such as {EXAMPLE_RANGES}",
        )

    range_sets = [_range_set(index, where, entries) for index, (where, entries) in enumerate(raw)]
    per_family = [sum(1 for s in range_sets if s.version == family) for family in (4, 6)]
    if max(per_family) > 1 and not greater_than_or_equal(args.cni_version, "0.3.0"):
        raise CNIError(
            ErrorCode.INVALID_NETWORK_CONFIG,
            f"CNI version {args.cni_version} does not support more than 1 address per family",
            "use cniVersion 0.3.0 or later, or at most one IPv4 and one IPv6 range set",
        )
    for i, first in enumerate(range_sets):
        for j in range(i + 1, len(range_sets)):
            if first.overlaps(range_sets[j]):
                raise CNIError(
                    ErrorCode.INVALID_NETWORK_CONFIG,
                    f"range set {i} overlaps with {j}",
                    f"{raw[i][0]} ({first}) and {raw[j][0]} ({range_sets[j]}) share addresses; "
                    "range sets must be disjoint",
                )
    return range_sets


def _range_set_fields(parent: Fields, key: str) -> list[tuple[str, list[Fields]]]:
    """The range sets under ``parent[key]``: a list of lists of range objects."""
    found = []
    for index, item in enumerate(parent.array(key)):
        where = f"{parent.where}.{key}[{index}]"
        if not isinstance(item, list):
            raise CNIError(
                ErrorCode.INVALID_NETWORK_CONFIG,
                f"{where}: expected a list of ranges, got {type_name(item)}",
                f"each range set is itself a list, e.g. {EXAMPLE_RANGES}",
            )
        entries = []
        for position, entry in enumerate(item):
            if not isinstance(entry, dict):
                raise CNIError(
                    ErrorCode.INVALID_NETWORK_CONFIG,
                    f"{where}[{position}]: expected a range object, got {type_name(entry)}",
                    'a range is an object such as {"subnet": "10.1.2.0/24"}',
                )
            entries.append(Fields(entry, f"{where}[{position}]"))
        found.append((where, entries))
    return found


def _range_set(index: int, where: str, entries: list[Fields]) -> RangeSet:
    ranges = [_range(index, entry) for entry in entries]
    try:
        return make_range_set(ranges)
    except RangeError as exc:
        fix = {
            "empty range set": f"give at least one range, e.g. {EXAMPLE_RANGES}",
            "mixed address families": "put IPv4 and IPv6 subnets in separate range sets",
        }.get(str(exc), "the ranges of one set must not share addresses")
        raise CNIError(
            ErrorCode.INVALID_NETWORK_CONFIG, f"invalid range set {index}: {exc}", f"{where}: {fix}"
        ) from None


def _range(index: int, entry: Fields) -> Range:
    """One range object: ``subnet`` (required), ``rangeStart``, ``rangeEnd``, ``gateway``."""
    text = entry.string("subnet")
    if not text:
        raise CNIError(
            ErrorCode.INVALID_NETWORK_CONFIG,
            f"invalid range set {index}: {entry.where}.subnet is missing",
            "give the subnet to allocate from in CIDR notation, e.g. 10.1.2.0/24",
        )
    subnet = parse_cidr_field(text, f"{entry.where}.subnet")
    start, end, gateway = (_address(entry, key) for key in ("rangeStart", "rangeEnd", "gateway"))
    try:
        return make_range(subnet, start, end, gateway)
    except RangeError as exc:
        message = str(exc)
        network = subnet.network
        if message.startswith("RangeStart"):
            fix = f"rangeStart: pick an address inside {network}, not after rangeEnd"
        elif message.startswith("RangeEnd"):
            fix = f"rangeEnd: pick an address inside {network}, not before rangeStart"
        elif message.startswith("Gateway"):
            fix = f"gateway: give an IPv{network.version} address"
        elif "host bits" in message:
            fix = f"subnet: write the network address, {network}"
        else:
            fix = "subnet: use a prefix that leaves at least two addresses (at most /30 or /126)"
        raise CNIError(
            ErrorCode.INVALID_NETWORK_CONFIG, f"invalid range set {index}: {message}", f"{entry.where}.{fix}"
        ) from None


def _address(entry: Fields, key: str) -> IPAddress | None:
    text = entry.string(key)
    if not text:
        return None
    ip = parse_ip(text)
    if ip is None:
        raise CNIError(ErrorCode.INVALID_NETWORK_CONFIG, f"{entry.where}.{key}: {text!r} is not an IP address")
    return ip


@plugin.add
def add(args: CmdArgs) -> Result:
    conf = load_config(args)
    dns = read_resolv_conf(conf.resolv_conf) if conf.resolv_conf else DNS()
    store = Store(conf.name, conf.data_dir)
    store.create()
    allocations = allocate(store, conf.range_sets, args.container_id, args.ifname, conf.requested)
    return Result(
        cni_version="1.1.0",
        ips=[allocation.to_ip_config() for allocation in allocations],
        routes=conf.routes,
        dns=dns,
    )


@plugin.delete
def delete(args: CmdArgs) -> None:
    """Release whatever this attachment holds; needs only the network name and ``dataDir``.

    Go parses (and may reject) the whole config first; releasing does not
    depend on the ranges, so a DEL never fails on a config it could serve.
    """
    store = store_for(args, ipam_section(args.fields))
    if not store.exists():
        return
    with store.locked():
        store.release_by_id(args.container_id, args.ifname)
        store.sweep()


@plugin.check
def check(args: CmdArgs) -> None:
    """As the reference: the attachment holds *some* address in the network's directory."""
    conf = load_config(args)
    store = Store(conf.name, conf.data_dir)
    found = False
    if store.exists():
        with store.locked():
            found = store.find(args.container_id, args.ifname)
    if not found:
        raise CNIError(ErrorCode.INTERNAL, f"host-local: Failed to find address added by container {args.container_id}")


@plugin.gc
def gc(args: CmdArgs) -> None:
    """Drop every reservation whose attachment is not in ``cni.dev/valid-attachments``.

    An ID-only legacy file survives if its container has any valid
    attachment. A reservation whose content says whose it is not (garbage,
    empty, unreadable, a directory, a symlink) or could be a valid
    attachment's cut short (it begins a valid owner line) may be a live
    container's: it is kept, with a warning naming it, unless nothing is
    valid at all, so that its address is never handed out twice. Errors do
    not stop the sweep; they are reported together.
    """
    listed = args.valid_attachments()
    if listed is None:
        return  # no list: nothing is known to be stale
    valid = set(listed)
    store = store_for(args, ipam_section(args.fields))
    if not store.exists():
        return
    errors: list[str] = []
    with store.locked():
        store.sweep()
        for reservation in store.reservations():
            verdict = gc_verdict(reservation, valid)
            if verdict == "unknown":
                log.warning(
                    "host-local GC: keeping %s: it does not say which attachment holds %s; "
                    "remove it by hand once no container uses that address",
                    reservation.path,
                    reservation.ip,
                )
            elif verdict == "stale":
                error = store.discard(reservation)
                if error:
                    errors.append(error)
    if errors:
        raise CNIError(ErrorCode.IO_FAILURE, "host-local GC: " + "; ".join(errors))


def gc_verdict(reservation: Reservation, valid: set[tuple[str, str]]) -> str:
    """``valid``, ``stale`` or ``unknown`` (kept: it may be a valid attachment's) for one reservation."""
    if not valid:
        return "stale"  # nothing is valid: whatever an entry holds, its address is free
    owner = reservation.owner
    if owner is None:
        return "unknown"
    container_id, ifname = owner
    if ifname is None:
        if any(container_id == valid_id for valid_id, _ifname in valid):
            return "valid"
    elif (container_id, ifname) in valid:
        return "valid"
    content = reservation.content or ""
    if any(owner_key(*pair).startswith(content) for pair in valid):
        return "unknown"  # a valid attachment's owner line, cut short
    return "stale"


@plugin.status
def status(args: CmdArgs) -> None:
    """Ready when the data directory is writable and every range set has a free address."""
    conf = load_config(args)
    store = Store(conf.name, conf.data_dir)
    try:
        store.check_usable()
    except OSError as exc:
        raise CNIError(
            ErrorCode.PLUGIN_NOT_AVAILABLE,
            f"host-local: data directory {store.dir} is not usable: {exc.strerror or exc}",
        ) from None
    taken: set[IPAddress] = set()
    if store.exists():
        with store.locked():
            taken = store.reserved_ips()
    for index, range_set in enumerate(conf.range_sets):
        if not range_set.has_free(taken):
            raise CNIError(
                ErrorCode.PLUGIN_NOT_AVAILABLE,
                f"range set {index} is exhausted: no IP addresses available in range set: {range_set}",
            )


if __name__ == "__main__":
    plugin.main()
