"""Pieces of the node agent that need no kernel: subnet.env, the flannel plugin's delegate config, rules."""

from __future__ import annotations

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


ENV = {
    "FLANNEL_NETWORK": "10.244.0.0/16",
    "FLANNEL_SUBNET": "10.244.1.1/24",
    "FLANNEL_MTU": "1450",
    "FLANNEL_IPMASQ": "true",
}


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
    conf = flannel.delegate_config(args(config), {**ENV, "FLANNEL_IPMASQ": "false"}, user)
    assert conf["mtu"] == 1400 and conf["hairpinMode"] and conf["ipMasq"] is True
    assert conf["ipam"]["routes"] == [{"dst": "0.0.0.0/0"}, {"dst": "10.244.0.0/16"}]
    assert conf["runtimeConfig"] == {"portMappings": []}


def test_incomplete_subnet_env_is_a_clear_error() -> None:
    with pytest.raises(CNIError, match=r"subnet\.env is incomplete"):
        flannel.delegate_config(args({"cniVersion": "1.0.0", "name": "cbr0"}), {"FLANNEL_NETWORK": "x"}, {})


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

    from pycni.cli.flanneld import _AgentFormatter

    def line(level: int, message: str) -> str:
        record = logging.LogRecord("pycni.fabric.flannel.agent", level, __file__, 1, message, None, None)
        return _AgentFormatter().format(record)

    assert re.fullmatch(r"\d\d:\d\d:\d\d flanneld: ready", line(logging.INFO, "ready"))
    assert re.fullmatch(r"\d\d:\d\d:\d\d flanneld: WARNING: MAC clash", line(logging.WARNING, "MAC clash"))
    assert line(logging.ERROR, "Lease has been revoked.").endswith("flanneld: ERROR: Lease has been revoked.")
