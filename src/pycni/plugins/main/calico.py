"""calico: Calico's CNI plugin on pycni (``cni-plugin/pkg/plugin``, ``pkg/k8s``, ``pkg/dataplane/linux``).

ADD, as Calico 3.31 does it in etcd mode:

1. Read the NetConf (Calico's keys; see :mod:`pycni.plugins.ipam.calico_ipam`
   for the datastore, node-name and lock keys). The node-name file must exist
   unless ``nodename_file_optional``: calico-node writes it, and until it has,
   Calico refuses (here code 11, try again). MTU: ``mtu``, else the node
   agent's file (``pycni_mtu_file``, default ``/var/lib/calico/mtu``).
2. The datastore must be initialised (``ClusterInformation`` ``default`` with
   ``datastoreReady``), as Calico checks it.
3. Identify the workload: a pod (``k8s``) when CNI_ARGS has
   ``K8S_POD_NAMESPACE`` and ``K8S_POD_NAME``, else ``cni`` in namespace
   ``default``. Its WorkloadEndpoint is ``<node>-k8s-<pod>-<ifname>`` or
   ``<node>-cni-<containerID>-<ifname>`` (each ``-`` doubled). A ``cni``
   container that already has one (joining a second network) only gets the
   network's profile appended, as in Calico.
4. IPAM is delegated to ``ipam.type`` (``calico-ipam``, or ``host-local`` as
   Canal uses it) through the runtime's delegate seam, with ``IgnoreUnknown=1``
   prepended to CNI_ARGS as Calico does.
5. Wire the pod: a veth whose host end is ``cali`` + the first 11 hex digits of
   ``sha1("<namespace>.<pod>")`` (prefix from ``FELIX_INTERFACEPREFIX``) or
   ``cali`` + the first 11 characters of the container ID, host MAC
   ``ee:ee:ee:ee:ee:ee``; on the host end ``proxy_arp=1``, ``proxy_delay=0``,
   ``forwarding=1``, ``route_localnet=1`` (IPv6: ``accept_dad=0``,
   ``proxy_ndp=1``, ``forwarding=1``), ``accept_ra=0``; in the pod the
   addresses as /32 (/128), ``169.254.1.1 dev eth0 scope link`` and ``default
   via 169.254.1.1`` (IPv6: via the host end's link-local address, DAD off),
   ``ip_forward`` per ``container_settings.allow_ip_forwarding``; on the host a
   ``<ip> dev cali… scope link`` route per address (one to another interface
   is an error). A pod with ``host-local`` may name its own routes
   (``ipam.routes``; ``include_default_routes`` keeps the default too).
6. Write the WorkloadEndpoint (labels, profiles, ipNetworks /32,
   interfaceName, mac, containerID; the resource client adds the
   ``projectcalico.org/namespace`` and ``/orchestrator`` labels and checks the
   name, as clientv3 does) and, with no ``policy.type``, the network's Profile if absent
   (egress allow; ingress from ``has(<network>)``, or all for pods).
7. Print Calico's result: interfaces ``[host, container]``, ``ips[].interface``
   1, no gateway.

Identity: Calico reads a pod from the Kubernetes API; pycni has none, so a pod
(``K8S_POD_NAMESPACE``/``K8S_POD_NAME``) is looked up among the Pods stored
with ``pycni calicoctl apply`` (``/pycni/k8s/registry/pods/<ns>/<name>``). A
stored Pod gives the endpoint what Calico's converter gives it
(``podToDefaultWorkloadEndpoint``): the Pod's labels and
``projectcalico.org/serviceaccount``, ``serviceAccountName``, and the named
(or host) container ports as ``ports``; with ``policy.type k8s`` its profiles
are ``kns.<namespace>`` and ``ksa.<namespace>.<account>``. Without a stored
Pod the labels come from the CNI convention ``args.cni.labels``
(``[{"key","value"}]``) and, for ``cni`` workloads, Calico's Mesos labels
(``args["org.apache.mesos"].network_info.labels.labels``), and a pod's
profile is ``kns.<namespace>`` alone (its service account is not known).

A failed ADD undoes everything it made (address, veth, endpoint). DEL
follows Calico's order (for a pod: the endpoint only if it is this container's,
the container's interface, then IPAM; otherwise IPAM, endpoint, interface),
treats whatever is gone as done, and works when the netns is gone. CHECK
(Calico's only prints "OK") verifies the veth, addresses, routes, host
route, sysctls, the endpoint and the IPAM allocation. GC passes on to IPAM
and deletes this node's endpoints whose container is not valid and whose
host interface no longer exists.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import json
import logging
import os
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pycni.datastore import DatastoreError, NotFound
from pycni.fabric.calico import paths
from pycni.fabric.calico.errors import ResourceAlreadyExists, ResourceNotFound, UpdateConflict
from pycni.fabric.calico.resources import LABEL_NAMESPACE
from pycni.net import addr, link, netns, routed_veth, sysctl
from pycni.net.link import LinkInfo
from pycni.net.veth import InterfaceExists
from pycni.plugins.common import Rollback, delete_container_link, prev_result_required
from pycni.plugins.ipam.calico_ipam import (
    Identifiers,
    Session,
    call_logger,
    config_error,
    datastore_error,
    determine_nodename,
    identifiers,
    network_name,
    nodename_file,
    session,
    store_config,
)
from pycni.runtime import delegate
from pycni.skel import CmdArgs, Plugin
from pycni.spec import CNIError, ErrorCode, Fields, Interface, IPConfig, Result

if TYPE_CHECKING:
    from pyroute2 import IPRoute

    from pycni.fabric.calico.config import StoreConfig
    from pycni.fabric.calico.resource import Resource

log = logging.getLogger(__name__)
plugin = Plugin("calico")

WORKING_VERSION = "1.1.0"
MAX_MTU = 65535
DEFAULT_ROUTES = (ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0"))
MESOS_KEY = "org.apache.mesos"
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


# -- configuration -----------------------------------------------------------------------


@dataclass
class Settings:
    """The NetConf as this plugin uses it, validated before anything is made."""

    network: str
    nodename: str
    store: StoreConfig
    ipam_type: str
    mtu: int
    num_queues: int
    policy_type: str
    allow_ip_forwarding: bool
    include_default_routes: bool
    no_ipam_addresses: bool
    interface_prefix: str


def _require_nodename_file(conf: Fields) -> None:
    """Calico waits for calico-node: its node-name file must exist unless ``nodename_file_optional``."""
    if conf.boolean("nodename_file_optional"):
        return
    path = nodename_file(conf)
    if not os.path.exists(path):
        raise CNIError(
            ErrorCode.TRY_AGAIN_LATER,
            f"stat {path}: no such file or directory: check that the node agent (pycni calico-node) is running "
            "and writes it, or set nodename and nodename_file_optional",
        )


def _mtu(conf: Fields) -> int:
    mtu = conf.integer("mtu", minimum=0, maximum=MAX_MTU)
    if mtu:
        return mtu
    path = conf.string("pycni_mtu_file") or paths.MTU_FILE
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read().strip()
    except FileNotFoundError:
        if conf.boolean("require_mtu_file"):
            raise CNIError(
                ErrorCode.TRY_AGAIN_LATER, f"failed to read MTU file: {path} does not exist (require_mtu_file)"
            ) from None
        return 0
    except OSError as exc:
        raise config_error(f"failed to read MTU file {path}: {exc.strerror}") from None
    if not text.isdigit() or not 0 < int(text) <= MAX_MTU:
        raise config_error(f"failed to read MTU file {path}: {text!r} is not an MTU")
    return int(text)


def load_settings(args: CmdArgs, adding: bool) -> Settings:
    conf = args.fields
    network = network_name(args)
    store = store_config(conf, args.env)
    _require_nodename_file(conf)
    device = conf.string("device_type")
    if device not in ("", "veth"):
        if device == "netkit":
            raise config_error('device_type "netkit" is not supported by pycni (use "veth")')
        raise config_error(f'unknown device_type {device!r} in CNI config (supported: "veth", "netkit")')
    if conf.strings("readiness_gates"):
        raise config_error("readiness_gates is not supported by pycni (no readiness endpoints are polled)")
    if conf.integer("policy_setup_timeout_seconds") < 0:
        raise config_error(f"invalid pod startup delay of {conf.integer('policy_setup_timeout_seconds')}")
    ipam_type = conf.obj("ipam").string("type")
    if not ipam_type:
        raise config_error("calico requires an IPAM configuration: set ipam.type (calico-ipam or host-local)")
    prefix = (args.env.get("FELIX_INTERFACEPREFIX") or "cali").split(",")[0]
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,4}", prefix):
        raise config_error(f"FELIX_INTERFACEPREFIX {prefix!r}: a host veth name is it plus 11 characters, 15 at most")
    return Settings(
        network=network,
        nodename=determine_nodename(conf),
        store=store,
        ipam_type=ipam_type,
        mtu=_mtu(conf) if adding else 0,
        num_queues=max(1, conf.integer("num_queues", minimum=0, maximum=1024)),
        policy_type=conf.obj("policy").string("type"),
        allow_ip_forwarding=conf.obj("container_settings").boolean("allow_ip_forwarding"),
        include_default_routes=conf.boolean("include_default_routes"),
        no_ipam_addresses=conf.obj("feature_control").boolean("ip_addrs_no_ipam"),
        interface_prefix=prefix,
    )


def _label_list(entries: object, where: str) -> list[tuple[str, str]]:
    if entries is None:
        return []
    if not isinstance(entries, list):
        raise config_error(f"{where}: expected a list of {{key, value}} objects")
    out = []
    for index, entry in enumerate(entries):
        item = Fields(entry, f"{where}[{index}]")
        out.append((item.string("key"), item.string("value")))
    return out


def sanitize_mesos_label(text: str) -> str:
    """``SanitizeMesosLabel``: Mesos allows any text; make it a valid Calico label."""
    text = text.replace("/", ".")
    text = re.sub(r"[^-_.a-zA-Z0-9]+", "-", text)
    text = re.sub(r"[.-]*[.][.-]*", ".", text)
    match = re.fullmatch(r"[.-]*(.*?)[.-]*", text)
    return match.group(1) if match else text


def workload_labels(conf: Fields, ids: Identifiers) -> dict[str, str]:
    """Labels for the endpoint from the config's args (see the module docstring); may move ``ids`` namespace."""
    labels: dict[str, str] = {}
    if not ids.k8s:
        mesos = conf.obj("args").obj(MESOS_KEY).obj("network_info").obj("labels")
        for key, value in _label_list(mesos.raw("labels"), f"args.{MESOS_KEY}.network_info.labels.labels"):
            if key == LABEL_NAMESPACE:
                ids.namespace = sanitize_mesos_label(value)
            else:
                labels[sanitize_mesos_label(key)] = sanitize_mesos_label(value)
    for key, value in _label_list(conf.obj("args").obj("cni").raw("labels"), "args.cni.labels"):
        labels[key] = value
    return labels


