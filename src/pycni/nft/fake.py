"""An in-memory nftables ruleset: applies :class:`~pycni.nft.objects.Transaction` s with the kernel's checks.

knftables ships such a fake so that code building transactions can be tested
without root. This one refuses what the kernel refuses, all or nothing per
transaction, with the kernel's error text:

* anything in a table, chain, set or map that does not exist (ENOENT), a rule
  naming a chain, set or map not declared yet, a jump to a base chain;
* deleting a chain that still has rules or that a rule or map verdict names,
  or a set or map a rule names (EBUSY);
* redeclaring a set, map or chain differently (EEXIST), a map key already
  bound to another value, an interval overlapping another in an interval set,
  an element that is not of the set's type, deleting an element that is not there.

:meth:`FakeRuleset.table` gives the result as a :class:`~pycni.nft.objects.Table`,
so a test compares it with the table it wanted.
"""

from __future__ import annotations

import copy
import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any

from pycni.nft import NftError
from pycni.nft.objects import Chain, Hook, Map, Op, Set, Table, Transaction, chain_references, set_references

ENOENT = "No such file or directory"
EBUSY = "Device or resource busy"
EEXIST = "File exists"
_HOOK = re.compile(r"^\{ type (\S+) hook (\S+) priority (\S+) ; policy (\S+) ; \}$")
_SET = re.compile(r"^\{ type (.+?) ;(?: flags (\S+) ;)? \}$")
_ADDRESS_TYPES = {"ipv4_addr": 4, "ipv6_addr": 6}


@dataclass
class _Table:
    chains: dict[str, tuple[Hook | None, list[str]]] = field(default_factory=dict)
    sets: dict[str, tuple[str, tuple[str, ...], set[str]]] = field(default_factory=dict)
    maps: dict[str, tuple[str, dict[str, str]]] = field(default_factory=dict)


def _fail(op: Op, problem: str) -> NftError:
    return NftError("apply ruleset", f"{op.verb} {op.kind} {op.name}: {problem}".replace("  ", " "))


def _items(body: str) -> list[str]:
    inner = body.strip()
    if not (inner.startswith("{") and inner.endswith("}")):
        raise ValueError(f"expected {{ elements }}, got {body!r}")
    return [item.strip() for item in inner[1:-1].split(",") if item.strip()]


