"""Calico's IPAM data and the pure block logic (no I/O): blocks, handles, affinities, keys, candidates.

An :class:`AllocationBlock` is libcalico-go's ``model.AllocationBlock`` and
serialises to the same JSON (``libcalico-go/lib/backend/model/block.go``, field
order ``cidr, affinity, [affinity_claim_time], allocations, unallocated,
attributes, sequenceNumber, sequenceNumberForAllocation, deleted``).
``allocations[i]`` is the index of ordinal i's attribute (None: free);
``unallocated`` is a FIFO of free ordinals (a new block is 0..N-1, a release
appends, an allocation takes from the head), so the longest-free address is
reused first. Its methods are ``lib/ipam/ipam_block.go``'s: auto-assign from
the free list, assign a given address, release by address or by handle (with
the cooldown of ``ipCooldownSeconds``; 0 frees at once) and the attribute
garbage collection that keeps ``attributes`` compact.

A :class:`Handle` counts a handle's addresses per block
(``{"block":{"10.65.79.0/26":1},"deleted":false}``); :class:`BlockAffinity` is a
host's claim state (``pending`` / ``confirmed`` / ``pendingDeletion``);
:class:`IPAMConfig` is the ``/calico/ipam/v2/config`` value with Calico's
defaults when absent. :func:`random_blocks` yields a pool's block CIDRs from a
start seeded by an FNV-32 hash of the host name (libcalico-go's
``randomBlockGenerator``; Python's PRNG, not Go's, picks the start, so the
order differs from Calico's but is fixed per host in the same way).
"""

from __future__ import annotations

import ipaddress
import json
import random
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pycni.fabric.calico import gojson

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

IPAM_PREFIX = "/calico/ipam/v2/"
BLOCKS_PREFIX = IPAM_PREFIX + "assignment/"
HANDLES_PREFIX = IPAM_PREFIX + "handle/"
IPAM_CONFIG_KEY = IPAM_PREFIX + "config"

AFFINITY_HOST = "host"
AFFINITY_VIRTUAL = "virtual"
STATE_PENDING = "pending"
STATE_CONFIRMED = "confirmed"
STATE_PENDING_DELETION = "pendingDeletion"

# Attribute keys and the tunnel address types (model/block.go).
ATTR_POD = "pod"
ATTR_NAMESPACE = "namespace"
ATTR_NODE = "node"
ATTR_TYPE = "type"
ATTR_TIMESTAMP = "timestamp"
TYPE_IPIP = "ipipTunnelAddress"
TYPE_VXLAN = "vxlanTunnelAddress"
TYPE_VXLAN_V6 = "vxlanV6TunnelAddress"
TYPE_WIREGUARD = "wireguardTunnelAddress"
TUNNEL_TYPES = (TYPE_IPIP, TYPE_VXLAN, TYPE_VXLAN_V6, TYPE_WIREGUARD, "wireguardV6TunnelAddress")


class BlockError(ValueError):
    """An operation a block refuses: the address is outside it, taken, or the affinity does not match."""


class AddressInUse(BlockError):
    """``assign`` of an address that is already allocated (Calico's ErrorResourceAlreadyExists)."""


class BadHandle(BlockError):
    """A release naming a handle (or sequence number) that no longer owns the address: stale information."""


# -- keys --------------------------------------------------------------------


def cidr_segment(network: Network) -> str:
    """A CIDR as it appears in an IPAM key: masked, first ``/`` replaced by ``-`` (``10.65.79.0-26``)."""
    return str(network).replace("/", "-", 1)


def block_key(network: Network) -> str:
    return f"{BLOCKS_PREFIX}ipv{network.version}/block/{cidr_segment(network)}"


def affinity_prefix(host: str, version: int | None = None, affinity_type: str = AFFINITY_HOST) -> str:
    base = f"{IPAM_PREFIX}{affinity_type}/{host}"
    return f"{base}/ipv{version}/block/" if version else f"{base}/"


def affinity_key(host: str, network: Network, affinity_type: str = AFFINITY_HOST) -> str:
    return affinity_prefix(host, network.version, affinity_type) + cidr_segment(network)


def handle_key(handle_id: str) -> str:
    return HANDLES_PREFIX + handle_id


def _segment_network(segment: str) -> Network | None:
    try:
        return ipaddress.ip_network(segment.replace("-", "/", 1))
    except ValueError:
        return None


