"""pycni's links in this network namespace: bridges of pycni networks, the fabrics' devices, ifbs, orphan veths.

A pod's veth is pycni's to remove only when its pod is gone: its peer's
namespace is no longer named in the netns directory and no process lives in
it (a leaked namespace, kept alive only by a stray mount or descriptor). A
live pod's veth stays: reset does not tear down running pods.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from pycni.fabric.calico import calculation as calico_calc
from pycni.fabric.flannel.backends import udp as flannel_udp
from pycni.plugins.meta import bandwidth
from pycni.policy import nft_names
from pycni.reset import items
from pycni.reset.conflists import Network

if TYPE_CHECKING:
    from pyroute2 import IPRoute

FLANNEL_VXLAN = re.compile(r"flannel\.\d+")  # the vxlan backend's flannel.<VNI>
FLANNEL_WIREGUARD = "flannel-wg"  # Flannel's wireguard backend (pycni's kernel lacks the module)


def fabric_reason(name: str, kind: str) -> str | None:
    """Why a link is one of the fabrics' devices, or None."""
    if FLANNEL_VXLAN.fullmatch(name) and kind == "vxlan":
        return "flanneld's vxlan backend device"
    if name == flannel_udp.TUN_NAME and kind == "tun":
        return "flanneld's udp backend device"
    if name == FLANNEL_WIREGUARD and kind == "wireguard":
        return "flanneld's wireguard backend device"
    if name == calico_calc.VXLAN_DEVICE and kind == "vxlan":
        return "calico-node's VXLAN device"
    if name == calico_calc.IPIP_DEVICE and kind == "ipip":
        return "calico-node's IPIP device"
    return None


def live_nsids(ipr: IPRoute, netns_dir: str) -> set[int]:
    """The IDs this namespace has for every namespace still named or in use by a process."""
    candidates = [os.path.join(netns_dir, n) for n in _listdir(netns_dir)]
    candidates += [f"/proc/{pid}/ns/net" for pid in _listdir("/proc") if pid.isdigit()]
    seen: set[tuple[int, int]] = set()
    nsids: set[int] = set()
    for path in candidates:
        with contextlib.suppress(OSError):
            info = os.stat(path)
            if (info.st_dev, info.st_ino) in seen:
                continue
            seen.add((info.st_dev, info.st_ino))
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                reply: Any = ipr.get_netnsid(fd=fd)
                nsid = reply.get("nsid") if isinstance(reply, dict) else None
                if isinstance(nsid, int) and nsid >= 0:
                    nsids.add(nsid)
            except Exception:  # noqa: BLE001 - a namespace that cannot be asked about is not one a veth points into
                pass
            finally:
                os.close(fd)
    return nsids


def _listdir(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except OSError:
        return []


def bridge_ports(ipr: IPRoute, networks: Iterable[Network]) -> set[str]:
    """The names of every port of a pycni network's bridge (pods live or gone)."""
    bridges = {b for n in networks for b in n.bridges}
    msgs = list(ipr.get_links())
    indexes = {int(m["index"]) for m in msgs if m.get("ifname") in bridges and _kind(m) == "bridge"}
    return {str(m.get("ifname")) for m in msgs if int(m.get("master") or 0) in indexes}


def find(ipr: IPRoute, networks: Iterable[Network], netns_dir: str, fabric: bool, only: str | None) -> list[items.Item]:
    """The links reset removes; ``fabric``: the agents' devices too; ``only``: one network's ifbs."""
    nets = list(networks)
    bridges = {b: n.name for n in nets for b in n.bridges}
    calico = any("calico" in n.types for n in nets)
    msgs = list(ipr.get_links())
    by_index = {int(m["index"]): m for m in msgs}
    bridge_indexes = {index for index, m in by_index.items() if m.get("ifname") in bridges and _kind(m) == "bridge"}
    ifb_prefixes = [bandwidth.alias_prefix(only)] if only else [f"{bandwidth.ALIAS_PREFIX}:"]
    nsids: set[int] | None = None
    found: list[items.Item] = []
    for index, msg in sorted(by_index.items()):
        name, kind = str(msg.get("ifname")), _kind(msg)
        why: str | None = None
        if index in bridge_indexes:
            why = f"bridge of pycni network {bridges[name]}"
        elif fabric:
            why = fabric_reason(name, kind)
        if why is None and kind == "ifb":
            alias = str(msg.get("ifalias") or "")
            if any(alias.startswith(p) for p in ifb_prefixes):
                why = f"bandwidth plugin's ifb ({alias})"
        if why is None and kind == "veth" and msg.get("IFLA_LINK_NETNSID") is not None:
            master = int(msg.get("master") or 0)
            on_bridge = master in bridge_indexes
            calico_veth = calico and name.startswith(nft_names.INTERFACE_PREFIX)
            if on_bridge or calico_veth:
                if nsids is None:
                    nsids = live_nsids(ipr, netns_dir)
                if int(msg.get("IFLA_LINK_NETNSID")) not in nsids:
                    owner = f"port of {by_index[master].get('ifname')}" if on_bridge else "calico pod veth"
                    why = f"{owner} whose pod namespace is gone"
        if why is not None:
            found.append(items.LinkItem(items.LINKS, name, why, index=index))
    return found


def _kind(msg: Any) -> str:
    return str(msg.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND") or "")
