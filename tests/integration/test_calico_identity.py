"""Workload identity in the ``calico`` plugin: the stored Pod names the endpoint, and policy follows it.

    node ns:   up0 198.51.100.2/24 with a default route (so proxy ARP answers for 169.254.1.1), the pods'
               cali* veths made by the plugin
    pod ns:    eth0 from the plugin (calico-ipam on the embedded sqlite store)

The datastore is seeded as a user seeds it, with ``pycni calicoctl apply``: an
IPPool, the Node, a Namespace and Pods. ADD (the plugin executable, in the
node's namespace, as a runtime runs it) finds the Pod from ``K8S_POD_NAMESPACE``
and ``K8S_POD_NAME``: the WorkloadEndpoint carries its labels, service account
and named ports; a pod with no stored Pod takes ``args.cni.labels``. Then the
endpoints, read back from the store with a Kubernetes NetworkPolicy naming the
port by name, are rendered into the node's nftables and real TCP connections
between the pods are allowed and denied as the evaluator says.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pycni.datastore.sqlite import SqliteDatastore
from pycni.fabric.calico.resources import KubernetesObjectClient, ResourceClient
from pycni.net import netns
from pycni.nft import objects
from pycni.policy import nft_render
from pycni.policy.cluster import ClusterState
from pycni.policy.endpoints import workload_from_calico
from pycni.policy.match import Packet
from tests.support.cni import Call
from tests.support.netns import NetnsPool, netns_pool, run
from tests.support.tcp import connects, listen

NETWORK = "k8s-pod-network"
SEED = """\
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: pool}
spec: {cidr: 10.244.0.0/16, blockSize: 26}
---
apiVersion: projectcalico.org/v3
kind: Node
metadata: {name: node-1}
spec: {bgp: {ipv4Address: 198.51.100.2/24}}
---
apiVersion: v1
kind: Namespace
metadata: {name: x, labels: {team: red}}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: x, labels: {app: web, tier: front}}
spec:
  nodeName: node-1
  serviceAccountName: web-sa
  containers:
  - name: server
    ports:
    - {name: http, containerPort: 8080}
    - {containerPort: 9090}
    - {name: metrics, containerPort: 9100, protocol: TCP, hostPort: 9100}
