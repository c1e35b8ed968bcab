"""The managers: hand each part of the desired state to the driver that owns it, and report what changed.

As Felix's per-concern managers (route, VXLAN, IPIP, NAT), each takes its
slice of :class:`~pycni.fabric.calico.calculation.Desired`:

* :class:`RouteManager`: blackholes, tunnel and no-encap routes, one group
  each in a :class:`~pycni.dataplane.RouteTable` (protocol RTPROT_PYCNI, so
  BIRD's routes, the kernel's and the CNI plugin's per-pod routes are never
  touched);
* :class:`VxlanDataplane`: the ``vxlan.calico`` device, then its permanent
  neighbours and FDB entries (:class:`~pycni.dataplane.NeighbourTable`,
  :class:`~pycni.dataplane.FdbTable`), written around the routes through
  them (:func:`~pycni.dataplane.apply_layered`: entries before routes, stale
  ones after);
* :class:`~pycni.fabric.calico.tunnels.IpipManager`: ``tunl0``;
* :class:`NatOutgoingManager`: the agent's nftables table.

:class:`Dataplane` runs them in that order. :meth:`Dataplane.apply` writes
only what differs from what the drivers last saw; :meth:`Dataplane.resync`
re-reads the kernel first (drift repaired), and on a node in order writes
nothing.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pycni.dataplane import (
    ApplyResult,
    FdbTable,
    NeighbourTable,
    RouteTable,
    apply_layered,
    forward_link_events,
)
from pycni.fabric.calico.calculation import GROUP_ORDER, VXLAN_DEVICE, Desired, sort_key
from pycni.fabric.calico.ipam import Network
from pycni.fabric.calico.tunnels import IpipManager, NoIPIP, VxlanManager
from pycni.net.errors import NetError
from pycni.net.linkevents import LinkBatch
from pycni.nft import calico as nat_rules
from pycni.spec.errors import CNIError

if TYPE_CHECKING:
    from pyroute2 import IPRoute

log = logging.getLogger("pycni.fabric.calico.managers")


@dataclass
class StepReport:
    """What one apply or resync did: the drivers' results, device and rule changes, problems met."""

    results: list[ApplyResult] = field(default_factory=list)
    devices_changed: bool = False
    nat_written: bool = False
    nft_elements: int = 0  # elements of the natOutgoing sets as the table now holds them
    problems: list[str] = field(default_factory=list)

    @property
    def writes(self) -> int:
        """Netlink requests the drivers sent (a no-change apply sends none)."""
        return sum(result.writes for result in self.results)

    @property
    def changed(self) -> bool:
        return self.devices_changed or self.nat_written or any(r.changed for r in self.results)


class RouteManager:
    """One RouteTable, one group per route class (GROUP_ORDER decides a key two classes want).

    The table owns pycni-protocol routes only inside the blocks seen so far by
    this process (a released block's routes are still removed; flanneld's, on
    a Canal node, are never touched). A block released while the agent was
    down leaves its route behind: ``pycni reset`` finds protocol-112 routes.
    """

    def __init__(self, ipr: IPRoute) -> None:
        self.table = RouteTable(ipr, group_order=GROUP_ORDER, name="calico", within=())
        self._owned: set[Network] = set()

    def set(self, desired: Desired) -> None:
        grown = self._owned | set(desired.owned)
        if grown != self._owned:
            self._owned = grown
            self.table.within = tuple(sorted(grown, key=sort_key))
        for group in GROUP_ORDER:
            self.table.set_routes(desired.routes.get(group, ()), group)


class VxlanDataplane:
    """vxlan.calico, its neighbours and its FDB."""

    def __init__(self, ipr: IPRoute) -> None:
        self.device = VxlanManager(ipr)
        self.neighbours = NeighbourTable(ipr, VXLAN_DEVICE)
        self.fdb = FdbTable(ipr, VXLAN_DEVICE)

    def set(self, desired: Desired) -> bool:
        """Fix the device (a write only if it differs) and set the entries wanted on it; whether it changed.

        A device whose tunnel address is not known yet is left as it is; only
        when no pool uses VXLAN any more is it deleted.
        """
        waiting = desired.vxlan is None and desired.vxlan_in_use
        changed = False if waiting else self.device.apply(desired.vxlan)
        if changed:
            self.neighbours.link_changed(VXLAN_DEVICE)
            self.fdb.link_changed(VXLAN_DEVICE)
        wanted = desired.vxlan is not None
        neighbours: dict[ipaddress.IPv4Address | ipaddress.IPv6Address, str] = {}
        if wanted:
            neighbours = dict(desired.neighbours.items())
        self.neighbours.set_neighbours(neighbours)
        self.fdb.set_entries(dict(desired.fdb) if wanted else {})
        return changed


