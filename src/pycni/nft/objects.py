"""Typed nftables objects, transactions of operations on them, and the transaction between two tables.

The rest of :mod:`pycni.nft` renders scripts as text, which suits a plugin
adding its few lines. A policy engine owns a whole table that changes a little
at a time, so it needs what knftables gives kube-proxy: a description of the
table it wants (:class:`Table` of :class:`Chain`, :class:`Set` and
:class:`Map`), a :class:`Transaction` of typed operations rendered to one
``nft -f`` script (atomic in the kernel), and :func:`diff`, the transaction
that turns one table into another touching only what changed:

* a set's or map's elements are added and deleted, never the set recreated
  (unless its declaration changed);
* a chain whose rules changed is flushed and refilled, and only that chain;
* chains, sets and maps that are no longer wanted are deleted once nothing
  refers to them, new ones declared before anything refers to them;
* the table itself is never flushed or deleted.

Rules are nft rule text as ``add rule`` takes it. Objects are compared by
value, so "what changed" is plain equality. :mod:`pycni.nft.fake` applies
transactions to an in-memory ruleset with the kernel's checks, so a diff can be
tested without root.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from pycni import nft

# nft's unquoted identifier (scanner.l ``string``): chain, set and map names must be one, quotes are not accepted.
NAME = re.compile(r"^[A-Za-z_.][A-Za-z0-9/\\_.-]*$")
NAME_MAX = 255  # NFT_NAME_MAXLEN - 1


@dataclass(frozen=True)
class Hook:
    """What makes a chain a base chain: type, hook, priority and policy."""

    type: str = "filter"
    hook: str = "forward"
    priority: str = "filter"
    policy: str = "accept"

    def render(self) -> str:
        return f"{{ type {self.type} hook {self.hook} priority {self.priority} ; policy {self.policy} ; }}"

    def same_place(self, other: Hook) -> bool:
        """Everything but the policy, which ``add chain`` may change in place."""
        return (self.type, self.hook, self.priority) == (other.type, other.hook, other.priority)


@dataclass(frozen=True)
class Chain:
    name: str
    rules: tuple[str, ...] = ()
    hook: Hook | None = None


@dataclass(frozen=True)
class Set:
    """A named set; elements as nft writes them (``10.0.0.1``, ``10.0.0.0/8``, ``10.0.0.1 . 6 . 80``)."""

    name: str
    type: str
    flags: tuple[str, ...] = ()
    elements: frozenset[str] = frozenset()

    def declaration(self) -> str:
        flags = f" flags {','.join(self.flags)} ;" if self.flags else ""
        return f"{{ type {self.type} ;{flags} }}"


@dataclass(frozen=True)
class Map:
    """A named map, e.g. ``ifname : verdict``; elements are key -> value as nft writes them."""

    name: str
    type: str
    elements: Mapping[str, str] = field(default_factory=dict)

    def declaration(self) -> str:
        return f"{{ type {self.type} ; }}"


@dataclass(frozen=True)
class Table:
    family: str
    name: str
    chains: Mapping[str, Chain] = field(default_factory=dict)
    sets: Mapping[str, Set] = field(default_factory=dict)
    maps: Mapping[str, Map] = field(default_factory=dict)

    def check(self) -> None:
        """Names nft accepts unquoted; raises ValueError naming the first that is not."""
        for name in [*self.chains, *self.sets, *self.maps]:
            if len(name) > NAME_MAX or not NAME.match(name):
                raise ValueError(f"{name!r} is not an nft name (letters, digits, / _ . -; at most {NAME_MAX})")


@dataclass(frozen=True)
class Op:
    """One command of a transaction: ``<verb> <kind> <family> <table> [<name>] [<body>]``."""

    verb: str  # add | flush | delete
    kind: str  # table | chain | rule | set | map | element
    name: str = ""
    body: str = ""


def _elements(items: Iterable[str]) -> str:
    return "{ " + ", ".join(items) + " }"


def map_items(elements: Mapping[str, str], keys: Iterable[str] | None = None) -> list[str]:
    chosen = sorted(elements) if keys is None else sorted(keys)
    return [f"{key} : {elements[key]}" for key in chosen]


class Transaction:
    """Operations on one table, applied as one ``nft -f`` script (all or nothing)."""

    def __init__(self, family: str, table: str) -> None:
        self.family = family
        self.table = table
        self.ops: list[Op] = []

    def __len__(self) -> int:
        return len(self.ops)

    def _op(self, verb: str, kind: str, name: str = "", body: str = "") -> None:
        self.ops.append(Op(verb, kind, name, body))

    def add_table(self) -> None:
        self._op("add", "table")

    def delete_table(self) -> None:
        self._op("delete", "table")

    def add_chain(self, chain: Chain) -> None:
        """Declare the chain (its hook, for a base chain); its rules are added with :meth:`add_rule`."""
        self._op("add", "chain", chain.name, chain.hook.render() if chain.hook else "")

    def flush_chain(self, name: str) -> None:
        self._op("flush", "chain", name)

    def delete_chain(self, name: str) -> None:
        self._op("delete", "chain", name)

    def add_rule(self, chain: str, rule: str) -> None:
        self._op("add", "rule", chain, rule)

    def add_set(self, declared: Set) -> None:
        self._op("add", "set", declared.name, declared.declaration())

    def add_map(self, declared: Map) -> None:
        self._op("add", "map", declared.name, declared.declaration())

    def delete_set(self, name: str) -> None:
        self._op("delete", "set", name)

    def delete_map(self, name: str) -> None:
        self._op("delete", "map", name)

    def add_elements(self, name: str, items: Iterable[str]) -> None:
        listed = sorted(items)
        if listed:
            self._op("add", "element", name, _elements(listed))

    def delete_elements(self, name: str, items: Iterable[str]) -> None:
        listed = sorted(items)
        if listed:
            self._op("delete", "element", name, _elements(listed))

    def render(self) -> str:
        lines = []
        for op in self.ops:
            words = [op.verb, op.kind, self.family, self.table]
            words += [part for part in (op.name, op.body) if part]
            lines.append(" ".join(words))
        return "".join(line + "\n" for line in lines)

    def apply(self, action: str = "apply ruleset") -> None:
        """Run it in this thread's network namespace (:func:`pycni.nft.run`)."""
        nft.run(self.render(), action)


