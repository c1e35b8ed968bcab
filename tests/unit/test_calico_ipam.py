"""The pure IPAM block logic: Calico's JSON, FIFO reuse, handles, keys, block candidates, and a model check.

The hypothesis state machine drives one block through any sequence of
auto-assign, assign, release (by address and by handle) and cooldown
collection, and after every step checks the block against a plain model:
no address is held twice, the free list is exactly the free slots, FIFO
order is kept, attributes stay compact, and the JSON round-trips.
"""

from __future__ import annotations

import ipaddress
import json
from datetime import UTC, datetime, timedelta

import pytest

from pycni.fabric.calico.ipam import (
    AddressInUse,
    AllocationBlock,
    Attribute,
    BadHandle,
    BlockAffinity,
    BlockError,
    Handle,
    IPAMConfig,
    affinity_key,
    block_key,
    fnv32,
    handle_key,
    parse_affinity_key,
    parse_block_key,
    random_blocks,
)

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import strategies as st  # noqa: E402
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule  # noqa: E402

from tests.support import strategies  # noqa: E402, F401 - pycni's hypothesis profile

NET = ipaddress.ip_network("10.65.79.0/26")
ME = "host:node1"


def ip(text: str) -> ipaddress.IPv4Address:
    return ipaddress.IPv4Address(text)


def test_keys_as_libcalico_go() -> None:
    assert block_key(NET) == "/calico/ipam/v2/assignment/ipv4/block/10.65.79.0-26"
    assert affinity_key("node1", NET) == "/calico/ipam/v2/host/node1/ipv4/block/10.65.79.0-26"
    assert handle_key("k8s-pod-network.abc") == "/calico/ipam/v2/handle/k8s-pod-network.abc"
    six = ipaddress.ip_network("fd00:10::/122")
    assert block_key(six) == "/calico/ipam/v2/assignment/ipv6/block/fd00:10::-122"
    assert parse_block_key(block_key(six)) == six
    assert parse_affinity_key(affinity_key("n-1.example", NET)) == ("host", "n-1.example", NET)
    assert parse_block_key("/calico/ipam/v2/handle/x") is None


def test_new_block_and_first_allocation_json() -> None:
    block = AllocationBlock.new(NET, ME)
    block.sequence_number = 1704067200000000000
    assert json.loads(block.to_json()) == {
        "cidr": "10.65.79.0/26",
        "affinity": "host:node1",
        "allocations": [None] * 64,
        "unallocated": list(range(64)),
        "attributes": None,
        "sequenceNumber": 1704067200000000000,
        "sequenceNumberForAllocation": {},
        "deleted": False,
    }
    attrs = {"namespace": "x", "node": "node1", "pod": "a", "timestamp": "2024-01-01 00:00:00 +0000 UTC"}
    assert block.auto_assign(1, "k8s-pod-network.4d5e", attrs, ME, True) == [ip("10.65.79.0")]
    text = block.to_json()
    assert text.startswith('{"cidr":"10.65.79.0/26","affinity":"host:node1","allocations":[0,null,')
    assert (
        '"unallocated":[1,2,3,' in text
        and '"attributes":[{"handle_id":"k8s-pod-network.4d5e","secondary":{"namespace":"x","node":"node1",'
        '"pod":"a","timestamp":"2024-01-01 00:00:00 +0000 UTC"}}],"sequenceNumber":1704067200000000000,'
        '"sequenceNumberForAllocation":{"0":1704067200000000000},"deleted":false}'
        in text
    )
    again = AllocationBlock.from_json(text)
    assert again == block and again.to_json() == text


def test_fifo_reuse_and_attribute_sharing() -> None:
    block = AllocationBlock.new(ipaddress.ip_network("10.0.0.0/29"), ME)
    first = block.auto_assign(3, "h1", {"pod": "a"}, ME, True)
    assert first == [ip("10.0.0.0"), ip("10.0.0.1"), ip("10.0.0.2")]
    assert block.allocations[:3] == [0, 0, 0] and len(block.attributes) == 1  # one attribute shared
    block.release([ip("10.0.0.1")])
    assert block.unallocated == [3, 4, 5, 6, 7, 1]  # released goes to the tail
    assert block.auto_assign(5, "h2", None, ME, True)[-1] == ip("10.0.0.7")
    assert block.auto_assign(1, "h3", None, ME, True) == [ip("10.0.0.1")]  # longest-free last
    assert block.auto_assign(1, "h4", None, ME, True) == []


