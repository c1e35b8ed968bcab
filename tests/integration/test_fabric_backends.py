"""The vxlan, host-gw and udp backends carrying pod traffic between three node namespaces.

Topology (all inside namespaces this test makes; the machine's own network is
never touched)::

    underlay ns: bridge br0 ── veth ── node1 eth0 198.51.100.11/24 ── cni0 10.42.1.1/24 ── pod1 10.42.1.2
                            ── veth ── node2 eth0 198.51.100.12/24 ── cni0 10.42.2.1/24 ── pod2 10.42.2.2
                            ── veth ── node3 eth0 198.51.100.13/24 ── cni0 10.42.3.1/24 ── pod3 10.42.3.2

Each node's backend runs in this process with the test thread switched into
the node's namespace (:func:`pycni.net.netns.entered`); leases are built by
hand from what ``prepare()`` returned, as the agent would publish them.

The backends' entries are reconciled by :mod:`pycni.dataplane`: a sync with
nothing changed sends no netlink write (counted at the socket,
``tests/support/netlink.py``) and the kernel announces no change (``ip
monitor``); routes carry pycni's protocol (112), and the protocol-boot routes
an earlier pycni wrote are taken over, not duplicated.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import pytest

from pycni.dataplane import RTPROT_PYCNI
from pycni.fabric.flannel.backends import BACKENDS, Backend, ExternalInterface
from pycni.fabric.flannel.backends.common import BackendError
from pycni.fabric.flannel.backends.udp import UdpBackend
from pycni.fabric.flannel.backends.vxlan import mac_state_path
from pycni.fabric.flannel.model import Lease, LeaseAttrs, NetworkConfig
from pycni.net import netns
from tests.support.netlink import Counting, Monitor
from tests.support.netns import NetnsPool, run

NETWORK = "10.42.0.0/16"
T = TypeVar("T")


class Node:
    """A node namespace with an underlay leg, a ``cni0`` bridge and one pod namespace."""

    def __init__(self, pool: NetnsPool, underlay: str, number: int, www: Path) -> None:
        self.number = number
        self.name = pool.new(f"node{number}")
        self.pod = pool.new(f"pod{number}")
        self.address = f"198.51.100.{10 + number}"
        self.subnet = ipaddress.IPv4Network(f"10.42.{number}.0/24")
        self.pod_ip = f"10.42.{number}.2"
        self.backend: Backend | None = None
        self.counting: Counting | None = None  # the backend's netlink socket, when a test counts its writes
        self.data: dict[str, Any] = {}
        self.backend_type = ""
        leg = f"ul{number}"
        run("ip", "link", "add", leg, "type", "veth", "peer", "name", "eth0", "netns", self.name, netns=underlay)
        run("ip", "link", "set", leg, "master", "br0", "up", netns=underlay)
        self.ip("addr", "add", f"{self.address}/24", "dev", "eth0")
        self.ip("link", "set", "eth0", "up")
        self.sh("sysctl -qw net.ipv4.ip_forward=1")
        self.ip("link", "add", "cni0", "type", "bridge")
        self.ip("addr", "add", f"10.42.{number}.1/24", "dev", "cni0")
        self.ip("link", "set", "cni0", "up")
        self.ip("link", "add", "vpod", "type", "veth", "peer", "name", "eth0", "netns", self.pod)
        self.ip("link", "set", "vpod", "master", "cni0", "up")
        run("ip", "addr", "add", f"{self.pod_ip}/24", "dev", "eth0", netns=self.pod)
        run("ip", "link", "set", "eth0", "up", netns=self.pod)
        run("ip", "route", "add", "default", "via", f"10.42.{number}.1", netns=self.pod)
        site = www / f"pod{number}"
        site.mkdir()
        (site / "index.html").write_text(f"hello from pod{number}\n")
        (site / "big").write_bytes(os.urandom(1 << 20))
        run("busybox", "httpd", "-p", "80", "-h", str(site), netns=self.pod)
        link = json.loads(self.ip("-j", "link", "show", "eth0"))[0]
        self.ext = ExternalInterface("eth0", int(link["ifindex"]), self.address, self.address, int(link["mtu"]))

    @property
    def path(self) -> str:
        return NetnsPool.path(self.name)

    def ip(self, *args: str, check: bool = True) -> str:
        return run("ip", *args, netns=self.name, check=check).stdout

    def sh(self, command: str) -> str:
        return run("sh", "-c", command, netns=self.name).stdout

    def inside(self, fn: Callable[..., T], *args: Any) -> T:
        """Call ``fn`` with this thread in the node's namespace (netlink sockets, TUN and UDP bind there)."""
        with netns.entered(self.path):
            return fn(*args)

    def start(self, backend_type: str, options: dict[str, Any], state_dir: Path, count: bool = False) -> Backend:
        """Make, prepare and configure the backend; with ``count``, on a socket that counts its writes."""
        config = NetworkConfig.from_dict({"Network": NETWORK, "Backend": {"Type": backend_type, **options}})
        self.counting = Counting(netns.iproute(self.path)) if count else None
        backend = self.inside(
            lambda: BACKENDS[backend_type](self.ext, config, state_dir=str(state_dir), ipr=self.counting)
        )
        self.backend, self.backend_type = backend, backend_type
        self.data = self.inside(backend.prepare)
        self.inside(backend.configure, self.lease())
        # What the flannel CNI plugin does with FLANNEL_MTU: the pod and its bridge port get the backend's MTU.
        run("ip", "link", "set", "eth0", "mtu", str(backend.mtu), netns=self.pod)
        self.ip("link", "set", "vpod", "mtu", str(backend.mtu))
        return backend

    def lease(self) -> Lease:
        attrs = LeaseAttrs(public_ip=self.address, backend_type=self.backend_type, backend_data=self.data)
        return Lease(subnet=self.subnet, attrs=attrs)

    def stop(self) -> None:
        if self.backend is not None:
            self.backend.close()
            self.backend = None
        if self.counting is not None:
            self.counting.close()  # a socket given to a backend is the giver's to close
            self.counting = None


