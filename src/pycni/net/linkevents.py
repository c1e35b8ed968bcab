"""Link events of one network namespace (RTM_NEWLINK / RTM_DELLINK), for drivers waiting on links.

A plain netlink socket subscribed to RTMGRP_LINK, read with ``select``: a
pyroute2 socket reads datagrams into its own queue on its event loop, so its
file descriptor can look idle while messages wait inside it. Only the
interface name, index and up flag are decoded; that is all a waiting route
or neighbour needs to be retried.

If the kernel drops events because the socket fell behind (ENOBUFS), the
batch says so: the caller cannot know what it missed and should resync.
"""

from __future__ import annotations

import errno
import select
import socket
import struct
from dataclasses import dataclass, field

from pycni.net import netns

NETLINK_ROUTE = 0
RTMGRP_LINK = 0x1
RTM_NEWLINK = 16
RTM_DELLINK = 17
IFLA_IFNAME = 3
IFF_UP = 0x1
_NLMSGHDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
_IFINFOMSG = struct.Struct("=BxHiII")  # family, type, index, flags, change
_RTATTR = struct.Struct("=HH")  # len, type
_BUFFER = 1 << 20


@dataclass(frozen=True, slots=True)
class LinkEvent:
    name: str
    index: int
    up: bool
    deleted: bool


@dataclass
class LinkBatch:
    """The events read at once; ``lost`` if the kernel dropped some (resync everything)."""

    events: list[LinkEvent] = field(default_factory=list)
    lost: bool = False

    @property
    def names(self) -> set[str]:
        return {event.name for event in self.events}


def parse(data: bytes) -> list[LinkEvent]:
    """The link events in one netlink datagram (other messages skipped)."""
    events = []
    offset = 0
    while offset + _NLMSGHDR.size <= len(data):
        length, kind, _, _, _ = _NLMSGHDR.unpack_from(data, offset)
        if length < _NLMSGHDR.size or offset + length > len(data):
            break
        if kind in (RTM_NEWLINK, RTM_DELLINK):
            body = offset + _NLMSGHDR.size
            _, _, index, flags, _ = _IFINFOMSG.unpack_from(data, body)
            name = _ifname(data, body + _IFINFOMSG.size, offset + length)
            if name:
                events.append(LinkEvent(name, index, bool(flags & IFF_UP), kind == RTM_DELLINK))
        offset += (length + 3) & ~3
    return events


def _ifname(data: bytes, start: int, end: int) -> str:
    while start + _RTATTR.size <= end:
        length, kind = _RTATTR.unpack_from(data, start)
        if length < _RTATTR.size:
            break
        if kind == IFLA_IFNAME:
            return data[start + _RTATTR.size : start + length].split(b"\0", 1)[0].decode(errors="replace")
        start += (length + 3) & ~3
    return ""


class LinkEvents:
    """A subscription to the link events of the namespace at ``path`` (or handle ``fd``; the caller's if neither)."""

    def __init__(self, path: str = "", fd: int | None = None) -> None:
        if path or fd is not None:
            with netns.entered(path, fd):
                self._sock = self._open()
        else:
            self._sock = self._open()

    @staticmethod
    def _open() -> socket.socket:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_ROUTE)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _BUFFER)
            sock.bind((0, RTMGRP_LINK))
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        return sock

    def fileno(self) -> int:
        return self._sock.fileno()

    def poll(self, timeout: float = 0.0) -> LinkBatch:
        """Wait up to ``timeout`` seconds for events, then read every one that is there."""
        batch = LinkBatch()
        ready, _, _ = select.select([self._sock], [], [], timeout)
        if not ready:
            return batch
        while True:
            try:
                data = self._sock.recv(65536)
            except BlockingIOError:
                return batch
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:
                    batch.lost = True
                    continue
                raise
            batch.events.extend(parse(data))

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> LinkEvents:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
