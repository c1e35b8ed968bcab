"""Remove what the inventory found, each idempotently: an object already gone counts as removed.

Errors are collected per object (``could not remove <object>: <why>``), never
raised, so one stuck object does not keep the rest.
"""

from __future__ import annotations

import errno
import os
import shutil
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pycni import nft
from pycni.fabric.calico import calculation as calico_calc
from pycni.net import netns
from pycni.net import route as net_route
from pycni.net.errors import NetlinkError
from pycni.reset import items
from pycni.spec.errors import CNIError

if TYPE_CHECKING:
    from pyroute2 import IPRoute

_GONE = (errno.ENODEV, errno.ENOENT, errno.ESRCH)
IPIP_FALLBACK = calico_calc.IPIP_DEVICE  # the ipip module makes it and refuses to delete it (the article unloads it)


@dataclass
class Outcome:
    removed: list[items.Item] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def _path(item: items.PathItem) -> None:
    try:
        if os.path.isdir(item.path) and not os.path.islink(item.path):
            shutil.rmtree(item.path)
        else:
            os.unlink(item.path)
    except FileNotFoundError:
        pass


def _link(ipr: IPRoute, item: items.LinkItem) -> None:
    """Delete the link if the index still names it (an index is reused once a link is gone)."""
    try:
        msgs = ipr.link("get", index=item.index)
    except NetlinkError as exc:
        if exc.code in _GONE:
            return
        raise
    if not msgs or msgs[0].get("ifname") != item.name:
        return
    try:
        ipr.link("del", index=item.index)
    except NetlinkError as exc:
        if exc.code in _GONE:
            return
        if item.name == IPIP_FALLBACK and exc.code == errno.EOPNOTSUPP:
            raise OSError(
                exc.code, f"{item.name} is the ipip module's own device: `modprobe -r ipip` removes it"
            ) from None
        raise


def _nft(script: str, action: str) -> None:
    status, _output, errors = nft.engine.execute(script)
    if status != 0 and "No such file or directory" not in errors:
        raise nft.NftError(action, errors)


def _one(ipr: IPRoute, item: items.Item) -> None:
    if isinstance(item, items.PathItem):
        _path(item)
    elif isinstance(item, items.LinkItem):
        _link(ipr, item)
    elif isinstance(item, items.RouteItem) and item.route is not None:
        net_route.delete(ipr, item.route)
    elif isinstance(item, items.TableItem):
        _nft(f"delete table {item.family} {item.table}\n", f"delete table {item.name}")
    elif isinstance(item, items.ChainItem):
        t = f"{item.family} {item.table}"
        _nft(f"flush chain {t} {item.chain}\ndelete chain {t} {item.chain}\n", f"delete chain {item.name}")
    elif isinstance(item, items.RuleItem):
        _nft(f"delete rule {item.family} {item.table} {item.chain} handle {item.handle}\n", f"delete {item.name}")


def remove(found: list[items.Item]) -> Outcome:
    """Remove ``found`` in group order (config, nftables, routes, links, then files)."""
    outcome = Outcome()
    ordered = sorted(found, key=lambda item: items.GROUPS.index(item.group))
    ipr = netns.iproute_here()
    try:
        for item in ordered:
            try:
                _one(ipr, item)
            except (OSError, NetlinkError, CNIError) as exc:
                outcome.errors.append(f"could not remove {item.line()}: {exc}")
            else:
                outcome.removed.append(item)
    finally:
        ipr.close()
    return outcome
