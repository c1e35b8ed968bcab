"""ipMasq for bridge and ptp, in the reference's nftables table.

Table ``inet cni_plugins_masquerade``: chain ``postrouting`` (nat hook)
returns for multicast and jumps to ``masq_checks``. Where the reference puts
one rule per container address there, pycni puts one rule per network and
subnet: masquerade traffic from the subnet to anything outside it. That is
the same traffic (every container address is in its subnet) with O(networks)
rules instead of O(containers), and it makes a pod's ADD and DEL free of
nftables commits once its network has one.

The rule goes with the last attachment of its network on that subnet, and the
table with the last rule, so the node is as it was before the first ADD (the
reference deletes its per-container rules but keeps the table). Who uses a
subnet rule is recorded in :mod:`pycni.nft.attachments`: ADD records itself
and ensures the rule under the table's lock; DEL removes its record and, if
the subnet has none left, hands :func:`reap` to ``after_reply``, because
deleting a rule is an nftables commit that waits for RCU (10-40 ms here) and
the daemon runs it after replying. The reap looks again under the lock, so an
ADD racing it either finds the rule or adds it anew. A reap that never ran
(the daemon died after replying) is done by the next ADD or DEL, which lists
the table anyway and sees the orphan, or by GC.

An address whose prefix covers only itself (/32, /128) has no subnet to share:
it gets the reference's per-attachment rule, removed by that attachment's DEL.
Comments start with a hash of the network, so DEL and GC find exactly their
own rules, beside any the Go plugins (``ipMasqBackend: nftables``) keep here.
A subnet rule is known by that hash and the subnet it matches (read from the
rule itself: a long network name truncates the comment).
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pycni import nft
from pycni.nft import attachments
from pycni.spec.result import IPInterface

FAMILY = "inet"
TABLE = "cni_plugins_masquerade"
CHAIN = "masq_checks"
T = f"{FAMILY} {TABLE}"
SUBNET_MARK = "-subnet,"

Defer = Callable[[Callable[[], None]], None]  # CmdArgs.after_reply


def _hash(text: str) -> str:
    return hashlib.sha512(text.encode()).hexdigest()[:16]


def network_hash(network: str) -> str:
    return _hash(network)


def instance_hash(network: str, ifname: str, container_id: str) -> str:
    return f"{_hash(network)}-{_hash(f'{ifname}:{container_id}')}"


def instance_comment(network: str, ifname: str, container_id: str) -> str:
    comment = (
        f"{instance_hash(network, ifname, container_id)}, net: {network}, if: {ifname}, id: {container_id}"
    ).replace('"', "")
    return comment[: nft.COMMENT_MAX]


def subnet_comment(network: str, subnet: ipaddress.IPv4Network | ipaddress.IPv6Network) -> str:
    return f"{network_hash(network)}-subnet, net: {network}, subnet: {subnet}".replace('"', "")[: nft.COMMENT_MAX]


def subnet_group(network_hash: str, subnet: str) -> str:
    """The attachment-record group of one network's subnet rule: ``<network hash>-<subnet with _ for />``."""
    return f"{network_hash}-{subnet.replace('/', '_')}"


def shares_subnet(address: IPInterface) -> bool:
    """Whether the address's prefix holds other addresses (a per-network rule then covers it)."""
    return address.network.num_addresses > 1


def _groups_of(addresses: Iterable[IPInterface], network: str) -> list[str]:
    tag = network_hash(network)
    return sorted({subnet_group(tag, str(a.network)) for a in addresses if shares_subnet(a)})


def render_skeleton() -> list[str]:
    """The table, its chains and the postrouting rules: written once, when the table is missing."""
    return [
        f'add table {T} {{ comment "Masquerading for plugins from github.com/containernetworking/plugins" ; }}',
        f'add chain {T} {CHAIN} {{ comment "Masquerade traffic from certain IPs to any (non-multicast) IP outside '
        'their subnet" ; }',
        f"add chain {T} postrouting {{ type nat hook postrouting priority srcnat ; }}",
        f"add rule {T} postrouting ip daddr 224.0.0.0/4 return",
        f"add rule {T} postrouting ip6 daddr ff00::/8 return",
        f"add rule {T} postrouting goto {CHAIN}",
    ]


