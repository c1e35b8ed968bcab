"""Calico's manifests read as one node's install: the conflist install-cni writes and calico-node's settings.

calico.yaml (``manifests/calico.yaml``): the ConfigMap ``calico-config`` holds
``cni_network_config`` (a conflist template), ``veth_mtu`` and
``calico_backend``; the ``calico-node`` DaemonSet's ``install-cni`` init
container gets them as ``CNI_NETWORK_CONFIG``, ``CNI_MTU`` and
``KUBERNETES_NODE_NAME`` (``spec.nodeName``) and does what
``cni-plugin/pkg/install/install.go`` does: replace ``__LOG_LEVEL__`` (info),
``__LOG_FILE_PATH__`` (/var/log/calico/cni/cni.log), ``__LOG_FILE_MAX_SIZE__``
(100), ``__LOG_FILE_MAX_AGE__`` (30), ``__LOG_FILE_MAX_COUNT__`` (10),
``__DATASTORE_TYPE__`` (kubernetes), ``__KUBERNETES_NODE_NAME__`` (the node),
``__KUBECONFIG_FILEPATH__`` (``<conf dir>/calico-kubeconfig``), ``__CNI_MTU__``
(1500), ``__KUBERNETES_SERVICE_HOST__``/``_PORT__``, ``__SERVICEACCOUNT_TOKEN__``,
``__ETCD_CERT_FILE__``/``__ETCD_CA_CERT_FILE__``/``__ETCD_KEY_FILE__`` (empty: no
TLS assets), ``__ETCD_ENDPOINTS__`` and ``__ETCD_DISCOVERY_SRV__``, each from
the container's variable of that name when set, then check it is JSON and
write it as ``CNI_CONF_NAME`` (``10-calico.conflist``). The ``calico-node``
container's env (``CALICO_NETWORKING_BACKEND`` from ``calico_backend``,
``FELIX_IPINIPMTU``/``FELIX_VXLANMTU`` from ``veth_mtu``, ``CALICO_IPV4POOL_*``,
``IP``, ``NODENAME``...) is what ``pycni calico-node`` reads too.

custom-resources.yaml: the Tigera operator renders the conflist itself
(``pkg/render/node.go``: calico with ``mtu`` = ``calicoNetwork.mtu`` or 0,
calico-ipam, ``container_settings.allow_ip_forwarding``, ``policy k8s``; then
bandwidth, and portmap unless ``hostPorts: Disabled``) and tells calico-node
the pools; ``pycni calico-node --installation FILE`` reads the Installation.

pycni has no Kubernetes API datastore: ``datastore_type``/``DATASTORE_TYPE``
``kubernetes`` become ``etcdv3`` with the endpoints given to install, else
the embedded store (``pycni``), and each change is noted.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from pycni.fabric.calico.config import ConfigError as CalicoConfigError
from pycni.fabric.calico.nodeconfig import FELIX_ENV
from pycni.manifests.documents import (
    Document,
    ManifestError,
    ResolvedEnv,
    configmap_data,
    configmaps_by_name,
    container_env,
    containers,
    ignored,
)
from pycni.plugins import PLUGIN_MODULES
from pycni.spec.config import NetworkConfigList
from pycni.spec.errors import CNIError

CONFIGMAP = "calico-config"
TEMPLATE_KEY = "cni_network_config"
CONFLIST_NAME = "10-calico.conflist"
KUBECONFIG_NAME = "calico-kubeconfig"
NODE_CONTAINER = "calico-node"
INSTALL_CONTAINER = "install-cni"
# install.go's placeholders: (placeholder, the install-cni variable, its default). None: computed.
PLACEHOLDERS: tuple[tuple[str, str, str | None], ...] = (
    ("__LOG_LEVEL__", "LOG_LEVEL", "info"),
    ("__LOG_FILE_PATH__", "LOG_FILE_PATH", "/var/log/calico/cni/cni.log"),
    ("__LOG_FILE_MAX_SIZE__", "LOG_FILE_MAX_SIZE", "100"),
    ("__LOG_FILE_MAX_AGE__", "LOG_FILE_MAX_AGE", "30"),
    ("__LOG_FILE_MAX_COUNT__", "LOG_FILE_MAX_COUNT", "10"),
    ("__DATASTORE_TYPE__", "DATASTORE_TYPE", "kubernetes"),
    ("__KUBERNETES_NODE_NAME__", "KUBERNETES_NODE_NAME", None),
    ("__KUBECONFIG_FILEPATH__", "", None),
    ("__CNI_MTU__", "CNI_MTU", "1500"),
    ("__KUBERNETES_SERVICE_HOST__", "KUBERNETES_SERVICE_HOST", ""),
    ("__KUBERNETES_SERVICE_PORT__", "KUBERNETES_SERVICE_PORT", ""),
    ("__SERVICEACCOUNT_TOKEN__", "", ""),
    ("__ETCD_CERT_FILE__", "", ""),
    ("__ETCD_CA_CERT_FILE__", "", ""),
    ("__ETCD_KEY_FILE__", "", ""),
    ("__ETCD_ENDPOINTS__", "ETCD_ENDPOINTS", ""),
    ("__ETCD_DISCOVERY_SRV__", "ETCD_DISCOVERY_SRV", ""),
)
POOL_ENV = tuple(
    f"CALICO_IPV4POOL_{name}"
    for name in ("CIDR", "BLOCK_SIZE", "IPIP", "VXLAN", "NAT_OUTGOING", "NODE_SELECTOR", "DISABLE_BGP_EXPORT")
)
# What pycni calico-node reads from its environment (pycni.fabric.calico.nodeconfig, .config).
NODE_ENV = frozenset(
    (
        "NODENAME",
        "HOSTNAME",
        "IP",
        "IP_AUTODETECTION_METHOD",
        "AS",
        "CALICO_NETWORKING_BACKEND",
        "NO_DEFAULT_POOLS",
        "CLUSTER_TYPE",
        "CALICO_ROUTER_ID",
        "DATASTORE_TYPE",
        "ETCD_ENDPOINTS",
        *POOL_ENV,
        *FELIX_ENV,
    )
)
OPERATOR_KINDS_USED = ("Installation",)


@dataclass(frozen=True)
class CalicoInstall:
    """What a Calico manifest installs on this node."""

    source: Document  # the calico-config ConfigMap, or the Installation
    conflist: dict[str, Any]
    conflist_name: str
    env: dict[str, str]  # pycni calico-node's environment
    flags: tuple[str, ...]  # pycni calico-node's flags
    used: tuple[Document, ...]
    notes: tuple[str, ...] = field(default=())
    settings: Document | None = None  # where calico-node's settings come from (the DaemonSet), if not ``source``

    @property
    def settings_source(self) -> Document:
        return self.settings or self.source


def find_configmap(documents: Sequence[Document]) -> Document | None:
    found = [d for d in documents if d.kind == "ConfigMap" and d.name == CONFIGMAP]
    return found[-1] if found else None


def find_installation(documents: Sequence[Document]) -> Document | None:
    found = [d for d in documents if d.kind == "Installation"]
    return found[0] if found else None


def _container(document: Document, name: str, init: bool = False) -> dict[str, Any] | None:
    for container in containers(document, init):
        if container.get("name") == name:
            return container
    return None


def _node_daemonset(documents: Sequence[Document]) -> Document | None:
    for document in documents:
        if document.kind == "DaemonSet" and _container(document, NODE_CONTAINER) is not None:
            return document
    return None


def substitute(template: str, env: dict[str, str], node: str, cni_conf_dir: str) -> str:
    """install-cni's replacements (install.go ``writeCNIConfig``), in its order."""
    text = template
    for placeholder, variable, default in PLACEHOLDERS:
        if placeholder == "__KUBERNETES_NODE_NAME__":
            value = env.get(variable) or node
        elif placeholder == "__KUBECONFIG_FILEPATH__":
            value = f"{cni_conf_dir.rstrip('/')}/{KUBECONFIG_NAME}"
        elif variable:
            value = env.get(variable, default or "")
        else:
            value = default or ""
        text = text.replace(placeholder, value)
    return text


