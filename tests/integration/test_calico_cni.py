"""The calico and calico-ipam plugins in real namespaces, on a real etcd and on pycni's embedded sqlite store.

    underlay ns:  bridge br0 198.51.100.1/24, etcd listening on 198.51.100.1:2379
    node ns:      up0 198.51.100.<n>/24 (a veth on br0), default via 198.51.100.1, the pods' cali* veths
    pod ns:       eth0 from the calico plugin

A node has a default route as a real host does: proxy ARP answers the pod's
ARP for 169.254.1.1 only when the host has a route to it. The datastore is
seeded as a user seeds it (``pycni calicoctl apply -f`` of an IPPool and the
Nodes calico-node would register). Plugins run as a runtime runs them, from
the executables ``pycni plugins install`` writes, inside the node namespace,
with ``PYCNI_NO_DAEMON=1`` (in-process) or ``PYCNI_SOCKET`` of a daemon the
test starts. Every namespace, process, store and lock file is the test's own.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from pycni.datastore.sqlite import SqliteDatastore
from pycni.plugins.ipam.calico_ipam import default_lock_path
from pycni.spec import ALL_VERSIONS
from tests.support.cni import Call
from tests.support.daemon import Daemon
from tests.support.etcd import EtcdServer, etcd_server
from tests.support.netns import NetnsPool, netns_pool, run
from tests.support.node import differences, snapshot

GATEWAY = "198.51.100.1"
ETCD_URL = f"http://{GATEWAY}:2379"
POOL_CIDR = "10.244.0.0/16"
NETWORK = "k8s-pod-network"
SYSCTLS = ("net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding", "net.ipv4.conf.all.proxy_arp")
HOST_SYSCTLS = {
    "net.ipv4.conf.{}.proxy_arp": "1",
    "net.ipv4.neigh.{}.proxy_delay": "0",
    "net.ipv4.conf.{}.forwarding": "1",
    "net.ipv4.conf.{}.route_localnet": "1",
    "net.ipv6.conf.{}.accept_ra": "0",
}
UID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


# -- the fabric: underlay, etcd, nodes, pods ------------------------------------------------


class Fabric:
    """The module's underlay namespace with its bridge and one etcd on it."""

    def __init__(self, pool: NetnsPool, etcd: EtcdServer, underlay: str) -> None:
        self.pool, self.etcd, self.underlay = pool, etcd, underlay
        self.next_host = 10

    def host_address(self) -> str:
        self.next_host += 1
        return f"198.51.100.{self.next_host}"


@pytest.fixture(scope="module")
def fabric() -> Iterator[Fabric]:
    with netns_pool("pytcal") as pool:
        underlay = pool.new("underlay")
        run("ip", "link", "add", "br0", "type", "bridge", netns=underlay)
        run("ip", "addr", "add", f"{GATEWAY}/24", "dev", "br0", netns=underlay)
        run("ip", "link", "set", "br0", "up", netns=underlay)
        with etcd_server(host=GATEWAY, netns=underlay) as etcd:
            yield Fabric(pool, etcd, underlay)


class Node:
    """A node namespace on the underlay; ``fresh`` is its picture taken as it was built, before any plugin ran."""

    def __init__(self, fabric: Fabric, pool: NetnsPool, name: str, home: Path) -> None:
        self.name = name
        self.ns = pool.new("node")
        # A new namespace copies the root namespace's IPv4 forwarding (devconf_inherit_init_net=0), which
        # podman or a Go bridge plugin may have turned on: a node is built as a machine boots, with it off.
        run("sysctl", "-qw", "net.ipv4.ip_forward=0", netns=self.ns)
        self.home = home
        home.mkdir(parents=True, exist_ok=True)
        self.address = fabric.host_address()
        peer = f"u{fabric.next_host}"
        run("ip", "link", "add", "up0", "type", "veth", "peer", "name", peer, "netns", fabric.underlay, netns=self.ns)
        run("ip", "link", "set", peer, "master", "br0", "up", netns=fabric.underlay)
        run("sysctl", "-qw", "net.ipv6.conf.up0.accept_dad=0", netns=self.ns)
        run("ip", "addr", "add", f"{self.address}/24", "dev", "up0", netns=self.ns)
        run("ip", "link", "set", "up0", "up", netns=self.ns)
        run("ip", "route", "add", "default", "via", GATEWAY, netns=self.ns)
        self.fresh = self.settled_picture()
        self.default_lock = default_lock_path(name)
        self.had_default_lock = os.path.exists(self.default_lock)

    def default_lock_made(self) -> bool:
        return not self.had_default_lock and os.path.exists(self.default_lock)

    def settled_picture(self) -> dict[str, str]:
        """The picture once the kernel has finished bringing up0 up (its IPv6 link-local address and routes)."""
        deadline = time.monotonic() + 10
        previous = self.picture()
        while time.monotonic() < deadline:
            time.sleep(0.2)
            current = self.picture()
            settled = "fe80::/64 dev up0" in current["routes"] and "tentative" not in current["addresses"]
            if settled and current == previous:
                return current
            previous = current
        raise AssertionError(f"node {self.ns} did not settle: {previous}")

    def picture(self) -> dict[str, str]:
        state = snapshot(self.ns)
        state["sysctls"] = run("sysctl", *SYSCTLS, netns=self.ns).stdout
        return state

    def veths(self) -> list[str]:
        out = run("ip", "-o", "link", "show", "type", "veth", netns=self.ns).stdout
        return [line.split(": ")[1].split("@")[0] for line in out.splitlines() if "up0" not in line]

    def sysctl(self, name: str) -> str:
        return run("sysctl", "-n", name, netns=self.ns).stdout.strip()

    def assert_fresh(self) -> None:
        changed = differences(self.fresh, self.picture())
        assert changed == {}, f"the node differs from the fresh node it was: {changed}"


