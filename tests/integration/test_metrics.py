"""Each long-running pycni process's metrics endpoint, scraped after real traffic and read with prometheus_client.

- ``pycni daemon --metrics-addr unix:PATH`` with two workers: calls of every
  verb, failing ones included, through the wire protocol and through a real
  plugin executable (the shim); every counter equals the calls made, every
  error its code from the reply; a worker killed outright keeps its counts in
  the totals; host-local's used/free follow ADD and DEL.
- ``pycni flanneld --metrics-addr 127.0.0.1:PORT`` in a node namespace, two
  nodes over etcd: the dataplane gauges equal what the kernel holds, lease
  renewals equal the writes etcd recorded for the lease, watch reconnects
  equal the lost watches the agent logged during an etcd outage.
- ``pycni calico-node --metrics-addr unix:PATH``, one node over etcd: routes
  and nft elements equal the kernel's, the block's used/free equal its
  allocations in etcd before and after a pod, reconnects and a fresh last
  sync across an etcd outage.
"""

from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pycni.dataplane import RTPROT_PYCNI
from tests.support.daemon import Daemon, call_direct
from tests.support.etcd import EtcdServer, etcd_server
from tests.support.fabric import UNDERLAY_GATEWAY, Cluster
from tests.support.metrics import Samples, scrape_tcp, scrape_unix, series, value
from tests.support.netns import NetnsPool, run

# -- pycni daemon ----------------------------------------------------------------------

SUBNET = "10.71.0.0/28"  # 14 host addresses, the gateway .1 excluded: 13 to hand out


def network(data_dir: Path) -> dict[str, Any]:
    return {
        "cniVersion": "1.1.0",
        "name": "metricsnet",
        "plugins": [
            {
                "type": "bridge",
                "bridge": "mbr0",
                "ipam": {"type": "host-local", "ranges": [[{"subnet": SUBNET}]], "dataDir": str(data_dir)},
            }
        ],
    }


def plugin_conf(data_dir: Path) -> dict[str, Any]:
    """What host-local receives when bridge delegates to it: bridge's config with the list's name and version."""
    conf = network(data_dir)
    return {**conf["plugins"][0], "cniVersion": conf["cniVersion"], "name": conf["name"]}