@dataclass
class PodIdentity:
    """What the stored Pod says about a workload: labels, service account, named ports (WorkloadEndpoint JSON)."""

    labels: dict[str, str]
    service_account: str
    ports: list[dict[str, Any]]


def pod_identity(client: Session, ids: Identifiers) -> PodIdentity | None:
    """The stored Pod of a ``k8s`` workload as Calico's converter reads it, or None if no Pod is stored."""
    from pycni.fabric.calico.kinds import KUBERNETES_KINDS
    from pycni.fabric.calico.resources import LABEL_ORCHESTRATOR, KubernetesObjectClient
    from pycni.policy import endpoints, k8s

    try:
        stored = KubernetesObjectClient(client.store).find(KUBERNETES_KINDS[("v1", "Pod")], ids.pod, ids.namespace)
    except DatastoreError as error:
        raise datastore_error(f"failed to read Pod {ids.namespace}/{ids.pod}", error, client.config) from None
    if stored is None:
        return None
    pod = k8s.parse_pod(stored.document)  # checked when stored; a PolicyError is code 7, as bad input
    workload = endpoints.workload_from_pod(pod)
    owned = (LABEL_NAMESPACE, LABEL_ORCHESTRATOR)  # the resource client sets these two, as clientv3 does
    ports = [
        {"name": p.name, "protocol": p.protocol, "port": p.container_port, "hostPort": p.host_port, "hostIP": ""}
        for p in pod.ports
        if p.container_port and (p.name or p.host_port)
    ]
    labels = {k: v for k, v in workload.labels.items() if k not in owned}
    return PodIdentity(labels, pod.service_account, ports)


