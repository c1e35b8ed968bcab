"""The policy table in a real kernel: real TCP and UDP connections between pods, cell by cell against the evaluator.

    node ns:   ip_forward, 10.99.0.1/32 on lo (the node's address), one cali* veth per pod
               (proxy ARP, a /32 route each), the pycni-policy table
    pod ns:    eth0 10.65.0.<n>/32, default dev eth0 (Calico's routed veth, without the 169.254.1.1 hop)

Pods x/a, x/b (named port ``http`` = 8080), y/c are the node's workloads; y/d
is cabled as cali0d but its interface is not in the table (fail closed). In
every namespace listeners on TCP 80, 8080, 9000 and UDP 53, 5353 answer; a
probe is a TCP connect or a UDP echo from the source's namespace (the node's
from 10.99.0.1), with a deadline: no answer is a drop. Three phases of
policies (Kubernetes; Calico tiers with Pass, Log, Deny, network sets; an
unrelated change and a denying one) are applied incrementally with
:func:`pycni.nft.objects.diff`, and every cell must be what the evaluator
says. A TCP connection made before an update keeps working after it. The
incremental path and a fresh install of the same table list identically in
the kernel. Generated Calico policy sets (tiers with Pass or Deny,
Allow/Deny/Pass/Log rules on selectors, ``global()``, nets, notSelector,
numeric, ranged and named ports, notPorts) are applied one after another as
diffs, and every cell again matches the evaluator. Everything lives in
namespaces the test made.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import selectors
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from pycni.net import netns
from pycni.nft import objects
from pycni.policy import k8s, nft_names, nft_render
from pycni.policy.cluster import ClusterState
from pycni.policy.endpoints import Host
from pycni.policy.match import Packet
from tests.support.netns import NetnsPool, netns_pool, run

NODE_IP = "10.99.0.1"
PODS = {"x/a": ("10.65.0.2", "cali0a"), "x/b": ("10.65.0.3", "cali0b"), "y/c": ("10.65.0.4", "cali0c")}
UNKNOWN = ("y/d", "10.65.0.5", "cali0d")
TCP_PORTS = (80, 8080, 9000)
UDP_PORTS = (53, 5353)
PROBES = [("TCP", p) for p in TCP_PORTS] + [("UDP", p) for p in UDP_PORTS]
DEADLINE = 1.5


@dataclass
class Place:
    key: str
    ip: str
    ns: str

    @property
    def path(self) -> str:
        return NetnsPool.path(self.ns)


class Servers:
    """Listeners in every namespace; one thread accepts TCP (keeping the connections, echoing) and echoes UDP."""

    def __init__(self) -> None:
        self.selector = selectors.DefaultSelector()
        self.sockets: list[socket.socket] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def listen(self, place: Place) -> None:
        with netns.entered(place.path):
            for port in TCP_PORTS:
                tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                tcp.bind(("0.0.0.0", port))
                tcp.listen(512)
                self._register(tcp, "accept")
            for port in UDP_PORTS:
                udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                udp.bind(("0.0.0.0", port))
                self._register(udp, "udp")

    def _register(self, sock: socket.socket, role: str) -> None:
        sock.setblocking(False)
        self.sockets.append(sock)
        self.selector.register(sock, selectors.EVENT_READ, role)

    def _serve(self) -> None:
        while not self.stop.is_set():
            for key, _ in self.selector.select(timeout=0.1):
                sock: socket.socket = key.fileobj  # type: ignore[assignment]
                with contextlib.suppress(OSError):
                    if key.data == "accept":
                        conn, _ = sock.accept()
                        self._register(conn, "echo")
                    elif key.data == "udp":
                        data, peer = sock.recvfrom(2048)
                        sock.sendto(data, peer)
                    else:
                        data = sock.recv(2048)
                        if data:
                            sock.sendall(data)
                        else:
                            self.selector.unregister(sock)
                            sock.close()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=5)
        for sock in self.sockets:
            sock.close()


@dataclass
class Lab:
    node: Place
    pods: dict[str, Place]
    unknown: Place
    interfaces: dict[str, str]

    def places(self) -> list[Place]:
        return [self.node, *self.pods.values(), self.unknown]

    def apply(self, tx: objects.Transaction) -> float:
        started = time.perf_counter()
        with netns.entered(self.node.path):
            tx.apply("apply the policy table")
        return time.perf_counter() - started

    def install(self, table: objects.Table) -> objects.Transaction:
        """A test's starting point: whatever an earlier test left replaced by ``table`` (one transaction)."""
        fresh = objects.create(table)
        fresh.ops[1:1] = [objects.Op("delete", "table"), objects.Op("add", "table")]
        self.apply(fresh)
        return fresh

    def client(self, source: Place, kind: int) -> socket.socket:
        with netns.entered(source.path):
            sock = socket.socket(socket.AF_INET, kind)
        if source is self.node:
            sock.bind((NODE_IP, 0))
        sock.setblocking(False)
        return sock