class Calls:
    """Calls to one daemon, with what each reply said: the expected counters."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.calls: Counter[tuple[str, str]] = Counter()
        self.errors: Counter[tuple[str, str, str]] = Counter()

    def record(self, plugin: str, verb: str, rc: int, out: bytes) -> int:
        self.calls[(plugin, verb)] += 1
        if rc != 0:
            code = json.loads(out)["code"]
            self.errors[(plugin, verb, str(code))] += 1
            return int(code)
        return 0

    def direct(self, plugin: str, verb: str, stdin: bytes, container: str = "ctr", **env: str) -> int:
        """One call over the wire protocol, labelled as the daemon must label it."""
        full_env = {
            "CNI_COMMAND": verb,
            "CNI_CONTAINERID": container,
            "CNI_IFNAME": "eth0",
            "CNI_NETNS": "/nonexistent",
            "CNI_PATH": "/nonexistent",
            **env,
        }
        rc, out, _ = call_direct(self.daemon.socket_path, plugin, full_env, stdin, "/proc/self/ns/net", None)
        known_verbs = {"ADD", "DEL", "CHECK", "GC", "STATUS", "VERSION"}
        label = plugin if plugin in ("host-local", "static") else "unknown"
        return self.record(label, verb if verb in known_verbs else "unknown", rc, out)

    def shim(self, executable: str, verb: str, stdin: bytes) -> int:
        """One call through a real plugin executable, which hands it to the daemon."""
        env = {
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            "CNI_COMMAND": verb,
            "CNI_CONTAINERID": "ctr-shim",
            "CNI_NETNS": "/nonexistent",
            "CNI_IFNAME": "eth0",
            "CNI_PATH": "/nonexistent",
            "PYCNI_SOCKET": str(self.daemon.socket_path),
            "PYCNI_DAEMON_WAIT": "30",
        }
        proc = subprocess.run([executable], input=stdin, env=env, capture_output=True, check=False, timeout=60)
        return self.record(os.path.basename(executable), verb, proc.returncode, proc.stdout)


def assert_counts_match(found: Samples, calls: Calls) -> None:
    def by(name: str) -> dict[tuple[tuple[str, str], ...], float]:
        return series(found, name)

    expected_calls = {(("plugin", p), ("verb", v)): float(n) for (p, v), n in calls.calls.items()}
    expected_errors = {(("code", c), ("plugin", p), ("verb", v)): float(n) for (p, v, c), n in calls.errors.items()}
    assert by("pycni_cni_calls_total") == expected_calls
    assert by("pycni_cni_call_errors_total") == expected_errors
    assert by("pycni_cni_call_duration_seconds_count") == expected_calls
    for (plugin, verb), n in calls.calls.items():
        assert value(found, "pycni_cni_call_duration_seconds_bucket", plugin=plugin, verb=verb, le="+Inf") == n


def counted(read: Callable[[], Samples], calls: Calls, within: float = 10) -> Samples:
    """A scrape whose counts match the calls made: a call is recorded just after its reply is sent."""
    deadline = time.monotonic() + within
    while True:
        found = read()
        try:
            assert_counts_match(found, calls)
            return found
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def workers_of(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as handle:
        return [int(p) for p in handle.read().split()]


@pytest.fixture
def metrics_daemon(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Daemon, Path, Path]]:
    """A daemon with metrics on a unix socket; its temporary directory and NETCONFPATH are the test's own."""
    conf_dir, scratch = tmp_path / "net.d", tmp_path / "tmp"
    conf_dir.mkdir()
    scratch.mkdir()
    (conf_dir / "10-metricsnet.conflist").write_text(json.dumps(network(tmp_path / "ipam")))
    monkeypatch.setenv("NETCONFPATH", str(conf_dir))
    monkeypatch.setenv("TMPDIR", str(scratch))  # where the multiprocess directory is made
    metrics_socket = tmp_path / "metrics.sock"
    daemon = Daemon(tmp_path / "run" / "pycni.sock", workers=2, extra_args=("--metrics-addr", f"unix:{metrics_socket}"))
    daemon.start()
    try:
        yield daemon, metrics_socket, scratch
    finally:
        daemon.kill()


def test_daemon_counters_equal_the_calls_made_with_their_error_codes(
    metrics_daemon: tuple[Daemon, Path, Path], tmp_path: Path, pycni_plugin_dir: str
) -> None:
    daemon, metrics_socket, scratch = metrics_daemon
    assert len(glob.glob(str(scratch / "pycni-metrics-*"))) == 1, "one multiprocess directory for this run"
    calls = Calls(daemon)
    conf = json.dumps(plugin_conf(tmp_path / "ipam")).encode()
    static = json.dumps(
        {"cniVersion": "1.0.0", "name": "st", "type": "static", "ipam": {"addresses": [{"address": "10.9.0.2/24"}]}}
    ).encode()

    for index in range(5):
        assert calls.direct("host-local", "ADD", conf, container=f"ctr{index}") == 0
    for index in (0, 1):
        assert calls.direct("host-local", "DEL", conf, container=f"ctr{index}") == 0
    assert calls.direct("host-local", "CHECK", conf, container="ctr2") == 0
    assert calls.direct("host-local", "STATUS", conf) == 0
    assert calls.direct("host-local", "VERSION", b"") == 0
    # Failing calls, each with the code the spec gives it:
    assert calls.direct("host-local", "ADD", conf, container="ctr2") != 0  # a second ADD of one attachment
    assert calls.direct("host-local", "ADD", b"{not json", container="bad") == 6
    assert calls.direct("host-local", "ADD", conf, container="bad", CNI_ARGS="IP=10.99.0.9") != 0
    assert calls.direct("host-local", "NOPE", conf) == 4
    assert calls.direct("no-such-plugin", "ADD", conf) == 999
    for _ in range(3):
        assert calls.shim(os.path.join(pycni_plugin_dir, "static"), "ADD", static) == 0
    assert calls.shim(os.path.join(pycni_plugin_dir, "static"), "ADD", b"{}") != 0
    assert len(calls.errors) >= 5, calls.errors

    found = counted(lambda: scrape_unix(str(metrics_socket)), calls)
    assert value(found, "pycni_ipam_addresses", network="metricsnet", range=SUBNET, state="used") == 3
    assert value(found, "pycni_ipam_addresses", network="metricsnet", range=SUBNET, state="free") == 10
    assert value(found, "pycni_cni_call_duration_seconds_sum", plugin="host-local", verb="ADD") > 0  # type: ignore[operator]

    # A worker killed outright: the supervisor replaces it, and its counts stay in the totals.
    victim = workers_of(daemon.pid)[0]
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while victim in workers_of(daemon.pid) or len(workers_of(daemon.pid)) < 2:
        assert time.monotonic() < deadline, "the supervisor did not replace the killed worker"
        time.sleep(0.1)
    counted(lambda: scrape_unix(str(metrics_socket)), calls)
    for index in (2, 3, 4):
        assert calls.direct("host-local", "DEL", conf, container=f"ctr{index}") == 0
    found = counted(lambda: scrape_unix(str(metrics_socket)), calls)
    assert value(found, "pycni_ipam_addresses", network="metricsnet", range=SUBNET, state="used") == 0

    daemon.stop()  # SIGTERM to all: the listener, its socket file and the multiprocess directory go
    assert not metrics_socket.exists()
    assert glob.glob(str(scratch / "pycni-metrics-*")) == []