def _pycni_datastore(plugin: dict[str, Any], etcd_endpoints: str, where: str) -> str | None:
    """Make a calico plugin's datastore one pycni has; a note if it changed."""
    kind = str(plugin.get("datastore_type") or "")
    if kind == "etcdv3" and etcd_endpoints and plugin.get("etcd_endpoints") != etcd_endpoints:
        before = plugin.get("etcd_endpoints") or "none"
        plugin["etcd_endpoints"] = etcd_endpoints
        return f"note: {where} etcd_endpoints {before} -> {etcd_endpoints} (given to install)"
    if kind != "kubernetes":
        return None
    if etcd_endpoints:
        plugin["datastore_type"] = "etcdv3"
        plugin["etcd_endpoints"] = etcd_endpoints
        return (
            f"note: {where} datastore_type kubernetes -> etcdv3 at {etcd_endpoints} (pycni has no Kubernetes datastore)"
        )
    plugin["datastore_type"] = "pycni"
    return (
        f"note: {where} datastore_type kubernetes -> pycni, the embedded store "
        "(pycni has no Kubernetes datastore; give --etcd-endpoints for etcd)"
    )


def checked_conflist(source: Document, key: str, text: str, etcd_endpoints: str) -> tuple[dict[str, Any], list[str]]:
    """The conflist text parsed and checked as libcni loads it; calico plugins moved to pycni's datastore."""
    raw = source.json_object(key, text, "not JSON after install-cni's substitutions")
    try:
        parsed = NetworkConfigList.from_dict(raw)
    except CNIError as exc:
        raise source.error(key, exc.msg) from None
    if not parsed.plugins:
        raise source.error(key, "no plugins (Calico's conflist lists calico, portmap...)")
    notes: list[str] = []
    for index, plugin in enumerate(parsed.plugins):
        if plugin.type not in PLUGIN_MODULES:
            have = ", ".join(sorted(PLUGIN_MODULES))
            raise source.error(f"{key} plugins[{index}].type", f"{plugin.type!r} is not a plugin pycni has ({have})")
        ipam = plugin.raw.get("ipam")
        if isinstance(ipam, dict) and ipam.get("type") and ipam["type"] not in PLUGIN_MODULES:
            raise source.error(f"{key} plugins[{index}].ipam.type", f"{ipam['type']!r} is not a plugin pycni has")
        if plugin.type == "calico":
            note = _pycni_datastore(plugin.raw, etcd_endpoints, f"{CONFLIST_NAME} plugins[{index}] (calico)")
            if note:
                notes.append(note)
    return raw, notes


