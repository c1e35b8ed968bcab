"""Host endpoints enforced by ``pycni calico-node``: a node's eth0 under policy, probed with real TCP from the underlay.

Two nodes on different subnets (VXLAN between them), a pod on each, etcd in
the underlay namespace. A HostEndpoint for node 1's eth0 with no policy denies
what the host receives and sends there, except the failsafe ports (TCP 22
from the underlay connects; the agent's own etcd traffic, TCP 2379 out, keeps
flowing, so later changes still arrive), while VXLAN between the hosts and the
pods' forwarded traffic go on. A GlobalNetworkPolicy selecting the endpoint
opens one port; a HostEndpoint of ``*`` then polices every host interface
but lo and the pods' the same way; deleting the endpoints leaves the table as
it was before them.
Every probe is compared with the evaluator built from the same etcd.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pycni.policy.match import Packet
from tests.integration.test_calico_policy_node import inputs
from tests.support.calico_cluster import ETCD_IP, CalicoCluster, Node, clusters_on_etcd, wait_until
from tests.support.netns import NetnsPool, run
from tests.support.tcp import connects, listen

Make = Callable[..., CalicoCluster]

HOST_ENDPOINT = """\
apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata: {name: node1-eth0, labels: {host: node1}}
spec: {node: node1, interfaceName: eth0, expectedIPs: [%s]}
"""
ALL_INTERFACES = """\
apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata: {name: node1-all, labels: {host: node1}}
spec: {node: node1, interfaceName: "*"}
"""
OPEN_8080 = """\
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: node1-serves-8080}
spec:
  selector: host == 'node1'
  types: [Ingress]
  ingress: [{action: Allow, protocol: TCP, source: {nets: [198.51.100.0/24]}, destination: {ports: [8080]}}]
"""


@pytest.fixture
def calico(netns: NetnsPool, tmp_path: Path, pycni_bin: str, pycni_plugin_dir: str) -> Iterator[Make]:
    with clusters_on_etcd(netns, tmp_path, pycni_bin, pycni_plugin_dir) as make:
        yield lambda **kwargs: make(**kwargs)[0]


def table(node: Node) -> str:
    return run("nft", "list", "table", "inet", "pycni-policy", netns=node.ns).stdout


def test_a_host_endpoint_polices_the_hosts_own_traffic_and_keeps_failsafe_overlay_and_pods(calico: Make) -> None:
    cluster = calico()
    n1, n2 = cluster.add_node(1), cluster.add_node(2)
    p1, p2 = cluster.add_pod(n1), cluster.add_pod(n2)
    cluster.wait_full_mesh(within=20)
    servers = [listen(n1.ns, port) for port in (22, 8080, 9000)]
    outside = listen(cluster.underlay, 7000)
    try:
        before = table(n1)
        assert "hook output" not in before, "no host endpoint: no output chain"
        assert connects(cluster.underlay, n1.address, 8080) and connects(n1.ns, ETCD_IP, 7000)

        cluster.calicoctl("apply", "-f", "-", stdin=HOST_ENDPOINT % n1.address)
        wait_until(lambda: not connects(cluster.underlay, n1.address, 8080, 0.3), within=10, what="eth0 policed")
        wide = cluster.calicoctl("get", "hep", "-o", "wide").stdout.split("\n")
        assert wide[0].split() == ["NAME", "NODE", "INTERFACE", "IPS", "PROFILES"]
        assert wide[1].split() == ["node1-eth0", "node1", "eth0", n1.address]
        probes = {
            "ssh in (failsafe)": (cluster.underlay, ETCD_IP, n1.address, 22),
            "8080 in": (cluster.underlay, ETCD_IP, n1.address, 8080),
            "9000 in": (cluster.underlay, ETCD_IP, n1.address, 9000),
            "7000 out": (n1.ns, n1.address, ETCD_IP, 7000),
        }
        seen = {name: connects(ns, dst, port) for name, (ns, _src, dst, port) in probes.items()}
        assert seen == {"ssh in (failsafe)": True, "8080 in": False, "9000 in": False, "7000 out": False}, seen
        evaluator = inputs(cluster, n1).evaluator()
        expected = {
            name: evaluator.evaluate(Packet.make(src, dst, "TCP", port)).allowed
            for name, (_ns, src, dst, port) in probes.items()
        }
        assert seen == expected, (seen, expected)
        assert cluster.reaches(p1, p2) and cluster.reaches(p2, p1), "VXLAN between hosts and forwarded pods go on"
        listing = table(n1)
        assert "chain cali-fh-eth0" in listing and "chain cali-th-eth0" in listing and "hook output" in listing
        assert "tcp dport { 22, 179, 2379, 2380, 5473, 6443, 6666, 6667 } accept" in listing

        # The agent still hears etcd (failsafe 2379 out): a policy applied now is enforced.
        cluster.calicoctl("apply", "-f", "-", stdin=OPEN_8080)
        wait_until(lambda: connects(cluster.underlay, n1.address, 8080, 0.3), within=10, what="8080 opened")
        assert not connects(cluster.underlay, n1.address, 9000)
        assert not connects(n1.ns, ETCD_IP, 7000), "Ingress only: the host's egress stays denied"
        evaluator = inputs(cluster, n1).evaluator()
        verdict = evaluator.evaluate(Packet.make(ETCD_IP, n1.address, "TCP", 8080))
        assert verdict.allowed and verdict.ingress is not None and verdict.ingress.policy == "node1-serves-8080"

        cluster.calicoctl("delete", "hostendpoint", "node1-eth0")
        wait_until(lambda: connects(cluster.underlay, n1.address, 9000, 0.3), within=10, what="the endpoint gone")
        assert connects(n1.ns, ETCD_IP, 7000)

        # interfaceName *: every interface of the host but the pods' and lo, with the same policy.
        cluster.calicoctl("apply", "-f", "-", stdin=ALL_INTERFACES)
        wait_until(lambda: not connects(cluster.underlay, n1.address, 9000, 0.3), within=10, what="* policed")
        assert connects(cluster.underlay, n1.address, 8080), "the GNP selects the * endpoint too"
        assert connects(cluster.underlay, n1.address, 22) and not connects(n1.ns, ETCD_IP, 7000)
        assert connects(n1.ns, "127.0.0.1", 9000), "lo is not policed"
        assert cluster.reaches(p1, p2) and cluster.reaches(p2, p1)
        assert "goto cali-fh-any-interface-at-all" in table(n1)
        cluster.calicoctl("delete", "hostendpoint", "node1-all")
        cluster.calicoctl("delete", "globalnetworkpolicy", "node1-serves-8080")
        wait_until(lambda: table(n1) == before, within=10, what="the table as before the host endpoints")
    finally:
        for server in [*servers, outside]:
            server.close()


def test_a_wrong_failsafe_setting_stops_the_agent_with_what_to_fix(calico: Make) -> None:
    cluster = calico(env={"FELIX_FAILSAFEINBOUNDHOSTPORTS": "tcp:22,ssh"})
    node = cluster.add_node(1, start=False)
    cluster.start_agent(node, wait=False)
    assert node.agent is not None
    assert node.agent.wait(timeout=30) == 1
    text = node.log.read_text()
    assert "FELIX_FAILSAFEINBOUNDHOSTPORTS" in text and "'ssh'" in text and "Traceback" not in text
