"""Frames between the plugin shim and the daemon: standard library only, no json.

The shim must start in a few milliseconds, so this module imports nothing
(``_socket`` and ``sys`` are built in). Integers are 4 bytes big-endian;
byte strings are length-prefixed. Every daemon frame starts with MAGIC and a
kind byte.

    daemon -> shim   READY                                   (it will read a request)
    shim -> daemon   request = MAGIC, nfds:u8, type, env, stdin
                               (+ SCM_RIGHTS: caller netns[, container netns])
    daemon -> shim   TAKEN                                   (it has the request and starts work)
    daemon -> shim   reply   = MAGIC, "D", exit:u32, stdout, stderr

The two signals make a daemon that stops, restarts or dies safe for callers:
the shim sends its request only after READY, so a daemon that is gone, dying
or not yet serving (a socket systemd holds while the daemon restarts) is one
the shim can wait for a bounded time and then do without; and it knows from
TAKEN whether any work may have started. A connection that ends before TAKEN
did nothing: the shim runs the call in-process. One that ends after TAKEN may
have done half a call (see :mod:`pycni.shim`). A daemon that refuses a caller
(peer credentials) sends a reply instead of READY.

``env`` is ``KEY=VALUE`` entries joined by NUL. The caller's own network
namespace always travels with the request: the daemon runs the plugin in it,
so a runtime in any namespace gets the behaviour of an exec'd plugin.
"""

from __future__ import annotations

import _socket
import sys

MAGIC = b"PYCNI\x02"
READY = b"R"
TAKEN = b"T"
REPLY = b"D"
DEFAULT_SOCKET = "/run/pycni/pycni.sock"
MAX_FRAME = 64 * 1024 * 1024

READY_FRAME = MAGIC + READY
TAKEN_FRAME = MAGIC + TAKEN


class WireError(Exception):
    """The peer sent something that is not a frame, or went away mid-frame."""


def _u32(value: int) -> bytes:
    return value.to_bytes(4, "big")


def _blob(data: bytes) -> bytes:
    return _u32(len(data)) + data


def encode_request(plugin_type: str, env: dict[bytes, bytes], stdin: bytes, nfds: int) -> bytes:
    """``env`` is the process environment as bytes (``posix.environ``): sent as it is."""
    env_blob = b"\0".join(k + b"=" + v for k, v in env.items())
    return MAGIC + bytes([nfds]) + _blob(plugin_type.encode()) + _blob(env_blob) + _blob(stdin)


def encode_reply(exit_code: int, stdout: bytes, stderr: bytes) -> bytes:
    return MAGIC + REPLY + _u32(exit_code) + _blob(stdout) + _blob(stderr)


def fds_ancillary(fds: list[int]) -> list[tuple[int, int, bytes]]:
    data = b"".join(fd.to_bytes(4, sys.byteorder, signed=True) for fd in fds)
    return [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, data)]


class Reader:
    """Reads exact byte counts from a socket, collecting any passed file descriptors."""

    def __init__(self, sock: _socket.socket) -> None:
        self.sock = sock
        self.buffer = b""
        self.fds: list[int] = []

    def _fill(self, size: int) -> None:
        while len(self.buffer) < size:
            data, ancdata, _flags, _addr = self.sock.recvmsg(max(size - len(self.buffer), 65536), 64)
            for level, kind, payload in ancdata:
                if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
                    usable = len(payload) - len(payload) % 4
                    self.fds += [
                        int.from_bytes(payload[i : i + 4], sys.byteorder, signed=True) for i in range(0, usable, 4)
                    ]
            if not data:
                raise WireError("connection closed mid-frame")
            self.buffer += data

    def take(self, size: int) -> bytes:
        self._fill(size)
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    def u32(self) -> int:
        return int.from_bytes(self.take(4), "big")

    def blob(self) -> bytes:
        size = self.u32()
        if size > MAX_FRAME:
            raise WireError(f"frame of {size} bytes is too large")
        return self.take(size)

    def magic(self) -> None:
        if self.take(len(MAGIC)) != MAGIC:
            raise WireError("not a pycni frame (a daemon of another pycni version?)")

    def kind(self) -> bytes:
        """The kind byte of the next daemon frame (READY, TAKEN or REPLY)."""
        self.magic()
        return self.take(1)

    def reply_body(self) -> tuple[int, bytes, bytes]:
        """A reply's fields, after its kind byte has been read."""
        return self.u32(), self.blob(), self.blob()


def decode_env(blob: bytes) -> dict[str, str]:
    env: dict[str, str] = {}
    for entry in blob.split(b"\0") if blob else []:
        key, _, value = entry.decode("utf-8", "surrogateescape").partition("=")
        env[key] = value
    return env
