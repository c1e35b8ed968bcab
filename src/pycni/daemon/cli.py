"""``pycni daemon``'s options and start, importable without the rest of the CLI.

A restarting daemon is a restart window for every container engine on the
node: calls made before its socket is at the path run in-process (slow, and
competing for the CPU the start needs). So ``pycni daemon`` is dispatched
before the full CLI is imported (``pycni.cli.entry``); this module and what
it imports before the socket is bound are the standard library, logging
set-up and the listener, nothing that imports a plugin, pyroute2 or the fabric.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from pycni.cli import logs
from pycni.daemon import wire
from pycni.metrics.address import METRICS_ADDR_HELP, metrics_address

HELP = "serve plugin calls from the plugin executables (warm path)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The daemon's options, shared by ``pycni daemon`` here and the full CLI's help."""
    parser.add_argument(
        "--socket",
        default=wire.DEFAULT_SOCKET,
        help="unix socket to serve (mode 0600); ignored when systemd passes one (socket activation)",
    )
    parser.add_argument("--log", action="store_true", help="one line on stderr per call, with its duration")
    parser.add_argument("--workers", type=int, default=0, help="worker processes (default: one per CPU)")
    parser.add_argument(
        "--metrics-addr",
        type=metrics_address,
        default=None,
        metavar="ADDR",
        help=METRICS_ADDR_HELP,
    )
    logs.add_arguments(parser)


def run(opts: argparse.Namespace) -> int:
    """Serve until SIGTERM; the exit status of ``pycni daemon``."""
    from pycni.daemon.server import main as daemon_main

    logs.configure("pycni daemon[%(process)d]", opts.log_level, opts.log_format, timestamps=False)
    return daemon_main(opts.socket, opts.log, opts.workers, opts.metrics_addr)


def main(argv: Sequence[str]) -> int:
    """``pycni daemon ARGS`` without building the full CLI's parser."""
    parser = argparse.ArgumentParser(prog="pycni daemon", description=HELP)
    add_arguments(parser)
    try:
        return run(parser.parse_args(argv))
    except KeyboardInterrupt:
        return 130
