"""``pycni doctor`` against faults planted in fresh network namespaces, each beside the healthy case.

The checks run inside the node namespace in-process (the test thread enters
it with :func:`pycni.net.netns.entered`), every path pointed at the test's
tmp dir; one test runs the real command through ``ip netns exec``. Pods are
attached by the real bridge plugin through pycni's runtime (result cache,
host-local and ipMasq records written as on a node); datastore checks use a
real etcd inside the node namespace; BIRD 2 is real.
"""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pycni.datastore import open_datastore
from pycni.doctor import runner
from pycni.doctor.context import Options
from pycni.doctor.model import Finding, Status
from pycni.fabric.calico.bird import BIRD, BirdProcess
from pycni.fabric.calico.ipam_store import IPAM, AutoAssignArgs
from pycni.fabric.calico.model import new_resource
from pycni.fabric.calico.resources import ResourceClient
from pycni.fabric.flannel import subnetenv
from pycni.fabric.flannel.leases import LeaseStore
from pycni.fabric.flannel.model import Lease, LeaseAttrs
from pycni.net.netns import entered
from pycni.nft import firewall as nft_firewall
from pycni.nft import flannel as nft_flannel
from pycni.nft import masquerade
from pycni.runtime.api import CNIRuntime, RuntimeConf
from pycni.runtime.conf import load_network
from pycni.spec.result import IPInterface
from tests.support.calico_cluster import ETCD_IP, ETCD_URL, CalicoCluster
from tests.support.etcd import EtcdServer, etcd_server
from tests.support.fabric import UNDERLAY_GATEWAY, Cluster
from tests.support.netns import NetnsPool, run

SUBNET_ENV = "FLANNEL_NETWORK=10.5.0.0/16\nFLANNEL_SUBNET={subnet}\nFLANNEL_MTU={mtu}\nFLANNEL_IPMASQ=true\n"
FLANNEL_CONF: dict[str, object] = {
    "cniVersion": "1.0.0",
    "name": "cbr0",
    "plugins": [{"type": "flannel", "delegate": {"bridge": "cni0"}}],
}


def options(tmp: Path, **extra: object) -> Options:
    return Options(
        cni_conf_dir=str(tmp / "net.d"),
        cni_cache_dir=str(tmp / "cache"),
        host_local_dir=str(tmp / "networks"),
        subnet_file=str(tmp / "subnet.env"),
        calico_mtu_file=str(tmp / "calico-mtu"),
        **extra,  # type: ignore[arg-type]
    )


def doctor(pool: NetnsPool, ns: str, opts: Options) -> dict[str, list[Finding]]:
    """Every finding of a run inside ``ns``, by check."""
    with entered(pool.path(ns)):
        found = runner.run(opts)
    by_check: dict[str, list[Finding]] = {}
    for finding in found:
        by_check.setdefault(finding.check, []).append(finding)
    return by_check


def one(found: dict[str, list[Finding]], check: str) -> Finding:
    assert check in found, f"{check} did not report: {found}"
    (finding,) = found[check]
    return finding


def write_conf(tmp: Path, config: dict[str, object], filename: str = "") -> None:
    (tmp / "net.d").mkdir(exist_ok=True)
    (tmp / "net.d" / (filename or f"10-{config['name']}.conflist")).write_text(json.dumps(config))


def sysctl(ns: str, key: str, value: str) -> None:
    run("sysctl", "-qw", f"{key}={value}", netns=ns)


def bridge_conf(tmp: Path, name: str = "podnet") -> dict[str, object]:
    return {
        "cniVersion": "1.0.0",
        "name": name,
        "plugins": [
            {
                "type": "bridge",
                "bridge": "br-dr",
                "isGateway": True,
                "ipMasq": True,
                "ipam": {"type": "host-local", "subnet": "10.66.0.0/24", "dataDir": str(tmp / "hl")},
            }
        ],
    }


# -- host ---------------------------------------------------------------------------------------


