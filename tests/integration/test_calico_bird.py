"""BGP between real BIRD 2 daemons, one per node namespace, configured from Calico resources in a real datastore.

    underlay ns:  bridge br0 (no address)
    node-<x> ns:  eth0 198.51.100.1<i>/24 (veth to br0), lo, one bird (its own config, socket, pid, log)

Each node's plan comes from the datastore as the agent reads it (Nodes,
BGPConfiguration, BGPPeers, IPPools, the node's affinity keys, IPAM blocks
for borrowed addresses); each node has a /26 claimed through the IPAM API.
The tests check what Calico's fabric promises: every session Established,
each node's kernel routes the other nodes' blocks through BIRD (``proto
bird``) and never its own, pycni's (protocol 112) and a user's routes are
left exactly as they were, a block claimed later is advertised without a
session flap, a crashed BIRD restarts without a route going missing
anywhere, a node that leaves (BIRD stopped, block released) is withdrawn
from the others, a node rejoining while a peer is down routes at once, and
``pycni calicoctl node status`` prints the table. Other tests run a route
reflector with two clients, and an eBGP peering with a plain BIRD (a ToR).

Measured times are printed (``-s``) for the report.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from pycni.datastore import Datastore, open_datastore
from pycni.fabric.calico.bgp import BGPInputs, BGPPlan, block_states, plan
from pycni.fabric.calico.bird import BIRD, BirdError, BirdProcess, render
from pycni.fabric.calico.ipam import affinity_prefix
from pycni.fabric.calico.ipam_store import IPAM, AutoAssignArgs
from pycni.fabric.calico.model import IPPoolInfo, NodeInfo, new_resource
from pycni.fabric.calico.resources import ResourceClient
from tests.support.etcd import EtcdServer, etcd_server
from tests.support.netns import NetnsPool, run

POOL = "10.244.0.0/16"
ESTABLISHED_WITHIN = 20.0  # connect delay 2 s, connect retry 5 s: a few retries at most
PROPAGATED_WITHIN = 10.0  # kernel scan time 2 s


pytestmark = pytest.mark.skipif(not os.access(BIRD, os.X_OK), reason="BIRD 2 is not installed (apt-get install bird2)")


def wait_for(what: str, check: Callable[[], bool], timeout: float) -> float:
    """Seconds until ``check()`` holds; fails naming ``what`` after ``timeout``."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.05)
    return time.monotonic() - start


@dataclass
class BgpNode:
    name: str
    ns: str
    address: str
    bird: BirdProcess
    block: ipaddress.IPv4Network | None = None
    plans: list[BGPPlan] = field(default_factory=list)

    def routes(self, proto: str | None = None) -> dict[str, dict[str, object]]:
        """The main table's IPv4 routes by destination (``ip -j route``), of one protocol if given."""
        argv = ["ip", "-j", "route", "show", "table", "main"] + (["proto", proto] if proto else [])
        return {r["dst"]: r for r in json.loads(run(*argv, netns=self.ns).stdout or "[]")}

    def route_lines(self) -> list[str]:
        return run("ip", "route", "show", "table", "main", netns=self.ns).stdout.splitlines()


