"""The seed's Case 2 (bridge + portmap, hostPort 8080 -> 80) driven by ``pycni`` with the Go plugins.

The "host" is a namespace of its own so the machine's network is untouched.
After ``pycni del`` no veth, address file, iptables rule or cached result of
the attachment may remain.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from pycni.cli.demo import PORTMAP_CONFLIST
from pycni.cli.main import container_id_for
from tests.support.netns import NetnsPool, run

HOST_LOCAL = Path("/var/lib/cni/networks/portmap")


def curl(node: str, url: str) -> str:
    for _ in range(30):
        proc = run("curl", "-sS", "-m", "2", url, netns=node, check=False)
        if proc.returncode == 0:
            return proc.stdout
        time.sleep(0.1)
    raise AssertionError(f"{url} unreachable from {node}: {proc.stderr}")


@pytest.fixture
def host_local_dir() -> object:
    existed = HOST_LOCAL.exists()
    yield HOST_LOCAL
    if not existed:
        for entry in HOST_LOCAL.glob("*"):
            entry.unlink()
        if HOST_LOCAL.exists():
            HOST_LOCAL.rmdir()


def test_case2_with_go_plugins(
    netns: NetnsPool, go_plugin_dir: str, pycni_bin: str, tmp_path: Path, host_local_dir: Path
) -> None:
    node, ctr = netns.new("node"), netns.new("ctr")
    conf_dir = tmp_path / "net.d"
    conf_dir.mkdir()
    (conf_dir / "portmap.conflist").write_text(json.dumps(PORTMAP_CONFLIST))
    env = {
        **os.environ,
        "CNI_PATH": go_plugin_dir,
        "NETCONFPATH": str(conf_dir),
        "PYCNI_CACHE_DIR": str(tmp_path / "cache"),
    }
    ctr_path = netns.path(ctr)
    cid = container_id_for(ctr_path)
    www = tmp_path / "www"
    www.mkdir()
    (www / "index.html").write_text("case2-ok\n")
    run("busybox", "httpd", "-p", "80", "-h", str(www), netns=ctr)

    added = subprocess.run(
        ["ip", "netns", "exec", node, pycni_bin, "add", "portmap", ctr_path],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert added.returncode == 0, added.stderr
    result = json.loads(added.stdout)
    assert result["cniVersion"] == "0.4.0"
    assert result["ips"][0]["address"].startswith("10.10.")
    container_ip = result["ips"][0]["address"].split("/")[0]
    try:
        assert curl(node, f"http://{container_ip}/") == "case2-ok\n"
        assert curl(node, "http://127.0.0.1:8080/") == "case2-ok\n"
        assert curl(node, "http://10.10.0.1:8080/") == "case2-ok\n"
        assert (host_local_dir / container_ip).read_text().startswith(cid)
        assert cid in run("iptables-save", "-t", "nat", netns=node).stdout
        assert (tmp_path / "cache" / "results" / f"portmap-{cid}-eth0").exists()
    finally:
        deleted = subprocess.run(
            ["ip", "netns", "exec", node, pycni_bin, "del", "portmap", ctr_path],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
    assert deleted.returncode == 0, deleted.stderr

    assert run("ip", "-o", "link", "show", "type", "veth", netns=node).stdout == ""
    assert run("ip", "-o", "link", "show", "eth0", netns=ctr, check=False).returncode != 0
    assert not (host_local_dir / container_ip).exists()
    assert cid not in run("iptables-save", netns=node).stdout
    assert list((tmp_path / "cache" / "results").iterdir()) == []
    with pytest.raises(AssertionError):
        curl(node, "http://127.0.0.1:8080/")

    again = subprocess.run(
        ["ip", "netns", "exec", node, pycni_bin, "del", "portmap", ctr_path],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert again.returncode == 0, "DEL must be idempotent"