def test_assign_release_handles_and_errors() -> None:
    block = AllocationBlock.new(ipaddress.ip_network("10.0.0.0/30"), ME)
    block.assign(ip("10.0.0.2"), "h", None, ME, True)
    with pytest.raises(AddressInUse):
        block.assign(ip("10.0.0.2"), "h", None, ME, True)
    with pytest.raises(BlockError, match="not in block"):
        block.assign(ip("10.0.1.0"), "h", None, ME, True)
    with pytest.raises(BlockError, match="does not match"):
        block.auto_assign(1, "h", None, "host:other", True)
    assert block.auto_assign(1, "h", None, "host:other", False) == [ip("10.0.0.0")]  # borrowing skips the check
    with pytest.raises(BadHandle):
        block.release([ip("10.0.0.2")], handle_id="someone-else")
    seq = block.sequence_for(2)
    with pytest.raises(BadHandle, match="sequence number"):
        block.release([ip("10.0.0.2")], sequence=seq + 1)
    assert block.release([ip("10.0.0.2"), ip("10.0.0.3")], handle_id="h") == ([ip("10.0.0.3")], {"h": 1})
    assert block.ips_by_handle("h") == [ip("10.0.0.0")]
    assert block.release_by_handle("h") == 1 and block.empty() and block.attributes == []


def test_cooldown_holds_addresses_until_collected() -> None:
    block = AllocationBlock.new(ipaddress.ip_network("10.0.0.0/30"), ME)
    block.auto_assign(2, "h", None, ME, True)
    now = datetime(2024, 1, 1, tzinfo=UTC)
    block.release([ip("10.0.0.0")], cooldown_seconds=60, now=now)
    attribute = block.attribute_for(ip("10.0.0.0"))
    assert attribute is not None and attribute.released_at == "2024-01-01T00:00:00Z"
    assert block.unallocated == [2, 3]
    assert not block.garbage_collect(60, now + timedelta(seconds=30))
    assert block.garbage_collect(60, now + timedelta(seconds=61))
    assert block.unallocated == [2, 3, 0] and len(block.attributes) == 1


def test_handle_affinity_config_values() -> None:
    handle = Handle("k8s-pod-network.x")
    handle.increment(NET, 1)
    assert handle.to_json() == '{"block":{"10.65.79.0/26":1},"deleted":false}'
    handle.decrement(NET, 1)
    assert handle.empty()
    with pytest.raises(BlockError):
        handle.decrement(NET, 1)
    assert BlockAffinity("pending").to_json() == '{"state":"pending","deleted":false}'
    assert BlockAffinity.from_json("").confirmed  # legacy empty value
    assert not BlockAffinity.from_json('{"state":"pending"}').confirmed
    assert IPAMConfig.from_json(None) == IPAMConfig(False, True, 0, 0)
    assert IPAMConfig.from_json("{}") == IPAMConfig(False, False, 0, 0)  # stored without the flag: false
    assert (
        IPAMConfig(True, True, 2).to_json()
        == '{"strict_affinity":true,"auto_allocate_blocks":true,"maxBlocksPerHost":2}'
    )


def test_block_candidates() -> None:
    assert fnv32("") == 0x811C9DC5 and fnv32("a") == 0x050C5D7E  # Go's hash/fnv New32
    pool = ipaddress.ip_network("10.244.0.0/16")
    order = list(random_blocks(pool, 26, "node1"))
    assert len(order) == 1024 and len(set(order)) == 1024 and all(b.subnet_of(pool) for b in order)
    assert order == list(random_blocks(pool, 26, "node1"))  # fixed per host
    assert order[0] != next(random_blocks(pool, 26, "node2"))
    assert next(iter(random_blocks(ipaddress.ip_network("fd00::/120"), 122, "n"))).prefixlen == 122


