"""Host port mappings in one nftables table, with maps instead of a rule per port.

    table inet pycni_hostport
      map dnat4    proto . port            -> container IPv4 . port   (any local address)
      map dnat4_ip hostIP . proto . port   -> container IPv4 . port   (one host address)
      map dnat6 / dnat6_ip                                             (the same for IPv6)
      set masq4 / masq6   saddr . daddr pairs masqueraded after DNAT
                          (container . itself = hairpin, 127.0.0.1 . container = localhost)
      set masq4_all / masq6_all   daddrs masqueraded after DNAT from anywhere (masqAll)
      chain prerouting / output (nat, dstnat): for local destinations, jump
                          hostports, then hostport_maps
      chain hostports: per-attachment rules with conditions (never flushed)
      chain hostport_maps: the four map lookups (rebuilt by every transaction)
      chain masquerading (nat, srcnat): ct status dnat + the masq sets

A packet costs a hash lookup however many ports are mapped, ADD and DEL add
and delete set elements in one transaction, and every element carries a
comment naming its attachment so DEL and GC remove exactly their own.
Mappings that need ``conditionsV4``/``V6`` become rules in ``hostports``
(a map lookup cannot carry extra matches), with the same comment.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from pycni import nft
from pycni.spec.result import IPInterface

FAMILY = "inet"
TABLE = "pycni_hostport"
T = f"{FAMILY} {TABLE}"


@dataclass(frozen=True)
class Mapping:
    host_port: int
    container_port: int
    protocol: str  # tcp | udp | sctp
    host_ip: str = ""  # empty: every local address


def attachment_comment(network: str, container_id: str, ifname: str) -> str:
    """``<network hash>:<container ID>:<ifname>``, hashed if it would not fit a comment."""
    prefix = network_tag(network)
    comment = f"{prefix}:{container_id}:{ifname}"
    if len(comment) > nft.COMMENT_MAX:
        comment = f"{prefix}:{hashlib.sha512(f'{container_id}:{ifname}'.encode()).hexdigest()[:64]}"
    return comment


def network_tag(network: str) -> str:
    return hashlib.sha512(network.encode()).hexdigest()[:16]


LOOKUP_RULES = (
    "dnat ip to ip daddr . meta l4proto . th dport map @dnat4_ip",
    "dnat ip to meta l4proto . th dport map @dnat4",
    "dnat ip6 to ip6 daddr . meta l4proto . th dport map @dnat6_ip",
    "dnat ip6 to meta l4proto . th dport map @dnat6",
)


def render_base() -> list[str]:
    """The table skeleton; declaring what exists already is a no-op, so every transaction starts with it."""
    lines = [f"add table {T}"]
    for v, addr in ((4, "ipv4_addr"), (6, "ipv6_addr")):
        lines += [
            f"add map {T} dnat{v} {{ type inet_proto . inet_service : {addr} . inet_service ; }}",
            f"add map {T} dnat{v}_ip {{ type {addr} . inet_proto . inet_service : {addr} . inet_service ; }}",
            f"add set {T} masq{v} {{ type {addr} . {addr} ; }}",
            f"add set {T} masq{v}_all {{ type {addr} ; }}",
        ]
    lines += [
        f"add chain {T} hostports",
        f"add chain {T} hostport_maps",
        f"add chain {T} prerouting {{ type nat hook prerouting priority dstnat ; }}",
        f"add chain {T} output {{ type nat hook output priority -100 ; }}",
        f"add chain {T} masquerading {{ type nat hook postrouting priority srcnat ; }}",
        # Entry and lookup rules are rebuilt in every transaction so they exist exactly once.
        f"flush chain {T} prerouting",
        f"flush chain {T} output",
        f"flush chain {T} hostport_maps",
        f"flush chain {T} masquerading",
        *(
            f"add rule {T} {hook} fib daddr type local jump {chain}"
            for hook in ("prerouting", "output")
            for chain in ("hostports", "hostport_maps")
        ),
        *(f"add rule {T} hostport_maps {rule}" for rule in LOOKUP_RULES),
        f"add rule {T} masquerading ct status dnat ip saddr . ip daddr @masq4 masquerade",
        f"add rule {T} masquerading ct status dnat ip daddr @masq4_all masquerade",
        f"add rule {T} masquerading ct status dnat ip6 saddr . ip6 daddr @masq6 masquerade",
        f"add rule {T} masquerading ct status dnat ip6 daddr @masq6_all masquerade",
    ]
    return lines


def _target(address: IPInterface, port: int) -> str:
    return f"{address.ip} . {port}" if address.version == 4 else f"[{address.ip}] . {port}"


def render_add(
    mappings: Sequence[Mapping],
    addresses: Sequence[IPInterface],
    comment: str,
    snat: bool,
    masq_all: bool,
    conditions: dict[int, list[str]],
) -> list[str]:
    """Elements (or conditioned rules) for one attachment's mappings and masquerading."""
    quoted = nft.quote(comment)
    lines: list[str] = []
    for address in addresses:
        v = address.version
        proto_word = "ip" if v == 4 else "ip6"
        for m in mappings:
            if m.host_ip and family_of(m.host_ip) != v:
                continue  # a host address of the other family does not apply
            host_ip = m.host_ip if m.host_ip and not _unspecified(m.host_ip) else ""
            if conditions.get(v):
                match = " ".join(conditions[v])
                dst = f"{proto_word} daddr {host_ip} " if host_ip else ""
                lines.append(
                    f"add rule {T} hostports {match} {dst}{m.protocol} dport {m.host_port} "
                    f"dnat {proto_word} to {_target(address, m.container_port).replace(' . ', ':')} comment {quoted}"
                )
            elif host_ip:
                lines.append(
                    f"create element {T} dnat{v}_ip {{ {host_ip} . {m.protocol} . {m.host_port} comment {quoted} : "
                    f"{_target(address, m.container_port)} }}"
                )
            else:
                lines.append(
                    f"create element {T} dnat{v} {{ {m.protocol} . {m.host_port} comment {quoted} : "
                    f"{_target(address, m.container_port)} }}"
                )
        if not snat:
            continue
        if masq_all:
            lines.append(f"add element {T} masq{v}_all {{ {address.ip} comment {quoted} }}")
            continue
        pairs = [f"{address.ip} . {address.ip} comment {quoted}"]
        if v == 4:
            pairs.append(f"127.0.0.1 . {address.ip} comment {quoted}")
        lines.append(f"add element {T} masq{v} {{ {', '.join(pairs)} }}")
    return lines