class Cluster:
    """One test's datastore (etcd wiped, or a new sqlite file), its nodes and pods, and the plugin calls."""

    def __init__(self, kind: str, fabric: Fabric, pool: NetnsPool, tmp: Path, plugin_dir: str) -> None:
        self.kind, self.fabric, self.pool, self.tmp, self.plugin_dir = kind, fabric, pool, tmp, plugin_dir
        self.db = str(tmp / "store" / "calico.db")
        self.nodes: list[Node] = []
        self.socket: str | None = None
        if kind == "etcd":
            fabric.etcd.etcdctl("del", "--prefix", "/calico/")
            self.store: dict[str, Any] = {"datastore_type": "etcdv3", "etcd_endpoints": ETCD_URL}
            self.ctl_env = {"DATASTORE_TYPE": "etcdv3", "ETCD_ENDPOINTS": ETCD_URL}
        else:
            self.store = {"datastore_type": "pycni", "pycni_store_path": self.db}
            self.ctl_env = {"PYCNI_CALICO_STORE": self.db}

    # -- datastore ------------------------------------------------------------------------

    def calicoctl(self, *args: str, stdin: str | None = None) -> str:
        """``pycni calicoctl`` from the underlay namespace (where etcd is reachable)."""
        pycni = os.path.join(os.path.dirname(sys.executable), "pycni")
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", **self.ctl_env}
        proc = run(pycni, "calicoctl", *args, netns=self.fabric.underlay, check=False, input=stdin, env=env)
        assert proc.returncode == 0, (args, proc.stdout, proc.stderr)
        return str(proc.stdout)

    def seed(self, *nodes: Node, pools: list[tuple[str, str, int]] | None = None) -> None:
        """The pools and the Nodes calico-node would register (calicoctl initialises the datastore too)."""
        docs = []
        for name, cidr, block in pools or [("default-ipv4-ippool", POOL_CIDR, 26)]:
            docs.append(
                f"apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: {name}\n"
                f"spec:\n  cidr: {cidr}\n  blockSize: {block}\n  natOutgoing: true\n"
            )
        for node in nodes:
            docs.append(
                f"apiVersion: projectcalico.org/v3\nkind: Node\nmetadata:\n  name: {node.name}\n"
                f"spec:\n  bgp:\n    ipv4Address: {node.address}/24\n"
            )
        self.calicoctl("apply", "-f", "-", stdin="---\n".join(docs))

    def stored_keys(self) -> list[str]:
        if self.kind == "etcd":
            out = self.fabric.etcd.etcdctl("get", "--prefix", "/calico/", "--keys-only").stdout
            return sorted(line for line in out.splitlines() if line)
        store = SqliteDatastore(self.db)
        try:
            return [kv.key for kv in store.list("/calico/")[0]]
        finally:
            store.close()

    def value(self, key: str) -> str | None:
        """The stored bytes of ``key`` (etcdctl's view on etcd)."""
        if self.kind == "etcd":
            out = self.fabric.etcd.etcdctl("get", key, "--print-value-only").stdout
            return out[:-1] if out else None
        store = SqliteDatastore(self.db)
        try:
            kv = store.get(key)
            return kv.value if kv else None
        finally:
            store.close()

    def assert_datastore_fresh(self, baseline: list[str]) -> None:
        """Only the seeded keys, plus blocks and their affinities (kept, as Calico keeps them), all blocks empty."""
        extra = [k for k in self.stored_keys() if k not in baseline]
        kept = re.compile(r"^/calico/ipam/v2/(assignment/ipv[46]/block/|host/[^/]+/ipv[46]/block/)")
        assert [k for k in extra if not kept.match(k)] == [], "DEL left keys behind"
        assert [k for k in baseline if k not in self.stored_keys()] == []
        for key in extra:
            if "/assignment/" in key:
                block = json.loads(self.value(key) or "{}")
                assert set(block["allocations"]) == {None}, f"{key} still allocates"

    # -- nodes, pods, calls ---------------------------------------------------------------

    def node(self, name: str) -> Node:
        node = Node(self.fabric, self.pool, name, self.tmp / name)
        self.nodes.append(node)
        return node

    def pod(self) -> str:
        return self.pool.new("pod")

    def netconf(self, node: Node, version: str = "1.0.0", **extra: Any) -> dict[str, Any]:
        ipam = {"type": "calico-ipam", **extra.pop("ipam", {})}
        return {
            "cniVersion": version,
            "name": NETWORK,
            "type": "calico",
            "log_level": "info",
            **self.store,
            "nodename": node.name,
            "nodename_file_optional": True,
            "ipam_lock_file": str(node.home / "ipam.lock"),
            "mtu": 1450,
            "ipam": ipam,
            "policy": {"type": "k8s"},
            **extra,
        }

    def call(
        self,
        command: str,
        node: Node,
        pod: str,
        cid: str,
        conf: dict[str, Any],
        k8s: tuple[str, str] | None = None,
        daemon: bool = False,
        raw: bool = False,
        cni_args: str | None = None,
    ) -> Call:
        if cni_args is None:
            cni_args = f"IgnoreUnknown=1;K8S_POD_NAMESPACE={k8s[0]};K8S_POD_NAME={k8s[1]}" if k8s else ""
        env = {
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            "CNI_COMMAND": command,
            "CNI_CONTAINERID": cid,
            "CNI_NETNS": self.pool.path(pod) if pod else "",
            "CNI_IFNAME": "eth0",
            "CNI_ARGS": cni_args,
            "CNI_PATH": self.plugin_dir,
        }
        if daemon:
            assert self.socket is not None
            env["PYCNI_SOCKET"] = self.socket
        else:
            env["PYCNI_NO_DAEMON"] = "1"
        plugin = os.path.join(self.plugin_dir, conf["type"])
        proc = subprocess.run(
            ["ip", "netns", "exec", node.ns, plugin],
            input=json.dumps(conf).encode(),
            env=env,
            capture_output=True,
            check=False,
            timeout=120,
        )
        out = proc.stdout.decode()
        if raw:
            return Call(proc.returncode, out, proc.stderr.decode())
        return Call(proc.returncode, json.loads(out) if out.strip() else None, proc.stderr.decode())


