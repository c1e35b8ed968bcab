"""pycni against the Go reference plugins, side by side in one run.

    sudo .venv/bin/python benchmarks/cni_bench.py [--runs 30] [--concurrent 100] [--cycles 1000]

Everything runs in namespaces this script makes (a node and its containers)
and removes. The same driver executes both plugin sets exactly as a runtime
does (pycni's libcni equivalent, one process per plugin call), so the
numbers compare the plugins, not the runtimes:

1. ADD+DEL latency of the seed's Case 1 (bridge + host-local + ipMasq) and
   Case 2 (bridge + host-local + portmap): pycni warm (daemon running), pycni
   cold (no daemon) and Go, interleaved run by run; medians and ratios.
2. N concurrent ADDs on one node, then N concurrent DELs: wall time, errors,
   distinct addresses, for pycni warm and Go.
3. The daemon's RSS idle and after M ADD/DEL cycles.

Results are printed as Markdown (for BENCHMARKS.md) and as JSON (--json);
progress (a bar on a terminal, a few lines otherwise) goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.progress import progress

from pycni.cli.install import install
from pycni.net.netns import entered
from pycni.runtime import CNIRuntime, RuntimeConf
from pycni.spec import CNIError, NetworkConfigList

GO_DIR = "/usr/lib/cni"


def seed_bridge(bridge: str, subnet: str, data_dir: str, **ipam: str) -> dict[str, Any]:
    """The seed's bridge settings (both cases), with this run's own bridge, subnet and dataDir."""
    return {
        "type": "bridge",
        "bridge": bridge,
        "isDefaultGateway": True,
        "forceAddress": False,
        "ipMasq": True,
        "hairpinMode": True,
        "ipam": {"type": "host-local", "subnet": subnet, **ipam, "dataDir": data_dir},
    }


def case1(name: str, bridge: str, subnet: str, data_dir: str) -> dict[str, Any]:
    """The seed's Case 1 (bridge.json) as a one-plugin list."""
    return {"cniVersion": "0.4.0", "name": name, "plugins": [seed_bridge(bridge, subnet, data_dir)]}


def case2(name: str, bridge: str, subnet: str, data_dir: str) -> dict[str, Any]:
    """The seed's Case 2 (portmap.conflist): bridge + portmap with hostPort 8080 -> 80."""
    return {
        "cniVersion": "0.4.0",
        "name": name,
        "plugins": [
            seed_bridge(bridge, subnet, data_dir, gateway=subnet.replace("0.0/16", "0.1")),
            {
                "type": "portmap",
                "runtimeConfig": {"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]},
            },
        ],
    }


def _resident_ports(conf: dict[str, Any], index: int) -> dict[str, Any]:
    """The same network for a resident pod, with host ports of its own (8080 is the measured pod's)."""
    resident = json.loads(json.dumps(conf))
    for plugin in resident["plugins"]:
        for mapping in plugin.get("runtimeConfig", {}).get("portMappings", []):
            mapping["hostPort"] = 18080 + index
    return resident


def sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True)


class Bench:
    def __init__(self, work: Path) -> None:
        self.work = work
        self.tag = uuid.uuid4().hex[:6]
        self.node = f"bench-node-{self.tag}"
        self.namespaces: list[str] = []
        self.pycni_dir = str(work / "bin")
        install(self.pycni_dir)
        self.socket = str(work / "run" / "pycni.sock")
        self.daemon: subprocess.Popen[bytes] | None = None
        sh("ip", "netns", "add", self.node)
        sh("ip", "-n", self.node, "link", "set", "lo", "up")

    # -- namespaces and the daemon --------------------------------------------

    def container(self) -> str:
        name = f"bench-c-{self.tag}-{len(self.namespaces)}"
        sh("ip", "netns", "add", name)
        self.namespaces.append(name)
        return f"/run/netns/{name}"

    def start_daemon(self) -> int:
        self.daemon = subprocess.Popen(
            [sys.executable, "-m", "pycni.cli.main", "daemon", "--socket", self.socket], stderr=subprocess.DEVNULL
        )
        for _ in range(100):
            if os.path.exists(self.socket):
                return self.daemon.pid
            time.sleep(0.05)
        raise RuntimeError("the pycni daemon did not start")

    def daemon_rss_kib(self) -> int:
        """RSS of the daemon and its worker processes together."""
        assert self.daemon is not None
        pids = [self.daemon.pid]
        with open(f"/proc/{self.daemon.pid}/task/{self.daemon.pid}/children") as handle:
            pids += [int(p) for p in handle.read().split()]
        total = 0
        for pid in pids:
            with open(f"/proc/{pid}/status") as handle:
                total += next(int(line.split()[1]) for line in handle if line.startswith("VmRSS:"))
        return total

    def close(self) -> None:
        if self.daemon is not None:
            self.daemon.terminate()
            self.daemon.wait(timeout=10)
        for name in [*self.namespaces, self.node]:
            subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)
        shutil.rmtree(self.work, ignore_errors=True)

    # -- runtimes for the three plugin sets -------------------------------------

    def runtime(self, mode: str) -> CNIRuntime:
        path = [GO_DIR] if mode == "go" else [self.pycni_dir]
        runtime = CNIRuntime(path, cache_dir=str(self.work / f"cache-{mode}"))
        return runtime

    @contextmanager
    def mode_env(self, mode: str) -> Iterator[None]:
        saved = {k: os.environ.get(k) for k in ("PYCNI_SOCKET", "PYCNI_NO_DAEMON")}
        os.environ["PYCNI_SOCKET"] = self.socket
        if mode == "pycni-cold":
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


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000


