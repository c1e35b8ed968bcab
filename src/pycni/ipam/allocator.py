"""host-local's allocation: one address per range set, round-robin, all or nothing.

The rules and messages are the reference's (``backend/allocator/allocator.go``
and ``main.go``'s ``cmdAdd``); two things are stricter, on purpose:

* requested IPs are matched to range sets *before* anything is reserved, so a
  request no range set can serve fails without touching the disk;
* a failure rolls back exactly the addresses this call reserved (Go releases
  everything the container ID holds, including an earlier ADD's addresses).

The whole call runs under the store's flock, so it cannot interleave with
another host-local (ours or Go's) working on the same directory.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pycni.ipam.config import RequestedIP
from pycni.ipam.ranges import Range, RangeSet, candidates
from pycni.ipam.store import Store
from pycni.spec import CNIError, ErrorCode, IPConfig
from pycni.spec.result import IPAddress


@dataclass(frozen=True)
class Allocation:
    """The address one range set gave, and the range it came from (for prefix and gateway)."""

    ip: IPAddress
    range: Range

    def to_ip_config(self) -> IPConfig:
        return IPConfig(address=self.range.interface(self.ip), gateway=self.range.gateway)


def assign_requests(range_sets: Sequence[RangeSet], requested: Sequence[RequestedIP]) -> list[RequestedIP | None]:
    """Which requested IP each range set must give: the first request it contains, else ``None``.

    A request no set takes (outside every set, or a second one for the same
    set) fails as ``failed to allocate all requested IPs``; requesting a
    range's gateway fails as the reference does.
    """
    remaining = list(requested)
    assigned: list[RequestedIP | None] = []
    for index, range_set in enumerate(range_sets):
        request = next((r for r in remaining if range_set.contains(r.ip)), None)
        if request is not None:
            remaining.remove(request)
            owner = range_set.range_for(request.ip)
            if owner is not None and request.ip == owner.gateway:
                raise CNIError(
                    request.code,
                    f"failed to allocate for range {index}: requested ip {request.ip} is subnet's gateway",
                    f"{request.source} asks for the gateway of {owner.subnet}; request another address",
                )
        assigned.append(request)
    if remaining:
        raise CNIError(
            remaining[0].code,
            "failed to allocate all requested IPs: " + " ".join(str(r.ip) for r in remaining),
            "; ".join(_why_unserved(r, range_sets, assigned) for r in remaining)
            + "; request at most one address inside each range set",
        )
    return assigned


def _why_unserved(request: RequestedIP, range_sets: Sequence[RangeSet], assigned: Sequence[RequestedIP | None]) -> str:
    holder = next((i for i, s in enumerate(range_sets) if s.contains(request.ip)), None)
    if holder is None:
        sets = "; ".join(f"{i}: {s}" for i, s in enumerate(range_sets))
        return f"{request.source} {request.ip} is in no range set ({sets})"
    given = assigned[holder]
    other = f"{given.source} {given.ip}" if given else "another request"
    return f"{request.source} {request.ip} falls in range set {holder}, which already serves {other}"


def allocate_one(
    store: Store,
    range_set: RangeSet,
    range_id: str,
    container_id: str,
    ifname: str,
    requested: RequestedIP | None = None,
) -> Allocation:
    """One address from one range set (Go's ``IPAllocator.Get``); the caller holds the lock."""
    if requested is not None:
        owner = range_set.range_for(requested.ip)
        if owner is None:
            raise CNIError(requested.code, f"{requested.ip} not in range set {range_set}")
        if requested.ip == owner.gateway:
            raise CNIError(requested.code, f"requested ip {requested.ip} is subnet's gateway")
        if not store.reserve(requested.ip, container_id, ifname, range_id):
            raise CNIError(
                ErrorCode.INTERNAL,
                f"requested IP address {requested.ip} is not available in range set {range_set}",
            )
        return Allocation(requested.ip, owner)

    for ip in store.ips_of(container_id, ifname):
        if range_set.contains(ip):
            raise CNIError(
                ErrorCode.INTERNAL,
                f"{ip} has been allocated to {container_id.strip()}, duplicate allocation is not allowed",
            )
    taken = store.reserved_ips()
    for ip, owner in candidates(range_set, store.last_reserved(range_id)):
        if ip not in taken and store.reserve(ip, container_id, ifname, range_id):
            return Allocation(ip, owner)
    raise CNIError(ErrorCode.INTERNAL, f"no IP addresses available in range set: {range_set}")


def allocate(
    store: Store,
    range_sets: Sequence[RangeSet],
    container_id: str,
    ifname: str,
    requested: Sequence[RequestedIP] = (),
) -> list[Allocation]:
    """One address per range set, in order, or none at all (Go's ``cmdAdd`` loop).

    ``last_reserved_ip.<index>`` is each set's round-robin cursor, so the
    order of range sets in the config matters exactly as it does for Go.
    """
    assigned = assign_requests(range_sets, requested)
    done: list[Allocation] = []
    with store.locked():
        try:
            for index, (range_set, request) in enumerate(zip(range_sets, assigned, strict=True)):
                try:
                    done.append(allocate_one(store, range_set, str(index), container_id, ifname, request))
                except CNIError as exc:
                    raise CNIError(exc.code, f"failed to allocate for range {index}: {exc.msg}", exc.details) from None
        except BaseException:
            for allocation in done:
                store.release(allocation.ip)
            raise
    return done
