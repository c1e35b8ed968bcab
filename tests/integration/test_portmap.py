"""portmap on a live kernel: pycni bridge + host-local + portmap, driven by the pycni runtime."""

from __future__ import annotations

import json
import os
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from pycni.cli.main import container_id_for
from pycni.nft import portmap as rules
from tests.support.netns import NetnsPool, run

GOLDEN = Path(__file__).resolve().parents[1] / "unit" / "golden"


def chain(data_dir: Path, **portmap_extra: Any) -> dict[str, Any]:
    return {
        "cniVersion": "1.0.0",
        "name": "pmnet",
        "plugins": [
            {
                "type": "bridge",
                "bridge": "pm0",
                "isGateway": True,
                "ipMasq": True,
                "hairpinMode": True,
                "ipam": {"type": "host-local", "subnet": "10.30.0.0/16", "dataDir": str(data_dir)},
            },
            {"type": "portmap", "capabilities": {"portMappings": True}, **portmap_extra},
        ],
    }


class Host:
    """A node namespace running the ``pycni`` command against a conflist."""

    def __init__(self, pool: NetnsPool, plugin_dir: str, pycni_bin: str, tmp: Path, config: dict[str, Any]) -> None:
        self.pool, self.pycni_bin, self.tmp = pool, pycni_bin, tmp
        self.node = pool.new("pmnode")
        conf_dir = tmp / "net.d"
        conf_dir.mkdir(exist_ok=True)
        (conf_dir / "pm.conflist").write_text(json.dumps(config))
        self.env = {
            **os.environ,
            "CNI_PATH": plugin_dir,
            "NETCONFPATH": str(conf_dir),
            "PYCNI_CACHE_DIR": str(tmp / "cache"),
        }

    def pycni(
        self, verb: str, ctr: str, mappings: list[dict[str, Any]] | None = None
    ) -> subprocess.CompletedProcess[str]:
        env = dict(self.env)
        if mappings is not None:
            env["CAP_ARGS"] = json.dumps({"portMappings": mappings})
        return subprocess.run(
            ["ip", "netns", "exec", self.node, self.pycni_bin, verb, "pmnet", self.pool.path(ctr)],
            env=env,
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )

    def container(self, page: str) -> str:
        ctr = self.pool.new("pmctr")
        www = self.tmp / f"www-{ctr}"
        www.mkdir()
        (www / "index.html").write_text(page)
        run("busybox", "httpd", "-p", "80", "-h", str(www), netns=ctr)
        return ctr

    def elements(self) -> str:
        return run("nft", "list", "table", "inet", rules.TABLE, netns=self.node, check=False).stdout


def curl(netns: str, url: str, attempts: int = 20) -> str:
    for _ in range(attempts):
        proc = run("curl", "-sS", "-m", "2", url, netns=netns, check=False)
        if proc.returncode == 0:
            return proc.stdout
        time.sleep(0.1)
    raise AssertionError(f"{url} unreachable from {netns}: {proc.stderr}")


def unreachable(netns: str, url: str) -> bool:
    return run("curl", "-sS", "-m", "1", url, netns=netns, check=False).returncode != 0


@pytest.fixture
def host(netns: NetnsPool, pycni_plugin_dir: str, pycni_bin: str, tmp_path: Path) -> Host:
    return Host(netns, pycni_plugin_dir, pycni_bin, tmp_path, chain(tmp_path / "ipam"))


def test_host_port_from_host_localhost_hairpin_and_other_containers(host: Host) -> None:
    web = host.container("web\n")
    other = host.pool.new("pmctr")
    added = host.pycni("add", web, [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}])
    assert added.returncode == 0, added.stderr
    assert host.pycni("add", other, []).returncode == 0
    gateway = "10.30.0.1"
    assert curl(host.node, "http://127.0.0.1:8080/") == "web\n", "localhost on the host"
    assert curl(host.node, f"http://{gateway}:8080/") == "web\n", "the host's address"
    assert curl(web, f"http://{gateway}:8080/") == "web\n", "hairpin: the container through its own host port"
    assert curl(other, f"http://{gateway}:8080/") == "web\n", "another container through the host"
    assert host.pycni("check", web, [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]).returncode == 0

    deleted = host.pycni("del", web, [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}])
    assert deleted.returncode == 0, deleted.stderr
    assert host.elements() == "", "the last DEL removes every element, then the table"
    assert unreachable(host.node, "http://127.0.0.1:8080/")
    assert host.pycni("del", other, []).returncode == 0


def test_host_ip_specific_and_udp_and_capitalised_keys(host: Host) -> None:
    web = host.container("ip-specific\n")
    mappings = [
        {"HostPort": 8081, "ContainerPort": 80, "Protocol": "TCP", "HostIP": "10.30.0.1"},
        {"hostPort": 5300, "containerPort": 53, "protocol": "udp", "hostIP": ""},
    ]
    added = host.pycni("add", web, mappings)
    assert added.returncode == 0, added.stderr
    table = host.elements()
    assert "10.30.0.1 . tcp . 8081" in table
    assert "udp . 5300" in table
    assert curl(host.node, "http://10.30.0.1:8081/") == "ip-specific\n"
    assert unreachable(host.node, "http://127.0.0.1:8081/"), "only the named host address is mapped"
    assert host.pycni("del", web, mappings).returncode == 0
    assert "comment" not in host.elements()


