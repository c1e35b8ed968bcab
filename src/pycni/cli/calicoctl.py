"""``pycni calicoctl``: calicoctl's resource and IPAM commands, with calicoctl's output, on pycni's datastores.

    pycni calicoctl apply|create|replace|delete -f FILE|-     (YAML or JSON, several documents, Lists)
    pycni calicoctl delete KIND NAME...
    pycni calicoctl get KIND [NAME...] [-o ps|wide|yaml|json] [-n NS | -A]
    pycni calicoctl ipam show [--ip=IP] [--show-blocks] [--show-configuration]
    pycni calicoctl ipam check [--show-all-ips] [--show-problem-ips]
    pycni calicoctl ipam release --ip=IP
    pycni calicoctl node status [--bird-socket PATH] [--agent-pid-file PATH]
    pycni calicoctl version

Kinds: Calico's (IPPool, Node, BGPPeer, ..., NetworkPolicy, GlobalNetworkPolicy,
GlobalNetworkSet, Tier, Profile, HostEndpoint) with calicoctl's names and columns, and the
Kubernetes objects policy needs, which pycni keeps as there is no API server:
v1 Namespace (``ns``), v1 Pod (``po``) and networking.k8s.io/v1 NetworkPolicy
(``networkpolicies.networking.k8s.io``, ``k8snp``), accepted in the same
manifests. A Calico NetworkPolicy named ``knp.default.*`` is refused, as
calicoctl refuses it (that is where etcd mode keeps converted Kubernetes ones).

The datastore is chosen as calicoctl chooses it: ``-c CONFIG`` (a
CalicoAPIConfig file; /etc/calico/calicoctl.cfg if it exists), else
``DATASTORE_TYPE=etcdv3`` with ``ETCD_ENDPOINTS`` (``CALICO_`` prefixes
accepted), else pycni's embedded store, a sqlite file at
``$PYCNI_CALICO_STORE`` or ``--store PATH`` (default /var/lib/pycni/calico.db),
for one machine without etcd. Errors are one line on stderr and exit status 1.

``node status`` reads this node's BIRD through its control socket
(``--bird-socket``, ``$PYCNI_CALICO_BIRD_SOCKET``, else calicoctl's
/var/run/calico/bird.ctl then /var/run/bird/bird.ctl); the pycni
``calico-node`` agent stands for calico-felix (``--agent-pid-file`` or
``$PYCNI_CALICO_NODE_PIDFILE`` names its pid file; with a BIRD socket named
explicitly, the ``calico-node.pid`` the agent writes beside it while it runs,
so each of several nodes on one machine is told apart; otherwise that file at
the default socket's place if there is one, else any running ``calico-node``
or ``calico-felix`` process counts, as calicoctl looks).
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import re
import sys
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any, NoReturn

from pycni import __version__
from pycni.datastore import Datastore, DatastoreError
from pycni.fabric.calico.bird import (
    DEFAULT_CONTROL_SOCKET,
    FALLBACK_CONTROL_SOCKET,
    BirdControl,
    BirdError,
    BirdNotRunning,
    ProtocolStatus,
    parse_protocols,
)
from pycni.fabric.calico.config import DEFAULT_STORE_PATH, StoreConfig, load_config, open_store
from pycni.fabric.calico.errors import CalicoError, OperationNotSupported, ResourceAlreadyExists, ResourceNotFound
from pycni.fabric.calico.ipam_check import check as ipam_check
from pycni.fabric.calico.ipam_store import IPAM, NotAssigned
from pycni.fabric.calico.kinds import (
    DEFAULT_AS_NUMBER,
    KINDS,
    KUBERNETES_POLICY_PREFIX,
    KubernetesKind,
    kind_for_alias,
    kubernetes_kind_for_alias,
)
from pycni.fabric.calico.model import API_VERSION, _documents, _expand, decode_resource, dump_json, dump_yaml
from pycni.fabric.calico.resource import KindSpec, Resource
from pycni.fabric.calico.resources import (
    KubernetesObject,
    KubernetesObjectClient,
    ResourceClient,
    kubernetes_object,
)

PAST = {"create": "created", "apply": "applied", "replace": "replaced", "delete": "deleted"}


class CtlError(Exception):
    """A failure to report on one line (exit status 1)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise CtlError(f"{message} (see `{self.prog} --help`)")


# -- formatting helpers -----------------------------------------------------------


def go_g(value: float) -> str:
    """Go's ``%v`` of a float64: shortest digits; exponent form below 1e-4 and from 1e+06 (``1e+06``, ``1000``)."""
    number = Decimal(repr(float(value))).normalize()
    sign, numerals, exponent = number.as_tuple()
    assert isinstance(exponent, int)
    x = len(numerals) + exponent - 1
    if x < -4 or x >= 6:
        text = "".join(map(str, numerals))
        mantissa = text[0] + ("." + text[1:] if len(text) > 1 else "")
        return f"{'-' if sign else ''}{mantissa}e{'+' if x >= 0 else '-'}{abs(x):02d}"
    return format(number, "f")


def go_bool(value: Any) -> str:
    return "true" if value else "false"


