"""The conformance matrix on real pods: the netpol e2e scenarios on Calico and on Canal, over two nodes.

Upstream's model (namespaces x, y, z x pods a, b, c, each serving TCP and UDP
on 80 and 81) on two nodes in different underlay subnets, built once per
fabric: **Calico** (``pycni calico-node`` with the seed's VXLANCrossSubnet
pool, calico-ipam) and **Canal** (``pycni flanneld`` vxlan, the calico plugin
with host-local on the Flannel subnet, ``pycni calico-node`` policy-only).
Each scenario of :mod:`tests.support.netpol_scenarios` that probes TCP or UDP
runs against both: policies and label changes go in with ``pycni calicoctl``,
every cell (72 pairs per port and protocol) is probed for real and must equal
upstream's expectation, which the evaluator (built from the same objects and
the real addresses) must give too. Between scenarios the policies are deleted
and labels restored, as upstream cleans its namespaces.

``make test`` runs every scenario on Calico and a sample on Canal (the
fabrics share the policy dataplane; Canal's difference is the path between
nodes); ``PYCNI_NETPOL=all`` runs every scenario on both (``make conformance``).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pycni.net import netns
from pycni.policy.matrix import Peer
from tests.support.calico_cluster import ETCD_IP, ETCD_URL, CalicoCluster, Node, wait_until
from tests.support.canal_cluster import CanalCluster
from tests.support.etcd import etcd_server
from tests.support.metrics import scrape_unix, value
from tests.support.netns import netns_pool, run
from tests.support.netpol_probe import Cell, probe
from tests.support.netpol_scenarios import SCENARIOS, X, policy, reachability
from tests.support.netpol_world import RealWorld

REAL = sorted(name for name, scenario in SCENARIOS.items() if not scenario.probes_sctp)
CANAL_SAMPLE = {  # one of each kind: deny all, pod+namespace AND, named port, egress, ipBlock except, update, UDP
    "02_default_deny_all",
    "10_pod_selector_and_namespace_selector",
    "17_ingress_on_one_named_port",
    "22_ingress_from_updated_pod",
    "28_deny_egress_on_the_client_side_even_if_the_server_allows",
    "35_except_clause_of_an_egress_cidr_block",
    "44_udp_ports",
    "50_deny_all_but_dns_like_udp",
}
EVERYTHING = os.environ.get("PYCNI_NETPOL", "") == "all"
RESYNC = 3  # seconds: the agents' resync, and so their policy drift check


def _world(kind: str, tmp: Path, pycni_bin: str, plugin_dir: str) -> Iterator[RealWorld]:
    with netns_pool() as pool:
        if kind == "calico":
            cluster: CalicoCluster = CalicoCluster(pool, tmp, pycni_bin, plugin_dir, agent_args=("--backend", "vxlan"))
        else:
            cluster = CanalCluster(pool, tmp, pycni_bin, plugin_dir)
        try:
            with etcd_server(host=ETCD_IP, netns=cluster.underlay):
                if isinstance(cluster, CanalCluster):
                    cluster.put_network_config()
                for subnet in (1, 2):  # across the router: the fabric's tunnel carries pod traffic
                    metrics = ("--metrics-addr", f"unix:{metrics_socket(tmp, subnet)}")
                    cluster.add_node(subnet, extra=(*metrics, "--resync", str(RESYNC)))
                started = time.monotonic()
                world = RealWorld(cluster)
                print(f"{kind}: 9 pods made and serving in {time.monotonic() - started:.1f} s")
                try:
                    yield world
                finally:
                    world.close()
        finally:
            cluster.close()


@pytest.fixture(scope="module")
def calico_world(
    tmp_path_factory: pytest.TempPathFactory, pycni_bin: str, pycni_plugin_dir: str
) -> Iterator[RealWorld]:
    yield from _world("calico", tmp_path_factory.mktemp("netpol-calico"), pycni_bin, pycni_plugin_dir)


@pytest.fixture(scope="module")
def canal_world(tmp_path_factory: pytest.TempPathFactory, pycni_bin: str, pycni_plugin_dir: str) -> Iterator[RealWorld]:
    yield from _world("canal", tmp_path_factory.mktemp("netpol-canal"), pycni_bin, pycni_plugin_dir)


def metrics_socket(tmp: Path, index: int) -> Path:
    return tmp / f"node{index}" / "metrics.sock"  # in the node's home (CalicoCluster makes it)


@pytest.mark.parametrize("name", REAL)
def test_calico(calico_world: RealWorld, name: str) -> None:
    calico_world.reset()
    SCENARIOS[name].run(calico_world)


@pytest.mark.parametrize("name", [n for n in REAL if EVERYTHING or n in CANAL_SAMPLE])
def test_canal(canal_world: RealWorld, name: str) -> None:
    canal_world.reset()
    SCENARIOS[name].run(canal_world)


def test_the_matrix_covers_the_issue() -> None:
    assert len(REAL) >= 30
    assert set(REAL) >= CANAL_SAMPLE


@pytest.mark.parametrize(("fabric", "tunnel"), [("calico", "vxlan.calico"), ("canal", "flannel.1")])
def test_pod_traffic_between_the_nodes_takes_the_fabrics_tunnel(
    fabric: str, tunnel: str, request: pytest.FixtureRequest
) -> None:
    world: RealWorld = request.getfixturevalue(f"{fabric}_world")
    world.reset()
    node1, node2 = world.cluster.nodes
    before = world.cluster.tx_packets(node1, tunnel), world.cluster.tx_packets(node2, tunnel)
    world.validate(reachability(), 80)  # no policy: all 72 pairs connect, half of them across the nodes
    after = world.cluster.tx_packets(node1, tunnel), world.cluster.tx_packets(node2, tunnel)
    crossing = sum(1 for a in world.pods.values() for b in world.pods.values() if a.node is not b.node)
    assert after[0] - before[0] >= crossing // 2 and after[1] - before[1] >= crossing // 2, (before, after)


UPDATER = """
import json, sys, tempfile, time
from pycni.cli.calicoctl import main
for index in range(int(sys.argv[1])):
    document = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "stream-target", "namespace": "y"},
        "spec": {
            "podSelector": {"matchLabels": {"pod": "a"}},
            "ingress": [
                {"ports": [{"port": 8080}]},
                {"from": [{"podSelector": {}}], "ports": [{"port": 9000 + index}]},
            ],
        },
    }
    with tempfile.NamedTemporaryFile("w", suffix=".json") as manifest:
        json.dump(document, manifest)
        manifest.flush()
        assert main(["apply", "-f", manifest.name]) == 0
    time.sleep(0.02)
