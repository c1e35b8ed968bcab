"""The DHCP client, lease renewal and the daemon's dispatch, without root or a network.

A scripted server answers the client through a fake transport, and a fake
clock stands in for time, so T1/T2/expiry are stepped through in microseconds.
"""

from __future__ import annotations

import ipaddress
import os
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pycni.dhcp import protocol
from pycni.dhcp.client import Client, ClientConfig, DHCPNak, DHCPTimeout
from pycni.dhcp.lease import Lease
from pycni.dhcp.manager import Attachment, Environment, LeaseManager, ManagedLease, State, client_id_for
from pycni.dhcp.options import MessageType, Opt
from pycni.dhcp.packet import BOOTREPLY, Message
from pycni.dhcp.server import DaemonServer, handle_request
from pycni.dhcp.transport import BROADCAST_MAC, LinkGone
from pycni.plugins.ipam import dhcp as plugin_module
from pycni.skel import CmdArgs
from pycni.spec import CNIError, ErrorCode

IP = ipaddress.IPv4Address
CLIENT_MAC = bytes.fromhex("020000000001")
SERVER_MAC = bytes.fromhex("02000000aaaa")
SERVER = IP("10.66.0.1")


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def now(self) -> float:
        return self.t

    def wait(self, event: threading.Event, seconds: float) -> bool:
        self.t += max(seconds, 0.0)
        return event.is_set()


Responder = Callable[[Message], list[Message]]


class FakeServer:
    """Hands out 10.66.0.20 and answers the client's messages as ``mode`` says."""

    def __init__(self, clock: FakeClock, lease_time: int = 120, t1: int = 60, t2: int = 105) -> None:
        self.clock = clock
        self.lease_time, self.t1, self.t2 = lease_time, t1, t2
        self.address = IP("10.66.0.20")
        self.mode = "ack"  # "ack" | "nak" | "silent"
        self.received: list[tuple[Message, IP, IP, bytes]] = []

    def reply(self, request: Message, kind: MessageType) -> Message:
        options: dict[int, bytes] = {Opt.MESSAGE_TYPE: bytes((kind,)), Opt.SERVER_ID: SERVER.packed}
        if kind != MessageType.NAK:
            options |= {
                Opt.SUBNET_MASK: IP("255.255.255.0").packed,
                Opt.ROUTERS: SERVER.packed,
                Opt.LEASE_TIME: self.lease_time.to_bytes(4, "big"),
                Opt.RENEWAL_TIME: self.t1.to_bytes(4, "big"),
                Opt.REBINDING_TIME: self.t2.to_bytes(4, "big"),
            }
        yiaddr = self.address if kind != MessageType.NAK else IP(0)
        return Message(op=BOOTREPLY, xid=request.xid, chaddr=request.chaddr, yiaddr=yiaddr, options=options)

    def answer(self, request: Message) -> list[Message]:
        if self.mode == "silent" or request.message_type == MessageType.RELEASE:
            return []
        if request.message_type == MessageType.DISCOVER:
            return [self.reply(request, MessageType.OFFER)]
        if self.mode == "nak":
            return [self.reply(request, MessageType.NAK)]
        return [self.reply(request, MessageType.ACK)]


class FakeTransport:
    def __init__(self, server: FakeServer) -> None:
        self.server = server
        self.mac = CLIENT_MAC
        self.queue: list[bytes] = []
        self.closed = False

    def send(self, payload: bytes, src: IP, dst: IP, dst_mac: bytes = BROADCAST_MAC) -> None:
        message = Message.decode(payload)
        self.server.received.append((message, src, dst, dst_mac))
        self.queue += [reply.encode() for reply in self.server.answer(message)]

    def receive(self, timeout: float) -> tuple[bytes, bytes] | None:
        if self.queue:
            return self.queue.pop(0), SERVER_MAC
        self.server.clock.t += timeout
        return None

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def server(clock: FakeClock) -> FakeServer:
    return FakeServer(clock)


class Downs(list[tuple[str, str]]):
    """Where ``link_down`` was called."""

    def __call__(self, netns: str, ifname: str) -> None:
        self.append((netns, ifname))


@pytest.fixture
def downs() -> Downs:
    return Downs()


@pytest.fixture
def env(server: FakeServer, downs: Downs) -> Environment:
    """For code that starts lease threads: the real clock, so they sleep until T1 (60 s)."""
    return Environment(timeout=10.0, opener=lambda netns, ifname: FakeTransport(server), link_down=downs)


