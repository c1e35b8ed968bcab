"""Policy enforced by ``pycni calico-node``: manifests through ``pycni calicoctl``, real TCP, the evaluator as oracle.

The cluster of :mod:`tests.support.calico_cluster` (etcd, nodes in namespaces,
pods through the real ``calico`` plugin, busybox httpd in each). Policy-only
mode (``--backend none``: no BIRD, no tunnels, no routes of the agent's) on
one node: a default-deny Calico NetworkPolicy and a Kubernetes NetworkPolicy
allowing ``role=client`` to ``app=web`` on TCP 80 are enforced as the
evaluator (built from the same etcd) decides, every ordered pair probed; a
Pod relabelled with ``calicoctl apply`` is let in within seconds; an
established TCP connection keeps flowing across an unrelated policy update
that rewrites the web pod's chain. On two nodes (VXLAN): the label change of a
pod on the other node changes this node's sets, so it is let in here.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pycni.datastore import KeyValue
from pycni.datastore.memory import MemoryDatastore
from pycni.fabric.calico.policy_state import PolicyInputs, build
from pycni.fabric.calico.resources import ResourceClient
from pycni.net import netns
from pycni.policy.match import Packet
from tests.support.calico_cluster import ETCD_URL, CalicoCluster, Node, Pod, clusters_on_etcd, wait_until
from tests.support.netns import NetnsPool, run
from tests.support.tcp import listen

Make = Callable[..., CalicoCluster]

DEFAULT_DENY = """\
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: default-deny, namespace: default}
spec: {selector: all(), types: [Ingress]}
"""
ALLOW_CLIENTS = """\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-from-clients, namespace: default}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress:
  - from: [{podSelector: {matchLabels: {role: client}}}]
    ports: [{port: 80}, {port: 8080}]
"""
UNRELATED = """\
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: web-from-monitors, namespace: default}
spec:
  selector: app == 'web'
  ingress: [{action: Allow, protocol: TCP, source: {selector: role == 'monitor'}, destination: {ports: [9100]}}]
"""


@pytest.fixture
def calico(netns: NetnsPool, tmp_path: Path, pycni_bin: str, pycni_plugin_dir: str) -> Iterator[Make]:
    with clusters_on_etcd(netns, tmp_path, pycni_bin, pycni_plugin_dir) as make:
        yield lambda **kwargs: make(**kwargs)[0]


def pod_manifest(pod: Pod, labels: dict[str, str]) -> str:
    document = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": pod.name, "namespace": "default", "labels": labels},
        "spec": {"nodeName": pod.node.nodename, "containers": [{"name": "c"}]},
    }
    return json.dumps(document)


DUMP = f"""
import json
from pycni.datastore import open_datastore
from pycni.fabric.calico.policy_state import PREFIXES
store = open_datastore({ETCD_URL!r})
print(json.dumps([[kv.key, kv.value, kv.mod_revision] for p in PREFIXES for kv in store.list(p)[0]]))
store.close()
"""


def inputs(cluster: CalicoCluster, node: Node) -> PolicyInputs:
    """What the node's agent reads, read from the same etcd (in the underlay namespace, where etcd is)."""
    python = os.path.join(os.path.dirname(cluster.pycni_bin), "python")
    listed = json.loads(run(python, "-c", DUMP, netns=cluster.underlay).stdout)
    kvs = [KeyValue(key, value, revision, revision, 1) for key, value, revision in listed]
    return build(kvs, node.nodename, ResourceClient(MemoryDatastore()))


def matrix(cluster: CalicoCluster, pods: list[Pod]) -> dict[tuple[str, str], bool]:
    return {(a.name, b.name): cluster.reaches(a, b) for a in pods for b in pods if a is not b}


def oracle(cluster: CalicoCluster, node: Node, pods: list[Pod]) -> dict[tuple[str, str], bool]:
    evaluator = inputs(cluster, node).state.evaluator()
    return {
        (a.name, b.name): evaluator.evaluate(Packet.make(a.ip, b.ip, "TCP", 80)).allowed
        for a in pods
        for b in pods
        if a is not b
    }


