"""The DHCP client's exchanges (RFC 2131 §3-4), one transport at a time.

:class:`Client` knows the messages and how to wait for their answers; it
keeps no state between calls, so the lease manager decides what to do when
(see :mod:`pycni.dhcp.manager`). Each exchange resends its message with
exponential back-off (1 s, 2 s, 4 s, then every 8 s, jittered) until its
``timeout`` runs out: short first retries because a container's ADD is
waiting, where RFC 2131 starts at 4 s.

Every message carries the client identifier (option 61, type 0 + the text,
as Go's plugin builds it), the parameter request list, and the options the
config provides (host-name and the like). Renewal is unicast to the server
that granted the lease, to the MAC its ACK came from; rebinding and the
initial exchange are broadcast.
"""

from __future__ import annotations

import ipaddress
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from pycni.dhcp.lease import Lease
from pycni.dhcp.options import DEFAULT_REQUEST, MessageType, Opt, client_id
from pycni.dhcp.packet import BOOTREPLY, FLAG_BROADCAST, UNSPECIFIED, Message, PacketError
from pycni.dhcp.transport import BROADCAST_MAC, Transport

IPv4Address = ipaddress.IPv4Address
BROADCAST = IPv4Address("255.255.255.255")
RETRANSMIT = (1.0, 2.0, 4.0, 8.0)
POLL = 0.5  # how often a waiting exchange looks whether it was cancelled
# Options a config may not override: they define the message itself.
RESERVED = frozenset({Opt.MESSAGE_TYPE, Opt.REQUESTED_IP, Opt.SERVER_ID, Opt.PARAMETER_REQUEST_LIST})

log = logging.getLogger("pycni.dhcp")


class DHCPTimeout(Exception):
    """No acceptable answer within the exchange's timeout."""


class DHCPCancelled(DHCPTimeout):
    """The lease is being stopped; the exchange gives up at once."""


class DHCPNak(Exception):
    """The server refused the address (DHCPNAK)."""


@dataclass(frozen=True)
class ClientConfig:
    """Who the client is and what it asks for; fixed for the life of a lease."""

    client_id: str
    request: tuple[int, ...] = DEFAULT_REQUEST
    provide: dict[int, bytes] = field(default_factory=dict)
    broadcast: bool = False
    timeout: float = 10.0


@dataclass(frozen=True)
class Reply:
    message: Message
    server_mac: bytes


