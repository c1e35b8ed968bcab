"""A node set up by ``pycni install --manifest kube-flannel.yml``: the printed agent runs, and a pod gets its network.

The agent is started with exactly the command line install printed, plus only
what makes it one test node among many on this machine (its store file,
subnet.env and state directory in tmp, its interface). The pod is added by
the executables install wrote, through the conflist install wrote, with only
the flannel plugin's machine-wide paths (subnetFile, dataDir, host-local's
dataDir) moved into tmp.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shlex
import signal
import subprocess
import time
from pathlib import Path

from pycni.fabric.flannel import subnetenv
from tests.support.netns import NetnsPool, run

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "manifests"


def test_a_flannel_node_from_kube_flannel_yml(netns: NetnsPool, pycni_bin: str, tmp_path: Path) -> None:
    node, peer = netns.new("mnode"), netns.new("mpeer")
    run("ip", "link", "add", "eth0", "type", "veth", "peer", "name", "p0", "netns", peer, netns=node)
    run("ip", "addr", "add", "198.51.100.10/24", "dev", "eth0", netns=node)
    run("ip", "link", "set", "eth0", "up", netns=node)
    run("ip", "addr", "add", "198.51.100.1/24", "dev", "p0", netns=peer)
    run("ip", "link", "set", "p0", "up", netns=peer)
    run("ip", "route", "add", "default", "via", "198.51.100.1", netns=node)
    run("sysctl", "-qw", "net.ipv4.ip_forward=1", netns=node)

    bin_dir, conf_dir, net_conf = tmp_path / "bin", tmp_path / "net.d", tmp_path / "kube-flannel" / "net-conf.json"
    args = ["--manifest", str(FIXTURES / "kube-flannel.yml"), "--node", "mnode", "--cni-conf-dir", str(conf_dir)]
    args += [
        "--cni-bin-dir",
        str(bin_dir),
        "--net-conf-path",
        str(net_conf),
        "--record",
        str(tmp_path / "installed.json"),
    ]
    install = subprocess.run(
        [pycni_bin, "install", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert install.returncode == 0, install.stderr
    printed = shlex.split(install.stdout.splitlines()[-1])
    assert printed[:2] == ["pycni", "flanneld"]

    subnet_file = tmp_path / "subnet.env"
    per_node = ["--store-path", str(tmp_path / "flannel.db"), "--subnet-file", str(subnet_file)]
    per_node += ["--state-dir", str(tmp_path / "state"), "--iface", "eth0", "--iptables-resync", "1"]
    log = (tmp_path / "flanneld.log").open("ab")
    agent = subprocess.Popen(
        ["ip", "netns", "exec", node, pycni_bin, *printed[1:], *per_node],
        stdout=log,
        stderr=log,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not (subnet_file.exists() and subnetenv.read(str(subnet_file)).get("FLANNEL_SUBNET")):
            assert agent.poll() is None, (tmp_path / "flanneld.log").read_text()[-3000:]
            assert time.monotonic() < deadline, (tmp_path / "flanneld.log").read_text()[-3000:]
            time.sleep(0.05)
        env = subnetenv.read(str(subnet_file))
        # The manifest's net-conf.json (10.244.0.0/16, vxlan) and flanneld's --ip-masq, as the agent took them.
        assert env["FLANNEL_NETWORK"] == "10.244.0.0/16"
        assert env["FLANNEL_IPMASQ"] == "true"
        assert env["FLANNEL_MTU"] == "1450"
        subnet = ipaddress.ip_interface(env["FLANNEL_SUBNET"])
        assert subnet.network.subnet_of(ipaddress.IPv4Network("10.244.0.0/16"))  # type: ignore[arg-type]
        run("ip", "link", "show", "flannel.1", netns=node)

        conflist = json.loads((conf_dir / "10-flannel.conflist").read_text())
        flannel_plugin = conflist["plugins"][0]
        flannel_plugin.update(subnetFile=str(subnet_file), dataDir=str(tmp_path / "flannel"))
        flannel_plugin["delegate"]["ipam"] = {"dataDir": str(tmp_path / "ipam")}
        run_dir = tmp_path / "run.d"
        run_dir.mkdir()
        (run_dir / "10-flannel.conflist").write_text(json.dumps(conflist))
        cni_env = {
            **os.environ,
            "CNI_PATH": str(bin_dir),
            "NETCONFPATH": str(run_dir),
            "PYCNI_CACHE_DIR": str(tmp_path / "cache"),
        }
        pod = netns.new("mpod")
        added = subprocess.run(
            ["ip", "netns", "exec", node, pycni_bin, "add", "cbr0", netns.path(pod)],
            env=cni_env,
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        assert added.returncode == 0, added.stderr
        address = ipaddress.ip_interface(json.loads(added.stdout)["ips"][0]["address"])
        assert address.network == subnet.network
        gateway = str(subnet.ip)
        assert run("ping", "-c", "1", "-W", "2", gateway, netns=pod, check=False).returncode == 0
        deleted = subprocess.run(
            ["ip", "netns", "exec", node, pycni_bin, "del", "cbr0", netns.path(pod)],
            env=cni_env,
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        assert deleted.returncode == 0, deleted.stderr
    finally:
        if agent.poll() is None:
            os.killpg(agent.pid, signal.SIGTERM)
            agent.wait(timeout=20)
        log.close()