def node_env(env: dict[str, str], daemonset: Document | None, etcd_endpoints: str) -> tuple[dict[str, str], list[str]]:
    """The variables pycni calico-node reads; notes for the others and for the datastore's change."""
    out: dict[str, str] = {}
    notes: list[str] = []
    label = daemonset.label if daemonset is not None else NODE_CONTAINER
    for name, value in env.items():
        if name in NODE_ENV:
            out[name] = value
        else:
            notes.append(ignored(f"{label} env {name}", "not read by pycni calico-node"))
    if out.get("DATASTORE_TYPE") == "kubernetes" or etcd_endpoints:
        before = out.pop("DATASTORE_TYPE", "")
        if etcd_endpoints:
            out.update(DATASTORE_TYPE="etcdv3", ETCD_ENDPOINTS=etcd_endpoints)
        if before == "kubernetes":
            after = f"etcdv3 at {etcd_endpoints}" if etcd_endpoints else "unset (the embedded store)"
            notes.append(f"note: {label} env DATASTORE_TYPE kubernetes -> {after} (pycni has no Kubernetes datastore)")
    return out, notes


def _unresolved_notes(document: Document, env: ResolvedEnv, container: str) -> list[str]:
    return [ignored(f"{document.label} {container} env {name}", why) for name, why in env.unresolved]


