"""Calico's v3 resources on a pycni datastore, stored exactly where and as libcalico-go stores them.

Keys (``libcalico-go/lib/backend/model/resource.go``):
``/calico/resources/v3/projectcalico.org/<plural>/<name>``, or
``.../<plural>/<namespace>/<name>`` for namespaced kinds (WorkloadEndpoint).
The value is the whole object as Go's compact JSON, with ``resourceVersion``
and ``selfLink`` blanked (``clientv3/resources.go`` ``resourceToKVPair``); on
read, ``metadata.resourceVersion`` is the key's ``mod_revision`` as a decimal
string (``etcdv3/conversion.go``).

Semantics are clientv3's: :meth:`ResourceClient.create` rejects a
resourceVersion, fills ``uid`` and ``creationTimestamp``, and fails with
:class:`ResourceAlreadyExists` (etcd: ``If(Version(key)==0)``);
:meth:`~ResourceClient.update` needs resourceVersion, uid and
creationTimestamp and is a compare-and-swap on the revision
(:class:`UpdateConflict`); :meth:`~ResourceClient.apply` is calicoctl's
create-or-replace. IPPools keep clientv3's extra rules: no overlap with
another pool, no block size that contradicts blocks already in the range,
``cidr`` and ``blockSize`` never change, and delete first disables the pool
and releases its block affinities. A WorkloadEndpoint's name must be the one
its spec's identifiers make (:mod:`~pycni.fabric.calico.names`; an unnamed one
gets it), and it is stored with the ``projectcalico.org/namespace`` and
``projectcalico.org/orchestrator`` labels clientv3 sets. Deleting a Node first cleans up after it as
clientv3's ``Nodes().Delete`` does: the addresses of its WorkloadEndpoints and
its tunnel addresses are released, the endpoints deleted, its block
affinities released, and the BGPPeers naming it and its per-node
``node.<name>`` FelixConfiguration and BGPConfiguration deleted.

Policies keep clientv3's and the etcd backend's rules: a (Global)NetworkPolicy
needs its tier to exist, gets ``types`` from its rules and, off the default
tier, the ``projectcalico.org/tier`` label; its stored value carries its name in
the ``projectcalico.org/metadata`` annotation (``storePolicyName``), which
reading removes; reading fills ``spec.tier`` and the tier label. A Tier without
order or defaultAction gets 1,000,000 and Deny; the default and kube-admin
tiers, and a tier that still has policies, are not deleted. The Kubernetes
stand-ins (Namespace, Pod, NetworkPolicy) are kept by
:class:`KubernetesObjectClient` under ``/pycni/k8s/registry/`` (see there).

One exception to the layout, by design: ``IPAMConfiguration`` (always named
``default``) is stored as the ``/calico/ipam/v2/config`` value IPAM reads
(``{"strict_affinity":…,"auto_allocate_blocks":…,"maxBlocksPerHost":…}``), so
applying it changes what IPAM does. Real Calico in etcd mode keeps the v3
resource and that key apart and only ``calicoctl ipam configure`` writes the
key; here the two are one.
"""

from __future__ import annotations

import builtins
import contextlib
import ipaddress
import json
import logging
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from pycni.datastore import AlreadyExists, Conflict, Datastore, KeyValue, NotFound
from pycni.fabric.calico import gojson
from pycni.fabric.calico.errors import (
    DecodeError,
    ErroredField,
    OperationNotSupported,
    ResourceAlreadyExists,
    ResourceNotFound,
    UpdateConflict,
    ValidationError,
)
from pycni.fabric.calico.kinds import (
    IPAMCONFIG_SPEC,
    KUBERNETES_KINDS,
    LABEL_TIER,
    SEEDED_TIERS,
    KubernetesKind,
    pool_network,
)
from pycni.fabric.calico.model import (
    API_VERSION,
    apply_defaults,
    from_json,
    kind_spec,
    new_resource,
    to_json,
    validate_resource,
)
from pycni.fabric.calico.names import check_endpoint_name
from pycni.fabric.calico.resource import Resource

log = logging.getLogger(__name__)

