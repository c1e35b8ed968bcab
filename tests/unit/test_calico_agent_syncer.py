"""The agent's syncer on the in-memory datastore, and the small pure parts: nft rendering, device requests.

The syncer runs its real thread against the memory store (same contract as
etcd); tests write through the resource client and IPAM, as the CNI plugin
and other agents do, and wait for the snapshot to follow.
"""

from __future__ import annotations

import ipaddress
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from pycni.datastore import Compacted, KeyValue, Unavailable, Watch, open_datastore
from pycni.datastore.protocol import Datastore
from pycni.fabric.calico import routing
from pycni.fabric.calico.calculation import VxlanDevice
from pycni.fabric.calico.ipam_store import IPAM, AutoAssignArgs
from pycni.fabric.calico.model import Resource, new_resource
from pycni.fabric.calico.resources import ResourceClient
from pycni.fabric.calico.syncer import ClusterState, Syncer
from pycni.fabric.calico.tunnels import ipip_request, vxlan_mismatch, vxlan_spec
from pycni.net.overlay import VxlanInfo
from pycni.nft import calico as nat_rules


@pytest.fixture
def store() -> Iterator[Datastore]:
    store = open_datastore(memory=True)
    yield store
    store.close()


class Follower:
    """A started syncer and a way to wait for its snapshot to satisfy a condition."""

    def __init__(self, store: Datastore) -> None:
        self.updates = 0
        self._changed = threading.Condition()
        self.syncer = Syncer(store, self._on_update)
        self.syncer.start()

    def _on_update(self) -> None:
        with self._changed:
            self.updates += 1
            self._changed.notify_all()

    def until(self, predicate: Callable[[ClusterState], bool], timeout: float = 5.0) -> ClusterState:
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                state = self.syncer.snapshot()
                if state is not None and predicate(state):
                    return state
                left = deadline - time.monotonic()
                assert left > 0, f"the snapshot never got there: {state}"
                self._changed.wait(left)


@pytest.fixture
def follower(store: Datastore) -> Iterator[Follower]:
    follower = Follower(store)
    yield follower
    follower.syncer.stop()


def node(name: str, address: str) -> Resource:
    return new_resource("Node", name, {"bgp": {"ipv4Address": address}})


def test_listing_then_following_nodes_pools_blocks_and_affinities(store: Datastore, follower: Follower) -> None:
    client = ResourceClient(store)
    client.create(node("n1", "198.51.100.11/24"))
    state = follower.until(lambda s: "n1" in s.nodes)
    assert follower.syncer.in_sync and state.pools == {}
    client.create(new_resource("IPPool", "p", {"cidr": "10.244.0.0/16", "vxlanMode": "Always"}))
    state = follower.until(lambda s: "p" in s.pools)
    assert state.pools["p"].vxlan_mode == "Always"
    ipam = IPAM(store, client)
    v4, _ = ipam.auto_assign(AutoAssignArgs(hostname="n1", num4=1, handle_id="k8s-pod-network.a"))
    assert v4 is not None
    block = ipaddress.ip_network(f"{v4.ips[0].ip}/26", strict=False)
    state = follower.until(lambda s: block in s.blocks and s.confirmed_blocks("n1") == [block])
    assert state.blocks[block].host == "n1" and state.blocks[block].borrowed == ()
    client.delete("Node", "n1")
    state = follower.until(lambda s: "n1" not in s.nodes)
    assert block in state.blocks, "the block outlives the Node until IPAM releases it"


