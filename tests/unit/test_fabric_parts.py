"""Pieces of the node agent that need no kernel: subnet.env, the flannel plugin's delegate config, rules."""

from __future__ import annotations

import dataclasses
import ipaddress
import json
from pathlib import Path

import pytest

from pycni.fabric.flannel import subnetenv
from pycni.nft import flannel as flannel_rules
from pycni.plugins.meta import flannel
from pycni.skel import CmdArgs
from pycni.spec import CNIError

NET = ipaddress.IPv4Network("10.244.0.0/16")
SUB = ipaddress.IPv4Network("10.244.1.0/24")


def test_subnet_env_is_written_as_flanneld_writes_it(tmp_path: Path) -> None:
    text = subnetenv.render(NET, SUB, 1450, True)
    assert text == (
        "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n"
    )
    path = tmp_path / "run" / "subnet.env"
    subnetenv.write(str(path), text)
    values = subnetenv.read(str(path))
    assert values["FLANNEL_SUBNET"] == "10.244.1.1/24"
    assert subnetenv.subnet_of(values) == SUB
    assert subnetenv.read(str(tmp_path / "missing")) == {}
    assert oct(path.stat().st_mode & 0o777) == "0o644"


def test_subnet_env_dual_stack_lines() -> None:
    text = subnetenv.render(
        NET, SUB, 1450, False, ipaddress.IPv6Network("fd00:cafe::/56"), ipaddress.IPv6Network("fd00:cafe:0:1::/64")
    )
    assert "FLANNEL_IPV6_NETWORK=fd00:cafe::/56\nFLANNEL_IPV6_SUBNET=fd00:cafe:0:1::1/64\n" in text


def args(config: dict[str, object]) -> CmdArgs:
    return CmdArgs("ADD", "c1", "/run/netns/x", "eth0", "", [], json.dumps(config).encode(), config)


ENV = subnetenv.SubnetEnv(NET, ipaddress.IPv4Interface("10.244.1.1/24"), 1450, True)
GOOD = "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n"


def test_delegate_config_defaults_as_the_reference() -> None:
    conf = flannel.delegate_config(args({"cniVersion": "0.3.1", "name": "cbr0", "type": "flannel"}), ENV, {})
    assert conf == {
        "type": "bridge",
        "name": "cbr0",
        "cniVersion": "0.3.1",
        "ipMasq": False,
        "mtu": 1450,
        "isGateway": True,
        "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.244.1.0/24"}]], "routes": [{"dst": "10.244.0.0/16"}]},
    }


def test_delegate_keys_win_and_runtime_config_passes_through() -> None:
    user = {"hairpinMode": True, "isDefaultGateway": True, "mtu": 1400, "ipam": {"routes": [{"dst": "0.0.0.0/0"}]}}
    config = {"cniVersion": "1.0.0", "name": "cbr0", "type": "flannel", "runtimeConfig": {"portMappings": []}}
    conf = flannel.delegate_config(args(config), dataclasses.replace(ENV, ipmasq=False), user)
    assert conf["mtu"] == 1400 and conf["hairpinMode"] and conf["ipMasq"] is True
    assert conf["ipam"]["routes"] == [{"dst": "0.0.0.0/0"}, {"dst": "10.244.0.0/16"}]
    assert conf["runtimeConfig"] == {"portMappings": []}


@pytest.mark.parametrize(
    ("text", "code", "message"),
    [
        (b"", 7, "is empty"),
        (GOOD.replace("FLANNEL_MTU=1450\n", "").encode(), 7, "is missing FLANNEL_MTU"),
        (GOOD.replace("1450", "abc").encode(), 7, "FLANNEL_MTU='abc' is not an MTU"),
        (GOOD.replace("1450", "99999").encode(), 7, "FLANNEL_MTU='99999' is not an MTU"),
        (GOOD.replace("=true", "=maybe").encode(), 7, "FLANNEL_IPMASQ='maybe' is neither true nor false"),
        (GOOD.replace("10.244.1.1/24", "10.9.1.1/24").encode(), 7, "is not inside FLANNEL_NETWORK 10.244.0.0/16"),
        (GOOD.replace("10.244.1.1/24", "10.244.1.1/2").encode(), 7, "FLANNEL_SUBNET='10.244.1.1/2' is not inside"),
        (GOOD.replace("10.244.0.0/16", "10.244.0.0/33").encode(), 7, "FLANNEL_NETWORK='10.244.0.0/33' is not"),
        ((GOOD + "FLANNEL_SUBNET=10.244.2.1/24\n").encode(), 7, "gives FLANNEL_SUBNET twice"),
        (b"\xff\xfe" + GOOD.encode(), 7, "is not UTF-8 text"),
        (b"\x00garbage\n" + GOOD.encode(), 7, "line 1 is not KEY=VALUE"),
    ],
)
def test_a_damaged_subnet_env_is_an_error_naming_the_file_and_key(
    tmp_path: Path, text: bytes, code: int, message: str
) -> None:
    path = tmp_path / "subnet.env"
    path.write_bytes(text)
    with pytest.raises(CNIError) as error:
        subnetenv.load(str(path))
    assert error.value.code == code and str(path) in error.value.msg and message in error.value.msg
    assert "pycni flanneld writes it again" in error.value.msg