def test_ip_forward_off_fails_while_a_network_routes_pods(netns: NetnsPool, tmp_path: Path) -> None:
    node = netns.new("node")
    opts = options(tmp_path)
    sysctl(node, "net.ipv4.ip_forward", "0")
    assert "ip_forward" not in doctor(netns, node, opts)  # no network: nothing needs forwarding
    write_conf(tmp_path, bridge_conf(tmp_path))
    finding = one(doctor(netns, node, opts), "ip_forward")
    assert finding.status is Status.FAIL
    assert "net.ipv4.ip_forward=0" in finding.message and "podnet" in finding.message
    assert "sysctl -w net.ipv4.ip_forward=1" in finding.advice
    sysctl(node, "net.ipv4.ip_forward", "1")
    assert one(doctor(netns, node, opts), "ip_forward").status is Status.OK

    dual = bridge_conf(tmp_path, "dual")
    plugins = dual["plugins"]
    assert isinstance(plugins, list)
    plugins[0]["ipam"] = {"type": "host-local", "ranges": [[{"subnet": "10.67.0.0/24"}], [{"subnet": "fd00:67::/64"}]]}
    write_conf(tmp_path, dual)
    sysctl(node, "net.ipv6.conf.all.forwarding", "0")
    v4, v6 = doctor(netns, node, opts)["ip_forward"]
    assert v4.status is Status.OK and "dual, podnet" in v4.message
    assert v6.status is Status.FAIL and "net.ipv6.conf.all.forwarding=0" in v6.message and "dual" in v6.message
    assert "podnet" not in v6.message


def overlay_node(pool: NetnsPool, underlay_mtu: int) -> str:
    """A node with an underlay eth0 (veth, MTU given) and flannel.1 on it, as flanneld makes it."""
    node = pool.new("node")
    run("ip", "link", "add", "eth0", "mtu", str(underlay_mtu), "type", "veth", "peer", "name", "eth0p", netns=node)
    run("ip", "addr", "add", "198.51.100.10/24", "dev", "eth0", netns=node)
    run("ip", "link", "set", "eth0", "up", netns=node)
    run("ip", "link", "add", "flannel.1", "type", "vxlan", "id", "1", "dev", "eth0", "local", "198.51.100.10",
        "dstport", "8472", "nolearning", netns=node)  # fmt: skip
    return node


def test_strict_rp_filter_on_the_overlay_device_or_all_fails(netns: NetnsPool, tmp_path: Path) -> None:
    node = overlay_node(netns, 1500)
    write_conf(tmp_path, FLANNEL_CONF)
    opts = options(tmp_path)
    sysctl(node, "net.ipv4.conf.all.rp_filter", "0")
    sysctl(node, "net.ipv4.conf.flannel/1.rp_filter", "1")
    finding = one(doctor(netns, node, opts), "rp_filter")
    assert finding.status is Status.FAIL and "flannel.1 (all=0, flannel.1=1)" in finding.message
    assert "net.ipv4.conf.flannel/1.rp_filter=2" in finding.advice
    sysctl(node, "net.ipv4.conf.flannel/1.rp_filter", "0")
    sysctl(node, "net.ipv4.conf.all.rp_filter", "1")  # all's 1 wins over the device's 0
    assert one(doctor(netns, node, opts), "rp_filter").status is Status.FAIL
    sysctl(node, "net.ipv4.conf.all.rp_filter", "2")
    finding = one(doctor(netns, node, opts), "rp_filter")
    assert finding.status is Status.OK and "flannel.1" in finding.message


