"""Canal inside namespaces: Flannel's vxlan between the nodes, Calico's plugin and policy on each.

The underlay, router and etcd of :class:`~tests.support.calico_cluster.CalicoCluster`;
on every node ``pycni flanneld`` (vxlan, its lease in the same etcd under
``/coreos.com/network``) and ``pycni calico-node`` in policy-only mode
(``CALICO_NETWORKING_BACKEND=none``: no BIRD, no tunnels, no pools); pods
through the ``calico`` plugin with host-local IPAM on the node's Flannel
subnet, as canal.yaml's CNI config does with the node's podCIDR.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from tests.support.calico_cluster import ETCD_URL, NETWORK, CalicoCluster, Node
from tests.support.netns import NetnsPool, run

FLANNEL_NETWORK = {"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan"}}


class CanalCluster(CalicoCluster):
    def __init__(self, pool: NetnsPool, tmp: Path, pycni_bin: str, plugin_dir: str) -> None:
        super().__init__(
            pool,
            tmp,
            pycni_bin,
            plugin_dir,
            installation=None,
            env={"CALICO_NETWORKING_BACKEND": "none", "NO_DEFAULT_POOLS": "true"},
            agent_args=("--backend", "none"),
        )
        self.flanneld: dict[int, subprocess.Popen[bytes]] = {}

    def put_network_config(self) -> None:
        """Flannel's network config in etcd (once etcd runs in the underlay namespace)."""
        argv = ["etcdctl", f"--endpoints={ETCD_URL}", "put", "/coreos.com/network/config", json.dumps(FLANNEL_NETWORK)]
        run(*argv, netns=self.underlay)

    def add_node(self, subnet: int = 1, *, start: bool = True, extra: tuple[str, ...] = ()) -> Node:
        node = super().add_node(subnet, start=False)
        if start:
            self.start_flanneld(node)
            self.start_agent(node, *extra)
        return node

    @staticmethod
    def subnet_file(node: Node) -> Path:
        return node.home / "subnet.env"

    def subnet_env(self, node: Node) -> dict[str, str]:
        path = self.subnet_file(node)
        if not path.exists():
            return {}
        pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
        return {pair[0]: pair[1] for pair in pairs}

    def start_flanneld(self, node: Node) -> None:
        log = node.home / "flanneld.log"
        argv = [
            "ip", "netns", "exec", node.ns, self.pycni_bin, "flanneld",
            "--etcd-endpoints", ETCD_URL,
            "--iface", "eth0",
            "--subnet-file", str(self.subnet_file(node)),
            "--state-dir", str(node.home / "flannel"),
        ]  # fmt: skip
        with log.open("ab") as handle:
            agent = subprocess.Popen(argv, stdout=handle, stderr=handle, start_new_session=True)
        self.flanneld[node.index] = agent
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.subnet_env(node).get("FLANNEL_SUBNET") and "ready" in log.read_text():
                return
            if agent.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"flanneld on {node.ns} did not become ready:\n{log.read_text()[-3000:]}")

    def conflist(self, node: Node) -> dict[str, Any]:
        """canal.yaml's CNI config: calico with host-local on the node's subnet (its podCIDR, here Flannel's)."""
        env = self.subnet_env(node)
        subnet = str(ipaddress.ip_interface(env["FLANNEL_SUBNET"]).network)  # the lease, not the gateway address
        return {
            "cniVersion": "1.0.0",
            "name": NETWORK,
            "plugins": [
                {
                    "type": "calico",
                    "datastore_type": "etcdv3",
                    "etcd_endpoints": ETCD_URL,
                    "nodename_file": str(node.nodename_file),
                    "mtu": int(env["FLANNEL_MTU"]),
                    "ipam": {"type": "host-local", "subnet": subnet, "dataDir": str(node.home / "ipam")},
                }
            ],
        }

    def close(self) -> None:
        try:
            super().close()
        finally:
            for agent in self.flanneld.values():
                with contextlib.suppress(ProcessLookupError, subprocess.TimeoutExpired):
                    if agent.poll() is None:
                        os.killpg(agent.pid, signal.SIGKILL)
                        agent.wait(timeout=30)
