"""DHCP wire format without root: messages, options, IPv4/UDP framing, and the lease read from an ACK.

``DNSMASQ_ACK`` is a DHCPACK captured from dnsmasq 2.90 (an independent
implementation), so decoding is checked against bytes pycni did not write.
"""

from __future__ import annotations

import ipaddress

import pytest

from pycni.dhcp import frame
from pycni.dhcp import options as o
from pycni.dhcp.lease import SCOPE_LINK, Lease, LeaseError, LeaseRoute
from pycni.dhcp.options import MessageType, Opt
from pycni.dhcp.packet import FLAG_BROADCAST, MAGIC_COOKIE, Message, PacketError, encode_option

IP = ipaddress.IPv4Address
NET = ipaddress.IPv4Interface
MAC = bytes.fromhex("020000000001")

# dnsmasq --dhcp-range=10.66.0.10,10.66.0.50,2m --dhcp-option=option:dns-server,10.66.0.1
#   --dhcp-option=option:classless-static-route,10.77.0.0/16,10.66.0.1,10.88.0.0/30,0.0.0.0
#   --dhcp-option=option:domain-search,pods.test,svc.pods.test --dhcp-option=option:domain-name,pods.test
#   --dhcp-option=option:static-route,10.1.2.0,10.66.0.1
DNSMASQ_ACK = bytes.fromhex(
    "02010600"  # op=BOOTREPLY htype=1 hlen=6 hops=0
    "52e6b438"  # xid
    "00000000"  # secs, flags
    "00000000"  # ciaddr
    "0a420013"  # yiaddr 10.66.0.19
    "0a420001"  # siaddr 10.66.0.1
    "00000000"  # giaddr
    "020000000001" + "00" * 10 + "00" * 64 + "00" * 128 +  # chaddr, sname, file
    "63825363"
    "350105"  # message type ACK
    "36040a420001"  # server identifier
    "330400000078"  # lease time 120
    "3a040000003c"  # T1 60
    "3b0400000069"  # T2 105
    "0104ffffff00"  # subnet mask
    "1c040a4200ff"  # broadcast address
    "03040a420001"  # routers
    "21080a0102000a420001"  # static routes: 10.1.2.0 via 10.66.0.1
    "0f09706f64732e74657374"  # domain name "pods.test"
    "771104706f647304746573740003737663c000"  # domain search: pods.test, svc + pointer to 0
    "7910100a4d0a4200011e0a58000000000000"  # classless: 10.77/16 via 10.66.0.1, 10.88.0.0/30 on-link
    "06040a420001"  # DNS servers
    "ff"
)  # fmt: skip


def test_decode_dnsmasq_ack() -> None:
    ack = Message.decode(DNSMASQ_ACK)
    assert (ack.op, ack.xid, ack.flags) == (2, 0x52E6B438, 0)
    assert (ack.ciaddr, ack.yiaddr, ack.siaddr, ack.giaddr) == (IP(0), IP("10.66.0.19"), IP("10.66.0.1"), IP(0))
    assert ack.chaddr == MAC and ack.sname == b"" and ack.file == b""
    assert ack.message_type is MessageType.ACK
    assert list(ack.options) == [53, 54, 51, 58, 59, 1, 28, 3, 33, 15, 119, 121, 6]
    assert o.ip(ack.options[Opt.SERVER_ID]) == IP("10.66.0.1")
    assert o.u32(ack.options[Opt.LEASE_TIME]) == 120


def test_encode_reproduces_the_captured_bytes() -> None:
    assert Message.decode(DNSMASQ_ACK).encode() == DNSMASQ_ACK


def test_lease_from_dnsmasq_ack() -> None:
    lease = Lease.from_ack(Message.decode(DNSMASQ_ACK), b"\xaa" * 6, now=1000.0)
    assert lease.address == NET("10.66.0.19/24")
    assert lease.gateway == IP("10.66.0.1")
    assert lease.routes == [
        LeaseRoute(NET("10.77.0.0/16"), IP("10.66.0.1")),
        LeaseRoute(NET("10.88.0.0/30"), IP("0.0.0.0"), SCOPE_LINK),
    ], "option 121 replaces option 33 and the routers' default route (RFC 3442)"
    assert lease.nameservers == [IP("10.66.0.1")]
    assert lease.domain == "pods.test"
    assert lease.search == ["pods.test", "svc.pods.test"]
    assert (lease.lease_time, lease.renewal_time, lease.rebinding_time) == (120, 60, 105)
    assert (lease.renew_at, lease.rebind_at, lease.expires_at) == (1060.0, 1105.0, 1120.0)
    assert lease.to_wire(now=1010.0) == {
        "address": "10.66.0.19/24",
        "gateway": "10.66.0.1",
        "routes": [{"dst": "10.77.0.0/16", "gw": "10.66.0.1"}, {"dst": "10.88.0.0/30", "gw": "0.0.0.0", "scope": 253}],
        "dns": {"nameservers": ["10.66.0.1"], "domain": "pods.test", "search": ["pods.test", "svc.pods.test"]},
        "serverID": "10.66.0.1",
        "leaseTime": 120,
        "expiresIn": 110.0,
        "renewIn": 50.0,
    }