def test_pod_mtu_above_the_underlay_minus_vxlan_fails_with_the_mtu_to_use(netns: NetnsPool, tmp_path: Path) -> None:
    node = overlay_node(netns, 1400)
    write_conf(tmp_path, FLANNEL_CONF)
    (tmp_path / "subnet.env").write_text(SUBNET_ENV.format(subnet="10.5.1.1/24", mtu=1450))
    opts = options(tmp_path)
    finding = one(doctor(netns, node, opts), "pod_mtu")
    assert finding.status is Status.FAIL
    assert "eth0 MTU 1400 - overlay 50 = 1350" in finding.message and "network cbr0: 1450 > 1350" in finding.message
    assert "use MTU 1350" in finding.advice
    (tmp_path / "subnet.env").write_text(SUBNET_ENV.format(subnet="10.5.1.1/24", mtu=1350))
    assert one(doctor(netns, node, opts), "pod_mtu").status is Status.OK


def test_subnet_env_missing_damaged_or_not_the_bridges_subnet_fails(netns: NetnsPool, tmp_path: Path) -> None:
    node = netns.new("node")
    opts = options(tmp_path)
    assert "subnet_env" not in doctor(netns, node, opts)  # no flannel network, no file
    write_conf(tmp_path, FLANNEL_CONF)
    finding = one(doctor(netns, node, opts), "subnet_env")
    assert finding.status is Status.FAIL and "is missing, but cbr0 read it" in finding.message
    assert "pycni flanneld" in finding.advice
    (tmp_path / "subnet.env").write_text("FLANNEL_NETWORK=10.5.0.0/16\nFLANNEL_SUBNET=10.5.1.1/24\n")
    finding = one(doctor(netns, node, opts), "subnet_env")
    assert finding.status is Status.FAIL and "is missing FLANNEL_MTU, FLANNEL_IPMASQ" in finding.message
    (tmp_path / "subnet.env").write_text(SUBNET_ENV.format(subnet="10.5.1.1/24", mtu=1450))
    assert one(doctor(netns, node, opts), "subnet_env").status is Status.OK
    run("ip", "link", "add", "cni0", "type", "bridge", netns=node)
    run("ip", "addr", "add", "10.5.7.1/24", "dev", "cni0", netns=node)  # pods of an earlier lease
    finding = one(doctor(netns, node, opts), "subnet_env")
    assert finding.status is Status.FAIL
    assert "cni0 has 10.5.7.1/24 but" in finding.message and "FLANNEL_SUBNET=10.5.1.1/24" in finding.message


# -- pods: host-local, result cache, nftables -----------------------------------------------------


@pytest.fixture
def runtime(pycni_plugin_dir: str, tmp_path: Path) -> CNIRuntime:
    return CNIRuntime([pycni_plugin_dir], cache_dir=str(tmp_path / "cache"))


def attach(pool: NetnsPool, node: str, rt: CNIRuntime, tmp: Path, container_id: str) -> str:
    """A pod namespace attached by the real bridge plugin, run from inside the node."""
    pod = pool.new("pod")
    with entered(pool.path(node)):
        rt.add(load_network(str(tmp / "net.d"), "podnet"), RuntimeConf(container_id, pool.path(pod)))
    return pod


def test_leaked_reservations_stale_caches_and_unused_nft_objects(
    netns: NetnsPool, tmp_path: Path, runtime: CNIRuntime
) -> None:
    node = netns.new("node")
    write_conf(tmp_path, bridge_conf(tmp_path))
    attach(netns, node, runtime, tmp_path, "ctr-live")
    doomed = attach(netns, node, runtime, tmp_path, "ctr-doomed")
    opts = options(tmp_path)
    healthy = doctor(netns, node, opts)
    for check in ("host_local", "result_cache", "nft_tables"):
        assert one(healthy, check).status is Status.OK, healthy[check]
    assert "2 reservation(s)" in one(healthy, "host_local").message

    # A sandbox deleted without a CNI DEL; an address reserved by a container nobody knows.
    run("ip", "netns", "del", doomed)
    netns.names.remove(doomed)
    (tmp_path / "hl" / "podnet" / "10.66.0.200").write_text("ctr-ghost\r\neth0")
    found = doctor(netns, node, opts)
    leaks = one(found, "host_local")
    assert leaks.status is Status.WARN and "2 host-local reservation(s)" in leaks.message
    assert "10.66.0.200 (ctr-ghost: no cached result)" in leaks.message
    assert f"ctr-doomed: netns {netns.path(doomed)} gone" in leaks.message
    stale = one(found, "result_cache")
    assert stale.status is Status.WARN and f"podnet/ctr-doomed/eth0 (netns {netns.path(doomed)})" in stale.message
    assert one(found, "nft_tables").status is Status.OK  # the subnet rule is still the live pod's


