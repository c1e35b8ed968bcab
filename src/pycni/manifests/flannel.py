"""Flannel's manifest (kube-flannel.yml) read as one node's install: the conflist and flanneld's settings.

What the manifest does on a node, and what pycni does instead:

* the ``install-cni`` init container runs ``cp -f /etc/kube-flannel/cni-conf.json
  /etc/cni/net.d/10-flannel.conflist``: the ConfigMap ``kube-flannel-cfg``'s
  ``cni-conf.json`` becomes the conflist (its target name is taken from that
  command when the DaemonSet is in the manifest). A single plugin's config
  (``"type": "flannel"`` at the top, as older manifests and the seed article
  show) is written as a list of that one plugin, as libcni's
  ``ConfListFromConf`` reads a ``.conf``;
* the ``kube-flannel`` container runs ``/opt/bin/flanneld --ip-masq
  --kube-subnet-mgr`` with ``net-conf.json`` mounted at
  ``/etc/kube-flannel/net-conf.json``: ``pycni flanneld`` gets the flags it
  has (``--ip-masq``, ``--iface``, ``--public-ip``, ...; also from
  ``FLANNELD_*`` variables in the container's env, as flanneld reads them)
  and ``--net-config-path`` naming the file install writes. pycni has no
  Kubernetes subnet manager: leases live in etcd or the embedded store, so
  ``--kube-subnet-mgr`` is noted and dropped.

Only the DaemonSet for this machine's architecture (``nodeSelector``
``kubernetes.io/arch`` or ``beta.kubernetes.io/arch``) is read; older
manifests have one per architecture.
"""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pycni.fabric.flannel.model import ConfigError as FlannelConfigError
from pycni.fabric.flannel.model import NetworkConfig
from pycni.manifests.documents import (
    Document,
    configmap_data,
    configmaps_by_name,
    container_env,
    containers,
    ignored,
    node_selector,
    words,
)
from pycni.plugins import PLUGIN_MODULES
from pycni.spec.config import NetworkConfigList, PluginConfig
from pycni.spec.errors import CNIError

CONFIGMAP = "kube-flannel-cfg"
CNI_CONF_KEY = "cni-conf.json"
NET_CONF_KEY = "net-conf.json"
CONFLIST_NAME = "10-flannel.conflist"
NET_CONF_PATH = "/etc/kube-flannel/net-conf.json"  # where the manifest mounts it, flanneld's --net-config-path
SOURCE_IN_CONTAINER = "/etc/kube-flannel/cni-conf.json"
# flanneld's flags that pycni flanneld has, by whether they take a value.
VALUE_FLAGS = (
    "iface",
    "public-ip",
    "iptables-resync",
    "subnet-file",
    "subnet-lease-renew-margin",
    "etcd-endpoints",
    "etcd-prefix",
)
BOOL_FLAGS = ("ip-masq", "iptables-forward-rules")
_NO_KUBE = "pycni has no Kubernetes subnet manager: leases are kept in etcd (--etcd-endpoints) or the embedded store"
NOT_HERE = {
    "kube-subnet-mgr": _NO_KUBE,
    "kube-api-url": _NO_KUBE,
    "kubeconfig-file": _NO_KUBE,
    "kube-annotation-prefix": _NO_KUBE,
    "set-node-network-unavailable": _NO_KUBE,
    "healthz-port": "pycni flanneld serves no health endpoint (--metrics-addr serves metrics)",
    "healthz-ip": "pycni flanneld serves no health endpoint (--metrics-addr serves metrics)",
    "net-config-path": "pycni install writes net-conf.json itself and passes its path",
    "iface-regex": "pycni flanneld takes --iface only",
    "iface-can-reach": "pycni flanneld takes --iface only",
}
ARCH_LABELS = ("kubernetes.io/arch", "beta.kubernetes.io/arch")
_ARCHES = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "ppc64le": "ppc64le", "s390x": "s390x"}


