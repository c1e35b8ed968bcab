"""pycni's metrics without root: names and labels, the listen-address rules, the collectors on real files.

Every check reads the metrics back through prometheus_client's own text
exposition and parser, as a Prometheus server would see them.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from pycni.dataplane.stats import ApplyResult
from pycni.metrics.address import AddressError, ListenAddress, parse
from pycni.metrics.agent import AgentMetrics
from pycni.metrics.cni import CallMetrics
from pycni.metrics.host_local import usage
from pycni.metrics.ipam import AddressUsage, IpamCollector
from pycni.metrics.serve import ServeError, serve
from pycni.plugins.ipam.host_local import plugin as host_local
from tests.support.metrics import Samples, get_unix, value
from tests.support.metrics import parse as samples


def scrape(registry: CollectorRegistry) -> Samples:
    return samples(generate_latest(registry).decode())


# -- --metrics-addr ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:9100", ListenAddress("127.0.0.1", 9100)),
        ("127.3.4.5:1", ListenAddress("127.3.4.5", 1)),
        ("[::1]:9100", ListenAddress("::1", 9100)),
        ("[0:0::1]:9100", ListenAddress("::1", 9100)),
        ("localhost:9100", ListenAddress("127.0.0.1", 9100)),
        ("9100", ListenAddress("127.0.0.1", 9100)),
        (":9100", ListenAddress("127.0.0.1", 9100)),
        ("unix:/run/pycni/metrics.sock", ListenAddress(path="/run/pycni/metrics.sock")),
        ("198.51.100.7:9100", ListenAddress("198.51.100.7", 9100)),  # an explicit address of the node
        ("", None),
    ],
)
def test_listen_addresses_accepted(text: str, expected: ListenAddress | None) -> None:
    assert parse(text) == expected


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("0.0.0.0:9100", "every interface"),
        ("[::]:9100", "every interface"),
        ("node1:9100", "not an IP address"),
        ("::1:9100", "brackets"),
        ("[::1]", "[ADDRESS]:PORT"),
        ("127.0.0.1", "HOST:PORT"),
        ("127.0.0.1:0", "1 to 65535"),
        ("127.0.0.1:65536", "1 to 65535"),
        ("127.0.0.1:http", "1 to 65535"),
        ("224.0.0.1:9100", "unicast"),
        ("unix:metrics.sock", "absolute path"),
    ],
)
def test_listen_addresses_refused_with_what_to_write(text: str, says: str) -> None:
    with pytest.raises(AddressError, match=says.replace("[", r"\[").replace("]", r"\]")):
        parse(text)


def test_loopback_and_display() -> None:
    assert parse("[::1]:9100") is not None and str(parse("[::1]:9100")) == "[::1]:9100"
    assert all(parse(t).loopback for t in ("127.0.0.1:1", "[::1]:1", "unix:/x"))  # type: ignore[union-attr]
    assert not parse("198.51.100.7:9100").loopback  # type: ignore[union-attr]


def test_the_flag_is_a_usage_error_when_bad() -> None:
    from pycni.cli.main import main

    proc = subprocess.run(
        [sys.executable, "-m", "pycni.cli.main", "daemon", "--metrics-addr", "0.0.0.0:9100"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "every interface" in proc.stderr
    assert main(["flanneld", "--metrics-addr", "example.org:1"]) == 2
    assert main(["calico-node", "--metrics-addr", "[::]:1"]) == 2


# -- CNI call metrics --------------------------------------------------------------


def test_call_metrics_names_labels_and_bounded_label_values() -> None:
    registry = CollectorRegistry()
    calls = CallMetrics(["bridge", "host-local"], registry)
    calls.observe("bridge", "ADD", 0, 0.003)
    calls.observe("bridge", "ADD", 0, 0.2)
    calls.observe("bridge", "DEL", 7, 0.001)
    calls.observe("not-a-plugin", "ADD", 999, 0.001)
    calls.observe("host-local", "NOPE", 4, 0.001)
    found = scrape(registry)
    assert value(found, "pycni_cni_calls_total", plugin="bridge", verb="ADD") == 2
    assert value(found, "pycni_cni_calls_total", plugin="bridge", verb="DEL") == 1
    assert value(found, "pycni_cni_calls_total", plugin="unknown", verb="ADD") == 1
    assert value(found, "pycni_cni_calls_total", plugin="host-local", verb="unknown") == 1
    assert value(found, "pycni_cni_call_errors_total", plugin="bridge", verb="DEL", code="7") == 1
    assert value(found, "pycni_cni_call_errors_total", plugin="unknown", verb="ADD", code="999") == 1
    assert value(found, "pycni_cni_call_errors_total", plugin="bridge", verb="ADD", code="0") is None
    hist = "pycni_cni_call_duration_seconds"
    assert value(found, hist + "_count", plugin="bridge", verb="ADD") == 2
    assert value(found, hist + "_sum", plugin="bridge", verb="ADD") == pytest.approx(0.203)
    assert value(found, hist + "_bucket", plugin="bridge", verb="ADD", le="0.005") == 1
    assert value(found, hist + "_bucket", plugin="bridge", verb="ADD", le="0.25") == 2
    assert value(found, hist + "_bucket", plugin="bridge", verb="ADD", le="+Inf") == 2


# A worker in multiprocess mode: count N calls, exit. The parent scrapes the directory's files.
WORKER = """
import os, sys
os.environ["PROMETHEUS_MULTIPROC_DIR"] = sys.argv[1]
from pycni.metrics.cni import CallMetrics
calls = CallMetrics(["bridge"])
for _ in range(int(sys.argv[2])):
    calls.observe("bridge", "ADD", 0, 0.01)
