"""Kernel settings pods depend on: IP forwarding, reverse-path filtering on the overlay, the pod MTU.

Each reads the sysctls and links of this network namespace (``/proc/sys/net``
shows the namespace of the thread that reads it).
"""

from __future__ import annotations

import ipaddress
import socket

from pycni.doctor.context import Network, Node
from pycni.doctor.model import Check, Finding, fail, listed, ok, warn
from pycni.fabric.calico.paths import MTU_FILE
from pycni.fabric.flannel import subnetenv
from pycni.net import link as net_link
from pycni.net import overlay
from pycni.net import route as net_route
from pycni.spec.errors import CNIError

VXLAN_OVERHEAD = 50  # outer Ethernet 14 + IPv4 20 + UDP 8 + VXLAN 8 (Flannel's and Calico's figure)
UDP_OVERHEAD = 28  # flannel's udp backend: IPv4 20 + UDP 8 around the packet read from flannel0
CALICO_VXLAN = "vxlan.calico"
FLANNEL_UDP = "flannel0"
ROUTED = ("ptp", "flannel", "calico")  # plugins whose pods are routed by this node, whatever their options


def needs_forwarding(network: Network) -> bool:
    """Whether the node routes this network's pod traffic (the plugins that turn ``ip_forward`` on at ADD)."""
    for plugin in network.plugins:
        kind = plugin.get("type")
        if kind in ROUTED or (kind == "bridge" and (plugin.get("isGateway") is True or plugin.get("ipMasq") is True)):
            return True
    return False


def _subnets(ipam: object) -> list[str]:
    if not isinstance(ipam, dict):
        return []
    found = [str(ipam["subnet"])] if ipam.get("subnet") else []
    for range_set in ipam.get("ranges") or []:
        for item in range_set if isinstance(range_set, list) else []:
            if isinstance(item, dict) and item.get("subnet"):
                found.append(str(item["subnet"]))
    return found


def families(network: Network) -> set[int]:
    """The IP versions a network's pods get, from its host-local ranges (IPv4 when they do not say)."""
    versions: set[int] = set()
    for plugin in network.plugins:
        delegate = plugin.get("delegate")
        for ipam in (plugin.get("ipam"), delegate.get("ipam") if isinstance(delegate, dict) else None):
            for subnet in _subnets(ipam):
                try:
                    versions.add(ipaddress.ip_network(subnet, strict=False).version)
                except ValueError:
                    continue
    return versions or {4}


FORWARDING = {4: ("net/ipv4/ip_forward", "net.ipv4.ip_forward"), 6: ("net/ipv6/conf/all/forwarding",
              "net.ipv6.conf.all.forwarding")}  # fmt: skip


def check_ip_forward(node: Node) -> list[Finding]:
    users = [n for n in node.networks if needs_forwarding(n)]
    findings: list[Finding] = []
    for version, (path, key) in FORWARDING.items():
        names = [n.name for n in users if version in families(n)]
        if not names:
            continue
        value = node.sysctl(path)
        if value == "1":
            findings.append(ok("ip_forward", f"{key}=1 (needed by {listed(names)})"))
            continue
        findings.append(
            fail(
                "ip_forward",
                f"{key}={value} in this network namespace, but network(s) {listed(names)} route IPv{version} pod "
                "traffic through this node: pods cannot reach other nodes or the outside",
                f"sysctl -w {key}=1, and keep it in /etc/sysctl.d/ so a reboot does not undo it",
            )
        )
    return findings


def overlay_devices(node: Node) -> list[str]:
    """The fabric's tunnel devices present here: ``flannel.<VNI>`` (vxlan), ``flannel0`` (udp), ``vxlan.calico``."""
    return [
        name
        for name in node.link_names
        if name in (CALICO_VXLAN, FLANNEL_UDP) or (name.startswith("flannel.") and name[8:].isdigit())
    ]


def _overlay_networks(node: Node) -> list[Network]:
    return [n for n in node.networks if {"flannel", "calico"} & set(n.types)]


def check_rp_filter(node: Node) -> list[Finding]:
    devices = overlay_devices(node)
    if not devices and not _overlay_networks(node):
        return []
    every = node.sysctl("net/ipv4/conf/all/rp_filter") or "0"
    strict: list[str] = []
    for name in devices or ["all"]:
        own = every if name == "all" else (node.sysctl(f"net/ipv4/conf/{name}/rp_filter") or "0")
        effective = max(int(every), int(own)) if own.isdigit() and every.isdigit() else 0
        if effective == 1:
            strict.append(f"{name} (all={every}, {name}={own})" if name != "all" else "all")
    checked = ", ".join(devices) if devices else "all"
    if not strict:
        return [ok("rp_filter", f"reverse-path filter not strict on {checked}")]
    keys = " ".join(f"net.ipv4.conf.{d.replace('.', '/')}.rp_filter=2" for d in devices)
    return [
        fail(
            "rp_filter",
            f"strict reverse-path filtering (rp_filter=1) on {', '.join(strict)}: the kernel drops overlay "
            "packets whose source it would not route back the same way (the larger of all and the device wins)",
            f"sysctl -w net.ipv4.conf.all.rp_filter=2 {keys}".rstrip() + " (loose), and keep it in /etc/sysctl.d/",
        )
    ]