RESOURCES_PREFIX = "/calico/resources/v3/projectcalico.org/"
IPAM_CONFIG_KEY = "/calico/ipam/v2/config"
BLOCKS_PREFIX = "/calico/ipam/v2/assignment/"
CLUSTER_INFO_NAME = "default"
LABEL_NAMESPACE = "projectcalico.org/namespace"
LABEL_ORCHESTRATOR = "projectcalico.org/orchestrator"
POLICY_KINDS = ("NetworkPolicy", "GlobalNetworkPolicy")
METADATA_ANNOTATION = "projectcalico.org/metadata"  # etcdv3.go: the policy's name as the v3 API gave it
UNDELETABLE_TIERS = ("default", "kube-admin")  # clientv3 tiers.Delete
# The tunnel address handles calico-node uses: ``<kind>-tunnel-addr-<node>`` (node/pkg/allocateip).
TUNNEL_HANDLE_KINDS = ("ipip", "vxlan", "vxlan-v6", "wireguard", "wireguard-v6")

# model.IPAMConfig's JSON names for IPAMConfiguration's spec fields (all omitempty there).
_IPAM_CONFIG_FIELDS = {
    "strictAffinity": "strict_affinity",
    "autoAllocateBlocks": "auto_allocate_blocks",
    "maxBlocksPerHost": "maxBlocksPerHost",
    "kubeVirtVMAddressPersistence": "kubeVirtVMAddressPersistence",
    "ipCooldownSeconds": "ipCooldownSeconds",
}


def resource_key(kind: str, name: str, namespace: str = "") -> str:
    """The etcd key of a resource (raises DecodeError for a kind pycni does not know)."""
    info = kind_spec(kind)
    if kind == "IPAMConfiguration":
        return IPAM_CONFIG_KEY
    if info.namespaced:
        return f"{RESOURCES_PREFIX}{info.plural}/{namespace}/{name}"
    return f"{RESOURCES_PREFIX}{info.plural}/{name}"


def resource_prefix(kind: str, namespace: str = "") -> str:
    """The prefix listing a kind (within ``namespace`` if given, for namespaced kinds)."""
    info = kind_spec(kind)
    if kind == "IPAMConfiguration":
        return IPAM_CONFIG_KEY
    if info.namespaced and namespace:
        return f"{RESOURCES_PREFIX}{info.plural}/{namespace}/"
    return f"{RESOURCES_PREFIX}{info.plural}/"


def _timestamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def ipam_config_value(spec: dict[str, Any]) -> str:
    """IPAMConfiguration's spec as the ``/calico/ipam/v2/config`` value (model.IPAMConfig, omitempty)."""
    out = {stored: spec[name] for name, stored in _IPAM_CONFIG_FIELDS.items() if spec.get(name)}
    return gojson.marshal(out)


def ipam_config_spec(value: str) -> dict[str, Any]:
    """The ``/calico/ipam/v2/config`` value read as IPAMConfiguration's spec (a key that is absent: false)."""
    try:
        stored = json.loads(value) if value else {}
    except ValueError:
        stored = {}
    if not isinstance(stored, dict):
        stored = {}
    raw = {name: stored.get(key) for name, key in _IPAM_CONFIG_FIELDS.items() if stored.get(key) is not None}
    raw.setdefault("strictAffinity", False)
    raw.setdefault("autoAllocateBlocks", False)
    decoded: dict[str, Any] = IPAMCONFIG_SPEC.decode(raw, "IPAMConfiguration.spec", [])
    return decoded