class Cluster:
    def __init__(self, pool: NetnsPool, www: Path, state: Path, size: int = 3) -> None:
        self.underlay = pool.new("underlay")
        run("ip", "link", "add", "br0", "type", "bridge", netns=self.underlay)
        run("ip", "link", "set", "br0", "up", netns=self.underlay)
        self.state = state
        self.nodes = [Node(pool, self.underlay, number, www) for number in range(1, size + 1)]

    def start(self, backend_type: str, count: bool = False, **options: Any) -> None:
        for node in self.nodes:
            node.start(backend_type, options, self.state / node.name, count)
        for node in self.nodes:
            self.sync(node)

    def sync(self, node: Node) -> None:
        assert node.backend is not None
        node.inside(node.backend.sync, self.leases_for(node))

    def leases_for(self, node: Node) -> list[Lease]:
        return [other.lease() for other in self.nodes if other is not node]

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def fetch(pod: str, ip: str, page: str = "index.html", timeout: float = 3.0) -> tuple[int, str]:
    proc = run("curl", "-sS", "-m", str(timeout), "-o", "/dev/stdout", f"http://{ip}/{page}", netns=pod, check=False)
    return proc.returncode, proc.stdout if proc.returncode == 0 else proc.stderr


def reaches(src: Node, dst: Node) -> bool:
    """One HTTP GET over TCP from ``src``'s pod to ``dst``'s pod, retried briefly (ARP, first packets)."""
    for _ in range(10):
        code, out = fetch(src.pod, dst.pod_ip, timeout=2)
        if code == 0:
            assert out == f"hello from pod{dst.number}\n"
            return True
        time.sleep(0.2)
    return False


def unreachable(src: Node, dst: Node) -> bool:
    code, _ = fetch(src.pod, dst.pod_ip, timeout=1)
    return code != 0


def assert_full_mesh(cluster: Cluster) -> None:
    for src in cluster.nodes:
        for dst in cluster.nodes:
            if src is not dst:
                assert reaches(src, dst), f"pod{src.number} -> pod{dst.number}"


