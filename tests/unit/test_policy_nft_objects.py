"""Typed nftables objects, their transactions and diff, and the in-memory fake's kernel checks (no root).

The fake is checked against the kernel in tests/integration/test_policy_nft.py
(the same transactions applied to a real table list the same); here, that it
refuses what the kernel refuses, and that :func:`objects.diff` orders its
operations so that the kernel (and the fake) accepts them.
"""

from __future__ import annotations

import pytest

from pycni.nft import NftError
from pycni.nft.fake import FakeRuleset
from pycni.nft.objects import Chain, Hook, Map, Op, Set, Table, Transaction, create, diff

FORWARD = Hook("filter", "forward", "filter", "accept")


def table(**parts: object) -> Table:
    chains = parts.get("chains", [])
    sets = parts.get("sets", [])
    maps = parts.get("maps", [])
    return Table(
        "inet",
        "t",
        {c.name: c for c in chains},  # type: ignore[attr-defined]
        {s.name: s for s in sets},  # type: ignore[attr-defined]
        {m.name: m for m in maps},  # type: ignore[attr-defined]
    )


def loaded(start: Table) -> FakeRuleset:
    fake = FakeRuleset()
    fake.apply(create(start))
    assert fake.table("inet", "t") == start
    return fake


def test_render_is_one_command_per_line() -> None:
    tx = Transaction("inet", "t")
    tx.add_table()
    tx.add_chain(Chain("fwd", hook=FORWARD))
    tx.add_set(Set("s", "ipv4_addr", ("interval",)))
    tx.add_elements("s", ["10.0.0.2", "10.0.0.1"])
    tx.add_rule("fwd", "ip saddr @s drop")
    tx.delete_elements("s", [])
    assert tx.render() == (
        "add table inet t\n"
        "add chain inet t fwd { type filter hook forward priority filter ; policy accept ; }\n"
        "add set inet t s { type ipv4_addr ; flags interval ; }\n"
        "add element inet t s { 10.0.0.1, 10.0.0.2 }\n"
        "add rule inet t fwd ip saddr @s drop\n"
    )
    assert len(tx) == 5


def test_names_nft_does_not_take_unquoted_are_refused() -> None:
    with pytest.raises(ValueError, match="not an nft name"):
        create(table(chains=[Chain("has space")]))


@pytest.mark.parametrize(
    ("script", "problem"),
    [
        (["add rule inet t c jump nowhere"], "No such file or directory"),
        (["add rule inet t c ip saddr @nothing drop"], "No such file or directory"),
        (["add rule inet t c jump base"], "Operation not supported"),
        (["delete chain inet t d"], "Device or resource busy"),  # c jumps to d
        (["delete chain inet t c"], "Device or resource busy"),  # c has a rule
        (["delete set inet t s"], "Device or resource busy"),  # d names it
        (["delete chain inet t e"], "Device or resource busy"),  # the map goes to it
        (["add element inet t s { 10.1.0.0/16 }"], "interval overlaps"),
        (["add element inet t s { 10.1.2.3/8 }"], "not an ipv4_addr"),
        (["add element inet t s { fd00::1 }"], "not an ipv4_addr"),
        (['add element inet t m { "if0" : goto d }'], "File exists"),
        (["delete element inet t s { 10.9.9.9 }"], "No such file or directory"),
        (["add set inet t s { type ipv6_addr ; }"], "File exists"),
        (["add chain inet t base { type filter hook input priority filter ; policy accept ; }"], "File exists"),
        (["flush chain inet t missing"], "No such file or directory"),
        (["add rule inet t missing accept"], "No such file or directory"),
    ],
)
def test_the_fake_refuses_what_the_kernel_refuses(script: list[str], problem: str) -> None:
    start = table(
        chains=[
            Chain("base", ("jump c",), FORWARD),
            Chain("c", ("jump d",)),
            Chain("d", ("ip saddr @s drop",)),
            Chain("e"),
        ],
        sets=[Set("s", "ipv4_addr", ("interval",), frozenset({"10.0.0.0/8"}))],
        maps=[Map("m", "ifname : verdict", {'"if0"': "goto e"})],
    )
    fake = loaded(start)
    tx = Transaction("inet", "t")
    tx.add_table()
    for line in script:
        verb, kind, _family, _table, name, *rest = line.split(" ", 5)
        tx.ops.append(Op(verb, kind, name, rest[0] if rest else ""))
    with pytest.raises(NftError, match=problem):
        fake.apply(tx)
    assert fake.table("inet", "t") == start, "a failed transaction changes nothing"


