"""The firewall plugin's table: forwarding allowed for container addresses, per-bridge isolation.

    table inet pycni_firewall
      set allow4 / allow6        container addresses (one element per address, commented)
      set isolated_bridges       bridges with ingressPolicy same-bridge or isolated
      chain admin                the administrator's own rules: created empty, never edited
      chain isolation            one rule per isolated bridge (comment "bridge:<name>")
      chain forward (filter hook forward, priority filter, policy accept)
          jump admin, jump isolation,
          replies to allowed addresses and traffic from them: accept

The layout mirrors the reference iptables backend (CNI-FORWARD, CNI-ADMIN,
CNI-ISOLATION-STAGE-1/2) in one nftables table. Unlike it, nothing outlives
its users: attachments are recorded per bridge (:mod:`pycni.nft.attachments`),
a bridge's isolation rules go with its last attachment (a later network on
that bridge with ``open`` is not isolated by a stale rule), and the table with
the last attachment, including attachments without addresses (L2 only).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from pycni import nft
from pycni.nft import attachments
from pycni.spec.result import IPInterface

FAMILY = "inet"
TABLE = "pycni_firewall"
T = f"{FAMILY} {TABLE}"


def render_base() -> list[str]:
    return [
        f"add table {T}",
        f"add set {T} allow4 {{ type ipv4_addr ; }}",
        f"add set {T} allow6 {{ type ipv6_addr ; }}",
        f"add set {T} isolated_bridges {{ type ifname ; }}",
        f"add chain {T} admin",
        f"add chain {T} isolation",
        f"add chain {T} forward {{ type filter hook forward priority filter ; policy accept ; }}",
        f"flush chain {T} forward",
        f"add rule {T} forward jump admin",
        f"add rule {T} forward jump isolation",
        f"add rule {T} forward ip daddr @allow4 ct state established,related accept",
        f"add rule {T} forward ip saddr @allow4 accept",
        f"add rule {T} forward ip6 daddr @allow6 ct state established,related accept",
        f"add rule {T} forward ip6 saddr @allow6 accept",
    ]


def render_allow(addresses: Sequence[IPInterface], comment: str) -> list[str]:
    quoted = nft.quote(comment)
    return [f"add element {T} allow{a.version} {{ {a.ip} comment {quoted} }}" for a in addresses]


def render_isolation(bridge: str, policy: str) -> list[str]:
    """Rules for one bridge: never forward to another isolated bridge; with ``isolated``, not within it either."""
    comment = nft.quote(f"bridge:{bridge}")
    lines = [
        f'add element {T} isolated_bridges {{ "{bridge}" }}',
        f'add rule {T} isolation iifname "{bridge}" oifname != "{bridge}" oifname @isolated_bridges drop '
        f"comment {comment}",
    ]
    if policy == "isolated":
        lines.append(f'add rule {T} isolation iifname "{bridge}" oifname "{bridge}" drop comment {comment}')
    return lines


@dataclass
class State:
    present: bool  # the table and its chains exist: a transaction need only add
    elements: list[tuple[str, str, str]]  # (set, address, comment)
    isolation: list[tuple[int, str]]  # (handle, comment) of the rules in ``isolation``
    isolated: set[str]  # elements of ``isolated_bridges``

    @property
    def isolation_comments(self) -> set[str]:
        return {comment for _, comment in self.isolation}


def live_state() -> State:
    elements: list[tuple[str, str, str]] = []
    isolation: list[tuple[int, str]] = []
    isolated: set[str] = set()
    chains: set[str] = set()
    for obj in nft.list_objects("table", FAMILY, TABLE):
        if "chain" in obj:
            chains.add(str(obj["chain"]["name"]))
        body = obj.get("set")
        if body is not None and body.get("name") in ("allow4", "allow6"):
            for entry in body.get("elem", []):
                elem = entry.get("elem", {}) if isinstance(entry, dict) else {}
                if elem:
                    elements.append((body["name"], str(elem.get("val")), str(elem.get("comment", ""))))
        elif body is not None and body.get("name") == "isolated_bridges":
            isolated.update(str(entry) for entry in body.get("elem", []) if isinstance(entry, str))
        rule = obj.get("rule")
        if rule is not None and rule.get("chain") == "isolation":
            isolation.append((int(rule["handle"]), str(rule.get("comment", ""))))
    return State({"admin", "isolation", "forward"} <= chains, elements, isolation, isolated)


def member(comment: str) -> str:
    """An attachment's record name: its network tag, then a hash of its comment (which may not fit a file name)."""
    return f"{comment.split(':', 1)[0]}-{hashlib.sha512(comment.encode()).hexdigest()[:32]}"


def bridge_group(bridge: str) -> str:
    """The record group of the attachments on ``bridge`` (whose isolation rules they share)."""
    return f"bridge-{bridge}" if bridge else "no-bridge"


def add(addresses: Sequence[IPInterface], comment: str, bridge: str, policy: str) -> None:
    """Record the attachment under its bridge and allow its addresses (isolating the bridge if asked)."""
    with nft.locked(TABLE):
        records = attachments.Records(TABLE)
        group = bridge_group(bridge)
        records.add(group, member(comment))
        try:
            state = live_state()
            lines = [] if state.present else render_base()
            lines += [f"delete element {T} {s} {{ {a} }}" for s, a, c in state.elements if c == comment]
            lines += render_allow(addresses, comment)
            if policy in ("same-bridge", "isolated") and bridge and f"bridge:{bridge}" not in state.isolation_comments:
                lines += render_isolation(bridge, policy)
            nft.run("\n".join(lines) + "\n", "add firewall rules")
        except BaseException:
            records.remove(member(comment), [group])
            records.tidy()
            raise


def remove(comments: set[str], action: str, network_tag: str = "", keep: set[str] | None = None) -> None:
    """Forget these attachments and remove their elements, in one commit.

    With ``network_tag`` and ``keep`` (GC), also every attachment of that
    network whose comment is not in ``keep``. A bridge's isolation rules go
    with its last attachment, the table with the last attachment of all.
    """
    with nft.locked(TABLE):
        records = attachments.Records(TABLE)
        emptied = [group for comment in comments for group in records.remove(member(comment))]
        if keep is not None:
            kept = {member(comment) for comment in keep}
            for group, members in records.groups().items():
                for name in members:
                    if name.startswith(f"{network_tag}-") and name not in kept:
                        emptied += records.remove(name, [group])
        if emptied:
            records.tidy()
        used = records.groups()
        state = live_state()
        if not state.elements and not state.isolation and not state.present:
            return
        mine = [(s, a) for s, a, c in state.elements if c in comments]
        if not used and len(mine) == len(state.elements):
            nft.run(f"delete table {T}\n", action)
            return
        lines = [f"delete element {T} {s} {{ {a} }}" for s, a in mine]
        for bridge in sorted(state.isolated):
            if bridge_group(bridge) not in used:
                lines += [
                    f"delete rule {T} isolation handle {h}" for h, c in state.isolation if c == f"bridge:{bridge}"
                ]
                lines.append(f'delete element {T} isolated_bridges {{ "{bridge}" }}')
        nft.run("".join(line + "\n" for line in lines), action)


def present(comment: str) -> set[str]:
    """The allowed addresses recorded for one attachment."""
    return {a for _, a, c in live_state().elements if c == comment}