def proxy_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == "pycni-udp-proxy"]


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    """Three nodes on one underlay; every backend, thread, fd and namespace is gone afterwards."""
    www, state = tmp_path / "www", tmp_path / "state"
    www.mkdir()
    state.mkdir()
    fds_before = set(os.listdir("/proc/self/fd"))
    pool = NetnsPool("pyfab")
    made: Cluster | None = None
    try:
        made = Cluster(pool, www, state)
        yield made
    finally:
        try:
            if made is not None:
                made.stop()
        finally:
            pool.cleanup()
    assert not proxy_threads(), "udp proxy threads outlived close()"
    leaked = set(os.listdir("/proc/self/fd")) - fds_before
    assert not [fd for fd in leaked if os.path.exists(f"/proc/self/fd/{fd}")], f"leaked fds {leaked}"


def node_entries(node: Node, device: str = "flannel.1") -> tuple[str, str, str]:
    return (
        node.ip("route"),
        node.ip("neigh", "show", "dev", device),
        run("bridge", "fdb", "show", "dev", device, netns=node.name).stdout,
    )


# -- every backend carries TCP between every pair of pods -------------------------


@pytest.mark.parametrize("backend_type", ["vxlan", "host-gw", "udp"])
def test_every_pod_reaches_every_other_pod(cluster: Cluster, backend_type: str) -> None:
    cluster.start(backend_type)
    assert_full_mesh(cluster)
    # A 1 MiB transfer (hundreds of full-size segments) arrives intact.
    first, second = cluster.nodes[0], cluster.nodes[1]
    proc = run("sh", "-c", f"curl -sS -m 20 http://{second.pod_ip}/big | md5sum", netns=first.pod)
    expected = run("md5sum", str(cluster.state.parent / "www" / "pod2" / "big")).stdout.split()[0]
    assert proc.stdout.split()[0] == expected


# -- the dataplane: minimal writes, drift repaired, the old routes adopted ---------------


def ours(lines: list[str]) -> list[str]:
    """Kernel events about what a backend owns: pycni's routes, and entries on its device.

    Learnt neighbours on ``eth0`` and ``cni0`` come and go with traffic; they are the kernel's.
    The kernel's own routes (a link-local address on flannel.1 that settles late under load) are not.
    """
    return [
        line for line in lines if (f"proto {RTPROT_PYCNI}" in line or "flannel" in line) and "proto kernel" not in line
    ]


@pytest.mark.parametrize("backend_type", ["vxlan", "host-gw", "udp"])
def test_a_resync_with_nothing_changed_writes_nothing(cluster: Cluster, backend_type: str) -> None:
    """Flannel's resync rewrites every peer (3 netlink writes each for vxlan, every 5 s); here it re-reads only."""
    cluster.start(backend_type, count=True)
    assert_full_mesh(cluster)
    node1, node2, _ = cluster.nodes
    assert node1.backend is not None and node1.counting is not None
    monitor = Monitor(node1.name)
    try:
        node1.counting.take()
        with monitor.changes() as seen:
            for _ in range(3):
                cluster.sync(node1)
        assert node1.counting.take() == [], "a sync with nothing changed sends no write"
        assert ours(seen) == [], "and the kernel announces no change"
        results = node1.backend.last_apply  # type: ignore[attr-defined]
        assert sum(result.writes for result in results) == 0, "the drivers count none either"
        assert {result.kind for result in results if result.resynced} == {result.kind for result in results}
        # Drift: what someone deleted by hand is written back, and nothing else.
        lost = NETWORK if backend_type == "udp" else str(node2.subnet)
        node1.ip("route", "del", lost)
        with monitor.changes() as seen:
            cluster.sync(node1)
        assert node1.counting.take() == [("route", "add")]
        assert len(ours(seen)) == 1 and lost in ours(seen)[0] and f"proto {RTPROT_PYCNI}" in ours(seen)[0]
        if backend_type == "vxlan":
            node1.ip("neigh", "del", str(node2.subnet.network_address), "dev", "flannel.1")
            cluster.sync(node1)
            assert node1.counting.take() == [("neigh", "replace")]
            assert f"{node2.subnet.network_address} lladdr {node2.data['VtepMAC']} PERMANENT" in node1.ip(
                "neigh", "show", "dev", "flannel.1"
            )
        assert_full_mesh(cluster)
    finally:
        monitor.close()


