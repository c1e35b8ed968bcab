"""Kubernetes NetworkPolicy semantics read straight from the API reference, with no Calico in between.

A second, independent opinion for tests and for ``policy explain`` to check
the Calico path (conversion, compiled selectors, tiers) against
(https://kubernetes.io/docs/concepts/services-networking/network-policies/):

* a pod is isolated for a direction when a policy of its namespace selects it
  and lists that direction in policyTypes; a non-isolated direction allows all;
* an isolated direction allows what any selecting policy's rules allow (union);
* a rule allows when one of its peers matches (none: every peer) and one of its
  ports matches (none: every port); a peer's podSelector alone means pods of the
  policy's namespace, with a namespaceSelector pods of the matching namespaces
  (both: AND), an ipBlock addresses in cidr and not in except;
* a named port matches the destination pod's container port of that name and
  protocol; a connection needs egress at the source and ingress at the
  destination; a pod's traffic to itself is allowed.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from pycni.policy import k8s

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class PodView:
    """A pod as the API reference talks about it: namespace, labels, address, container ports."""

    namespace: str
    name: str
    labels: Mapping[str, str]
    ip: IPAddress
    ports: tuple[k8s.ContainerPort, ...] = ()


class Reference:
    def __init__(
        self, policies: Iterable[k8s.NetworkPolicy], namespaces: Iterable[k8s.Namespace], pods: Iterable[PodView]
    ) -> None:
        self.policies = list(policies)
        self.namespace_labels = {ns.name: ns.labels for ns in namespaces}
        self.by_ip = {pod.ip: pod for pod in pods}

    def _selecting(self, pod: PodView, direction: str) -> list[k8s.NetworkPolicy]:
        return [
            p
            for p in self.policies
            if p.namespace == pod.namespace and direction in p.policy_types and p.pod_selector.matches(pod.labels)
        ]

    def _peer_matches(self, peer: k8s.Peer, namespace: str, ip: IPAddress) -> bool:
        if peer.ip_block is not None:
            return peer.ip_block.contains(ip)
        pod = self.by_ip.get(ip)
        if pod is None:
            return False
        if peer.namespace_selector is None:
            in_namespace = pod.namespace == namespace
        else:
            in_namespace = peer.namespace_selector.matches(self.namespace_labels.get(pod.namespace, {}))
        return in_namespace and (peer.pod_selector is None or peer.pod_selector.matches(pod.labels))

    @staticmethod
    def _port_matches(port: k8s.PolicyPort, target: PodView | None, protocol: str, number: int) -> bool:
        if port.protocol != protocol:
            return False
        if port.port is None:
            return True
        if isinstance(port.port, int):
            return port.port <= number <= (port.end_port if port.end_port is not None else port.port)
        return target is not None and any(
            c.name == port.port and c.protocol == protocol and c.container_port == number for c in target.ports
        )

    def _direction_allows(
        self, pod: PodView, direction: str, peer_ip: IPAddress, target: PodView | None, protocol: str, port: int
    ) -> bool:
        chosen = self._selecting(pod, direction)
        if not chosen:
            return True
        for policy in chosen:
            rules = policy.ingress if direction == "Ingress" else policy.egress
            for rule in rules:
                peers_ok = not rule.peers or any(self._peer_matches(p, policy.namespace, peer_ip) for p in rule.peers)
                ports_ok = not rule.ports or any(self._port_matches(p, target, protocol, port) for p in rule.ports)
                if peers_ok and ports_ok:
                    return True
        return False

    def allowed(self, src: IPAddress, dst: IPAddress, protocol: str, port: int) -> bool:
        """Is a new connection from ``src`` to ``dst`` on ``protocol``/``port`` allowed?"""
        source, target = self.by_ip.get(src), self.by_ip.get(dst)
        if source is not None and source is target:
            return True
        if source is not None and not self._direction_allows(source, "Egress", dst, target, protocol, port):
            return False
        return target is None or self._direction_allows(target, "Ingress", src, target, protocol, port)