def parse_block_key(key: str) -> Network | None:
    """The block CIDR of a block key, or None for any other key."""
    if not key.startswith(BLOCKS_PREFIX):
        return None
    parts = key[len(BLOCKS_PREFIX) :].split("/")
    if len(parts) != 3 or parts[1] != "block" or parts[0] not in ("ipv4", "ipv6"):
        return None
    return _segment_network(parts[2])


def parse_affinity_key(key: str) -> tuple[str, str, Network] | None:
    """``(affinity type, host, block CIDR)`` of an affinity key, or None."""
    if not key.startswith(IPAM_PREFIX):
        return None
    parts = key[len(IPAM_PREFIX) :].split("/")
    if len(parts) != 5 or parts[0] not in (AFFINITY_HOST, AFFINITY_VIRTUAL) or parts[3] != "block":
        return None
    network = _segment_network(parts[4])
    return (parts[0], parts[1], network) if network is not None else None


def affinity_string(host: str, affinity_type: str = AFFINITY_HOST) -> str:
    return f"{affinity_type}:{host}"


def go_time(moment: datetime) -> str:
    """metav1.Time's JSON: RFC 3339, seconds, UTC."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_go_time(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()


# -- blocks ------------------------------------------------------------------


@dataclass
class Attribute:
    """An allocation's owner: ``handle_id``, ``secondary`` (active owner attributes), cooldown ``releasedAt``."""

    handle_id: str | None = None
    secondary: dict[str, str] | None = None
    alternate: dict[str, str] | None = None
    released_at: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.handle_id is not None:
            out["handle_id"] = self.handle_id
        if self.secondary:
            out["secondary"] = dict(sorted(self.secondary.items()))
        if self.alternate:
            out["alternateOwnerAttrs"] = dict(sorted(self.alternate.items()))
        if self.released_at is not None:
            out["releasedAt"] = self.released_at
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Attribute:
        return cls(
            handle_id=data.get("handle_id"),
            secondary=dict(data["secondary"]) if data.get("secondary") else None,
            alternate=dict(data["alternateOwnerAttrs"]) if data.get("alternateOwnerAttrs") else None,
            released_at=data.get("releasedAt"),
        )

    @property
    def handle(self) -> str:
        """The handle, sanitised as Calico does (a ``\\r`` and what follows it is dropped)."""
        return (self.handle_id or "").split("\r")[0]