def test_daemon_with_an_address_it_cannot_serve_stops_before_taking_its_socket(tmp_path: Path, python: str) -> None:
    socket_path = tmp_path / "run" / "pycni.sock"
    argv = [python, "-m", "pycni.cli.main", "daemon", "--socket", str(socket_path), "--workers", "1"]
    missing = subprocess.run(
        [*argv, "--metrics-addr", f"unix:{tmp_path}/missing/metrics.sock"],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert missing.returncode == 1
    assert "cannot serve metrics on unix:" in missing.stderr
    assert not socket_path.exists(), "the CNI socket is not taken"
    wildcard = subprocess.run([*argv, "--metrics-addr", "0.0.0.0:9100"], capture_output=True, text=True, check=False)
    assert wildcard.returncode == 2
    assert "every interface" in wildcard.stderr


# -- pycni flanneld ---------------------------------------------------------------------

FLANNEL_PORT = 9101


@pytest.fixture
def flannel(netns: NetnsPool, tmp_path: Path, pycni_bin: str, pycni_plugin_dir: str) -> Iterator[tuple[Cluster, Any]]:
    cluster = Cluster(netns, tmp_path, pycni_bin, pycni_plugin_dir, f"http://{UNDERLAY_GATEWAY}:2379")
    context = etcd_server(host=UNDERLAY_GATEWAY, netns=cluster.underlay)
    etcd = context.__enter__()
    try:
        etcd.etcdctl(
            "put", "/coreos.com/network/config", json.dumps({"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan"}})
        )
        yield cluster, etcd
    finally:
        try:
            cluster.close()
        finally:
            context.__exit__(None, None, None)


def kernel_objects(ns: str) -> dict[str, int]:
    """What the kernel of ``ns`` holds of pycni's: its routes, flannel.1's permanent neighbours and FDB remotes."""
    routes = json.loads(run("ip", "-j", "route", "show", "proto", str(RTPROT_PYCNI), netns=ns).stdout or "[]")
    neigh = json.loads(run("ip", "-j", "neigh", "show", "dev", "flannel.1", "nud", "permanent", netns=ns).stdout)
    fdb = json.loads(run("bridge", "-j", "fdb", "show", "dev", "flannel.1", netns=ns).stdout or "[]")
    return {"route": len(routes), "neighbour": len(neigh), "fdb": sum(1 for entry in fdb if "dst" in entry)}


