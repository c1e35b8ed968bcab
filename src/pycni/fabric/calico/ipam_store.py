"""libcalico-go's IPAM client on a pycni datastore: every write a compare-and-swap, retried.

The algorithm is ``libcalico-go/lib/ipam/ipam.go`` and
``ipam_block_reader_writer.go``:

* **auto-assign** (:meth:`IPAM.auto_assign`): read the Node (its labels select
  pools), take the enabled pools selecting it (or the requested ones), try the
  host's affine blocks first; when they are full claim a new block with the
  two-phase affinity (write the affinity ``pending``, create the block with
  ``affinity: host:<node>``, mark the affinity ``confirmed``); candidates come
  in an order seeded by the host name, so racing nodes try different blocks.
  At most ``maxBlocksPerHost`` blocks (20 if unset); when no block can be
  claimed and ``strictAffinity`` is false, **borrow** a free address from
  another node's block.
* **assign** a given address (:meth:`IPAM.assign_ip`), claiming its block if
  nobody has; a node's tunnel address (:meth:`IPAM.assign_tunnel_address`)
  comes from the pools of its kind selecting the node, under the handle
  ``vxlan-tunnel-addr-<node>`` (``ipip-``, ``wireguard-``).
* **release** by address (:meth:`IPAM.release_ips`) or by handle
  (:meth:`IPAM.release_by_handle`); an emptied block without affinity is
  deleted; a released address goes to the tail of the block's FIFO.
* block affinities are released (:meth:`IPAM.release_affinity`,
  :meth:`IPAM.release_host_affinities`, :meth:`IPAM.release_pool_affinities`)
  as libcalico-go does: ``pendingDeletion``, then delete the block if empty or
  drop its affinity, then delete the affinity.

Every block, affinity and handle write is conditioned on the revision read
(``create`` if absent, ``update``/``delete`` at a revision) and a lost race is
retried up to :data:`DATASTORE_RETRIES` (100) times, so any number of nodes,
threads or processes sharing the store never hand out one address twice.

One deliberate difference: when a block write loses its race after the
handle was incremented, the handle is decremented again before the retry
(libcalico-go's AssignIP leaves it incremented, over-counting the handle).
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from pycni.datastore import AlreadyExists, Conflict, Datastore, NotFound
from pycni.fabric.calico.errors import CalicoError
from pycni.fabric.calico.ipam import (
    AFFINITY_HOST,
    ATTR_NODE,
    ATTR_TYPE,
    BLOCKS_PREFIX,
    HANDLES_PREFIX,
    IPAM_CONFIG_KEY,
    STATE_CONFIRMED,
    STATE_PENDING,
    STATE_PENDING_DELETION,
    TYPE_IPIP,
    TYPE_VXLAN,
    TYPE_WIREGUARD,
    Address,
    AddressInUse,
    AllocationBlock,
    Attribute,
    BlockAffinity,
    BlockError,
    Handle,
    IPAMConfig,
    Network,
    affinity_key,
    affinity_prefix,
    affinity_string,
    block_for,
    block_key,
    go_time,
    handle_key,
    parse_affinity_key,
    parse_block_key,
    parse_go_time,
    random_blocks,
)
from pycni.fabric.calico.model import IPPoolInfo
from pycni.spec.errors import ErrorCode

if TYPE_CHECKING:
    from pycni.fabric.calico.resources import ResourceClient

log = logging.getLogger(__name__)

DATASTORE_RETRIES = 100
TUNNEL_ATTR_TYPES = {"vxlan": TYPE_VXLAN, "ipip": TYPE_IPIP, "wireguard": TYPE_WIREGUARD}
DEFAULT_MAX_BLOCKS = 20  # a runaway guard when maxBlocksPerHost is 0
EMPTY_BLOCK_MIN_RECLAIM_AGE = 60.0  # seconds: an empty block claimed more recently is not taken from its node

Interface = ipaddress.IPv4Interface | ipaddress.IPv6Interface


class IPAMError(CalicoError):
    """An assignment or release that cannot be done; the message says why and what to change."""


class NoPools(IPAMError):
    code_for_class = ErrorCode.INVALID_NETWORK_CONFIG


class BlockLimitReached(IPAMError):
    pass


class PoolExhausted(IPAMError):
    pass


class NotAssigned(IPAMError):
    """A release or lookup of an address no block has allocated."""


class TooManyRetries(IPAMError):
    code_for_class = ErrorCode.TRY_AGAIN_LATER

    def __init__(self) -> None:
        super().__init__("Max retries hit - excessive concurrent IPAM requests")


class _NoFreeBlocks(Exception):
    pass


class _ClaimConflict(Exception):
    """Another host owns the block we tried to claim."""


class _StaleAffinity(Exception):
    pass


class _NotEmpty(Exception):
    pass


@dataclass
class AutoAssignArgs:
    """What to allocate (``AutoAssignArgs``): counts per family, the handle, the owner's attributes, the host."""

    hostname: str
    num4: int = 0
    num6: int = 0
    handle_id: str | None = None
    attrs: dict[str, str] = field(default_factory=dict)
    ipv4_pools: Sequence[Network] = ()
    ipv6_pools: Sequence[Network] = ()
    max_blocks_per_host: int = 0
    intended_use: str = "Workload"
    namespace_labels: Mapping[str, str] | None = None


