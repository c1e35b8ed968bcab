"""The Calico-style network, side by side in one run.

    sudo .venv/bin/python benchmarks/calico_bench.py [--allocs 150] [--runs 20] [--seconds 5] [--nodes 30]

Everything runs in namespaces this script makes and removes, with a real etcd
(in a namespace) and real BIRD 2 daemons:

1. IPAM allocations per second, one node, sequential (the per-host IPAM lock
   makes a node's allocations single-flight anyway): the IPAM plugin executed
   as a main plugin executes it (CNI_COMMAND=ADD, the network config on
   stdin), interleaved call by call across calico-ipam on etcd, calico-ipam on
   the embedded store (sqlite), pycni's host-local and Go's host-local; pycni
   warm (daemon running) and cold (no daemon). Then each allocation's DEL.
2. Pod ADD+DEL latency, as cni_bench measures it (pycni's libcni driving each
   plugin as a process, runs interleaved, a resident pod on every network,
   medians): calico + calico-ipam on etcd and on the embedded store, against
   the seed's bridge + host-local (+ ipMasq); pycni warm and cold, Go's bridge
   + host-local for scale.
3. iperf3 pod to pod across two nodes of one subnet with the pool's
   encapsulation None (routes learnt by BGP from BIRD) and VXLAN (Always,
   vxlan.calico), each against node to node in the same cluster, alternating
   run by run as fabric_bench does; pinned (-A 0,1) and unpinned; medians.
4. N nodes to a full route mesh, BGP full mesh against a route reflector: N
   ``pycni calico-node`` agents (bird backend, the seed's Installation, one
   subnet, so every route is BGP's) started at once against one etcd; seconds
   until every node routes every other node's block (``proto bird``), and the
   BIRD sessions each design needs.

Results are printed as Markdown (for BENCHMARKS.md) and as JSON (--json);
progress (a bar per part on a terminal, a few lines otherwise) goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.calico_cluster import SEED_INSTALLATION, CalicoCluster, Node, Pod
from tests.support.etcd import etcd_server
from tests.support.measure import iperf, rss_kib
from tests.support.netns import NetnsPool, netns_pool, run
from tests.support.progress import Progress, progress

from pycni.cli.install import install
from pycni.net.netns import entered
from pycni.runtime import CNIRuntime, RuntimeConf
from pycni.spec import NetworkConfigList

GO_DIR = "/usr/lib/cni"
BIRD = "/usr/sbin/bird"
POOL = "10.244.0.0/16"
SQLITE_POOL = "10.245.0.0/16"
MODES: dict[str, tuple[str, ...]] = {"pinned": ("-A", "0,1"), "unpinned": ()}
NONE_INSTALLATION = SEED_INSTALLATION.replace("encapsulation: VXLANCrossSubnet", "encapsulation: None")
VXLAN_INSTALLATION = SEED_INSTALLATION.replace("encapsulation: VXLANCrossSubnet", "encapsulation: VXLAN")
PART_LINES = 5  # plain progress lines per part: four parts, about twenty lines in a log


def pycni_bin() -> str:
    return str(Path(sys.executable).with_name("pycni"))


# -- one node: IPAM rate and pod latency ----------------------------------------------------------


class Node1:
    """A node namespace with etcd on its loopback, a sqlite store, pycni's plugins and a pycni daemon."""

    def __init__(self, work: Path, pool: NetnsPool) -> None:
        self.work = work
        self.pool = pool
        self.ns = pool.new("node")
        self.plugin_dir = str(work / "bin")
        install(self.plugin_dir)
        self.socket = str(work / "run" / "pycni.sock")
        self.db = str(work / "calico.db")
        self.daemon: subprocess.Popen[bytes] | None = None
        self.netns_for_ipam = pool.path(pool.new("ctr"))
        self.nodename_file = str(work / "nodename")  # what calico-node writes once it registered the node
        Path(self.nodename_file).write_text("bench-node")

    def start_daemon(self) -> None:
        self.daemon = subprocess.Popen(
            [sys.executable, "-m", "pycni.cli.main", "daemon", "--socket", self.socket], stderr=subprocess.DEVNULL
        )
        for _ in range(200):
            if os.path.exists(self.socket):
                return
            time.sleep(0.05)
        raise RuntimeError("the pycni daemon did not start")

    def stop_daemon(self) -> None:
        if self.daemon is not None:
            self.daemon.terminate()
            self.daemon.wait(timeout=20)
            self.daemon = None

    def seed(self, etcd_url: str) -> None:
        """What calico-node would have registered: the pool and this Node, in both stores (calicoctl)."""
        stores = (
            ({"DATASTORE_TYPE": "etcdv3", "ETCD_ENDPOINTS": etcd_url}, POOL),
            ({"PYCNI_CALICO_STORE": self.db}, SQLITE_POOL),  # its own range: both stores' pods share this node
        )
        for env, cidr in stores:
            docs = (
                f"apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: default-ipv4-ippool\n"
                f"spec:\n  cidr: {cidr}\n  blockSize: 26\n  natOutgoing: true\n---\n"
                "apiVersion: projectcalico.org/v3\nkind: Node\nmetadata:\n  name: bench-node\n"
                "spec:\n  bgp:\n    ipv4Address: 198.51.100.11/24\n"
            )
            base = {k: v for k, v in os.environ.items() if "DATASTORE" not in k and "ETCD" not in k}
            subprocess.run(
                ["ip", "netns", "exec", self.ns, pycni_bin(), "calicoctl", "apply", "-f", "-"],
                input=docs,
                env={**base, **env},
                check=True,
                capture_output=True,
                text=True,
            )

    def store_keys(self, kind: str, etcd_url: str) -> dict[str, Any]:
        if kind == "etcd":
            return {"datastore_type": "etcdv3", "etcd_endpoints": etcd_url}
        return {"datastore_type": "pycni", "pycni_store_path": self.db}

    @contextmanager
    def mode_env(self, mode: str) -> Iterator[None]:
        saved = {k: os.environ.get(k) for k in ("PYCNI_SOCKET", "PYCNI_NO_DAEMON")}
        os.environ["PYCNI_SOCKET"] = self.socket
        if mode == "cold":
            os.environ["PYCNI_NO_DAEMON"] = "1"
        else:
            os.environ.pop("PYCNI_NO_DAEMON", None)
        try:
            yield
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


