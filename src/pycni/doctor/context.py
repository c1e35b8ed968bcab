"""The node a doctor run looks at: its paths (each overridable) and what is read from it, once, on demand.

The node is the calling thread's network namespace plus the paths in
:class:`Options`. Defaults are where pycni's plugins and agents really put
things, taken from the modules that write there. Facts are read lazily, so a
check that does not apply costs nothing, and every check sees one reading.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, TypeVar

from pycni.fabric.calico import paths as calico_paths
from pycni.fabric.flannel import defaults as flannel_defaults
from pycni.ipam import store as ipam_store
from pycni.net import link as net_link
from pycni.net import netns, sysctl
from pycni.nft import attachments
from pycni.reset import conflists as reset_conflists
from pycni.reset.paths import Paths
from pycni.runtime import cache, conf

if TYPE_CHECKING:
    from pyroute2 import IPRoute

    from pycni.datastore import Datastore

T = TypeVar("T")
FLANNEL_RENEW_MARGIN = 3600.0  # pycni flanneld renews a lease this long before it expires (Flannel's default)


@dataclass(frozen=True)
class Options:
    """Where to look; every path a command-line option (tests and unusual installs)."""

    cni_conf_dir: str = conf.DEFAULT_CONF_DIR
    cni_cache_dir: str = cache.DEFAULT_CACHE_DIR
    host_local_dir: str = ipam_store.DEFAULT_DATA_DIR
    subnet_file: str = flannel_defaults.SUBNET_ENV_PATH
    attachments_dir: str = attachments.ROOT
    calico_mtu_file: str = calico_paths.MTU_FILE
    etcd_endpoints: str | None = None
    flannel_prefix: str = flannel_defaults.PREFIX
    bird_socket: str | None = None
    underlay_interface: str | None = None
    lease_margin: float = FLANNEL_RENEW_MARGIN
    clock: Callable[[], float] = field(default=time.time, compare=False)


@dataclass(frozen=True)
class Network:
    """One network config file in the config dir, as its plugins read it."""

    name: str
    path: str
    plugins: tuple[dict[str, Any], ...]
    described: reset_conflists.Network  # what its plugins leave on the node (host-local directories, files)

    @property
    def types(self) -> tuple[str, ...]:
        return tuple(str(p.get("type", "")) for p in self.plugins)

    def plugin(self, kind: str) -> dict[str, Any] | None:
        return next((p for p in self.plugins if p.get("type") == kind), None)


@dataclass(frozen=True)
class BadConfig:
    path: str
    why: str


def _load(path: str) -> tuple[dict[str, Any] | None, str]:
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except OSError as exc:
        return None, f"cannot be read: {exc.strerror}"
    except (ValueError, UnicodeDecodeError) as exc:
        return None, f"is not JSON ({exc})"
    if not isinstance(data, dict):
        return None, "is not a JSON object"
    if not isinstance(data.get("name"), str) or not data["name"]:
        return None, 'has no "name"'
    if not reset_conflists.plugins_of(data):
        return None, 'has no plugin ("plugins" is empty or not a list of objects)'
    return data, ""


class Node:
    """This network namespace and the node's files, read once each; :meth:`close` releases the sockets."""

    def __init__(self, options: Options) -> None:
        self.options = options
        self._ipr: IPRoute | None = None
        self._store: Datastore | None = None
        self._store_down = ""
        self._memo: dict[str, Any] = {}

    def memo(self, key: str, make: Callable[[], T]) -> T:
        """``make()`` once per run: what several checks of a group read (one datastore listing)."""
        if key not in self._memo:
            self._memo[key] = make()
        value: T = self._memo[key]
        return value

    # -- files ---------------------------------------------------------------------------

    @cached_property
    def reset_paths(self) -> Paths:
        """The same locations in reset's terms (its conflist reading is reused here)."""
        o = self.options
        return dataclasses.replace(
            Paths(),
            cni_conf_dir=o.cni_conf_dir,
            cni_cache_dir=o.cni_cache_dir,
            ipam_data_dir=o.host_local_dir,
            flannel_subnet_file=o.subnet_file,
            attachments_dir=o.attachments_dir,
        )

    @cached_property
    def _configs(self) -> tuple[list[Network], list[BadConfig]]:
        networks: list[Network] = []
        bad: list[BadConfig] = []
        for path in conf.conf_files(self.options.cni_conf_dir, reset_conflists.EXTENSIONS):
            data, why = _load(path)
            if data is None:
                bad.append(BadConfig(path, why))
                continue
            plugins = reset_conflists.plugins_of(data)
            described = reset_conflists.describe(str(data["name"]), path, "", plugins, self.reset_paths)
            networks.append(Network(str(data["name"]), path, tuple(plugins), described))
        return networks, bad

    @property
    def networks(self) -> list[Network]:
        return self._configs[0]

    @property
    def bad_configs(self) -> list[BadConfig]:
        return self._configs[1]

    def networks_of(self, kind: str) -> list[Network]:
        return [n for n in self.networks if kind in n.types]

    @cached_property
    def results(self) -> cache.ResultCache:
        return cache.ResultCache(self.options.cni_cache_dir)

    # -- the network namespace -----------------------------------------------------------

    @property
    def ipr(self) -> IPRoute:
        if self._ipr is None:
            self._ipr = netns.iproute_here()
        return self._ipr

    @cached_property
    def link_names(self) -> list[str]:
        return [str(msg.get("ifname")) for msg in self.ipr.get_links()]

    def link(self, name: str) -> net_link.LinkInfo | None:
        return net_link.find(self.ipr, name) if name in self.link_names else None

    @cached_property
    def local_addresses(self) -> set[str]:
        return {str(msg.get("address")) for msg in self.ipr.get_addr() if msg.get("address")}

    def addresses_of(self, name: str) -> list[ipaddress.IPv4Interface | ipaddress.IPv6Interface]:
        found = self.link(name)
        if found is None:
            return []
        return [
            ipaddress.ip_interface(f"{msg.get('address')}/{msg['prefixlen']}")
            for msg in self.ipr.get_addr(index=found.index)
            if msg.get("address")
        ]

    @staticmethod
    def sysctl(name: str) -> str | None:
        """A sysctl of this network namespace (``net/ipv4/...``); None if it does not exist."""
        try:
            return sysctl.read(name)
        except OSError:
            return None

    # -- the datastore -------------------------------------------------------------------

    @property
    def store(self) -> Datastore | None:
        """etcd at ``--etcd-endpoints`` (None without it, or once it did not answer); opening contacts nobody."""
        if self._store_down:
            return None
        if self._store is None and self.options.etcd_endpoints:
            from pycni.datastore import open_datastore

            self._store = open_datastore(self.options.etcd_endpoints, timeout=3.0)
        return self._store

    def store_down(self, why: str) -> None:
        """The datastore did not answer: the checks that read it are skipped from now on."""
        self._store_down = why

    def close(self) -> None:
        if self._ipr is not None:
            self._ipr.close()
            self._ipr = None
        if self._store is not None:
            self._store.close()
            self._store = None