def tabwriter(rows: list[list[str]], minwidth: int = 5, padding: int = 3) -> str:
    """Go's text/tabwriter as calicoctl configures it (minwidth 5, padding 3, every cell tab-terminated)."""
    widths = [max(minwidth, max(len(r[i]) for r in rows) + padding) for i in range(len(rows[0]))]
    return "".join("".join(cell.ljust(widths[i]) for i, cell in enumerate(row)) + "\n" for row in rows)


def pretty_table(header: list[str], rows: list[list[str]], right: frozenset[int] = frozenset()) -> str:
    """go-pretty's default box style: centred headings, right-aligned number columns."""
    widths = [max(len(header[i]), *(len(r[i]) for r in rows)) if rows else len(header[i]) for i in range(len(header))]
    rule = "+" + "+".join("-" * (w + 2) for w in widths) + "+\n"

    def line(cells: list[str], head: bool) -> str:
        out = []
        for i, cell in enumerate(cells):
            if head:  # centred, the odd space on the right (go-pretty)
                left = (widths[i] - len(cell)) // 2
                out.append((" " * left + cell).ljust(widths[i]))
            else:
                out.append(cell.rjust(widths[i]) if i in right else cell.ljust(widths[i]))
        return "| " + " | ".join(out) + " |\n"

    return rule + line(header, True) + rule + "".join(line(r, False) for r in rows) + rule


# -- calicoctl's table columns (calicoctl/calicoctl/resourcemgr/*.go) ---------------------------------------


def _join(items: Any) -> str:
    if isinstance(items, dict):
        return ",".join(sorted(f"{k}={v}" for k, v in items.items()))
    return ",".join(str(i) for i in items or [])


def _peer_node(spec: dict[str, Any]) -> str:
    return spec.get("node") or spec.get("nodeSelector") or "(global)"


def _mesh(spec: dict[str, Any]) -> str:
    return go_bool(spec["nodeToNodeMeshEnabled"]) if "nodeToNodeMeshEnabled" in spec else "-"


def _order(spec: dict[str, Any]) -> str:
    """``{{.Spec.Order}}`` of a *float64: Go's %v of the value, ``<nil>`` without one."""
    return go_g(spec["order"]) if "order" in spec else "<nil>"


def join_and_truncate(items: Sequence[Any], max_length: int, separator: str = ",") -> str:
    """calicoctl's ``joinAndTruncate``: joined, cut to ``max_length`` with ``...`` when longer."""
    text = ""
    for index, item in enumerate(items):
        text += (separator if index else "") + str(item)
        if len(text) > max_length:
            return text[: max_length - 3] + "..."
    return text