@dataclass(frozen=True)
class FlannelInstall:
    """What a Flannel manifest installs on this node."""

    configmap: Document
    conflist: dict[str, Any]
    conflist_name: str
    net_conf: str  # net-conf.json as the ConfigMap holds it
    network: NetworkConfig
    flags: tuple[str, ...]  # pycni flanneld's flags from the manifest's flanneld (without --net-config-path)
    used: tuple[Document, ...]  # the documents read (the ConfigMap, this architecture's DaemonSet)
    notes: tuple[str, ...]


def machine_arch() -> str:
    """This machine as Kubernetes names architectures (``amd64``, ``arm64``...)."""
    machine = platform.machine()
    return _ARCHES.get(machine, machine)


def find_configmap(documents: Sequence[Document]) -> Document | None:
    found = [d for d in documents if d.kind == "ConfigMap" and d.name == CONFIGMAP]
    return found[-1] if found else None


def conflist_from(configmap: Document, text: str) -> dict[str, Any]:
    """``cni-conf.json`` checked as libcni loads it, as a conflist (a single plugin's config wrapped)."""
    key = f"data.{CNI_CONF_KEY}"
    raw = configmap.json_object(key, text)
    try:
        if "plugins" in raw:
            parsed = NetworkConfigList.from_dict(raw)
            conflist = raw
        else:
            parsed = NetworkConfigList.from_single(PluginConfig.from_dict(raw))
            conflist = {"name": raw.get("name", ""), "cniVersion": raw.get("cniVersion", ""), "plugins": [raw]}
    except CNIError as exc:
        raise configmap.error(key, exc.msg) from None
    if not parsed.name:
        raise configmap.error(key, "no network name")
    for index, plugin in enumerate(parsed.plugins):
        _known(configmap, f"{key} plugins[{index}].type", plugin.type)
        delegate = plugin.raw.get("delegate")
        if plugin.type == "flannel" and isinstance(delegate, dict):
            _known(configmap, f"{key} plugins[{index}].delegate.type", str(delegate.get("type") or "bridge"))
    return conflist


def _known(configmap: Document, key: str, plugin_type: str) -> None:
    if plugin_type not in PLUGIN_MODULES:
        have = ", ".join(sorted(PLUGIN_MODULES))
        raise configmap.error(key, f"{plugin_type!r} is not a plugin pycni has ({have})")


def network_from(configmap: Document, text: str) -> NetworkConfig:
    """``net-conf.json`` through pycni's Flannel model; the backend must be one pycni has, its options valid."""
    from pycni.fabric.flannel.backends import BACKENDS
    from pycni.fabric.flannel.backends.vxlan import VxlanOptions

    key = f"data.{NET_CONF_KEY}"
    try:
        network = NetworkConfig.from_json(text)
        if network.backend_type == "vxlan":
            VxlanOptions.parse(network.backend, 1500)
    except FlannelConfigError as exc:
        raise configmap.error(key, exc.msg) from None
    if network.backend_type not in BACKENDS:
        have = ", ".join(sorted(BACKENDS))
        raise configmap.error(f"{key} Backend.Type", f"{network.backend_type!r}: pycni has {have}")
    return network


def _for_this_node(daemonset: Document, arch: str) -> str | None:
    """None if the DaemonSet runs on this architecture, else the one it is for."""
    selector = node_selector(daemonset)
    for label in ARCH_LABELS:
        if label in selector and selector[label] != arch:
            return selector[label]
    return None


def _flanneld(daemonset: Document) -> dict[str, Any] | None:
    for container in containers(daemonset):
        command = words(daemonset, container, "command")
        if container.get("name") == "kube-flannel" or any(os.path.basename(c) == "flanneld" for c in command):
            return container
    return None


def _conflist_target(daemonset: Document) -> str | None:
    """The name ``install-cni``'s ``cp`` gives cni-conf.json in /etc/cni/net.d, if it copies it."""
    for container in containers(daemonset, init=True):
        argv = words(daemonset, container, "command") + words(daemonset, container, "args")
        if SOURCE_IN_CONTAINER in argv and os.path.basename(argv[0]) == "cp":
            target = argv[-1]
            if target != SOURCE_IN_CONTAINER and not target.endswith("/"):
                return os.path.basename(target)
    return None