def host_veth_name(ids: Identifiers, prefix: str) -> str:
    """``VethNameForWorkload`` for a pod, ``cali`` + the container ID's first 11 characters otherwise."""
    if ids.k8s:
        digest = hashlib.sha1(f"{ids.namespace}.{ids.pod}".encode(), usedforsecurity=False).hexdigest()
        return prefix + digest[:11]
    return "cali" + ids.container_id[:11]


def pod_routes(args: CmdArgs, settings: Settings, ids: Identifiers) -> list[Network]:
    """Routes in the pod: Calico's defaults, or a pod's host-local ``ipam.routes`` (gateway ignored)."""
    routes: list[Network] = []
    if ids.k8s and settings.ipam_type == "host-local":
        ipam = args.fields.obj("ipam")
        if ipam.string("subnet").lower() == "usepodcidr":
            raise config_error(
                'ipam.subnet "usePodCidr" needs the Kubernetes node\'s podCIDR, which pycni cannot read: '
                "give the node's subnet instead"
            )
        for index, entry in enumerate(ipam.objects("routes")):
            dst = entry.string("dst")
            if not dst:
                continue
            try:
                routes.append(ipaddress.ip_network(dst, strict=False))
            except ValueError:
                raise config_error(f"ipam.routes[{index}].dst: {dst!r} is not a CIDR") from None
    if not routes:
        return list(DEFAULT_ROUTES)
    if settings.include_default_routes:
        return [*DEFAULT_ROUTES, *routes]
    return routes


# -- delegation -----------------------------------------------------------------------------


def _ipam_env(args: CmdArgs) -> dict[str, str]:
    """The caller's environment with ``IgnoreUnknown=1`` first in CNI_ARGS (``AddIgnoreUnknownArgs``)."""
    cni_args = args.env.get("CNI_ARGS", "")
    return {**args.env, "CNI_ARGS": "IgnoreUnknown=1" + (f";{cni_args}" if cni_args else "")}


def _ipam_stdin_for_delete(args: CmdArgs, ipam_type: str) -> bytes:
    """host-local cannot parse ``usePodCidr``; on DEL any subnet does (it releases by container ID)."""
    if ipam_type != "host-local" or b"usepodcidr" not in args.stdin.lower():
        return args.stdin
    data: dict[str, Any] = json.loads(args.stdin)
    ipam = data.get("ipam") or {}

    def swap(section: dict[str, Any]) -> None:
        if str(section.get("subnet", "")).lower() == "usepodcidr":
            section["subnet"] = "0.0.0.0/0"

    swap(ipam)
    for range_set in ipam.get("ranges") or []:
        for entry in range_set or []:
            if isinstance(entry, dict):
                swap(entry)
    return json.dumps(data).encode()


def ipam_add(args: CmdArgs, ipam_type: str) -> Result:
    result = delegate.delegate_add(ipam_type, args.stdin, _ipam_env(args), args.path, args.cni_version)
    return result.as_version(WORKING_VERSION)