def test_borrowed_addresses_are_seen_with_their_borrower(store: Datastore, follower: Follower) -> None:
    client = ResourceClient(store)
    client.create(new_resource("IPPool", "p", {"cidr": "10.244.0.0/30", "blockSize": 30}))
    for name, address in (("n1", "198.51.100.11/24"), ("n2", "198.51.100.12/24")):
        client.create(node(name, address))
    ipam = IPAM(store, client)
    ipam.auto_assign(AutoAssignArgs(hostname="n1", num4=1, handle_id="h1", attrs={"node": "n1"}))
    v4, _ = ipam.auto_assign(AutoAssignArgs(hostname="n2", num4=1, handle_id="h2", attrs={"node": "n2"}))
    assert v4 is not None  # the pool's only block is n1's: n2 borrows
    borrowed = v4.ips[0].ip
    state = follower.until(lambda s: any(b.borrowed for b in s.blocks.values()))
    (info,) = state.blocks.values()
    assert info.host == "n1" and info.borrowed == ((borrowed, "n2"),)
    assert routing.bgp_inputs(state, "n2").borrowed == [borrowed]
    assert routing.bgp_inputs(state, "n1").borrowed == []
    assert list(routing.bgp_inputs(state, "n1").blocks) == [info.cidr]


def test_workload_endpoints_and_handles_do_not_wake_the_agent(store: Datastore, follower: Follower) -> None:
    client = ResourceClient(store)
    client.create(node("n1", "198.51.100.11/24"))
    follower.until(lambda s: "n1" in s.nodes)
    before = follower.updates
    store.put("/calico/ipam/v2/handle/k8s-pod-network.x", '{"block":{},"deleted":false}')
    wep = new_resource(
        "WorkloadEndpoint",
        "n1-k8s-pod-eth0",
        {"node": "n1", "orchestrator": "k8s", "pod": "pod", "endpoint": "eth0", "interfaceName": "cali0"},
        namespace="default",
    )
    client.create(wep)
    client.create(new_resource("IPPool", "p", {"cidr": "10.244.0.0/16"}))  # a fence: this one does wake it
    follower.until(lambda s: "p" in s.pools)
    assert follower.updates == before + 1


def test_a_value_that_does_not_decode_is_left_out_until_a_good_one_comes(store: Datastore, follower: Follower) -> None:
    key = "/calico/resources/v3/projectcalico.org/nodes/bad"
    store.put(key, "{not json")
    client = ResourceClient(store)
    client.create(node("good", "198.51.100.11/24"))
    state = follower.until(lambda s: "good" in s.nodes)
    assert "bad" not in state.nodes
    store.put(key, ResourceClient(store)._stored_value(node("bad", "198.51.100.99/24")))
    assert follower.until(lambda s: "bad" in s.nodes)


def test_a_listing_reflects_deletions_made_while_away(store: Datastore) -> None:
    client = ResourceClient(store)
    client.create(node("n1", "198.51.100.11/24"))
    syncer = Syncer(store, lambda: None)
    assert syncer.resync_now()
    client.delete("Node", "n1")
    client.create(node("n2", "198.51.100.12/24"))
    assert syncer.resync_now()
    state = syncer.snapshot()
    assert state is not None and set(state.nodes) == {"n2"}


class Flaky:
    """A datastore whose first ``list`` fails (etcd away) and whose first ``watch`` finds its history compacted."""

    def __init__(self, store: Datastore) -> None:
        self.store = store
        self.lists = 0
        self.watches = 0

    def list(self, prefix: str) -> tuple[list[KeyValue], int]:
        self.lists += 1
        if self.lists == 1:
            raise Unavailable("etcd at http://198.51.100.1:2379 is away")
        return self.store.list(prefix)

    def watch(self, prefix: str, since_revision: int) -> Watch:
        self.watches += 1
        if self.watches == 1:
            raise Compacted("compacted", since_revision, since_revision + 1)
        return self.store.watch(prefix, since_revision)


def test_the_syncer_relists_after_an_outage_and_a_compacted_history(store: Datastore) -> None:
    client = ResourceClient(store)
    client.create(node("n1", "198.51.100.11/24"))
    flaky = Flaky(store)
    woken = threading.Event()
    syncer = Syncer(flaky, woken.set)  # type: ignore[arg-type]
    syncer.start()
    try:
        deadline = time.monotonic() + 5
        while flaky.watches < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert flaky.lists == 3 and flaky.watches == 2, "failed list, list, compacted watch, list, watch"
        assert syncer.in_sync and syncer.outages == 1
        client.create(node("n2", "198.51.100.12/24"))
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            state = syncer.snapshot()
            if state is not None and "n2" in state.nodes:
                break
            time.sleep(0.02)
        assert state is not None and set(state.nodes) == {"n1", "n2"}
    finally:
        syncer.stop()