Column = Callable[[Resource], str]
COLUMNS: dict[str, dict[str, Column]] = {
    "IPPool": {
        "NAME": lambda r: r.name,
        "CIDR": lambda r: r.spec.get("cidr", ""),
        "SELECTOR": lambda r: r.spec.get("nodeSelector", ""),
        "NAT": lambda r: go_bool(r.spec.get("natOutgoing")),
        "IPIPMODE": lambda r: r.spec.get("ipipMode") or "Never",
        "VXLANMODE": lambda r: r.spec.get("vxlanMode") or "Never",
        "DISABLED": lambda r: go_bool(r.spec.get("disabled")),
        "DISABLEBGPEXPORT": lambda r: go_bool(r.spec.get("disableBGPExport")),
        "ASSIGNMENTMODE": lambda r: r.spec.get("assignmentMode", ""),
    },
    "Node": {
        "NAME": lambda r: r.name,
        "ASN": lambda r: str(r.spec["bgp"].get("asNumber", f"({DEFAULT_AS_NUMBER})")) if r.spec.get("bgp") else "",
        "IPV4": lambda r: (r.spec.get("bgp") or {}).get("ipv4Address", ""),
        "IPV6": lambda r: (r.spec.get("bgp") or {}).get("ipv6Address", ""),
    },
    "WorkloadEndpoint": {
        "NAME": lambda r: r.name,
        "NAMESPACE": lambda r: r.namespace,
        "WORKLOAD": lambda r: r.spec.get("workload") or r.spec.get("pod", ""),
        "NODE": lambda r: r.spec.get("node", ""),
        "NETWORKS": lambda r: _join(r.spec.get("ipNetworks")),
        "INTERFACE": lambda r: r.spec.get("interfaceName", ""),
        "PROFILES": lambda r: _join(r.spec.get("profiles")),
        "NATS": lambda r: _join(f"{{{n['internalIP']} {n['externalIP']}}}" for n in r.spec.get("ipNATs") or []),
    },
    "BGPPeer": {
        "NAME": lambda r: r.name,
        "PEERIP": lambda r: r.spec.get("peerIP", ""),
        "NODE": lambda r: _peer_node(r.spec),
        "ASN": lambda r: str(r.spec.get("asNumber", 0)),
    },
    "BGPConfiguration": {
        "NAME": lambda r: r.name,
        "LOGSEVERITY": lambda r: r.spec.get("logSeverityScreen", ""),
        "MESHENABLED": lambda r: _mesh(r.spec),
        "ASNUMBER": lambda r: str(r.spec["asNumber"]) if "asNumber" in r.spec else "-",
    },
    "FelixConfiguration": {"NAME": lambda r: r.name},
    "IPAMConfiguration": {
        "NAME": lambda r: r.name,
        "STRICTAFFINITY": lambda r: go_bool(r.spec.get("strictAffinity")),
        "AUTOALLOCATEBLOCKS": lambda r: go_bool(r.spec.get("autoAllocateBlocks")),
        "MAXBLOCKSPERHOST": lambda r: str(r.spec.get("maxBlocksPerHost", 0)),
    },
    "Profile": {"NAME": lambda r: r.name, "LABELS": lambda r: _join(r.spec.get("labelsToApply"))},
    "HostEndpoint": {
        "NAME": lambda r: r.name,
        "NODE": lambda r: r.spec.get("node", ""),
        "INTERFACE": lambda r: r.spec.get("interfaceName", ""),
        "IPS": lambda r: _join(r.spec.get("expectedIPs")),
        "PROFILES": lambda r: _join(r.spec.get("profiles")),
    },
    "NetworkPolicy": {
        "NAME": lambda r: r.name,
        "NAMESPACE": lambda r: r.namespace,
        "TIER": lambda r: r.spec.get("tier", ""),
        "ORDER": lambda r: _order(r.spec),
        "SELECTOR": lambda r: r.spec.get("selector", ""),
    },
    "GlobalNetworkPolicy": {
        "NAME": lambda r: r.name,
        "ORDER": lambda r: _order(r.spec),
        "SELECTOR": lambda r: r.spec.get("selector", ""),
    },
    "GlobalNetworkSet": {"NAME": lambda r: r.name, "NETS": lambda r: join_and_truncate(r.spec.get("nets") or [], 80)},
    "Tier": {"NAME": lambda r: r.name, "ORDER": lambda r: go_g(r.spec["order"]) if "order" in r.spec else "<nil>"},
    "ClusterInformation": {
        "NAME": lambda r: r.name,
        "CLUSTERGUID": lambda r: r.spec.get("clusterGUID", ""),
        "CLUSTERTYPE": lambda r: r.spec.get("clusterType", ""),
        "CALICOVERSION": lambda r: r.spec.get("calicoVersion", ""),
        "DATASTOREREADY": lambda r: go_bool(r.spec.get("datastoreReady")) if "datastoreReady" in r.spec else "<nil>",
    },
}
HEADINGS: dict[str, tuple[list[str], list[str]]] = {
    "IPPool": (
        ["NAME", "CIDR", "SELECTOR"],
        ["NAME", "CIDR", "NAT", "IPIPMODE", "VXLANMODE", "DISABLED", "DISABLEBGPEXPORT", "SELECTOR", "ASSIGNMENTMODE"],
    ),
    "Node": (["NAME"], ["NAME", "ASN", "IPV4", "IPV6"]),
    "WorkloadEndpoint": (
        ["WORKLOAD", "NODE", "NETWORKS", "INTERFACE"],
        ["NAME", "WORKLOAD", "NODE", "NETWORKS", "INTERFACE", "PROFILES", "NATS"],
    ),
    "BGPPeer": (["NAME", "PEERIP", "NODE", "ASN"], ["NAME", "PEERIP", "NODE", "ASN"]),
    "BGPConfiguration": (
        ["NAME", "LOGSEVERITY", "MESHENABLED", "ASNUMBER"],
        ["NAME", "LOGSEVERITY", "MESHENABLED", "ASNUMBER"],
    ),
    "FelixConfiguration": (["NAME"], ["NAME"]),
    "IPAMConfiguration": (
        ["NAME", "STRICTAFFINITY", "AUTOALLOCATEBLOCKS"],
        ["NAME", "STRICTAFFINITY", "AUTOALLOCATEBLOCKS", "MAXBLOCKSPERHOST"],
    ),
    "Profile": (["NAME"], ["NAME", "LABELS"]),
    "HostEndpoint": (["NAME", "NODE"], ["NAME", "NODE", "INTERFACE", "IPS", "PROFILES"]),
    "NetworkPolicy": (["NAME", "TIER"], ["NAME", "TIER", "ORDER", "SELECTOR"]),
    "GlobalNetworkPolicy": (["NAME"], ["NAME", "ORDER", "SELECTOR"]),
    "GlobalNetworkSet": (["NAME"], ["NAME", "NETS"]),
    "Tier": (["NAME", "ORDER"], ["NAME", "ORDER"]),
    "ClusterInformation": (
        ["NAME", "CLUSTERGUID", "CLUSTERTYPE", "CALICOVERSION", "DATASTOREREADY"],
        ["NAME", "CLUSTERGUID", "CLUSTERTYPE", "CALICOVERSION", "DATASTOREREADY"],
    ),
}


def render_table(kind: str, resources: list[Resource], wide: bool, namespace_column: bool) -> str:
    headings = list(HEADINGS[kind][1 if wide else 0])
    if namespace_column and "NAMESPACE" in COLUMNS[kind]:
        headings.insert(0, "NAMESPACE")
    rows = [headings] + [[COLUMNS[kind][h](r) for h in headings] for r in resources]
    return tabwriter(rows) + "\n"


