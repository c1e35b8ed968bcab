"""A packet socket on the container's interface, opened from inside its netns.

A socket stays in the namespace it was created in, so the daemon enters the
container's namespace only long enough to create one: in a short-lived
worker thread (``setns`` changes only the calling thread), which returns the
socket and ends. The daemon's own threads never change namespace, and no
socket outlives one exchange, so a lease never pins a dead namespace.

The socket is ``AF_PACKET``/``SOCK_DGRAM`` bound to the interface: the
kernel adds and strips the Ethernet header, a classic BPF filter lets
through only UDP to port 68, and the client frames IPv4/UDP itself
(:mod:`pycni.dhcp.frame`).
"""

from __future__ import annotations

import ctypes
import ipaddress
import logging
import select
import socket
import struct
import threading
import time
from collections.abc import Callable
from typing import Protocol, TypeVar

from pycni.dhcp import frame
from pycni.dhcp.packet import CLIENT_PORT, SERVER_PORT
from pycni.spec.errors import CNIError, ErrorCode

IPv4Address = ipaddress.IPv4Address
T = TypeVar("T")

ETH_P_IP = 0x0800
SO_ATTACH_FILTER = 26
PACKET_OUTGOING = 4
BROADCAST_MAC = b"\xff" * 6
MAX_FRAME = 65535

log = logging.getLogger("pycni.dhcp")

# "udp dst port 68 and not a fragment", for a SOCK_DGRAM socket (offset 0 is
# the IPv4 header): (code, jt, jf, k) as in <linux/filter.h>.
_UDP_DPORT_68 = (
    (0x30, 0, 0, 9),  # ldb [9]            ; IP protocol
    (0x15, 0, 6, 17),  # jeq #17           ; UDP?
    (0x28, 0, 0, 6),  # ldh [6]            ; flags + fragment offset
    (0x45, 4, 0, 0x1FFF),  # jset #0x1fff  ; a fragment: drop
    (0xB1, 0, 0, 0),  # ldxb 4*([0]&0xf)   ; X = IP header length
    (0x48, 0, 0, 2),  # ldh [x+2]          ; UDP destination port
    (0x15, 0, 1, CLIENT_PORT),  # jeq #68
    (0x06, 0, 0, MAX_FRAME),  # ret: accept
    (0x06, 0, 0, 0),  # ret: drop
)


class Transport(Protocol):
    """What the client needs from the wire: send a DHCP payload, receive replies."""

    mac: bytes

    def send(self, payload: bytes, src: IPv4Address, dst: IPv4Address, dst_mac: bytes = BROADCAST_MAC) -> None: ...

    def receive(self, timeout: float) -> tuple[bytes, bytes] | None:
        """The next DHCP payload sent to port 68 and the sender's MAC, or ``None`` on timeout."""
        ...

    def close(self) -> None: ...


class LinkGone(CNIError):
    """The namespace or the interface no longer exists: the lease cannot be kept."""


class PacketTransport:
    """DHCP over a packet socket bound to one interface."""

    def __init__(self, sock: socket.socket, ifname: str, mac: bytes) -> None:
        self.sock = sock
        self.ifname = ifname
        self.mac = mac

    def send(self, payload: bytes, src: IPv4Address, dst: IPv4Address, dst_mac: bytes = BROADCAST_MAC) -> None:
        packet = frame.build(frame.Datagram(src, dst, CLIENT_PORT, SERVER_PORT, payload))
        self.sock.sendto(packet, (self.ifname, ETH_P_IP, 0, 0, dst_mac))

    def receive(self, timeout: float) -> tuple[bytes, bytes] | None:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            ready, _, _ = select.select([self.sock], [], [], remaining)
            if not ready:
                return None
            data, address = self.sock.recvfrom(MAX_FRAME)
            if address[2] == PACKET_OUTGOING:
                continue
            datagram = frame.parse(data)
            if datagram is not None and datagram.dport == CLIENT_PORT and datagram.sport == SERVER_PORT:
                return datagram.payload, bytes(address[4])

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> PacketTransport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_packet_transport(netns_path: str, ifname: str) -> PacketTransport:
    """A transport on ``ifname`` in the namespace at ``netns_path``; the link is set up if down."""

    def inside() -> PacketTransport:
        from pycni.net import link
        from pycni.net.netns import iproute_here

        ipr = iproute_here()
        try:
            info = link.find(ipr, ifname)
            if info is None:
                raise LinkGone(ErrorCode.INTERNAL, f"error looking up {ifname!r} in {netns_path}: no such interface")
            if not info.up:
                log.info("link %s in %s is down; setting it up", ifname, netns_path)
                link.set_up(ipr, ifname)
        finally:
            ipr.close()
        return PacketTransport(_packet_socket(ifname), ifname, b"")

    transport = in_netns(netns_path, inside)
    transport.mac = bytes(transport.sock.getsockname()[4])
    return transport


def set_link_down(netns_path: str, ifname: str) -> None:
    """Take ``ifname`` down: what Go does when a lease expires unrenewed."""

    def inside() -> None:
        from pycni.net import link
        from pycni.net.netns import iproute_here

        ipr = iproute_here()
        try:
            link.set_up(ipr, ifname, up=False)
        finally:
            ipr.close()

    in_netns(netns_path, inside)


def _packet_socket(ifname: str) -> socket.socket:
    # Protocol 0 receives nothing until bind(), so the filter is in place
    # before the first packet can be queued.
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, 0)
    try:
        program = b"".join(struct.pack("HBBI", *insn) for insn in _UDP_DPORT_68)
        buf = ctypes.create_string_buffer(program)
        fprog = struct.pack("HL", len(_UDP_DPORT_68), ctypes.addressof(buf))
        sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
        sock.bind((ifname, ETH_P_IP))
    except OSError as exc:
        sock.close()
        raise LinkGone(ErrorCode.INTERNAL, f"cannot open a packet socket on {ifname}: {exc.strerror}") from None
    return sock


def in_netns(netns_path: str, fn: Callable[[], T]) -> T:
    """``fn()`` run in a fresh thread inside ``netns_path``; its result or its exception.

    A missing namespace is :class:`LinkGone`: the container is gone.
    """
    from pycni.net import netns

    outcome: list[T] = []
    failure: list[BaseException] = []

    def worker() -> None:
        try:
            with netns.entered(netns_path):
                outcome.append(fn())
        except netns.NetnsNotFound as exc:
            failure.append(LinkGone(ErrorCode.INTERNAL, exc.msg))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            failure.append(exc)

    thread = threading.Thread(target=worker, name=f"netns {netns_path}", daemon=True)
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return outcome[0]
