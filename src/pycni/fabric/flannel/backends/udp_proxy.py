"""The udp backend's userspace proxy: IP packets between a TUN fd and a UDP socket.

A Python rendering of flannel's ``pkg/backend/udp/proxy_amd64.c``: a packet
read from the TUN is sent to the node owning its destination subnet; a
datagram received is written to the TUN for the kernel to forward. Both
directions decrement the TTL (the proxy is a hop), and a packet for a subnet
no peer owns gets an ICMP net-unreachable back, as the C proxy does.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import os
import select
import socket
import struct
import threading

log = logging.getLogger("pycni.fabric.flannel.backends.udp")

BUFFER = 65535
ICMP = 1
MAX_IP_HEADER = 60


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071) of ``data``."""
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def decrement_ttl(packet: bytearray) -> bool:
    """TTL - 1 with the header checksum patched incrementally (RFC 1624); ``False`` if it reached 0."""
    ttl = packet[8]
    if ttl <= 1:
        return False
    old = (ttl << 8) | packet[9]
    new = ((ttl - 1) << 8) | packet[9]
    (check,) = struct.unpack_from("!H", packet, 10)
    total = (~check & 0xFFFF) + (~old & 0xFFFF) + new
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    packet[8] = ttl - 1
    struct.pack_into("!H", packet, 10, ~total & 0xFFFF)
    return True


def net_unreachable(packet: bytes, source: bytes) -> bytes | None:
    """ICMP destination/net unreachable for ``packet``, from ``source``; ``None`` where RFC 792 says stay silent."""
    ihl = (packet[0] & 0x0F) * 4
    if ihl < 20 or ihl > MAX_IP_HEADER or len(packet) < ihl + 8:
        return None
    if packet[9] == ICMP:  # never an ICMP about an ICMP
        return None
    if struct.unpack_from("!H", packet, 6)[0] & 0x1FFF:  # only for the first fragment
        return None
    quoted = packet[: ihl + 8]
    icmp = bytearray(struct.pack("!BBHI", 3, 0, 0, 0) + quoted)
    struct.pack_into("!H", icmp, 2, checksum(bytes(icmp)))
    header = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(icmp), 0, 0, 8, ICMP, 0, source, packet[12:16]))
    struct.pack_into("!H", header, 10, checksum(bytes(header)))
    return bytes(header + icmp)


class PeerTable:
    """Peer subnet → (PublicIP, port), looked up by a packet's destination address."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_len: dict[int, dict[int, tuple[str, int]]] = {}
        self._sources: frozenset[str] = frozenset()

    def _rebuild_sources(self) -> None:
        self._sources = frozenset(ip for table in self._by_len.values() for ip, _ in table.values())

    def set(self, subnet: ipaddress.IPv4Network, public_ip: str, port: int) -> None:
        with self._lock:
            self._by_len.setdefault(subnet.prefixlen, {})[int(subnet.network_address)] = (public_ip, port)
            self._rebuild_sources()

    def delete(self, subnet: ipaddress.IPv4Network) -> None:
        with self._lock:
            self._by_len.get(subnet.prefixlen, {}).pop(int(subnet.network_address), None)
            self._rebuild_sources()

    def replace(self, entries: dict[ipaddress.IPv4Network, tuple[str, int]]) -> None:
        by_len: dict[int, dict[int, tuple[str, int]]] = {}
        for subnet, hop in entries.items():
            by_len.setdefault(subnet.prefixlen, {})[int(subnet.network_address)] = hop
        with self._lock:
            self._by_len = by_len
            self._rebuild_sources()

    def lookup(self, destination: int) -> tuple[str, int] | None:
        for length, table in list(self._by_len.items()):
            mask = (0xFFFFFFFF << (32 - length)) & 0xFFFFFFFF
            hop = table.get(destination & mask)
            if hop is not None:
                return hop
        return None

    def knows(self, source_ip: str) -> bool:
        return source_ip in self._sources

    def entries(self) -> dict[ipaddress.IPv4Network, tuple[str, int]]:
        with self._lock:
            return {
                ipaddress.IPv4Network((network, length)): hop
                for length, table in self._by_len.items()
                for network, hop in table.items()
            }


class UdpProxy:
    """One thread polling the TUN, the socket and a wake-up pipe; :meth:`stop` ends it."""

    def __init__(self, tun_fd: int, sock: socket.socket, table: PeerTable) -> None:
        self.tun_fd = tun_fd
        self.sock = sock
        self.table = table
        self.tun_address = b"\0\0\0\0"
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="pycni-udp-proxy", daemon=True)
        os.set_blocking(tun_fd, False)
        sock.setblocking(False)

    def start(self) -> None:
        self._thread.start()

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def stop(self, timeout: float = 5.0) -> None:
        """Wake the thread, wait for it, close the pipe (the TUN fd and socket are the caller's)."""
        self._stopping = True
        if self._thread.is_alive():
            os.write(self._wake_w, b"x")
            self._thread.join(timeout)
        if self._thread.is_alive():
            log.error("udp proxy thread did not stop within %.0f s", timeout)
            return
        for fd in (self._wake_r, self._wake_w):
            os.close(fd)
        self._wake_r = self._wake_w = -1

    def _run(self) -> None:
        poller = select.poll()
        for fd in (self.tun_fd, self.sock.fileno(), self._wake_r):
            poller.register(fd, select.POLLIN)
        while not self._stopping:
            try:
                poller.poll()
            except InterruptedError:
                continue
            # Like the C proxy: drain both while either moves data, then poll again.
            while not self._stopping and (self._tun_to_udp() | self._udp_to_tun()):
                pass

    def _tun_to_udp(self) -> bool:
        try:
            data = os.read(self.tun_fd, BUFFER)
        except BlockingIOError:
            return False
        except OSError as exc:
            log.debug("TUN read failed: %s", exc)
            return False
        if len(data) < 20 or data[0] >> 4 != 4:
            return True  # IPv6 (router solicitations) and runts are not ours to carry
        hop = self.table.lookup(int.from_bytes(data[16:20], "big"))
        if hop is None:
            reply = net_unreachable(data, self.tun_address)
            if reply is not None:
                self._write_tun(reply)
            return True
        packet = bytearray(data)
        if decrement_ttl(packet):
            try:
                self.sock.sendto(packet, hop)
            except OSError as exc:
                log.debug("UDP send to %s:%d failed: %s", hop[0], hop[1], exc)
        return True

    def _udp_to_tun(self) -> bool:
        try:
            data, (source, _) = self.sock.recvfrom(BUFFER)
        except BlockingIOError:
            return False
        except OSError as exc:
            log.debug("UDP receive failed: %s", exc)
            return False
        if len(data) < 20 or data[0] >> 4 != 4 or not self.table.knows(source):
            return True  # only peers may inject packets into the pod network
        packet = bytearray(data)
        if decrement_ttl(packet):
            self._write_tun(bytes(packet))
        return True

    def _write_tun(self, packet: bytes) -> None:
        for _ in range(100):
            try:
                os.write(self.tun_fd, packet)
                return
            except BlockingIOError:
                continue
            except OSError as exc:
                if exc.errno != errno.EINTR:
                    log.debug("TUN write failed: %s", exc)
                    return