def read_manifest(
    documents: Sequence[Document], configmap: Document, node: str, cni_conf_dir: str, etcd_endpoints: str = ""
) -> CalicoInstall:
    """calico.yaml: the conflist install-cni would write here, and calico-node's environment."""
    data = configmap_data(configmap)
    if TEMPLATE_KEY not in data:
        raise configmap.error("data", f"no {TEMPLATE_KEY!r} key (the CNI config install-cni writes)")
    configmaps = configmaps_by_name(documents)
    daemonset = _node_daemonset(documents)
    used = [configmap]
    notes: list[str] = []
    if daemonset is None:
        # Only the ConfigMap: what the stock DaemonSet passes from it.
        install_env = {"CNI_NETWORK_CONFIG": data[TEMPLATE_KEY], "CNI_MTU": data.get("veth_mtu", "1500")}
        agent_env = {"NODENAME": node, "CALICO_NETWORKING_BACKEND": data.get("calico_backend", "bird")}
        if data.get("veth_mtu"):
            agent_env.update(FELIX_IPINIPMTU=data["veth_mtu"], FELIX_VXLANMTU=data["veth_mtu"])
        notes.append(f"note: no calico-node DaemonSet in the manifest: the stock one's use of {configmap.label}")
        where, key = configmap, f"data.{TEMPLATE_KEY}"
    else:
        used.append(daemonset)
        installer = _container(daemonset, INSTALL_CONTAINER, init=True)
        if installer is None:
            raise daemonset.error("initContainers", f"no {INSTALL_CONTAINER!r} container (it writes the CNI config)")
        resolved = container_env(daemonset, installer, configmaps, node)
        notes += _unresolved_notes(daemonset, resolved, INSTALL_CONTAINER)
        install_env = resolved.values
        if "CNI_NETWORK_CONFIG" not in install_env:
            if install_env.get("CNI_NETWORK_CONFIG_FILE"):
                raise daemonset.error(
                    f"initContainers[{INSTALL_CONTAINER}].env CNI_NETWORK_CONFIG_FILE",
                    "a file in the container image; give the template as CNI_NETWORK_CONFIG (the ConfigMap)",
                )
            raise daemonset.error(f"initContainers[{INSTALL_CONTAINER}].env", "no CNI_NETWORK_CONFIG")
        container = _container(daemonset, NODE_CONTAINER)
        assert container is not None
        agent = container_env(daemonset, container, configmaps, node)
        notes += _unresolved_notes(daemonset, agent, NODE_CONTAINER)
        agent_env = agent.values
        where, key = daemonset, f"initContainers[{INSTALL_CONTAINER}].env CNI_NETWORK_CONFIG"
        if install_env["CNI_NETWORK_CONFIG"] == data[TEMPLATE_KEY]:
            where, key = configmap, f"data.{TEMPLATE_KEY}"
        notes.append(
            ignored(
                f"{daemonset.label} images, probes, other init containers, volumes",
                "pycni runs calico-node on the host, not in a pod",
            )
        )
    text = substitute(install_env["CNI_NETWORK_CONFIG"], install_env, node, cni_conf_dir)
    conflist, conflist_notes = checked_conflist(where, key, text, etcd_endpoints)
    env, env_notes = node_env(agent_env, daemonset, etcd_endpoints)
    env.setdefault("NODENAME", node)
    return CalicoInstall(
        source=configmap,
        conflist=conflist,
        conflist_name=install_env.get("CNI_CONF_NAME") or CONFLIST_NAME,
        env=env,
        flags=(),
        used=tuple(used),
        notes=tuple(notes + conflist_notes + env_notes),
        settings=daemonset,
    )