def old_routes(node: Node, backend_type: str, peers: list[Node]) -> None:
    """``node``'s peer routes as pycni wrote them before the dataplane: protocol boot, at the same keys."""
    for peer in peers:
        if backend_type == "vxlan":
            via = [str(peer.subnet.network_address), "dev", "flannel.1", "onlink"]
        else:
            via = [peer.address, "dev", "eth0"]
        node.ip("route", "replace", str(peer.subnet), "via", *via, "proto", "boot")


@pytest.mark.parametrize("backend_type", ["vxlan", "host-gw"])
def test_an_upgrade_takes_over_the_routes_an_earlier_pycni_wrote(cluster: Cluster, backend_type: str) -> None:
    """A node upgraded in place: its protocol-boot routes are replaced in place by protocol 112, not duplicated.

    One replace per peer route, one delete for a stale old route, no write
    for the neighbours and FDB entries (the same as before), and a user's
    static route inside the network is left alone.
    """
    cluster.start(backend_type)
    node1, node2, node3 = cluster.nodes
    node1.stop()
    old_routes(node1, backend_type, [node2, node3])
    device = ["dev", "flannel.1", "onlink"] if backend_type == "vxlan" else ["dev", "eth0", "onlink"]
    node1.ip(
        "route", "add", "10.42.9.0/24", "via", "10.42.9.0" if backend_type == "vxlan" else "198.51.100.99", *device
    )
    node1.ip("route", "add", "10.42.8.0/24", "via", node2.address, "dev", "eth0", "proto", "static")
    assert f"proto {RTPROT_PYCNI}" not in node1.ip("route")
    layer2 = node_entries(node1)[1:] if backend_type == "vxlan" else ()
    assert_full_mesh(cluster)  # the old routes carry traffic: the upgrade must not interrupt it
    node1.start(backend_type, {}, cluster.state / node1.name, count=True)
    assert node1.counting is not None
    node1.counting.take()
    cluster.sync(node1)
    assert sorted(node1.counting.take()) == [("route", "del"), ("route", "replace"), ("route", "replace")]
    routes = node1.ip("route")
    for peer in (node2, node3):
        lines = node1.ip("route", "show", str(peer.subnet)).splitlines()
        assert len(lines) == 1 and f"proto {RTPROT_PYCNI}" in lines[0], lines
    assert "10.42.9.0/24" not in routes, "the stale old route went"
    assert f"10.42.8.0/24 via {node2.address} dev eth0 proto static" in routes, "the user's route stayed"
    assert (node_entries(node1)[1:] if backend_type == "vxlan" else ()) == layer2, "neighbours and FDB as they were"
    cluster.sync(node1)
    assert node1.counting.take() == []
    assert_full_mesh(cluster)


# -- vxlan ---------------------------------------------------------------------------


def test_vxlan_device_and_peer_entries(cluster: Cluster) -> None:
    cluster.start("vxlan")
    node1, node2, node3 = cluster.nodes
    details = node1.ip("-d", "link", "show", "flannel.1")
    assert "vxlan id 1 local 198.51.100.11 dev eth0" in details
    assert "dstport 8472" in details
    assert "nolearning" in details
    assert "mtu 1450" in details
    assert f"link/ether {node1.data['VtepMAC']}" in details
    assert node1.data == {"VNI": 1, "VtepMAC": node1.data["VtepMAC"]}
    assert node1.backend is not None and node1.backend.mtu == 1450
    assert "inet 10.42.1.0/32" in node1.ip("-4", "addr", "show", "flannel.1")
    assert node1.sh("cat /proc/sys/net/ipv6/conf/flannel.1/accept_ra").strip() == "0"
    routes, neigh, fdb = node_entries(node1)
    for peer in (node2, node3):
        assert f"{peer.subnet} via {peer.subnet.network_address} dev flannel.1 proto 112 onlink" in routes
        assert f"{peer.subnet.network_address} lladdr {peer.data['VtepMAC']} PERMANENT" in neigh
        assert f"{peer.data['VtepMAC']} dst {peer.address} self permanent" in fdb
    assert len(neigh.splitlines()) == 2 and len(fdb.splitlines()) == 2
    # A replayed event or sync changes nothing.
    assert node1.backend is not None
    node1.inside(node1.backend.add_peer, node2.lease())
    cluster.sync(node1)
    assert node_entries(node1) == (routes, neigh, fdb)


