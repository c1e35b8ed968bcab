"""``pycni daemon --metrics-addr``: the supervisor serves the scrapes, every worker records its own calls.

Workers are forked and serve the calls, so their counters live in their
memory; prometheus_client's multiprocess mode (:mod:`pycni.metrics.multiproc`)
has each worker write its values to a file of its own and the supervisor's
scrape sum them, so the totals survive a worker's exit and its replacement.
The supervisor's registry also carries the host-local address gauges, read
from the data directories at scrape time (:mod:`pycni.metrics.host_local`).

The listener is bound before the daemon takes its socket, so a bad or busy
address is one error and exit 1 with nothing else touched. Forked workers
close their copy of the listening descriptor at once (a worker draining
after its supervisor died must not hold the port or path from the next
daemon). Without ``--metrics-addr`` none of this is imported and a call
costs nothing extra.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from pycni.metrics import multiproc

if TYPE_CHECKING:
    from pycni.metrics.address import ListenAddress
    from pycni.metrics.cni import CallMetrics
    from pycni.metrics.serve import MetricsServer


class DaemonMetrics:
    def __init__(self, processes: multiproc.Multiprocess, server: MetricsServer) -> None:
        self.processes = processes
        self.server = server

    @classmethod
    def start(cls, address: ListenAddress) -> DaemonMetrics:
        """Switch to multiprocess mode, then bind ``address`` and serve from a thread of this (the supervisor)."""
        processes = multiproc.prepare()  # before anything imports prometheus_client
        try:
            from pycni.metrics import host_local
            from pycni.metrics.ipam import IpamCollector
            from pycni.metrics.serve import serve

            registry = processes.registry()
            registry.register(IpamCollector(host_local.usage))
            return cls(processes, serve(address, registry))
        except BaseException:
            processes.close()
            raise

    def recorder(self, plugins: Iterable[str]) -> CallMetrics:
        """A worker's call metrics (made in the worker, so its values go to the worker's own file)."""
        from pycni.metrics.cni import CallMetrics

        return CallMetrics(plugins)

    def in_worker(self) -> None:
        """Right after the fork, in the worker: the listener is the supervisor's alone."""
        self.server.forget()

    def worker_exited(self, pid: int) -> None:
        self.processes.worker_exited(pid)

    def close(self) -> None:
        self.server.close()
        self.processes.close()
