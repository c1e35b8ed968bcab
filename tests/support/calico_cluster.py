"""A Calico-style cluster inside namespaces: two underlay subnets joined by a router, etcd, ``pycni calico-node``.

    underlay ns:  bridges br0 (198.51.100.1/24, etcd listens there) and br1 (no address)
    router ns:    198.51.100.254 on br0, 203.0.113.254 on br1, 198.18.0.254 toward "outside"; forwards
    outside ns:   198.18.0.1/24: a host beyond the cluster (no route to any pod), for natOutgoing
    node ns:      eth0 on br0 (198.51.100.1x/24) or br1 (203.0.113.1x/24), default via the router;
                  ``pycni calico-node`` (per-node node-name file, MTU file and run directory)
    pod ns:       made by the real ``calico`` CNI plugin (with calico-ipam) through ``pycni add``;
                  busybox httpd answers with the pod's name

Nothing touches the machine's own network (never 192.0.2.0/24). The fixtures
call :meth:`CalicoCluster.close` even when a test fails: agents are killed, and
the namespaces (with every link, route and nft table in them, and BIRD) go
with the :class:`~tests.support.netns.NetnsPool`; per-node files live in the
test's temporary directory.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.etcd import EtcdServer, etcd_server
from tests.support.netns import NetnsPool, run

ETCD_IP = "198.51.100.1"
ETCD_URL = f"http://{ETCD_IP}:2379"
SUBNETS = {1: "198.51.100", 2: "203.0.113"}
ROUTER = {1: "198.51.100.254", 2: "203.0.113.254"}
OUTSIDE_IP = "198.18.0.1"
OUTSIDE_ROUTER = "198.18.0.254"
NETWORK = "k8s-pod-network"

# The seed article's custom-resources.yaml (its operator Installation), verbatim in substance.
SEED_INSTALLATION = """\
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
apiVersion: operator.tigera.io/v1
kind: APIServer
metadata:
  name: default
spec: {}
"""


@dataclass
class Pod:
    name: str  # its namespace
    ip: str
    node: Node


@dataclass
class Node:
    index: int
    ns: str
    nodename: str
    subnet: int
    address: str
    home: Path
    agent: subprocess.Popen[bytes] | None = None
    pods: list[Pod] = field(default_factory=list)

    @property
    def log(self) -> Path:
        return self.home / "calico-node.log"

    @property
    def nodename_file(self) -> Path:
        return self.home / "nodename"

    @property
    def mtu_file(self) -> Path:
        return self.home / "mtu"

    @property
    def run_dir(self) -> Path:
        return self.home / "run"


def wait_until(predicate: Callable[[], Any], within: float, what: str, interval: float = 0.05) -> float:
    """Seconds until ``predicate()`` is true; AssertionError naming ``what`` after ``within``."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > within:
            raise AssertionError(f"not within {within} s: {what}")
        time.sleep(interval)
    return time.monotonic() - start