class FakeRuleset:
    """Tables by (family, name), changed only by whole transactions."""

    def __init__(self) -> None:
        self._tables: dict[tuple[str, str], _Table] = {}

    def apply(self, tx: Transaction) -> None:
        """Apply every operation or none (raises :class:`~pycni.nft.NftError` as ``nft -f`` fails)."""
        tables = copy.deepcopy(self._tables)
        for op in tx.ops:
            self._apply(tables, (tx.family, tx.table), op)
        self._tables = tables

    def holds(self, family: str, name: str) -> bool:
        """Whether the table exists (the policy manager's ``holds``)."""
        return (family, name) in self._tables

    def listing(self, family: str, name: str) -> str:
        """The table's text as a listing ("" if none; the policy manager's drift check compares it)."""
        table = self.table(family, name)
        return repr(table) if table is not None else ""

    def table(self, family: str, name: str) -> Table | None:
        found = self._tables.get((family, name))
        if found is None:
            return None
        return Table(
            family,
            name,
            chains={n: Chain(n, tuple(rules), hook) for n, (hook, rules) in found.chains.items()},
            sets={n: Set(n, t, flags, frozenset(items)) for n, (t, flags, items) in found.sets.items()},
            maps={n: Map(n, t, dict(items)) for n, (t, items) in found.maps.items()},
        )

    # -- one operation -----------------------------------------------------------------

    def _apply(self, tables: dict[tuple[str, str], _Table], key: tuple[str, str], op: Op) -> None:
        if op.kind == "table":
            if op.verb == "add":
                tables.setdefault(key, _Table())
            elif tables.pop(key, None) is None:
                raise _fail(op, ENOENT)
            return
        table = tables.get(key)
        if table is None:
            raise _fail(op, ENOENT)
        handler = getattr(self, f"_{op.verb}_{op.kind}")
        handler(table, op)

    def _add_chain(self, table: _Table, op: Op) -> None:
        hook = None
        if op.body:
            match = _HOOK.match(op.body)
            if match is None:
                raise _fail(op, f"cannot read the hook {op.body!r}")
            hook = Hook(*match.groups())
        current = table.chains.get(op.name)
        if current is None:
            table.chains[op.name] = (hook, [])
        elif hook is not None:
            if current[0] is None or not current[0].same_place(hook):
                raise _fail(op, EEXIST)
            table.chains[op.name] = (hook, current[1])  # a new policy

    def _flush_chain(self, table: _Table, op: Op) -> None:
        if op.name not in table.chains:
            raise _fail(op, ENOENT)
        table.chains[op.name][1].clear()

    def _delete_chain(self, table: _Table, op: Op) -> None:
        if op.name not in table.chains:
            raise _fail(op, ENOENT)
        if table.chains[op.name][1] or self._chain_used(table, op.name):
            raise _fail(op, EBUSY)
        del table.chains[op.name]

    @staticmethod
    def _chain_used(table: _Table, name: str) -> bool:
        rules = (rule for _, rules in table.chains.values() for rule in rules)
        verdicts = (value for _, items in table.maps.values() for value in items.values())
        return any(name in chain_references(text) for text in (*rules, *verdicts))

    def _check_jumps(self, table: _Table, op: Op, text: str) -> None:
        for target in chain_references(text):
            if target not in table.chains:
                raise _fail(op, f"{ENOENT} (chain {target})")
            if table.chains[target][0] is not None:
                raise _fail(op, f"Operation not supported (jump to base chain {target})")

    def _add_rule(self, table: _Table, op: Op) -> None:
        if op.name not in table.chains:
            raise _fail(op, ENOENT)
        self._check_jumps(table, op, op.body)
        for name in set_references(op.body):
            if name not in table.sets and name not in table.maps:
                raise _fail(op, f"{ENOENT} (set {name})")
        table.chains[op.name][1].append(op.body)

    def _add_set(self, table: _Table, op: Op) -> None:
        match = _SET.match(op.body)
        if match is None:
            raise _fail(op, f"cannot read the declaration {op.body!r}")
        declared = (match.group(1), tuple(match.group(2).split(",")) if match.group(2) else ())
        current = table.sets.get(op.name)
        if current is None:
            table.sets[op.name] = (*declared, set())
        elif current[:2] != declared:
            raise _fail(op, EEXIST)

    def _add_map(self, table: _Table, op: Op) -> None:
        match = _SET.match(op.body)
        if match is None:
            raise _fail(op, f"cannot read the declaration {op.body!r}")
        current = table.maps.get(op.name)
        if current is None:
            table.maps[op.name] = (match.group(1), {})
        elif current[0] != match.group(1):
            raise _fail(op, EEXIST)

    def _delete_set(self, table: _Table, op: Op) -> None:
        self._delete_named(table, op, table.sets)

    def _delete_map(self, table: _Table, op: Op) -> None:
        self._delete_named(table, op, table.maps)

    @staticmethod
    def _delete_named(table: _Table, op: Op, where: dict[str, Any]) -> None:
        if op.name not in where:
            raise _fail(op, ENOENT)
        if any(op.name in set_references(rule) for _, rules in table.chains.values() for rule in rules):
            raise _fail(op, EBUSY)
        del where[op.name]

    def _add_element(self, table: _Table, op: Op) -> None:
        if op.name in table.maps:
            items = table.maps[op.name][1]
            for item in _items(op.body):
                key, _, value = item.partition(" : ")
                self._check_jumps(table, op, value)
                if items.get(key, value) != value:
                    raise _fail(op, f"{EEXIST} ({key})")
                items[key] = value
            return
        if op.name not in table.sets:
            raise _fail(op, ENOENT)
        type_, flags, elements = table.sets[op.name]
        for item in _items(op.body):
            _check_type(op, type_, item)
            if "interval" in flags and item not in elements:
                network = ipaddress.ip_network(item)
                for other in elements:
                    if ipaddress.ip_network(other).overlaps(network):
                        raise _fail(op, f"interval overlaps with an existing one ({item}, {other})")
            elements.add(item)

    def _delete_element(self, table: _Table, op: Op) -> None:
        if op.name in table.maps:
            items = table.maps[op.name][1]
            for item in _items(op.body):
                key = item.partition(" : ")[0]
                if key not in items:
                    raise _fail(op, f"{ENOENT} ({key})")
                del items[key]
            return
        if op.name not in table.sets:
            raise _fail(op, ENOENT)
        elements = table.sets[op.name][2]
        for item in _items(op.body):
            if item not in elements:
                raise _fail(op, f"{ENOENT} ({item})")
            elements.remove(item)


def _check_type(op: Op, type_: str, item: str) -> None:
    """An element has as many parts as the type, and addresses are of its family (prefixes masked)."""
    kinds = [part.strip() for part in type_.split(" . ")]
    parts = [part.strip() for part in item.split(" . ")]
    if len(kinds) != len(parts):
        raise _fail(op, f"{item!r} is not of type {type_}")
    for kind, part in zip(kinds, parts, strict=True):
        version = _ADDRESS_TYPES.get(kind)
        if version is None:
            continue
        try:
            network = ipaddress.ip_network(part)
        except ValueError:
            raise _fail(op, f"{part!r} is not an {kind} (or a masked prefix of one)") from None
        if network.version != version:
            raise _fail(op, f"{part!r} is not an {kind}")
