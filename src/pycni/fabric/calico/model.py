"""Calico's v3 resources in and out: decode (strict), validate, default, manifests, YAML/JSON, typed views.

* :func:`decode_resource` turns one YAML/JSON object into a :class:`Resource`
  (types, unknown fields, names), :func:`validate_resource` applies the kind's
  rules, :func:`apply_defaults` the defaults clientv3 writes (an IPPool gets
  ``blockSize`` 26/122, ``nodeSelector: all()``, ``Never`` modes, allowed uses
  ``[Workload, Tunnel]``, ``assignmentMode: Automatic``).
* :func:`load_manifest` reads what ``calicoctl apply -f`` reads: YAML with
  several ``---`` documents, JSON, a top-level list, and ``List`` /
  ``<Kind>List`` objects with ``items``.
* :func:`to_json` is the exact bytes libcalico-go stores; :func:`dump_yaml` and
  :func:`dump_json` are calicoctl's ``-o yaml`` (keys sorted, as
  sigs.k8s.io/yaml writes them) and ``-o json``.
* :class:`IPPoolInfo`, :class:`NodeInfo`, :class:`BGPDefaults` and
  :class:`FelixSettings` are the typed views the IPAM, CNI plugin and node agent
  read, with Calico's effective defaults (AS 64512, mesh on, VNI 4096, port 4789).
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from pycni.fabric.calico import gojson
from pycni.fabric.calico.errors import DecodeError, ErroredField, ValidationError
from pycni.fabric.calico.kinds import (
    DEFAULT_AS_NUMBER,
    DEFAULT_BLOCK_SIZE,
    FELIX_DEFAULTS,
    KINDS,
    pool_network,
)
from pycni.fabric.calico.resource import API_VERSION, OBJECT_META, KindSpec, Resource, name_problem
from pycni.fabric.calico.schema import MISSING, duration_seconds
from pycni.policy.selector import Selector
from pycni.policy.selector import parse as parse_selector

__all__ = [
    "API_VERSION",
    "KINDS",
    "BGPDefaults",
    "FelixSettings",
    "IPPoolInfo",
    "NodeInfo",
    "Resource",
    "apply_defaults",
    "decode_resource",
    "dump_json",
    "dump_yaml",
    "from_json",
    "kind_spec",
    "load_manifest",
    "new_resource",
    "to_json",
    "validate_resource",
]


def kind_spec(kind: str) -> KindSpec:
    spec = KINDS.get(kind)
    if spec is None:
        known = ", ".join(sorted(KINDS))
        raise DecodeError(f"unknown resource type ({kind}) and/or version ({API_VERSION}); pycni knows: {known}")
    return spec


def new_resource(kind: str, name: str, spec: dict[str, Any] | None = None, namespace: str = "") -> Resource:
    """A resource built in code (the agent, the CNI plugin), decoded like a manifest so it is in Go's shape."""
    metadata: dict[str, Any] = {"name": name}
    if namespace:
        metadata["namespace"] = namespace
    return decode_resource({"apiVersion": API_VERSION, "kind": kind, "metadata": metadata, "spec": spec or {}})


