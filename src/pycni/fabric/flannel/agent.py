"""``pycni flanneld``: one node's agent of the pod network, in Flannel's steps (``main.go``).

1. open the store and read the network config (waiting while the store is away);
2. choose the external interface (``--iface``, else the default route's) and the public IP;
3. the backend prepares its device and says what to publish (e.g. the VTEP MAC);
4. acquire the lease (reuse by public IP, else the previous subnet, else a free one);
5. configure the device for the lease, install masquerade/forward rules, write ``subnet.env``;
6. program every peer, then follow the lease watch; renew the lease; every
   ``resync`` seconds reconcile rules and peers against the store and the
   kernel (the backends' dataplane drivers write only what differs: nothing,
   on a node in order).

When the store is unreachable the dataplane is left exactly as it is, and the
agent re-lists and reconciles once the store answers again. The embedded
store's file damaged under a running agent (:class:`~pycni.datastore.Unusable`)
is the same outage: the dataplane stays, the agent reports it at every retry
and goes on once the file is good again. At start-up, waiting is only for what
can come back by itself (etcd away, the file locked, no config yet): a damaged,
foreign or read-only store file is one error line naming it and exit 1, and
the file is left as it is (never replaced by an empty store: moving it away
is the user's decision, as deleting an etcd data directory is).

``subnet.env`` is written at start, as flanneld writes it, and, unlike
flanneld, checked at every resync and rewritten (with a warning saying what
was wrong) when it is damaged or not this node's lease; a damaged file found
at start is only a lost hint for reusing the previous subnet.

A peer whose lease carries this node's backend identity (the vxlan VTEP MAC:
a cloned image, copied state) makes the backend take a new one, and the
agent re-publishes its lease at once (``Backend.resolve_clash``).

A clean exit (SIGTERM, SIGINT, a revoked lease) removes the agent's own
nftables table, so the node's ruleset is what it was before the agent ran.
The device, routes, neighbours and FDB entries stay, as Flannel leaves them,
so pods keep their paths and a restarted agent reuses the device and its MAC;
``--release-on-exit`` also gives the lease back, so peers drop this node.
Flannel v0.25-v0.26 also removed its rules on exit; since v0.27 (commit
"clean-up rules when starting instead of shutting down") it keeps them across
a restart and removes only the other traffic manager's rules at start. The
cost of removing them here: while the agent is down, new connections from
pods to outside the cluster are not masqueraded, and on a host whose forward
policy drops, forwarded pod traffic is not accepted until the agent is back.

Metrics (:class:`~pycni.metrics.agent.AgentMetrics`, served on
``--metrics-addr`` when given): lease renewals and their failures, watch
reconnects (every lost watch and failed retry), the duration of each periodic
resync, the time of the last reconcile that left the dataplane matching a
fresh listing of the store, and the routes, neighbours and FDB entries the
backend's drivers hold after each apply.
"""

from __future__ import annotations

import ipaddress
import logging
import signal
import threading
import time
from dataclasses import dataclass, field, replace
from types import FrameType
from typing import TYPE_CHECKING, Any

from pycni.datastore import DatastoreError, Unavailable
from pycni.datastore.errors import Unusable
from pycni.fabric.flannel import subnetenv
from pycni.fabric.flannel.backends import BACKENDS, Backend, ExternalInterface
from pycni.fabric.flannel.backends.common import BackendError, DeviceMissing
from pycni.fabric.flannel.leases import LeaseStore, open_lease_store
from pycni.fabric.flannel.model import SUBNET_TTL, ConfigError, EventType, Lease, LeaseAttrs, LeaseEvent, NetworkConfig
from pycni.fabric.flannel.subnet import SubnetManager
from pycni.metrics.address import ListenAddress
from pycni.metrics.agent import AgentMetrics
from pycni.net import addr, link, netns
from pycni.nft import flannel as rules
from pycni.spec.errors import CNIError, ErrorCode

if TYPE_CHECKING:
    from pycni.metrics.serve import MetricsServer