def policy_chains(node: Node) -> int:
    listing = run("nft", "list", "table", "inet", "pycni-policy", netns=node.ns).stdout
    return listing.count("chain cali-pi-")


def _connect(ns: str, address: str, port: int) -> socket.socket:
    with netns.entered(NetnsPool.path(ns)):
        client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    client.settimeout(2.0)
    client.connect((address, port))
    return client


def test_policy_only_mode_enforces_what_the_evaluator_decides(calico: Make) -> None:
    cluster = calico(agent_args=("--backend", "none"), env={"CALICO_NETWORKING_BACKEND": "none"})
    node = cluster.add_node(1)
    web, client, other = (cluster.add_pod(node) for _ in range(3))
    cluster.wait_full_mesh(within=15)
    assert "backend none" in node.log.read_text()
    for pod, wanted in ((web, {"app": "web"}), (client, {"role": "client"}), (other, {"role": "other"})):
        cluster.calicoctl("apply", "-f", "-", stdin=pod_manifest(pod, wanted))
    cluster.calicoctl("apply", "-f", "-", stdin=DEFAULT_DENY)
    cluster.calicoctl("apply", "-f", "-", stdin=ALLOW_CLIENTS)
    pods = [web, client, other]
    wait_until(lambda: not cluster.reaches(other, web), within=5, what="the default deny in force")
    seen, expected = matrix(cluster, pods), oracle(cluster, node, pods)
    assert seen == expected, (seen, expected)
    assert seen[(client.name, web.name)] and not seen[(other.name, web.name)] and not seen[(web.name, client.name)]

    # The other pod becomes a client: enforcement follows within seconds.
    cluster.calicoctl("apply", "-f", "-", stdin=pod_manifest(other, {"role": "client"}))
    took = wait_until(lambda: cluster.reaches(other, web), within=5, what="the relabelled pod let in")
    assert matrix(cluster, pods) == oracle(cluster, node, pods)

    # An established connection survives an update that rewrites the web pod's chain.
    server = listen(web.name, 8080)
    try:
        stream = _connect(client.name, web.ip, 8080)
        accepted, _ = server.accept()
        try:
            before = policy_chains(node)
            cluster.calicoctl("apply", "-f", "-", stdin=UNRELATED)
            wait_until(lambda: policy_chains(node) > before, within=5, what="the unrelated policy in the kernel")
            for index in range(20):
                stream.sendall(f"ping {index}\n".encode())
                assert accepted.recv(64) == f"ping {index}\n".encode()
                time.sleep(0.01)
        finally:
            accepted.close()
            stream.close()
    finally:
        server.close()
    assert matrix(cluster, pods) == oracle(cluster, node, pods)
    print(f"relabel enforced after {took:.2f} s")


def test_a_relabel_on_another_node_changes_this_nodes_sets(calico: Make) -> None:
    cluster = calico(agent_args=("--backend", "vxlan"))
    n1, n2 = cluster.add_node(1), cluster.add_node(2)
    web, far = cluster.add_pod(n1), cluster.add_pod(n2)
    cluster.wait_full_mesh(within=20)
    cluster.calicoctl("apply", "-f", "-", stdin=pod_manifest(web, {"app": "web"}))
    cluster.calicoctl("apply", "-f", "-", stdin=pod_manifest(far, {"role": "other"}))
    cluster.calicoctl("apply", "-f", "-", stdin=DEFAULT_DENY)
    cluster.calicoctl("apply", "-f", "-", stdin=ALLOW_CLIENTS)
    wait_until(lambda: not cluster.reaches(far, web), within=5, what="the remote pod denied")
    assert not cluster.reaches(web, far), "the default deny selects the remote pod too"
    cluster.calicoctl("apply", "-f", "-", stdin=pod_manifest(far, {"role": "client"}))
    wait_until(lambda: cluster.reaches(far, web), within=5, what="the remote pod let in after its relabel")
    seen, expected = matrix(cluster, [web, far]), oracle(cluster, n1, [web, far])
    assert seen == expected, (seen, expected)
    assert far.ip in run("nft", "list", "table", "inet", "pycni-policy", netns=n1.ns).stdout