@pytest.fixture
def fake_env(clock: FakeClock, server: FakeServer, downs: Downs) -> Environment:
    """For stepping a lease's state machine by hand: no thread, the fake clock."""
    return Environment(timeout=10.0, opener=lambda netns, ifname: FakeTransport(server), link_down=downs, clock=clock)


CONFIG = ClientConfig("ctr1/net/eth0", request=(1, 3), provide={Opt.HOST_NAME: b"pod-a", Opt.MESSAGE_TYPE: b"\x07"})
ATTACHMENT = Attachment("ctr1", "net", "eth0", "/run/netns/ctr1")


# -- the client -----------------------------------------------------------------


def test_acquire_discover_offer_request_ack(clock: FakeClock, server: FakeServer) -> None:
    reply = Client(FakeTransport(server), CONFIG, now=clock.now).acquire()
    assert reply.message.message_type == MessageType.ACK and reply.server_mac == SERVER_MAC
    (discover, src, dst, mac), (request, *_) = server.received
    assert discover.message_type == MessageType.DISCOVER, "a provided option 53 cannot change the message"
    assert (src, dst, mac) == (IP(0), IP("255.255.255.255"), BROADCAST_MAC)
    assert discover.options[Opt.CLIENT_ID] == b"\x00ctr1/net/eth0"
    assert discover.options[Opt.PARAMETER_REQUEST_LIST] == b"\x01\x03"
    assert discover.options[Opt.HOST_NAME] == b"pod-a"
    assert request.message_type == MessageType.REQUEST and request.xid == discover.xid
    assert request.options[Opt.REQUESTED_IP] == server.address.packed
    assert request.options[Opt.SERVER_ID] == SERVER.packed
    assert request.chaddr == CLIENT_MAC and request.ciaddr == IP(0)


def test_replies_for_someone_else_are_ignored(clock: FakeClock, server: FakeServer) -> None:
    transport = FakeTransport(server)
    original = server.answer

    def noisy(request: Message) -> list[Message]:
        answers = original(request)
        other_xid = [Message(**{**answer.__dict__, "xid": answer.xid ^ 1}) for answer in answers]
        other_mac = [Message(**{**answer.__dict__, "chaddr": b"\x02" * 6}) for answer in answers]
        return [*other_xid, *other_mac, *answers]

    server.answer = noisy  # type: ignore[method-assign]
    transport.queue.append(b"not dhcp at all")
    assert Client(transport, CONFIG, now=clock.now).acquire().message.yiaddr == server.address


def test_acquire_times_out_after_retransmitting(clock: FakeClock, server: FakeServer) -> None:
    server.mode = "silent"
    with pytest.raises(DHCPTimeout, match="no answer to DHCPDISCOVER within 10s"):
        Client(FakeTransport(server), CONFIG, now=clock.now).acquire()
    secs = [m.secs for m, *_ in server.received]
    assert len(secs) == 4, "sent at about 0, 1, 3 and 7 s (jittered) within the 10 s timeout"
    assert all(abs(got - want) <= 1 for got, want in zip(secs, (0, 1, 3, 7), strict=True)), secs


def test_nak_is_an_error(clock: FakeClock, server: FakeServer) -> None:
    server.mode = "nak"
    with pytest.raises(DHCPNak):
        Client(FakeTransport(server), CONFIG, now=clock.now).acquire()


# -- renewal state machine --------------------------------------------------------


def managed(env: Environment, server: FakeServer) -> ManagedLease:
    """A lease bound at t=1000 (T1 60 s, T2 105 s, 120 s), not started: the test calls step()."""
    assert isinstance(env.clock, FakeClock)
    reply = Client(FakeTransport(server), CONFIG, now=env.clock.now).acquire()
    lease = Lease.from_ack(reply.message, reply.server_mac, env.clock.now())
    server.received.clear()
    return ManagedLease(ATTACHMENT, CONFIG, lease, env)


def test_bound_renews_at_t1_unicast_to_the_server(fake_env: Environment, server: FakeServer, clock: FakeClock) -> None:
    lease = managed(fake_env, server)
    assert lease.step() == pytest.approx(60.0) and lease.state is State.BOUND
    clock.t += 60
    assert lease.step() == 0.0 and lease.renewals == 1 and lease.state is State.BOUND
    request, src, dst, mac = server.received[0]
    assert request.message_type == MessageType.REQUEST and request.ciaddr == server.address
    assert Opt.SERVER_ID not in request.options and Opt.REQUESTED_IP not in request.options
    assert (src, dst, mac) == (server.address, SERVER, SERVER_MAC), "RENEWING is unicast (RFC 2131 4.4.5)"
    assert lease.step() == pytest.approx(60.0), "the renewed lease counts from the ACK"


