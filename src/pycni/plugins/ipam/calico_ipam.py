"""calico-ipam: Calico's block IPAM as a CNI IPAM plugin (``cni-plugin/pkg/ipamplugin`` in projectcalico/calico).

ADD asks :class:`~pycni.fabric.calico.ipam_store.IPAM` for one IPv4 address
(``ipam.assign_ipv4``, default ``"true"``) and/or one IPv6 address
(``ipam.assign_ipv6``, default ``"false"``) from the node's affine blocks,
under the handle ``<network name>.<CNI_CONTAINERID>`` with the attributes
``node``, ``timestamp`` and, for a Kubernetes pod (``K8S_POD_NAMESPACE`` and
``K8S_POD_NAME`` in CNI_ARGS), ``namespace`` and ``pod``. ``ipam.ipv4_pools`` /
``ipv6_pools`` restrict the pools (by name or CIDR); ``IP=`` in CNI_ARGS asks
for that exact address. The result is Calico's: each address with its
block's prefix (``10.65.79.1/26``; an ``IP=`` request is ``/32``), no gateway,
no routes (Calico 3.31's shape; 3.32 adds a route per address for KubeVirt).
The ``calico`` plugin narrows the addresses to /32 (/128) in the pod. When
one family is assigned and the other is not, the assigned one is released
and ADD fails, as Calico does.

DEL releases by the handle, then by the workload ID (the container ID, or
``<namespace>.<pod>`` for a pod: what Calico 2.x used), each already released
being success. GC (CNI 1.1) releases the handles of this network on this node
whose container is not among ``cni.dev/valid-attachments``. CHECK verifies the
handle still holds addresses; STATUS that the datastore answers and has an
enabled pool.

ADD, DEL and GC hold a host-wide ``flock`` (Calico's ``ipam_lock_file``) so
one node's allocations are single-flight on its affine block. Calico's
default is ``/var/run/calico/ipam.lock``; several pycni "nodes" share one
machine in tests, so the default here is per node:
``/var/run/calico/ipam-<nodename>.lock``.

This module also holds what the ``calico`` plugin shares with it (it must not
import pyroute2, so the plugin imports from here): the NetConf's datastore
and node-name keys, the workload identifiers and WorkloadEndpoint names, the
handle, the datastore session and the per-call logger.

The datastore (Calico's keys, plus pycni's embedded store):

* ``datastore_type``: ``etcdv3`` with ``etcd_endpoints`` (comma-separated
  URLs; or the deprecated ``etcd_authority`` with ``etcd_scheme``), or
  ``pycni`` for the embedded sqlite store at ``pycni_store_path``
  (else ``$PYCNI_CALICO_STORE``, else ``/var/lib/pycni/calico.db``, as
  ``pycni calicoctl``); ``kubernetes`` is refused. Unset, the environment's
  ``DATASTORE_TYPE`` / ``ETCD_ENDPOINTS`` decide (Calico reads them too), and
  with neither it is the embedded store, as for ``pycni calicoctl``.
* etcd TLS keys and ``etcd_discovery_srv`` are refused with a clear message.

Node name (``DetermineNodename``): ``nodename``, else the file
``nodename_file`` (default ``/var/lib/calico/nodename``), else the deprecated
``hostname``, else the OS host name, lower-cased.

``log_level`` (debug, info, warning, error; default info) filters this
call's log records, and ``log_file_path`` appends them to a file, without
touching global logging state (the daemon runs many calls at once).
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import logging
import os
import re
import socket
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pycni.datastore import Datastore, DatastoreError, Unavailable
from pycni.fabric.calico import paths
from pycni.fabric.calico.config import DEFAULT_STORE_PATH, STORE_ENV, StoreConfig, open_store
from pycni.fabric.calico.errors import CalicoError, ErroredField, ValidationError
from pycni.fabric.calico.names import WorkloadEndpointIdentifiers
from pycni.skel import CmdArgs, Plugin
from pycni.spec import CNIError, ErrorCode, Fields, IPConfig, Result, load_args

if TYPE_CHECKING:
    from pycni.fabric.calico.ipam import Network
    from pycni.fabric.calico.ipam_store import IPAM, Assignments
    from pycni.fabric.calico.resources import ResourceClient

log = logging.getLogger(__name__)
plugin = Plugin("calico-ipam")

LOCK_DIR = "/var/run/calico"
K8S_ARGS = ("IP", "K8S_POD_NAME", "K8S_POD_NAMESPACE", "K8S_POD_INFRA_CONTAINER_ID", "K8S_POD_UID")
TEST_ARGS = ("CNI_TEST_NAMESPACE",)
_NETWORK_NAME = re.compile(r"^[a-zA-Z0-9_.\-]+$")
_TLS_KEYS = ("etcd_key_file", "etcd_cert_file", "etcd_ca_cert_file")
_LEVELS = {
    "trace": logging.DEBUG,
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "fatal": logging.CRITICAL,
    "panic": logging.CRITICAL,
}


def config_error(message: str) -> CNIError:
    return CNIError(ErrorCode.INVALID_NETWORK_CONFIG, message)


# -- the NetConf keys both Calico plugins read ------------------------------------------


def network_name(args: CmdArgs) -> str:
    """The network name, checked as Calico checks it (Felix builds names from it)."""
    name = args.name
    if not _NETWORK_NAME.match(name):
        raise config_error(
            f"invalid characters detected in the given network name {name!r}. "
            "Only letters a-z, numbers 0-9, and symbols _.- are supported"
        )
    return name


def store_config(conf: Fields, env: Mapping[str, str]) -> StoreConfig:
    """Which datastore the NetConf names (see the module docstring); code 7 for what pycni cannot use."""
    for key in _TLS_KEYS:
        if conf.string(key):
            raise config_error(f"{key}: etcd TLS is not supported by pycni yet; use an http:// etcd endpoint")
    if conf.string("etcd_discovery_srv"):
        raise config_error("etcd_discovery_srv is not supported by pycni: list the endpoints in etcd_endpoints")
    kind = conf.string("datastore_type") or env.get("DATASTORE_TYPE", "") or env.get("CALICO_DATASTORE_TYPE", "")
    raw = conf.string("etcd_endpoints") or env.get("ETCD_ENDPOINTS", "") or env.get("CALICO_ETCD_ENDPOINTS", "")
    authority = conf.string("etcd_authority")
    if not raw and authority:
        raw = f"{conf.string('etcd_scheme') or 'http'}://{authority}"
    endpoints = tuple(e.strip() for e in raw.split(",") if e.strip())
    if not kind:
        kind = "etcdv3" if endpoints else "pycni"
    if kind == "etcdv3":
        if not endpoints:
            raise config_error('datastore_type "etcdv3" needs etcd_endpoints (e.g. "http://127.0.0.1:2379")')
        bad = [e for e in endpoints if not e.startswith("http://")]
        if bad:
            raise config_error(f"etcd_endpoints: {bad[0]!r} is not an http:// URL (pycni speaks plain HTTP to etcd)")
        return StoreConfig("etcdv3", endpoints, source="the network configuration")
    if kind in ("pycni", "sqlite", "embedded"):
        path = conf.string("pycni_store_path") or env.get(STORE_ENV, "") or DEFAULT_STORE_PATH
        if not os.path.isabs(path):
            raise config_error(f"pycni_store_path: {path!r} must be an absolute path")
        return StoreConfig("pycni", path=path, source="the network configuration")
    if kind == "kubernetes":
        raise config_error(
            'datastore_type "kubernetes" is not supported by pycni: use "etcdv3" with etcd_endpoints, '
            'or "pycni" for the embedded store'
        )
    raise config_error(f'unknown datastore_type {kind!r}: use "etcdv3" (with etcd_endpoints) or "pycni"')


def nodename_file(conf: Fields) -> str:
    return conf.string("nodename_file") or paths.NODENAME_FILE


def determine_nodename(conf: Fields) -> str:
    """``DetermineNodename``: nodename, else the nodename file, else hostname, else the OS host name."""
    if conf.string("nodename"):
        return conf.string("nodename")
    path = nodename_file(conf)
    try:
        with open(path, encoding="utf-8") as handle:
            from_file = handle.read().strip()
    except FileNotFoundError:
        from_file = ""
    except OSError as exc:
        log.warning("cannot read the node name from %s: %s", path, exc.strerror)
        from_file = ""
    if from_file:
        return from_file
    if conf.string("hostname"):
        log.warning("Configuration option 'hostname' is deprecated, use 'nodename' instead")
        return conf.string("hostname")
    return socket.gethostname().lower()


def default_lock_path(nodename: str) -> str:
    """One lock per node name (several test nodes share a machine; each node's allocations are serialised)."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", nodename) or "node"
    return os.path.join(LOCK_DIR, f"ipam-{safe}.lock")


@dataclass(frozen=True)
class IpamSettings:
    """The ``ipam`` section calico-ipam reads."""

    num4: int
    num6: int
    ipv4_pools: tuple[str, ...]
    ipv6_pools: tuple[str, ...]


def _assign(ipam: Fields, key: str, default: str) -> bool:
    raw = ipam.raw(key)
    if raw is None:
        return default == "true"
    if raw not in ("true", "false"):
        raise config_error(f'ipam.{key}: expected the string "true" or "false", got {raw!r}')
    return bool(raw == "true")


def ipam_settings(conf: Fields) -> IpamSettings:
    ipam = conf.obj("ipam")
    settings = IpamSettings(
        num4=int(_assign(ipam, "assign_ipv4", "true")),
        num6=int(_assign(ipam, "assign_ipv6", "false")),
        ipv4_pools=tuple(ipam.strings("ipv4_pools")),
        ipv6_pools=tuple(ipam.strings("ipv6_pools")),
    )
    if not settings.num4 and not settings.num6:
        raise config_error('ipam: assign_ipv4 and assign_ipv6 are both "false": nothing to assign')
    return settings


# -- identifiers, names, handles --------------------------------------------------------


@dataclass
class Identifiers:
    """``WEPIdentifiers``: who the workload is (orchestrator ``k8s`` for a pod, else ``cni``)."""

    orchestrator: str
    node: str
    container_id: str
    endpoint: str
    namespace: str
    pod: str = ""
    workload: str = ""

    @property
    def k8s(self) -> bool:
        return self.orchestrator == "k8s"

    @property
    def workload_id(self) -> str:
        """The handle Calico 2.x used: ``<namespace>.<pod>`` for a pod, else the container ID."""
        return f"{self.namespace}.{self.pod}" if self.k8s else self.container_id

    def names(self) -> WorkloadEndpointIdentifiers:
        return WorkloadEndpointIdentifiers(
            node=self.node,
            orchestrator=self.orchestrator,
            endpoint=self.endpoint,
            workload=self.workload,
            pod=self.pod,
            container_id=self.container_id,
        )

    def wep_name(self, prefix: bool = False) -> str:
        """``CalculateWorkloadEndpointName`` (:mod:`pycni.fabric.calico.names`); a bad identifier is code 7.

        With ``prefix``, stop at the first empty segment and end with ``-``
        (the name prefix every endpoint of this workload starts with).
        """
        try:
            return self.names().name(prefix)
        except ValidationError as exc:
            problem = exc.fields[0]
            if problem.name == "node" and not self.node:
                raise config_error("WorkloadEndpoint name: field node should be assigned (no node name)") from None
            raise config_error(f"error constructing WorkloadEndpoint name: {_naming(problem)}") from None

    def name_matches(self, name: str) -> bool:
        """``NameMatches``: the name's segments equal every identifier given (an empty one matches anything)."""
        return self.names().name_matches(name)


def _naming(problem: ErroredField) -> str:
    if not problem.value:
        return f"field {problem.name} should be assigned"
    return str(problem)


def identifiers(args: CmdArgs, nodename: str, ignore_unknown: bool = False) -> Identifiers:
    """``GetIdentifiers``: a pod when CNI_ARGS carries K8S_POD_NAMESPACE and K8S_POD_NAME.

    The calico plugin ignores CNI_ARGS keys it does not know (Calico sets
    ``IgnoreUnknown=1`` for itself); calico-ipam, as Calico's, refuses them
    unless the caller set it.
    """
    raw = f"IgnoreUnknown=1;{args.args}" if ignore_unknown and args.args else args.args
    known = load_args(raw, K8S_ARGS + TEST_ARGS)
    namespace, pod = known.get("K8S_POD_NAMESPACE", ""), known.get("K8S_POD_NAME", "")
    if namespace and pod:
        return Identifiers("k8s", nodename, args.container_id, args.ifname, namespace, pod)
    return Identifiers("cni", nodename, args.container_id, args.ifname, known.get("CNI_TEST_NAMESPACE") or "default")


def handle_id(network: str, container_id: str) -> str:
    """``GetHandleID``: ``<network name>.<container ID>``."""
    return f"{network}.{container_id}"


def go_timestamp(now_ns: int | None = None) -> str:
    """``time.Now().UTC().String()``: ``2024-01-01 00:00:00.123456789 +0000 UTC`` (fraction trimmed)."""
    now_ns = time.time_ns() if now_ns is None else now_ns
    seconds, nanos = divmod(now_ns, 1_000_000_000)
    text = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(seconds))
    fraction = f"{nanos:09d}".rstrip("0")
    return f"{text}{'.' + fraction if fraction else ''} +0000 UTC"