def _rule(source: str, subnet: ipaddress.IPv4Network | ipaddress.IPv6Network, comment: str) -> str:
    proto = "ip" if subnet.version == 4 else "ip6"
    return (
        f"add rule {T} {CHAIN} {proto} saddr {source} {proto} daddr != {subnet} masquerade comment {nft.quote(comment)}"
    )


def render_setup(
    addresses: Sequence[IPInterface],
    network: str,
    ifname: str,
    container_id: str,
    existing: Iterable[str] = (),
    stale_handles: Iterable[int] = (),
    skeleton: bool = True,
) -> str:
    """The transaction for one attachment: its network's subnet rules if missing, host-prefix rules.

    ``existing`` names the subnet rules present (:func:`subnet_group`). Only
    additions when the table exists: in this kernel a commit that deletes or
    redeclares a hooked chain waits for RCU, an addition does not. Returns an
    empty script when there is nothing to add.
    """
    present = set(existing)
    tag = network_hash(network)
    lines: list[str] = []
    for address in addresses:
        if shares_subnet(address):
            group = subnet_group(tag, str(address.network))
            if group not in present:
                lines.append(_rule(str(address.network), address.network, subnet_comment(network, address.network)))
                present.add(group)
        else:
            lines.append(_rule(str(address.ip), address.network, instance_comment(network, ifname, container_id)))
    lines = [f"delete rule {T} {CHAIN} handle {handle}" for handle in stale_handles] + lines
    if not lines:
        return ""
    return "\n".join([*(render_skeleton() if skeleton else []), *lines]) + "\n"


# -- reading the live table ---------------------------------------------------


@dataclass(frozen=True)
class Rule:
    handle: int
    comment: str
    source: str = ""  # the saddr prefix it matches ("" when it matches one address, or nothing)

    @property
    def group(self) -> str | None:
        """The record group of a pycni subnet rule (:func:`subnet_group`); None for any other rule."""
        tag, mark, _ = self.comment.partition(SUBNET_MARK)
        if not mark or len(tag) != 16 or not self.source:
            return None
        return subnet_group(tag, self.source)


@dataclass
class State:
    present: bool  # the table and its chains exist
    rules: list[Rule]  # every rule in masq_checks

    def groups(self) -> set[str]:
        return {group for rule in self.rules if (group := rule.group) is not None}


def source_prefix(rule: Mapping[str, Any]) -> str:
    """The ``saddr`` prefix a rule matches, from its JSON expression."""
    for expression in rule.get("expr", []):
        match = expression.get("match") if isinstance(expression, dict) else None
        if not isinstance(match, dict):
            continue
        left, right = match.get("left"), match.get("right")
        payload = left.get("payload") if isinstance(left, dict) else None
        prefix = right.get("prefix") if isinstance(right, dict) else None
        if isinstance(payload, dict) and payload.get("field") == "saddr" and isinstance(prefix, dict):
            return str(ipaddress.ip_network(f"{prefix['addr']}/{prefix['len']}", strict=False))
    return ""


def live_state() -> State:
    chains, rules = nft.list_table(FAMILY, TABLE)
    return State(
        {CHAIN, "postrouting"} <= chains,
        [Rule(int(r["handle"]), str(r.get("comment", "")), source_prefix(r)) for r in rules if r.get("chain") == CHAIN],
    )


def orphans(state: State, used: Collection[str]) -> list[Rule]:
    """pycni's subnet rules whose group has no attachment recorded in ``used``."""
    return [rule for rule in state.rules if (group := rule.group) is not None and group not in used]


