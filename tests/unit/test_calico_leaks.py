"""The IPAM leak GC: the pure decisions (LeakTracker) and one node's pass on a real in-memory IPAM."""

from __future__ import annotations

import ipaddress
import json

from pycni.datastore.memory import MemoryDatastore
from pycni.fabric.calico.ipam import handle_key
from pycni.fabric.calico.ipam_check import check
from pycni.fabric.calico.ipam_store import IPAM, AutoAssignArgs
from pycni.fabric.calico.leak_gc import LeakCollector
from pycni.fabric.calico.leaks import Allocation, LeakTracker, Scan
from pycni.fabric.calico.model import new_resource
from pycni.fabric.calico.resources import ResourceClient

B1 = ipaddress.ip_network("10.244.0.0/26")
B2 = ipaddress.ip_network("10.244.0.64/26")
GRACE = 10.0


def alloc(ip: str, handle: str, sequence: int = 1, **kw: bool) -> Allocation:
    return Allocation(ip, handle, B1, sequence, **kw)


def test_a_leak_is_released_only_on_a_later_scan_after_the_grace_period() -> None:
    tracker = LeakTracker(GRACE)
    scan = Scan([alloc("10.244.0.1", "h1")])
    first = tracker.observe(scan, now=0.0)
    assert first.release == [] and first.candidates == 1
    assert tracker.observe(scan, now=GRACE).release == [], "exactly the grace period is not more than it"
    assert tracker.observe(scan, now=GRACE + 0.1).release == [alloc("10.244.0.1", "h1")]


def test_a_leak_seen_in_use_again_starts_afresh() -> None:
    tracker = LeakTracker(GRACE)
    scan = Scan([alloc("10.244.0.1", "h1")])
    tracker.observe(scan, now=0.0)
    tracker.observe(Scan(scan.allocations, in_use=frozenset({"10.244.0.1"})), now=5.0)  # the pod came back
    assert tracker.observe(scan, now=11.0).release == [], "its clock restarted at 11 s"
    assert tracker.observe(scan, now=21.5).release != []


def test_a_reused_address_is_a_new_allocation() -> None:
    tracker = LeakTracker(GRACE)
    tracker.observe(Scan([alloc("10.244.0.1", "h1", sequence=1)]), now=0.0)
    again = Scan([alloc("10.244.0.1", "h1", sequence=2)])  # released and handed out again meanwhile
    assert tracker.observe(again, now=20.0).release == []


def test_all_or_none_per_handle() -> None:
    tracker = LeakTracker(GRACE)
    a, b = alloc("10.244.0.1", "h1"), alloc("10.244.0.2", "h1")
    used = Scan([a, b], in_use=frozenset({"10.244.0.2"}))
    tracker.observe(used, now=0.0)
    assert tracker.observe(used, now=20.0).release == [], "one of h1's addresses is in use: h1 is kept whole"
    both = Scan([a, b])
    tracker.observe(both, now=20.0)
    assert tracker.observe(both, now=25.0).release == [], "b's leak is younger than the grace period"
    assert tracker.observe(both, now=30.5).release == [a, b]


def test_tunnel_and_non_pod_allocations_are_valid() -> None:
    """Calico's invariants: tunnel addresses live with their node; missing pod/namespace attributes mean valid."""
    tracker = LeakTracker(GRACE)
    scan = Scan([alloc("10.244.0.1", "vxlan-tunnel-addr-n1", tunnel=True), alloc("10.244.0.2", "c1", pod=False)])
    tracker.observe(scan, now=0.0)
    verdict = tracker.observe(scan, now=100.0)
    assert verdict.release == [] and verdict.candidates == 0


def test_a_zero_grace_period_never_confirms() -> None:
    tracker = LeakTracker(0.0)
    scan = Scan([alloc("10.244.0.1", "h1")], blocks={B1: True, B2: True}, orphan_handles={"h9": 7})
    tracker.observe(scan, now=0.0)
    verdict = tracker.observe(scan, now=1e6)
    assert (verdict.release, verdict.blocks, verdict.handles, verdict.candidates) == ([], [], [], 1)


def test_empty_blocks_go_after_two_empty_scans_and_the_node_keeps_one() -> None:
    tracker = LeakTracker(GRACE)
    tracker.observe(Scan(blocks={B1: True, B2: True}), now=0.0)
    assert tracker.observe(Scan(blocks={B1: True, B2: True}), now=11.0).blocks == [B2], "B1, the lowest, is kept"
    tracker = LeakTracker(GRACE)
    tracker.observe(Scan(blocks={B1: False, B2: True}), now=0.0)
    tracker.observe(Scan(blocks={B1: False, B2: False}), now=5.0)  # a pod used B2 meanwhile
    tracker.observe(Scan(blocks={B1: False, B2: True}), now=6.0)
    assert tracker.observe(Scan(blocks={B1: False, B2: True}), now=12.0).blocks == []
    assert tracker.observe(Scan(blocks={B1: False, B2: True}), now=16.5).blocks == [B2]
    assert tracker.observe(Scan(blocks={B1: True}), now=100.0).blocks == [], "a node's only block stays"