# -- the datastore session, the lock, the call's logger ------------------------------------


@dataclass
class Session:
    """One call's datastore client: the store, the resource client and IPAM on it."""

    store: Datastore
    resources: ResourceClient
    ipam: IPAM
    config: StoreConfig


@contextlib.contextmanager
def session(config: StoreConfig, timeout: float = 5.0) -> Iterator[Session]:
    """Open the datastore for one call and close it after (nothing is kept between daemon calls)."""
    from pycni.fabric.calico.ipam_store import IPAM
    from pycni.fabric.calico.resources import ResourceClient

    try:
        store = open_store(config, timeout=timeout)
    except CNIError:
        raise
    except OSError as exc:
        raise Unavailable(f"cannot open {config.describe()}: {exc.strerror or exc}") from None
    try:
        resources = ResourceClient(store)
        yield Session(store, resources, IPAM(store, resources), config)
    finally:
        store.close()


def datastore_error(what: str, error: CNIError, config: StoreConfig) -> CNIError:
    """``error`` (keeping its code: 11 when the store is away) with what was being done and where."""
    where = config.describe()
    msg = error.msg if where in error.msg else f"{error.msg} ({where})"
    return CNIError(error.code, f"{what}: {msg}", error.details)


@contextlib.contextmanager
def ipam_lock(path: str) -> Iterator[None]:
    """Calico's best-effort host-wide IPAM lock: ``flock`` the file (made with its directory), or go on without.

    A lock that cannot be taken only costs contention on the datastore (every
    IPAM write is a compare-and-swap), so, as Calico, failure is logged, not fatal.
    """
    fd = -1
    try:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX)
    except OSError as exc:
        log.warning("Failed to grab IPAM lock %s, may contend for datastore updates: %s", path, exc.strerror)
        if fd >= 0:
            os.close(fd)
            fd = -1
    try:
        yield
    finally:
        if fd >= 0:
            os.close(fd)  # closing drops the flock


