"""pycni's nftables tables in this network namespace, against the attachments that should be using them.

Every shared rule is meant to go with its last user (:mod:`pycni.nft.attachments`),
so what is left with no user is a leftover: a DEL that never ran, a daemon that
died before its reap, an agent stopped without cleaning up. Users are known by
the attachment records (masquerade's subnet rules, the firewall table), by the
result cache (the firewall's and portmap's per-attachment elements, whose
comments name network, container and interface), and by the networks in the
config dir (the agents' tables). Only read: nothing is removed here.
"""

from __future__ import annotations

import os
import re

from pycni import nft as pycni_nft
from pycni.doctor.context import Node
from pycni.doctor.ipam import netns_alive
from pycni.doctor.model import Check, Finding, fail, listed, ok, warn
from pycni.nft import attachments, masquerade
from pycni.nft import calico as nft_calico
from pycni.nft import firewall as nft_firewall
from pycni.nft import flannel as nft_flannel
from pycni.nft import portmap as nft_portmap
from pycni.plugins.meta.firewall import comment_for as firewall_comment
from pycni.policy import nft_names
from pycni.runtime.cache import Attachment
from pycni.spec.errors import CNIError

_INSTANCE = re.compile(r"^[0-9a-f]{16}-[0-9a-f]{16}$")  # pycni's per-attachment masquerade comment (instance_hash)


def recorded_groups(node: Node, table: str) -> dict[str, set[str]]:
    """The attachment records of ``table`` in this namespace, read only (a dead namespace's count as none)."""
    path = os.path.join(node.options.attachments_dir, f"{table}-{pycni_nft.netns_inode()}")
    try:
        with open(os.path.join(path, attachments.COOKIE), encoding="utf-8") as handle:
            cookie = handle.read()
        groups = [g for g in os.listdir(path) if g != attachments.COOKIE]
    except OSError:
        return {}
    if cookie != attachments.netns_cookie():
        return {}
    found: dict[str, set[str]] = {}
    for group in groups:
        try:
            members = set(os.listdir(os.path.join(path, group)))
        except OSError:
            continue
        if members:
            found[group] = members
    return found


def _live(node: Node) -> list[Attachment]:
    try:
        return [a for a in node.results.attachments() if not a.netns or netns_alive(a.netns)]
    except CNIError:
        return []


def _masquerade(node: Node) -> list[str]:
    state = masquerade.live_state()
    if not state.present and not state.rules:
        return []
    orphaned = masquerade.orphans(state, recorded_groups(node, masquerade.TABLE))
    live = {masquerade.instance_hash(a.network, a.ifname, a.container_id) for a in _live(node)}
    own = [
        rule
        for rule in state.rules
        if rule.group is None and _INSTANCE.match(tag := rule.comment.split(",", 1)[0]) is not None and tag not in live
    ]
    return [f"{masquerade.T} rule {r.handle} ({r.comment.split(', ', 1)[-1][:60]})" for r in orphaned + own]


def _firewall(node: Node) -> list[str]:
    state = nft_firewall.live_state()
    if not state.present and not state.elements:
        return []
    live = {firewall_comment(a.network, a.container_id, a.ifname) for a in _live(node)}
    stale = sorted({f"{address} of {_who(comment)}" for _s, address, comment in state.elements if comment not in live})
    if not recorded_groups(node, nft_firewall.TABLE) and not state.elements:
        return [f"{nft_firewall.T} (no attachment recorded)"]
    return [f"{nft_firewall.T} element {item}" for item in stale]


def _who(comment: str) -> str:
    """``<container ID>/<ifname>`` from a ``<network tag>:<container ID>:<ifname>`` comment (or the hash)."""
    _tag, _, rest = comment.partition(":")
    return rest.replace(":", "/") if rest else comment


def _portmap(node: Node) -> list[str]:
    """Per attachment that is gone, its host ports (``ctr/eth0 (tcp/8081)``)."""
    state = nft_portmap.live_state()
    if not state.present and not state.elements and not state.rules:
        return []
    if not state.elements and not state.rules:
        return [f"{nft_portmap.T} (no mapping left)"]
    live = {nft_portmap.attachment_comment(a.network, a.container_id, a.ifname) for a in _live(node)}
    ports: dict[str, set[str]] = {}
    for element in state.elements:
        if element.comment and element.comment not in live:
            found = ports.setdefault(element.comment, set())
            if element.container.startswith("dnat"):
                found.add(element.key.replace(" . ", "/"))
    for _handle, comment in state.rules:
        if comment not in live:
            ports.setdefault(comment, set()).add("a conditioned rule")
    return [f"{_who(c)} ({', '.join(sorted(p)) or 'masquerading only'})" for c, p in sorted(ports.items())]


def _table_present(family: str, table: str) -> bool:
    return bool(pycni_nft.list_objects("table", family, table))


def _agents(node: Node) -> list[str]:
    found: list[str] = []
    flannel_used = node.networks_of("flannel") or os.path.lexists(node.options.subnet_file)
    if not flannel_used and _table_present(nft_flannel.FAMILY, nft_flannel.TABLE):
        found.append(f"{nft_flannel.T} (flanneld's, but no flannel network and no {node.options.subnet_file})")
    if not node.networks_of("calico"):
        for family, table, who in (
            (nft_calico.FAMILY, nft_calico.TABLE, "calico-node's natOutgoing"),
            (nft_names.FAMILY, nft_names.TABLE, "calico-node's policy"),
        ):
            if _table_present(family, table):
                found.append(f"{family} {table} ({who}, but no calico network)")
    return found


def check_tables(node: Node) -> list[Finding]:
    leftovers = _masquerade(node) + _firewall(node)
    ports = _portmap(node)
    agents = _agents(node)
    findings: list[Finding] = []
    if ports:
        findings.append(
            fail(
                "nft_tables",
                f"host port mappings of {len(ports)} attachment(s) that are gone: {listed(ports, 3)}: the ports "
                "lead to addresses nobody holds and cannot be mapped again",
                "run CNI GC for the network (pycni gc NETWORK --keep ID/IF of the live pods), or delete the "
                "elements with nft",
            )
        )
    if leftovers:
        findings.append(
            warn(
                "nft_tables",
                f"{len(leftovers)} nftables object(s) of pycni's plugins with no attachment using them: "
                f"{listed(leftovers, 3)}",
                "run CNI GC for the network (pycni gc NETWORK --keep ID/IF of the live pods): it reaps unused rules "
                "and the table with the last one",
            )
        )
    if agents:
        findings.append(
            warn(
                "nft_tables",
                f"agent table(s) with no network using them: {listed(agents, 3)}",
                "stop the agent if it still runs, then pycni reset (it lists what it would remove; --yes removes)",
            )
        )
    if not findings:
        findings.append(ok("nft_tables", "every pycni nftables object has an attachment or network using it"))
    return findings


CHECKS = [Check("nft_tables", check_tables, "no pycni nftables table, rule or element left without a user")]
