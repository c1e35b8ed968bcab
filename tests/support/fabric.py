"""A multi-node Flannel-style cluster inside namespaces, for the fabric's tests and benchmarks.

    underlay ns:  bridge br0 198.51.100.1/24, etcd on it
    node<i> ns:   eth0 198.51.100.<10+i>/24 (veth to br0), pycni flanneld, cni0, pods' veths
    pod ns:       eth0 from the flannel CNI plugin (bridge + host-local), busybox httpd

Agents run with the flags a user gives (``--etcd-endpoints --iface
--subnet-file``), so they keep their state in flanneld's default ``--state-dir``
as several nodes on one real machine would; a shared default is exactly where
per-node state can collide (pycni issue 9). ``Cluster(state_dirs=True)`` gives
each node its own ``--state-dir`` instead.

Nothing touches the machine's own network. Every process, namespace and
directory is removed by :meth:`Cluster.close`, which the fixtures call even
when a test fails, including the files the agents keyed to these nodes in the
default state directory.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pycni.fabric.flannel import subnetenv
from pycni.fabric.flannel.backends.common import DEFAULT_STATE_DIR
from pycni.fabric.flannel.backends.vxlan import mac_state_path
from tests.support.netns import NetnsPool, run

UNDERLAY_GATEWAY = "198.51.100.1"


@dataclass
class Pod:
    name: str
    ip: str
    node: Node


@dataclass
class Node:
    index: int
    name: str
    address: str
    home: Path
    netns_inode: int  # the namespace's identity, which the agent keys its state files by
    agent: subprocess.Popen[bytes] | None = None
    pods: list[Pod] = field(default_factory=list)

    @property
    def subnet_file(self) -> Path:
        return self.home / "subnet.env"

    def subnet_env(self) -> dict[str, str]:
        return subnetenv.read(str(self.subnet_file))

    @property
    def log(self) -> Path:
        return self.home / "flanneld.log"


class Cluster:
    def __init__(
        self,
        pool: NetnsPool,
        tmp: Path,
        pycni_bin: str,
        plugin_dir: str,
        etcd_endpoint: str,
        agent_args: tuple[str, ...] = (),
        state_dirs: bool = False,
    ) -> None:
        self.pool, self.tmp, self.pycni_bin, self.plugin_dir = pool, tmp, pycni_bin, plugin_dir
        self.etcd_endpoint = etcd_endpoint
        self.agent_args = agent_args
        self.state_dirs = state_dirs
        self._made_default_state_dir = not os.path.isdir(DEFAULT_STATE_DIR)
        self.nodes: list[Node] = []
        self.underlay = pool.new("underlay")
        run("ip", "link", "add", "br0", "type", "bridge", netns=self.underlay)
        run("ip", "addr", "add", f"{UNDERLAY_GATEWAY}/24", "dev", "br0", netns=self.underlay)
        run("ip", "link", "set", "br0", "up", netns=self.underlay)

    # -- nodes --------------------------------------------------------------------

    def add_node(self, start_agent: bool = True) -> Node:
        index = len(self.nodes) + 1
        name = self.pool.new(f"node{index}")
        address = f"198.51.100.{10 + index}"
        run(
            "ip", "link", "add", "eth0", "type", "veth", "peer", "name", f"n{index}", "netns", self.underlay, netns=name
        )
        run("ip", "link", "set", f"n{index}", "master", "br0", "up", netns=self.underlay)
        run("ip", "addr", "add", f"{address}/24", "dev", "eth0", netns=name)
        run("ip", "link", "set", "eth0", "up", netns=name)
        run("ip", "route", "add", "default", "via", UNDERLAY_GATEWAY, netns=name)
        run("sysctl", "-qw", "net.ipv4.ip_forward=1", netns=name)
        home = self.tmp / f"node{index}"
        home.mkdir()
        node = Node(index, name, address, home, os.stat(self.pool.path(name)).st_ino)
        self.nodes.append(node)
        if start_agent:
            self.start_agent(node)
        return node

    def agent_argv(self, node: Node, *extra: str) -> list[str]:
        """``pycni flanneld`` in the node's namespace, against this cluster's etcd."""
        return [
            "ip", "netns", "exec", node.name, self.pycni_bin, "flanneld",
            "--etcd-endpoints", self.etcd_endpoint,
            "--iface", "eth0",
            "--subnet-file", str(node.subnet_file),
            *(["--state-dir", str(self.state_dir(node))] if self.state_dirs else []),
            *extra,
        ]  # fmt: skip

    def state_dir(self, node: Node) -> Path:
        """Where ``node``'s agent keeps its state: its own directory, or flanneld's shared default."""
        return node.home / "state" if self.state_dirs else Path(DEFAULT_STATE_DIR)

    def mac_files(self, node: Node) -> list[str]:
        """The VTEP MAC files the agent keyed to ``node`` (any VNI)."""
        return glob.glob(mac_state_path(str(self.state_dir(node)), "flannel.*", node.address, node.netns_inode))

    def start_agent(self, node: Node, *extra: str, resync: str | None = "1") -> None:
        """Start ``node``'s agent and wait until it is ready; ``resync=None`` keeps flanneld's default."""
        fast = ["--iptables-resync", resync] if resync else []
        argv = self.agent_argv(node, *fast, *self.agent_args, *extra)
        handle = node.log.open("ab")
        node.agent = subprocess.Popen(argv, stdout=handle, stderr=handle, start_new_session=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if node.subnet_env().get("FLANNEL_SUBNET") and "ready" in node.log.read_text():
                return
            if node.agent.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"flanneld on {node.name} did not become ready:\n{node.log.read_text()[-3000:]}")

    def stop_agent(self, node: Node, sig: int = signal.SIGTERM) -> None:
        if node.agent is not None and node.agent.poll() is None:
            os.killpg(node.agent.pid, sig)
            node.agent.wait(timeout=20)
        node.agent = None

    # -- pods ---------------------------------------------------------------------

    def conflist(self, node: Node) -> dict[str, Any]:
        return {
            "cniVersion": "0.3.1",
            "name": "cbr0",
            "plugins": [
                {
                    "type": "flannel",
                    "subnetFile": str(node.subnet_file),
                    "dataDir": str(node.home / "flannel"),
                    "delegate": {
                        "hairpinMode": True,
                        "isDefaultGateway": True,
                        "ipam": {"dataDir": str(node.home / "ipam")},
                    },
                }
            ],
        }

    def cni_env(self, node: Node) -> dict[str, str]:
        conf_dir = node.home / "net.d"
        conf_dir.mkdir(exist_ok=True)
        (conf_dir / "10-flannel.conflist").write_text(json.dumps(self.conflist(node)))
        return {
            **os.environ,
            "CNI_PATH": self.plugin_dir,
            "NETCONFPATH": str(conf_dir),
            "PYCNI_CACHE_DIR": str(node.home / "cache"),
        }

    def add_pod(self, node: Node) -> Pod:
        name = self.pool.new(f"pod{node.index}")
        proc = subprocess.run(
            ["ip", "netns", "exec", node.name, self.pycni_bin, "add", "cbr0", self.pool.path(name)],
            env=self.cni_env(node),
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        assert proc.returncode == 0, f"pod ADD on {node.name}: {proc.stderr}"
        ip = json.loads(proc.stdout)["ips"][0]["address"].split("/")[0]
        www = self.tmp / f"www-{name}"
        www.mkdir()
        (www / "index.html").write_text(f"{name}\n")
        run("busybox", "httpd", "-p", "80", "-h", str(www), netns=name)
        pod = Pod(name, ip, node)
        node.pods.append(pod)
        return pod

    def del_pod(self, pod: Pod) -> None:
        proc = subprocess.run(
            ["ip", "netns", "exec", pod.node.name, self.pycni_bin, "del", "cbr0", self.pool.path(pod.name)],
            env=self.cni_env(pod.node),
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr
        pod.node.pods.remove(pod)

    def pods(self) -> list[Pod]:
        return [pod for node in self.nodes for pod in node.pods]

    # -- checks ---------------------------------------------------------------------

    @staticmethod
    def fetch(src: Pod, dst: Pod, timeout: float = 2) -> str | None:
        proc = run("curl", "-sS", "-m", str(timeout), f"http://{dst.ip}/", netns=src.name, check=False)
        return proc.stdout if proc.returncode == 0 else None

    def unreachable_pairs(self, pods: list[Pod] | None = None) -> list[tuple[str, str]]:
        everyone = pods or self.pods()
        return [
            (a.name, b.name) for a in everyone for b in everyone if a is not b and self.fetch(a, b) != f"{b.name}\n"
        ]

    def wait_full_mesh(self, within: float) -> float:
        """Seconds until every pod reaches every other pod over TCP; fails after ``within``."""
        start = time.monotonic()
        while True:
            missing = self.unreachable_pairs()
            if not missing:
                return time.monotonic() - start
            if time.monotonic() - start > within:
                raise AssertionError(f"unreachable after {within} s: {missing[:6]}")
            time.sleep(0.2)

    def close(self) -> None:
        for node in self.nodes:
            with contextlib.suppress(ProcessLookupError, subprocess.TimeoutExpired):
                self.stop_agent(node, signal.SIGKILL)
        if self.state_dirs:
            return  # inside the nodes' homes, which go with tmp
        for node in self.nodes:
            for path in self.mac_files(node):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
        if self._made_default_state_dir:
            with contextlib.suppress(OSError):  # not empty: another agent on this machine uses it
                os.rmdir(DEFAULT_STATE_DIR)
