"""Network namespaces for tests, removed afterwards even when a test fails."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress


def run(*cmd: str, check: bool = True, netns: str | None = None, **kwargs: object) -> subprocess.CompletedProcess[str]:
    """Run a command (inside ``netns`` if given) and capture its output as text."""
    argv = ["ip", "netns", "exec", netns, *cmd] if netns else list(cmd)
    return subprocess.run(argv, check=check, capture_output=True, text=True, **kwargs)  # type: ignore[call-overload]


class NetnsPool:
    """Creates uniquely named namespaces and removes every one it made."""

    def __init__(self, prefix: str = "pyt") -> None:
        self.prefix = prefix
        self.names: list[str] = []

    def new(self, label: str = "ns", lo_up: bool = True) -> str:
        name = f"{self.prefix}-{label}-{uuid.uuid4().hex[:6]}"
        run("ip", "netns", "add", name)
        self.names.append(name)
        if lo_up:
            run("ip", "link", "set", "lo", "up", netns=name)
        return name

    @staticmethod
    def path(name: str) -> str:
        return f"/run/netns/{name}"

    def cleanup(self) -> None:
        for name in reversed(self.names):
            # Kill anything still running inside (httpd, iperf3), then delete.
            pids = run("ip", "netns", "pids", name, check=False).stdout.split()
            for pid in pids:
                with suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), 9)
            forget_namespace_state(self.path(name))
            run("ip", "netns", "del", name, check=False)
        self.names.clear()


def forget_namespace_state(path: str) -> None:
    """Remove what pycni keeps on disk per network namespace (nft locks, attachment records).

    A node namespace deleted while containers are still attached leaves
    them, keyed by its inode, until the kernel reuses that inode; a test
    deleting its namespaces removes them so the machine is left as it was.
    """
    from pycni import nft
    from pycni.nft import attachments

    try:
        inode = os.stat(path).st_ino
    except OSError:
        return
    for directory, suffix in ((attachments.ROOT, f"-{inode}"), (nft.LOCK_DIR, f"-{inode}.lock")):
        for entry in os.listdir(directory) if os.path.isdir(directory) else []:
            if entry.endswith(suffix):
                target = os.path.join(directory, entry)
                if os.path.isdir(target):
                    shutil.rmtree(target, ignore_errors=True)
                else:
                    with suppress(FileNotFoundError):
                        os.unlink(target)


@contextmanager
def netns_pool(prefix: str = "pyt") -> Iterator[NetnsPool]:
    pool = NetnsPool(prefix)
    try:
        yield pool
    finally:
        pool.cleanup()