def ipam_delete(args: CmdArgs, ipam_type: str) -> None:
    stdin = _ipam_stdin_for_delete(args, ipam_type)
    delegate.delegate_del(ipam_type, stdin, _ipam_env(args), args.path)


# -- the datastore --------------------------------------------------------------------------


def check_cluster_ready(client: Session) -> None:
    """Calico refuses to work on a datastore nobody initialised (or during an upgrade)."""
    try:
        info = client.resources.find("ClusterInformation", "default")
    except DatastoreError as error:
        raise datastore_error("error getting ClusterInformation", error, client.config) from None
    if info is None:
        raise CNIError(
            ErrorCode.TRY_AGAIN_LATER,
            f"error getting ClusterInformation: resource does not exist: ClusterInformation(default) in "
            f"{client.config.describe()}: start the node agent (pycni calico-node) or apply an IPPool with "
            "pycni calicoctl, which initialise the datastore",
        )
    if info.spec.get("datastoreReady") is False:
        raise CNIError(ErrorCode.TRY_AGAIN_LATER, "Calico is currently not ready to process requests")


def find_endpoint(client: Session, ids: Identifiers) -> Resource | None:
    """The existing endpoint of this workload, whatever its interface name (Calico's prefix list + NameMatches)."""
    from pycni.fabric.calico.resources import resource_key

    search = Identifiers(ids.orchestrator, ids.node, ids.container_id, "", ids.namespace, ids.pod, ids.workload)
    prefix = search.wep_name(prefix=True)
    kvs, _ = client.store.list(resource_key("WorkloadEndpoint", prefix, ids.namespace))
    for kv in kvs:
        endpoint = client.resources.decode(kv)
        if search.name_matches(endpoint.name):
            return endpoint
    return None


def build_endpoint(
    ids: Identifiers,
    labels: dict[str, str],
    profiles: list[str],
    nets: list[str],
    existing: Resource | None,
    identity: PodIdentity | None = None,
) -> Resource:
    """The WorkloadEndpoint to write (interfaceName and mac are set once the veth exists)."""
    from pycni.fabric.calico.model import decode_resource

    spec: dict[str, Any] = {"orchestrator": ids.orchestrator, "node": ids.node}
    if ids.k8s:
        spec["pod"] = ids.pod
    spec["endpoint"] = ids.endpoint
    if identity is not None:
        spec["serviceAccountName"] = identity.service_account
        if identity.ports:
            spec["ports"] = identity.ports
    spec["ipNetworks"] = nets
    spec["profiles"] = profiles
    metadata: dict[str, Any] = {
        "name": ids.wep_name(),
        "namespace": ids.namespace,
        "labels": dict(labels),  # the resource client adds the namespace and orchestrator labels, as clientv3 does
    }
    if existing is not None:
        for key in ("uid", "creationTimestamp", "resourceVersion"):
            if existing.metadata.get(key):
                metadata[key] = existing.metadata[key]
    return decode_resource(
        {"apiVersion": "projectcalico.org/v3", "kind": "WorkloadEndpoint", "metadata": metadata, "spec": spec},
        "the WorkloadEndpoint",
    )


def write_endpoint(client: Session, endpoint: Resource) -> Resource:
    try:
        if endpoint.resource_version:
            return client.resources.update(endpoint)
        return client.resources.create(endpoint)
    except DatastoreError as error:
        raise datastore_error(f"failed to write {endpoint.identifier}", error, client.config) from None


def delete_endpoint(client: Session, endpoint: Resource) -> None:
    """Delete at the revision read; gone is done (a conflict is retried by the caller)."""
    with contextlib.suppress(ResourceNotFound, NotFound):
        client.resources.delete("WorkloadEndpoint", endpoint.name, endpoint.namespace, endpoint.resource_version)


def ensure_profile(client: Session, network: str, k8s: bool) -> None:
    """The network's Profile, created if absent (never updated), as Calico does with no ``policy.type``."""
    from pycni.fabric.calico.model import new_resource

    if client.resources.find("Profile", network) is not None:
        return
    ingress: dict[str, Any] = {"action": "Allow"}
    if not k8s:
        ingress["source"] = {"selector": f"has({network})"}
    profile = new_resource(
        "Profile",
        network,
        {"ingress": [ingress], "egress": [{"action": "Allow"}], "labelsToApply": {network: ""}},
    )
    with contextlib.suppress(ResourceAlreadyExists):  # another ADD made it meanwhile
        client.resources.create(profile)


def result_from_endpoint(endpoint: Resource) -> Result:
    """``CreateResultFromEndpoint``: the endpoint's ipNetworks as the result's addresses."""
    ips = [IPConfig(address=ipaddress.ip_interface(net)) for net in endpoint.spec.get("ipNetworks") or []]
    return Result(cni_version=WORKING_VERSION, ips=ips)


# -- wiring ------------------------------------------------------------------------------


