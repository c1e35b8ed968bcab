"""Calico IPAM on the in-memory datastore: claims, affinities, handles, borrowing, limits, races.

The same code runs on etcd in ``tests/integration/test_calico_ipam_etcd.py``;
here the store is in-process so many interleavings are cheap: threads race
for blocks and addresses, and no address may ever be held twice.
"""

from __future__ import annotations

import ipaddress
import json
import threading
from collections import Counter

import pytest

from pycni.datastore.memory import MemoryDatastore
from pycni.fabric.calico.ipam import AllocationBlock, block_key
from pycni.fabric.calico.ipam_store import IPAM, AutoAssignArgs, BlockLimitReached, IPAMError, NoPools, NotAssigned
from pycni.fabric.calico.model import new_resource
from pycni.fabric.calico.resources import ResourceClient


def cluster(cidr: str = "10.244.0.0/16", block_size: int = 26, nodes: int = 2, **pool: object) -> IPAM:
    store = MemoryDatastore()
    resources = ResourceClient(store)
    resources.create(new_resource("IPPool", "default-ipv4-ippool", {"cidr": cidr, "blockSize": block_size, **pool}))
    for index in range(1, nodes + 1):
        resources.create(new_resource("Node", f"node{index}", {}, namespace=""))
    return IPAM(store, resources)


def keys(ipam: IPAM, prefix: str = "/calico/ipam/") -> dict[str, str]:
    return {kv.key: kv.value for kv in ipam.store.list(prefix)[0]}


def assign(ipam: IPAM, host: str, count: int = 1, handle: str | None = None) -> list[str]:
    v4, _ = ipam.auto_assign(AutoAssignArgs(hostname=host, num4=count, handle_id=handle, attrs={"node": host}))
    assert v4 is not None
    return [str(i.ip) for i in v4.ips]


def test_claim_writes_calico_layout() -> None:
    ipam = cluster()
    (address,) = assign(ipam, "node1", handle="k8s-pod-network.c1")
    stored = keys(ipam)
    (block,) = [k for k in stored if "/assignment/" in k]
    cidr = block.rsplit("/", 1)[1].replace("-", "/")
    assert ipaddress.ip_address(address) in ipaddress.ip_network(cidr)
    assert (
        stored[f"/calico/ipam/v2/host/node1/ipv4/block/{cidr.replace('/', '-')}"]
        == '{"state":"confirmed","deleted":false}'
    )
    assert stored["/calico/ipam/v2/handle/k8s-pod-network.c1"] == json.dumps(
        {"block": {cidr: 1}, "deleted": False}, separators=(",", ":")
    )
    value = json.loads(stored[block])
    assert value["affinity"] == "host:node1" and value["allocations"][0] == 0 and value["unallocated"][0] == 1
    assert value["attributes"] == [{"handle_id": "k8s-pod-network.c1", "secondary": {"node": "node1"}}]
    assert list(value) == [
        "cidr", "affinity", "affinity_claim_time", "allocations", "unallocated", "attributes",
        "sequenceNumber", "sequenceNumberForAllocation", "deleted",
    ]  # fmt: skip


def test_affine_block_first_then_a_new_claim() -> None:
    ipam = cluster(block_size=30)
    first = assign(ipam, "node1", 4)
    blocks = {AllocationBlock.from_json(v).cidr for k, v in keys(ipam).items() if "/assignment/" in k}
    assert len(blocks) == 1 and all(ipaddress.ip_address(a) in next(iter(blocks)) for a in first)
    assign(ipam, "node1", 1)  # the block is full: a second one is claimed
    assert len(ipam.affine_blocks("node1", 4)) == 2


def test_release_by_ip_and_handle_and_fifo() -> None:
    ipam = cluster()
    a, b = assign(ipam, "node1", 2, handle="h1")
    assert ipam.release_ips([ipaddress.ip_address(a)]) == []
    assert ipam.release_ips([ipaddress.ip_address(a)]) == [ipaddress.ip_address(a)]  # already free
    assert ipam.handle("h1").block  # type: ignore[union-attr]
    assert ipam.release_by_handle("h1") == 1
    assert ipam.handle("h1") is None
    with pytest.raises(NotAssigned):
        ipam.release_by_handle("h1")
    # The longest-free address comes back last: a and b were freed, the next allocation is a fresh one.
    assert assign(ipam, "node1")[0] not in (a, b)


def test_assign_specific_ip_and_tunnel_address() -> None:
    ipam = cluster(vxlanMode="Always")
    ipam.assign_ip(ipaddress.ip_address("10.244.7.9"), "node1", "h", {"node": "node1"})
    with pytest.raises(IPAMError, match="already"):
        ipam.assign_ip(ipaddress.ip_address("10.244.7.9"), "node2", "h2")
    assert ipam.affine_blocks("node1", 4) == [ipaddress.ip_network("10.244.7.0/26")]
    tunnel = ipam.assign_tunnel_address("node1")
    assert tunnel.ip in ipaddress.ip_network("10.244.7.0/26")  # from the node's affine block
    attribute = ipam.attributes_for(tunnel.ip)
    assert attribute.handle_id == "vxlan-tunnel-addr-node1"
    assert attribute.secondary == {"node": "node1", "type": "vxlanTunnelAddress"}
    with pytest.raises(IPAMError, match="not in a configured pool"):
        ipam.assign_ip(ipaddress.ip_address("10.99.0.1"), "node1")


