"""The dhcp IPAM plugin and ``pycni dhcp-daemon`` against a real DHCP server (dnsmasq).

Topology, all inside namespaces the test makes::

    server ns: eth0 10.66.0.1/24, dnsmasq  ──veth──  node ns: bridge dhcpbr0  ──veth──  container ns: eth0
                                           ──veth──  node ns: lan0  ──macvlan──  container ns: eth0

pycni's bridge plugin runs in the node namespace with ``"ipam": {"type":
"dhcp"}``; so do pycni's and Go's macvlan plugins (Go's finds pycni's dhcp
on CNI_PATH). pycni's bridge and macvlan call IPAM DEL before removing the
link, so their DEL sends DHCPRELEASE (Go's bridge removes the veth first).
For the plugin alone, the test attaches the container's eth0 to the bridge.
The daemon runs from the test with its own socket under a temporary
directory. dnsmasq, the daemon and the namespaces are stopped and removed by
fixtures, whatever the test's outcome.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.cni import Call, exec_plugin
from tests.support.netns import NetnsPool, run

SERVER_IP = "10.66.0.1"
RANGE = (ipaddress.IPv4Address("10.66.0.10"), ipaddress.IPv4Address("10.66.0.50"))
BRIDGE = "dhcpbr0"

pytestmark = pytest.mark.skipif(shutil.which("dnsmasq") is None, reason="dnsmasq is not installed (scripts/setup.sh)")


def wait_for(what: str, predicate: Callable[[], Any], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.1)


@dataclass
class DhcpLan:
    """The node (with its bridge), the server namespace and its dnsmasq."""

    pool: NetnsPool
    node: str
    server: str
    lease_file: Path
    workdir: Path
    dnsmasq: subprocess.Popen[bytes] | None = None

    def start_dnsmasq(self, *extra: str) -> None:
        self.lease_file.write_text("")
        log = open(self.workdir / "dnsmasq.log", "wb")  # noqa: SIM115 - lives as long as the process
        argv = [
            "ip", "netns", "exec", self.server, "dnsmasq",
            "--no-daemon", "--conf-file=/dev/null", "--port=0", "--no-ping", "--log-facility=-", "--log-dhcp",
            f"--dhcp-range={RANGE[0]},{RANGE[1]},2m", f"--dhcp-leasefile={self.lease_file}",
            "--interface=eth0", "--bind-interfaces", f"--dhcp-option=option:dns-server,{SERVER_IP}",
            *extra,
        ]  # fmt: skip
        self.dnsmasq = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        wait_for("dnsmasq to listen", lambda: "DHCP, sockets bound" in self.dnsmasq_log())

    def stop_dnsmasq(self) -> None:
        if self.dnsmasq is not None and self.dnsmasq.poll() is None:
            self.dnsmasq.kill()
            self.dnsmasq.wait(timeout=5)

    def dnsmasq_log(self) -> str:
        path = self.workdir / "dnsmasq.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def leases(self) -> dict[str, list[str]]:
        """dnsmasq's lease file: IP -> [expiry, mac, ip, hostname, client-id]."""
        lines = self.lease_file.read_text().splitlines() if self.lease_file.exists() else []
        return {fields[2]: fields for fields in (line.split() for line in lines) if len(fields) >= 5}

    def container(self, attach: bool = False) -> str:
        """A container namespace; with ``attach``, its eth0 is already on the bridge."""
        ctr = self.pool.new("ctr")
        if attach:
            peer = f"dh{ctr[-6:]}"
            run("ip", "link", "add", peer, "type", "veth", "peer", "name", "eth0", "netns", ctr, netns=self.node)
            run("ip", "link", "set", peer, "master", BRIDGE, "up", netns=self.node)
        return ctr


@pytest.fixture
def lan(netns: NetnsPool) -> Iterator[DhcpLan]:
    """The server's segment is a bridge in the node namespace."""
    yield from _lan(netns, bridge=True)


@pytest.fixture
def plain_lan(netns: NetnsPool) -> Iterator[DhcpLan]:
    """The server's segment is the node's ``lan0``, a macvlan master."""
    yield from _lan(netns, bridge=False)