class CalicoCluster:
    def __init__(
        self,
        pool: NetnsPool,
        tmp: Path,
        pycni_bin: str,
        plugin_dir: str,
        *,
        installation: str | None = SEED_INSTALLATION,
        env: dict[str, str] | None = None,
        agent_args: tuple[str, ...] = (),
    ) -> None:
        self.pool, self.tmp, self.pycni_bin, self.plugin_dir = pool, tmp, pycni_bin, plugin_dir
        self.agent_args = agent_args
        self.env = {"DATASTORE_TYPE": "etcdv3", "ETCD_ENDPOINTS": ETCD_URL, "CALICO_NETWORKING_BACKEND": "vxlan"}
        self.env.update(env or {})
        self.installation: Path | None = None
        if installation is not None:
            self.installation = tmp / "custom-resources.yaml"
            self.installation.write_text(installation)
        self.nodes: list[Node] = []
        self.underlay = pool.new("underlay")
        self.router = pool.new("router")
        self.outside = pool.new("outside")
        u, r, o = self.underlay, self.router, self.outside
        for bridge in ("br0", "br1"):
            run("ip", "link", "add", bridge, "type", "bridge", netns=u)
            run("ip", "link", "set", bridge, "up", netns=u)
        run("ip", "addr", "add", f"{ETCD_IP}/24", "dev", "br0", netns=u)
        for index, bridge in ((1, "br0"), (2, "br1")):
            run("ip", "link", "add", f"r{index}", "type", "veth", "peer", "name", f"up{index}", "netns", u, netns=r)
            run("ip", "link", "set", f"up{index}", "master", bridge, "up", netns=u)
            run("ip", "addr", "add", f"{ROUTER[index]}/24", "dev", f"r{index}", netns=r)
            run("ip", "link", "set", f"r{index}", "up", netns=r)
        run("ip", "link", "add", "r3", "type", "veth", "peer", "name", "eth0", "netns", o, netns=r)
        run("ip", "addr", "add", f"{OUTSIDE_ROUTER}/24", "dev", "r3", netns=r)
        run("ip", "link", "set", "r3", "up", netns=r)
        run("ip", "addr", "add", f"{OUTSIDE_IP}/24", "dev", "eth0", netns=o)
        run("ip", "link", "set", "eth0", "up", netns=o)
        run("ip", "route", "add", "default", "via", OUTSIDE_ROUTER, netns=o)
        run("sysctl", "-qw", "net.ipv4.ip_forward=1", netns=r)
        run("ip", "route", "add", "default", "via", ROUTER[1], netns=u)

    # -- nodes ----------------------------------------------------------------------

    def add_node(self, subnet: int = 1, *, start: bool = True, extra: tuple[str, ...] = ()) -> Node:
        index = len(self.nodes) + 1
        ns = self.pool.new(f"cnode{index}")
        address = f"{SUBNETS[subnet]}.{10 + index}"
        port = f"n{index}"
        run("ip", "link", "add", "eth0", "type", "veth", "peer", "name", port, "netns", self.underlay, netns=ns)
        run("ip", "link", "set", port, "master", "br0" if subnet == 1 else "br1", "up", netns=self.underlay)
        run("ip", "addr", "add", f"{address}/24", "dev", "eth0", netns=ns)
        run("ip", "link", "set", "eth0", "up", netns=ns)
        run("ip", "route", "add", "default", "via", ROUTER[subnet], netns=ns)
        home = self.tmp / f"node{index}"
        home.mkdir()
        node = Node(index, ns, f"node{index}", subnet, address, home)
        self.nodes.append(node)
        if start:
            self.start_agent(node, *extra)
        return node

    def agent_argv(self, node: Node, *extra: str) -> list[str]:
        installation = ["--installation", str(self.installation)] if self.installation else []
        return [
            "ip", "netns", "exec", node.ns, self.pycni_bin, "calico-node",
            "--nodename", node.nodename,
            "--iface", "eth0",
            "--nodename-file", str(node.nodename_file),
            "--mtu-file", str(node.mtu_file),
            "--run-dir", str(node.run_dir),
            *installation,
            *self.agent_args,
            *extra,
        ]  # fmt: skip

    def start_agent(self, node: Node, *extra: str, wait: bool = True) -> None:
        offset = node.log.stat().st_size if node.log.exists() else 0  # a restarted agent's "ready" is a new one
        handle = node.log.open("ab")
        env = {**os.environ, **self.env}
        node.agent = subprocess.Popen(
            self.agent_argv(node, *extra), stdout=handle, stderr=handle, env=env, start_new_session=True
        )
        handle.close()
        if not wait:
            return
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            text = node.log.read_text()
            if "calico-node: ready" in text[offset:]:
                return
            if node.agent.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"calico-node on {node.ns} did not become ready:\n{node.log.read_text()[-3000:]}")

    def stop_agent(self, node: Node, sig: int = signal.SIGTERM) -> int | None:
        code = None
        if node.agent is not None and node.agent.poll() is None:
            os.killpg(node.agent.pid, sig)
            code = node.agent.wait(timeout=30)
        elif node.agent is not None:
            code = node.agent.returncode
        node.agent = None
        return code

    def calicoctl(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        """``pycni calicoctl`` against the cluster's etcd (run in the underlay namespace, where etcd is)."""
        env = {**os.environ, "DATASTORE_TYPE": "etcdv3", "ETCD_ENDPOINTS": ETCD_URL}
        argv = ["ip", "netns", "exec", self.underlay, self.pycni_bin, "calicoctl", *args]
        proc = subprocess.run(argv, input=stdin, env=env, capture_output=True, text=True, timeout=60, check=False)
        assert proc.returncode == 0, f"calicoctl {' '.join(args)}: {proc.stderr}"
        return proc

    def etcd_get(self, prefix: str) -> dict[str, str]:
        """Every key under ``prefix`` with its value, read with etcdctl in the underlay namespace."""
        argv = ["ip", "netns", "exec", self.underlay, "etcdctl", f"--endpoints={ETCD_URL}", "get", "--prefix", prefix]
        env = {**os.environ, "ETCDCTL_API": "3"}
        lines = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30, check=True).stdout
        parts = lines.splitlines()
        return dict(zip(parts[0::2], parts[1::2], strict=True))

    def affine_blocks(self, node: Node) -> list[str]:
        """The node's IPv4 blocks with a confirmed affinity, from the datastore."""
        prefix = f"/calico/ipam/v2/host/{node.nodename}/ipv4/block/"
        found = self.etcd_get(prefix)
        confirmed = [k for k, v in found.items() if json.loads(v or "{}").get("state", "") in ("confirmed", "")]
        return sorted(key[len(prefix) :].replace("-", "/") for key in confirmed)

    def resource(self, kind: str, name: str) -> dict[str, Any]:
        value: dict[str, Any] = json.loads(self.calicoctl("get", kind, name, "-o", "json").stdout)
        return value

    def remove_node(self, node: Node) -> None:
        """An administrator decommissions ``node``: its agent stops, its Node and block affinities go."""
        self.stop_agent(node)
        self.calicoctl("delete", "node", node.nodename)
        self.release_affinities(node)

    def release_affinities(self, node: Node) -> None:
        """Give ``node``'s blocks back (what Calico's node controller does after the Node is gone)."""
        script = (
            "import os\n"
            "from pycni.datastore import open_datastore\n"
            "from pycni.fabric.calico.ipam_store import IPAM\n"
            f"store = open_datastore({ETCD_URL!r})\n"
            f"IPAM(store).release_host_affinities({node.nodename!r})\n"
            "store.close()\n"
        )
        python = os.path.join(os.path.dirname(self.pycni_bin), "python")
        run(python, "-c", script, netns=self.underlay)

    # -- pods -----------------------------------------------------------------------

    def conflist(self, node: Node) -> dict[str, Any]:
        return {
            "cniVersion": "1.0.0",
            "name": NETWORK,
            "plugins": [
                {
                    "type": "calico",
                    "datastore_type": "etcdv3",
                    "etcd_endpoints": ETCD_URL,
                    "nodename_file": str(node.nodename_file),
                    "pycni_mtu_file": str(node.mtu_file),
                    "ipam_lock_file": str(node.home / "ipam.lock"),
                    "mtu": 0,
                    "ipam": {"type": "calico-ipam"},
                }
            ],
        }

    def cni_env(self, node: Node, pod: str, namespace: str = "default") -> dict[str, str]:
        conf_dir = node.home / "net.d"
        conf_dir.mkdir(exist_ok=True)
        (conf_dir / "10-calico.conflist").write_text(json.dumps(self.conflist(node)))
        return {
            **os.environ,
            "CNI_PATH": self.plugin_dir,
            "NETCONFPATH": str(conf_dir),
            "PYCNI_CACHE_DIR": str(node.home / "cache"),
            "CNI_ARGS": f"K8S_POD_NAMESPACE={namespace};K8S_POD_NAME={pod}",
            "PYCNI_SOCKET": str(self.tmp / "no-daemon.sock"),  # in-process: never another test's daemon
        }

    def add_pod(self, node: Node, k8s: tuple[str, str] | None = None, serve: bool = True) -> Pod:
        """A pod through ``pycni add``; ``k8s`` names its stored Pod (namespace, name), else the netns names it."""
        name = self.pool.new(f"pod{node.index}")
        namespace, pod_name = k8s or ("default", name)
        proc = subprocess.run(
            ["ip", "netns", "exec", node.ns, self.pycni_bin, "add", NETWORK, self.pool.path(name)],
            env=self.cni_env(node, pod_name, namespace),
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        assert proc.returncode == 0, f"pod ADD on {node.ns}: {proc.stdout} {proc.stderr}"
        ip = json.loads(proc.stdout)["ips"][0]["address"].split("/")[0]
        pod = self.serve(name, ip, node) if serve else Pod(name, ip, node)
        node.pods.append(pod)
        return pod

    def serve(self, name: str, ip: str, node: Node) -> Pod:
        """busybox httpd in the pod's namespace, answering with the pod's name."""
        www = self.tmp / f"www-{name}"
        www.mkdir()
        (www / "index.html").write_text(f"{name}\n")
        run("busybox", "httpd", "-p", "80", "-h", str(www), netns=name)
        return Pod(name, ip, node)

    def netconf(self, node: Node, pools: list[str] | None = None) -> dict[str, Any]:
        """The calico plugin's network config as a runtime hands it to the executable (one plugin)."""
        conf = {"cniVersion": "1.0.0", "name": NETWORK, **self.conflist(node)["plugins"][0]}
        if pools:
            conf["ipam"] = {**conf["ipam"], "ipv4_pools": pools}
        return conf

    def plugin(
        self,
        command: str,
        node: Node,
        pod_ns: str,
        container_id: str,
        *,
        pools: list[str] | None = None,
        socket: str | None = None,
    ) -> subprocess.Popen[str]:
        """The ``calico`` plugin executable, started in the node's namespace as a runtime starts it.

        ``socket`` is the pycni daemon to hand the call to; without one the
        shim finds no daemon (a path nothing listens on) and runs the plugin
        in-process, so a daemon another test runs on the default socket never
        takes the call. The call runs in its own process group (SIGKILL it whole).
        """
        env = {
            **os.environ,
            "CNI_COMMAND": command,
            "CNI_CONTAINERID": container_id,
            "CNI_NETNS": self.pool.path(pod_ns),
            "CNI_IFNAME": "eth0",
            "CNI_PATH": self.plugin_dir,
            "CNI_ARGS": f"K8S_POD_NAMESPACE=default;K8S_POD_NAME={container_id}",
            "PYCNI_SOCKET": socket or str(self.tmp / "no-daemon.sock"),
        }
        text = json.dumps(self.netconf(node, pools))
        conf = node.home / f"netconf-{'-'.join(pools or ['default'])}.json".replace("/", "_")
        if not conf.exists() or conf.read_text() != text:  # never rewritten under a call reading it
            staged = conf.with_suffix(".tmp")
            staged.write_text(text)
            staged.replace(conf)
        with conf.open() as stdin:
            return subprocess.Popen(
                ["ip", "netns", "exec", node.ns, os.path.join(self.plugin_dir, "calico")],
                env=env,
                stdin=stdin,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                start_new_session=True,
            )

    def pods(self) -> list[Pod]:
        return [pod for node in self.nodes for pod in node.pods]

    # -- checks ---------------------------------------------------------------------

    @staticmethod
    def fetch(src: str, url: str, timeout: float = 2) -> str | None:
        proc = run("curl", "-sS", "-m", str(timeout), url, netns=src, check=False)
        return proc.stdout if proc.returncode == 0 else None

    def reaches(self, src: Pod, dst: Pod) -> bool:
        return self.fetch(src.name, f"http://{dst.ip}/") == f"{dst.name}\n"

    def unreachable_pairs(self, pods: list[Pod] | None = None) -> list[tuple[str, str]]:
        everyone = pods or self.pods()
        return [(a.name, b.name) for a in everyone for b in everyone if a is not b and not self.reaches(a, b)]

    def wait_full_mesh(self, within: float, pods: list[Pod] | None = None) -> float:
        start = time.monotonic()
        while True:
            missing = self.unreachable_pairs(pods)
            if not missing:
                return time.monotonic() - start
            if time.monotonic() - start > within:
                raise AssertionError(f"unreachable after {within} s: {missing[:6]}")
            time.sleep(0.2)

    @staticmethod
    def routes(node: Node) -> list[dict[str, Any]]:
        """The node's IPv4 main-table routes as ``ip -j route`` gives them."""
        out = run("ip", "-j", "route", "show", "table", "main", netns=node.ns).stdout
        found: list[dict[str, Any]] = json.loads(out or "[]")
        return found

    def route_to(self, node: Node, dst: str) -> dict[str, Any] | None:
        return next((r for r in self.routes(node) if r.get("dst") == dst), None)

    @staticmethod
    def link(node: Node, name: str) -> dict[str, Any] | None:
        proc = run("ip", "-d", "-s", "-j", "link", "show", name, netns=node.ns, check=False)
        if proc.returncode != 0:
            return None
        found: list[dict[str, Any]] = json.loads(proc.stdout)
        return found[0]

    def tx_packets(self, node: Node, name: str = "vxlan.calico") -> int:
        info = self.link(node, name)
        assert info is not None, f"{name} is missing on {node.ns}"
        return int(info["stats64"]["tx"]["packets"])

    def close(self) -> None:
        for node in self.nodes:
            with contextlib.suppress(ProcessLookupError, subprocess.TimeoutExpired):
                self.stop_agent(node, signal.SIGKILL)


@contextlib.contextmanager
def clusters_on_etcd(
    pool: NetnsPool, tmp: Path, pycni_bin: str, plugin_dir: str, **defaults: Any
) -> Iterator[Callable[..., tuple[CalicoCluster, EtcdServer]]]:
    """``make(**kwargs)``: a cluster with its own etcd in its underlay; on exit each cluster closes, then its etcd."""
    made: list[tuple[CalicoCluster, Any]] = []

    def make(**kwargs: Any) -> tuple[CalicoCluster, EtcdServer]:
        cluster = CalicoCluster(pool, tmp, pycni_bin, plugin_dir, **{**defaults, **kwargs})
        context = etcd_server(host=ETCD_IP, netns=cluster.underlay)
        made.append((cluster, context))
        return cluster, context.__enter__()

    try:
        yield make
    finally:
        for cluster, context in made:
            try:
                cluster.close()
            finally:
                context.__exit__(None, None, None)
