"""nftables: rulesets rendered as text and applied as one atomic ``nft -f -`` transaction.

This is how the Go reference (through knftables), kube-proxy and Calico drive
nftables: one process per transaction, never one per rule, and the kernel
applies a transaction entirely or not at all.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from pycni.fsutil import is_open_at
from pycni.nft import engine
from pycni.spec.errors import CNIError, ErrorCode

COMMENT_MAX = 128
LOCK_DIR = "/run/pycni/locks"


class NftError(CNIError):
    def __init__(self, action: str, stderr: str) -> None:
        super().__init__(ErrorCode.INTERNAL, f"nftables: {action}: {stderr.strip() or 'failed'}")


def run(script: str, action: str = "apply ruleset") -> None:
    """Apply ``script`` (nft syntax, one command per line) atomically."""
    if not script.strip():
        return
    status, _output, errors = engine.execute(script)
    if status != 0:
        raise NftError(action, errors)


def list_objects(*what: str) -> list[dict[str, Any]]:
    """``nft -j list ...`` objects; none if the table or chain does not exist."""
    status, output, errors = engine.execute("list " + " ".join(what), json_output=True)
    if status != 0:
        if "No such file or directory" in errors:
            return []
        raise NftError(f"list {' '.join(what)}", errors)
    objects: list[dict[str, Any]] = json.loads(output).get("nftables", []) if output.strip() else []
    return objects


def list_table(family: str, table: str) -> tuple[set[str], list[dict[str, Any]]]:
    """The chain names and rules of a table; empty if it does not exist."""
    objects = list_objects("table", family, table)
    chains = {str(obj["chain"]["name"]) for obj in objects if "chain" in obj}
    return chains, [obj["rule"] for obj in objects if "rule" in obj]


def quote(comment: str) -> str:
    """A comment as an nft string literal: no double quotes, at most 128 characters."""
    return '"' + comment.replace('"', "")[:COMMENT_MAX] + '"'


def netns_inode() -> int:
    """The inode naming this thread's network namespace (unique among live namespaces, reused after)."""
    return os.stat("/proc/thread-self/ns/net").st_ino


@contextmanager
def locked(table: str) -> Iterator[None]:
    """Serialise read-modify-write of one table in this network namespace.

    A transaction is atomic, but "list, then decide, then apply" is not: a DEL
    that finds a table empty and drops it must not race an ADD filling it.
    The lock is per table and per namespace (the namespace's inode names it).
    The holder removes the lock file when it is done, so a namespace that goes
    away leaves no file behind; a waiter that wakes on a removed file tries
    again on the path's new file (only a holder removes, so one holder at a time).
    """
    os.makedirs(LOCK_DIR, mode=0o700, exist_ok=True)
    path = os.path.join(LOCK_DIR, f"nft-{table}-{netns_inode()}.lock")
    fd = _hold(path)
    try:
        yield
    finally:
        try:
            if is_open_at(fd, path):  # someone else's file if ours was removed under us (a reset, by hand)
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
        finally:
            os.close(fd)


def _hold(path: str) -> int:
    """An open descriptor holding the flock on the file now at ``path``."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if is_open_at(fd, path):
                return fd
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
