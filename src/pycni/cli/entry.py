"""The ``pycni`` command: ``pycni daemon`` starts without importing the rest of the CLI.

Every other command goes to ``pycni.cli.main``. The full CLI imports the
runtime, the agents' parsers and more (about a quarter of a second on a busy
node), which a daemon restart would otherwise add to the time its socket is
missing (see ``pycni.daemon.cli``).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["daemon"]:
        from pycni.daemon.cli import main as daemon_main

        return daemon_main(args[1:])
    from pycni.cli.main import main as cli_main

    return cli_main(args)


if __name__ == "__main__":
    sys.exit(main())