# -- MTU ---------------------------------------------------------------------------------------


def _default_route_link(node: Node) -> net_link.LinkInfo | None:
    for route in net_route.dump(node.ipr, socket.AF_INET, tables=[net_route.RT_TABLE_MAIN]):
        if route.dst.prefixlen == 0 and route.oif:
            return net_link.by_index(node.ipr, route.oif)
    return None


def _link_with_address(node: Node, address: str) -> net_link.LinkInfo | None:
    for msg in node.ipr.get_addr(family=socket.AF_INET):
        if msg.get("address") == address:
            return net_link.by_index(node.ipr, int(msg["index"]))
    return None


def underlay(node: Node) -> tuple[net_link.LinkInfo | None, int, str]:
    """The interface overlay traffic leaves by, the overlay's encapsulation overhead, and how it was chosen."""
    overhead, vxlan = 0, None
    for name in overlay_devices(node):
        if name == FLANNEL_UDP:
            overhead = max(overhead, UDP_OVERHEAD)
        else:
            overhead = VXLAN_OVERHEAD
            vxlan = vxlan or overlay.find_vxlan(node.ipr, name)
    given = node.options.underlay_interface
    if given:
        return node.link(given), overhead, f"--underlay-interface {given}"
    if vxlan is not None and vxlan.link_index:
        return net_link.by_index(node.ipr, vxlan.link_index), overhead, f"{vxlan.name}'s underlying device"
    if vxlan is not None and vxlan.local:
        return _link_with_address(node, vxlan.local), overhead, f"{vxlan.name}'s local address {vxlan.local}"
    return _default_route_link(node), overhead, "the default route's device"


def pod_mtus(node: Node) -> list[tuple[str, int, str]]:
    """``(what, MTU, where to change it)`` of every overlay network's pods."""
    found: list[tuple[str, int, str]] = []
    for network in _overlay_networks(node):
        for plugin in network.plugins:
            kind = plugin.get("type")
            mtu = plugin.get("mtu")
            if kind == "flannel":
                delegate = plugin.get("delegate")
                mtu = delegate.get("mtu") if isinstance(delegate, dict) else None
                if isinstance(mtu, int) and not isinstance(mtu, bool):
                    found.append((f"network {network.name}", mtu, f'"delegate": {{"mtu"}} in {network.path}'))
                    continue
                path = str(plugin.get("subnetFile") or node.options.subnet_file)
                try:
                    env = subnetenv.load(path)
                except CNIError:
                    continue  # the subnet_env check reports the damage
                if env is not None:
                    found.append((f"network {network.name}", env.mtu, f"FLANNEL_MTU in {path} (flanneld writes it)"))
            elif kind == "calico":
                if isinstance(mtu, int) and not isinstance(mtu, bool) and mtu:
                    found.append((f"network {network.name}", mtu, f'"mtu" in {network.path}'))
                    continue
                path = str(plugin.get("pycni_mtu_file") or node.options.calico_mtu_file or MTU_FILE)
                value = _read_int(path)
                if value is not None:
                    found.append((f"network {network.name}", value, f"{path} (calico-node writes it)"))
            elif isinstance(mtu, int) and not isinstance(mtu, bool) and mtu:
                found.append((f"network {network.name} ({kind})", mtu, f'"mtu" in {network.path}'))
    return found


def _read_int(path: str) -> int | None:
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read().strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() else None


def check_pod_mtu(node: Node) -> list[Finding]:
    mtus = pod_mtus(node)
    if not mtus:
        return []
    device, overhead, how = underlay(node)
    given = node.options.underlay_interface
    if device is None and given:
        return [
            warn(
                "pod_mtu",
                f"--underlay-interface {given}: no such interface in this network namespace",
                "name the interface node-to-node traffic leaves by (ip link lists them)",
            )
        ]
    if device is None:
        return [
            warn(
                "pod_mtu",
                f"cannot tell the underlay interface (looked at {how}) to check pod MTUs against",
                "pass --underlay-interface NAME (the interface node-to-node traffic leaves by)",
            )
        ]
    limit = device.mtu - overhead
    basis = f"{device.name} MTU {device.mtu}" + (f" - overlay {overhead}" if overhead else "")
    over = [(what, mtu, where) for what, mtu, where in mtus if mtu > limit]
    if not over:
        return [ok("pod_mtu", f"pod MTUs {sorted({m for _, m, _ in mtus})} fit {basis} = {limit}")]
    worst = " ; ".join(f"{what}: {mtu} > {limit} ({where})" for what, mtu, where in over)
    return [
        fail(
            "pod_mtu",
            f"pod MTU larger than {basis} = {limit}: {worst}; large packets between nodes are dropped",
            f"use MTU {limit}: set it where named (for flanneld: let it size the device from {device.name}, "
            "or give the underlay a larger MTU); pods take the new MTU when re-created",
        )
    ]


CHECKS = [
    Check("ip_forward", check_ip_forward, "IPv4 forwarding on when a network routes pod traffic"),
    Check("rp_filter", check_rp_filter, "no strict reverse-path filter on the overlay device or all"),
    Check("pod_mtu", check_pod_mtu, "pod MTU within the underlay MTU minus the overlay overhead"),
]
