"""``pycni demo``, Case 4: the seed article's Calico ``Installation`` on four nodes in two subnets.

The article installs Calico with the Tigera operator and its
``custom-resources.yaml`` (one pool: 10.244.0.0/16, blockSize 26,
VXLANCrossSubnet, natOutgoing Enabled, nodeSelector all()). Here that file
is given to ``pycni calico-node --installation`` on four node namespaces, on
the embedded store (a sqlite file, no etcd)::

    underlay ns:  bridges br0 (198.51.100.0/24: node1, node2) and br1 (203.0.113.0/24: node3, node4)
    router ns:    198.51.100.254, 203.0.113.254 and 198.18.0.254 toward "outside"; forwards
    outside ns:   198.18.0.1, a host beyond the cluster that answers with the address it sees
    node ns:      eth0 on a bridge, default via the router; calico-node and its BIRD 2 (BGP full mesh)
    pod ns:       one per node, made by the ``calico`` CNI plugin with ``calico-ipam``, busybox httpd

What it shows, each as the commands and their output: ``calicoctl node
status`` (the mesh's BGP sessions Established), node 1's ``ip route`` (its
same-subnet neighbour's block learnt by BGP, ``proto bird`` via eth0; the
other subnet's blocks over ``vxlan.calico``), the pods fetching each other's
pages (and vxlan.calico's counters saying which fetches were encapsulated),
natOutgoing (the outside host sees the node's address, not the pod's), then
DEL, the agents stopped (BIRD and the natOutgoing table gone; the policy table,
which a node keeps while it is in the cluster, removed by hand) and every namespace
and file removed, even when a step fails or the user presses Ctrl-C.

Run alone with ``python -m pycni.cli.demo_calico`` (as root), or as part of
``pycni demo``.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pycni.cli.demo_shell import DemoFailed, remove_namespaces, say, sh

PREFIX = "pycni-demo-cal-"
UNDERLAY, ROUTER, OUTSIDE, FRESH = (PREFIX + n for n in ("underlay", "router", "outside", "fresh"))
SUBNETS = {1: ("198.51.100", "br0"), 2: ("203.0.113", "br1")}
OUTSIDE_IP, OUTSIDE_GATEWAY = "198.18.0.1", "198.18.0.254"
NETWORK = "k8s-pod-network"
NODES = 4
AGENT_READY_WITHIN = 60.0  # four Python agents starting at once on a loaded 2-CPU machine
MESH_WITHIN = 30.0  # BIRD: connect delay 2 s, connect retry 5 s
PICTURES_ENV = "PYCNI_DEMO_PICTURES"  # a directory: the case draws its cluster there (make pictures)

# The seed article's calico-custom-resources.yaml (its operator Installation), verbatim.
SEED_INSTALLATION = """\
# This section includes base Calico installation configuration.
# For more information, see: https://projectcalico.docs.tigera.io/v3.23/reference/installation/api#operator.tigera.io/v1.Installation
apiVersion: operator.tigera.io/v1
kind: Installation
metadata:
  name: default
spec:
  # Configures Calico networking.
  calicoNetwork:
    # Note: The ipPools section cannot be modified post-install.
    ipPools:
    - blockSize: 26
      cidr: 10.244.0.0/16
      encapsulation: VXLANCrossSubnet
      natOutgoing: Enabled
      nodeSelector: all()
---
# This section configures the Calico API server.
# For more information, see: https://projectcalico.docs.tigera.io/v3.23/reference/installation/api#operator.tigera.io/v1.APIServer
apiVersion: operator.tigera.io/v1
kind: APIServer
metadata:
  name: default
