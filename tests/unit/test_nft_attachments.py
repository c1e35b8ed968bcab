"""Attachment records (no root) and how masquerade tells which subnet rules no attachment uses."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

from pycni.nft import attachments, masquerade


def test_records_group_members_and_leave_nothing_when_emptied(tmp_path: Path) -> None:
    records = attachments.Records("t", root=str(tmp_path))
    records.add("net-10.1.0.0_24", "a")
    records.add("net-10.1.0.0_24", "b")
    records.add("net-fd01::_64", "a")
    assert records.groups() == {"net-10.1.0.0_24": {"a", "b"}, "net-fd01::_64": {"a"}}
    assert records.remove("a") == ["net-fd01::_64"], "the groups it left empty"
    assert records.groups() == {"net-10.1.0.0_24": {"b"}}
    records.tidy()
    assert not os.path.exists(os.path.join(records.path, "net-fd01::_64")), "tidy removes an emptied group"
    assert records.remove("b", ["net-10.1.0.0_24"]) == ["net-10.1.0.0_24"]
    records.tidy()
    assert os.listdir(tmp_path) == [], "the last record takes the namespace's directory (and cookie) with it"
    assert records.remove("b") == []  # idempotent, also with nothing there


def test_remove_by_prefix_leaves_other_networks(tmp_path: Path) -> None:
    records = attachments.Records("t", root=str(tmp_path))
    records.add("aaa-10.1.0.0_24", "m")
    records.add("bbb-10.2.0.0_24", "m")
    records.remove("m", prefix="aaa")
    assert records.groups() == {"bbb-10.2.0.0_24": {"m"}}


def test_a_dead_namespaces_records_are_dropped_before_use(tmp_path: Path) -> None:
    """The kernel reuses a namespace's inode: a directory with another cookie is not this namespace's."""
    records = attachments.Records("t", root=str(tmp_path))
    records.add("net-10.1.0.0_24", "old")
    Path(records.path, attachments.COOKIE).write_text("not-this-namespace")
    again = attachments.Records("t", root=str(tmp_path))
    assert again.groups() == {}
    assert attachments.netns_cookie(), "this kernel has SO_NETNS_COOKIE"


def subnet_rule(handle: int, network: str, subnet: str) -> dict[str, object]:
    addr, length = subnet.split("/")
    proto = "ip6" if ":" in subnet else "ip"
    prefix = {"prefix": {"addr": addr, "len": int(length)}}
    return {
        "handle": handle,
        "chain": masquerade.CHAIN,
        "comment": masquerade.subnet_comment(network, ipaddress.ip_network(subnet)),
        "expr": [
            {"match": {"op": "==", "left": {"payload": {"protocol": proto, "field": "saddr"}}, "right": prefix}},
            {"match": {"op": "!=", "left": {"payload": {"protocol": proto, "field": "daddr"}}, "right": prefix}},
            {"masquerade": None},
        ],
    }


def test_a_subnet_rule_is_known_by_network_hash_and_the_subnet_it_matches() -> None:
    long_name = "n" * 200  # truncates the comment before its subnet
    rules = [subnet_rule(1, long_name, "10.1.0.0/24"), subnet_rule(2, long_name, "fd01::/64")]
    state = masquerade.State(
        True, [masquerade.Rule(int(r["handle"]), str(r["comment"]), masquerade.source_prefix(r)) for r in rules]
    )
    tag = masquerade.network_hash(long_name)
    assert state.groups() == {f"{tag}-10.1.0.0_24", f"{tag}-fd01::_64"}
    unused = masquerade.orphans(state, {f"{tag}-fd01::_64"})
    assert [rule.handle for rule in unused] == [1]
    reference_rule = masquerade.Rule(3, masquerade.instance_comment("mynet", "eth0", "c1"), "10.1.0.5/32")
    assert reference_rule.group is None, "a per-attachment rule (Go's, or a /32's) is never reaped as a subnet's"
