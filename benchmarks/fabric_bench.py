"""The pod network across nodes: throughput over vxlan vs the underlay, and join time at scale.

    sudo .venv/bin/python benchmarks/fabric_bench.py [--nodes 30] [--seconds 5] [--repeats 3]

1. iperf3 pod-to-pod across two nodes over vxlan (and host-gw), and node-to-node
   over the underlay, alternating in the same cluster; the median ratio is what
   the overlay costs. Three iperf3 modes (see ``MODES``) are reported side by side.
2. N nodes running ``pycni flanneld`` join one etcd at once: seconds from the
   first agent's start until every node has a route to every other node's subnet.
3. Then, on that converged cluster, the netlink writes one agent sends while
   nothing changes: ``strace`` on node 1's agent for ``--window`` seconds counts
   every route and neighbour/FDB request that could change the kernel
   (``RTM_NEWROUTE``, ``RTM_DELROUTE``, ``RTM_NEWNEIGH``, ``RTM_DELNEIGH``), per
   burst (a resync every 5 s, the agent's default).

Everything runs in namespaces this script makes and removes (see
``tests/support/fabric.py``). Progress (a bar on a terminal, a few lines
otherwise) goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.etcd import etcd_server
from tests.support.fabric import UNDERLAY_GATEWAY, Cluster, Node
from tests.support.measure import iperf
from tests.support.netns import netns_pool, run
from tests.support.progress import Progress, progress

from pycni.cli.install import install

# iperf3 modes, each run for the underlay and for the pods in the same cluster.
# "pinned" puts client and server on different CPUs (iperf3 -A), the usual way
# to get repeatable numbers; "unpinned" leaves placement to the scheduler; "2
# streams" fills both CPUs of this 2-core machine.
MODES: dict[str, tuple[str, ...]] = {
    "pinned": ("-A", "0,1"),
    "unpinned": (),
    "2 streams": ("-P", "2"),
}


def throughput(
    work: Path, pycni_bin: str, plugin_dir: str, backend: str, seconds: int, repeats: int, bar: Progress
) -> dict[str, dict[str, float]]:
    """Median pod-to-pod and node-to-node throughput per mode, alternating the two."""
    results: dict[str, dict[str, float]] = {}
    with netns_pool("bench") as pool:
        cluster = Cluster(pool, work / backend, pycni_bin, plugin_dir, f"http://{UNDERLAY_GATEWAY}:2379")
        (work / backend).mkdir(exist_ok=True)
        try:
            with etcd_server(host=UNDERLAY_GATEWAY, netns=cluster.underlay) as etcd:
                etcd.etcdctl(
                    "put",
                    "/coreos.com/network/config",
                    json.dumps({"Network": "10.244.0.0/16", "Backend": {"Type": backend}}),
                )
                a, b = cluster.add_node(), cluster.add_node()
                pa, pb = cluster.add_pod(a), cluster.add_pod(b)
                cluster.wait_full_mesh(within=10)
                for mode, extra in MODES.items():
                    underlay, pods = [], []
                    for repeat in range(repeats):
                        underlay.append(iperf(a.name, b.name, b.address, seconds, extra))
                        bar.advance(detail=f"{backend} {mode} {repeat + 1}/{repeats}: underlay")
                        pods.append(iperf(pa.name, pb.name, pb.ip, seconds, extra))
                        bar.advance(detail=f"{backend} {mode} {repeat + 1}/{repeats}: pods")
                    u, p = statistics.median(underlay), statistics.median(pods)
                    results[mode] = {"underlay_bps": u, "pod_bps": p, "ratio": p / u}
        finally:
            cluster.close()
    return results


RESYNC_PERIOD = 5.0  # the agent's default --iptables-resync, which the scale part leaves as it is
# strace names the types only for a socket it can identify, which it cannot inside another
# namespace: RTM_NEWROUTE 0x18, RTM_DELROUTE 0x19, RTM_NEWNEIGH 0x1c, RTM_DELNEIGH 0x1d.
_WRITE = re.compile(r"nlmsg_type=(RTM_(NEW|DEL)(ROUTE|NEIGH)\b|0x1[89cd]\b)")


def idle_writes(pid: int, window: float) -> tuple[int, int]:
    """Route/neighbour/FDB netlink requests ``pid`` (all its threads) sends in ``window`` s, and in how many bursts.

    A burst is writes less than a second apart: one resync's, or one event's.
    """
    with tempfile.NamedTemporaryFile("r", prefix="fabric-bench-strace-") as trace:
        tracer = subprocess.Popen(
            ["strace", "-f", "-qq", "-ttt", "-e", "trace=sendto,sendmsg", "-o", trace.name, "-p", str(pid)],
            stderr=subprocess.DEVNULL,
        )
        time.sleep(window)
        tracer.send_signal(signal.SIGINT)
        tracer.wait(timeout=30)
        times = [float(line.split()[1]) for line in trace for _ in _WRITE.findall(line)]
    bursts = sum(1 for before, after in zip([-10.0, *times], times, strict=False) if after - before > 1.0)
    return len(times), bursts


def scale(work: Path, pycni_bin: str, plugin_dir: str, count: int, window: float, bar: Progress) -> dict[str, Any]:
    """Steps of ``bar``: each node made, then each node that routes to every other one."""
    with netns_pool("scale") as pool:
        cluster = Cluster(pool, work / "scale", pycni_bin, plugin_dir, f"http://{UNDERLAY_GATEWAY}:2379")
        (work / "scale").mkdir(exist_ok=True)
        try:
            with etcd_server(host=UNDERLAY_GATEWAY, netns=cluster.underlay) as etcd:
                etcd.etcdctl(
                    "put",
                    "/coreos.com/network/config",
                    json.dumps({"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan"}}),
                )
                nodes: list[Node] = []
                for index in range(count):
                    nodes.append(cluster.add_node(start_agent=False))
                    bar.advance(detail=f"node {index + 1}/{count} made")
                started = time.monotonic()
                procs = [
                    subprocess.Popen(
                        cluster.agent_argv(node),  # the default 5-s resync, as a real node runs
                        stdout=subprocess.DEVNULL,
                        stderr=node.log.open("ab"),
                        start_new_session=True,
                    )
                    for node in nodes
                ]
                for node, proc in zip(nodes, procs, strict=True):
                    node.agent = proc
                want = count - 1
                leased = None
                while True:
                    if leased is None and all(node.subnet_file.exists() for node in nodes):
                        leased = time.monotonic() - started
                    counts = [
                        sum(
                            1
                            for line in run(
                                "ip", "route", "show", "dev", "flannel.1", netns=n.name, check=False
                            ).stdout.splitlines()
                            if "onlink" in line
                        )
                        for n in nodes
                    ]
                    meshed = sum(c == want for c in counts)
                    bar.advance(max(0, count + meshed - bar.count), detail=f"{meshed}/{count} nodes route to all")
                    if meshed == count:
                        converged = time.monotonic() - started
                        break
                    if time.monotonic() - started > 300:
                        raise RuntimeError(f"not converged after 300 s: {counts}")
                    time.sleep(0.2)
                bar.advance(
                    0, detail=f"converged; counting node 1's idle writes for {2 * RESYNC_PERIOD + window:.0f} s"
                )
                time.sleep(2 * RESYNC_PERIOD)  # past the join: what follows is the steady state
                assert nodes[0].agent is not None
                writes, bursts = idle_writes(nodes[0].agent.pid, window)
        finally:
            cluster.close()
    return {
        "nodes": count,
        "leased_s": leased if leased is not None else converged,
        "converged_s": converged,
        "idle_window_s": window,
        "idle_writes": writes,
        "idle_bursts": bursts,
        "writes_per_burst": writes / bursts if bursts else 0.0,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=30)
    parser.add_argument("--seconds", type=int, default=5, help="length of one iperf3 run")
    parser.add_argument("--repeats", type=int, default=3, help="runs per mode; the median is reported")
    parser.add_argument("--part", choices=("all", "throughput", "scale"), default="all")
    parser.add_argument("--window", type=float, default=20.0, help="seconds of idle writes counted after the join")
    parser.add_argument("--json", help="also write the numbers to this file")
    opts = parser.parse_args()
    if os.geteuid() != 0:
        print("fabric_bench: run as root", file=sys.stderr)
        return 1
    work = Path(tempfile.mkdtemp(prefix="pycni-fabric-bench-"))
    plugin_dir = str(work / "bin")
    install(plugin_dir)
    pycni_bin = str(Path(sys.executable).with_name("pycni"))
    data: dict[str, Any] = {}
    try:
        if opts.part in ("all", "throughput"):
            backends = ("vxlan", "host-gw")
            runs = len(backends) * len(MODES) * opts.repeats * 2
            with progress("fabric_bench throughput", total=runs, unit="iperf3", lines=10) as bar:
                for backend in backends:
                    data[backend] = throughput(work, pycni_bin, plugin_dir, backend, opts.seconds, opts.repeats, bar)
        if opts.part in ("all", "scale"):
            with progress(
                f"fabric_bench scale ({opts.nodes} nodes)", total=2 * opts.nodes, unit="step", lines=10
            ) as bar:
                data["scale"] = scale(work, pycni_bin, plugin_dir, opts.nodes, opts.window, bar)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for backend in ("vxlan", "host-gw"):
        for mode, t in data.get(backend, {}).items():
            pod, underlay = t["pod_bps"] / 1e9, t["underlay_bps"] / 1e9
            print(
                f"{backend:8} {mode:10} pod-to-pod {pod:6.2f} Gbit/s  node-to-node {underlay:6.2f} Gbit/s"
                f"  ratio {t['ratio']:.2f}"
            )
    if "scale" in data:
        nodes, leased, converged = (data["scale"][k] for k in ("nodes", "leased_s", "converged_s"))
        print(
            f"scale: {nodes} agents started at once; every node leased a subnet after {leased:.1f} s,"
            f" every node routes to every other after {converged:.1f} s"
        )
        idle = data["scale"]
        print(
            f"idle: node 1's agent sent {idle['idle_writes']} route/neighbour/FDB writes in"
            f" {idle['idle_window_s']:.0f} s ({idle['idle_bursts']} bursts of {idle['writes_per_burst']:.1f};"
            f" resync every {RESYNC_PERIOD:.0f} s, {nodes - 1} peers)"
        )
    if opts.json:
        Path(opts.json).write_text(json.dumps(data, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