# The Kubernetes stand-ins (calicoctl has no such kinds; the columns are kubectl's where it has them).
KubeColumn = Callable[[dict[str, Any]], str]


def _containers_ports(document: dict[str, Any]) -> str:
    spec = document.get("spec") or {}
    ports = [p for c in spec.get("containers") or [] for p in c.get("ports") or []]
    return _join(
        f"{p.get('name') + ':' if p.get('name') else ''}{p.get('containerPort')}/{p.get('protocol', 'TCP')}"
        for p in ports
    )


KUBE_COLUMNS: dict[str, dict[str, KubeColumn]] = {
    "Namespace": {"NAME": lambda d: d["metadata"]["name"], "LABELS": lambda d: _join(d["metadata"].get("labels"))},
    "Pod": {
        "NAME": lambda d: d["metadata"]["name"],
        "NAMESPACE": lambda d: d["metadata"].get("namespace", ""),
        "NODE": lambda d: (d.get("spec") or {}).get("nodeName", ""),
        "IPS": lambda d: _join(ip.get("ip", "") for ip in (d.get("status") or {}).get("podIPs") or []),
        "PORTS": _containers_ports,
        "LABELS": lambda d: _join(d["metadata"].get("labels")),
    },
    "NetworkPolicy": {
        "NAME": lambda d: d["metadata"]["name"],
        "NAMESPACE": lambda d: d["metadata"].get("namespace", ""),
        "POLICYTYPES": lambda d: _join((d.get("spec") or {}).get("policyTypes") or []),
    },
}
KUBE_HEADINGS: dict[str, tuple[list[str], list[str]]] = {
    "Namespace": (["NAME"], ["NAME", "LABELS"]),
    "Pod": (["NAME", "NODE"], ["NAME", "NODE", "IPS", "PORTS", "LABELS"]),
    "NetworkPolicy": (["NAME"], ["NAME", "POLICYTYPES"]),
}


def render_kube_table(kind: str, documents: list[dict[str, Any]], wide: bool, namespace_column: bool) -> str:
    headings = list(KUBE_HEADINGS[kind][1 if wide else 0])
    if namespace_column and "NAMESPACE" in KUBE_COLUMNS[kind]:
        headings.insert(0, "NAMESPACE")
    rows = [headings] + [[KUBE_COLUMNS[kind][h](d) for h in headings] for d in documents]
    return tabwriter(rows) + "\n"


# -- the datastore --------------------------------------------------------------------------


class Session:
    """The datastore opened once per command, with the resource and IPAM clients on it."""

    def __init__(self, opts: argparse.Namespace) -> None:
        self.config: StoreConfig = load_config(opts.config, store_path=opts.store)
        self.store: Datastore = open_store(self.config)
        self.resources = ResourceClient(self.store)
        self.kubernetes = KubernetesObjectClient(self.store)
        self.ipam = IPAM(self.store, self.resources)

    def close(self) -> None:
        self.store.close()


# -- resource commands -----------------------------------------------------------------------


Object = Resource | KubernetesObject


def load_objects(text: str, source: str) -> list[Object]:
    """Every object of a manifest: Calico's v3 resources and the Kubernetes stand-ins, in the file's order."""
    objects: list[Object] = []
    for document in _documents(text, source):
        for item in _expand(document, source):
            stand_in = kubernetes_object(item, f" in {source}")
            objects.append(stand_in if stand_in is not None else decode_resource(item, source))
    return objects


def _read_manifest(path: str) -> list[Object]:
    if path == "-":
        text, source = sys.stdin.read(), "stdin"
    else:
        try:
            with open(path, encoding="utf-8") as handle:
                text, source = handle.read(), path
        except OSError as exc:
            raise CtlError(f"failed to execute command: open {path}: {(exc.strerror or str(exc)).lower()}") from None
    try:
        return load_objects(text, source)
    except CalicoError as exc:
        raise CtlError(f"failed to execute command: {_one_line(exc)}") from None


def _namespace(resource: Object, info: KindSpec | KubernetesKind, cli_namespace: str) -> None:
    """calicoctl's handleNamespace: -n fills a namespaced resource's namespace, "default" otherwise."""
    if info.namespaced:
        if not resource.namespace:
            if isinstance(resource, Resource):
                resource.set_meta("namespace", cli_namespace or "default")
            else:
                resource.metadata["namespace"] = cli_namespace or "default"
        elif cli_namespace and cli_namespace != resource.namespace:
            raise CalicoError(
                f"resource namespace does not match client namespace. {resource.namespace} != {cli_namespace}"
            )
    elif resource.namespace:
        raise CalicoError(
            f"namespace should not be specified for a non-namespaced resource. {resource.kind} is not a namespaced "
            "resource"
        )
    elif cli_namespace:
        raise CalicoError(f"{resource.kind} is not namespaced")


