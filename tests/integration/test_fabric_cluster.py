"""The Flannel-compatible pod network across nodes: agents, etcd, backends and the flannel CNI plugin.

Every node is a namespace on an underlay bridge (itself in a namespace) with a
real etcd; pods get their interface from the flannel CNI plugin, which
delegates to pycni's bridge and host-local, as kube-flannel's conflist does.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.etcd import EtcdServer, etcd_server
from tests.support.fabric import UNDERLAY_GATEWAY, Cluster, Node
from tests.support.netns import NetnsPool, run

NETWORK = "10.244.0.0/16"


def net_conf(backend: dict[str, object]) -> str:
    return json.dumps({"Network": NETWORK, "Backend": backend})


@pytest.fixture
def cluster_for(netns: NetnsPool, tmp_path: Path, pycni_bin: str, pycni_plugin_dir: str) -> Iterator[object]:
    made: list[tuple[Cluster, EtcdServer]] = []
    contexts = []

    def make(backend: dict[str, object], *agent_args: str) -> tuple[Cluster, EtcdServer]:
        cluster = Cluster(netns, tmp_path, pycni_bin, pycni_plugin_dir, f"http://{UNDERLAY_GATEWAY}:2379", agent_args)
        context = etcd_server(host=UNDERLAY_GATEWAY, netns=cluster.underlay)
        etcd = context.__enter__()
        contexts.append(context)
        etcd.etcdctl("put", "/coreos.com/network/config", net_conf(backend))
        made.append((cluster, etcd))
        return cluster, etcd

    try:
        yield make
    finally:
        for cluster, _ in made:
            cluster.close()
        for context in contexts:
            context.__exit__(None, None, None)


def routes_to(node: str, subnet: str) -> str:
    return run("ip", "route", "show", subnet, netns=node).stdout


def vtep_mac(node: Node) -> str:
    return str(json.loads(run("ip", "-j", "link", "show", "flannel.1", netns=node.name).stdout)[0]["address"])


def fdb(node: Node) -> dict[str, str]:
    """``{mac: dst}`` of the node's flannel.1 FDB (the static entries the agent programs)."""
    entries = json.loads(run("bridge", "-j", "fdb", "show", "dev", "flannel.1", netns=node.name).stdout or "[]")
    return {entry["mac"]: entry["dst"] for entry in entries if "dst" in entry}


def published_mac(etcd: EtcdServer, node: Node) -> str:
    """The VtepMAC in the store's lease of ``node`` (found by its public IP)."""
    out = etcd.etcdctl("get", "--prefix", "/coreos.com/network/subnets/", "--print-value-only").stdout
    for line in out.splitlines():
        if line.strip():
            attrs = json.loads(line)
            if attrs["PublicIP"] == node.address:
                return str(attrs["BackendData"]["VtepMAC"])
    raise AssertionError(f"no lease with PublicIP {node.address}: {out}")


@pytest.mark.parametrize("backend", [{"Type": "vxlan"}, {"Type": "host-gw"}, {"Type": "udp"}], ids=lambda b: b["Type"])
def test_three_nodes_two_pods_each_full_mesh(backend: dict[str, object], cluster_for: object) -> None:
    cluster, _etcd = cluster_for(backend)  # type: ignore[operator]
    nodes = [cluster.add_node() for _ in range(3)]
    for node in nodes:
        cluster.add_pod(node)
        cluster.add_pod(node)
    subnets = {node.subnet_env()["FLANNEL_SUBNET"] for node in nodes}
    assert len(subnets) == 3, "each node leased its own subnet"
    cluster.wait_full_mesh(within=10)
    if backend["Type"] == "vxlan":
        env = nodes[0].subnet_env()
        assert env["FLANNEL_MTU"] == "1450" and env["FLANNEL_NETWORK"] == NETWORK
        assert "mtu 1450" in run("ip", "link", "show", "flannel.1", netns=nodes[0].name).stdout


def test_vxlan_nodes_sharing_a_machine_with_default_flags_get_their_own_macs(cluster_for: object) -> None:
    """pycni issue 9: three agents started as a user does (no ``--state-dir``) on one machine.

    They all keep state in the default directory; each must still get its
    own VTEP MAC, or every peer's FDB can hold only one destination for it.
    """
    cluster, etcd = cluster_for({"Type": "vxlan"})  # type: ignore[operator]
    assert not cluster.state_dirs, "the agents share the default --state-dir"
    nodes = [cluster.add_node(start_agent=False) for _ in range(3)]
    for node in nodes:
        cluster.start_agent(node, "--ip-masq", resync=None)  # the flags, nothing else
        cluster.add_pod(node)
        cluster.add_pod(node)
    macs = [vtep_mac(node) for node in nodes]
    assert len(set(macs)) == 3, f"one VTEP MAC per node: {macs}"
    for node, mac in zip(nodes, macs, strict=True):
        assert published_mac(etcd, node) == mac
        others = {vtep_mac(peer): peer.address for peer in nodes if peer is not node}
        assert fdb(node) == others, f"{node.name}: one FDB entry per peer, to that peer's address"
        files = cluster.mac_files(node)
        assert len(files) == 1 and Path(files[0]).read_text() == f"{mac}\n", "the MAC is persisted per node"
    cluster.wait_full_mesh(within=10)  # 30 pod pairs (before the fix, 24 of them failed)