def ipam_confs(node: Node1, etcd_url: str) -> dict[str, tuple[str, str, dict[str, Any]]]:
    """(plugin executable, pycni mode, network config) per IPAM under test."""
    lock = str(node.work / "ipam.lock")

    def calico(kind: str) -> dict[str, Any]:
        return {
            "cniVersion": "1.0.0",
            "name": f"calico-{kind}",
            "type": "calico",
            **node.store_keys(kind, etcd_url),
            "nodename": "bench-node",
            "ipam_lock_file": lock,
            "ipam": {"type": "calico-ipam"},
        }

    def host_local(name: str, subnet: str) -> dict[str, Any]:
        ipam = {"type": "host-local", "subnet": subnet, "dataDir": str(node.work / f"ipam-{name}")}
        return {"cniVersion": "1.0.0", "name": name, "type": "bridge", "ipam": ipam}

    pycni = node.plugin_dir
    confs: dict[str, tuple[str, str, dict[str, Any]]] = {}
    for mode in ("warm", "cold"):
        confs[f"calico-ipam etcd, pycni {mode}"] = (f"{pycni}/calico-ipam", mode, calico("etcd"))
        confs[f"calico-ipam sqlite, pycni {mode}"] = (f"{pycni}/calico-ipam", mode, calico("sqlite"))
        confs[f"host-local, pycni {mode}"] = (f"{pycni}/host-local", mode, host_local(f"hl-{mode}", "10.250.0.0/16"))
    confs["host-local, Go"] = (f"{GO_DIR}/host-local", "go", host_local("hl-go", "10.251.0.0/16"))
    return confs


