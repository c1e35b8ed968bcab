"""The layer-2 drivers of a vxlan device: permanent neighbours (IP -> MAC) and FDB remotes (MAC -> host IP).

A routed vxlan overlay (Flannel's ``flannel.N``, Calico's ``vxlan.calico``)
sends a remote subnet ``via <peer's tunnel IP> dev <vxlan> onlink``; the
neighbour entry gives the tunnel IP the peer's VTEP MAC (the inner Ethernet
header), and the FDB entry sends that MAC to the peer's host IP (the outer
IP header). Both are programmed statically, so nothing depends on ARP or
learning while the agent is down.

Ownership. The device is pycni's (it made it), so every *permanent* entry
on it is pycni's: entries the kernel learnt or resolved (reachable, stale,
failed, noarp) age out on their own and are never removed, though a desired
entry overwrites one at its key. One exception: the all-zeros FDB entry a
vxlan device's own ``remote``/``group`` creates belongs to the device's
configuration and is left alone.

The driver waits while the device is missing (everything desired is
*waiting*), and re-reads everything when :meth:`link_changed` names it (a
recreated device has a new index and an empty table).
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import re
import socket
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, NamedTuple, TypeVar

from pycni.dataplane.reconciler import Outcome, Reconciler
from pycni.dataplane.stats import ApplyResult
from pycni.net import neigh as net_neigh
from pycni.net import overlay
from pycni.net import route as net_route
from pycni.net.errors import NetError
from pycni.net.neigh import IPAddress

if TYPE_CHECKING:
    from pyroute2 import IPRoute

log = logging.getLogger("pycni.dataplane.neighbours")

K = TypeVar("K")
V = TypeVar("V")
_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
ZERO_MAC = "00:00:00:00:00:00"


def normalize_mac(mac: str) -> str:
    """``aa:bb:cc:dd:ee:ff`` for a MAC in colon or dash form, any case; ``ValueError`` otherwise."""
    folded = mac.strip().lower().replace("-", ":")
    if not _MAC.match(folded):
        raise ValueError(f"{mac!r} is not a MAC address (aa:bb:cc:dd:ee:ff)")
    return folded


def floods(mac: str) -> bool:
    """The all-zeros (default destination) and multicast MACs may have many remotes; a unicast MAC one."""
    return mac == ZERO_MAC or bool(int(mac[:2], 16) & 1)


class _DeviceTable(Reconciler[K, V]):
    """A driver whose entries live on one device, looked up by name at every resync."""

    def __init__(self, ipr: IPRoute, device: str, log: logging.Logger) -> None:
        super().__init__(ipr, device, log)
        self.device = device
        self._index = 0  # 0 while the device is missing
        self._wanted: dict[K, V] = {}

    def link_changed(self, name: str, index: int = 0) -> None:
        """A link changed; if it is (or was, by index) our device, re-read its entries at the next apply."""
        if name == self.device or (index and index == self._index):
            self.queue_resync()

    def _set_wanted(self, wanted: dict[K, V]) -> None:
        with self._lock:
            self._wanted = wanted
            self._sync_desired()

    def _sync_desired(self) -> None:
        self._tracker.replace_desired(self._wanted if self._index else {})

    def _lookup(self) -> int:
        """The device's index, or 0 if it is missing."""
        state = net_route.link_state(self._ipr, self.device)
        return state.index if state is not None else 0

    def _dump(self) -> dict[K, V]:
        raise NotImplementedError

    def _load(self) -> None:
        self._index = self._lookup()
        self._tracker.replace_actual(self._dump() if self._index else {})
        self._sync_desired()

    def _prepare(self, result: ApplyResult) -> None:
        if not self._index and self._wanted and not result.resynced:
            self._resync(result)  # the device may have appeared

    def _may_write(self, key: K, value: V) -> bool:
        return self._index != 0

    def _may_delete(self, key: K, value: V) -> bool:
        return self._index != 0

    def _gone(self, exc: NetError) -> bool:
        """The device vanished under a write: everything waits until it is back."""
        if exc.errno != errno.ENODEV:
            return False
        log.debug("%s %s: the device is gone: %s", self.kind, self.device, exc)
        self._index = 0
        self._tracker.replace_actual({})
        self._sync_desired()
        self._resync_needed = True
        return True

    def _waiting_count(self) -> int:
        return 0 if self._index else len(self._wanted)