calls.observe("bridge", "DEL", 11, 0.01)
print(os.getpid())
"""


def test_multiprocess_totals_keep_the_counts_of_exited_workers(tmp_path: Path) -> None:
    from pycni.metrics.multiproc import Multiprocess

    processes = Multiprocess(str(tmp_path))
    pids = []
    for count in (3, 4):
        argv = [sys.executable, "-c", WORKER, str(tmp_path), str(count)]
        proc = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=60)
        assert proc.returncode == 0, proc.stderr
        pids.append(int(proc.stdout))
    for pid in pids:
        processes.worker_exited(pid)  # the supervisor's bookkeeping when it reaps a worker
    found = scrape(processes.registry())
    assert value(found, "pycni_cni_calls_total", plugin="bridge", verb="ADD") == 7
    assert value(found, "pycni_cni_call_errors_total", plugin="bridge", verb="DEL", code="11") == 2
    assert value(found, "pycni_cni_call_duration_seconds_count", plugin="bridge", verb="ADD") == 7
    processes.close()
    assert not tmp_path.exists()


def test_multiprocess_mode_refuses_to_start_after_the_library_chose_in_memory_values() -> None:
    from pycni.metrics import multiproc

    # This test process imported prometheus_client without the variable set.
    assert "PROMETHEUS_MULTIPROC_DIR" not in os.environ
    with pytest.raises(RuntimeError, match="imported before"):
        multiproc.prepare()


# -- agent metrics -----------------------------------------------------------------


def test_agent_metrics_names_and_the_dataplane_gauge_counts_each_driver_once() -> None:
    metrics = AgentMetrics(leases=True)
    metrics.renewed()
    metrics.renewed()
    metrics.renewal_failed()
    metrics.watch_reconnects.inc()
    metrics.resync_duration.observe(0.02)
    before = time.time()
    metrics.synced()
    # apply_layered reports the lower drivers twice (additions, then deletions): count each once.
    results = [
        ApplyResult("neighbours", "flannel.1", desired=2),
        ApplyResult("fdb", "flannel.1", desired=2),
        ApplyResult("routes", "flannel.1 peers", desired=3),
        ApplyResult("neighbours", "flannel.1", desired=2),
        ApplyResult("fdb", "flannel.1", desired=2),
    ]
    metrics.dataplane(results)
    found = scrape(metrics.registry)
    assert value(found, "pycni_agent_lease_renewals_total") == 2
    assert value(found, "pycni_agent_lease_renewal_errors_total") == 1
    assert value(found, "pycni_agent_watch_reconnects_total") == 1
    assert value(found, "pycni_agent_resync_duration_seconds_count") == 1
    stamp = value(found, "pycni_agent_last_sync_timestamp_seconds")
    assert stamp is not None and before <= stamp <= time.time()
    assert value(found, "pycni_dataplane_objects", kind="route") == 3
    assert value(found, "pycni_dataplane_objects", kind="neighbour") == 2
    assert value(found, "pycni_dataplane_objects", kind="fdb") == 2
    assert value(found, "pycni_dataplane_objects", kind="nft_element") is None
    assert value(found, "process_resident_memory_bytes") is not None
    metrics.dataplane([ApplyResult("routes", "calico", desired=1)], nft_elements=2)
    found = scrape(metrics.registry)
    assert value(found, "pycni_dataplane_objects", kind="route") == 1
    assert value(found, "pycni_dataplane_objects", kind="fdb") == 0
    assert value(found, "pycni_dataplane_objects", kind="nft_element") == 2


def test_an_agent_without_a_lease_exports_no_lease_metrics() -> None:
    found = scrape(AgentMetrics().registry)
    assert not [name for name, _ in found if "lease" in name]


# -- IPAM: host-local's directories, read at scrape time -------------------------------


def host_local_call(command: str, conf: dict[str, Any], container_id: str) -> dict[str, Any]:
    env = {
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": container_id,
        "CNI_NETNS": "/some/where",
        "CNI_IFNAME": "eth0",
        "CNI_PATH": "/nonexistent",
    }
    reply = host_local.invoke(env, json.dumps(conf).encode())
    assert reply.exit_code == 0, reply.stdout
    return json.loads(reply.stdout) if reply.stdout.strip() else {}


def test_host_local_usage_follows_real_allocations(tmp_path: Path) -> None:
    conf_dir, data = tmp_path / "net.d", tmp_path / "ipam"
    conf_dir.mkdir()
    two_ranges = {
        "cniVersion": "1.0.0",
        "name": "two",
        "plugins": [
            {
                "type": "bridge",
                "ipam": {
                    "type": "host-local",
                    "dataDir": str(data),
                    "ranges": [
                        [{"subnet": "10.60.0.0/29"}],  # 6 addresses minus the gateway: 5
                        [{"subnet": "10.61.0.0/24", "rangeStart": "10.61.0.100", "rangeEnd": "10.61.0.109"}],
                    ],
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }
    (conf_dir / "10-two.conflist").write_text(json.dumps(two_ranges))
    legacy = {"cniVersion": "0.3.1", "name": "legacy", "type": "bridge", "ipam": {"type": "host-local"}}
    legacy["ipam"].update(subnet="10.62.0.0/28", dataDir=str(data))  # type: ignore[attr-defined]
    (conf_dir / "20-legacy.conf").write_text(json.dumps(legacy))
    (conf_dir / "30-broken.conflist").write_text("{not json")
    (conf_dir / "40-static.conflist").write_text(
        json.dumps({"cniVersion": "1.0.0", "name": "st", "plugins": [{"type": "bridge", "ipam": {"type": "static"}}]})
    )

    def rows() -> dict[tuple[str, str], tuple[int, int]]:
        return {(r.network, r.range): (r.used, r.free) for r in usage(str(conf_dir))}

    assert rows() == {
        ("two", "10.60.0.0/29"): (0, 5),
        ("two", "10.61.0.0/24 10.61.0.100-10.61.0.109"): (0, 10),
        ("legacy", "10.62.0.0/28"): (0, 13),
    }
    plugin_conf = {**two_ranges["plugins"][0], "name": "two", "cniVersion": "1.0.0"}  # type: ignore[dict-item]
    for index in range(3):
        host_local_call("ADD", plugin_conf, f"ctr{index}")  # one address from each range set
    legacy_plugin = {**legacy, "cniVersion": "0.3.1"}
    host_local_call("ADD", legacy_plugin, "ctr-legacy")
    assert rows() == {
        ("two", "10.60.0.0/29"): (3, 2),
        ("two", "10.61.0.0/24 10.61.0.100-10.61.0.109"): (3, 7),
        ("legacy", "10.62.0.0/28"): (1, 12),
    }
    host_local_call("DEL", plugin_conf, "ctr1")
    assert rows()[("two", "10.60.0.0/29")] == (2, 3)


def test_flannel_networks_are_counted_over_the_subnet_in_subnet_env(tmp_path: Path) -> None:
    conf_dir = tmp_path / "net.d"
    conf_dir.mkdir()
    subnet_env = tmp_path / "subnet.env"
    flannel = {
        "cniVersion": "0.3.1",
        "name": "cbr0",
        "plugins": [
            {
                "type": "flannel",
                "subnetFile": str(subnet_env),
                "delegate": {"ipam": {"dataDir": str(tmp_path / "ipam")}},
            }
        ],
    }
    (conf_dir / "10-flannel.conflist").write_text(json.dumps(flannel))
    assert usage(str(conf_dir)) == []  # no lease yet: nothing to count
    subnet_env.write_text(
        "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.3.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n"
    )
    reserved = tmp_path / "ipam" / "cbr0"
    reserved.mkdir(parents=True)
    for name in ("10.244.3.2", "10.244.3.3", "lock", "last_reserved_ip.0", "10.99.0.1"):
        (reserved / name).write_text("ctr\r\neth0")
    assert usage(str(conf_dir)) == [AddressUsage("cbr0", "10.244.3.0/24", 2, 251)]


def test_ipam_collector_reports_a_failing_source_as_a_gap(caplog: pytest.LogCaptureFixture) -> None:
    from pycni.spec.errors import CNIError, ErrorCode

    calls = []

    def broken() -> list[AddressUsage]:
        calls.append(1)
        raise CNIError(ErrorCode.IO_FAILURE, "datastore away")

    registry = CollectorRegistry()
    registry.register(IpamCollector(broken))
    assert calls == [], "registering does not read the source"
    for _ in range(3):
        assert not [name for name, _ in scrape(registry) if name == "pycni_ipam_addresses"]
    assert len(calls) == 3
    assert [r.message for r in caplog.records].count("IPAM metrics unavailable: datastore away") == 1


# -- serving ------------------------------------------------------------------------


def test_unix_socket_serving_stale_files_and_live_ones(tmp_path: Path) -> None:
    metrics = AgentMetrics()
    metrics.watch_reconnects.inc(5)
    path = str(tmp_path / "metrics.sock")
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(path)
    stale.close()  # a socket file nobody listens on, as a killed process leaves it
    server = serve(ListenAddress(path=path), metrics.registry)
    try:
        assert os.stat(path).st_mode & 0o777 == 0o600
        status, text = get_unix(path)
        assert status == 200
        assert value(samples(text), "pycni_agent_watch_reconnects_total") == 5
        with pytest.raises(ServeError, match="another process serves"):
            serve(ListenAddress(path=path), metrics.registry)
    finally:
        server.close()
    assert not os.path.exists(path)
    (tmp_path / "file").write_text("")
    with pytest.raises(ServeError, match="not a socket"):
        serve(ListenAddress(path=str(tmp_path / "file")), metrics.registry)
    with pytest.raises(ServeError, match="No such file"):
        serve(ListenAddress(path=str(tmp_path / "missing" / "metrics.sock")), metrics.registry)


def test_tcp_serving_on_loopback() -> None:
    metrics = AgentMetrics()
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    server = serve(ListenAddress("127.0.0.1", port), metrics.registry)
    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        connection.request("GET", "/metrics")
        response = connection.getresponse()
        assert response.status == 200
        assert value(samples(response.read().decode()), "pycni_agent_watch_reconnects_total") == 0
        connection.close()
        with pytest.raises(ServeError, match="in use"):
            serve(ListenAddress("127.0.0.1", port), metrics.registry)
    finally:
        server.close()
