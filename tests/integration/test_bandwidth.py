"""bandwidth on a live kernel: TBF on the host veth and on an ifb, measured with iperf3."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from pycni.cli.main import container_id_for
from pycni.plugins.meta.bandwidth import ifb_name
from tests.integration.test_portmap import Host
from tests.support.netns import NetnsPool, run

INGRESS_BITS = 8_000_000  # into the container
EGRESS_BITS = 16_000_000  # out of the container


def chain(data_dir: Path, **bandwidth: Any) -> dict[str, Any]:
    return {
        "cniVersion": "1.0.0",
        "name": "bwnet",
        "plugins": [
            {
                "type": "bridge",
                "bridge": "bw0",
                "isGateway": True,
                "ipam": {"type": "host-local", "subnet": "10.40.0.0/24", "dataDir": str(data_dir)},
            },
            {"type": "bandwidth", "capabilities": {"bandwidth": True}, **bandwidth},
        ],
    }


def bits_per_second(client_ns: str, server_ip: str, reverse: bool) -> float:
    """iperf3 throughput from ``client_ns`` to ``server_ip`` (``reverse``: server to client)."""
    argv = ["iperf3", "-c", server_ip, "-t", "3", "-O", "1", "-J"]
    if reverse:
        argv.append("-R")
    proc = run(*argv, netns=client_ns, check=False, timeout=30)
    assert proc.returncode == 0, proc.stdout[-500:] + proc.stderr
    return float(json.loads(proc.stdout)["end"]["sum_received"]["bits_per_second"])


@pytest.fixture
def bw_host(netns: NetnsPool, pycni_plugin_dir: str, pycni_bin: str, tmp_path: Path) -> Host:
    host = Host(netns, pycni_plugin_dir, pycni_bin, tmp_path, chain(tmp_path / "ipam"))
    (tmp_path / "net.d" / "pm.conflist").rename(tmp_path / "net.d" / "bw.conflist")
    return host


def pycni(host: Host, verb: str, ctr: str, bandwidth: dict[str, int] | None) -> subprocess.CompletedProcess[str]:
    env = dict(host.env)
    if bandwidth is not None:
        env["CAP_ARGS"] = json.dumps({"bandwidth": bandwidth})
    return subprocess.run(
        ["ip", "netns", "exec", host.node, host.pycni_bin, verb, "bwnet", host.pool.path(ctr)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def test_rates_are_enforced_both_ways_and_del_removes_the_ifb(bw_host: Host) -> None:
    limits = {
        "ingressRate": INGRESS_BITS,
        "ingressBurst": 2 * INGRESS_BITS // 100,
        "egressRate": EGRESS_BITS,
        "egressBurst": 2 * EGRESS_BITS // 100,
    }
    ctr = bw_host.pool.new("bwctr")
    added = pycni(bw_host, "add", ctr, limits)
    assert added.returncode == 0, added.stderr
    result = json.loads(added.stdout)
    cid = bw_host.pool.path(ctr)
    ifb = result["interfaces"][-1]["name"]
    assert ifb.startswith("bwp") and len(ifb) == 15
    assert "qdisc tbf 1: root" in run("tc", "qdisc", "show", "dev", ifb, netns=bw_host.node).stdout
    assert pycni(bw_host, "check", ctr, limits).returncode == 0

    server = subprocess.Popen(["ip", "netns", "exec", bw_host.node, "iperf3", "-s", "-1"], stdout=subprocess.DEVNULL)
    try:
        time.sleep(0.3)
        egress = bits_per_second(ctr, "10.40.0.1", reverse=False)
    finally:
        server.wait(timeout=30)
    server = subprocess.Popen(["ip", "netns", "exec", bw_host.node, "iperf3", "-s", "-1"], stdout=subprocess.DEVNULL)
    try:
        time.sleep(0.3)
        ingress = bits_per_second(ctr, "10.40.0.1", reverse=True)
    finally:
        server.wait(timeout=30)
    assert abs(egress - EGRESS_BITS) / EGRESS_BITS < 0.15, f"egress {egress / 1e6:.1f} Mbit/s"
    assert abs(ingress - INGRESS_BITS) / INGRESS_BITS < 0.15, f"ingress {ingress / 1e6:.1f} Mbit/s"

    assert pycni(bw_host, "del", ctr, limits).returncode == 0
    assert run("ip", "link", "show", ifb, netns=bw_host.node, check=False).returncode != 0
    assert ifb == ifb_name("bwnet", container_id_for(cid))


def test_zero_bandwidth_passes_through(bw_host: Host) -> None:
    ctr = bw_host.pool.new("bwctr")
    added = pycni(bw_host, "add", ctr, {})
    assert added.returncode == 0, added.stderr
    assert not any(i["name"].startswith("bwp") for i in json.loads(added.stdout)["interfaces"])
    assert pycni(bw_host, "del", ctr, {}).returncode == 0


@pytest.mark.parametrize(
    ("limits", "message"),
    [
        ({"ingressRate": 1000}, "if rate is set, burst must also be set"),
        ({"egressBurst": 1000}, "if burst is set, rate must also be set"),
        ({"egressRate": 1000, "egressBurst": 8 * 2**32}, "burst cannot be more than 4GB"),
        ({"ingressRate": -5, "ingressBurst": 10}, "must be at least 0"),
    ],
)
def test_bad_limits_change_nothing(bw_host: Host, limits: dict[str, int], message: str) -> None:
    ctr = bw_host.pool.new("bwctr")
    failed = pycni(bw_host, "add", ctr, limits)
    assert failed.returncode == 1
    assert message in failed.stderr
    assert "bwp" not in run("ip", "-o", "link", netns=bw_host.node).stdout
    assert run("ip", "-o", "link", "show", "type", "veth", netns=bw_host.node).stdout == ""


def test_gc_removes_ifbs_of_stale_attachments(
    netns: NetnsPool, pycni_plugin_dir: str, pycni_bin: str, tmp_path: Path
) -> None:
    config = chain(tmp_path / "ipam")
    config["cniVersion"] = "1.1.0"
    host = Host(netns, pycni_plugin_dir, pycni_bin, tmp_path, config)
    (tmp_path / "net.d" / "pm.conflist").rename(tmp_path / "net.d" / "bw.conflist")
    limits = {"egressRate": 1_000_000, "egressBurst": 100_000}
    keep, stale = host.pool.new("keep"), host.pool.new("stale")
    assert pycni(host, "add", keep, limits).returncode == 0
    assert pycni(host, "add", stale, limits).returncode == 0
    keep_id = f"{container_id_for(host.pool.path(keep))}/eth0"
    gc = subprocess.run(
        ["ip", "netns", "exec", host.node, host.pycni_bin, "gc", "bwnet", "--keep", keep_id],
        env=host.env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert gc.returncode == 0, gc.stderr
    links = run("ip", "-o", "link", netns=host.node).stdout
    assert ifb_name("bwnet", container_id_for(host.pool.path(keep))) in links
    assert ifb_name("bwnet", container_id_for(host.pool.path(stale))) not in links
    assert pycni(host, "del", keep, limits).returncode == 0
