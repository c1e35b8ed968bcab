"""``pycni calico-node``: one node's agent of the Calico-compatible fabric (calico/node's start-up + Felix + confd).

Start-up, as calico/node's ``startup`` does it:

1. open the datastore (waiting while it is away) and ``EnsureInitialized``;
2. this node's IPv4 address: ``IP`` as given, the Node's current one, or
   autodetected (:mod:`.autodetect`); the interface holding it is the VXLAN
   device's parent;
3. register or refresh the Node; create the default pool(s) when the cluster
   has none; FelixConfiguration ``default``; write the node-name file.

Then, as Felix (``felix/DESIGN.md``): the :class:`~.syncer.Syncer` lists and
watches the datastore; each change (and each periodic resync, every
``routeRefreshInterval``, 90 s by default) runs the pure
:func:`~.calculation.calculate` on the latest snapshot, the tunnel addresses
the result asks for are obtained from IPAM and published in the Node
(:class:`~.startup.TunnelAddresses`), the :class:`~.managers.Dataplane` hands
each manager its part (drivers diff against the kernel and write only the
delta; a resync re-reads the kernel and on a node in order writes nothing),
the MTU file is refreshed, and the routing backend (BIRD for ``bird``,
:mod:`.routing`) is reconfigured if its config changed. Nothing is applied
before the first complete listing, so a restarted agent never removes routes
it has not yet seen the datastore ask for.

Policy, whatever the backend (``none`` included: policy-only mode), is the
:class:`~.policy_manager.PolicyManager`'s: from the start a fail-closed nft
table (unknown ``cali*`` interfaces dropped), then the cluster's policies for
this node's endpoints, one transaction per change; the agent is ready once
it is in. A clean exit removes the natOutgoing table but keeps the policy
table, so pods stay closed while no agent runs (the next agent replaces it at
its first sync); a node that left the cluster removes it too.

Beside it, for this node only, the IPAM leak GC that Calico runs in
kube-controllers (:mod:`.leak_gc`): addresses no workload endpoint uses for
the grace period (``--ipam-leak-grace-period``, 15 minutes by default) are
released, and empty blocks and orphaned handles given back.

While the datastore is away the dataplane stays exactly as it is (resyncs
keep repairing drift against the last state); when it is back the syncer
re-lists and the next calculation catches up. Link events of the node's
namespace (a device deleted or brought down) wake the agent at once.

Its own Node deleted (an administrator removed the node) stops the agent
with status 1, and BIRD with it, its kernel routes removed; it gives back
its tunnel addresses and block affinities on the way out. The agent's pid
is in ``<run dir>/calico-node.pid`` (``--pid-file``) while it runs, for
``calicoctl node status``. A clean exit (SIGTERM, SIGINT) removes the agent's nftables
tables; devices, routes, neighbours and FDB entries stay, as Felix leaves
them, so pods keep their paths and a restarted agent takes them over without
a write; BIRD keeps running for the next agent unless ``stop_bird`` is set.

Logging: one line per event that matters (node joined or left, block claimed
or released, pool added or removed, device created, addresses assigned,
rules installed, store lost and back), nothing for a resync that found
nothing to do.

Metrics (:class:`~pycni.metrics.agent.AgentMetrics`, served on
``--metrics-addr`` when given): watch reconnects (the syncer's), the duration
of each periodic resync, the time of the last step that applied a current
snapshot without a failed write, the routes, neighbours, FDB entries and
natOutgoing set elements the managers hold after each step, and this node's
blocks' addresses used and free (read from the datastore when scraped: one
read per block this node holds); and the policy manager's
(:class:`~pycni.metrics.policy.PolicyMetrics`): transactions and their size,
update duration, errors, and what the policy table holds.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import TYPE_CHECKING, TypeVar

from pycni import __version__
from pycni.datastore import Datastore, Unavailable
from pycni.fabric.calico import autodetect, nodefiles, startup
from pycni.fabric.calico.calculation import IPIP_DEVICE, VXLAN_DEVICE, Desired, LocalNode, calculate, felix_settings
from pycni.fabric.calico.ipam import AllocationBlock, block_key
from pycni.fabric.calico.ipam_store import IPAM, NotAssigned
from pycni.fabric.calico.leak_gc import LeakCollector
from pycni.fabric.calico.managers import Dataplane
from pycni.fabric.calico.model import FelixSettings, NodeInfo
from pycni.fabric.calico.nodeconfig import NodeConfig
from pycni.fabric.calico.policy_manager import PolicyManager
from pycni.fabric.calico.resources import TUNNEL_HANDLE_KINDS, ResourceClient
from pycni.fabric.calico.routing import NoRouting, Routing, routing_for
from pycni.fabric.calico.syncer import ClusterState, Syncer
from pycni.metrics.address import ListenAddress
from pycni.metrics.agent import AgentMetrics
from pycni.metrics.ipam import AddressUsage, IpamCollector
from pycni.metrics.policy import PolicyMetrics
from pycni.net import netns, sysctl
from pycni.net.linkevents import LinkEvents
from pycni.spec.errors import CNIError

if TYPE_CHECKING:
    from pyroute2 import IPRoute

    from pycni.fabric.calico.managers import StepReport
    from pycni.metrics.serve import MetricsServer

log = logging.getLogger("pycni.fabric.calico.agent")
T = TypeVar("T")
MAX_BACKOFF = 5.0


def within(
    inner: ipaddress.IPv4Network | ipaddress.IPv6Network, outer: ipaddress.IPv4Network | ipaddress.IPv6Network
) -> bool:
    return inner.version == outer.version and inner.subnet_of(outer)  # type: ignore[arg-type]


def describe_pool(pool: object) -> str:
    cidr = getattr(pool, "cidr", "")
    vxlan, ipip = getattr(pool, "vxlan_mode", ""), getattr(pool, "ipip_mode", "")
    nat = getattr(pool, "nat_outgoing", False)
    return f"{cidr} (vxlanMode {vxlan}, ipipMode {ipip}, natOutgoing {str(nat).lower()})"


def log_changes(old: ClusterState | None, new: ClusterState, nodename: str) -> None:
    """One line per event that matters between two snapshots."""
    if old is None:
        log.info(
            "datastore in sync at revision %d: %d node(s), %d pool(s), %d block(s)",
            new.revision,
            len(new.nodes),
            len(new.pools),
            len(new.blocks),
        )
        for block in new.confirmed_blocks(nodename):
            log.info("block %s is this node's", block)
        return
    for name in sorted(new.nodes.keys() - old.nodes.keys()):
        address = new.nodes[name].ipv4_address
        log.info("node %s joined (%s)", name, address or "no IPv4 address")
    for name in sorted(old.nodes.keys() - new.nodes.keys()):
        log.info("node %s left", name)
    for name in sorted(new.nodes.keys() & old.nodes.keys()):
        before, after = old.nodes[name].ipv4_address, new.nodes[name].ipv4_address
        if before != after:
            log.info("node %s moved: %s -> %s", name, before or "none", after or "none")
    for name in sorted(new.pools.keys() - old.pools.keys()):
        log.info("IPPool %s added: %s", name, describe_pool(new.pools[name]))
    for name in sorted(old.pools.keys() - new.pools.keys()):
        log.info("IPPool %s removed", name)
    for name in sorted(new.pools.keys() & old.pools.keys()):
        if describe_pool(old.pools[name]) != describe_pool(new.pools[name]):
            log.info("IPPool %s changed: %s", name, describe_pool(new.pools[name]))
    before_blocks, after_blocks = set(old.confirmed_blocks(nodename)), set(new.confirmed_blocks(nodename))
    for block in sorted(after_blocks - before_blocks, key=str):
        log.info("block %s claimed by this node", block)
    for block in sorted(before_blocks - after_blocks, key=str):
        log.info("block %s released by this node", block)


class CalicoNode:
    """One node's agent; :meth:`run` until SIGTERM (or its Node is deleted)."""

    def __init__(
        self,
        config: NodeConfig,
        store: Datastore,
        *,
        stop_bird: bool = False,
        metrics_addr: ListenAddress | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.stop_bird = stop_bird
        self.metrics_addr = metrics_addr
        self.metrics = AgentMetrics()
        self.metrics.registry.register(IpamCollector(self.address_usage))
        self._metrics_server: MetricsServer | None = None
        self.resources = ResourceClient(store)
        self.ipam = IPAM(store, self.resources)
        self.tunnels = startup.TunnelAddresses(self.resources, self.ipam, config.nodename)
        self.stopping = threading.Event()
        self.ready = threading.Event()
        self._wake = threading.Event()
        self.syncer = Syncer(store, self._wake.set, on_reconnect=self.metrics.watch_reconnects.inc)
        self.routing: Routing = NoRouting()
        self.local: LocalNode | None = None
        self.dataplane: Dataplane | None = None
        self.policy: PolicyManager | None = None
        self.address: ipaddress.IPv4Interface | None = None
        self.exit_code = 0
        self.left = False  # this node's Node was deleted: it left the cluster for good
        self.steps = 0
        self._ipr: IPRoute | None = None
        self._last: ClusterState | None = None
        self._mtu: int | None = None
        self._tunnel_problem = ""

    # -- start-up ------------------------------------------------------------------

    def _until_available(self, what: str, fn: Callable[[], T]) -> T:
        """Run ``fn`` until the datastore answers (calico/node exits and is restarted; the agent waits)."""
        delay, warned = 0.1, False
        while True:
            try:
                return fn()
            except Unavailable as exc:
                if self.stopping.is_set():
                    raise
                if not warned:
                    log.warning("datastore unavailable while %s (%s); waiting for it", what, exc)
                    warned = True
                self.stopping.wait(delay)
                delay = min(delay * 2, MAX_BACKOFF)

    def _host_address(self, ipr: IPRoute) -> autodetect.HostAddress | None:
        """``IP``: none, as given, the Node's current address (while it is still on an interface), or autodetected."""
        setting = self.config.ip
        if setting == "none":
            return None
        if setting not in ("", "autodetect"):
            given = ipaddress.IPv4Interface(setting)
            found = autodetect.holder(ipr, given.ip)
            if found is None:
                log.warning("IP %s is on none of this node's interfaces; using it as given", setting)
                return autodetect.HostAddress("", 0, 0, given)
            return (
                found if "/" not in setting else autodetect.HostAddress(found.interface, found.index, found.mtu, given)
            )
        if setting == "":
            current = self._until_available(
                "reading the Node", lambda: self.resources.find("Node", self.config.nodename)
            )
            if current is not None:
                address = NodeInfo.from_resource(current).ipv4_address
                found = autodetect.holder(ipr, address.ip) if address is not None else None
                if found is not None:
                    return found
        found = autodetect.autodetect(ipr, self.config.autodetection)
        log.info("autodetected IPv4 address %s on %s (%s)", found.address, found.interface, self.config.autodetection)
        return found

    def start(self) -> None:
        config = self.config
        self._ipr = ipr = netns.iproute_here()
        host = self._host_address(ipr)
        self.address = host.address if host is not None else None
        log.info(
            "node %s: IPv4 address %s%s, backend %s",
            config.nodename,
            self.address or "none",
            f" on {host.interface}" if host is not None and host.interface else "",
            config.backend,
        )
        self._until_available(
            "initialising the datastore",
            lambda: self.resources.ensure_initialized(f"pycni-{__version__}", config.cluster_type),
        )
        self._until_available(
            "registering the Node",
            lambda: startup.register_node(self.resources, config.nodename, self.address, config.as_number),
        )
        if config.default_pools:
            self._until_available(
                "creating the default pools", lambda: startup.ensure_pools(self.resources, config.default_pools)
            )
        self._until_available(
            "writing FelixConfiguration default", lambda: startup.ensure_felix_defaults(self.resources)
        )
        nodefiles.write_nodename(config.nodename_file, config.nodename)
        sysctl.enable_forwarding(ipv4=True, ipv6=False)
        self.local = LocalNode(config.nodename, config.backend, host.interface if host is not None else "")
        self.dataplane = Dataplane(ipr)
        self.policy = PolicyManager(
            self.store,
            config.nodename,
            felix_env=config.felix_env,
            on_ready=self._wake.set,
            metrics=PolicyMetrics(self.metrics.registry),
            refresh=config.resync or FelixSettings().route_refresh,  # drift checked as often as routes
        )
        self.policy.start()  # the fail-closed policy table first, whatever the networking backend
        self.routing = routing_for(config.backend, config.nodename, config.run_dir, config.router_id)
        self.syncer.start()

    # -- running -------------------------------------------------------------------

    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        if self.metrics_addr is not None:
            from pycni.metrics.serve import ServeError, serve

            try:  # first: an address that cannot be served stops the agent before it changes anything
                self._metrics_server = serve(self.metrics_addr, self.metrics.registry)
            except ServeError as exc:
                log.error("cannot start: %s", exc)
                self.store.close()
                return 1
        try:
            nodefiles.write_pid_file(self.config.pid_path)
            self.start()
        except (CNIError, OSError) as exc:
            log.error("cannot start: %s", exc)
            self.shutdown()
            return 1
        threading.Thread(target=self._link_loop, name="link-events", daemon=True).start()
        if self.config.leak_grace_period > 0:
            threading.Thread(target=self._gc_loop, name="ipam-gc", daemon=True).start()
        try:
            self.loop()
        finally:
            self.shutdown()
        return self.exit_code

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.stopping.set()
        self._wake.set()

    def stop(self) -> None:
        self.stopping.set()
        self._wake.set()

    def loop(self) -> None:
        """Calculate and apply on every datastore change; resync every ``routeRefreshInterval``."""
        next_resync = time.monotonic()
        while not self.stopping.is_set():
            self._wake.wait(max(0.0, next_resync - time.monotonic()))
            self._wake.clear()
            if self.stopping.is_set():
                return
            state = self.syncer.snapshot()
            if state is None:
                next_resync = time.monotonic() + 1.0
                continue
            resync = time.monotonic() >= next_resync
            started = time.monotonic()
            try:
                interval = self.step(state, resync=resync)
            except (CNIError, OSError) as exc:  # the kernel or a file refused: the next change or resync retries
                log.error("could not bring the node in line: %s", exc)
                interval = self.config.resync or FelixSettings().route_refresh
            if resync:
                self.metrics.resync_duration.observe(time.monotonic() - started)
                next_resync = time.monotonic() + interval

    def step(self, state: ClusterState, *, resync: bool = False) -> float:
        """One calculation and apply for ``state``; returns the resync interval in force."""
        assert self.local is not None and self.dataplane is not None and self._ipr is not None
        config = self.config
        if state is not self._last:
            log_changes(self._last, state, config.nodename)
        self._last = state
        self.steps += 1
        felix = felix_settings(state, config.nodename, config.felix_env)
        interval = config.resync or felix.route_refresh
        if config.nodename not in state.nodes:
            if self.syncer.in_sync and self.ready.is_set():
                log.error("this node's Node resource (%s) was deleted from the datastore; stopping", config.nodename)
                self.exit_code = 1
                self.left = True
                self.stop()
            return interval
        host_mtu = nodefiles.host_mtu(self._ipr, felix.mtu_iface_pattern, self.local.parent)
        desired = calculate(state, self.local, felix, host_mtu)
        if self.syncer.in_sync:
            self._tunnel_addresses(state, desired)
        report = self.dataplane.resync(desired) if resync else self.dataplane.apply(desired)
        self._record(report)
        if self._mtu != desired.pod_mtu:
            if nodefiles.write_mtu(config.mtu_file, desired.pod_mtu):
                log.info("pod MTU %d written to %s", desired.pod_mtu, config.mtu_file)
            self._mtu = desired.pod_mtu
        self.routing.update(state)
        if not self.ready.is_set() and self._complete(desired):
            log.info("ready")
            self.ready.set()
        return interval

    def _record(self, report: StepReport) -> None:
        """The step's metrics: objects held per kind; a sync if a current snapshot went in with no failed write."""
        self.metrics.dataplane(report.results, report.nft_elements)
        if self.syncer.in_sync and all(result.ok for result in report.results):
            self.metrics.synced()

    def address_usage(self) -> list[AddressUsage]:
        """This node's blocks (its confirmed affinities), each read from the datastore: addresses used and free."""
        state = self.syncer.snapshot()
        if state is None:
            return []
        rows = []
        for cidr in state.confirmed_blocks(self.config.nodename):
            kv = self.store.get(block_key(cidr))
            if kv is None:
                continue  # released since the snapshot
            block = AllocationBlock.from_json(kv.value)
            pool = next((p.name for p in state.pools.values() if within(cidr, p.cidr)), "")
            rows.append(AddressUsage(pool, str(cidr), len(block.in_use()), block.num_free()))
        return rows

    def _tunnel_addresses(self, state: ClusterState, desired: Desired) -> None:
        try:
            self.tunnels.reconcile(state, desired.needs)
        except Unavailable:
            return  # the syncer reports the outage; the next step after it retries
        except CNIError as exc:
            if str(exc) != self._tunnel_problem:
                log.error("tunnel address: %s; retrying at the next change", exc)
                self._tunnel_problem = str(exc)
            return
        self._tunnel_problem = ""

    def _complete(self, desired: Desired) -> bool:
        """Ready once policy is in and every tunnel the node needs is up (its address came back via the datastore)."""
        policy_in = self.policy is None or self.policy.in_sync.is_set()
        return policy_in and (not desired.needs.vxlan or desired.vxlan is not None)

    def _link_loop(self) -> None:
        """Forward link events to the drivers; wake the agent when a device it manages changed."""
        assert self.local is not None and self.dataplane is not None
        watched = {VXLAN_DEVICE, IPIP_DEVICE, self.local.parent}
        try:
            events = LinkEvents()
        except OSError as exc:
            log.warning("no link events (%s): devices are checked at each resync only", exc)
            return
        with events:
            while not self.stopping.is_set():
                batch = events.poll(1.0)
                if not batch.events and not batch.lost:
                    continue
                self.dataplane.link_events(batch)
                if batch.lost or batch.names & watched:
                    self._wake.set()

    def _gc_loop(self) -> None:
        """The IPAM leak GC for this node, every half grace period once the agent is ready (:mod:`.leak_gc`)."""
        collector = LeakCollector(self.ipam, self.config.nodename, self.config.leak_grace_period)
        log.info("IPAM leak GC: every %g s, grace period %g s", collector.interval, collector.grace)
        problem = ""
        while not self.stopping.wait(collector.interval):
            if not self.ready.is_set():
                continue
            try:
                collector.run_once()
            except CNIError as exc:  # the datastore away, or a lost race: the next pass tries again
                if str(exc) != problem:
                    log.warning("IPAM leak GC pass failed: %s; retrying at the next pass", exc)
                    problem = str(exc)
                continue
            problem = ""

    def _give_back(self) -> None:
        """The node left: release its tunnel addresses and block affinities, as Calico's node controller does.

        ``calicoctl delete node`` released them already, but this agent may
        have claimed its tunnel address again before it saw its Node go;
        kube-controllers releases a deleted node's tunnel addresses and
        affinities, and pycni has no kube-controllers.
        """
        nodename = self.config.nodename
        try:
            for kind in TUNNEL_HANDLE_KINDS:
                with contextlib.suppress(NotAssigned):
                    self.ipam.release_by_handle(startup.tunnel_handle(kind, nodename))
            released = self.ipam.release_host_affinities(nodename)
        except CNIError as exc:
            log.error("could not give back this node's tunnel addresses and blocks: %s", exc)
            return
        if released:
            log.info("released %d block affinit(ies) of the departed node", released)

    def shutdown(self) -> None:
        """Stop following the datastore, remove the natOutgoing table; the policy table (fail closed), devices
        and routes stay for the next agent (a node that left removes its policy table and BGP routes too)."""
        self.stopping.set()
        self.syncer.stop()
        if self.policy is not None:
            self.policy.stop()
            if self.left:  # a node that stays keeps its table: policy fails closed while no agent runs
                try:
                    if self.policy.remove():
                        log.info("policy table removed")
                except CNIError as exc:
                    log.error("could not remove the policy table: %s", exc)
        if self.dataplane is not None:
            try:
                if self.dataplane.nat.remove():
                    log.info("natOutgoing rules removed")
            except CNIError as exc:
                log.error("could not remove the natOutgoing rules: %s", exc)
        if self.left:
            self._give_back()
        self.routing.close(self.stop_bird, leaving=self.left)
        if self._ipr is not None:
            self._ipr.close()
        self.store.close()
        nodefiles.remove_pid_file(self.config.pid_path)
        if self._metrics_server is not None:
            self._metrics_server.close()
        log.info("stopped (%s)", "the node left: BGP routes removed" if self.left else "devices and routes stay")