def call_ipam(node: Node1, plugin: str, mode: str, conf: dict[str, Any], command: str, cid: str) -> float:
    """Milliseconds for one IPAM call, executed as a main plugin executes its IPAM delegate."""
    with node.mode_env(mode):
        env = {
            **os.environ,
            "CNI_COMMAND": command,
            "CNI_CONTAINERID": cid,
            "CNI_NETNS": node.netns_for_ipam,
            "CNI_IFNAME": "eth0",
            "CNI_PATH": os.path.dirname(plugin),
        }
        start = time.perf_counter()
        proc = subprocess.run([plugin], input=json.dumps(conf).encode(), env=env, capture_output=True, check=False)
        elapsed = (time.perf_counter() - start) * 1000
    if proc.returncode != 0:
        raise RuntimeError(f"{plugin} {command} failed: {proc.stdout.decode()} {proc.stderr.decode()}")
    return elapsed


def ipam_rate(node: Node1, etcd_url: str, count: int, cold_count: int) -> dict[str, dict[str, float]]:
    confs = ipam_confs(node, etcd_url)
    adds: dict[str, list[float]] = {name: [] for name in confs}
    dels: dict[str, list[float]] = {name: [] for name in confs}
    calls = 2 * sum(min(count, cold_count) + 2 if mode == "cold" else count + 2 for _, mode, _ in confs.values())
    with progress("calico_bench IPAM", total=calls, unit="call", lines=PART_LINES) as bar:
        for i in range(count + 2):  # two warm-up rounds, not counted
            for name, (plugin, mode, conf) in confs.items():
                if mode == "cold" and i >= cold_count + 2:
                    continue
                elapsed = call_ipam(node, plugin, mode, conf, "ADD", f"alloc-{i}")
                if i >= 2:
                    adds[name].append(elapsed)
                bar.advance(detail=f"ADD {i + 1}: {name} {elapsed:.0f} ms")
        for i in range(count + 2):
            for name, (plugin, mode, conf) in confs.items():
                if mode == "cold" and i >= cold_count + 2:
                    continue
                elapsed = call_ipam(node, plugin, mode, conf, "DEL", f"alloc-{i}")
                if i >= 2:
                    dels[name].append(elapsed)
                bar.advance(detail=f"DEL {i + 1}: {name} {elapsed:.0f} ms")
    return {
        name: {
            "allocations": len(adds[name]),
            "add_median_ms": statistics.median(adds[name]),
            "add_per_s": 1000 * len(adds[name]) / sum(adds[name]),
            "del_median_ms": statistics.median(dels[name]),
        }
        for name in confs
    }


def pod_networks(node: Node1, etcd_url: str) -> dict[str, tuple[str, NetworkConfigList]]:
    """(pycni mode, network) per pod network under test: calico + calico-ipam, and the seed's bridge.json."""

    def calico(kind: str) -> dict[str, Any]:
        plugin = {
            "type": "calico",
            **node.store_keys(kind, etcd_url),
            "nodename_file": node.nodename_file,
            "mtu": 1450,
            "ipam_lock_file": str(node.work / "pod-ipam.lock"),
            "ipam": {"type": "calico-ipam"},
        }
        return {"cniVersion": "1.0.0", "name": f"k8s-pod-network-{kind}", "plugins": [plugin]}

    def bridge(mode: str, index: int) -> dict[str, Any]:
        plugin = {
            "type": "bridge",
            "bridge": f"bb{index}",
            "isDefaultGateway": True,
            "forceAddress": False,
            "ipMasq": True,
            "hairpinMode": True,
            "ipam": {"type": "host-local", "subnet": f"10.{110 + index}.0.0/16", "dataDir": str(node.work / mode)},
        }
        return {"cniVersion": "0.4.0", "name": f"bridge-{mode}", "plugins": [plugin]}

    raw = {
        "calico etcd, pycni warm": ("warm", calico("etcd")),
        "calico etcd, pycni cold": ("cold", calico("etcd")),
        "calico sqlite, pycni warm": ("warm", calico("sqlite")),
        "calico sqlite, pycni cold": ("cold", calico("sqlite")),
        "bridge, pycni warm": ("warm", bridge("bridge-warm", 0)),
        "bridge, pycni cold": ("cold", bridge("bridge-cold", 1)),
        "bridge, Go": ("go", bridge("bridge-go", 2)),
    }
    return {name: (mode, NetworkConfigList.from_bytes(json.dumps(c).encode())) for name, (mode, c) in raw.items()}