def host_sysctls(host_name: str, has4: bool, has6: bool, logger: logging.Logger) -> None:
    """``configureSysctls``: the host end answers ARP/NDP for the pod's next hop and forwards."""
    if has4:
        sysctl.write(f"net/ipv4/conf/{host_name}/route_localnet", "1")
        try:
            sysctl.write(f"net/ipv4/neigh/{host_name}/proxy_delay", "0")
        except CNIError as error:
            logger.warning("%s", error)
        sysctl.write(f"net/ipv4/conf/{host_name}/proxy_arp", "1")
        sysctl.write(f"net/ipv4/conf/{host_name}/forwarding", "1")
    if has6:
        sysctl.write(f"net/ipv6/conf/{host_name}/accept_dad", "0")
        sysctl.write(f"net/ipv6/conf/{host_name}/disable_ipv6", "0")
        sysctl.write(f"net/ipv6/conf/{host_name}/proxy_ndp", "1")
        sysctl.write(f"net/ipv6/conf/{host_name}/forwarding", "1")
    try:
        sysctl.write(f"net/ipv6/conf/{host_name}/accept_ra", "0")
    except CNIError as error:
        logger.warning("%s", error)


def container_sysctls(allow_forwarding: bool, has4: bool, has6: bool) -> None:
    """``configureContainerSysctls``: the pod forwards only if allowed (run inside the pod's namespace)."""
    value = "1" if allow_forwarding else "0"
    if has4:
        sysctl.write("net/ipv4/ip_forward", value)
    if has6:
        sysctl.write("net/ipv6/conf/all/forwarding", value)


def _delete_host_link(name: str) -> None:
    with netns.iproute_here() as host:
        link.delete(host, name)


@dataclass
class Wired:
    """What the wiring made that the endpoint records: the host end and the container end's MAC."""

    host: LinkInfo
    container_mac: str


def wire(
    args: CmdArgs,
    settings: Settings,
    ips: list[IPConfig],
    host_name: str,
    routes: list[Network],
    rollback: Rollback,
    logger: logging.Logger,
) -> Wired:
    """``DoNetworking``: the veth, its sysctls, the pod's addresses and routes, the host routes."""
    has4 = any(ip.address.version == 4 for ip in ips)
    has6 = any(ip.address.version == 6 for ip in ips)
    for ip in ips:  # the pod's addresses are /32 (/128) whatever IPAM's prefix (DoWorkloadNetnsSetUp)
        ip.address = routed_veth.host_route(ip.address.ip)
    with (
        netns.handle(args.netns, args.netns_fd) as ns_fd,
        netns.iproute(args.netns, ns_fd) as container,
        netns.iproute_here() as host,
    ):
        host_link, cont_link = routed_veth.create(
            host, container, ns_fd, host_name, args.ifname, settings.mtu, settings.num_queues
        )
        rollback.push(f"veth {host_name}", lambda: _delete_host_link(host_name))
        logger.info("created veth %s (host) and %s (container)", host_name, args.ifname)
        host_link = routed_veth.set_mac(host, host_link)
        if has6:
            with netns.entered(args.netns, ns_fd):
                sysctl.write(f"net/ipv6/conf/{args.ifname}/accept_dad", "0")
        host_sysctls(host_name, has4, has6, logger)
        link.set_attrs(host, host_link, state="up")
        link.set_attrs(container, cont_link, state="up")
        with netns.entered(args.netns, ns_fd):
            _configure_pod(container, cont_link, host, host_link, ips, routes, has4, has6)
            container_sysctls(settings.allow_ip_forwarding, has4, has6)
        for ip in ips:
            routed_veth.add_host_route(host, host_link, ip.address.ip)
        return Wired(host_link, cont_link.mac)


def _configure_pod(
    container: IPRoute,
    cont_link: LinkInfo,
    host: IPRoute,
    host_link: LinkInfo,
    ips: list[IPConfig],
    routes: list[Network],
    has4: bool,
    has6: bool,
) -> None:
    """Inside the pod (the calling thread is in its namespace): next-hop routes, then the addresses."""
    index = cont_link.index
    if has4:
        addr.add_route(container, routed_veth.host_route(routed_veth.NEXT_HOP_V4), oif=index, scope=addr.RT_SCOPE_LINK)
        for route in routes:
            if route.version == 4:
                addr.add_route(container, ipaddress.ip_interface(route), routed_veth.NEXT_HOP_V4, oif=index)
    if has6:
        for name in ("all", "default", "lo"):
            sysctl.write(f"net/ipv6/conf/{name}/disable_ipv6", "0")
        next_hop = routed_veth.wait_link_local(host, host_link)
        for route in routes:
            if route.version == 6:
                addr.add_route(container, ipaddress.ip_interface(route), next_hop, oif=index)
    for ip in ips:
        addr.add_address(container, index, ip.address, cont_link.name)
    if has6:
        addr.settle_ipv6(container, index, cont_link.name)


# -- ADD -----------------------------------------------------------------------------------


