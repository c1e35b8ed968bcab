"""pycni's nftables objects and routes in this network namespace.

Tables with pycni's own names go whole. The masquerade table carries the
reference plugins' name (``inet cni_plugins_masquerade``, which the Go bridge
with ``ipMasqBackend: nftables`` shares), so only the rules of pycni networks
go (comments start with the network's hash), and the table too when nothing
else is left in it; so do the bridge plugin's MAC spoof checks in the
reference's ``bridge nat`` (:func:`find_spoofcheck`). Routes are pycni's by their protocol number alone
(:data:`pycni.dataplane.RTPROT_PYCNI`): BIRD's (12), the kernel's and the
user's (boot, static) have others.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from pycni import nft
from pycni.dataplane import RTPROT_PYCNI
from pycni.net import route as net_route
from pycni.nft import calico as nft_calico
from pycni.nft import firewall as nft_firewall
from pycni.nft import flannel as nft_flannel
from pycni.nft import masquerade, spoofcheck
from pycni.nft import portmap as nft_portmap
from pycni.policy import nft_names
from pycni.reset import items

if TYPE_CHECKING:
    from pyroute2 import IPRoute

# Whole tables only pycni writes: (family, table, who writes it).
FABRIC_TABLES = (
    (nft_flannel.FAMILY, nft_flannel.TABLE, "flanneld's table"),
    (nft_calico.FAMILY, nft_calico.TABLE, "calico-node's natOutgoing table"),
    (nft_names.FAMILY, nft_names.TABLE, "calico-node's policy table"),
)
PLUGIN_TABLES = (
    (nft_firewall.FAMILY, nft_firewall.TABLE, "firewall plugin's table"),
    (nft_portmap.FAMILY, nft_portmap.TABLE, "portmap plugin's table"),
)


def _present(family: str, table: str) -> bool:
    return bool(nft.list_objects("table", family, table))


def find_tables(networks: Iterable[str], whole: bool) -> list[items.Item]:
    """pycni's tables (``whole``: the node's, not one network's) and its networks' masquerade rules."""
    found: list[items.Item] = []
    if whole:
        for family, table, why in FABRIC_TABLES + PLUGIN_TABLES:
            if _present(family, table):
                found.append(items.TableItem(items.NFTABLES, f"{family} {table}", why, family=family, table=table))
    hashes = {masquerade.network_hash(name): name for name in networks}
    state = masquerade.live_state()
    ours = [rule for rule in state.rules if rule.comment[:16] in hashes]
    if ours and len(ours) == len(state.rules):
        names = ", ".join(sorted({hashes[r.comment[:16]] for r in ours}))
        found.append(
            items.TableItem(
                items.NFTABLES,
                masquerade.T,
                f"ipMasq table holding only rules of pycni networks ({names})",
                family=masquerade.FAMILY,
                table=masquerade.TABLE,
            )
        )
    else:
        for rule in ours:
            found.append(
                items.RuleItem(
                    items.NFTABLES,
                    f"{masquerade.T} {masquerade.CHAIN} handle {rule.handle}",
                    f"ipMasq rule of pycni network {hashes[rule.comment[:16]]}",
                    family=masquerade.FAMILY,
                    table=masquerade.TABLE,
                    chain=masquerade.CHAIN,
                    handle=rule.handle,
                )
            )
    return found


SPOOF_PREFIX = "macspoofchk-"


def _iifname(rule: dict[str, Any]) -> str:
    for expression in rule.get("expr", []):
        match = expression.get("match") if isinstance(expression, dict) else None
        left = match.get("left") if isinstance(match, dict) else None
        if isinstance(left, dict) and left.get("meta", {}).get("key") == "iifname":
            return str(match.get("right", "")) if isinstance(match, dict) else ""
    return ""


def find_spoofcheck(attachments: set[str], ports: set[str]) -> list[items.Item]:
    """The bridge plugin's MAC spoof checks of pycni's attachments, in the reference's shared ``bridge nat``.

    An attachment is pycni's when a result cache of a pycni network names it
    (``<container ID>-<ifname>``) or its jump rule's ``iifname`` is a port of a
    pycni bridge. The table goes too when nothing else is in it.
    """
    chains, rules = nft.list_table(spoofcheck.FAMILY, spoofcheck.TABLE)
    t = f"{spoofcheck.FAMILY} {spoofcheck.TABLE}"
    ours: set[str] = set()
    for rule in rules:
        comment = str(rule.get("comment", ""))
        if rule.get("chain") == spoofcheck.BASE_CHAIN and comment.startswith(SPOOF_PREFIX):
            ref = comment[len(SPOOF_PREFIX) :]
            if ref in attachments or _iifname(rule) in ports:
                ours.add(ref)
    if not ours:
        return []
    mine = {name for ref in ours for name in spoofcheck.chain_names(ref)}
    others = [
        r for r in rules if str(r.get("comment", ""))[len(SPOOF_PREFIX) :] not in ours and r.get("chain") not in mine
    ]
    if not others and not chains - {spoofcheck.BASE_CHAIN, *mine}:
        why = "MAC spoof check table holding only pycni attachments' chains"
        return [items.TableItem(items.NFTABLES, t, why, family=spoofcheck.FAMILY, table=spoofcheck.TABLE)]
    found: list[items.Item] = []
    for rule in rules:
        comment = str(rule.get("comment", ""))
        if rule.get("chain") == spoofcheck.BASE_CHAIN and comment[len(SPOOF_PREFIX) :] in ours:
            found.append(
                items.RuleItem(
                    items.NFTABLES,
                    f"{t} {spoofcheck.BASE_CHAIN} handle {rule['handle']}",
                    f"MAC spoof check jump of pycni attachment {comment[len(SPOOF_PREFIX) :]}",
                    family=spoofcheck.FAMILY,
                    table=spoofcheck.TABLE,
                    chain=spoofcheck.BASE_CHAIN,
                    handle=int(rule["handle"]),
                )
            )
    for ref in sorted(ours):
        for chain in spoofcheck.chain_names(ref):  # the first jumps to the second: flushed and gone first
            if chain in chains:
                why = f"MAC spoof check chain of pycni attachment {ref}"
                found.append(
                    items.ChainItem(
                        items.NFTABLES,
                        f"{t} {chain}",
                        why,
                        family=spoofcheck.FAMILY,
                        table=spoofcheck.TABLE,
                        chain=chain,
                    )
                )
    return found


TYPE_NAMES = {
    net_route.RTN_LOCAL: "local",
    net_route.RTN_BLACKHOLE: "blackhole",
    net_route.RTN_UNREACHABLE: "unreachable",
}


def route_text(msg: net_route.RouteMsg, names: dict[int, str]) -> str:
    """A route as ``ip route`` shows it (device by name), with its table."""
    kind = "" if msg.type == net_route.RTN_UNICAST else f"{TYPE_NAMES.get(msg.type, f'type {msg.type}')} "
    via = f" via {msg.gateway}" if msg.gateway is not None else ""
    dev = f" dev {names.get(msg.oif, f'#{msg.oif}')}" if msg.oif else ""
    onlink = " onlink" if msg.onlink else ""
    return f"{kind}{msg.dst}{via}{dev}{onlink} table {msg.table}"


def find_routes(ipr: IPRoute) -> list[items.Item]:
    """Every route of pycni's protocol, in any table, either family."""
    names = {int(m["index"]): str(m.get("ifname")) for m in ipr.get_links()}
    found: list[items.Item] = []
    for family in (socket.AF_INET, socket.AF_INET6):
        for msg in net_route.dump(ipr, family):
            if msg.proto == RTPROT_PYCNI:
                why = f"protocol {RTPROT_PYCNI}, pycni's"
                found.append(items.RouteItem(items.ROUTES, route_text(msg, names), why, route=msg))
    return found
