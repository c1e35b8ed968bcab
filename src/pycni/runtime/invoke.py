"""Finding and executing plugin binaries (``cni/pkg/invoke``).

A plugin is run with the runtime's environment plus the six ``CNI_*``
variables (always all six, empty where a verb has none), the request on
stdin, and its reply read from stdout. A failed plugin's stdout is decoded as
the spec's error object so the caller sees the plugin's own code and message.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from pycni.spec.args import format_pairs
from pycni.spec.errors import CNIError, ErrorCode
from pycni.spec.jsonutil import loads
from pycni.spec.result import Result
from pycni.spec.version import CURRENT_VERSION, LEGACY_VERSIONS

TEXT_FILE_BUSY_RETRIES = 5


class PluginNotFound(CNIError):
    def __init__(self, msg: str) -> None:
        super().__init__(ErrorCode.INVALID_NETWORK_CONFIG, msg)


@dataclass
class PluginRequest:
    """The ``CNI_*`` parameters of one execution."""

    command: str
    container_id: str = ""
    netns: str = ""
    ifname: str = ""
    args: Sequence[tuple[str, str]] = ()
    path: Sequence[str] = ()
    extra_env: Mapping[str, str] = field(default_factory=dict)

    def as_env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        env = dict(os.environ if base is None else base)
        env.update(self.extra_env)
        env.update(
            {
                "CNI_COMMAND": self.command,
                "CNI_CONTAINERID": self.container_id,
                "CNI_NETNS": self.netns,
                "CNI_ARGS": format_pairs(self.args),
                "CNI_IFNAME": self.ifname,
                "CNI_PATH": os.pathsep.join(self.path),
            }
        )
        return env


class Executor(Protocol):
    """Runs a plugin executable; the seam where the daemon's fast path plugs in."""

    def run(self, plugin_path: str, stdin: bytes, env: Mapping[str, str]) -> bytes:
        """Return stdout on success; raise :class:`CNIError` on failure."""
        ...


def find_in_path(plugin: str, paths: Sequence[str]) -> str:
    """The first ``dir/plugin`` that is a regular file (``invoke.FindInPath``)."""
    if not plugin:
        raise PluginNotFound("no plugin name provided")
    if os.sep in plugin:
        raise PluginNotFound(f"invalid plugin name: {plugin}")
    if not paths:
        raise PluginNotFound(f"no paths provided to find plugin {plugin!r}: set CNI_PATH")
    for directory in paths:
        candidate = os.path.join(directory, plugin)
        if os.path.isfile(candidate):
            return candidate
    raise PluginNotFound(f"failed to find plugin {plugin!r} in path {list(paths)}")


class SubprocessExecutor:
    """Runs plugins as child processes, as libcni's ``RawExec`` does."""

    def __init__(self, stderr: object = None, timeout: float | None = None) -> None:
        self.stderr = stderr if stderr is not None else sys.stderr
        self.timeout = timeout

    def run(self, plugin_path: str, stdin: bytes, env: Mapping[str, str]) -> bytes:
        for attempt in range(TEXT_FILE_BUSY_RETRIES + 1):
            try:
                proc = subprocess.run(
                    [plugin_path], input=stdin, env=dict(env), capture_output=True, timeout=self.timeout, check=False
                )
            except OSError as exc:
                if "Text file busy" in str(exc) and attempt < TEXT_FILE_BUSY_RETRIES:
                    time.sleep(1)
                    continue
                raise CNIError(ErrorCode.INTERNAL, f"failed to execute plugin {plugin_path}: {exc.strerror}") from None
            except subprocess.TimeoutExpired:
                raise CNIError(
                    ErrorCode.TRY_AGAIN_LATER, f"plugin {plugin_path} did not finish within {self.timeout} s"
                ) from None
            if proc.returncode != 0:
                raise plugin_error(proc.returncode, proc.stdout, proc.stderr)
            if proc.stderr:
                write = getattr(self.stderr, "write", None)
                if write is not None:
                    write(proc.stderr.decode(errors="replace"))
            return proc.stdout
        raise AssertionError("unreachable")