def operator_conflist(installation: Document, mtu: int, cni_conf_dir: str) -> dict[str, Any]:
    """The conflist the operator renders for an Installation (``pkg/render/node.go``)."""
    spec = installation.body.get("spec") or {}
    network = spec.get("calicoNetwork") or {} if isinstance(spec, dict) else {}
    if not isinstance(network, dict):
        raise installation.error("spec.calicoNetwork", "must be a mapping")
    cni = spec.get("cni") or {}
    if isinstance(cni, dict) and cni.get("type", "Calico") != "Calico":
        raise installation.error("spec.cni.type", f"{cni.get('type')!r}: pycni install sets up Calico's own CNI")
    ipam = cni.get("ipam") if isinstance(cni, dict) else None
    if isinstance(ipam, dict) and ipam.get("type", "Calico") != "Calico":
        raise installation.error("spec.cni.ipam.type", f"{ipam.get('type')!r}: pycni install sets up Calico IPAM")
    pools = network.get("ipPools") or []
    v6 = any(isinstance(p, dict) and ":" in str(p.get("cidr", "")) for p in pools)
    v4 = not pools or any(isinstance(p, dict) and ":" not in str(p.get("cidr", "")) for p in pools)
    plugins: list[dict[str, Any]] = [
        {
            "type": "calico",
            "datastore_type": "kubernetes",
            "mtu": mtu,
            "nodename_file_optional": False,
            "log_level": "Info",
            "log_file_path": "/var/log/calico/cni/cni.log",
            "ipam": {
                "type": "calico-ipam",
                "assign_ipv4": "true" if v4 else "false",
                "assign_ipv6": "true" if v6 else "false",
            },
            "container_settings": {"allow_ip_forwarding": network.get("containerIPForwarding") == "Enabled"},
            "policy": {"type": "k8s"},
            "kubernetes": {"kubeconfig": f"{cni_conf_dir.rstrip('/')}/{KUBECONFIG_NAME}"},
        },
        {"type": "bandwidth", "capabilities": {"bandwidth": True}},
    ]
    if network.get("hostPorts", "Enabled") != "Disabled":
        plugins.append({"type": "portmap", "snat": True, "capabilities": {"portMappings": True}})
    return {"name": "k8s-pod-network", "cniVersion": "0.3.1", "plugins": plugins}


def _check_installation_shape(installation: Document) -> None:
    """The shapes the Installation reader assumes (mappings, lists, integers), as errors naming the key."""
    spec = installation.body.get("spec")
    if spec is None:
        return
    if not isinstance(spec, dict):
        raise installation.error("spec", "must be a mapping")
    for key in ("calicoNetwork", "cni"):
        if spec.get(key) is not None and not isinstance(spec[key], dict):
            raise installation.error(f"spec.{key}", "must be a mapping")
    network = spec.get("calicoNetwork") or {}
    pools = network.get("ipPools")
    if pools is not None and not isinstance(pools, list):
        raise installation.error("spec.calicoNetwork.ipPools", "must be a list")
    for index, pool in enumerate(pools or []):
        if not isinstance(pool, dict):
            raise installation.error(f"spec.calicoNetwork.ipPools[{index}]", "must be a mapping")
        size = pool.get("blockSize")
        if size is not None and (isinstance(size, bool) or not isinstance(size, int)):
            raise installation.error(f"spec.calicoNetwork.ipPools[{index}].blockSize", f"{size!r} is not a number")
    ipam = (spec.get("cni") or {}).get("ipam")
    if ipam is not None and not isinstance(ipam, dict):
        raise installation.error("spec.cni.ipam", "must be a mapping")


def read_installation(
    documents: Sequence[Document], installation: Document, node: str, cni_conf_dir: str, etcd_endpoints: str = ""
) -> CalicoInstall:
    """custom-resources.yaml: the operator's conflist, and ``pycni calico-node --installation FILE``."""
    from pycni.fabric.calico.installation import parse_installation

    _check_installation_shape(installation)
    try:
        parsed = parse_installation(yaml.safe_dump(installation.body), installation.where)
    except CalicoConfigError as exc:
        raise ManifestError(exc.msg) from None
    text = json.dumps(operator_conflist(installation, parsed.mtu or 0, cni_conf_dir))
    conflist, notes = checked_conflist(installation, "spec", text, etcd_endpoints)
    env, env_notes = node_env({}, installation, etcd_endpoints)
    for document in documents:
        if document is not installation and document.kind == "Installation":
            notes.append(ignored(document.label, f"a second Installation; {installation.label} is used"))
    return CalicoInstall(
        source=installation,
        conflist=conflist,
        conflist_name=CONFLIST_NAME,
        env=env,
        flags=("--installation", os.path.abspath(installation.source)),
        used=(installation,),
        notes=tuple(notes + env_notes),
    )