def lease_version(etcd: EtcdServer, subnet: str) -> int:
    """How many times the lease key was written since it was created (etcd's per-key version)."""
    key = "/coreos.com/network/subnets/" + subnet.replace("/", "-")
    kvs = json.loads(etcd.etcdctl("get", key, "-w", "json").stdout)["kvs"]
    return int(kvs[0]["version"])


def resynced(read: Callable[[], Samples], within: float = 15) -> Samples:
    """A scrape after the agent's first periodic resync (every second here; the route may come sooner)."""
    deadline = time.monotonic() + within
    while (value(found := read(), "pycni_agent_resync_duration_seconds_count") or 0) < 1:
        assert time.monotonic() < deadline, "no periodic resync was recorded"
        time.sleep(0.2)
    return found


def stable(read: Callable[[], Samples], name: str, within: float = 30) -> Samples:
    """Scrape until ``name`` reads the same twice in a row, 0.5 s apart (nothing in flight)."""
    deadline = time.monotonic() + within
    last = read()
    while True:
        time.sleep(0.5)
        now = read()
        if value(now, name) == value(last, name):
            return now
        assert time.monotonic() < deadline, f"{name} kept changing"
        last = now


def test_flanneld_metrics_match_the_kernel_the_store_and_its_log(flannel: tuple[Cluster, EtcdServer]) -> None:
    cluster, etcd = flannel
    node = cluster.add_node(start_agent=False)
    # TTL 8 s: with a margin (60 min) over the TTL the agent renews at half of it, every 4 s.
    cluster.start_agent(
        node,
        "--metrics-addr",
        f"127.0.0.1:{FLANNEL_PORT}",
        "--subnet-lease-ttl",
        "8",
        "--subnet-lease-renew-margin",
        "60",
    )
    peer = cluster.add_node()

    def scrape() -> Samples:
        return scrape_tcp(node.name, "127.0.0.1", FLANNEL_PORT)

    deadline = time.monotonic() + 30
    while (found := scrape()) and value(found, "pycni_dataplane_objects", kind="route") != 1:
        assert time.monotonic() < deadline, "the peer's route never showed in the metrics"
        time.sleep(0.3)
    kernel = kernel_objects(node.name)
    assert kernel == {"route": 1, "neighbour": 1, "fdb": 1}, kernel
    for kind, count in kernel.items():
        assert value(found, "pycni_dataplane_objects", kind=kind) == count
    found = resynced(scrape)
    assert time.time() - value(found, "pycni_agent_last_sync_timestamp_seconds") < 5  # type: ignore[operator]
    assert value(found, "pycni_agent_watch_reconnects_total") == 0

    subnet = node.subnet_env()["FLANNEL_SUBNET"]
    subnet = subnet.rsplit(".", 1)[0] + ".0/" + subnet.split("/")[1]
    deadline = time.monotonic() + 40
    while (value(scrape(), "pycni_agent_lease_renewals_total") or 0) < 2:
        assert time.monotonic() < deadline, "fewer than two renewals in 40 s at a 4 s period"
        time.sleep(0.5)
    found = stable(scrape, "pycni_agent_lease_renewals_total")
    assert (
        value(found, "pycni_agent_lease_renewals_total") == lease_version(etcd, subnet) - 1
    )  # the first write acquired it

    # An etcd outage: every lost watch and failed retry the agent logs is one reconnect.
    etcd.stop()
    time.sleep(3)
    etcd.start()
    deadline = time.monotonic() + 30
    while "store is back" not in node.log.read_text():
        assert time.monotonic() < deadline, node.log.read_text()[-2000:]
        time.sleep(0.2)
    found = stable(scrape, "pycni_agent_watch_reconnects_total")
    lost = node.log.read_text().count("lease watch lost")
    assert lost >= 1
    assert value(found, "pycni_agent_watch_reconnects_total") == lost
    assert time.time() - value(found, "pycni_agent_last_sync_timestamp_seconds") < 5  # type: ignore[operator]
    failures = value(found, "pycni_agent_lease_renewal_errors_total") or 0
    assert node.log.read_text().count("lease renewal failed") == failures
    assert peer.agent is not None and peer.agent.poll() is None


