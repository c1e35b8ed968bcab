"""One Calico rule as nft rules, matching exactly what :func:`pycni.policy.match.rule_matches` matches.

Every field the rule sets becomes a match in one nft rule (``CalculateRuleMatch``):
``meta l4proto``, ICMP type and code, and per side the nets (an anonymous set:
any of them), notNets (none of them), the selector's set, the notSelector's
set (not in it), ports and notPorts. The table is ``inet``; a rule that names
addresses (nets, selectors, named ports) is rendered once per IP family it
exists for (``FilterRuleToIPVersion``), with that family's sets, one that does
not is rendered once for both (or for its ``ipVersion``).

Numeric ports and named ports of one side are ORed, which one nft rule cannot
say; as Felix's match blocks do, a rule then starts with rules that set a
scratch mark bit when one of the alternatives matches, and the rule itself
requires the bit. The action is the owner's: in a policy or profile chain
Allow sets the Accept mark and returns, Pass sets the Pass mark and returns,
Deny drops, Log logs with a prefix naming the policy and goes on.
"""

from __future__ import annotations

from dataclasses import dataclass

from pycni.nft import quote
from pycni.policy import nft_names
from pycni.policy.compile import CompiledEntity, CompiledRule, IPNetwork
from pycni.policy.index import named_port_protocol
from pycni.policy.match import exists_for_family
from pycni.policy.nft_names import MARK_ACCEPT, MARK_PASS, MARK_SCRATCH, mark
from pycni.policy.nft_sets import SetRegistry, element
from pycni.policy.rules import Port

ADDRESS_WORD = {4: "ip", 6: "ip6"}
SIDES = (("source", "saddr", "sport"), ("destination", "daddr", "dport"))


@dataclass(frozen=True)
class Owner:
    """Whose rules these are: how logs and comments name it (``default/np/x/allow`` or ``profile kns.x``)."""

    name: str
    direction: str


def action(rule: CompiledRule, owner: Owner) -> str:
    if rule.action == "Allow":
        return f"meta mark set meta mark | {mark(MARK_ACCEPT)} return"
    if rule.action == "Pass":
        return f"meta mark set meta mark | {mark(MARK_PASS)} return"
    if rule.action == "Deny":
        return "drop"
    return f"log prefix {quote(nft_names.log_prefix(owner.name, owner.direction, rule.index))}"


def _family_specific(rule: CompiledRule) -> bool:
    return any(
        side.nets or side.not_nets or side.selector or side.not_selector or side.named_ports or side.not_named_ports
        for side in (rule.source, rule.destination)
    )


def _anonymous(items: list[str]) -> str:
    return items[0] if len(items) == 1 else "{ " + ", ".join(items) + " }"


def _nets(networks: tuple[IPNetwork, ...], family: int) -> str:
    return _anonymous([element(n) for n in networks if n.version == family])


def _ports(ports: tuple[Port, ...]) -> str:
    return _anonymous([str(p.min_port) if p.min_port == p.max_port else f"{p.min_port}-{p.max_port}" for p in ports])


def _icmp(rule: CompiledRule) -> list[str]:
    word = "icmpv6" if rule.protocol == 58 else "icmp"
    parts = []
    if rule.icmp is not None:
        if rule.icmp.type is not None:
            parts.append(f"{word} type {rule.icmp.type}")
        if rule.icmp.code is not None:
            parts.append(f"{word} code {rule.icmp.code}")
    if rule.not_icmp is not None and rule.not_icmp.type is not None:
        if rule.not_icmp.code is None:
            parts.append(f"{word} type != {rule.not_icmp.type}")
        else:
            parts.append(f"{word} type . {word} code != {{ {rule.not_icmp.type} . {rule.not_icmp.code} }}")
    return parts


class RuleRenderer:
    """Renders the rules of policies and profiles, naming the sets they use in ``sets``."""

    def __init__(self, sets: SetRegistry) -> None:
        self.sets = sets

    def render(self, rule: CompiledRule, owner: Owner) -> list[str]:
        if _family_specific(rule):
            families: list[int | None] = [v for v in (4, 6) if exists_for_family(rule, v)]
        elif rule.ip_version is None or exists_for_family(rule, rule.ip_version):
            families = [rule.ip_version]
        else:
            families = []
        out = []
        for family in families:
            out += self._render(rule, owner, family)
        return out

    def _render(self, rule: CompiledRule, owner: Owner, family: int | None) -> list[str]:
        head = [f"meta nfproto ipv{family}"] if family else []
        if rule.protocol is not None:
            head.append(f"meta l4proto {rule.protocol}")
        if rule.not_protocol is not None:
            head.append(f"meta l4proto != {rule.not_protocol}")
        matches = [*head, *_icmp(rule)]
        blocks: list[tuple[int, str]] = []
        for side_name, addr, port in SIDES:
            side: CompiledEntity = getattr(rule, side_name)
            matches += self._side(rule, side, side_name, addr, port, family, head, blocks)
        comment = quote(f"{owner.name} {owner.direction} rule {rule.index}")
        main = " ".join([*matches, action(rule, owner), "comment", comment])
        if not blocks:
            return [main]
        used = 0
        for bit, _ in blocks:
            used |= bit
        return [nft_names.clear(used), *(text for _, text in blocks), main]

    def _side(
        self,
        rule: CompiledRule,
        side: CompiledEntity,
        side_name: str,
        addr: str,
        port: str,
        family: int | None,
        head: list[str],
        blocks: list[tuple[int, str]],
    ) -> list[str]:
        parts = []
        word = ADDRESS_WORD[family] if family else ""
        if family is not None:
            if side.nets:
                parts.append(f"{word} {addr} {_nets(side.nets, family)}")
            if side.not_nets and any(n.version == family for n in side.not_nets):
                parts.append(f"{word} {addr} != {_nets(side.not_nets, family)}")
            if side.selector is not None:
                parts.append(f"{word} {addr} @{self.sets.selector(side.selector, family)}")
            if side.not_selector is not None:
                parts.append(f"{word} {addr} != @{self.sets.selector(side.not_selector, family)}")
        lookup_protocol = named_port_protocol(rule.protocol)

        def named_lookup(name: str, negated: bool) -> str:
            assert family is not None  # named ports make a rule family-specific
            set_name = self.sets.named_port(side.selector, name, lookup_protocol, family)
            return f"{word} {addr} . meta l4proto . th {port} {'!= ' if negated else ''}@{set_name}"

        alternatives = [f"th {port} {_ports(side.ports)}"] if side.ports else []
        alternatives += [named_lookup(name, False) for name in side.named_ports]
        if len(alternatives) == 1:
            parts.append(alternatives[0])
        elif alternatives:
            bit = MARK_SCRATCH[side_name]
            blocks += [(bit, " ".join([*head, alt, f"meta mark set meta mark | {mark(bit)}"])) for alt in alternatives]
            parts.append(f"meta mark & {mark(bit)} != 0")
        if side.not_ports:
            parts.append(f"th {port} != {_ports(side.not_ports)}")
        parts += [named_lookup(name, True) for name in side.not_named_ports]
        return parts
