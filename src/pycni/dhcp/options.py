"""DHCPv4 option codes, their dhcp-options(5) names, and typed option values.

The plugin reads option names from its config (``request``, ``provide``) with
:func:`parse_option_name`; the daemon decodes what the server granted with the
value readers below. Standard library only: the plugin executable imports it.
"""

from __future__ import annotations

import ipaddress
from enum import IntEnum

IPv4Address = ipaddress.IPv4Address
IPv4Interface = ipaddress.IPv4Interface


class Opt(IntEnum):
    """The option codes pycni sends or reads (RFC 2132, 3004, 3397, 3442)."""

    PAD = 0
    SUBNET_MASK = 1
    ROUTERS = 3
    DOMAIN_NAME_SERVERS = 6
    HOST_NAME = 12
    DOMAIN_NAME = 15
    STATIC_ROUTES = 33
    REQUESTED_IP = 50
    LEASE_TIME = 51
    OVERLOAD = 52
    MESSAGE_TYPE = 53
    SERVER_ID = 54
    PARAMETER_REQUEST_LIST = 55
    MESSAGE = 56
    MAX_MESSAGE_SIZE = 57
    RENEWAL_TIME = 58
    REBINDING_TIME = 59
    VENDOR_CLASS_ID = 60
    CLIENT_ID = 61
    USER_CLASS = 77
    DOMAIN_SEARCH = 119
    CLASSLESS_STATIC_ROUTES = 121
    END = 255


# Names as dhcp-options(5) spells them. Go's plugin knows six of these; the
# rest are the common ones users look up in that manual page.
OPTION_NAMES: dict[str, int] = {
    "subnet-mask": 1,
    "time-offset": 2,
    "routers": 3,
    "time-servers": 4,
    "domain-name-servers": 6,
    "log-servers": 7,
    "host-name": 12,
    "domain-name": 15,
    "interface-mtu": 26,
    "broadcast-address": 28,
    "static-routes": 33,
    "ntp-servers": 42,
    "vendor-encapsulated-options": 43,
    "netbios-name-servers": 44,
    "dhcp-requested-address": 50,
    "dhcp-lease-time": 51,
    "dhcp-server-identifier": 54,
    "dhcp-parameter-request-list": 55,
    "dhcp-max-message-size": 57,
    "dhcp-renewal-time": 58,
    "dhcp-rebinding-time": 59,
    "vendor-class-identifier": 60,
    "dhcp-client-identifier": 61,
    "user-class": 77,
    "fqdn": 81,
    "domain-search": 119,
    "classless-static-routes": 121,
}

# Go requests routers and subnet-mask; pycni also asks for what it turns into
# the result (DNS, static routes), as RFC 3442 asks a client that uses 121 to.
DEFAULT_REQUEST: tuple[int, ...] = (
    Opt.SUBNET_MASK,
    Opt.ROUTERS,
    Opt.DOMAIN_NAME_SERVERS,
    Opt.DOMAIN_NAME,
    Opt.STATIC_ROUTES,
    Opt.DOMAIN_SEARCH,
    Opt.CLASSLESS_STATIC_ROUTES,
)


class MessageType(IntEnum):
    """Option 53 values (RFC 2132 §9.6)."""

    DISCOVER = 1
    OFFER = 2
    REQUEST = 3
    DECLINE = 4
    ACK = 5
    NAK = 6
    RELEASE = 7
    INFORM = 8


def parse_option_name(option: str | int) -> int:
    """An option code from a dhcp-options(5) name or a decimal number 1-254.

    Raises ``ValueError`` naming the option; the plugin turns it into code 7.
    """
    if isinstance(option, bool):
        raise ValueError(f"unknown DHCP option {option!r}")
    if isinstance(option, int):
        code = option
    else:
        text = option.strip()
        if text.lower() in OPTION_NAMES:
            return OPTION_NAMES[text.lower()]
        if not (text.isascii() and text.isdigit()):
            raise ValueError(f"unknown DHCP option {option!r}: use a dhcp-options(5) name or a number")
        code = int(text)
    if not 0 < code < 255:
        raise ValueError(f"DHCP option {option!r} is out of range (1-254)")
    return code


