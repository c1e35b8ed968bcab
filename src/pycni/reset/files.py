"""pycni's files for this node: its networks' IPAM directories, result caches, the agents' and plugins' state.

Files kept per network namespace under machine-wide directories (nft lock
files, attachment records) are keyed by the namespace's inode; only this
namespace's go.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable

from pycni.reset import items
from pycni.reset.conflists import Network
from pycni.reset.paths import Paths


def _exists(path: str) -> bool:
    return os.path.lexists(path)


def _item(group: str, path: str, why: str) -> items.PathItem:
    return items.PathItem(group, path, why, path=path)


def ipam(networks: Iterable[Network]) -> list[items.Item]:
    return [
        _item(items.IPAM, d, f"host-local reservations of pycni network {n.name}")
        for n in networks
        for d in n.ipam_dirs
        if _exists(d)
    ]


def _cache(path: str) -> dict[str, object]:
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def cache_network(path: str) -> str | None:
    """The network a result cache file is of (its ``networkName``), None if unreadable."""
    name = _cache(path).get("networkName")
    return name if isinstance(name, str) else None


def cache_attachments(results_dir: str, names: Iterable[str]) -> set[str]:
    """``<container ID>-<ifname>`` of every cached attachment of the networks ``names`` (the bridge's check IDs)."""
    wanted = set(names)
    found: set[str] = set()
    for entry in _listdir(results_dir):
        data = _cache(os.path.join(results_dir, entry))
        if data.get("networkName") in wanted and data.get("containerId") and data.get("ifName"):
            found.add(f"{data['containerId']}-{data['ifName']}")
    return found


def caches(results_dir: str, names: Iterable[str]) -> list[items.Item]:
    """Result caches of pycni networks; an unreadable one counts by its file name ``<network>-<id>-<ifname>``."""
    wanted = set(names)
    found: list[items.Item] = []
    for entry in sorted(_listdir(results_dir)):
        path = os.path.join(results_dir, entry)
        network = cache_network(path)
        if network is None:
            network = next((n for n in wanted if entry.startswith(f"{n}-")), None)
        if network in wanted:
            found.append(_item(items.CACHE, path, f"cached result of pycni network {network}"))
    return found


def _listdir(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except OSError:
        return []


def network_state(networks: Iterable[Network]) -> list[items.Item]:
    found: list[items.Item] = []
    for network in networks:
        for path in (*network.state_files, *network.state_dirs):
            if _exists(path):
                found.append(_item(items.STATE, path, f"named by pycni network {network.name}'s config"))
    return found


def node_state(paths: Paths, netns_inode: int) -> list[items.Item]:
    """The agents' state directories, and this namespace's lock files and attachment records."""
    found: list[items.Item] = [
        _item(items.STATE, path, why)
        for path, why in (
            (paths.flannel_subnet_file, "flanneld's subnet file"),
            (paths.flannel_run_dir, "flanneld's state directory"),
            (paths.calico_lib_dir, "calico-node's files for the CNI plugin"),
            (paths.calico_run_dir, "calico-node's run directory (BIRD, pid file, calico-ipam's lock)"),
        )
        if _exists(path)
    ]
    for directory, suffix, why in (
        (paths.nft_lock_dir, f"-{netns_inode}.lock", "pycni's nftables lock of this namespace"),
        (paths.attachments_dir, f"-{netns_inode}", "pycni's attachment records of this namespace"),
    ):
        for entry in sorted(_listdir(directory)):
            if entry.endswith(suffix):
                found.append(_item(items.STATE, os.path.join(directory, entry), why))
    return found


def dedupe(found: list[items.Item]) -> list[items.Item]:
    """Drop paths inside another listed directory (the directory goes whole)."""
    dirs = [i.name for i in found if isinstance(i, items.PathItem) and os.path.isdir(i.name)]
    kept: list[items.Item] = []
    seen: set[str] = set()
    for item in found:
        if not isinstance(item, items.PathItem):
            kept.append(item)
            continue
        if item.name in seen or any(item.name.startswith(d.rstrip("/") + "/") for d in dirs if d != item.name):
            continue
        seen.add(item.name)
        kept.append(item)
    return kept