def _lan(netns: NetnsPool, bridge: bool) -> Iterator[DhcpLan]:
    workdir = Path(tempfile.mkdtemp(prefix="pycni-dhcp-"))
    node, server = netns.new("dnode"), netns.new("dsrv")
    uplink = "tosrv" if bridge else "lan0"
    run("ip", "link", "add", uplink, "type", "veth", "peer", "name", "eth0", "netns", server, netns=node)
    if bridge:
        run("ip", "link", "add", BRIDGE, "type", "bridge", netns=node)
        run("ip", "link", "set", BRIDGE, "up", netns=node)
        run("ip", "link", "set", uplink, "master", BRIDGE, netns=node)
    run("ip", "link", "set", uplink, "up", netns=node)
    run("ip", "addr", "add", f"{SERVER_IP}/24", "dev", "eth0", netns=server)
    run("ip", "link", "set", "eth0", "up", netns=server)
    network = DhcpLan(netns, node, server, workdir / "dnsmasq.leases", workdir)
    try:
        yield network
    finally:
        network.stop_dnsmasq()
        shutil.rmtree(workdir, ignore_errors=True)
        # the namespaces (and every link in them) go with the netns fixture


@dataclass
class Daemon:
    socket_path: str
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    def request(self, op: str, **fields: Any) -> dict[str, Any]:
        from pycni.dhcp import protocol

        return protocol.call(self.socket_path, op, fields, timeout=30)

    def leases(self) -> list[dict[str, Any]]:
        return list(self.request("list")["leases"])

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path and self.log_path.exists() else ""