@plugin.add
def add(args: CmdArgs) -> Result:
    conf = args.fields
    with call_logger(conf, "calico") as logger:
        settings = load_settings(args, adding=True)
        ids = identifiers(args, settings.nodename, ignore_unknown=True)
        labels = workload_labels(conf, ids)
        build_endpoint(ids, labels, [settings.network], [], None)  # refuse bad labels before anything is made
        with session(settings.store) as client:
            check_cluster_ready(client)
            identity = pod_identity(client, ids) if ids.k8s else None
            if identity is not None:
                labels = identity.labels
                logger.info("Pod %s/%s is stored: its labels and ports name the endpoint", ids.namespace, ids.pod)
                build_endpoint(ids, labels, [settings.network], [], None, identity)
            try:
                existing = find_endpoint(client, ids)
            except DatastoreError as error:
                raise datastore_error("failed to list WorkloadEndpoints", error, client.config) from None
            with Rollback() as rollback:
                if existing is not None and not ids.k8s:
                    result = _join_network(client, settings, existing, args, logger)
                else:
                    result = _add_workload(args, settings, ids, labels, client, existing, rollback, logger, identity)
                if not settings.policy_type:
                    try:
                        ensure_profile(client, settings.network, ids.k8s)
                    except DatastoreError as error:
                        raise datastore_error("failed to create the profile", error, client.config) from None
                for ip in result.ips:
                    ip.gateway = None  # host-local sets one; Calico's pods have none
                rollback.commit(result, args.cni_version)
    return result


def _join_network(
    client: Session, settings: Settings, existing: Resource, args: CmdArgs, logger: logging.Logger
) -> Result:
    """A ``cni`` container already networked by Calico: add this network's profile, nothing else."""
    profiles = list(existing.spec.get("profiles") or [])
    if settings.network not in profiles:
        logger.info("Calico CNI appending profile: %s", settings.network)
        profiles.append(settings.network)
        updated = existing.copy()
        updated.spec["profiles"] = profiles
        existing = write_endpoint(client, updated)
    result = result_from_endpoint(existing)
    result.interfaces = [
        Interface(name=existing.spec.get("interfaceName", "")),
        Interface(name=args.ifname, mac=existing.spec.get("mac", ""), mtu=settings.mtu, sandbox=args.netns),
    ]
    for ip in result.ips:
        ip.interface = 1
    return result


def _add_workload(
    args: CmdArgs,
    settings: Settings,
    ids: Identifiers,
    labels: dict[str, str],
    client: Session,
    existing: Resource | None,
    rollback: Rollback,
    logger: logging.Logger,
    identity: PodIdentity | None = None,
) -> Result:
    if settings.no_ipam_addresses and not ids.k8s:
        raise config_error("requested feature is not supported for this runtime: ip_addrs_no_ipam")
    routes = pod_routes(args, settings, ids)
    host_name = host_veth_name(ids, settings.interface_prefix)
    _refuse_taken_ifname(args)
    result = ipam_add(args, settings.ipam_type)
    rollback.push(f"IPAM ({settings.ipam_type}) address", lambda: ipam_delete(args, settings.ipam_type))
    if not result.ips:
        raise CNIError(ErrorCode.INTERNAL, "IPAM plugin returned no IP addresses in result")
    logger.info("Got result from IPAM plugin: %s", ", ".join(str(ip.address) for ip in result.ips))
    profiles = [f"kns.{ids.namespace}"] if ids.k8s and settings.policy_type == "k8s" else [settings.network]
    if identity is not None and settings.policy_type == "k8s":
        profiles.append(f"ksa.{ids.namespace}.{identity.service_account}")
    nets = [str(routed_veth.host_route(ip.address.ip)) for ip in result.ips]
    endpoint = build_endpoint(ids, labels, profiles, nets, existing, identity)
    wired = wire(args, settings, result.ips, host_name, routes, rollback, logger)
    endpoint.spec["interfaceName"] = wired.host.name
    endpoint.spec["mac"] = wired.container_mac
    endpoint.spec["containerID"] = ids.container_id
    endpoint = _validated(endpoint)
    written = write_endpoint(client, endpoint)
    if existing is None:
        rollback.push(f"endpoint {written.name}", lambda: delete_endpoint(client, written))
    logger.info("Wrote endpoint %s to the datastore", written.name)
    result.interfaces = [
        Interface(name=wired.host.name),
        Interface(name=args.ifname, mac=wired.container_mac, mtu=settings.mtu, sandbox=args.netns),
    ]
    for ip in result.ips:
        ip.interface = 1
    return result


def _refuse_taken_ifname(args: CmdArgs) -> None:
    """A repeated ADD (the container has the interface already) fails before IPAM is asked for anything.

    Its rollback would release the handle, which also holds the first ADD's
    address: the running container would lose it.
    """
    with netns.handle(args.netns, args.netns_fd) as ns_fd, netns.iproute(args.netns, ns_fd) as container:
        if link.find(container, args.ifname) is not None:
            raise InterfaceExists(args.ifname)


def _validated(endpoint: Resource) -> Resource:
    """The endpoint decoded again, so its spec is in Calico's field order after the late fields were set."""
    from pycni.fabric.calico.model import decode_resource

    return decode_resource(endpoint.to_dict(), "the WorkloadEndpoint")


# -- DEL -----------------------------------------------------------------------------------