@dataclass
class Assignments:
    """The addresses one family got, each with its block's prefix (as AutoAssign returns them)."""

    version: int
    requested: int
    ips: list[Interface] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)

    def note(self, message: str) -> None:
        if message not in self.messages:
            self.messages.append(message)

    def shortfall(self) -> str | None:
        """Calico's partial-fulfilment error text, or None when every requested address was assigned."""
        if len(self.ips) >= self.requested:
            return None
        text = f"Assigned {len(self.ips)} out of {self.requested} requested IPv{self.version} addresses"
        return text + "".join(f"; {m}" for m in self.messages)


@dataclass
class _Stored:
    """A block, affinity or handle with the revision it was read at (the CAS token)."""

    block: AllocationBlock
    revision: int


@dataclass
class PoolUsage:
    """``calicoctl ipam show`` numbers for one pool and its blocks."""

    pool: IPPoolInfo | None
    cidr: Network
    total: int
    in_use: int
    blocks: list[tuple[Network, int, int]]  # (block, addresses, in use)


class IPAM:
    """Calico IPAM over ``store``; pools and nodes are read through ``resources``."""

    def __init__(
        self,
        store: Datastore,
        resources: ResourceClient | None = None,
        *,
        retries: int = DATASTORE_RETRIES,
    ) -> None:
        if resources is None:
            from pycni.fabric.calico.resources import ResourceClient

            resources = ResourceClient(store)
        self.store = store
        self.resources = resources
        self.retries = retries

    # -- config ----------------------------------------------------------------

    def config(self) -> IPAMConfig:
        kv = self.store.get(IPAM_CONFIG_KEY)
        return IPAMConfig.from_json(kv.value if kv else None)

    def set_config(self, config: IPAMConfig) -> None:
        """SetIPAMConfig's rules, then write ``/calico/ipam/v2/config``."""
        if not config.strict_affinity and not config.auto_allocate_blocks:
            raise IPAMError("Cannot disable 'StrictAffinity' and 'AutoAllocateBlocks' at the same time")
        if config.max_blocks_per_host > 0 and not config.strict_affinity:
            raise IPAMError("MaxBlocksPerHost requires StrictAffinity to be enabled")
        self.store.put(IPAM_CONFIG_KEY, config.to_json())

    # -- raw reads and CAS writes -------------------------------------------------

    def _block(self, network: Network, config: IPAMConfig | None = None) -> _Stored | None:
        kv = self.store.get(block_key(network))
        if kv is None:
            return None
        block = AllocationBlock.from_json(kv.value)
        block.garbage_collect((config or self.config()).ip_cooldown_seconds)  # blockFromBackend
        return _Stored(block, kv.mod_revision)

    def _update_block(self, stored: _Stored) -> _Stored:
        stored.block.sequence_number += 1  # every block write bumps it (updateBlock)
        kv = self.store.update(block_key(stored.block.cidr), stored.block.to_json(), stored.revision)
        return _Stored(stored.block, kv.mod_revision)

    def _affinity(self, host: str, network: Network) -> tuple[BlockAffinity, int] | None:
        kv = self.store.get(affinity_key(host, network))
        return (BlockAffinity.from_json(kv.value), kv.mod_revision) if kv else None

    def _set_affinity(self, host: str, network: Network, state: str, revision: int) -> int:
        return self.store.update(affinity_key(host, network), BlockAffinity(state).to_json(), revision).mod_revision

    def _delete_affinity(self, host: str, network: Network, revision: int | None) -> None:
        with contextlib.suppress(NotFound):
            self.store.delete(affinity_key(host, network), revision)

    def list_blocks(self, version: int | None = None) -> list[AllocationBlock]:
        """Every block (of one family), in key order."""
        prefix = f"{BLOCKS_PREFIX}ipv{version}/" if version else BLOCKS_PREFIX
        kvs, _ = self.store.list(prefix)
        return [AllocationBlock.from_json(kv.value) for kv in kvs if parse_block_key(kv.key) is not None]

    def list_handles(self) -> list[Handle]:
        kvs, _ = self.store.list(HANDLES_PREFIX)
        return [Handle.from_json(kv.key[len(HANDLES_PREFIX) :], kv.value) for kv in kvs]

    def affine_blocks(self, host: str, version: int) -> list[Network]:
        """Blocks the host has an affinity for (any state), in key order (getAffineBlocks)."""
        kvs, _ = self.store.list(affinity_prefix(host, version))
        return [parsed[2] for kv in kvs if (parsed := parse_affinity_key(kv.key)) is not None]

    # -- pools ----------------------------------------------------------------------

    def pools(self, version: int | None = None, *, enabled_only: bool = True) -> list[IPPoolInfo]:
        resources, _ = self.resources.list("IPPool")
        pools = [IPPoolInfo.from_resource(r) for r in resources]
        return [p for p in pools if (version is None or p.version == version) and not (enabled_only and p.disabled)]

    def pool_for(self, address: Address, pools: Iterable[IPPoolInfo] | None = None) -> IPPoolInfo | None:
        for pool in self.pools(address.version) if pools is None else pools:
            if address in pool.cidr:
                return pool
        return None

    def _node_labels(self, host: str) -> dict[str, str]:
        node = self.resources.find("Node", host)
        if node is None:
            raise IPAMError(
                f"failed to get node for host {host}: resource does not exist: Node({host}) "
                "(the node agent registers it; create a Node resource named after the host)"
            )
        return dict(node.labels)

    def _select_pools(
        self,
        version: int,
        host: str,
        requested: Sequence[Network],
        use: str,
        namespace_labels: Mapping[str, str] | None,
    ) -> tuple[list[IPPoolInfo], list[IPPoolInfo]]:
        """(pools this request may use, pools selecting the node) as determinePools + filterPoolsByUse."""
        enabled = self.pools(version)
        if not enabled:
            raise NoPools(f"no configured Calico pools for node {host}: no enabled IPv{version} IPPool exists")
        by_cidr = {p.cidr: p for p in enabled}
        if requested:
            chosen = []
            for network in requested:
                if network not in by_cidr:
                    raise NoPools(f"the given pool ({network}) does not exist, or is not enabled")
                chosen.append(by_cidr[network])
            selecting = chosen
        else:
            labels = self._node_labels(host)
            selecting = [
                p
                for p in enabled
                if p.assignment_mode == "Automatic"
                and p.node_selector.matches(labels)
                and (p.namespace_selector is None or p.namespace_selector.matches(namespace_labels or {}))
            ]
        if not selecting:
            raise NoPools(f"no configured Calico pools for node {host}: no IPv{version} pool's nodeSelector selects it")
        usable = [p for p in selecting if use in p.allowed_uses]
        if not usable:
            raise NoPools(f"no qualified pool for node {host}, no pools match the required use ({use})")
        return usable, selecting

    # -- affinities and claims ----------------------------------------------------

    def _pending_affinity(self, host: str, network: Network) -> tuple[BlockAffinity, int]:
        """getPendingAffinity: create the affinity ``pending``, or take the existing one (re-marked pending)."""
        key = affinity_key(host, network)
        try:
            kv = self.store.create(key, BlockAffinity(STATE_PENDING).to_json())
            return BlockAffinity(STATE_PENDING), kv.mod_revision
        except AlreadyExists:
            pass
        current = self._affinity(host, network)
        if current is None:
            raise Conflict(f"{key} vanished while claiming it")
        affinity, revision = current
        if affinity.state != STATE_CONFIRMED:
            revision = self._set_affinity(host, network, STATE_PENDING, revision)
            affinity = BlockAffinity(STATE_PENDING)
        return affinity, revision

    def _confirm(self, host: str, network: Network, revision: int) -> None:
        try:
            self._set_affinity(host, network, STATE_CONFIRMED, revision)
        except (Conflict, NotFound):
            current = self._affinity(host, network)
            if current is None or current[0].state != STATE_CONFIRMED:
                raise
        log.debug("confirmed affinity of %s for %s", network, host)

    def _claim_block(self, host: str, network: Network, revision: int, config: IPAMConfig) -> _Stored:
        """claimAffineBlock: create the block affine to ``host`` and confirm the pending affinity."""
        mine = affinity_string(host)
        block = AllocationBlock.new(network, mine, claim_time=go_time(datetime.now(UTC)))
        try:
            kv = self.store.create(block_key(network), block.to_json())
        except AlreadyExists:
            existing = self._block(network, config)
            if existing is None:
                raise Conflict(f"block {network} vanished while claiming it") from None
            if existing.block.affinity == mine:  # another process on this host claimed it
                self._confirm(host, network, revision)
                return existing
            self._delete_affinity(host, network, None)
            raise _ClaimConflict(f"block {network} is claimed by {existing.block.affinity}") from None
        self._confirm(host, network, revision)
        return _Stored(block, kv.mod_revision)

    def _block_from_affinity(self, host: str, network: Network, affinity: BlockAffinity, revision: int) -> _Stored:
        """getBlockFromAffinity: the block an affinity names, created if a claim died half-way."""
        config = self.config()
        stored = self._block(network, config)
        if stored is None:
            revision = self._set_affinity(host, network, STATE_PENDING, revision)
            return self._claim_block(host, network, revision, config)
        if stored.block.affinity != affinity_string(host):
            self._delete_affinity(host, network, revision)
            raise _StaleAffinity(f"affinity of {host} for {network} is stale: the block is {stored.block.affinity}")
        if not affinity.confirmed:
            revision = self._set_affinity(host, network, STATE_PENDING, revision)
            stored = self._update_block(stored)  # a new revision fences anyone else working on it
            self._set_affinity(host, network, STATE_CONFIRMED, revision)
        return stored

    def _find_usable_block(self, host: str, pools: Sequence[IPPoolInfo], config: IPAMConfig) -> Network:
        """findUsableBlock: an unclaimed block, one of ours with room, or an old empty one to reclaim."""
        existing = {block.cidr: block for block in self.list_blocks()}
        mine = affinity_string(host)
        empty: list[AllocationBlock] = []
        for pool in pools:
            for subnet in random_blocks(pool.cidr, pool.block_size, host):
                block = existing.get(subnet)
                if block is None:
                    return subnet
                block.garbage_collect(config.ip_cooldown_seconds)
                if block.affinity == mine and block.num_free():
                    return subnet
                if block.empty() and block.num_free():
                    empty.append(block)
        now = datetime.now(UTC).timestamp()
        for block in empty:
            claimed = parse_go_time(block.affinity_claim_time) if block.affinity_claim_time else 0.0
            if now - claimed < EMPTY_BLOCK_MIN_RECLAIM_AGE or not block.host:
                continue
            try:
                self._release_block_affinity(block.host, block.cidr, require_empty=True, sequence=block.sequence_number)
            except (Conflict, NotFound, _ClaimConflict, _NotEmpty, BlockError) as exc:
                log.info("could not reclaim empty block %s: %s", block.cidr, exc)
                continue
            log.info("reclaimed empty block %s from %s", block.cidr, block.host)
            return block.cidr
        raise _NoFreeBlocks("No Free Blocks")

    def _find_or_claim_block(
        self, host: str, affine: list[Network], pools: Sequence[IPPoolInfo], config: IPAMConfig, may_claim: bool
    ) -> tuple[_Stored, bool]:
        """findOrClaimBlock: an affine block with room (popped from ``affine``), else a newly claimed one."""
        while affine:
            network = affine.pop(0)
            for _ in range(self.retries):
                current = self._affinity(host, network)
                if current is None:
                    break
                try:
                    stored = self._block_from_affinity(host, network, *current)
                except (Conflict, NotFound):
                    continue
                except (_StaleAffinity, _ClaimConflict) as exc:
                    log.info("skipping affine block %s: %s", network, exc)
                    break
                if stored.block.num_free() >= 1:
                    return stored, False
                break
        if not may_claim:
            raise BlockLimitReached("cannot allocate new block due to per host block limit")
        if not config.auto_allocate_blocks:
            raise IPAMError(
                "failed to find or claim a block: autoAllocateBlocks is false and the affine blocks are full"
            )
        for _ in range(self.retries):
            subnet = self._find_usable_block(host, pools, config)
            for _ in range(self.retries):
                try:
                    affinity, revision = self._pending_affinity(host, subnet)
                    stored = self._block_from_affinity(host, subnet, affinity, revision)
                except (Conflict, NotFound):
                    continue
                except (_ClaimConflict, _StaleAffinity):
                    break
                if stored.block.num_free() >= 1:
                    return stored, True
                raise IPAMError(
                    f"Block '{subnet}' has {stored.block.num_free()} free ips which is less than 1 ips required."
                )
        raise TooManyRetries()

    # -- handles --------------------------------------------------------------------

    def _increment_handle(self, handle_id: str, network: Network, count: int) -> None:
        key = handle_key(handle_id)
        for _ in range(self.retries):
            kv = self.store.get(key)
            handle = Handle.from_json(handle_id, kv.value) if kv else Handle(handle_id)
            handle.increment(network, count)
            try:
                if kv is None:
                    self.store.create(key, handle.to_json())
                else:
                    self.store.update(key, handle.to_json(), kv.mod_revision)
                return
            except (AlreadyExists, Conflict, NotFound):
                continue
        raise TooManyRetries()

    def _decrement_handle(self, handle_id: str, network: Network, count: int) -> None:
        key = handle_key(handle_id)
        for _ in range(self.retries):
            kv = self.store.get(key)
            if kv is None:
                log.warning("handle %s is gone; nothing to decrement for %s", handle_id, network)
                return
            handle = Handle.from_json(handle_id, kv.value)
            try:
                handle.decrement(network, count)
            except BlockError as exc:
                log.warning("%s", exc)
                return
            try:
                if handle.empty():
                    self.store.delete(key, kv.mod_revision)
                else:
                    self.store.update(key, handle.to_json(), kv.mod_revision)
                return
            except NotFound:
                return
            except Conflict:
                continue
        raise TooManyRetries()

    def handle(self, handle_id: str) -> Handle | None:
        kv = self.store.get(handle_key(handle_id))
        return Handle.from_json(handle_id, kv.value) if kv else None

    # -- assignment -------------------------------------------------------------

    def _assign_from_block(
        self,
        stored: _Stored,
        count: int,
        handle_id: str | None,
        attrs: Mapping[str, str],
        host: str,
        affinity_check: bool,
    ) -> list[Interface]:
        """assignFromExistingBlock: take addresses, count them on the handle, CAS the block (undo on failure)."""
        block = stored.block
        addresses = block.auto_assign(count, handle_id, attrs, affinity_string(host), affinity_check)
        if not addresses:
            return []
        if handle_id is not None:
            self._increment_handle(handle_id, block.cidr, len(addresses))
        try:
            self._update_block(stored)
        except BaseException:
            if handle_id is not None:
                self._decrement_handle(handle_id, block.cidr, len(addresses))
            raise
        prefix = block.cidr.prefixlen
        return [ipaddress.ip_interface(f"{a}/{prefix}") for a in addresses]

    def auto_assign(self, args: AutoAssignArgs) -> tuple[Assignments | None, Assignments | None]:
        """AutoAssign: ``num4`` IPv4 and ``num6`` IPv6 addresses for ``hostname``; a shortfall is in the result."""
        v4 = v6 = None
        if args.num4:
            v4 = self._auto_assign(args, 4, args.num4, args.ipv4_pools)
        if args.num6:
            v6 = self._auto_assign(args, 6, args.num6, args.ipv6_pools)
        return v4, v6

    def _auto_assign(self, args: AutoAssignArgs, version: int, count: int, requested: Sequence[Network]) -> Assignments:
        host = args.hostname
        for network in requested:
            if network.version != version:
                raise NoPools(f"provided IPv{version} IPPools list contains one or more IPv{network.version} IPPools")
        config = self.config()
        pools, selecting = self._select_pools(version, host, requested, args.intended_use, args.namespace_labels)
        affine = self._prepare_affine_blocks(host, version, pools, selecting, config)
        owned = len(affine)
        limit = args.max_blocks_per_host
        if config.max_blocks_per_host > 0 and (limit == 0 or limit > config.max_blocks_per_host):
            limit = config.max_blocks_per_host
        limit = limit or DEFAULT_MAX_BLOCKS
        result = Assignments(version, count)
        while len(result.ips) < count:
            try:
                stored, claimed = self._find_or_claim_block(host, affine, pools, config, owned < limit)
            except _NoFreeBlocks:
                if config.strict_affinity:
                    result.note("No more free affine blocks and strict affinity enabled")
                break
            except BlockLimitReached:
                result.note(
                    f"Need to allocate an IPAM block but could not - limit of {limit} blocks reached for this node"
                )
                raise BlockLimitReached(result.shortfall() or "block limit reached") from None
            owned += claimed
            for _ in range(self.retries):
                try:
                    got = self._assign_from_block(
                        stored, count - len(result.ips), args.handle_id, args.attrs, host, config.strict_affinity
                    )
                except (Conflict, NotFound):
                    fresh = self._block(stored.block.cidr, config)
                    if fresh is None:
                        break
                    stored = fresh
                    continue
                except BlockError as exc:
                    result.note(f"Failed to assign IPs in newly allocated block: {exc}")
                    break
                result.ips.extend(got)
                break
        if len(result.ips) < count and not config.strict_affinity:
            self._borrow(result, count, args, pools, config)
        return result

    def _prepare_affine_blocks(
        self,
        host: str,
        version: int,
        pools: Sequence[IPPoolInfo],
        selecting: Sequence[IPPoolInfo],
        config: IPAMConfig,
    ) -> list[Network]:
        """The host's affine blocks in usable pools; empty ones in pools that no longer select it are released."""
        usable: list[Network] = []
        for network in self.affine_blocks(host, version):
            if any(network.subnet_of(p.cidr) for p in pools):  # type: ignore[arg-type]
                usable.append(network)
            elif not any(network.subnet_of(p.cidr) for p in selecting):  # type: ignore[arg-type]
                try:
                    self._release_block_affinity(host, network, require_empty=True)
                    log.info("released empty block %s: its pool no longer selects %s", network, host)
                except (Conflict, NotFound, _ClaimConflict, _NotEmpty):
                    pass
        return usable

    def _borrow(
        self, result: Assignments, count: int, args: AutoAssignArgs, pools: Sequence[IPPoolInfo], config: IPAMConfig
    ) -> None:
        """Non-strict affinity: take free addresses from any existing block of the pools, in host-seeded order."""
        exhausted = []
        for pool in pools:
            existing = {block.cidr for block in self.list_blocks(pool.version)}
            for subnet in random_blocks(pool.cidr, pool.block_size, args.hostname):
                if len(result.ips) >= count:
                    return
                if subnet not in existing:
                    continue
                for _ in range(self.retries):
                    stored = self._block(subnet, config)
                    if stored is None:
                        break
                    try:
                        got = self._assign_from_block(
                            stored, count - len(result.ips), args.handle_id, args.attrs, args.hostname, False
                        )
                    except (Conflict, NotFound):
                        continue
                    result.ips.extend(got)
                    break
            if len(result.ips) < count:
                exhausted.append(str(pool.cidr))
        if exhausted:
            result.note(f"No IPs available in pools: [{' '.join(exhausted)}]")

    def assign_ip(
        self,
        address: Address,
        hostname: str,
        handle_id: str | None = None,
        attrs: Mapping[str, str] | None = None,
        intended_use: str = "",
    ) -> None:
        """AssignIP: allocate exactly ``address`` to ``hostname``, claiming its block if it has no owner."""
        pool = self.pool_for(address)
        if pool is None:
            raise IPAMError(f"The provided IP address {address} is not in a configured pool")
        if intended_use and intended_use not in pool.allowed_uses:
            raise IPAMError(
                f'IP address {address} is in IP pool "{pool.name}", which is not allowed for use "{intended_use}" '
                f"(allowedUses: [{' '.join(pool.allowed_uses)}])"
            )
        config = self.config()
        network = block_for(address, pool.block_size)
        for _ in range(self.retries):
            stored = self._block(network, config)
            try:
                if stored is None:
                    _, revision = self._pending_affinity(hostname, network)
                    stored = self._claim_block(hostname, network, revision, config)
                stored.block.assign(address, handle_id, attrs, affinity_string(hostname), config.strict_affinity)
            except (Conflict, NotFound, _ClaimConflict):
                continue
            except AddressInUse:
                raise IPAMError(f"Address already assigned in block: {address} is already in use") from None
            except BlockError as exc:
                raise IPAMError(str(exc)) from None
            if handle_id is not None:
                self._increment_handle(handle_id, network, 1)
            try:
                self._update_block(stored)
            except (Conflict, NotFound):
                if handle_id is not None:
                    self._decrement_handle(handle_id, network, 1)
                continue
            return
        raise TooManyRetries()

    def assign_tunnel_address(
        self,
        node: str,
        address: Address | None = None,
        kind: str = "vxlan",
        pools: Sequence[Network] | None = None,
    ) -> Interface:
        """A node's tunnel address, as calico-node's allocateip takes it: handle ``<kind>-tunnel-addr-<node>``.

        From ``pools``, else the eligible ones (:func:`tunnel_pools`: enabled
        IPv4 pools of that encapsulation selecting the node); attributes node
        and type; the Tunnel use. ``address`` asks for that one exactly.
        """
        if kind not in TUNNEL_ATTR_TYPES:
            raise IPAMError(f"unknown tunnel kind {kind!r}: one of {', '.join(TUNNEL_ATTR_TYPES)}")
        handle_id = f"{kind}-tunnel-addr-{node}"
        attrs = {ATTR_NODE: node, ATTR_TYPE: TUNNEL_ATTR_TYPES[kind]}
        if address is not None:
            self.assign_ip(address, node, handle_id, attrs, intended_use="Tunnel")
            pool = self.pool_for(address)
            assert pool is not None
            return ipaddress.ip_interface(f"{address}/{pool.block_size}")
        if pools is None:
            pools = tunnel_pools(self.pools(4), kind, self._node_labels(node))
        if not pools:
            raise NoPools(f"no {kind} tunnel address for {node}: no enabled IPv4 pool of that kind selects it")
        v4, _ = self.auto_assign(
            AutoAssignArgs(
                hostname=node, num4=1, handle_id=handle_id, attrs=attrs, ipv4_pools=pools, intended_use="Tunnel"
            )
        )
        if v4 is None or not v4.ips:
            raise PoolExhausted((v4.shortfall() if v4 else None) or f"no {kind} tunnel address for {node}")
        return v4.ips[0]

    # -- release ----------------------------------------------------------------

    def _block_of(self, address: Address, pools: Sequence[IPPoolInfo]) -> Network | None:
        pool = self.pool_for(address, pools)
        if pool is not None:
            return block_for(address, pool.block_size)
        for block in self.list_blocks(address.version):  # not in any pool: find its block by a full scan
            if address in block.cidr:
                return block.cidr
        return None

    def release_ips(
        self, addresses: Iterable[Address], handle_id: str = "", sequence: int | None = None
    ) -> list[Address]:
        """ReleaseIPs: free ``addresses``; returns those that were not allocated (nothing to do for them)."""
        pools = self.pools(enabled_only=False)
        by_block: dict[Network, list[Address]] = {}
        not_allocated: list[Address] = []
        for address in addresses:
            network = self._block_of(address, pools)
            if network is None:
                not_allocated.append(address)
            else:
                by_block.setdefault(network, []).append(address)
        config = self.config()
        for network, members in by_block.items():
            not_allocated.extend(self._release_from_block(network, members, config, handle_id, sequence))
        return not_allocated

    def _release_from_block(
        self, network: Network, addresses: list[Address], config: IPAMConfig, handle_id: str, sequence: int | None
    ) -> list[Address]:
        for _ in range(self.retries):
            stored = self._block(network, config)
            if stored is None:
                return addresses
            try:
                unallocated, by_handle = stored.block.release(
                    addresses, config.ip_cooldown_seconds, handle_id=handle_id, sequence=sequence
                )
            except BlockError as exc:
                raise IPAMError(str(exc)) from None
            if len(unallocated) == len(addresses):
                return unallocated
            try:
                if stored.block.empty() and stored.block.affinity is None:
                    self.store.delete(block_key(network), stored.revision)
                else:
                    self._update_block(stored)
            except (Conflict, NotFound):
                continue
            for owner, count in by_handle.items():
                self._decrement_handle(owner, network, count)
            return unallocated
        raise TooManyRetries()

    def release_by_handle(self, handle_id: str) -> int:
        """ReleaseByHandle: free every address of ``handle_id``; how many were released."""
        handle_id = handle_id.split("\r", maxsplit=1)[0]
        handle = self.handle(handle_id)
        if handle is None:
            raise NotAssigned(f"resource does not exist: IPAMHandle({handle_id})")
        config = self.config()
        released = 0
        for cidr in list(handle.block):
            network = ipaddress.ip_network(cidr)
            released += self._release_handle_in_block(handle_id, network, config)
        return released

    def _release_handle_in_block(self, handle_id: str, network: Network, config: IPAMConfig) -> int:
        for _ in range(self.retries):
            stored = self._block(network, config)
            if stored is None:
                self._decrement_all(handle_id, network)
                return 0
            count = stored.block.release_by_handle(handle_id, config.ip_cooldown_seconds)
            if count == 0:
                self._decrement_all(handle_id, network)
                return 0
            try:
                if stored.block.empty() and stored.block.affinity is None:
                    self.store.delete(block_key(network), stored.revision)
                else:
                    self._update_block(stored)
            except (Conflict, NotFound):
                continue
            self._decrement_handle(handle_id, network, count)
            return count
        raise TooManyRetries()

    def _decrement_all(self, handle_id: str, network: Network) -> None:
        """A handle counting addresses a block no longer has: drop that block from it (it over-counted)."""
        handle = self.handle(handle_id)
        if handle is not None and str(network) in handle.block:
            self._decrement_handle(handle_id, network, handle.block[str(network)])

    def ips_by_handle(self, handle_id: str) -> list[Address]:
        handle = self.handle(handle_id)
        if handle is None:
            raise NotAssigned(f"resource does not exist: IPAMHandle({handle_id})")
        config = self.config()
        out: list[Address] = []
        for cidr in handle.block:
            stored = self._block(ipaddress.ip_network(cidr), config)
            if stored is not None:
                out.extend(stored.block.ips_by_handle(handle_id))
        return out

    def attributes_for(self, address: Address) -> Attribute:
        """GetAssignmentAttributes: who holds ``address``; :class:`NotAssigned` if nobody."""
        network = self._block_of(address, self.pools(enabled_only=False))
        stored = self._block(network) if network is not None else None
        attribute = stored.block.attribute_for(address) if stored is not None else None
        if attribute is None or attribute.released_at is not None:
            raise NotAssigned(f"{address} is not assigned")
        return attribute

    # -- affinity release ------------------------------------------------------

    def _release_block_affinity(
        self, host: str, network: Network, *, require_empty: bool, sequence: int | None = None
    ) -> None:
        """releaseBlockAffinity: pendingDeletion, then delete the empty block or un-affine it, then the affinity."""
        current = self._affinity(host, network)
        if current is None:
            raise NotFound(f"no affinity of {host} for {network}")
        _, revision = current
        stored = self._block(network)
        if stored is None:
            self._delete_affinity(host, network, revision)
            return
        block = stored.block
        if sequence is not None and sequence != block.sequence_number:
            raise Conflict(f"IPAM block {network} updated since we last read it")
        if block.affinity is not None and block.affinity != affinity_string(host):
            self._delete_affinity(host, network, revision)
            raise _ClaimConflict(f"block {network} is affine to {block.affinity}, not {host}")
        if require_empty and not block.empty():
            raise _NotEmpty(f"block {network} still has {len(block.in_use())} addresses in use")
        revision = self._set_affinity(host, network, STATE_PENDING_DELETION, revision)
        if block.empty():
            with contextlib.suppress(NotFound):
                self.store.delete(block_key(network), stored.revision)
        else:
            block.affinity = None
            block.affinity_claim_time = None
            self._update_block(stored)
        self._delete_affinity(host, network, revision)

    def release_affinity(self, host: str, network: Network, *, must_be_empty: bool = False) -> bool:
        """Release ``host``'s affinity for ``network``; False if it had none (or another host owns the block)."""
        for _ in range(self.retries):
            try:
                self._release_block_affinity(host, network, require_empty=must_be_empty)
                return True
            except NotFound:
                return False
            except _ClaimConflict:
                return False
            except _NotEmpty as exc:
                raise IPAMError(str(exc)) from None
            except Conflict:
                continue
        raise TooManyRetries()

    def release_host_affinities(self, host: str, *, must_be_empty: bool = False) -> int:
        """Every affinity of ``host`` (a node leaving); how many were released."""
        released = 0
        for version in (4, 6):
            for network in self.affine_blocks(host, version):
                try:
                    released += self.release_affinity(host, network, must_be_empty=must_be_empty)
                except IPAMError as exc:
                    log.info("keeping affinity of %s for %s: %s", host, network, exc)
        return released

    def release_pool_affinities(self, pool: Network) -> int:
        """Every affinity for blocks inside ``pool`` (IPPool deletion)."""
        released = 0
        for _ in range(self.retries):
            kvs, _ = self.store.list(f"/calico/ipam/v2/{AFFINITY_HOST}/")
            pending = [p for kv in kvs if (p := parse_affinity_key(kv.key)) and _within(p[2], pool)]
            if not pending:
                return released
            for _type, host, network in pending:
                released += self.release_affinity(host, network)
        raise TooManyRetries()

    # -- reporting -------------------------------------------------------------

    def usage(self) -> list[PoolUsage]:
        """Per pool (all pools, then blocks outside any pool) the addresses and how many are in use."""
        pools = self.pools(enabled_only=False)
        blocks = self.list_blocks()
        rows: list[PoolUsage] = []
        seen: set[Network] = set()
        for pool in pools:
            members = [b for b in blocks if _within(b.cidr, pool.cidr)]
            seen.update(b.cidr for b in members)
            stats = [(b.cidr, b.num_addresses, len(b.in_use())) for b in members]
            rows.append(PoolUsage(pool, pool.cidr, pool.cidr.num_addresses, sum(s[2] for s in stats), stats))
        for block in blocks:
            if block.cidr not in seen:
                used = len(block.in_use())
                rows.append(
                    PoolUsage(None, block.cidr, block.num_addresses, used, [(block.cidr, block.num_addresses, used)])
                )
        return rows


def tunnel_pools(pools: Iterable[IPPoolInfo], kind: str, labels: Mapping[str, str]) -> list[Network]:
    """The pools a ``kind`` tunnel address may come from (allocateip's filter), in the order given.

    Enabled IPv4 pools selecting the node (``labels``) that allow the Tunnel
    use and, for ``vxlan``/``ipip``, have that encapsulation on (Always or
    CrossSubnet); WireGuard takes any such pool.
    """
    mode = {"vxlan": "vxlan_mode", "ipip": "ipip_mode"}.get(kind)
    return [
        pool.cidr
        for pool in pools
        if pool.version == 4
        and not pool.disabled
        and "Tunnel" in pool.allowed_uses
        and pool.node_selector.matches(labels)
        and (mode is None or getattr(pool, mode) != "Never")
    ]


def _within(inner: Network, outer: Network) -> bool:
    return inner.version == outer.version and inner.subnet_of(outer)  # type: ignore[arg-type]
