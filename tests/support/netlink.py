"""Proving what a dataplane writes: a netlink socket that counts change requests, and a fenced ``ip monitor``.

:class:`Counting` proves what was *sent* (every request that could change
the kernel); :class:`Monitor` proves what *changed* (the kernel announces no
event for a write that changes nothing). Together: a resync that finds
nothing to do sends nothing and changes nothing.

These are the helpers ``tests/integration/test_dataplane_drivers.py`` wrote
for the drivers themselves, here so that tests of the drivers' users (the
Flannel backends) need not import another test module.
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tests.support.netns import run

READS = frozenset({"dump", "get", "show"})
COUNTED = ("link", "addr", "route", "neigh")


class Counting:
    """A pyroute2 socket that records every request that could change the kernel (all but dumps and gets).

    ``link``, ``addr``, ``route`` and ``neigh`` are counted; anything else
    (``get_addr``, ``get_links``, ...) reads and is passed through.
    """

    def __init__(self, ipr: Any) -> None:
        self._ipr = ipr
        self.writes: list[tuple[str, str]] = []

    def _call(self, method: str, command: str, /, *args: Any, **kwargs: Any) -> Any:
        if command not in READS:
            self.writes.append((method, command))
        return getattr(self._ipr, method)(command, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        if name in COUNTED:
            return lambda command, /, *args, **kwargs: self._call(name, command, *args, **kwargs)
        return getattr(self._ipr, name)

    def take(self) -> list[tuple[str, str]]:
        """The writes since the last ``take``."""
        taken, self.writes = self.writes, []
        return taken

    def close(self) -> None:
        self._ipr.close()


class Monitor:
    """``ip monitor route neigh`` in the namespace: every change the kernel announces, fenced by a sentinel route."""

    SENTINEL = "10.255.255.254/32"

    def __init__(self, ns: str) -> None:
        self.ns = ns
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._proc = subprocess.Popen(
            ["ip", "-n", ns, "monitor", "route", "neigh"], stdout=subprocess.PIPE, text=True, bufsize=1
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._fences = 100  # sentinel metrics all have three digits: none is a prefix of another

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()

    def _wait_for(self, *words: str, timeout: float = 10.0) -> int | None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for index, line in enumerate(self.lines):
                    if all(word in line for word in words):
                        return index
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)

    def fence(self) -> int:
        """Index in ``lines`` after which every later kernel event is seen.

        ``ip monitor`` subscribes some time after it starts, so a sentinel it
        missed is removed and another (next metric) added until one is seen.
        """
        for _ in range(20):
            self._fences += 1
            metric = ["metric", str(self._fences)]
            run("ip", "route", "add", "blackhole", self.SENTINEL, "proto", "99", *metric, netns=self.ns)
            index = self._wait_for("10.255.255.254", " ".join(metric), timeout=0.5)
            run("ip", "route", "del", "blackhole", self.SENTINEL, "proto", "99", *metric, netns=self.ns)
            if index is not None:
                assert self._wait_for("Deleted", "10.255.255.254", " ".join(metric)) is not None
                return index
        raise AssertionError(f"ip monitor in {self.ns} never showed a sentinel route: {self.lines[-5:]}")

    @contextmanager
    def changes(self) -> Iterator[list[str]]:
        """The kernel events caused inside the block (the sentinel's own left out)."""
        seen: list[str] = []
        start = self.fence()
        yield seen
        end = self.fence()
        seen.extend(line for line in self.lines[start:end] if "10.255.255.254" not in line)

    def close(self) -> None:
        self._proc.terminate()
        self._proc.wait(5)
        self._reader.join(5)
