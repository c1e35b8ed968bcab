"""The node agents' metrics (``pycni flanneld``, ``pycni calico-node``): one object per agent, its own registry.

    pycni_agent_lease_renewals_total                 subnet lease renewals written (flanneld)
    pycni_agent_lease_renewal_errors_total           renewals the store refused or did not answer (flanneld)
    pycni_agent_watch_reconnects_total               datastore watch lost and started over (re-list, watch again;
                                                     failed attempts included)
    pycni_agent_resync_duration_seconds              histogram: one periodic resync (store and kernel re-read)
    pycni_agent_last_sync_timestamp_seconds          when the dataplane last matched a fresh read of the store
                                                     (its age: time() - pycni_agent_last_sync_timestamp_seconds)
    pycni_dataplane_objects{kind}                    objects the dataplane drivers hold as desired after the last
                                                     reconcile: route, neighbour, fdb, and nft_element (calico-node)

plus prometheus_client's ``process_*`` metrics (CPU, memory, descriptors)
of the agent's process. An agent is one process, so plain in-memory
metrics serve (no multiprocess mode); the registry is the agent's own, not
the library's global one, so two agents in one test process stay apart.
The agent records into this object whether or not anything serves it (a
counter's increment costs well under a microsecond), which keeps the agent's
code free of "if metrics" branches.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector

from pycni.dataplane.stats import ApplyResult

# The drivers' kinds (pycni.dataplane) as label values, singular as Prometheus labels usually are.
KINDS = {"routes": "route", "neighbours": "neighbour", "fdb": "fdb"}
NFT_ELEMENT = "nft_element"
RESYNC_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class AgentMetrics:
    """What an agent counts; ``leases`` adds the lease metrics (an agent that holds a lease)."""

    def __init__(self, *, leases: bool = False) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        self.lease_renewals: Counter | None = None
        self.lease_renewal_errors: Counter | None = None
        if leases:
            self.lease_renewals = Counter(
                "pycni_agent_lease_renewals", "Subnet lease renewals written to the store.", registry=self.registry
            )
            self.lease_renewal_errors = Counter(
                "pycni_agent_lease_renewal_errors",
                "Subnet lease renewals that failed (the store refused or did not answer); retried.",
                registry=self.registry,
            )
        self.watch_reconnects = Counter(
            "pycni_agent_watch_reconnects",
            "Times the datastore watch was lost and started over (re-list and watch again), failed attempts included.",
            registry=self.registry,
        )
        self.resync_duration = Histogram(
            "pycni_agent_resync_duration_seconds",
            "Duration of one periodic resync: the store and the kernel re-read, drift repaired.",
            buckets=RESYNC_BUCKETS,
            registry=self.registry,
        )
        self.last_sync = Gauge(
            "pycni_agent_last_sync_timestamp_seconds",
            "Unix time the dataplane last matched a fresh read of the datastore (age: time() minus this).",
            registry=self.registry,
        )
        self.dataplane_objects = Gauge(
            "pycni_dataplane_objects",
            "Dataplane objects the agent's drivers hold as desired after the last reconcile, by kind.",
            ("kind",),
            registry=self.registry,
        )
        for kind in KINDS.values():
            self.dataplane_objects.labels(kind).set(0)

    def renewed(self) -> None:
        if self.lease_renewals is not None:
            self.lease_renewals.inc()

    def renewal_failed(self) -> None:
        if self.lease_renewal_errors is not None:
            self.lease_renewal_errors.inc()

    def synced(self) -> None:
        """The dataplane now matches what the store said a moment ago."""
        self.last_sync.set_to_current_time()

    def dataplane(self, results: Iterable[ApplyResult], nft_elements: int | None = None) -> None:
        """Record the desired count per kind from the drivers' latest results (one per driver counts)."""
        latest = {(result.kind, result.target): result.desired for result in results}
        totals = dict.fromkeys(KINDS.values(), 0)
        for (kind, _target), desired in latest.items():
            label = KINDS.get(kind)
            if label is not None:
                totals[label] += desired
        if nft_elements is not None:
            totals[NFT_ELEMENT] = nft_elements
        for label, count in totals.items():
            self.dataplane_objects.labels(label).set(count)