class ResourceClient:
    """create/update/apply/delete/get/list of v3 resources on ``store`` (clientv3's rules, etcd's keys)."""

    def __init__(
        self,
        store: Datastore,
        *,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        new_uid: Callable[[], str] = lambda: str(uuid.uuid4()),
    ) -> None:
        self.store = store
        self.now = now
        self.new_uid = new_uid

    # -- reads ---------------------------------------------------------------

    def decode(self, kv: KeyValue) -> Resource:
        """A stored key as a resource, with resourceVersion from its revision (as libcalico-go reads it)."""
        if kv.key == IPAM_CONFIG_KEY:
            resource = Resource(
                "IPAMConfiguration", {"name": "default", "creationTimestamp": None}, ipam_config_spec(kv.value)
            )
        else:
            resource = from_json(kv.value, kv.key)
        resource.set_meta("resourceVersion", str(kv.mod_revision))
        if resource.kind == "IPPool":
            apply_defaults(resource)  # convertIpPoolFromStorage: pools written before a field existed
        if resource.kind in POLICY_KINDS:
            _policy_from_storage(resource)
        return resource

    def get(self, kind: str, name: str, namespace: str = "") -> Resource:
        kv = self.store.get(resource_key(kind, name, namespace))
        if kv is None:
            raise ResourceNotFound(_identifier(kind, name, namespace))
        return self.decode(kv)

    def find(self, kind: str, name: str, namespace: str = "") -> Resource | None:
        try:
            return self.get(kind, name, namespace)
        except ResourceNotFound:
            return None

    def list(self, kind: str, namespace: str = "") -> tuple[list[Resource], int]:
        """Every resource of ``kind`` (in ``namespace``, or all), sorted by key, and the revision read at."""
        prefix = resource_prefix(kind, namespace)
        if kind == "IPAMConfiguration":
            kv = self.store.get(prefix)
            return ([self.decode(kv)] if kv else []), self.store.revision()
        kvs, revision = self.store.list(prefix)
        return [self.decode(kv) for kv in kvs], revision

    # -- writes --------------------------------------------------------------

    def _stored_value(self, resource: Resource) -> str:
        if resource.kind == "IPAMConfiguration":
            return ipam_config_value(resource.spec)
        stored = resource.copy()
        stored.set_meta("resourceVersion", None)
        stored.set_meta("selfLink", None)
        if resource.kind in POLICY_KINDS:  # etcdv3.go storePolicyName
            annotations = {
                **(stored.metadata.get("annotations") or {}),
                METADATA_ANNOTATION: gojson.marshal({"name": stored.name}),
            }
            stored.set_meta("annotations", dict(sorted(annotations.items())))
        return to_json(stored)

    def _prepare(self, resource: Resource, current: Resource | None) -> Resource:
        resource = resource.copy()
        resource.api_version = API_VERSION
        if resource.kind == "WorkloadEndpoint":
            _endpoint_for_storage(resource)
        validate_resource(resource)
        if resource.kind == "IPPool":
            self._check_pool(resource, current)
        apply_defaults(resource)
        return resource

    def create(self, resource: Resource) -> Resource:
        """Create ``resource``; :class:`ResourceAlreadyExists` if its key is taken."""
        if resource.resource_version:
            raise ValidationError(
                [
                    ErroredField(
                        "Metadata.ResourceVersion",
                        "field must not be set for a Create request",
                        resource.resource_version,
                    )
                ]
            )
        if resource.kind in POLICY_KINDS:  # clientv3: a policy's tier must exist before the policy
            self.get("Tier", str(resource.spec.get("tier") or "default"))
        resource = self._prepare(resource, None)
        if resource.kind != "IPAMConfiguration":
            if not resource.metadata.get("creationTimestamp"):
                resource.set_meta("creationTimestamp", _timestamp(self.now()))
            if not resource.metadata.get("uid"):
                resource.set_meta("uid", self.new_uid())
        key = resource_key(resource.kind, resource.name, resource.namespace)
        try:
            kv = self.store.create(key, self._stored_value(resource))
        except AlreadyExists:
            raise ResourceAlreadyExists(resource.identifier) from None
        log.debug("created %s at revision %d", resource.identifier, kv.mod_revision)
        return self.decode(kv)

    def update(self, resource: Resource) -> Resource:
        """Replace ``resource`` if its resourceVersion is still the stored one (compare-and-swap)."""
        if not resource.resource_version:
            raise ValidationError([ErroredField("Metadata.ResourceVersion", "field must be set for an Update request")])
        if resource.kind != "IPAMConfiguration":
            for meta, label in (("creationTimestamp", "Metadata.CreationTimestamp"), ("uid", "Metadata.UID")):
                if not resource.metadata.get(meta):
                    raise ValidationError([ErroredField(label, "field must be set for an Update request")])
        current = self.find(resource.kind, resource.name, resource.namespace) if resource.kind == "IPPool" else None
        revision = _revision(resource)
        prepared = self._prepare(resource, current)
        key = resource_key(prepared.kind, prepared.name, prepared.namespace)
        try:
            kv = self.store.update(key, self._stored_value(prepared), revision)
        except Conflict:
            raise UpdateConflict(prepared.identifier) from None
        except NotFound:
            raise ResourceNotFound(prepared.identifier) from None
        return self.decode(kv)

    def replace(self, resource: Resource, attempts: int = 5) -> Resource:
        """calicoctl's replace: with a resourceVersion, only if it is current; without, on the latest version."""
        given = resource.resource_version
        for attempt in range(attempts):
            current = self.get(resource.kind, resource.name, resource.namespace)
            if given and given != current.resource_version:
                raise UpdateConflict(
                    resource.identifier,
                    f"resource version '{given}' is out of date (latest: {current.resource_version}). "
                    "Update the resource YAML/JSON in order to make changes",
                )
            merged = resource.copy()
            for meta in ("resourceVersion", "uid", "creationTimestamp"):
                if not merged.metadata.get(meta) or meta == "resourceVersion":
                    merged.set_meta(meta, current.metadata.get(meta))
            try:
                return self.update(merged)
            except UpdateConflict:
                if given or attempt == attempts - 1:
                    raise
                time.sleep(0.05 * (attempt + 1))
        raise AssertionError("unreachable")

    def apply(self, resource: Resource) -> Resource:
        """calicoctl's apply: create, or replace what exists."""
        fresh = resource.copy()
        fresh.set_meta("resourceVersion", None)
        try:
            return self.create(fresh)
        except ResourceAlreadyExists:
            return self.replace(resource)

    def delete(self, kind: str, name: str, namespace: str = "", resource_version: str = "") -> Resource:
        """Delete and return what was stored; with ``resource_version`` only if still current."""
        current = self.get(kind, name, namespace)
        if kind == "Tier":
            self._check_tier_deletable(name)
        if kind == "IPPool":
            current = self._retire_pool(current, resource_version)
            resource_version = ""
        elif kind == "Node":
            self._retire_node(current)
        revision = int(resource_version) if resource_version else None
        try:
            kv = self.store.delete(resource_key(kind, name, namespace), revision)
        except NotFound:
            raise ResourceNotFound(_identifier(kind, name, namespace)) from None
        except Conflict:
            raise UpdateConflict(_identifier(kind, name, namespace)) from None
        gone = self.decode(kv)
        gone.set_meta("resourceVersion", current.resource_version)
        return gone

    def _check_tier_deletable(self, name: str) -> None:
        """clientv3 tiers.Delete: never the default and kube-admin tiers, never one that still has policies."""
        if name in UNDELETABLE_TIERS:
            raise OperationNotSupported("Delete", name, f"Cannot delete {name} tier")
        for kind in POLICY_KINDS:
            if any((p.spec.get("tier") or "default") == name for p in self.list(kind)[0]):
                raise OperationNotSupported("delete", name, "Cannot delete a non-empty tier")

    # -- clientv3's EnsureInitialized ------------------------------------------

    def ensure_initialized(self, calico_version: str = "", cluster_type: str = "") -> None:
        """ClusterInformation ``default`` and the tiers default (Deny), kube-admin and kube-baseline (Pass)."""
        if self.find("ClusterInformation", CLUSTER_INFO_NAME) is None:
            info = new_resource(
                "ClusterInformation",
                CLUSTER_INFO_NAME,
                {
                    "clusterGUID": uuid.uuid4().hex,
                    "clusterType": cluster_type,
                    "calicoVersion": calico_version,
                    "datastoreReady": True,
                },
            )
            with contextlib.suppress(ResourceAlreadyExists):  # another node got there first
                self.create(info)
        for name, (action, order) in SEEDED_TIERS.items():
            with contextlib.suppress(ResourceAlreadyExists):
                self.create(new_resource("Tier", name, {"order": order, "defaultAction": action}))

    # -- IPPool rules ----------------------------------------------------------

    def _check_pool(self, pool: Resource, current: Resource | None) -> None:
        spec = pool.spec
        network = pool_network(spec["cidr"])
        assert network is not None  # validated
        errors: list[ErroredField] = []
        if current is not None:
            old_network = pool_network(current.spec.get("cidr", ""))
            if old_network != network:
                errors.append(ErroredField("IPPool.spec.cidr", "IPPool CIDR cannot be modified", spec["cidr"]))
            if spec.get("blockSize") and spec.get("blockSize") != current.spec.get("blockSize"):
                errors.append(
                    ErroredField("IPPool.spec.blockSize", "IPPool BlockSize cannot be modified", spec["blockSize"])
                )
            if "LoadBalancer" in (current.spec.get("allowedUses") or []) and any(
                use != "LoadBalancer" for use in spec.get("allowedUses") or []
            ):
                errors.append(
                    ErroredField(
                        "IPPool.spec.allowedUses", "IPPool allowed use cannot be changed from LoadBalancer", None
                    )
                )
        else:
            pools, _ = self.list("IPPool")
            for other in pools:
                other_network = pool_network(other.spec.get("cidr", ""))
                if other.name != pool.name and other_network is not None and other_network.overlaps(network):
                    errors.append(
                        ErroredField(
                            "IPPool.spec.cidr",
                            f"IPPool({pool.name}) CIDR overlaps with IPPool({other.name}) CIDR {other.spec['cidr']}",
                            spec["cidr"],
                        )
                    )
            block_size = spec.get("blockSize") or (26 if network.version == 4 else 122)
            blocks, _ = self.store.list(f"{BLOCKS_PREFIX}ipv{network.version}/block/")
            for kv in blocks:
                block = ipaddress.ip_network(kv.key.rsplit("/", 1)[1].replace("-", "/", 1))
                if block.prefixlen != block_size and block.overlaps(network):
                    errors.append(
                        ErroredField(
                            "IPPool.spec.blockSize",
                            "IPPool blocksSize conflicts with existing allocations that use a different blockSize",
                            block_size,
                        )
                    )
                    break
        if errors:
            raise ValidationError(errors)

    def _retire_pool(self, pool: Resource, resource_version: str) -> Resource:
        """clientv3 IPPools().Delete: disable the pool, release its affinities; the caller deletes it."""
        if not pool.spec.get("disabled"):
            disabled = pool.copy()
            disabled.spec["disabled"] = True
            if resource_version:
                disabled.set_meta("resourceVersion", resource_version)
            pool = self.update(disabled)
        from pycni.fabric.calico.ipam_store import IPAM  # IPAM reads pools through this client

        network = pool_network(pool.spec["cidr"])
        assert network is not None
        IPAM(self.store, self).release_pool_affinities(network)
        return pool

    # -- Node deletion ---------------------------------------------------------

    def _retire_node(self, node: Resource) -> None:
        """clientv3 Nodes().Delete's clean-up before the Node itself goes (whatever is already gone is done)."""
        from pycni.fabric.calico.ipam_store import IPAM, NotAssigned

        name = node.name
        ipam = IPAM(self.store, self)
        endpoints = [wep for wep in self.list("WorkloadEndpoint")[0] if wep.spec.get("node") == name]
        addresses = [ipaddress.ip_interface(net).ip for wep in endpoints for net in wep.spec.get("ipNetworks") or []]
        spec = node.spec
        for text in (
            (spec.get("bgp") or {}).get("ipv4IPIPTunnelAddr"),
            spec.get("ipv4VXLANTunnelAddr"),
            (spec.get("wireguard") or {}).get("interfaceIPv4Address"),
        ):
            if text:
                addresses.append(ipaddress.ip_interface(text).ip)
        ipam.release_ips(addresses)
        for kind in TUNNEL_HANDLE_KINDS:  # a tunnel address the Node no longer (or never) published
            with contextlib.suppress(NotAssigned):
                ipam.release_by_handle(f"{kind}-tunnel-addr-{name}")
        for wep in endpoints:
            with contextlib.suppress(ResourceNotFound):
                self.delete("WorkloadEndpoint", wep.name, wep.namespace)
        released = ipam.release_host_affinities(name)
        peers = [peer for peer in self.list("BGPPeer")[0] if peer.spec.get("node") == name]
        for peer in peers:
            with contextlib.suppress(ResourceNotFound):
                self.delete("BGPPeer", peer.name)
        for kind in ("FelixConfiguration", "BGPConfiguration"):
            with contextlib.suppress(ResourceNotFound):
                self.delete(kind, f"node.{name}")
        log.info(
            "node %s: released %d address(es) and %d block affinit(ies), deleted %d endpoint(s) and %d BGPPeer(s)",
            name,
            len(addresses),
            released,
            len(endpoints),
            len(peers),
        )


