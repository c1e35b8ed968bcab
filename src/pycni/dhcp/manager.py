"""The leases the daemon holds, one per attachment, each kept alive by a thread.

A lease is keyed by its client ID, ``containerID/network/ifname`` cut to 254
characters as Go's plugin builds it. Its thread follows RFC 2131 §4.4.5:

    BOUND      until T1
    RENEWING   REQUEST unicast to the granting server, retried until T2
    REBINDING  REQUEST broadcast to any server, retried until the lease expires
    EXPIRED    the interface is set down (what Go does) and the thread ends
    LOST       a DHCPNAK, and asking again for the same address failed
    GONE       the namespace or the interface disappeared (no DEL came)

Retries wait half the time left to the next deadline, at least
``MIN_RETRY`` (RFC 2131 says 60 s; container leases may be two minutes long).
Leases live in memory only: a restarted daemon has none (as in Go), and a DEL
or GC for a lease it does not hold succeeds.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from pycni.dhcp.client import Client, ClientConfig, DHCPCancelled, DHCPNak, DHCPTimeout, Reply
from pycni.dhcp.lease import Lease, LeaseError
from pycni.dhcp.options import DEFAULT_REQUEST, Opt
from pycni.dhcp.transport import LinkGone, Transport, open_packet_transport, set_link_down
from pycni.spec.errors import CNIError, ErrorCode

MAX_CLIENT_ID = 254
MIN_RETRY = 2.0
LOCK_STRIPES = 64

log = logging.getLogger("pycni.dhcp")


def client_id_for(container_id: str, network: str, ifname: str) -> str:
    """``containerID/network/ifname``, cut to 254 characters (option 61 holds 255 with its type byte)."""
    return f"{container_id}/{network}/{ifname}"[:MAX_CLIENT_ID]


class State(StrEnum):
    BOUND = "bound"
    RENEWING = "renewing"
    REBINDING = "rebinding"
    EXPIRED = "expired"
    LOST = "lost"
    GONE = "gone"


ALIVE = frozenset({State.BOUND, State.RENEWING, State.REBINDING})


@dataclass(frozen=True)
class Attachment:
    container_id: str
    network: str
    ifname: str
    netns: str

    @property
    def client_id(self) -> str:
        return client_id_for(self.container_id, self.network, self.ifname)


class Clock(Protocol):
    def now(self) -> float: ...

    def wait(self, event: threading.Event, seconds: float) -> bool:
        """Sleep up to ``seconds`` or until ``event`` is set; whether it was set."""
        ...


class MonotonicClock:
    def now(self) -> float:
        return time.monotonic()

    def wait(self, event: threading.Event, seconds: float) -> bool:
        return event.wait(max(seconds, 0.0))


@dataclass
class Environment:
    """How leases reach the world; tests replace every part."""

    timeout: float = 10.0
    broadcast: bool = False
    opener: Callable[[str, str], Transport] = open_packet_transport
    link_down: Callable[[str, str], None] = set_link_down
    clock: Clock = field(default_factory=MonotonicClock)


class ManagedLease:
    """One lease and the thread that renews it."""

    def __init__(self, attachment: Attachment, config: ClientConfig, lease: Lease, env: Environment) -> None:
        self.attachment = attachment
        self.config = config
        self.lease = lease
        self.env = env
        self.state = State.BOUND
        self.renewals = 0
        self.last_error = ""
        self._stopping = threading.Event()
        self._poke = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def alive(self) -> bool:
        return self.state in ALIVE

    def start(self) -> None:
        self._thread = threading.Thread(target=self._maintain, name=f"lease {self.config.client_id}", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """Re-evaluate now (Go's ``Check``): a lease past T1 is renewed at once."""
        self._poke.set()

    def stop(self, release: bool) -> None:
        """End maintenance; with ``release``, send DHCPRELEASE if the lease is still ours."""
        self._stopping.set()
        self._poke.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        if release and self.alive:
            try:
                self._with_client(lambda client: client.release(self.lease))
                log.info("%s: released %s", self.config.client_id, self.lease.address)
            except (LinkGone, OSError) as exc:
                log.warning("%s: could not send DHCPRELEASE: %s", self.config.client_id, exc)

    def describe(self) -> dict[str, Any]:
        data = self.lease.to_wire(self.env.clock.now())
        data.update(
            clientID=self.config.client_id,
            containerID=self.attachment.container_id,
            network=self.attachment.network,
            ifname=self.attachment.ifname,
            netns=self.attachment.netns,
            state=self.state.value,
            renewals=self.renewals,
        )
        if self.last_error:
            data["lastError"] = self.last_error
        return data

    # -- the state machine ---------------------------------------------------------

    def _maintain(self) -> None:
        while not self._stopping.is_set():
            try:
                delay = self.step()
            except Exception:  # a bug must not kill the lease silently
                log.exception("%s: lease maintenance failed", self.config.client_id)
                delay = MIN_RETRY
            if delay is None:
                return
            self.env.clock.wait(self._poke, delay)
            self._poke.clear()

    def step(self) -> float | None:
        """Do what the lease needs now; how long until the next step, or ``None`` when done."""
        lease, now = self.lease, self.env.clock.now()
        if lease.infinite:
            return None
        if now >= lease.expires_at:
            self._expire()
            return None
        if now < lease.renew_at:
            self.state = State.BOUND
            return lease.renew_at - now
        if now < lease.rebind_at:
            self.state = State.RENEWING
            return self._attempt(lambda client: client.renew(lease), lease.rebind_at)
        self.state = State.REBINDING
        return self._attempt(lambda client: client.rebind(lease), lease.expires_at)

    def _attempt(self, exchange: Callable[[Client], Reply], deadline: float) -> float | None:
        name = self.config.client_id
        try:
            reply = self._with_client(exchange)
        except DHCPCancelled:
            return None
        except (DHCPTimeout, OSError) as exc:  # OSError: e.g. the link is down for a moment
            self.last_error = str(exc)
            log.warning("%s: %s %s: %s", name, self.state.value, self.lease.address, exc)
            left = deadline - self.env.clock.now()
            return min(max(left / 2, MIN_RETRY), left) if left > 0 else 0.0
        except DHCPNak as exc:
            log.warning(
                "%s: %s %s: %s; asking for the same address again", name, self.state.value, self.lease.address, exc
            )
            return self._reacquire(str(exc))
        except LinkGone as exc:
            self._gone(exc)
            return None
        self._commit(reply)
        log.info("%s: lease on %s renewed for %ss", name, self.lease.address, self.lease.lease_time)
        return 0.0

    def _reacquire(self, why: str) -> float | None:
        """After a NAK: the container keeps its address, so only that address will do."""
        address = self.lease.address.ip
        try:
            reply = self._with_client(lambda client: client.acquire(requested=address))
        except DHCPCancelled:
            return None
        except LinkGone as exc:
            self._gone(exc)
            return None
        except (DHCPTimeout, DHCPNak) as exc:
            self._lose(f"{why}; asking again: {exc}")
            return None
        if reply.message.yiaddr != address:
            self._with_client(lambda client: _release_raw(client, reply))
            self._lose(f"{why}; the server now offers {reply.message.yiaddr} instead")
            return None
        self._commit(reply)
        return 0.0

    def _commit(self, reply: Reply) -> None:
        """Take a renewal's ACK; one that does not repeat the subnet mask keeps the mask held."""
        options = reply.message.options
        options.setdefault(Opt.SUBNET_MASK, self.lease.address.netmask.packed)
        mac = reply.server_mac or self.lease.server_mac
        self.lease = Lease.from_ack(reply.message, mac, self.env.clock.now())
        self.renewals += 1
        self.state = State.BOUND
        self.last_error = ""

    def _expire(self) -> None:
        self.state = State.EXPIRED
        self.last_error = "the lease expired without being renewed"
        log.warning(
            "%s: lease on %s expired; setting %s down",
            self.config.client_id,
            self.lease.address,
            self.attachment.ifname,
        )
        try:
            self.env.link_down(self.attachment.netns, self.attachment.ifname)
        except (CNIError, OSError) as exc:
            log.warning("%s: could not set %s down: %s", self.config.client_id, self.attachment.ifname, exc)

    def _lose(self, why: str) -> None:
        self.state = State.LOST
        self.last_error = why
        log.warning(
            "%s: lease on %s lost: %s; setting %s down",
            self.config.client_id,
            self.lease.address,
            why,
            self.attachment.ifname,
        )
        try:
            self.env.link_down(self.attachment.netns, self.attachment.ifname)
        except (CNIError, OSError) as exc:
            log.warning("%s: could not set %s down: %s", self.config.client_id, self.attachment.ifname, exc)

    def _gone(self, exc: CNIError) -> None:
        self.state = State.GONE
        self.last_error = exc.msg
        log.info("%s: %s; no longer maintaining the lease", self.config.client_id, exc.msg)

    def _with_client(self, action: Callable[[Client], Any]) -> Any:
        transport = self.env.opener(self.attachment.netns, self.attachment.ifname)
        try:
            client = Client(transport, self.config, now=self.env.clock.now, cancelled=self._stopping)
            return action(client)
        finally:
            transport.close()


class LeaseManager:
    """All leases of the daemon; safe to call from many request threads."""

    def __init__(self, env: Environment | None = None) -> None:
        self.env = env or Environment()
        self._leases: dict[str, ManagedLease] = {}
        self._table = threading.Lock()
        self._stripes = [threading.Lock() for _ in range(LOCK_STRIPES)]

    def _lock(self, client_id: str) -> threading.Lock:
        """Serialises calls for one client ID without holding up the others."""
        return self._stripes[zlib.crc32(client_id.encode()) % LOCK_STRIPES]

    def _get(self, client_id: str) -> ManagedLease | None:
        with self._table:
            return self._leases.get(client_id)

    def allocate(
        self,
        attachment: Attachment,
        request: tuple[int, ...] = DEFAULT_REQUEST,
        provide: dict[int, bytes] | None = None,
    ) -> dict[str, Any]:
        """The attachment's lease: the one held (as Go does on a repeated ADD), or a new one."""
        key = attachment.client_id
        with self._lock(key):
            held = self._get(key)
            if held is not None and held.alive:
                held.wake()
                return held.describe()
            if held is not None:
                held.stop(release=False)
            config = ClientConfig(key, request, dict(provide or {}), self.env.broadcast, self.env.timeout)
            managed = self._acquire(attachment, config)
            with self._table:
                self._leases[key] = managed
            managed.start()
            log.info("%s: lease on %s acquired for %ss", key, managed.lease.address, managed.lease.lease_time)
            return managed.describe()

    def _acquire(self, attachment: Attachment, config: ClientConfig) -> ManagedLease:
        where = f"{attachment.ifname} in {attachment.netns}"
        log.info("%s: acquiring a lease on %s", config.client_id, where)
        transport = self.env.opener(attachment.netns, attachment.ifname)
        try:
            client = Client(transport, config, now=self.env.clock.now)
            try:
                reply = client.acquire()
            except (DHCPTimeout, DHCPNak, OSError) as exc:
                raise CNIError(ErrorCode.INTERNAL, f"dhcp: no lease for {where}: {exc}") from None
            try:
                lease = Lease.from_ack(reply.message, reply.server_mac, self.env.clock.now())
            except LeaseError as exc:
                _release_raw(client, reply)
                raise CNIError(ErrorCode.INTERNAL, f"dhcp: {exc}") from None
        finally:
            transport.close()
        return ManagedLease(attachment, config, lease, self.env)

    def release(self, container_id: str, network: str, ifname: str) -> bool:
        """Stop and release the lease; whether there was one (none is still success)."""
        key = client_id_for(container_id, network, ifname)
        with self._lock(key):
            with self._table:
                managed = self._leases.pop(key, None)
            if managed is None:
                return False
            managed.stop(release=True)
            return True

    def check(self, container_id: str, network: str, ifname: str) -> dict[str, Any]:
        key = client_id_for(container_id, network, ifname)
        managed = self._get(key)
        if managed is None:
            raise CNIError(ErrorCode.UNKNOWN_CONTAINER, f"dhcp: the daemon holds no lease for {key}")
        if not managed.alive:
            raise CNIError(
                ErrorCode.INTERNAL, f"dhcp: the lease of {key} is {managed.state.value}: {managed.last_error}"
            )
        return managed.describe()

    def gc(self, network: str, valid: Iterable[tuple[str, str]]) -> list[str]:
        """Release every lease of ``network`` whose (containerID, ifname) is not in ``valid``."""
        keep = set(valid)
        with self._table:
            stale = [
                m.attachment
                for m in self._leases.values()
                if m.attachment.network == network and (m.attachment.container_id, m.attachment.ifname) not in keep
            ]
        released = []
        for attachment in stale:
            if self.release(attachment.container_id, attachment.network, attachment.ifname):
                released.append(attachment.client_id)
        return released

    def describe(self) -> list[dict[str, Any]]:
        with self._table:
            held = list(self._leases.values())
        return [m.describe() for m in held]

    def __len__(self) -> int:
        with self._table:
            return len(self._leases)

    def shutdown(self) -> None:
        """Stop every thread without releasing: the containers keep using their addresses."""
        with self._table:
            held = list(self._leases.values())
        for managed in held:
            managed.stop(release=False)


def _release_raw(client: Client, reply: Reply) -> None:
    """Give back an address we will not use (no subnet mask, or not the one we hold)."""
    address = ipaddress.IPv4Interface(f"{reply.message.yiaddr}/32")
    server = reply.message.option(Opt.SERVER_ID) or b""
    if len(server) != 4:
        return
    stray = Lease(address, ipaddress.IPv4Address(server), reply.server_mac, 0.0, 0, 0, 0)
    client.release(stray)