@pytest.fixture
def daemon(pycni_bin: str) -> Iterator[Daemon]:
    workdir = Path(tempfile.mkdtemp(prefix="pycni-dhcpd-"))
    log_path = workdir / "daemon.log"
    handle = Daemon(str(workdir / "dhcp.sock"), log_path=log_path)
    with open(log_path, "wb") as log:
        handle.proc = subprocess.Popen(
            [pycni_bin, "dhcp-daemon", "--socket-path", handle.socket_path, "--timeout", "3s"],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for("the daemon's socket", lambda: _answers(handle))
        yield handle
    finally:
        if handle.proc.poll() is None:
            handle.proc.send_signal(signal.SIGTERM)
            try:
                handle.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                handle.proc.kill()
                handle.proc.wait()
        shutil.rmtree(workdir, ignore_errors=True)


def _answers(daemon: Daemon) -> bool:
    if daemon.proc is not None and daemon.proc.poll() is not None:
        raise AssertionError(f"the daemon exited: {daemon.log()}")
    from pycni.spec import CNIError

    try:
        daemon.request("ping")
    except CNIError:
        return False
    return True


def bridge_conf(socket_path: str, version: str = "1.0.0", **ipam: Any) -> dict[str, Any]:
    return {
        "cniVersion": version,
        "name": "dhcpnet",
        "type": "bridge",
        "bridge": BRIDGE,
        "ipam": {"type": "dhcp", "daemonSocketPath": socket_path, **ipam},
    }


def dhcp_conf(socket_path: str, version: str = "1.1.0", **ipam: Any) -> dict[str, Any]:
    return {
        "cniVersion": version,
        "name": "dhcpnet",
        "type": "dhcp",
        "ipam": {"type": "dhcp", "daemonSocketPath": socket_path, **ipam},
    }


def call(plugin_dir: str, command: str, config: dict[str, Any], ctr: str, node: str | None = None, **kw: Any) -> Call:
    return exec_plugin(
        os.path.join(plugin_dir, config["type"]),
        command,
        config,
        netns=f"/run/netns/{ctr}",
        cni_path=plugin_dir,
        container_id=kw.pop("container_id", f"cid-{ctr}"),
        node=node,
        **kw,
    )


def in_range(address: str) -> bool:
    ip = ipaddress.IPv4Interface(address)
    return RANGE[0] <= ip.ip <= RANGE[1] and ip.network.prefixlen == 24


class TestWithBridge:
    def test_add_usable_check_del_releases(self, lan: DhcpLan, daemon: Daemon, pycni_plugin_dir: str) -> None:
        lan.start_dnsmasq()
        conf = bridge_conf(daemon.socket_path, provide=[{"option": "host-name", "fromArg": "K8S_POD_NAME"}])
        ctr = lan.container()
        cni_args = "IgnoreUnknown=1;K8S_POD_NAME=pod-a"
        added = call(pycni_plugin_dir, "ADD", conf, ctr, lan.node, cni_args=cni_args)
        assert added.rc == 0, (added.out, added.stderr, daemon.log())

        ip = added.out["ips"][0]
        assert in_range(ip["address"]), ip
        assert ip["gateway"] == SERVER_IP, "gateway is the routers option"
        assert {"dst": "0.0.0.0/0", "gw": SERVER_IP} in added.out["routes"]
        assert added.out["dns"]["nameservers"] == [SERVER_IP]
        address = ip["address"].split("/")[0]
        assert ip["address"] in run("ip", "-4", "addr", "show", "eth0", netns=ctr).stdout
        ping = run("busybox", "ping", "-c1", "-W2", SERVER_IP, netns=ctr, check=False)
        assert ping.returncode == 0, f"the leased address is usable: {ping.stdout}{ping.stderr}"

        entry = lan.leases()[address]
        assert entry[3] == "pod-a", "host-name provided from K8S_POD_NAME"
        assert bytes.fromhex(entry[4].replace(":", "")) == b"\x00" + f"cid-{ctr}/dhcpnet/eth0".encode(), (
            "Go's client ID"
        )

        checked = call(pycni_plugin_dir, "CHECK", conf | {"prevResult": added.out}, ctr, lan.node, cni_args=cni_args)
        assert checked.rc == 0, checked.out
        again = call(pycni_plugin_dir, "ADD", dhcp_conf(daemon.socket_path), ctr, container_id=f"cid-{ctr}")
        assert again.rc == 0 and again.out["ips"][0]["address"] == ip["address"], "a held lease is returned again"

        deleted = call(pycni_plugin_dir, "DEL", conf | {"prevResult": added.out}, ctr, lan.node, cni_args=cni_args)
        assert deleted.rc == 0, deleted.out
        assert daemon.leases() == [], "the daemon no longer holds or renews the lease"
        assert address not in lan.leases(), "DHCPRELEASE went out before the bridge removed the veth"
        assert call(pycni_plugin_dir, "DEL", conf, ctr, lan.node).rc == 0, "DEL again succeeds"

    def test_renews_at_t1(self, lan: DhcpLan, daemon: Daemon, pycni_plugin_dir: str) -> None:
        # dnsmasq's shortest lease is 2 minutes; its T1/T2 can be set lower (it rounds T1 up to 3 s).
        lan.start_dnsmasq("--dhcp-option=option:T1,2", "--dhcp-option=option:T2,5")
        conf = bridge_conf(daemon.socket_path)
        ctr = lan.container()
        added = call(pycni_plugin_dir, "ADD", conf, ctr, lan.node)
        assert added.rc == 0, (added.out, daemon.log())
        address = added.out["ips"][0]["address"].split("/")[0]
        first_expiry = int(lan.leases()[address][0])

        renewed = wait_for("a renewal", lambda: [x for x in daemon.leases() if x["renewals"] >= 1], timeout=10)
        assert renewed[0]["state"] == "bound" and renewed[0]["address"] == added.out["ips"][0]["address"]
        assert renewed[0]["renewIn"] < 10, "the server's T1 is used, not half the 2-minute lease"
        wait_for("dnsmasq to extend the lease", lambda: int(lan.leases()[address][0]) > first_expiry, timeout=5)
        assert "DHCPREQUEST" in lan.dnsmasq_log()

        assert call(pycni_plugin_dir, "DEL", conf, ctr, lan.node).rc == 0
        assert daemon.leases() == [], "DEL stops the renewals"

    def test_gc_releases_stale_attachments(self, lan: DhcpLan, daemon: Daemon, pycni_plugin_dir: str) -> None:
        lan.start_dnsmasq()
        conf = bridge_conf(daemon.socket_path, version="1.1.0")
        keep, stale = lan.container(), lan.container()
        kept = call(pycni_plugin_dir, "ADD", conf, keep, lan.node)
        gone = call(pycni_plugin_dir, "ADD", conf, stale, lan.node)
        assert kept.rc == 0 and gone.rc == 0, (kept.out, gone.out)
        stale_ip = gone.out["ips"][0]["address"].split("/")[0]
        assert kept.out["ips"][0]["address"] != gone.out["ips"][0]["address"]

        gc_conf = dhcp_conf(daemon.socket_path) | {
            "cni.dev/valid-attachments": [{"containerID": f"cid-{keep}", "ifname": "eth0"}]
        }
        collected = call(pycni_plugin_dir, "GC", gc_conf, keep)
        assert collected.rc == 0, collected.out
        assert [x["containerID"] for x in daemon.leases()] == [f"cid-{keep}"]
        wait_for("dnsmasq to drop the collected lease", lambda: stale_ip not in lan.leases(), timeout=5)
        other_net = dhcp_conf(daemon.socket_path) | {"name": "othernet", "cni.dev/valid-attachments": []}
        assert call(pycni_plugin_dir, "GC", other_net, keep).rc == 0
        assert len(daemon.leases()) == 1, "GC touches only its own network's leases"
        assert call(pycni_plugin_dir, "DEL", conf, keep, lan.node).rc == 0


class TestWithMacvlan:
    @pytest.mark.parametrize("main", ["go", "pycni"])
    def test_add_usable_del_releases(
        self, main: str, plain_lan: DhcpLan, daemon: Daemon, pycni_plugin_dir: str, request: pytest.FixtureRequest
    ) -> None:
        main_dir = request.getfixturevalue("go_plugin_dir") if main == "go" else pycni_plugin_dir
        if not os.path.exists(os.path.join(main_dir, "macvlan")):
            pytest.skip(f"no {main} macvlan plugin")
        lan = plain_lan
        lan.start_dnsmasq()
        conf = {
            "cniVersion": "1.0.0",
            "name": "dhcpnet",
            "type": "macvlan",
            "master": "lan0",
            "ipam": {"type": "dhcp", "daemonSocketPath": daemon.socket_path},
        }
        ctr = lan.container()
        macvlan = os.path.join(main_dir, "macvlan")
        added = exec_plugin(macvlan, "ADD", conf, netns=f"/run/netns/{ctr}", cni_path=pycni_plugin_dir, node=lan.node)
        assert added.rc == 0, (added.out, daemon.log())
        address = added.out["ips"][0]["address"]
        assert in_range(address) and added.out["ips"][0]["gateway"] == SERVER_IP
        ping = run("busybox", "ping", "-c1", "-W2", SERVER_IP, netns=ctr, check=False)
        assert ping.returncode == 0, f"the leased address is usable: {ping.stdout}{ping.stderr}"
        ip = address.split("/")[0]
        assert ip in lan.leases()

        deleted = exec_plugin(macvlan, "DEL", conf, netns=f"/run/netns/{ctr}", cni_path=pycni_plugin_dir, node=lan.node)
        assert deleted.rc == 0, deleted.out
        wait_for("dnsmasq to drop the released lease", lambda: ip not in lan.leases(), timeout=5)
        assert f"DHCPRELEASE(eth0) {ip}" in lan.dnsmasq_log()
        assert daemon.leases() == []
        again = exec_plugin(macvlan, "DEL", conf, netns=f"/run/netns/{ctr}", cni_path=pycni_plugin_dir, node=lan.node)
        assert again.rc == 0, "DEL again succeeds"


class TestPluginAlone:
    def test_classless_routes_priority_and_request(self, lan: DhcpLan, daemon: Daemon, pycni_plugin_dir: str) -> None:
        lan.start_dnsmasq(
            "--dhcp-option=option:classless-static-route,10.77.0.0/16,10.66.0.1,10.88.0.0/30,0.0.0.0",
            "--dhcp-option=option:domain-name,pods.test",
        )
        conf = dhcp_conf(daemon.socket_path, priority=300, request=[{"option": "121"}, {"option": "domain-name"}])
        ctr = lan.container(attach=True)
        added = call(pycni_plugin_dir, "ADD", conf, ctr)
        assert added.rc == 0, (added.out, daemon.log())
        assert "interfaces" not in added.out
        assert added.out["routes"] == [
            {"dst": "10.77.0.0/16", "gw": SERVER_IP, "priority": 300},
            {"dst": "10.88.0.0/30", "gw": "0.0.0.0", "priority": 300, "scope": 253},
        ], "option 121 replaces the routers' default route (RFC 3442); gateway 0.0.0.0 is on-link"
        assert added.out["ips"][0]["gateway"] == SERVER_IP
        assert added.out["dns"] == {"nameservers": [SERVER_IP], "domain": "pods.test"}
        assert call(pycni_plugin_dir, "CHECK", conf | {"prevResult": added.out}, ctr).rc == 0

        wrong = json.loads(json.dumps(added.out))
        wrong["ips"][0]["address"] = "10.66.0.200/24"
        mismatch = call(pycni_plugin_dir, "CHECK", conf | {"prevResult": wrong}, ctr)
        assert mismatch.rc != 0 and "prevResult" in mismatch.error["msg"]
        assert call(pycni_plugin_dir, "DEL", conf, ctr).rc == 0
        address = added.out["ips"][0]["address"].split("/")[0]
        wait_for("dnsmasq to drop the released lease", lambda: address not in lan.leases(), timeout=5)
        assert call(pycni_plugin_dir, "DEL", conf, ctr).rc == 0, "DEL of an unknown lease succeeds"
        unknown = call(pycni_plugin_dir, "CHECK", conf | {"prevResult": added.out}, ctr)
        assert unknown.rc != 0 and "holds no lease" in unknown.error["msg"]

    def test_status_and_missing_interface(self, lan: DhcpLan, daemon: Daemon, pycni_plugin_dir: str) -> None:
        conf = dhcp_conf(daemon.socket_path)
        ctr = lan.container()  # no eth0 in it
        assert call(pycni_plugin_dir, "STATUS", conf, ctr).rc == 0
        added = call(pycni_plugin_dir, "ADD", conf, ctr)
        assert added.rc != 0 and "eth0" in added.error["msg"] and "no such interface" in added.error["msg"]
        assert daemon.leases() == []

    def test_no_server_answers(self, lan: DhcpLan, daemon: Daemon, pycni_plugin_dir: str) -> None:
        ctr = lan.container(attach=True)  # dnsmasq not started
        started = time.monotonic()
        added = call(pycni_plugin_dir, "ADD", dhcp_conf(daemon.socket_path), ctr)
        assert added.rc != 0 and "no answer to DHCPDISCOVER within 3s" in added.error["msg"], added.out
        assert time.monotonic() - started < 6
        assert daemon.leases() == []


class TestWithoutDaemon:
    def test_clear_errors(self, lan: DhcpLan, pycni_plugin_dir: str) -> None:
        missing = os.path.join(tempfile.gettempdir(), f"pycni-dhcp-none-{os.getpid()}.sock")
        ctr = lan.container(attach=True)
        for command in ("ADD", "STATUS"):
            failed = call(pycni_plugin_dir, command, dhcp_conf(missing), ctr)
            assert failed.rc != 0, failed.out
            assert failed.error["code"] == 50
            assert "start it with `pycni dhcp-daemon`" in failed.error["msg"] and missing in failed.error["msg"]

        through_bridge = call(pycni_plugin_dir, "ADD", bridge_conf(missing), lan.container(), lan.node)
        assert through_bridge.error["code"] == 50 and "pycni dhcp-daemon" in through_bridge.error["msg"]
        veths = run("ip", "-o", "link", "show", "type", "veth", netns=lan.node).stdout.splitlines()
        assert len(veths) == 2 and "tosrv" in veths[0], "the failed ADD left no veth (tosrv and the one attach made)"

        deleted = call(pycni_plugin_dir, "DEL", dhcp_conf(missing), ctr)
        assert deleted.rc == 0, "a daemon that is not running holds no lease: DEL succeeds"


def test_daemon_refuses_a_second_instance_and_stops_cleanly(daemon: Daemon, pycni_bin: str) -> None:
    second = subprocess.run(
        [pycni_bin, "dhcp-daemon", "--socket-path", daemon.socket_path],
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    assert second.returncode == 1 and "already answering" in second.stderr
    assert oct(os.stat(daemon.socket_path).st_mode & 0o777) == "0o600"
    assert daemon.proc is not None
    daemon.proc.send_signal(signal.SIGTERM)
    assert daemon.proc.wait(timeout=10) == 0
    assert not os.path.exists(daemon.socket_path), "the socket is removed on stop"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(daemon.socket_path)