def _policy_from_storage(policy: Resource) -> None:
    """What reading a policy gives back: the name from the annotation (removed), the tier filled in and labelled.

    ``etcdToKVPair`` takes the name from ``projectcalico.org/metadata``;
    clientv3's Get fills ``spec.tier`` (``default`` for an untiered name) and
    ``defaultTierLabelIfMissing`` adds ``projectcalico.org/tier``.
    """
    annotations = dict(policy.metadata.get("annotations") or {})
    stored = annotations.pop(METADATA_ANNOTATION, None)
    if stored is not None:
        with contextlib.suppress(ValueError, TypeError):
            name = json.loads(stored).get("name")
            if isinstance(name, str) and name:
                policy.set_meta("name", name)
        policy.set_meta("annotations", annotations or None)
    tier = str(policy.spec.get("tier") or "default")
    policy.spec = {"tier": tier, **{k: v for k, v in policy.spec.items() if k != "tier"}}
    if LABEL_TIER not in policy.labels:
        policy.set_meta("labels", dict(sorted({**policy.labels, LABEL_TIER: tier}.items())))


def _endpoint_for_storage(wep: Resource) -> None:
    """clientv3 WorkloadEndpoints' Create/Update: the name the spec implies, and the two labels it owns.

    ``assignOrValidateName`` names an unnamed endpoint and refuses a name that
    does not match the spec; ``updateLabelsForStorage`` sets
    ``projectcalico.org/namespace`` and ``projectcalico.org/orchestrator``
    (not the user's to choose).
    """
    wep.set_meta("name", check_endpoint_name(wep.name, wep.spec))
    labels = {**wep.labels, LABEL_NAMESPACE: wep.namespace, LABEL_ORCHESTRATOR: str(wep.spec.get("orchestrator", ""))}
    wep.set_meta("labels", dict(sorted(labels.items())))