def _delete(state: State, doomed: Sequence[Rule], action: str) -> None:
    """Delete ``doomed`` rules in one commit; the whole table when nothing else is left in it."""
    if not doomed:
        return
    if {rule.handle for rule in doomed} >= {rule.handle for rule in state.rules}:
        nft.run(f"delete table {T}\n", action)
    else:
        nft.run("".join(f"delete rule {T} {CHAIN} handle {rule.handle}\n" for rule in doomed), action)


# -- ADD, DEL, GC -------------------------------------------------------------


def setup(addresses: Sequence[IPInterface], network: str, ifname: str, container_id: str, after_reply: Defer) -> None:
    """Record the attachment and make sure its traffic is masqueraded: usually only a look, no commit.

    Another network's orphaned rule (a reap that never ran) is reaped after the reply.
    """
    member = instance_hash(network, ifname, container_id)
    groups = _groups_of(addresses, network)
    with nft.locked(TABLE):
        records = attachments.Records(TABLE)
        try:
            for group in groups:
                records.add(group, member)
            state = live_state()
            stale = [rule.handle for rule in state.rules if rule.comment.startswith(member)]
            script = render_setup(
                addresses, network, ifname, container_id, state.groups(), stale, skeleton=not state.present
            )
            nft.run(script, "set up ipMasq")
        except BaseException:
            records.remove(member, groups)
            records.tidy()
            raise
        orphaned = orphans(state, records.groups())
    if orphaned:
        after_reply(reap)


def missing(addresses: Sequence[IPInterface], network: str, ifname: str, container_id: str) -> list[str]:
    """CHECK: the addresses no rule masquerades."""
    state = live_state()
    groups = state.groups()
    comments = {rule.comment for rule in state.rules}
    tag = network_hash(network)
    return [
        str(address)
        for address in addresses
        if (
            subnet_group(tag, str(address.network)) not in groups
            if shares_subnet(address)
            else instance_comment(network, ifname, container_id) not in comments
        )
    ]


def teardown(network: str, ifname: str, container_id: str, after_reply: Defer) -> None:
    """Forget the attachment and remove its own (host-prefix) rules; unused subnet rules go after the reply.

    When the attachment has rules of its own a deletion commit is due anyway,
    and the unused subnet rules go in it.
    """
    member = instance_hash(network, ifname, container_id)
    with nft.locked(TABLE):
        records = attachments.Records(TABLE)
        emptied = records.remove(member, prefix=network_hash(network))
        state = live_state()
        own = [rule for rule in state.rules if rule.comment.startswith(member)]
        orphaned = orphans(state, records.groups())
        if own:
            _delete(state, own + orphaned, "tear down ipMasq")
            records.tidy()
            return
    if orphaned or emptied:
        after_reply(reap)


def reap() -> None:
    """Delete the subnet rules no attachment uses (the table with the last rule) and empty record groups.

    Safe to run late or twice: it decides from what it finds under the lock.
    """
    with nft.locked(TABLE):
        records = attachments.Records(TABLE)
        state = live_state()
        _delete(state, orphans(state, records.groups()), "remove unused ipMasq rules")
        records.tidy()


def gc(network: str, valid: Iterable[tuple[str, str]] | None) -> None:
    """Reap unused subnet rules; with the valid attachments listed, first forget the others and drop their rules.

    ``valid`` holds (container ID, ifname) pairs; ``None`` (no list) only reaps.
    """
    tag = network_hash(network)
    with nft.locked(TABLE):
        records = attachments.Records(TABLE)
        state = live_state()
        stale: list[Rule] = []
        if valid is not None:
            valid = list(valid)
            keep = {instance_hash(network, ifname, cid) for cid, ifname in valid}
            for group, members in records.groups().items():
                if group.startswith(f"{tag}-"):
                    for member in members - keep:
                        records.remove(member, [group])
            comments = {instance_comment(network, ifname, cid) for cid, ifname in valid}
            stale = [
                rule
                for rule in state.rules
                if rule.group is None and rule.comment.startswith(f"{tag}-") and rule.comment not in comments
            ]
        _delete(state, stale + orphans(state, records.groups()), "garbage-collect ipMasq")
        records.tidy()