def test_an_orphaned_handle_goes_only_at_an_unchanged_revision() -> None:
    tracker = LeakTracker(GRACE)
    tracker.observe(Scan(orphan_handles={"h1": 5, "h2": 8}), now=0.0)
    verdict = tracker.observe(Scan(orphan_handles={"h1": 5, "h2": 9}), now=11.0)  # h2 was written meanwhile
    assert verdict.handles == [("h1", 5)]


# -- the pass on a real IPAM (in-memory datastore) -------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def cluster() -> tuple[IPAM, ResourceClient]:
    store = MemoryDatastore()
    resources = ResourceClient(store)
    resources.create(new_resource("IPPool", "p", {"cidr": "10.244.0.0/24", "vxlanMode": "Always"}))
    for name in ("n1", "n2"):
        resources.create(new_resource("Node", name, {}))
    return IPAM(store, resources), resources


def pod(ipam: IPAM, resources: ResourceClient, node: str, name: str, endpoint: bool = True) -> str:
    attrs = {"node": node, "pod": name, "namespace": "default"}
    v4, _ = ipam.auto_assign(AutoAssignArgs(hostname=node, num4=1, handle_id=f"net.{name}", attrs=attrs))
    assert v4 is not None
    ip = str(v4.ips[0].ip)
    if endpoint:
        spec = {"orchestrator": "k8s", "node": node, "pod": name, "endpoint": "eth0", "interfaceName": "cali0"}
        resources.create(
            new_resource("WorkloadEndpoint", "", {**spec, "ipNetworks": [f"{ip}/32"]}, namespace="default")
        )
    return ip


def test_the_pass_releases_what_ipam_check_names_for_its_node_only() -> None:
    ipam, resources = cluster()
    tunnel = ipam.assign_tunnel_address("n1")
    live = pod(ipam, resources, "n1", "live")
    leak = pod(ipam, resources, "n1", "dead", endpoint=False)
    theirs = pod(ipam, resources, "n2", "other", endpoint=False)  # n2's agent's business
    orphan = "net.half-made"  # an ADD killed between counting the handle and writing the block
    counted = json.dumps({"block": {str(ipaddress.ip_network(f"{live}/26", strict=False)): 1}, "deleted": False})
    ipam.store.put(handle_key(orphan), counted)
    _, before = check(ipam)
    assert {ip for ip, _ in before.leaked} == {leak, theirs, str(tunnel.ip)} and before.empty_handles == [orphan]

    clock = Clock()
    gc = LeakCollector(ipam, "n1", grace=4.0, clock=clock)
    assert gc.interval == 2.0
    assert gc.run_once().candidates == 1
    clock.now = 4.5
    verdict = gc.run_once()
    assert [a.ip for a in verdict.release] == [leak] and verdict.handles != [] and gc.released == 1

    _, after = check(ipam)
    assert {ip for ip, _ in after.leaked} == {theirs, str(tunnel.ip)}, (
        "n1's leak and orphan gone; n2's and tunnels kept"
    )
    assert after.empty_handles == [] and ipam.handle("net.dead") is None and ipam.handle("net.live") is not None
    assert ipam.attributes_for(ipaddress.ip_address(live)).handle == "net.live"


def test_the_pass_never_releases_an_address_handed_out_again() -> None:
    ipam, resources = cluster()
    leak = pod(ipam, resources, "n1", "dead", endpoint=False)
    clock = Clock()
    gc = LeakCollector(ipam, "n1", grace=4.0, clock=clock)
    gc.run_once()
    ipam.release_by_handle("net.dead")  # its DEL came late; the same address goes to a new ADD of the pod
    address = ipaddress.ip_address(leak)
    ipam.assign_ip(address, "n1", "net.dead", {"node": "n1", "pod": "dead", "namespace": "default"})
    clock.now = 5.0
    assert gc.run_once().release == [], "a new allocation (new sequence number): its clock starts now"
    assert ipam.attributes_for(address).handle == "net.dead" and ipam.handle("net.dead") is not None
    clock.now = 9.5
    assert [a.ip for a in gc.run_once().release] == [leak], "still unused by any endpoint a grace period later"