def test_lease_without_classless_routes_uses_static_routes_then_default() -> None:
    ack = Message.decode(DNSMASQ_ACK)
    del ack.options[Opt.CLASSLESS_STATIC_ROUTES]
    lease = Lease.from_ack(ack, b"", now=0.0)
    assert lease.routes == [
        LeaseRoute(NET("10.1.2.0/8"), IP("10.66.0.1")),  # classful, host bits kept as Go keeps them
        LeaseRoute(NET("0.0.0.0/0"), IP("10.66.0.1")),
    ]


def test_lease_needs_a_subnet_mask_and_defaults_its_timers() -> None:
    ack = Message.decode(DNSMASQ_ACK)
    del ack.options[Opt.SUBNET_MASK]
    with pytest.raises(LeaseError, match="Subnet Mask not found"):
        Lease.from_ack(ack, b"", now=0.0)
    ack = Message.decode(DNSMASQ_ACK)
    for code in (Opt.LEASE_TIME, Opt.RENEWAL_TIME, Opt.REBINDING_TIME):
        del ack.options[code]
    lease = Lease.from_ack(ack, b"", now=0.0)
    assert (lease.lease_time, lease.renewal_time, lease.rebinding_time) == (3600, 1800, 3150)
    ack.options[Opt.LEASE_TIME] = (100).to_bytes(4, "big")
    ack.options[Opt.RENEWAL_TIME] = (90).to_bytes(4, "big")  # T1 after T2 is clamped
    ack.options[Opt.REBINDING_TIME] = (80).to_bytes(4, "big")
    lease = Lease.from_ack(ack, b"", now=0.0)
    assert (lease.renewal_time, lease.rebinding_time) == (50, 80)
    ack.options[Opt.LEASE_TIME] = b"\xff\xff\xff\xff"
    lease = Lease.from_ack(ack, b"", now=0.0)
    assert lease.infinite and lease.to_wire(0.0)["expiresIn"] is None


def test_encode_discover_matches_hand_written_bytes() -> None:
    discover = Message(
        xid=0x01020304,
        flags=FLAG_BROADCAST,
        chaddr=MAC,
        options={
            Opt.MESSAGE_TYPE: bytes((MessageType.DISCOVER,)),
            Opt.CLIENT_ID: o.client_id("ctr1/net/eth0"),
            Opt.PARAMETER_REQUEST_LIST: bytes((1, 3)),
        },
    )
    expected = (
        b"\x01\x01\x06\x00" + b"\x01\x02\x03\x04" + b"\x00\x00\x80\x00" + bytes(16)
        + MAC + bytes(10) + bytes(64) + bytes(128) + MAGIC_COOKIE
        + b"\x35\x01\x01" + b"\x3d\x0e\x00ctr1/net/eth0" + b"\x37\x02\x01\x03" + b"\xff"
    )  # fmt: skip
    encoded = discover.encode()
    assert len(encoded) == 300, "padded to the BOOTP minimum"
    assert encoded == expected + bytes(300 - len(expected))


def test_long_options_are_split_and_joined() -> None:
    value = bytes(range(256)) + b"tail"
    assert encode_option(43, value) == b"\x2b\xff" + value[:255] + b"\x2b\x05" + value[255:]
    message = Message(options={43: value})
    assert Message.decode(message.encode()).options[43] == value


def test_option_overload_reads_file_and_sname() -> None:
    raw = bytearray(Message(op=2, options={Opt.MESSAGE_TYPE: b"\x02", Opt.OVERLOAD: b"\x03"}).encode())
    raw[108:112] = b"\x03\x04\x0a\x00"  # file field (offset 108): routers 10.0.x.x, continued...
    raw[112:115] = b"\x00\x01\xff"  # ...10.0.0.1, END
    raw[44:51] = b"\x0f\x04test\xff"  # sname field (offset 44): domain name, END
    decoded = Message.decode(bytes(raw))
    assert o.ip_list(decoded.options[Opt.ROUTERS]) == [IP("10.0.0.1")]
    assert o.text(decoded.options[Opt.DOMAIN_NAME]) == "test"
    assert decoded.file == b"" and decoded.sname == b""


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"\x02" * 100, "at least 240"),
        (DNSMASQ_ACK[:236] + b"\x00\x00\x00\x00" + DNSMASQ_ACK[240:], "magic cookie"),
        (DNSMASQ_ACK[:240] + b"\x35\x05\x01", "truncated"),
        (DNSMASQ_ACK[:240] + b"\x35", "no length byte"),
    ],
)
def test_malformed_messages_are_rejected(data: bytes, why: str) -> None:
    with pytest.raises(PacketError, match=why):
        Message.decode(data)


# -- options ------------------------------------------------------------------