def _cable(pool: NetnsPool, node: str, key: str, ip: str, interface: str) -> Place:
    pod = pool.new("pod")
    run("ip", "link", "add", interface, "type", "veth", "peer", "name", "eth0", "netns", pod, netns=node)
    run("sysctl", "-qw", f"net.ipv4.conf.{interface}.proxy_arp=1", netns=node)
    run("ip", "link", "set", interface, "up", netns=node)
    run("ip", "route", "add", f"{ip}/32", "dev", interface, "scope", "link", netns=node)
    run("ip", "addr", "add", f"{ip}/32", "dev", "eth0", netns=pod)
    run("ip", "link", "set", "eth0", "up", netns=pod)
    run("ip", "route", "add", "default", "dev", "eth0", netns=pod)
    return Place(key, ip, pod)


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with netns_pool("pytpol") as pool:
        node = pool.new("node")
        run("sysctl", "-qw", "net.ipv4.ip_forward=1", netns=node)
        run("ip", "addr", "add", f"{NODE_IP}/32", "dev", "lo", netns=node)
        pods = {key: _cable(pool, node, key, ip, interface) for key, (ip, interface) in PODS.items()}
        unknown = _cable(pool, node, *UNKNOWN)
        lab = Lab(Place("node", NODE_IP, node), pods, unknown, {iface: key for key, (_, iface) in PODS.items()})
        servers = Servers()
        for place in lab.places():
            servers.listen(place)
        servers.thread.start()
        try:
            yield lab
        finally:
            servers.close()


# -- the cluster's objects -------------------------------------------------------------------


def pod(key: str, ip: str, labels: dict[str, str], ports: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    namespace, name = key.split("/")
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {"nodeName": "node-1", "containers": [{"name": "c", "ports": ports or []}]},
        "status": {"podIPs": [{"ip": ip}]},
    }


def knp(name: str, namespace: str, spec: dict[str, Any]) -> dict[str, Any]:
    meta = {"name": name, "namespace": namespace}
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": meta, "spec": spec}


def calico(kind: str, name: str, spec: dict[str, Any], **metadata: Any) -> dict[str, Any]:
    return {"apiVersion": "projectcalico.org/v3", "kind": kind, "metadata": {"name": name, **metadata}, "spec": spec}


def cluster() -> ClusterState:
    state = ClusterState()
    for namespace in ("x", "y"):
        state.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    state.apply(pod("x/a", "10.65.0.2", {"app": "a"}))
    state.apply(pod("x/b", "10.65.0.3", {"app": "b"}, [{"name": "http", "containerPort": 8080}]))
    state.apply(pod("y/c", "10.65.0.4", {"app": "c"}))
    state.apply(pod(UNKNOWN[0], UNKNOWN[1], {"app": "d"}))
    state.apply(Host("node-1", (ipaddress.ip_address(NODE_IP),)))
    return state


def kubernetes_phase(state: ClusterState) -> None:
    state.apply(knp("deny", "x", {"podSelector": {}, "policyTypes": ["Ingress"]}))
    a_peer = {"podSelector": {"matchLabels": {"app": "a"}}}
    state.apply(
        knp(
            "b-from-a",
            "x",
            {
                "podSelector": {"matchLabels": {"app": "b"}},
                "ingress": [{"from": [a_peer], "ports": [{"port": "http"}]}],
            },
        )
    )
    y_peer = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "y"}}}
    state.apply(
        knp(
            "a-from-y",
            "x",
            {"podSelector": {"matchLabels": {"app": "a"}}, "ingress": [{"from": [y_peer], "ports": [{"port": 80}]}]},
        )
    )
    x_peer = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "x"}}}
    state.apply(
        knp(
            "c-out",
            "y",
            {
                "podSelector": {"matchLabels": {"app": "c"}},
                "policyTypes": ["Egress"],
                "egress": [{"to": [x_peer], "ports": [{"port": 80}, {"port": 53, "protocol": "UDP"}]}],
            },
        )
    )