def test_nft_tables_nobody_uses_are_reported(netns: NetnsPool, tmp_path: Path) -> None:
    node = netns.new("node")
    opts = options(tmp_path, attachments_dir=str(tmp_path / "attachments"))
    assert one(doctor(netns, node, opts), "nft_tables").status is Status.OK
    address = ipaddress.ip_interface("10.66.0.5/24")
    assert isinstance(address, IPInterface)
    script = masquerade.render_setup([address], "gone-net", "eth0", "ctr-x")  # a subnet rule with no record
    script += "\n".join(nft_firewall.render_base()) + "\n"  # the firewall table, no attachment recorded
    script += f"add table {nft_flannel.T}\n"  # flanneld's table on a node with no flannel network
    run("nft", "-f", "-", input=script, netns=node)
    found = doctor(netns, node, opts)["nft_tables"]
    assert [f.status for f in found] == [Status.WARN, Status.WARN], found
    plugins, agents = found
    assert "inet cni_plugins_masquerade rule" in plugins.message and "subnet: 10.66.0.0/24" in plugins.message
    assert "inet pycni_firewall (no attachment recorded)" in plugins.message
    assert "pycni gc NETWORK" in plugins.advice
    assert "ip flannel-ipv4" in agents.message


def test_port_mappings_and_firewall_elements_of_a_pod_gone_without_del(
    netns: NetnsPool, tmp_path: Path, runtime: CNIRuntime
) -> None:
    node = netns.new("node")
    chain = bridge_conf(tmp_path)
    plugins = chain["plugins"]
    assert isinstance(plugins, list)
    plugins += [{"type": "firewall"}, {"type": "portmap", "capabilities": {"portMappings": True}}]
    write_conf(tmp_path, chain)
    opts = options(tmp_path, attachments_dir="/run/pycni/attachments")  # where the plugins record their users
    pods = []
    for index in range(2):
        pod = netns.new("pod")
        mapping = {"hostPort": 8080 + index, "containerPort": 80, "protocol": "tcp"}
        with entered(netns.path(node)):
            rt = RuntimeConf(f"ctr-{index}", netns.path(pod), capability_args={"portMappings": [mapping]})
            runtime.add(load_network(str(tmp_path / "net.d"), "podnet"), rt)
        pods.append(pod)
    assert one(doctor(netns, node, opts), "nft_tables").status is Status.OK

    run("ip", "netns", "del", pods[1])
    netns.names.remove(pods[1])
    found = doctor(netns, node, opts)["nft_tables"]
    assert [f.status for f in found] == [Status.FAIL, Status.WARN], found
    ports, leftovers = found
    assert "host port mappings of 1 attachment(s) that are gone: ctr-1/eth0 (tcp/8081)" in ports.message
    assert (
        "inet pycni_firewall element 10.66.0.3 of ctr-1/eth0" in leftovers.message
        and "10.66.0.2" not in leftovers.message
    )


# -- the datastore --------------------------------------------------------------------------------


@pytest.fixture
def etcd_node(netns: NetnsPool) -> Iterator[tuple[str, EtcdServer]]:
    """A node namespace with etcd on its own loopback (the checks reach it from inside the node)."""
    node = overlay_node(netns, 1500)
    with etcd_server(netns=node) as server:
        yield node, server


def flannel_lease(subnet: str, public_ip: str, mac: str) -> Lease:
    attrs = LeaseAttrs(public_ip, "vxlan", {"VNI": 1, "VtepMAC": mac})
    return Lease(ipaddress.IPv4Network(subnet), attrs)


