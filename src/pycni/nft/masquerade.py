"""ipMasq for bridge and ptp: the reference's nftables backend, table for table.

Table ``inet cni_plugins_masquerade``: chain ``postrouting`` (nat hook)
returns for multicast and jumps to ``masq_checks``, which holds one rule per
container address: masquerade traffic from it to anything outside its
subnet. Each rule's comment starts with a hash of the network and of the
attachment, so DEL and GC find their own rules without touching others, and
the Go plugins (≥ 1.5, ``ipMasqBackend: nftables``) share the same table.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence

from pycni import nft
from pycni.spec.result import IPInterface

FAMILY = "inet"
TABLE = "cni_plugins_masquerade"
CHAIN = "masq_checks"


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


def render_skeleton() -> list[str]:
    """The table, its chains and the postrouting rules: written once, when the table is missing."""
    t = f"{FAMILY} {TABLE}"
    return [
        f'add table {t} {{ comment "Masquerading for plugins from github.com/containernetworking/plugins" ; }}',
        f'add chain {t} {CHAIN} {{ comment "Masquerade traffic from certain IPs to any (non-multicast) IP outside '
        'their subnet" ; }',
        f"add chain {t} postrouting {{ type nat hook postrouting priority srcnat ; }}",
        f"add rule {t} postrouting ip daddr 224.0.0.0/4 return",
        f"add rule {t} postrouting ip6 daddr ff00::/8 return",
        f"add rule {t} postrouting goto {CHAIN}",
    ]


def render_setup(
    addresses: Sequence[IPInterface],
    network: str,
    ifname: str,
    container_id: str,
    stale_handles: Iterable[int] = (),
    skeleton: bool = True,
) -> str:
    """The transaction that (re)installs the masquerade rules of one attachment.

    Only additions when the table exists: in this kernel any commit that
    deletes or redeclares a hooked chain waits ~10 ms for RCU, an addition not.
    """
    t = f"{FAMILY} {TABLE}"
    lines = render_skeleton() if skeleton else []
    lines += [f"delete rule {t} {CHAIN} handle {handle}" for handle in stale_handles]
    comment = nft.quote(instance_comment(network, ifname, container_id))
    for address in addresses:
        proto = "ip" if address.version == 4 else "ip6"
        lines.append(
            f"add rule {t} {CHAIN} {proto} saddr {address.ip} {proto} daddr != {address.network} masquerade "
            f"comment {comment}"
        )
    return "\n".join(lines) + "\n"


def _state() -> tuple[bool, list[tuple[int, str]]]:
    """Whether the table is set up, and the (handle, comment) of every rule in ``masq_checks``."""
    chains, rules = nft.list_table(FAMILY, TABLE)
    present = {CHAIN, "postrouting"} <= chains
    return present, [(int(r["handle"]), str(r.get("comment", ""))) for r in rules if r.get("chain") == CHAIN]


def setup(addresses: Sequence[IPInterface], network: str, ifname: str, container_id: str) -> None:
    prefix = instance_hash(network, ifname, container_id)
    with nft.locked(TABLE):
        present, rules = _state()
        stale = [h for h, comment in rules if comment.startswith(prefix)]
        script = render_setup(addresses, network, ifname, container_id, stale, skeleton=not present)
        nft.run(script, "set up ipMasq")


def _remove(select: Callable[[str], bool], action: str) -> None:
    """Delete the rules whose comment ``select`` picks; the whole table with the last of them."""
    with nft.locked(TABLE):
        _present, rules = _state()
        doomed = [h for h, comment in rules if select(comment)]
        if not doomed:
            return
        if len(doomed) == len(rules):
            nft.run(f"delete table {FAMILY} {TABLE}\n", action)
        else:
            nft.run("".join(f"delete rule {FAMILY} {TABLE} {CHAIN} handle {h}\n" for h in doomed), action)


def teardown(network: str, ifname: str, container_id: str) -> None:
    """Remove the attachment's rules; nothing to remove is success."""
    prefix = instance_hash(network, ifname, container_id)
    _remove(lambda comment: comment.startswith(prefix), "tear down ipMasq")


def gc(network: str, valid: Iterable[tuple[str, str]]) -> None:
    """Remove the network's rules of every attachment not in ``valid`` (container ID, ifname)."""
    keep = {instance_comment(network, ifname, cid) for cid, ifname in valid}
    prefix = network_hash(network)
    _remove(lambda comment: comment.startswith(prefix) and comment not in keep, "garbage-collect ipMasq")