def calico_phase(state: ClusterState) -> None:
    state.apply(calico("Tier", "security", {"order": 100, "defaultAction": "Pass"}))
    state.apply(calico("GlobalNetworkSet", "infra", {"nets": ["10.99.0.0/24"]}, labels={"role": "infra"}))
    state.apply(
        calico(
            "GlobalNetworkPolicy",
            "security.guard",
            {
                "tier": "security",
                "order": 10,
                "selector": "all()",
                "types": ["Ingress", "Egress"],
                "ingress": [
                    {
                        "action": "Deny",
                        "protocol": "TCP",
                        "source": {"nets": ["10.65.0.4/32"]},
                        "destination": {"ports": [80]},
                    },
                    {"action": "Pass"},
                ],
                "egress": [
                    {"action": "Log", "protocol": "TCP", "destination": {"ports": [80]}},
                    {"action": "Deny", "protocol": "TCP", "destination": {"ports": [9000]}},
                    {"action": "Pass"},
                ],
            },
        )
    )
    state.apply(
        calico(
            "NetworkPolicy",
            "c-to-infra",
            {
                "order": 50,
                "selector": "app == 'c'",
                "types": ["Egress"],
                "egress": [
                    {"action": "Allow", "destination": {"selector": "role == 'infra'", "namespaceSelector": "global()"}}
                ],
            },
            namespace="y",
        )
    )
    state.apply(
        calico(
            "NetworkPolicy",
            "c-mdns",
            {
                "selector": "app == 'c'",
                "ingress": [
                    {
                        "action": "Allow",
                        "protocol": "UDP",
                        "source": {"notSelector": "app == 'a'"},
                        "destination": {"ports": [5353]},
                    }
                ],
            },
            namespace="y",
        )
    )


# -- probing ---------------------------------------------------------------------------------

Cell = tuple[str, str, str, int]


def probe(lab: Lab, cells: list[Cell]) -> dict[Cell, bool]:
    """Every cell at once: TCP connects and UDP echoes in flight together, each answered or not by the deadline."""
    places = {p.key: p for p in lab.places()}
    pending: dict[int, tuple[socket.socket, Cell]] = {}
    result: dict[Cell, bool] = {}
    chooser = selectors.DefaultSelector()
    for cell in cells:
        source, target, protocol, port = cell
        sock = lab.client(places[source], socket.SOCK_STREAM if protocol == "TCP" else socket.SOCK_DGRAM)
        address = (places[target].ip, port)
        if protocol == "TCP":
            sock.connect_ex(address)
            chooser.register(sock, selectors.EVENT_WRITE)
        else:
            sock.connect(address)
            sock.send(b"ping")
            chooser.register(sock, selectors.EVENT_READ)
        pending[sock.fileno()] = (sock, cell)
    deadline = time.monotonic() + DEADLINE
    while pending and time.monotonic() < deadline:
        for key, _ in chooser.select(timeout=max(0.0, deadline - time.monotonic())):
            sock, cell = pending.pop(key.fd)
            chooser.unregister(sock)
            if cell[2] == "TCP":
                result[cell] = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
            else:
                try:
                    result[cell] = sock.recv(64) == b"ping"
                except OSError:
                    result[cell] = False
            sock.close()
    for sock, cell in pending.values():
        result[cell] = False
        sock.close()
    chooser.close()
    return result


def expected(lab: Lab, state: ClusterState, cells: list[Cell]) -> dict[Cell, bool]:
    """The evaluator's verdicts; the unknown interface's pod is dropped both ways (only the node reaches it)."""
    evaluator = state.evaluator()
    places = {p.key: p for p in lab.places()}
    out = {}
    for cell in cells:
        source, target, protocol, port = cell
        if UNKNOWN[0] in (source, target):
            out[cell] = source == "node"
            continue
        out[cell] = evaluator.evaluate(Packet.make(places[source].ip, places[target].ip, protocol, port)).allowed
    return out


def all_cells(lab: Lab) -> list[Cell]:
    keys = [p.key for p in lab.places()]
    return [(s, t, proto, port) for s in keys for t in keys if s != t for proto, port in PROBES]


def check_matrix(lab: Lab, state: ClusterState) -> dict[Cell, bool]:
    cells = all_cells(lab)
    seen, wanted = probe(lab, cells), expected(lab, state, cells)
    wrong = {c: (seen[c], wanted[c]) for c in cells if seen[c] != wanted[c]}
    assert not wrong, f"kernel vs evaluator (seen, expected): {wrong}"
    return seen


