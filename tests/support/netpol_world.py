"""The netpol e2e model on real nodes: the World of :mod:`tests.support.netpol_scenarios` with real pods.

Namespaces x, y, z and Pods a, b, c (labels and named container ports as
upstream's model) are stored with ``pycni calicoctl apply`` (the stand-ins of
the Kubernetes objects), then each pod is made by the real ``calico`` plugin
with ``K8S_POD_NAMESPACE``/``K8S_POD_NAME``, round-robin over the cluster's
nodes, and serves TCP and UDP on every port the scenarios probe. Every change
goes to the datastore through ``calicoctl``'s code (as a user makes it; in a
helper process, :mod:`tests.support.calicoctl_applier`) and to a
mirror :class:`~tests.support.netpol_scenarios.EvaluatorWorld` built with the
real addresses; :meth:`RealWorld.validate` first requires the evaluator to
agree with upstream's expectation, then probes every pair for real until the
observed matrix agrees too (policy reaches the nodes within a moment) or the
deadline passes, and fails with upstream's three tables side by side.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

from pycni.policy.matrix import NetpolModel, Reachability
from tests.support.calico_cluster import CalicoCluster, Pod
from tests.support.calicoctl_applier import Applier
from tests.support.netns import NetnsPool
from tests.support.netpol_probe import Cell, Servers, probe
from tests.support.netpol_scenarios import MODEL, EvaluatorWorld

PROBED_PORTS = (80, 81, 53)  # the model's ports, and 53 for the DNS-like egress scenario
FIRST_TIMEOUT, LAST_TIMEOUT = 0.4, 2.0  # an answered probe takes milliseconds; a busy machine gets more
CONVERGENCE = 10.0  # seconds for a change to be enforced on every node


class RealWorld:
    def __init__(self, cluster: CalicoCluster, model: NetpolModel = MODEL) -> None:
        self.cluster = cluster
        self.calicoctl = Applier(cluster)  # calicoctl's code, without an interpreter start per change
        nodes = cluster.nodes
        self.model = NetpolModel(nodes=tuple(n.nodename for n in nodes), node_addresses=_hosts(cluster))
        placement = {pod: nodes[number % len(nodes)] for number, pod in enumerate(model.pod_strings())}
        self._apply_all([_namespace_manifest(ns, {"ns": ns}) for ns in model.namespaces])
        self._apply_all(
            [self._pod_manifest(pod, {"pod": pod.split("/")[1]}, placement[pod].nodename) for pod in placement]
        )
        self.pods: dict[str, Pod] = {}
        for pod, node in placement.items():
            namespace, name = pod.split("/")
            self.pods[pod] = cluster.add_pod(node, k8s=(namespace, name), serve=False)
        self.model = NetpolModel(
            nodes=self.model.nodes,
            node_addresses=self.model.node_addresses,
            placement=tuple((pod, placement[pod].nodename, self.pods[pod].ip) for pod in placement),
        )
        self.namespace_of = {pod: NetnsPool.path(made.name) for pod, made in self.pods.items()}
        self.servers = Servers(self.namespace_of.values(), PROBED_PORTS)
        self.mirror = EvaluatorWorld(self.model)
        self._policies: list[dict[str, Any]] = []
        self._relabelled: set[tuple[str, str]] = set()
        self.probe_rounds = 0

    # -- the World protocol ---------------------------------------------------------

    def apply(self, document: dict[str, Any]) -> None:
        self.mirror.apply(document)
        self._apply_all([document])
        key = (document["metadata"]["namespace"], document["metadata"]["name"])
        self._policies = [p for p in self._policies if (p["metadata"]["namespace"], p["metadata"]["name"]) != key]
        self._policies.append(json.loads(json.dumps(document)))

    def delete_all_policies(self) -> None:
        self.mirror.delete_all_policies()
        if self._policies:
            self.calicoctl("delete", self._policies)
        self._policies.clear()

    def set_namespace_labels(self, name: str, labels: Mapping[str, str]) -> None:
        self.mirror.set_namespace_labels(name, labels)
        self._apply_all([_namespace_manifest(name, labels)])
        self._relabelled.add(("Namespace", name))

    def set_pod_labels(self, key: str, labels: Mapping[str, str]) -> None:
        self.mirror.set_pod_labels(key, labels)
        self._apply_all([self._pod_manifest(key, labels, self.model.node_of(key))])
        self._relabelled.add(("Pod", key))

    def ip_of(self, pod: str) -> str:
        return self.pods[pod].ip

    def validate(self, expected: Reachability, port: int, protocol: str = "TCP") -> None:
        self.mirror.validate(expected, port, protocol)  # the evaluator agrees with upstream first
        names = self.model.pod_strings()
        cells = [
            Cell(source, target, self.pods[target].ip, port, protocol)
            for source in names
            for target in names
            if source != target
        ]
        deadline, timeout = time.monotonic() + CONVERGENCE, FIRST_TIMEOUT
        while True:
            answers = probe(cells, self.namespace_of, timeout)
            self.probe_rounds += 1
            wrong = [c for c in cells if answers[c] != expected.expected.get(c.source, c.target)]
            if not wrong or time.monotonic() > deadline:
                break
            timeout = min(timeout * 2, LAST_TIMEOUT)
            time.sleep(0.05)
        for cell, connected in answers.items():
            expected.observe(cell.source, cell.target, connected)
        for pod in names:  # loopback is not probed, as upstream ignores it
            expected.observe(pod, pod, expected.expected.get(pod, pod))
        assert not wrong, f"{port}/{protocol} on real pods: {len(wrong)} wrong cells\n{expected.report()}"

    # -- between scenarios ----------------------------------------------------------

    def reset(self) -> None:
        """Back to the model: no policies, every relabelled object as it was, a fresh mirror."""
        self.delete_all_policies()
        restore = []
        for kind, name in sorted(self._relabelled):
            if kind == "Namespace":
                restore.append(_namespace_manifest(name, {"ns": name}))
            else:
                restore.append(self._pod_manifest(name, {"pod": name.split("/")[1]}, self.model.node_of(name)))
        if restore:
            self._apply_all(restore)
        self._relabelled.clear()
        self.mirror = EvaluatorWorld(self.model)

    def close(self) -> None:
        try:
            self.servers.close()
        finally:
            self.calicoctl.close()

    # -- manifests ------------------------------------------------------------------

    def _apply_all(self, documents: list[dict[str, Any]]) -> None:
        self.calicoctl("apply", documents)

    def _pod_manifest(self, pod: str, labels: Mapping[str, str], node: str) -> dict[str, Any]:
        namespace, name = pod.split("/")
        ports = [
            {"name": f"serve-{port}-{protocol.lower()}", "containerPort": port, "protocol": protocol}
            for port in MODEL.ports
            for protocol in MODEL.protocols
        ]
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "labels": dict(labels)},
            "spec": {"nodeName": node, "containers": [{"name": "c", "ports": ports}]},
        }


def _namespace_manifest(name: str, labels: Mapping[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": dict(labels)}}


def _hosts(cluster: CalicoCluster) -> tuple[tuple[str, str], ...]:
    return tuple((node.nodename, node.address) for node in cluster.nodes)
