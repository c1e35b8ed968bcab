"""Reconciling dataplane drivers: desired state in, only the delta written to the kernel.

Managers (a fabric's backends, Calico's block and tunnel managers) hand a
driver the *whole* desired state of what it manages; the driver compares it
with what it last saw the kernel hold, writes only the difference, and
records what it wrote. An apply with nothing new sends no netlink write; a
periodic resync re-reads the kernel and repairs drift; objects pycni does not
own are never touched (see each driver for what it owns).

- :class:`~pycni.dataplane.routes.RouteTable`: routes marked with :data:`RTPROT_PYCNI`;
- :class:`~pycni.dataplane.neighbours.NeighbourTable`: permanent neighbours on one device;
- :class:`~pycni.dataplane.neighbours.FdbTable`: permanent FDB remotes on one vxlan device;
- :class:`~pycni.dataplane.delta.DeltaTracker`: the pure desired-vs-actual core they share.

Every driver takes a pyroute2 socket bound to the namespace it manages
(:func:`pycni.net.netns.iproute` for a path or handle,
:func:`pycni.net.netns.iproute_here` for the caller's own) and reports each
apply as an :class:`~pycni.dataplane.stats.ApplyResult`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from pycni.dataplane.delta import DeltaTracker
from pycni.dataplane.neighbours import FdbKey, FdbTable, NeighbourTable
from pycni.dataplane.reconciler import Reconciler
from pycni.dataplane.routes import RTPROT_PYCNI, Route, RouteKey, RouteTable, RouteType
from pycni.dataplane.stats import ApplyResult, Counters
from pycni.net.linkevents import LinkBatch

Driver = Reconciler[Any, Any]


def apply_layered(lower: Sequence[Driver], upper: Sequence[Driver]) -> list[ApplyResult]:
    """Apply ``lower`` (neighbours, FDB) around ``upper`` (routes): what routes need first, what they used last.

    New neighbour and FDB entries are written before the routes through them
    (or the kernel would ARP for the gateway: Flannel's order), and stale
    ones are removed only after the routes through them went.
    """
    results = [driver.apply(deletions=False) for driver in lower]
    results += [driver.apply() for driver in upper]
    results += [driver.apply(updates=False) for driver in lower]
    return results


def forward_link_events(batch: LinkBatch, drivers: Iterable[Driver]) -> None:
    """Tell every driver which links changed (all of them resync if events were lost)."""
    for driver in drivers:
        if batch.lost:
            driver.queue_resync()
        for event in batch.events:
            driver.link_changed(event.name, event.index)


__all__ = [
    "RTPROT_PYCNI",
    "ApplyResult",
    "Counters",
    "DeltaTracker",
    "FdbKey",
    "FdbTable",
    "NeighbourTable",
    "Reconciler",
    "Route",
    "RouteKey",
    "RouteTable",
    "RouteType",
    "apply_layered",
    "forward_link_events",
]