spec: {}
"""

# What the outside host serves: the client address it sees (busybox httpd runs it as CGI).
ECHO_CGI = """\
#!/bin/sh
a=${REMOTE_ADDR#[}; a=${a%]}; a=${a#::ffff:}
printf 'Content-Type: text/plain\\r\\n\\r\\n%s\\n' "$a"
"""


@dataclass
class Node:
    index: int
    home: str
    agent: subprocess.Popen[bytes] | None = None
    pod_ip: str = ""
    page: str = ""

    @property
    def subnet(self) -> int:
        return 1 if self.index <= NODES // 2 else 2

    @property
    def ns(self) -> str:
        return f"{PREFIX}node{self.index}"

    @property
    def nodename(self) -> str:
        return f"node{self.index}"

    @property
    def pod(self) -> str:
        return f"{PREFIX}pod{self.index}"

    @property
    def address(self) -> str:
        return f"{SUBNETS[self.subnet][0]}.{10 + self.index}"

    @property
    def gateway(self) -> str:
        return f"{SUBNETS[self.subnet][0]}.254"

    @property
    def block(self) -> str:
        """The /26 the pod's address came from: the node's affine block."""
        base, last = self.pod_ip.rsplit(".", 1)
        return f"{base}.{int(last) // 64 * 64}/26"

    def path(self, name: str) -> str:
        return os.path.join(self.home, name)

    @property
    def bird_socket(self) -> str:
        return self.path("run/bird.ctl")


def wait_for(what: str, check: Callable[[], bool], within: float, interval: float = 0.1) -> float:
    """Seconds until ``check()`` holds; DemoFailed naming ``what`` after ``within`` s."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > within:
            raise DemoFailed(f"not within {within:.0f} s: {what}")
        time.sleep(interval)
    return time.monotonic() - start


class CalicoDemo:
    """Case 4; :meth:`run` shows it, :meth:`teardown` (always called) removes all it made."""

    def __init__(self, work: str, plugin_dir: str, pycni: list[str]) -> None:
        self.work = os.path.join(work, "calico")
        self.plugin_dir = plugin_dir
        self.pycni = pycni
        self.store = os.path.join(self.work, "calico.db")
        self.installation = os.path.join(self.work, "custom-resources.yaml")
        self.nodes = [Node(i, os.path.join(self.work, f"node{i}")) for i in range(1, NODES + 1)]

    @staticmethod
    def namespaces() -> list[str]:
        nodes = [f"{PREFIX}{kind}{i}" for kind in ("pod", "node") for i in range(1, NODES + 1)]
        return [*nodes, OUTSIDE, ROUTER, UNDERLAY, FRESH]

    @staticmethod
    def preflight() -> None:
        """Refuse before anything is made: BIRD 2 missing, or a previous demo's namespaces still there."""
        from pycni.fabric.calico.bird import BIRD

        if not os.access(BIRD, os.X_OK):
            raise DemoFailed(f"Case 4 runs BIRD 2 on each node and {BIRD} is missing: apt-get install bird2")
        for tool in ("ip", "busybox", "curl", "nft"):
            if shutil.which(tool) is None:
                raise DemoFailed(f"{tool} is missing: run scripts/setup.sh (make demo does)")
        for ns in CalicoDemo.namespaces():
            if os.path.exists(f"/run/netns/{ns}"):
                raise DemoFailed(f"namespace {ns} exists already (a previous demo?): ip netns del {ns}")

    # -- the case ---------------------------------------------------------------------

    def run(self) -> None:
        os.makedirs(self.work)
        self.build_underlay()
        self.start_agents()
        self.show_cluster()
        self.show_bgp()
        self.add_pods()
        self.show_routes()
        self.fetch_pages()
        self.draw_picture()
        self.nat_outgoing()
        self.remove_pods_and_agents()

    def build_underlay(self) -> None:
        say("Case 4: Calico. Four nodes in two subnets (198.51.100.0/24, 203.0.113.0/24) joined by a router")
        for ns in (UNDERLAY, ROUTER, OUTSIDE):
            sh(["ip", "netns", "add", ns])
        for subnet, (prefix, bridge) in SUBNETS.items():
            sh(["ip", "link", "add", bridge, "type", "bridge"], netns=UNDERLAY)
            sh(["ip", "link", "set", bridge, "up"], netns=UNDERLAY, show=False)
            link = ["ip", "link", "add", f"r{subnet}", "type", "veth", "peer", "name", f"up{subnet}"]
            sh([*link, "netns", UNDERLAY], netns=ROUTER, show=False)
            sh(["ip", "link", "set", f"up{subnet}", "master", bridge, "up"], netns=UNDERLAY, show=False)
            sh(["ip", "addr", "add", f"{prefix}.254/24", "dev", f"r{subnet}"], netns=ROUTER)
            sh(["ip", "link", "set", f"r{subnet}", "up"], netns=ROUTER, show=False)
        link = ["ip", "link", "add", "r3", "type", "veth", "peer", "name", "eth0", "netns", OUTSIDE]
        sh(link, netns=ROUTER, show=False)
        sh(["ip", "addr", "add", f"{OUTSIDE_GATEWAY}/24", "dev", "r3"], netns=ROUTER)
        sh(["ip", "link", "set", "r3", "up"], netns=ROUTER, show=False)
        sh(["sysctl", "-qw", "net.ipv4.ip_forward=1"], netns=ROUTER)
        sh(["ip", "addr", "add", f"{OUTSIDE_IP}/24", "dev", "eth0"], netns=OUTSIDE)
        for argv in (["ip", "link", "set", "eth0", "up"], ["ip", "link", "set", "lo", "up"]):
            sh(argv, netns=OUTSIDE, show=False)
        sh(["ip", "route", "add", "default", "via", OUTSIDE_GATEWAY], netns=OUTSIDE, show=False)
        for node in self.nodes:
            os.makedirs(node.home)
            show = node.index == 1
            sh(["ip", "netns", "add", node.ns], show=show)
            sh(["ip", "link", "set", "lo", "up"], netns=node.ns, show=False)
            port = f"n{node.index}"
            link = ["ip", "link", "add", "eth0", "type", "veth", "peer", "name", port, "netns", UNDERLAY]
            sh(link, netns=node.ns, show=show)
            bridge = SUBNETS[node.subnet][1]
            sh(["ip", "link", "set", port, "master", bridge, "up"], netns=UNDERLAY, show=show)
            sh(["ip", "addr", "add", f"{node.address}/24", "dev", "eth0"], netns=node.ns, show=show)
            sh(["ip", "link", "set", "eth0", "up"], netns=node.ns, show=False)
            sh(["ip", "route", "add", "default", "via", node.gateway], netns=node.ns, show=show)
        rest = ", ".join(f"{n.nodename} {n.address} on {SUBNETS[n.subnet][1]}" for n in self.nodes[1:])
        print(f"(likewise {rest})")

    def start_agents(self) -> None:
        say("custom-resources.yaml, the seed's operator Installation, read by pycni calico-node on every node")
        with open(self.installation, "w") as handle:
            handle.write(SEED_INSTALLATION)
        print(f"$ cat {self.installation}\n{SEED_INSTALLATION.rstrip()}")
        say("Start calico-node on each node, all on the embedded store (one sqlite file, no etcd)")
        for node in self.nodes:
            argv = self.agent_argv(node)
            print(f"[{node.ns}] $ {' '.join(argv)} &", flush=True)
            with open(node.path("calico-node.log"), "ab") as log:
                node.agent = subprocess.Popen(
                    ["ip", "netns", "exec", node.ns, *argv],
                    stdout=log,
                    stderr=log,
                    env=self.agent_env(),
                    start_new_session=True,
                )
            with open(node.path("calico-node.pid"), "w") as handle:
                handle.write(f"{node.agent.pid}\n")  # ip netns exec execs the agent: the same pid
        deadline = time.monotonic() + AGENT_READY_WITHIN
        for node in self.nodes:
            while "calico-node: ready" not in self.agent_log(node):
                if node.agent is not None and node.agent.poll() is not None:
                    raise DemoFailed(f"calico-node on {node.ns} exited:\n{self.agent_log(node)[-2000:]}")
                if time.monotonic() > deadline:
                    raise DemoFailed(f"calico-node on {node.ns} is not ready:\n{self.agent_log(node)[-2000:]}")
                time.sleep(0.05)
        print(f"\n{self.nodes[0].ns}: calico-node's log until ready")
        print(self.agent_log(self.nodes[0]).split("calico-node: ready", 1)[0] + "calico-node: ready")

    def agent_argv(self, node: Node) -> list[str]:
        return [
            *self.pycni, "calico-node",
            "--installation", self.installation,
            "--store", self.store,
            "--nodename", node.nodename,
            "--iface", "eth0",
            "--nodename-file", node.path("nodename"),
            "--mtu-file", node.path("mtu"),
            "--run-dir", node.path("run"),
            "--stop-bird-on-exit",
        ]  # fmt: skip

    def agent_env(self) -> dict[str, str]:
        """The caller's environment without a datastore of its own, so --store (the embedded one) is used."""
        env = {k: v for k, v in os.environ.items() if "DATASTORE_TYPE" not in k and "ETCD_" not in k}
        env["PYCNI_CALICO_STORE"] = self.store
        return env

    @staticmethod
    def agent_log(node: Node) -> str:
        try:
            with open(node.path("calico-node.log"), errors="replace") as handle:
                return handle.read()
        except FileNotFoundError:
            return ""

    def calicoctl(self, node: Node, *args: str, show: bool = True) -> str:
        argv = [*self.pycni, "calicoctl", *args]
        if show:
            print(f"[{node.ns}] $ calicoctl {' '.join(args)}", flush=True)
        proc = sh(argv, netns=node.ns, env=self.agent_env(), show=False)
        if show:
            print(proc.stdout.rstrip(), flush=True)
        return proc.stdout

    def show_cluster(self) -> None:
        node1 = self.nodes[0]
        say("The pool the operator would create from the Installation, and the four registered nodes")
        self.calicoctl(node1, "get", "ippool", "-o", "wide")
        self.calicoctl(node1, "get", "node", "-o", "wide")

    def show_bgp(self) -> None:
        say("BGP: every node's BIRD peers with the other three (Calico's node-to-node mesh)")
        took = wait_for("every BGP session of the mesh Established", self.mesh_established, MESH_WITHIN)
        print(f"(all {NODES * (NODES - 1) // 2} sessions Established {took:.1f} s after the agents were ready)")
        node1 = self.nodes[0]
        self.calicoctl(
            node1,
            "node",
            "status",
            "--bird-socket",
            node1.bird_socket,
            "--agent-pid-file",
            node1.path("calico-node.pid"),
        )

    def mesh_established(self) -> bool:
        from pycni.fabric.calico.bird import BirdControl, BirdError, parse_protocols

        for node in self.nodes:
            try:
                rows = parse_protocols(BirdControl(node.bird_socket, timeout=2.0).request("show protocols"))
            except (BirdError, OSError):
                return False
            if sum(1 for row in rows if row.proto == "BGP" and row.bgp_state == "Established") != NODES - 1:
                return False
        return True

    # -- pods -------------------------------------------------------------------------

    def conflist(self, node: Node) -> dict[str, Any]:
        """calico.yaml's cni_network_config, with this node's files and the embedded store."""
        return {
            "name": NETWORK,
            "cniVersion": "0.3.1",
            "plugins": [
                {
                    "type": "calico",
                    "log_level": "info",
                    "datastore_type": "pycni",
                    "pycni_store_path": self.store,
                    "nodename_file": node.path("nodename"),
                    "pycni_mtu_file": node.path("mtu"),
                    "ipam_lock_file": node.path("ipam.lock"),
                    "mtu": 0,
                    "ipam": {"type": "calico-ipam"},
                    "policy": {"type": "k8s"},
                }
            ],
        }

    def cni_env(self, node: Node) -> dict[str, str]:
        conf_dir = node.path("net.d")
        os.makedirs(conf_dir, exist_ok=True)
        with open(os.path.join(conf_dir, "10-calico.conflist"), "w") as handle:
            json.dump(self.conflist(node), handle, indent=2)
        return {
            "CNI_PATH": self.plugin_dir,
            "NETCONFPATH": conf_dir,
            "PYCNI_CACHE_DIR": node.path("cache"),
            "PYCNI_NO_DAEMON": "1",  # the demo's own plugin processes, whatever daemon runs on this machine
            "CNI_ARGS": f"K8S_POD_NAMESPACE=default;K8S_POD_NAME=pod{node.index}",
        }

    def add_pods(self) -> None:
        say("A pod on each node through the calico CNI plugin with calico-ipam (calico.yaml's cni_network_config)")
        first = self.nodes[0]
        print(f"{first.path('net.d/10-calico.conflist')}:\n{json.dumps(self.conflist(first), indent=2)}")
        for node in self.nodes:
            sh(["ip", "netns", "add", node.pod], show=node.index == 1)
            argv = [*self.pycni, "add", NETWORK, f"/run/netns/{node.pod}"]
            result = sh(argv, netns=node.ns, env=self.cni_env(node), show=node.index == 1)
            node.pod_ip = json.loads(result.stdout)["ips"][0]["address"].split("/")[0]
            www = node.path("www")
            os.makedirs(www)
            node.page = f"Hello from pod {node.index} on {node.ns} ({node.pod_ip})"
            with open(os.path.join(www, "index.html"), "w") as handle:
                handle.write(node.page + "\n")
            sh(["busybox", "httpd", "-p", "80", "-h", www], netns=node.pod, show=False)
        print("(likewise pod2, pod3, pod4 on node2, node3, node4)")
        sh(["ip", "addr", "show", "eth0"], netns=self.nodes[0].pod)
        sh(["ip", "route"], netns=self.nodes[0].pod)
        self.calicoctl(self.nodes[0], "ipam", "show", "--show-blocks")

    def show_routes(self) -> None:
        node1, node2, node3, node4 = self.nodes
        say(f"{node1.nodename}'s routes: node2 shares its subnet, node3 and node4 are across the router")
        try:
            wait_for(
                "BGP and VXLAN routes to every other node's block on every node", self.routes_complete, MESH_WITHIN
            )
        except DemoFailed as failed:
            missing = self.missing_routes()
            lacking = {line.split(":", 1)[0] for line in missing}
            logs = "".join(
                f"\n--- {n.nodename}'s calico-node log, last lines:\n" + "\n".join(self.agent_log(n).splitlines()[-15:])
                for n in self.nodes
                if n.nodename in lacking
            )
            raise DemoFailed(f"{failed}; missing: {'; '.join(missing)}{logs}") from None
        sh(["ip", "route"], netns=node1.ns)
        bgp = self.route(node1, node2.block)
        print(
            f"-> {node2.block} ({node2.nodename}'s block): via {bgp.get('gateway')} dev {bgp.get('dev')} "
            f"proto {bgp.get('protocol')}: learnt by BGP from {node2.nodename}'s BIRD, sent unencapsulated"
        )
        for far in (node3, node4):
            route = self.route(node1, far.block)
            print(
                f"-> {far.block} ({far.nodename}'s block): via {route.get('gateway')} dev {route.get('dev')} "
                f"onlink: another subnet, so VXLAN (the agent's route, proto {route.get('protocol')})"
            )
        sh(["ip", "-d", "link", "show", "vxlan.calico"], netns=node1.ns)

    @staticmethod
    def routes(node: Node) -> list[dict[str, Any]]:
        out = sh(["ip", "-j", "route", "show", "table", "main"], netns=node.ns, show=False).stdout
        found: list[dict[str, Any]] = json.loads(out or "[]")
        return found

    def route(self, node: Node, dst: str) -> dict[str, Any]:
        return next((r for r in self.routes(node) if r.get("dst") == dst), {})

    def routes_complete(self) -> bool:
        return not self.missing_routes()

    def missing_routes(self) -> list[str]:
        """Each node routes each other node's block: by BGP within its subnet, over vxlan.calico across."""
        missing = []
        for node in self.nodes:
            table = {r.get("dst"): r for r in self.routes(node)}
            for other in self.nodes:
                if other is node:
                    continue
                route = table.get(other.block, {})
                if other.subnet == node.subnet:
                    want = (route.get("dev"), route.get("gateway"), route.get("protocol"))
                    if want != ("eth0", other.address, "bird"):
                        missing.append(
                            f"{node.nodename}: {other.block} via {other.address} (bird), has {route or 'none'}"
                        )
                elif route.get("dev") != "vxlan.calico":
                    missing.append(f"{node.nodename}: {other.block} dev vxlan.calico, has {route or 'none'}")
        return missing

    def fetch_pages(self) -> None:
        node1, node2, node3, node4 = self.nodes
        say("Pods fetch each other's pages: within a subnet routed as is, across the router over VXLAN")
        wait_for("every pod fetching every other pod's page", self.everyone_reaches, MESH_WITHIN, interval=0.3)
        sent = [self.vxlan_tx(node1)]
        self.fetch(node1.pod, f"http://{node2.pod_ip}/", node2.page)
        sent.append(self.vxlan_tx(node1))
        self.fetch(node1.pod, f"http://{node3.pod_ip}/", node3.page)
        sent.append(self.vxlan_tx(node1))
        self.fetch(node3.pod, f"http://{node4.pod_ip}/", node4.page)
        self.fetch(node4.pod, f"http://{node2.pod_ip}/", node2.page)
        print(
            f"vxlan.calico on {node1.nodename} sent {sent[1] - sent[0]} packets for the fetch from pod 2 (same subnet) "
            f"and {sent[2] - sent[1]} for the fetch from pod 3 (across the router)"
        )
        if sent[1] != sent[0] or sent[2] <= sent[1]:
            raise DemoFailed(f"VXLANCrossSubnet did not encapsulate only the cross-subnet fetch: {sent}")
        pairs = NODES * (NODES - 1)
        print(f"(and all {pairs} pod-to-pod pairs fetched each other's pages)")

    def draw_picture(self) -> None:
        """With ``$PYCNI_DEMO_PICTURES=DIR`` (``make pictures``), ``pycni inspect --calico --svg DIR/calico.svg``
        from node 1, with its BIRD's sessions."""
        directory = os.environ.get(PICTURES_ENV)
        if not directory:
            return
        os.makedirs(directory, exist_ok=True)
        target = os.path.join(os.path.abspath(directory), "calico.svg")
        node1 = self.nodes[0]
        say(f"A picture of the cluster, as {node1.nodename} sees it ({PICTURES_ENV})")
        argv = ["inspect", "--calico", "--store", self.store, "--bird-socket", node1.bird_socket, "--svg", target]
        print(f"[{node1.ns}] $ pycni {' '.join(argv)}", flush=True)
        print(sh([*self.pycni, *argv], netns=node1.ns, env=self.agent_env(), show=False).stdout.rstrip(), flush=True)

    def everyone_reaches(self) -> bool:
        pairs = [(a, b) for a in self.nodes for b in self.nodes if a is not b]
        return all(self.get(a.pod, f"http://{b.pod_ip}/") == b.page + "\n" for a, b in pairs)

    @staticmethod
    def get(netns: str, url: str) -> str | None:
        proc = sh(["curl", "-sS", "-m", "2", url], netns=netns, show=False, check=False)
        return proc.stdout if proc.returncode == 0 else None

    def answers(self, netns: str, url: str) -> bool:
        return self.get(netns, url) is not None

    def fetch(self, netns: str, url: str, expected: str) -> None:
        body = self.get(netns, url)
        print(f"[{netns}] $ curl {url}\n{(body or '').rstrip()}", flush=True)
        if body is None or expected not in body:
            raise DemoFailed(f"{url} from {netns} gave {body!r}, not {expected!r}")

    @staticmethod
    def vxlan_tx(node: Node) -> int:
        out = sh(["ip", "-j", "-s", "link", "show", "vxlan.calico"], netns=node.ns, show=False).stdout
        return int(json.loads(out)[0]["stats64"]["tx"]["packets"])

    def nat_outgoing(self) -> None:
        node1, node3 = self.nodes[0], self.nodes[2]
        say(f"natOutgoing: pods reach a host outside the cluster ({OUTSIDE_IP}) as their node's address")
        cgi = os.path.join(self.work, "outside", "cgi-bin")
        os.makedirs(cgi)
        script = os.path.join(cgi, "whoami")
        with open(script, "w") as handle:
            handle.write(ECHO_CGI)
        os.chmod(script, 0o755)
        sh(["busybox", "httpd", "-p", "8080", "-h", os.path.dirname(cgi)], netns=OUTSIDE, show=False)
        print(f"[{OUTSIDE}] serves http://{OUTSIDE_IP}:8080/cgi-bin/whoami: the address it sees the client at")
        sh(["nft", "list", "table", "ip", "calico-node"], netns=node1.ns)
        url = f"http://{OUTSIDE_IP}:8080/cgi-bin/whoami"
        for node in (node1, node3):
            wait_for(f"{node.pod} reaching {url}", functools.partial(self.answers, node.pod, url), 10)
            self.fetch(node.pod, url, node.address)
            print(f"-> the outside host saw {node.nodename}'s address {node.address}, not the pod's {node.pod_ip}")

    # -- and nothing left ---------------------------------------------------------------

    def remove_pods_and_agents(self) -> None:
        say("Case 4: DEL every pod, stop every calico-node (its BIRD and natOutgoing table go with it)")
        for node in self.nodes:
            sh([*self.pycni, "del", NETWORK, f"/run/netns/{node.pod}"], netns=node.ns, env=self.cni_env(node))
        self.calicoctl(self.nodes[0], "ipam", "show")
        for node in self.nodes:
            self.stop_agent(node)
        say("A node in the cluster keeps its policy table (pods fail closed with no agent); the demo's nodes go")
        for node in self.nodes:
            sh(["nft", "delete", "table", "inet", "pycni-policy"], netns=node.ns, show=node.index == 1)
        sh(["ip", "netns", "add", FRESH], show=False)
        fresh = sh(["nft", "list", "ruleset"], netns=FRESH, show=False).stdout
        left: dict[str, Any] = {}
        for node in self.nodes:
            links = sh(["ip", "-o", "link", "show"], netns=node.ns, show=False).stdout
            cali = [line.split(":")[1].strip() for line in links.splitlines() if ": cali" in line]
            ruleset = sh(["nft", "list", "ruleset"], netns=node.ns, show=False).stdout
            bird = os.path.exists(node.bird_socket) or bool(self.bird_pids(node))
            if cali or ruleset != fresh or bird:
                left[node.nodename] = {"pod veths": cali, "nft": ruleset != fresh, "bird": bird}
        print(f"left behind on the nodes (pod veths, nft rules, BIRD): {json.dumps(left)}")
        if left:
            raise DemoFailed(f"Case 4 left state behind: {left}")

    @staticmethod
    def bird_pids(node: Node) -> list[int]:
        """BIRD processes reading this node's config (the agent names it on BIRD's command line)."""
        pids = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as handle:
                    argv = handle.read().split(b"\0")
            except OSError:
                continue
            if argv and os.path.basename(argv[0]) == b"bird" and node.home.encode() in b" ".join(argv):
                pids.append(int(entry))
        return pids

    def stop_agent(self, node: Node, timeout: float = 20) -> None:
        agent, node.agent = node.agent, None
        if agent is None:
            return
        if agent.poll() is None:
            print(f"[{node.ns}] $ kill {agent.pid}  # calico-node", flush=True)
            os.killpg(agent.pid, signal.SIGTERM)
            try:
                code = agent.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(agent.pid, signal.SIGKILL)
                agent.wait(timeout=timeout)
                raise DemoFailed(f"calico-node on {node.ns} ignored SIGTERM for {timeout:.0f} s") from None
            if code != 0:
                raise DemoFailed(f"calico-node on {node.ns} exited with {code}:\n{self.agent_log(node)[-2000:]}")

    def teardown(self) -> None:
        """Stop the agents, kill what runs in the namespaces (BIRD, httpd), delete them and the work files."""
        for node in self.nodes:
            agent, node.agent = node.agent, None
            if agent is not None and agent.poll() is None:
                try:
                    os.killpg(agent.pid, signal.SIGTERM)
                    agent.wait(timeout=20)
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(agent.pid, signal.SIGKILL)
                    agent.wait(timeout=20)
        remove_namespaces(self.namespaces())
        for node in self.nodes:  # a BIRD outside its namespace's pids (it never is), by its command line
            for pid in self.bird_pids(node):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.work, ignore_errors=True)


