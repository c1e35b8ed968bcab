"""``pycni reset`` on a real Flannel node and a real Calico node: it lists exactly pycni's objects, removes
them with ``--yes`` (refusing while the node's agent runs), leaves the user's bridge, routes, nft table and
CNI config file alone, and a second run finds nothing.

Each node is a namespace built by the fabric test support with real etcd and a real agent; pods are wired
by the real CNI plugins through ``pycni add``. A pod whose sandbox is gone but whose namespace leaked (a
stray bind mount keeps it alive, unnamed) leaves its veth behind: that is the "pod veth whose peer netns is
gone" reset must find, while a live pod's veth stays. Reset runs inside the node as a user would
(``ip netns exec NODE python -m pycni.cli.reset``), every path pointed at the test's directories.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pycni.dataplane import RTPROT_PYCNI
from pycni.nft import masquerade
from tests.support.calico_cluster import ETCD_IP, CalicoCluster
from tests.support.etcd import etcd_server
from tests.support.fabric import UNDERLAY_GATEWAY, Cluster
from tests.support.netns import NetnsPool, run

LINE = re.compile(r"^  (?:would remove|removed) (\w+) (.+?)  \((.*)\)$")
USER_CONFLIST = {"cniVersion": "1.0.0", "name": "user-net", "plugins": [{"type": "bridge", "bridge": "br-user"}]}
LOCK_DIR, ATTACHMENTS = "/run/pycni/locks", "/run/pycni/attachments"  # machine-wide, keyed per namespace


def reset(node_ns: str, args: list[str], *extra: str) -> subprocess.CompletedProcess[str]:
    argv = ["ip", "netns", "exec", node_ns, sys.executable, "-m", "pycni.cli.reset", *args, *extra]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


def listed(stdout: str) -> set[tuple[str, str]]:
    """(kind, name) of every object line."""
    return {(m[1], m[2]) for line in stdout.splitlines() if (m := LINE.match(line))}


def plant_user_objects(ns: str, conf_dir: Path) -> None:
    run("ip", "link", "add", "br-user", "type", "bridge", netns=ns)
    run("ip", "link", "set", "br-user", "up", netns=ns)
    run("ip", "route", "add", "10.99.0.0/24", "dev", "br-user", netns=ns)  # the user's (protocol boot)
    run("ip", "route", "add", "10.98.0.0/24", "dev", "br-user", "proto", "bird", netns=ns)  # BIRD's (12)
    run("ip", "route", "add", "10.97.0.0/24", "dev", "br-user", "proto", "static", netns=ns)
    run("nft", "add table inet userfw; add chain inet userfw input { type filter hook input priority 0; }", netns=ns)
    conf_dir.mkdir(exist_ok=True)
    (conf_dir / "99-user.conflist").write_text(json.dumps(USER_CONFLIST))


def assert_user_objects(ns: str, conf_dir: Path) -> None:
    links = {link["ifname"] for link in json.loads(run("ip", "-j", "link", "show", netns=ns).stdout)}
    assert "br-user" in links
    routes = {
        (r["dst"], r.get("protocol", "boot")) for r in json.loads(run("ip", "-j", "route", "show", netns=ns).stdout)
    }
    assert {("10.99.0.0/24", "boot"), ("10.98.0.0/24", "bird"), ("10.97.0.0/24", "static")} <= routes
    assert run("nft", "list", "table", "inet", "userfw", netns=ns, check=False).returncode == 0
    assert json.loads((conf_dir / "99-user.conflist").read_text()) == USER_CONFLIST


def base_rules(ns: str) -> set[int]:
    """Handles of the rules in ``bridge nat PREROUTING`` (where the spoof check's jumps are)."""
    listing = json.loads(run("nft", "-j", "list", "chain", "bridge", "nat", "PREROUTING", netns=ns).stdout)["nftables"]
    return {o["rule"]["handle"] for o in listing if "rule" in o}


def pycni_routes(ns: str) -> list[str]:
    return run("ip", "route", "show", "table", "all", "proto", str(RTPROT_PYCNI), netns=ns).stdout.splitlines()


def link_names(ns: str) -> set[str]:
    return {link["ifname"] for link in json.loads(run("ip", "-j", "link", "show", netns=ns).stdout)}


def host_veth(node_ns: str, pod_ns: str) -> str:
    """The node-side name of the pod's eth0 veth (its peer's ifindex)."""
    peer = json.loads(run("ip", "-j", "link", "show", "eth0", netns=pod_ns).stdout)[0]["link_index"]
    links = json.loads(run("ip", "-j", "link", "show", netns=node_ns).stdout)
    return str(next(link["ifname"] for link in links if link["ifindex"] == peer))


class Leaked:
    """Pods whose sandbox was deleted without a CNI DEL while a stray bind mount keeps the namespace alive."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.mounts: list[Path] = []

    def leak(self, pool: NetnsPool, pod_ns: str) -> None:
        held = self.tmp / f"held-{pod_ns}"
        held.touch()
        run("mount", "--bind", pool.path(pod_ns), str(held))
        self.mounts.append(held)
        run("ip", "netns", "del", pod_ns)

    def release(self) -> None:
        for held in self.mounts:
            run("umount", str(held), check=False)
        self.mounts.clear()


@pytest.fixture
def leaked(tmp_path: Path) -> Iterator[Leaked]:
    holder = Leaked(tmp_path)
    try:
        yield holder
    finally:
        holder.release()


def namespace_keyed(inode: int) -> list[str]:
    found = [os.path.join(LOCK_DIR, e) for e in os.listdir(LOCK_DIR) if e.endswith(f"-{inode}.lock")]
    if os.path.isdir(ATTACHMENTS):
        found += [os.path.join(ATTACHMENTS, e) for e in os.listdir(ATTACHMENTS) if e.endswith(f"-{inode}")]
    return sorted(found)


# -- Flannel ----------------------------------------------------------------------------------------------


def flannel_add(cluster: Cluster, node_ns: str, env: dict[str, str], pod_ns: str) -> None:
    proc = subprocess.run(
        ["ip", "netns", "exec", node_ns, cluster.pycni_bin, "add", "cbr0", cluster.pool.path(pod_ns)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr


def test_reset_a_flannel_node(
    netns: NetnsPool, tmp_path: Path, pycni_bin: str, pycni_plugin_dir: str, leaked: Leaked
) -> None:
    cluster = Cluster(netns, tmp_path, pycni_bin, pycni_plugin_dir, f"http://{UNDERLAY_GATEWAY}:2379", state_dirs=True)
    try:
        with etcd_server(host=UNDERLAY_GATEWAY, netns=cluster.underlay) as etcd:
            config = {"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan"}}
            etcd.etcdctl("put", "/coreos.com/network/config", json.dumps(config))
            node, peer = cluster.add_node(), cluster.add_node()
            env = cluster.cni_env(node)
            live, gone = netns.new("pod1"), netns.new("pod1")
            flannel_add(cluster, node.name, env, live)
            flannel_add(cluster, node.name, env, gone)
            live_veth, gone_veth = host_veth(node.name, live), host_veth(node.name, gone)
            leaked.leak(netns, gone)
            conf_dir = node.home / "net.d"
            plant_user_objects(node.name, conf_dir)
            run("nft", f"add rule {masquerade.T} {masquerade.CHAIN} ip saddr 10.96.0.0/24 masquerade", netns=node.name)
            args = [
                "--state-root", str(tmp_path / "root"),
                "--cni-conf-dir", str(conf_dir),
                "--cni-bin-dir", pycni_plugin_dir,
                "--cni-cache-dir", str(node.home / "cache"),
                "--flannel-run-dir", str(cluster.state_dir(node)),
                "--nft-lock-dir", LOCK_DIR,
                "--attachments-dir", ATTACHMENTS,
            ]  # fmt: skip
            keyed = namespace_keyed(node.netns_inode)
            assert keyed, "the plugins keep attachment records of the node's namespace"
            assert not [k for k in keyed if k.endswith(".lock")], "no nft lock file outlives its holder"

            refused = reset(node.name, args, "--yes")  # the agent still runs
            assert refused.returncode == 1 and "pycni flanneld" in refused.stderr and "stop it first" in refused.stderr
            assert "cni0" in link_names(node.name)
            cluster.stop_agent(node, signal.SIGKILL)  # a dead agent leaves everything behind

            dry = reset(node.name, args)
            assert dry.returncode == 0, dry.stderr
            print(dry.stdout)
            objects = listed(dry.stdout)
            routes = pycni_routes(node.name)
            assert routes, "the agent routes the peer's subnet over flannel.1 with pycni's protocol"
            kinds = {kind for kind, _ in objects}
            assert {(k, n) for k, n in objects if k in ("link", "table")} == {
                ("link", "cni0"),
                ("link", "flannel.1"),
                ("link", gone_veth),
                ("table", "ip flannel-ipv4"),
            }
            rules = [n for k, n in objects if k == "rule"]
            assert len(rules) == 1 and rules[0].startswith(f"{masquerade.T} {masquerade.CHAIN} handle ")
            assert len([1 for k, _ in objects if k == "route"]) == len(routes)
            paths = {n for k, n in objects if k == "path"}
            results = node.home / "cache" / "results"
            expected: list[str | Path] = [
                conf_dir / "10-flannel.conflist",
                node.home / "ipam" / "cbr0",
                node.subnet_file,
                node.home / "flannel",
                cluster.state_dir(node),
                *(results / name for name in os.listdir(results)),
                *keyed,
            ]
            assert all(os.path.lexists(p) for p in expected)
            assert paths == {str(p) for p in expected}
            assert len(os.listdir(results)) == 2
            assert kinds == {"path", "link", "table", "rule", "route"}
            assert live_veth not in {n for _, n in objects}, "a live pod's veth is not reset's"
            assert (conf_dir / "10-flannel.conflist").exists() and "flannel.1" in link_names(node.name), "dry run"

            one = listed(reset(node.name, args, "--network", "cbr0").stdout)  # the network's objects, not the node's
            fabric = {("link", "flannel.1"), ("table", "ip flannel-ipv4"), ("path", str(cluster.state_dir(node)))}
            fabric |= {(k, n) for k, n in objects if k == "route" or n in keyed}
            assert one == objects - fabric
            unknown = reset(node.name, args, "--network", "user-net")
            assert unknown.returncode == 1 and "names network 'user-net'" in unknown.stderr and not unknown.stdout

            done = reset(node.name, args, "--yes")
            assert done.returncode == 0, done.stderr
            assert listed(done.stdout) == objects
            names = link_names(node.name)
            assert not {"cni0", "flannel.1", gone_veth} & names and live_veth in names
            assert pycni_routes(node.name) == []
            assert run("nft", "list", "table", "ip", "flannel-ipv4", netns=node.name, check=False).returncode != 0
            masq = run("nft", "list", "table", masquerade.FAMILY, masquerade.TABLE, netns=node.name).stdout
            assert "10.96.0.0/24" in masq and "-subnet" not in masq, "the user's masquerade rule stays, pycni's goes"
            assert not any(os.path.lexists(p) for p in paths)
            assert namespace_keyed(node.netns_inode) == []
            assert_user_objects(node.name, conf_dir)
            assert "flannel.1" in link_names(peer.name), "the other node is not this node"

            again = reset(node.name, args)
            assert again.returncode == 0 and listed(again.stdout) == set(), again.stdout
            assert "0 object(s)" in again.stdout
    finally:
        leaked.release()
        cluster.close()


# -- Calico -----------------------------------------------------------------------------------------------


def test_reset_a_calico_node(
    netns: NetnsPool, tmp_path: Path, pycni_bin: str, pycni_plugin_dir: str, leaked: Leaked
) -> None:
    cluster = CalicoCluster(netns, tmp_path, pycni_bin, pycni_plugin_dir, agent_args=("--backend", "vxlan"))
    try:
        with etcd_server(host=ETCD_IP, netns=cluster.underlay):
            node, other = cluster.add_node(1), cluster.add_node(2)
            live, gone = cluster.add_pod(node), cluster.add_pod(node)
            cluster.add_pod(other)
            live_veth, gone_veth = host_veth(node.ns, live.name), host_veth(node.ns, gone.name)
            for pid in run("ip", "netns", "pids", gone.name).stdout.split():  # the sandbox's processes end
                os.kill(int(pid), signal.SIGKILL)
            leaked.leak(netns, gone.name)
            conf_dir = node.home / "net.d"
            plant_user_objects(node.ns, conf_dir)
            args = [
                "--state-root", str(tmp_path / "root"),
                "--cni-conf-dir", str(conf_dir),
                "--cni-bin-dir", pycni_plugin_dir,
                "--cni-cache-dir", str(node.home / "cache"),
                "--calico-run-dir", str(node.run_dir),
                "--nft-lock-dir", str(tmp_path / "root" / "locks"),
                "--attachments-dir", str(tmp_path / "root" / "attachments"),
            ]  # fmt: skip

            dry_running = reset(node.ns, args)
            assert dry_running.returncode == 0 and "running: pycni calico-node" in dry_running.stdout
            assert reset(node.ns, args, "--yes").returncode == 1
            cluster.stop_agent(node, signal.SIGKILL)

            dry = reset(node.ns, args)
            assert dry.returncode == 0, dry.stderr
            print(dry.stdout)
            objects = listed(dry.stdout)
            assert {(k, n) for k, n in objects if k in ("link", "table")} == {
                ("link", "vxlan.calico"),
                ("link", gone_veth),
                ("table", "ip calico-node"),
                ("table", "inet pycni-policy"),
            }
            routes = pycni_routes(node.ns)
            assert any(r.startswith("blackhole") for r in routes) and any("vxlan.calico" in r for r in routes)
            assert len([1 for k, _ in objects if k == "route"]) == len(routes)
            paths = {n for k, n in objects if k == "path"}
            results = node.home / "cache" / "results"
            expected: list[str | Path] = [
                conf_dir / "10-calico.conflist",
                node.nodename_file,
                node.mtu_file,
                node.run_dir,
                *(results / name for name in os.listdir(results)),
            ]
            lock = node.home / "ipam.lock"  # calico-ipam's lock file, named by the network's config
            assert all(os.path.exists(p) for p in expected) and len(os.listdir(results)) == 2
            assert paths == {str(p) for p in expected} | ({str(lock)} if lock.exists() else set())
            assert live_veth not in {n for _, n in objects}

            done = reset(node.ns, args, "--yes")
            assert done.returncode == 0, done.stderr
            assert listed(done.stdout) == objects
            names = link_names(node.ns)
            assert "vxlan.calico" not in names and gone_veth not in names and live_veth in names
            assert pycni_routes(node.ns) == []
            for family, table in (("ip", "calico-node"), ("inet", "pycni-policy")):
                assert run("nft", "list", "table", family, table, netns=node.ns, check=False).returncode != 0
            assert not any(os.path.lexists(p) for p in paths)
            assert_user_objects(node.ns, conf_dir)
            assert "vxlan.calico" in link_names(other.ns)

            again = reset(node.ns, args)
            assert again.returncode == 0 and listed(again.stdout) == set(), again.stdout
    finally:
        leaked.release()
        cluster.close()


# -- a network pycni install recorded: bridge + bandwidth, no fabric ------------------------------------


def test_reset_a_recorded_bridge_network_with_bandwidth(
    netns: NetnsPool, tmp_path: Path, pycni_bin: str, pycni_plugin_dir: str
) -> None:
    node = netns.new("bwnode")
    conf_dir = tmp_path / "net.d"
    conf_dir.mkdir()
    conflist = {
        "cniVersion": "1.0.0",
        "name": "pods",
        "plugins": [
            {
                "type": "bridge",
                "bridge": "pods0",
                "isGateway": True,
                "ipMasq": True,
                "macspoofchk": True,
                "ipam": {"type": "host-local", "subnet": "10.41.0.0/24", "dataDir": str(tmp_path / "ipam")},
            },
            {"type": "bandwidth", "egressRate": 8_000_000, "egressBurst": 1_000_000},
        ],
    }
    ours, edited = conf_dir / "05-pods.conflist", conf_dir / "06-edited.conflist"
    ours.write_text(json.dumps(conflist))
    edited.write_text(json.dumps({**conflist, "name": "edited"}))
    record = tmp_path / "root" / "var" / "lib" / "pycni" / "installed.json"
    record.parent.mkdir(parents=True)
    entries = [{"path": str(p), "sha256": hashlib.sha256(p.read_bytes()).hexdigest()} for p in (ours, edited)]
    record.write_text(json.dumps({"version": 1, "files": entries}))
    edited.write_text(json.dumps({**conflist, "name": "edited", "plugins": conflist["plugins"][:1]}))  # the user's now
    plant_user_objects(node, conf_dir)
    env = {
        **os.environ,
        "CNI_PATH": pycni_plugin_dir,
        "NETCONFPATH": str(conf_dir),
        "PYCNI_CACHE_DIR": str(tmp_path / "cache"),
        "PYCNI_SOCKET": str(tmp_path / "no-daemon.sock"),
    }
    pods = [netns.new("bwpod"), netns.new("bwpod")]
    for pod in pods:
        argv = ["ip", "netns", "exec", node, pycni_bin, "add", "pods", netns.path(pod)]
        proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, check=False)
        assert proc.returncode == 0, proc.stderr
    live_veth = host_veth(node, pods[0])
    run("ip", "netns", "del", pods[1])  # the sandbox went without a DEL: its veth goes with it, its ifb stays
    ifbs = {link["ifname"] for link in json.loads(run("ip", "-j", "link", "show", "type", "ifb", netns=node).stdout)}
    assert len(ifbs) == 2
    args = [
        "--state-root", str(tmp_path / "root"),
        "--cni-conf-dir", str(conf_dir),
        "--cni-cache-dir", str(tmp_path / "cache"),
        "--nft-lock-dir", LOCK_DIR,
        "--attachments-dir", ATTACHMENTS,
    ]  # fmt: skip
    keyed = namespace_keyed(os.stat(netns.path(node)).st_ino)
    user_chain = 'add chain bridge nat user-check; add rule bridge nat PREROUTING iifname "br-user" jump user-check'
    run("nft", user_chain, netns=node)  # the user's, in the table the reference's spoof check shares
    spoof = json.loads(run("nft", "-j", "list", "table", "bridge", "nat", netns=node).stdout)["nftables"]
    spoof_rules = [o["rule"]["handle"] for o in spoof if "rule" in o and o["rule"].get("comment", "").startswith("mac")]
    spoof_chains = [o["chain"]["name"] for o in spoof if "chain" in o and o["chain"]["name"].startswith("cni-br-iface")]
    assert len(spoof_rules) == 2 * 4 and len(spoof_chains) == 2 * 2  # 4 rules, 2 chains per attachment

    dry = reset(node, args)
    assert dry.returncode == 0, dry.stderr
    objects = listed(dry.stdout)
    assert f"note: {edited}: changed since pycni install wrote it (not removed)" in dry.stdout.splitlines()
    results = tmp_path / "cache" / "results"
    assert objects == {
        ("path", str(ours)),
        ("table", "inet cni_plugins_masquerade"),
        ("link", "pods0"),
        *(("link", name) for name in ifbs),
        *(("rule", f"bridge nat PREROUTING handle {h}") for h in spoof_rules if h in base_rules(node)),
        *(("chain", f"bridge nat {name}") for name in spoof_chains),
        ("path", str(tmp_path / "ipam" / "pods")),
        *(("path", str(results / name)) for name in os.listdir(results)),
        *(("path", path) for path in keyed),
        ("path", str(record)),
    }
    assert len(os.listdir(results)) == 2

    done = reset(node, args, "--yes")
    assert done.returncode == 0, done.stderr
    assert listed(done.stdout) == objects
    left = link_names(node)
    assert not ({"pods0"} | ifbs) & left and live_veth in left
    assert run("nft", "list", "table", "inet", "cni_plugins_masquerade", netns=node, check=False).returncode != 0
    left_spoof = run("nft", "list", "table", "bridge", "nat", netns=node).stdout
    assert "user-check" in left_spoof and "macspoofchk" not in left_spoof and "cni-br-iface" not in left_spoof
    assert not ours.exists() and not record.exists() and edited.exists()
    assert_user_objects(node, conf_dir)
    again = reset(node, args)
    assert again.returncode == 0 and listed(again.stdout) == set(), again.stdout