def listing(ns: str) -> Any:
    """``nft -j list table`` without handles, objects and elements sorted: what the kernel holds, comparably."""
    text = run("nft", "-j", "list", "table", "inet", nft_names.TABLE, netns=ns).stdout

    def clean(value: Any) -> Any:
        if isinstance(value, dict):
            out = {k: clean(v) for k, v in value.items() if k != "handle"}
            if "elem" in out and isinstance(out["elem"], list):
                out["elem"] = sorted(out["elem"], key=json.dumps)
            return out
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value

    def order(item: dict[str, Any]) -> tuple[str, str, str]:
        kind, body = next(iter(item.items()))
        return kind, body.get("chain", ""), body.get("name", "")

    # The kernel lists objects in creation order: sorted (stably, so each chain keeps its rules' order).
    return sorted(clean(json.loads(text)["nftables"][1:]), key=order)  # [0] is the nft version


# -- the tests -------------------------------------------------------------------------------


def test_connections_follow_the_evaluator_through_incremental_updates(lab: Lab) -> None:
    state = cluster()
    table = nft_render.render(state.evaluator(), lab.interfaces)
    started = time.perf_counter()
    lab.install(table)
    took = time.perf_counter() - started
    open_before = check_matrix(lab, state)
    assert all(open_before[(s, t, p, n)] for s, t, p, n in open_before if UNKNOWN[0] not in (s, t)), (
        "no policy yet: the namespace profiles allow everything"
    )
    assert not open_before[(UNKNOWN[0], "x/a", "TCP", 80)] and not open_before[("x/a", UNKNOWN[0], "TCP", 80)]
    assert open_before[("node", UNKNOWN[0], "TCP", 80)]
    print(f"create: {took * 1000:.1f} ms for {len(objects.create(table))} operations")

    for phase in (kubernetes_phase, calico_phase):
        phase(state)
        after = nft_render.render(state.evaluator(), lab.interfaces)
        tx = objects.diff(table, after)
        took = lab.apply(tx)
        print(f"{phase.__name__}: {len(tx)} operations in {took * 1000:.1f} ms")
        seen = check_matrix(lab, state)
        table = after
        assert not all(seen.values())
    assert seen[("y/c", "node", "TCP", 80)], "the network set lets c reach the node"
    assert not seen[("y/c", "x/a", "TCP", 80)], "the security tier denies c -> a:80 before the default tier"
    assert not seen[("x/b", "y/c", "UDP", 5353)], "a namespaced rule's notSelector only picks from its namespace"
    assert seen[("node", "y/c", "UDP", 5353)], "the node's own traffic to its pods is not policed"
    assert seen[("x/a", "x/b", "TCP", 8080)] and not seen[("x/a", "x/b", "TCP", 80)], "the named port"


def test_an_established_connection_survives_updates(lab: Lab) -> None:
    state = cluster()
    kubernetes_phase(state)
    table = nft_render.render(state.evaluator(), lab.interfaces)
    lab.install(table)
    a, b = lab.pods["x/a"], lab.pods["x/b"]
    with netns.entered(a.path):
        conn = socket.create_connection((b.ip, 8080), timeout=DEADLINE)
    try:

        def echoes() -> bool:
            conn.sendall(b"still here")
            return conn.recv(64) == b"still here"

        assert echoes()
        allow_all = {"selector": "app == 'c'", "ingress": [{"action": "Allow"}]}
        state.apply(calico("NetworkPolicy", "c-only", allow_all, namespace="y"))
        unrelated = nft_render.render(state.evaluator(), lab.interfaces)
        tx = objects.diff(table, unrelated)
        assert {op.name for op in tx.ops if op.verb == "flush"} == {"cali-tw-cali0c"}, tx.render()
        lab.apply(tx)
        assert echoes(), "an update that does not concern the flow leaves it alone"
        state.delete(k8s.parse_network_policy(knp("b-from-a", "x", {"podSelector": {}})))
        denying = nft_render.render(state.evaluator(), lab.interfaces)
        lab.apply(objects.diff(unrelated, denying))
        assert probe(lab, [("x/a", "x/b", "TCP", 8080)]) == {("x/a", "x/b", "TCP", 8080): False}, (
            "new connections: denied"
        )
        assert echoes(), "the established one rides on conntrack, as in Felix"
    finally:
        conn.close()