def _act_kubernetes(session: Session, action: str, obj: KubernetesObject, opts: argparse.Namespace) -> None:
    _namespace(obj, obj.info, getattr(opts, "namespace", "") or "")
    client = session.kubernetes
    if action == "create":
        client.create(obj)
    elif action == "apply":
        client.apply(obj)
    elif action == "replace":
        client.replace(obj)
    else:
        client.delete(obj.info, obj.name, obj.namespace, obj.resource_version)


def _act(session: Session, action: str, resource: Object, opts: argparse.Namespace) -> None:
    if isinstance(resource, KubernetesObject):
        try:
            _act_kubernetes(session, action, resource, opts)
        except ResourceAlreadyExists:
            if not getattr(opts, "skip_exists", False):
                raise
        except ResourceNotFound:
            if not getattr(opts, "skip_not_exists", False):
                raise
        return
    info = KINDS[resource.kind]
    _namespace(resource, info, getattr(opts, "namespace", "") or "")
    if resource.kind == "NetworkPolicy" and resource.name.startswith(KUBERNETES_POLICY_PREFIX):
        # In etcd mode the knp.default. prefix is where Kubernetes NetworkPolicies live (calicoctl refuses it).
        refused = {"create": "create or apply", "apply": "create or apply", "replace": "apply or replace"}
        raise OperationNotSupported(
            refused.get(action, action),
            resource.identifier,
            "kubernetes network policies must be managed through the kubernetes API",
        )
    if info.read_only:
        operation = {"create": "create or apply", "apply": "apply", "replace": "apply or replace"}.get(action, action)
        raise OperationNotSupported(operation, resource.kind, "resource is readonly")
    client = session.resources
    try:
        if action == "create":
            client.create(resource)
        elif action == "apply":
            client.apply(resource)
        elif action == "replace":
            client.replace(resource)
        else:
            client.delete(resource.kind, resource.name, resource.namespace, resource.resource_version)
    except ResourceAlreadyExists:
        if not getattr(opts, "skip_exists", False):
            raise
    except ResourceNotFound:
        if not getattr(opts, "skip_not_exists", False):
            raise


def _one_line(exc: BaseException) -> str:
    return str(exc).replace("\n-  ", "; ").replace(":\n", ": ").replace("\n", " ").strip()


def _named(kind: str, names: list[str]) -> list[Object]:
    """``delete KIND NAME...``: the objects to delete, by name."""
    info = kind_for_alias(kind)
    stand_in = kubernetes_kind_for_alias(kind)
    if info is None and stand_in is None:
        raise CtlError(f"resource type '{kind}' is not supported")
    if not names:
        raise CtlError("resource name may not be empty")
    if info is None:
        assert stand_in is not None
        return [KubernetesObject(stand_in, {"metadata": {"name": n}}) for n in names]
    return [Resource(info.kind, {"name": n, "creationTimestamp": None}, {}) for n in names]


def cmd_crud(opts: argparse.Namespace) -> int:
    action = opts.verb
    if opts.filename is not None:
        resources = _read_manifest(opts.filename)
        if not resources:
            if opts.skip_empty:
                return 0
            raise CtlError(
                f"no resources specified in file {opts.filename}" if action != "delete" else "No resources specified"
            )
        single = len({r.kind for r in resources}) == 1
    elif action == "delete" and opts.kind:
        resources = _named(opts.kind, opts.names)
        single = True
    else:
        raise CtlError(f"{action} needs -f FILE (or KIND NAME for delete)")
    kind = resources[0].kind
    session = Session(opts)
    try:
        if action in ("create", "apply", "replace"):
            session.resources.ensure_initialized()
        done, errors = 0, []
        for resource in resources:
            try:
                _act(session, action, resource, opts)
                done += 1
            except (CalicoError, DatastoreError) as exc:
                errors.append(_one_line(exc))
                if action == "replace":
                    break
    finally:
        session.close()
    what = f"'{kind}' resource(s)" if single else "resource(s)"
    if done and not errors:
        print(f"Successfully {PAST[action]} {done} {what}")
        return 0
    listed = "[" + " ".join(errors) + "]"
    if action == "delete":
        for error in errors:
            print(f"Failed to delete {repr(kind) + ' ' if single else ''}resource: {error}", file=sys.stderr)
        if done:
            print(f"Successfully deleted {done} {what}")
        return 1
    if done:
        print(f"Partial success: {PAST[action]} the first {done} out of {len(resources)} {what.replace('(s)', 's')}:")
        raise CtlError(f"hit error: {listed}")
    if len(resources) == 1:
        raise CtlError(f"failed to {action} '{kind}' resource: {listed}")
    if single:
        raise CtlError(f"failed to {action} any '{kind}' resources: {listed}")
    raise CtlError(f"failed to {action} any resources: {listed}")