def snmp_ip(node_ns: str) -> dict[str, int]:
    lines = [
        line.split()
        for line in run("cat", "/proc/net/snmp", netns=node_ns).stdout.splitlines()
        if line.startswith("Ip:")
    ]
    return dict(zip(lines[0][1:], map(int, lines[1][1:]), strict=True))


def test_vxlan_peer_events_write_layer_2_around_the_route(cluster: Cluster) -> None:
    """An added peer: its neighbour and FDB remote before its route (the kernel would ARP for the gateway
    otherwise); a removed one: its route before them. A replayed event writes nothing."""
    cluster.start("vxlan", count=True)
    node1, node2, node3 = cluster.nodes
    backend, counting = node1.backend, node1.counting
    assert backend is not None and counting is not None
    counting.take()
    node1.inside(backend.remove_peer, node2.lease())
    assert counting.take() == [("route", "del"), ("neigh", "del"), ("neigh", "del")]  # route, neighbour, FDB
    node1.inside(backend.remove_peer, node2.lease())
    node1.inside(backend.add_peer, node3.lease())
    assert counting.take() == [], "a replayed event, a peer already gone: nothing to write"
    node1.inside(backend.add_peer, node2.lease())
    assert counting.take() == [("neigh", "replace"), ("neigh", "replace"), ("route", "add")]
    assert reaches(node1, node2)
    # The peer's device came back with a new MAC: its neighbour is replaced, its old FDB remote goes.
    new_mac = "0e:00:00:00:02:02"
    moved = replace(node2.lease(), attrs=replace(node2.lease().attrs, backend_data={"VNI": 1, "VtepMAC": new_mac}))
    node1.inside(backend.add_peer, moved)
    assert sorted(counting.take()) == [("neigh", "del"), ("neigh", "replace"), ("neigh", "replace")]
    _, neigh, fdb = node_entries(node1)
    assert f"{node2.subnet.network_address} lladdr {new_mac} PERMANENT" in neigh
    assert new_mac in fdb and node2.data["VtepMAC"] not in fdb
    # A removal that carries no value (a DELETE without its previous attributes) still removes everything.
    bare = Lease(node2.subnet, LeaseAttrs(node2.address, "vxlan", {}))
    node1.inside(backend.remove_peer, bare)
    routes, neigh, fdb = node_entries(node1)
    assert str(node2.subnet) not in routes and new_mac not in neigh + fdb
    assert f"{node3.subnet} via" in routes and node3.data["VtepMAC"] in fdb, "other peers are untouched"


def test_a_peer_that_cannot_be_programmed_is_named_and_the_others_are_programmed(cluster: Cluster) -> None:
    """One BackendError names every peer that failed; the rest are written, the stale removed, the failure retried."""
    cluster.start("host-gw", count=True)
    node1, node2, node3 = cluster.nodes
    assert node1.backend is not None and node1.counting is not None
    off_link = Lease(ipaddress.IPv4Network("10.42.7.0/24"), LeaseAttrs("10.200.0.7", "host-gw"))  # not on eth0's link
    garbled = Lease(ipaddress.IPv4Network("10.42.6.0/24"), LeaseAttrs("somewhere", "host-gw"))
    node1.ip("route", "del", str(node3.subnet))
    with pytest.raises(BackendError) as info:
        node1.inside(node1.backend.sync, [node2.lease(), node3.lease(), off_link, garbled])
    assert len(info.value.problems) == 2
    assert "10.42.6.0/24" in info.value.problems[0] and "10.42.7.0/24" in info.value.problems[1]
    assert f"{node3.subnet} via {node3.address} dev eth0 proto 112" in node1.ip("route")
    node1.counting.take()
    with pytest.raises(BackendError, match=r"10\.42\.7\.0/24"):
        node1.inside(node1.backend.sync, [node2.lease(), node3.lease(), off_link])
    assert node1.counting.take() == [("route", "add")], "the refused route is tried again, nothing else"
    node1.inside(node1.backend.sync, [node2.lease(), node3.lease()])
    assert "10.42.7.0" not in node1.ip("route")
    assert_full_mesh(cluster)