@plugin.delete
def delete(args: CmdArgs) -> None:
    conf = args.fields
    with call_logger(conf, "calico") as logger:
        settings = load_settings(args, adding=False)
        ids = identifiers(args, settings.nodename, ignore_unknown=True)
        workload_labels(conf, ids)  # a Mesos label may name the namespace the endpoint is in
        ids.wep_name()
        with session(settings.store) as client:
            check_cluster_ready(client)
            if ids.k8s:
                mine = _delete_pod_endpoint(client, ids, args.container_id, logger)
                _clean_up_interfaces(args, mine)
                ipam_delete(args, settings.ipam_type)
                return
            ipam_error: CNIError | None = None
            try:
                ipam_delete(args, settings.ipam_type)
            except CNIError as error:
                logger.error("%s", error)
                ipam_error = error
            mine = _delete_named_endpoint(client, ids)
            _clean_up_interfaces(args, mine)
            if ipam_error is not None:
                raise ipam_error


def _get_endpoint(client: Session, ids: Identifiers) -> Resource | None:
    try:
        return client.resources.find("WorkloadEndpoint", ids.wep_name(), ids.namespace)
    except DatastoreError as error:
        raise datastore_error("failed to read the WorkloadEndpoint", error, client.config) from None


def _delete_named_endpoint(client: Session, ids: Identifiers) -> Resource | None:
    endpoint = _get_endpoint(client, ids)
    if endpoint is not None:
        try:
            client.resources.delete("WorkloadEndpoint", endpoint.name, endpoint.namespace)
        except (ResourceNotFound, NotFound):
            pass
        except DatastoreError as error:
            raise datastore_error(f"failed to delete {endpoint.identifier}", error, client.config) from None
    return endpoint


def _delete_pod_endpoint(
    client: Session, ids: Identifiers, container_id: str, logger: logging.Logger
) -> Resource | None:
    """``CmdDelK8s``: delete the pod's endpoint only if it is this container's (not a newer sandbox's)."""
    for _ in range(6):
        endpoint = _get_endpoint(client, ids)
        if endpoint is None:
            logger.warning("WorkloadEndpoint %s does not exist, moving on with the clean-up", ids.wep_name())
            return None
        if endpoint.spec.get("containerID") and endpoint.spec["containerID"] != container_id:
            logger.warning("CNI_CONTAINERID does not match the endpoint's containerID: not deleting %s", endpoint.name)
            return None
        try:
            delete_endpoint(client, endpoint)
            return endpoint
        except UpdateConflict:
            continue
        except DatastoreError as error:
            raise datastore_error(f"failed to delete {endpoint.identifier}", error, client.config) from None
    raise CNIError(
        ErrorCode.TRY_AGAIN_LATER,
        f"error deleting endpoint: {ids.wep_name()} was modified before it could be deleted",
    )


def _clean_up_interfaces(args: CmdArgs, endpoint: Resource | None) -> None:
    """The container's interface (gone with its netns is done), and this endpoint's host end if still there."""
    delete_container_link(args)
    name = endpoint.spec.get("interfaceName") if endpoint is not None else None
    if name:
        with netns.iproute_here() as host:
            found = link.find(host, name)
            if found is not None and found.kind == "veth":
                link.delete(host, name)


# -- CHECK ---------------------------------------------------------------------------------


def _fail(message: str) -> CNIError:
    return CNIError(ErrorCode.INTERNAL, message)


@plugin.check
def check(args: CmdArgs) -> None:
    conf = args.fields
    settings = load_settings(args, adding=False)
    ids = identifiers(args, settings.nodename, ignore_unknown=True)
    workload_labels(conf, ids)
    prev = prev_result_required(args)
    delegate.delegate_check(settings.ipam_type, args.stdin, _ipam_env(args), args.path)
    cont_iface = next((i for i in prev.interfaces if i.name == args.ifname and i.sandbox == args.netns), None)
    host_iface = next((i for i in prev.interfaces if not i.sandbox), None)
    if cont_iface is None or host_iface is None:
        raise _fail(f"prevResult has no interface {args.ifname} in {args.netns} and a host interface")
    ips = [ip for ip in prev.ips if ip.interface == prev.interfaces.index(cont_iface)]
    routes = pod_routes(args, settings, ids)
    with (
        netns.handle(args.netns, args.netns_fd) as ns_fd,
        netns.iproute(args.netns, ns_fd) as container,
        netns.iproute_here() as host,
    ):
        cont = link.find(container, args.ifname)
        if cont is None or cont.kind != "veth":
            raise _fail(f"Container interface {args.ifname} is missing or not a veth")
        if cont_iface.mac and cont.mac != cont_iface.mac:
            raise _fail(f"Interface {args.ifname} MAC {cont.mac} doesn't match {cont_iface.mac}")
        present = {str(a) for a in addr.addresses(container, cont.index)}
        for ip in ips:
            if str(routed_veth.host_route(ip.address.ip)) not in present:
                raise _fail(f"Failed to match addr {ip.address.ip}/32 on interface {args.ifname}")
        with netns.entered(args.netns, ns_fd):
            _check_pod_routes(container, cont, host, ips, routes)
        _check_host_end(host, host_iface.name, cont, ips)
    with session(settings.store) as client:
        endpoint = _get_endpoint(client, ids)
    _check_endpoint(endpoint, ids, host_iface.name, cont.mac, ips)


