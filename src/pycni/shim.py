"""What a plugin executable runs: built-in modules only, until it must run the plugin itself.

``pycni plugins install`` writes one small executable per plugin type that
starts the interpreter with ``-I -S`` and calls :func:`run`. If the pycni
daemon answers on its socket (``PYCNI_SOCKET``, default
``/run/pycni/pycni.sock``), the call is handed to it together with the
caller's and the container's network namespaces as open descriptors, and its
reply is printed as is. Otherwise the plugin runs here (importing pyroute2
costs ~300 ms), and so do pycni's plugins it delegates to (its IPAM), as in
the daemon. Both paths print the same bytes and exit with the same code.

A daemon that is stopping, restarting or gone never fails a call: the shim
sends its request only after the daemon's READY and counts it as taken only
after TAKEN (:mod:`pycni.daemon.wire`), so anything that goes wrong before
that runs the call here instead. A connection lost after TAKEN repeats DEL,
GC, CHECK, STATUS and VERSION here (they are idempotent); an ADD then fails
with code 11 ("try again"), because it may be half done and the runtime's
DEL is what undoes it.

Start-up is the cost of every call, so the fast path uses ``posix`` rather
than ``os`` (1 ms) and sends the environment as raw bytes.

The shim never starts a daemon: one started from a plugin call would live in
the runtime's cgroup and environment and die with it; the daemon belongs to
the init system (``contrib/pycni.service``).
"""

from __future__ import annotations

import _socket
import posix
import sys

from pycni.daemon import wire

NO_DAEMON_ENV = b"PYCNI_NO_DAEMON"
DEFAULT_WAIT = 5.0
# Verbs a broken daemon connection may simply repeat in-process: DEL and GC are
# idempotent by the spec, the others change nothing.
IDEMPOTENT = (b"DEL", b"GC", b"CHECK", b"STATUS", b"VERSION")
O_RDONLY_CLOEXEC = posix.O_RDONLY | posix.O_CLOEXEC

# The executable ``pycni plugins install`` writes. The daemon recognises pycni's
# own plugins on CNI_PATH by its last two lines (:func:`executable_plugin_type`).
EXECUTABLE_TEMPLATE = """#!{python} -IS
# pycni {plugin_type} CNI plugin; written by `pycni plugins install`, do not edit.
import sys
sys.path[:0] = {paths!r}
from pycni.shim import run
run({plugin_type!r})
"""


def executable_plugin_type(text: bytes) -> str | None:
    """The plugin type an executable made from :data:`EXECUTABLE_TEMPLATE` runs; None for anything else."""
    import re  # only the daemon calls this; the shim's own start-up stays free of it

    match = re.search(rb"from pycni\.shim import run\s+run\('([A-Za-z0-9_.-]+)'\)", text)
    return match.group(1).decode() if match else None


def _error_json(code: int, msg: str) -> bytes:
    """The spec's error object, written without importing json (start-up time)."""
    safe = msg.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ")
    return f'{{\n    "cniVersion": "1.1.0",\n    "code": {code},\n    "msg": "{safe}"\n}}\n'.encode()


def _finish(exit_code: int, stdout: bytes, stderr: bytes) -> None:
    if stdout:
        sys.stdout.buffer.write(stdout)
        sys.stdout.buffer.flush()
    if stderr:
        sys.stderr.buffer.write(stderr)
        sys.stderr.buffer.flush()
    sys.exit(exit_code)


def _open_namespaces() -> list[int]:
    fds = [posix.open("/proc/thread-self/ns/net", O_RDONLY_CLOEXEC)]
    path = posix.environ.get(b"CNI_NETNS")
    if path:
        try:  # noqa: SIM105 - contextlib would cost start-up time
            fds.append(posix.open(path, O_RDONLY_CLOEXEC))
        except OSError:
            pass  # the plugin reports a missing namespace itself (and DEL tolerates it)
    return fds


def _wait_seconds() -> float:
    """How long to wait for the daemon's READY: ``PYCNI_DAEMON_WAIT``, default 5 s.

    A live daemon answers in microseconds; the wait matters only when the
    socket is held for a daemon that is restarting (systemd socket activation
    queues the call) or when every worker is busy.
    """
    raw = posix.environ.get(b"PYCNI_DAEMON_WAIT")
    try:
        return float(raw) if raw else DEFAULT_WAIT
    except ValueError:
        return DEFAULT_WAIT


def _via_daemon(plugin_type: str, stdin: bytes) -> tuple[int, bytes, bytes] | None:
    """The daemon's reply, or ``None`` when the daemon did not take the call (run it in-process then)."""
    env = posix.environ
    if env.get(NO_DAEMON_ENV):
        return None
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    fds: list[int] = []
    try:
        reader = wire.Reader(sock)
        try:
            sock.settimeout(_wait_seconds())
            sock.connect(env.get(b"PYCNI_SOCKET") or wire.DEFAULT_SOCKET.encode())
            kind = reader.kind()
            if kind == wire.REPLY:
                return reader.reply_body()  # refused before any work (e.g. not root)
            if kind != wire.READY:
                return None
            sock.settimeout(None)  # from here on the daemon may be working: never give up on it
            fds = _open_namespaces()
            sock.sendmsg([wire.encode_request(plugin_type, env, stdin, len(fds))], wire.fds_ancillary(fds))
            if reader.kind() != wire.TAKEN:
                return None
        except (OSError, wire.WireError):
            return None  # no daemon, a stopping or restarting one, or one that is not ours: nothing was done
        try:
            if reader.kind() != wire.REPLY:
                raise wire.WireError("unexpected frame")
            return reader.reply_body()
        except (OSError, wire.WireError) as exc:
            if env.get(b"CNI_COMMAND") in IDEMPOTENT:
                return None  # whatever the daemon did, doing it again here is what the caller asked for
            # An ADD may be half done; the runtime's DEL (which the spec requires) undoes it.
            return 1, _error_json(11, f"pycni daemon failed mid-request ({exc}); try again"), b""
    finally:
        sock.close()
        for fd in fds:
            posix.close(fd)


def _in_process(plugin_type: str, stdin: bytes) -> tuple[int, bytes, bytes]:
    import importlib
    import os

    from pycni.plugins import PLUGIN_MODULES

    module_name = PLUGIN_MODULES.get(plugin_type)
    if module_name is None:
        return (
            1,
            _error_json(999, f"pycni has no plugin of type {plugin_type}; reinstall with pycni plugins install"),
            b"",
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        detail = f" ({exc})" if os.environ.get("PYCNI_DEBUG") else ""
        return 1, _error_json(999, f"pycni {plugin_type} plugin cannot load {exc.name}: reinstall pycni{detail}"), b""
    from pycni.daemon.executor import ImportedOnUse, InProcessExecutor
    from pycni.runtime import delegate

    delegate.set_executor(InProcessExecutor(ImportedOnUse()))  # pycni's delegates (IPAM) in this process too
    reply = module.plugin.invoke(os.environ, stdin)
    return reply.exit_code, reply.stdout.encode(), reply.stderr.encode()


def run(plugin_type: str) -> None:
    """Entry point of an installed plugin executable; exits the process."""
    stdin = b"" if posix.environ.get(b"CNI_COMMAND") == b"VERSION" else sys.stdin.buffer.read()
    reply = _via_daemon(plugin_type, stdin)
    if reply is None:
        reply = _in_process(plugin_type, stdin)
    _finish(*reply)