class _Formatter(logging.Formatter):
    def __init__(self, component: str) -> None:
        super().__init__(f"%(asctime)s [%(levelname)s][%(process)d] {component}: %(message)s")


@contextlib.contextmanager
def call_logger(conf: Fields, component: str) -> Iterator[logging.Logger]:
    """A logger for this call only: ``log_level`` filters it, ``log_file_path`` (if given) receives it too.

    It is not registered with :mod:`logging` (so nothing outlives the call)
    and hands its records on to this module's logger, whose handlers the
    process (the daemon, the CLI) configured.
    """
    raw = conf.string("log_level") or "info"
    level = _LEVELS.get(raw.lower())
    if level is None:
        raise config_error(f"log_level: {raw!r} is not one of {', '.join(sorted(set(_LEVELS)))}")
    logger = logging.Logger(f"{log.name}.{component}", level)
    logger.parent = log
    handler: logging.Handler | None = None
    path = conf.string("log_file_path")
    if path:
        try:
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
            handler = logging.FileHandler(path, encoding="utf-8")
        except OSError as exc:
            raise config_error(f"log_file_path: cannot open {path}: {exc.strerror}") from None
        handler.setFormatter(_Formatter(component))
        logger.addHandler(handler)
    try:
        yield logger
    finally:
        if handler is not None:
            handler.close()


