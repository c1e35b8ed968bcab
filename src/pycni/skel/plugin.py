"""The plugin SDK: declare a plugin, register its verbs, run it.

A plugin is a :class:`Plugin` with handler functions registered by decorator.
:meth:`Plugin.invoke` is a pure function of (environment, stdin) to
(exit code, stdout, stderr), so the same plugin runs as an executable
(:meth:`Plugin.main`) or inside the pycni daemon with identical output.

    plugin = Plugin("my-plugin")

    @plugin.add
    def add(args: CmdArgs) -> Result:
        result = args.prev_result() or Result(args.cni_version)
        ...
        return result

    if __name__ == "__main__":
        plugin.main()
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NoReturn

from pycni import __version__
from pycni.spec.args import load_args
from pycni.spec.errors import CNIError, ErrorCode
from pycni.spec.fields import Fields
from pycni.spec.jsonutil import get_key
from pycni.spec.result import Result
from pycni.spec.version import ALL_VERSIONS

AddHandler = Callable[["CmdArgs"], Result]
Handler = Callable[["CmdArgs"], None]
Deferred = Callable[[], None]


@dataclass
class CmdArgs:
    """What one invocation received: the ``CNI_*`` variables and the config."""

    command: str
    container_id: str
    netns: str
    ifname: str
    args: str
    path: list[str]
    stdin: bytes
    config: dict[str, Any]
    env: Mapping[str, str] = field(default_factory=dict)
    netns_fd: int | None = None  # an already-open netns handle (daemon path), else None
    deferred: list[Deferred] = field(default_factory=list)

    def after_reply(self, work: Deferred) -> None:
        """Run ``work`` once the reply is out: at once after the handler in an executable, after
        the reply is sent in the daemon (so a slow clean-up, e.g. an nftables deletion commit,
        is off the caller's critical path). ``work`` must be safe to run late or twice, and
        must make the node right again if it never runs (the next call or GC notices)."""
        self.deferred.append(work)

    @property
    def cni_version(self) -> str:
        """The config's version; absent means 0.1.0."""
        version = self.config.get("cniVersion") or "0.1.0"
        return str(version)

    @property
    def name(self) -> str:
        return str(self.config.get("name", ""))

    @property
    def fields(self) -> Fields:
        """Typed access to the whole config object."""
        return Fields(self.config)

    def prev_result(self) -> Result | None:
        """``prevResult`` converted to the config's version, or ``None``."""
        raw = self.config.get("prevResult")
        if raw is None:
            return None
        try:
            result = Result.from_dict(raw, default_version=self.cni_version)
            return result.as_version(self.cni_version)
        except CNIError as exc:
            raise CNIError(ErrorCode.DECODING_FAILURE, f"failed to parse prevResult: {exc.msg}") from None

    def runtime_config(self, key: str) -> Any:
        """``runtimeConfig[key]``, matched case-insensitively (containerd capitalises)."""
        runtime_config = self.config.get("runtimeConfig")
        if not isinstance(runtime_config, dict):
            return None
        return get_key(runtime_config, key)

    def cni_args(self, known: tuple[str, ...]) -> dict[str, str]:
        """``CNI_ARGS`` as a dict of the keys this plugin understands."""
        return load_args(self.args, known)

    def valid_attachments(self) -> list[tuple[str, str]] | None:
        """GC's ``cni.dev/valid-attachments`` as ``(containerID, ifname)`` pairs.

        ``None`` when the runtime sent no list at all (``cnitool gc`` does
        that after DELeting its own cached attachments): nothing is known to
        be stale then, so a plugin must not remove anything. An empty list
        means every attachment is stale.
        """
        raw = self.config.get("cni.dev/valid-attachments")
        if raw is None:
            raw = self.config.get("cni.dev/attachments")
        if raw is None:
            return None
        if not isinstance(raw, list):
            raise CNIError(ErrorCode.INVALID_NETWORK_CONFIG, "cni.dev/valid-attachments must be a list")
        pairs = []
        for entry in raw:
            if not isinstance(entry, dict):
                raise CNIError(ErrorCode.INVALID_NETWORK_CONFIG, "cni.dev/valid-attachments entries must be objects")
            pairs.append((str(entry.get("containerID", "")), str(entry.get("ifname", ""))))
        return pairs


@dataclass
class Reply:
    """What a plugin invocation produced: print ``stdout``, exit with ``exit_code``."""

    exit_code: int
    stdout: str = ""
    stderr: str = ""


@dataclass
class Handlers:
    add: AddHandler | None = None
    check: Handler | None = None
    delete: Handler | None = None
    gc: Handler | None = None
    status: Handler | None = None


class Plugin:
    """A CNI plugin: a name, the spec versions it supports and its handlers."""

    def __init__(self, name: str, versions: tuple[str, ...] = ALL_VERSIONS, about: str | None = None) -> None:
        if not versions:
            raise ValueError("a plugin must support at least one spec version")
        self.name = name
        self.versions = tuple(versions)
        self.about = about if about is not None else f"CNI {name} plugin pycni {__version__}"
        self.handlers = Handlers()

    # -- registration -------------------------------------------------------

    def add(self, fn: AddHandler) -> AddHandler:
        self.handlers.add = fn
        return fn

    def check(self, fn: Handler) -> Handler:
        self.handlers.check = fn
        return fn

    def delete(self, fn: Handler) -> Handler:
        self.handlers.delete = fn
        return fn

    def gc(self, fn: Handler) -> Handler:
        self.handlers.gc = fn
        return fn

    def status(self, fn: Handler) -> Handler:
        self.handlers.status = fn
        return fn

    # -- running ------------------------------------------------------------

    def invoke(
        self,
        env: Mapping[str, str],
        stdin: bytes,
        netns_fd: int | None = None,
        deferred: list[Deferred] | None = None,
    ) -> Reply:
        """Run one call; never raises, always returns what to print and the exit code.

        With ``deferred`` (the daemon's seam) the work handlers hand to
        :meth:`CmdArgs.after_reply` is appended there for the caller to run
        after replying; without it, that work runs before this returns.
        """
        from pycni.skel.dispatch import dispatch, run_deferred

        if deferred is not None:
            return dispatch(self, env, stdin, netns_fd, deferred)
        own: list[Deferred] = []
        reply = dispatch(self, env, stdin, netns_fd, own)
        run_deferred(own)
        return reply

    def main(self) -> NoReturn:
        """Entry point of a plugin executable."""
        stdin = b"" if os.environ.get("CNI_COMMAND") == "VERSION" else sys.stdin.buffer.read()
        reply = self.invoke(os.environ, stdin)
        # Bytes, as the daemon path writes them: the two paths print identical output.
        if reply.stdout:
            sys.stdout.buffer.write(reply.stdout.encode())
            sys.stdout.buffer.flush()
        if reply.stderr:
            sys.stderr.buffer.write(reply.stderr.encode())
            sys.stderr.buffer.flush()
        sys.exit(reply.exit_code)
