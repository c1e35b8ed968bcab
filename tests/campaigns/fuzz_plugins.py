#!/usr/bin/env python3
"""Malformed-input campaign through every pycni plugin executable (pycni issue 9, part 3).

    sudo .venv/bin/python tests/campaigns/fuzz_plugins.py --count 1000 --seed 7 --json fuzz.json
    sudo .venv/bin/python tests/campaigns/fuzz_plugins.py --seed 7 --index 412 -v   # replay one input
    sudo .venv/bin/python tests/campaigns/fuzz_plugins.py --count 2000 --jobs 2      # two isolated workers

Each input is a mutation of a valid stdin config of one plugin type (truncation, wrong types,
huge values, unicode, missing keys, nested garbage, bad IPs/CIDRs, bad prevResult, ...) or
of its environment (``CNI_COMMAND``, ``CNI_CONTAINERID``, ``CNI_IFNAME``, ``CNI_NETNS``,
``CNI_ARGS``, ``CNI_PATH``). Input ``i`` of seed ``s`` is generated from ``Random("s/i")``
alone, so any input can be replayed by its index. For every execution the contract is:

* exit status 0 or 1, never a hang (``--timeout``), no ``Traceback`` on stderr;
* on exit 1, stdout is the spec's error object (``cniVersion`` string, ``code`` integer,
  ``msg`` string); code 999 whose message is a Python exception (``KeyError: ...``, the
  SDK's catch-all) is a crash class: the input is rerun once with ``PYCNI_DEBUG=1`` to
  find the frame that raised;
* on exit 0, stdout is a result at the config's version (ADD), version info (VERSION) or
  nothing (the other verbs); an ADD that succeeds is followed by its DEL, which must succeed;
* the host is unchanged: links, addresses, routes, rules and the nftables ruleset of the
  host namespace, and the files under the IPAM/plugin state directories, compared after the
  input (while the container still exists) with the picture before it, and after the
  container is removed with the picture of the fresh host taken before the first input.
  A bridge left without ports and empty nftables tables/chains are reported as residue
  (the reference plugins leave them too), everything else as a leak.

Isolation: the script re-executes itself under ``unshare --mount --net`` (propagation
private). The new network namespace is the "host"; tmpfs mounts over ``/run`` and
``/var/lib/cni`` hold every default state path (host-local leases, tuning and flannel
state, nft locks, container namespaces under /run/netns) and hide the daemon socket; the
plugins also run with ``PYCNI_NO_DAEMON=1``. Nothing reaches the machine's namespaces or
files, and everything disappears with the process, even if it is killed.
"""

from __future__ import annotations

import argparse
import base64
import copy
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

INNER_ENV = "PYCNI_FUZZ_INNER"
NETWORK = "fznet"
SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
VERSIONS = ("0.3.1", "0.4.0", "1.0.0", "1.1.0")
ALL_VERSIONS = ("0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
# Host fixtures: a parent link for macvlan/ipvlan/vlan and a device for host-device to take.
MASTER, MASTER_PEER, DEVICE, DEVICE_PEER = "fzmaster0", "fzmaster1", "fzdev0", "fzdev1"
CHAINED = ("bandwidth", "firewall", "portmap", "sbr", "tuning", "vrf")
# The SDK's catch-all message "<ExceptionType>: ...", possibly behind delegating plugins' "<name>: "
# prefixes; struct.error and socket.timeout/gaierror have lower-case names.
EXCEPTION_MESSAGE = re.compile(
    r"^(?:[\w-]+: )*([A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt|Iteration|Warning)|error|timeout|gaierror):"
)


# ---------------------------------------------------------------------------
# Isolation
# ---------------------------------------------------------------------------


def isolated(argv: list[str]) -> list[str]:
    """The command running this script again in a new mount and network namespace."""
    command = ["unshare", "--mount", "--net", "--propagation", "private", "--"]
    return [*command, sys.executable, os.path.abspath(__file__), *argv]


def reexec_isolated(argv: list[str]) -> int:
    """Run this script again, isolated; return its exit status."""
    if os.geteuid() != 0:
        print("fuzz_plugins: needs root (it creates namespaces)", file=sys.stderr)
        return 2
    return subprocess.run(isolated(argv), env={**os.environ, INNER_ENV: "1"}, check=False).returncode


def isolate_filesystem() -> None:
    """tmpfs over the default state paths, in this private mount namespace only."""
    for target in ("/run", "/var/lib/cni" if os.path.isdir("/var/lib/cni") else "/var/lib"):
        subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=755,size=512m", "pycni-fuzz", target], check=True)


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=check)


# ---------------------------------------------------------------------------
# The host: fixtures and its picture
# ---------------------------------------------------------------------------


def ensure_fixtures() -> None:
    """The host's parent link (with an underlay address) and a spare device; idempotent."""
    sh("ip", "link", "set", "lo", "up")
    links = {link["ifname"] for link in json.loads(sh("ip", "-j", "link", "show").stdout)}
    if MASTER not in links or MASTER_PEER not in links:
        sh("ip", "link", "del", MASTER, check=False)
        sh("ip", "link", "add", MASTER, "type", "veth", "peer", "name", MASTER_PEER)
        sh("ip", "addr", "add", "198.51.100.1/24", "dev", MASTER)
        sh("ip", "link", "set", MASTER, "up")
        sh("ip", "link", "set", MASTER_PEER, "up")
    if DEVICE not in links or DEVICE_PEER not in links:
        sh("ip", "link", "del", DEVICE, check=False)
        sh("ip", "link", "del", DEVICE_PEER, check=False)
        sh("ip", "link", "add", DEVICE, "type", "veth", "peer", "name", DEVICE_PEER)


def _link_local(address: str) -> bool:
    return address.startswith(("fe80", "ff0", "ff00"))


def _strip_handles(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_handles(v) for k, v in value.items() if k != "handle"}
    if isinstance(value, list):
        return [_strip_handles(v) for v in value]
    return value


@dataclass
class Picture:
    """What a plugin may change on the host: netlink objects, nftables, state files."""

    links: dict[str, tuple[Any, ...]]
    addresses: set[tuple[str, str]]
    routes: set[tuple[Any, ...]]
    rules: set[tuple[Any, ...]]
    nft_containers: set[str]  # tables, chains, sets, maps (without their contents)
    nft_contents: set[str]  # rules and set/map elements
    files: set[str]

    def masters(self) -> set[str]:
        return {link[2] for link in self.links.values() if link[2]}