class NeighbourTable(_DeviceTable[IPAddress, str]):
    """Permanent neighbours on ``device``: ``{tunnel IP: VTEP MAC}`` (``ip neigh replace ... nud permanent``)."""

    kind = "neighbours"

    def __init__(self, ipr: IPRoute, device: str, family: int = socket.AF_INET) -> None:
        if family not in (socket.AF_INET, socket.AF_INET6):
            raise ValueError(f"neighbour family must be AF_INET or AF_INET6, not {family}")
        super().__init__(ipr, device, log)
        self.family = family

    def set_neighbours(self, entries: Mapping[IPAddress, str]) -> None:
        """Make ``entries`` the whole desired set (no I/O: :meth:`apply` writes)."""
        version = 4 if self.family == socket.AF_INET else 6
        wanted: dict[IPAddress, str] = {}
        for ip, mac in entries.items():
            if not isinstance(ip, ipaddress.IPv4Address | ipaddress.IPv6Address) or ip.version != version:
                raise ValueError(f"neighbour {ip!r} on {self.device} is not an IPv{version} address")
            wanted[ip] = normalize_mac(mac)
        self._set_wanted(wanted)

    def neighbours(self) -> dict[IPAddress, str]:
        with self._lock:
            return dict(self._wanted)

    def _dump(self) -> dict[IPAddress, str]:
        return {
            entry.ip: entry.mac
            for entry in net_neigh.neighbours(self._ipr, self._index, self.family)
            if entry.permanent and entry.mac
        }

    def _write(self, key: IPAddress, value: str) -> Outcome:
        exists = self._tracker.actual(key) is not None
        try:
            net_neigh.set_neighbour(self._ipr, self._index, key, value)
        except NetError as exc:
            if self._gone(exc):
                return Outcome.WAITING
            raise
        return Outcome.UPDATED if exists else Outcome.ADDED

    def _remove(self, key: IPAddress, value: str) -> Outcome:
        try:
            return Outcome.REMOVED if net_neigh.delete_neighbour(self._ipr, self._index, key) else Outcome.GONE
        except NetError as exc:
            if self._gone(exc):
                return Outcome.GONE
            raise

    def _describe(self, key: IPAddress, value: str) -> str:
        return f"{key} lladdr {value} dev {self.device}"


class FdbKey(NamedTuple):
    """One FDB remote: frames for ``mac`` are sent to ``dst``."""

    mac: str
    dst: IPAddress

    def __str__(self) -> str:
        return f"{self.mac} dst {self.dst}"


class FdbTable(_DeviceTable[FdbKey, bool]):
    """Permanent FDB remotes on a vxlan ``device`` (``bridge fdb replace|append <mac> dst <ip> self permanent``).

    A unicast MAC has one remote: a new remote for it is one ``replace``
    (the kernel moves the MAC; the old remote needs no delete). The
    all-zeros and multicast MACs may have several remotes (head-end
    replication), added with ``append``.
    """

    kind = "fdb"
    deletions_first = False  # a moved unicast MAC is replaced first, so it is never without a remote

    def __init__(self, ipr: IPRoute, device: str) -> None:
        super().__init__(ipr, device, log)
        self._device_remote = ""
        self._remote_of: dict[str, IPAddress] = {}

    def set_entries(self, entries: Mapping[str, IPAddress] | Iterable[tuple[str, IPAddress]]) -> None:
        """Make ``entries`` (``{mac: host IP}`` or ``(mac, host IP)`` pairs) the whole desired set."""
        pairs = entries.items() if isinstance(entries, Mapping) else entries
        wanted: dict[FdbKey, bool] = {}
        unicast: dict[str, IPAddress] = {}
        for mac, dst in pairs:
            if not isinstance(dst, ipaddress.IPv4Address | ipaddress.IPv6Address):
                raise ValueError(f"fdb entry {mac} on {self.device}: {dst!r} is not an IP address")
            folded = normalize_mac(mac)
            if not floods(folded) and unicast.setdefault(folded, dst) != dst:
                raise ValueError(f"fdb: unicast MAC {folded} wanted at two remotes ({unicast[folded]} and {dst})")
            wanted[FdbKey(folded, dst)] = True
        self._set_wanted(wanted)

    def entries(self) -> list[FdbKey]:
        with self._lock:
            return list(self._wanted)

    def _lookup(self) -> int:
        info = overlay.find_vxlan(self._ipr, self.device)
        self._device_remote = info.group if info is not None else ""
        return info.index if info is not None else 0

    def _dump(self) -> dict[FdbKey, bool]:
        found: dict[FdbKey, bool] = {}
        for entry in net_neigh.fdb_entries(self._ipr, self._index):
            if not entry.permanent:
                continue
            if entry.mac == ZERO_MAC and str(entry.dst) == self._device_remote:
                continue  # the device's own remote/group: its configuration, not ours
            found[FdbKey(entry.mac, entry.dst)] = True
        return found

    def _prepare(self, result: ApplyResult) -> None:
        super()._prepare(result)
        self._remote_of = {key.mac: key.dst for key, _ in self._tracker.actual_items() if not floods(key.mac)}

    def _write(self, key: FdbKey, value: bool) -> Outcome:
        flood = floods(key.mac)
        try:
            net_neigh.set_fdb(self._ipr, self._index, key.mac, key.dst, append=flood)
        except NetError as exc:
            if self._gone(exc):
                return Outcome.WAITING
            raise
        old = None if flood else self._remote_of.get(key.mac)
        self._remote_of[key.mac] = key.dst
        if old is not None and old != key.dst:
            self._tracker.deleted(FdbKey(key.mac, old))  # the replace moved it: nothing left to delete
            return Outcome.UPDATED
        return Outcome.ADDED

    def _remove(self, key: FdbKey, value: bool) -> Outcome:
        try:
            return Outcome.REMOVED if net_neigh.delete_fdb(self._ipr, self._index, key.mac, key.dst) else Outcome.GONE
        except NetError as exc:
            if self._gone(exc):
                return Outcome.GONE
            raise

    def _describe(self, key: FdbKey, value: bool) -> str:
        return f"{key} dev {self.device}"
