"""host-local's addresses per range, from the network configs and the reservation directories.

The networks are those in the CNI config directory (``NETCONFPATH``, as
cnitool and ``pycni add`` read it, default ``/etc/cni/net.d``): every plugin
whose ``ipam`` is ``host-local``, and every ``flannel`` plugin, whose
host-local section comes from ``subnet.env`` exactly as the plugin builds
it. Ranges are parsed by host-local's own code (defaults, the gateway left
out of the capacity), so the numbers are what the allocator would hand out.

A reservation is a file named after its address (:mod:`pycni.ipam.store`);
counting is one directory listing per network, no file is opened, and no
lock is taken (a scrape must never make a call wait; a count taken during
an allocation is off by that one address until the next scrape). Entries
outside every configured range (a range removed from the config) are not
counted. A config file that does not parse is skipped (logged at debug):
one bad file must not hide every other network.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from typing import Any

from pycni.ipam.config import parse_ip
from pycni.ipam.ranges import Range
from pycni.ipam.store import Store
from pycni.metrics.ipam import AddressUsage
from pycni.runtime.conf import DEFAULT_CONF_DIR, conf_files, load_conflist_file
from pycni.skel import CmdArgs
from pycni.spec.config import NetworkConfigList, PluginConfig
from pycni.spec.errors import CNIError
from pycni.spec.fields import Fields

log = logging.getLogger("pycni.metrics")


def conf_dir() -> str:
    return os.environ.get("NETCONFPATH") or DEFAULT_CONF_DIR


def usage(directory: str | None = None) -> list[AddressUsage]:
    """One row per range of every host-local network configured in ``directory``."""
    rows: list[AddressUsage] = []
    seen: set[str] = set()
    for name, version, plugin in _plugins(directory or conf_dir()):
        try:
            section = _host_local_section(name, version, plugin)
            if section is None:
                continue
            args, ranges = section
            store = Store(name, Fields(args.config["ipam"]).os_string("dataDir"))
        except CNIError as exc:
            log.debug("IPAM metrics: network %s skipped: %s", name, exc)
            continue
        if store.dir in seen:
            continue  # two plugins of one list, or two files, naming one directory
        seen.add(store.dir)
        rows.extend(_count(name, ranges, _reserved(store.dir)))
    return rows


def _plugins(directory: str) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """``(network name, cniVersion, plugin object)`` of every config in ``directory``."""
    for path in conf_files(directory, (".conflist", ".conf", ".json")):
        try:
            if path.endswith(".conflist"):
                config = load_conflist_file(path)
            else:
                with open(path, "rb") as handle:
                    config = NetworkConfigList.from_single(PluginConfig.from_bytes(handle.read(), path))
        except (CNIError, OSError) as exc:
            log.debug("IPAM metrics: %s skipped: %s", path, exc)
            continue
        for plugin in config.plugins:
            yield config.name, config.cni_version, plugin.raw


def _host_local_section(name: str, version: str, plugin: dict[str, Any]) -> tuple[CmdArgs, list[Range]] | None:
    """The plugin's host-local config as the allocator sees it, or None if it uses another IPAM."""
    from pycni.plugins.ipam.host_local import load_range_sets

    conf: dict[str, Any] = {**plugin, "name": name, "cniVersion": version}
    if plugin.get("type") == "flannel":
        conf = _flannel_delegate(conf)
        if not conf:
            return None
    ipam = conf.get("ipam")
    if not isinstance(ipam, dict) or ipam.get("type") != "host-local":
        return None
    args = CmdArgs("", "", "", "", "", [], b"", conf)
    ranges = [r for range_set in load_range_sets(args, Fields(ipam, "ipam")) for r in range_set]
    return args, ranges


def _flannel_delegate(conf: dict[str, Any]) -> dict[str, Any]:
    """The flannel plugin's delegate config from its ``subnet.env``, or ``{}`` while there is none."""
    from pycni.fabric.flannel import subnetenv
    from pycni.plugins.meta.flannel import delegate_config

    fields = Fields(conf)
    env = subnetenv.load(fields.os_string("subnetFile", subnetenv.DEFAULT_PATH) or subnetenv.DEFAULT_PATH)
    if env is None:
        return {}
    args = CmdArgs("", "", "", "", "", [], b"", conf)
    return delegate_config(args, env, dict(fields.obj("delegate").data))


def _reserved(directory: str) -> list[str]:
    try:
        return os.listdir(directory)
    except FileNotFoundError:
        return []  # no address handed out yet
    except OSError as exc:
        log.debug("IPAM metrics: cannot list %s: %s", directory, exc.strerror)
        return []


def _count(network: str, ranges: list[Range], names: list[str]) -> list[AddressUsage]:
    used = dict.fromkeys(range(len(ranges)), 0)
    for name in names:
        ip = parse_ip(name) if "%" not in name else None
        if ip is None or str(ip) != name:
            continue  # the lock, the cursors, anything not named as host-local names a reservation
        for index, candidate in enumerate(ranges):
            if candidate.contains(ip) and ip != candidate.gateway:
                used[index] += 1
                break
    return [
        AddressUsage(network, label(candidate), used[index], max(0, candidate.capacity() - used[index]))
        for index, candidate in enumerate(ranges)
    ]


def label(candidate: Range) -> str:
    """The range as a label: its subnet, with the window when the config narrowed it."""
    default_start = candidate.subnet.network_address + 1
    last = candidate.subnet.broadcast_address - (1 if candidate.subnet.version == 4 else 0)
    if candidate.start == default_start and candidate.end == last:
        return str(candidate.subnet)
    return f"{candidate.subnet} {candidate.start}-{candidate.end}"
