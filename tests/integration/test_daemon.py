"""The warm path: ``pycni daemon`` and the shim, against the in-process path they replace."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from pycni.cli.main import container_id_for
from pycni.daemon import wire
from tests.support.daemon import Daemon
from tests.support.netns import NetnsPool, run


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    instance = Daemon(tmp_path / "run" / "pycni.sock")
    instance.start()
    yield instance
    instance.kill()


def call(plugin: str, env: dict[str, str], stdin: bytes, node: str | None = None) -> tuple[int, bytes, bytes]:
    argv = ["ip", "netns", "exec", node, plugin] if node else [plugin]
    proc = subprocess.run(argv, input=stdin, env=env, capture_output=True, check=False, timeout=60)
    return proc.returncode, proc.stdout, proc.stderr


def cni_env(command: str, daemon: Daemon, **extra: str) -> dict[str, str]:
    return {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": "ctr-daemon",
        "CNI_NETNS": extra.pop("netns", "/run/netns/pycni-test-none"),
        "CNI_IFNAME": "eth0",
        "CNI_PATH": extra.pop("cni_path", "/nonexistent"),
        "PYCNI_SOCKET": str(daemon.socket_path),
        **extra,
    }


STATIC = {
    "cniVersion": "1.0.0",
    "name": "same",
    "type": "static",
    "ipam": {"addresses": [{"address": "10.9.0.2/24", "gateway": "10.9.0.1"}], "routes": [{"dst": "0.0.0.0/0"}]},
}


@pytest.mark.parametrize(
    ("command", "stdin"),
    [
        ("VERSION", b""),
        ("ADD", json.dumps(STATIC).encode()),
        ("ADD", json.dumps({**STATIC, "cniVersion": "0.2.0"}).encode()),
        ("ADD", b"{not json"),
        ("ADD", json.dumps({**STATIC, "cniVersion": "9.9.9"}).encode()),
        ("ADD", json.dumps({**STATIC, "ipam": {"addresses": [{"address": "10.9.0.2"}]}}).encode()),
        ("GC", json.dumps(STATIC).encode()),
        ("NOPE", json.dumps(STATIC).encode()),
    ],
)
def test_daemon_and_in_process_print_the_same_bytes(
    command: str, stdin: bytes, daemon: Daemon, pycni_plugin_dir: str
) -> None:
    plugin = os.path.join(pycni_plugin_dir, "static")
    warm = call(plugin, cni_env(command, daemon), stdin)
    cold = call(plugin, cni_env(command, daemon, PYCNI_NO_DAEMON="1"), stdin)
    assert warm == cold
    assert warm[1], "every case prints something"


def test_loopback_through_the_daemon_in_a_namespace(daemon: Daemon, netns: NetnsPool, pycni_plugin_dir: str) -> None:
    ctr = netns.new("lo", lo_up=False)
    conf = json.dumps({"cniVersion": "1.0.0", "name": "lonet", "type": "loopback"}).encode()
    plugin = os.path.join(pycni_plugin_dir, "loopback")
    env = cni_env("ADD", daemon, netns=netns.path(ctr))
    rc, out, _ = call(plugin, env, conf)
    assert rc == 0, out
    assert "LOOPBACK,UP" in run("ip", "link", "show", "lo", netns=ctr).stdout
    assert call(plugin, {**env, "CNI_COMMAND": "DEL"}, conf)[0] == 0
    cold = call(plugin, {**env, "PYCNI_NO_DAEMON": "1"}, conf)
    assert cold[1] == out, "the same ADD in-process prints the same result"


def test_shim_falls_back_when_the_daemon_is_gone(daemon: Daemon, pycni_plugin_dir: str) -> None:
    plugin = os.path.join(pycni_plugin_dir, "static")
    stdin = json.dumps(STATIC).encode()
    warm = call(plugin, cni_env("ADD", daemon), stdin)
    daemon.kill()  # SIGKILL: its socket file stays behind, with nobody listening
    assert daemon.socket_path.exists()
    fallback = call(plugin, cni_env("ADD", daemon), stdin)
    assert fallback == warm


# What an unprivileged user could run: the standard library only, from a file that
# user can read, so it works wherever the checkout lives (even in a 0700 directory).
UNPRIVILEGED_CLIENT = """
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sys.argv[1])
data = b""
while True:
    chunk = s.recv(65536)
    if not chunk:
        break
    data += chunk
