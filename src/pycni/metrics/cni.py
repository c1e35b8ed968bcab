"""The CNI call metrics: one count, one latency observation and, on failure, one error per call served.

    pycni_cni_calls_total{plugin,verb}                     calls served (failed ones included)
    pycni_cni_call_errors_total{plugin,verb,code}          calls that replied with a CNI error, by its code
    pycni_cni_call_duration_seconds{plugin,verb}           histogram: from the connection to the reply sent

``plugin`` is the plugin type (``bridge``, ``host-local``); a type the
process does not serve is ``unknown``, and a ``CNI_COMMAND`` outside the
spec's verbs is ``verb="unknown"``, so what a client sends cannot create
new series. ``code`` is the spec's numeric error code as a string
(``"7"``, ``"999"``), as the error JSON carries it.

Metric objects are made by :class:`CallMetrics` itself (no module-level
metrics), after the process chose its value backend: the daemon's workers
create theirs in multiprocess mode (see :mod:`pycni.metrics.multiproc`).
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram

VERBS = frozenset({"ADD", "DEL", "CHECK", "GC", "STATUS", "VERSION"})
UNKNOWN = "unknown"
# A VERSION reply takes a millisecond; an ADD with a bridge and nft rules tens to hundreds; a
# DHCP lease or a slow datastore seconds.
DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class CallMetrics:
    """Records calls; ``registry=None`` leaves the metrics unregistered (multiprocess mode collects them from files)."""

    def __init__(self, plugins: Iterable[str], registry: CollectorRegistry | None = None) -> None:
        self._plugins = frozenset(plugins)
        self.calls = Counter(
            "pycni_cni_calls", "CNI calls served, by plugin type and verb.", ("plugin", "verb"), registry=registry
        )
        self.errors = Counter(
            "pycni_cni_call_errors",
            "CNI calls that replied with an error, by plugin type, verb and CNI error code.",
            ("plugin", "verb", "code"),
            registry=registry,
        )
        self.duration = Histogram(
            "pycni_cni_call_duration_seconds",
            "Time from accepting a CNI call to sending its reply, by plugin type and verb.",
            ("plugin", "verb"),
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self._children: dict[tuple[str, str], tuple[Counter, Histogram]] = {}

    def labels(self, plugin: str, verb: str) -> tuple[str, str]:
        """The label values a call is counted under (bounded: unknown types and verbs share one)."""
        return (plugin if plugin in self._plugins else UNKNOWN, verb if verb in VERBS else UNKNOWN)

    def observe(self, plugin: str, verb: str, code: int, seconds: float) -> None:
        """One call served: ``code`` 0 for success, else the CNI error code it replied with."""
        key = self.labels(plugin, verb)
        children = self._children.get(key)
        if children is None:  # a dict lookup per call instead of prometheus_client's locked label lookup
            children = self._children[key] = (self.calls.labels(*key), self.duration.labels(*key))
        children[0].inc()
        children[1].observe(seconds)
        if code:
            self.errors.labels(*key, str(code)).inc()