def test_unanswered_renewal_then_rebinding_then_expiry(
    fake_env: Environment, server: FakeServer, clock: FakeClock, downs: Downs
) -> None:
    lease = managed(fake_env, server)
    server.mode = "silent"
    clock.t += 60
    delay = lease.step()
    assert lease.state is State.RENEWING and "no answer" in lease.last_error
    assert delay == pytest.approx((1105 - clock.t) / 2), "retry after half the time left to T2"
    clock.t = 1000 + 105
    lease.step()
    assert lease.state is State.REBINDING
    assert server.received[-1][2] == IP("255.255.255.255"), "REBINDING is broadcast"
    clock.t = 1000 + 120
    assert lease.step() is None
    assert lease.state is State.EXPIRED and downs == [("/run/netns/ctr1", "eth0")]


def test_rebinding_succeeds(fake_env: Environment, server: FakeServer, clock: FakeClock) -> None:
    lease = managed(fake_env, server)
    clock.t += 106
    assert lease.step() == 0.0 and lease.state is State.BOUND and lease.renewals == 1


def test_nak_then_same_address_keeps_the_lease(fake_env: Environment, server: FakeServer, clock: FakeClock) -> None:
    lease = managed(fake_env, server)
    clock.t += 60
    original = server.answer
    server.answer = lambda request: (  # type: ignore[method-assign]
        [server.reply(request, MessageType.NAK)] if request.ciaddr != IP(0) else original(request)
    )
    assert lease.step() == 0.0 and lease.state is State.BOUND
    discover = next(m for m, *_ in server.received if m.message_type == MessageType.DISCOVER)
    assert discover.options[Opt.REQUESTED_IP] == server.address.packed, "asks for the address it holds"


def test_nak_then_other_address_loses_the_lease(fake_env: Environment, server: FakeServer, clock: FakeClock) -> None:
    lease = managed(fake_env, server)
    clock.t += 60
    server.mode = "nak"
    original = server.answer

    def moved(request: Message) -> list[Message]:
        if request.message_type == MessageType.DISCOVER:
            server.address = IP("10.66.0.99")
            server.mode = "ack"
        return original(request)

    server.answer = moved  # type: ignore[method-assign]
    assert lease.step() is None
    assert lease.state is State.LOST and "10.66.0.99" in lease.last_error
    assert server.received[-1][0].message_type == MessageType.RELEASE, "the stray address is given back"
    assert server.received[-1][0].ciaddr == IP("10.66.0.99")


def test_renewal_ack_without_mask_keeps_the_mask(fake_env: Environment, server: FakeServer, clock: FakeClock) -> None:
    lease = managed(fake_env, server)
    original = server.reply

    def maskless(request: Message, kind: MessageType) -> Message:
        answer = original(request, kind)
        answer.options.pop(Opt.SUBNET_MASK, None)
        return answer

    server.reply = maskless  # type: ignore[method-assign]
    clock.t += 60
    assert lease.step() == 0.0 and str(lease.lease.address) == "10.66.0.20/24"


def test_stopping_during_reacquire_is_not_a_lost_lease(
    fake_env: Environment, server: FakeServer, clock: FakeClock, downs: Downs
) -> None:
    lease = managed(fake_env, server)
    clock.t += 60
    original = server.answer

    def nak_then_stop(request: Message) -> list[Message]:
        if request.message_type == MessageType.DISCOVER:
            lease._stopping.set()  # a DEL arrives while it asks again
            return []
        return [server.reply(request, MessageType.NAK)] if request.ciaddr != IP(0) else original(request)

    server.answer = nak_then_stop  # type: ignore[method-assign]
    assert lease.step() is None
    assert lease.state is State.RENEWING and downs == [], "the link is left alone"


def test_vanished_link_ends_maintenance(fake_env: Environment, server: FakeServer, clock: FakeClock) -> None:
    lease = managed(fake_env, server)

    def gone(netns: str, ifname: str) -> FakeTransport:
        raise LinkGone(ErrorCode.INTERNAL, "no such interface")

    fake_env.opener = gone
    clock.t += 60
    assert lease.step() is None and lease.state is State.GONE


def test_background_thread_stops_promptly() -> None:
    server = FakeServer(FakeClock(), t1=3600)
    env = Environment(opener=lambda netns, ifname: FakeTransport(server), link_down=lambda netns, ifname: None)
    manager = LeaseManager(env)
    manager.allocate(ATTACHMENT)
    assert manager.release("ctr1", "net", "eth0") is True
    assert server.received[-1][0].message_type == MessageType.RELEASE
    assert server.received[-1][0].options[Opt.SERVER_ID] == SERVER.packed
    assert not any(t.name.startswith("lease ") for t in threading.enumerate())