def pod_latency(node: Node1, etcd_url: str, runs: int) -> dict[str, float]:
    """Median ADD+DEL milliseconds per network and mode, runs interleaved, a resident pod on each network."""
    networks = pod_networks(node, etcd_url)

    def runtime(mode: str) -> CNIRuntime:
        return CNIRuntime([GO_DIR if mode == "go" else node.plugin_dir], cache_dir=str(node.work / f"cache-{mode}"))

    residents = {
        name: RuntimeConf(f"resident-{i}", node.pool.path(node.pool.new("res"))) for i, name in enumerate(networks)
    }
    netns = node.pool.path(node.pool.new("pod"))
    samples: dict[str, list[float]] = {name: [] for name in networks}
    for name, (mode, network) in networks.items():
        with node.mode_env(mode):
            runtime(mode).add(network, residents[name])
    try:
        with progress(
            "calico_bench pod latency", total=(runs + 2) * len(networks), unit="run", lines=PART_LINES
        ) as bar:
            for run_index in range(runs + 2):  # two warm-up rounds, not counted
                for name, (mode, network) in networks.items():
                    rt = RuntimeConf(f"bench-{run_index}-{uuid.uuid4().hex[:6]}", netns, "eth0")
                    with node.mode_env(mode):
                        start = time.perf_counter()
                        runtime(mode).add(network, rt)
                        runtime(mode).delete(network, rt)
                        elapsed = (time.perf_counter() - start) * 1000
                    if run_index >= 2:
                        samples[name].append(elapsed)
                    bar.advance(detail=f"run {run_index + 1}/{runs + 2}: {name} {elapsed:.0f} ms")
    finally:
        for name, (mode, network) in networks.items():
            with node.mode_env(mode):
                runtime(mode).delete(network, residents[name])
    return {name: statistics.median(v) for name, v in samples.items()}


def one_node(work: Path, allocs: int, cold_allocs: int, runs: int) -> dict[str, Any]:
    with netns_pool("cbench") as pool:
        node = Node1(work / "node", pool)
        with etcd_server(host="127.0.0.1", netns=node.ns) as etcd:
            node.seed(etcd.url)
            node.start_daemon()
            try:
                with entered(pool.path(node.ns)):
                    rate = ipam_rate(node, etcd.url, allocs, cold_allocs)
                    latency = pod_latency(node, etcd.url, runs)
            finally:
                node.stop_daemon()
    return {"ipam": rate, "latency": latency}


# -- two nodes: throughput ------------------------------------------------------------------------


def route_of(node: Node, dst: str) -> dict[str, Any]:
    routes = json.loads(run("ip", "-j", "route", "show", "table", "main", netns=node.ns).stdout or "[]")
    return next((r for r in routes if r.get("dst") == dst), {})


def block_of(pod: Pod) -> str:
    base, last = pod.ip.rsplit(".", 1)
    return f"{base}.{int(last) // 64 * 64}/26"


