"""What ``pycni install --manifest`` does on this node, decided before anything is written.

A plan is pure data: the files to write (the conflist, flanneld's
net-conf.json), the plugin types whose executables go into the CNI bin dir,
the node agent's command line and environment, and one note per part of the
manifest pycni does not use (``ignored: <kind> <name> (<why>)``) or changes
(``note: ...``). The agent's command line is parsed by the agent's own
argument parser (and calico-node's settings by its own config reader), so a
plan that would not start is an error here, naming the document.
"""

from __future__ import annotations

import argparse
import json
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn

from pycni.manifests import calico, flannel
from pycni.manifests.documents import Document, ManifestError, ignored

_RBAC = "RBAC for the Kubernetes API; pycni's agents do not use it"
WHY_IGNORED = {
    "Namespace": "pycni creates no Kubernetes objects",
    "ServiceAccount": _RBAC,
    "ClusterRole": _RBAC,
    "ClusterRoleBinding": _RBAC,
    "Role": _RBAC,
    "RoleBinding": _RBAC,
    "PodSecurityPolicy": "a pod admission policy; pycni runs no pods",
    "PodDisruptionBudget": "pycni runs no pods",
    "CustomResourceDefinition": "pycni keeps Calico's resources in its own datastore (pycni calicoctl)",
    "Secret": "not read by pycni (etcd TLS is not supported yet)",
    "Service": "pycni runs no Kubernetes services",
    "APIServer": "pycni has no Calico API server: pycni calicoctl reads the datastore",
    "DaemonSet": "not the node agent's DaemonSet",
    "ConfigMap": "not read by pycni install",
}
WHY_DEPLOYMENT = {
    "calico-kube-controllers": "pycni calico-node releases leaked IPAM itself (--ipam-leak-grace-period)",
    "calico-typha": "pycni's agents watch the datastore directly",
}


@dataclass(frozen=True)
class FileToWrite:
    path: str
    content: str
    mode: int = 0o644
    what: str = ""


@dataclass(frozen=True)
class Agent:
    """The node agent: ``pycni <argv...>`` with ``env`` set."""

    name: str  # flanneld or calico-node
    argv: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)

    def command_line(self, program: str = "pycni") -> str:
        words = [f"{k}={v}" for k, v in self.env.items()] + [program, *self.argv]
        prefix = ["env"] if self.env else []
        return shlex.join(prefix + words)


@dataclass(frozen=True)
class Plan:
    fabric: str  # "flannel" or "calico"
    conflist: FileToWrite
    files: tuple[FileToWrite, ...]  # besides the conflist (flannel's net-conf.json)
    plugin_types: tuple[str, ...]  # executables to install
    agent: Agent
    notes: tuple[str, ...]


def plugin_types(conflist: dict[str, Any]) -> list[str]:
    """Every plugin type the conflist runs: its plugins, their ipam, flannel's delegate and that one's ipam."""
    types: list[str] = []

    def add(plugin: Any, default_ipam: str | None = None) -> None:
        if not isinstance(plugin, dict):
            return
        kind = plugin.get("type")
        if isinstance(kind, str) and kind not in types:
            types.append(kind)
        ipam = plugin.get("ipam")
        ipam_type = ipam.get("type") if isinstance(ipam, dict) else default_ipam
        if isinstance(ipam_type, str) and ipam_type not in types:
            types.append(ipam_type)

    for plugin in conflist.get("plugins") or []:
        add(plugin)
        if isinstance(plugin, dict) and plugin.get("type") == "flannel":
            delegate = plugin.get("delegate")
            add(
                {"type": "bridge", **(delegate if isinstance(delegate, dict) else {})}, default_ipam="host-local"
            )  # flannel's defaults for its delegate
    return types