def plugin_error(returncode: int, stdout: bytes, stderr: bytes) -> CNIError:
    """The error a failed plugin reported, or one describing how it failed."""
    status = f"exit status {returncode}" if returncode > 0 else f"killed by signal {-returncode}"
    if not stdout.strip():
        if not stderr.strip():
            return CNIError(ErrorCode.INTERNAL, f"netplugin failed with no error message: {status}")
        return CNIError(ErrorCode.INTERNAL, f"netplugin failed: {stderr.decode(errors='replace').strip()!r}: {status}")
    try:
        decoded = loads(stdout)
        if not isinstance(decoded, dict):
            raise ValueError("not a JSON object")
        return CNIError.from_dict(decoded)
    except (ValueError, UnicodeDecodeError) as exc:
        text = stdout.decode(errors="replace").strip()
        if len(text) > 200:
            text = text[:200] + "..."
        return CNIError(
            ErrorCode.INTERNAL, f"netplugin failed but error parsing its diagnostic message {text!r}: {exc}"
        )


def decode_result(stdout: bytes, config_version: str) -> Result:
    """Decode an ADD reply at the config's version (``fixupResultVersion`` + ``create``).

    A reply without ``cniVersion`` is taken to be the config's version; a
    reply whose version belongs to another result family is an error.
    """
    try:
        decoded = loads(stdout) if stdout.strip() else None
    except (ValueError, UnicodeDecodeError) as exc:
        raise CNIError(
            ErrorCode.DECODING_FAILURE, f"plugin printed something that is not a CNI result: {exc}"
        ) from None
    if decoded is None:
        decoded = {}
    if not isinstance(decoded, dict):
        raise CNIError(ErrorCode.DECODING_FAILURE, "plugin printed something that is not a CNI result object")
    if not decoded.get("cniVersion"):
        decoded["cniVersion"] = config_version or "0.1.0"
    result = Result.from_dict(decoded)
    if _family(result.cni_version) != _family(config_version or "0.1.0"):
        raise CNIError(
            ErrorCode.INCOMPATIBLE_CNI_VERSION,
            f"plugin returned a {result.cni_version} result for a {config_version} configuration",
        )
    return result.as_version(config_version or "0.1.0")


def _family(version: str) -> str:
    if version in LEGACY_VERSIONS:
        return "0.2"
    if version.startswith("1."):
        return "1.x"
    return "0.4"


@dataclass
class VersionInfo:
    cni_version: str
    supported_versions: list[str]


def decode_version_info(stdout: bytes) -> VersionInfo:
    """A VERSION reply (``version.PluginDecoder``)."""
    try:
        decoded = loads(stdout)
    except (ValueError, UnicodeDecodeError) as exc:
        raise CNIError(ErrorCode.DECODING_FAILURE, f"decoding version info: {exc}") from None
    if not isinstance(decoded, dict) or not decoded.get("cniVersion"):
        raise CNIError(ErrorCode.DECODING_FAILURE, "decoding version info: missing field cniVersion")
    supported = decoded.get("supportedVersions")
    if not supported:
        if decoded["cniVersion"] == "0.2.0":
            return VersionInfo("0.2.0", ["0.1.0", "0.2.0"])
        raise CNIError(ErrorCode.DECODING_FAILURE, "decoding version info: missing field supportedVersions")
    if not isinstance(supported, list) or not all(isinstance(v, str) for v in supported):
        raise CNIError(ErrorCode.DECODING_FAILURE, "decoding version info: supportedVersions must be strings")
    return VersionInfo(str(decoded["cniVersion"]), list(supported))


def get_version_info(executor: Executor, plugin_path: str) -> VersionInfo:
    """Ask a plugin which spec versions it supports (``invoke.GetVersionInfo``)."""
    request = PluginRequest(command="VERSION", netns="dummy", ifname="dummy", path=["dummy"])
    stdin = json.dumps({"cniVersion": CURRENT_VERSION}).encode()
    try:
        stdout = executor.run(plugin_path, stdin, request.as_env())
    except CNIError as error:
        if error.msg == "unknown CNI_COMMAND: VERSION":
            return VersionInfo("0.1.0", ["0.1.0"])
        raise
    return decode_version_info(stdout)