@dataclass
class AllocationBlock:
    cidr: Network
    affinity: str | None
    allocations: list[int | None]
    unallocated: list[int]
    attributes: list[Attribute] = field(default_factory=list)
    sequence_number: int = 0
    sequence_for_allocation: dict[str, int] | None = None
    deleted: bool = False
    affinity_claim_time: str | None = None
    host_affinity: str | None = None

    @classmethod
    def new(cls, cidr: Network, affinity: str | None, claim_time: str | None = None) -> AllocationBlock:
        """A fresh block (``newBlock``): every ordinal free in order, sequence number = now in nanoseconds."""
        size = cidr.num_addresses
        return cls(
            cidr=cidr,
            affinity=affinity,
            allocations=[None] * size,
            unallocated=list(range(size)),
            sequence_number=time.time_ns(),
            sequence_for_allocation={},
            affinity_claim_time=claim_time,
        )

    # -- JSON --

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"cidr": str(self.cidr), "affinity": self.affinity}
        if self.affinity_claim_time is not None:
            out["affinity_claim_time"] = self.affinity_claim_time
        out["allocations"] = list(self.allocations)
        out["unallocated"] = list(self.unallocated)
        out["attributes"] = [a.to_dict() for a in self.attributes] if self.attributes else None
        out["sequenceNumber"] = self.sequence_number
        seq = self.sequence_for_allocation
        out["sequenceNumberForAllocation"] = None if seq is None else dict(sorted(seq.items()))
        out["deleted"] = self.deleted
        if self.host_affinity is not None:
            out["hostAffinity"] = self.host_affinity
        return out

    def to_json(self) -> str:
        return gojson.marshal(self.to_dict())

    @classmethod
    def from_json(cls, text: str) -> AllocationBlock:
        data = json.loads(text)
        cidr = ipaddress.ip_network(data["cidr"], strict=False)
        size = cidr.num_addresses
        allocations = list(data.get("allocations") or [])
        allocations += [None] * (size - len(allocations))  # a short array reads as free slots, as Go's
        return cls(
            cidr=cidr,
            affinity=data.get("affinity"),
            allocations=allocations[:size],
            unallocated=list(data.get("unallocated") or []),
            attributes=[Attribute.from_dict(a) for a in data.get("attributes") or []],
            sequence_number=int(data.get("sequenceNumber") or 0),
            sequence_for_allocation=(
                {str(k): int(v) for k, v in data["sequenceNumberForAllocation"].items()}
                if data.get("sequenceNumberForAllocation") is not None
                else None
            ),
            deleted=bool(data.get("deleted")),
            affinity_claim_time=data.get("affinity_claim_time"),
            host_affinity=data.get("hostAffinity"),
        )

    # -- reading --

    @property
    def host(self) -> str:
        """The affine host (``host:<h>`` or ``virtual:<h>``), or ""."""
        if self.affinity and ":" in self.affinity:
            return self.affinity.split(":", 1)[1]
        return ""

    @property
    def num_addresses(self) -> int:
        return self.cidr.num_addresses

    def address(self, ordinal: int) -> Address:
        return self.cidr.network_address + ordinal

    def ordinal(self, address: Address) -> int:
        offset = int(address) - int(self.cidr.network_address)
        if address.version != self.cidr.version or not 0 <= offset < self.num_addresses:
            raise BlockError(f"IP {address} not in block {self.cidr}")
        return offset

    def num_free(self) -> int:
        return len(self.unallocated)

    def empty(self) -> bool:
        """No allocation at all (cooling-down addresses count as allocated until collected)."""
        return all(index is None for index in self.allocations)

    def in_use(self) -> list[tuple[Address, Attribute]]:
        """Every allocated address with its attribute (cooling-down ones included, marked by ``released_at``)."""
        return [
            (self.address(o), self.attributes[index]) for o, index in enumerate(self.allocations) if index is not None
        ]

    def attribute_for(self, address: Address) -> Attribute | None:
        index = self.allocations[self.ordinal(address)]
        return None if index is None else self.attributes[index]

    def ips_by_handle(self, handle_id: str) -> list[Address]:
        wanted = {i for i, a in enumerate(self.attributes) if a.handle_id is not None and a.handle == handle_id}
        return [self.address(o) for o, index in enumerate(self.allocations) if index in wanted]

    def sequence_for(self, ordinal: int) -> int:
        return (self.sequence_for_allocation or {}).get(str(ordinal), 0)

    # -- writing --

    def _check_affinity(self, affinity: str, affinity_check: bool) -> None:
        if affinity_check:
            if self.affinity is None:
                raise BlockError(f"Attempt to assign from block {self.cidr} with no affinity")
            if self.affinity != affinity:
                raise BlockError(f"Block affinity ({self.affinity}) does not match provided ({affinity})")

    def _attribute_index(self, handle_id: str | None, attrs: Mapping[str, str] | None) -> int:
        wanted = Attribute(handle_id=handle_id, secondary=dict(attrs) if attrs else None)
        for index, existing in enumerate(self.attributes):
            if existing == wanted:
                return index
        self.attributes.append(wanted)
        return len(self.attributes) - 1

    def _set_sequence(self, ordinal: int) -> None:
        if self.sequence_for_allocation is None:
            self.sequence_for_allocation = {}
        self.sequence_for_allocation[str(ordinal)] = self.sequence_number

    def auto_assign(
        self,
        count: int,
        handle_id: str | None,
        attrs: Mapping[str, str] | None,
        affinity: str,
        affinity_check: bool,
        reserved: frozenset[Address] = frozenset(),
    ) -> list[Address]:
        """Take up to ``count`` addresses from the head of the free list (skipping reserved ones)."""
        self._check_affinity(affinity, affinity_check)
        taken: list[Address] = []
        kept: list[int] = []
        index: int | None = None
        for position, ordinal in enumerate(self.unallocated):
            if len(taken) >= count:
                kept.extend(self.unallocated[position:])
                break
            address = self.address(ordinal)
            if address in reserved:
                kept.append(ordinal)
                continue
            if index is None:
                index = self._attribute_index(handle_id, attrs)
            self.allocations[ordinal] = index
            self._set_sequence(ordinal)
            taken.append(address)
        self.unallocated = kept
        return taken

    def assign(
        self,
        address: Address,
        handle_id: str | None,
        attrs: Mapping[str, str] | None,
        affinity: str,
        affinity_check: bool,
    ) -> None:
        """Allocate exactly ``address``; :class:`AddressInUse` if it is taken."""
        self._check_affinity(affinity, affinity_check)
        ordinal = self.ordinal(address)
        if self.allocations[ordinal] is not None:
            raise AddressInUse(f"Address already assigned in block: {address}")
        self._set_sequence(ordinal)
        self.allocations[ordinal] = self._attribute_index(handle_id, attrs)
        self.unallocated.remove(ordinal)

    def _cool_down(self, ordinals: list[int], now: datetime) -> None:
        self.attributes.append(Attribute(released_at=go_time(now)))
        index = len(self.attributes) - 1
        for ordinal in ordinals:
            self.allocations[ordinal] = index
            self._set_sequence(ordinal)

    def release(
        self,
        addresses: list[Address],
        cooldown_seconds: int = 0,
        now: datetime | None = None,
        handle_id: str = "",
        sequence: int | None = None,
    ) -> tuple[list[Address], dict[str, int]]:
        """Release ``addresses``: (those that were not allocated, count released per handle).

        With ``handle_id`` or ``sequence`` given, every allocated address must still match them
        (:class:`BadHandle` otherwise, and nothing changes): a release based on stale information
        must not free an address that was released and handed out again meanwhile.
        """
        now = now or datetime.now(UTC)
        not_allocated: list[Address] = []
        ordinals: list[int] = []
        by_handle: dict[str, int] = {}
        for address in dict.fromkeys(addresses):
            ordinal = self.ordinal(address)
            if sequence is not None and sequence != self.sequence_for(ordinal):
                raise BadHandle(
                    f"the given sequence number ({sequence}) does not match ({self.sequence_for(ordinal)}) "
                    "when attempting to release IP"
                )
            index = self.allocations[ordinal]
            if index is None or self.attributes[index].released_at is not None:
                not_allocated.append(address)
                continue
            owner = self.attributes[index].handle
            if handle_id and owner != handle_id:
                raise BadHandle(
                    f"the given handle ({handle_id}) does not match ({owner}) when attempting to release IP"
                )
            ordinals.append(ordinal)
            if owner:
                by_handle[owner] = by_handle.get(owner, 0) + 1
        if ordinals:
            self._cool_down(ordinals, now)
            self.garbage_collect(cooldown_seconds, now)
        return not_allocated, by_handle

    def release_by_handle(
        self, handle_id: str, cooldown_seconds: int = 0, now: datetime | None = None, sequence: int | None = None
    ) -> int:
        """Release every address of ``handle_id``; how many."""
        now = now or datetime.now(UTC)
        wanted = {i for i, a in enumerate(self.attributes) if a.handle_id is not None and a.handle == handle_id}
        ordinals = [
            o
            for o, index in enumerate(self.allocations)
            if index in wanted and (sequence is None or sequence == self.sequence_for(o))
        ]
        if ordinals:
            self._cool_down(ordinals, now)
            self.garbage_collect(cooldown_seconds, now)
        return len(ordinals)

    def garbage_collect(self, cooldown_seconds: int, now: datetime | None = None) -> bool:
        """Free addresses whose cooldown is over (to the tail of the FIFO) and drop unused attributes."""
        cutoff = (now or datetime.now(UTC)).timestamp() - cooldown_seconds
        changed = False
        used: set[int] = set()
        for ordinal, index in enumerate(self.allocations):
            if index is None:
                continue
            released = self.attributes[index].released_at
            if released is not None and (cooldown_seconds < 0 or parse_go_time(released) <= cutoff):
                self.allocations[ordinal] = None
                self.unallocated.append(ordinal)
                if self.sequence_for_allocation is not None:
                    self.sequence_for_allocation.pop(str(ordinal), None)
                changed = True
            else:
                used.add(index)
        if len(used) != len(self.attributes):
            remap: dict[int, int] = {}
            kept: list[Attribute] = []
            for index, attribute in enumerate(self.attributes):
                if index in used:
                    remap[index] = len(kept)
                    kept.append(attribute)
            self.attributes = kept
            self.allocations = [None if i is None else remap[i] for i in self.allocations]
            changed = True
        return changed

    def check(self) -> list[str]:
        """Problems with the block's structure (``calicoctl ipam check``'s validation), none if sound."""
        problems = []
        size = self.num_addresses
        if len(self.allocations) != size:
            problems.append(f"has {len(self.allocations)} allocation slots for {size} addresses")
        free = [o for o, index in enumerate(self.allocations) if index is None]
        if sorted(self.unallocated) != free:
            problems.append("unallocated list does not match the free slots")
        if len(set(self.unallocated)) != len(self.unallocated):
            problems.append("unallocated list has duplicates")
        for ordinal, index in enumerate(self.allocations):
            if index is not None and not 0 <= index < len(self.attributes):
                problems.append(f"ordinal {ordinal} points at missing attribute {index}")
        return problems


