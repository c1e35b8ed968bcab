"""Metrics of a process that forks workers: prometheus_client's multiprocess mode, set up for ``pycni daemon``.

The daemon's calls are served by forked workers; a counter in a worker's
memory is invisible to the supervisor, which serves the scrapes (and
outlives every worker). Multiprocess mode fits exactly: each process writes
its values to its own memory-mapped file in ``PROMETHEUS_MULTIPROC_DIR``
(a few microseconds per update, no lock between processes, no IPC on the
call path), and the scrape sums the files (``MultiProcessCollector``). A
worker that exits leaves its file, so its counts stay in the totals, as a
counter must; :meth:`worker_exited` calls ``mark_process_dead``, which drops
what only live processes may report (live gauges; the daemon has none today,
the call is the documented bookkeeping). Alternatives considered: a pipe or
socket from each worker to the supervisor (a write and a reader thread per
call, and counts lost with a worker's unsent buffer), or a scrape that asks
every worker (a scrape would wait for the busiest worker).

The value backend is chosen when ``prometheus_client`` is first imported,
from the environment, so :func:`prepare` must run before that import: it
makes a fresh private directory (mode 0700; the library's docs require it to
be empty at start, so it is never reused across daemon runs), names it in
the environment (workers inherit it) and :meth:`close` removes it. A daemon
killed outright leaves the directory behind in the temporary directory.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

ENV = "PROMETHEUS_MULTIPROC_DIR"


class Multiprocess:
    """The directory of one daemon run and the scrape registry that sums it."""

    def __init__(self, directory: str) -> None:
        self.directory = directory

    def registry(self) -> CollectorRegistry:
        """A registry whose scrape sums every process's file (and nothing else yet)."""
        from prometheus_client import CollectorRegistry
        from prometheus_client.multiprocess import MultiProcessCollector

        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=self.directory)  # type: ignore[no-untyped-call]
        return registry

    def worker_exited(self, pid: int) -> None:
        from prometheus_client.multiprocess import mark_process_dead

        mark_process_dead(pid, self.directory)  # type: ignore[no-untyped-call]

    def close(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)
        if os.environ.get(ENV) == self.directory:
            del os.environ[ENV]


def prepare() -> Multiprocess:
    """Make this run's directory and switch prometheus_client (not imported yet) to multiprocess mode."""
    values = sys.modules.get("prometheus_client.values")
    if values is not None and not getattr(values.ValueClass, "_multiprocess", False):
        raise RuntimeError("prometheus_client was imported before multiprocess mode was set up")
    directory = tempfile.mkdtemp(prefix="pycni-metrics-")
    os.environ[ENV] = directory
    return Multiprocess(directory)