def test_flannel_leases_vtep_macs_and_routes_against_etcd(
    netns: NetnsPool, tmp_path: Path, etcd_node: tuple[str, EtcdServer]
) -> None:
    node, server = etcd_node
    write_conf(tmp_path, FLANNEL_CONF)
    (tmp_path / "subnet.env").write_text(SUBNET_ENV.format(subnet="10.5.1.1/24", mtu=1450))
    with entered(netns.path(node)):
        leases = LeaseStore(open_datastore(server.url))
    try:
        with entered(netns.path(node)):
            leases.set_network_config('{"Network": "10.5.0.0/16", "Backend": {"Type": "vxlan"}}')
            assert leases.create_lease(flannel_lease("10.5.1.0/24", "198.51.100.10", "0a:00:00:00:00:01"), 600)
            assert leases.create_lease(flannel_lease("10.5.2.0/24", "198.51.100.11", "0a:00:00:00:00:02"), 600)
        run("ip", "link", "set", "flannel.1", "address", "0a:00:00:00:00:01", "up", netns=node)
        run("ip", "route", "add", "10.5.2.0/24", "via", "10.5.2.0", "dev", "flannel.1", "onlink", "proto", "112",
            netns=node)  # fmt: skip
        opts = options(tmp_path, etcd_endpoints=server.url, lease_margin=60.0)
        healthy = doctor(netns, node, opts)
        for check in ("flannel_lease", "vtep_macs", "flannel_routes"):
            assert one(healthy, check).status is Status.OK, healthy[check]

        # The lease is about to expire (renewals are failing).
        late = one(
            doctor(netns, node, options(tmp_path, etcd_endpoints=server.url, lease_margin=3600.0)), "flannel_lease"
        )
        assert late.status is Status.WARN and "10.5.1.0/24 expires in" in late.message

        # A node that left: its lease is gone, its route stays; a newcomer publishes our VTEP MAC.
        with entered(netns.path(node)):
            leases.delete_lease(flannel_lease("10.5.2.0/24", "198.51.100.11", "0a:00:00:00:00:02"))
            assert leases.create_lease(flannel_lease("10.5.3.0/24", "198.51.100.12", "0A-00-00-00-00-01"), 600)
        found = doctor(netns, node, opts)
        missing, stale = found["flannel_routes"]
        assert missing.status is Status.FAIL and "no route to leased subnet(s) 10.5.3.0/24 (198.51.100.12)" in (
            missing.message
        )
        assert stale.status is Status.FAIL and "10.5.2.0/24 via 10.5.2.0 dev flannel.1" in stale.message
        assert "ip route del 10.5.2.0/24" in stale.advice
        macs = one(found, "vtep_macs")
        assert macs.status is Status.FAIL
        assert "0a:00:00:00:00:01 by 10.5.1.0/24 (198.51.100.10), 10.5.3.0/24 (198.51.100.12)" in macs.message

        # This node's device lost the MAC its lease publishes (re-created by hand).
        run("ip", "link", "set", "flannel.1", "address", "0a:00:00:00:00:09", netns=node)
        wrong = doctor(netns, node, opts)["vtep_macs"][0]
        assert wrong.status is Status.FAIL
        assert "flannel.1 has MAC 0a:00:00:00:00:09 but this node's lease 10.5.1.0/24 publishes 0a:00:00:00:00:01" in (
            wrong.message
        )

        # subnet.env names a subnet with no lease, then another node's.
        (tmp_path / "subnet.env").write_text(SUBNET_ENV.format(subnet="10.5.9.1/24", mtu=1450))
        stale = one(doctor(netns, node, opts), "flannel_lease")
        assert stale.status is Status.FAIL and "10.5.9.0/24" in stale.message and "10.5.1.0/24" in stale.message
        (tmp_path / "subnet.env").write_text(SUBNET_ENV.format(subnet="10.5.3.1/24", mtu=1450))
        theirs = one(doctor(netns, node, opts), "flannel_lease")
        assert theirs.status is Status.FAIL and "leased to PublicIP 198.51.100.12" in theirs.message
    finally:
        leases.close()


