"""Reachability matrices in the style of the Kubernetes netpol e2e suite (``test/e2e/network/netpol``).

* :class:`TruthTable` is upstream's ``truthtable.go``: a from x to table of
  booleans; :meth:`TruthTable.pretty_print` is its ``PrettyPrint`` (tab
  separated, ``-`` then the column names, ``.`` connected, ``X`` blocked, ``?``
  not observed); :meth:`TruthTable.compare` marks ``.`` where two agree.
* :class:`Reachability` is ``reachability.go``: expectations built with
  ``expect``, ``expect_all_ingress`` (a column), ``expect_all_egress`` (a row),
  ``expect_peer`` (:class:`Peer`, an empty field matching all); observations;
  a summary that ignores loopback (x/a to x/a) as upstream does; and
  :meth:`Reachability.report`, expected, observed and comparison side by side.
* :class:`NetpolModel` is ``model.go``'s cluster: namespaces x, y, z (label
  ``ns: <name>``), pods a, b, c (label ``pod: <name>``, service account
  ``default``) spread over nodes, each serving every port x protocol on a
  container port named ``serve-<port>-<proto>``, with addresses; it yields the
  Namespaces, Pods, endpoints and hosts, and :func:`probe` fills a table from
  an evaluator (later from real probes between namespaces).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property

from pycni.policy import k8s
from pycni.policy.endpoints import Host, IPAddress, WorkloadEndpoint, workload_from_pod
from pycni.policy.evaluate import Evaluator
from pycni.policy.match import Packet


class TruthTable:
    def __init__(self, froms: Sequence[str], tos: Sequence[str], default: bool | None = None) -> None:
        self.froms, self.tos = list(froms), list(tos)
        self.values: dict[str, dict[str, bool]] = {
            f: (dict.fromkeys(tos, default) if default is not None else {}) for f in froms
        }

    def set(self, source: str, target: str, value: bool) -> None:
        if source not in self.values or target not in self.tos:
            raise KeyError(f"{source} -> {target} is not in the table")
        self.values[source][target] = value

    def set_all_from(self, source: str, value: bool) -> None:
        for target in self.tos:
            self.set(source, target, value)

    def set_all_to(self, target: str, value: bool) -> None:
        for source in self.froms:
            self.set(source, target, value)

    def get(self, source: str, target: str) -> bool:
        return self.values[source][target]

    def is_complete(self) -> bool:
        return all(t in self.values[f] for f in self.froms for t in self.tos)

    def compare(self, other: TruthTable) -> TruthTable:
        """A table of agreement: True where both have the same value."""
        if self.froms != other.froms or self.tos != other.tos:
            raise ValueError("cannot compare tables of different rows or columns")
        out = TruthTable(self.froms, self.tos)
        for source, row in self.values.items():
            for target, value in row.items():
                if target in other.values[source]:
                    out.values[source][target] = value == other.values[source][target]
        return out

    def rows(self) -> list[list[str]]:
        """The printed cells: a header row, then one row per source."""
        lines = [["-", *self.tos]]
        for source in self.froms:
            marks = [self._mark(source, target) for target in self.tos]
            lines.append([source, *marks])
        return lines

    def _mark(self, source: str, target: str) -> str:
        value = self.values[source].get(target)
        return "?" if value is None else "." if value else "X"

    def pretty_print(self, indent: str = "") -> str:
        """Upstream's ``PrettyPrint``."""
        return "\n".join(indent + "\t".join(row) for row in self.rows())