magic, kind = sys.argv[2].encode("latin-1"), data[len(sys.argv[2]) : len(sys.argv[2]) + 1]
assert data.startswith(magic), data
print(kind.decode())
body = data[len(magic) + 1 :]
print(int.from_bytes(body[:4], "big"))
size = int.from_bytes(body[4:8], "big")
print(body[8 : 8 + size].decode())
"""


def test_daemon_refuses_non_root_peers() -> None:
    # A socket everyone can reach (0666 in a 0755 directory under /tmp): only the
    # daemon's peer-credential check stands between an unprivileged user and it.
    public = Path(tempfile.mkdtemp(prefix="pycni-peer-", dir="/tmp"))
    os.chmod(public, 0o755)
    client = public / "client.py"
    client.write_text(UNPRIVILEGED_CLIENT)
    os.chmod(client, 0o644)
    daemon = Daemon(public / "pycni.sock", workers=1)
    daemon.start()
    try:
        os.chmod(daemon.socket_path, 0o666)
        proc = subprocess.run(
            ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "/usr/bin/python3", "-I", str(client),
             str(daemon.socket_path), wire.MAGIC.decode("latin-1")],
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )  # fmt: skip
    finally:
        daemon.kill()
        shutil.rmtree(public, ignore_errors=True)
    assert proc.returncode == 0, proc.stderr
    kind, exit_code, *_ = proc.stdout.splitlines()
    assert (kind, exit_code) == (wire.REPLY.decode(), "1"), "refused with a reply, before READY"
    assert "permission denied: root only" in proc.stdout


def test_daemon_survives_clients_that_vanish(daemon: Daemon, pycni_plugin_dir: str) -> None:
    request = wire.encode_request("static", {b"CNI_COMMAND": b"VERSION"}, b"", 0)
    for cut in (3, len(request) // 2, len(request)):
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.connect(str(daemon.socket_path))
        client.sendall(request[:cut])
        client.close()
    garbage = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    garbage.connect(str(daemon.socket_path))
    garbage.sendall(b"GET / HTTP/1.0\r\n\r\n")
    garbage.close()
    rc, out, _ = call(os.path.join(pycni_plugin_dir, "static"), cni_env("VERSION", daemon), b"")
    assert rc == 0 and b"supportedVersions" in out, "the daemon still serves"


def conflist(data_dir: Path) -> dict[str, Any]:
    return {
        "cniVersion": "1.1.0",
        "name": "killnet",
        "plugins": [
            {
                "type": "bridge",
                "bridge": "kill0",
                "isGateway": True,
                "ipMasq": True,
                "ipam": {"type": "host-local", "subnet": "10.77.0.0/16", "dataDir": str(data_dir)},
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }


PARALLEL_ADDS = 25  # in flight when the daemon is killed (5 done by then); was 50, halved for make test's budget


def test_sigkill_during_parallel_adds_leaves_nothing_after_gc(
    daemon: Daemon, netns: NetnsPool, pycni_plugin_dir: str, pycni_bin: str, tmp_path: Path
) -> None:
    node = netns.new("killnode")
    conf_dir = tmp_path / "net.d"
    conf_dir.mkdir()
    (conf_dir / "kill.conflist").write_text(json.dumps(conflist(tmp_path / "ipam")))
    env = {
        **os.environ,
        "CNI_PATH": pycni_plugin_dir,
        "NETCONFPATH": str(conf_dir),
        "PYCNI_CACHE_DIR": str(tmp_path / "cache"),
        "PYCNI_SOCKET": str(daemon.socket_path),
    }
    containers = [netns.new("k") for _ in range(PARALLEL_ADDS)]

    def add(index_ctr: tuple[int, str]) -> int:
        index, ctr = index_ctr
        cap = json.dumps({"portMappings": [{"hostPort": 20000 + index, "containerPort": 80, "protocol": "tcp"}]})
        proc = subprocess.run(
            ["ip", "netns", "exec", node, pycni_bin, "add", "killnet", netns.path(ctr)],
            env={**env, "CAP_ARGS": cap},
            capture_output=True,
            check=False,
            timeout=300,
        )
        return proc.returncode

    with ThreadPoolExecutor(max_workers=PARALLEL_ADDS) as pool:
        results = pool.map(add, enumerate(containers))
        results_dir = tmp_path / "cache" / "results"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (results_dir.exists() and len(os.listdir(results_dir)) >= 5):
            time.sleep(0.01)
        daemon.kill()  # SIGKILL, mid-flight: some ADDs done, some half done, some not started
        codes = list(results)
    assert 0 in codes, "some ADDs completed before the kill"

    daemon.start()
    cached = sorted(os.listdir(tmp_path / "cache" / "results")) if (tmp_path / "cache" / "results").exists() else []
    keep = [f"{name.split('-', 1)[1].rsplit('-', 1)[0]}/eth0" for name in cached]
    gc = subprocess.run(
        ["ip", "netns", "exec", node, pycni_bin, "gc", "killnet", *[a for k in keep for a in ("--keep", k)]],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert gc.returncode == 0, gc.stderr

    survivors = {container_id_for(netns.path(c)) for c, code in zip(containers, codes, strict=True) if code == 0}
    ip_files = [n for n in os.listdir(tmp_path / "ipam" / "killnet") if n[0].isdigit()]
    veths = run("ip", "-o", "link", "show", "type", "veth", netns=node).stdout.splitlines()
    ruleset = run("nft", "list", "ruleset", netns=node).stdout
    assert len(ip_files) == len(survivors), "exactly the completed attachments hold an address"
    assert len(veths) == len(survivors), "and a veth"
    assert ruleset.count("10.77.0.0/16 masquerade") == 1, "and the network's masquerade rule (one for all)"
    assert ruleset.count(" : 10.77.") == len(survivors), "and a port mapping"

    gc_all = subprocess.run(
        ["ip", "netns", "exec", node, pycni_bin, "gc", "killnet", "--all"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert gc_all.returncode == 0, gc_all.stderr
    assert [n for n in os.listdir(tmp_path / "ipam" / "killnet") if n[0].isdigit()] == []
    assert run("ip", "-o", "link", "show", "type", "veth", netns=node).stdout == ""
    assert "comment" not in run("nft", "list", "ruleset", netns=node).stdout


def test_socket_activation_by_systemd_socket_activate(pycni_plugin_dir: str, tmp_path: Path) -> None:
    """systemd's own implementation of socket activation (the protocol ``pycni.socket`` relies on).

    ``systemd-socket-activate`` binds the socket, and on the first connection
    starts the daemon with it as descriptor 3: that first call waits in the
    backlog while the daemon starts, and is served by it, not in-process.
    """
    tool = shutil.which("systemd-socket-activate")
    if tool is None:
        pytest.skip("systemd-socket-activate is not installed (Debian package systemd)")
    socket_path = tmp_path / "run" / "pycni.sock"
    socket_path.parent.mkdir(mode=0o700)
    log = tmp_path / "daemon.log"
    with open(log, "wb") as log_file:
        activator = subprocess.Popen(
            [tool, "-l", str(socket_path), sys.executable, "-m", "pycni.cli.main", "daemon", "--log",
             "--workers", "1", "--socket", str(tmp_path / "not-used.sock")],
            stderr=log_file,
            start_new_session=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while not socket_path.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        env = {**cni_env("VERSION", Daemon(socket_path)), "CNI_CONTAINERID": "activated-first"}
        rc, out, _ = call(os.path.join(pycni_plugin_dir, "static"), env, b"")
        assert rc == 0 and b"supportedVersions" in out
        rc, out, _ = call(os.path.join(pycni_plugin_dir, "static"), {**env, "CNI_CONTAINERID": "activated-2"}, b"")
        assert rc == 0
    finally:
        os.killpg(activator.pid, signal.SIGTERM)
        activator.wait(timeout=30)
    text = log.read_text()
    assert "(from systemd," in text, text
    assert "static VERSION activated-first" in text, "the first call waited for the daemon and was served by it"
    assert "static VERSION activated-2" in text
    assert not (tmp_path / "not-used.sock").exists(), "an activated daemon binds nothing of its own"