def test_conditions_restrict_who_is_forwarded(
    netns: NetnsPool, pycni_plugin_dir: str, pycni_bin: str, tmp_path: Path
) -> None:
    config = chain(tmp_path / "ipam", conditionsV4=["ip", "saddr", "!=", "127.0.0.1"])
    host = Host(netns, pycni_plugin_dir, pycni_bin, tmp_path, config)
    web = host.container("cond\n")
    mapping = [{"hostPort": 8082, "containerPort": 80, "protocol": "tcp"}]
    assert host.pycni("add", web, mapping).returncode == 0
    assert "ip saddr != 127.0.0.1 tcp dport 8082 dnat ip to 10.30.0.2:80" in host.elements()
    assert curl(host.node, "http://10.30.0.1:8082/") == "cond\n"
    assert unreachable(host.node, "http://127.0.0.1:8082/"), "the condition excludes localhost"
    assert host.pycni("del", web, mapping).returncode == 0
    assert "dport 8082" not in host.elements()


def test_port_already_taken_is_refused_and_rolled_back(host: Host) -> None:
    first, second = host.container("first\n"), host.container("second\n")
    mapping = [{"hostPort": 8083, "containerPort": 80, "protocol": "tcp"}]
    assert host.pycni("add", first, mapping).returncode == 0
    refused = host.pycni("add", second, mapping)
    assert refused.returncode == 1
    assert "host port tcp/8083 is already mapped to another container" in refused.stderr
    assert curl(host.node, "http://127.0.0.1:8083/") == "first\n", "the first mapping is intact"
    assert run("ip", "-o", "link", "show", "eth0", netns=second, check=False).returncode != 0, "rolled back"
    assert host.pycni("del", first, mapping).returncode == 0


def test_no_mappings_means_no_nft_work(host: Host) -> None:
    ctr = host.pool.new("pmctr")
    assert host.pycni("add", ctr, []).returncode == 0
    assert host.elements() == "", "no table is created when there is nothing to map"
    assert host.pycni("del", ctr, []).returncode == 0


def test_gc_removes_mappings_of_stale_attachments(
    netns: NetnsPool, pycni_plugin_dir: str, pycni_bin: str, tmp_path: Path
) -> None:
    config = chain(tmp_path / "ipam")
    config["cniVersion"] = "1.1.0"
    host = Host(netns, pycni_plugin_dir, pycni_bin, tmp_path, config)
    keep, stale = host.container("keep\n"), host.container("stale\n")
    assert host.pycni("add", keep, [{"hostPort": 8084, "containerPort": 80, "protocol": "tcp"}]).returncode == 0
    assert host.pycni("add", stale, [{"hostPort": 8085, "containerPort": 80, "protocol": "tcp"}]).returncode == 0
    keep_id = f"{container_id_for(host.pool.path(keep))}/eth0"
    gc = subprocess.run(
        ["ip", "netns", "exec", host.node, host.pycni_bin, "gc", "pmnet", "--keep", keep_id],
        env=host.env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert gc.returncode == 0, gc.stderr
    table = host.elements()
    assert "tcp . 8084" in table and "tcp . 8085" not in table
    assert host.pycni("del", keep, [{"hostPort": 8084, "containerPort": 80, "protocol": "tcp"}]).returncode == 0


PARALLEL = 12  # concurrent ADDs, then DELs, on one table (20 before make test's time budget)


def test_parallel_add_del_of_a_dozen_containers(host: Host) -> None:
    containers = [host.pool.new("par") for _ in range(PARALLEL)]
    mappings = {
        ctr: [{"hostPort": 9000 + i, "containerPort": 80, "protocol": "tcp"}] for i, ctr in enumerate(containers)
    }
    with ThreadPoolExecutor(max_workers=PARALLEL) as pool:
        added = list(pool.map(lambda c: host.pycni("add", c, mappings[c]), containers))
    assert [p.stderr for p in added if p.returncode != 0] == []
    table = host.elements()
    for i in range(PARALLEL):
        assert table.count(f"tcp . {9000 + i} comment") == 1, f"port {9000 + i} mapped exactly once"
    addresses = {json.loads(p.stdout)["ips"][0]["address"] for p in added}
    assert len(addresses) == PARALLEL
    with ThreadPoolExecutor(max_workers=PARALLEL) as pool:
        deleted = list(pool.map(lambda c: host.pycni("del", c, mappings[c]), containers))
    assert [p.stderr for p in deleted if p.returncode != 0] == []
    assert host.elements() == ""
    assert "id: " not in run("nft", "list", "ruleset", netns=host.node).stdout, "no rule of any attachment is left"


def test_golden_scripts_load_into_the_kernel(netns: NetnsPool) -> None:
    scratch = netns.new("golden")
    for name in ("portmap_add.nft", "spoofcheck_setup.nft", "masquerade_setup.nft"):
        proc = subprocess.run(
            ["ip", "netns", "exec", scratch, "nft", "-f", str(GOLDEN / name)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert proc.returncode == 0, f"{name}: {proc.stderr}"
    listed = run("nft", "list", "ruleset", netns=scratch).stdout
    assert "tcp . 8080" in listed and "fd00::1 . tcp . 7070" in listed
    assert "ether saddr 02:11:22:33:44:55 return" in listed