# -- the plugin ----------------------------------------------------------------------------


@dataclass
class IpamCall:
    """What every verb of calico-ipam works out first."""

    network: str
    nodename: str
    ids: Identifiers
    handle: str
    store: StoreConfig
    lock_path: str
    requested_ip: str = ""
    attrs: dict[str, str] = field(default_factory=dict)


def prepare(args: CmdArgs, need_ids: bool = True) -> IpamCall:
    conf = args.fields
    network = network_name(args)
    store = store_config(conf, args.env)
    nodename = determine_nodename(conf)
    lock_path = conf.os_string("ipam_lock_file") or default_lock_path(nodename)
    if not os.path.isabs(lock_path):  # relative to whatever directory the runtime runs in: a stray file
        raise config_error(f"ipam_lock_file {lock_path!r} must be an absolute path")
    if not need_ids:
        return IpamCall(network, nodename, Identifiers("cni", nodename, "", "", "default"), "", store, lock_path)
    ids = identifiers(args, nodename)
    ids.wep_name()  # Calico refuses identifiers that make no endpoint name
    requested = args.cni_args(K8S_ARGS + TEST_ARGS).get("IP", "")
    return IpamCall(network, nodename, ids, handle_id(network, args.container_id), store, lock_path, requested)


def _resolve_pools(ipam: IPAM, given: Sequence[str], version: int) -> list[Network]:
    """``ResolvePools``: each entry a CIDR or the name of an IPPool, of the right family."""
    if not given:
        return []
    by_name = {pool.name: pool.cidr for pool in ipam.pools(enabled_only=False)}
    networks: list[Network] = []
    for entry in given:
        try:
            network = ipaddress.ip_network(entry, strict=False)
        except ValueError:
            if entry not in by_name:
                raise config_error(
                    f"error parsing pool {entry!r}: it is neither a CIDR nor the name of an IPPool"
                ) from None
            network = by_name[entry]
        if network.version != version:
            raise config_error(f"{str(network.network_address)!r} isn't a IPv{version} address")
        networks.append(network)
    return networks