# -- handles, affinities, config ---------------------------------------------


@dataclass
class Handle:
    """``model.IPAMHandle``: addresses per block CIDR (with ``/``) held by one handle ID."""

    handle_id: str
    block: dict[str, int] = field(default_factory=dict)
    deleted: bool = False

    def to_json(self) -> str:
        return gojson.marshal({"block": dict(sorted(self.block.items())), "deleted": self.deleted})

    @classmethod
    def from_json(cls, handle_id: str, text: str) -> Handle:
        data = json.loads(text) if text else {}
        return cls(handle_id, {str(k): int(v) for k, v in (data.get("block") or {}).items()}, bool(data.get("deleted")))

    def increment(self, network: Network, count: int) -> None:
        key = str(network)
        self.block[key] = self.block.get(key, 0) + count

    def decrement(self, network: Network, count: int) -> None:
        key = str(network)
        current = self.block.get(key)
        if current is None:
            raise BlockError(
                f"Tried to decrement block {key} by {count} but it isn't linked to handle {self.handle_id}"
            )
        if current < count:
            raise BlockError(
                f"Tried to decrement block {key} by {count} but it only has {current} addresses on handle "
                f"{self.handle_id}"
            )
        if current == count:
            del self.block[key]
        else:
            self.block[key] = current - count

    def empty(self) -> bool:
        return not self.block

    def count(self, version: int | None = None) -> int:
        return sum(n for cidr, n in self.block.items() if version is None or (":" in cidr) == (version == 6))


