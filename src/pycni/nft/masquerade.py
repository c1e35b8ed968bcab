"""ipMasq for bridge and ptp, in the reference's nftables table.

Table ``inet cni_plugins_masquerade``: chain ``postrouting`` (nat hook)
returns for multicast and jumps to ``masq_checks``. Where the reference puts
one rule per container address there, pycni puts one rule per network and
subnet: masquerade traffic from the subnet to anything outside it. That is
the same traffic (every container address is in its subnet) with O(networks)
rules instead of O(containers), and it makes a pod's ADD and DEL free of
nftables commits once its network has one. Like the bridge device, the
network's rule outlives its last container; GC with no valid attachment left
removes it (and the table once it is empty).

An address whose prefix covers only itself (/32, /128) has no subnet to share:
it gets the reference's per-attachment rule, removed by that attachment's DEL.
Comments start with a hash of the network, so DEL and GC find exactly their
own rules, beside any the Go plugins (``ipMasqBackend: nftables``) keep here.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from pycni import nft
from pycni.spec.result import IPInterface

FAMILY = "inet"
TABLE = "cni_plugins_masquerade"
CHAIN = "masq_checks"
T = f"{FAMILY} {TABLE}"


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


def shares_subnet(address: IPInterface) -> bool:
    """Whether the address's prefix holds other addresses (a per-network rule then covers it)."""
    return address.network.num_addresses > 1


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

    Only additions when the table exists: in this kernel a commit that deletes
    or redeclares a hooked chain waits ~10 ms for RCU, an addition does not.
    Returns an empty script when there is nothing to add.
    """
    present = set(existing)
    lines: list[str] = []
    for address in addresses:
        if shares_subnet(address):
            comment = subnet_comment(network, address.network)
            if comment not in present:
                lines.append(_rule(str(address.network), address.network, comment))
                present.add(comment)
        else:
            lines.append(_rule(str(address.ip), address.network, instance_comment(network, ifname, container_id)))
    lines = [f"delete rule {T} {CHAIN} handle {handle}" for handle in stale_handles] + lines
    if not lines:
        return ""
    return "\n".join([*(render_skeleton() if skeleton else []), *lines]) + "\n"


@dataclass
class State:
    present: bool  # the table and its chains exist
    rules: list[tuple[int, str]]  # (handle, comment) of every rule in masq_checks


def live_state() -> State:
    chains, rules = nft.list_table(FAMILY, TABLE)
    return State(
        {CHAIN, "postrouting"} <= chains,
        [(int(r["handle"]), str(r.get("comment", ""))) for r in rules if r.get("chain") == CHAIN],
    )


def setup(addresses: Sequence[IPInterface], network: str, ifname: str, container_id: str) -> None:
    """Make sure the attachment's traffic is masqueraded: usually only a look, no commit."""
    prefix = instance_hash(network, ifname, container_id)
    with nft.locked(TABLE):
        state = live_state()
        stale = [h for h, comment in state.rules if comment.startswith(prefix)]
        comments = [comment for _, comment in state.rules]
        script = render_setup(addresses, network, ifname, container_id, comments, stale, skeleton=not state.present)
        nft.run(script, "set up ipMasq")


def missing(addresses: Sequence[IPInterface], network: str, ifname: str, container_id: str) -> list[str]:
    """CHECK: the addresses no rule masquerades."""
    comments = {comment for _, comment in live_state().rules}
    return [
        str(address)
        for address in addresses
        if (
            subnet_comment(network, address.network)
            if shares_subnet(address)
            else instance_comment(network, ifname, container_id)
        )
        not in comments
    ]


def _remove(select: Callable[[str], bool], action: str) -> None:
    """Delete the rules whose comment ``select`` picks; the whole table with the last of them."""
    with nft.locked(TABLE):
        rules = live_state().rules
        doomed = [h for h, comment in rules if select(comment)]
        if not doomed:
            return
        if len(doomed) == len(rules):
            nft.run(f"delete table {T}\n", action)
        else:
            nft.run("".join(f"delete rule {T} {CHAIN} handle {h}\n" for h in doomed), action)


def teardown(network: str, ifname: str, container_id: str) -> None:
    """Remove the attachment's own (host-prefix) rules, if it has any; the network's rule stays."""
    prefix = instance_hash(network, ifname, container_id)
    _remove(lambda comment: comment.startswith(prefix), "tear down ipMasq")


def gc(network: str, valid: Iterable[tuple[str, str]]) -> None:
    """Remove stale attachments' rules; with no valid attachment left, the network's rules too."""
    valid = list(valid)
    keep = {instance_comment(network, ifname, cid) for cid, ifname in valid}
    prefix = network_hash(network)
    subnet_prefix = f"{prefix}-subnet,"

    def stale(comment: str) -> bool:
        if comment.startswith(subnet_prefix):
            return not valid
        return comment.startswith(prefix) and comment not in keep

    _remove(stale, "garbage-collect ipMasq")
