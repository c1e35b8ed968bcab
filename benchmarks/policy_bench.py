"""Network policy at scale: 1000 workload endpoints, 200 policies, one real node enforcing them.

    sudo .venv/bin/python benchmarks/policy_bench.py [--endpoints 1000] [--policies 200] [--updates 40]
                                                     [--seconds 5] [--json FILE]

A real etcd (in a namespace) and one ``pycni calico-node`` (VXLAN backend,
the seed's Installation, metrics on a unix socket) with four real pods made
by the ``calico`` plugin in namespace ``bench``; the rest of the cluster
exists only in the datastore, as on a node of a big cluster: ``--endpoints``
WorkloadEndpoints with their Pods over 20 namespaces and 50 other nodes,
written straight to the store as ``calicoctl apply`` stores them. Then
``--policies`` policies: Kubernetes NetworkPolicies over the datastore-only
pods (selectors, namespace selectors, ports), Calico NetworkPolicies with
selector expressions, and GlobalNetworkPolicies on ``all()`` (so every local
pod's chains carry them), plus a default deny and an iperf3 allow in ``bench``.

Measured:

1. apply to enforced: ``--updates`` times, a policy letting the client pod
   into the server pod on 8080 is applied, then deleted, with the real
   ``calicoctl`` code (in-process in a helper in etcd's namespace, so an
   interpreter start is not counted); the time from the command to the first
   probe that sees the change (allow: a connect succeeds, polled each 2 ms;
   deny: a connect is dropped, probes of 50 ms); p50/p99. Each update's
   transaction size (operations) and the agent's own update time, from its
   metrics (``pycni_policy_transaction_operations``,
   ``pycni_policy_update_duration_seconds``).
2. a relabel of a datastore-only pod on another node: its transaction size and
   the agent's update time (nothing local to probe).
3. the table's chains, rules, sets and elements (``pycni_policy_objects``), and
   the agent's RSS before the cluster is written and after.
4. iperf3 between two local pods, TCP, with no policy and then with all the
   policies in force (the server pod selected by the default deny, the allow
   and every global policy); medians of two runs each.

Results as Markdown (for BENCHMARKS.md) and JSON (--json); progress on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.calico_cluster import ETCD_IP, CalicoCluster, Node, Pod
from tests.support.calicoctl_applier import Applier
from tests.support.etcd import etcd_server
from tests.support.measure import iperf, rss_kib
from tests.support.metrics import Samples, scrape_unix, value
from tests.support.netns import NetnsPool, netns_pool
from tests.support.netpol_probe import Cell, Servers, probe
from tests.support.progress import progress

from pycni.cli.install import install

NAMESPACES = 20
OTHER_NODES = 50
APPS = 50
TIERS = ("web", "db", "cache")
BENCH = "bench"
TOGGLE_PORT = 8080
DENY_PROBE = 0.05  # a dropped connect is a silence: each deny probe waits this long

# -- the cluster in the datastore -------------------------------------------------------


def namespace(name: str, labels: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}


def pod(ns: str, name: str, labels: dict[str, str], node: str) -> dict[str, Any]:
    ports = [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    spec = {"nodeName": node, "containers": [{"name": "c", "ports": ports}]}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "spec": spec,
    }


def endpoint(ns: str, name: str, node: str, ip: str) -> dict[str, Any]:
    spec = {
        "orchestrator": "k8s",
        "node": node,
        "pod": name,
        "endpoint": "eth0",
        "interfaceName": "cali" + f"{abs(hash((ns, name))):x}"[:11],
        "ipNetworks": [f"{ip}/32"],
        "profiles": [f"kns.{ns}"],
    }
    return {
        "apiVersion": "projectcalico.org/v3",
        "kind": "WorkloadEndpoint",
        "metadata": {"name": "", "namespace": ns},  # the name follows from the spec
        "spec": spec,
    }


def namespace_labels(index: int) -> dict[str, str]:
    return {"team": f"team-{index % 5}", "env": "prod" if index % 2 else "dev"}


def datastore_only(count: int) -> list[dict[str, Any]]:
    """Namespaces, and ``count`` Pods with their WorkloadEndpoints on other nodes (10.96.0.0/16, no route)."""
    documents = [
        namespace(f"ns-{i}", {"team": f"team-{i % 5}", "env": "prod" if i % 2 else "dev"}) for i in range(NAMESPACES)
    ]
    for i in range(count):
        ns, name, node = f"ns-{i % NAMESPACES}", f"pod-{i}", f"other-{i % OTHER_NODES}"
        labels = {"app": f"app-{i % APPS}", "tier": TIERS[i % len(TIERS)]}
        ip = f"10.96.{i // 250}.{i % 250 + 2}"
        documents += [pod(ns, name, labels, node), endpoint(ns, name, node, ip)]
    return documents


def policies(count: int) -> list[dict[str, Any]]:
    """``count`` policies: half Kubernetes, a quarter Calico namespaced, a quarter global on all()."""
    out: list[dict[str, Any]] = []
    for i in range(count):
        ns = f"ns-{i % NAMESPACES}"
        kind = i % 4
        if kind in (0, 1):
            peer: dict[str, Any] = {"podSelector": {"matchLabels": {"tier": TIERS[i % 3]}}}
            if kind == 1:
                peer["namespaceSelector"] = {"matchLabels": {"team": f"team-{i % 5}"}}
            spec = {
                "podSelector": {"matchLabels": {"app": f"app-{i % APPS}"}},
                "ingress": [{"from": [peer], "ports": [{"port": 1000 + i, "protocol": "TCP"}]}],
            }
            out.append(
                {
                    "apiVersion": "networking.k8s.io/v1",
                    "kind": "NetworkPolicy",
                    "metadata": {"name": f"k8s-{i}", "namespace": ns},
                    "spec": spec,
                }
            )
        elif kind == 2:
            rule = {
                "action": "Allow",
                "protocol": "TCP",
                "source": {"selector": f"tier in {{'{TIERS[i % 3]}', 'web'}} && app != 'app-{i % APPS}'"},
                "destination": {"ports": [f"{2000 + i}:{2010 + i}"]},
            }
            spec = {"order": 100 + i, "selector": f"app == 'app-{i % APPS}'", "ingress": [rule], "types": ["Ingress"]}
            meta = {"name": f"calico-{i}", "namespace": ns}
            out.append({"apiVersion": "projectcalico.org/v3", "kind": "NetworkPolicy", "metadata": meta, "spec": spec})
        else:
            rule = {
                "action": "Allow",
                "protocol": "TCP",
                "source": {"namespaceSelector": f"team == 'team-{i % 5}'", "selector": f"tier == '{TIERS[i % 3]}'"},
                "destination": {"ports": [3000 + i]},
            }
            spec = {"order": 500 + i, "selector": "all()", "ingress": [rule], "types": ["Ingress"]}
            meta = {"name": f"global-{i}"}
            out.append(
                {"apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkPolicy", "metadata": meta, "spec": spec}
            )
    return out


def bench_policies() -> list[dict[str, Any]]:
    """In ``bench``: ingress denied to every pod, iperf3 allowed from its client (the toggle comes and goes)."""
    deny = {"podSelector": {}, "policyTypes": ["Ingress"]}
    iperf = {
        "podSelector": {"matchLabels": {"app": "iperf-server"}},
        "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "iperf-client"}}}], "ports": [{"port": 5201}]}],
    }
    return [
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": n, "namespace": BENCH},
            "spec": s,
        }
        for n, s in (("default-deny", deny), ("iperf", iperf))
    ]


TOGGLE = {
    "apiVersion": "networking.k8s.io/v1",
    "kind": "NetworkPolicy",
    "metadata": {"name": "toggle", "namespace": BENCH},
    "spec": {
        "podSelector": {"matchLabels": {"app": "server"}},
        "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "client"}}}], "ports": [{"port": TOGGLE_PORT}]}],
    },
}


# -- measuring ---------------------------------------------------------------------------


class Metrics:
    def __init__(self, socket_path: Path) -> None:
        self.path = str(socket_path)

    def scrape(self) -> Samples:
        return scrape_unix(self.path)

    def get(self, found: Samples, name: str, **labels: str) -> float:
        got = value(found, name, **labels)
        return float(got or 0.0)


def agent_rss_kib(node: Node) -> int:
    assert node.agent is not None
    return rss_kib(node.agent.pid)


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def until(check: Any, within: float = 30.0) -> float:
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > within:
            raise AssertionError(f"the change was not enforced within {within} s")
    return time.monotonic() - start


@contextmanager
def cluster_on_one_node(work: Path, pycni: str, plugins: str) -> Iterator[tuple[CalicoCluster, Node, Metrics]]:
    with netns_pool("pbench") as pool:
        cluster = CalicoCluster(pool, work, pycni, plugins, agent_args=("--backend", "vxlan"))
        try:
            with etcd_server(host=ETCD_IP, netns=cluster.underlay):
                socket_path = work / "node1" / "metrics.sock"
                node = cluster.add_node(1, extra=("--metrics-addr", f"unix:{socket_path}"))
                yield cluster, node, Metrics(socket_path)
        finally:
            cluster.close()


def measure(args: argparse.Namespace, work: Path, pycni: str, plugins: str) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with cluster_on_one_node(work, pycni, plugins) as (cluster, node, metrics):
        applier = Applier(cluster)
        try:
            results["rss_kib_empty"] = agent_rss_kib(node)
            local = {"server": {"app": "server"}, "client": {"role": "client"}}
            local |= {"iperf-server": {"app": "iperf-server"}, "iperf-client": {"role": "iperf-client"}}
            applier(
                "put", [namespace(BENCH, {}), *(pod(BENCH, n, labels, node.nodename) for n, labels in local.items())]
            )
            pods: dict[str, Pod] = {name: cluster.add_pod(node, k8s=(BENCH, name), serve=False) for name in local}
            paths = {name: NetnsPool.path(p.name) for name, p in pods.items()}

            seconds = args.seconds
            results["iperf_no_policy_bps"] = statistics.median(
                iperf(pods["iperf-client"].name, pods["iperf-server"].name, pods["iperf-server"].ip, seconds)
                for _ in range(2)
            )

            documents = datastore_only(args.endpoints)
            with progress("policy bench: the datastore-only cluster", total=len(documents) // 100 + 1) as bar:
                for start in range(0, len(documents), 100):
                    applier("put", documents[start : start + 100])
                    bar.advance()
            written = policies(args.policies) + bench_policies()
            before_bulk = metrics.scrape()
            started = time.monotonic()
            applier("apply", written)  # through calicoctl: its validation and defaults
            write_seconds = time.monotonic() - started
            cell = Cell("client", "iperf-server", pods["iperf-server"].ip, 5201, "TCP")
            time.sleep(0.5)
            until(lambda: _settled(metrics), within=120)
            after_bulk = metrics.scrape()
            results["bulk"] = {
                "documents": len(documents),
                "policies": len(written),
                "write_seconds": round(write_seconds, 2),
                "agent_updates": metrics.get(after_bulk, "pycni_policy_update_duration_seconds_count")
                - metrics.get(before_bulk, "pycni_policy_update_duration_seconds_count"),
            }
            assert not probe([cell], paths, DENY_PROBE)[cell], "the default deny keeps the client out of iperf"
            found = metrics.scrape()
            results["table"] = {
                kind: metrics.get(found, "pycni_policy_objects", kind=kind)
                for kind in ("endpoint", "chain", "rule", "set", "element")
            }
            results["rss_kib_loaded"] = agent_rss_kib(node)
            results["update_seconds_mean_bulk"] = _mean_update(before_bulk, after_bulk, metrics)

            servers = Servers([paths["server"]], [TOGGLE_PORT])
            try:
                results["updates"] = toggles(args.updates, applier, metrics, paths, pods["server"].ip)
            finally:
                servers.close()
            results["relabel_elsewhere"] = relabel_elsewhere(applier, metrics)

            results["iperf_policies_bps"] = statistics.median(
                iperf(pods["iperf-client"].name, pods["iperf-server"].name, pods["iperf-server"].ip, seconds)
                for _ in range(2)
            )
        finally:
            applier.close()
    return results


def _settled(metrics: Metrics, quiet: float = 1.0) -> bool:
    """The agent wrote nothing for ``quiet`` seconds."""
    first = metrics.get(metrics.scrape(), "pycni_policy_update_duration_seconds_count")
    time.sleep(quiet)
    return metrics.get(metrics.scrape(), "pycni_policy_update_duration_seconds_count") == first


def _mean_update(before: Samples, after: Samples, metrics: Metrics) -> float:
    count = metrics.get(after, "pycni_policy_update_duration_seconds_count") - metrics.get(
        before, "pycni_policy_update_duration_seconds_count"
    )
    total = metrics.get(after, "pycni_policy_update_duration_seconds_sum") - metrics.get(
        before, "pycni_policy_update_duration_seconds_sum"
    )
    return round(total / count, 4) if count else 0.0


def toggles(count: int, applier: Applier, metrics: Metrics, paths: dict[str, str], server_ip: str) -> dict[str, Any]:
    cell = Cell("client", "server", server_ip, TOGGLE_PORT, "TCP")
    allow, deny, operations, agent = [], [], [], []
    with progress("policy bench: apply to enforced", total=count, unit="update") as bar:
        for _ in range(count):
            for op, latencies, wanted in (("apply", allow, True), ("delete", deny, False)):
                before = metrics.scrape()
                started = time.monotonic()
                applier.send(op, [TOGGLE])
                timeout = 0.002 if wanted else DENY_PROBE
                while probe([cell], paths, timeout)[cell] != wanted:
                    if time.monotonic() - started > 30:
                        raise AssertionError(f"{op} of the toggle not enforced within 30 s")
                latencies.append(time.monotonic() - started)
                applier.wait()
                time.sleep(0.2)  # the transaction is in; let the metrics catch up
                after = metrics.scrape()
                written = metrics.get(after, "pycni_policy_transaction_operations_count") - metrics.get(
                    before, "pycni_policy_transaction_operations_count"
                )
                ops = metrics.get(after, "pycni_policy_transaction_operations_sum") - metrics.get(
                    before, "pycni_policy_transaction_operations_sum"
                )
                operations.append(ops / written if written else 0.0)
                agent.append(_mean_update(before, after, metrics))
            bar.advance()
    return {
        "count": count,
        "allow_p50_s": round(percentile(allow, 0.5), 4),
        "allow_p99_s": round(percentile(allow, 0.99), 4),
        "deny_p50_s": round(percentile(deny, 0.5), 4),
        "deny_p99_s": round(percentile(deny, 0.99), 4),
        "operations_median": statistics.median(operations),
        "operations_max": max(operations),
        "agent_update_p50_s": round(percentile(agent, 0.5), 4),
        "agent_update_p99_s": round(percentile(agent, 0.99), 4),
    }


def relabel_elsewhere(applier: Applier, metrics: Metrics) -> dict[str, Any]:
    before = metrics.scrape()
    applier("apply", [pod("ns-1", "pod-1", {"app": "app-1", "tier": "cache"}, "other-1")])  # db -> cache: sets change
    until(lambda: _settled(metrics))
    after = metrics.scrape()
    written = metrics.get(after, "pycni_policy_transactions_total") - metrics.get(
        before, "pycni_policy_transactions_total"
    )
    ops = metrics.get(after, "pycni_policy_transaction_operations_sum") - metrics.get(
        before, "pycni_policy_transaction_operations_sum"
    )
    return {"transactions": written, "operations": ops, "agent_update_s": _mean_update(before, after, metrics)}


def markdown(args: argparse.Namespace, results: dict[str, Any]) -> str:
    updates, table, bulk = results["updates"], results["table"], results["bulk"]
    relabel = results["relabel_elsewhere"]

    def ms(seconds: float) -> str:
        return f"{seconds * 1000:.0f} ms"

    def gbps(bps: float) -> str:
        return f"{bps / 1e9:.2f}"

    rows = [
        (
            f"apply → enforced, allow (p50 / p99, {updates['count']} updates)",
            f"{ms(updates['allow_p50_s'])} / {ms(updates['allow_p99_s'])}",
        ),
        (
            f"delete → enforced, deny (p50 / p99; probes of {ms(DENY_PROBE)})",
            f"{ms(updates['deny_p50_s'])} / {ms(updates['deny_p99_s'])}",
        ),
        (
            "agent's update (rebuild, render, diff, apply; p50 / p99)",
            f"{ms(updates['agent_update_p50_s'])} / {ms(updates['agent_update_p99_s'])}",
        ),
        (
            "operations per update transaction (median / max)",
            f"{updates['operations_median']:.0f} / {updates['operations_max']:.0f}",
        ),
        (
            "relabel of a pod on another node: transactions, operations, agent time",
            f"{relabel['transactions']:.0f}, {relabel['operations']:.0f}, {ms(relabel['agent_update_s'])}",
        ),
        (
            "table: local endpoints, chains, rules, sets, elements",
            ", ".join(f"{table[k]:.0f}" for k in ("endpoint", "chain", "rule", "set", "element")),
        ),
        (
            "agent RSS empty → loaded",
            f"{results['rss_kib_empty'] / 1024:.0f} MiB → {results['rss_kib_loaded'] / 1024:.0f} MiB",
        ),
        (
            f"iperf3 pod to pod, no policy / {bulk['policies']} policies (Gbit/s)",
            f"{gbps(results['iperf_no_policy_bps'])} / {gbps(results['iperf_policies_bps'])}",
        ),
    ]
    lines = [
        f"Policy at scale ({platform.node()}, {os.cpu_count()} CPUs): {args.endpoints} workload endpoints "
        f"({args.endpoints} datastore-only + 4 real), {bulk['policies']} policies, one node enforcing.",
        "",
        "| measure | value |",
        "|---|---|",
        *(f"| {label} | {cell} |" for label, cell in rows),
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--endpoints", type=int, default=1000)
    parser.add_argument("--policies", type=int, default=200)
    parser.add_argument("--updates", type=int, default=40)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--json", default="")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("policy_bench: run as root (namespaces, nftables)", file=sys.stderr)
        return 1
    pycni = shutil.which("pycni", path=os.path.dirname(sys.executable))
    assert pycni, "pycni is not installed in this interpreter's environment"
    with tempfile.TemporaryDirectory(prefix="policy-bench-") as work:
        plugins = os.path.join(work, "bin")
        os.makedirs(plugins)
        install(plugins)
        results = measure(args, Path(work), pycni, plugins)
    print(markdown(args, results))
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