class NatOutgoingManager:
    """The natOutgoing table: written when the pools change or the live table drifted; removed when unused."""

    def __init__(self) -> None:
        self._pools: tuple[tuple[ipaddress.IPv4Network, ...], tuple[ipaddress.IPv4Network, ...]] | None = None
        self._listing: str | None = None

    def apply(self, desired: Desired, *, check: bool) -> bool:
        """Install or refresh; ``check`` re-lists the live table (a resync). Whether it wrote."""
        pools = (desired.nat_pools, desired.nat_masq)
        if not desired.nat_masq:
            if self._pools is None or self._pools[1] or check:
                removed = nat_rules.remove()
                self._pools, self._listing = pools, None
                if removed:
                    log.info("natOutgoing rules removed: no pool has natOutgoing")
                return removed
            return False
        if pools == self._pools and not check:
            return False
        known = self._listing if pools == self._pools else None
        written, self._listing = nat_rules.ensure(desired.nat_pools, desired.nat_masq, known)
        if written:
            what = "repaired" if pools == self._pools else "installed"
            log.info(
                "natOutgoing rules %s: traffic from %s to anything outside %s leaves with the node's address",
                what,
                ", ".join(map(str, desired.nat_masq)),
                ", ".join(map(str, desired.nat_pools)),
            )
        self._pools = pools
        return written

    def remove(self) -> bool:
        self._pools, self._listing = None, None
        return nat_rules.remove()

    @property
    def elements(self) -> int:
        """Elements of the two pool sets in the table as last written or checked (0: no table)."""
        if self._pools is None or not self._pools[1]:
            return 0
        return len(self._pools[0]) + len(self._pools[1])


class Dataplane:
    """Every manager of one node, on one netlink socket (callers serialise apply/resync)."""

    def __init__(self, ipr: IPRoute) -> None:
        self.ipr = ipr
        self.routes = RouteManager(ipr)
        self.vxlan = VxlanDataplane(ipr)
        self.ipip = IpipManager(ipr)
        self.nat = NatOutgoingManager()
        self._problems: set[str] = set()

    @property
    def drivers(self) -> list[RouteTable | NeighbourTable | FdbTable]:
        return [self.routes.table, self.vxlan.neighbours, self.vxlan.fdb]

    def link_events(self, batch: LinkBatch) -> None:
        forward_link_events(batch, self.drivers)

    def apply(self, desired: Desired) -> StepReport:
        return self._step(desired, resync=False)

    def resync(self, desired: Desired) -> StepReport:
        """Re-read the kernel's state of every driver, then apply: drift is repaired, nothing else written."""
        for driver in self.drivers:
            driver.queue_resync()
        return self._step(desired, resync=True)

    def _step(self, desired: Desired, *, resync: bool) -> StepReport:
        report = StepReport(problems=list(desired.problems))
        try:
            report.devices_changed |= self.vxlan.set(desired)
        except CNIError as exc:
            report.problems.append(f"vxlan.calico: {exc}")
        try:
            if self.ipip.apply(desired.ipip):
                report.devices_changed = True
        except NoIPIP as exc:
            report.problems.append(str(exc))
        except CNIError as exc:
            report.problems.append(f"tunl0: {exc}")
        if report.devices_changed:
            for driver in self.drivers:
                driver.link_changed(VXLAN_DEVICE)
                driver.link_changed("tunl0")
        if self.vxlan.device.readdressed or self.ipip.readdressed:
            # A tunnel address that was replaced took the kernel's routes using it as source with it:
            # read the routes back instead of trusting memory.
            self.vxlan.device.readdressed = self.ipip.readdressed = False
            self.routes.table.queue_resync()
        self.routes.set(desired)
        try:
            report.results = apply_layered([self.vxlan.neighbours, self.vxlan.fdb], [self.routes.table])
        except NetError as exc:
            if exc.errno != errno.EINTR:
                report.problems.append(f"routes: {exc}")
        try:
            report.nat_written = self.nat.apply(desired, check=resync)
        except CNIError as exc:
            report.problems.append(f"natOutgoing: {exc}")
        report.nft_elements = self.nat.elements
        self._report(report)
        return report

    def _report(self, report: StepReport) -> None:
        """Each problem once while it lasts (so a resync does not repeat it), and once more when it is over."""
        current = set(report.problems)
        for problem in sorted(current - self._problems):
            log.warning("%s", problem)
        for problem in sorted(self._problems - current):
            log.info("resolved: %s", problem)
        self._problems = current