@dataclass
class AgentOptions:
    etcd_endpoints: str = ""  # comma-separated, as flanneld's flag; none: the embedded store
    etcd_prefix: str = "/coreos.com/network"
    store_path: str = "/var/lib/pycni/flannel.db"
    net_config_path: str = ""
    ifaces: list[str] = field(default_factory=list)
    public_ip: str = ""
    ip_masq: bool = False
    forward_rules: bool = True
    subnet_file: str = subnetenv.DEFAULT_PATH
    state_dir: str = "/run/flannel"
    lease_ttl: int = SUBNET_TTL
    renew_margin: int = 60 * 60
    resync: float = 5.0
    release_on_exit: bool = False
    metrics_addr: ListenAddress | None = None  # off by default


log = logging.getLogger("pycni.fabric.flannel.agent")


def external_interface(names: list[str], public_ip: str) -> ExternalInterface:
    """The first usable of ``names`` (``--iface``), else the interface of the default route."""
    with netns.iproute_here() as ipr:
        candidates = names or [_default_route_interface(ipr)]
        for name in candidates:
            found = link.find(ipr, name)
            if found is None:
                log.warning("interface %s not found, trying the next one", name)
                continue
            v4 = [a for a in addr.addresses(ipr, found.index, family=2) if a.version == 4]
            if not v4:
                log.warning("interface %s has no IPv4 address, trying the next one", name)
                continue
            address = str(v4[0].ip)
            return ExternalInterface(found.name, found.index, address, public_ip or address, found.mtu)
    raise CNIError(ErrorCode.INVALID_NETWORK_CONFIG, f"no usable external interface among {candidates}: set --iface")


def _default_route_interface(ipr: Any) -> str:
    if any(route[0].network.prefixlen == 0 for route in addr.routes(ipr, 4)):
        name = addr.output_interface(ipr, ipaddress.IPv4Address("255.255.255.254"))
        if name:
            return name
    raise CNIError(
        ErrorCode.INVALID_NETWORK_CONFIG, "this node has no default route: name the external interface with --iface"
    )


