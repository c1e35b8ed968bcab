"""podman (CNI backend) running containers on a network made only of pycni plugins.

podman itself runs inside a 'node' namespace (``nsenter --net``, which keeps
the cgroup mounts ``ip netns exec`` would hide), so its bridge, rules and
containers never touch the machine's own network. Storage, config and the
plugin directory are private to the test.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pycni.cli.install import install
from tests.support.netns import NetnsPool, run
from tests.support.records import attachment_records, netns_cookie

INGRESS_BITS = 8_000_000
EGRESS_BITS = 16_000_000
CACHE = Path("/var/lib/cni/results")


def conflist(data_dir: Path) -> dict[str, Any]:
    return {
        "cniVersion": "1.0.0",
        "name": "pycninet",
        "plugins": [
            {
                "type": "bridge",
                "bridge": "pycni0",
                "isGateway": True,
                "ipMasq": True,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": "10.60.0.0/24"}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": str(data_dir),
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
            {
                "type": "bandwidth",
                "ingressRate": INGRESS_BITS,
                "ingressBurst": INGRESS_BITS // 50,
                "egressRate": EGRESS_BITS,
                "egressBurst": EGRESS_BITS // 50,
            },
            {"type": "firewall"},
            {"type": "tuning", "sysctl": {"net.ipv4.conf.IFNAME.arp_notify": "1"}},
        ],
    }


class Podman:
    def __init__(self, tmp: Path, node: str) -> None:
        self.tmp, self.node = tmp, node
        # podman refuses a run root longer than 50 characters: keep its state under a short path.
        self.state = Path(tempfile.mkdtemp(prefix="pycni-pod-", dir="/tmp"))
        self.bin = tmp / "bin"
        install(str(self.bin))
        (tmp / "net.d").mkdir()
        self.ipam = tmp / "ipam"
        (tmp / "net.d" / "pycninet.conflist").write_text(json.dumps(conflist(self.ipam)))
        (tmp / "containers.conf").write_text(
            "[network]\n"
            'network_backend = "cni"\n'
            f'cni_plugin_dirs = ["{self.bin}"]\n'
            f'network_config_dir = "{tmp / "net.d"}"\n'
            '[engine]\nruntime = "runc"\n'
        )
        self.env = {**os.environ, "CONTAINERS_CONF": str(tmp / "containers.conf")}
        rootfs = tmp / "rootfs"
        (rootfs / "bin").mkdir(parents=True)
        (rootfs / "www").mkdir()
        shutil.copy("/bin/busybox", rootfs / "bin" / "busybox")
        for applet in ("sh", "httpd", "sleep"):
            (rootfs / "bin" / applet).symlink_to("busybox")
        (rootfs / "www" / "index.html").write_text("hello from podman\n")
        archive = tmp / "rootfs.tar"
        subprocess.run(["tar", "-C", str(rootfs), "-cf", str(archive), "."], check=True)
        imported = self.run("import", str(archive), "localhost/pycni-bbox")
        assert imported.returncode == 0, imported.stderr

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        argv = [
            "nsenter",
            f"--net=/run/netns/{self.node}",
            "podman",
            "--root",
            str(self.state / "storage"),
            "--runroot",
            str(self.state / "run"),
            "--storage-driver",
            "vfs",
            "--cgroup-manager",
            "cgroupfs",
            *args,
        ]
        return subprocess.run(
            argv, env=self.env, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False, timeout=120
        )

    def start(self, name: str, *extra: str) -> str:
        proc = self.run(
            "run", "-d", "--name", name, "--runtime", "runc",
            "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024",
            "--network", "pycninet", *extra,
            "localhost/pycni-bbox", "/bin/httpd", "-f", "-p", "80", "-h", "/www",
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        inspect = json.loads(self.run("inspect", name).stdout)[0]
        return str(inspect["NetworkSettings"]["SandboxKey"])

    def remove(self, name: str) -> None:
        proc = self.run("rm", "-f", "-t", "0", name)
        assert proc.returncode == 0, proc.stderr


def in_netns(path: str, *argv: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["nsenter", f"--net={path}", *argv], capture_output=True, text=True, check=False, timeout=timeout
    )


def snapshot(node: str, ipam: Path, cookie: str) -> dict[str, Any]:
    """Everything a network attachment may leave behind on the node.

    host-local's ``lock`` and ``last_reserved_ip`` files are bookkeeping, not
    reservations; the runtime cache is shared with other users of the machine,
    so only this network's entries count.
    """
    return {
        "nft": run("nft", "list", "ruleset", netns=node).stdout,
        "links": sorted(
            line.split(": ")[1].split("@")[0] for line in run("ip", "-o", "link", netns=node).stdout.splitlines()
        ),
        "ipam": sorted(
            name
            for name in (os.listdir(ipam / "pycninet") if (ipam / "pycninet").exists() else [])
            if not name.startswith(("lock", "last_reserved_ip"))
        ),
        "cache": sorted(name for name in (os.listdir(CACHE) if CACHE.exists() else []) if "pycninet" in name),
        "records": attachment_records(node, cookie),
    }


@pytest.fixture
def podman(netns: NetnsPool, tmp_path: Path) -> Iterator[Podman]:
    if shutil.which("podman") is None or shutil.which("runc") is None:
        pytest.skip("podman and runc are not installed (scripts/setup.sh installs them)")
    node = netns.new("podnode")
    instance = Podman(tmp_path, node)
    yield instance
    for name in ("web", "client"):
        instance.run("rm", "-f", "-t", "0", name)
    instance.run("rmi", "-f", "localhost/pycni-bbox")
    shutil.rmtree(instance.state, ignore_errors=True)


def iperf(client_ns: str, server_ns: str, server_ip: str, reverse: bool) -> float:
    server = subprocess.Popen(["nsenter", f"--net={server_ns}", "iperf3", "-s", "-1"], stdout=subprocess.DEVNULL)
    try:
        time.sleep(0.3)
        argv = ["iperf3", "-c", server_ip, "-t", "4", "-O", "1", "-J", *(["-R"] if reverse else [])]
        proc = in_netns(client_ns, *argv)
        assert proc.returncode == 0, proc.stdout[-400:] + proc.stderr
        return float(json.loads(proc.stdout)["end"]["sum_received"]["bits_per_second"])
    finally:
        server.wait(timeout=30)


def test_podman_run_on_pycni_network(podman: Podman) -> None:
    cookie = netns_cookie(podman.node)
    fresh = snapshot(podman.node, podman.ipam, cookie)  # a brand-new node: no container has run on it yet
    assert fresh["nft"] == "" and fresh["links"] == ["lo"], "the node starts empty"

    web_ns = podman.start("web", "-p", "8080:80")
    client_ns = podman.start("client")
    node_ns = f"/run/netns/{podman.node}"
    assert in_netns(node_ns, "curl", "-sS", "-m", "3", "http://127.0.0.1:8080/").stdout == "hello from podman\n"
    hairpin = in_netns(client_ns, "curl", "-sS", "-m", "3", "http://10.60.0.1:8080/")
    assert hairpin.stdout == "hello from podman\n", f"another container via the host address: {hairpin.stderr}"
    assert in_netns(web_ns, "cat", "/proc/sys/net/ipv4/conf/eth0/arp_notify").stdout.strip() == "1", "tuning"

    web_ip = json.loads(podman.run("inspect", "web").stdout)[0]["NetworkSettings"]["Networks"]["pycninet"]["IPAddress"]
    ingress = iperf(node_ns, web_ns, web_ip, reverse=False)  # host -> container
    egress = iperf(node_ns, web_ns, web_ip, reverse=True)  # container -> host
    print(f"podman bandwidth: ingress {ingress / 1e6:.2f} Mbit/s, egress {egress / 1e6:.2f} Mbit/s")
    assert abs(ingress - INGRESS_BITS) / INGRESS_BITS < 0.15, f"ingress {ingress / 1e6:.2f} Mbit/s"
    assert abs(egress - EGRESS_BITS) / EGRESS_BITS < 0.15, f"egress {egress / 1e6:.2f} Mbit/s"

    podman.remove("client")
    podman.remove("web")
    after = snapshot(podman.node, podman.ipam, cookie)
    # The bridge outlives its containers, as the reference's does (it may be the administrator's own):
    # it is the one thing left, with no port on it.
    assert after["links"] == sorted([*fresh["links"], "pycni0"]), "only the bridge is left of the links"
    assert run("ip", "-o", "link", "show", "master", "pycni0", netns=podman.node).stdout == "", "no port is left"
    assert {**after, "links": fresh["links"]} == fresh, "podman rm left the node as it was before the first container"
