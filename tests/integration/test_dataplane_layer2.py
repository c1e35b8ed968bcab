"""The neighbour and FDB drivers on a real vxlan device, in a fresh network namespace per test.

Create, replace and delete permanent neighbours (tunnel IP -> VTEP MAC) and
FDB remotes (VTEP MAC -> host IP); a second apply and a resync with nothing
changed send no write and cause no kernel event; drift is repaired; entries
the kernel learnt, entries on other devices and the device's own remote are
never removed; a device created late or recreated is caught up; and the
layered apply writes neighbour and FDB entries before the routes through them
and removes them only after those routes.
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from ipaddress import ip_address, ip_network
from typing import Any

import pytest

from pycni.dataplane import FdbTable, NeighbourTable, Route, RouteTable, apply_layered
from pycni.net import netns as pycni_netns
from tests.support.netns import NetnsPool, run

READS = frozenset({"dump", "get", "show"})
MAC1, MAC2, MAC3 = "02:aa:00:00:00:01", "02:aa:00:00:00:02", "02:aa:00:00:00:03"
ZERO = "00:00:00:00:00:00"


class Counting:
    """A pyroute2 socket that records every request that could change the kernel (all but dumps and gets)."""

    def __init__(self, ipr: Any) -> None:
        self._ipr = ipr
        self.writes: list[tuple[str, str]] = []

    def _call(self, kind: str, command: str, **kwargs: Any) -> Any:
        if command not in READS:
            self.writes.append((kind, command))
        return getattr(self._ipr, kind)(command, **kwargs)

    def route(self, command: str, **kwargs: Any) -> Any:
        return self._call("route", command, **kwargs)

    def neigh(self, command: str, **kwargs: Any) -> Any:
        return self._call("neigh", command, **kwargs)

    def link(self, command: str, **kwargs: Any) -> Any:
        return self._call("link", command, **kwargs)

    def close(self) -> None:
        self._ipr.close()


class Monitor:
    """``ip monitor route neigh`` (FDB changes included) in the namespace, fenced by a sentinel route."""

    SENTINEL = "10.255.255.254/32"

    def __init__(self, ns: str) -> None:
        self.ns = ns
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._proc = subprocess.Popen(
            ["ip", "-n", ns, "monitor", "route", "neigh"], stdout=subprocess.PIPE, text=True, bufsize=1
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._fences = 100  # sentinel metrics all have three digits: none is a prefix of another

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()

    def _wait_for(self, *words: str, timeout: float = 10.0) -> int | None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for index, line in enumerate(self.lines):
                    if all(word in line for word in words):
                        return index
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)

    def fence(self) -> int:
        """Index in ``lines`` after which every later kernel event is seen.

        ``ip monitor`` subscribes some time after it starts, so a sentinel it
        missed is removed and another (next metric) added until one is seen.
        """
        for _ in range(20):
            self._fences += 1
            metric = ["metric", str(self._fences)]
            run("ip", "route", "add", "blackhole", self.SENTINEL, "proto", "99", *metric, netns=self.ns)
            index = self._wait_for("10.255.255.254", " ".join(metric), timeout=0.5)
            run("ip", "route", "del", "blackhole", self.SENTINEL, "proto", "99", *metric, netns=self.ns)
            if index is not None:
                assert self._wait_for("Deleted", "10.255.255.254", " ".join(metric)) is not None
                return index
        raise AssertionError(f"ip monitor in {self.ns} never showed a sentinel route: {self.lines[-5:]}")

    @contextmanager
    def changes(self) -> Iterator[list[str]]:
        seen: list[str] = []
        start = self.fence()
        yield seen
        end = self.fence()
        seen.extend(line for line in self.lines[start:end] if "10.255.255.254" not in line)

    def close(self) -> None:
        self._proc.terminate()
        self._proc.wait(5)
        self._reader.join(5)


class Node:
    """A fresh namespace: eth0 198.51.100.1/24 on a veth pair and a vxlan device ``flannel.1`` over it."""

    def __init__(self, pool: NetnsPool) -> None:
        self.name = pool.new("l2")
        self.path = pool.path(self.name)
        run("sysctl", "-qw", "net.ipv6.conf.default.addr_gen_mode=1", "net.ipv6.conf.all.accept_dad=0", netns=self.name)
        self.ip("link", "add", "eth0", "type", "veth", "peer", "name", "uplink")
        self.ip("addr", "add", "198.51.100.1/24", "dev", "eth0")
        self.ip("link", "set", "eth0", "up")
        self.ip("link", "set", "uplink", "up")
        self.vxlan("flannel.1")
        self.ipr = Counting(pycni_netns.iproute(self.path))

    def ip(self, *args: str) -> str:
        return run("ip", *args, netns=self.name).stdout

    def bridge(self, *args: str) -> str:
        return run("bridge", *args, netns=self.name).stdout

    def vxlan(self, name: str, *extra: str) -> None:
        self.ip("link", "add", name, "type", "vxlan", "id", "1", "local", "198.51.100.1", "dev", "eth0", *extra)
        self.ip("link", "set", name, "up")

    def neighbours(self, dev: str = "flannel.1") -> set[str]:
        return {" ".join(line.split()) for line in self.ip("neigh", "show", "dev", dev).splitlines()}

    def fdb(self, dev: str = "flannel.1") -> set[str]:
        return {" ".join(line.split()) for line in self.bridge("fdb", "show", "dev", dev).splitlines()}


@pytest.fixture
def node(netns: NetnsPool) -> Iterator[Node]:
    made = Node(netns)
    try:
        yield made
    finally:
        made.ipr.close()


@pytest.fixture
def monitor(node: Node) -> Iterator[Monitor]:
    watcher = Monitor(node.name)
    try:
        yield watcher
    finally:
        watcher.close()


def addr(text: str) -> Any:
    return ip_address(text)


def test_neighbours_are_created_replaced_and_deleted(node: Node, monitor: Monitor) -> None:
    table = NeighbourTable(node.ipr, "flannel.1")
    table.set_neighbours({addr("10.42.2.0"): MAC2, addr("10.42.3.0"): MAC3})
    result = table.apply()
    assert (result.added, result.failed) == (2, 0)
    assert node.neighbours() == {f"10.42.2.0 lladdr {MAC2} PERMANENT", f"10.42.3.0 lladdr {MAC3} PERMANENT"}
    node.ipr.writes.clear()
    with monitor.changes() as events:
        assert table.apply().writes == 0
        assert table.resync().unchanged == 2
    assert node.ipr.writes == [] and events == []
    table.set_neighbours({addr("10.42.2.0"): MAC1})  # a peer's VTEP MAC changed; another peer left
    result = table.apply()
    assert (result.updated, result.removed, result.writes) == (1, 1, 2)
    assert node.neighbours() == {f"10.42.2.0 lladdr {MAC1} PERMANENT"}


def test_neighbour_drift_is_repaired_and_learnt_entries_are_left_alone(node: Node) -> None:
    node.vxlan("other.1", "dstport", "4790")
    node.ip("neigh", "add", "10.9.9.9", "lladdr", MAC3, "dev", "other.1", "nud", "permanent")  # another device's
    node.ip("neigh", "add", "10.42.9.9", "lladdr", MAC3, "dev", "flannel.1", "nud", "stale")  # learnt, not configured
    table = NeighbourTable(node.ipr, "flannel.1")
    table.set_neighbours({addr("10.42.2.0"): MAC2, addr("10.42.3.0"): MAC3})
    table.apply()
    node.ip("neigh", "del", "10.42.2.0", "dev", "flannel.1")
    node.ip("neigh", "replace", "10.42.3.0", "lladdr", MAC1, "dev", "flannel.1", "nud", "permanent")
    node.ip("neigh", "add", "10.42.7.0", "lladdr", MAC1, "dev", "flannel.1", "nud", "permanent")  # a stray of ours
    result = table.resync()
    assert (result.added, result.updated, result.removed) == (1, 1, 1)
    assert f"10.42.3.0 lladdr {MAC3} PERMANENT" in node.neighbours()
    assert "10.42.7.0" not in " ".join(node.neighbours())
    assert f"10.42.9.9 lladdr {MAC3} STALE" in node.neighbours()
    assert node.neighbours("other.1") == {f"10.9.9.9 lladdr {MAC3} PERMANENT"}


def test_fdb_remotes_are_created_moved_and_deleted(node: Node, monitor: Monitor) -> None:
    table = FdbTable(node.ipr, "flannel.1")
    table.set_entries({MAC2: addr("198.51.100.2"), MAC3: addr("198.51.100.3")})
    result = table.apply()
    assert (result.added, result.failed) == (2, 0)
    assert node.fdb() == {f"{MAC2} dst 198.51.100.2 self permanent", f"{MAC3} dst 198.51.100.3 self permanent"}
    node.ipr.writes.clear()
    with monitor.changes() as events:
        assert table.apply().writes == 0
        assert table.resync().unchanged == 2
    assert node.ipr.writes == [] and events == []
    table.set_entries({MAC2: addr("198.51.100.22")})  # a peer's host IP changed; another peer left
    result = table.apply()
    assert (result.updated, result.removed) == (1, 1)
    assert node.ipr.writes == [("neigh", "replace"), ("neigh", "del")]  # the move is one replace: no gap
    assert node.fdb() == {f"{MAC2} dst 198.51.100.22 self permanent"}


def test_a_flood_list_takes_several_remotes(node: Node) -> None:
    table = FdbTable(node.ipr, "flannel.1")
    table.set_entries([(ZERO, addr("198.51.100.2")), (ZERO, addr("198.51.100.3"))])
    assert table.apply().added == 2
    assert node.fdb() == {f"{ZERO} dst 198.51.100.2 self permanent", f"{ZERO} dst 198.51.100.3 self permanent"}
    table.set_entries([(ZERO, addr("198.51.100.3"))])
    assert table.apply().removed == 1
    assert node.fdb() == {f"{ZERO} dst 198.51.100.3 self permanent"}


def test_fdb_entries_pycni_does_not_own_stay(node: Node) -> None:
    node.vxlan("vx.remote", "dstport", "4791", "remote", "198.51.100.99")  # the device's own default remote
    node.bridge("fdb", "add", MAC3, "dev", "vx.remote", "dst", "198.51.100.8", "self", "dynamic")  # learnt-like
    before = node.fdb("vx.remote")
    table = FdbTable(node.ipr, "vx.remote")
    table.set_entries({MAC2: addr("198.51.100.2")})
    table.apply()
    assert node.fdb("vx.remote") == before | {f"{MAC2} dst 198.51.100.2 self permanent"}
    table.set_entries({})
    assert table.apply().removed == 1
    assert node.fdb("vx.remote") == before
    assert any("198.51.100.99" in line for line in before)


def test_a_device_that_comes_late_or_is_recreated_is_caught_up(node: Node) -> None:
    neighbours = NeighbourTable(node.ipr, "flannel.2")
    fdb = FdbTable(node.ipr, "flannel.2")
    neighbours.set_neighbours({addr("10.42.2.0"): MAC2})
    fdb.set_entries({MAC2: addr("198.51.100.2")})
    assert neighbours.apply().waiting == 1 and fdb.apply().waiting == 1
    node.vxlan("flannel.2", "dstport", "4792")
    assert neighbours.apply().added == 1 and fdb.apply().added == 1  # looked up again on every apply
    node.ip("link", "del", "flannel.2")
    node.vxlan("flannel.2", "dstport", "4792")  # new index, empty tables
    for table in (neighbours, fdb):
        table.link_changed("flannel.2")
        assert table.apply().added == 1
    assert node.neighbours("flannel.2") == {f"10.42.2.0 lladdr {MAC2} PERMANENT"}
    assert node.fdb("flannel.2") == {f"{MAC2} dst 198.51.100.2 self permanent"}


def test_layered_apply_writes_layer2_before_routes_and_removes_it_after(node: Node, monitor: Monitor) -> None:
    neighbours = NeighbourTable(node.ipr, "flannel.1")
    fdb = FdbTable(node.ipr, "flannel.1")
    routes = RouteTable(node.ipr, within=[ip_network("10.42.0.0/16")])
    peer = Route(ip_network("10.42.2.0/24"), dev="flannel.1", gateway=addr("10.42.2.0"), onlink=True)
    neighbours.set_neighbours({addr("10.42.2.0"): MAC2})
    fdb.set_entries({MAC2: addr("198.51.100.2")})
    routes.set_routes([peer])
    with monitor.changes() as added:
        apply_layered([neighbours, fdb], [routes])
    assert [line.split()[0] for line in added] == ["10.42.2.0", "198.51.100.2", "10.42.2.0/24"], added
    neighbours.set_neighbours({})
    fdb.set_entries({})
    routes.set_routes([])
    with monitor.changes() as removed:
        apply_layered([neighbours, fdb], [routes])
    # (the kernel announces a deleted neighbour as FAILED first, then Deleted)
    deletions = [line.split()[1] for line in removed if line.startswith("Deleted")]
    assert deletions == ["10.42.2.0/24", "10.42.2.0", "198.51.100.2"], removed