def _identifier(kind: str, name: str, namespace: str) -> str:
    return f"{kind}({namespace}/{name})" if namespace else f"{kind}({name})"


def _revision(resource: Resource) -> int:
    try:
        return int(resource.resource_version)
    except ValueError:
        raise ValidationError(
            [ErroredField("Metadata.ResourceVersion", "must be a revision number", resource.resource_version)]
        ) from None


# -- Kubernetes stand-ins ---------------------------------------------------------------
#
# Calico never keeps Kubernetes objects in etcd: in etcd mode kube-controllers
# watch the API server and write what they become (profiles kns.<ns>,
# NetworkPolicies knp.default.<name>, endpoints from pods). pycni has no API
# server, so the few objects policy needs (v1 Namespace, v1 Pod,
# networking.k8s.io/v1 NetworkPolicy) are kept as the documents a user applies,
# beside Calico's keys under a prefix of pycni's own (``/calico/`` is
# Calico's: its Clean() deletes it), laid out as kube-apiserver lays out its
# etcd (``/registry/<resource>/[<namespace>/]<name>``). The policy engine
# converts them when it reads them, as Calico converts them.

KUBERNETES_PREFIX = "/pycni/k8s/registry/"
LABEL_METADATA_NAME = "kubernetes.io/metadata.name"
DEFAULT_NAMESPACE = "default"


