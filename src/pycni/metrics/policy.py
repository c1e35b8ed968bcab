"""The policy manager's metrics (``pycni calico-node``), registered in the agent's registry.

    pycni_policy_objects{kind}                      what this node's policy table holds after the last
                                                    write: endpoint (local workloads enforced), chain,
                                                    rule, set, element (set and map elements)
    pycni_policy_transactions_total                 nft transactions written for policy (each atomic)
    pycni_policy_transaction_operations             histogram: operations in one transaction (the size
                                                    of an update; a relabel elsewhere is a few elements)
    pycni_policy_update_duration_seconds            histogram: one datastore change to its table in the
                                                    kernel (rebuild, render, diff, apply)
    pycni_policy_errors_total                       transactions refused or failed (retried)
    pycni_policy_drift_repairs_total                times the table was found changed by someone else
                                                    and rewritten (checked every 90 s)

Recorded whether or not anything serves them, as the agent's own metrics are.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

KINDS = ("endpoint", "chain", "rule", "set", "element")
OPERATION_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 50000)
UPDATE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class PolicyMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        registry = registry if registry is not None else CollectorRegistry()
        self.objects = Gauge(
            "pycni_policy_objects",
            "What this node's policy table holds after the last write, by kind.",
            ("kind",),
            registry=registry,
        )
        for kind in KINDS:
            self.objects.labels(kind).set(0)
        self.transactions = Counter(
            "pycni_policy_transactions", "Policy transactions written to nftables (each atomic).", registry=registry
        )
        self.operations = Histogram(
            "pycni_policy_transaction_operations",
            "Operations in one policy transaction.",
            buckets=OPERATION_BUCKETS,
            registry=registry,
        )
        self.update_duration = Histogram(
            "pycni_policy_update_duration_seconds",
            "From a datastore change to its policy table in the kernel: rebuild, render, diff and apply.",
            buckets=UPDATE_BUCKETS,
            registry=registry,
        )
        self.errors = Counter(
            "pycni_policy_errors", "Policy transactions refused or failed (retried).", registry=registry
        )
        self.drift_repairs = Counter(
            "pycni_policy_drift_repairs",
            "Times the policy table was found changed outside the agent and rewritten.",
            registry=registry,
        )

    def written(self, operations: int) -> None:
        self.transactions.inc()
        self.operations.observe(operations)

    def holds(self, endpoints: int, chains: int, rules: int, sets: int, elements: int) -> None:
        for kind, count in zip(KINDS, (endpoints, chains, rules, sets, elements), strict=True):
            self.objects.labels(kind).set(count)