def _ip_batch(family: str, *commands: str) -> list[list[dict[str, Any]]]:
    """Several ``ip -j`` listings from one process (each prints one JSON array)."""
    text = subprocess.run(
        ["ip", family, "-j", "-d", "-batch", "-"],
        input="\n".join(commands) + "\n",
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    decoder, position, arrays = json.JSONDecoder(), 0, []
    while True:
        while position < len(text) and text[position].isspace():
            position += 1
        if position >= len(text):
            return arrays
        array, position = decoder.raw_decode(text, position)
        arrays.append(array)


def take_picture(state_dirs: list[str]) -> Picture:
    link_list, address_list, routes4, rules4 = _ip_batch(
        "-4", "link show", "address show", "route show table all", "rule show"
    )
    addresses6, routes6, rules6 = _ip_batch("-6", "address show", "route show table all", "rule show")
    links: dict[str, tuple[Any, ...]] = {}
    for link in link_list:
        kind = (link.get("linkinfo") or {}).get("info_kind", "")
        flags = tuple(sorted(set(link.get("flags", [])) - {"LOWER_UP", "NO-CARRIER", "M-DOWN"}))
        links[link["ifname"]] = (
            kind,
            link.get("mtu"),
            link.get("master", ""),
            link.get("address"),
            flags,
            link.get("ifalias", ""),
        )
    addresses = {
        (entry["ifname"], f"{info['local']}/{info['prefixlen']}")
        for entry in address_list + addresses6
        for info in entry.get("addr_info", [])
        if not _link_local(info.get("local", ""))
    }
    routes: set[tuple[Any, ...]] = set()
    keys = ("type", "dst", "gateway", "dev", "table", "protocol", "scope", "prefsrc", "metric")
    for route in routes4 + routes6:
        if not _link_local(route.get("dst", "")):
            routes.add(tuple(str(route.get(key, "")) for key in keys))
    rules = {tuple(sorted((k, str(v)) for k, v in rule.items())) for rule in rules4 + rules6}
    containers: set[str] = set()
    contents: set[str] = set()
    for item in json.loads(sh("nft", "-j", "list", "ruleset").stdout).get("nftables", []):
        kind, body = next(iter(item.items()))
        if kind == "metainfo":
            continue
        body = _strip_handles(body)
        if kind in ("set", "map"):
            for element in body.pop("elem", []):
                contents.add(json.dumps({kind: body.get("name"), "table": body.get("table"), "elem": element}))
        (contents if kind == "rule" else containers).add(json.dumps({kind: body}, sort_keys=True))
    files: set[str] = set()
    for top in state_dirs:
        for root, dirs, names in os.walk(top):
            dirs[:] = [d for d in dirs if os.path.join(root, d) != "/run/netns"]
            for name in names:
                if name == "lock" or name.endswith(".lock") or name.startswith("last_reserved_ip."):
                    continue
                files.add(os.path.join(root, name))
    return Picture(links, addresses, routes, rules, containers, contents, files)


# Per-namespace bookkeeping pycni keeps on purpose (nft/attachments.py: the namespace's cookie).
KEPT_FILES = ("/.netns-cookie",)


def compare(before: Picture, after: Picture) -> tuple[list[str], list[str]]:
    """(leaks, residue): what ``after`` has that ``before`` did not, and what it lost."""
    leaks: list[str] = []
    residue: list[str] = []
    residue_bridges = {
        name
        for name, link in after.links.items()
        if name not in before.links and link[0] == "bridge" and name not in after.masters()
    }
    for name in sorted(set(before.links) | set(after.links)):
        if name in residue_bridges:
            residue.append(f"bridge {name} without ports")
        elif before.links.get(name) != after.links.get(name):
            leaks.append(f"link {name}: {before.links.get(name)} -> {after.links.get(name)}")
    for label, old, new in (
        ("address", before.addresses, after.addresses),
        ("route", before.routes, after.routes),
        ("rule", before.rules, after.rules),
        ("nft", before.nft_contents, after.nft_contents),
        ("file", before.files, after.files),
    ):
        for item in sorted(map(str, new - old)):
            kept = any(b in item for b in residue_bridges) or item.endswith(KEPT_FILES)
            (residue if kept else leaks).append(f"{label} added: {item}")
        for item in sorted(map(str, old - new)):
            leaks.append(f"{label} removed: {item}")
    for item in sorted(after.nft_containers - before.nft_containers):
        residue.append(f"nft object left (empty): {item}")
    for item in sorted(before.nft_containers - after.nft_containers):
        leaks.append(f"nft object removed: {item}")
    return leaks, residue


def restore(baseline: Picture, state_dirs: list[str]) -> Picture:
    """Put the host back to ``baseline`` after a leak; returns the picture reached."""
    now = take_picture(state_dirs)
    for name in set(now.links) - set(baseline.links):
        sh("ip", "link", "del", name, check=False)
    for address in now.addresses - baseline.addresses:
        sh("ip", "addr", "del", address[1], "dev", address[0], check=False)
    sh("nft", "flush", "ruleset", check=False)  # the fresh host has an empty ruleset
    for path in now.files - baseline.files:
        os.unlink(path)
    changed = [n for n in (MASTER, MASTER_PEER, DEVICE, DEVICE_PEER) if now.links.get(n) != baseline.links.get(n)]
    for name in changed:
        sh("ip", "link", "del", name, check=False)
    ensure_fixtures()
    return take_picture(state_dirs)


# ---------------------------------------------------------------------------
# Inputs: valid configs per plugin type, and their mutations
# ---------------------------------------------------------------------------


@dataclass
class Context:
    """Paths and names one input runs with."""

    work: str
    bin_dir: str
    container: str  # netns name under /run/netns
    host_veth: str  # host end of the chained plugins' container veth

    @property
    def netns(self) -> str:
        return f"/run/netns/{self.container}"


def prev_result(ctx: Context, version: str) -> dict[str, Any]:
    """What a bridge/ptp ADD would have returned for the chained plugins' fixture veth."""
    ip: dict[str, Any] = {"address": "10.95.0.2/24", "gateway": "10.95.0.1", "interface": 1}
    if not version.startswith("1."):
        ip["version"] = "4"
    return {
        "cniVersion": version,
        "interfaces": [{"name": ctx.host_veth}, {"name": "eth0", "sandbox": ctx.netns}],
        "ips": [ip],
        "routes": [{"dst": "0.0.0.0/0", "gw": "10.95.0.1"}],
        "dns": {"nameservers": ["10.95.0.1"]},
    }


CALICO_NODE = "fznode"
CALICO_SEED = f"""apiVersion: projectcalico.org/v3
kind: IPPool
metadata:
  name: fz-pool
spec:
  cidr: 10.96.0.0/16
  blockSize: 26
---
apiVersion: projectcalico.org/v3
kind: Node
metadata:
  name: {CALICO_NODE}
spec:
  bgp:
    ipv4Address: 10.95.0.1/24
"""


def calico_store(work: str) -> str:
    """The calico plugins' embedded datastore: outside the compared state directories, since a
    DEL leaves the node's block and affinity in it on purpose (Calico keeps them)."""
    return os.path.join(work, "calico", "calico.db")


def seed_calico(work: str) -> None:
    """What a user does before the first calico pod: the pool and the Node, with pycni calicoctl."""
    os.makedirs(os.path.dirname(calico_store(work)), exist_ok=True)
    pycni = os.path.join(os.path.dirname(sys.executable), "pycni")
    subprocess.run(
        [pycni, "calicoctl", "apply", "-f", "-"], input=CALICO_SEED, text=True, check=True, capture_output=True,
        env={**os.environ, "PYCNI_CALICO_STORE": calico_store(work)},
    )  # fmt: skip


def base_config(plugin: str, ctx: Context, version: str) -> dict[str, Any]:
    """A config each plugin accepts (where this kernel can do it) at ``version``."""
    data = os.path.join(ctx.work, "data")
    host_local = {"type": "host-local", "ranges": [[{"subnet": "10.99.0.0/24"}]], "dataDir": f"{data}/ipam"}
    static = {
        "type": "static",
        "addresses": [{"address": "10.97.0.5/24", "gateway": "10.97.0.1"}],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dns": {"nameservers": ["10.97.0.1"]},
    }
    common = {"cniVersion": version, "name": NETWORK}
    calico = {
        "type": "calico",
        "datastore_type": "pycni",
        "pycni_store_path": calico_store(ctx.work),
        "nodename": CALICO_NODE,
        "nodename_file_optional": True,
        "ipam_lock_file": f"{ctx.work}/calico/ipam.lock",
        "mtu": 1400,
        "policy": {"type": "k8s"},
        "ipam": {"type": "calico-ipam"},
    }
    chained = {"prevResult": prev_result(ctx, version)}
    configs: dict[str, dict[str, Any]] = {
        "bridge": {"type": "bridge", "bridge": "fzbr0", "isGateway": True, "ipMasq": True, "ipam": host_local},
        "ptp": {
            "type": "ptp",
            "ipMasq": True,
            "mtu": 1400,
            "ipam": {**host_local, "ranges": [[{"subnet": "10.98.0.0/24"}]]},
        },
        "macvlan": {"type": "macvlan", "master": MASTER, "mode": "bridge", "ipam": static},
        "ipvlan": {"type": "ipvlan", "master": MASTER, "mode": "l2", "ipam": static},
        "vlan": {"type": "vlan", "master": MASTER, "vlanId": 100, "ipam": static},
        "dummy": {"type": "dummy", "ipam": static},
        "host-device": {"type": "host-device", "device": DEVICE},
        "tap": {"type": "tap", "mtu": 1400, "multiQueue": False, "ipam": static},
        "loopback": {"type": "loopback"},
        "host-local": {"type": "fzmain", "ipam": host_local},
        "static": {"type": "fzmain", "ipam": static},
        "dhcp": {"type": "macvlan", "ipam": {"type": "dhcp", "daemonSocketPath": f"{data}/dhcp.sock"}},
        "flannel": {
            "type": "flannel",
            "subnetFile": f"{ctx.work}/subnet.env",
            "dataDir": f"{data}/flannel",
            "delegate": {"bridge": "fzcni0", "isDefaultGateway": True, "ipam": {"dataDir": f"{data}/flannel-ipam"}},
        },
        "bandwidth": {
            "type": "bandwidth",
            "ingressRate": 8_000_000,
            "ingressBurst": 80_000,
            "egressRate": 8_000_000,
            "egressBurst": 80_000,
            **chained,
        },
        "firewall": {"type": "firewall", "ingressPolicy": "same-bridge", **chained},
        "portmap": {
            "type": "portmap",
            "capabilities": {"portMappings": True},
            "runtimeConfig": {"portMappings": [{"hostPort": 18080, "containerPort": 80, "protocol": "tcp"}]},
            "snat": True,
            **chained,
        },
        "sbr": {"type": "sbr", **chained},
        "tuning": {
            "type": "tuning",
            "sysctl": {"net.ipv4.conf.eth0.arp_filter": "1"},
            "mtu": 1450,
            "promisc": True,
            "dataDir": f"{data}/tuning",
            **chained,
        },
        "vrf": {"type": "vrf", "vrfname": "fzvrf", **chained},
        "calico": calico,
        "calico-ipam": {**calico, "type": "fzmain"},
    }
    return {**common, **configs[plugin]}


ODD_STRINGS = [
    "",
    " ",
    "0",
    "-1",
    "true",
    "null",
    "é",
    "\u202eeth0",
    "💥",
    "\ud800",
    "\x00",
    "a\nb",
    "eth0:1",
    "x" * 300,
    "../../x",
    "%s%n",
    "1e999",
]
ODD_NUMBERS: list[Any] = [0, -1, 1, 65536, 2**31, 2**32, 2**63, 2**64, 10**30, -(2**63), 0.5, 1e308, -0.0, 1e400]
BAD_ADDRESSES = [
    "10.0.0.1",
    "10.0.0.0/33",
    "10.0.0.1/-1",
    "10.0.0.1/\u0662\u0664",
    "10.0.0.256/24",
    "10.0.0/24",
    "fd00::/129",
    "fd00::1/64%eth0",
    "fe80::1%eth0",
    "::ffff:10.0.0.1/120",
    "0.0.0.0/0",
    "::/0",
    "255.255.255.255/32",
    "10.99.0.0/31",
    "10.99.0.0/32",
    "10.99.0.7/24",
    " 10.0.0.1/24",
    "1.2.3.4/24/5",
    "localhost",
    "",
]
VERSION_STRINGS: list[Any] = [
    "",
    "0.1.0",
    "0.2.0",
    "0.3.0",
    "9.9.9",
    "1.1",
    "1",
    "1.0.0-rc1",
    "\u0661.0.0",
    "1.0.0.0",
    1,
    None,
    [],
]


def odd_value(rng: random.Random) -> Any:
    """A value of the wrong type, size, encoding or shape."""
    choice = rng.randrange(8)
    if choice == 0:
        return rng.choice(ODD_STRINGS)
    if choice == 1:
        return rng.choice(ODD_NUMBERS)
    if choice == 2:
        return rng.choice(BAD_ADDRESSES)
    if choice == 3:
        return rng.choice([True, False, None, [], {}, [None], {"": None}])
    if choice == 4:
        return nested(rng, rng.choice([3, 50, 400]))
    if choice == 5:
        return "".join(chr(rng.randrange(1, 0x3000)) for _ in range(rng.randrange(1, 20)))
    if choice == 6:
        return rng.choice(["x" * 100_000, list(range(2000)), {str(i): i for i in range(2000)}])
    return rng.choice(VERSION_STRINGS)


DEEP_MARKER = re.compile(r'"@@deep:(\d+):([\[{])@@"')


def nested(rng: random.Random, depth: int) -> Any:
    """Garbage nested ``depth`` levels; past 400 levels a marker that :func:`encode` expands in
    the text (this script's own json and tree walks would exceed the recursion limit)."""
    if depth > 400:
        return f"@@deep:{depth}:{rng.choice('[{')}@@"
    value: Any = rng.choice([1, "x", None])
    for _ in range(depth):
        value = [value] if rng.random() < 0.5 else {"k": value}
    return value


def _expand(match: re.Match[str]) -> str:
    depth, opener = int(match.group(1)), match.group(2)
    if opener == "[":
        return "[" * depth + "1" + "]" * depth
    return '{"k": ' * depth + "1" + "}" * depth


def nodes(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [path]
    if isinstance(value, dict):
        for key, child in value.items():
            found.extend(nodes(child, (*path, key)))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found.extend(nodes(child, (*path, index)))
    return found


def _parent(doc: Any, path: tuple[Any, ...]) -> Any:
    for step in path[:-1]:
        doc = doc[step]
    return doc


def mutate_tree(rng: random.Random, doc: dict[str, Any], where: tuple[Any, ...] = ()) -> tuple[Any, str]:
    """One structural change at a random node (under ``where``): replace, delete, recase, wrap, add."""
    paths = [p for p in nodes(doc) if p[: len(where)] == where and len(p) > len(where)]
    if not paths:
        return doc, "noop"
    path = rng.choice(paths)
    parent, key = _parent(doc, path), path[-1]
    operation = rng.choice(["replace", "replace", "replace", "delete", "case", "wrap", "add"])
    label = "/".join(map(str, path))
    if operation == "replace":
        parent[key] = odd_value(rng)
    elif operation == "delete":
        del parent[key]
    elif operation == "case" and isinstance(key, str):
        parent[key.swapcase()] = parent.pop(key)
    elif operation == "wrap":
        parent[key] = rng.choice([[parent[key]], {"value": parent[key]}, json.dumps(parent[key])])
    elif isinstance(parent, dict):
        operation = "add"
        parent[rng.choice(["unknownKey", "IPAM", "Type", "__proto__", "é"])] = odd_value(rng)
    else:
        operation = "append"
        parent.append(odd_value(rng))
    return doc, f"{operation} {label}"


# Keys whose values are paths: mutations keep them inside the campaign directory or relative.
PATH_KEYS = ("dataDir", "subnetFile", "daemonSocketPath", "resolvConf", "kernelpath")


# Keys whose values are interface names.
NAME_KEYS = ("bridge", "master", "device", "vrfname", "name")
BAD_NAMES = ["a\x00b", "\ud800", "a/b", "x" * 16, ".", "..", "eth0 ", "é" * 8, "eth0:1", "", " ", "lo", "\u202e"]


def bad_paths(work: str) -> list[str]:
    """Paths that break open/mkdir in every way, all inside the campaign directory (or relative)."""
    data = os.path.join(work, "data")
    return [
        f"{data}/a\x00b",
        f"{data}/\ud800",
        f"{data}/missing/deeper/still",
        f"{work}/subnet.env",  # a file where a directory is expected
        data,  # a directory where a file is expected
        f"{data}/" + "x" * 300,
        f"{data}/" + "/".join(["y" * 200] * 30),
        "relative/dir",
        "",
    ]


def keep_paths_safe(doc: Any, work: str) -> Any:
    """Never let a mutation point a state path at the machine's own files."""
    if isinstance(doc, dict):
        for key, value in list(doc.items()):
            if key.casefold() in {k.casefold() for k in PATH_KEYS} and isinstance(value, str) and value.startswith("/"):
                if not value.startswith(work):
                    doc[key] = os.path.join(work, "data", "elsewhere")
            else:
                keep_paths_safe(value, work)
    elif isinstance(doc, list):
        for item in doc:
            keep_paths_safe(item, work)
    return doc


def encode(doc: Any) -> bytes:
    """JSON text; non-ASCII is escaped, so a lone surrogate is a valid ``\\ud800`` escape."""
    return DEEP_MARKER.sub(_expand, json.dumps(doc)).encode()


@dataclass
class Case:
    """One input: which plugin, what changed, and exactly what it is run with."""

    index: int
    plugin: str
    mutation: str
    command: str
    env: dict[bytes, bytes]
    stdin: bytes
    needs_fixture_veth: bool
    config_version: str | None = None

    def describe(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "plugin": self.plugin,
            "mutation": self.mutation,
            "command": self.command,
            "env": {
                k.decode(): v.decode("utf-8", "backslashreplace") for k, v in self.env.items() if k.startswith(b"CNI_")
            },
            "stdin": self.stdin[:4000].decode("utf-8", "backslashreplace") + ("..." if len(self.stdin) > 4000 else ""),
            "stdin_b64": base64.b64encode(self.stdin).decode() if len(self.stdin) <= 4000 else None,
        }


ENV_MUTATIONS: dict[str, list[bytes | None]] = {
    "CNI_COMMAND": [None, b"", b"add", b"ADD ", b"FOO", b"VERSION", b"DEL", b"CHECK", b"GC", b"STATUS", b"\xff"],
    "CNI_CONTAINERID": [None, b"", b"a b", b"../x", "é".encode(), b"x" * 5000, b"-x", b"\xff", b"ctr;rm"],
    "CNI_IFNAME": [
        None,
        b"",
        b"eth0:1",
        b"a/b",
        b".",
        b"..",
        b"eth 0",
        b"x" * 16,
        "é".encode() * 8,
        b"eth\t0",
        b"\xff",
        b"lo",
        MASTER.encode(),
        "\u202eeth".encode(),
        b"eth%d",
    ],
    "CNI_NETNS": [
        None,
        b"",
        b"/nonexistent/netns",
        b"/",
        b"/proc/self/ns/net",
        b"/proc/self/ns/mnt",
        b"/dev/null",
        b"relative/netns",
        b"/run/netns/",
        b"/run/netns/fz-gone",
        b"\xff",
        "/run/netns/é".encode(),
    ],
    "CNI_ARGS": [
        b"IgnoreUnknown=1;IP=10.99.0.50",
        b"IP=garbage",
        b";;",
        b"=",
        b"a=b=c",
        b"IgnoreUnknown=maybe;X=1",
        b"IgnoreUnknown=1;K8S_POD_NAME=\xc3\xa9",
        b"X" * 10000,
        b"MAC=zz:zz:zz:zz:zz:zz",
        b"IgnoreUnknown=1;MAC=02:00:00:00:00:01",
        b"IP=10.99.0.50/99",
        b"IgnoreUnknown=1;IP=10.97.0.9;GATEWAY=nope",
        b"IP=10.99.0.1",
        b"\xff=\xfe",
    ],
    "CNI_PATH": [None, b"", b"/nonexistent", b"::::", b"relative/bin", "é".encode(), b"\xff"],
}


def make_case(seed: str, index: int, plugins: list[str], ctx: Context) -> Case:
    """Input ``index`` of campaign ``seed``: a function of the two alone."""
    rng = random.Random(f"{seed}/{index}")
    plugin = plugins[index % len(plugins)]
    version = rng.choice(VERSIONS)
    config = base_config(plugin, ctx, version)
    env: dict[bytes, bytes] = {
        b"PATH": SYSTEM_PATH.encode(),
        b"PYCNI_NO_DAEMON": b"1",
        b"CNI_COMMAND": b"ADD",
        b"CNI_CONTAINERID": f"fz{index}".encode(),
        b"CNI_NETNS": ctx.netns.encode(),
        b"CNI_IFNAME": b"eth0",
        b"CNI_ARGS": rng.choice([b"", b"", b"IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=pod"]),
        b"CNI_PATH": ctx.bin_dir.encode(),
    }
    family = rng.choices(["valid", "tree", "targeted", "text", "env"], weights=[1, 4, 6, 2, 3])[0]
    command = rng.choices(["ADD", "DEL", "CHECK", "GC", "STATUS", "VERSION"], weights=[12, 3, 2, 1, 1, 1])[0]
    mutation = family
    stdin: bytes
    if family == "env":
        command = "ADD"
        names = rng.sample(sorted(ENV_MUTATIONS), rng.choice([1, 1, 2]))
        changes = []
        for name in names:
            value = rng.choice(ENV_MUTATIONS[name])
            if value is None:
                env.pop(name.encode(), None)
            else:
                env[name.encode()] = value
            changes.append(f"{name}={value!r}")
        mutation = "env " + " ".join(changes)
        stdin = encode(config)
    elif family == "valid":
        stdin = encode(config)
    elif family == "tree":
        doc: Any = config
        steps = []
        for _ in range(rng.choice([1, 1, 2, 3])):
            doc, step = mutate_tree(rng, doc)
            steps.append(step)
        mutation = "tree " + "; ".join(steps)
        stdin = encode(keep_paths_safe(doc, ctx.work))
    elif family == "targeted":
        doc, mutation = targeted(rng, config, ctx)
        stdin = encode(keep_paths_safe(doc, ctx.work))
    else:
        stdin, mutation = text_mutation(rng, config)
    if family != "env":
        env[b"CNI_COMMAND"] = command.encode()
    else:
        command = env.get(b"CNI_COMMAND", b"").decode("utf-8", "replace")
    try:
        version_seen = json.loads(stdin).get("cniVersion")
    except (ValueError, AttributeError, RecursionError):
        version_seen = None
    return Case(
        index=index,
        plugin=plugin,
        mutation=mutation,
        command=command,
        env=env,
        stdin=stdin,
        needs_fixture_veth=plugin in CHAINED,
        config_version=version_seen if isinstance(version_seen, str) else None,
    )


def targeted(rng: random.Random, config: dict[str, Any], ctx: Context) -> tuple[Any, str]:
    """Mutations aimed at what plugins parse: addresses, versions, required keys, prevResult, sizes."""
    doc = copy.deepcopy(config)
    kinds = ["bad-ip", "version", "missing-key", "prev-result", "huge", "unicode", "deep", "path", "name"]
    kind = rng.choice(kinds)
    if kind in ("path", "name"):
        keys = PATH_KEYS if kind == "path" else NAME_KEYS
        spots = [p for p in nodes(doc) if p and isinstance(p[-1], str) and p[-1] in keys]
        if spots:
            path = rng.choice(spots)
            values = bad_paths(ctx.work) if kind == "path" else BAD_NAMES
            _parent(doc, path)[path[-1]] = rng.choice(values)
            return doc, f"{kind} {'/'.join(map(str, path))}"
        kind = "unicode"
    if kind == "bad-ip":
        spots = [
            p for p in nodes(doc) if p and isinstance(_value(doc, p), str) and re.search(r"\d+\.\d+|::", _value(doc, p))
        ]
        if spots:
            path = rng.choice(spots)
            _parent(doc, path)[path[-1]] = rng.choice(BAD_ADDRESSES)
            return doc, f"bad-ip {'/'.join(map(str, path))}"
        kind = "version"
    if kind == "version":
        doc["cniVersion"] = rng.choice(VERSION_STRINGS)
        if rng.random() < 0.3:
            doc["cniVersions"] = rng.choice([["1.0.0", "1.1.0"], "1.0.0", [1], ["x.y"]])
        return doc, f"version {doc['cniVersion']!r}"
    if kind == "missing-key":
        keys = [("name",), ("cniVersion",), ("type",)] + [p for p in nodes(doc) if len(p) == 2 and p[0] == "ipam"]
        keys += [(k,) for k in doc if k not in ("name", "cniVersion", "type")]
        path = rng.choice(keys)
        del _parent(doc, path)[path[-1]]
        return doc, f"missing-key {'/'.join(map(str, path))}"
    if kind == "prev-result":
        prev = prev_result(ctx, str(config["cniVersion"]))
        choice = rng.randrange(6)
        if choice == 0:
            doc["prevResult"] = odd_value(rng)
        elif choice == 1:
            prev["cniVersion"] = rng.choice((*ALL_VERSIONS, "9.9.9", ""))
            doc["prevResult"] = prev
        elif choice == 2:
            prev["ips"][0]["interface"] = rng.choice([-1, 2, 7, 2**40, "1", None])
            doc["prevResult"] = prev
        elif choice == 3:
            prev.pop(rng.choice(["ips", "interfaces", "routes"]))
            doc["prevResult"] = prev
        elif choice == 4:
            prev["interfaces"][rng.randrange(2)]["name"] = rng.choice(["", "nope0", "eth1", MASTER, "x" * 40])
            doc["prevResult"] = prev
        else:
            prev, step = mutate_tree(rng, {"prevResult": prev}, ("prevResult",))
            doc["prevResult"] = prev["prevResult"] if isinstance(prev, dict) and "prevResult" in prev else prev
            return doc, f"prev-result {step}"
        return doc, f"prev-result variant {choice}"
    if kind == "huge":
        spots = [
            p
            for p in nodes(doc)
            if p and isinstance(_value(doc, p), (int, str)) and not isinstance(_value(doc, p), bool)
        ]
        path = rng.choice(spots)
        _parent(doc, path)[path[-1]] = rng.choice([2**64, 10**30, -(2**63) - 1, "9" * 5000, "x" * 1_000_000])
        return doc, f"huge {'/'.join(map(str, path))}"
    if kind == "unicode":
        spots = [p for p in nodes(doc) if p and isinstance(_value(doc, p), str)]
        path = rng.choice(spots)
        _parent(doc, path)[path[-1]] = rng.choice(
            ["é", "\u202e", "💥" * 4, "\ud800", "\x00", "\uff45\uff54\uff48\uff10", "eth0\u200b"]
        )
        return doc, f"unicode {'/'.join(map(str, path))}"
    depth = rng.choice([50, 500, 990, 1200, 5000, 100_000])
    doc[rng.choice(["ipam", "unknownKey", "prevResult", "runtimeConfig", "args"])] = nested(rng, depth)
    return doc, f"deep {depth}"


def _value(doc: Any, path: tuple[Any, ...]) -> Any:
    for step in path:
        doc = doc[step]
    return doc


def text_mutation(rng: random.Random, config: dict[str, Any]) -> tuple[bytes, str]:
    """Mutations of the bytes: truncation, garbage, encodings, duplicate keys."""
    text = encode(config)
    choice = rng.randrange(7)
    if choice == 0:
        cut = rng.randrange(len(text))
        return text[:cut], f"truncate at {cut}"
    if choice == 1:
        garbage = rng.choice([b"", b"null", b"[]", b"1", b'"x"', b"{", b"\xff\xfe", b"\x00" * 8, os.urandom(32)])
        return garbage, f"garbage {garbage[:16]!r}"
    if choice == 2:
        position = rng.randrange(len(text))
        flipped = text[:position] + bytes([text[position] ^ (1 << rng.randrange(8))]) + text[position + 1 :]
        return flipped, f"bit flip at {position}"
    if choice == 3:
        return text.decode().encode(rng.choice(["utf-16", "utf-32", "latin-1"]), "replace"), "other encoding"
    if choice == 4:
        key = rng.choice(["name", "cniVersion", "type", "ipam", "prevResult"])
        return b'{"%s": %s, ' % (key.encode(), encode(odd_value(rng))) + text[1:], f"duplicate key {key}"
    if choice == 5:
        return b"[" * 100_000 + b"]" * 100_000, "deep array"
    return text + rng.choice([b"{}", b" trailing", b"\x00", b"\n\n" + text]), "trailing data"


# ---------------------------------------------------------------------------
# Running and judging
# ---------------------------------------------------------------------------


@dataclass
class Run:
    exit_code: int | None  # None: timed out
    stdout: bytes
    stderr: bytes
    seconds: float


def execute(binary: str, env: dict[bytes, bytes], stdin: bytes, cwd: str, timeout: float) -> Run:
    start = time.monotonic()
    try:
        proc = subprocess.run(
            [binary], input=stdin, env=env, capture_output=True, timeout=timeout, cwd=cwd, check=False
        )
    except subprocess.TimeoutExpired as exc:
        return Run(None, exc.stdout or b"", exc.stderr or b"", time.monotonic() - start)
    return Run(proc.returncode, proc.stdout, proc.stderr, time.monotonic() - start)


@dataclass
class Finding:
    kind: str  # the crash class
    detail: str


def judge(case: Case, command: str, run: Run) -> tuple[list[Finding], dict[str, Any] | None]:
    """The contract of one execution; returns what broke it and the decoded error object."""
    findings: list[Finding] = []
    if run.exit_code is None:
        return [Finding("hang", f"no reply within the timeout ({run.seconds:.0f} s)")], None
    if b"Traceback" in run.stderr:
        findings.append(Finding("traceback", run.stderr.decode(errors="replace")[-600:]))
    if run.exit_code not in (0, 1):
        findings.append(Finding(f"exit-status-{run.exit_code}", run.stderr.decode(errors="replace")[-300:]))
    error: dict[str, Any] | None = None
    if run.exit_code != 0:
        try:
            error = json.loads(run.stdout)
        except ValueError:
            error = None
        valid = (
            isinstance(error, dict)
            and isinstance(error.get("code"), int)
            and not isinstance(error.get("code"), bool)
            and isinstance(error.get("msg"), str)
            and isinstance(error.get("cniVersion"), str)
        )
        if not valid:
            findings.append(Finding("bad-error-json", run.stdout.decode(errors="replace")[:300]))
            error = None
        elif error is not None and error["code"] == 999 and EXCEPTION_MESSAGE.match(error["msg"]):
            findings.append(Finding("unexpected-exception", error["msg"][:300]))
        return findings, error
    text = run.stdout.decode(errors="replace")
    if command == "ADD":
        problem = _result_problem(text, case.config_version)
        if problem:
            findings.append(Finding("bad-success-output", problem))
    elif command == "VERSION":
        try:
            ok = "supportedVersions" in json.loads(text)
        except ValueError:
            ok = False
        if not ok:
            findings.append(Finding("bad-success-output", f"VERSION printed {text[:200]!r}"))
    elif text.strip():
        findings.append(Finding("bad-success-output", f"{command} printed {text[:200]!r}"))
    return findings, None


def _result_problem(text: str, config_version: str | None) -> str:
    from pycni.spec import CNIError, Result

    try:
        result = Result.from_json(text)
    except CNIError as exc:
        return f"ADD printed something that is not a result: {exc}; {text[:200]!r}"
    wanted = config_version or "0.1.0"
    if result.cni_version != wanted:
        return f"ADD printed a {result.cni_version} result for a {wanted} config"
    return ""


def signature(finding: Finding) -> str:
    """A crash class: its kind and message with the input-specific parts blanked."""
    text = re.sub(r"'[^']*'|\"[^\"]*\"", "'…'", finding.detail)
    text = re.sub(r"\b(?:0x)?[0-9a-f]*\d[0-9a-f]*\b", "N", text)
    text = re.sub(r"(/[^/\s'\"]+){3,}", "/…", text)  # paths
    return f"{finding.kind}: {text[:160]}"


def innermost_frame(stderr: bytes) -> str:
    """The last ``File ..., line N, in f`` of a traceback and the exception line after it."""
    lines = stderr.decode(errors="replace").strip().splitlines()
    frames = [i for i, line in enumerate(lines) if line.strip().startswith("File ")]
    if not frames:
        return ""
    own = [i for i in frames if "/pycni/" in lines[i]] or frames
    return f"{lines[own[-1]].strip()} ... {lines[-1].strip()[:200]}"


# ---------------------------------------------------------------------------
# The campaign
# ---------------------------------------------------------------------------


def print_now(text: str) -> None:
    print(text, flush=True)


@dataclass
class Campaign:
    work: str
    bin_dir: str
    timeout: float
    verbose: bool
    say: Callable[[str], None] = print_now  # a line of findings on stdout (through the progress bar, if any)
    baseline: Picture | None = None
    state_dirs: list[str] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    codes: Counter[str] = field(default_factory=Counter)
    per_plugin: Counter[str] = field(default_factory=Counter)
    classes: dict[str, dict[str, Any]] = field(default_factory=dict)
    residue: Counter[str] = field(default_factory=Counter)
    executions: int = 0
    pending_debug: list[tuple[str, Case]] = field(default_factory=list)
    internal: Counter[str] = field(default_factory=Counter)  # code 999 replies that are not crashes
    internal_example: dict[str, int] = field(default_factory=dict)

    def setup(self) -> None:
        for directory in ("data", "cwd", "empty"):
            os.makedirs(os.path.join(self.work, directory), exist_ok=True)
        with open(os.path.join(self.work, "subnet.env"), "w") as handle:
            handle.write(
                "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.7.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n"
            )
        seed_calico(self.work)
        self.state_dirs = [os.path.join(self.work, "data"), os.path.join(self.work, "cwd"), "/run", "/var/lib/cni"]
        self.state_dirs = [d for d in self.state_dirs if os.path.isdir(d)]
        ensure_fixtures()
        self.baseline = take_picture(self.state_dirs)
        assert not self.baseline.nft_containers and not self.baseline.nft_contents, "a fresh host has no ruleset"

    def context(self, index: int) -> Context:
        return Context(self.work, self.bin_dir, f"fzc{index}", f"fzh{index % 100000}")

    def make_container(self, ctx: Context, with_veth: bool) -> None:
        sh("ip", "netns", "add", ctx.container)
        sh("ip", "-n", ctx.container, "link", "set", "lo", "up")
        if with_veth:
            sh("ip", "link", "add", ctx.host_veth, "type", "veth", "peer", "name", "eth0", "netns", ctx.container)
            sh("ip", "addr", "add", "10.95.0.1/24", "dev", ctx.host_veth)
            sh("ip", "link", "set", ctx.host_veth, "up")
            sh("ip", "-n", ctx.container, "addr", "add", "10.95.0.2/24", "dev", "eth0")
            sh("ip", "-n", ctx.container, "link", "set", "eth0", "up")
            sh("ip", "-n", ctx.container, "route", "add", "default", "via", "10.95.0.1")

    def remove_container(self, ctx: Context) -> None:
        sh("ip", "link", "del", ctx.host_veth, check=False)
        sh("ip", "-n", ctx.container, "link", "del", "eth0", check=False)
        sh("ip", "netns", "del", ctx.container, check=False)

    def record(self, case: Case, finding: Finding, extra: dict[str, Any] | None = None) -> None:
        key = signature(finding)
        self.counts[finding.kind] += 1
        entry = self.classes.get(key)
        if entry is None:
            entry = {
                "class": finding.kind,
                "plugins": {},
                "signature": key,
                "count": 0,
                "detail": finding.detail,
                "frames": {},  # plugin -> where it raised (the first input of this class for that plugin)
            }
            entry["example"] = case.describe()
            entry.update(extra or {})
            self.classes[key] = entry
        if case.plugin not in entry["plugins"]:
            if finding.kind in ("unexpected-exception", "traceback", "exit-status-1", "bad-error-json"):
                self.pending_debug.append((key, case))
            self.say(f"  ! #{case.index} {case.plugin} {key}")
        entry["count"] += 1
        entry["plugins"][case.plugin] = entry["plugins"].get(case.plugin, 0) + 1

    def debug_frames(self) -> None:
        """Rerun each new crash class's input with PYCNI_DEBUG=1 (in a new container) to see where it raised."""
        assert self.baseline is not None
        while self.pending_debug:
            key, case = self.pending_debug.pop()
            ctx = self.context(case.index)
            self.make_container(ctx, case.needs_fixture_veth)
            try:
                env = {**case.env, b"PYCNI_DEBUG": b"1"}
                run = execute(self.binary(case.plugin), env, case.stdin, self.cwd, self.timeout)
                if run.exit_code == 0 and case.command == "ADD":
                    execute(
                        self.binary(case.plugin), {**env, b"CNI_COMMAND": b"DEL"}, case.stdin, self.cwd, self.timeout
                    )
                self.classes[key]["frames"][case.plugin] = innermost_frame(run.stderr)
            finally:
                self.remove_container(ctx)
            if compare(self.baseline, self.settled_picture())[0]:
                self.baseline = restore(self.baseline, self.state_dirs)

    @property
    def cwd(self) -> str:
        return os.path.join(self.work, "cwd")

    def binary(self, plugin: str) -> str:
        return os.path.join(self.bin_dir, plugin)

    def run_case(self, case: Case) -> None:
        assert self.baseline is not None
        ctx = self.context(case.index)
        self.per_plugin[case.plugin] += 1
        self.make_container(ctx, case.needs_fixture_veth)
        leaks: list[str] = []
        residue: list[str] = []
        try:
            # Without the chained plugins' veth, making the container changed nothing on the host.
            before = take_picture(self.state_dirs) if case.needs_fixture_veth else self.baseline
            run = execute(self.binary(case.plugin), case.env, case.stdin, self.cwd, self.timeout)
            self.executions += 1
            findings, error = judge(case, case.command, run)
            outcome = "ok" if run.exit_code == 0 else f"code {error['code']}" if error else "failed"
            self.codes[outcome] += 1
            if self.verbose:
                message = f" {error['msg'][:120]!r}" if error else ""
                self.say(f"#{case.index} {case.plugin} {case.command} [{case.mutation[:90]}] -> {outcome}{message}")
            for finding in findings:
                self.record(case, finding)
            if error is not None and error["code"] == 999 and not findings:
                key = f"{case.plugin}: {signature(Finding('999', str(error['msg'])))[5:]}"
                self.internal[key] += 1
                self.internal_example.setdefault(key, case.index)
            if run.exit_code == 0 and case.command == "ADD":
                self.codes["ADD succeeded"] += 1
                delete = execute(
                    self.binary(case.plugin), {**case.env, b"CNI_COMMAND": b"DEL"}, case.stdin, self.cwd, self.timeout
                )
                self.executions += 1
                del_findings, del_error = judge(case, "DEL", delete)
                for finding in del_findings:
                    self.record(case, finding)
                if delete.exit_code != 0:
                    self.record(case, Finding("del-after-add-failed", json.dumps(del_error)[:300]))
            after = take_picture(self.state_dirs)
            leaks, residue = compare(before, after)
        finally:
            self.remove_container(ctx)
        if leaks or residue or case.needs_fixture_veth:
            # With the container gone the host must be the fresh one again (checked whenever the
            # picture with the container could differ from it).
            more_leaks, more_residue = compare(self.baseline, self.settled_picture())
            leaks += [leak for leak in more_leaks if leak not in leaks]
            residue += [item for item in more_residue if item not in residue]
        if leaks:
            self.record(case, Finding("host-state-changed", "; ".join(leaks)[:1500]))
        for item in {re.sub(r"[0-9]+", "N", item).split(":")[0] for item in residue}:
            self.residue[f"{case.plugin}: {item}"] += 1
        if leaks or residue:
            reached = restore(self.baseline, self.state_dirs)
            still, _ = compare(self.baseline, reached)
            if still:
                self.say(f"  ! host could not be restored after #{case.index}: {still[:3]}")
                self.baseline = reached
        self.debug_frames()

    def settled_picture(self) -> Picture:
        """The host after the container is gone; namespace teardown is asynchronous, so wait for it."""
        assert self.baseline is not None
        picture = take_picture(self.state_dirs)
        deadline = time.monotonic() + 3
        while compare(self.baseline, picture)[0] and time.monotonic() < deadline:
            time.sleep(0.05)
            picture = take_picture(self.state_dirs)
        return picture

    def report(self, seed: str, requested: int, ran: int, elapsed: float) -> dict[str, Any]:
        return {
            "seed": seed,
            "requested": requested,
            "inputs": ran,
            "executions": self.executions,
            "elapsed_s": round(elapsed, 1),
            "per_plugin": dict(sorted(self.per_plugin.items())),
            "outcomes": dict(self.codes.most_common()),
            "findings": dict(self.counts.most_common()),
            "crash_classes": sorted(self.classes.values(), key=lambda c: (c["class"], -c["count"])),
            "residue": dict(self.residue.most_common()),
            "internal_errors": {k: [n, self.internal_example[k]] for k, n in self.internal.most_common(40)},
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=1000, help="inputs to run (default 1000)")
    parser.add_argument("--seed", default=None, help="campaign seed (default: random, printed)")
    parser.add_argument("--time-limit", type=float, default=0, help="stop starting inputs after this many seconds")
    parser.add_argument("--timeout", type=float, default=30, help="seconds one plugin execution may take")
    parser.add_argument("--plugins", default="", help="comma-separated plugin types (default: all)")
    parser.add_argument("--index", default=None, help="run only these inputs of the seed (replay): I or I,J,...")
    parser.add_argument("--jobs", type=int, default=1, help="workers, each with its own host namespace")
    parser.add_argument("--worker", default="", help=argparse.SUPPRESS)  # "k/J": run inputs i with i % J == k
    parser.add_argument("--json", default="", help="write the report here")
    parser.add_argument("-v", "--verbose", action="store_true", help="print every input and its outcome")
    args = parser.parse_args(argv)
    if args.seed is None:
        args.seed = str(random.SystemRandom().randrange(10**6))
    if os.environ.get(INNER_ENV) != "1":
        if args.jobs > 1 and args.index is None:
            return run_workers(args)
        return reexec_isolated(worker_argv(args, args.worker, args.json))
    report = run_inner(args)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(report, handle, indent=2, ensure_ascii=False)
    if not args.worker:
        print_summary(report)
    return 1 if report["crash_classes"] else 0


def worker_argv(args: argparse.Namespace, worker: str, json_path: str) -> list[str]:
    argv = ["--count", str(args.count), "--seed", str(args.seed), "--time-limit", str(args.time_limit)]
    argv += ["--timeout", str(args.timeout), "--plugins", args.plugins, "--json", json_path]
    argv += ["--worker", worker] if worker else []
    argv += ["--index", args.index] if args.index is not None else []
    return argv + (["-v"] if args.verbose else [])


def run_workers(args: argparse.Namespace) -> int:
    """``--jobs J``: J isolated workers share the inputs (i % J); their reports are merged."""
    with tempfile.TemporaryDirectory(prefix="pycni-fuzz-reports-") as reports:
        paths = [os.path.join(reports, f"{k}.json") for k in range(args.jobs)]
        if os.geteuid() != 0:
            print("fuzz_plugins: needs root (it creates namespaces)", file=sys.stderr)
            return 2
        env = {**os.environ, INNER_ENV: "1"}
        workers = [
            subprocess.Popen(isolated(worker_argv(args, f"{k}/{args.jobs}", path)), env=env)
            for k, path in enumerate(paths)
        ]
        for worker in workers:
            worker.wait()
        parts = []
        for path in paths:
            if not os.path.exists(path):
                print(f"fuzz_plugins: worker report {path} missing", file=sys.stderr)
                return 2
            with open(path) as handle:
                parts.append(json.load(handle))
    report = merge_reports(parts)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(report, handle, indent=2, ensure_ascii=False)
    print_summary(report)
    return 1 if report["crash_classes"] else 0


def merge_reports(parts: list[dict[str, Any]]) -> dict[str, Any]:
    def summed(key: str) -> dict[str, int]:
        total: Counter[str] = Counter()
        for part in parts:
            total.update(part[key])
        return dict(total.most_common())

    internal: dict[str, list[int]] = {}  # message -> [count, first input]
    for part in parts:
        for key, (count, index) in part["internal_errors"].items():
            seen = internal.setdefault(key, [0, index])
            seen[0], seen[1] = seen[0] + count, min(seen[1], index)
    classes: dict[str, dict[str, Any]] = {}
    for part in parts:
        for entry in part["crash_classes"]:
            merged = classes.get(entry["signature"])
            if merged is None:
                classes[entry["signature"]] = copy.deepcopy(entry)
                continue
            merged["count"] += entry["count"]
            for plugin, count in entry["plugins"].items():
                merged["plugins"][plugin] = merged["plugins"].get(plugin, 0) + count
            merged["frames"] = {**entry["frames"], **merged["frames"]}
            if entry["example"]["index"] < merged["example"]["index"]:
                merged["example"] = entry["example"]
    return {
        "seed": parts[0]["seed"],
        "jobs": len(parts),
        "requested": sum(p["requested"] for p in parts),
        "inputs": sum(p["inputs"] for p in parts),
        "executions": sum(p["executions"] for p in parts),
        "elapsed_s": max(p["elapsed_s"] for p in parts),
        "per_plugin": dict(sorted(summed("per_plugin").items())),
        "outcomes": summed("outcomes"),
        "findings": summed("findings"),
        "crash_classes": sorted(classes.values(), key=lambda c: (c["class"], -c["count"])),
        "residue": summed("residue"),
        "internal_errors": internal,
    }


def run_inner(args: argparse.Namespace) -> dict[str, Any]:
    """The campaign itself, inside the namespaces :func:`reexec_isolated` made."""
    repo = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
    sys.path[:0] = [os.path.join(repo, "src"), repo]
    from pycni.cli.install import install
    from pycni.plugins import PLUGIN_MODULES
    from tests.support.progress import DEFAULT_LINES, progress

    isolate_filesystem()
    work = tempfile.mkdtemp(prefix="pycni-fuzz-")
    try:
        bin_dir = os.path.join(work, "bin")
        install(bin_dir)
        plugins = [p for p in args.plugins.split(",") if p] or sorted(PLUGIN_MODULES)
        indexes = [int(i) for i in args.index.split(",")] if args.index is not None else list(range(args.count))
        k, jobs = (int(n) for n in args.worker.split("/")) if args.worker else (0, 1)
        indexes = [i for i in indexes if i % jobs == k]
        label = f" (worker {args.worker})" if args.worker else ""
        # Workers share the terminal (a bar each, on its own line) and the log (their lines together
        # about as many as one run's).
        with progress(
            f"fuzz_plugins{label}",
            len(indexes),
            unit="input",
            lines=DEFAULT_LINES // jobs,
            position=k if jobs > 1 else None,
        ) as bar:

            def say(text: str) -> None:
                bar.note(text, file=sys.stdout)

            campaign = Campaign(work, bin_dir, args.timeout, args.verbose or args.index is not None, say)
            campaign.setup()
            say(f"fuzz_plugins: seed {args.seed}, {len(indexes)} inputs over {len(plugins)} plugin types{label}")
            start = time.monotonic()
            ran = 0
            for index in indexes:
                if args.time_limit and time.monotonic() - start > args.time_limit:
                    say(f"fuzz_plugins: time limit reached after {ran} inputs{label}")
                    break
                case = make_case(str(args.seed), index, plugins, campaign.context(index))
                campaign.run_case(case)
                ran += 1
                bar.advance(detail=f"#{index} {case.plugin} {case.command}")
            return campaign.report(str(args.seed), len(indexes), ran, time.monotonic() - start)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def print_summary(report: dict[str, Any]) -> None:
    print(
        f"fuzz_plugins: {report['inputs']} inputs, {report['executions']} executions in {report['elapsed_s']} s "
        f"(seed {report['seed']})"
    )
    print("  outcomes: " + ", ".join(f"{k}: {v}" for k, v in report["outcomes"].items()))
    if report["residue"]:
        print("  residue (not a failure): " + "; ".join(f"{k} x{v}" for k, v in list(report["residue"].items())[:8]))
    if not report["crash_classes"]:
        print("  no crash class found")
    for entry in report["crash_classes"]:
        plugins = ", ".join(sorted(entry["plugins"]))
        print(f"  CRASH {entry['signature']} (x{entry['count']} in {plugins}; e.g. input #{entry['example']['index']})")
        for frame in sorted(set(entry["frames"].values())):
            print(f"        at {frame}")


if __name__ == "__main__":
    sys.exit(main())
