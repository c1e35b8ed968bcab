"""Calico IPAM on a real etcd: concurrent nodes (threads and processes) never share an address.

Each "node" is a thread or a separate process with its own etcd client, as
separate hosts would be; they allocate at the same time from one pool with
small blocks, so they race for block claims and, once blocks run out, borrow
from each other. Afterwards every address is held once, every block and
handle is consistent, and ``etcdctl`` shows Calico's key layout. The measured
rate is printed (``-s`` shows it) for the report.
"""

from __future__ import annotations

import ipaddress
import json
import multiprocessing
import threading
import time
from collections import Counter
from collections.abc import Iterator

import pytest

from pycni.datastore.etcd import EtcdDatastore
from pycni.fabric.calico.ipam_check import check
from pycni.fabric.calico.ipam_store import IPAM, AutoAssignArgs
from pycni.fabric.calico.model import new_resource
from pycni.fabric.calico.resources import ResourceClient
from tests.support.etcd import EtcdServer, etcd_server

NODES = 4


@pytest.fixture(scope="module")
def etcd() -> Iterator[EtcdServer]:
    with etcd_server() as server:
        yield server


def setup_cluster(url: str, cidr: str, block_size: int, **ipam_config: object) -> None:
    store = EtcdDatastore([url], timeout=5)
    try:
        store.delete_prefix("/calico/")
        resources = ResourceClient(store)
        resources.ensure_initialized()
        resources.create(new_resource("IPPool", "default-ipv4-ippool", {"cidr": cidr, "blockSize": block_size}))
        for index in range(NODES):
            resources.create(
                new_resource("Node", f"node{index}", {"bgp": {"ipv4Address": f"198.51.100.{index + 1}/24"}})
            )
        if ipam_config:
            resources.create(new_resource("IPAMConfiguration", "default", ipam_config))
    finally:
        store.close()


def allocate(url: str, host: str, count: int, tag: str) -> list[str]:
    """One node's allocations, each with its own handle as the CNI plugin uses them."""
    store = EtcdDatastore([url], timeout=10)
    try:
        ipam = IPAM(store)
        got: list[str] = []
        for index in range(count):
            v4, _ = ipam.auto_assign(
                AutoAssignArgs(
                    hostname=host,
                    num4=1,
                    handle_id=f"k8s-pod-network.{tag}-{index}",
                    attrs={"node": host, "pod": f"{tag}-{index}"},
                )
            )
            assert v4 is not None and len(v4.ips) == 1, v4
            got.append(str(v4.ips[0].ip))
        return got
    finally:
        store.close()


def _process_worker(url: str, host: str, count: int, tag: str, queue: multiprocessing.Queue[list[str] | str]) -> None:
    try:
        queue.put(allocate(url, host, count, tag))
    except BaseException as exc:  # noqa: BLE001 - sent to the parent
        queue.put(f"{type(exc).__name__}: {exc}")


def verify(url: str, addresses: list[str], expected: int) -> IPAM:
    duplicates = [a for a, n in Counter(addresses).items() if n > 1]
    assert not duplicates, f"addresses handed out twice: {duplicates[:5]}"
    assert len(addresses) == expected
    store = EtcdDatastore([url], timeout=5)
    ipam = IPAM(store)
    blocks = ipam.list_blocks()
    held = [str(a) for b in blocks for a, _ in b.in_use()]
    assert sorted(held, key=ipaddress.ip_address) == sorted(addresses, key=ipaddress.ip_address)
    for block in blocks:
        assert block.check() == []
        affinity = ipam.store.get(f"/calico/ipam/v2/host/{block.host}/ipv4/block/{str(block.cidr).replace('/', '-')}")
        assert affinity is not None and json.loads(affinity.value) == {"state": "confirmed", "deleted": False}
    handles = ipam.list_handles()
    assert len(handles) == expected and all(h.count() == 1 for h in handles)
    _, found = check(ipam)
    assert len(found.leaked) == expected  # no WorkloadEndpoints exist: every allocation is a "leak" to check
    assert found.empty_handles == [] and found.missing_handles == [] and found.invalid_blocks == []
    return ipam