class Fabric:
    """Nodes on one underlay, a datastore, and each node's BIRD; :meth:`close` stops every BIRD."""

    def __init__(self, pool: NetnsPool, store: Datastore, names: list[str]) -> None:
        self.pool = pool
        self.store = store
        self.resources = ResourceClient(store)
        self.ipam = IPAM(store, self.resources)
        self.home = Path(tempfile.mkdtemp(prefix="pycni-bird-"))
        self.underlay = pool.new("ul")
        run("ip", "link", "add", "br0", "type", "bridge", netns=self.underlay)
        run("ip", "link", "set", "br0", "up", netns=self.underlay)
        self.nodes: dict[str, BgpNode] = {}
        for index, name in enumerate(names):
            ns = pool.new(name)
            address = f"198.51.100.{11 + index}"
            run(
                "ip",
                "link",
                "add",
                f"v{index}",
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                ns,
                netns=self.underlay,
            )
            run("ip", "link", "set", f"v{index}", "master", "br0", "up", netns=self.underlay)
            run("ip", "addr", "add", f"{address}/24", "dev", "eth0", netns=ns)
            run("ip", "link", "set", "eth0", "up", netns=ns)
            directory = self.home / name
            bird = BirdProcess(name, str(directory / "bird.conf"), str(directory / "bird.ctl"), ns)
            self.nodes[name] = BgpNode(name, ns, address, bird)

    def register(self, labels: dict[str, dict[str, str]] | None = None, **bgp: dict[str, str]) -> None:
        """The Nodes, the pool (no encapsulation) and a confirmed /26 per node claimed through IPAM."""
        self.resources.ensure_initialized()
        self.resources.create(new_resource("IPPool", "default-ipv4-ippool", {"cidr": POOL}))
        for name, node in self.nodes.items():
            resource = new_resource("Node", name, {"bgp": {"ipv4Address": f"{node.address}/24", **bgp.get(name, {})}})
            if labels and name in labels:
                resource.set_meta("labels", labels[name])
            self.resources.create(resource)
        for name, node in self.nodes.items():
            v4, _ = self.ipam.auto_assign(AutoAssignArgs(hostname=name, num4=1, handle_id=f"test.{name}"))
            assert v4 is not None and len(v4.ips) == 1
            network = v4.ips[0].network
            assert isinstance(network, ipaddress.IPv4Network)
            node.block = network

    def inputs(self, name: str) -> BGPInputs:
        """What the agent hands the BGP calculation, read from the datastore."""
        nodes = [NodeInfo.from_resource(r) for r in self.resources.list("Node")[0]]
        pools = [IPPoolInfo.from_resource(r) for r in self.resources.list("IPPool")[0]]
        kvs, _ = self.store.list(affinity_prefix(name, 4))
        borrowed = [
            address
            for block in self.ipam.list_blocks(4)
            if block.host != name
            for address, attribute in block.in_use()
            if (attribute.secondary or {}).get("node") == name
        ]
        return BGPInputs(
            node=name,
            nodes=nodes,
            configs=self.resources.list("BGPConfiguration")[0],
            peers=self.resources.list("BGPPeer")[0],
            pools=pools,
            blocks=block_states(kvs, name),
            borrowed=borrowed,
        )

    def apply(self, name: str) -> bool:
        node = self.nodes[name]
        node.plans.append(plan(self.inputs(name)))
        return node.bird.apply(render(node.plans[-1]))

    def established(self, name: str, expected: set[str]) -> bool:
        sessions = self.nodes[name].bird.sessions()
        return set(sessions) == expected and all(s.info == "Established" for s in sessions.values())

    def close(self) -> None:
        for node in self.nodes.values():
            node.bird.stop()
        shutil.rmtree(self.home, ignore_errors=True)


@pytest.fixture
def etcd() -> Iterator[EtcdServer]:
    with etcd_server() as server:
        yield server


@contextlib.contextmanager
def fabric(netns: NetnsPool, store: Datastore, names: list[str]) -> Iterator[Fabric]:
    built = Fabric(netns, store, names)
    try:
        yield built
    finally:
        built.close()
        store.close()