# -- the manager --------------------------------------------------------------------


def test_manager_allocate_check_release_gc(env: Environment, server: FakeServer) -> None:
    manager = LeaseManager(env)
    first = manager.allocate(ATTACHMENT)
    exchanges = len(server.received)
    assert manager.allocate(ATTACHMENT) == first, "a repeated ADD gets the held lease"
    assert len(server.received) == exchanges
    assert manager.check("ctr1", "net", "eth0")["address"] == "10.66.0.20/24"
    with pytest.raises(CNIError, match="holds no lease for ctr2/net/eth0") as missing:
        manager.check("ctr2", "net", "eth0")
    assert missing.value.code == ErrorCode.UNKNOWN_CONTAINER

    manager.allocate(Attachment("ctr2", "net", "eth0", "/run/netns/ctr2"))
    manager.allocate(Attachment("ctr3", "other", "eth0", "/run/netns/ctr3"))
    assert manager.gc("net", [("ctr1", "eth0")]) == ["ctr2/net/eth0"]
    assert sorted(lease["clientID"] for lease in manager.describe()) == ["ctr1/net/eth0", "ctr3/other/eth0"]
    assert manager.release("ctr9", "net", "eth0") is False, "releasing an unknown lease is not an error"
    manager.shutdown()


def test_manager_reports_dhcp_failures(env: Environment, server: FakeServer) -> None:
    env.timeout = 0.2
    manager = LeaseManager(env)
    server.mode = "silent"
    with pytest.raises(CNIError, match=r"no lease for eth0 in /run/netns/ctr1: no answer to DHCPDISCOVER"):
        manager.allocate(ATTACHMENT)
    assert len(manager) == 0


def test_client_id_is_truncated_like_go() -> None:
    assert client_id_for("c" * 300, "net", "eth0") == "c" * 254
    assert client_id_for("c1", "net", "eth0") == "c1/net/eth0"


# -- the daemon's dispatch and socket ----------------------------------------------


def test_handle_request_validates(env: Environment) -> None:
    manager = LeaseManager(env)
    bad = [
        ({"op": "ping"}, "protocol version None"),
        ({"version": 1, "op": "fly"}, "unknown op 'fly'"),
        ({"version": 1, "op": "release", "containerID": "c"}, "'network' must be a non-empty string"),
        (
            {"version": 1, "op": "allocate", "containerID": "c", "network": "n", "ifname": "e", "netns": "rel"},
            "not an absolute path",
        ),
        (
            {"version": 1, "op": "allocate", "containerID": "c", "network": "n", "ifname": "e", "netns": "/x"}
            | {"provide": [{"code": 12, "value": "x" * 256}]},
            "longer than 255",
        ),
        ({"version": 1, "op": "gc", "network": "n", "valid": [1]}, "entries must be objects"),
    ]
    for request, message in bad:
        reply = handle_request(manager, request)
        assert reply["ok"] is False and message in reply["error"]["msg"], (request, reply)
        assert reply["error"]["code"] == ErrorCode.DECODING_FAILURE
    assert handle_request(manager, {"version": 1, "op": "ping"})["leases"] == 0


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="pycni-dhcp-unit-") as directory:
        yield Path(directory)


def test_protocol_over_a_unix_socket(env: Environment, socket_dir: Path) -> None:
    path = str(socket_dir / "d.sock")
    server = DaemonServer(path, LeaseManager(env))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        assert oct(os.stat(path).st_mode & 0o777) == "0o600"
        assert protocol.call(path, "ping")["leases"] == 0
        fields: dict[str, Any] = {"containerID": "c1", "network": "n", "ifname": "eth0", "netns": "/run/netns/c1"}
        lease = protocol.call(path, "allocate", fields | {"request": [1, 3], "provide": []})["lease"]
        assert lease["address"] == "10.66.0.20/24" and lease["state"] == "bound"
        assert protocol.call(path, "list")["leases"][0]["clientID"] == "c1/n/eth0"
        with pytest.raises(CNIError, match="holds no lease") as failed:
            protocol.call(path, "check", {"containerID": "c2", "network": "n", "ifname": "eth0"})
        assert failed.value.code == ErrorCode.UNKNOWN_CONTAINER
        assert protocol.call(path, "release", fields)["released"] is True
    finally:
        server.shutdown()
        thread.join()
        server.remove_socket()
        server.server_close()
    assert not os.path.exists(path)