def _owner_attrs(call: IpamCall) -> dict[str, str]:
    from pycni.fabric.calico.ipam import ATTR_NAMESPACE, ATTR_NODE, ATTR_POD, ATTR_TIMESTAMP

    attrs = {ATTR_NODE: call.nodename, ATTR_TIMESTAMP: go_timestamp()}
    if call.ids.pod:
        attrs[ATTR_POD] = call.ids.pod
        attrs[ATTR_NAMESPACE] = call.ids.namespace
    return attrs


def _assign_requested(ipam: IPAM, call: IpamCall) -> Result:
    """``IP=`` in CNI_ARGS: exactly that address, /32 (/128) in the result."""
    try:
        address = ipaddress.ip_address(call.requested_ip)
    except ValueError:
        raise CNIError(
            ErrorCode.INVALID_ENVIRONMENT_VARIABLES, f"CNI_ARGS IP={call.requested_ip!r} is not an IP address"
        ) from None
    ipam.assign_ip(address, call.nodename, call.handle, _owner_attrs(call), intended_use="Workload")
    bits = 32 if address.version == 4 else 128
    return Result(cni_version="1.1.0", ips=[IPConfig(address=ipaddress.ip_interface(f"{address}/{bits}"))])


def _auto_assign(ipam: IPAM, call: IpamCall, settings: IpamSettings, logger: logging.Logger) -> Result:
    from pycni.fabric.calico.ipam_store import AutoAssignArgs

    v4_pools = _resolve_pools(ipam, settings.ipv4_pools, 4)
    v6_pools = _resolve_pools(ipam, settings.ipv6_pools, 6)
    attrs = _owner_attrs(call)
    got: dict[int, Assignments] = {}
    try:
        for version, count, pools in ((4, settings.num4, v4_pools), (6, settings.num6, v6_pools)):
            if not count:
                continue
            request = AutoAssignArgs(
                hostname=call.nodename,
                num4=count if version == 4 else 0,
                num6=count if version == 6 else 0,
                handle_id=call.handle,
                attrs=attrs,
                ipv4_pools=pools if version == 4 else (),
                ipv6_pools=pools if version == 6 else (),
            )
            v4, v6 = ipam.auto_assign(request)
            assignments = v4 if version == 4 else v6
            assert assignments is not None
            got[version] = assignments
            shortfall = assignments.shortfall()
            if shortfall is not None:
                raise CNIError(ErrorCode.INTERNAL, f"failed to request IPv{version} addresses: {shortfall}")
    except BaseException:
        # One family assigned and the other not: give the assigned one back (Calico does the same).
        assigned = [ip.ip for a in got.values() for ip in a.ips]
        if assigned:
            logger.info("releasing %s after the failed assignment", ", ".join(map(str, assigned)))
            try:
                ipam.release_ips(assigned)
            except CNIError as error:
                logger.error("failed to release %s: %s", ", ".join(map(str, assigned)), error)
        raise
    ips = [IPConfig(address=ip) for version in (4, 6) if version in got for ip in got[version].ips[:1]]
    logger.info("Calico CNI IPAM assigned addresses %s", ", ".join(str(ip.address) for ip in ips))
    return Result(cni_version="1.1.0", ips=ips)


