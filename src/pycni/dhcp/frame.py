"""IPv4/UDP framing for DHCP over a packet socket.

Before it has an address, a client cannot use the kernel's UDP stack (replies
may be unicast to an address the interface does not have yet), so the client
builds and parses the IPv4 and UDP headers itself, as dhclient and Go's
nclient4 do. The kernel adds the Ethernet header (SOCK_DGRAM packet socket).
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

IPv4Address = ipaddress.IPv4Address

IPPROTO_UDP = 17
IPTOS_LOWDELAY = 0x10
_IP = struct.Struct("!BBHHHBBH4s4s")
_UDP = struct.Struct("!HHHH")


@dataclass(frozen=True)
class Datagram:
    src: IPv4Address
    dst: IPv4Address
    sport: int
    dport: int
    payload: bytes


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071)."""
    if len(data) % 2:
        data += b"\x00"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def build(datagram: Datagram, ttl: int = 64) -> bytes:
    """An IPv4 packet carrying ``datagram``, checksums filled in."""
    udp_len = _UDP.size + len(datagram.payload)
    pseudo = datagram.src.packed + datagram.dst.packed + struct.pack("!BBH", 0, IPPROTO_UDP, udp_len)
    udp = _UDP.pack(datagram.sport, datagram.dport, udp_len, 0) + datagram.payload
    udp_sum = checksum(pseudo + udp) or 0xFFFF  # 0 means "no checksum" in UDP over IPv4
    udp = udp[:6] + struct.pack("!H", udp_sum) + udp[8:]
    header = _IP.pack(
        0x45, IPTOS_LOWDELAY, _IP.size + udp_len, 0, 0, ttl, IPPROTO_UDP, 0, datagram.src.packed, datagram.dst.packed
    )
    header = header[:10] + struct.pack("!H", checksum(header)) + header[12:]
    return header + udp


def parse(packet: bytes) -> Datagram | None:
    """The UDP datagram in an IPv4 packet, or ``None`` for anything else.

    The UDP checksum is not verified: on veth and other virtual links the
    kernel hands packet sockets frames whose checksum is left to offload.
    """
    if len(packet) < _IP.size:
        return None
    ver_ihl, _tos, total, _ident, frag, _ttl, proto, _sum, src, dst = _IP.unpack_from(packet)
    ihl = (ver_ihl & 0x0F) * 4
    if ver_ihl >> 4 != 4 or ihl < _IP.size or proto != IPPROTO_UDP or frag & 0x3FFF:
        return None  # not IPv4, not UDP, or a fragment (DHCP replies are never fragmented)
    if total > len(packet) or total < ihl + _UDP.size:
        return None
    sport, dport, length, _udp_sum = _UDP.unpack_from(packet, ihl)
    if length < _UDP.size or ihl + length > total:
        return None
    payload = packet[ihl + _UDP.size : ihl + length]
    return Datagram(IPv4Address(src), IPv4Address(dst), sport, dport, payload)