def add_del(runtime: CNIRuntime, network: NetworkConfigList, rt: RuntimeConf) -> float:
    """Milliseconds for one ADD and its DEL."""
    start = time.perf_counter()
    runtime.add(network, rt)
    runtime.delete(network, rt)
    return (time.perf_counter() - start) * 1000


def latency(bench: Bench, runs: int, modes: list[str]) -> dict[str, dict[str, float]]:
    """Median ADD+DEL milliseconds per (case, mode), runs interleaved across modes."""
    results: dict[str, dict[str, list[float]]] = {}
    cases = (("case1", case1), ("case2", case2))
    with progress("cni_bench latency", total=len(cases) * (runs + 2) * len(modes), unit="run", lines=10) as bar:
        for case_name, make in cases:
            networks, resident_networks = {}, {}
            for index, mode in enumerate(modes):
                subnet = f"10.{100 + index}.0.0/16"
                data_dir = str(bench.work / f"ipam-{case_name}-{mode}")
                conf = make(f"{case_name}-{mode}", f"bn{index}{case_name[-1]}", subnet, data_dir)
                networks[mode] = NetworkConfigList.from_bytes(json.dumps(conf).encode())
                resident_networks[mode] = NetworkConfigList.from_bytes(
                    json.dumps(_resident_ports(conf, index)).encode()
                )
            netns = bench.container()
            # A pod that stays on each network, as on a real node: the measured pod is never the
            # network's last, so what is timed is the steady state (pycni's shared ipMasq rule is
            # already there, as the Go plugins' table is), not the first pod's set-up or last's reap.
            residents = {mode: RuntimeConf(f"bench-resident-{mode}", bench.container(), "eth0") for mode in modes}
            for mode, rt in residents.items():
                with bench.mode_env(mode):
                    bench.runtime(mode).add(resident_networks[mode], rt)
            samples: dict[str, list[float]] = {mode: [] for mode in modes}
            for run in range(runs + 2):  # two warm-up rounds, not counted
                for mode in modes:
                    runtime = bench.runtime(mode)
                    rt = RuntimeConf(f"bench-{mode}-{run}", netns, "eth0")
                    with bench.mode_env(mode):
                        elapsed = add_del(runtime, networks[mode], rt)
                    if run >= 2:
                        samples[mode].append(elapsed)
                    bar.advance(detail=f"{case_name} run {run + 1}/{runs + 2}: {mode} {elapsed:.0f} ms")
            for mode, rt in residents.items():
                with bench.mode_env(mode):
                    bench.runtime(mode).delete(resident_networks[mode], rt)
            results[case_name] = samples
    return {case: {mode: statistics.median(v) for mode, v in per.items()} for case, per in results.items()}


def concurrent(bench: Bench, count: int, mode: str) -> dict[str, Any]:
    conf = case1(f"conc-{mode}", "bnc" + mode[:2], "10.120.0.0/16" if mode == "go" else "10.121.0.0/16", "")
    conf["plugins"][0]["ipam"]["dataDir"] = str(bench.work / f"ipam-conc-{mode}")
    network = NetworkConfigList.from_bytes(json.dumps(conf).encode())
    runtime = bench.runtime(mode)
    attachments = [RuntimeConf(f"conc-{mode}-{i}", bench.container(), "eth0") for i in range(count)]
    errors: list[str] = []
    addresses: set[str] = set()

    def add(rt: RuntimeConf) -> None:
        try:
            result = runtime.add(network, rt)
            addresses.add(str(result.ips[0].address))
        except CNIError as error:
            errors.append(str(error))

    def delete(rt: RuntimeConf) -> None:
        try:
            runtime.delete(network, rt)
        except CNIError as error:
            errors.append(str(error))

    with bench.mode_env(mode), ThreadPoolExecutor(max_workers=count) as pool:
        add_ms = timed(lambda: list(pool.map(add, attachments)))
        del_ms = timed(lambda: list(pool.map(delete, attachments)))
    return {
        "add_wall_ms": add_ms,
        "del_wall_ms": del_ms,
        "errors": len(errors),
        "first_error": errors[0] if errors else "",
        "distinct_addresses": len(addresses),
    }