def test_threads_as_nodes_race_without_duplicates(etcd: EtcdServer) -> None:
    setup_cluster(etcd.url, "10.244.0.0/22", 28)  # 64 blocks of 16
    per_node = 40
    results: list[str] = []
    errors: list[str] = []
    lock = threading.Lock()

    def node(index: int) -> None:
        try:
            got = allocate(etcd.url, f"node{index}", per_node, f"t{index}")
            with lock:
                results.extend(got)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(f"{type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=node, args=(i,)) for i in range(NODES)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=240)
    elapsed = time.monotonic() - started
    assert not errors, errors
    ipam = verify(etcd.url, results, NODES * per_node)
    rate = len(results) / elapsed
    print(f"\netcd, {NODES} nodes as threads: {len(results)} allocations in {elapsed:.1f} s = {rate:.0f}/s")
    for block in ipam.list_blocks():  # blocks were plentiful: nobody had to borrow
        assert {a.secondary["node"] for _, a in block.in_use() if a.secondary} == {block.host}
    ipam.store.close()


def test_processes_as_nodes_race_for_a_small_pool_and_borrow(etcd: EtcdServer) -> None:
    # 8 blocks of 8 addresses; node0 wants 30 (4 blocks), the others 10 each (2 blocks each): 10 blocks'
    # worth of demand for 8 blocks, so blocks run out and somebody must borrow from another node's block.
    setup_cluster(etcd.url, "10.245.0.0/26", 29)
    wants = [30, 10, 10, 10]
    context = multiprocessing.get_context("spawn")
    queue: multiprocessing.Queue[list[str] | str] = context.Queue()
    workers = [
        context.Process(target=_process_worker, args=(etcd.url, f"node{i}", wants[i], f"p{i}", queue))
        for i in range(NODES)
    ]
    started = time.monotonic()
    for worker in workers:
        worker.start()
    answers = [queue.get(timeout=240) for _ in workers]
    elapsed = time.monotonic() - started
    for worker in workers:
        worker.join(timeout=30)
    failures = [a for a in answers if isinstance(a, str)]
    assert not failures, failures
    results = [address for answer in answers if isinstance(answer, list) for address in answer]
    ipam = verify(etcd.url, results, sum(wants))
    print(f"\netcd, {NODES} nodes as processes: {len(results)} allocations in {elapsed:.1f} s (incl. start-up)")
    blocks = ipam.list_blocks()
    assert len(blocks) == 8 and all(b.host for b in blocks)  # every block claimed, each by one node
    borrowed = [a for b in blocks for _, a in b.in_use() if a.secondary and a.secondary["node"] != b.host]
    assert borrowed, "the pool ran out of blocks, so some node must have borrowed"
    ipam.store.close()


def test_calico_layout_seen_by_etcdctl(etcd: EtcdServer) -> None:
    setup_cluster(etcd.url, "10.246.0.0/16", 26)
    store = EtcdDatastore([etcd.url], timeout=5)
    ipam = IPAM(store)
    v4, _ = ipam.auto_assign(
        AutoAssignArgs(hostname="node1", num4=1, handle_id="k8s-pod-network.abc", attrs={"node": "node1"})
    )
    assert v4 is not None
    block = ipaddress.ip_network(f"{v4.ips[0].ip}/26", strict=False)
    segment = str(block).replace("/", "-")
    keys = etcd.etcdctl("get", "--prefix", "/calico/ipam/v2/", "--keys-only").stdout.split()
    assert keys == [
        f"/calico/ipam/v2/assignment/ipv4/block/{segment}",
        "/calico/ipam/v2/handle/k8s-pod-network.abc",
        f"/calico/ipam/v2/host/node1/ipv4/block/{segment}",
    ]
    handle = etcd.etcdctl("get", "/calico/ipam/v2/handle/k8s-pod-network.abc", "--print-value-only").stdout.strip()
    assert handle == f'{{"block":{{"{block}":1}},"deleted":false}}'
    value = json.loads(etcd.etcdctl("get", keys[0], "--print-value-only").stdout)
    assert value["cidr"] == str(block) and value["affinity"] == "host:node1" and value["allocations"][0] == 0
    ipam.release_by_handle("k8s-pod-network.abc")
    assert etcd.etcdctl("get", "/calico/ipam/v2/handle/k8s-pod-network.abc").stdout == ""
    store.close()