def test_calico_ipam_leaks_against_etcd(netns: NetnsPool, tmp_path: Path, etcd_node: tuple[str, EtcdServer]) -> None:
    node, server = etcd_node
    write_conf(tmp_path, {"cniVersion": "1.0.0", "name": "k8s-pod-network", "plugins": [{"type": "calico"}]})
    with entered(netns.path(node)):
        store = open_datastore(server.url)
    try:
        with entered(netns.path(node)):
            resources = ResourceClient(store)
            resources.ensure_initialized()
            resources.create(new_resource("IPPool", "pool", {"cidr": "10.244.0.0/16", "blockSize": 26}))
            resources.create(new_resource("Node", "node-a", {}))
        opts = options(tmp_path, etcd_endpoints=server.url)
        assert one(doctor(netns, node, opts), "calico_ipam").status is Status.OK
        with entered(netns.path(node)):
            v4, _ = IPAM(store, resources).auto_assign(
                AutoAssignArgs(hostname="node-a", num4=1, handle_id="k8s-pod-network.gone", attrs={"node": "node-a"})
            )
        assert v4 is not None
        leaked = str(v4.ips[0].ip)
        finding = one(doctor(netns, node, opts), "calico_ipam")
        assert finding.status is Status.WARN
        assert f"{leaked} (handle k8s-pod-network.gone)" in finding.message and "leaked" in finding.message
        assert "calicoctl ipam release" in finding.advice

        # A workload whose address IPAM never allocated: IPAM may give it to another pod.
        spec = {"orchestrator": "k8s", "node": "node-a", "pod": "stray", "endpoint": "eth0", "interfaceName": "cali0"}
        with entered(netns.path(node)):
            resources.create(
                new_resource("WorkloadEndpoint", "", {**spec, "ipNetworks": ["10.244.9.9/32"]}, namespace="default")
            )
        found = doctor(netns, node, opts)["calico_ipam"]
        assert [f.status for f in found] == [Status.FAIL, Status.WARN], found
        assert "1 address(es) in use that IPAM did not allocate: 10.244.9.9 (Workload(default/" in found[0].message
    finally:
        store.close()


# -- BIRD ----------------------------------------------------------------------------------------


BIRD_CONF = """router id {me};
protocol device {{ }}
protocol bgp peer {{
  local {me} as 64512;
  neighbor {peer} as 64512;
  connect delay time 1; connect retry time 1;
  ipv4 {{ import none; export none; }};
}}
"""


def bird(pool: NetnsPool, tmp: Path, ns: str, me: str, peer: str) -> BirdProcess:
    config = tmp / f"bird-{me}.conf"
    config.write_text(BIRD_CONF.format(me=me, peer=peer))
    process = BirdProcess(me, str(config), str(tmp / f"bird-{me}.ctl"), pool.path(ns))
    process.start()
    return process


@pytest.mark.skipif(not os.access(BIRD, os.X_OK), reason="BIRD 2 is not installed (apt-get install bird2)")
def test_bird_not_running_or_sessions_not_established_fail(netns: NetnsPool, tmp_path: Path) -> None:
    a, b = netns.new("bgp-a"), netns.new("bgp-b")
    run("ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", b, netns=a)
    for ns, address in ((a, "198.51.100.21"), (b, "198.51.100.22")):
        run("ip", "addr", "add", f"{address}/24", "dev", "eth0", netns=ns)
        run("ip", "link", "set", "eth0", "up", netns=ns)
    opts = options(tmp_path, bird_socket=str(tmp_path / "bird-198.51.100.21.ctl"))
    finding = one(doctor(netns, a, opts), "bird")
    assert finding.status is Status.FAIL and "BIRD is not running" in finding.message
    birds = [bird(netns, tmp_path, a, "198.51.100.21", "198.51.100.22")]
    try:
        finding = one(doctor(netns, a, opts), "bird")
        assert finding.status is Status.FAIL and "1 of 1 BGP session(s) not Established: peer" in finding.message
        birds.append(bird(netns, tmp_path, b, "198.51.100.22", "198.51.100.21"))
        deadline = time.monotonic() + 20
        while (finding := one(doctor(netns, a, opts), "bird")).status is not Status.OK:
            assert time.monotonic() < deadline, finding
            time.sleep(0.5)
        assert "1 BGP session(s) Established: peer" in finding.message
    finally:
        for process in birds:
            process.stop()


