"""The shell-session helpers of ``pycni demo``'s cases: echo a command, run it (in a namespace), show its output.

A case module imports these instead of :mod:`pycni.cli.demo`, which imports
the case modules, so no import cycle forms between them.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence


class DemoFailed(Exception):
    """A step of the demo did not do what it shows; the message says which and why."""


def say(text: str) -> None:
    print(f"\n=== {text}", flush=True)


def sh(
    argv: Sequence[str],
    *,
    netns: str | None = None,
    env: dict[str, str] | None = None,
    show: bool = True,
    check: bool = True,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    """Run a command (inside ``netns``), echoing it like a shell session; DemoFailed if it fails and ``check``."""
    full = ["ip", "netns", "exec", netns, *argv] if netns else list(argv)
    if show:
        shown = " ".join(f"{k}={v}" for k, v in (env or {}).items())
        prefix = f"[{netns}] " if netns else ""
        print(f"{prefix}$ {shown + ' ' if shown else ''}{shlex.join(argv)}", flush=True)
    try:
        proc = subprocess.run(
            full,
            env={**os.environ, **(env or {})},
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        raise DemoFailed(f"{shlex.join(argv)} did not finish within {timeout} s") from None
    if show and proc.stdout.strip():
        print(proc.stdout.rstrip(), flush=True)
    if check and proc.returncode != 0:
        raise DemoFailed(f"{shlex.join(argv)} failed ({proc.returncode}): {(proc.stderr or proc.stdout).strip()}")
    return proc


def netns_pids(name: str) -> list[int]:
    proc = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True, check=False)
    return [int(pid) for pid in proc.stdout.split()]


def remove_namespaces(names: Sequence[str], grace: float = 5.0) -> None:
    """Stop every process in each namespace (SIGTERM, SIGKILL after ``grace`` s), then delete the namespace.

    Waiting for the processes matters: a namespace whose last process still
    runs lives on after ``ip netns del``, and so would its links and BIRD.
    """
    present = [ns for ns in names if os.path.exists(f"/run/netns/{ns}")]
    for ns in present:
        for pid in netns_pids(ns):
            _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for ns in present:
        while (pids := netns_pids(ns)) and time.monotonic() < deadline:
            time.sleep(0.05)
        for pid in pids:
            _signal(pid, signal.SIGKILL)
        forget_namespace_files(f"/run/netns/{ns}")
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)


def forget_namespace_files(path: str) -> None:
    """Remove the files pycni keeps per network namespace (nft lock files, attachment records) for ``path``.

    They are named by the namespace's inode and stay after the namespace is
    deleted (a lock file is never removed while in use); once nothing runs in
    the namespace they are nobody's, so the demo leaves none behind.
    """
    from pycni import nft
    from pycni.nft import attachments

    try:
        inode = os.stat(path).st_ino
    except OSError:
        return
    for directory, suffix in ((attachments.ROOT, f"-{inode}"), (nft.LOCK_DIR, f"-{inode}.lock")):
        try:
            entries = os.listdir(directory)
        except OSError:
            continue
        for entry in entries:
            if entry.endswith(suffix):
                target = os.path.join(directory, entry)
                if os.path.isdir(target):
                    shutil.rmtree(target, ignore_errors=True)
                else:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(target)


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
