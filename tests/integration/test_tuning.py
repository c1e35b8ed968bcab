"""pycni's tuning plugin in real namespaces, chained after pycni's bridge, held to Go's tuning.

The container interface is a bridge veth in a container namespace under a
'node' namespace; sysctls are read through ``ip netns exec``, link state
through ``ip -j link``. Go's tuning (Debian 1.1.1) stops at spec 1.0.0 and
knows neither ``txQLen`` nor the allowlist, nor restores sysctls on DEL.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pycni.cli.main import container_id_for
from tests.integration.test_bridge import Node, with_data_dir
from tests.support.cni import Call, exec_plugin, normalize
from tests.support.netns import NetnsPool, run

BRIDGE: dict[str, Any] = {
    "cniVersion": "1.0.0",
    "name": "tunenet",
    "type": "bridge",
    "bridge": "tun0",
    "isGateway": True,
    "ipam": {"type": "host-local", "subnet": "10.41.0.0/24"},
}
SYSCTLS = {
    "net.ipv4.conf.IFNAME.log_martians": "1",
    "net.ipv4.conf.all.arp_ignore": "2",
    "net.core.somaxconn": "1024",
}
TUNING: dict[str, Any] = {
    "type": "tuning",
    "mac": "c2:00:00:41:00:02",
    "mtu": 1400,
    "promisc": True,
    "allmulti": True,
    "txQLen": 2500,
    "sysctl": SYSCTLS,
}
ALLOWLIST = Path("/etc/cni/tuning/allowlist.conf")


def sysctl_file(key: str, ifname: str = "eth0") -> str:
    return "/proc/sys/" + key.replace(".", "/").replace("IFNAME", ifname, 1)


def snapshot(ctr: str, ifname: str = "eth0", keys: tuple[str, ...] = tuple(SYSCTLS)) -> dict[str, Any]:
    """What tuning may change in the container: link attributes and the sysctls of ``keys``."""
    info = json.loads(run("ip", "-j", "link", "show", "dev", ifname, netns=ctr).stdout)[0]
    state: dict[str, Any] = {
        "mac": info["address"],
        "mtu": info["mtu"],
        "promisc": "PROMISC" in info["flags"],
        "allmulti": "ALLMULTI" in info["flags"],
        "txqlen": info["txqlen"],
    }
    for key in keys:
        state[key] = run("cat", sysctl_file(key, ifname), netns=ctr).stdout.strip()
    return state


def expected_after(before: dict[str, Any], tuning: dict[str, Any]) -> dict[str, Any]:
    return {
        **before,
        "mac": tuning["mac"],
        "mtu": tuning["mtu"],
        "promisc": True,
        "allmulti": True,
        "txqlen": tuning["txQLen"],
        **tuning["sysctl"],
    }


class Chain:
    """A node with containers attached by pycni's bridge; tuning called with the bridge's result."""

    def __init__(self, node: Node, tmp: Path, version: str = "1.0.0") -> None:
        self.node = node
        self.bridge = with_data_dir({**BRIDGE, "cniVersion": version}, tmp / "ipam")
        self.state_dir = tmp / "tuning"
        self.version = version

    def attach(self) -> tuple[str, dict[str, Any]]:
        ctr = self.node.container()
        added = self.node.call("ADD", self.bridge, ctr)
        assert added.rc == 0, added.out
        return ctr, added.out

    def detach(self, ctr: str) -> None:
        assert self.node.call("DEL", self.bridge, ctr).rc == 0

    def tuning(self, prev: dict[str, Any] | None, **changes: Any) -> dict[str, Any]:
        config = {"cniVersion": self.version, "name": "tunenet", **TUNING, "dataDir": str(self.state_dir), **changes}
        if prev is not None:
            config["prevResult"] = prev
        return config

    def call(self, command: str, config: dict[str, Any], ctr: str, plugin_dir: str | None = None, **kw: Any) -> Call:
        directory = plugin_dir or self.node.plugin_dir
        return exec_plugin(
            os.path.join(directory, "tuning"),
            command,
            config,
            netns=self.node.pool.path(ctr),
            cni_path=directory,
            container_id=f"cid-{ctr}",
            node=self.node.name,
            **kw,
        )

    def state_files(self) -> list[str]:
        return sorted(os.listdir(self.state_dir)) if self.state_dir.exists() else []


@pytest.fixture
def chain(netns: NetnsPool, pycni_plugin_dir: str, tmp_path: Path) -> Chain:
    return Chain(Node(netns, pycni_plugin_dir, tmp_path / "ipam"), tmp_path)


@pytest.fixture
def allowlist() -> Iterator[Path]:
    """The real allowlist path (Go's is fixed); whatever was there before is put back."""
    created_dirs = [d for d in (ALLOWLIST.parent.parent, ALLOWLIST.parent) if not d.exists()]
    previous = ALLOWLIST.read_bytes() if ALLOWLIST.exists() else None
    ALLOWLIST.parent.mkdir(parents=True, exist_ok=True)
    try:
        yield ALLOWLIST
    finally:
        if previous is None:
            ALLOWLIST.unlink(missing_ok=True)
        else:
            ALLOWLIST.write_bytes(previous)
        for directory in reversed(created_dirs):
            shutil.rmtree(directory, ignore_errors=True)


# -- through the pycni runtime -------------------------------------------------


def test_chain_through_pycni_add_check_del(
    netns: NetnsPool, pycni_plugin_dir: str, pycni_bin: str, tmp_path: Path
) -> None:
    node = netns.new("tunode")
    ctr = netns.new("tuctr")
    conf_dir = tmp_path / "net.d"
    conf_dir.mkdir()
    bridge = {k: v for k, v in with_data_dir(BRIDGE, tmp_path / "ipam").items() if k not in ("cniVersion", "name")}
    tuning = {**TUNING, "dataDir": str(tmp_path / "tuning")}
    conflist = {"cniVersion": "1.0.0", "name": "tunenet", "plugins": [bridge, tuning]}
    (conf_dir / "tune.conflist").write_text(json.dumps(conflist))
    env = {**os.environ, "CNI_PATH": pycni_plugin_dir, "NETCONFPATH": str(conf_dir), "PYCNI_CACHE_DIR": str(tmp_path)}

    def pycni(verb: str) -> subprocess.CompletedProcess[str]:
        argv = ["ip", "netns", "exec", node, pycni_bin, verb, "tunenet", netns.path(ctr)]
        return subprocess.run(argv, env=env, capture_output=True, text=True, check=False, timeout=120)

    added = pycni("add")
    assert added.returncode == 0, added.stderr
    result = json.loads(added.stdout)
    eth0 = next(i for i in result["interfaces"] if i["name"] == "eth0")
    assert eth0["mac"] == TUNING["mac"], "the result carries the MAC tuning set"
    now = snapshot(ctr)
    assert {k: now[k] for k in ("mac", "mtu", "promisc", "allmulti", "txqlen")} == {
        "mac": TUNING["mac"],
        "mtu": 1400,
        "promisc": True,
        "allmulti": True,
        "txqlen": 2500,
    }
    assert {k: now[k] for k in SYSCTLS} == SYSCTLS
    saved_file = tmp_path / "tuning" / f"{container_id_for(netns.path(ctr))}_eth0.json"
    saved = json.loads(saved_file.read_text())
    assert set(saved) == {"mac", "promisc", "mtu", "allmulti", "txQLen", "sysctl", "network"}
    assert saved["mtu"] == 1500 and saved["promisc"] is False and saved["txQLen"] == 1000

    assert pycni("check").returncode == 0
    deleted = pycni("del")
    assert deleted.returncode == 0, deleted.stderr
    assert not saved_file.exists(), "DEL removes the saved values"
    assert run("ip", "link", "show", "eth0", netns=ctr, check=False).returncode != 0, "bridge DEL took the veth"
    assert not any((tmp_path / "ipam" / "tunenet").glob("10.*")), "the address was released"


# -- the plugin on its own, with the bridge's result ---------------------------


def test_del_restores_every_previous_value(chain: Chain) -> None:
    ctr, prev = chain.attach()
    before = snapshot(ctr)
    added = chain.call("ADD", chain.tuning(prev), ctr)
    assert added.rc == 0, added.out
    assert snapshot(ctr) == expected_after(before, TUNING)
    assert chain.call("CHECK", chain.tuning(added.out), ctr).rc == 0

    deleted = chain.call("DEL", chain.tuning(added.out), ctr)
    assert deleted.rc == 0, deleted.out
    assert snapshot(ctr) == before, "mac, mtu, flags, txqlen and sysctls are back"
    assert chain.state_files() == []
    assert chain.call("DEL", chain.tuning(None), ctr).rc == 0, "DEL again is fine"
    chain.detach(ctr)


@pytest.mark.parametrize("version", ["0.3.0", "0.3.1", "0.4.0", "1.0.0"])
def test_result_and_settings_same_as_go(version: str, chain: Chain, go_plugin_dir: str) -> None:
    chain.version = version
    chain.bridge["cniVersion"] = version
    ctr, prev = chain.attach()
    before = snapshot(ctr)
    ours = chain.call("ADD", chain.tuning(prev), ctr)
    assert ours.rc == 0, ours.out
    ours_state = snapshot(ctr)
    assert chain.call("DEL", chain.tuning(ours.out), ctr).rc == 0
    assert snapshot(ctr) == before

    theirs = chain.call("ADD", chain.tuning(prev), ctr, plugin_dir=go_plugin_dir)
    assert theirs.rc == 0, theirs.out
    theirs_state = snapshot(ctr)
    assert normalize(ours.out) == normalize(theirs.out)
    assert ours.out["interfaces"][2]["mac"] == theirs.out["interfaces"][2]["mac"] == TUNING["mac"]
    assert {**ours_state, "txqlen": None} == {**theirs_state, "txqlen": None}, "Go 1.1.1 has no txQLen"
    assert chain.call("DEL", chain.tuning(theirs.out), ctr, plugin_dir=go_plugin_dir).rc == 0
    chain.detach(ctr)


def test_spec_1_1_0_and_legacy_0_2_0(chain: Chain) -> None:
    for version in ("1.1.0", "0.2.0"):
        chain.version = version
        chain.bridge["cniVersion"] = version
        ctr, prev = chain.attach()
        before = snapshot(ctr)
        added = chain.call("ADD", chain.tuning(prev), ctr)
        assert added.rc == 0, added.out
        assert added.out["cniVersion"] == version
        assert snapshot(ctr) == expected_after(before, TUNING)
        assert chain.call("DEL", chain.tuning(None), ctr).rc == 0
        assert snapshot(ctr) == before
        chain.detach(ctr)


def test_mac_precedence_same_as_go(chain: Chain, go_plugin_dir: str) -> None:
    """config mac < CNI_ARGS MAC < runtimeConfig.mac < args.cni.mac, as in Go."""
    ctr, prev = chain.attach()
    cases = [
        ({}, "IgnoreUnknown=1;MAC=c2:00:00:00:00:01", "c2:00:00:00:00:01"),
        ({"runtimeConfig": {"mac": "c2:00:00:00:00:02"}}, "IgnoreUnknown=1;MAC=c2:00:00:00:00:01", "c2:00:00:00:00:02"),
        (
            {"runtimeConfig": {"mac": "c2:00:00:00:00:02"}, "args": {"cni": {"mac": "c2:00:00:00:00:03"}}},
            "MAC=c2:00:00:00:00:01",
            "c2:00:00:00:00:03",
        ),
    ]
    for changes, cni_args, wanted in cases:
        config = {**chain.tuning(prev), **changes}
        for plugin_dir in (chain.node.plugin_dir, go_plugin_dir):
            added = chain.call("ADD", config, ctr, plugin_dir=plugin_dir, cni_args=cni_args)
            assert added.rc == 0, added.out
            assert added.out["interfaces"][2]["mac"] == wanted, plugin_dir
            assert snapshot(ctr)["mac"] == wanted
            assert chain.call("DEL", config, ctr, plugin_dir=plugin_dir, cni_args=cni_args).rc == 0
    chain.detach(ctr)


def test_sysctl_only_and_args_overrides(chain: Chain) -> None:
    ctr, prev = chain.attach()
    before = snapshot(ctr)
    config = {
        "cniVersion": "1.0.0",
        "name": "tunenet",
        "type": "tuning",
        "dataDir": str(chain.state_dir),
        "sysctl": {"net.core.somaxconn": "1000"},
        "args": {"cni": {"sysctl": {"net.core.somaxconn": "2000"}, "mtu": 1300}},
        "prevResult": prev,
    }
    added = chain.call("ADD", config, ctr)
    assert added.rc == 0, added.out
    now = snapshot(ctr)
    assert now["net.core.somaxconn"] == "2000" and now["mtu"] == 1300
    assert added.out == prev, "without a MAC the result is prevResult unchanged"
    assert chain.call("DEL", config, ctr).rc == 0
    assert snapshot(ctr) == before
    chain.detach(ctr)


# -- bad input: code 7, nothing changed ----------------------------------------


def exec_raw(chain: Chain, ctr: str, stdin: bytes) -> Call:
    """Run our tuning ADD with stdin bytes as given (a dict cannot hold a duplicated key)."""
    env = {
        "CNI_COMMAND": "ADD",
        "CNI_CONTAINERID": f"cid-{ctr}",
        "CNI_NETNS": chain.node.pool.path(ctr),
        "CNI_IFNAME": "eth0",
        "CNI_PATH": chain.node.plugin_dir,
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
    }
    argv = ["ip", "netns", "exec", chain.node.name, os.path.join(chain.node.plugin_dir, "tuning")]
    proc = subprocess.run(argv, input=stdin, env=env, capture_output=True, check=False, timeout=60)
    return Call(proc.returncode, json.loads(proc.stdout) if proc.stdout.strip() else None, proc.stderr.decode())


BAD: list[tuple[dict[str, Any], str]] = [
    ({"sysctl": {**SYSCTLS, "kernel.hostname": "evil"}}, 'invalid net sysctl key: "kernel/hostname"'),
    ({"sysctl": {"net": "1"}}, 'invalid net sysctl key: "net"'),
    ({"sysctl": {**SYSCTLS, "net.ipv4.no_such_sysctl": "1"}}, "sysctl net.ipv4.no_such_sysctl does not exist"),
    ({"sysctl": {"net.core.somaxconn": 1024}}, "sysctl.net.core.somaxconn: expected a string, got int"),
    ({"sysctl": ["net.core.somaxconn"]}, "sysctl: expected an object"),
    ({"mtu": "big"}, "mtu: expected an integer"),
    ({"mtu": -1}, "mtu: must be at least 0"),
    ({"promisc": "yes"}, "promisc: expected true or false"),
    ({"allmulti": 1}, "allmulti: expected true or false"),
    ({"txQLen": -5}, "txQLen: must be between 0 and"),
    ({"mac": "not-a-mac"}, "invalid args not-a-mac for MAC addr"),
    ({"args": {"cni": {"mtu": "x"}}}, "args.cni.mtu: expected an integer"),
    ({"runtimeConfig": {"mac": 7}}, "runtimeConfig.mac: expected a string"),
]


@pytest.mark.parametrize(("changes", "message"), BAD, ids=[m.split(":")[0][:40] for _, m in BAD])
def test_bad_input_is_code_7_and_changes_nothing(changes: dict[str, Any], message: str, chain: Chain) -> None:
    ctr, prev = chain.attach()
    before = snapshot(ctr)
    failed = chain.call("ADD", chain.tuning(prev, **changes), ctr)
    assert failed.rc == 1
    assert failed.error["code"] == 7, failed.error
    assert message in failed.error["msg"]
    assert snapshot(ctr) == before
    assert chain.state_files() == []
    chain.detach(ctr)


def test_duplicated_sysctl_keys_are_refused(chain: Chain) -> None:
    ctr, prev = chain.attach()
    before = snapshot(ctr)
    config = chain.tuning(prev)
    text = json.dumps(config).replace(
        '"sysctl": {', '"sysctl": {"net.ipv4.conf.all.arp_ignore": "1", "net.ipv4.conf.all.arp_ignore": "0", ', 1
    )
    failed = exec_raw(chain, ctr, text.encode())
    assert failed.rc == 1
    assert failed.error["code"] == 7
    assert failed.error["msg"] == "duplicated sysctl keys are not allowed"
    assert snapshot(ctr) == before
    assert chain.state_files() == []
    chain.detach(ctr)


def test_missing_prev_result_is_refused(chain: Chain) -> None:
    ctr, _ = chain.attach()
    failed = chain.call("ADD", chain.tuning(None), ctr)
    assert failed.rc == 1 and failed.error["code"] == 7
    assert failed.error["msg"] == "Required prevResult missing"
    chain.detach(ctr)


def test_allowlist(chain: Chain, allowlist: Path) -> None:
    ctr, prev = chain.attach()
    before = snapshot(ctr)
    allowlist.write_text("^net\\.ipv4\\.conf\\.other\\.[a-z_]*$\n\n")
    refused = chain.call("ADD", chain.tuning(prev), ctr)
    assert refused.rc == 1 and refused.error["code"] == 7
    assert refused.error["msg"].startswith("Sysctl net.")
    assert (
        "is not allowed. Only the following sysctls are allowed: [^net\\.ipv4\\.conf\\.other\\.[a-z_]*$]"
        in (refused.error["msg"])
    )
    assert snapshot(ctr) == before
    assert chain.state_files() == []

    allowlist.write_text("^net\\.ipv4\\.conf\\.(all|IFNAME)\\.[a-z_]*$\nnet\\.core\\.somaxconn\n")
    added = chain.call("ADD", chain.tuning(prev), ctr)
    assert added.rc == 0, added.out
    assert snapshot(ctr) == expected_after(before, TUNING)
    assert chain.call("DEL", chain.tuning(None), ctr).rc == 0
    assert snapshot(ctr) == before
    chain.detach(ctr)


def test_kernel_refusal_midway_puts_back_what_changed(chain: Chain) -> None:
    """The sysctls, MAC and flags are set before the MTU the kernel refuses; all of them are undone."""
    ctr, prev = chain.attach()
    before = snapshot(ctr)
    failed = chain.call("ADD", chain.tuning(prev, mtu=100000), ctr)
    assert failed.rc == 1
    assert failed.error["code"] == 999
    assert "mtu" in failed.error["msg"]
    assert snapshot(ctr) == before
    assert chain.state_files() == []
    chain.detach(ctr)


# -- CHECK, DEL edge cases, GC -------------------------------------------------


def test_check_notices_drift(chain: Chain) -> None:
    ctr, prev = chain.attach()
    added = chain.call("ADD", chain.tuning(prev), ctr)
    assert added.rc == 0, added.out
    run("ip", "link", "set", "eth0", "mtu", "1450", netns=ctr)
    drifted = chain.call("CHECK", chain.tuning(added.out), ctr)
    assert drifted.rc == 1
    assert drifted.error["msg"] == "Error: Tuning configured MTU of eth0 is 1400, current value is 1450"
    run("ip", "link", "set", "eth0", "mtu", "1400", netns=ctr)
    run("sh", "-c", "echo 0 > /proc/sys/net/core/somaxconn", netns=ctr)
    drifted = chain.call("CHECK", chain.tuning(added.out), ctr)
    assert drifted.rc == 1
    assert "Tuning configured value of /proc/sys/net/core/somaxconn is 1024, current value is 0" in drifted.error["msg"]
    assert chain.call("DEL", chain.tuning(None), ctr).rc == 0
    chain.detach(ctr)


def test_del_without_namespace_or_interface_succeeds_and_forgets(chain: Chain) -> None:
    ctr, prev = chain.attach()
    assert chain.call("ADD", chain.tuning(prev), ctr).rc == 0
    assert len(chain.state_files()) == 1
    chain.detach(ctr)  # the veth is gone now
    assert chain.call("DEL", chain.tuning(None), ctr).rc == 0
    assert chain.state_files() == []

    other, prev = chain.attach()
    assert chain.call("ADD", chain.tuning(prev), other).rc == 0
    chain.detach(other)
    run("ip", "netns", "del", other)
    gone = chain.call("DEL", chain.tuning(None), other)
    assert gone.rc == 0, gone.out
    assert chain.state_files() == []
    assert not os.path.exists(chain.node.pool.path(other)), "DEL never creates a namespace"


def test_gc_removes_only_this_networks_stale_files(chain: Chain) -> None:
    keep, keep_prev = chain.attach()
    stale, stale_prev = chain.attach()
    assert chain.call("ADD", chain.tuning(keep_prev), keep).rc == 0
    assert chain.call("ADD", chain.tuning(stale_prev), stale).rc == 0
    foreign = chain.state_dir / "cid-elsewhere_net1.json"
    foreign.write_text(json.dumps({"mtu": 1500, "network": "othernet"}))
    go_written = chain.state_dir / "cid-go_eth0.json"
    go_written.write_text(json.dumps({"mtu": 1500}))
    gc_config = {**chain.tuning(None), "cniVersion": "1.1.0"}

    assert chain.call("GC", gc_config, keep).rc == 0
    assert len(chain.state_files()) == 4, "no valid-attachments list: nothing is known to be stale"
    listed = {**gc_config, "cni.dev/valid-attachments": [{"containerID": f"cid-{keep}", "ifname": "eth0"}]}
    collected = chain.call("GC", listed, keep)
    assert collected.rc == 0, collected.out
    assert chain.state_files() == sorted([f"cid-{keep}_eth0.json", foreign.name, go_written.name])
    assert chain.call("DEL", chain.tuning(None), keep).rc == 0
    foreign.unlink()
    go_written.unlink()
    for ctr in (keep, stale):
        chain.detach(ctr)


# -- damaged saved values (regressions of tests/campaigns/corruption.py) -----------------------

NO_DAC = ("setpriv", "--bounding-set=-dac_override,-dac_read_search", "--")


@pytest.mark.parametrize("how", ["directory", "symlink", "garbage"])
def test_add_replaces_damaged_state_and_del_restores_the_live_values(chain: Chain, tmp_path: Path, how: str) -> None:
    """A directory at the path failed ADD and every DEL with a 999 IsADirectoryError; a symlink was read through."""
    ctr, prev = chain.attach()
    before = snapshot(ctr)
    chain.state_dir.mkdir(parents=True)
    path = chain.state_dir / f"cid-{ctr}_eth0.json"
    outside = tmp_path / "outside.json"
    outside.write_text(json.dumps({"mtu": 9000, "sysctl": {"net/core/somaxconn": "7"}}))
    if how == "directory":
        path.mkdir()
        (path / "out").symlink_to(outside)
    elif how == "symlink":
        path.symlink_to(outside)
    else:
        path.write_bytes(b"\x00{garbage")
    added = chain.call("ADD", chain.tuning(prev), ctr)
    assert added.rc == 0, added.out
    assert path.is_file() and not path.is_symlink()
    assert chain.call("DEL", chain.tuning(added.out), ctr).rc == 0
    assert snapshot(ctr) == before, "the live values were saved, not the symlink's"
    assert chain.state_files() == []
    assert json.loads(outside.read_text())["mtu"] == 9000
    chain.detach(ctr)


@pytest.mark.parametrize("how", ["directory", "unreadable", "symlink"])
def test_del_removes_unreadable_state_and_succeeds(chain: Chain, tmp_path: Path, how: str) -> None:
    """DEL failed (999 IsADirectoryError / PermissionError) and kept failing: a stuck attachment."""
    ctr, prev = chain.attach()
    added = chain.call("ADD", chain.tuning(prev), ctr)
    assert added.rc == 0, added.out
    (path,) = chain.state_dir.iterdir()
    outside = tmp_path / "outside"
    outside.write_text("canary")
    if how == "unreadable":
        path.chmod(0)
    else:
        path.unlink()
        path.mkdir() if how == "directory" else path.symlink_to(outside)
    env_prefix = NO_DAC if how == "unreadable" else ()
    argv = [*env_prefix, os.path.join(chain.node.plugin_dir, "tuning")]
    proc = subprocess.run(
        ["ip", "netns", "exec", chain.node.name, *argv],
        input=json.dumps(chain.tuning(added.out)).encode(),
        env={
            "CNI_COMMAND": "DEL",
            "CNI_CONTAINERID": f"cid-{ctr}",
            "CNI_NETNS": chain.node.pool.path(ctr),
            "CNI_IFNAME": "eth0",
            "CNI_PATH": chain.node.plugin_dir,
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        },
        capture_output=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout
    assert b"nothing to restore" in proc.stderr
    assert chain.state_files() == []
    assert outside.read_text() == "canary"
    chain.detach(ctr)


def test_del_restores_what_a_damaged_file_still_says(chain: Chain) -> None:
    ctr, prev = chain.attach()
    before = snapshot(ctr)
    added = chain.call("ADD", chain.tuning(prev), ctr)
    assert added.rc == 0, added.out
    (path,) = chain.state_dir.iterdir()
    saved = json.loads(path.read_text())
    path.write_text(json.dumps({**saved, "mtu": "big", "promisc": []}))
    deleted = chain.call("DEL", chain.tuning(added.out), ctr)
    assert deleted.rc == 0, deleted.out
    assert "dropped" in deleted.stderr
    after = snapshot(ctr)
    assert {k: after[k] for k in SYSCTLS} == {k: before[k] for k in SYSCTLS}, "the sysctls were readable"
    assert (after["mac"], after["txqlen"]) == (before["mac"], before["txqlen"])
    assert chain.state_files() == [], "a damaged file is not kept for a retry"
    chain.detach(ctr)