@dataclass
class BlockAffinity:
    """``model.BlockAffinity``: a host's claim on a block; an empty stored value reads as ``{}`` (legacy)."""

    state: str = ""
    deleted: bool = False

    def to_json(self) -> str:
        return gojson.marshal({"state": self.state, "deleted": self.deleted})

    @classmethod
    def from_json(cls, text: str) -> BlockAffinity:
        data = json.loads(text) if text else {}
        return cls(str(data.get("state") or ""), bool(data.get("deleted")))

    @property
    def confirmed(self) -> bool:
        """Confirmed, or the legacy empty state; pending claims do not count as owned."""
        return self.state in (STATE_CONFIRMED, "")


@dataclass(frozen=True)
class IPAMConfig:
    """The ``/calico/ipam/v2/config`` value; an absent key means strictAffinity off, autoAllocateBlocks on."""

    strict_affinity: bool = False
    auto_allocate_blocks: bool = True
    max_blocks_per_host: int = 0
    ip_cooldown_seconds: int = 0

    @classmethod
    def from_json(cls, text: str | None) -> IPAMConfig:
        if text is None:
            return cls()
        data = json.loads(text) if text else {}
        return cls(
            strict_affinity=bool(data.get("strict_affinity")),
            auto_allocate_blocks=bool(data.get("auto_allocate_blocks")),
            max_blocks_per_host=int(data.get("maxBlocksPerHost") or 0),
            ip_cooldown_seconds=int(data.get("ipCooldownSeconds") or 0),
        )

    def to_json(self) -> str:
        out: dict[str, Any] = {}
        if self.strict_affinity:
            out["strict_affinity"] = True
        if self.auto_allocate_blocks:
            out["auto_allocate_blocks"] = True
        if self.max_blocks_per_host:
            out["maxBlocksPerHost"] = self.max_blocks_per_host
        if self.ip_cooldown_seconds:
            out["ipCooldownSeconds"] = self.ip_cooldown_seconds
        return gojson.marshal(out)


# -- block candidates ----------------------------------------------------------


def fnv32(text: str) -> int:
    """FNV-1 32-bit (Go's ``hash/fnv`` New32), the seed of a host's block order."""
    value = 0x811C9DC5
    for byte in text.encode():
        value = (value * 0x01000193) & 0xFFFFFFFF
        value ^= byte
    return value


def block_for(address: Address, block_size: int) -> Network:
    return ipaddress.ip_network(f"{address}/{block_size}", strict=False)


def random_blocks(pool: Network, block_size: int, host: str) -> Iterator[Network]:
    """Every block of ``pool``, once, from a start fixed by the host name, wrapping around."""
    count = 1 << (block_size - pool.prefixlen)
    step = 1 << (pool.max_prefixlen - block_size)
    seed = time.time_ns() if block_size == pool.max_prefixlen else fnv32(host)
    start = random.Random(seed).randrange(count)
    base = int(pool.network_address)
    make = ipaddress.IPv4Network if pool.version == 4 else ipaddress.IPv6Network
    for offset in range(count):
        index = (start + offset) % count
        yield make((base + index * step, block_size))
