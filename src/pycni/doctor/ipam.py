"""host-local reservations and result-cache entries with no container behind them.

A pod whose DEL never ran (a runtime crash, a node that lost power, a deleted
namespace) leaves its address reserved in ``<dataDir>/<network>/`` and its
result in ``<cache>/results/``; host-local hands the address to nobody else,
and a range fills up this way. An attachment is live while the runtime's
result cache holds it and the network namespace it names still exists.
"""

from __future__ import annotations

import os
import stat

from pycni.doctor.context import Node
from pycni.doctor.model import Check, Finding, listed, ok, warn
from pycni.ipam.store import LOCK_NAME, Store
from pycni.runtime.cache import Attachment
from pycni.spec.errors import CNIError, ErrorCode

_NSFS_DEV = os.stat("/proc/self/ns/net").st_dev  # every namespace file lives on the one nsfs


def netns_alive(path: str) -> bool:
    """Whether ``path`` is a network namespace now (a bind mount of one, or a live process's ``ns/net``).

    An ``ip netns`` file whose namespace was unmounted stays behind as an
    empty file on /run: it exists, but not on nsfs.
    """
    try:
        return os.stat(path).st_dev == _NSFS_DEV
    except OSError:
        return False


def _attachments(node: Node) -> list[Attachment]:
    try:
        return node.results.attachments()
    except CNIError:
        return []


def check_result_cache(node: Node) -> list[Finding]:
    results_dir = node.results.results_dir
    try:
        names = sorted(n for n in os.listdir(results_dir) if not n.startswith("."))
    except FileNotFoundError:
        return []
    except OSError as exc:
        return [warn("result_cache", f"cannot list {results_dir}: {exc.strerror}", "check its permissions")]
    readable = _attachments(node)
    read_names = {f"{a.network}-{a.container_id}-{a.ifname}" for a in readable}
    damaged = [n for n in names if n not in read_names]
    stale = [a for a in readable if a.netns and not netns_alive(a.netns)]
    known = {n.name for n in node.networks}
    orphaned = [a for a in readable if a.network not in known and a not in stale]
    findings: list[Finding] = []
    if stale:
        items = [f"{a.network}/{a.container_id[:12]}/{a.ifname} (netns {a.netns})" for a in stale]
        findings.append(
            warn(
                "result_cache",
                f"{len(stale)} cached attachment(s) in {results_dir} whose network namespace is gone: {listed(items)}",
                "the runtime never ran DEL for them: run its CNI DEL (or pycni gc NETWORK --keep ID/IF for the "
                "live ones), which releases their addresses and removes the cache entries",
            )
        )
    if orphaned:
        items = [f"{a.network}/{a.container_id[:12]}/{a.ifname}" for a in orphaned]
        findings.append(
            warn(
                "result_cache",
                f"{len(orphaned)} cached attachment(s) of networks with no config in {node.options.cni_conf_dir}: "
                f"{listed(items)}",
                "put the network's config back and run DEL for them, or remove the cache files once their "
                "containers are gone",
            )
        )
    if damaged:
        findings.append(
            warn(
                "result_cache",
                f"{len(damaged)} unreadable or inconsistent cache file(s) in {results_dir}: {listed(damaged)}",
                "libcni skips them (no GC, no DEL from them): remove each once its container is gone",
            )
        )
    if not findings:
        findings.append(ok("result_cache", f"{len(readable)} cached attachment(s), each with its network namespace"))
    return findings


def _leaks(network: str, directory: str, live: dict[tuple[str, str], Attachment]) -> tuple[int, list[str]]:
    """How many reservations the directory holds, and those no live attachment holds."""
    lock = os.path.join(directory, LOCK_NAME)
    if os.path.lexists(lock) and not stat.S_ISREG(os.lstat(lock).st_mode):
        # host-local would replace it; doctor only reads, so it says so instead of taking it
        raise CNIError(ErrorCode.IO_FAILURE, f"{lock} is not a regular file (host-local replaces it at its next use)")
    store = Store(network, os.path.dirname(directory))
    with store.locked():  # the flock host-local takes (an absent lock file is created empty, as host-local does)
        reservations = store.reservations()
    found: list[str] = []
    for reservation in reservations:
        owner = reservation.owner
        if owner is None:
            found.append(f"{reservation.ip} (names no container: damaged)")
            continue
        container_id, ifname = owner
        attachment = next(
            (a for (cid, ifn), a in live.items() if cid == container_id and (ifname is None or ifn == ifname)), None
        )
        if attachment is None:
            found.append(f"{reservation.ip} ({container_id[:12]}: no cached result)")
        elif attachment.netns and not netns_alive(attachment.netns):
            found.append(f"{reservation.ip} ({container_id[:12]}: netns {attachment.netns} gone)")
    return len(reservations), found


def check_host_local(node: Node) -> list[Finding]:
    dirs = [(n.name, d) for n in node.networks for d in n.described.ipam_dirs]
    present = [(name, d) for name, d in dirs if os.path.isdir(d)]
    if not dirs:
        return []
    attachments = _attachments(node)
    leaks: list[str] = []
    problems: list[str] = []
    count = 0
    for name, directory in present:
        live = {(a.container_id, a.ifname): a for a in attachments if a.network == name}
        try:
            held, found = _leaks(name, directory, live)
        except CNIError as error:
            problems.append(error.msg)
            continue
        count += held
        leaks += [f"{name} {item}" for item in found]
    findings: list[Finding] = []
    if problems:
        findings.append(warn("host_local", f"cannot read reservations: {listed(problems, 3)}", "check the directory"))
    if leaks:
        findings.append(
            warn(
                "host_local",
                f"{len(leaks)} host-local reservation(s) with no container behind them (leaked addresses): "
                f"{listed(leaks)}",
                "run the runtime's CNI DEL (or GC: pycni gc NETWORK --keep ID/IF of the live pods) for them; a "
                "reservation is the file named after the address under the network's dataDir, removable once "
                "its container is gone",
            )
        )
    if not findings:
        where = ", ".join(d for _, d in present) or "none yet"
        findings.append(ok("host_local", f"{count} reservation(s), each held by a cached attachment ({where})"))
    return findings


CHECKS = [
    Check("host_local", check_host_local, "host-local reservations each held by a live attachment"),
    Check("result_cache", check_result_cache, "result cache entries each with a live network namespace"),
]