---
apiVersion: v1
kind: Pod
metadata: {name: labelled, namespace: x, labels: {app: from-the-pod}}
spec: {nodeName: node-1, containers: [{name: c}]}
"""


@dataclass
class Lab:
    pool: NetnsPool
    node: str
    db: str
    plugin_dir: str
    tmp: Path

    def calicoctl(self, *args: str, stdin: str | None = None) -> str:
        pycni = os.path.join(os.path.dirname(sys.executable), "pycni")
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "PYCNI_CALICO_STORE": self.db}
        proc = subprocess.run(
            [pycni, "calicoctl", *args], input=stdin, env=env, capture_output=True, text=True, timeout=60, check=False
        )
        assert proc.returncode == 0, (args, proc.stdout, proc.stderr)
        return proc.stdout

    def netconf(self, **extra: Any) -> dict[str, Any]:
        return {
            "cniVersion": "1.0.0",
            "name": NETWORK,
            "type": "calico",
            "datastore_type": "pycni",
            "pycni_store_path": self.db,
            "nodename": "node-1",
            "nodename_file_optional": True,
            "ipam_lock_file": str(self.tmp / "ipam.lock"),
            "mtu": 1450,
            "ipam": {"type": "calico-ipam"},
            "policy": {"type": "k8s"},
            **extra,
        }

    def call(self, command: str, pod_ns: str, cid: str, pod: tuple[str, str], conf: dict[str, Any]) -> Call:
        env = {
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            "CNI_COMMAND": command,
            "CNI_CONTAINERID": cid,
            "CNI_NETNS": self.pool.path(pod_ns),
            "CNI_IFNAME": "eth0",
            "CNI_ARGS": f"IgnoreUnknown=1;K8S_POD_NAMESPACE={pod[0]};K8S_POD_NAME={pod[1]}",
            "CNI_PATH": self.plugin_dir,
            "PYCNI_NO_DAEMON": "1",
        }
        proc = subprocess.run(
            ["ip", "netns", "exec", self.node, os.path.join(self.plugin_dir, "calico")],
            input=json.dumps(conf).encode(),
            env=env,
            capture_output=True,
            check=False,
            timeout=120,
        )
        out = proc.stdout.decode()
        return Call(proc.returncode, json.loads(out) if out.strip() else None, proc.stderr.decode())

    def endpoint(self, namespace: str, pod: str) -> dict[str, Any]:
        store = SqliteDatastore(self.db)
        try:
            found = [
                w for w in ResourceClient(store).list("WorkloadEndpoint", namespace)[0] if w.spec.get("pod") == pod
            ]
        finally:
            store.close()
        assert len(found) == 1, found
        return found[0].to_dict()


@pytest.fixture
def lab(pycni_plugin_dir: str, tmp_path: Path) -> Iterator[Lab]:
    with netns_pool("pytid") as pool:
        node = pool.new("node")
        run("ip", "link", "add", "up0", "type", "veth", "peer", "name", "up1", netns=node)
        run("ip", "addr", "add", "198.51.100.2/24", "dev", "up0", netns=node)
        run("ip", "link", "set", "up0", "up", netns=node)
        run("ip", "link", "set", "up1", "up", netns=node)
        run("ip", "route", "add", "default", "via", "198.51.100.1", netns=node)
        made = Lab(pool, node, str(tmp_path / "store" / "calico.db"), pycni_plugin_dir, tmp_path)
        made.calicoctl("apply", "-f", "-", stdin=SEED)
        yield made


def test_the_stored_pod_names_the_endpoint(lab: Lab) -> None:
    web = lab.pool.new("pod")
    added = lab.call("ADD", web, "c-web", ("x", "web"), lab.netconf())
    assert added.rc == 0, (added.out, added.stderr)
    wep = lab.endpoint("x", "web")
    assert wep["metadata"]["labels"] == {
        "app": "web",
        "projectcalico.org/namespace": "x",
        "projectcalico.org/orchestrator": "k8s",
        "projectcalico.org/serviceaccount": "web-sa",
        "tier": "front",
    }
    spec = wep["spec"]
    assert spec["serviceAccountName"] == "web-sa"
    assert spec["profiles"] == ["kns.x", "ksa.x.web-sa"]
    assert spec["ports"] == [
        {"name": "http", "protocol": "TCP", "port": 8080, "hostPort": 0, "hostIP": ""},
        {"name": "metrics", "protocol": "TCP", "port": 9100, "hostPort": 9100, "hostIP": ""},
    ], "named and host ports, as Calico's converter keeps them (not the unnamed 9090)"
    assert list(spec)[:7] == [
        "orchestrator",
        "node",
        "containerID",
        "pod",
        "endpoint",
        "serviceAccountName",
        "ipNetworks",
    ]
    conf = lab.netconf()
    conf["prevResult"] = added.out
    checked = lab.call("CHECK", web, "c-web", ("x", "web"), conf)
    assert checked.rc == 0, (checked.out, checked.stderr)
    assert lab.call("DEL", web, "c-web", ("x", "web"), lab.netconf()).rc == 0


def test_without_a_stored_pod_the_cni_labels_name_it(lab: Lab) -> None:
    labels = {"cni": {"labels": [{"key": "app", "value": "tool"}]}}
    tool = lab.pool.new("pod")
    assert lab.call("ADD", tool, "c-tool", ("x", "tool"), lab.netconf(args=labels)).rc == 0
    wep = lab.endpoint("x", "tool")
    assert wep["metadata"]["labels"] == {
        "app": "tool",
        "projectcalico.org/namespace": "x",
        "projectcalico.org/orchestrator": "k8s",
    }
    assert wep["spec"]["profiles"] == ["kns.x"] and "ports" not in wep["spec"]
    assert "serviceAccountName" not in wep["spec"]
    stored = lab.pool.new("pod")
    assert lab.call("ADD", stored, "c-lab", ("x", "labelled"), lab.netconf(args=labels)).rc == 0
    assert lab.endpoint("x", "labelled")["metadata"]["labels"]["app"] == "from-the-pod", "the stored Pod comes first"
    assert lab.endpoint("x", "labelled")["spec"]["profiles"] == ["kns.x", "ksa.x.default"]


def address_of(call: Call) -> str:
    assert call.rc == 0, (call.out, call.stderr)
    return str(call.out["ips"][0]["address"]).split("/", maxsplit=1)[0]


def test_policy_follows_the_identity_into_the_kernel(lab: Lab) -> None:
    web, tool = lab.pool.new("pod"), lab.pool.new("pod")
    labels = {"cni": {"labels": [{"key": "app", "value": "tool"}]}}
    web_ip = address_of(lab.call("ADD", web, "c-web", ("x", "web"), lab.netconf()))
    tool_ip = address_of(lab.call("ADD", tool, "c-tool", ("x", "tool"), lab.netconf(args=labels)))
    policy = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "web-from-tool", "namespace": "x"},
        "spec": {
            "podSelector": {"matchLabels": {"app": "web"}},
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "tool"}}}], "ports": [{"port": "http"}]}],
        },
    }
    lab.calicoctl("apply", "-f", "-", stdin=json.dumps(policy))

    store = SqliteDatastore(lab.db)
    try:
        state = ClusterState()
        for document in KubernetesObjectClient(store).documents():
            state.apply(document)
        interfaces = {}
        for wep in ResourceClient(store).list("WorkloadEndpoint")[0]:
            endpoint = workload_from_calico(wep.to_dict())  # Felix's view in etcd mode: the stored endpoints
            state.apply(endpoint)
            interfaces[wep.spec["interfaceName"]] = endpoint.key
    finally:
        store.close()
    evaluator = state.evaluator()
    table = nft_render.render(evaluator, interfaces)
    with netns.entered(NetnsPool.path(lab.node)):
        objects.create(table).apply()
    servers = [listen(ns, port) for ns in (web, tool) for port in (80, 8080)]
    try:
        for source, target, target_ip in ((tool, web, web_ip), (web, tool, tool_ip)):
            for port in (80, 8080):
                src_ip = tool_ip if source == tool else web_ip
                wanted = evaluator.evaluate(Packet.make(src_ip, target_ip, "TCP", port)).allowed
                assert connects(source, target_ip, port) == wanted, (source, target, port, wanted)
        assert connects(tool, web_ip, 8080) and not connects(tool, web_ip, 80), "the Pod's named port, enforced"
    finally:
        for server in servers:
            server.close()
