"""``pycni inspect --svg`` of real clusters: every node and pod is in the picture, with node 1's view of its peers.

Flannel: two node namespaces run ``pycni flanneld`` (vxlan) on one embedded
store (a sqlite file, ``--store-path``), pods through the flannel CNI plugin.
Calico: three nodes in two subnets run ``pycni calico-node`` with BIRD on etcd
(the seed's VXLANCrossSubnet pool), a pod each through the calico plugin. The
command runs inside node 1 as a user runs it there, and the SVG it writes is
parsed back.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from pycni.fabric.calico.bird import BIRD
from tests.support.calico_cluster import ETCD_IP, ETCD_URL, CalicoCluster
from tests.support.etcd import etcd_server
from tests.support.fabric import Cluster, Node
from tests.support.netns import NetnsPool, run

NS = {"svg": "http://www.w3.org/2000/svg"}
NET_CONF = {"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan"}}


def inspect(pycni_bin: str, node: Node, *argv: str) -> subprocess.CompletedProcess[str]:
    return run("ip", "netns", "exec", node.name, pycni_bin, "inspect", *argv, check=False)


def texts(root: ET.Element) -> str:
    tags = (f"{{{NS['svg']}}}text", f"{{{NS['svg']}}}title")
    return "\n".join("".join(e.itertext()) for e in root.iter() if e.tag in tags)


def card(root: ET.Element, name: str) -> str:
    group = root.find(f".//svg:g[@class='node'][@data-node='{name}']", NS)
    assert group is not None, f"no card for {name}"
    return texts(group)


def wait_for_route(node: Node, subnet: str, within: float = 15.0) -> None:
    deadline = time.monotonic() + within
    while subnet not in run("ip", "route", "show", "dev", "flannel.1", netns=node.name, check=False).stdout:
        assert time.monotonic() < deadline, f"{node.name} has no route to {subnet}"
        time.sleep(0.1)


def test_inspect_svg_draws_every_node_and_pod_of_a_real_flannel_cluster(
    netns: NetnsPool, tmp_path: Path, pycni_bin: str, pycni_plugin_dir: str
) -> None:
    store = tmp_path / "flannel.db"
    (tmp_path / "net-conf.json").write_text(json.dumps(NET_CONF))
    agent_args = ("--store-path", str(store), "--net-config-path", str(tmp_path / "net-conf.json"))
    cluster = Cluster(netns, tmp_path, pycni_bin, pycni_plugin_dir, "", agent_args, state_dirs=True)
    try:
        node1, node2 = cluster.add_node(), cluster.add_node()
        pods = [cluster.add_pod(node1), cluster.add_pod(node1), cluster.add_pod(node2)]
        subnets = {node.address: node.subnet_env()["FLANNEL_SUBNET"].replace(".1/", ".0/") for node in (node1, node2)}
        wait_for_route(node1, subnets[node2.address])
        out = tmp_path / "net.svg"
        caches = ["--cni-cache-dir", str(node1.home / "cache"), "--cni-cache-dir", str(node2.home / "cache")]
        done = inspect(pycni_bin, node1, "--store-path", str(store), *caches, "--svg", str(out))
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == f"wrote {out} (2 node(s), 3 pod(s))"

        root = ET.fromstring(out.read_text())
        names = {g.get("data-node") for g in root.iterfind(".//svg:g[@class='node']", NS)}
        assert names == {node1.address, node2.address}  # a Flannel lease names its node by PublicIP
        for pod in pods:
            assert pod.name in card(root, pod.node.address) and pod.ip in card(root, pod.node.address)
        for address, subnet in subnets.items():
            assert subnet in card(root, address)
        assert "this node" in card(root, node1.address) and "flannel.1 up" in card(root, node1.address)
        assert "this node" not in card(root, node2.address)
        assert "vxlan ok" in card(root, node2.address)  # node 1's route, neighbour and FDB entry for node 2
        (link,) = root.iterfind(".//svg:g[@class='link']", NS)
        assert {link.get("data-a"), link.get("data-b")} == {node1.address, node2.address}
        assert "VXLAN VNI 1, UDP port 8472" in texts(root)

        # Only node 1's cache: Flannel knows no other node's pods.
        done = inspect(pycni_bin, node1, "--store-path", str(store), caches[0], caches[1], "--svg", str(out))
        assert done.returncode == 0, done.stderr
        root = ET.fromstring(out.read_text())
        assert "no pods known" in card(root, node2.address) and pods[2].ip not in texts(root)

        if shutil.which("rsvg-convert"):
            done = inspect(pycni_bin, node1, "--store-path", str(store), "--png", str(tmp_path / "net.png"))
            assert done.returncode == 0, done.stderr
            assert (tmp_path / "net.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    finally:
        cluster.close()


@pytest.mark.skipif(not os.access(BIRD, os.X_OK), reason="BIRD 2 is not installed (apt-get install bird2)")
def test_inspect_calico_svg_draws_every_node_block_and_pod_with_this_nodes_bgp_sessions(
    netns: NetnsPool, tmp_path: Path, pycni_bin: str, pycni_plugin_dir: str
) -> None:
    cluster = CalicoCluster(netns, tmp_path, pycni_bin, pycni_plugin_dir, agent_args=("--backend", "bird"))
    try:
        with etcd_server(host=ETCD_IP, netns=cluster.underlay):
            node1, node2, node3 = cluster.add_node(1), cluster.add_node(1), cluster.add_node(2)
            pods = [cluster.add_pod(node, serve=False) for node in (node1, node2, node3)]
            bird = str(node1.run_dir / "bird.ctl")
            argv = ["--calico", "--etcd-endpoints", ETCD_URL, "--bird-socket", bird]

            def badges() -> dict[str, list[str]]:
                done = run("ip", "netns", "exec", node1.ns, pycni_bin, "inspect", *argv, "--json", check=False)
                assert done.returncode == 0, done.stderr
                nodes = json.loads(done.stdout)["nodes"]
                return {n["name"]: [f"{b['state']} {b['text']}" for b in n["badges"]] for n in nodes}

            want = {
                "node1": ["ok BGP 2/2 Established", "ok vxlan.calico up"],
                "node2": ["ok BGP Established", f"ok route BGP via {node2.address}"],  # same subnet: BIRD's route
                "node3": ["ok BGP Established", "ok route vxlan"],  # across the router: the agent's VXLAN route
            }
            deadline = time.monotonic() + 40
            while (seen := badges()) != want:
                assert time.monotonic() < deadline, seen
                time.sleep(0.5)

            out = tmp_path / "calico.svg"
            done = run("ip", "netns", "exec", node1.ns, pycni_bin, "inspect", *argv, "--svg", str(out), check=False)
            assert done.returncode == 0, done.stderr
            assert done.stdout.strip() == f"wrote {out} (3 node(s), 3 pod(s))"
            root = ET.fromstring(out.read_text())
            names = {g.get("data-node") for g in root.iterfind(".//svg:g[@class='node']", NS)}
            assert names == {"node1", "node2", "node3"}
            for pod in pods:
                block = ".".join(pod.ip.split(".")[:3])
                assert pod.ip in card(root, pod.node.nodename) and f"block {block}." in card(root, pod.node.nodename)
                assert pod.name in card(root, pod.node.nodename)
            assert "this node" in card(root, "node1")
            links = {
                frozenset((g.get("data-a"), g.get("data-b"))) for g in root.iterfind(".//svg:g[@class='link']", NS)
            }
            assert links == {frozenset(pair) for pair in (("node1", "node2"), ("node1", "node3"), ("node2", "node3"))}
            text = texts(root)
            assert "underlay 198.51.100.0/24" in text and "underlay 203.0.113.0/24" in text
            assert "VXLAN CrossSubnet" in text and "BGP full mesh" in text
    finally:
        cluster.close()