def memory(bench: Bench, cycles: int) -> dict[str, int]:
    conf = case1("memnet", "bnmem", "10.122.0.0/16", str(bench.work / "ipam-mem"))
    network = NetworkConfigList.from_bytes(json.dumps(conf).encode())
    runtime = bench.runtime("pycni-warm")
    netns = bench.container()
    settle = 20  # let caches and arenas settle before the baseline
    with (
        bench.mode_env("pycni-warm"),
        progress("cni_bench memory", total=settle + cycles, unit="cycle", lines=10) as bar,
    ):
        for i in range(settle):
            rt = RuntimeConf(f"mem-warm-{i}", netns, "eth0")
            runtime.add(network, rt)
            runtime.delete(network, rt)
            bar.advance(detail="settling before the baseline")
        idle = bench.daemon_rss_kib()
        for i in range(cycles):
            rt = RuntimeConf(f"mem-{i}", netns, "eth0")
            runtime.add(network, rt)
            runtime.delete(network, rt)
            bar.advance(detail=f"cycle {i + 1}/{cycles}")
    after = bench.daemon_rss_kib()
    return {"idle_kib": idle, "after_kib": after, "cycles": cycles, "growth_kib": after - idle}


def machine() -> str:
    cpu = "unknown CPU"
    with open("/proc/cpuinfo") as handle:
        for line in handle:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    go = subprocess.run([f"{GO_DIR}/bridge"], capture_output=True, text=True, check=False).stderr.splitlines()
    return (
        f"{os.cpu_count()} CPUs ({cpu}), Linux {platform.release()}, Python {platform.python_version()}, "
        f"Go plugins: Debian containernetworking-plugins ({go[1] if len(go) > 1 else 'unknown'})"
    )


def report(data: dict[str, Any]) -> str:
    lines = [
        f"Machine: {data['machine']}",
        "",
        "| case | pycni warm | pycni cold | Go | warm/Go | cold/Go |",
        "|---|---|---|---|---|---|",
    ]
    for case, label in (("case1", "Case 1: bridge + host-local + ipMasq"), ("case2", "Case 2: bridge + portmap")):
        med = data["latency"][case]
        lines.append(
            f"| {label} | {med['pycni-warm']:.1f} ms | {med['pycni-cold']:.1f} ms | {med['go']:.1f} ms "
            f"| {med['pycni-warm'] / med['go']:.2f} | {med['pycni-cold'] / med['go']:.2f} |"
        )
    lines += [
        "",
        f"| {data['concurrent_n']} concurrent | ADD wall | DEL wall | errors | distinct addresses |",
        "|---|---|---|---|---|",
    ]
    for mode in ("pycni-warm", "go"):
        c = data["concurrent"][mode]
        walls = f"{c['add_wall_ms']:.0f} ms | {c['del_wall_ms']:.0f} ms"
        lines.append(f"| {mode} | {walls} | {c['errors']} | {c['distinct_addresses']} |")
    m = data["memory"]
    lines += [
        "",
        f"Daemon RSS: {m['idle_kib'] / 1024:.1f} MiB idle, {m['after_kib'] / 1024:.1f} MiB after {m['cycles']} "
        f"ADD/DEL cycles (growth {m['growth_kib'] / 1024:.2f} MiB)",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=30, help="ADD+DEL runs per case and mode")
    parser.add_argument("--concurrent", type=int, default=100, help="containers added at once")
    parser.add_argument("--cycles", type=int, default=1000, help="ADD/DEL cycles for the memory check")
    parser.add_argument("--json", help="also write the raw numbers to this file")
    opts = parser.parse_args()
    if os.geteuid() != 0:
        print("cni_bench: run as root (it makes network namespaces)", file=sys.stderr)
        return 1
    bench = Bench(Path(tempfile.mkdtemp(prefix="pycni-bench-")))
    try:
        bench.start_daemon()
        with entered(f"/run/netns/{bench.node}"):
            data: dict[str, Any] = {"machine": machine(), "concurrent_n": opts.concurrent}
            data["latency"] = latency(bench, opts.runs, ["pycni-warm", "pycni-cold", "go"])
            data["concurrent"] = {}
            with progress("cni_bench concurrent", total=2, unit="mode") as bar:
                for mode in ("pycni-warm", "go"):
                    data["concurrent"][mode] = concurrent(bench, opts.concurrent, mode)
                    bar.advance(
                        detail=f"{mode}: {opts.concurrent} ADDs {data['concurrent'][mode]['add_wall_ms']:.0f} ms"
                    )
            data["memory"] = memory(bench, opts.cycles)
    finally:
        bench.close()
    print(report(data))
    if opts.json:
        Path(opts.json).write_text(json.dumps(data, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
