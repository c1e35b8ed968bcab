"""The calico plugins' pure parts, and calico-ipam through ``Plugin.invoke`` on a real sqlite store (no root).

calico-ipam needs no kernel, so its verbs run here against pycni's embedded
store with Calico's data in it (pools, nodes), exactly as the executable
would: results, handles and attributes are read back from the store.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import logging
from pathlib import Path
from typing import Any

import pytest

from pycni.datastore.sqlite import SqliteDatastore
from pycni.fabric.calico.ipam import AllocationBlock, Handle
from pycni.fabric.calico.ipam_store import IPAM
from pycni.fabric.calico.model import new_resource
from pycni.fabric.calico.names import split_name as split_wep_name
from pycni.fabric.calico.resources import ResourceClient
from pycni.plugins.ipam import calico_ipam
from pycni.plugins.ipam.calico_ipam import (
    Identifiers,
    call_logger,
    default_lock_path,
    determine_nodename,
    go_timestamp,
    store_config,
)
from pycni.plugins.main.calico import _ipam_stdin_for_delete, host_veth_name, sanitize_mesos_label
from pycni.skel import CmdArgs
from pycni.spec import CNIError, Fields

# -- names ----------------------------------------------------------------------------------


def test_workload_endpoint_names_escape_dashes_as_libcalico_go() -> None:
    pod = Identifiers("k8s", "node-1", "cid", "eth0", "x", pod="a")
    assert pod.wep_name() == "node--1-k8s-a-eth0"  # the reference's example
    cni = Identifiers("cni", "node1", "4d5e-f", "eth0", "default")
    assert cni.wep_name() == "node1-cni-4d5e--f-eth0"
    prefix = Identifiers("k8s", "node1", "cid", "", "x", pod="my-pod").wep_name(prefix=True)
    assert prefix == "node1-k8s-my--pod-"
    assert split_wep_name("node--1-k8s-my--pod-eth0") == ["node-1", "k8s", "my-pod", "eth0"]


def test_name_matches_ignores_the_interface_but_not_a_longer_pod_name() -> None:
    search = Identifiers("k8s", "node1", "cid", "", "x", pod="mypod")
    assert search.name_matches("node1-k8s-mypod-eth0")
    assert search.name_matches("node1-k8s-mypod-eth1")
    assert not search.name_matches("node1-k8s-mypod--1-eth0")  # the prefix list returns it too
    assert not search.name_matches("node2-k8s-mypod-eth0")


def test_a_segment_may_not_start_or_end_with_a_dash() -> None:
    with pytest.raises(CNIError) as caught:
        Identifiers("cni", "node1-", "cid", "eth0", "default").wep_name()
    assert caught.value.code == 7
    assert "node = 'node1-' (field must not end with a '-')" in caught.value.msg


def test_host_veth_names() -> None:
    pod = Identifiers("k8s", "n", "c", "eth0", "kube-system", pod="coredns-1")
    digest = hashlib.sha1(b"kube-system.coredns-1").hexdigest()
    assert host_veth_name(pod, "cali") == "cali" + digest[:11]
    assert host_veth_name(pod, "tap") == "tap" + digest[:11]
    assert host_veth_name(Identifiers("cni", "n", "4d5e6f7a8b9c0d1e", "eth0", "default"), "x") == "cali4d5e6f7a8b9"


def test_go_timestamp_is_time_string_of_go() -> None:
    assert go_timestamp(1_704_067_200_123_456_789) == "2024-01-01 00:00:00.123456789 +0000 UTC"
    assert go_timestamp(1_704_067_200_120_000_000) == "2024-01-01 00:00:00.12 +0000 UTC"
    assert go_timestamp(1_704_067_200_000_000_000) == "2024-01-01 00:00:00 +0000 UTC"


def test_mesos_labels_are_sanitised_as_calico_does() -> None:
    assert sanitize_mesos_label("a/b c") == "a.b-c"
    assert sanitize_mesos_label("--x..-y--") == "x.y"
    assert sanitize_mesos_label("ünïcode") == "n-code"


def test_lock_path_is_per_node() -> None:
    assert default_lock_path("node1") == "/var/run/calico/ipam-node1.lock"
    assert default_lock_path("a/b") == "/var/run/calico/ipam-a_b.lock"


# -- datastore and node name --------------------------------------------------------------


def test_store_config_from_netconf_environment_and_default() -> None:
    etcd = store_config(Fields({"etcd_endpoints": "http://10.0.0.1:2379, http://10.0.0.2:2379"}), {})
    assert etcd.datastore_type == "etcdv3"
    assert etcd.endpoints == ("http://10.0.0.1:2379", "http://10.0.0.2:2379")
    from_env = store_config(Fields({}), {"DATASTORE_TYPE": "etcdv3", "ETCD_ENDPOINTS": "http://e:2379"})
    assert from_env.endpoints == ("http://e:2379",)
    authority = store_config(Fields({"datastore_type": "etcdv3", "etcd_authority": "e:4001"}), {})
    assert authority.endpoints == ("http://e:4001",)
    assert store_config(Fields({}), {}).path == "/var/lib/pycni/calico.db"  # pycni calicoctl's default
    assert store_config(Fields({}), {"PYCNI_CALICO_STORE": "/s/c.db"}).path == "/s/c.db"
    own = store_config(Fields({"datastore_type": "pycni", "pycni_store_path": "/x/y.db"}), {"PYCNI_CALICO_STORE": "/s"})
    assert own.path == "/x/y.db"


@pytest.mark.parametrize(
    ("conf", "words"),
    [
        ({"datastore_type": "kubernetes"}, '"kubernetes" is not supported'),
        ({"datastore_type": "etcdv3"}, "needs etcd_endpoints"),
        ({"datastore_type": "consul"}, "unknown datastore_type 'consul'"),
        ({"etcd_endpoints": "https://e:2379"}, "is not an http:// URL"),
        ({"etcd_endpoints": "http://e:2379", "etcd_cert_file": "/c.pem"}, "etcd TLS is not supported"),
        ({"etcd_discovery_srv": "example.com"}, "etcd_discovery_srv is not supported"),
        ({"datastore_type": "pycni", "pycni_store_path": "rel.db"}, "must be an absolute path"),
    ],
)
def test_store_config_refusals_are_code_7(conf: dict[str, Any], words: str) -> None:
    with pytest.raises(CNIError) as caught:
        store_config(Fields(conf), {})
    assert caught.value.code == 7
    assert words in caught.value.msg


def test_nodename_from_conf_file_hostname(tmp_path: Path) -> None:
    path = tmp_path / "nodename"
    assert determine_nodename(Fields({"nodename": "n1", "nodename_file": str(path)})) == "n1"
    path.write_text("node-from-file\n")
    assert determine_nodename(Fields({"nodename_file": str(path), "hostname": "h"})) == "node-from-file"
    assert determine_nodename(Fields({"nodename_file": str(tmp_path / "none"), "hostname": "h"})) == "h"


def test_call_logger_filters_by_level_and_writes_the_file(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "log" / "cni.log"
    caplog.set_level(logging.DEBUG, logger="pycni.plugins.ipam.calico_ipam")
    with call_logger(Fields({"log_level": "Warning", "log_file_path": str(path)}), "calico") as logger:
        logger.info("not shown")
        logger.warning("shown %d", 1)
    text = path.read_text()
    assert "shown 1" in text and "not shown" not in text and "[WARNING]" in text
    assert [r.getMessage() for r in caplog.records] == ["shown 1"], "records reach the process's handlers"
    assert logging.getLogger("pycni.plugins.ipam.calico_ipam").getChild("calico").handlers == []
    with pytest.raises(CNIError) as caught, call_logger(Fields({"log_level": "loud"}), "calico"):
        pass
    assert caught.value.code == 7


def test_host_local_use_pod_cidr_becomes_any_subnet_on_delete() -> None:
    stdin = json.dumps({"name": "k8s", "ipam": {"type": "host-local", "ranges": [[{"subnet": "usePodCidr"}]]}})
    args = CmdArgs("DEL", "c", "", "eth0", "", [], stdin.encode(), json.loads(stdin))
    out = json.loads(_ipam_stdin_for_delete(args, "host-local"))
    assert out["ipam"]["ranges"] == [[{"subnet": "0.0.0.0/0"}]]
    assert _ipam_stdin_for_delete(args, "calico-ipam") == args.stdin


# -- calico-ipam on a real sqlite store ----------------------------------------------------

POOL = "10.70.0.0/26"  # one block: its first address is the first handed out


class Ipam:
    """calico-ipam invoked in-process with a netconf for a sqlite store in ``tmp``."""

    def __init__(self, tmp: Path) -> None:
        self.path = str(tmp / "calico.db")
        self.lock = str(tmp / "ipam.lock")
        store = SqliteDatastore(self.path)
        resources = ResourceClient(store)
        resources.ensure_initialized()
        resources.create(new_resource("IPPool", "pool-a", {"cidr": POOL, "blockSize": 26}))
        resources.create(new_resource("IPPool", "pool-v6", {"cidr": "fd80:24e2:f998:72d6::/120", "blockSize": 122}))
        for node in ("node1", "node2"):
            resources.create(new_resource("Node", node, {}))
        store.close()

    def conf(self, **ipam: Any) -> dict[str, Any]:
        return {
            "cniVersion": "1.1.0",
            "name": "net1",
            "type": "calico",
            "datastore_type": "pycni",
            "pycni_store_path": self.path,
            "nodename": ipam.pop("nodename", "node1"),
            "ipam_lock_file": self.lock,  # a NetConf key, beside ipam (types.go)
            "ipam": {"type": "calico-ipam", **ipam},
        }

    def call(self, command: str, conf: dict[str, Any], cid: str = "c1", cni_args: str = "") -> tuple[int, Any]:
        env = {
            "CNI_COMMAND": command,
            "CNI_CONTAINERID": cid,
            "CNI_NETNS": "/run/netns/none",
            "CNI_IFNAME": "eth0",
            "CNI_PATH": "/nonexistent",
            "CNI_ARGS": cni_args,
        }
        reply = calico_ipam.plugin.invoke(env, json.dumps(conf).encode())
        return reply.exit_code, json.loads(reply.stdout) if reply.stdout.strip() else None

    def state(self) -> tuple[IPAM, SqliteDatastore]:
        store = SqliteDatastore(self.path)
        return IPAM(store), store


@pytest.fixture
def ipam(tmp_path: Path) -> Ipam:
    return Ipam(tmp_path)


def test_add_returns_block_prefix_and_records_handle_and_attributes(ipam: Ipam) -> None:
    rc, out = ipam.call("ADD", ipam.conf(), cni_args="K8S_POD_NAMESPACE=x;K8S_POD_NAME=a;IgnoreUnknown=1")
    assert rc == 0, out
    assert out == {"cniVersion": "1.1.0", "ips": [{"address": "10.70.0.0/26"}]}
    state, store = ipam.state()
    try:
        handle = state.handle("net1.c1")
        assert handle is not None and handle.block == {POOL: 1}
        attribute = state.attributes_for(ipaddress.ip_address("10.70.0.0"))
        assert attribute.handle_id == "net1.c1"
        secondary = dict(attribute.secondary or {})
        assert secondary.pop("timestamp").endswith(" +0000 UTC")
        assert secondary == {"namespace": "x", "node": "node1", "pod": "a"}
    finally:
        store.close()
    rc, out = ipam.call("CHECK", ipam.conf() | {"prevResult": out})
    assert rc == 0, out
    assert Path(ipam.lock).exists(), "the lock is the configured file"


def test_delete_releases_and_is_idempotent(ipam: Ipam) -> None:
    assert ipam.call("ADD", ipam.conf())[0] == 0
    assert ipam.call("DEL", ipam.conf()) == (0, None)
    assert ipam.call("DEL", ipam.conf()) == (0, None)
    state, store = ipam.state()
    try:
        assert state.list_handles() == []
        (block,) = state.list_blocks()
        assert block.empty() and block.affinity == "host:node1", "the affinity stays, as Calico keeps it"
    finally:
        store.close()
    rc, out = ipam.call("CHECK", ipam.conf())
    assert rc == 1 and out["msg"] == "calico-ipam: handle net1.c1 holds no address"


def test_delete_also_releases_the_workload_id_handle(ipam: Ipam) -> None:
    """Calico 2.x allocated under ``<ns>.<pod>``; DEL releases that handle too."""
    state, store = ipam.state()
    try:
        state.assign_ip(ipaddress.ip_address("10.70.0.9"), "node1", "x.a", {"node": "node1"})
    finally:
        store.close()
    assert ipam.call("DEL", ipam.conf(), cni_args="K8S_POD_NAMESPACE=x;K8S_POD_NAME=a")[0] == 0
    state, store = ipam.state()
    try:
        assert state.handle("x.a") is None
    finally:
        store.close()


def test_requested_ip_is_a_slash_32(ipam: Ipam) -> None:
    rc, out = ipam.call("ADD", ipam.conf(), cni_args="IP=10.70.0.33")
    assert rc == 0, out
    assert out["ips"] == [{"address": "10.70.0.33/32"}]


def test_pools_by_name_or_cidr_and_wrong_ones(ipam: Ipam) -> None:
    assert ipam.call("ADD", ipam.conf(ipv4_pools=["pool-a"]), cid="a")[0] == 0
    assert ipam.call("ADD", ipam.conf(ipv4_pools=[POOL]), cid="b")[0] == 0
    rc, out = ipam.call("ADD", ipam.conf(ipv4_pools=["nope"]), cid="c")
    assert (rc, out["code"]) == (1, 7)
    assert out["msg"] == "error parsing pool 'nope': it is neither a CIDR nor the name of an IPPool"
    rc, out = ipam.call("ADD", ipam.conf(ipv4_pools=["pool-v6"]), cid="d")
    assert out["msg"] == "'fd80:24e2:f998:72d6::' isn't a IPv4 address"
    rc, out = ipam.call("ADD", ipam.conf(assign_ipv4=True), cid="e")
    assert (rc, out["code"]) == (1, 7) and 'expected the string "true" or "false"' in out["msg"]


def test_dual_stack(ipam: Ipam) -> None:
    rc, out = ipam.call("ADD", ipam.conf(assign_ipv6="true"))
    assert rc == 0, out
    assert [ip["address"] for ip in out["ips"]] == ["10.70.0.0/26", "fd80:24e2:f998:72d6::/122"]


def test_one_family_failing_releases_the_other(ipam: Ipam) -> None:
    rc, out = ipam.call("ADD", ipam.conf(assign_ipv6="true", ipv6_pools=["fd00:1::/64"]))
    assert (rc, out["code"]) == (1, 7), out
    assert out["msg"] == "the given pool (fd00:1::/64) does not exist, or is not enabled"
    state, store = ipam.state()
    try:
        (block,) = state.list_blocks()
        assert block.empty(), "the IPv4 address was given back"
        assert state.list_handles() == []
    finally:
        store.close()


def test_exhausted_pool_says_so_as_calico(ipam: Ipam) -> None:
    for index in range(64):
        rc, out = ipam.call("ADD", ipam.conf(), cid=f"c{index}")
        assert rc == 0, out
    rc, out = ipam.call("ADD", ipam.conf(), cid="one-too-many")
    assert rc == 1
    assert out["code"] == 999
    assert out["msg"] == (
        "failed to request IPv4 addresses: Assigned 0 out of 1 requested IPv4 addresses; "
        f"No IPs available in pools: [{POOL}]"
    )


def test_gc_releases_only_this_networks_stale_handles_on_this_node(ipam: Ipam) -> None:
    assert ipam.call("ADD", ipam.conf(), cid="keep")[0] == 0
    assert ipam.call("ADD", ipam.conf(), cid="stale")[0] == 0
    assert ipam.call("ADD", ipam.conf(nodename="node2"), cid="other-node")[0] == 0
    assert ipam.call("ADD", ipam.conf() | {"name": "net2"}, cid="other-net")[0] == 0
    assert ipam.call("GC", ipam.conf())[0] == 0, "no list: nothing is known to be stale"
    valid = [{"containerID": "keep", "ifname": "eth0"}]
    assert ipam.call("GC", ipam.conf() | {"cni.dev/valid-attachments": valid}) == (0, None)
    state, store = ipam.state()
    try:
        handles = sorted(h.handle_id for h in state.list_handles())
    finally:
        store.close()
    assert handles == ["net1.keep", "net1.other-node", "net2.other-net"]


def test_status(ipam: Ipam, tmp_path: Path) -> None:
    assert ipam.call("STATUS", ipam.conf()) == (0, None)
    rc, out = ipam.call("STATUS", ipam.conf() | {"pycni_store_path": str(tmp_path / "empty.db")})
    assert (rc, out["code"], out["msg"]) == (1, 50, "calico-ipam: no enabled IPv4 IPPool")


def test_block_and_handle_json_after_add_are_calicos(ipam: Ipam) -> None:
    assert ipam.call("ADD", ipam.conf())[0] == 0
    store = SqliteDatastore(ipam.path)
    try:
        handle = store.get("/calico/ipam/v2/handle/net1.c1")
        block = store.get("/calico/ipam/v2/assignment/ipv4/block/10.70.0.0-26")
        affinity = store.get("/calico/ipam/v2/host/node1/ipv4/block/10.70.0.0-26")
    finally:
        store.close()
    assert handle is not None and handle.value == '{"block":{"10.70.0.0/26":1},"deleted":false}'
    assert affinity is not None and affinity.value == '{"state":"confirmed","deleted":false}'
    assert block is not None
    parsed = AllocationBlock.from_json(block.value)
    assert parsed.allocations[0] == 0 and parsed.unallocated[0] == 1
    assert Handle.from_json("net1.c1", handle.value).count() == 1