def throughput(work: Path, encapsulation: str, seconds: int, repeats: int, bar: Progress) -> dict[str, Any]:
    """Pod to pod across two same-subnet nodes vs node to node, alternating; one cluster per encapsulation."""
    installation = NONE_INSTALLATION if encapsulation == "None" else VXLAN_INSTALLATION
    backend = "bird" if encapsulation == "None" else "vxlan"
    home = work / f"iperf-{encapsulation}"
    home.mkdir()
    plugin_dir = str(work / "bin")
    results: dict[str, Any] = {"backend": backend}
    with netns_pool("cbench") as pool:
        cluster = CalicoCluster(
            pool, home, pycni_bin(), plugin_dir, installation=installation,
            agent_args=("--backend", backend, "--stop-bird-on-exit"),
        )  # fmt: skip
        try:
            with etcd_server(host="198.51.100.1", netns=cluster.underlay):
                a, b = cluster.add_node(1), cluster.add_node(1)
                pa, pb = cluster.add_pod(a), cluster.add_pod(b)
                deadline = time.monotonic() + 60
                while not (cluster.reaches(pa, pb) and cluster.reaches(pb, pa)):
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"{encapsulation}: pods do not reach each other")
                    time.sleep(0.3)
                route = route_of(a, block_of(pb))
                results["route"] = " ".join(
                    f"{k} {route[k]}" for k in ("dst", "gateway", "dev", "protocol") if route.get(k)
                )
                results["pod_mtu"] = int(a.mtu_file.read_text())
                for mode, extra in MODES.items():
                    underlay, pods = [], []
                    for repeat in range(repeats):
                        underlay.append(iperf(a.ns, b.ns, b.address, seconds, extra))
                        bar.advance(detail=f"{encapsulation} {mode} {repeat + 1}/{repeats}: node to node")
                        pods.append(iperf(pa.name, pb.name, pb.ip, seconds, extra))
                        bar.advance(detail=f"{encapsulation} {mode} {repeat + 1}/{repeats}: pod to pod")
                    u, p = statistics.median(underlay), statistics.median(pods)
                    results[mode] = {"underlay_bps": u, "pod_bps": p, "ratio": p / u}
        finally:
            for node in cluster.nodes:
                cluster.stop_agent(node)
            cluster.close()
    return results


# -- N nodes: full mesh against a route reflector --------------------------------------------------

RR_RESOURCES = """\
apiVersion: projectcalico.org/v3
kind: BGPConfiguration
metadata:
  name: default
spec:
  nodeToNodeMeshEnabled: false
  asNumber: 64512
---
apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata:
  name: peer-with-route-reflectors
spec:
  nodeSelector: all()
  peerSelector: route-reflector == 'true'
---
apiVersion: projectcalico.org/v3
kind: Node
metadata:
  name: node1
  labels:
    route-reflector: "true"
spec:
  bgp:
    ipv4Address: 198.51.100.11/24
    routeReflectorClusterID: 244.0.0.1
"""


def bird_routes(node: Node) -> int:
    out = run("ip", "-o", "route", "show", "table", "main", "proto", "bird", netns=node.ns, check=False).stdout
    return sum(1 for line in out.splitlines() if "/26 " in line)


def established(node: Node) -> int:
    out = run("birdc", "-s", str(node.run_dir / "bird.ctl"), "show", "protocols", check=False).stdout
    return sum(1 for line in out.splitlines() if " BGP " in line and "Established" in line)


def bird_rss_kib(nodes: list[Node]) -> int:
    """RSS of the BIRDs of ``nodes`` together (each is found by its control socket on its command line)."""
    sockets = {str(node.run_dir / "bird.ctl").encode() for node in nodes}
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                argv = handle.read().split(b"\0")
            if os.path.basename(argv[0]) != b"bird" or not sockets & set(argv):
                continue
            with open(f"/proc/{entry}/status") as handle:
                total += next(int(line.split()[1]) for line in handle if line.startswith("VmRSS:"))
        except (OSError, StopIteration):
            continue
    return total


