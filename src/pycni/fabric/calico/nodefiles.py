"""What calico-node leaves on the node for the CNI plugin: the nodename file, the MTU file; the host MTU.

* ``/var/lib/calico/nodename`` (calico/node's startup ``writeNodeConfig``):
  the plugin's ``nodename_file``, so pods are recorded under the name the
  agent registered;
* ``/var/lib/calico/mtu`` (Felix's ``writeMTUFile``): the pod MTU the agent
  computed, which the plugin uses when its config says ``mtu: 0``;
* the agent's pid file (``<run dir>/calico-node.pid`` by default), which
  ``pycni calicoctl node status`` reads to say whether this node's agent runs;
* the host MTU (Felix's ``findHostMTU``): the smallest MTU among the up
  interfaces matching ``mtuIfacePattern``, else the MTU of the interface
  holding the node's address.

Several nodes share one machine in tests, so every path is a flag; the files
are written atomically and only when their content changes.
"""

from __future__ import annotations

import logging
import os
import re
from typing import TYPE_CHECKING

from pycni.fsutil import write_atomic
from pycni.net import link as net_link

if TYPE_CHECKING:
    from pyroute2 import IPRoute

log = logging.getLogger("pycni.fabric.calico.nodefiles")


def write_if_changed(path: str, text: str) -> bool:
    """Write ``text`` to ``path`` (atomically, mode 0644) unless it already holds it; whether it wrote."""
    try:
        with open(path, encoding="utf-8") as handle:
            if handle.read() == text:
                return False
    except OSError:
        pass
    directory = os.path.dirname(path)
    if directory:
        os.makedirs(directory, exist_ok=True)
    write_atomic(path, text.encode(), mode=0o644)
    return True


def write_nodename(path: str, nodename: str) -> bool:
    return write_if_changed(path, nodename)


def write_mtu(path: str, mtu: int) -> bool:
    return write_if_changed(path, f"{mtu}\n")


def write_pid_file(path: str) -> None:
    """This process's pid, so ``calicoctl node status`` tells this node's agent from another node's."""
    write_if_changed(path, f"{os.getpid()}\n")


def remove_pid_file(path: str) -> None:
    """Remove the pid file if it is still this process's (a successor may have written its own)."""
    try:
        with open(path, encoding="utf-8") as handle:
            if handle.read().strip() != str(os.getpid()):
                return
        os.unlink(path)
    except OSError:
        pass


def host_mtu(ipr: IPRoute, pattern: str, fallback_interface: str = "") -> int:
    """The smallest MTU of the up interfaces whose names match ``pattern`` (else the fallback's, else 1500)."""
    regex = re.compile(pattern)
    mtus = []
    fallback = 0
    for msg in ipr.get_links():
        name = str(msg.get_attr("IFLA_IFNAME") or "")
        mtu = int(msg.get_attr("IFLA_MTU") or 0)
        if name == fallback_interface:
            fallback = mtu
        if mtu and int(msg["flags"]) & net_link.IFF_UP and regex.search(name):
            mtus.append(mtu)
    if mtus:
        return min(mtus)
    return fallback or 1500