"""


def test_a_long_lived_tcp_stream_survives_100_policy_updates(calico_world: RealWorld) -> None:
    """Upstream's model pods x/a -> y/a (on the other node); y/a's ingress chain is rewritten 100 times."""
    world = calico_world
    world.reset()
    client_pod, server_pod = world.pods["x/a"], world.pods["y/a"]
    assert client_pod.node is not server_pod.node
    stream = EchoStream(world.namespace_of["x/a"], world.namespace_of["y/a"], server_pod.ip, 8080)
    try:
        python = os.path.join(os.path.dirname(world.cluster.pycni_bin), "python")
        env = {**os.environ, "DATASTORE_TYPE": "etcdv3", "ETCD_ENDPOINTS": ETCD_URL}
        argv = ["ip", "netns", "exec", world.cluster.underlay, python, "-c", UPDATER, "100"]
        updater = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        node = server_pod.node
        transactions = _transactions(world, node)
        sent = 0
        while updater.poll() is None:
            stream.round_trip(f"message {sent}")
            sent += 1
            time.sleep(0.005)
        _, errors = updater.communicate()
        assert updater.returncode == 0, errors
        wait_until(lambda: "9099" in _policy_table(node.ns), within=10, what="the last update in the kernel")
        written = _transactions(world, node) - transactions
        print(f"{sent} round trips across {written:.0f} policy transactions on the server's node")
        assert written >= 20, "the updates reached the kernel as many transactions, not one at the end"
        for _ in range(20):  # and after the last one
            stream.round_trip(f"message {sent}")
            sent += 1
        assert sent > 100, sent
    finally:
        stream.close()
        target = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy"}
        world.cluster.calicoctl(
            "delete", "-f", "-", stdin=json.dumps({**target, "metadata": {"name": "stream-target", "namespace": "y"}})
        )


def _transactions(world: RealWorld, node: Node) -> float:
    found = value(scrape_unix(str(metrics_socket(world.cluster.tmp, node.index))), "pycni_policy_transactions_total")
    assert found is not None, "calico-node serves its policy metrics"
    return found


def _policy_table(ns: str) -> str:
    return run("nft", "list", "table", "inet", "pycni-policy", netns=ns).stdout


class EchoStream:
    """One TCP connection from ``client_ns`` to a server in ``server_ns`` that echoes each line."""

    def __init__(self, client_ns: str, server_ns: str, address: str, port: int) -> None:
        with netns.entered(server_ns):
            self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("0.0.0.0", port))
        self.listener.listen(1)
        with netns.entered(client_ns):
            self.client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.client.settimeout(5)
        self.client.connect((address, port))
        self.accepted, _ = self.listener.accept()
        self.accepted.settimeout(5)
        self.echo = threading.Thread(target=self._echo, daemon=True)
        self.echo.start()
        self.reader = self.client.makefile("r")

    def _echo(self) -> None:
        with contextlib.suppress(OSError):
            while data := self.accepted.recv(4096):
                self.accepted.sendall(data)

    def round_trip(self, line: str) -> None:
        self.client.sendall(f"{line}\n".encode())
        assert self.reader.readline() == f"{line}\n", f"the stream broke at {line!r}"

    def close(self) -> None:
        for sock in (self.client, self.accepted, self.listener):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        self.reader.close()
        self.echo.join(5)


def test_a_deleted_policy_table_is_put_back_by_the_drift_check(calico_world: RealWorld) -> None:
    """Someone deletes the node's policy table: within a resync it is back, and so is the default deny."""
    world = calico_world
    world.reset()
    world.apply(policy("deny-all", selector={}, ingress=[]))
    denied = reachability()
    denied.expect_peer(Peer(), Peer(X), False)
    world.validate(denied, 80)
    node = world.cluster.nodes[0]
    repairs = _drift_repairs(world, node)
    run("nft", "delete", "table", "inet", "pycni-policy", netns=node.ns)
    took = wait_until(lambda: _drift_repairs(world, node) > repairs, within=RESYNC * 4, what="the drift repaired")
    world.validate(denied, 80)  # every cell as before the meddling
    print(f"policy table rewritten {took:.1f} s after it was deleted")