class Client:
    """DHCP exchanges over one transport."""

    def __init__(
        self,
        transport: Transport,
        config: ClientConfig,
        now: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        cancelled: threading.Event | None = None,
    ) -> None:
        self.transport = transport
        self.config = config
        self.now = now
        self.rng = rng or random.Random()
        self.cancelled = cancelled

    # -- the exchanges --------------------------------------------------------

    def acquire(self, requested: IPv4Address | None = None) -> Reply:
        """DISCOVER, take the first OFFER, REQUEST it; the ACK, or :class:`DHCPNak`."""
        started = self.now()
        xid = self.rng.getrandbits(32)
        extra: dict[int, bytes] = {Opt.REQUESTED_IP: requested.packed} if requested else {}
        discover = self._message(MessageType.DISCOVER, xid, extra=extra)
        offer = self._exchange(discover, BROADCAST, UNSPECIFIED, BROADCAST_MAC, started, _is_offer)
        server_id = offer.message.option(Opt.SERVER_ID) or b""
        log.debug("%s: offered %s by %s", self.config.client_id, offer.message.yiaddr, _ip_text(server_id))
        request = self._message(
            MessageType.REQUEST,
            xid,
            extra={Opt.REQUESTED_IP: offer.message.yiaddr.packed, Opt.SERVER_ID: server_id},
        )

        def from_chosen_server(reply: Message) -> bool:
            their_id = reply.option(Opt.SERVER_ID)
            return _is_ack_or_nak(reply) and (their_id is None or their_id == server_id)

        return self._answer(self._exchange(request, BROADCAST, UNSPECIFIED, BROADCAST_MAC, started, from_chosen_server))

    def renew(self, lease: Lease) -> Reply:
        """RENEWING: a REQUEST with ``ciaddr`` unicast to the server that granted the lease."""
        started = self.now()
        request = self._message(MessageType.REQUEST, self.rng.getrandbits(32), ciaddr=lease.address.ip)
        mac = lease.server_mac or BROADCAST_MAC
        reply = self._exchange(request, lease.server_id, lease.address.ip, mac, started, _is_ack_or_nak)
        return self._answer(reply)

    def rebind(self, lease: Lease) -> Reply:
        """REBINDING: the same REQUEST broadcast, for any server to answer."""
        started = self.now()
        request = self._message(MessageType.REQUEST, self.rng.getrandbits(32), ciaddr=lease.address.ip)
        reply = self._exchange(request, BROADCAST, lease.address.ip, BROADCAST_MAC, started, _is_ack_or_nak)
        return self._answer(reply)

    def release(self, lease: Lease) -> None:
        """DHCPRELEASE to the granting server; it has no answer."""
        message = Message(
            xid=self.rng.getrandbits(32),
            ciaddr=lease.address.ip,
            chaddr=self.transport.mac,
            options={
                Opt.MESSAGE_TYPE: bytes((MessageType.RELEASE,)),
                Opt.SERVER_ID: lease.server_id.packed,
                Opt.CLIENT_ID: self.config.provide.get(Opt.CLIENT_ID, client_id(self.config.client_id)),
            },
        )
        self.transport.send(message.encode(), lease.address.ip, lease.server_id, lease.server_mac or BROADCAST_MAC)

    # -- building and waiting -----------------------------------------------------

    def _message(
        self,
        kind: MessageType,
        xid: int,
        ciaddr: IPv4Address = UNSPECIFIED,
        extra: dict[int, bytes] | None = None,
    ) -> Message:
        opts: dict[int, bytes] = {Opt.MESSAGE_TYPE: bytes((kind,)), Opt.CLIENT_ID: client_id(self.config.client_id)}
        if self.config.request:
            opts[Opt.PARAMETER_REQUEST_LIST] = bytes(self.config.request)
        opts.update((code, value) for code, value in self.config.provide.items() if code not in RESERVED)
        opts.update(extra or {})
        broadcast = self.config.broadcast and ciaddr == UNSPECIFIED
        return Message(
            xid=xid,
            ciaddr=ciaddr,
            chaddr=self.transport.mac,
            flags=FLAG_BROADCAST if broadcast else 0,
            options=opts,
        )

    def _exchange(
        self,
        message: Message,
        dst: IPv4Address,
        src: IPv4Address,
        dst_mac: bytes,
        started: float,
        accept: Callable[[Message], bool],
    ) -> Reply:
        deadline = self.now() + self.config.timeout
        attempt = 0
        while True:
            message.secs = min(int(self.now() - started), 0xFFFF)
            self.transport.send(message.encode(), src, dst, dst_mac)
            interval = RETRANSMIT[min(attempt, len(RETRANSMIT) - 1)]
            resend_at = min(self.now() + interval * self.rng.uniform(0.9, 1.1), deadline)
            attempt += 1
            while (remaining := resend_at - self.now()) > 0:
                if self.cancelled is not None and self.cancelled.is_set():
                    raise DHCPCancelled("cancelled: the lease is being stopped")
                received = self.transport.receive(min(remaining, POLL))
                if received is None:
                    continue
                reply = self._decode(received[0], message.xid)
                if reply is not None and accept(reply):
                    return Reply(reply, received[1])
            if self.now() >= deadline:
                kind = message.message_type
                what = kind.name if kind else "message"
                raise DHCPTimeout(f"no answer to DHCP{what} within {self.config.timeout:g}s")

    def _decode(self, payload: bytes, xid: int) -> Message | None:
        try:
            reply = Message.decode(payload)
        except PacketError as exc:
            log.debug("dropping a malformed DHCP packet: %s", exc)
            return None
        if reply.op != BOOTREPLY or reply.xid != xid or reply.chaddr[:6] != self.transport.mac[:6]:
            return None
        return reply

    def _answer(self, reply: Reply) -> Reply:
        if reply.message.message_type == MessageType.NAK:
            text = reply.message.option(Opt.MESSAGE) or b""
            raise DHCPNak(f"DHCPNAK from the server{': ' + text.decode('utf-8', 'replace') if text else ''}")
        return reply


def _is_offer(reply: Message) -> bool:
    return (
        reply.message_type == MessageType.OFFER
        and reply.yiaddr != UNSPECIFIED
        and reply.option(Opt.SERVER_ID) is not None
    )


def _is_ack_or_nak(reply: Message) -> bool:
    return reply.message_type in (MessageType.ACK, MessageType.NAK)


def _ip_text(value: bytes) -> str:
    return str(IPv4Address(value)) if len(value) == 4 else "?"