def side_by_side(tables: Sequence[tuple[str, TruthTable]], gap: str = "    ") -> str:
    """Tables next to each other under their titles, columns padded (tabs do not line up side by side)."""
    blocks = []
    for title, table in tables:
        rows = table.rows()
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        lines = [" ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
        width = max(len(line) for line in [title, *lines])
        blocks.append([title.ljust(width)] + [line.ljust(width) for line in lines])
    height = max(len(b) for b in blocks)
    return "\n".join(gap.join(b[i] if i < len(b) else " " * len(b[0]) for b in blocks).rstrip() for i in range(height))


@dataclass(frozen=True)
class Peer:
    """Matches pods by namespace and/or name; an empty field matches all."""

    namespace: str = ""
    pod: str = ""

    def matches(self, pod_string: str) -> bool:
        namespace, _, name = pod_string.partition("/")
        return self.namespace in ("", namespace) and self.pod in ("", name)


class Reachability:
    def __init__(self, pods: Sequence[str], default: bool = True) -> None:
        self.pods = list(pods)
        self.expected = TruthTable(pods, pods, default)
        self.observed = TruthTable(pods, pods)

    def expect(self, source: str, target: str, connected: bool) -> None:
        self.expected.set(source, target, connected)

    def expect_all_ingress(self, pod: str, connected: bool) -> None:
        self.expected.set_all_to(pod, connected)

    def expect_all_egress(self, pod: str, connected: bool) -> None:
        self.expected.set_all_from(pod, connected)

    def expect_peer(self, source: Peer, target: Peer, connected: bool) -> None:
        for s in self.pods:
            for t in self.pods:
                if source.matches(s) and target.matches(t):
                    self.expected.set(s, t, connected)

    def allow_loopback(self) -> None:
        for pod in self.pods:
            self.expected.set(pod, pod, True)

    def observe(self, source: str, target: str, connected: bool) -> None:
        self.observed.set(source, target, connected)

    def summary(self, ignore_loopback: bool = True) -> tuple[int, int, int, TruthTable]:
        """(right, wrong, ignored, comparison), as upstream's ``Summary``."""
        comparison = self.expected.compare(self.observed)
        if not comparison.is_complete():
            raise ValueError("observations not complete: observe every pair before comparing")
        right = wrong = ignored = 0
        for source, row in comparison.values.items():
            for target, same in row.items():
                if ignore_loopback and source == target:
                    ignored += 1
                elif same:
                    right += 1
                else:
                    wrong += 1
        return right, wrong, ignored, comparison

    def report(self, ignore_loopback: bool = True) -> str:
        right, wrong, ignored, comparison = self.summary(ignore_loopback)
        head = f"reachability: correct:{right}, incorrect:{wrong}, result={'true' if wrong == 0 else 'false'}"
        if ignored:
            head += f" ({ignored} loopback cases ignored)"
        tables = [("expected:", self.expected), ("observed:", self.observed), ("comparison:", comparison)]
        return f"{head}\n\n{side_by_side(tables)}"


@dataclass(frozen=True)
class NetpolModel:
    namespaces: tuple[str, ...] = ("x", "y", "z")
    pods: tuple[str, ...] = ("a", "b", "c")
    ports: tuple[int, ...] = (80, 81)
    protocols: tuple[str, ...] = ("TCP", "UDP")
    nodes: tuple[str, ...] = ("node-1", "node-2")
    pod_network: str = "10.244.0.0/16"
    node_network: str = "198.51.100.0/24"
    # Where real pods are: (pod string, node, address) for every pod, and (node, address) for every
    # node; empty for the model's own placement (round-robin) and node addresses.
    placement: tuple[tuple[str, str, str], ...] = ()
    node_addresses: tuple[tuple[str, str], ...] = ()

    def pod_strings(self) -> list[str]:
        return [f"{ns}/{pod}" for ns in self.namespaces for pod in self.pods]

    @cached_property
    def _placement(self) -> dict[str, tuple[str, IPAddress]]:
        """Pod -> (node, address): round-robin over the nodes, node i's pods from the i-th /24 of the network."""
        if self.placement:
            return {pod: (node, ipaddress.ip_address(address)) for pod, node, address in self.placement}
        network = ipaddress.ip_network(self.pod_network)
        out: dict[str, tuple[str, IPAddress]] = {}
        for number, pod in enumerate(self.pod_strings()):
            node = number % len(self.nodes)
            value = int(network.network_address) + node * 256 + 2 + number // len(self.nodes)
            address = ipaddress.IPv4Address(value) if network.version == 4 else ipaddress.IPv6Address(value)
            out[pod] = (self.nodes[node], address)
        return out

    def node_of(self, pod_string: str) -> str:
        return self._placement[pod_string][0]

    def ip_of(self, pod_string: str) -> IPAddress:
        return self._placement[pod_string][1]

    def node_ip(self, node: str) -> IPAddress:
        if self.node_addresses:
            return ipaddress.ip_address(dict(self.node_addresses)[node])
        return ipaddress.ip_network(self.node_network)[10 + self.nodes.index(node)]

    def namespace_objects(self) -> list[k8s.Namespace]:
        return [k8s.namespace(ns, {"ns": ns}) for ns in self.namespaces]

    def pod_object(self, pod_string: str) -> k8s.Pod:
        namespace, _, name = pod_string.partition("/")
        ports = tuple(
            k8s.ContainerPort(f"serve-{port}-{protocol.lower()}", port, protocol)
            for port in self.ports
            for protocol in self.protocols
        )
        ips = (self.ip_of(pod_string),)
        return k8s.Pod(namespace, name, {"pod": name}, "default", self.node_of(pod_string), False, ips, ports)

    def pod_objects(self) -> list[k8s.Pod]:
        return [self.pod_object(p) for p in self.pod_strings()]

    def endpoints(self) -> list[WorkloadEndpoint]:
        return [workload_from_pod(pod) for pod in self.pod_objects()]

    def hosts(self) -> list[Host]:
        return [Host(node, (self.node_ip(node),)) for node in self.nodes]


def probe(model: NetpolModel, connected: Callable[[str, str], bool], pods: Iterable[str] | None = None) -> TruthTable:
    """Observe every (from, to) pair with ``connected``."""
    names = list(pods) if pods is not None else model.pod_strings()
    table = TruthTable(names, names)
    for source in names:
        for target in names:
            table.set(source, target, connected(source, target))
    return table


def evaluator_probe(model: NetpolModel, evaluator: Evaluator, port: int, protocol: str) -> Callable[[str, str], bool]:
    """``connected(from, to)`` answered by the evaluator for the first packet to ``port``/``protocol``."""

    def connected(source: str, target: str) -> bool:
        packet = Packet.make(model.ip_of(source), model.ip_of(target), protocol, port)
        return evaluator.evaluate(packet).allowed

    return connected