def kubernetes_key(info: KubernetesKind, name: str, namespace: str = "") -> str:
    if info.namespaced:
        return f"{KUBERNETES_PREFIX}{info.plural}/{namespace}/{name}"
    return f"{KUBERNETES_PREFIX}{info.plural}/{name}"


def kubernetes_prefix(info: KubernetesKind, namespace: str = "") -> str:
    if info.namespaced and namespace:
        return f"{KUBERNETES_PREFIX}{info.plural}/{namespace}/"
    return f"{KUBERNETES_PREFIX}{info.plural}/"


class KubernetesObject:
    """One stored Kubernetes document (decoded JSON, the user's key order) and its kind."""

    def __init__(self, info: KubernetesKind, document: dict[str, Any]) -> None:
        self.info = info
        self.document = document

    @property
    def kind(self) -> str:
        return self.info.kind

    @property
    def metadata(self) -> dict[str, Any]:
        metadata: dict[str, Any] = self.document.setdefault("metadata", {})
        return metadata

    @property
    def name(self) -> str:
        return str(self.metadata.get("name") or "")

    @property
    def namespace(self) -> str:
        return str(self.metadata.get("namespace") or "")

    @property
    def resource_version(self) -> str:
        return str(self.metadata.get("resourceVersion") or "")

    @property
    def identifier(self) -> str:
        return f"{self.kind}({self.namespace}/{self.name})" if self.info.namespaced else f"{self.kind}({self.name})"

    def to_dict(self) -> dict[str, Any]:
        return self.document

    def copy(self) -> KubernetesObject:
        return KubernetesObject(self.info, json.loads(json.dumps(self.document)))