def family_of(ip: str) -> int:
    return 6 if ":" in ip else 4


def _unspecified(ip: str) -> bool:
    return ip in ("0.0.0.0", "::")


# -- reading the live table -------------------------------------------------


@dataclass
class Element:
    container: str  # "set" or "map" name
    key: str  # nft syntax of the key
    comment: str
    value: str = ""


def _render_value(value: Any) -> str:
    if isinstance(value, dict) and "concat" in value:
        return " . ".join(_render_value(v) for v in value["concat"])
    text = str(value)
    return f"[{text}]" if ":" in text else text


@dataclass
class State:
    present: bool  # the table and all its chains exist, so a transaction need only add
    elements: list[Element]
    rules: list[tuple[int, str]]  # (handle, comment) of the commented rules of ``hostports``


CHAINS = {"hostports", "hostport_maps", "prerouting", "output", "masquerading"}


def live_state() -> State:
    """Every commented element of the table's maps and sets, and the commented rules of ``hostports``."""
    elements: list[Element] = []
    rules: list[tuple[int, str]] = []
    chains: set[str] = set()
    for obj in nft.list_objects("table", FAMILY, TABLE):
        if "chain" in obj:
            chains.add(str(obj["chain"]["name"]))
        body = obj.get("map") or obj.get("set")
        if body is not None:
            for entry in body.get("elem", []):
                if isinstance(entry, list):  # map: [key, value]
                    key_obj, value = entry
                else:
                    key_obj, value = entry, None
                elem = key_obj.get("elem", {}) if isinstance(key_obj, dict) else {}
                comment = elem.get("comment", "")
                key = _render_value(elem.get("val", key_obj))
                key = key.replace("[", "").replace("]", "")  # keys are written without brackets
                elements.append(Element(body["name"], key, comment, _render_value(value) if value is not None else ""))
        elif "rule" in obj and obj["rule"].get("chain") == "hostports" and obj["rule"].get("comment"):
            rules.append((int(obj["rule"]["handle"]), str(obj["rule"]["comment"])))
    return State(chains >= CHAINS, elements, rules)


def render_removal(elements: Iterable[Element], rules: Iterable[tuple[int, str]], doomed: set[str]) -> list[str]:
    """Delete the elements and rules whose comment is in ``doomed``."""
    lines = [f"delete element {T} {e.container} {{ {e.key} }}" for e in elements if e.comment in doomed]
    lines += [f"delete rule {T} hostports handle {handle}" for handle, comment in rules if comment in doomed]
    return lines


def conflicts(elements: Iterable[Element], lines: Sequence[str], own: str) -> list[str]:
    """Keys the new elements would take from another attachment (a host port already mapped)."""
    taken = {(e.container, e.key): e.comment for e in elements if e.container.startswith("dnat")}
    clashes = []
    for line in lines:
        if not line.startswith("create element"):
            continue
        container = line.split()[4]
        key = line.split("{ ", 1)[1].split(" comment")[0]
        holder = taken.get((container, key))
        if holder is not None and holder != own:
            clashes.append(key.replace(" . ", "/"))
    return clashes


def apply(lines: Sequence[str], action: str, skeleton: bool) -> None:
    """Run ``lines``, preceded by the table skeleton when it is missing.

    Only additions once the table exists: a commit that deletes or redeclares
    a hooked chain waits ~10 ms for RCU, an addition does not.
    """
    nft.run("\n".join([*(render_base() if skeleton else []), *lines]) + "\n", action)


def remove(doomed: set[str], action: str) -> None:
    """Delete the elements and rules whose comment is in ``doomed``; the whole table with the last of them."""
    with nft.locked(TABLE):
        state = live_state()
        mine = render_removal(state.elements, state.rules, doomed)
        if not mine:
            return
        others = [e for e in state.elements if e.comment not in doomed]
        others_rules = [r for r in state.rules if r[1] not in doomed]
        if others or others_rules:
            nft.run("\n".join(mine) + "\n", action)
        else:
            nft.run(f"delete table {T}\n", action)
