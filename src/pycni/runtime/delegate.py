"""Delegation from one plugin to another (IPAM): Go's ``invoke.DelegateAdd`` and kin.

The delegate gets the caller's environment with only ``CNI_COMMAND``
overridden and exactly the caller's stdin, as the spec requires; its stderr
goes to the caller's stderr. The executor is a seam: the pycni daemon swaps in
one that runs pycni's own plugins in-process.
"""

from __future__ import annotations

from collections.abc import Mapping

from pycni.runtime.invoke import Executor, SubprocessExecutor, decode_result, find_in_path
from pycni.spec.errors import CNIError
from pycni.spec.result import Result

_executor: Executor = SubprocessExecutor()


def set_executor(executor: Executor) -> Executor:
    """Replace the executor used for delegation; returns the previous one."""
    global _executor  # one process-wide seam, set once at start-up
    previous, _executor = _executor, executor
    return previous


def _run(plugin_type: str, command: str, stdin: bytes, env: Mapping[str, str], path: list[str]) -> bytes:
    plugin_path = find_in_path(plugin_type, path)
    try:
        return _executor.run(plugin_path, stdin, {**env, "CNI_COMMAND": command})
    except CNIError as error:
        # Keep the delegate's code; say which delegate failed (unless it already does).
        msg = error.msg if error.msg.startswith(f"{plugin_type}:") else f"{plugin_type}: {error.msg}"
        raise CNIError(error.code, msg, error.details) from None


def delegate_add(plugin_type: str, stdin: bytes, env: Mapping[str, str], path: list[str], version: str) -> Result:
    """ADD through the delegate; its result converted to the config's ``version``."""
    return decode_result(_run(plugin_type, "ADD", stdin, env, path), version)


def delegate_del(plugin_type: str, stdin: bytes, env: Mapping[str, str], path: list[str]) -> None:
    _run(plugin_type, "DEL", stdin, env, path)


def delegate_check(plugin_type: str, stdin: bytes, env: Mapping[str, str], path: list[str]) -> None:
    _run(plugin_type, "CHECK", stdin, env, path)


def delegate_gc(plugin_type: str, stdin: bytes, env: Mapping[str, str], path: list[str]) -> None:
    _run(plugin_type, "GC", stdin, env, path)


def delegate_status(plugin_type: str, stdin: bytes, env: Mapping[str, str], path: list[str]) -> None:
    _run(plugin_type, "STATUS", stdin, env, path)