# -- the command ---------------------------------------------------------------------------------


def test_the_command_in_a_node_namespace_prints_lines_or_json_and_exits_with_the_worst(
    netns: NetnsPool, tmp_path: Path
) -> None:
    node = netns.new("node")
    write_conf(tmp_path, bridge_conf(tmp_path))
    args = ["--cni-conf-dir", str(tmp_path / "net.d"), "--cni-cache-dir", str(tmp_path / "cache"),
            "--subnet-file", str(tmp_path / "subnet.env"), "--attachments-dir", str(tmp_path / "att")]  # fmt: skip

    def command(*extra: str) -> subprocess.CompletedProcess[str]:
        argv = ["ip", "netns", "exec", node, sys.executable, "-m", "pycni.cli.doctor", *args, *extra]
        return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)

    sysctl(node, "net.ipv4.ip_forward", "1")
    done = command()
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ok    ip_forward  net.ipv4.ip_forward=1 (needed by podnet)" in done.stdout.splitlines()
    sysctl(node, "net.ipv4.ip_forward", "0")
    done = command("--json")
    assert done.returncode == 2, done.stdout + done.stderr
    data = json.loads(done.stdout)
    assert data["status"] == "fail"
    assert {"check": "ip_forward", "status": "fail"}.items() <= next(
        f for f in data["findings"] if f["check"] == "ip_forward"
    ).items()

    # An etcd that does not answer is one failure; the checks reading it do not run.
    write_conf(tmp_path, FLANNEL_CONF)
    (tmp_path / "subnet.env").write_text(SUBNET_ENV.format(subnet="10.5.1.1/24", mtu=1450))
    done = command("--json", "--etcd-endpoints", "http://127.0.0.1:9")
    checks = [f["check"] for f in json.loads(done.stdout)["findings"]]
    assert done.returncode == 2 and "datastore" in checks and "subnet_env" in checks
    assert not {"flannel_lease", "vtep_macs", "flannel_routes", "calico_ipam"} & set(checks), checks
    (datastore,) = [f for f in json.loads(done.stdout)["findings"] if f["check"] == "datastore"]
    assert datastore["status"] == "fail" and "http://127.0.0.1:9" in datastore["message"]


# -- a real Flannel node ---------------------------------------------------------------------------