def cmd_get_kubernetes(opts: argparse.Namespace, info: KubernetesKind) -> int:
    """``get`` of a Kubernetes stand-in: the stored documents, in calicoctl's formats."""
    if not info.namespaced and (opts.namespace or opts.all_namespaces):
        raise CtlError(f"{info.kind} is not namespaced")
    namespace = "" if opts.all_namespaces else (opts.namespace or "default") if info.namespaced else ""
    session = Session(opts)
    try:
        if opts.names:
            found = []
            for name in opts.names:
                try:
                    found.append(session.kubernetes.get(info, name, namespace))
                except ResourceNotFound as exc:
                    raise CtlError(f"Failed to get resources: {exc}") from None
            listing = None
        else:
            found, revision = session.kubernetes.list(info, namespace)
            listing = {
                "kind": f"{info.kind}List",
                "apiVersion": info.api_version,
                "metadata": {"resourceVersion": str(revision)},
                "items": [obj.document for obj in found],
            }
    finally:
        session.close()
    documents = [obj.document for obj in found]
    if opts.output in ("ps", "wide"):
        namespace_column = bool(opts.namespace or opts.all_namespaces)
        sys.stdout.write(render_kube_table(info.kind, documents, opts.output == "wide", namespace_column))
        return 0
    data: Any = listing if listing is not None else (documents[0] if len(documents) == 1 else documents)
    sys.stdout.write(dump_yaml(data) if opts.output == "yaml" else dump_json(data) + "\n")
    return 0


def cmd_get(opts: argparse.Namespace) -> int:
    if opts.all_namespaces and opts.namespace:
        raise CtlError("cannot use both --namespace and --all-namespaces flags at the same time")
    info = kind_for_alias(opts.kind)
    if info is None:
        stand_in = kubernetes_kind_for_alias(opts.kind)
        if stand_in is not None:
            return cmd_get_kubernetes(opts, stand_in)
        raise CtlError(f"resource type '{opts.kind}' is not supported")
    if not info.namespaced and (opts.namespace or opts.all_namespaces):
        raise CtlError(f"{info.kind} is not namespaced")
    namespace = "" if opts.all_namespaces else (opts.namespace or "default") if info.namespaced else ""
    session = Session(opts)
    try:
        if opts.names:
            found, errors = [], []
            for name in opts.names:
                try:
                    found.append(session.resources.get(info.kind, name, namespace))
                except ResourceNotFound as exc:
                    errors.append(str(exc))
            listing = None
            if errors:
                raise CtlError(f"Failed to get resources: {errors[0]}")
        else:
            found, revision = session.resources.list(info.kind, namespace)
            listing = {
                "kind": f"{info.kind}List",
                "apiVersion": API_VERSION,
                "metadata": {"resourceVersion": str(revision)},
                "items": [r.to_dict() for r in found],
            }
    finally:
        session.close()
    output = opts.output
    if output in ("ps", "wide"):
        sys.stdout.write(render_table(info.kind, found, output == "wide", bool(opts.namespace or opts.all_namespaces)))
        return 0
    data: Any = (
        listing if listing is not None else (found[0].to_dict() if len(found) == 1 else [r.to_dict() for r in found])
    )
    sys.stdout.write(dump_yaml(data) if output == "yaml" else dump_json(data) + "\n")
    return 0


# -- ipam ------------------------------------------------------------------------------------


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise CtlError(f"invalid IP address specified: {text!r}") from None


def cmd_ipam_show(opts: argparse.Namespace) -> int:
    session = Session(opts)
    try:
        if opts.ip:
            address = _address(opts.ip)
            try:
                attribute = session.ipam.attributes_for(address)
            except NotAssigned:
                print(f"{address} is not assigned")
                return 0
            print(f"IP {address} is in use")
            print(f"Handle ID: {attribute.handle_id}" if attribute.handle_id is not None else "Handle ID: <none>")
            if attribute.secondary:
                print("Active Owner Attributes:")
                for key in sorted(attribute.secondary):
                    print(f"  {key}: {attribute.secondary[key]}")
            else:
                print("No Active Owner attributes defined")
            if attribute.alternate:
                print("Alternate Owner Attributes:")
                for key in sorted(attribute.alternate):
                    print(f"  {key}: {attribute.alternate[key]}")
            return 0
        if opts.show_configuration:
            config = session.ipam.config()
            rows = [
                ["StrictAffinity", go_bool(config.strict_affinity)],
                ["AutoAllocateBlocks", go_bool(config.auto_allocate_blocks)],
                ["MaxBlocksPerHost", str(config.max_blocks_per_host)],
                ["IPCooldownSeconds", str(config.ip_cooldown_seconds)],
            ]
            sys.stdout.write(pretty_table(["PROPERTY", "VALUE"], rows))
            return 0
        usage = session.ipam.usage()
    finally:
        session.close()

    def row(grouping: str, cidr: str, total: int, used: int) -> list[str]:
        def share(n: int) -> str:
            return f"{n:.5g} ({100 * n / total:.0f}%)"

        return [grouping, cidr, f"{total:.5g}", share(used), share(0), share(total - used)]

    rows = []
    for pool in usage:
        if pool.pool is not None:
            rows.append(row("IP Pool", str(pool.cidr), pool.total, pool.in_use))
        if opts.show_blocks:
            rows += [row("Block", str(cidr), size, used) for cidr, size, used in pool.blocks]
    header = ["GROUPING", "CIDR", "IPS TOTAL", "IPS IN USE", "IPS RESERVED", "IPS FREE"]
    sys.stdout.write(pretty_table(header, rows, right=frozenset({2, 3, 4, 5})))
    return 0


