"""``pycni reset``: list (by default) or remove (``--yes``) everything of pycni's on this node.

The seed article's uninstall (§2.1.10, §2.2.7) deletes ``cni0``,
``flannel.1``, ``tunl0`` and empties ``/var/lib/cni`` and ``/etc/cni/net.d``;
this does that for pycni's objects only, in the network namespace it runs in,
and leaves the user's bridges, routes, tables and CNI config files alone.
Every path is an option (``--state-root`` moves them all), so a node whose
files live elsewhere, or a test's, can be reset.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

from pycni.reset import items
from pycni.reset.inventory import Inventory, ResetError, take
from pycni.reset.paths import Paths
from pycni.reset.remove import remove


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pycni reset",
        description="Remove what pycni made on this node (this network namespace and the node's state paths): "
        "its networks' CNI config files, bridges, pod veths whose pod is gone and ifbs, the agents' devices, "
        "nftables tables and routes, IPAM reservations, result caches and state. Without --yes it only lists them.",
    )
    p.add_argument("--yes", action="store_true", help="remove them (default: print what would be removed)")
    p.add_argument("--network", default=None, metavar="NAME", help="only this pycni network's objects")
    p.add_argument("--state-root", default="", metavar="DIR", help="look for every default path under DIR")
    defaults = Paths()
    for f in dataclasses.fields(Paths):
        p.add_argument(
            "--" + f.name.replace("_", "-"),
            dest=f.name,
            default=None,
            metavar="PATH",
            help=f"default {getattr(defaults, f.name)}",
        )
    return p


def paths_of(opts: argparse.Namespace) -> Paths:
    base = Paths().rerooted(opts.state_root) if opts.state_root else Paths()
    given = {f.name: getattr(opts, f.name) for f in dataclasses.fields(Paths) if getattr(opts, f.name) is not None}
    return dataclasses.replace(base, **given)


def _print_listing(found: Inventory, verb: str) -> None:
    for line in items.render(found.items, verb):
        print(line)
    for note in found.notes:
        print(f"note: {note}")


def main(argv: list[str]) -> int:
    opts = parser().parse_args(argv)
    paths = paths_of(opts)
    try:
        found = take(paths, opts.network)
    except ResetError as exc:
        print(f"pycni reset: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001 - a failed look (no netlink, no nft) is one line, not a traceback
        print(f"pycni reset: cannot take the inventory of this node: {exc}", file=sys.stderr)
        return 1
    if not opts.yes:
        _print_listing(found, "would remove")
        for agent in found.agents:
            print(f"running: {agent}: --yes refuses until it is stopped")
        print(f"{len(found.items)} object(s) of pycni's found" + ("; --yes removes them" if found.items else ""))
        return 0
    if found.agents:
        for agent in found.agents:
            print(f"pycni reset: {agent} still runs on this node; stop it first (nothing was removed)", file=sys.stderr)
        return 1
    outcome = remove(found.items)
    for line in items.render(outcome.removed, "removed"):
        print(line)
    for note in found.notes:
        print(f"note: {note}")
    for error in outcome.errors:
        print(f"pycni reset: {error}", file=sys.stderr)
    print(f"{len(outcome.removed)} object(s) removed" + (f", {len(outcome.errors)} failed" if outcome.errors else ""))
    return 1 if outcome.errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