def decode_resource(document: Any, where: str = "") -> Resource:
    """One object from a manifest or the store; :class:`DecodeError`/:class:`ValidationError` say what is wrong."""
    at = f" in {where}" if where else ""
    if not isinstance(document, dict):
        raise DecodeError(f"expected a resource (a mapping with apiVersion, kind, metadata, spec){at}")
    kind, version = document.get("kind"), document.get("apiVersion")
    if not kind or not isinstance(kind, str):
        raise DecodeError(f"a resource has no kind{at}: add e.g. 'kind: IPPool'")
    if version != API_VERSION:
        raise DecodeError(
            f"unknown resource type ({kind}) and/or version ({version}){at}: pycni reads apiVersion {API_VERSION}"
        )
    spec_info = kind_spec(kind)
    errors: list[ErroredField] = []
    extra = sorted(set(document) - {"kind", "apiVersion", "metadata", "spec", "status"})
    for key in extra:
        errors.append(ErroredField(f"{kind}.{key}", "unknown field; a resource has: apiVersion, kind, metadata, spec"))
    metadata = OBJECT_META.decode(document.get("metadata"), f"{kind}.metadata", errors)
    spec = spec_info.spec.decode(document.get("spec"), f"{kind}.spec", errors)
    status: dict[str, Any] | None = None
    if spec_info.status is not None and (spec_info.status_always or document.get("status") is not None):
        status = spec_info.status.decode(document.get("status"), f"{kind}.status", errors)
    elif document.get("status") is not None:
        errors.append(ErroredField(f"{kind}.status", f"{kind} has no status"))
    if errors or metadata is MISSING or spec is MISSING or status is MISSING:
        raise ValidationError(errors)
    return Resource(kind, metadata, spec, status)


def validate_resource(resource: Resource) -> None:
    """The kind's rules and metadata rules (name, namespace); raises :class:`ValidationError`."""
    info = kind_spec(resource.kind)
    errors: list[ErroredField] = []
    name = resource.name
    if not name:
        errors.append(ErroredField(f"{resource.kind}.metadata.name", "required: the resource's name"))
    else:
        problem = name_problem(name, info.name_pattern, info.name_max)
        if problem:
            errors.append(ErroredField(f"{resource.kind}.metadata.name", problem, name))
        if info.singleton and name != info.singleton:
            errors.append(
                ErroredField(
                    f"{resource.kind}.metadata.name",
                    f'Cannot create an {resource.kind} resource with a name other than "{info.singleton}"',
                    name,
                )
            )
    if info.namespaced and not resource.namespace:
        errors.append(ErroredField(f"{resource.kind}.metadata.namespace", f"required: {resource.kind} is namespaced"))
    if not info.namespaced and resource.namespace:
        errors.append(
            ErroredField(
                f"{resource.kind}.metadata.namespace",
                f"namespace should not be specified for a non-namespaced resource. {resource.kind} is not namespaced",
                resource.namespace,
            )
        )
    if info.validate is not None:
        errors.extend(info.validate(resource))
    if errors:
        raise ValidationError(errors)


def apply_defaults(resource: Resource) -> None:
    """What clientv3 fills in before writing (only IPPool has such defaults)."""
    info = kind_spec(resource.kind)
    if info.defaults is not None:
        info.defaults(resource)


# -- JSON and YAML -------------------------------------------------------------


def to_json(resource: Resource) -> str:
    """The value libcalico-go stores: Go's compact JSON of the whole object."""
    return gojson.marshal(resource.to_dict())


def from_json(text: str, where: str = "") -> Resource:
    try:
        document = json.loads(text)
    except ValueError as exc:
        raise DecodeError(f"{where or 'stored value'} is not JSON: {exc}") from None
    return decode_resource(document, where)


class _Loader(yaml.SafeLoader):
    """YAML 1.1 as Go's yaml.v2 reads it, except that timestamps stay strings (sigs.k8s.io/yaml does so)."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


class _Emitter(yaml.SafeDumper):
    """yaml.v2's style: double quotes when a string must be quoted, no line wrapping, sequences not indented."""

    def choose_scalar_style(self) -> str:
        style: str = super().choose_scalar_style()
        return '"' if style == "'" else style


def _documents(text: str, source: str) -> list[Any]:
    stripped = text.strip()
    if stripped.startswith(("{", "[")):
        try:
            return [json.loads(stripped)]
        except ValueError:
            pass  # YAML flow style, or JSON with a mistake: YAML says where
    try:
        return [doc for doc in yaml.load_all(text, Loader=_Loader) if doc is not None]
    except yaml.YAMLError as exc:
        raise DecodeError(f"{source} is not valid YAML or JSON: {exc}".replace("\n", " ")) from None