def main() -> int:
    """Case 4 alone: its own plugin directory and work directory, all removed at the end."""
    from pycni.cli.install import install

    work = tempfile.mkdtemp(prefix="pycni-demo-")
    installed = os.path.join(os.path.dirname(sys.executable), "pycni")
    pycni = [installed] if os.path.exists(installed) else [sys.executable, "-m", "pycni.cli.main"]
    demo = CalicoDemo(work, os.path.join(work, "bin"), pycni)
    try:
        try:
            if os.geteuid() != 0:
                raise DemoFailed("the demo creates network namespaces: run it as root")
            demo.preflight()
            say("Install pycni's plugin executables (the directory on CNI_PATH)")
            print(f"$ pycni plugins install --dir {demo.plugin_dir}")
            for path in install(demo.plugin_dir):
                print(path)
            demo.run()
        finally:
            say("Clean up: agents, BIRD, namespaces, the work directory")
            demo.teardown()
            shutil.rmtree(work, ignore_errors=True)
    except DemoFailed as exc:
        print(f"\npycni demo (Case 4): FAILED: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\npycni demo (Case 4): interrupted; everything it made was removed", file=sys.stderr)
        return 130
    say("Done: Case 4 worked and nothing was left behind")
    return 0


if __name__ == "__main__":
    sys.exit(main())