def test_tunnel_addresses_come_from_the_eligible_pools_only() -> None:
    """allocateip's filter: a VXLAN address from a VXLAN pool selecting the node, never from another pool."""
    ipam = cluster(cidr="10.244.0.0/16")  # no encapsulation: not eligible
    resources = ipam.resources
    resources.create(new_resource("IPPool", "vx", {"cidr": "10.250.0.0/16", "vxlanMode": "CrossSubnet"}))
    resources.create(
        new_resource(
            "IPPool", "vx-rack2", {"cidr": "10.251.0.0/16", "vxlanMode": "Always", "nodeSelector": "rack == '2'"}
        )
    )
    resources.create(new_resource("IPPool", "ip", {"cidr": "10.252.0.0/16", "ipipMode": "Always"}))
    assert ipam.assign_tunnel_address("node1").ip in ipaddress.ip_network("10.250.0.0/16")
    assert ipam.assign_tunnel_address("node1", kind="ipip").ip in ipaddress.ip_network("10.252.0.0/16")
    assert ipam.handle("ipip-tunnel-addr-node1") is not None
    only = [ipaddress.ip_network("10.244.0.0/16")]
    assert ipam.assign_tunnel_address("node2", pools=only).ip in only[0]  # the caller's choice wins
    resources.delete("IPPool", "vx")
    with pytest.raises(NoPools, match="no vxlan tunnel address for node2"):
        ipam.assign_tunnel_address("node2")  # vx-rack2 does not select it
    with pytest.raises(IPAMError, match="unknown tunnel kind"):
        ipam.assign_tunnel_address("node1", kind="gre")


def test_borrowing_when_no_block_can_be_claimed() -> None:
    ipam = cluster(cidr="10.244.0.0/29", block_size=30)  # two blocks in all
    assign(ipam, "node1", 4)
    theirs = assign(ipam, "node2", 4)
    ipam.release_ips([ipaddress.ip_address(theirs[1])])  # node2's block has room again
    assert assign(ipam, "node1", 1) == [theirs[1]]  # borrowed
    (block,) = [b for b in ipam.list_blocks() if ipaddress.ip_address(theirs[1]) in b.cidr]
    assert block.affinity == "host:node2" and block_key(block.cidr) in keys(ipam)
    v4, _ = ipam.auto_assign(AutoAssignArgs(hostname="node1", num4=1))
    assert v4 is not None and v4.ips == [] and "No IPs available in pools" in (v4.shortfall() or "")


def test_strict_affinity_never_borrows() -> None:
    ipam = cluster(cidr="10.244.0.0/29", block_size=30)
    ipam.resources.create(new_resource("IPAMConfiguration", "default", {"strictAffinity": True}))
    assign(ipam, "node1", 4)
    assign(ipam, "node2", 3)
    v4, _ = ipam.auto_assign(AutoAssignArgs(hostname="node1", num4=1))
    assert v4 is not None and v4.ips == []
    assert "No more free affine blocks and strict affinity enabled" in (v4.shortfall() or "")


def test_max_blocks_per_host() -> None:
    ipam = cluster(block_size=30)
    ipam.resources.create(new_resource("IPAMConfiguration", "default", {"strictAffinity": True, "maxBlocksPerHost": 1}))
    assign(ipam, "node1", 4)
    with pytest.raises(BlockLimitReached, match="limit of 1 blocks reached for this node"):
        assign(ipam, "node1", 1)


def test_pools_by_node_selector_and_disabled() -> None:
    ipam = cluster(nodeSelector="zone == 'a'")
    with pytest.raises(NoPools, match="nodeSelector"):
        assign(ipam, "node1")
    node = ipam.resources.get("Node", "node1")
    node.set_meta("labels", {"zone": "a"})
    ipam.resources.update(node)
    assert assign(ipam, "node1")
    pool = ipam.resources.get("IPPool", "default-ipv4-ippool")
    pool.spec["disabled"] = True
    ipam.resources.update(pool)
    with pytest.raises(NoPools, match="no enabled IPv4 IPPool"):
        assign(ipam, "node1")
    with pytest.raises(IPAMError, match="Node"):
        cluster().auto_assign(AutoAssignArgs(hostname="stranger", num4=1))


def test_release_affinities_and_pool_deletion() -> None:
    ipam = cluster(block_size=30)
    kept = assign(ipam, "node1", 5)  # two blocks: one full, one with one address
    ipam.release_ips([ipaddress.ip_address(kept[-1])])
    assert ipam.release_host_affinities("node1") == 2
    remaining = keys(ipam)
    assert not [k for k in remaining if "/host/" in k]
    (block,) = [v for k, v in remaining.items() if "/assignment/" in k]  # the non-empty one, no longer affine
    assert json.loads(block)["affinity"] is None
    ipam.resources.delete("IPPool", "default-ipv4-ippool")
    assert not [k for k in keys(ipam) if "/host/" in k]


def test_threads_race_for_blocks_without_duplicates() -> None:
    ipam = cluster(block_size=28, nodes=4)
    results: list[str] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def worker(host: str) -> None:
        try:
            for index in range(12):
                got = assign(ipam, host, 1, handle=f"{host}.{index}")
                with lock:
                    results.extend(got)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(f"node{n}",)) for n in (1, 2, 3, 4) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert len(results) == 96 and len(set(results)) == 96, Counter(results).most_common(3)
    for block in ipam.list_blocks():
        assert block.check() == []
        owners = {a.secondary["node"] for _, a in block.in_use() if a.secondary}
        assert owners <= {block.host}  # no borrowing was needed: every address is in its node's block
    assert sum(h.count() for h in ipam.list_handles()) == 96
