"""The DHCP message (RFC 2131 §2): the BOOTP header, the magic cookie, options.

Options are kept as ``{code: bytes}`` in order. Decoding follows RFC 3396
(repeated codes are one option, concatenated) and honours option overload
(52: options continued in ``file`` and ``sname``); encoding splits values
longer than 255 bytes the same way and pads to the 300-byte BOOTP minimum,
which some relays still require.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass, field

from pycni.dhcp.options import MessageType, Opt

IPv4Address = ipaddress.IPv4Address

MAGIC_COOKIE = b"\x63\x82\x53\x63"
BOOTREQUEST = 1
BOOTREPLY = 2
HTYPE_ETHERNET = 1
FLAG_BROADCAST = 0x8000
MIN_BOOTP_SIZE = 300
CLIENT_PORT = 68
SERVER_PORT = 67

_HEADER = struct.Struct("!BBBBIHH4s4s4s4s16s64s128s")
UNSPECIFIED = IPv4Address(0)


class PacketError(ValueError):
    """Bytes that are not a DHCP message; the receiver drops them."""


@dataclass
class Message:
    """One DHCP message; addresses are ``IPv4Address``, ``chaddr`` the raw hardware address."""

    op: int = BOOTREQUEST
    xid: int = 0
    secs: int = 0
    flags: int = 0
    ciaddr: IPv4Address = UNSPECIFIED
    yiaddr: IPv4Address = UNSPECIFIED
    siaddr: IPv4Address = UNSPECIFIED
    giaddr: IPv4Address = UNSPECIFIED
    chaddr: bytes = b""
    htype: int = HTYPE_ETHERNET
    hops: int = 0
    sname: bytes = b""
    file: bytes = b""
    options: dict[int, bytes] = field(default_factory=dict)

    @property
    def message_type(self) -> MessageType | None:
        value = self.options.get(Opt.MESSAGE_TYPE, b"")
        try:
            return MessageType(value[0]) if len(value) == 1 else None
        except ValueError:
            return None

    def option(self, code: int) -> bytes | None:
        return self.options.get(code)

    def encode(self) -> bytes:
        chaddr = self.chaddr[:16]
        header = _HEADER.pack(
            self.op,
            self.htype,
            len(chaddr),
            self.hops,
            self.xid,
            self.secs,
            self.flags,
            self.ciaddr.packed,
            self.yiaddr.packed,
            self.siaddr.packed,
            self.giaddr.packed,
            chaddr,
            self.sname[:64],
            self.file[:128],
        )
        body = bytearray(header + MAGIC_COOKIE)
        for code, value in self.options.items():
            body += encode_option(code, value)
        body.append(Opt.END)
        if len(body) < MIN_BOOTP_SIZE:
            body += bytes(MIN_BOOTP_SIZE - len(body))
        return bytes(body)

    @classmethod
    def decode(cls, data: bytes) -> Message:
        if len(data) < _HEADER.size + len(MAGIC_COOKIE):
            raise PacketError(f"a DHCP message is at least 240 bytes, got {len(data)}")
        (op, htype, hlen, hops, xid, secs, flags, ciaddr, yiaddr, siaddr, giaddr, chaddr, sname, file) = (
            _HEADER.unpack_from(data)
        )
        if data[_HEADER.size : _HEADER.size + 4] != MAGIC_COOKIE:
            raise PacketError("no DHCP magic cookie (a plain BOOTP message?)")
        options: dict[int, bytes] = {}
        _decode_options(data[_HEADER.size + 4 :], options)
        overload = options.get(Opt.OVERLOAD, b"\x00")[:1]
        if overload in (b"\x01", b"\x03"):
            _decode_options(file, options)
        if overload in (b"\x02", b"\x03"):
            _decode_options(sname, options)
        return cls(
            op=op,
            htype=htype,
            hops=hops,
            xid=xid,
            secs=secs,
            flags=flags,
            ciaddr=IPv4Address(ciaddr),
            yiaddr=IPv4Address(yiaddr),
            siaddr=IPv4Address(siaddr),
            giaddr=IPv4Address(giaddr),
            chaddr=chaddr[: min(hlen, 16)],
            sname=b"" if overload in (b"\x02", b"\x03") else sname.rstrip(b"\x00"),
            file=b"" if overload in (b"\x01", b"\x03") else file.rstrip(b"\x00"),
            options=options,
        )


def encode_option(code: int, value: bytes) -> bytes:
    """``code len value``, split into several instances when longer than 255 (RFC 3396)."""
    if not value:
        return bytes((code, 0))
    out = bytearray()
    for i in range(0, len(value), 255):
        chunk = value[i : i + 255]
        out += bytes((code, len(chunk))) + chunk
    return bytes(out)


def _decode_options(data: bytes, into: dict[int, bytes]) -> None:
    i = 0
    while i < len(data):
        code = data[i]
        if code == Opt.PAD:
            i += 1
            continue
        if code == Opt.END:
            return
        if i + 1 >= len(data):
            raise PacketError(f"option {code} has no length byte")
        length = data[i + 1]
        value = data[i + 2 : i + 2 + length]
        if len(value) != length:
            raise PacketError(f"option {code} is truncated ({len(value)} of {length} bytes)")
        into[code] = into.get(code, b"") + value
        i += 2 + length