def test_a_peer_lease_with_our_mac_makes_us_take_a_new_one(cluster_for: object) -> None:
    """A lease elsewhere carrying this node's VtepMAC (a cloned image, copied state): the node moves."""
    cluster, etcd = cluster_for({"Type": "vxlan"})  # type: ignore[operator]
    nodes = [cluster.add_node() for _ in range(3)]
    for node in nodes:
        cluster.add_pod(node)
    cluster.wait_full_mesh(within=10)
    victim = nodes[0]
    old = vtep_mac(victim)
    forged = {"PublicIP": "198.51.100.99", "PublicIPv6": None, "BackendType": "vxlan"}
    forged["BackendData"] = {"VNI": 1, "VtepMAC": old}
    etcd.etcdctl("put", "/coreos.com/network/subnets/10.244.250.0-24", json.dumps(forged))

    deadline = time.monotonic() + 10
    while vtep_mac(victim) == old and time.monotonic() < deadline:
        time.sleep(0.1)
    new = vtep_mac(victim)
    assert new != old, "the node whose MAC a peer also publishes takes a new one"
    while published_mac(etcd, victim) != new and time.monotonic() < deadline + 10:
        time.sleep(0.1)  # the device has it a moment before the lease is written
    assert published_mac(etcd, victim) == new, "and publishes it in its lease"
    assert Path(cluster.mac_files(victim)[0]).read_text() == f"{new}\n", "and persists it"
    log = victim.log.read_text()
    assert "WARNING" in log and old in log and "198.51.100.99" in log and new in log, log[-2000:]
    cluster.wait_full_mesh(within=10)
    for node in nodes[1:]:
        assert fdb(node).get(new) == victim.address
    assert vtep_mac(victim) == new, "one change settles it: nothing else carries the new MAC"


@pytest.mark.parametrize("ip_masq", [True, False], ids=["ip-masq", "bridge-masq"])
def test_a_clean_exit_leaves_the_node_ruleset_as_a_fresh_node_had_it(ip_masq: bool, cluster_for: object) -> None:
    """Start the agent on a brand-new node, ADD and DEL a pod, stop it: ``nft list ruleset`` is as it was.

    The agent deliberately keeps ``flannel.1`` (as Flannel does), so a later
    agent reuses it with the same MAC; only rules are compared here. Without
    ``--ip-masq`` the bridge masquerades instead (the flannel plugin's
    ``ipMasq = !FLANNEL_IPMASQ``), and its rule goes with the pod's DEL.
    """
    cluster, _etcd = cluster_for({"Type": "vxlan"})  # type: ignore[operator]
    node = cluster.add_node(start_agent=False)
    fresh = run("nft", "list", "ruleset", netns=node.name).stdout
    cluster.start_agent(node, *(["--ip-masq"] if ip_masq else []))
    assert "table ip flannel-ipv4" in run("nft", "list", "ruleset", netns=node.name).stdout
    pod = cluster.add_pod(node)
    cluster.del_pod(pod)
    cluster.stop_agent(node)  # SIGTERM: a clean exit
    assert run("nft", "list", "ruleset", netns=node.name).stdout == fresh
    assert "rules removed" in node.log.read_text()
    assert "flannel.1" in run("ip", "-br", "link", "show", netns=node.name).stdout, "the device is kept"


def test_node_join_and_leave_within_five_seconds(cluster_for: object) -> None:
    cluster, _etcd = cluster_for({"Type": "vxlan"}, "--release-on-exit")  # type: ignore[operator]
    nodes = [cluster.add_node() for _ in range(3)]
    for node in nodes:
        cluster.add_pod(node)
    cluster.wait_full_mesh(within=10)

    started = time.monotonic()
    fourth = cluster.add_node()
    pod = cluster.add_pod(fourth)
    reach = cluster.wait_full_mesh(within=5)
    print(
        f"4th node reachable {time.monotonic() - started:.2f} s after its agent started ({reach:.2f} s after its pod)"
    )

    gone_subnet = fourth.subnet_env()["FLANNEL_SUBNET"].replace(".1/", ".0/")
    cluster.del_pod(pod)
    cluster.stop_agent(fourth)  # --release-on-exit: an explicit leave
    deadline = time.monotonic() + 5
    remaining = [node.name for node in nodes]
    while remaining and time.monotonic() < deadline:
        remaining = [n.name for n in nodes if routes_to(n.name, gone_subnet).strip()]
        time.sleep(0.1)
    assert remaining == [], f"routes to {gone_subnet} still on {remaining} 5 s after the node left"
    gateway = gone_subnet.split("/")[0]
    for node in nodes:
        assert gateway not in run("ip", "neigh", "show", "dev", "flannel.1", netns=node.name).stdout
        fdb = run("bridge", "fdb", "show", "dev", "flannel.1", netns=node.name).stdout
        assert fourth.address not in fdb


