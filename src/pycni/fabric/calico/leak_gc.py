"""The agent's periodic IPAM leak GC pass for its own node: scan, decide (:mod:`.leaks`), re-validate, release.

Each pass runs ``calicoctl ipam check``'s analysis (:func:`~.ipam_check.check`),
so the GC releases exactly what the check names as leaked, and turns its
:class:`~.ipam_check.Findings` into a :class:`~.leaks.Scan` of this node
(allocations whose ``node`` attribute is this node, its confirmed affine
blocks, the orphaned handles counted in its blocks). The
:class:`~.leaks.LeakTracker` decides; before anything is released the pass
scans again and keeps only what is still leaked, whole handles only, and
each release is conditioned on the allocation's handle and sequence number,
so an address released and handed out again meanwhile is never taken.

Passes run every half grace period (Calico's full scan every
``LeakGracePeriod / 2``): with the default 15 minutes a leak is released 15
to 22.5 minutes after the workload left it. Everything lost to a race
(another writer, the datastore away) is left for the next pass.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import time
from collections.abc import Callable

from pycni.datastore import Conflict, NotFound
from pycni.fabric.calico.ipam import (
    ATTR_NAMESPACE,
    ATTR_NODE,
    ATTR_POD,
    ATTR_TYPE,
    TUNNEL_TYPES,
    BlockAffinity,
    Handle,
    Network,
    affinity_prefix,
    handle_key,
    parse_affinity_key,
)
from pycni.fabric.calico.ipam_check import Findings, check
from pycni.fabric.calico.ipam_store import IPAM, IPAMError
from pycni.fabric.calico.leaks import Allocation, LeakTracker, Scan, Verdict, valid

log = logging.getLogger("pycni.fabric.calico.leak_gc")
MIN_INTERVAL = 0.5


def is_tunnel_handle(handle: str) -> bool:
    return "-tunnel-addr-" in handle


class LeakCollector:
    """One node's leak GC: :meth:`run_once` every :attr:`interval` seconds."""

    def __init__(self, ipam: IPAM, nodename: str, grace: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.ipam = ipam
        self.nodename = nodename
        self.grace = grace
        self.clock = clock
        self.tracker = LeakTracker(grace)
        self.released = 0  # addresses released so far (Calico's gc_reclamations)

    @property
    def interval(self) -> float:
        return max(self.grace / 2, MIN_INTERVAL)

    # -- reading --------------------------------------------------------------------------

    def _confirmed_blocks(self) -> set[Network]:
        found: set[Network] = set()
        for version in (4, 6):
            kvs, _ = self.ipam.store.list(affinity_prefix(self.nodename, version))
            for kv in kvs:
                parsed = parse_affinity_key(kv.key)
                if parsed is not None and BlockAffinity.from_json(kv.value).confirmed:
                    found.add(parsed[2])
        return found

    def scan(self) -> tuple[Scan, Findings]:
        """This node's part of ``ipam check``'s findings."""
        _, found = check(self.ipam, show_problem_ips=False)
        leaked = {ip for ip, _ in found.leaked}
        mine = self._confirmed_blocks()
        allocations: list[Allocation] = []
        blocks: dict[Network, bool] = {}
        for block in found.blocks:
            if block.host == self.nodename and block.cidr in mine:
                blocks[block.cidr] = block.empty()
            for address, attribute in block.in_use():
                attrs = attribute.secondary or {}
                if attribute.released_at is not None or attrs.get(ATTR_NODE) != self.nodename:
                    continue
                allocations.append(
                    Allocation(
                        ip=str(address),
                        handle=attribute.handle,
                        block=block.cidr,
                        sequence=block.sequence_for(block.ordinal(address)),
                        pod=bool(attrs.get(ATTR_POD) and attrs.get(ATTR_NAMESPACE)),
                        tunnel=attrs.get(ATTR_TYPE) in TUNNEL_TYPES or is_tunnel_handle(attribute.handle),
                    )
                )
        in_use = frozenset(a.ip for a in allocations if a.ip not in leaked)
        return Scan(allocations, in_use, blocks, self._orphans(found, blocks)), found

    def _orphans(self, found: Findings, blocks: dict[Network, bool]) -> dict[str, int]:
        """Handles no allocation names that count addresses in this node's blocks, with their revision."""
        orphans: dict[str, int] = {}
        for handle_id in found.empty_handles:
            if is_tunnel_handle(handle_id):
                continue  # the agent's tunnel addresses are TunnelAddresses' to keep
            kv = self.ipam.store.get(handle_key(handle_id))
            if kv is None:
                continue
            counted = Handle.from_json(handle_id, kv.value).block
            if any(ipaddress.ip_network(cidr) in blocks for cidr in counted):
                orphans[handle_id] = kv.mod_revision
        return orphans

    # -- one pass ---------------------------------------------------------------------------

    def run_once(self) -> Verdict:
        scan, _ = self.scan()
        verdict = self.tracker.observe(scan, self.clock())
        if verdict.release:
            self._release(verdict.release)
        for block in verdict.blocks:
            try:
                if self.ipam.release_affinity(self.nodename, block, must_be_empty=True):
                    log.info("IPAM GC: released empty block %s: unused for more than %s s", block, _secs(self.grace))
            except IPAMError as exc:  # an ADD took an address meanwhile
                log.info("IPAM GC: keeping block %s: %s", block, exc)
        for handle_id, revision in verdict.handles:
            with contextlib.suppress(Conflict, NotFound):  # changed meanwhile: an ADD is using it
                self.ipam.store.delete(handle_key(handle_id), revision)
                log.info("IPAM GC: deleted handle %s: no address for more than %s s", handle_id, _secs(self.grace))
        return verdict

    def _release(self, confirmed: list[Allocation]) -> None:
        """Garbage-collect known leaks: re-validate on a fresh scan, then release whole handles, CAS by sequence."""
        fresh, _ = self.scan()
        still = {a.key for a in fresh.allocations if not valid(a, fresh.in_use)}
        live = {a.handle for a in fresh.allocations if valid(a, fresh.in_use)}
        by_handle: dict[str, list[Allocation]] = {}
        for allocation in confirmed:
            by_handle.setdefault(allocation.handle, []).append(allocation)
        for handle, allocations in sorted(by_handle.items()):
            if handle in live or any(a.key not in still for a in allocations):
                log.info("IPAM GC: handle %s is in use again; not released", handle)
                continue
            for allocation in allocations:
                try:
                    self.ipam.release_ips(
                        [ipaddress.ip_address(allocation.ip)], handle_id=handle, sequence=allocation.sequence
                    )
                except IPAMError as exc:  # released and handed out again since the scan
                    log.info("IPAM GC: %s was not released: %s", allocation.ip, exc)
                    continue
                self.released += 1
                log.info(
                    "IPAM GC: released leaked address %s (handle %s): no workload endpoint used it for more than %s s",
                    allocation.ip,
                    handle,
                    _secs(self.grace),
                )


def _secs(seconds: float) -> str:
    return f"{seconds:g}"