def why_ignored(document: Document) -> str:
    if document.kind == "Deployment":
        return WHY_DEPLOYMENT.get(document.name, "a cluster workload, not the node's")
    return WHY_IGNORED.get(document.kind, "not a kind pycni install reads")


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are raised, so a bad agent command line is one ManifestError."""

    def error(self, message: str) -> NoReturn:
        raise ManifestError(f"the agent's command line would be refused: {message}")


def check_agent(agent: Agent, source: Document) -> None:
    """Parse the agent's argv with the agent's own parser; calico-node's settings through its config reader."""
    from pycni.cli import calico_node, flanneld

    parser = _Parser(prog="pycni")
    sub = parser.add_subparsers(dest="command")
    flanneld.add_parsers(sub)
    calico_node.add_parsers(sub)
    opts = parser.parse_args(list(agent.argv))
    if agent.name == "calico-node":
        from pycni.fabric.calico.config import ConfigError, load_config

        try:
            calico_node.node_config(opts, dict(agent.env))
            load_config(opts.config, dict(agent.env), opts.store)
        except ConfigError as exc:
            raise source.error("calico-node's settings", exc.msg) from None


def _conflist_file(directory: str, name: str, conflist: dict[str, Any]) -> FileToWrite:
    return FileToWrite(f"{directory.rstrip('/')}/{name}", json.dumps(conflist, indent=2) + "\n", what="CNI config")


def _unused(documents: Sequence[Document], used: Sequence[Document]) -> list[str]:
    ids = {id(d) for d in used}
    return [ignored(d.label, why_ignored(d)) for d in documents if id(d) not in ids]


def build(
    documents: Sequence[Document],
    node: str,
    cni_conf_dir: str,
    net_conf_path: str = flannel.NET_CONF_PATH,
    etcd_endpoints: str = "",
    arch: str | None = None,
) -> Plan:
    """The plan for ``documents`` (one or more manifests' objects) on node ``node``."""
    sources = ", ".join(dict.fromkeys(d.source for d in documents)) or "the manifest"
    flannel_cm = flannel.find_configmap(documents)
    calico_cm = calico.find_configmap(documents)
    installation = calico.find_installation(documents)
    found = [d.label for d in (flannel_cm, calico_cm, installation) if d is not None]
    if not found:
        kinds = ", ".join(dict.fromkeys(d.label for d in documents)) or "no objects"
        raise ManifestError(
            f"{sources}: neither Flannel (ConfigMap kube-flannel-cfg) nor Calico (ConfigMap calico-config, "
            f"or an operator Installation) is in it (found: {kinds})"
        )
    if len(found) > 1:
        raise ManifestError(f"{sources}: {' and '.join(found)} found: install one network, from one manifest")
    if flannel_cm is not None:
        setup = flannel.read(documents, flannel_cm, arch=arch, node=node)
        argv = ["flanneld", "--net-config-path", net_conf_path, *setup.flags]
        if etcd_endpoints:
            argv += ["--etcd-endpoints", etcd_endpoints]
        notes = list(setup.notes)
        if etcd_endpoints:
            notes.append(
                f"note: with etcd, flanneld reads the network config from etcd ({setup.configmap.label}'s "
                f"net-conf.json is only loaded into the embedded store): put {net_conf_path} at "
                "<--etcd-prefix>/config (default /coreos.com/network/config)"
            )
        agent = Agent("flanneld", tuple(argv))
        check_agent(agent, setup.configmap)
        return Plan(
            fabric="flannel",
            conflist=_conflist_file(cni_conf_dir, setup.conflist_name, setup.conflist),
            files=(FileToWrite(net_conf_path, setup.net_conf, what="flanneld's network config"),),
            plugin_types=tuple(plugin_types(setup.conflist)),
            agent=agent,
            notes=tuple(notes + _unused(documents, setup.used)),
        )
    if calico_cm is not None:
        install = calico.read_manifest(documents, calico_cm, node, cni_conf_dir, etcd_endpoints)
    else:
        assert installation is not None
        install = calico.read_installation(documents, installation, node, cni_conf_dir, etcd_endpoints)
    env = dict(install.env)
    env.setdefault("NODENAME", node)
    agent = Agent("calico-node", ("calico-node", *install.flags), env)
    check_agent(agent, install.settings_source)
    return Plan(
        fabric="calico",
        conflist=_conflist_file(cni_conf_dir, install.conflist_name, install.conflist),
        files=(),
        plugin_types=tuple(plugin_types(install.conflist)),
        agent=agent,
        notes=tuple(list(install.notes) + _unused(documents, install.used)),
    )
