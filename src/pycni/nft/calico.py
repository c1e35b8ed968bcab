"""The Calico node agent's own nftables table: natOutgoing with Felix's sets and rule.

Felix (nftables mode) keeps one ``table ip calico`` with everything in it;
its natOutgoing part is two sets and one rule (``felix/rules/nat.go``,
``felix/nftables``)::

    set cali40all-ipam-pools  { type ipv4_addr; flags interval; ... }   every pool
    set cali40masq-ipam-pools { type ipv4_addr; flags interval; ... }   pools with natOutgoing
    chain nat-cali-nat-outgoing {
        ip saddr @cali40masq-ipam-pools ip daddr != @cali40all-ipam-pools masquerade fully-random
    }

so a pod's traffic to anything outside every pool leaves with the node's
address, and pod-to-pod traffic (any pool to any pool) is never translated.
pycni puts these in a table of the agent's own, ``ip calico-node``, hooked at
postrouting (``nat-POSTROUTING``, priority srcnat, as Felix's base chain), so
removing it at the agent's clean exit takes nothing else with it (the policy
engine's tables, kube-proxy's, the CNI plugins').

The whole table is one ``nft -f`` transaction (delete and re-add), so the
kernel never holds half of it. Whether the live table is still ours as
written is decided by its listing: right after a write the agent remembers
``nft list table`` of it, and a resync that lists the same text writes nothing.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence

from pycni import nft
from pycni.nft import engine

FAMILY = "ip"
TABLE = "calico-node"
T = f"{FAMILY} {TABLE}"
ALL_POOLS = "cali40all-ipam-pools"
MASQ_POOLS = "cali40masq-ipam-pools"
NAT_CHAIN = "nat-cali-nat-outgoing"
BASE_CHAIN = "nat-POSTROUTING"
RULE_COMMENT = "cali:pycni-nat-outgoing; natOutgoing of Calico IP pools"
_HANDLE = re.compile(r" # handle \d+")

Networks = Sequence[ipaddress.IPv4Network]


def _set(name: str, networks: Networks) -> list[str]:
    lines = [f"\tset {name} {{", "\t\ttype ipv4_addr", "\t\tflags interval"]
    if networks:
        lines.append(f"\t\telements = {{ {', '.join(str(n) for n in networks)} }}")
    lines.append("\t}")
    return lines


def render(all_pools: Networks, masq_pools: Networks) -> str:
    """The table as an nft script (the ``table ... { }`` block)."""
    lines = [f"table {T} {{"]
    lines += _set(ALL_POOLS, all_pools)
    lines += _set(MASQ_POOLS, masq_pools)
    lines += [
        f"\tchain {BASE_CHAIN} {{",
        "\t\ttype nat hook postrouting priority srcnat; policy accept;",
        f"\t\tjump {NAT_CHAIN}",
        "\t}",
        f"\tchain {NAT_CHAIN} {{",
        f"\t\tip saddr @{MASQ_POOLS} ip daddr != @{ALL_POOLS} masquerade fully-random"
        f" comment {nft.quote(RULE_COMMENT)}",
        "\t}",
        "}",
    ]
    return "\n".join(lines) + "\n"


def transaction(all_pools: Networks, masq_pools: Networks) -> str:
    """Replace the table atomically: make sure it exists, delete it, write it whole (one transaction)."""
    return f"add table {T}\ndelete table {T}\n" + render(all_pools, masq_pools)


def live() -> str | None:
    """``nft list table ip calico-node`` without handles, or None if the table does not exist."""
    status, output, errors = engine.execute(f"list table {T}")
    if status != 0:
        if "No such file or directory" in errors:
            return None
        raise nft.NftError(f"list table {T}", errors)
    return _HANDLE.sub("", output)


def ensure(all_pools: Networks, masq_pools: Networks, known: str | None) -> tuple[bool, str | None]:
    """Make the table hold exactly these pools; ``known`` is the listing last written.

    Returns (written, the listing now): nothing is written when the live
    table lists as ``known`` and ``known`` is the listing of these pools.
    """
    with nft.locked(TABLE):
        current = live()
        if known is not None and current == known:
            return False, current
        nft.run(transaction(all_pools, masq_pools), "install the natOutgoing table")
        return True, live()


def remove() -> bool:
    """Delete the table (the agent's clean exit, or no natOutgoing pool left); whether it was there."""
    with nft.locked(TABLE):
        if live() is None:
            return False
        nft.run(f"delete table {T}\n", "remove the natOutgoing table")
        return True
