"""The policy manager on the in-memory nftables (:mod:`pycni.nft.fake`): objects written through the datastore
clients as calicoctl writes them, then each sync compared with the table rendered for the node.

A relabelled pod on another node changes set elements only; adding and deleting a policy adds and
removes its chains; a change that renders the same table (or nothing new) writes nothing; start-up
creates the fail-closed skeleton, or keeps a table an earlier agent left until the first sync
replaces it in one transaction.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from pycni.datastore import Datastore
from pycni.datastore.memory import MemoryDatastore
from pycni.fabric.calico import policy_state
from pycni.fabric.calico.kinds import KUBERNETES_KINDS
from pycni.fabric.calico.model import decode_resource, new_resource
from pycni.fabric.calico.policy_manager import Counts, PolicyManager, recreate, skeleton
from pycni.fabric.calico.policy_state import PREFIXES, build
from pycni.fabric.calico.resources import KubernetesObjectClient, ResourceClient, kubernetes_object
from pycni.nft.fake import FakeRuleset
from pycni.nft.objects import Chain, Table, Transaction
from pycni.policy import nft_names
from pycni.policy.match import Packet

NODE = "node-1"


def put(store: Datastore, document: dict[str, Any]) -> None:
    """As ``calicoctl apply`` stores it: a Kubernetes stand-in or a v3 resource."""
    obj = kubernetes_object(document)
    if obj is not None:
        KubernetesObjectClient(store).apply(obj)
    else:
        ResourceClient(store).apply(decode_resource(document))


def endpoint(store: Datastore, pod: str, ip: str, node: str = NODE, ns: str = "x") -> None:
    spec = {
        "orchestrator": "k8s",
        "node": node,
        "pod": pod,
        "endpoint": "eth0",
        "interfaceName": f"cali{pod}",
        "ipNetworks": [f"{ip}/32"],
        "profiles": [f"kns.{ns}"],
    }
    ResourceClient(store).apply(new_resource("WorkloadEndpoint", "", spec, namespace=ns))


def pod(name: str, labels: dict[str, str], node: str = NODE, ns: str = "x") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "spec": {"nodeName": node, "containers": [{"name": "c"}]},
    }


ALLOW_FROM_CLIENT = {
    "apiVersion": "networking.k8s.io/v1",
    "kind": "NetworkPolicy",
    "metadata": {"name": "web-from-client", "namespace": "x"},
    "spec": {
        "podSelector": {"matchLabels": {"app": "web"}},
        "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "client"}}}], "ports": [{"port": 80}]}],
    },
}


class Node:
    def __init__(self, store: Datastore) -> None:
        self.store = store
        self.kernel = FakeRuleset()
        self.transactions: list[Transaction] = []
        self.manager = PolicyManager(
            store, NODE, apply=self._apply, holds=self.kernel.holds, listing=self.kernel.listing
        )

    def _apply(self, tx: Transaction) -> None:
        self.kernel.apply(tx)
        self.transactions.append(tx)

    def keys(self) -> list[Any]:
        return [kv for prefix in PREFIXES for kv in self.store.list(prefix)[0]]

    def sync(self) -> bool:
        return self.manager.sync(self.keys())

    def held(self) -> Table:
        table = self.kernel.table(nft_names.FAMILY, nft_names.TABLE)
        assert table is not None
        return table


@pytest.fixture
def node() -> Iterator[Node]:
    store = MemoryDatastore()
    ResourceClient(store).ensure_initialized("test", "k8s")
    put(store, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x"}})
    for name, ip, where, labels in (
        ("web", "10.244.0.2", NODE, {"app": "web"}),
        ("client", "10.244.0.3", NODE, {"role": "client"}),
        ("far", "10.244.1.2", "node-2", {"role": "other"}),
    ):
        endpoint(store, name, ip, where)
        put(store, pod(name, labels, where))
    made = Node(store)
    made.manager.take_over()
    yield made
    store.close()


def test_skeleton_then_the_cluster(node: Node) -> None:
    assert node.held() == skeleton()
    assert "drop" in node.held().chains[nft_names.TO_DISPATCH].rules[-1], "unknown cali* dropped from the start"
    put(node.store, ALLOW_FROM_CLIENT)
    assert node.sync()
    inputs = build(node.keys(), NODE, ResourceClient(node.store))
    assert inputs.interfaces == {"caliweb": "x/web", "caliclient": "x/client"}, "only this node's endpoints"
    assert node.held() == node.manager.table
    assert set(node.held().maps[nft_names.TO_DISPATCH].elements) == {'"caliweb"', '"caliclient"'}
    evaluator = inputs.state.evaluator()
    assert evaluator.evaluate(Packet.make("10.244.0.3", "10.244.0.2", "TCP", 80)).allowed
    assert not evaluator.evaluate(Packet.make("10.244.1.2", "10.244.0.2", "TCP", 80)).allowed
    assert any(name.startswith("cali-pi-") for name in node.held().chains), "the policy's chain"


def test_nothing_new_writes_nothing(node: Node) -> None:
    put(node.store, ALLOW_FROM_CLIENT)
    assert node.sync()
    writes = len(node.transactions)
    assert not node.sync(), "the same keys"
    labels = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "unused", "labels": {"a": "b"}}}
    put(node.store, labels)  # a namespace no endpoint is in: the same table
    assert not node.sync()
    assert len(node.transactions) == writes


def test_a_relabel_elsewhere_changes_only_set_elements(node: Node) -> None:
    put(node.store, ALLOW_FROM_CLIENT)
    node.sync()
    before = node.held()
    put(node.store, pod("far", {"role": "client"}, "node-2"))  # the pod on the other node becomes a client
    assert node.sync()
    tx = node.transactions[-1]
    changed = [op for op in tx.ops if op.kind != "table"]
    assert changed and all(op.kind == "element" and op.verb == "add" for op in changed), tx.render()
    assert "10.244.1.2" in tx.render()
    after = node.held()
    assert after.chains == before.chains and after.maps == before.maps
    assert after == node.manager.table


def test_policy_add_and_delete(node: Node) -> None:
    node.sync()
    plain = node.held()
    put(node.store, ALLOW_FROM_CLIENT)
    node.sync()
    added = set(node.held().chains) - set(plain.chains)
    assert any(name.startswith("cali-pi-") for name in added), added
    KubernetesObjectClient(node.store).delete(
        KUBERNETES_KINDS[("networking.k8s.io/v1", "NetworkPolicy")], "web-from-client", "x"
    )
    assert node.sync()
    assert node.held() == plain, "deleting the policy gives back the table without it"


def test_start_keeps_an_earlier_agents_table_until_the_first_sync_replaces_it_in_one_transaction(node: Node) -> None:
    earlier = Table(nft_names.FAMILY, nft_names.TABLE, {"leftover": Chain("leftover", ("accept",))})
    node.kernel.apply(recreate(earlier))
    writes = len(node.transactions)
    restarted = PolicyManager(node.store, NODE, apply=node._apply, holds=node.kernel.holds, listing=node.kernel.listing)
    restarted.take_over()
    assert len(node.transactions) == writes and node.held() == earlier, "nothing opens or closes while starting"
    assert restarted.sync(node.keys())
    assert len(node.transactions) == writes + 1 and node.held() == restarted.table != earlier
    assert "leftover" not in node.held().chains


def test_remove_deletes_the_table_even_one_an_earlier_agent_wrote(node: Node) -> None:
    restarted = PolicyManager(node.store, NODE, apply=node._apply, holds=node.kernel.holds, listing=node.kernel.listing)
    restarted.take_over()  # the fixture's skeleton is kept, not known
    assert restarted.remove() and not node.kernel.holds(nft_names.FAMILY, nft_names.TABLE)
    assert not restarted.remove(), "nothing to remove the second time"


def _sample(metric: Any, suffix: str) -> float:
    return float(next(s.value for s in metric.collect()[0].samples if s.name.endswith(suffix)))


def test_metrics_count_what_was_written_and_what_the_table_holds(node: Node) -> None:
    put(node.store, ALLOW_FROM_CLIENT)
    node.sync()
    put(node.store, pod("far", {"role": "client"}, "node-2"))
    node.sync()
    metrics = node.manager.metrics
    assert _sample(metrics.transactions, "_total") == len(node.transactions) == 3, "skeleton, policy, relabel"
    assert _sample(metrics.operations, "_count") == 3
    assert _sample(metrics.operations, "_sum") == sum(len(tx) for tx in node.transactions)
    held = Counts.of(node.held())
    objects = {s.labels["kind"]: s.value for s in metrics.objects.collect()[0].samples}
    assert objects == {
        "endpoint": 2,
        "chain": held.chains,
        "rule": held.rules,
        "set": held.sets,
        "element": held.elements,
    }
    assert _sample(metrics.update_duration, "_count") == 2, "two syncs wrote"


def test_the_decode_cache_decodes_only_what_changed_and_builds_the_same(
    node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    put(node.store, ALLOW_FROM_CLIENT)
    decoded: list[str] = []
    real = policy_state.decode

    def counting(kv: Any, decoder: ResourceClient) -> policy_state.Decoded:
        decoded.append(kv.key)
        return real(kv, decoder)

    monkeypatch.setattr(policy_state, "decode", counting)
    cache = policy_state.DecodeCache()
    decoder = ResourceClient(node.store)
    first = build(node.keys(), NODE, decoder, cache=cache)
    everything = len(decoded)
    assert everything == len(cache) > 5
    again = build(node.keys(), NODE, decoder, cache=cache)
    assert len(decoded) == everything, "nothing changed: nothing decoded"
    assert again.state.endpoints == first.state.endpoints and again.interfaces == first.interfaces

    put(node.store, pod("far", {"role": "client"}, "node-2"))
    relabelled = build(node.keys(), NODE, decoder, cache=cache)
    assert (
        decoded[everything:] == [k for k in decoded[everything:] if k.endswith("/far")]
        and len(decoded) == everything + 1
    )
    fresh = build(node.keys(), NODE, decoder)
    assert relabelled.state.endpoints == fresh.state.endpoints
    assert relabelled.state.k8s_policies == fresh.state.k8s_policies and relabelled.interfaces == fresh.interfaces

    KubernetesObjectClient(node.store).delete(
        KUBERNETES_KINDS[("networking.k8s.io/v1", "NetworkPolicy")], "web-from-client", "x"
    )
    build(node.keys(), NODE, decoder, cache=cache)
    assert len(cache) == everything - 1, "a deleted key is forgotten"


def test_drift_is_found_and_repaired_in_one_transaction(node: Node) -> None:
    put(node.store, ALLOW_FROM_CLIENT)
    node.sync()
    assert not node.manager.check_drift(), "nothing changed it"
    wanted = node.held()
    chain = next(name for name in wanted.chains if name.startswith("cali-pi-"))
    meddling = Transaction(nft_names.FAMILY, nft_names.TABLE)
    meddling.flush_chain(chain)  # someone's nft flush chain
    node.kernel.apply(meddling)
    assert node.held() != wanted
    writes = len(node.transactions)
    assert node.manager.check_drift()
    assert node.held() == wanted and len(node.transactions) == writes + 1
    assert _sample(node.manager.metrics.drift_repairs, "_total") == 1
    assert not node.manager.check_drift(), "repaired"
