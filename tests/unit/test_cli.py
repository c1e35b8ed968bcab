"""The ``pycni`` command: cnitool-compatible arguments, variables and IDs."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from pycni.cli.main import UsageError, container_id_for, main, parse_cap_args, parse_cni_args
from tests.support.plugins import install_noop, install_script

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "dns_override.py"


def test_container_id_is_cnitools() -> None:
    digest = hashlib.sha512(b"/var/run/netns/blue").hexdigest()[:20]
    assert container_id_for("/var/run/netns/blue") == f"cnitool-{digest}"
    assert len(container_id_for("/x")) == len("cnitool-") + 20


def test_cni_args_pairs_must_be_complete() -> None:
    assert parse_cni_args("A=1;B=2") == [("A", "1"), ("B", "2")]
    for bad in ("A=", "=1", "A", "A=1;", "A=1=2"):
        with pytest.raises(UsageError, match="invalid CNI_ARGS pair"):
            parse_cni_args(bad)


def test_cap_args_must_be_a_json_object() -> None:
    assert parse_cap_args('{"portMappings": []}') == {"portMappings": []}
    with pytest.raises(UsageError):
        parse_cap_args("[1]")
    with pytest.raises(UsageError):
        parse_cap_args("{nope")


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["add", "onlynetwork"]) == 2
    assert "pycni: " in capsys.readouterr().err
    assert main(["frobnicate"]) == 2


class TestCommand:
    """Runs the installed ``pycni`` command against test doubles and the example plugin."""

    @pytest.fixture
    def setup(self, tmp_path: Path) -> dict[str, str]:
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        install_noop(bin_dir, "noop")
        install_script(bin_dir, "dns-override", EXAMPLE, flags="")
        conf_dir = tmp_path / "net.d"
        conf_dir.mkdir()
        (conf_dir / "10-dns.conflist").write_text(
            json.dumps(
                {
                    "cniVersion": "1.0.0",
                    "name": "dnsnet",
                    "plugins": [
                        {"type": "noop", "result": {"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.2/24"}]}},
                        {"type": "dns-override", "nameservers": ["10.96.0.10"], "search": ["svc.local"]},
                    ],
                }
            )
        )
        return {
            "CNI_PATH": str(bin_dir),
            "NETCONFPATH": str(conf_dir),
            "PYCNI_CACHE_DIR": str(tmp_path / "cache"),
            "PATH": "/usr/bin:/bin",
        }

    def pycni(self, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "pycni.cli.main", *args], env=env, capture_output=True, text=True, check=False
        )

    def test_add_check_del_with_a_third_party_plugin(self, setup: dict[str, str], tmp_path: Path) -> None:
        added = self.pycni(setup, "add", "dnsnet", "/run/netns/not-needed-by-these-plugins")
        assert added.returncode == 0, added.stderr
        result = json.loads(added.stdout)
        assert result["dns"] == {"nameservers": ["10.96.0.10"], "search": ["svc.local"]}
        assert result["ips"] == [{"address": "10.0.0.2/24"}]
        cache_files = list((tmp_path / "cache" / "results").iterdir())
        cid = container_id_for("/run/netns/not-needed-by-these-plugins")
        assert [f.name for f in cache_files] == [f"dnsnet-{cid}-eth0"]
        checked = self.pycni(setup, "check", "dnsnet", "/run/netns/not-needed-by-these-plugins")
        assert checked.returncode == 0, checked.stderr
        deleted = self.pycni(setup, "del", "dnsnet", "/run/netns/not-needed-by-these-plugins")
        assert deleted.returncode == 0, deleted.stderr
        assert list((tmp_path / "cache" / "results").iterdir()) == []

    def test_ifname_flag_and_env(self, setup: dict[str, str], tmp_path: Path) -> None:
        assert self.pycni({**setup, "CNI_IFNAME": "net1"}, "add", "dnsnet", "/x").returncode == 0
        assert self.pycni(setup, "-i", "net2", "add", "dnsnet", "/x").returncode == 0
        names = sorted(f.name.rsplit("-", 1)[1] for f in (tmp_path / "cache" / "results").iterdir())
        assert names == ["net1", "net2"]

    def test_errors_are_one_line_on_stderr(self, setup: dict[str, str]) -> None:
        missing = self.pycni(setup, "add", "nosuchnet", "/x")
        assert missing.returncode == 1
        assert missing.stdout == ""
        assert missing.stderr.strip().count("\n") == 0
        assert 'no net configuration with name "nosuchnet"' in missing.stderr
        bad_args = self.pycni({**setup, "CNI_ARGS": "broken"}, "add", "dnsnet", "/x")
        assert bad_args.returncode == 2
        assert "invalid CNI_ARGS pair 'broken'" in bad_args.stderr

    def test_failed_add_is_rolled_back_with_del(self, setup: dict[str, str], tmp_path: Path) -> None:
        conf = Path(setup["NETCONFPATH"]) / "10-dns.conflist"
        data = json.loads(conf.read_text())
        data["plugins"][1] = {"type": "dns-override", "nameservers": "not-a-list"}
        log = tmp_path / "calls.jsonl"
        data["plugins"][0]["log"] = str(log)
        conf.write_text(json.dumps(data))
        failed = self.pycni(setup, "add", "dnsnet", "/x")
        assert failed.returncode == 1
        assert "nameservers: expected a list" in failed.stderr
        assert "(CNI error code 7)" in failed.stderr
        commands = [json.loads(line)["command"] for line in log.read_text().splitlines()]
        assert commands == ["ADD", "DEL"]
        assert not list((tmp_path / "cache" / "results").glob("*"))

    def test_version_of_a_plugin(self, setup: dict[str, str]) -> None:
        out = self.pycni(setup, "version", "dns-override")
        assert out.returncode == 0
        assert json.loads(out.stdout)["supportedVersions"][0] == "0.3.0"


def test_the_daemon_recognises_every_installed_executable(tmp_path: Path) -> None:
    """Installer and daemon share the executable's format: a change to one cannot silently slow the other."""
    from pycni.cli.install import install
    from pycni.plugins import PLUGIN_MODULES
    from pycni.shim import executable_plugin_type

    for path in install(str(tmp_path)):
        assert executable_plugin_type(Path(path).read_bytes()) == Path(path).name
    assert len(list(tmp_path.iterdir())) == len(PLUGIN_MODULES)
    assert executable_plugin_type(b"#!/bin/sh\nexec /usr/lib/cni/bridge\n") is None
