"""Which CNI config files are pycni's, and what each of pycni's networks names on the node.

A file is pycni's when ``pycni install`` recorded it (:data:`paths.INSTALLED_RECORD`,
the file's sha256 unchanged since), or, with no record of it, when it is what
the Flannel and Calico installers write and pycni provides: named
``10-flannel.conflist`` / ``10-calico.conflist``, its first plugin ``flannel``
/ ``calico``, every plugin type one pycni has, and each type's executable in
the CNI bin dir a pycni plugin executable. A file changed since pycni recorded
it is the user's now: it is kept, and said so.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

from pycni.plugins import PLUGIN_MODULES
from pycni.plugins.main import bridge as bridge_plugin
from pycni.reset.paths import Paths
from pycni.reset.record import read_record, sha256
from pycni.runtime.conf import conf_files
from pycni.shim import executable_plugin_type
from pycni.spec.errors import CNIError
from pycni.spec.validate import validate_network_name

INSTALLER_NAMES = {"10-flannel.conflist": "flannel", "10-calico.conflist": "calico"}
EXTENSIONS = (".conf", ".conflist", ".json")


@dataclass(frozen=True)
class Network:
    """One pycni network from its config file, and the node objects its plugins make."""

    name: str
    path: str
    why: str
    types: tuple[str, ...]
    bridges: frozenset[str] = frozenset()
    ipam_dirs: tuple[str, ...] = ()  # host-local's <dataDir>/<network>
    state_files: tuple[str, ...] = ()  # files the config names for its plugins and agent
    state_dirs: tuple[str, ...] = ()


@dataclass
class Found:
    networks: list[Network] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)  # notes for the listing: "<path>: what reset does not take, and why"


def valid_name(name: str) -> bool:
    """A network name as the spec allows it (never empty, never a path): what IPAM and caches are named by."""
    try:
        validate_network_name(name)
    except CNIError:
        return False
    return True


def plugins_of(config: Any) -> list[dict[str, Any]]:
    """The plugin objects of a ``.conflist`` (or the one plugin of a ``.conf``); none if it is not one."""
    if not isinstance(config, dict):
        return []
    plugins = config.get("plugins") if "plugins" in config else [config]
    return [p for p in plugins if isinstance(p, dict)] if isinstance(plugins, list) else []


def _load(path: str) -> dict[str, Any] | None:
    try:
        with open(path, encoding="utf-8") as handle:
            config = json.load(handle)
    except (OSError, ValueError):
        return None
    return config if isinstance(config, dict) and isinstance(config.get("name"), str) else None


def _installer_rule(path: str, plugins: list[dict[str, Any]], bin_dir: str) -> str | None:
    """Why an unrecorded file is pycni's under the installer-name rule, or None."""
    expected = INSTALLER_NAMES.get(os.path.basename(path))
    types = [str(p.get("type", "")) for p in plugins]
    if expected is None or not types or types[0] != expected or not all(t in PLUGIN_MODULES for t in types):
        return None
    for plugin_type in set(types):
        try:
            with open(os.path.join(bin_dir, plugin_type), "rb") as handle:
                if executable_plugin_type(handle.read(4096)) != plugin_type:
                    return None
        except OSError:
            return None
    return f"{expected} installer's file name, every plugin a pycni executable in {bin_dir}"


def _host_local_dirs(ipam: Any, network: str, paths: Paths) -> list[str]:
    if not isinstance(ipam, dict) or ipam.get("type") != "host-local":
        return []
    return [os.path.join(str(ipam.get("dataDir") or paths.ipam_data_dir), network)]


def describe(name: str, path: str, why: str, plugins: list[dict[str, Any]], paths: Paths) -> Network:
    """What the plugins of network ``name`` leave on the node, read from their config as the plugins read it."""
    bridges: set[str] = set()
    ipam_dirs: list[str] = []
    files: list[str] = []
    dirs: list[str] = []
    for plugin in plugins:
        kind = plugin.get("type")
        ipam = plugin.get("ipam")
        if kind == "bridge":
            bridges.add(str(plugin.get("bridge") or bridge_plugin.DEFAULT_BRIDGE))
        elif kind == "flannel":
            delegate = plugin.get("delegate")
            delegate = delegate if isinstance(delegate, dict) else {}
            if delegate.get("type", "bridge") == "bridge":
                bridges.add(str(delegate.get("bridge") or bridge_plugin.DEFAULT_BRIDGE))
            delegate_ipam = delegate.get("ipam")
            ipam = {"type": "host-local", **(delegate_ipam if isinstance(delegate_ipam, dict) else {})}
            files.append(str(plugin.get("subnetFile") or paths.flannel_subnet_file))
            dirs.append(str(plugin.get("dataDir") or paths.flannel_data_dir))
        elif kind == "calico":
            files += [
                str(plugin.get("nodename_file") or os.path.join(paths.calico_lib_dir, "nodename")),
                str(plugin.get("pycni_mtu_file") or os.path.join(paths.calico_lib_dir, "mtu")),
            ]
            if plugin.get("ipam_lock_file"):
                files.append(str(plugin["ipam_lock_file"]))
        ipam_dirs += _host_local_dirs(ipam, name, paths)
    return Network(
        name=name,
        path=path,
        why=why,
        types=tuple(str(p.get("type", "")) for p in plugins),
        bridges=frozenset(bridges),
        ipam_dirs=tuple(dict.fromkeys(ipam_dirs)),
        state_files=tuple(dict.fromkeys(files)),
        state_dirs=tuple(dict.fromkeys(dirs)),
    )


def find(paths: Paths) -> Found:
    """pycni's networks in the config dir, and the files that look like pycni's but are kept."""
    found = Found()
    record = read_record(paths.installed_record)
    for path in conf_files(paths.cni_conf_dir, EXTENSIONS):
        config = _load(path)
        plugins = plugins_of(config) if config is not None else []
        recorded = record.get(os.path.abspath(path))
        why: str | None
        if recorded is not None:
            if sha256(path) != recorded:
                found.kept.append(f"{path}: changed since pycni install wrote it (not removed)")
                continue
            why = f"written by pycni install (recorded in {paths.installed_record})"
        else:
            why = _installer_rule(path, plugins, paths.cni_bin_dir)
        if why is None:
            continue
        name = str(config["name"]) if config is not None else ""
        if not valid_name(name):  # no directory or cache is derived from a name host-local would refuse
            found.networks.append(Network("", path, why, ()))
            found.kept.append(
                f"{path}: no valid network name, so only the file goes (no IPAM, cache or bridge is derived from it)"
            )
            continue
        found.networks.append(describe(name, path, why, plugins, paths))
    return found


def recorded_elsewhere(paths: Paths) -> tuple[list[str], list[str]]:
    """Files ``pycni install`` recorded outside the config dir (net-conf.json, a unit): (unchanged, notes).

    A file changed since it was written is the user's now: it stays, with a note.
    """
    conf_dir = os.path.abspath(paths.cni_conf_dir)
    unchanged, notes = [], []
    for path, digest in sorted(read_record(paths.installed_record).items()):
        if os.path.dirname(path) == conf_dir or not os.path.isfile(path):
            continue
        if sha256(path) == digest:
            unchanged.append(path)
        else:
            notes.append(f"{path}: changed since pycni install wrote it (not removed)")
    return unchanged, notes