def test_readding_what_exists_is_no_error() -> None:
    start = table(sets=[Set("s", "ipv4_addr", ("interval",), frozenset({"10.0.0.0/8"}))])
    fake = loaded(start)
    fake.apply(create(start))
    assert fake.table("inet", "t") == start


def test_diff_orders_declarations_references_and_deletions() -> None:
    before = table(
        chains=[Chain("base", ("jump old",), FORWARD), Chain("old", ("ip saddr @gone drop",)), Chain("e")],
        sets=[Set("gone", "ipv4_addr", (), frozenset({"10.0.0.1"}))],
        maps=[Map("m", "ifname : verdict", {'"if0"': "goto old", '"if1"': "goto e"})],
    )
    after = table(
        chains=[Chain("base", ("jump new",), FORWARD), Chain("new", ("ip saddr @fresh drop",)), Chain("e")],
        sets=[Set("fresh", "ipv4_addr", (), frozenset({"10.0.0.2"}))],
        maps=[Map("m", "ifname : verdict", {'"if0"': "goto new", '"if1"': "goto e"})],
    )
    fake = loaded(before)
    tx = diff(before, after)
    fake.apply(tx)
    assert fake.table("inet", "t") == after
    assert tx.render() == (
        "add table inet t\n"
        "add set inet t fresh { type ipv4_addr ; }\n"
        "add element inet t fresh { 10.0.0.2 }\n"
        "add chain inet t new\n"
        "flush chain inet t base\n"
        "flush chain inet t old\n"
        'delete element inet t m { "if0" : goto old }\n'
        "delete chain inet t old\n"
        "delete set inet t gone\n"
        'add element inet t m { "if0" : goto new }\n'
        "add rule inet t base jump new\n"
        "add rule inet t new ip saddr @fresh drop\n"
    )


def test_a_set_whose_declaration_changes_is_recreated_with_its_users_refilled() -> None:
    before = table(
        chains=[Chain("c", ("ip saddr @s drop",)), Chain("other", ("accept",))],
        sets=[Set("s", "ipv4_addr", (), frozenset({"10.0.0.1"}))],
    )
    after = table(
        chains=[Chain("c", ("ip saddr @s drop",)), Chain("other", ("accept",))],
        sets=[Set("s", "ipv4_addr", ("interval",), frozenset({"10.0.0.0/24"}))],
    )
    fake = loaded(before)
    tx = diff(before, after)
    fake.apply(tx)
    assert fake.table("inet", "t") == after
    assert [op.name for op in tx.ops if op.verb == "flush"] == ["c"]


def test_a_base_chain_policy_changes_in_place_its_hook_does_not() -> None:
    before = table(chains=[Chain("base", ("accept",), FORWARD)])
    after = table(chains=[Chain("base", ("accept",), Hook("filter", "forward", "filter", "drop"))])
    fake = loaded(before)
    fake.apply(diff(before, after))
    assert fake.table("inet", "t") == after
    moved = table(chains=[Chain("base", ("accept",), Hook("filter", "input", "filter", "accept"))])
    with pytest.raises(ValueError, match="do not change in place"):
        diff(before, moved)
    with pytest.raises(ValueError, match="regular chain and a base chain"):
        diff(before, table(chains=[Chain("base", ("accept",))]))
