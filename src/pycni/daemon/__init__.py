"""The warm path: a long-running process that keeps pycni's plugins imported.

A plugin executable (the stdlib-only shim) hands its call to the daemon over
a unix socket and prints the reply; see :mod:`pycni.daemon.wire` for the
frames and :mod:`pycni.daemon.server` for the daemon. This package's
``__init__`` imports nothing, because the shim imports ``wire`` from it.
"""
