"""Nodes set up by ``pycni install --manifest``: the printed agent runs, and a pod gets its network.

The agent is started with exactly the command line (and environment) install
printed, plus only what makes it one test node among many on this machine
(its store file, state files and directories in tmp, its interface). The pod
is added by the executables install wrote, through the conflist install
wrote, with only the plugins' machine-wide paths moved into tmp.
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
            "PYCNI_SOCKET": str(tmp_path / "no-daemon.sock"),  # in-process: never another test's daemon
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


def _node(netns: NetnsPool) -> str:
    node, peer = netns.new("cnode"), netns.new("cpeer")
    run("ip", "link", "add", "eth0", "type", "veth", "peer", "name", "p0", "netns", peer, netns=node)
    run("ip", "addr", "add", "198.51.100.10/24", "dev", "eth0", netns=node)
    run("ip", "link", "set", "eth0", "up", netns=node)
    run("ip", "addr", "add", "198.51.100.1/24", "dev", "p0", netns=peer)
    run("ip", "link", "set", "p0", "up", netns=peer)
    run("ip", "route", "add", "default", "via", "198.51.100.1", netns=node)
    run("sysctl", "-qw", "net.ipv4.ip_forward=1", netns=node)
    return node


def test_a_calico_node_from_calico_yaml_switched_to_vxlan(netns: NetnsPool, pycni_bin: str, tmp_path: Path) -> None:
    """calico.yaml with the article's VXLAN edits (this kernel has no ipip): pool, MTU and backend reach the node."""
    text = (
        (FIXTURES / "calico.yaml")
        .read_text()
        .replace(
            'CALICO_IPV4POOL_IPIP\n              value: "Always"', 'CALICO_IPV4POOL_IPIP\n              value: "Never"'
        )
        .replace(
            'CALICO_IPV4POOL_VXLAN\n              value: "Never"',
            'CALICO_IPV4POOL_VXLAN\n              value: "Always"',
        )
        .replace('calico_backend: "bird"', 'calico_backend: "vxlan"')
        .replace(
            '# - name: CALICO_IPV4POOL_CIDR\n            #   value: "192.168.0.0/16"',
            '- name: CALICO_IPV4POOL_CIDR\n              value: "10.244.0.0/16"',
        )
    )
    manifest = tmp_path / "calico.yaml"
    manifest.write_text(text)
    node = _node(netns)
    bin_dir, conf_dir = tmp_path / "bin", tmp_path / "net.d"
    args = ["--manifest", str(manifest), "--node", "cnode", "--cni-conf-dir", str(conf_dir)]
    args += ["--cni-bin-dir", str(bin_dir), "--record", str(tmp_path / "installed.json")]
    install = subprocess.run([pycni_bin, "install", *args], capture_output=True, text=True, check=False, timeout=60)
    assert install.returncode == 0, install.stderr
    printed = shlex.split(install.stdout.splitlines()[-1])
    assert printed[0] == "env" and printed[-2:] == ["pycni", "calico-node"]
    agent_env = dict(word.split("=", 1) for word in printed[1:-2])
    assert agent_env["CALICO_NETWORKING_BACKEND"] == "vxlan" and agent_env["FELIX_VXLANMTU"] == "1440"

    store = tmp_path / "calico.db"
    files = {"nodename": tmp_path / "nodename", "mtu": tmp_path / "mtu", "run": tmp_path / "run"}
    per_node = ["--nodename-file", str(files["nodename"]), "--mtu-file", str(files["mtu"])]
    per_node += ["--run-dir", str(files["run"]), "--iface", "eth0"]
    log_path = tmp_path / "calico-node.log"
    log = log_path.open("ab")
    env = {**os.environ, **agent_env, "PYCNI_CALICO_STORE": str(store)}
    agent = subprocess.Popen(
        ["ip", "netns", "exec", node, pycni_bin, "calico-node", *per_node],
        stdout=log,
        stderr=log,
        env=env,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 40
        while "calico-node: ready" not in log_path.read_text():
            assert agent.poll() is None, log_path.read_text()[-3000:]
            assert time.monotonic() < deadline, log_path.read_text()[-3000:]
            time.sleep(0.05)
        assert files["nodename"].read_text().strip() == "cnode"
        pools = subprocess.run(
            [pycni_bin, "calicoctl", "get", "ippool", "-o", "json"],
            env={**os.environ, "PYCNI_CALICO_STORE": str(store)},
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        listed = json.loads(pools.stdout)
        (pool,) = listed.get("items", [listed])
        assert (pool["spec"]["cidr"], pool["spec"]["vxlanMode"], pool["spec"]["ipipMode"]) == (
            "10.244.0.0/16",
            "Always",
            "Never",
        )

        conflist = json.loads((conf_dir / "10-calico.conflist").read_text())
        calico_plugin = conflist["plugins"][0]
        assert (calico_plugin["nodename"], calico_plugin["mtu"], calico_plugin["datastore_type"]) == (
            "cnode",
            1440,
            "pycni",
        )
        calico_plugin.update(
            pycni_store_path=str(store),
            nodename_file=str(files["nodename"]),
            pycni_mtu_file=str(files["mtu"]),
            ipam_lock_file=str(tmp_path / "ipam.lock"),
        )
        run_dir = tmp_path / "run.d"
        run_dir.mkdir()
        (run_dir / "10-calico.conflist").write_text(json.dumps(conflist))
        pod = netns.new("cpod")
        cni_env = {
            **os.environ,
            "CNI_PATH": str(bin_dir),
            "NETCONFPATH": str(run_dir),
            "PYCNI_CACHE_DIR": str(tmp_path / "cache"),
            "CNI_ARGS": f"K8S_POD_NAMESPACE=default;K8S_POD_NAME={pod}",
            "PYCNI_SOCKET": str(tmp_path / "no-daemon.sock"),
        }
        added = subprocess.run(
            ["ip", "netns", "exec", node, pycni_bin, "add", "k8s-pod-network", netns.path(pod)],
            env=cni_env,
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        assert added.returncode == 0, added.stderr
        address = ipaddress.ip_interface(json.loads(added.stdout)["ips"][0]["address"])
        assert address.ip in ipaddress.ip_network("10.244.0.0/16")
        link = json.loads(run("ip", "-j", "link", "show", "eth0", netns=pod).stdout)[0]
        assert link["mtu"] == 1440  # veth_mtu, through __CNI_MTU__
        deleted = subprocess.run(
            ["ip", "netns", "exec", node, pycni_bin, "del", "k8s-pod-network", netns.path(pod)],
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
            agent.wait(timeout=30)
        log.close()