@plugin.add
def add(args: CmdArgs) -> Result:
    conf = args.fields
    with call_logger(conf, "ipam") as logger:
        call = prepare(args)
        settings = ipam_settings(conf)
        logger.info(
            "Calico CNI IPAM request count IPv4=%d IPv6=%d handle=%s", settings.num4, settings.num6, call.handle
        )
        with session(call.store) as client, ipam_lock(call.lock_path):
            try:
                if call.requested_ip:
                    return _assign_requested(client.ipam, call)
                return _auto_assign(client.ipam, call, settings, logger)
            except DatastoreError as error:
                raise datastore_error("failed to assign an address", error, call.store) from None


def release(ipam: IPAM, call: IpamCall, logger: logging.Logger) -> None:
    """Release by the handle, then by the workload ID; either already released is success."""
    from pycni.fabric.calico.ipam_store import NotAssigned

    for handle in dict.fromkeys((call.handle, call.ids.workload_id)):
        try:
            count = ipam.release_by_handle(handle)
            logger.info("Released %d address(es) of handle %s", count, handle)
        except NotAssigned:
            logger.debug("Asked to release handle %s but it doesn't exist. Ignoring", handle)


@plugin.delete
def delete(args: CmdArgs) -> None:
    with call_logger(args.fields, "ipam") as logger:
        call = prepare(args)
        with session(call.store) as client, ipam_lock(call.lock_path):
            try:
                release(client.ipam, call, logger)
            except DatastoreError as error:
                raise datastore_error("failed to release the addresses", error, call.store) from None


@plugin.check
def check(args: CmdArgs) -> None:
    from pycni.fabric.calico.ipam_store import NotAssigned

    call = prepare(args)
    with session(call.store) as client:
        try:
            addresses = client.ipam.ips_by_handle(call.handle)
        except NotAssigned:
            addresses = []
        except DatastoreError as error:
            raise datastore_error("failed to read the allocation", error, call.store) from None
    if not addresses:
        raise CNIError(ErrorCode.INTERNAL, f"calico-ipam: handle {call.handle} holds no address")
    prev = args.prev_result()
    if prev is not None:
        for ip in prev.ips:
            if ip.address.ip not in addresses:
                raise CNIError(
                    ErrorCode.INTERNAL, f"calico-ipam: {ip.address.ip} is not allocated to handle {call.handle}"
                )


def stale_handles(ipam: IPAM, network: str, nodename: str, valid: set[str]) -> list[str]:
    """Handles ``<network>.<containerID>`` of addresses this node holds whose container is not in ``valid``."""
    prefix = f"{network}."
    found: dict[str, None] = {}
    for block in ipam.list_blocks():
        for _, attribute in block.in_use():
            handle = attribute.handle
            if attribute.released_at is not None or not handle.startswith(prefix):
                continue
            if (attribute.secondary or {}).get("node") != nodename:
                continue
            if handle[len(prefix) :] not in valid:
                found[handle] = None
    return list(found)


@plugin.gc
def gc(args: CmdArgs) -> None:
    valid = args.valid_attachments()
    if valid is None:
        return  # nothing is known to be stale
    with call_logger(args.fields, "ipam") as logger:
        call = prepare(args, need_ids=False)
        with session(call.store) as client, ipam_lock(call.lock_path):
            try:
                for handle in stale_handles(client.ipam, call.network, call.nodename, {cid for cid, _ in valid}):
                    count = client.ipam.release_by_handle(handle)
                    logger.info("GC released %d address(es) of handle %s", count, handle)
            except DatastoreError as error:
                raise datastore_error("garbage collection failed", error, call.store) from None
            except CalicoError as error:
                raise CNIError(error.code, f"garbage collection failed: {error.msg}") from None


@plugin.status
def status(args: CmdArgs) -> None:
    call = prepare(args, need_ids=False)
    settings = ipam_settings(args.fields)
    try:
        with session(call.store) as client:
            pools = client.ipam.pools()
    except DatastoreError as error:
        raise CNIError(ErrorCode.PLUGIN_NOT_AVAILABLE, f"calico-ipam: datastore unavailable: {error.msg}") from None
    for version, wanted in ((4, settings.num4), (6, settings.num6)):
        if wanted and not any(p.version == version for p in pools):
            raise CNIError(ErrorCode.PLUGIN_NOT_AVAILABLE, f"calico-ipam: no enabled IPv{version} IPPool")


if __name__ == "__main__":
    plugin.main()