def test_a_real_flannel_node_is_all_ok_until_a_peer_leaves_behind_a_stopped_agent(
    netns: NetnsPool, tmp_path: Path, pycni_bin: str, pycni_plugin_dir: str
) -> None:
    """Two nodes with pycni flanneld (vxlan) on etcd and a pod each: no false alarm; then the peer's lease goes
    while this node's agent is down, and its route is the one finding."""
    cluster = Cluster(netns, tmp_path, pycni_bin, pycni_plugin_dir, f"http://{UNDERLAY_GATEWAY}:2379", state_dirs=True)
    try:
        with etcd_server(host=UNDERLAY_GATEWAY, netns=cluster.underlay) as etcd:
            config = {"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan"}}
            etcd.etcdctl("put", "/coreos.com/network/config", json.dumps(config))
            node, peer = cluster.add_node(), cluster.add_node()
            cluster.add_pod(node)
            cluster.add_pod(peer)
            opts = Options(
                cni_conf_dir=str(node.home / "net.d"),
                cni_cache_dir=str(node.home / "cache"),
                host_local_dir=str(node.home / "ipam"),
                subnet_file=str(node.subnet_file),
                calico_mtu_file=str(tmp_path / "calico-mtu"),
                etcd_endpoints=etcd.url,
            )
            found = doctor(netns, node.name, opts)
            print("\n".join(runner.render_text([f for fs in found.values() for f in fs])))
            assert [f for fs in found.values() for f in fs if f.status is not Status.OK] == [], found
            expected = ["ip_forward", "pod_mtu", "host_local", "result_cache", "subnet_env", "datastore"]
            for check in [*expected, "flannel_lease", "vtep_macs", "flannel_routes", "nft_tables"]:
                assert check in found, f"{check} did not run on a Flannel node"

            cluster.stop_agent(node, signal.SIGKILL)
            cluster.stop_agent(peer, signal.SIGKILL)
            peer_subnet = subnetenv.subnet_of(peer.subnet_env())
            assert peer_subnet is not None
            etcd.etcdctl("del", f"/coreos.com/network/subnets/{peer_subnet.network_address}-{peer_subnet.prefixlen}")
            found = doctor(netns, node.name, opts)
            bad = [f for fs in found.values() for f in fs if f.status is not Status.OK]
            assert [(f.check, f.status) for f in bad] == [("flannel_routes", Status.FAIL)], bad
            assert f"{peer_subnet} via {peer_subnet.network_address} dev flannel.1" in bad[0].message
    finally:
        cluster.close()


# -- a real Calico node ----------------------------------------------------------------------------


@pytest.mark.skipif(not os.access(BIRD, os.X_OK), reason="BIRD 2 is not installed (apt-get install bird2)")
def test_a_real_calico_node_is_all_ok_until_its_bgp_peer_goes_down(
    netns: NetnsPool, tmp_path: Path, pycni_bin: str, pycni_plugin_dir: str
) -> None:
    """Two nodes with pycni calico-node (BGP with BIRD) on etcd and a pod each: no false alarm; then the peer's
    agent is killed and this node's BGP session is the one finding."""
    cluster = CalicoCluster(netns, tmp_path, pycni_bin, pycni_plugin_dir, agent_args=("--backend", "bird"))
    try:
        with etcd_server(host=ETCD_IP, netns=cluster.underlay):
            node, peer = cluster.add_node(1), cluster.add_node(1)
            cluster.add_pod(node)
            cluster.add_pod(peer)
            opts = Options(
                cni_conf_dir=str(node.home / "net.d"),
                cni_cache_dir=str(node.home / "cache"),
                subnet_file=str(node.home / "subnet.env"),
                calico_mtu_file=str(node.mtu_file),
                etcd_endpoints=ETCD_URL,
                bird_socket=str(node.run_dir / "bird.ctl"),
            )
            deadline = time.monotonic() + 30
            while (bgp := one(doctor(netns, node.ns, opts), "bird")).status is not Status.OK:
                assert time.monotonic() < deadline, bgp
                time.sleep(0.5)
            found = doctor(netns, node.ns, opts)
            print("\n".join(runner.render_text([f for fs in found.values() for f in fs])))
            assert [f for fs in found.values() for f in fs if f.status is not Status.OK] == [], found
            expected = ["ip_forward", "rp_filter", "pod_mtu", "result_cache", "nft_tables", "datastore"]
            for check in [*expected, "calico_ipam", "bird"]:
                assert check in found, f"{check} did not run on a Calico node"

            cluster.stop_agent(peer, signal.SIGKILL)
            for pid in run("ip", "netns", "pids", peer.ns).stdout.split():  # its BIRD too
                os.kill(int(pid), signal.SIGKILL)
            deadline = time.monotonic() + 30
            while (bgp := one(doctor(netns, node.ns, opts), "bird")).status is Status.OK:
                assert time.monotonic() < deadline, "the session stayed Established with the peer gone"
                time.sleep(0.5)
            assert bgp.status is Status.FAIL and "1 of 1 BGP session(s) not Established" in bgp.message
    finally:
        cluster.close()