def route_mesh(work: Path, count: int, design: str, bar: Progress, timeout: float = 300) -> dict[str, Any]:
    """Steps of ``bar`` (``2 * count + 1``): each node made, each agent ready, then every route there.

    Readiness is read from the agents' logs, cheaply; routes are asked of BIRD only as before
    (until the first node that lacks one), so the progress adds no load to what is timed.
    """
    home = work / f"mesh-{design}"
    home.mkdir()
    with netns_pool("cmesh") as pool:
        cluster = CalicoCluster(
            pool, home, pycni_bin(), str(work / "bin"),
            agent_args=("--backend", "bird", "--stop-bird-on-exit"),
        )  # fmt: skip
        try:
            with etcd_server(host="198.51.100.1", netns=cluster.underlay):
                if design == "route reflector":
                    cluster.calicoctl("apply", "-f", "-", stdin=RR_RESOURCES)
                nodes: list[Node] = []
                for index in range(count):
                    nodes.append(cluster.add_node(1, start=False))
                    bar.advance(detail=f"{design}: node {index + 1}/{count} made")
                env = {**os.environ, **cluster.env}
                started = time.monotonic()
                for node in nodes:
                    handle = node.log.open("ab")
                    node.agent = subprocess.Popen(
                        cluster.agent_argv(node), stdout=handle, stderr=handle, env=env, start_new_session=True
                    )
                    handle.close()
                ready = converged = None
                agents_seen = 0
                while True:
                    now = time.monotonic() - started
                    if ready is None:
                        agents = sum("calico-node: ready" in n.log.read_text() for n in nodes)
                        bar.advance(max(0, agents - agents_seen), detail=f"{design}: {agents}/{count} agents ready")
                        agents_seen = max(agents, agents_seen)
                        if agents == count:
                            ready = now
                    if ready is not None and all(bird_routes(n) >= count - 1 for n in nodes):
                        converged = time.monotonic() - started
                        bar.advance(detail=f"{design}: every node routes every block")
                        break
                    dead = [n.nodename for n in nodes if n.agent is not None and n.agent.poll() is not None]
                    if dead or now > timeout:
                        routes = [bird_routes(n) for n in nodes]
                        raise RuntimeError(f"{design}: not converged after {now:.0f} s (exited {dead}; {routes})")
                    time.sleep(0.25)
                sessions = [established(n) for n in nodes]
                assert all(n.agent is not None for n in nodes), "every agent runs"
                rss = [rss_kib(n.agent.pid) for n in nodes]  # type: ignore[union-attr]
                birds = bird_rss_kib(nodes)
        finally:
            for node in cluster.nodes:
                try:
                    cluster.stop_agent(node)
                except subprocess.TimeoutExpired:
                    cluster.stop_agent(node, signal.SIGKILL)
            cluster.close()
    return {
        "nodes": count,
        "agents_ready_s": ready,
        "converged_s": converged,
        "sessions_total": sum(sessions) // 2,
        "sessions_per_node_max": max(sessions),
        "sessions_per_node_min": min(sessions),
        "agent_rss_mib_median": statistics.median(rss) / 1024,
        "bird_rss_mib_total": birds / 1024,
    }


# -- report -------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    cpu = "unknown CPU"
    with open("/proc/cpuinfo") as handle:
        for line in handle:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    bird = subprocess.run([BIRD, "--version"], capture_output=True, text=True, check=False)
    etcd = subprocess.run(["etcd", "--version"], capture_output=True, text=True, check=False).stdout.splitlines()
    return {
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "bird": (bird.stdout or bird.stderr).strip(),
        "etcd": etcd[0] if etcd else "unknown",
    }


def loadavg() -> str:
    with open("/proc/loadavg") as handle:
        return " ".join(handle.read().split()[:3])


