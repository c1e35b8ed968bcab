"""Bad input through the ``pycni`` command with real plugins: clear errors, nothing left."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.support.netns import NetnsPool


@pytest.fixture
def setup(tmp_path: Path, pycni_plugin_dir: str) -> dict[str, str]:
    conf_dir = tmp_path / "net.d"
    conf_dir.mkdir()
    (conf_dir / "lo.conflist").write_text(
        json.dumps(
            {
                "cniVersion": "1.0.0",
                "name": "lonet",
                "plugins": [
                    {"type": "loopback"},
                    {"type": "static", "ipam": {"addresses": [{"address": "10.77.0.2/24"}]}},
                ],
            }
        )
    )
    return {
        **os.environ,
        "CNI_PATH": pycni_plugin_dir,
        "NETCONFPATH": str(conf_dir),
        "PYCNI_CACHE_DIR": str(tmp_path / "cache"),
    }


def pycni(pycni_bin: str, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([pycni_bin, *args], env=env, capture_output=True, text=True, check=False, timeout=60)


def cached(env: dict[str, str]) -> list[str]:
    results = Path(env["PYCNI_CACHE_DIR"]) / "results"
    return os.listdir(results) if results.exists() else []


def test_nonexistent_netns(pycni_bin: str, setup: dict[str, str]) -> None:
    ghost = "/run/netns/pycni-test-ghost"
    proc = pycni(pycni_bin, setup, "add", "lonet", ghost)
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert proc.stderr.strip() == (
        'pycni: plugin type="loopback" name="lonet" failed (add): '
        f"CNI_NETNS: network namespace {ghost} does not exist (CNI error code 4)"
    )
    assert not os.path.exists(ghost), "a DEL or ADD must never create the namespace"
    assert cached(setup) == []


def test_version_too_new_for_plugins(pycni_bin: str, setup: dict[str, str], netns: NetnsPool) -> None:
    conf = Path(setup["NETCONFPATH"]) / "lo.conflist"
    conf.write_text(conf.read_text().replace('"1.0.0"', '"1.3.0"'))
    name = netns.new("v", lo_up=False)
    proc = pycni(pycni_bin, setup, "add", "lonet", netns.path(name))
    assert proc.returncode == 1
    assert "incompatible CNI versions" in proc.stderr and "(CNI error code 1)" in proc.stderr
    assert cached(setup) == []


def test_plugin_not_on_path(pycni_bin: str, setup: dict[str, str], netns: NetnsPool) -> None:
    name = netns.new("np", lo_up=False)
    proc = pycni(pycni_bin, {**setup, "CNI_PATH": "/nonexistent"}, "add", "lonet", netns.path(name))
    assert proc.returncode == 1
    assert "failed to find plugin 'loopback' in path ['/nonexistent']" in proc.stderr
    assert cached(setup) == []


def test_failing_second_plugin_rolls_back_the_first(pycni_bin: str, setup: dict[str, str], netns: NetnsPool) -> None:
    conf = Path(setup["NETCONFPATH"]) / "lo.conflist"
    data = json.loads(conf.read_text())
    data["plugins"][1]["ipam"]["addresses"][0]["address"] = "10.77.0.2"
    conf.write_text(json.dumps(data))
    name = netns.new("rb", lo_up=False)
    proc = pycni(pycni_bin, setup, "add", "lonet", netns.path(name))
    assert proc.returncode == 1
    assert "not in CIDR notation" in proc.stderr
    link = subprocess.run(["ip", "-n", name, "-o", "link", "show", "lo"], capture_output=True, text=True, check=True)
    assert ",UP" not in link.stdout, "the automatic DEL must undo loopback's ADD"
    assert cached(setup) == []


def test_missing_config_directory(pycni_bin: str, setup: dict[str, str]) -> None:
    proc = pycni(pycni_bin, {**setup, "NETCONFPATH": "/nonexistent/net.d"}, "add", "lonet", "/run/netns/x")
    assert proc.returncode == 1
    assert proc.stderr.strip().startswith("pycni: no net configurations found in /nonexistent/net.d")
