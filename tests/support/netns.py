"""Network namespaces for tests, removed afterwards even when a test fails."""

from __future__ import annotations

import os
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
            run("ip", "netns", "del", name, check=False)
        self.names.clear()


@contextmanager
def netns_pool(prefix: str = "pyt") -> Iterator[NetnsPool]:
    pool = NetnsPool(prefix)
    try:
        yield pool
    finally:
        pool.cleanup()