def report(data: dict[str, Any]) -> str:
    m = data["machine"]
    lines = [
        f"Machine: {m['cpus']} CPUs ({m['cpu']}), Linux {m['kernel']}, Python {m['python']}, {m['bird']}, "
        f"{m['etcd']}; load average {data['load_before']} before, {data['load_after']} after",
    ]
    if "ipam" in data:
        lines += ["", "| IPAM (one node, sequential) | ADD median | allocations/s | DEL median |", "|---|---|---|---|"]
        for name, r in data["ipam"].items():
            lines.append(
                f"| {name} | {r['add_median_ms']:.1f} ms | {r['add_per_s']:.1f} | {r['del_median_ms']:.1f} ms |"
            )
    if "latency" in data:
        lines += ["", "| pod network | ADD+DEL median |", "|---|---|"]
        for name, ms in data["latency"].items():
            lines.append(f"| {name} | {ms:.1f} ms |")
    if "throughput" in data:
        lines += [
            "",
            "| encapsulation | iperf3 mode | pod-to-pod | node-to-node | pod / node |",
            "|---|---|---|---|---|",
        ]
        for encapsulation, t in data["throughput"].items():
            for mode in MODES:
                r = t[mode]
                pod, underlay = r["pod_bps"] / 1e9, r["underlay_bps"] / 1e9
                lines.append(
                    f"| {encapsulation} | {mode} | {pod:.2f} Gbit/s | {underlay:.2f} Gbit/s | {r['ratio']:.2f} |"
                )
        for encapsulation, t in data["throughput"].items():
            lines.append(f"\n{encapsulation}: pod MTU {t['pod_mtu']}, node 1's route: {t['route']}")
    if "mesh" in data:
        lines += [
            "",
            "| design | nodes | every agent ready | every node routes every block | after the last ready "
            "| BIRD sessions | per node | all BIRDs' RSS |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for design, r in data["mesh"].items():
            per = f"{r['sessions_per_node_min']}..{r['sessions_per_node_max']}"
            after = r["converged_s"] - r["agents_ready_s"]
            lines.append(
                f"| {design} | {r['nodes']} | {r['agents_ready_s']:.1f} s | {r['converged_s']:.1f} s | {after:.1f} s "
                f"| {r['sessions_total']} | {per} | {r['bird_rss_mib_total']:.0f} MiB |"
            )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--allocs", type=int, default=150, help="allocations per IPAM (warm pycni and Go)")
    parser.add_argument("--cold-allocs", type=int, default=50, help="allocations per IPAM for pycni cold")
    parser.add_argument("--runs", type=int, default=20, help="pod ADD+DEL runs per network and mode")
    parser.add_argument("--seconds", type=int, default=5, help="length of one iperf3 run")
    parser.add_argument("--repeats", type=int, default=5, help="iperf3 runs per mode and path; the median is used")
    parser.add_argument("--nodes", type=int, default=30, help="nodes for the route-mesh part")
    parser.add_argument("--part", choices=("all", "node", "throughput", "mesh"), default="all")
    parser.add_argument("--json", help="also write the raw numbers to this file")
    opts = parser.parse_args()
    if os.geteuid() != 0:
        print("calico_bench: run as root (it makes network namespaces)", file=sys.stderr)
        return 1
    if not os.access(BIRD, os.X_OK):
        print("calico_bench: BIRD 2 is missing (apt-get install bird2)", file=sys.stderr)
        return 1
    work = Path(tempfile.mkdtemp(prefix="pycni-calico-bench-"))
    data: dict[str, Any] = {"machine": machine(), "load_before": loadavg(), "options": vars(opts)}
    timings: dict[str, float] = {}
    try:
        install(str(work / "bin"))
        if opts.part in ("all", "node"):
            start = time.monotonic()
            data.update(one_node(work, opts.allocs, opts.cold_allocs, opts.runs))
            timings["node"] = time.monotonic() - start
        if opts.part in ("all", "throughput"):
            start = time.monotonic()
            encapsulations = ("None", "VXLAN")
            runs = len(encapsulations) * len(MODES) * opts.repeats * 2
            with progress("calico_bench throughput", total=runs, unit="iperf3", lines=PART_LINES) as bar:
                data["throughput"] = {
                    encapsulation: throughput(work, encapsulation, opts.seconds, opts.repeats, bar)
                    for encapsulation in encapsulations
                }
            timings["throughput"] = time.monotonic() - start
        if opts.part in ("all", "mesh"):
            start = time.monotonic()
            designs = ("full mesh", "route reflector")
            steps = len(designs) * (2 * opts.nodes + 1)
            with progress(f"calico_bench mesh ({opts.nodes} nodes)", total=steps, unit="step", lines=PART_LINES) as bar:
                data["mesh"] = {design: route_mesh(work, opts.nodes, design, bar) for design in designs}
            timings["mesh"] = time.monotonic() - start
    finally:
        shutil.rmtree(work, ignore_errors=True)
    data["load_after"] = loadavg()
    data["part_seconds"] = timings
    print(report(data))
    if opts.json:
        Path(opts.json).write_text(json.dumps(data, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
