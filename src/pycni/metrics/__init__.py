"""Prometheus metrics of pycni's long-running processes, served on an opt-in ``--metrics-addr``.

One job per module:

- :mod:`~pycni.metrics.address`: parse and check ``--metrics-addr`` (standard library only);
- :mod:`~pycni.metrics.serve`: serve a registry on TCP or a unix socket;
- :mod:`~pycni.metrics.cni`: the CNI call counters and latency histogram (``pycni daemon``);
- :mod:`~pycni.metrics.multiproc`: prometheus_client's multiprocess mode for the daemon's workers;
- :mod:`~pycni.metrics.ipam` and :mod:`~pycni.metrics.host_local`: addresses used/free, read at scrape time;
- :mod:`~pycni.metrics.agent`: the node agents' lease, watch, resync and dataplane metrics.

The exposition format, histograms and multiprocess aggregation are
prometheus_client's (the library pycni issue 12 names); nothing here writes
the text format by hand. This package imports nothing heavy on its own:
``pycni`` builds its parser with :mod:`~pycni.metrics.address`, and a daemon
without ``--metrics-addr`` never imports prometheus_client.
"""