def test_subnet_env_with_crlf_or_repeated_keys_reads_as_go_reads_it(tmp_path: Path) -> None:
    path = tmp_path / "subnet.env"
    path.write_bytes((GOOD + "FLANNEL_MTU=1450\n# comment\n").replace("\n", "\r\n").encode())
    assert subnetenv.load(str(path)) == ENV
    assert subnetenv.load(str(tmp_path / "missing")) is None


@pytest.mark.parametrize("kind", ["symlink", "directory"])
def test_a_subnet_env_that_is_not_a_regular_file_is_code_5(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "subnet.env"
    if kind == "symlink":
        (tmp_path / "elsewhere").write_text(GOOD)
        path.symlink_to(tmp_path / "elsewhere")
    else:
        path.mkdir()
    with pytest.raises(CNIError) as error:
        subnetenv.load(str(path))
    assert error.value.code == 5 and str(path) in error.value.msg
    subnetenv.write(str(path), GOOD)  # the agent replaces it, never writing through a link
    assert not path.is_symlink() and path.read_text() == GOOD
    if kind == "symlink":
        assert (tmp_path / "elsewhere").read_text() == GOOD


def test_what_the_agent_finds_wrong_with_subnet_env(tmp_path: Path) -> None:
    path = str(tmp_path / "subnet.env")
    assert subnetenv.problem(path, GOOD) == "it is missing"
    subnetenv.write(path, GOOD)
    assert subnetenv.problem(path, GOOD) == ""
    subnetenv.write(path, GOOD.replace("1450", "abc"))
    assert "FLANNEL_MTU='abc'" in subnetenv.problem(path, GOOD)
    subnetenv.write(path, GOOD.replace("10.244.1.1", "10.244.2.1"))
    assert subnetenv.problem(path, GOOD) == "it holds other values than this node's lease"


def test_masquerade_rules_mirror_flannel() -> None:
    rules = flannel_rules.desired(NET, SUB, ip_masq=True, forward=True)
    assert ("postrtg", "ip saddr 10.244.0.0/16 ip daddr != 224.0.0.0/4 masquerade fully-random") in rules
    assert rules[0] == ("postrtg", "meta mark & 0x4000 == 0x4000 return")
    assert rules[-2:] == [("forward", "ip saddr 10.244.0.0/16 accept"), ("forward", "ip daddr 10.244.0.0/16 accept")]
    assert flannel_rules.desired(NET, SUB, ip_masq=False, forward=False) == []
    script = flannel_rules.render(rules)
    assert script.count('comment "pycni flanneld') == len(rules)


def test_flanneld_flags_default_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every flag can come from ``FLANNELD_<FLAG>``, converted like a command-line value."""
    from pycni.cli.main import build_parser

    monkeypatch.setenv("FLANNELD_IP_MASQ", "true")
    monkeypatch.setenv("FLANNELD_SUBNET_LEASE_TTL", "600")
    monkeypatch.setenv("FLANNELD_ETCD_PREFIX", "/my/network")
    opts = build_parser().parse_args(["flanneld"])
    assert (opts.ip_masq, opts.subnet_lease_ttl, opts.etcd_prefix) == (True, 600, "/my/network")
    assert opts.iptables_forward_rules is True and opts.iptables_resync == 5.0
    assert build_parser().parse_args(["flanneld", "--ip-masq=false"]).ip_masq is False, "the command line wins"


def test_flanneld_bad_environment_value_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from pycni.cli.main import main

    monkeypatch.setenv("FLANNELD_SUBNET_LEASE_TTL", "a day")
    assert main(["flanneld"]) == 2
    assert "--subnet-lease-ttl: invalid int value: 'a day'" in capsys.readouterr().err


def test_inspect_finds_the_vxlan_device_whatever_the_key_case(monkeypatch: pytest.MonkeyPatch) -> None:
    """``vni`` is read case-insensitively, as the vxlan backend (Go's decoder) reads it."""
    import subprocess

    from pycni.cli import flanneld as cli
    from pycni.fabric.flannel.model import NetworkConfig

    seen: list[list[str]] = []

    def fake_run(argv: list[str], **_: object) -> subprocess.CompletedProcess[str]:
        seen.append(list(argv))
        return subprocess.CompletedProcess(argv, 0, "", "")

    monkeypatch.setattr(subprocess, "run", fake_run)
    cli._local_state(NetworkConfig.from_dict({"Network": "10.5.0.0/16", "Backend": {"Type": "vxlan", "vni": 7}}))
    assert ["ip", "neigh", "show", "dev", "flannel.7"] in seen
    assert ["bridge", "fdb", "show", "dev", "flannel.7"] in seen


def test_agent_log_lines_mark_warnings() -> None:
    """``pycni flanneld`` lines keep the ``HH:MM:SS flanneld: ...`` shape; warnings and errors say so."""
    import logging
    import re

    from pycni.cli.logs import TextFormatter

    def line(level: int, message: str) -> str:
        record = logging.LogRecord("pycni.fabric.flannel.agent", level, __file__, 1, message, None, None)
        return TextFormatter("flanneld").format(record)

    assert re.fullmatch(r"\d\d:\d\d:\d\d flanneld: ready", line(logging.INFO, "ready"))
    assert re.fullmatch(r"\d\d:\d\d:\d\d flanneld: WARNING: MAC clash", line(logging.WARNING, "MAC clash"))
    assert line(logging.ERROR, "Lease has been revoked.").endswith("flanneld: ERROR: Lease has been revoked.")