# -- nft rendering ----------------------------------------------------------------------

GOLDEN_TABLE = """\
table ip calico-node {
\tset cali40all-ipam-pools {
\t\ttype ipv4_addr
\t\tflags interval
\t\telements = { 10.244.0.0/16, 10.250.0.0/16 }
\t}
\tset cali40masq-ipam-pools {
\t\ttype ipv4_addr
\t\tflags interval
\t\telements = { 10.244.0.0/16 }
\t}
\tchain nat-POSTROUTING {
\t\ttype nat hook postrouting priority srcnat; policy accept;
\t\tjump nat-cali-nat-outgoing
\t}
\tchain nat-cali-nat-outgoing {
\t\tip saddr @cali40masq-ipam-pools ip daddr != @cali40all-ipam-pools masquerade fully-random \
comment "cali:pycni-nat-outgoing; natOutgoing of Calico IP pools"
\t}
}
"""


def test_nat_outgoing_table_golden() -> None:
    pools = [ipaddress.IPv4Network("10.244.0.0/16"), ipaddress.IPv4Network("10.250.0.0/16")]
    assert nat_rules.render(pools, pools[:1]) == GOLDEN_TABLE
    assert nat_rules.transaction(pools, pools[:1]).startswith(
        "add table ip calico-node\ndelete table ip calico-node\ntable ip calico-node {"
    )


def test_empty_sets_have_no_elements_line() -> None:
    assert "elements" not in nat_rules.render([], [])


# -- device requests ------------------------------------------------------------------------


def test_tunl0_request() -> None:
    assert ipip_request("tunl0", 1480) == {"ifname": "tunl0", "kind": "ipip", "mtu": 1480}
    assert ipip_request("tunl0", 0) == {"ifname": "tunl0", "kind": "ipip"}


DESIRED = VxlanDevice(
    vni=4096,
    port=4789,
    local=ipaddress.IPv4Address("198.51.100.11"),
    parent="eth0",
    mac="66:00:00:00:00:01",
    address=ipaddress.IPv4Address("10.244.1.0"),
    mtu=1450,
)


def existing(**changes: object) -> VxlanInfo:
    base: dict[str, object] = {
        "index": 5,
        "name": "vxlan.calico",
        "kind": "vxlan",
        "mac": "66:00:00:00:00:01",
        "mtu": 1450,
        "up": True,
        "vni": 4096,
        "local": "198.51.100.11",
        "link_index": 2,
        "port": 4789,
        "learning": False,
    }
    base.update(changes)
    return VxlanInfo(**base)


def test_vxlan_spec_is_felixs_device() -> None:
    spec = vxlan_spec(DESIRED, 2)
    assert (spec.name, spec.vni, spec.port, spec.local, spec.link_index) == (
        "vxlan.calico",
        4096,
        4789,
        "198.51.100.11",
        2,
    )
    assert not spec.learning and spec.mtu == 1450 and spec.mac == "66:00:00:00:00:01"


@pytest.mark.parametrize(
    "changes,reason",
    [
        ({}, ""),
        ({"mtu": 1500, "mac": "02:00:00:00:00:09", "up": False}, ""),  # fixed in place
        ({"vni": 1}, "VNI 1 instead of 4096"),
        ({"port": 8472}, "port 8472 instead of 4789"),
        ({"local": "198.51.100.99"}, "local address 198.51.100.99 instead of 198.51.100.11"),
        ({"link_index": 3}, "parent device 3 instead of 2"),
        ({"learning": True}, "learning True instead of False"),
        ({"kind": "bridge"}, "type bridge instead of vxlan"),
    ],
)
def test_what_makes_an_existing_device_unusable(changes: dict[str, object], reason: str) -> None:
    assert vxlan_mismatch(vxlan_spec(DESIRED, 2), existing(**changes)) == reason