# -- reading values -----------------------------------------------------------


def ip(value: bytes) -> IPv4Address | None:
    """A single address, or ``None`` if the option is malformed."""
    return IPv4Address(value[:4]) if len(value) >= 4 else None


def ip_list(value: bytes) -> list[IPv4Address]:
    """A list of addresses (routers, DNS servers); a trailing partial one is dropped."""
    return [IPv4Address(value[i : i + 4]) for i in range(0, len(value) - 3, 4)]


def u32(value: bytes) -> int | None:
    return int.from_bytes(value[:4], "big") if len(value) >= 4 else None


def text(value: bytes) -> str:
    """A string option; servers sometimes pad with NULs."""
    return value.rstrip(b"\x00").decode("utf-8", "replace")


def classful_prefix(address: IPv4Address) -> int:
    """The class A/B/C prefix length of ``address`` (option 33 destinations are classful)."""
    first = address.packed[0]
    if first < 128:
        return 8
    if first < 192:
        return 16
    if first < 224:
        return 24
    return 32  # class D/E have no natural mask; treat as a host route


def static_routes(value: bytes) -> list[tuple[IPv4Interface, IPv4Address]]:
    """Option 33: pairs of (classful destination, router)."""
    routes = []
    for i in range(0, len(value) - 7, 8):
        dst = IPv4Address(value[i : i + 4])
        routes.append((IPv4Interface((dst, classful_prefix(dst))), IPv4Address(value[i + 4 : i + 8])))
    return routes


def classless_static_routes(value: bytes) -> list[tuple[IPv4Interface, IPv4Address]]:
    """Option 121 (RFC 3442): width, the significant octets of the destination, router.

    A malformed option is an error as a whole (``ValueError``): applying half
    a routing table is worse than none, and RFC 3442 falls back to option 3.
    """
    routes = []
    i = 0
    while i < len(value):
        width = value[i]
        if width > 32:
            raise ValueError(f"classless static route with prefix length {width}")
        octets = (width + 7) // 8
        end = i + 1 + octets + 4
        if end > len(value):
            raise ValueError("classless static routes option is truncated")
        dst = IPv4Address(value[i + 1 : i + 1 + octets].ljust(4, b"\x00"))
        router = IPv4Address(value[i + 1 + octets : end])
        routes.append((IPv4Interface((dst, width)), router))
        i = end
    return routes


def domain_names(value: bytes) -> list[str]:
    """Option 119 (RFC 3397): DNS names in wire format, compression pointers allowed."""
    names = []
    i = 0
    while i < len(value):
        name, i = _read_name(value, i)
        names.append(name)
    return names


def _read_name(data: bytes, start: int) -> tuple[str, int]:
    """One name at ``start``; returns it and where the next one begins."""
    labels: list[str] = []
    i, resume, hops = start, -1, 0
    while True:
        if i >= len(data):
            raise ValueError("domain search option is truncated")
        length = data[i]
        if length == 0:
            i += 1
            break
        if length & 0xC0 == 0xC0:
            if i + 1 >= len(data):
                raise ValueError("domain search option is truncated")
            hops += 1
            if hops > 64:
                raise ValueError("domain search option has a compression loop")
            if resume < 0:
                resume = i + 2
            i = ((length & 0x3F) << 8) | data[i + 1]
            continue
        labels.append(data[i + 1 : i + 1 + length].decode("ascii", "replace"))
        i += 1 + length
    return ".".join(labels), resume if resume >= 0 else i


# -- writing values -----------------------------------------------------------


def client_id(ident: str) -> bytes:
    """Option 61 as Go's plugin sends it: type 0 (not a hardware address), then the text."""
    return b"\x00" + ident.encode()