def test_incremental_and_fresh_tables_list_the_same_in_the_kernel() -> None:
    steps = [cluster()]
    kubernetes_phase(steps[0])
    second = cluster()
    kubernetes_phase(second)
    calico_phase(second)
    second.set_pod_labels("x/a", {"app": "b"})
    interfaces = {iface: key for key, (_, iface) in PODS.items()}
    before = nft_render.render(steps[0].evaluator(), interfaces)
    after = nft_render.render(second.evaluator(), {**interfaces, "cali0d": UNKNOWN[0]})
    with netns_pool("pytpolk") as pool:
        incremental, fresh = pool.new("inc"), pool.new("fresh")
        with netns.entered(NetnsPool.path(incremental)):
            objects.create(before).apply()
            objects.diff(before, after).apply()
        with netns.entered(NetnsPool.path(fresh)):
            objects.create(after).apply()
        assert listing(incremental) == listing(fresh)
        with netns.entered(NetnsPool.path(incremental)):
            objects.diff(after, before).apply()
        with netns.entered(NetnsPool.path(fresh)):
            again = objects.create(before)
            again.ops[1:1] = [objects.Op("delete", "table"), objects.Op("add", "table")]
            again.apply()
        assert listing(incremental) == listing(fresh)


# -- generated policies, applied one after another ---------------------------------------------

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from tests.support import strategies  # noqa: E402, F401 - pycni's hypothesis profile

SELECTORS = ["all()", "app == 'a'", "app in {'b', 'c'}", "!has(app)", "role == 'infra'"]


@st.composite
def rules(draw: st.DrawFn) -> dict[str, Any]:
    rule: dict[str, Any] = {"action": draw(st.sampled_from(["Allow", "Deny", "Pass", "Log"]))}
    protocol = draw(st.sampled_from([None, "TCP", "UDP"]))
    source: dict[str, Any] = {}
    destination: dict[str, Any] = {}
    if protocol:
        rule["protocol"] = protocol
        ports = draw(st.lists(st.sampled_from([80, 53, "http", "9000:9100", "5000:6000"]), max_size=2, unique=True))
        if ports:
            destination["ports"] = ports
        if draw(st.integers(0, 3)) == 0:
            destination["notPorts"] = [draw(st.sampled_from([8080, "http"]))]
    if draw(st.booleans()):
        source["selector"] = draw(st.sampled_from(SELECTORS))
        if draw(st.booleans()):
            source["namespaceSelector"] = draw(st.sampled_from(["all()", "global()"]))
    if draw(st.integers(0, 3)) == 0:
        source["nets"] = [draw(st.sampled_from(["10.65.0.2/32", "10.65.0.0/30", "10.99.0.0/24"]))]
    if draw(st.integers(0, 3)) == 0:
        source["notSelector"] = draw(st.sampled_from(SELECTORS))
    rule["source"], rule["destination"] = source, destination
    return rule


@st.composite
def policy_sets(draw: st.DrawFn) -> list[dict[str, Any]]:
    documents: list[dict[str, Any]] = []
    if draw(st.booleans()):
        action = draw(st.sampled_from(["Deny", "Pass"]))
        documents.append(calico("Tier", "t1", {"order": 100, "defaultAction": action}))
    for index in range(draw(st.integers(1, 3))):
        tier = draw(st.sampled_from(["default", "t1"])) if documents else "default"
        name = f"p{index}" if tier == "default" else f"t1.p{index}"
        spec = {
            "tier": tier,
            "order": draw(st.sampled_from([10, 100])),
            "selector": draw(st.sampled_from(SELECTORS[:4])),
            "types": draw(st.sampled_from([["Ingress"], ["Egress"], ["Ingress", "Egress"]])),
            "ingress": draw(st.lists(rules(), max_size=3)),
            "egress": draw(st.lists(rules(), max_size=2)),
        }
        if draw(st.booleans()):
            documents.append(calico("GlobalNetworkPolicy", name, spec))
        else:
            documents.append(calico("NetworkPolicy", name, spec, namespace=draw(st.sampled_from(["x", "y"]))))
    return documents


@pytest.fixture(scope="module")
def generated(lab: Lab) -> dict[str, Any]:
    """The table the kernel holds between generated examples (each one is applied as a diff from the last)."""
    return {"table": None}


@settings(max_examples=6, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(policy_sets())
def test_generated_policies_in_the_kernel(lab: Lab, generated: dict[str, Any], documents: list[dict[str, Any]]) -> None:
    state = cluster()
    state.apply(calico("GlobalNetworkSet", "infra", {"nets": ["10.99.0.0/24"]}, labels={"role": "infra"}))
    for document in documents:
        state.apply(document)
    table = nft_render.render(state.evaluator(), lab.interfaces)
    if generated["table"] is None:
        lab.install(table)
    else:
        lab.apply(objects.diff(generated["table"], table))
    generated["table"] = table
    check_matrix(lab, state)