# -- pycni calico-node ----------------------------------------------------------------------


@pytest.fixture
def calico(netns: NetnsPool, tmp_path: Path, pycni_bin: str, pycni_plugin_dir: str) -> Iterator[tuple[Any, EtcdServer]]:
    from tests.support.calico_cluster import ETCD_IP, CalicoCluster

    cluster = CalicoCluster(netns, tmp_path, pycni_bin, pycni_plugin_dir, agent_args=("--backend", "vxlan"))
    context = etcd_server(host=ETCD_IP, netns=cluster.underlay)
    etcd = context.__enter__()
    try:
        yield cluster, etcd
    finally:
        try:
            cluster.close()
        finally:
            context.__exit__(None, None, None)


def nft_elements(ns: str) -> int:
    listing = json.loads(run("nft", "-j", "list", "table", "ip", "calico-node", netns=ns).stdout)
    return sum(len(item["set"].get("elem", [])) for item in listing["nftables"] if "set" in item)


def block_allocations(etcd: EtcdServer, block: str) -> tuple[int, int]:
    """``(used, free)`` of a block as etcd holds it (allocations set, unallocated ordinals)."""
    key = "/calico/ipam/v2/assignment/ipv4/block/" + block.replace("/", "-")
    data = json.loads(etcd.etcdctl("get", key, "--print-value-only").stdout)
    return sum(1 for a in data["allocations"] if a is not None), len(data["unallocated"])


def test_calico_node_metrics_match_the_kernel_and_its_blocks(calico: tuple[Any, EtcdServer]) -> None:
    cluster, etcd = calico
    node = cluster.add_node(start=False)
    metrics_socket = node.home / "metrics.sock"
    cluster.start_agent(node, "--metrics-addr", f"unix:{metrics_socket}", "--resync", "1")

    def scrape() -> Samples:
        return scrape_unix(str(metrics_socket))

    found = scrape()
    blocks = series(found, "pycni_ipam_addresses")
    assert blocks, "the node's block is reported"
    ((pool, block),) = {(dict(labels)["network"], dict(labels)["range"]) for labels in blocks}
    assert pool == "default-ipv4-ippool" and block.startswith("10.244.")

    def block_row(found: Samples) -> tuple[float | None, float | None]:
        used = value(found, "pycni_ipam_addresses", network=pool, range=block, state="used")
        return used, value(found, "pycni_ipam_addresses", network=pool, range=block, state="free")

    assert block_row(found) == block_allocations(etcd, block)
    cluster.add_pod(node)
    found = scrape()
    assert block_row(found) == block_allocations(etcd, block)
    assert block_row(found)[0] == 2, "the VXLAN tunnel address and the pod's"

    routes = json.loads(run("ip", "-j", "route", "show", "proto", str(RTPROT_PYCNI), netns=node.ns).stdout or "[]")
    assert routes, "at least this node's block blackhole"
    assert value(found, "pycni_dataplane_objects", kind="route") == len(routes)
    assert value(found, "pycni_dataplane_objects", kind="nft_element") == nft_elements(node.ns) == 2
    found = resynced(scrape)
    assert "pycni_agent_lease_renewals_total" not in {name for name, _ in found}

    etcd.stop()
    time.sleep(2)
    down = scrape()
    assert value(down, "pycni_agent_watch_reconnects_total") >= 1  # type: ignore[operator]
    assert block_row(down) == (None, None), "a store that cannot be read is a gap, not a number"
    restarted = time.time()
    etcd.start()
    deadline = time.monotonic() + 30
    while "datastore is back" not in node.log.read_text():
        assert time.monotonic() < deadline, node.log.read_text()[-2000:]
        time.sleep(0.2)
    found = stable(scrape, "pycni_agent_watch_reconnects_total")
    assert value(found, "pycni_agent_last_sync_timestamp_seconds") >= restarted  # type: ignore[operator]
    assert block_row(found) == block_allocations(etcd, block)