def test_lease_expiry_removes_a_dead_node(cluster_for: object) -> None:
    cluster, _etcd = cluster_for({"Type": "host-gw"}, "--subnet-lease-ttl", "3")  # type: ignore[operator]
    first, second = cluster.add_node(), cluster.add_node()
    subnet = second.subnet_env()["FLANNEL_SUBNET"].replace(".1/", ".0/")
    deadline = time.monotonic() + 10  # the first node learns of the second from its watch: not at once
    while not routes_to(first.name, subnet).strip() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert routes_to(first.name, subnet).strip(), "the first node routes to the second's subnet"
    cluster.stop_agent(second, sig=9)  # dies without releasing: its lease runs out
    deadline = time.monotonic() + 10
    while routes_to(first.name, subnet).strip() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not routes_to(first.name, subnet).strip(), "an expired lease removes the node's route"


def test_full_size_packets_cross_vxlan_without_fragmentation(cluster_for: object) -> None:
    cluster, _etcd = cluster_for({"Type": "vxlan"})  # type: ignore[operator]
    a, b = cluster.add_node(), cluster.add_node()
    pa, pb = cluster.add_pod(a), cluster.add_pod(b)
    cluster.wait_full_mesh(within=10)
    assert "mtu 1450" in run("ip", "link", "show", "eth0", netns=pa.name).stdout, "the pod MTU comes from subnet.env"
    full = run("ping", "-M", "do", "-c", "2", "-W", "2", "-s", str(1450 - 28), pb.ip, netns=pa.name, check=False)
    assert full.returncode == 0, full.stdout + full.stderr
    too_big = run("ping", "-M", "do", "-c", "1", "-W", "2", "-s", str(1450 - 27), pb.ip, netns=pa.name, check=False)
    assert too_big.returncode != 0, "one byte more does not fit the pod MTU"


def test_agent_restart_and_etcd_outage_keep_traffic_flowing(cluster_for: object, tmp_path: Path) -> None:
    cluster, etcd = cluster_for({"Type": "vxlan"})  # type: ignore[operator]
    a, b = cluster.add_node(), cluster.add_node()
    pa, pb = cluster.add_pod(a), cluster.add_pod(b)
    cluster.wait_full_mesh(within=10)
    mac_before = run("ip", "-br", "link", "show", "flannel.1", netns=a.name).stdout.split()[2]

    server = subprocess.Popen(["ip", "netns", "exec", pb.name, "iperf3", "-s", "-1"], stdout=subprocess.DEVNULL)
    time.sleep(0.3)
    client = subprocess.Popen(
        ["ip", "netns", "exec", pa.name, "iperf3", "-c", pb.ip, "-t", "16", "-b", "20M", "-J"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        time.sleep(2)
        cluster.stop_agent(a)  # SIGTERM: the dataplane stays
        cluster.start_agent(a)
        time.sleep(1)
        etcd.stop()  # 10 s without etcd under traffic
        time.sleep(10)
        etcd.start()
        out, err = client.communicate(timeout=60)
    finally:
        server.wait(timeout=30)
    report = json.loads(out)
    assert client.returncode == 0, err
    retransmits = report["end"]["sum_sent"]["retransmits"]
    assert report["end"]["sum_received"]["bytes"] > 0
    intervals = [i["sum"]["bytes"] for i in report["intervals"]]
    assert min(intervals) > 0, f"no interval without traffic (restart and outage): {intervals}"
    print(f"retransmits over the restart and the etcd outage: {retransmits}")
    mac_after = run("ip", "-br", "link", "show", "flannel.1", netns=a.name).stdout.split()[2]
    assert mac_after == mac_before, "the VTEP MAC survives the restart"

    third = cluster.add_node()  # after the outage the agents resync and see newcomers
    cluster.add_pod(third)
    cluster.wait_full_mesh(within=10)


def test_a_deleted_vxlan_device_is_rebuilt_by_the_running_agent(cluster_for: object) -> None:
    """Someone deletes ``flannel.1`` under a running agent: its next resync makes it again, with the MAC
    its peers know, and the dataplane drivers write every entry the kernel flushed with it."""
    cluster, _etcd = cluster_for({"Type": "vxlan"})  # type: ignore[operator]
    nodes = [cluster.add_node() for _ in range(3)]
    for node in nodes:
        cluster.add_pod(node)
    cluster.wait_full_mesh(within=10)
    victim = nodes[0]
    mac = vtep_mac(victim)
    routes_before = run("ip", "route", "show", "dev", "flannel.1", netns=victim.name).stdout
    run("ip", "link", "del", "flannel.1", netns=victim.name)
    cluster.wait_full_mesh(within=10)  # the agents resync every second here
    assert vtep_mac(victim) == mac, "the peers' FDB entries for it still hold"
    assert run("ip", "route", "show", "dev", "flannel.1", netns=victim.name).stdout == routes_before
    assert routes_before.count("proto 112 onlink") == 2
    assert set(fdb(victim).values()) == {peer.address for peer in nodes[1:]}
    assert "rebuilding the backend's device" in victim.log.read_text()
