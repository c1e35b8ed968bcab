"""The route driver: pycni's routes, marked with pycni's protocol number, reconciled against the kernel.

Ownership. A route is pycni's when the kernel holds it with protocol
:data:`RTPROT_PYCNI`, in one of the driver's tables, of one of its families,
and (if the driver was given ``within``) with a destination inside those
networks. Nothing else is ever deleted or overwritten: not BIRD's routes
(protocol 12), not the kernel's (2), not the user's (boot 3, static 4), even
at the very key pycni wants. The kernel keys a route by (table, destination,
TOS, metric); when another owner's route holds the key of a desired route,
the driver leaves it alone, counts and logs a *conflict*, and writes the
route once the other goes (the next resync sees it gone).

Felix differs here: it deletes only what its ownership policy calls its own,
but when it *wants* a route it ``RouteReplace``s whatever holds the key, so a
BIRD or user route at a Calico destination is overwritten (see
``felix/routetable/ownershippol``: "when Felix wants a route to exist it
atomically replaces any previous route for the same prefix"). pycni does not
overwrite: a new key is written with ``add`` (NLM_F_EXCL), which the kernel
refuses if anything appeared there since the last dump, and only a key the
last dump showed as pycni's is ``replace``d.

``adopt`` takes over routes of other protocols deliberately: a route it
accepts counts as pycni's (overwritten with pycni's protocol when desired,
deleted when not). It is for migrations, such as the routes earlier pycni
backends wrote with protocol boot.

Links. Desired routes name their device; the driver resolves names to
indexes. A route whose link is missing or down *waits* (the kernel refuses
it, and drops IPv4 routes of a link that goes down); every apply looks its
link up again, and :meth:`RouteTable.link_changed` (fed by a link monitor)
makes that happen at once, with the kernel's flush of the link's routes
taken into account.

Groups. Several managers may share one table (pod routes, tunnel routes,
blackholes): each sets its own group. If two groups want the same key, the
group earlier in ``group_order`` wins (Felix's route classes).
"""

from __future__ import annotations

import enum
import errno
import ipaddress
import itertools
import logging
import socket
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, NamedTuple

from pycni.dataplane.reconciler import Outcome, Reconciler
from pycni.dataplane.stats import ApplyResult
from pycni.net import route as net_route
from pycni.net.errors import NetError
from pycni.net.route import (
    IPV6_DEFAULT_METRIC,
    RT_SCOPE_HOST,
    RT_SCOPE_LINK,
    RT_SCOPE_UNIVERSE,
    RT_TABLE_MAIN,
    IPAddress,
    IPNetwork,
    LinkState,
    RouteMsg,
)

if TYPE_CHECKING:
    from pyroute2 import IPRoute

log = logging.getLogger("pycni.dataplane.routes")

RTPROT_PYCNI = 112
"""pycni's route protocol (``ip route ... proto 112``): unused by the kernel (0-4), by the routing daemons
listed in ``rtnetlink.h`` and iproute2's ``rt_protos`` (8-18, 42, 99, 186-192), and by Felix (80).
Its one definition: everything that writes or recognises pycni's routes uses this name."""

RESERVED_PROTOCOLS = frozenset({0, 1, 2, 3, 4})  # unspec, redirect, kernel, boot, static: never "ours"
DEFAULT_GROUP = "default"


class RouteType(enum.IntEnum):
    """The kernel's route types (``rtm_type``) pycni writes."""

    UNICAST = 1
    LOCAL = 2
    BLACKHOLE = 6
    UNREACHABLE = 7
    PROHIBIT = 8
    THROW = 9


_NO_LINK = frozenset({RouteType.BLACKHOLE, RouteType.UNREACHABLE, RouteType.PROHIBIT, RouteType.THROW})


class RouteKey(NamedTuple):
    """The kernel's identity of a route: two routes with one key cannot coexist."""

    table: int
    dst: IPNetwork
    metric: int = 0
    tos: int = 0

    def __str__(self) -> str:
        tos = f" tos {self.tos}" if self.tos else ""
        return f"{self.dst} metric {self.metric}{tos} table {self.table}"


