"""``pycni calico-node``'s command line: flags over the Installation over the environment; bad input is one line."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from pycni.cli.calico_node import node_config
from pycni.cli.main import build_parser, main
from pycni.fabric.calico.nodeconfig import AutodetectMethod
from tests.support.calico_cluster import SEED_INSTALLATION as SEED


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    logger = logging.getLogger("pycni")
    handlers, level = list(logger.handlers), logger.level
    yield
    logger.handlers[:] = handlers
    logger.setLevel(level)


def parse(*argv: str) -> object:
    return build_parser().parse_args(["calico-node", *argv])


def test_flags_win_over_the_environment() -> None:
    opts = parse("--nodename", "n9", "--iface", "eth0.1", "--backend", "none", "--resync", "2.5", "--veth-mtu", "1400")
    env = {"NODENAME": "ignored", "CALICO_NETWORKING_BACKEND": "bird", "IP_AUTODETECTION_METHOD": "can-reach=1.1.1.1"}
    config = node_config(opts, env)  # type: ignore[arg-type]
    assert config.nodename == "n9" and config.backend == "none" and config.resync == 2.5
    assert config.autodetection == AutodetectMethod("interface", (r"^eth0\.1$",))
    assert config.felix_env == {"vxlanMTU": 1400, "ipipMTU": 1400}
    assert config.nodename_file == "/var/lib/calico/nodename" and config.mtu_file == "/var/lib/calico/mtu"
    assert config.pid_path == "/var/run/calico/calico-node.pid" and config.leak_grace_period == 900.0


def test_per_node_pid_file_and_leak_grace_period() -> None:
    config = node_config(parse("--run-dir", "/tmp/n1", "--ipam-leak-grace-period", "2s"), {})  # type: ignore[arg-type]
    assert config.pid_path == "/tmp/n1/calico-node.pid" and config.leak_grace_period == 2.0
    config = node_config(parse("--pid-file", "/tmp/a.pid", "--ipam-leak-grace-period", "0"), {})  # type: ignore[arg-type]
    assert config.pid_path == "/tmp/a.pid" and config.leak_grace_period == 0.0


def test_the_installation_gives_pools_and_backend_unless_a_flag_says_otherwise(tmp_path: Path) -> None:
    path = tmp_path / "custom-resources.yaml"
    path.write_text(SEED)
    config = node_config(parse("--installation", str(path)), {"CALICO_IPV4POOL_CIDR": "10.9.0.0/16"})  # type: ignore[arg-type]
    (pool,) = config.default_pools
    assert pool.spec["cidr"] == "10.244.0.0/16" and pool.spec["vxlanMode"] == "CrossSubnet"
    assert config.backend == "bird"
    flagged = node_config(parse("--installation", str(path), "--backend", "vxlan"), {})  # type: ignore[arg-type]
    assert flagged.backend == "vxlan"


def test_without_an_installation_the_pool_comes_from_the_environment() -> None:
    env = {"CALICO_IPV4POOL_CIDR": "10.9.0.0/16", "CALICO_IPV4POOL_VXLAN": "Always", "CALICO_IPV4POOL_IPIP": "Never"}
    (pool,) = node_config(parse(), env).default_pools  # type: ignore[arg-type]
    assert pool.spec["cidr"] == "10.9.0.0/16" and pool.spec["vxlanMode"] == "Always"


@pytest.mark.parametrize(
    "argv,env,fragment",
    [
        (["--installation", "/nonexistent/custom-resources.yaml"], {}, "cannot read the Installation"),
        ([], {"CALICO_IPV4POOL_IPIP": "sometimes"}, "CALICO_IPV4POOL_IPIP='sometimes'"),
        (["--ip-autodetection-method", "kubernetes-internal-ip"], {}, "needs the Kubernetes API"),
        ([], {"DATASTORE_TYPE": "kubernetes"}, "datastoreType kubernetes"),
        (["--ipam-leak-grace-period", "soon"], {}, "--ipam-leak-grace-period='soon' is not a duration"),
    ],
)
def test_bad_configuration_is_one_error_line_and_status_1(
    argv: list[str],
    env: dict[str, str],
    fragment: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("NODENAME", "n1")
    assert main(["calico-node", *argv]) == 1
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "calico-node:" in line]
    assert any("calico-node: ERROR: cannot start:" in line and fragment in line for line in lines), err
    assert "Traceback" not in err


def test_an_unknown_backend_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["calico-node", "--backend", "flannel"]) == 2
    assert "invalid choice: 'flannel'" in capsys.readouterr().err
