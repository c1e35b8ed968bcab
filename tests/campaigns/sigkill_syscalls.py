"""SIGKILL right before a process's N-th state-changing system call, through strace's fault injection.

A kill at a random moment of a plugin's life lands mostly in Python's start-up
and imports; the windows between two of its effects (a temporary file written
but not yet renamed, a reservation file created but still empty, a netlink
request not yet sent) last microseconds, so a time-drawn campaign of a few
hundred kills almost never hits them. ``strace -e inject=CALL:signal=KILL:when=K``
delivers SIGKILL on entry to the K-th ``CALL`` of one process, before that call
runs: every point between two effects can be hit, and the trace says which call
it was. strace counts ``when`` per system call (the K-th ``rename``, not the
K-th call of a set), so the N-th effect of a process is aimed at as the k-th
call of its own kind.

The ``syscall`` target of :mod:`tests.campaigns.sigkill` uses this for the
runtime and for each plugin of the chain: an uncut call traced whole lists the
effects of every process, a kill point is drawn uniformly over all of them, and
only the chosen process runs with the injection. Plugins are reached through
wrapper executables on ``CNI_PATH`` that ``exec`` strace only for the call named
in the environment (``PYCNI_SIGKILL_*``: the runtime passes its environment on
to plugins, and they to their delegates).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

STRACE = shutil.which("strace") or "/usr/bin/strace"
# Calls that change something outside the process, or hand data to something that will: files and
# directories, writes (files, /proc/sys, pipes), netlink and nftables messages, namespace switches, locks.
EFFECTS = ",".join(
    (
        "rename", "renameat", "renameat2", "link", "linkat", "symlink", "symlinkat", "unlink", "unlinkat",
        "mkdir", "mkdirat", "rmdir", "write", "writev", "pwrite64", "fsync", "fdatasync", "ftruncate",
        "fchmod", "sendto", "sendmsg", "setns", "flock",
    )
)  # fmt: skip
ENV_TYPE = "PYCNI_SIGKILL_TYPE"  # the plugin type to trace ("*": every one)
ENV_VERB = "PYCNI_SIGKILL_VERB"  # only in calls with this CNI_COMMAND
ENV_CALL = "PYCNI_SIGKILL_CALL"  # the system call to kill at ...
ENV_AT = "PYCNI_SIGKILL_AT"  # ... on its k-th occurrence; empty: trace only (counting)
ENV_DIR = "PYCNI_SIGKILL_DIR"  # where the traces go, one file per process
RUNTIME = "runtime"

WRAPPER = """#!/bin/sh
# SIGKILL campaign: the {plugin_type} plugin, under strace for the call named by PYCNI_SIGKILL_*.
case "$PYCNI_SIGKILL_TYPE" in "{plugin_type}"|"*") traced=yes ;; *) traced= ;; esac
if [ -n "$traced" ] && [ "$PYCNI_SIGKILL_VERB" = "$CNI_COMMAND" ]; then
    if [ -n "$PYCNI_SIGKILL_AT" ]; then
        exec {strace} -qq -o "$PYCNI_SIGKILL_DIR/{plugin_type}.$$" -e trace={effects} \\
            -e inject="$PYCNI_SIGKILL_CALL":signal=KILL:when="$PYCNI_SIGKILL_AT" {real}
    fi
    exec {strace} -qq -o "$PYCNI_SIGKILL_DIR/{plugin_type}.$$" -e trace={effects} {real}
fi
exec {real}
"""


@dataclass(frozen=True)
class Aim:
    """Kill ``process`` before its effect number ``n`` of ``total``: the ``occurrence``-th ``syscall`` it makes."""

    process: str
    n: int
    total: int
    syscall: str
    occurrence: int


def available() -> bool:
    return os.access(STRACE, os.X_OK)


def install_wrappers(directory: Path, real_dir: Path, plugin_types: list[str]) -> None:
    """One wrapper per plugin type in ``directory``, running the real executable of ``real_dir``."""
    directory.mkdir(parents=True, exist_ok=True)
    for plugin_type in plugin_types:
        path = directory / plugin_type
        text = WRAPPER.format(plugin_type=plugin_type, strace=STRACE, effects=EFFECTS, real=real_dir / plugin_type)
        path.write_text(text)
        path.chmod(0o755)


def prefix(trace: Path, aim: Aim | None) -> list[str]:
    """strace in front of a command, tracing (and with ``aim``, killing) its first thread only.

    Not following children or threads: plugins have their own wrappers, and an
    agent's start-up happens in its first thread, before it starts others.
    """
    argv = [STRACE, "-qq", "-o", str(trace), "-e", f"trace={EFFECTS}"]
    if aim is not None:
        argv += ["-e", f"inject={aim.syscall}:signal=KILL:when={aim.occurrence}"]
    return argv


def runtime_prefix(trace_dir: Path, aim: Aim | None) -> list[str]:
    return prefix(trace_dir / f"{RUNTIME}.trace", aim)


def plugin_env(trace_dir: Path, plugin_type: str, verb: str, aim: Aim | None) -> dict[str, str]:
    """The environment that makes ``plugin_type``'s wrapper trace (and with ``aim``, kill) its ``verb`` call."""
    env = {ENV_TYPE: plugin_type, ENV_VERB: verb.upper(), ENV_DIR: str(trace_dir), ENV_CALL: "", ENV_AT: ""}
    if aim is not None:
        env |= {ENV_CALL: aim.syscall, ENV_AT: str(aim.occurrence)}
    return env


def _calls(path: Path) -> list[str]:
    """The system calls of one trace file (strace's own ``+++``/``---`` lines left out)."""
    lines = path.read_text(errors="replace").splitlines()
    return [line for line in lines if line and not line.startswith(("+++", "---"))]


def effects_of(trace_dir: Path) -> dict[str, list[str]]:
    """The effects (system call names, in order) of each process of a traced uncut call."""
    effects: dict[str, list[str]] = {}
    for path in sorted(trace_dir.iterdir()):
        name = path.name.rsplit(".", 1)[0]
        effects.setdefault(name, []).extend(line.split("(", 1)[0] for line in _calls(path))
    return effects


def calls_until(trace: Path, marker: str) -> list[str]:
    """The system calls of one trace up to and including the first whose line holds ``marker``."""
    calls = []
    for line in _calls(trace):
        calls.append(line)
        if marker in line:
            return calls
    raise AssertionError(f"{marker!r} is not in {trace}")


def names(calls: list[str]) -> list[str]:
    return [line.split("(", 1)[0] for line in calls]


def choose(effects: dict[str, list[str]], fraction: float) -> Aim:
    """The effect at ``fraction`` of all the call's effects, so kill points are uniform over them."""
    total = sum(len(calls) for calls in effects.values())
    k = min(total - 1, int(fraction * total))
    for name in sorted(effects):
        calls = effects[name]
        if k < len(calls):
            return Aim(name, k + 1, len(calls), calls[k], calls[: k + 1].count(calls[k]))
        k -= len(calls)
    raise AssertionError("no effects counted")


def killed_at(trace_dir: Path, name: str) -> str:
    """The call ``name``'s process was killed on entering ("" if it was not killed)."""
    for path in sorted(trace_dir.glob(f"{name}.*")):
        if "killed by SIGKILL" in path.read_text(errors="replace"):
            calls = _calls(path)
            return calls[-1][:200] if calls else ""
    return ""


def clear(trace_dir: Path) -> None:
    shutil.rmtree(trace_dir, ignore_errors=True)
    trace_dir.mkdir(parents=True)