@pytest.fixture
def cluster(fabric: Fabric, pycni_plugin_dir: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    kind = getattr(request, "param", "etcd")
    with netns_pool("pytcal") as pool:
        made = Cluster(kind, fabric, pool, tmp_path, pycni_plugin_dir)
        yield made
    # Every call named its lock file: none may appear at the machine's default path.
    assert [n.name for n in made.nodes if n.default_lock_made()] == [], "a lock file outside the test's directory"


both_stores = pytest.mark.parametrize("cluster", ["etcd", "sqlite"], indirect=True)


def veth_for_pod(namespace: str, pod: str) -> str:
    return "cali" + hashlib.sha1(f"{namespace}.{pod}".encode()).hexdigest()[:11]


def pod_ip(call: Call) -> str:
    assert call.rc == 0, call.out
    return str(call.out["ips"][0]["address"]).split("/")[0]


def ping(ns: str, address: str) -> None:
    proc = run("ping", "-c", "1", "-W", "2", address, netns=ns, check=False)
    assert proc.returncode == 0, f"ping {address} from {ns}: {proc.stdout}{proc.stderr}"


def curl(ns: str, url: str) -> str:
    for _ in range(30):
        proc = run("curl", "-sS", "-m", "2", url, netns=ns, check=False)
        if proc.returncode == 0:
            return str(proc.stdout)
        time.sleep(0.1)
    raise AssertionError(f"{url} from {ns}: {proc.stderr}")


def expected_wep(stored: dict[str, Any], **spec: Any) -> str:
    """The endpoint as libcalico-go's clientv3 stores it in etcd (Go's field order, compact JSON)."""
    meta = stored["metadata"]
    assert UID.match(meta["uid"]) and STAMP.match(meta["creationTimestamp"])
    metadata = {
        "name": spec.pop("name"),
        "namespace": spec.pop("namespace"),
        "uid": meta["uid"],
        "creationTimestamp": meta["creationTimestamp"],
        "labels": spec.pop("labels"),
    }
    value = {"kind": "WorkloadEndpoint", "apiVersion": "projectcalico.org/v3", "metadata": metadata, "spec": spec}
    return json.dumps(value, separators=(",", ":"))


# -- the tests --------------------------------------------------------------------------


@both_stores
def test_two_pods_reach_each_other_and_the_node(cluster: Cluster, tmp_path: Path) -> None:
    node = cluster.node("node1")
    cluster.seed(node)
    baseline = cluster.stored_keys()
    web, client = cluster.pod(), cluster.pod()
    www = tmp_path / "www"
    www.mkdir()
    (www / "index.html").write_text("calico-ok\n")
    run("busybox", "httpd", "-p", "80", "-h", str(www), netns=web)
    conf = cluster.netconf(node)

    added_web = cluster.call("ADD", node, web, "cid-web-0123456789", conf, k8s=("default", "web"))
    added_client = cluster.call("ADD", node, client, "0123456789abcdef", conf)
    web_ip, client_ip = pod_ip(added_web), pod_ip(added_client)
    host_web = veth_for_pod("default", "web")
    assert added_web.out == {
        "cniVersion": "1.0.0",
        "interfaces": [
            {"name": host_web},
            {
                "name": "eth0",
                "mac": added_web.out["interfaces"][1]["mac"],
                "mtu": 1450,
                "sandbox": cluster.pool.path(web),
            },
        ],
        "ips": [{"interface": 1, "address": f"{web_ip}/32"}],
    }
    assert added_client.out["interfaces"][0] == {"name": "cali0123456789a"}, "cni workloads: cali + container ID"
    assert ipaddress.ip_address(web_ip) in ipaddress.ip_network(POOL_CIDR)
    block = ipaddress.ip_network(f"{web_ip}/26", strict=False)
    assert ipaddress.ip_address(client_ip) in block, "one node, one affine block"

    # Calico's shape inside the pod, exactly.
    mac = added_web.out["interfaces"][1]["mac"]
    assert run("ip", "-4", "-o", "addr", "show", "dev", "eth0", netns=web).stdout.split("\\")[0].split() == [
        "2:", "eth0", "inet", f"{web_ip}/32", "scope", "global", "eth0",
    ]  # fmt: skip
    assert run("ip", "-4", "route", netns=web).stdout == (
        "default via 169.254.1.1 dev eth0 \n169.254.1.1 dev eth0 scope link \n"
    )
    link = run("ip", "-o", "link", "show", "eth0", netns=web).stdout
    assert "mtu 1450" in link and f"link/ether {mac}" in link
    assert run("sysctl", "-n", "net.ipv4.ip_forward", netns=web).stdout.strip() == "0"
    # ... and on the host.
    assert f"{web_ip} dev {host_web} scope link \n" in run("ip", "-4", "route", netns=node.ns).stdout
    host_link = run("ip", "-o", "link", "show", host_web, netns=node.ns).stdout
    assert "link/ether ee:ee:ee:ee:ee:ee" in host_link and "mtu 1450" in host_link and "state UP" in host_link
    assert run("ip", "-4", "addr", "show", "dev", host_web, netns=node.ns).stdout == "", "no gateway address"
    for name, value in HOST_SYSCTLS.items():
        assert node.sysctl(name.format(host_web)) == value, name
    assert node.sysctl("net.ipv4.ip_forward") == "0", "the per-veth forwarding is all a node needs"

    ping(web, client_ip)
    ping(client, web_ip)
    ping(web, node.address)
    ping(node.ns, web_ip)
    assert curl(client, f"http://{web_ip}/") == "calico-ok\n"
    assert curl(node.ns, f"http://{web_ip}/") == "calico-ok\n"

    checked = cluster.call(
        "CHECK", node, web, "cid-web-0123456789", conf | {"prevResult": added_web.out}, ("default", "web")
    )
    assert checked.rc == 0, checked.out

    # The endpoint, byte for byte as clientv3 writes it.
    key = "/calico/resources/v3/projectcalico.org/workloadendpoints/default/node1-k8s-web-eth0"
    stored = cluster.value(key)
    assert stored is not None
    assert stored == expected_wep(
        json.loads(stored),
        name="node1-k8s-web-eth0",
        namespace="default",
        labels={"projectcalico.org/namespace": "default", "projectcalico.org/orchestrator": "k8s"},
        orchestrator="k8s",
        node="node1",
        containerID="cid-web-0123456789",
        pod="web",
        endpoint="eth0",
        ipNetworks=[f"{web_ip}/32"],
        profiles=["kns.default"],
        interfaceName=host_web,
        mac=mac,
    )
    handle = cluster.value(f"/calico/ipam/v2/handle/{NETWORK}.cid-web-0123456789")
    assert handle == f'{{"block":{{"{block}":1}},"deleted":false}}'
    affinity = cluster.value(f"/calico/ipam/v2/host/node1/ipv4/block/{str(block).replace('/', '-')}")
    assert affinity == '{"state":"confirmed","deleted":false}'

    wide = cluster.calicoctl("get", "wep", "-o", "wide").splitlines()
    assert wide[0].split() == ["NAME", "WORKLOAD", "NODE", "NETWORKS", "INTERFACE", "PROFILES", "NATS"]
    assert ["node1-k8s-web-eth0", "web", "node1", f"{web_ip}/32", host_web, "kns.default"] in [r.split() for r in wide]
    consistency = cluster.calicoctl("ipam", "check")
    assert "Found 2 workload IPs." in consistency, consistency
    assert "Found 0 IPs that are allocated in IPAM but not actually in use." in consistency, consistency
    assert "Found 0 in-use IPs that are in active IP pools but have no corresponding IPAM" in consistency
    assert "Found 0 handles with no matching IPs (and 2 handles with matches)." in consistency, consistency
    shown = cluster.calicoctl("ipam", "show")
    assert re.search(rf"\| IP Pool  \| {re.escape(POOL_CIDR)} +\| +65536 \| +2 \(0%\) \|", shown), shown

    for pod, cid, k8s, added in (
        (web, "cid-web-0123456789", ("default", "web"), added_web),
        (client, "0123456789abcdef", None, added_client),
    ):
        deleted = cluster.call("DEL", node, pod, cid, conf | {"prevResult": added.out}, k8s)
        assert deleted.rc == 0, deleted.out
    node.assert_fresh()
    cluster.assert_datastore_fresh(baseline)
    assert re.search(r"\| +0 \(0%\) \|", cluster.calicoctl("ipam", "show"))
    assert (node.home / "ipam.lock").exists(), "ADD and DEL locked the configured file"
    again = cluster.call("DEL", node, web, "cid-web-0123456789", conf, ("default", "web"))
    assert again.rc == 0, again.out


def test_dual_stack_pod_routes_through_the_host_link_local(cluster: Cluster) -> None:
    node = cluster.node("node1")
    cluster.seed(node, pools=[("v4", "10.246.0.0/16", 26), ("v6", "fd80:24e2:f998:72d6::/64", 122)])
    run("sysctl", "-qw", "net.ipv6.conf.all.forwarding=1", netns=node.ns)  # Felix's job on a real node
    conf = cluster.netconf(node, ipam={"assign_ipv6": "true"})
    first, second = cluster.pod(), cluster.pod()
    a = cluster.call("ADD", node, first, "cid-a", conf)
    b = cluster.call("ADD", node, second, "cid-b", conf)
    assert a.rc == 0 and b.rc == 0, (a.out, b.out)
    v6 = [ip["address"] for ip in a.out["ips"] if ":" in ip["address"]]
    assert len(v6) == 1 and v6[0].endswith("/128")
    assert "default via fe80::ecee:eeff:feee:eeee dev eth0" in run("ip", "-6", "route", netns=first).stdout
    assert f"inet6 {v6[0]} scope global" in run("ip", "-6", "addr", "show", "eth0", netns=first).stdout
    host = a.out["interfaces"][0]["name"]
    assert node.sysctl(f"net.ipv6.conf.{host}.proxy_ndp") == "1"
    b6 = next(ip["address"] for ip in b.out["ips"] if ":" in ip["address"]).split("/")[0]
    ping(first, b6)
    checked = cluster.call("CHECK", node, first, "cid-a", conf | {"prevResult": a.out})
    assert checked.rc == 0, checked.out
    for pod, cid in ((first, "cid-a"), (second, "cid-b")):
        assert cluster.call("DEL", node, pod, cid, conf).rc == 0
    assert node.veths() == []


def test_add_failures_are_cni_errors_and_leave_nothing(cluster: Cluster) -> None:
    node = cluster.node("node1")
    cluster.seed(node, pools=[("tiny", "10.250.0.0/30", 30)])  # four addresses, one block
    baseline = cluster.stored_keys()
    conf = cluster.netconf(node)

    def fails(pod: str, cid: str, config: dict[str, Any], code: int, message: str) -> None:
        before = node.veths()
        call = cluster.call("ADD", node, pod, cid, config)
        assert call.rc == 1 and "Traceback" not in call.stderr, call
        assert call.out["code"] == code, call.out
        assert message in call.out["msg"], call.out
        assert node.veths() == before, "a failed ADD left a veth"
        assert cluster.value(f"/calico/ipam/v2/handle/{NETWORK}.{cid}") is None, "a failed ADD left its address"

    pod = cluster.pod()
    fails(
        pod, "bad1", conf | {"ipam": {**conf["ipam"], "assign_ipv4": True}}, 7, "ipam.assign_ipv4: expected the string"
    )
    fails(pod, "bad2", conf | {"datastore_type": "kubernetes"}, 7, '"kubernetes" is not supported by pycni')
    fails(pod, "bad3", conf | {"ipam": {**conf["ipam"], "ipv4_pools": ["nope"]}}, 7, "error parsing pool 'nope'")
    fails(pod, "bad4", conf | {"mtu": 70000}, 7, "mtu")
    fails(pod, "bad5", conf | {"ipam": {"type": ""}}, 7, "calico requires an IPAM configuration")
    missing = str(node.home / "no-nodename")
    waiting = {k: v for k, v in conf.items() if k != "nodename_file_optional"} | {"nodename_file": missing}
    fails(pod, "bad6", waiting, 11, f"stat {missing}: no such file or directory")
    labelled = conf | {"args": {"cni": {"labels": [{"key": "bad key!", "value": "x"}]}}}
    fails(pod, "bad7", labelled, 7, "bad key!")

    # A failure after IPAM assigned (a stale host route to the first address) gives the address back.
    run("ip", "route", "add", "10.250.0.0/32", "dev", "up0", netns=node.ns)
    fails(pod, "clash", conf, 999, "route 10.250.0.0/32 already exists for an interface other than")
    run("ip", "route", "del", "10.250.0.0/32", "dev", "up0", netns=node.ns)
    # A failure in the pod (its interface name is taken) too.
    run("ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth1", netns=pod)
    fails(pod, "taken", conf, 999, "container veth name provided (eth0) already exists")
    run("ip", "link", "del", "eth0", netns=pod)

    pods = [cluster.pod() for _ in range(4)]
    for index, each in enumerate(pods):
        assert cluster.call("ADD", node, each, f"fill{index}", conf).rc == 0
    fails(
        pod,
        "exhausted",
        conf,
        999,
        "failed to request IPv4 addresses: Assigned 0 out of 1 requested IPv4 addresses; "
        "No IPs available in pools: [10.250.0.0/30]",
    )
    for index, each in enumerate(pods):
        assert cluster.call("DEL", node, each, f"fill{index}", conf).rc == 0

    cluster.fabric.etcd.stop()
    try:
        down = cluster.call("ADD", node, pod, "down", conf)
        assert down.rc == 1 and down.out["code"] == 11, down.out
        assert ETCD_URL.split("//")[1] in down.out["msg"], down.out
        gone = cluster.call("DEL", node, pod, "down", conf)
        assert gone.rc == 1 and gone.out["code"] == 11, "DEL cannot release without the datastore: try again"
    finally:
        cluster.fabric.etcd.start()
    assert node.veths() == []
    node.assert_fresh()
    cluster.assert_datastore_fresh(baseline)


def test_del_is_idempotent_and_works_when_the_netns_is_gone(cluster: Cluster) -> None:
    node = cluster.node("node1")
    cluster.seed(node)
    baseline = cluster.stored_keys()
    conf = cluster.netconf(node)
    pod = cluster.pod()
    added = cluster.call("ADD", node, pod, "gone-1", conf, k8s=("ns1", "p"))
    assert added.rc == 0, added.out
    run("ip", "netns", "del", pod)  # the runtime removed the sandbox first
    for _ in range(2):
        deleted = cluster.call("DEL", node, pod, "gone-1", conf, k8s=("ns1", "p"))
        assert deleted.rc == 0, deleted.out
    never = cluster.call("DEL", node, "", "never-added", conf)
    assert never.rc == 0, never.out
    node.assert_fresh()
    cluster.assert_datastore_fresh(baseline)


def test_a_new_sandbox_of_the_pod_keeps_its_endpoint_when_the_old_one_is_deleted(cluster: Cluster) -> None:
    """DEL of an old sandbox (another container ID) must not remove the running one's endpoint or veth."""
    node = cluster.node("node1")
    cluster.seed(node)
    conf = cluster.netconf(node)
    old, new = cluster.pod(), cluster.pod()
    assert cluster.call("ADD", node, old, "sandbox-old", conf, k8s=("ns1", "p")).rc == 0
    added = cluster.call("ADD", node, new, "sandbox-new", conf, k8s=("ns1", "p"))
    assert added.rc == 0, added.out
    assert cluster.call("DEL", node, old, "sandbox-old", conf, k8s=("ns1", "p")).rc == 0
    stored = json.loads(
        cluster.value("/calico/resources/v3/projectcalico.org/workloadendpoints/ns1/node1-k8s-p-eth0") or "{}"
    )
    assert stored["spec"]["containerID"] == "sandbox-new"
    assert node.veths() == [veth_for_pod("ns1", "p")]
    assert cluster.value(f"/calico/ipam/v2/handle/{NETWORK}.sandbox-old") is None
    assert cluster.call("CHECK", node, new, "sandbox-new", conf | {"prevResult": added.out}, ("ns1", "p")).rc == 0
    assert cluster.call("DEL", node, new, "sandbox-new", conf, k8s=("ns1", "p")).rc == 0
    node.assert_fresh()


def test_twenty_parallel_adds_get_distinct_addresses_from_one_block(cluster: Cluster) -> None:
    node = cluster.node("node1")
    cluster.seed(node)
    baseline = cluster.stored_keys()
    conf = cluster.netconf(node)
    pods = [cluster.pod() for _ in range(20)]
    with ThreadPoolExecutor(20) as pool:
        added = list(
            pool.map(lambda i: cluster.call("ADD", node, pods[i], f"par{i}", conf, ("par", f"p{i}")), range(20))
        )
    addresses = [pod_ip(call) for call in added]
    assert len(set(addresses)) == 20
    blocks = {ipaddress.ip_network(f"{a}/26", strict=False) for a in addresses}
    assert len(blocks) == 1, blocks
    (block,) = blocks
    assert [k for k in cluster.stored_keys() if "/assignment/" in k] == [
        f"/calico/ipam/v2/assignment/ipv4/block/{str(block).replace('/', '-')}"
    ]
    stored = json.loads(cluster.value(f"/calico/ipam/v2/assignment/ipv4/block/{str(block).replace('/', '-')}") or "{}")
    assert stored["affinity"] == "host:node1"
    assert sum(1 for a in stored["allocations"] if a is not None) == 20
    assert len(node.veths()) == 20
    ping(pods[0], addresses[19])
    with ThreadPoolExecutor(20) as pool:
        deleted = list(
            pool.map(lambda i: cluster.call("DEL", node, pods[i], f"par{i}", conf, ("par", f"p{i}")), range(20))
        )
    assert [d.rc for d in deleted] == [0] * 20, [d.out for d in deleted if d.rc]
    node.assert_fresh()
    cluster.assert_datastore_fresh(baseline)


def test_pods_on_two_nodes_get_blocks_of_their_own_node(cluster: Cluster) -> None:
    """Two nodes on one etcd; each finds its name in its own nodename file, as calico-node writes it."""
    first, second = cluster.node("node-a"), cluster.node("node-b")
    cluster.seed(first, second)
    found: dict[str, set[ipaddress.IPv4Network | ipaddress.IPv6Network]] = {}
    for node in (first, second):
        (node.home / "nodename").write_text(node.name)
        conf = cluster.netconf(node) | {"nodename_file": str(node.home / "nodename")}
        del conf["nodename"], conf["nodename_file_optional"]
        for index in range(2):
            pod = cluster.pod()
            ip = pod_ip(cluster.call("ADD", node, pod, f"{node.name}-{index}", conf, (node.name, f"p{index}")))
            found.setdefault(node.name, set()).add(ipaddress.ip_network(f"{ip}/26", strict=False))
            wep = cluster.value(
                f"/calico/resources/v3/projectcalico.org/workloadendpoints/{node.name}/"
                f"{node.name.replace('-', '--')}-k8s-p{index}-eth0"
            )
            assert wep is not None and json.loads(wep)["spec"]["node"] == node.name
    assert len(found["node-a"]) == len(found["node-b"]) == 1
    assert found["node-a"] != found["node-b"]
    for name, blocks in found.items():
        (block,) = blocks
        segment = str(block).replace("/", "-")
        assert (
            cluster.value(f"/calico/ipam/v2/host/{name}/ipv4/block/{segment}")
            == '{"state":"confirmed","deleted":false}'
        )
        stored = json.loads(cluster.value(f"/calico/ipam/v2/assignment/ipv4/block/{segment}") or "{}")
        assert stored["affinity"] == f"host:{name}"
        attrs = [a["secondary"] for a in stored["attributes"]]
        assert {a["node"] for a in attrs} == {name} and {a["namespace"] for a in attrs} == {name}


def test_host_local_ipam_as_canal_uses_it(cluster: Cluster, tmp_path: Path) -> None:
    """Canal: calico with host-local on the node's subnet; a pod's own ipam.routes replace the default."""
    node = cluster.node("node1")
    cluster.seed(node)
    conf = cluster.netconf(node) | {
        "ipam": {
            "type": "host-local",
            "subnet": "10.245.1.0/24",
            "dataDir": str(tmp_path / "host-local"),
            "routes": [{"dst": "10.96.0.0/12"}],
        }
    }
    pod = cluster.pod()
    added = cluster.call("ADD", node, pod, "canal-1", conf, k8s=("default", "canal"))
    assert added.rc == 0, added.out
    assert added.out["ips"] == [{"interface": 1, "address": "10.245.1.2/32"}], "host-local's /24 and gateway dropped"
    assert run("ip", "-4", "route", netns=pod).stdout == (
        "10.96.0.0/12 via 169.254.1.1 dev eth0 \n169.254.1.1 dev eth0 scope link \n"
    )
    assert os.listdir(tmp_path / "host-local" / NETWORK) != []
    deleted = cluster.call("DEL", node, pod, "canal-1", conf, k8s=("default", "canal"))
    assert deleted.rc == 0, deleted.out
    left = [n for n in os.listdir(tmp_path / "host-local" / NETWORK) if n[0].isdigit()]
    assert left == [], "host-local's reservation is released"
    node.assert_fresh()


def test_profile_and_labels_for_a_plain_cni_workload(cluster: Cluster) -> None:
    """No policy.type: the network's Profile is created as Calico creates it; labels from args.cni.labels."""
    node = cluster.node("node1")
    cluster.seed(node)
    conf = {k: v for k, v in cluster.netconf(node).items() if k != "policy"}
    conf["args"] = {"cni": {"labels": [{"key": "app", "value": "web"}]}}
    pod = cluster.pod()
    added = cluster.call("ADD", node, pod, "labelled", conf)
    assert added.rc == 0, added.out
    profile = json.loads(cluster.value(f"/calico/resources/v3/projectcalico.org/profiles/{NETWORK}") or "{}")
    # As Go writes them: an empty EntityRule is {} (omitempty never drops a struct).
    assert profile["spec"]["ingress"] == [
        {"action": "Allow", "source": {"selector": f"has({NETWORK})"}, "destination": {}}
    ]
    assert profile["spec"]["egress"] == [{"action": "Allow", "source": {}, "destination": {}}]
    assert profile["spec"]["labelsToApply"] == {NETWORK: ""}
    wep = json.loads(
        cluster.value("/calico/resources/v3/projectcalico.org/workloadendpoints/default/node1-cni-labelled-eth0")
        or "{}"
    )
    assert wep["metadata"]["labels"] == {
        "app": "web",
        "projectcalico.org/namespace": "default",
        "projectcalico.org/orchestrator": "cni",
    }
    assert wep["spec"]["profiles"] == [NETWORK]
    assert cluster.call("DEL", node, pod, "labelled", conf).rc == 0
    assert node.veths() == []


def test_gc_releases_what_the_runtime_no_longer_knows(cluster: Cluster) -> None:
    node = cluster.node("node1")
    cluster.seed(node)
    conf = cluster.netconf(node, version="1.1.0")
    keep, stale = cluster.pod(), cluster.pod()
    assert cluster.call("ADD", node, keep, "keep", conf).rc == 0
    assert cluster.call("ADD", node, stale, "stale", conf).rc == 0
    valid = conf | {"cni.dev/valid-attachments": [{"containerID": "keep", "ifname": "eth0"}]}
    assert cluster.call("GC", node, "", "", valid).rc == 0
    assert cluster.value(f"/calico/ipam/v2/handle/{NETWORK}.stale") is None
    assert cluster.value(f"/calico/ipam/v2/handle/{NETWORK}.keep") is not None
    wep = "/calico/resources/v3/projectcalico.org/workloadendpoints/default/node1-cni-stale-eth0"
    assert cluster.value(wep) is not None, "its veth still exists: the endpoint is not judged stale yet"
    run("ip", "netns", "del", stale)
    assert cluster.call("GC", node, "", "", valid).rc == 0
    assert cluster.value(wep) is None
    assert cluster.call("DEL", node, keep, "keep", conf).rc == 0


def test_daemon_prints_what_the_in_process_path_prints(cluster: Cluster) -> None:
    node = cluster.node("node1")
    cluster.seed(node, pools=[("tiny", "10.251.0.0/31", 31)])  # two addresses
    cluster.socket = str(cluster.tmp / "run" / "pycni.sock")
    daemon = Daemon(Path(cluster.socket))
    daemon.start()
    try:
        conf = cluster.netconf(node)
        cold_pod, warm_pod = cluster.pod(), cluster.pod()
        cold = cluster.call("ADD", node, cold_pod, "cold", conf, ("d", "cold"), raw=True)
        warm = cluster.call("ADD", node, warm_pod, "warm", conf, ("d", "warm"), daemon=True, raw=True)
        assert cold.rc == warm.rc == 0, (cold, warm)

        def same_shape(text: str) -> str:
            out = re.sub(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}", "<mac>", text)
            out = re.sub(r"cali[0-9a-f]{11}", "<veth>", out)
            out = re.sub(r"10\.251\.0\.[01]/32", "<ip>", out)
            return re.sub(r"pytcal-pod-[0-9a-f]+", "<pod>", out)

        assert same_shape(cold.out) == same_shape(warm.out)
        ping(cold_pod, pod_ip(Call(0, json.loads(warm.out), "")))
        third = cluster.pod()
        for bad in (
            conf | {"ipam": {**conf["ipam"], "assign_ipv4": "yes"}},
            conf | {"etcd_endpoints": "http://198.51.100.1:1"},
            conf,  # the pool is exhausted
        ):
            cold_err = cluster.call("ADD", node, third, "third", bad, ("d", "third"), raw=True)
            warm_err = cluster.call("ADD", node, third, "third", bad, ("d", "third"), daemon=True, raw=True)
            assert cold_err.rc == warm_err.rc == 1
            assert cold_err.out == warm_err.out, (cold_err.out, warm_err.out)
        checked = cluster.call(
            "CHECK", node, warm_pod, "warm", conf | {"prevResult": json.loads(warm.out)}, ("d", "warm"), daemon=True
        )
        assert checked.rc == 0, checked.out
        for pod, cid in ((cold_pod, "cold"), (warm_pod, "warm")):
            deleted = cluster.call("DEL", node, pod, cid, conf, ("d", cid), daemon=True)
            assert deleted.rc == 0, deleted.out
    finally:
        daemon.kill()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(cluster.socket)
    node.assert_fresh()


@pytest.mark.parametrize("cluster", ["sqlite"], indirect=True)
@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_every_spec_version(cluster: Cluster, version: str) -> None:
    """Results at each version as Go's types print them; kubelet's CNI_ARGS need no IgnoreUnknown for calico."""
    node = cluster.node("node1")
    cluster.seed(node)
    conf = cluster.netconf(node, version=version)
    pod = cluster.pod()
    kubelet_args = "K8S_POD_NAMESPACE=v;K8S_POD_NAME=p;K8S_POD_INFRA_CONTAINER_ID=x;K8S_POD_UID=u"
    added = cluster.call("ADD", node, pod, "ver", conf, cni_args=kubelet_args)
    assert added.rc == 0, added.out
    address = f"{pod_ip(added) if 'ips' in added.out else added.out['ip4']['ip'].split('/')[0]}/32"
    if version in ("0.1.0", "0.2.0"):
        assert added.out == {"cniVersion": version, "ip4": {"ip": address}, "dns": {}}
    else:
        interfaces = added.out["interfaces"]
        assert [i["name"] for i in interfaces] == [veth_for_pod("v", "p"), "eth0"]
        assert ("mtu" in interfaces[1]) == version.startswith("1."), "interface mtu exists from 1.0.0"
        ip = {"interface": 1, "address": address} | ({} if version.startswith("1.") else {"version": "4"})
        assert added.out["ips"] == [ip]
    if version >= "0.4.0":
        checked = cluster.call("CHECK", node, pod, "ver", conf | {"prevResult": added.out}, cni_args=kubelet_args)
        assert checked.rc == 0, checked.out
    assert cluster.call("DEL", node, pod, "ver", conf, cni_args=kubelet_args).rc == 0
    node.assert_fresh()


def test_a_cni_container_joining_a_second_network_gets_its_profile(cluster: Cluster) -> None:
    """Calico's "existing endpoint" case: no second address or veth, the network's profile appended."""
    node = cluster.node("node1")
    cluster.seed(node)
    first = {k: v for k, v in cluster.netconf(node).items() if k != "policy"}
    second = first | {"name": "net2"}
    pod = cluster.pod()
    added = cluster.call("ADD", node, pod, "joiner", first)
    joined = cluster.call("ADD", node, pod, "joiner", second)
    assert added.rc == 0 and joined.rc == 0, (added.out, joined.out)
    assert joined.out == added.out, "the same interfaces and address"
    assert len(node.veths()) == 1
    wep = json.loads(
        cluster.value("/calico/resources/v3/projectcalico.org/workloadendpoints/default/node1-cni-joiner-eth0") or "{}"
    )
    assert wep["spec"]["profiles"] == [NETWORK, "net2"]
    assert cluster.value("/calico/ipam/v2/handle/net2.joiner") is None
    assert cluster.call("DEL", node, pod, "joiner", first).rc == 0
    assert cluster.call("DEL", node, pod, "joiner", second).rc == 0
    assert node.veths() == []
    assert cluster.value(f"/calico/ipam/v2/handle/{NETWORK}.joiner") is None