def translate_flags(daemonset: Document, argv: Sequence[str], env: dict[str, str]) -> tuple[list[str], list[str]]:
    """flanneld's flags (and ``FLANNELD_*`` variables) as pycni flanneld's; notes for the rest."""
    flags: list[str] = []
    notes: list[str] = []
    pairs: list[tuple[str, str | None, str]] = []  # (flag, value, as written)
    index = 0
    while index < len(argv):
        word = argv[index]
        index += 1
        if not word.startswith("-"):
            notes.append(ignored(f"{daemonset.label} flanneld argument {word!r}", "not a flag"))
            continue
        name, sep, value = word.lstrip("-").partition("=")
        if not sep and name in VALUE_FLAGS and index < len(argv):
            value, sep = argv[index], "="
            index += 1
        pairs.append((name, value if sep else None, word))
    for variable, value in env.items():
        if variable.startswith("FLANNELD_"):
            pairs.append((variable[len("FLANNELD_") :].lower().replace("_", "-"), value, f"env {variable}"))
    for name, given, written in pairs:
        if name in BOOL_FLAGS:
            if given is None or given.lower() in ("1", "t", "true"):
                flags.append(f"--{name}")
            elif given.lower() in ("0", "f", "false"):
                flags.append(f"--{name}=false")
            else:
                raise daemonset.error(f"flanneld {written}", f"{given!r} is not true or false")
        elif name in VALUE_FLAGS:
            if given is None or given == "":
                raise daemonset.error(f"flanneld {written}", "needs a value")
            flags += [f"--{name}", given]
        else:
            why = NOT_HERE.get(name, "not a flag pycni flanneld has")
            notes.append(ignored(f"{daemonset.label} flanneld {written}", why))
    return flags, notes


def read(documents: Sequence[Document], configmap: Document, arch: str | None = None, node: str = "") -> FlannelInstall:
    """The install a Flannel manifest describes (``configmap`` is its kube-flannel-cfg)."""
    data = configmap_data(configmap)
    for key in (CNI_CONF_KEY, NET_CONF_KEY):
        if key not in data:
            raise configmap.error("data", f"no {key!r} key (Flannel's ConfigMap holds cni-conf.json and net-conf.json)")
    conflist = conflist_from(configmap, data[CNI_CONF_KEY])
    network = network_from(configmap, data[NET_CONF_KEY])
    notes: list[str] = []
    if "plugins" not in json.loads(data[CNI_CONF_KEY]):
        notes.append(f"note: {configmap.label} {CNI_CONF_KEY} is one plugin's config: written as a list of one plugin")
    used = [configmap]
    flags: list[str] = []
    name = CONFLIST_NAME
    arch = arch or machine_arch()
    chosen: Document | None = None
    for daemonset in documents:
        if daemonset.kind != "DaemonSet" or _flanneld(daemonset) is None:
            continue
        other = _for_this_node(daemonset, arch)
        if other is not None:
            notes.append(ignored(daemonset.label, f"for {other} nodes; this node is {arch}"))
            continue
        if chosen is not None:
            notes.append(ignored(daemonset.label, f"a second flanneld DaemonSet; {chosen.label} is used"))
            continue
        chosen = daemonset
        used.append(daemonset)
        container = _flanneld(daemonset)
        assert container is not None
        argv = words(daemonset, container, "command")[1:] + words(daemonset, container, "args")
        env = container_env(daemonset, container, configmaps_by_name(documents), node)
        flags, flag_notes = translate_flags(daemonset, argv, env.values)
        notes += flag_notes
        for variable, why in env.unresolved:
            notes.append(ignored(f"{daemonset.label} env {variable}", why))
        for variable in env.values:
            if not variable.startswith("FLANNELD_"):
                notes.append(ignored(f"{daemonset.label} env {variable}", "not read by pycni flanneld"))
        name = _conflist_target(daemonset) or CONFLIST_NAME
        notes.append(
            ignored(
                f"{daemonset.label} images, resources, securityContext, volumes",
                "pycni runs flanneld on the host, not in a pod",
            )
        )
    return FlannelInstall(
        configmap=configmap,
        conflist=conflist,
        conflist_name=name,
        net_conf=data[NET_CONF_KEY],
        network=network,
        flags=tuple(flags),
        used=tuple(used),
        notes=tuple(notes),
    )
