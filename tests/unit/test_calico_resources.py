"""The v3 resource client on the in-memory datastore: keys, stored bytes and clientv3's write rules."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from pycni.datastore.memory import MemoryDatastore
from pycni.fabric.calico.errors import ResourceAlreadyExists, ResourceNotFound, UpdateConflict, ValidationError
from pycni.fabric.calico.model import load_manifest, new_resource
from pycni.fabric.calico.resource import Resource
from pycni.fabric.calico.resources import ResourceClient

POOL = "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: p1}\nspec: {cidr: 10.244.0.0/16}\n"


@pytest.fixture
def client() -> ResourceClient:
    return ResourceClient(
        MemoryDatastore(),
        now=lambda: datetime(2024, 1, 1, tzinfo=UTC),
        new_uid=lambda: "3f0c0000-0000-4000-8000-000000000001",
    )


def test_create_stores_libcalico_go_bytes(client: ResourceClient) -> None:
    created = client.create(load_manifest(POOL)[0])
    kv = client.store.get("/calico/resources/v3/projectcalico.org/ippools/p1")
    assert kv is not None
    assert kv.value == (
        '{"kind":"IPPool","apiVersion":"projectcalico.org/v3","metadata":{"name":"p1",'
        '"uid":"3f0c0000-0000-4000-8000-000000000001","creationTimestamp":"2024-01-01T00:00:00Z"},'
        '"spec":{"cidr":"10.244.0.0/16","vxlanMode":"Never","ipipMode":"Never","blockSize":26,'
        '"nodeSelector":"all()","allowedUses":["Workload","Tunnel"],"assignmentMode":"Automatic"}}'
    )
    assert created.resource_version == str(kv.mod_revision)
    assert client.get("IPPool", "p1").metadata == created.metadata
    with pytest.raises(ResourceAlreadyExists, match=r"resource already exists: IPPool\(p1\)"):
        client.create(load_manifest(POOL)[0])
    with pytest.raises(ValidationError, match="must not be set for a Create"):
        client.create(created)


def test_update_is_compare_and_swap(client: ResourceClient) -> None:
    created = client.create(new_resource("BGPPeer", "tor", {"peerIP": "198.51.100.9", "asNumber": 64513}))
    changed = created.copy()
    changed.spec["asNumber"] = 64514
    updated = client.update(changed)
    assert int(updated.resource_version) > int(created.resource_version)
    stale = created.copy()
    stale.spec["asNumber"] = 64515
    with pytest.raises(UpdateConflict):
        client.update(stale)
    with pytest.raises(UpdateConflict, match="out of date"):
        client.replace(stale)
    stale.set_meta("resourceVersion", None)
    assert client.replace(stale).spec["asNumber"] == 64515  # without a version: onto the latest
    assert client.get("BGPPeer", "tor").metadata["uid"] == created.metadata["uid"]


def test_apply_creates_then_replaces(client: ResourceClient) -> None:
    first = client.apply(new_resource("Profile", "net1", {"labelsToApply": {"net1": ""}}))
    second = client.apply(new_resource("Profile", "net1", {}))
    assert second.metadata["uid"] == first.metadata["uid"] and second.spec == {}
    assert second.metadata["creationTimestamp"] == "2024-01-01T00:00:00Z"


def wep(pod: str, namespace: str = "default", name: str = "", node: str = "n1", **spec: object) -> Resource:
    fields = {"orchestrator": "k8s", "node": node, "pod": pod, "endpoint": "eth0", "interfaceName": "cali1", **spec}
    return new_resource("WorkloadEndpoint", name, fields, namespace=namespace)


def test_namespaced_keys_and_list(client: ResourceClient) -> None:
    for ns, pod in (("a", "w1"), ("b", "w2"), ("a", "w3")):
        client.create(wep(pod, ns, f"n1-k8s-{pod}-eth0"))
    assert client.store.get("/calico/resources/v3/projectcalico.org/workloadendpoints/a/n1-k8s-w1-eth0") is not None
    assert [r.name for r in client.list("WorkloadEndpoint", "a")[0]] == ["n1-k8s-w1-eth0", "n1-k8s-w3-eth0"]
    assert len(client.list("WorkloadEndpoint")[0]) == 3
    gone = client.delete("WorkloadEndpoint", "n1-k8s-w1-eth0", "a")
    assert gone.name == "n1-k8s-w1-eth0"
    with pytest.raises(ResourceNotFound, match=r"WorkloadEndpoint\(a/n1-k8s-w1-eth0\)"):
        client.get("WorkloadEndpoint", "n1-k8s-w1-eth0", "a")


def test_workload_endpoints_are_named_by_their_spec_and_get_clientv3s_labels(client: ResourceClient) -> None:
    """clientv3: assignOrValidateName (an unnamed endpoint is named; a wrong name refused), updateLabelsForStorage."""
    given = wep("my-pod")
    given.set_meta("labels", {"app": "web", "projectcalico.org/namespace": "spoofed"})
    created = client.create(given)
    assert created.name == "n1-k8s-my--pod-eth0"
    assert created.labels == {
        "app": "web",
        "projectcalico.org/namespace": "default",
        "projectcalico.org/orchestrator": "k8s",
    }
    kv = client.store.get(f"/calico/resources/v3/projectcalico.org/workloadendpoints/default/{created.name}")
    assert kv is not None and '"labels":{"app":"web","projectcalico.org/namespace":"default",' in kv.value
    changed = created.copy()
    changed.set_meta("labels", {})
    assert client.update(changed).labels == {
        "projectcalico.org/namespace": "default",
        "projectcalico.org/orchestrator": "k8s",
    }
    with pytest.raises(ValidationError, match=r"does not match the primary identifiers.*expected name n1-k8s-p-eth0"):
        client.create(wep("p", name="n1-k8s-other-eth0"))
    with pytest.raises(ValidationError, match=r"pod = '' \(field should be assigned\)"):
        client.create(wep(""))
    cni = client.create(wep("", orchestrator="cni", containerID="4d5e-f"))
    assert cni.name == "n1-cni-4d5e--f-eth0" and cni.labels["projectcalico.org/orchestrator"] == "cni"


def test_pool_rules(client: ResourceClient) -> None:
    client.create(load_manifest(POOL)[0])
    with pytest.raises(ValidationError, match=r"IPPool\(p2\) CIDR overlaps with IPPool\(p1\)"):
        client.create(new_resource("IPPool", "p2", {"cidr": "10.244.128.0/17"}))
    current = client.get("IPPool", "p1")
    moved = current.copy()
    moved.spec["cidr"] = "10.245.0.0/16"
    with pytest.raises(ValidationError, match="CIDR cannot be modified"):
        client.update(moved)
    resized = current.copy()
    resized.spec["blockSize"] = 28
    with pytest.raises(ValidationError, match="BlockSize cannot be modified"):
        client.update(resized)
    client.store.put("/calico/ipam/v2/assignment/ipv4/block/10.9.0.0-28", "{}")
    with pytest.raises(ValidationError, match="conflicts with existing allocations"):
        client.create(new_resource("IPPool", "p3", {"cidr": "10.9.0.0/16"}))
    gone = client.delete("IPPool", "p1")
    assert gone.spec["disabled"] is True  # disabled first, as clientv3 does, then deleted
    assert client.find("IPPool", "p1") is None


def test_ipam_configuration_is_the_ipam_config_key(client: ResourceClient) -> None:
    created = client.create(
        new_resource("IPAMConfiguration", "default", {"strictAffinity": True, "maxBlocksPerHost": 4})
    )
    kv = client.store.get("/calico/ipam/v2/config")
    assert kv is not None and json.loads(kv.value) == {
        "strict_affinity": True,
        "auto_allocate_blocks": True,
        "maxBlocksPerHost": 4,
    }
    assert created.spec == {"strictAffinity": True, "maxBlocksPerHost": 4, "autoAllocateBlocks": True}
    assert [r.name for r in client.list("IPAMConfiguration")[0]] == ["default"]


def test_ensure_initialized_seeds_cluster_info_and_tiers(client: ResourceClient) -> None:
    client.ensure_initialized()
    client.ensure_initialized()  # idempotent
    tiers = {r.name: r.spec for r in client.list("Tier")[0]}
    assert tiers == {
        "default": {"order": 1_000_000.0, "defaultAction": "Deny"},
        "kube-admin": {"order": 1000.0, "defaultAction": "Pass"},
        "kube-baseline": {"order": 10_000_000.0, "defaultAction": "Pass"},
    }
    kv = client.store.get("/calico/resources/v3/projectcalico.org/tiers/default")
    assert kv is not None and '"spec":{"order":1000000,"defaultAction":"Deny"},"status":{}' in kv.value
    info = client.get("ClusterInformation", "default")
    assert info.spec["datastoreReady"] is True and len(info.spec["clusterGUID"]) == 32


def test_deleting_a_node_cleans_up_after_it_as_clientv3_does(client: ResourceClient) -> None:
    """Nodes().Delete: its endpoints' and tunnel addresses released, endpoints, affinities, peers, configs gone."""
    from pycni.fabric.calico.ipam_store import IPAM, AutoAssignArgs

    client.create(new_resource("IPPool", "p1", {"cidr": "10.244.0.0/16", "vxlanMode": "Always"}))
    ipam = IPAM(client.store, client)
    for name in ("node1", "node10"):  # node10's endpoint names also start with "node1"
        client.create(new_resource("Node", name, {}))
    tunnel = ipam.assign_tunnel_address("node1")
    node = client.get("Node", "node1")
    node.spec["ipv4VXLANTunnelAddr"] = str(tunnel.ip)
    client.update(node)
    pods: dict[str, str] = {}
    for host in ("node1", "node10"):
        handle = f"k8s-pod-network.{host}"
        v4, _ = ipam.auto_assign(AutoAssignArgs(hostname=host, num4=1, handle_id=handle, attrs={"node": host}))
        assert v4 is not None
        pods[host] = str(v4.ips[0].ip)
        spec = {"orchestrator": "k8s", "node": host, "pod": "p", "endpoint": "eth0", "interfaceName": "cali1"}
        spec["ipNetworks"] = [f"{pods[host]}/32"]
        client.create(new_resource("WorkloadEndpoint", f"{host}-k8s-p-eth0", spec, namespace="default"))
    client.create(new_resource("BGPPeer", "mine", {"node": "node1", "peerIP": "198.51.100.9", "asNumber": 64513}))
    client.create(new_resource("BGPPeer", "global", {"peerIP": "198.51.100.8", "asNumber": 64513}))
    client.create(new_resource("FelixConfiguration", "node.node1", {}))
    client.create(new_resource("BGPConfiguration", "node.node1", {}))
    client.create(new_resource("FelixConfiguration", "node.node10", {}))

    client.delete("Node", "node1")

    assert [r.name for r in client.list("Node")[0]] == ["node10"]
    assert [r.name for r in client.list("WorkloadEndpoint")[0]] == ["node10-k8s-p-eth0"]
    assert [r.name for r in client.list("BGPPeer")[0]] == ["global"]
    assert [r.name for r in client.list("FelixConfiguration")[0]] == ["node.node10"]
    assert client.list("BGPConfiguration")[0] == []
    assert ipam.affine_blocks("node1", 4) == [] and len(ipam.affine_blocks("node10", 4)) == 1
    assert ipam.handle("vxlan-tunnel-addr-node1") is None and ipam.handle("k8s-pod-network.node1") is None
    in_use = {str(address) for block in ipam.list_blocks() for address, _ in block.in_use()}
    assert in_use == {pods["node10"]}, "only node10's pod still holds an address"
    with pytest.raises(ResourceNotFound):
        client.delete("Node", "node1")