@dataclass(frozen=True)
class Route:
    """A route pycni wants: where it goes, how, and in which table.

    ``dev`` is a link name (resolved when applied; the link may appear
    later). ``scope`` defaults to what ``ip route`` picks: link for a
    unicast route without a gateway, host for a local route, universe
    otherwise. IPv6 has no scopes and stores metric 0 as 1024.
    """

    dst: IPNetwork
    dev: str | None = None
    gateway: IPAddress | None = None
    type: RouteType = RouteType.UNICAST
    onlink: bool = False
    scope: int | None = None
    src: IPAddress | None = None
    metric: int = 0
    mtu: int = 0
    table: int = RT_TABLE_MAIN

    def __post_init__(self) -> None:
        object.__setattr__(self, "type", RouteType(self.type))  # a plain rtm_type number is accepted
        if not isinstance(self.dst, ipaddress.IPv4Network | ipaddress.IPv6Network):
            raise TypeError(f"route destination must be an ipaddress network, not {self.dst!r}")
        for name in ("gateway", "src"):
            address = getattr(self, name)
            if address is not None and address.version != self.dst.version:
                raise ValueError(f"route {self.dst}: {name} {address} is not of the destination's family")
        if self.type in _NO_LINK:
            if self.dev is not None or self.gateway is not None or self.onlink:
                raise ValueError(f"a {self.type.name.lower()} route ({self.dst}) takes no dev, gateway or onlink")
        elif not self.dev:
            raise ValueError(f"route {self.dst}: a {self.type.name.lower()} route needs a dev")
        if self.onlink and self.gateway is None:
            raise ValueError(f"route {self.dst}: onlink needs a gateway")
        if not 0 <= self.metric < 1 << 32:
            raise ValueError(f"route {self.dst}: metric {self.metric} is out of range")
        if not 0 <= self.mtu <= 65535:
            raise ValueError(f"route {self.dst}: mtu {self.mtu} is out of range 0..65535")
        if not 0 < self.table < 1 << 32:
            raise ValueError(f"route {self.dst}: table {self.table} is out of range")
        if self.scope is not None and not 0 <= self.scope <= 255:
            raise ValueError(f"route {self.dst}: scope {self.scope} is out of range")

    @property
    def family(self) -> int:
        return socket.AF_INET if self.dst.version == 4 else socket.AF_INET6

    @property
    def key(self) -> RouteKey:
        metric = self.metric or (IPV6_DEFAULT_METRIC if self.dst.version == 6 else 0)
        return RouteKey(self.table, self.dst, metric)

    @property
    def effective_scope(self) -> int:
        if self.dst.version == 6:
            return RT_SCOPE_UNIVERSE  # the kernel reports every IPv6 route so
        if self.scope is not None:
            return self.scope
        if self.type is RouteType.LOCAL:
            return RT_SCOPE_HOST
        if self.type is RouteType.UNICAST and self.gateway is None:
            return RT_SCOPE_LINK
        return RT_SCOPE_UNIVERSE

    def kernel(self, oif: int, protocol: int) -> RouteMsg:
        """This route as the kernel will report it once written over link ``oif``."""
        key = self.key
        return RouteMsg(
            dst=self.dst,
            table=self.table,
            metric=key.metric,
            type=int(self.type),
            proto=protocol,
            scope=self.effective_scope,
            oif=0 if self.type in _NO_LINK else oif,
            gateway=self.gateway,
            onlink=self.onlink,
            src=self.src,
            mtu=self.mtu,
        )

    def __str__(self) -> str:
        kind = "" if self.type is RouteType.UNICAST else f"{self.type.name.lower()} "
        parts = [f"{kind}{self.dst}"]
        if self.gateway is not None:
            parts.append(f"via {self.gateway}")
        if self.dev:
            parts.append(f"dev {self.dev}")
        if self.onlink:
            parts.append("onlink")
        if self.src is not None:
            parts.append(f"src {self.src}")
        if self.mtu:
            parts.append(f"mtu {self.mtu}")
        parts.append(str(self.key).split(" ", 1)[1])
        return " ".join(parts)


