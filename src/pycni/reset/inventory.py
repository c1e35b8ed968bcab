"""Find everything of pycni's on this node: the records :mod:`.remove` removes and the listing prints.

The node is the calling thread's network namespace plus the paths in
:class:`~pycni.reset.paths.Paths`. With a network named, only that network's
objects are listed (its config file, bridge, ifbs, masquerade rules, orphan
veths, IPAM directory, caches and the files its config names); the agents'
devices, tables, routes and state belong to the node and need a whole reset.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from pycni import nft
from pycni.net import netns
from pycni.reset import agents, conflists, files, items, links, tables
from pycni.reset.paths import Paths


class ResetError(Exception):
    """Bad input to reset (a network it does not know): one line, exit status 1."""


@dataclass
class Inventory:
    items: list[items.Item] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what looks like pycni's but stays, and why
    agents: list[str] = field(default_factory=list)  # this node's agents still running


def take(paths: Paths, network: str | None = None) -> Inventory:
    found = conflists.find(paths)
    nets = [n for n in found.networks if network is None or n.name == network]
    names = [n.name for n in nets if n.name]
    if network is not None and not nets:
        raise ResetError(f"no CNI config file of pycni's in {paths.cni_conf_dir} names network {network!r}")
    whole = network is None
    result = Inventory(notes=list(found.kept), agents=agents.running([paths.calico_pid_file]))
    result.items += [items.PathItem(items.CONFIG, n.path, n.why, path=n.path) for n in nets]
    result.items += tables.find_tables(names, whole)
    ipr = netns.iproute_here()
    try:
        checked = files.cache_attachments(paths.results_dir, names)
        result.items += tables.find_spoofcheck(checked, links.bridge_ports(ipr, nets))
        if whole:
            result.items += tables.find_routes(ipr)
        result.items += links.find(ipr, nets, paths.netns_dir, fabric=whole, only=network)
    finally:
        ipr.close()
    result.items += files.ipam(nets)
    result.items += files.caches(paths.results_dir, names)
    state = files.network_state(nets)
    if whole:
        state += files.node_state(paths, nft.netns_inode())
        installed, changed = conflists.recorded_elsewhere(paths)
        why = f"written by pycni install (recorded in {paths.installed_record})"
        state += [items.PathItem(items.CONFIG, path, why, path=path) for path in installed]
        result.notes += changed
        if os.path.exists(paths.installed_record):
            state.append(
                items.PathItem(
                    items.STATE, paths.installed_record, "pycni install's record", path=paths.installed_record
                )
            )
    result.items = files.dedupe(result.items + state)
    return result