class Agent:
    def __init__(self, options: AgentOptions, store: LeaseStore | None = None) -> None:
        self.options = options
        self.store = store or open_lease_store(options.etcd_endpoints, options.etcd_prefix, options.store_path or None)
        self.stopping = threading.Event()
        self.lease: Lease | None = None
        self.backend: Backend | None = None
        self.config: NetworkConfig | None = None
        self.manager: SubnetManager | None = None
        self.revision = 0
        self.exit_code = 0
        self._lock = threading.Lock()  # the backend: the watch, resync and clash handling all program it
        self._lease_lock = threading.Lock()  # self.lease: renewal and re-publishing must not undo each other
        self._rules_lock = threading.Lock()  # installing vs removing the nft table at exit
        self._unpublished: dict[str, Any] | None = None  # BackendData the store has not taken yet
        self._subnet_text = ""  # what subnet.env must hold
        self.metrics = AgentMetrics(leases=True)
        self._metrics_server: MetricsServer | None = None

    # -- start-up ---------------------------------------------------------------

    def start(self) -> None:
        options = self.options
        if options.net_config_path and self.store.embedded:  # as flanneld, etcd's config is etcd's to hold
            try:
                with open(options.net_config_path) as handle:
                    text = handle.read()
            except (OSError, UnicodeDecodeError) as exc:
                raise CNIError(ErrorCode.IO_FAILURE, f"cannot read {options.net_config_path}: {exc}") from None
            self._until_available(lambda: self.store.set_network_config(text))
        self.config = config = NetworkConfig.from_json(self._until_available(self._read_config))
        if config.network is None:
            raise CNIError(
                ErrorCode.INVALID_NETWORK_CONFIG,
                "pycni flanneld needs an IPv4 Network (IPv6-only is not supported yet)",
            )
        if config.ipv6_network is not None:
            raise CNIError(
                ErrorCode.INVALID_NETWORK_CONFIG,
                "EnableIPv6: dual-stack leases are not supported by pycni flanneld yet",
            )
        backend_class = BACKENDS.get(config.backend_type)
        if backend_class is None:
            raise CNIError(
                ErrorCode.INVALID_NETWORK_CONFIG,
                f"unknown backend type {config.backend_type!r}: use one of {', '.join(sorted(BACKENDS))}",
            )
        ext = external_interface(options.ifaces, options.public_ip)
        log.info(
            "using interface %s (%s), public IP %s, backend %s",
            ext.name,
            ext.address,
            ext.public_ip,
            config.backend_type,
        )
        backend: Backend = backend_class(ext, config, state_dir=options.state_dir)
        data = backend.prepare()
        attrs = LeaseAttrs(public_ip=ext.public_ip, backend_type=config.backend_type, backend_data=data)
        manager = SubnetManager(self.store, config, options.lease_ttl)
        previous = self._previous_subnet()
        lease = self._until_available(lambda: manager.acquire(attrs, previous))
        log.info("lease acquired: %s", lease.subnet)
        backend.configure(lease)
        self.backend, self.lease, self.manager = backend, lease, manager
        self._ensure_rules()
        self._subnet_text = subnetenv.render(config.network, lease.subnet, backend.mtu, options.ip_masq)
        subnetenv.write(options.subnet_file, self._subnet_text)
        log.info("wrote %s (MTU %s)", options.subnet_file, backend.mtu)
        self.revision = self._reconcile()

    def _previous_subnet(self) -> Any:
        """The subnet the last ``subnet.env`` names (flanneld reuses it if it is free); a damaged file names none."""
        try:
            return subnetenv.subnet_of(
                subnetenv.parse(self.options.subnet_file, subnetenv.read_bytes(self.options.subnet_file) or b"")
            )
        except CNIError as error:
            log.warning("ignoring the previous subnet.env (%s); it is written anew", error.msg)
            return None

    def _ensure_subnet_file(self) -> None:
        """Rewrite ``subnet.env`` if it no longer holds what this agent wrote (damaged, removed, edited)."""
        path = self.options.subnet_file
        problem = subnetenv.problem(path, self._subnet_text)
        if not problem:
            return
        try:
            subnetenv.write(path, self._subnet_text)
        except CNIError as error:
            log.error("%s is not as written (%s) and cannot be rewritten: %s", path, problem, error.msg)
            return
        log.warning("%s was not as written (%s); rewrote it", path, problem)

    def _read_config(self) -> str:
        """The config JSON; as flanneld, a config not written yet is waited for, not fatal."""
        try:
            return self.store.get_network_config()
        except ConfigError as error:
            raise Unavailable(error.msg) from None

    def _until_available(self, fn: Any) -> Any:
        delay = 0.1
        while True:
            try:
                return fn()
            except Unavailable as error:
                if self.stopping.is_set() or isinstance(error, Unusable):
                    raise  # a damaged or foreign store file: only a person can fix that
                log.warning("store unavailable (%s); retrying in %.1f s", error.msg, delay)
                self.stopping.wait(delay)
                delay = min(delay * 2, 5.0)

    def _ensure_rules(self) -> None:
        assert self.config is not None and self.config.network is not None and self.lease is not None
        options = self.options
        if not (options.ip_masq or options.forward_rules):
            return
        with self._rules_lock:
            if self.stopping.is_set():
                return  # shutdown removes them; a resync finishing late must not put them back
            if rules.ensure(self.config.network, self.lease.subnet, options.ip_masq, options.forward_rules):
                log.info("masquerade/forward rules installed")

    def _remove_rules(self) -> None:
        """Delete the agent's nft table (Flannel's traffic manager ``CleanUp``); what was never made is fine."""
        with self._rules_lock:
            try:
                rules.remove()
                log.info("masquerade/forward rules removed")
            except CNIError as error:
                log.error("could not remove the masquerade/forward rules: %s", error)

    def _reconcile(self) -> int:
        """Program exactly the peers the store lists; returns the revision read at."""
        assert self.backend is not None and self.lease is not None
        leases, revision = self.store.list_leases()
        own = self.lease.key
        if not any(lease.key == own for lease in leases):
            self._revoked()
        peers = [lease for lease in leases if lease.key != own and self._usable(lease)]
        with self._lock:
            self._resolve_clash(peers)
            try:
                self.backend.sync(peers)
            except DeviceMissing:
                raise  # the resync loop rebuilds it
            except BackendError as error:  # the drivers keep what failed pending: the next resync retries it
                log.warning("%s", error.msg)
            else:
                self.metrics.synced()
            finally:
                self.metrics.dataplane(self.backend.last_apply)
        return revision

    def _resolve_clash(self, peers: list[Lease]) -> None:
        """A peer publishes our identity: the backend takes a new one, and our lease says so (lock held)."""
        assert self.backend is not None
        data = self.backend.resolve_clash(peers)
        if data is not None:
            self._publish(data)
        elif self._unpublished is not None:
            self._publish(self._unpublished)  # the store was away when the backend changed

    def _publish(self, backend_data: dict[str, Any]) -> None:
        """Write our lease again with new BackendData, so peers reprogram us from the watch.

        The device already carries the new identity; if the store is away, the
        next reconcile (resync, or the watch coming back) writes it.
        """
        assert self.lease is not None and self.manager is not None
        self._unpublished = backend_data
        with self._lease_lock:
            lease = replace(self.lease, attrs=replace(self.lease.attrs, backend_data=backend_data))
            self.lease = self.manager.renew(lease)
        self._unpublished = None
        log.info("lease %s re-published with %s", lease.subnet, backend_data)

    def _usable(self, lease: Lease) -> bool:
        assert self.config is not None and self.backend is not None
        if lease.attrs.backend_type not in self.backend.accepts:
            log.warning(
                "ignoring %s: its backend is %s, not %s",
                lease.subnet,
                lease.attrs.backend_type,
                self.config.backend_type,
            )
            return False
        return True

    def _revoked(self) -> None:
        log.error("Lease has been revoked. Shutting down daemon.")
        self.exit_code = 1
        self.stopping.set()

    # -- running ------------------------------------------------------------------

    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        if self.options.metrics_addr is not None:
            from pycni.metrics.serve import ServeError, serve

            try:  # first: an address that cannot be served stops the agent before it changes anything
                self._metrics_server = serve(self.options.metrics_addr, self.metrics.registry)
            except ServeError as error:
                log.error("cannot start: %s", error)
                self.store.close()
                return 1
        try:
            self.start()
        except CNIError as error:
            log.error("cannot start: %s", error)
            self.stopping.set()
            self.shutdown()  # rules installed before the failure go too
            return 1
        threads = [
            threading.Thread(target=self._watch_loop, name="watch", daemon=True),
            threading.Thread(target=self._renew_loop, name="renew", daemon=True),
            threading.Thread(target=self._resync_loop, name="resync", daemon=True),
        ]
        for thread in threads:
            thread.start()
        log.info("ready")
        while not self.stopping.wait(0.5):
            pass
        self.shutdown()
        return self.exit_code

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.stopping.set()

    def shutdown(self) -> None:
        """Release the lease if asked, remove the rules, stop the backend's helpers; devices and routes stay."""
        if self.options.release_on_exit and self.lease is not None and self.manager is not None:
            try:
                self.manager.release(self.lease)
                log.info("released %s", self.lease.subnet)
            except DatastoreError as error:
                log.warning("could not release the lease: %s", error.msg)
        if self.lease is not None and (self.options.ip_masq or self.options.forward_rules):
            self._remove_rules()
        if self.backend is not None:
            self.backend.close()
        self.store.close()
        if self._metrics_server is not None:
            self._metrics_server.close()
        log.info("stopped (devices and routes stay; rules removed)")

    def _watch_loop(self) -> None:
        delay = 0.1
        while not self.stopping.is_set():
            try:
                for events in self.store.watch_leases(self.revision):
                    delay = 0.1
                    self._handle(events)
                    if self.stopping.is_set():
                        return
            except DatastoreError as error:  # Unavailable, Compacted: re-list and watch again
                self.metrics.watch_reconnects.inc()
                log.warning("lease watch lost (%s); the dataplane stays, retrying in %.1f s", error.msg, delay)
                self.stopping.wait(delay)
                delay = min(delay * 2, 5.0)
                try:
                    self.revision = self._reconcile()
                    log.info("store is back: peers reconciled")
                except DatastoreError:
                    continue

    def _handle(self, events: list[LeaseEvent]) -> None:
        assert self.backend is not None and self.lease is not None
        for event in events:
            lease = event.lease
            if lease.key == self.lease.key:
                if event.type is EventType.REMOVED:
                    self._revoked()
                continue
            if not self._usable(lease):
                continue
            with self._lock:
                try:
                    if event.type is EventType.ADDED:
                        self._resolve_clash([lease])
                        self.backend.add_peer(lease)
                        log.info("peer added: %s via %s", lease.subnet, lease.attrs.public_ip)
                    else:
                        self.backend.remove_peer(lease)
                        log.info("peer removed: %s", lease.subnet)
                except DatastoreError:
                    raise  # the watch loop re-lists
                except CNIError as error:  # the watch goes on; the next resync tries the peer again
                    log.warning("peer %s %s: %s", lease.subnet, event.type.value, error.msg)
                finally:
                    self.metrics.dataplane(self.backend.last_apply)

    def _renew_loop(self) -> None:
        ttl = self.options.lease_ttl
        margin = self.options.renew_margin if self.options.renew_margin < ttl else ttl / 2
        wait = ttl - margin
        while not self.stopping.wait(wait):
            assert self.lease is not None and self.manager is not None
            try:
                with self._lease_lock:
                    self.lease = self.manager.renew(self.lease)
                wait = ttl - margin
                self.metrics.renewed()
            except DatastoreError as error:
                wait = min(60.0, margin / 2)
                self.metrics.renewal_failed()
                log.warning("lease renewal failed (%s); retrying in %.0f s", error.msg, wait)

    def _resync_loop(self) -> None:
        """Rules and peers against the store; a backend whose device was deleted is rebuilt."""
        while not self.stopping.wait(self.options.resync):
            started = time.monotonic()
            try:
                self._ensure_rules()
                self._ensure_subnet_file()
                self._reconcile()
            except DatastoreError:
                continue  # the watch loop reports it
            except DeviceMissing as error:
                log.warning("dataplane out of order (%s); rebuilding the backend's device", error.msg)
                self._rebuild()
            except CNIError as error:
                log.error("resync failed: %s", error)
            finally:
                self.metrics.resync_duration.observe(time.monotonic() - started)

    def _rebuild(self) -> None:
        """Recreate the device; if it came back with other BackendData (its MAC was lost), publish that."""
        assert self.backend is not None and self.lease is not None
        try:
            with self._lock:
                data = self.backend.prepare()
                self.backend.configure(self.lease)
                if data != self.lease.attrs.backend_data:
                    self._publish(data)
            self._reconcile()
        except CNIError as error:
            log.error("rebuilding failed (%s); trying again at the next resync", error)


def main(options: AgentOptions) -> int:
    try:
        agent = Agent(options)
    except CNIError as error:
        log.error("cannot start: %s", error)
        return 1
    return agent.run()


def lease_summary(lease: Lease, now: float) -> dict[str, str]:
    """One row of ``pycni inspect``."""
    expires = "never (reservation)" if lease.expiration is None else f"in {int(lease.expiration - now)} s"
    return {
        "subnet": str(lease.subnet),
        "public_ip": lease.attrs.public_ip,
        "backend": lease.attrs.backend_type,
        "data": ", ".join(f"{k}={v}" for k, v in sorted(lease.attrs.backend_data.items())),
        "expires": expires,
    }