def test_unanswered_socket_is_code_50(socket_dir: Path) -> None:
    with pytest.raises(protocol.DaemonUnavailable) as missing:
        protocol.call(str(socket_dir / "none.sock"), "ping")
    assert missing.value.code == ErrorCode.PLUGIN_NOT_AVAILABLE == 50
    assert "start it with `pycni dhcp-daemon`" in missing.value.msg


# -- the plugin's config ------------------------------------------------------------


def cmd_args(ipam: dict[str, Any], cni_args: str = "", **config: Any) -> CmdArgs:
    conf = {"cniVersion": "1.1.0", "name": "net", "type": "macvlan", "ipam": {"type": "dhcp", **ipam}, **config}
    return CmdArgs("ADD", "ctr1", "/run/netns/ctr1", "eth0", cni_args, [], b"", conf)


def test_plugin_request_and_provide() -> None:
    conf = plugin_module.load_conf(cmd_args({}))
    assert conf.socket_path == "/run/cni/pycni-dhcp.sock"
    assert conf.request == [1, 3, 6, 15, 33, 119, 121] and conf.provide == []

    conf = plugin_module.load_conf(
        cmd_args(
            {
                "daemonSocketPath": "/tmp/x.sock",
                "request": [{"skipDefault": True}, {"option": "routers"}, {"option": "42"}, {"option": 3}],
                "provide": [
                    {"option": "host-name", "value": "fallback", "fromArg": "K8S_POD_NAME"},
                    {"option": "60", "value": "pycni"},
                    {"option": "user-class", "fromArg": "ABSENT"},
                ],
                "priority": 7,
            },
            cni_args="IgnoreUnknown=1;K8S_POD_NAME=pod-a;junk",
        )
    )
    assert conf.socket_path == "/tmp/x.sock" and conf.priority == 7
    assert conf.request == [3, 42], "skipDefault drops the defaults; duplicates are dropped"
    assert conf.provide == [{"code": 12, "value": "pod-a"}, {"code": 60, "value": "pycni"}]


@pytest.mark.parametrize(
    ("ipam", "message"),
    [
        ({"request": [{"option": "doNotparseMe"}]}, "unknown DHCP option"),
        ({"provide": [{"value": "x"}]}, "an option is required"),
        ({"provide": [{"option": "host-name", "value": "x" * 256}]}, "value too long"),
        ({"priority": "high"}, "ipam.priority: expected an integer"),
    ],
)
def test_plugin_config_errors(ipam: dict[str, Any], message: str) -> None:
    with pytest.raises(CNIError, match=message) as failed:
        plugin_module.load_conf(cmd_args(ipam))
    assert failed.value.code == ErrorCode.INVALID_NETWORK_CONFIG


def test_plugin_result_from_lease() -> None:
    lease = {
        "address": "10.66.0.20/24",
        "gateway": "10.66.0.1",
        "routes": [{"dst": "0.0.0.0/0", "gw": "10.66.0.1"}, {"dst": "10.8.0.0/16", "gw": "0.0.0.0", "scope": 253}],
        "dns": {"nameservers": ["10.66.0.1"], "domain": "pods.test", "search": []},
    }
    result = plugin_module.to_result(lease, priority=5).to_dict("1.1.0")
    assert result["ips"] == [{"address": "10.66.0.20/24", "gateway": "10.66.0.1"}]
    assert result["routes"] == [
        {"dst": "0.0.0.0/0", "gw": "10.66.0.1", "priority": 5},
        {"dst": "10.8.0.0/16", "gw": "0.0.0.0", "priority": 5, "scope": 253},
    ]
    assert result["dns"] == {"nameservers": ["10.66.0.1"], "domain": "pods.test"}
    assert "interfaces" not in result
    with pytest.raises(CNIError, match="unusable lease"):
        plugin_module.to_result({"address": "nonsense"}, 0)


def test_plugin_status_and_add_without_daemon(socket_dir: Path) -> None:
    import json

    missing = str(socket_dir / "none.sock")
    base = {"cniVersion": "1.1.0", "name": "net", "ipam": {"type": "dhcp", "daemonSocketPath": missing}}
    env = {"CNI_COMMAND": "STATUS", "CNI_PATH": "/nonexistent"}
    reply = plugin_module.plugin.invoke(env, json.dumps(base).encode())
    error = json.loads(reply.stdout)
    assert reply.exit_code == 1 and error["code"] == 50 and "pycni dhcp-daemon" in error["msg"]
    env = env | {"CNI_COMMAND": "DEL", "CNI_CONTAINERID": "c1", "CNI_IFNAME": "eth0", "CNI_NETNS": "/run/netns/c1"}
    assert plugin_module.plugin.invoke(env, json.dumps(base).encode()).exit_code == 0