def cmd_ipam_check(opts: argparse.Namespace) -> int:
    session = Session(opts)
    try:
        lines, _ = ipam_check(session.ipam, show_problem_ips=opts.show_problem_ips, show_all_ips=opts.show_all_ips)
    finally:
        session.close()
    print("\n".join(lines))
    return 0


def cmd_ipam_release(opts: argparse.Namespace) -> int:
    if not opts.ip:
        raise CtlError("ipam release needs --ip=IP")
    address = _address(opts.ip)
    session = Session(opts)
    try:
        if session.ipam.release_ips([address]):
            raise CtlError(f"IP address {address} is not assigned")
    finally:
        session.close()
    print(f"Successfully released IP address {address}")
    return 0


def cmd_version(opts: argparse.Namespace) -> int:
    print(f"Client Version:    pycni {__version__}")
    return 0


# -- node status -------------------------------------------------------------------------------

BGP_PEER_NAME = re.compile(r"^(Global|Node|Mesh)_(.+)$")
PEER_TYPES = {"Global": "global", "Mesh": "node-to-node mesh", "Node": "node specific"}
AGENT_NAMES = frozenset({"calico-node", "calico-felix"})
AGENT_PID_FILE = "calico-node.pid"  # in the agent's run directory, beside bird.ctl


def _process_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def agent_running(pid_file: str | None) -> bool:
    """The pycni calico-node agent (calico-felix's stand-in): its pid file's process, else any such process."""
    if pid_file:
        try:
            with open(pid_file) as handle:
                return _process_alive(int(handle.read().strip()))
        except (OSError, ValueError):
            return False
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                argv = [a.decode(errors="replace") for a in handle.read().split(b"\0") if a]
        except OSError:
            continue
        if argv and (os.path.basename(argv[0]) in AGENT_NAMES or "calico-node" in argv[1:]):
            return True
    return False


def _family(name_address: str) -> int | None:
    """4 or 6 for the address part of a protocol name (``10_0_0_2``, ``fd00__2``, ``10_0_0_2_port_1790``)."""
    base = name_address.partition("_port_")[0]
    for version, separator in ((4, "."), (6, ":")):
        try:
            ipaddress.ip_address(base.replace("_", separator))
        except ValueError:
            continue
        return version
    return None


def bgp_peer_rows(protocols: Sequence[ProtocolStatus], version: int) -> list[list[str]]:
    """calicoctl's unmarshalBIRD: BGP protocols named Global_/Node_/Mesh_<address with _>, one row each.

    The address is calicoctl's text, so a port-suffixed name shows as calicoctl
    shows it (``10.0.0.2.port.1790``).
    """
    rows = []
    for protocol in protocols:
        match = BGP_PEER_NAME.match(protocol.name)
        if protocol.proto != "BGP" or match is None or not protocol.info or _family(match.group(2)) != version:
            continue
        address = match.group(2).replace("_", "." if version == 4 else ":")
        rows.append([address, PEER_TYPES[match.group(1)], protocol.state, protocol.since, protocol.info])
    return rows


def _bird_socket(opts: argparse.Namespace) -> str:
    chosen: str | None = opts.bird_socket or os.environ.get("PYCNI_CALICO_BIRD_SOCKET")
    if chosen:
        return chosen
    return DEFAULT_CONTROL_SOCKET if os.path.exists(DEFAULT_CONTROL_SOCKET) else FALLBACK_CONTROL_SOCKET


def _agent_pid_file(opts: argparse.Namespace, socket_path: str) -> str | None:
    """The agent's pid file: as given; else, for a BIRD socket named explicitly, the agent's beside it.

    ``pycni calico-node`` writes ``calico-node.pid`` in its run directory, where
    its BIRD socket is, while it runs; so with ``--bird-socket RUN/bird.ctl``
    the answer is about that node's agent, not any agent on the machine.
    None: look for any agent process, as calicoctl does.
    """
    given: str | None = opts.agent_pid_file or os.environ.get("PYCNI_CALICO_NODE_PIDFILE")
    if given:
        return given
    beside = os.path.join(os.path.dirname(socket_path), AGENT_PID_FILE)
    explicit = bool(opts.bird_socket or os.environ.get("PYCNI_CALICO_BIRD_SOCKET"))
    return beside if explicit or os.path.exists(beside) else None


def cmd_node_status(opts: argparse.Namespace) -> int:
    if os.geteuid() != 0:
        print("Need super user privileges: Operation not permitted")
        return 1
    path = _bird_socket(opts)
    if not agent_running(_agent_pid_file(opts, path)):
        raise CtlError("Calico process is not running.")
    print("Calico process is running.")
    try:
        protocols = parse_protocols(BirdControl(path, timeout=2.0).request("show protocols"))
    except BirdNotRunning:
        print("\nThe BGP backend process (BIRD) is not running.\n")
        return 0
    except BirdError as exc:
        raise CtlError(f"error executing command: {exc}") from None
    header = ["PEER ADDRESS", "PEER TYPE", "STATE", "SINCE", "INFO"]
    for version in (4, 6):  # one BIRD 2 serves both families (Calico runs bird and bird6)
        print(f"\nIPv{version} BGP status")
        rows = bgp_peer_rows(protocols, version)
        if rows:
            sys.stdout.write(pretty_table(header, rows))
        else:
            print(f"No IPv{version} peers found.")
    print()
    return 0


