"""Address ranges and range sets: defaults, validation, membership, overlap and iteration order.

A *range* is a subnet with an inclusive ``start``..``end`` window and a
gateway; a *range set* is a pool of non-overlapping ranges of one family from
which one address is taken. Defaults, checks and messages are those of the
reference's ``host-local/backend/allocator/range{,_set}.go``, so a config is
accepted or refused exactly as Go does it, with the same words.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from pycni.spec.result import IPAddress, IPInterface

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class RangeError(ValueError):
    """A range or range set that cannot be allocated from; the message is the reference's text."""


def address(version: int, value: int) -> IPAddress:
    """The address of ``value`` in family ``version`` (``ip_address(int)`` would guess IPv4)."""
    return ipaddress.IPv4Address(value) if version == 4 else ipaddress.IPv6Address(value)


def _cmp_key(ip: IPAddress) -> int:
    """The order of Go's ``ip.Cmp``: both sides as 16 bytes, IPv4 as ``::ffff:a.b.c.d``, so a
    start and an end of different families compare (ipaddress refuses to) as they do in Go."""
    return int(ip) | 0xFFFF00000000 if ip.version == 4 else int(ip)


@dataclass(frozen=True)
class Range:
    """One canonical range: every field is set and consistent (build it with :func:`make_range`)."""

    subnet: IPNetwork
    start: IPAddress
    end: IPAddress
    gateway: IPAddress

    @property
    def version(self) -> int:
        return self.subnet.version

    def contains(self, ip: IPAddress) -> bool:
        """In the subnet and inside ``start``..``end``."""
        return ip.version == self.version and ip in self.subnet and self.start <= ip <= self.end  # type: ignore[operator]

    def overlaps(self, other: Range) -> bool:
        """Whether the two windows share an address (never across families)."""
        if self.version != other.version:
            return False
        return (
            self.contains(other.start)
            or self.contains(other.end)
            or other.contains(self.start)
            or other.contains(self.end)
        )

    def capacity(self) -> int:
        """How many addresses can be handed out: the window minus the gateway if it lies inside."""
        size = int(self.end) - int(self.start) + 1
        return size - 1 if self.contains(self.gateway) else size

    def interface(self, ip: IPAddress) -> IPInterface:
        """``ip`` with this subnet's prefix, as a result's ``address``."""
        return ipaddress.ip_interface((ip, self.subnet.prefixlen))

    def __str__(self) -> str:
        return f"{self.start}-{self.end}"


def make_range(
    subnet: IPInterface,
    start: IPAddress | None = None,
    end: IPAddress | None = None,
    gateway: IPAddress | None = None,
) -> Range:
    """Validate a configured range and fill in its defaults (Go's ``Range.Canonicalize``).

    The subnet must be a network address leaving two usable addresses; the
    gateway and the start default to network+1 (the iterator skips the
    gateway); the end defaults to the last address, minus the broadcast
    address for IPv4. ``start`` and ``end`` must lie in the subnet, in order.
    """
    network = subnet.network
    if network.prefixlen > network.max_prefixlen - 2:
        raise RangeError(f"Network {subnet} too small to allocate from")
    if subnet.ip != network.network_address:
        raise RangeError(
            f"Network has host bits set. For a subnet mask of length {network.prefixlen} "
            f"the network address is {network.network_address}"
        )
    first = address(network.version, int(network.network_address) + 1)
    if gateway is None:
        gateway = first
    elif gateway.version != network.version:
        raise RangeError(f"Gateway {gateway} is not an IPv{network.version} address like network {network}")

    def inside(ip: IPAddress, low: IPAddress | None, high: IPAddress | None) -> bool:
        if ip.version != network.version or ip not in network:
            return False
        return (low is None or _cmp_key(low) <= _cmp_key(ip)) and (high is None or _cmp_key(ip) <= _cmp_key(high))

    if start is None:
        start = first
    elif not inside(start, None, end):
        raise RangeError(f"RangeStart {start} not in network {network}")
    if end is None:
        last = int(network.broadcast_address)
        end = address(network.version, last - 1 if network.version == 4 else last)
    elif not inside(end, start, None):
        raise RangeError(f"RangeEnd {end} not in network {network}")
    return Range(subnet=network, start=start, end=end, gateway=gateway)


@dataclass(frozen=True)
class RangeSet:
    """Ranges of one family that do not overlap; one address is allocated per set."""

    ranges: tuple[Range, ...]

    @property
    def version(self) -> int:
        return self.ranges[0].version

    def range_for(self, ip: IPAddress) -> Range | None:
        """The range holding ``ip``, or ``None``."""
        for candidate in self.ranges:
            if candidate.contains(ip):
                return candidate
        return None

    def contains(self, ip: IPAddress) -> bool:
        return self.range_for(ip) is not None

    def overlaps(self, other: RangeSet) -> bool:
        return any(mine.overlaps(theirs) for mine in self.ranges for theirs in other.ranges)

    def has_free(self, taken: Iterable[IPAddress]) -> bool:
        """Whether any allocatable address is missing from ``taken`` (without walking the ranges)."""
        used = [0] * len(self.ranges)
        for ip in set(taken):
            for index, candidate in enumerate(self.ranges):
                if candidate.contains(ip) and ip != candidate.gateway:
                    used[index] += 1
                    break
        return any(count < candidate.capacity() for count, candidate in zip(used, self.ranges, strict=True))

    def __iter__(self) -> Iterator[Range]:
        return iter(self.ranges)

    def __len__(self) -> int:
        return len(self.ranges)

    def __str__(self) -> str:
        return ",".join(str(r) for r in self.ranges)


def make_range_set(ranges: Sequence[Range]) -> RangeSet:
    """Check a pool of ranges (Go's ``RangeSet.Canonicalize``): non-empty, one family, disjoint."""
    if not ranges:
        raise RangeError("empty range set")
    if any(r.version != ranges[0].version for r in ranges):
        raise RangeError("mixed address families")
    for index, first in enumerate(ranges):
        for second in ranges[index + 1 :]:
            if first.overlaps(second):
                raise RangeError(f"subnets {first} and {second} overlap")
    return RangeSet(tuple(ranges))


def candidates(range_set: RangeSet, last_reserved: IPAddress | None) -> Iterator[tuple[IPAddress, Range]]:
    """Every allocatable address once, in the reference's round-robin order.

    The walk starts just after ``last_reserved`` when the set holds it (so it
    ends with ``last_reserved`` itself), otherwise at the first range's start;
    it runs to each range's end, moves on to the next range, wraps around to
    the first, and skips each range's gateway. A crash-looping container thus
    does not get the same address back until the whole set has been used.
    """
    ranges = range_set.ranges

    def successor(index: int, value: int) -> tuple[int, int]:
        if value == int(ranges[index].end):
            index = (index + 1) % len(ranges)
            return index, int(ranges[index].start)
        return index, value + 1

    begin = (0, int(ranges[0].start))
    if last_reserved is not None:
        for index, candidate in enumerate(ranges):
            if candidate.contains(last_reserved):
                begin = successor(index, int(last_reserved))
                break
    position = begin
    while True:
        index, value = position
        current = ranges[index]
        if value != int(current.gateway):
            yield address(current.version, value), current
        position = successor(index, value)
        if position == begin:
            return