def _check_pod_routes(
    container: IPRoute, cont: LinkInfo, host: IPRoute, ips: list[IPConfig], routes: list[Network]
) -> None:
    families = {ip.address.version for ip in ips}
    table = {version: addr.routes(container, version) for version in families}
    wanted: list[tuple[Network, object]] = []
    if 4 in families:
        wanted.append((ipaddress.ip_network(f"{routed_veth.NEXT_HOP_V4}/32"), None))
        wanted += [(r, routed_veth.NEXT_HOP_V4) for r in routes if r.version == 4]
    if 6 in families:
        wanted += [(r, routed_veth.HOST_LINK_LOCAL) for r in routes if r.version == 6]
    for dst, gateway in wanted:
        if not any(d.network == dst and gw == gateway for d, gw in table[dst.version]):
            via = f" via {gateway}" if gateway else ""
            raise _fail(f"Failed to match route {dst}{via} in the container")


def _check_host_end(host: IPRoute, name: str, cont: LinkInfo, ips: list[IPConfig]) -> None:
    found = link.find(host, name)
    if found is None or found.kind != "veth":
        raise _fail(f"host interface {name} is missing or not a veth")
    if found.mac.lower() != routed_veth.HOST_MAC:
        raise _fail(f"host interface {name} has MAC {found.mac}, not {routed_veth.HOST_MAC}")
    if found.peer_index != cont.index:
        raise _fail(f"host interface {name} is not the peer of the container's {cont.name}")
    for ip in ips:
        if found.index not in routed_veth.route_links(host, routed_veth.host_route(ip.address.ip)):
            raise _fail(f"no host route {ip.address.ip} dev {name}")
    families = {ip.address.version for ip in ips}
    wanted = {"proxy_arp": "1", "forwarding": "1", "route_localnet": "1"} if 4 in families else {}
    for key, value in wanted.items():
        if sysctl.read(f"net/ipv4/conf/{name}/{key}") != value:
            raise _fail(f"net.ipv4.conf.{name}.{key} is not {value}")
    if 6 in families and sysctl.read(f"net/ipv6/conf/{name}/proxy_ndp") != "1":
        raise _fail(f"net.ipv6.conf.{name}.proxy_ndp is not 1")


def _check_endpoint(endpoint: Resource | None, ids: Identifiers, host_name: str, mac: str, ips: list[IPConfig]) -> None:
    if endpoint is None:
        raise _fail(f"WorkloadEndpoint {ids.namespace}/{ids.wep_name()} does not exist")
    spec = endpoint.spec
    nets = sorted(str(routed_veth.host_route(ip.address.ip)) for ip in ips)
    problems = []
    if spec.get("interfaceName") != host_name:
        problems.append(f"interfaceName {spec.get('interfaceName')!r}, not {host_name!r}")
    if (spec.get("mac") or "").lower() != mac.lower():
        problems.append(f"mac {spec.get('mac')!r}, not {mac!r}")
    if sorted(spec.get("ipNetworks") or []) != nets:
        problems.append(f"ipNetworks {spec.get('ipNetworks')}, not {nets}")
    if spec.get("containerID") and spec["containerID"] != ids.container_id:
        problems.append(f"containerID {spec['containerID']!r}, not {ids.container_id!r}")
    if problems:
        raise _fail(f"WorkloadEndpoint {endpoint.name} does not match: {'; '.join(problems)}")


# -- GC and STATUS ---------------------------------------------------------------------------


@plugin.gc
def gc(args: CmdArgs) -> None:
    settings = load_settings(args, adding=False)
    errors: list[str] = []
    try:
        delegate.delegate_gc(settings.ipam_type, args.stdin, _ipam_env(args), args.path)
    except CNIError as error:
        errors.append(str(error))
    valid = args.valid_attachments()
    if valid is not None:
        try:
            _gc_endpoints(settings, {cid for cid, _ in valid})
        except CNIError as error:
            errors.append(str(error))
    if errors:
        raise CNIError(ErrorCode.INTERNAL, "; ".join(errors))


def _gc_endpoints(settings: Settings, valid: set[str]) -> None:
    """This node's endpoints of containers the runtime no longer knows, whose host end is gone too."""
    with session(settings.store) as client, netns.iproute_here() as host:
        try:
            endpoints, _ = client.resources.list("WorkloadEndpoint")
            for endpoint in endpoints:
                spec = endpoint.spec
                if spec.get("node") != settings.nodename or spec.get("containerID", "") in valid:
                    continue
                name = spec.get("interfaceName", "")
                if name and link.find(host, name) is not None:
                    continue  # still wired: not ours to judge from this network's list
                with contextlib.suppress(UpdateConflict):
                    delete_endpoint(client, endpoint)
                log.info("GC deleted WorkloadEndpoint %s/%s", endpoint.namespace, endpoint.name)
        except DatastoreError as error:
            raise datastore_error("endpoint garbage collection failed", error, client.config) from None


@plugin.status
def status(args: CmdArgs) -> None:
    settings = load_settings(args, adding=False)
    try:
        with session(settings.store) as client:
            check_cluster_ready(client)
    except CNIError as error:
        raise CNIError(ErrorCode.PLUGIN_NOT_AVAILABLE, f"calico: {error.msg}") from None
    delegate.delegate_status(settings.ipam_type, args.stdin, _ipam_env(args), args.path)


if __name__ == "__main__":
    plugin.main()