def _expand(document: Any, source: str) -> Iterable[Any]:
    if isinstance(document, list):
        for item in document:
            yield from _expand(item, source)
        return
    if isinstance(document, dict):
        kind = document.get("kind")
        if isinstance(kind, str) and (kind == "List" or (kind.endswith("List") and kind[:-4] in KINDS)):
            items = document.get("items") or []
            if not isinstance(items, list):
                raise DecodeError(f"{kind} in {source}: items must be a list of resources")
            for item in items:
                typed = item
                if kind != "List" and isinstance(item, dict):
                    typed = {"kind": kind[:-4], "apiVersion": document.get("apiVersion", API_VERSION), **item}
                yield from _expand(typed, source)
            return
    yield document


def load_manifest(text: str, source: str = "input") -> list[Resource]:
    """Every resource in ``text`` (YAML documents, JSON, lists, List objects), decoded; none is written yet."""
    resources = []
    for document in _documents(text, source):
        for item in _expand(document, source):
            resources.append(decode_resource(item, source))
    return resources


def _sorted(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _sorted(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [_sorted(v) for v in value]
    return value


def dump_yaml(value: Any) -> str:
    """calicoctl's ``-o yaml``: sigs.k8s.io/yaml of the JSON form (keys sorted at every level)."""
    data = json.loads(gojson.marshal(value))  # exactly the JSON form, whole floats as integers
    text: str = yaml.dump(
        _sorted(data), Dumper=_Emitter, default_flow_style=False, sort_keys=True, allow_unicode=True, width=1 << 30
    )
    return text


def dump_json(value: Any) -> str:
    """calicoctl's ``-o json``: Go's MarshalIndent with two spaces."""
    return gojson.marshal_indent(value)


# -- typed views ---------------------------------------------------------------

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class IPPoolInfo:
    """An IPPool as IPAM reads it, defaults applied (convertIpPoolFromStorage)."""

    name: str
    cidr: Network
    block_size: int
    node_selector: Selector
    namespace_selector: Selector | None
    disabled: bool
    allowed_uses: tuple[str, ...]
    ipip_mode: str
    vxlan_mode: str
    nat_outgoing: bool
    disable_bgp_export: bool
    assignment_mode: str

    @property
    def version(self) -> int:
        return self.cidr.version

    @classmethod
    def from_resource(cls, pool: Resource) -> IPPoolInfo:
        spec = pool.spec
        network = pool_network(str(spec.get("cidr", "")))
        if network is None:
            raise ValidationError([ErroredField("IPPool.spec.cidr", "not a CIDR", spec.get("cidr"))])
        namespace_selector = spec.get("namespaceSelector")
        return cls(
            name=pool.name,
            cidr=network,
            block_size=int(spec.get("blockSize") or DEFAULT_BLOCK_SIZE[network.version]),
            node_selector=parse_selector(spec.get("nodeSelector") or "all()"),
            namespace_selector=parse_selector(namespace_selector) if namespace_selector else None,
            disabled=bool(spec.get("disabled")),
            allowed_uses=tuple(spec.get("allowedUses") or ("Workload", "Tunnel")),
            ipip_mode=spec.get("ipipMode") or "Never",
            vxlan_mode=spec.get("vxlanMode") or "Never",
            nat_outgoing=bool(spec.get("natOutgoing")),
            disable_bgp_export=bool(spec.get("disableBGPExport")),
            assignment_mode=spec.get("assignmentMode") or "Automatic",
        )


@dataclass(frozen=True)
class NodeInfo:
    """A Node as the fabric reads it: labels (for pool and peer selectors), BGP addresses, tunnel addresses."""

    name: str
    labels: dict[str, str]
    ipv4_address: ipaddress.IPv4Interface | None
    ipv6_address: ipaddress.IPv6Interface | None
    as_number: int | None
    route_reflector_cluster_id: str
    ipv4_vxlan_tunnel_addr: str
    vxlan_tunnel_mac: str
    ipv4_ipip_tunnel_addr: str

    @classmethod
    def from_resource(cls, node: Resource) -> NodeInfo:
        bgp = node.spec.get("bgp") or {}
        v4, v6 = bgp.get("ipv4Address"), bgp.get("ipv6Address")
        return cls(
            name=node.name,
            labels=dict(node.labels),
            ipv4_address=ipaddress.IPv4Interface(v4) if v4 else None,
            ipv6_address=ipaddress.IPv6Interface(v6) if v6 else None,
            as_number=bgp.get("asNumber"),
            route_reflector_cluster_id=bgp.get("routeReflectorClusterID", ""),
            ipv4_vxlan_tunnel_addr=node.spec.get("ipv4VXLANTunnelAddr", ""),
            vxlan_tunnel_mac=node.spec.get("vxlanTunnelMACAddr", ""),
            ipv4_ipip_tunnel_addr=bgp.get("ipv4IPIPTunnelAddr", ""),
        )


@dataclass(frozen=True)
class BGPDefaults:
    """The cluster's BGP settings from BGPConfiguration ``default`` (Calico's defaults when absent)."""

    as_number: int = DEFAULT_AS_NUMBER
    node_to_node_mesh: bool = True
    log_severity: str = "Info"
    listen_port: int = 179

    @classmethod
    def from_resource(cls, config: Resource | None) -> BGPDefaults:
        spec = config.spec if config is not None else {}
        return cls(
            as_number=spec.get("asNumber", DEFAULT_AS_NUMBER),
            node_to_node_mesh=spec.get("nodeToNodeMeshEnabled", True),
            log_severity=spec.get("logSeverityScreen") or "Info",
            listen_port=spec.get("listenPort") or 179,
        )


@dataclass(frozen=True)
class FelixSettings:
    """What pycni's node agent reads from FelixConfiguration, with Felix's defaults (``config_params.go``).

    :meth:`from_resources` merges ``default``, then ``node.<name>``, then the
    ``FELIX_*`` environment (Felix's precedence); unset or null fields keep
    the default, and durations are seconds.
    """

    vxlan_vni: int = FELIX_DEFAULTS["vxlanVNI"]
    vxlan_port: int = FELIX_DEFAULTS["vxlanPort"]
    vxlan_mtu: int = 0  # 0: computed from the host interface
    ipip_mtu: int = 0
    nftables_mode: str = FELIX_DEFAULTS["nftablesMode"]
    route_refresh: float = FELIX_DEFAULTS["routeRefreshInterval"]  # seconds between the agent's resyncs
    mtu_iface_pattern: str = FELIX_DEFAULTS["mtuIfacePattern"]  # the interfaces the host MTU is read from

    @classmethod
    def from_resources(cls, *configs: Resource | None, env: Mapping[str, Any] | None = None) -> FelixSettings:
        merged: dict[str, Any] = {}
        for config in configs:
            if config is not None:
                merged.update({k: v for k, v in config.spec.items() if v is not None})
        merged.update(env or {})
        refresh = merged.get("routeRefreshInterval")
        seconds = duration_seconds(refresh) if isinstance(refresh, str) else refresh
        return cls(
            vxlan_vni=int(merged.get("vxlanVNI") or FELIX_DEFAULTS["vxlanVNI"]),
            vxlan_port=int(merged.get("vxlanPort") or FELIX_DEFAULTS["vxlanPort"]),
            vxlan_mtu=int(merged.get("vxlanMTU") or 0),
            ipip_mtu=int(merged.get("ipipMTU") or 0),
            nftables_mode=str(merged.get("nftablesMode") or FELIX_DEFAULTS["nftablesMode"]),
            route_refresh=float(seconds) if seconds else FELIX_DEFAULTS["routeRefreshInterval"],
            mtu_iface_pattern=str(merged.get("mtuIfacePattern") or FELIX_DEFAULTS["mtuIfacePattern"]),
        )