def normalize(msg: RouteMsg) -> RouteMsg:
    """A dumped route in the form :meth:`Route.kernel` produces, so equal routes compare equal.

    The kernel reports IPv6 blackholes over ``lo`` and every IPv6 route with scope universe.
    """
    if msg.type in _NO_LINK and (msg.oif or msg.gateway is not None):
        msg = replace(msg, oif=0, gateway=None)
    if msg.dst.version == 6 and msg.scope != RT_SCOPE_UNIVERSE:
        msg = replace(msg, scope=RT_SCOPE_UNIVERSE)
    return msg


def key_of(msg: RouteMsg) -> RouteKey:
    return RouteKey(msg.table, msg.dst, msg.metric, msg.tos)


class RouteTable(Reconciler[RouteKey, RouteMsg]):
    """pycni's routes in ``tables`` of ``families``: set the desired routes, apply, resync now and then.

    ::

        table = RouteTable(ipr, within=[cluster_network])
        table.set_routes([Route(subnet, dev="flannel.1", gateway=gw, onlink=True) for ...])
        table.apply()      # writes only what differs from what the driver last saw
        table.resync()     # periodically: re-read the kernel, repair drift
    """

    kind = "routes"

    def __init__(
        self,
        ipr: IPRoute,
        *,
        protocol: int = RTPROT_PYCNI,
        tables: Collection[int] = (RT_TABLE_MAIN,),
        families: Collection[int] = (socket.AF_INET,),
        within: Iterable[IPNetwork] | None = None,
        adopt: Callable[[RouteMsg], bool] | None = None,
        group_order: Sequence[str] = (),
        name: str = "",
    ) -> None:
        if protocol in RESERVED_PROTOCOLS or not 0 < protocol < 256:
            raise ValueError(f"route protocol {protocol} is the kernel's or the user's; use RTPROT_PYCNI")
        if not tables:
            raise ValueError("a route table driver needs at least one table")
        if not families or not set(families) <= {socket.AF_INET, socket.AF_INET6}:
            raise ValueError(f"route families must be AF_INET and/or AF_INET6, not {families}")
        self.protocol = protocol
        self.tables = frozenset(tables)
        self.families = tuple(families)
        self.within = tuple(within) if within is not None else None
        self._adopt = adopt
        self._order = {group: rank for rank, group in enumerate(group_order)}
        target = name or f"proto {protocol} table {','.join(str(t) for t in sorted(self.tables))}"
        super().__init__(ipr, target, log)
        self._groups: dict[str, dict[RouteKey, Route]] = {}
        self._chosen: dict[RouteKey, tuple[str, Route]] = {}
        self._by_dev: dict[str, set[RouteKey]] = {}
        self._waiting: dict[RouteKey, str] = {}
        self._foreign: dict[RouteKey, RouteMsg] = {}
        self._conflicts: dict[RouteKey, RouteMsg] = {}
        self._links: dict[str, LinkState] = {}
        self._dirty_links: set[str] = set()

    # -- desired state ----------------------------------------------------------

    def set_routes(self, routes: Iterable[Route], group: str = DEFAULT_GROUP) -> None:
        """Make ``routes`` the whole desired set of ``group`` (no I/O: :meth:`apply` writes)."""
        wanted: dict[RouteKey, Route] = {}
        for route in routes:
            self._check(route)
            key = route.key
            if key in wanted and wanted[key] != route:
                raise ValueError(f"two routes with the key {key} in group {group!r}: {wanted[key]} and {route}")
            wanted[key] = route
        with self._lock:
            old = self._groups.get(group, {})
            if wanted:
                self._groups[group] = wanted
            else:
                self._groups.pop(group, None)
            # New and changed keys in the order given (the order they are written), then the dropped ones.
            for key in itertools.chain(wanted, (key for key in old if key not in wanted)):
                if old.get(key) != wanted.get(key):
                    self._choose(key)

    def update(self, route: Route, group: str = DEFAULT_GROUP) -> None:
        """Add or change one desired route of ``group`` (replacing the one with its key)."""
        self._check(route)
        with self._lock:
            routes = self._groups.setdefault(group, {})
            if routes.get(route.key) != route:
                routes[route.key] = route
                self._choose(route.key)

    def remove(self, key: RouteKey, group: str = DEFAULT_GROUP) -> None:
        """Stop wanting the route at ``key`` in ``group`` (it goes at the next apply unless another group wants it)."""
        with self._lock:
            routes = self._groups.get(group)
            if routes is not None and routes.pop(key, None) is not None:
                if not routes:
                    del self._groups[group]
                self._choose(key)

    def routes(self, group: str | None = None) -> list[Route]:
        """The desired routes (of one group, or the winners over all groups)."""
        with self._lock:
            if group is not None:
                return list(self._groups.get(group, {}).values())
            return [route for _, route in self._chosen.values()]

    def link_changed(self, name: str, index: int = 0) -> None:
        """A link was added, removed, renamed, brought up or down: re-resolve its routes at the next apply.

        With ``index``, a link renamed away from a name our routes use is caught too.
        """
        with self._lock:
            if name in self._by_dev:
                self._dirty_links.add(name)
            if index:
                for known, state in self._links.items():
                    if state.index == index and known != name and known in self._by_dev:
                        self._dirty_links.add(known)

    # -- what the driver knows --------------------------------------------------

    def conflicts(self) -> dict[RouteKey, RouteMsg]:
        """Desired keys held by a route pycni does not own (left alone; written once it goes)."""
        with self._lock:
            return dict(self._conflicts)

    def waiting(self) -> dict[RouteKey, str]:
        """Desired keys whose link (the value) is missing or down."""
        with self._lock:
            return dict(self._waiting)

    def owned(self) -> dict[RouteKey, RouteMsg]:
        """pycni's routes as the driver last saw or wrote them."""
        with self._lock:
            return dict(self._tracker.actual_items())

    # -- resolution -------------------------------------------------------------

    def _check(self, route: Route) -> None:
        if route.table not in self.tables:
            raise ValueError(f"route {route}: table {route.table} is not one of this driver's ({sorted(self.tables)})")
        if route.family not in self.families:
            raise ValueError(f"route {route}: this driver manages no IPv{route.dst.version} routes")
        if self.within is not None and not self._inside(route.dst):
            raise ValueError(f"route {route}: {route.dst} is outside the networks this driver owns routes in")

    def _inside(self, dst: IPNetwork) -> bool:
        assert self.within is not None
        return any(dst.version == net.version and dst.subnet_of(net) for net in self.within)  # type: ignore[arg-type]

    def _rank(self, group: str) -> tuple[int, str]:
        return (self._order.get(group, len(self._order)), group)

    def _choose(self, key: RouteKey) -> None:
        """Pick the winning group's route for ``key`` and recompute what the kernel should hold there."""
        best: tuple[str, Route] | None = None
        for group, routes in self._groups.items():
            route = routes.get(key)
            if route is not None and (best is None or self._rank(group) < self._rank(best[0])):
                best = (group, route)
        old = self._chosen.get(key)
        old_dev = old[1].dev if old is not None else None
        new_dev = best[1].dev if best is not None else None
        if old_dev != new_dev:
            if old_dev is not None:
                keys = self._by_dev.get(old_dev)
                if keys is not None:
                    keys.discard(key)
                    if not keys:
                        del self._by_dev[old_dev]
            if new_dev is not None:
                if new_dev not in self._by_dev:
                    # Links no route uses get no events here: what is cached for one may be stale (deleted,
                    # made again under a new index); the first route through it looks it up again.
                    self._dirty_links.add(new_dev)
                self._by_dev.setdefault(new_dev, set()).add(key)
        if best is None:
            self._chosen.pop(key, None)
        else:
            self._chosen[key] = best
        self._resolve(key)

    def _resolve(self, key: RouteKey) -> None:
        chosen = self._chosen.get(key)
        if chosen is None:
            self._waiting.pop(key, None)
            self._tracker.delete_desired(key)
            return
        route = chosen[1]
        oif = 0
        if route.dev is not None:
            state = self._links.get(route.dev)
            if state is None or not state.up:
                self._waiting[key] = route.dev
                self._tracker.delete_desired(key)
                return
            oif = state.index
        self._waiting.pop(key, None)
        self._tracker.set_desired(key, route.kernel(oif, self.protocol))

    def _refresh_link(self, name: str) -> None:
        """Look ``name`` up again and re-resolve the routes that use it.

        A link that went down or was deleted took its routes (both families)
        with it, so they are dropped from what the driver believes the kernel
        holds. A link renamed away keeps them: they stay known, and go as
        routes no longer desired on that index.
        """
        state = net_route.link_state(self._ipr, name)
        old = self._links.get(name)
        if state == old:
            return
        if state is None:
            self._links.pop(name, None)
        else:
            self._links[name] = state
        if old is not None and (state is None or state.index != old.index or not state.up):
            went_down = state is not None and state.index == old.index
            if went_down or not net_route.link_index_exists(self._ipr, old.index):
                for key, msg in list(self._tracker.actual_items()):
                    if msg.oif == old.index:
                        self._tracker.delete_actual(key)
        for key in list(self._by_dev.get(name, ())):
            self._resolve(key)

    # -- the reconciler's hooks -------------------------------------------------

    def _owns(self, msg: RouteMsg) -> bool:
        if self.within is not None and not self._inside(msg.dst):
            return False
        return msg.proto == self.protocol or (self._adopt is not None and self._adopt(msg))

    def _load(self) -> None:
        links = net_route.link_states(self._ipr)
        actual: dict[RouteKey, RouteMsg] = {}
        foreign: dict[RouteKey, RouteMsg] = {}
        for family in self.families:
            for msg in net_route.dump(self._ipr, family, self.tables):
                key = key_of(msg)
                if self._owns(msg):
                    actual[key] = normalize(msg)
                else:
                    foreign[key] = msg
        self._links = links
        self._dirty_links.clear()
        self._foreign = foreign
        self._tracker.replace_actual(actual)
        for key in list(self._chosen):
            self._resolve(key)

    def _prepare(self, result: ApplyResult) -> None:
        # Right after a resync every link is fresh; otherwise look up what changed or is awaited.
        names = set() if result.resynced else self._dirty_links | set(self._waiting.values())
        for name in sorted(names):
            try:
                self._refresh_link(name)
            except NetError as exc:
                log.warning("routes %s: cannot look up link %s: %s", self.target, name, exc)
        self._dirty_links.clear()

    def _may_write(self, key: RouteKey, value: RouteMsg) -> bool:
        return key not in self._foreign

    def _write(self, key: RouteKey, value: RouteMsg) -> Outcome:
        exists = self._tracker.actual(key) is not None
        try:
            if exists:
                net_route.replace(self._ipr, value)
                return Outcome.UPDATED
            net_route.add(self._ipr, value)
            return Outcome.ADDED
        except NetError as exc:
            chosen = self._chosen.get(key)
            dev = chosen[1].dev if chosen is not None else None
            if exc.errno == errno.EEXIST and not exists:
                return Outcome.RACED
            if exc.errno in (errno.ENODEV, errno.ENETDOWN) and dev is not None:
                log.debug("routes %s: %s waits for link %s: %s", self.target, key, dev, exc)
                self._refresh_link(dev)
                again = self._tracker.desired(key)
                if again is not None and again != value and key not in self._waiting:
                    return self._write(key, again)  # the link was made again under a new index: write there now
                return Outcome.WAITING
            raise

    def _remove(self, key: RouteKey, value: RouteMsg) -> Outcome:
        return Outcome.REMOVED if net_route.delete(self._ipr, value) else Outcome.GONE

    def _waiting_count(self) -> int:
        return len(self._waiting)

    def _conflict_count(self) -> int:
        self._refresh_conflicts()
        return len(self._conflicts)

    def _refresh_conflicts(self) -> None:
        current = {key: msg for key, msg in self._foreign.items() if key in self._chosen and key not in self._waiting}
        for key, msg in current.items():
            if key not in self._conflicts:
                log.warning(
                    "routes %s: wanted %s, but the kernel holds a route of protocol %d there (%s); "
                    "left alone, not written while it stays",
                    self.target,
                    self._chosen[key][1],
                    msg.proto,
                    msg,
                )
        for key in self._conflicts.keys() - current.keys():
            log.info("routes %s: the conflict at %s is over", self.target, key)
        self._conflicts = current

    def _describe(self, key: RouteKey, value: RouteMsg) -> str:
        chosen = self._chosen.get(key)
        return str(chosen[1]) if chosen is not None and self._tracker.desired(key) == value else str(value)