def test_vxlan_a_peer_without_a_valid_vtep_mac_is_an_error_and_writes_nothing(cluster: Cluster) -> None:
    cluster.start("vxlan", count=True)
    node1, node2, _ = cluster.nodes
    assert node1.backend is not None and node1.counting is not None
    node1.counting.take()
    broken = Lease(ipaddress.IPv4Network("10.42.9.0/24"), LeaseAttrs("198.51.100.19", "vxlan", {"VtepMAC": "zz"}))
    with pytest.raises(BackendError, match="no valid VtepMAC"):
        node1.inside(node1.backend.add_peer, broken)
    assert node1.counting.take() == []
    assert reaches(node1, node2)


def test_vxlan_full_size_packets_cross_without_fragmentation(cluster: Cluster) -> None:
    if shutil.which("ping") is None:
        pytest.skip("iputils ping is not installed (apt-get install iputils-ping)")
    cluster.start("vxlan")
    node1, node2, _ = cluster.nodes
    assert reaches(node1, node2)
    namespaces = [node1.name, node2.name, node1.pod, node2.pod, cluster.underlay]
    before = {ns: snmp_ip(ns) for ns in namespaces}
    payload = 1450 - 20 - 8  # the pod MTU, less the IPv4 and ICMP headers
    full = run("ping", "-c", "3", "-W", "2", "-M", "do", "-s", str(payload), node2.pod_ip, netns=node1.pod, check=False)
    assert full.returncode == 0, full.stdout + full.stderr
    assert f"{payload + 8} bytes from {node2.pod_ip}" in full.stdout
    too_big = run(
        "ping", "-c", "1", "-W", "2", "-M", "do", "-s", str(payload + 1), node2.pod_ip, netns=node1.pod, check=False
    )
    assert too_big.returncode != 0, "the pod MTU is the limit: one byte more must not fit"
    # TCP with DF (Linux default): a 1 MiB transfer in full-size segments.
    assert run(
        "sh", "-c", f"curl -sS -m 20 -o /dev/null -w '%{{size_download}}' http://{node2.pod_ip}/big", netns=node1.pod
    ).stdout == str(1 << 20)
    after = {ns: snmp_ip(ns) for ns in namespaces}
    for ns in namespaces:
        for counter in ("FragCreates", "FragFails", "ReasmReqds"):
            assert after[ns][counter] == before[ns][counter], (
                f"{counter} changed in {ns}: the outer packets were fragmented"
            )


def test_vxlan_remove_peer_is_immediate_and_exact(cluster: Cluster) -> None:
    cluster.start("vxlan")
    node1, node2, node3 = cluster.nodes
    assert node1.backend is not None
    assert reaches(node1, node2)
    node1.inside(node1.backend.remove_peer, node2.lease())
    routes, neigh, fdb = node_entries(node1)
    assert str(node2.subnet) not in routes
    assert str(node2.subnet.network_address) not in neigh
    assert node2.data["VtepMAC"] not in fdb
    assert f"{node3.subnet} via" in routes and node3.data["VtepMAC"] in fdb, "other peers are untouched"
    assert unreachable(node1, node2)
    assert reaches(node1, node3)
    node1.inside(node1.backend.remove_peer, node2.lease())  # again: nothing left to remove, no error
    node1.inside(node1.backend.add_peer, node2.lease())
    assert reaches(node1, node2)


def test_vxlan_sync_removes_stale_peers_only(cluster: Cluster) -> None:
    cluster.start("vxlan")
    node1, node2, node3 = cluster.nodes
    assert node1.backend is not None
    ghost = Lease(
        ipaddress.IPv4Network("10.42.9.0/24"),
        LeaseAttrs("198.51.100.99", "vxlan", {"VNI": 1, "VtepMAC": "0e:00:00:00:00:99"}),
    )
    node1.inside(node1.backend.add_peer, ghost)
    # Not ours: a route outside the cluster network, a neighbour on the underlay.
    node1.ip("route", "add", "10.99.0.0/24", "via", node2.address, "dev", "eth0")
    node1.ip("neigh", "add", "198.51.100.77", "lladdr", "0e:00:00:00:00:77", "dev", "eth0")
    routes, neigh, fdb = node_entries(node1)
    assert "10.42.9.0/24 via 10.42.9.0 dev flannel.1 proto 112 onlink" in routes and "0e:00:00:00:00:99" in fdb
    node1.inside(node1.backend.sync, [node2.lease(), node3.lease()])
    routes, neigh, fdb = node_entries(node1)
    assert "10.42.9.0" not in routes + neigh and "0e:00:00:00:00:99" not in fdb
    assert "10.99.0.0/24 via 198.51.100.12 dev eth0" in routes
    assert "198.51.100.77" in node1.ip("neigh", "show", "dev", "eth0")
    assert "10.42.1.0/24 dev cni0" in routes, "the node's own subnet route stays"
    # A peer that left entirely.
    node1.inside(node1.backend.sync, [node3.lease()])
    routes, neigh, fdb = node_entries(node1)
    assert str(node2.subnet) not in routes and node2.data["VtepMAC"] not in fdb
    assert unreachable(node1, node2)
    assert reaches(node1, node3)