def _drift_repairs(world: RealWorld, node: Node) -> float:
    found = scrape_unix(str(metrics_socket(world.cluster.tmp, node.index)))
    return value(found, "pycni_policy_drift_repairs_total") or 0.0


def test_calico_node_on_canal_leaves_flanneld_routes_alone(canal_world: RealWorld) -> None:
    """Both agents mark their routes with pycni's protocol; calico-node owns only routes in its pools and blocks."""
    node = canal_world.cluster.nodes[0]
    peer_subnet = canal_world.cluster.subnet_env(canal_world.cluster.nodes[1])["FLANNEL_SUBNET"]
    wanted = str(ipaddress.ip_interface(peer_subnet).network)

    def flannel_route() -> str:
        return run("ip", "route", "show", wanted, netns=node.ns).stdout

    assert "dev flannel.1" in flannel_route()
    log = node.log.read_text()
    time.sleep(2 * RESYNC)  # two of calico-node's resyncs
    assert "dev flannel.1" in flannel_route()
    assert "removed" not in node.log.read_text()[len(log) :], "calico-node removed a route it does not own"


LOGGING = {
    "apiVersion": "projectcalico.org/v3",
    "kind": "NetworkPolicy",
    "metadata": {"name": "log-then-allow", "namespace": "x"},
    "spec": {
        "selector": "pod == 'a'",
        "ingress": [
            {"action": "Log", "protocol": "TCP", "destination": {"ports": [81]}},
            {"action": "Allow"},
        ],
    },
}


def test_a_log_rule_writes_kernel_log_lines_naming_the_policy(calico_world: RealWorld) -> None:
    """Calico's Log action: a line per new connection in the kernel log, then the next rule decides."""
    world = calico_world
    world.reset()
    world.apply(LOGGING)
    world.validate(reachability(), 81)  # logged, then allowed
    sysctl = "/proc/sys/net/netfilter/nf_log_all_netns"  # the kernel logs from other namespaces only with it
    before = Path(sysctl).read_text().strip()
    kmsg = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
    try:
        Path(sysctl).write_text("1")
        os.lseek(kmsg, 0, os.SEEK_END)
        source, target = world.pods["y/b"], world.pods["x/a"]
        cell = Cell("y/b", "x/a", target.ip, 81, "TCP")
        lines: list[str] = []
        for _ in range(3):  # a new connection each time: one line lost in the machine-wide log is retried
            assert probe([cell], world.namespace_of, 2.0)[cell]
            lines += _kernel_log(kmsg, within=3, wanted=f"SRC={source.ip} DST={target.ip}")
            if any(f"SRC={source.ip} DST={target.ip}" in line for line in lines):
                break
    finally:
        Path(sysctl).write_text(before)
        os.close(kmsg)
    logged = [line for line in lines if f"SRC={source.ip} DST={target.ip}" in line and "DPT=81" in line]
    assert logged and "calico-packet: " in logged[0] and "log-then-allow" in logged[0], lines[-5:]
    print(logged[0])


def _kernel_log(fd: int, within: float, wanted: str) -> list[str]:
    """Kernel log records from ``fd`` (/dev/kmsg, positioned) until one holds ``wanted`` or time is up."""
    lines: list[str] = []
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            record = os.read(fd, 8192).decode(errors="replace")
        except BlockingIOError:
            time.sleep(0.05)
            continue
        lines.append(record.partition(";")[2].strip())
        if wanted in lines[-1]:
            break
    return lines
