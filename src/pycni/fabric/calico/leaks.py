"""The IPAM leak GC's decisions: which of a node's allocations, empty blocks and orphaned handles to give back. Pure.

Calico runs this in kube-controllers' node controller
(``kube-controllers/pkg/controllers/node/ipam.go``, ``ipam_allocation.go``;
the rules are ``design/ipam/ipam-gc.md``'s); pycni's agent runs it for its own
node. Each scan of the datastore (:class:`Scan`) is handed to
:meth:`LeakTracker.observe`, which keeps what earlier scans saw and returns a
:class:`Verdict`:

* **Allocations are valid until proven leaked.** A tunnel address is valid
  while its node exists (this node: it is running); an allocation without
  the ``pod`` and ``namespace`` attributes (not a Kubernetes pod's: a plain
  CNI container, or a path that does not stamp them) is assumed valid, as
  Calico assumes; any other is valid while some WorkloadEndpoint lists its
  address (pycni has no Kubernetes pod to look up: the endpoint the calico
  plugin writes is the pod's record here).
* **Two observations and a grace period.** An allocation no endpoint uses is
  a *candidate* from the scan that first sees it; it is *confirmed* only at a
  later scan, once ``grace`` seconds have passed since, and any scan that
  finds it used again clears it (a pod re-added meanwhile keeps its address).
  A grace period of 0 turns confirmation off (Calico: GC disabled).
* **All or none per handle.** A handle's addresses are released together, and
  only when every one of them on this node is a confirmed leak; otherwise the
  handle's per-block counts would drift from the blocks.
* **Empty blocks** of this node (confirmed affinity, no allocation) are given
  back once seen empty on two scans spanning the grace period; the node keeps
  at least one block (releasing its last would make the next pod claim anew).
* **Orphaned handles** (a handle no block allocation names, left when an ADD
  died between counting the handle and writing the block) are deleted once
  seen at the same revision for the grace period: a handle an ADD in flight
  is using changes revision, so it is never taken.

The caller re-validates confirmed leaks just before releasing them (a fresh
scan, and each release conditioned on the allocation's handle and sequence
number), as Calico's ``garbageCollectKnownLeaks`` does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from pycni.fabric.calico.ipam import Network


@dataclass(frozen=True)
class Allocation:
    """One allocated address of this node: the handle and sequence number a release must match."""

    ip: str
    handle: str
    block: Network
    sequence: int
    pod: bool = True  # carries the pod and namespace attributes (a Kubernetes pod's allocation)
    tunnel: bool = False  # a node tunnel address (its handle is ``<kind>-tunnel-addr-<node>``)

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.handle, self.ip, self.sequence)


@dataclass(frozen=True)
class Scan:
    """What one pass read: this node's allocations, the addresses endpoints use, its blocks, unused handles."""

    allocations: Sequence[Allocation] = ()
    in_use: frozenset[str] = frozenset()
    blocks: Mapping[Network, bool] = field(default_factory=dict)  # this node's confirmed blocks -> empty
    orphan_handles: Mapping[str, int] = field(default_factory=dict)  # handle -> its revision


@dataclass
class Verdict:
    """What to release now, and how many allocations are still only candidates (Calico's gc_candidates)."""

    release: list[Allocation] = field(default_factory=list)
    blocks: list[Network] = field(default_factory=list)
    handles: list[tuple[str, int]] = field(default_factory=list)
    candidates: int = 0


def valid(allocation: Allocation, in_use: frozenset[str]) -> bool:
    """``allocationIsValid`` here: tunnel and non-pod allocations always, others while an endpoint uses them."""
    return allocation.tunnel or not allocation.pod or allocation.ip in in_use


class LeakTracker:
    """The GC's memory between scans: when each candidate leak, empty block and orphaned handle was first seen."""

    def __init__(self, grace: float) -> None:
        self.grace = grace
        self._leaked_at: dict[tuple[str, str, int], float] = {}
        self._empty_at: dict[Network, float] = {}
        self._orphan_at: dict[tuple[str, int], float] = {}

    def _expired(self, since: float, now: float) -> bool:
        return self.grace > 0 and now - since > self.grace

    def observe(self, scan: Scan, now: float) -> Verdict:
        verdict = Verdict()
        confirmed: dict[str, list[Allocation]] = {}
        blocked: set[str] = set()  # handles with an allocation that is valid or not yet confirmed
        leaked_at: dict[tuple[str, str, int], float] = {}
        for allocation in scan.allocations:
            if valid(allocation, scan.in_use):  # markValid: a later leak starts its clock afresh
                blocked.add(allocation.handle)
                continue
            since = self._leaked_at.get(allocation.key, now)
            leaked_at[allocation.key] = since
            if self._expired(since, now):
                confirmed.setdefault(allocation.handle, []).append(allocation)
            else:
                verdict.candidates += 1
                blocked.add(allocation.handle)
        self._leaked_at = leaked_at  # allocations gone from the scan are forgotten
        for handle in sorted(confirmed.keys() - blocked):
            verdict.release.extend(confirmed[handle])
        verdict.blocks = self._empty_blocks(scan, now)
        verdict.handles = self._orphans(scan, now)
        return verdict

    def _empty_blocks(self, scan: Scan, now: float) -> list[Network]:
        empty_at = {block: self._empty_at.get(block, now) for block, empty in scan.blocks.items() if empty}
        self._empty_at = empty_at
        ready = sorted((b for b, since in empty_at.items() if self._expired(since, now)), key=_network_order)
        keep = len(scan.blocks) - len(ready)
        if keep < 1 and ready:
            ready = ready[1:]  # the node keeps one block, the lowest
        return ready

    def _orphans(self, scan: Scan, now: float) -> list[tuple[str, int]]:
        seen = {key: self._orphan_at.get(key, now) for key in scan.orphan_handles.items()}
        self._orphan_at = seen
        return sorted(key for key, since in seen.items() if self._expired(since, now))


def _network_order(network: Network) -> tuple[int, int]:
    return (network.version, int(network.network_address))