def node_status(node: BgpNode, pid_file: Path) -> subprocess.CompletedProcess[str]:
    pycni = os.path.join(os.path.dirname(sys.executable), "pycni")
    return subprocess.run(
        [
            pycni,
            "calicoctl",
            "node",
            "status",
            "--bird-socket",
            node.bird.socket_path,
            "--agent-pid-file",
            str(pid_file),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def mesh_name(node: BgpNode) -> str:
    return "Mesh_" + node.address.replace(".", "_")


def _seconds(clock: str) -> float:
    hours, minutes, seconds = clock.rsplit(maxsplit=1)[-1].split(":")  # "[date ]HH:MM:SS.mmm"
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def flapped(before: dict[str, dict[str, str]], after: dict[str, dict[str, str]]) -> bool:
    """Whether a session went down and up: its "since" moved. BIRD's display of an unchanged one wobbles by 1 ms."""
    if before.keys() != after.keys() or any(before[n].keys() != after[n].keys() for n in before):
        return True
    return any(abs(_seconds(after[n][k]) - _seconds(before[n][k])) > 0.1 for n in before for k in before[n])


def test_full_mesh_on_etcd(netns: NetnsPool, etcd: EtcdServer) -> None:
    names = ["node-a", "node-b", "node-c"]
    with fabric(netns, open_datastore([etcd.url]), names) as fab:
        fab.register()
        a, b, c = (fab.nodes[n] for n in names)
        assert a.block and b.block and c.block
        # What must survive BIRD: pycni's blackhole for a's own block and a pod route inside it (protocol 112,
        # as the agent and the CNI plugin write them), a pycni route and a user's static route elsewhere.
        run("ip", "link", "add", "cali0a1b2c3d4e5", "type", "veth", "peer", "name", "pod0", netns=a.ns)
        run("ip", "link", "set", "cali0a1b2c3d4e5", "up", netns=a.ns)
        pod_ip = a.block.network_address + 5
        run("ip", "route", "add", "blackhole", str(a.block), "proto", "112", netns=a.ns)
        run("ip", "route", "add", f"{pod_ip}/32", "dev", "cali0a1b2c3d4e5", "proto", "112", netns=a.ns)
        run("ip", "route", "add", "203.0.113.0/24", "via", c.address, "proto", "112", netns=a.ns)
        run("ip", "route", "add", "198.18.5.0/24", "via", b.address, "proto", "static", netns=a.ns)
        before = a.route_lines()

        start = time.monotonic()
        for name in names:
            assert fab.apply(name) is True
        started = time.monotonic() - start
        expected = {n: {mesh_name(fab.nodes[o]) for o in names if o != n} for n in names}
        wait_for(
            "full mesh Established", lambda: all(fab.established(n, expected[n]) for n in names), ESTABLISHED_WITHIN
        )
        to_established = time.monotonic() - start

        def learnt(node: BgpNode) -> dict[str, str]:
            return {dst: str(r.get("gateway")) for dst, r in node.routes("bird").items()}

        def has_all_blocks() -> bool:
            return all(
                learnt(fab.nodes[n]) == {str(fab.nodes[o].block): fab.nodes[o].address for o in names if o != n}
                for n in names
            )

        to_routes = wait_for("every node routes the others' blocks via BIRD", has_all_blocks, PROPAGATED_WITHIN)
        print(
            f"\nmesh of 3: BIRDs started in {started:.2f} s, Established after {to_established:.2f} s, "
            f"block routes in every kernel {to_routes:.2f} s later"
        )
        for node in (a, b, c):
            route = node.routes("bird")
            assert str(node.block) not in route, "BIRD never programs a node's own block"
            assert all(r.get("metric") == 32 and r.get("dev") == "eth0" for r in route.values()), route
        # Only the /26 travels: a's pod /32 is inside its block and calico_aggr keeps it home.
        assert f"{pod_ip}" not in b.routes() and f"{pod_ip}" not in c.routes()
        assert [line for line in a.route_lines() if "proto bird" not in line] == before

        # calicoctl node status from a's control socket (this test process is the node agent here).
        pid_file = fab.home / "agent.pid"
        pid_file.write_text(str(os.getpid()))
        status = node_status(a, pid_file)
        assert status.returncode == 0, status.stderr
        lines = status.stdout.splitlines()
        assert lines[:3] == ["Calico process is running.", "", "IPv4 BGP status"], status.stdout
        rows = [line for line in lines if line.startswith("| 198.51.100.")]
        assert [row.split("|")[1].strip() for row in rows] == [b.address, c.address]
        for row in rows:
            assert re.match(r"^\| [\d.]+ +\| node-to-node mesh \| up +\| \d\d:\d\d:\d\d\.\d{3} \| Established \|$", row)
        assert "PEER ADDRESS" in status.stdout and lines[-3:] == ["IPv6 BGP status", "No IPv6 peers found.", ""]

        # A config BIRD would refuse is never written: BIRD keeps running the last good one.
        good = a.bird.current_config()
        assert good is not None
        with pytest.raises(BirdError, match="BIRD rejects the rendered configuration"):
            a.bird.apply(good + "\nnot bird;\n")
        assert a.bird.current_config() == good and fab.established("node-a", expected["node-a"])

        # An agent restart: a new BirdProcess adopts the running BIRD; unchanged text does nothing.
        since = {n: {k: s.since for k, s in fab.nodes[n].bird.sessions().items()} for n in names}
        restarted = BirdProcess("node-a", a.bird.config_path, a.bird.socket_path, a.ns)
        pid = a.bird.pid
        assert restarted.apply(render(plan(fab.inputs("node-a")))) is False
        assert restarted.pid == pid

        # A second block for a, and an address b borrows from c's block: configure, no session flaps.
        taken = {a.block, b.block, c.block}
        second = next(n for n in ipaddress.IPv4Network(POOL).subnets(new_prefix=26) if n not in taken).network_address
        fab.ipam.assign_ip(second + 1, "node-a", handle_id="test.second")
        borrowed = c.block.network_address + 9
        fab.ipam.assign_ip(borrowed, "node-b", handle_id="test.borrowed", attrs={"node": "node-b"})
        second_block = f"{second}/26"
        moment = time.monotonic()
        assert fab.apply("node-a") is True and fab.apply("node-b") is True and fab.apply("node-c") is False
        wait_for(
            "the new block and the borrowed /32 reach the other kernels",
            lambda: (
                learnt(b).get(second_block) == a.address
                and learnt(c).get(second_block) == a.address
                and learnt(a).get(f"{borrowed}") == b.address
                and learnt(c).get(f"{borrowed}") == b.address
            ),
            PROPAGATED_WITHIN,
        )
        print(f"reconfigure: new block and borrowed /32 in the other kernels after {time.monotonic() - moment:.2f} s")
        after = {n: {k: s.since for k, s in fab.nodes[n].bird.sessions().items()} for n in names}
        assert not flapped(since, after), ("no flap", since, after)

        # a releases its second block: withdrawn from the others.
        assert fab.ipam.release_ips([second + 1]) == []
        assert fab.ipam.release_affinity("node-a", ipaddress.ip_network(second_block))
        moment = time.monotonic()
        assert fab.apply("node-a") is True
        wait_for(
            "the released block is withdrawn",
            lambda: second_block not in learnt(b) and second_block not in learnt(c),
            PROPAGATED_WITHIN,
        )
        print(f"block released: withdrawn from the other kernels after {time.monotonic() - moment:.2f} s")

        # b's BIRD crashes (SIGKILL, no Cease): its kernel keeps its routes (persist), its peers keep b's block
        # (graceful restart), and the BIRD started again recovers (-R, from the pid file left behind) without a
        # moment where any of those routes is missing.
        def continuous() -> bool:
            return (
                learnt(b) == {str(a.block): a.address, str(c.block): c.address}
                and learnt(a).get(str(b.block)) == b.address
                and learnt(c).get(str(b.block)) == b.address
            )

        os.kill(b.bird.pid or 0, signal.SIGKILL)
        wait_for("b's BIRD is gone", lambda: not b.bird.running(), 5)
        assert os.path.exists(b.bird.pid_path), "a crashed BIRD leaves its pid file"
        moment = time.monotonic()
        b.bird.start()
        while not all(fab.established(n, expected[n]) for n in names):
            assert continuous(), "a route went missing while b's BIRD restarted"
            assert time.monotonic() - moment < ESTABLISHED_WITHIN, "b's sessions did not come back"
            time.sleep(0.05)
        assert continuous()
        print(f"BIRD crash: restarted and Established after {time.monotonic() - moment:.2f} s, no route missing")

        # c leaves: its BIRD stops (a Cease to its peers); its block leaves a's and b's kernels.
        moment = time.monotonic()
        c.bird.stop(flush=True)
        assert learnt(c) == {}, "a node that leaves takes BIRD's kernel routes with it"
        wait_for(
            "node-c's routes withdrawn",
            lambda: str(c.block) not in learnt(a) and str(c.block) not in learnt(b) and f"{borrowed}" in learnt(a),
            PROPAGATED_WITHIN,
        )
        print(f"node left: its block gone from the others after {time.monotonic() - moment:.2f} s")
        assert a.bird.sessions()[mesh_name(c)].state != "up"
        assert not os.path.exists(c.bird.socket_path) and c.bird.pid is None
        gone = node_status(c, pid_file)
        assert gone.returncode == 0 and gone.stdout == (
            "Calico process is running.\n\nThe BGP backend process (BIRD) is not running.\n\n"
        )
        pid_file.write_text("999999999")
        refused = node_status(a, pid_file)
        assert (refused.returncode, refused.stdout, refused.stderr) == (1, "", "Calico process is not running.\n")

        # Nothing of pycni's or the user's was touched at any point.
        assert [line for line in a.route_lines() if "proto bird" not in line] == before

        # c comes back while b is down (but still a registered node): a fresh BIRD programs what its live
        # peer sends at once, not after a graceful-restart wait for the dead one.
        b.bird.stop()
        moment = time.monotonic()
        assert fab.apply("node-c") is True
        wait_for("c routes a's block", lambda: learnt(c) == {str(a.block): a.address}, 8.0)
        print(f"node rejoined with a peer down: routes after {time.monotonic() - moment:.2f} s")


def test_route_reflector_with_two_clients(netns: NetnsPool) -> None:
    names = ["rr", "client-1", "client-2"]
    store_dir = tempfile.mkdtemp(prefix="pycni-bird-store-")
    try:
        with fabric(netns, open_datastore(path=os.path.join(store_dir, "calico.db")), names) as fab:
            fab.register(labels={"rr": {"route-reflector": "true"}}, rr={"routeReflectorClusterID": "10.255.0.1"})
            fab.resources.create(new_resource("BGPConfiguration", "default", {"nodeToNodeMeshEnabled": False}))
            fab.resources.create(
                new_resource(
                    "BGPPeer",
                    "peer-with-route-reflectors",
                    {"nodeSelector": "all()", "peerSelector": "has(route-reflector)"},
                )
            )
            rr, one, two = (fab.nodes[n] for n in names)
            start = time.monotonic()
            for name in names:
                fab.apply(name)
            sessions = {
                "rr": {"Node_" + one.address.replace(".", "_"), "Node_" + two.address.replace(".", "_")},
                "client-1": {"Node_" + rr.address.replace(".", "_")},
                "client-2": {"Node_" + rr.address.replace(".", "_")},
            }
            wait_for(
                "RR sessions Established",
                lambda: all(fab.established(n, sessions[n]) for n in names),
                ESTABLISHED_WITHIN,
            )
            assert all(s.route_reflector_client for s in rr.plans[-1].sessions)
            assert not any(s.route_reflector_client for s in one.plans[-1].sessions + two.plans[-1].sessions)

            def learnt(node: BgpNode) -> dict[str, str]:
                return {dst: str(r.get("gateway")) for dst, r in node.routes("bird").items()}

            # Reflected routes keep the originating client's next hop: clients reach each other directly.
            wait_for(
                "reflected block routes",
                lambda: (
                    learnt(one) == {str(rr.block): rr.address, str(two.block): two.address}
                    and learnt(two) == {str(rr.block): rr.address, str(one.block): one.address}
                    and learnt(rr) == {str(one.block): one.address, str(two.block): two.address}
                ),
                PROPAGATED_WITHIN,
            )
            print(
                f"\nroute reflector + 2 clients: all blocks in all kernels {time.monotonic() - start:.2f} s after start"
            )
            pid_file = fab.home / "agent.pid"
            pid_file.write_text(str(os.getpid()))
            rows = [line for line in node_status(rr, pid_file).stdout.splitlines() if line.startswith("| 198.51.100.")]
            assert [[cell.strip() for cell in row.split("|")[1:5:2]] for row in rows] == [
                [one.address, "up"],
                [two.address, "up"],
            ]
            assert all("| node specific |" in row and row.endswith("| Established |") for row in rows)
            # A client leaves: the reflector withdraws its block from the other client.
            two.bird.stop()
            wait_for("client-2's block withdrawn", lambda: str(two.block) not in learnt(one), PROPAGATED_WITHIN)
    finally:
        shutil.rmtree(store_dir, ignore_errors=True)


TOR_CONFIG = """\
router id 198.51.100.1;
protocol device { scan time 2; }
protocol direct { ipv4; interface "br0"; }
protocol kernel { ipv4 { import none; export where source = RTS_BGP; }; }
template bgp node { local 198.51.100.1 as 64600; ipv4 { import all; export none; }; }
protocol bgp node_a from node { neighbor 198.51.100.11 as 64512; }
protocol bgp node_b from node { neighbor 198.51.100.12 as 64512; }
"""


def test_global_peer_to_a_tor(netns: NetnsPool) -> None:
    """A global BGPPeer (eBGP, AS 64600) to a plain BIRD in the underlay namespace: it learns every block."""
    names = ["node-a", "node-b"]
    with fabric(netns, open_datastore(memory=True), names) as fab:
        fab.register()
        fab.resources.create(new_resource("BGPPeer", "tor", {"peerIP": "198.51.100.1", "asNumber": 64600}))
        run("ip", "addr", "add", "198.51.100.1/24", "dev", "br0", netns=fab.underlay)
        tor_bird = BirdProcess(
            "tor", str(fab.home / "tor" / "bird.conf"), str(fab.home / "tor" / "bird.ctl"), fab.underlay
        )
        tor = BgpNode("tor", fab.underlay, "198.51.100.1", tor_bird)
        fab.nodes["tor"] = tor  # so close() stops it too
        tor.bird.apply(TOR_CONFIG)
        for name in names:
            fab.apply(name)
        a, b = fab.nodes["node-a"], fab.nodes["node-b"]
        session = a.plans[-1].session("Global_198_51_100_1")
        assert session is not None and not session.internal and not session.passive
        expected = {"node-a": {mesh_name(b), "Global_198_51_100_1"}, "node-b": {mesh_name(a), "Global_198_51_100_1"}}
        wait_for(
            "node and ToR sessions", lambda: all(fab.established(n, expected[n]) for n in names), ESTABLISHED_WITHIN
        )

        def prefixes_from(protocol: str) -> set[str]:
            reply = tor.bird.control.request(f"show route protocol {protocol}")
            return {r.text.split()[0] for r in reply if r.code == 1007 and r.text and "/" in r.text.split()[0]}

        blocks = {str(a.block), str(b.block)}
        # As Calico's export filter does over eBGP (calico#3810), each node also re-advertises the blocks it
        # learnt from its mesh peers, with itself as next hop: the ToR holds every block from every node.
        wait_for(
            "the ToR learns every block",
            lambda: (
                prefixes_from("node_a") == blocks == prefixes_from("node_b")
                and set(tor.routes("bird")) == blocks
                and {str(r.get("gateway")) for r in tor.routes("bird").values()} <= {a.address, b.address}
            ),
            PROPAGATED_WITHIN,
        )
        pid_file = fab.home / "agent.pid"
        pid_file.write_text(str(os.getpid()))
        rows = [line for line in node_status(a, pid_file).stdout.splitlines() if line.startswith("| 198.51.100.")]
        assert [[cell.strip() for cell in row.split("|")[1:3]] for row in rows] == [
            ["198.51.100.12", "node-to-node mesh"],
            ["198.51.100.1", "global"],
        ]