def kubernetes_object(document: Any, where: str = "") -> KubernetesObject | None:
    """The document as a Kubernetes stand-in if its apiVersion and kind are one (None otherwise); not validated yet."""
    if not isinstance(document, dict):
        return None
    info = KUBERNETES_KINDS.get((str(document.get("apiVersion")), str(document.get("kind"))))
    if info is None:
        return None
    if not isinstance(document.get("metadata"), dict):
        raise ValidationError([ErroredField(f"{info.kind}.metadata", f"required: a mapping with the name{where}")])
    return KubernetesObject(info, json.loads(json.dumps(document)))


def _validated(obj: KubernetesObject) -> None:
    """The API server's checks, as :mod:`pycni.policy.k8s` makes them."""
    from pycni.policy.errors import PolicyError

    try:
        obj.info.parse(obj.document)
    except PolicyError as error:
        raise ValidationError(
            [ErroredField(f"{obj.kind}.{p.path}" if p.path else obj.kind, p.message) for p in error.problems]
        ) from None


class KubernetesObjectClient:
    """create/update/replace/apply/delete/get/list of the Kubernetes stand-ins, with the API server's rules.

    Create fills ``uid`` and ``creationTimestamp`` and refuses a
    resourceVersion; update is a compare-and-swap on it; a Namespace gets its
    ``kubernetes.io/metadata.name`` label (the API server sets it); a namespaced
    object needs its Namespace to exist (``default`` always does), and deleting
    a Namespace deletes what is in it.
    """

    def __init__(
        self,
        store: Datastore,
        *,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        new_uid: Callable[[], str] = lambda: str(uuid.uuid4()),
    ) -> None:
        self.store = store
        self.now = now
        self.new_uid = new_uid

    def decode(self, info: KubernetesKind, kv: KeyValue) -> KubernetesObject:
        try:
            document = json.loads(kv.value)
        except ValueError as exc:
            raise DecodeError(f"{kv.key} is not JSON: {exc}") from None
        obj = KubernetesObject(info, document)
        obj.metadata["resourceVersion"] = str(kv.mod_revision)
        return obj

    def get(self, info: KubernetesKind, name: str, namespace: str = "") -> KubernetesObject:
        namespace = namespace or DEFAULT_NAMESPACE if info.namespaced else ""
        kv = self.store.get(kubernetes_key(info, name, namespace))
        if kv is None:
            raise ResourceNotFound(f"{info.kind}({namespace}/{name})" if namespace else f"{info.kind}({name})")
        return self.decode(info, kv)

    def find(self, info: KubernetesKind, name: str, namespace: str = "") -> KubernetesObject | None:
        try:
            return self.get(info, name, namespace)
        except ResourceNotFound:
            return None

    def list(self, info: KubernetesKind, namespace: str = "") -> tuple[list[KubernetesObject], int]:
        kvs, revision = self.store.list(kubernetes_prefix(info, namespace))
        return [self.decode(info, kv) for kv in kvs], revision

    def _prepare(self, obj: KubernetesObject) -> KubernetesObject:
        obj = obj.copy()
        if obj.info.namespaced:
            obj.metadata["namespace"] = obj.namespace or DEFAULT_NAMESPACE
        elif obj.namespace:
            raise ValidationError(
                [ErroredField(f"{obj.kind}.metadata.namespace", f"{obj.kind} is not namespaced", obj.namespace)]
            )
        if obj.kind == "Namespace":
            labels = dict(obj.metadata.get("labels") or {})
            labels[LABEL_METADATA_NAME] = obj.name
            obj.metadata["labels"] = labels
        _validated(obj)
        if obj.info.namespaced:
            self._namespace_exists(obj.namespace)
        return obj

    def _namespace_exists(self, namespace: str) -> None:
        info = KUBERNETES_KINDS[("v1", "Namespace")]
        if self.find(info, namespace) is not None:
            return
        if namespace != DEFAULT_NAMESPACE:
            raise ResourceNotFound(f"Namespace({namespace})")
        with contextlib.suppress(ResourceAlreadyExists):  # the API server always has it
            self.create(
                KubernetesObject(info, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
            )

    @staticmethod
    def _value(obj: KubernetesObject) -> str:
        stored = obj.copy()
        stored.metadata.pop("resourceVersion", None)
        return gojson.marshal(stored.document)

    def create(self, obj: KubernetesObject) -> KubernetesObject:
        if obj.resource_version:
            raise ValidationError(
                [
                    ErroredField(
                        "Metadata.ResourceVersion", "field must not be set for a Create request", obj.resource_version
                    )
                ]
            )
        obj = self._prepare(obj)
        obj.metadata.setdefault("uid", self.new_uid())
        obj.metadata.setdefault("creationTimestamp", _timestamp(self.now()))
        try:
            kv = self.store.create(kubernetes_key(obj.info, obj.name, obj.namespace), self._value(obj))
        except AlreadyExists:
            raise ResourceAlreadyExists(obj.identifier) from None
        return self.decode(obj.info, kv)

    def update(self, obj: KubernetesObject) -> KubernetesObject:
        if not obj.resource_version:
            raise ValidationError([ErroredField("Metadata.ResourceVersion", "field must be set for an Update request")])
        try:
            revision = int(obj.resource_version)
        except ValueError:
            raise ValidationError(
                [ErroredField("Metadata.ResourceVersion", "must be a revision number", obj.resource_version)]
            ) from None
        obj = self._prepare(obj)
        try:
            kv = self.store.update(kubernetes_key(obj.info, obj.name, obj.namespace), self._value(obj), revision)
        except Conflict:
            raise UpdateConflict(obj.identifier) from None
        except NotFound:
            raise ResourceNotFound(obj.identifier) from None
        return self.decode(obj.info, kv)

    def replace(self, obj: KubernetesObject, attempts: int = 5) -> KubernetesObject:
        """With a resourceVersion only if it is current; without, on the latest (uid and creation time kept)."""
        given = obj.resource_version
        for attempt in range(attempts):
            current = self.get(obj.info, obj.name, obj.namespace)
            if given and given != current.resource_version:
                raise UpdateConflict(
                    obj.identifier,
                    f"resource version '{given}' is out of date (latest: {current.resource_version}). "
                    "Update the resource YAML/JSON in order to make changes",
                )
            merged = obj.copy()
            for meta in ("uid", "creationTimestamp"):
                merged.metadata.setdefault(meta, current.metadata.get(meta))
            merged.metadata["resourceVersion"] = current.resource_version
            try:
                return self.update(merged)
            except UpdateConflict:
                if given or attempt == attempts - 1:
                    raise
                time.sleep(0.05 * (attempt + 1))
        raise AssertionError("unreachable")

    def apply(self, obj: KubernetesObject) -> KubernetesObject:
        fresh = obj.copy()
        fresh.metadata.pop("resourceVersion", None)
        try:
            return self.create(fresh)
        except ResourceAlreadyExists:
            return self.replace(obj)

    def delete(
        self, info: KubernetesKind, name: str, namespace: str = "", resource_version: str = ""
    ) -> KubernetesObject:
        current = self.get(info, name, namespace)
        try:
            kv = self.store.delete(
                kubernetes_key(info, current.name, current.namespace),
                int(resource_version) if resource_version else None,
            )
        except NotFound:
            raise ResourceNotFound(current.identifier) from None
        except Conflict:
            raise UpdateConflict(current.identifier) from None
        if info.kind == "Namespace":  # the namespace controller empties it
            for other in KUBERNETES_KINDS.values():
                if other.namespaced:
                    kvs, _ = self.store.list(kubernetes_prefix(other, name))
                    for item in kvs:
                        with contextlib.suppress(NotFound):
                            self.store.delete(item.key)
        gone = self.decode(info, kv)
        gone.metadata["resourceVersion"] = current.resource_version
        return gone

    def documents(self) -> builtins.list[dict[str, Any]]:
        """Every stored object's document (Namespaces first), for the policy engine to convert."""
        out: builtins.list[dict[str, Any]] = []
        for info in KUBERNETES_KINDS.values():
            out += [obj.document for obj in self.list(info)[0]]
        return out