def test_vxlan_restart_keeps_the_mac_and_traffic(cluster: Cluster) -> None:
    cluster.start("vxlan")
    node1, node2, _ = cluster.nodes
    mac = node1.data["VtepMAC"]
    node1.stop()
    assert reaches(node2, node1), "the dataplane needs no running agent"
    # A new agent on the existing device.
    node1.start("vxlan", {}, cluster.state / node1.name)
    assert node1.data["VtepMAC"] == mac
    cluster.sync(node1)
    assert_full_mesh(cluster)
    # The device is gone (someone deleted it): the MAC comes back from the state file.
    node1.stop()
    node1.ip("link", "del", "flannel.1")
    assert unreachable(node2, node1)
    node1.start("vxlan", {}, cluster.state / node1.name)
    assert node1.data["VtepMAC"] == mac
    assert Path(mac_file(node1, cluster.state / node1.name)).read_text().strip() == mac
    cluster.sync(node1)
    assert_full_mesh(cluster)  # peers were never told anything new


def test_vxlan_a_mac_file_holding_no_unicast_mac_gives_a_new_one(
    cluster: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    """A MAC the kernel refuses for a device (multicast, broadcast, zero) in the state file: a new one, logged."""
    cluster.start("vxlan")
    node1 = cluster.nodes[0]
    state = mac_file(node1, cluster.state / node1.name)
    for kept in ("01:00:5e:00:00:01", "ff:ff:ff:ff:ff:ff", "00:00:00:00:00:00"):
        old = node1.data["VtepMAC"]
        node1.stop()
        node1.ip("link", "del", "flannel.1")
        Path(state).write_text(f"{kept}\n")
        caplog.clear()
        with caplog.at_level("WARNING", logger="pycni.fabric.flannel.backends.vxlan"):
            node1.start("vxlan", {}, cluster.state / node1.name)
        new = node1.data["VtepMAC"]
        assert new not in (old, kept) and not int(new[:2], 16) & 1
        assert f"link/ether {new}" in node1.ip("link", "show", "flannel.1")
        assert Path(state).read_text() == f"{new}\n"
        assert f"{state} holds no unicast MAC" in caplog.text
    for node in cluster.nodes:
        cluster.sync(node)
    assert_full_mesh(cluster)


def mac_file(node: Node, state_dir: Path) -> str:
    """The file ``node``'s vxlan backend keeps its MAC in: keyed by its address and namespace."""
    return mac_state_path(str(state_dir), "flannel.1", node.address, os.stat(node.path).st_ino)


def test_vxlan_nodes_sharing_one_state_dir_keep_their_own_macs(cluster: Cluster) -> None:
    """Every node's backend keeps its MAC in one directory (as agents do in the default /run/flannel)."""
    shared = cluster.state / "shared"
    for node in cluster.nodes:
        node.start("vxlan", {}, shared)
    for node in cluster.nodes:
        cluster.sync(node)
    macs = [node.data["VtepMAC"] for node in cluster.nodes]
    assert len(set(macs)) == 3, macs
    assert sorted(os.listdir(shared)) == sorted(os.path.basename(mac_file(node, shared)) for node in cluster.nodes)
    assert_full_mesh(cluster)
    # Node 1's device goes while its namespace lives on: it gets its own MAC back, no other node's.
    node1 = cluster.nodes[0]
    node1.stop()
    node1.ip("link", "del", "flannel.1")
    node1.start("vxlan", {}, shared)
    assert node1.data["VtepMAC"] == macs[0]
    cluster.sync(node1)
    assert_full_mesh(cluster)


def test_vxlan_incompatible_device_is_recreated_with_its_mac(cluster: Cluster) -> None:
    node1 = cluster.nodes[0]
    mac = "0e:11:22:33:44:55"
    node1.ip("link", "add", "flannel.1", "address", mac, "type", "vxlan", "id", "1", "dstport", "4789", "dev", "eth0")
    cluster.start("vxlan")
    details = node1.ip("-d", "link", "show", "flannel.1")
    assert "dstport 8472" in details and f"link/ether {mac}" in details
    assert node1.data["VtepMAC"] == mac
    assert_full_mesh(cluster)


def test_vxlan_direct_routing_uses_the_underlay(cluster: Cluster) -> None:
    cluster.start("vxlan", DirectRouting=True)
    node1, node2, node3 = cluster.nodes
    routes, neigh, fdb = node_entries(node1)
    for peer in (node2, node3):
        assert f"{peer.subnet} via {peer.address} dev eth0 proto 112" in routes
    assert neigh.strip() == "" and fdb.strip() == ""
    assert_full_mesh(cluster)
    assert node1.backend is not None
    node1.inside(node1.backend.remove_peer, node2.lease())
    assert str(node2.subnet) not in node1.ip("route")


# -- host-gw ---------------------------------------------------------------------------


def test_host_gw_routes_remove_and_sync(cluster: Cluster) -> None:
    cluster.start("host-gw")
    node1, node2, node3 = cluster.nodes
    assert node1.backend is not None and node1.backend.mtu == 1500 and node1.data == {}
    routes = node1.ip("route")
    assert f"{node2.subnet} via {node2.address} dev eth0 proto 112" in routes
    node1.inside(node1.backend.remove_peer, node2.lease())
    assert str(node2.subnet) not in node1.ip("route")
    assert unreachable(node1, node2)
    # The periodic check: a route someone deleted comes back, a stale one goes.
    node1.ip("route", "del", str(node3.subnet))
    node1.ip("route", "add", "10.42.9.0/24", "via", "198.51.100.99", "dev", "eth0", "onlink")
    node1.ip("route", "add", "10.99.0.0/24", "via", node2.address, "dev", "eth0")
    cluster.sync(node1)
    routes = node1.ip("route")
    assert f"{node3.subnet} via {node3.address} dev eth0 proto 112" in routes
    assert "10.42.9.0" not in routes and "10.99.0.0/24" in routes
    assert_full_mesh(cluster)


# -- udp -------------------------------------------------------------------------------


def test_udp_device_remove_sync_and_restart(cluster: Cluster) -> None:
    fds = len(os.listdir("/proc/self/fd"))
    cluster.start("udp")
    node1, node2, node3 = cluster.nodes
    backend = node1.backend
    assert isinstance(backend, UdpBackend) and backend.mtu == 1472 and backend.running
    assert "mtu 1472" in node1.ip("link", "show", "flannel0")
    assert "inet 10.42.1.0/32" in node1.ip("-4", "addr", "show", "flannel0")
    assert f"{NETWORK} dev flannel0 proto 112" in node1.ip("route")
    assert "198.51.100.11:8285" in node1.sh("ss -Hlun")
    assert_full_mesh(cluster)
    # A subnet nobody owns is answered with ICMP net unreachable (curl fails at once, no timeout).
    started = time.monotonic()
    code, err = fetch(node1.pod, "10.42.9.2", timeout=5)
    assert code != 0 and time.monotonic() - started < 4, err
    node1.inside(backend.remove_peer, node2.lease())
    assert unreachable(node1, node2)
    assert reaches(node1, node3)
    node1.inside(backend.sync, cluster.leases_for(node1))
    assert reaches(node1, node2)
    # Restart: threads and descriptors go, the device stays, a new proxy takes over.
    node1.stop()
    assert not backend.running and len(proxy_threads()) == 2
    assert "flannel0" in node1.ip("link", "show", "flannel0")
    node1.start("udp", {}, cluster.state / node1.name)
    cluster.sync(node1)
    assert_full_mesh(cluster)
    cluster.stop()
    assert not proxy_threads()
    assert len(os.listdir("/proc/self/fd")) == fds