# -- parser ----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    common.add_argument(
        "-c", "--config", help="CalicoAPIConfig file (YAML or JSON; default /etc/calico/calicoctl.cfg if it exists)"
    )
    common.add_argument(
        "--store",
        help=f"the embedded store's sqlite file when no etcd is configured (default $PYCNI_CALICO_STORE or "
        f"{DEFAULT_STORE_PATH})",
    )
    parser = _Parser(
        prog="pycni calicoctl",
        description="calicoctl's resource and IPAM commands on etcd (DATASTORE_TYPE=etcdv3, ETCD_ENDPOINTS) or "
        f"pycni's embedded store (a sqlite file: --store, $PYCNI_CALICO_STORE, default {DEFAULT_STORE_PATH}).",
    )
    sub = parser.add_subparsers(dest="verb", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for verb, text in (
        ("create", "create resources from a file (fails if one exists)"),
        ("apply", "create or replace resources from a file"),
        ("replace", "replace existing resources from a file"),
        ("delete", "delete resources from a file, or KIND NAME..."),
    ):
        p = sub.add_parser(verb, help=text, parents=[common])
        p.add_argument("-f", "--filename", help="YAML or JSON file of resources; - for stdin")
        p.add_argument("-n", "--namespace", default="", help="namespace of namespaced resources")
        p.add_argument("--skip-empty", action="store_true", help="do not fail on a file with no resources")
        if verb == "create":
            p.add_argument("--skip-exists", action="store_true", help="skip resources that already exist")
        if verb == "delete":
            p.add_argument("-s", "--skip-not-exists", action="store_true", help="skip resources that do not exist")
            p.add_argument("kind", nargs="?", metavar="KIND")
            p.add_argument("names", nargs="*", metavar="NAME")
        p.set_defaults(func=cmd_crud)
    get = sub.add_parser("get", help="show resources", parents=[common])
    get.add_argument("kind", metavar="KIND", help="e.g. ippool (ipp, pool), node, wep, bgppeer, bgpconfig, ...")
    get.add_argument("names", nargs="*", metavar="NAME")
    get.add_argument("-o", "--output", default="ps", choices=["ps", "wide", "yaml", "json"])
    get.add_argument("-n", "--namespace", default="")
    get.add_argument("-A", "--all-namespaces", action="store_true")
    get.set_defaults(func=cmd_get)
    ipam = sub.add_parser("ipam", help="IP address management")
    ipam_sub = ipam.add_subparsers(dest="ipam_verb", metavar="ACTION", parser_class=_Parser)
    ipam_sub.required = True
    show = ipam_sub.add_parser("show", help="pool and block usage, one IP, or the IPAM configuration", parents=[common])
    show.add_argument("--ip", help="who holds this address")
    show.add_argument("--show-blocks", action="store_true")
    show.add_argument("--show-configuration", action="store_true")
    show.set_defaults(func=cmd_ipam_show)
    chk = ipam_sub.add_parser("check", help="find leaked addresses and handles", parents=[common])
    chk.add_argument("--show-all-ips", action="store_true")
    chk.add_argument("--show-problem-ips", action="store_true", default=True)
    chk.set_defaults(func=cmd_ipam_check)
    release = ipam_sub.add_parser("release", help="release one address", parents=[common])
    release.add_argument("--ip", help="the address to release")
    release.set_defaults(func=cmd_ipam_release)
    node = sub.add_parser("node", help="this node's BGP status")
    node_sub = node.add_subparsers(dest="node_verb", metavar="ACTION", parser_class=_Parser)
    node_sub.required = True
    status = node_sub.add_parser("status", help="BGP peers of this node's BIRD, as calicoctl node status prints them")
    status.add_argument(
        "--bird-socket",
        help=f"BIRD's control socket (default $PYCNI_CALICO_BIRD_SOCKET, {DEFAULT_CONTROL_SOCKET}, "
        f"{FALLBACK_CONTROL_SOCKET})",
    )
    status.add_argument(
        "--agent-pid-file", help="the calico-node agent's pid file (default $PYCNI_CALICO_NODE_PIDFILE)"
    )
    status.set_defaults(func=cmd_node_status)
    version = sub.add_parser("version", help="print the version")
    version.set_defaults(func=cmd_version)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        opts = build_parser().parse_args(argv)
        result: int = opts.func(opts)
        return result
    except CtlError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    except (CalicoError, DatastoreError) as exc:
        print(_one_line(exc), file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"pycni calicoctl: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # one line, never a traceback (unless PYCNI_DEBUG asks for it)
        if os.environ.get("PYCNI_DEBUG"):
            raise
        print(f"pycni calicoctl: internal error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