def test_parse_option_name() -> None:
    assert o.parse_option_name("host-name") == 12, "Go's test: by name"
    assert o.parse_option_name("12") == 12, "Go's test: by number"
    assert o.parse_option_name("classless-static-routes") == 121
    assert o.parse_option_name(" Domain-Name-Servers ") == 6
    assert o.parse_option_name(60) == 60
    for bad in ("doNotparseMe", "0", "255", "-1", "1.5"):
        with pytest.raises(ValueError):
            o.parse_option_name(bad)


def test_static_routes_go_vector() -> None:
    data = bytes([10, 0, 0, 0, 10, 1, 2, 3, 192, 168, 1, 0, 192, 168, 2, 3])
    assert o.static_routes(data) == [
        (NET("10.0.0.0/8"), IP("10.1.2.3")),
        (NET("192.168.1.0/24"), IP("192.168.2.3")),
    ]
    assert o.static_routes(data[:12]) == [(NET("10.0.0.0/8"), IP("10.1.2.3"))], "a partial pair is dropped"
    assert o.classful_prefix(IP("172.16.0.0")) == 16 and o.classful_prefix(IP("224.0.0.1")) == 32


def test_classless_static_routes_rfc3442() -> None:
    data = bytes.fromhex(
        "00" "0a000001"  # 0.0.0.0/0 via 10.0.0.1
        "08" "0a" "0a000002"  # 10.0.0.0/8 via 10.0.0.2
        "18" "c0a801" "00000000"  # 192.168.1.0/24 on-link
        "19" "c0a80180" "0a000003"  # 192.168.1.128/25 via 10.0.0.3
        "20" "0a0b0c0d" "0a000004"  # 10.11.12.13/32 via 10.0.0.4
    )  # fmt: skip
    assert o.classless_static_routes(data) == [
        (NET("0.0.0.0/0"), IP("10.0.0.1")),
        (NET("10.0.0.0/8"), IP("10.0.0.2")),
        (NET("192.168.1.0/24"), IP("0.0.0.0")),
        (NET("192.168.1.128/25"), IP("10.0.0.3")),
        (NET("10.11.12.13/32"), IP("10.0.0.4")),
    ]
    with pytest.raises(ValueError, match="truncated"):
        o.classless_static_routes(data[:-1])
    with pytest.raises(ValueError, match="prefix length 33"):
        o.classless_static_routes(bytes.fromhex("21") + bytes(8))


def test_malformed_classless_routes_fall_back_to_routers() -> None:
    ack = Message.decode(DNSMASQ_ACK)
    ack.options[Opt.CLASSLESS_STATIC_ROUTES] = b"\x18\x0a"
    assert Lease.from_ack(ack, b"", 0.0).routes[-1] == LeaseRoute(NET("0.0.0.0/0"), IP("10.66.0.1"))


def test_domain_names() -> None:
    assert o.domain_names(bytes.fromhex("03666f6f0000")) == ["foo", ""]
    with pytest.raises(ValueError, match="loop"):
        o.domain_names(bytes.fromhex("c000"))
    with pytest.raises(ValueError, match="truncated"):
        o.domain_names(bytes.fromhex("03666f"))


def test_value_readers() -> None:
    assert o.ip_list(bytes.fromhex("0a0000010a00000203")) == [IP("10.0.0.1"), IP("10.0.0.2")]
    assert o.ip(b"\x01") is None and o.u32(b"") is None
    assert o.text(b"pods.test\x00\x00") == "pods.test"
    assert o.client_id("a/b/c") == b"\x00a/b/c"


# -- IPv4/UDP framing ---------------------------------------------------------


def test_checksum_known_header() -> None:
    header = bytes.fromhex("450000730000400040110000c0a80001c0a800c7")
    assert frame.checksum(header) == 0xB861


def test_frame_roundtrip_and_checksums() -> None:
    datagram = frame.Datagram(IP("0.0.0.0"), IP("255.255.255.255"), 68, 67, b"hello dhcp")
    packet = frame.build(datagram)
    assert packet[:2] == b"\x45\x10" and packet[9] == 17 and len(packet) == 20 + 8 + 10
    assert frame.checksum(packet[:20]) == 0, "the IPv4 header checksum verifies"
    pseudo = datagram.src.packed + datagram.dst.packed + b"\x00\x11\x00\x12"
    assert frame.checksum(pseudo + packet[20:]) == 0, "the UDP checksum verifies"
    assert frame.parse(packet) == datagram
    assert frame.parse(packet + b"ethernet padding") == datagram


def test_frame_parse_rejects_what_is_not_a_whole_udp_datagram() -> None:
    packet = bytearray(frame.build(frame.Datagram(IP("10.0.0.1"), IP("10.0.0.2"), 67, 68, b"x" * 8)))
    assert frame.parse(bytes(packet[:10])) is None
    tcp = bytearray(packet)
    tcp[9] = 6
    assert frame.parse(bytes(tcp)) is None
    fragment = bytearray(packet)
    fragment[6] = 0x20  # more fragments
    assert frame.parse(bytes(fragment)) is None
    assert frame.parse(bytes(packet[:30])) is None, "shorter than its total length"