class BlockMachine(RuleBasedStateMachine):
    """Any sequence of operations keeps one block consistent with a simple model of who holds what."""

    def __init__(self) -> None:
        super().__init__()
        self.block = AllocationBlock.new(ipaddress.ip_network("10.1.0.0/28"), ME)
        self.held: dict[int, str] = {}  # ordinal -> handle
        self.cooling: dict[int, datetime] = {}  # ordinal -> released at
        self.now = datetime(2024, 1, 1, tzinfo=UTC)
        self.cooldown = 0

    def collect(self) -> None:
        """What the block's garbage collection must have freed: cooldowns that are over, to the FIFO's tail."""
        done = sorted(o for o, t in self.cooling.items() if t.timestamp() <= self.now.timestamp() - self.cooldown)
        for ordinal in done:
            del self.cooling[ordinal]

    def released(self, ordinals: list[int]) -> None:
        for ordinal in ordinals:
            del self.held[ordinal]
            self.cooling[ordinal] = self.now
        if ordinals:
            self.collect()

    @rule(count=st.integers(1, 5), handle=st.sampled_from(["a", "b", "c"]))
    def auto_assign(self, count: int, handle: str) -> None:
        free_before = list(self.block.unallocated)
        got = self.block.auto_assign(count, handle, {"node": "node1"}, ME, True)
        assert [self.block.ordinal(a) for a in got] == free_before[: len(got)]  # from the head, in order
        assert len(got) == min(count, len(free_before))
        for address in got:
            ordinal = self.block.ordinal(address)
            assert ordinal not in self.held and ordinal not in self.cooling
            self.held[ordinal] = handle

    @rule(ordinal=st.integers(0, 15), handle=st.sampled_from(["a", "b"]))
    def assign(self, ordinal: int, handle: str) -> None:
        address = self.block.address(ordinal)
        if ordinal in self.held or ordinal in self.cooling:
            with pytest.raises(AddressInUse):
                self.block.assign(address, handle, None, ME, True)
        else:
            self.block.assign(address, handle, None, ME, True)
            self.held[ordinal] = handle

    @rule(ordinals=st.lists(st.integers(0, 15), max_size=4))
    def release(self, ordinals: list[int]) -> None:
        addresses = [self.block.address(o) for o in ordinals]
        missing, by_handle = self.block.release(addresses, self.cooldown, self.now)
        unique = [o for o in dict.fromkeys(ordinals) if o in self.held]
        expected: dict[str, int] = {}
        for ordinal in unique:
            expected[self.held[ordinal]] = expected.get(self.held[ordinal], 0) + 1
        assert by_handle == expected
        assert {self.block.ordinal(a) for a in missing} == {o for o in ordinals if o not in self.held}
        self.released(unique)

    @rule(handle=st.sampled_from(["a", "b", "c"]))
    def release_by_handle(self, handle: str) -> None:
        mine = [o for o, h in self.held.items() if h == handle]
        assert self.block.release_by_handle(handle, self.cooldown, self.now) == len(mine)
        self.released(mine)

    @rule(seconds=st.sampled_from([0, 30, 61]))
    def time_passes(self, seconds: int) -> None:
        self.now += timedelta(seconds=seconds)
        self.block.garbage_collect(self.cooldown, self.now)
        self.collect()

    @rule(cooldown=st.sampled_from([0, 60]))
    def set_cooldown(self, cooldown: int) -> None:
        self.cooldown = cooldown

    @invariant()
    def consistent(self) -> None:
        block = self.block
        assert block.check() == []
        held = {o for o, index in enumerate(block.allocations) if index is not None}
        assert held == set(self.held) | set(self.cooling)
        for ordinal, handle in self.held.items():
            attribute = block.attributes[block.allocations[ordinal]]  # type: ignore[index]
            assert attribute.handle_id == handle and attribute.released_at is None
        used = {index for index in block.allocations if index is not None}
        assert used == set(range(len(block.attributes)))  # compact: every attribute is referenced
        assert AllocationBlock.from_json(block.to_json()).to_json() == block.to_json()


TestBlockMachine = BlockMachine.TestCase


def test_attribute_handle_is_sanitised() -> None:
    assert Attribute(handle_id="h1\rjunk").handle == "h1"
