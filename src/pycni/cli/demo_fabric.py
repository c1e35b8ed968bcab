"""``pycni demo``, Case 3: the seed article's Flannel setup across two nodes.

Two "node" namespaces share an underlay bridge (in a third namespace), each runs
``pycni flanneld`` with the article's ``net-conf.json`` (vxlan over
10.244.0.0/16) on the embedded store, so no etcd is needed, and each starts a
"pod" through the article's ``cni-conf.json`` chain (flannel + portmap). Pod 1
then fetches pod 2's page across the vxlan overlay, and node 1 fetches it
through node 2's host port. Everything is removed at the end.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field

from pycni.cli.demo import DemoFailed, remove_namespaces, say, sh

UNDERLAY = "pycni-demo-underlay"
UNDERLAY_GATEWAY = "192.168.124.1"
PICTURES_ENV = "PYCNI_DEMO_PICTURES"  # a directory: the case draws its cluster there (make pictures)

# The article's ConfigMap kube-flannel-cfg, verbatim.
NET_CONF = {"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan"}}
CNI_CONF = {
    "name": "cbr0",
    "cniVersion": "0.3.1",
    "plugins": [
        {"type": "flannel", "delegate": {"hairpinMode": True, "isDefaultGateway": True}},
        {"type": "portmap", "capabilities": {"portMappings": True}},
    ],
}


@dataclass
class FabricNode:
    index: int
    home: str
    agent: subprocess.Popen[bytes] | None = None
    pod_ip: str = ""
    page: str = ""
    cap_args: dict[str, object] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"pycni-demo-node{self.index}"

    @property
    def pod(self) -> str:
        return f"pycni-demo-pod{self.index}"

    @property
    def address(self) -> str:
        return f"192.168.124.{10 + self.index}"

    @property
    def subnet_file(self) -> str:
        return os.path.join(self.home, "subnet.env")

    @property
    def log(self) -> str:
        return os.path.join(self.home, "flanneld.log")


class FabricDemo:
    def __init__(self, work: str, plugin_dir: str, pycni: list[str]) -> None:
        self.work = os.path.join(work, "fabric")
        self.plugin_dir = plugin_dir
        self.pycni = pycni
        self.store = os.path.join(self.work, "flannel.db")
        self.net_conf = os.path.join(self.work, "net-conf.json")
        self.nodes = [FabricNode(i, os.path.join(self.work, f"node{i}")) for i in (1, 2)]

    @staticmethod
    def namespaces() -> list[str]:
        return [UNDERLAY, *(f"pycni-demo-{kind}{i}" for kind in ("node", "pod") for i in (1, 2))]

    def run(self) -> None:
        self.build_underlay()
        say("Case 3: Flannel. net-conf.json (the article's ConfigMap), loaded into the embedded store")
        with open(self.net_conf, "w") as handle:
            json.dump(NET_CONF, handle, indent=2)
        print(f"net-conf.json:\n{json.dumps(NET_CONF, indent=2)}")
        for node in self.nodes:
            self.start_agent(node)
        node1 = self.nodes[0]
        say(f"{node1.name}: the subnet flanneld leased, and the devices the article shows")
        with open(node1.subnet_file) as handle:
            print(f"{node1.subnet_file}:\n{handle.read().rstrip()}")
        sh(["ip", "-d", "link", "show", "flannel.1"], netns=node1.name)
        say("Start a pod on each node with cni-conf.json (flannel delegating to bridge + host-local, then portmap)")
        print(f"cni-conf.json:\n{json.dumps(CNI_CONF, indent=2)}")
        self.nodes[1].cap_args = {"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]}
        for node in self.nodes:
            self.add_pod(node)
        sh(["ip", "-4", "addr", "show", "cni0"], netns=node1.name)
        sh(["ip", "route", "show"], netns=node1.name)
        say("Every node's lease, and node 1's routes, neighbours and FDB (pycni inspect)")
        sh([*self.pycni, "inspect", "--store-path", self.store], netns=node1.name)
        self.draw_picture()
        first, second = self.nodes
        say(f"From pod 1 ({first.pod_ip}), fetch pod 2's page ({second.pod_ip}) across the vxlan overlay, and back")
        self.fetch(first.pod, f"http://{second.pod_ip}/", second.page)
        self.fetch(second.pod, f"http://{first.pod_ip}/", first.page)
        say("From node 1, fetch pod 2's page through node 2's host port 8080 (portmap in the chain)")
        self.fetch(first.name, f"http://{second.address}:8080/", second.page)
        say("Case 3: DEL both pods, stop both agents")
        for node in self.nodes:
            self.del_pod(node)
            self.stop_agent(node)
        for node in self.nodes:
            veths = sh(["ip", "-o", "link", "show", "type", "veth"], netns=node.name, show=False).stdout
            left = [line for line in veths.splitlines() if "eth0@" not in line]
            print(f"{node.name} pod veths left behind: {left}")
            if left:
                raise DemoFailed(f"DEL left veths on {node.name}: {left}")

    def draw_picture(self) -> None:
        """With ``$PYCNI_DEMO_PICTURES=DIR`` (``make pictures``), ``pycni inspect --svg DIR/flannel.svg`` from node 1.

        Both nodes' result caches are read, so the picture has every pod of the demo.
        """
        directory = os.environ.get(PICTURES_ENV)
        if not directory:
            return
        os.makedirs(directory, exist_ok=True)
        target = os.path.join(os.path.abspath(directory), "flannel.svg")
        caches = [arg for node in self.nodes for arg in ("--cni-cache-dir", os.path.join(node.home, "cache"))]
        say(f"A picture of the cluster, as node 1 sees it ({PICTURES_ENV})")
        sh([*self.pycni, "inspect", "--store-path", self.store, *caches, "--svg", target], netns=self.nodes[0].name)

    def build_underlay(self) -> None:
        say("Case 3 set-up: two nodes on one underlay network (192.168.124.0/24)")
        sh(["ip", "netns", "add", UNDERLAY])
        sh(["ip", "link", "add", "br0", "type", "bridge"], netns=UNDERLAY)
        sh(["ip", "addr", "add", f"{UNDERLAY_GATEWAY}/24", "dev", "br0"], netns=UNDERLAY)
        sh(["ip", "link", "set", "br0", "up"], netns=UNDERLAY)
        for node in self.nodes:
            os.makedirs(node.home)
            sh(["ip", "netns", "add", node.name])
            sh(["ip", "link", "set", "lo", "up"], netns=node.name, show=False)
            peer = f"node{node.index}"
            sh(["ip", "link", "add", "eth0", "type", "veth", "peer", "name", peer, "netns", UNDERLAY], netns=node.name)
            sh(["ip", "link", "set", peer, "master", "br0", "up"], netns=UNDERLAY, show=False)
            sh(["ip", "addr", "add", f"{node.address}/24", "dev", "eth0"], netns=node.name)
            sh(["ip", "link", "set", "eth0", "up"], netns=node.name, show=False)
            sh(["ip", "route", "add", "default", "via", UNDERLAY_GATEWAY], netns=node.name, show=False)
            sh(["sysctl", "-qw", "net.ipv4.ip_forward=1"], netns=node.name, show=False)

    def start_agent(self, node: FabricNode) -> None:
        argv = [
            *self.pycni, "flanneld",
            "--net-config-path", self.net_conf,
            "--store-path", self.store,
            "--iface", "eth0",
            "--subnet-file", node.subnet_file,
            "--state-dir", os.path.join(node.home, "state"),
            "--release-on-exit",
        ]  # fmt: skip
        print(f"[{node.name}] $ {' '.join(argv)} &", flush=True)
        with open(node.log, "ab") as log:
            node.agent = subprocess.Popen(
                ["ip", "netns", "exec", node.name, *argv], stdout=log, stderr=log, start_new_session=True
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if os.path.exists(node.subnet_file) and "ready" in self.agent_log(node):
                return
            if node.agent.poll() is not None:
                break
            time.sleep(0.05)
        raise DemoFailed(f"flanneld on {node.name} did not become ready:\n{self.agent_log(node)[-2000:]}")

    @staticmethod
    def agent_log(node: FabricNode) -> str:
        with open(node.log, errors="replace") as handle:
            return handle.read()

    def stop_agent(self, node: FabricNode) -> None:
        if node.agent is None:
            return
        if node.agent.poll() is None:
            print(f"[{node.name}] $ kill {node.agent.pid}  # flanneld gives its lease back on exit", flush=True)
            os.killpg(node.agent.pid, signal.SIGTERM)
            try:
                node.agent.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(node.agent.pid, signal.SIGKILL)
                node.agent.wait(timeout=20)
        node.agent = None

    def cni_env(self, node: FabricNode) -> dict[str, str]:
        """Per-node paths: on one machine both nodes would otherwise share /run/flannel and /var/lib/cni."""
        conf_dir = os.path.join(node.home, "net.d")
        os.makedirs(conf_dir, exist_ok=True)
        config = json.loads(json.dumps(CNI_CONF))
        flannel = config["plugins"][0]
        flannel["subnetFile"] = node.subnet_file
        flannel["dataDir"] = os.path.join(node.home, "flannel")
        flannel["delegate"]["ipam"] = {"dataDir": os.path.join(node.home, "ipam")}
        with open(os.path.join(conf_dir, "cni-conf.conflist"), "w") as handle:
            json.dump(config, handle)
        env = {
            "CNI_PATH": self.plugin_dir,
            "NETCONFPATH": conf_dir,
            "PYCNI_CACHE_DIR": os.path.join(node.home, "cache"),
        }
        if node.cap_args:
            env["CAP_ARGS"] = json.dumps(node.cap_args)
        return env

    def add_pod(self, node: FabricNode) -> None:
        sh(["ip", "netns", "add", node.pod])
        result = sh([*self.pycni, "add", "cbr0", f"/run/netns/{node.pod}"], netns=node.name, env=self.cni_env(node))
        node.pod_ip = json.loads(result.stdout)["ips"][0]["address"].split("/")[0]
        www = os.path.join(node.home, "www")
        os.makedirs(www)
        node.page = f"Hello from pod {node.index} on {node.name} ({node.pod_ip})"
        with open(os.path.join(www, "index.html"), "w") as handle:
            handle.write(node.page + "\n")
        sh(["busybox", "httpd", "-p", "80", "-h", www], netns=node.pod, show=False)

    def del_pod(self, node: FabricNode) -> None:
        sh([*self.pycni, "del", "cbr0", f"/run/netns/{node.pod}"], netns=node.name, env=self.cni_env(node))

    @staticmethod
    def fetch(netns: str, url: str, expected: str) -> None:
        """GET ``url`` from ``netns``; the overlay route may take a moment to reach the other node."""
        proc = None
        for _ in range(50):
            proc = sh(["curl", "-sS", "-m", "2", url], netns=netns, show=False, check=False)
            if proc.returncode == 0 and expected in proc.stdout:
                print(f"[{netns}] $ curl {url}\n{proc.stdout.rstrip()}", flush=True)
                return
            time.sleep(0.2)
        raise DemoFailed(f"{url} from {netns}: {(proc.stderr or proc.stdout).strip() if proc else ''}")

    def teardown(self) -> None:
        for node in self.nodes:
            try:
                self.stop_agent(node)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                node.agent = None
        remove_namespaces(self.namespaces())
