"""The policy manager's thread following a datastore (in memory) onto the in-memory nftables.

Start installs the skeleton before anything is listed; the first listing
brings the cluster in; a Pod relabelled on another node is one more
transaction of set elements; keys the policy engine does not read (an IPAM
block) and a change that renders the same table write nothing; stop ends the
threads.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest

from pycni.datastore.memory import MemoryDatastore
from pycni.fabric.calico.policy_manager import PolicyManager, skeleton
from pycni.fabric.calico.resources import ResourceClient
from pycni.nft import NftError
from pycni.nft.fake import FakeRuleset
from pycni.nft.objects import Transaction, create
from pycni.policy import nft_names
from tests.unit.test_policy_manager import ALLOW_FROM_CLIENT, NODE, endpoint, pod, put


def wait_for(predicate: Callable[[], bool], what: str, within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        assert time.monotonic() < deadline, f"not within {within} s: {what}"
        time.sleep(0.01)


class Recorder:
    def __init__(self) -> None:
        self.kernel = FakeRuleset()
        self.transactions: list[Transaction] = []

    def __call__(self, tx: Transaction) -> None:
        self.kernel.apply(tx)
        self.transactions.append(tx)

    def text(self) -> str:
        return "".join(tx.render() for tx in self.transactions)


@pytest.fixture
def store() -> Iterator[MemoryDatastore]:
    made = MemoryDatastore()
    ResourceClient(made).ensure_initialized("test", "k8s")
    put(made, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x"}})
    for name, ip, where, labels in (
        ("web", "10.244.0.2", NODE, {"app": "web"}),
        ("client", "10.244.0.3", NODE, {"role": "client"}),
        ("far", "10.244.1.2", "node-2", {"role": "other"}),
    ):
        endpoint(made, name, ip, where)
        put(made, pod(name, labels, where))
    put(made, ALLOW_FROM_CLIENT)
    yield made
    made.close()


def test_the_thread_follows_the_datastore(store: MemoryDatastore) -> None:
    recorder = Recorder()
    ready: list[bool] = []
    manager = PolicyManager(
        store,
        NODE,
        apply=recorder,
        holds=recorder.kernel.holds,
        listing=recorder.kernel.listing,
        on_ready=lambda: ready.append(True),
    )
    manager.start()
    try:
        assert recorder.transactions[0].render() == create(skeleton()).render(), "closed from the start"
        wait_for(manager.in_sync.is_set, "in sync")
        assert ready == [True]
        table = recorder.kernel.table(nft_names.FAMILY, nft_names.TABLE)
        assert table == manager.table and table != skeleton()
        writes = len(recorder.transactions)

        put(store, pod("far", {"role": "client"}, "node-2"))
        wait_for(lambda: len(recorder.transactions) > writes, "the relabel written")
        relabel = recorder.transactions[-1]
        assert {op.kind for op in relabel.ops} == {"table", "element"} and "10.244.1.2" in relabel.render()
        writes = len(recorder.transactions)

        store.put("/calico/ipam/v2/assignment/ipv4/block/10.244.0.0-26", "{}")  # not policy's: not even read
        put(store, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "empty", "labels": {"a": "b"}}})
        put(store, pod("far", {"role": "client"}, "node-2"))  # the same labels again
        time.sleep(0.3)
        assert len(recorder.transactions) == writes, recorder.transactions[writes:]
    finally:
        manager.stop()
    assert not any(t.is_alive() for t in manager.follower._threads)


def test_a_refused_transaction_is_retried_as_one_recreate(store: MemoryDatastore) -> None:
    recorder = Recorder()
    refusals = [NftError("apply the policy table", "Error: Could not process rule: Device or resource busy")]

    def flaky(tx: Transaction) -> None:
        if len(recorder.transactions) == 1 and refusals:  # the first sync after the skeleton is refused
            raise refusals.pop()
        recorder(tx)

    manager = PolicyManager(store, NODE, apply=flaky, holds=recorder.kernel.holds, listing=recorder.kernel.listing)
    manager.retry = 0.1
    manager.start()
    try:
        wait_for(manager.in_sync.is_set, "in sync after the retry")
        assert not refusals and len(recorder.transactions) == 2
        retried = recorder.transactions[1]
        assert [op.verb for op in retried.ops[:2]] == ["add", "delete"], "the kernel's table was unknown: recreated"
        assert recorder.kernel.table(nft_names.FAMILY, nft_names.TABLE) == manager.table
    finally:
        manager.stop()


def test_drift_is_checked_on_time_while_the_datastore_keeps_changing(store: MemoryDatastore) -> None:
    """A busy cluster wakes the thread all the time; the drift check still runs every refresh interval."""
    recorder = Recorder()
    manager = PolicyManager(
        store, NODE, apply=recorder, holds=recorder.kernel.holds, listing=recorder.kernel.listing, refresh=0.5
    )
    manager.start()
    stop = threading.Event()

    def churn() -> None:  # a namespace relabelled every 20 ms: a wake each time, nothing to write
        index = 0
        while not stop.is_set():
            index += 1
            labels = {"n": str(index)}
            put(store, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "busy", "labels": labels}})
            time.sleep(0.02)

    writer = threading.Thread(target=churn, daemon=True)
    try:
        wait_for(manager.in_sync.is_set, "in sync")
        wanted = recorder.kernel.table(nft_names.FAMILY, nft_names.TABLE)
        writer.start()
        meddling = Transaction(nft_names.FAMILY, nft_names.TABLE)
        meddling.delete_table()
        recorder.kernel.apply(meddling)  # someone deletes the table
        wait_for(lambda: recorder.kernel.table(nft_names.FAMILY, nft_names.TABLE) == wanted, "the table rewritten")
    finally:
        stop.set()
        writer.join(5)
        manager.stop()