def create(table: Table) -> Transaction:
    """The transaction making ``table`` where it does not exist (or adding it to an empty one)."""
    return diff(None, table)


def diff(old: Table | None, new: Table) -> Transaction:
    """The smallest transaction turning ``old`` (what the kernel holds) into ``new``.

    Order matters to the kernel, which refuses a reference to anything not
    declared yet and a deletion of anything still referred to (a rule's
    ``jump``/``goto``/``@set``, a map element's verdict).
    """
    new.check()
    tx = Transaction(new.family, new.name)
    tx.add_table()
    before = old or Table(new.family, new.name)
    if (before.family, before.name) != (new.family, new.name):
        raise ValueError(f"cannot diff table {before.family} {before.name} into {new.family} {new.name}")
    for name, chain in new.chains.items():
        prior = before.chains.get(name)
        if prior is not None and (prior.hook is None) != (chain.hook is None):
            raise ValueError(f"chain {name}: a regular chain and a base chain are not changed into one another")
        if prior is not None and prior.hook and chain.hook and not prior.hook.same_place(chain.hook):
            raise ValueError(f"chain {name}: a base chain's type, hook and priority do not change in place")

    recreated_sets = {
        n for n, s in new.sets.items() if n in before.sets and before.sets[n].declaration() != s.declaration()
    }
    recreated_maps = {n for n, m in new.maps.items() if n in before.maps and before.maps[n].type != m.type}
    recreated = recreated_sets | recreated_maps
    gone_chains = [n for n in before.chains if n not in new.chains]
    changed = [n for n, c in new.chains.items() if n in before.chains and before.chains[n].rules != c.rules]
    referring = [
        n
        for n, c in before.chains.items()
        if n in new.chains and n not in changed and any(_refers(rule, recreated) for rule in c.rules)
    ]
    refill = changed + referring

    # Declarations first: sets and maps, then chains (a map's verdicts and the rules name them).
    for name, wanted in new.sets.items():
        if name not in before.sets:
            tx.add_set(wanted)
            tx.add_elements(name, wanted.elements)
    for name, wanted_map in new.maps.items():
        if name not in before.maps:
            tx.add_map(wanted_map)
    for name, chain in new.chains.items():
        prior = before.chains.get(name)
        if prior is None or (chain.hook is not None and prior.hook != chain.hook):
            tx.add_chain(chain)
    # Empty what goes away or changes, and drop map entries that point at chains going away.
    for name in refill + gone_chains:
        tx.flush_chain(name)
    for name, prior_map in before.maps.items():
        if name in new.maps and name not in recreated_maps:
            current = new.maps[name].elements
            stale = [k for k, v in prior_map.elements.items() if current.get(k) != v]
            tx.delete_elements(name, map_items(prior_map.elements, stale))
    for name in before.maps:  # before the chains: a map's verdicts may name them
        if name not in new.maps or name in recreated_maps:
            tx.delete_map(name)
    for name in gone_chains:
        tx.delete_chain(name)
    for name in before.sets:
        if name not in new.sets or name in recreated_sets:
            tx.delete_set(name)
    # Redeclare what changed shape, then the elements: deletions before additions (intervals must not overlap).
    for name in sorted(recreated_sets):
        tx.add_set(new.sets[name])
        tx.add_elements(name, new.sets[name].elements)
    for name in sorted(recreated_maps):
        tx.add_map(new.maps[name])
    for name, wanted in new.sets.items():
        prior_set = before.sets.get(name)
        if prior_set is not None and name not in recreated_sets:
            tx.delete_elements(name, prior_set.elements - wanted.elements)
            tx.add_elements(name, wanted.elements - prior_set.elements)
    for name, wanted_map in new.maps.items():
        prior_elements = before.maps[name].elements if name in before.maps and name not in recreated_maps else {}
        fresh = [k for k, v in wanted_map.elements.items() if prior_elements.get(k) != v]
        tx.add_elements(name, map_items(wanted_map.elements, fresh))
    # Rules last: everything they name exists now.
    for name, chain in new.chains.items():
        if name not in before.chains or name in refill:
            for rule in chain.rules:
                tx.add_rule(name, rule)
    return tx


_QUOTED = re.compile(r'"[^"]*"')
_SET_REFERENCE = re.compile(r"@([A-Za-z0-9/\\_.-]+)")
_CHAIN_REFERENCE = re.compile(r"\b(?:jump|goto) ([A-Za-z_.][A-Za-z0-9/\\_.-]*)")


def set_references(text: str) -> set[str]:
    """The sets and maps a rule names (``@name``), outside quoted strings."""
    return set(_SET_REFERENCE.findall(_QUOTED.sub('""', text)))


def chain_references(text: str) -> set[str]:
    """The chains a rule or verdict jumps or goes to, outside quoted strings."""
    return set(_CHAIN_REFERENCE.findall(_QUOTED.sub('""', text)))


def _refers(rule: str, names: set[str]) -> bool:
    return bool(names and set_references(rule) & names)
