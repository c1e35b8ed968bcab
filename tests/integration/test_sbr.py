"""pycni's sbr plugin in real namespaces: after pycni's bridge through the runtime, and next to Go's sbr.

Kernel state is compared as ``ip rule`` / ``ip route show table all`` text
(local tables left out), which is what a user would look at.
"""

from __future__ import annotations

import json
import os
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_bridge import with_data_dir
from tests.support.cni import Call, exec_plugin, normalize
from tests.support.netns import NetnsPool, run

BRIDGE: dict[str, Any] = {
    "type": "bridge",
    "bridge": "sbr0",
    "isDefaultGateway": True,
    "ipam": {"type": "host-local", "subnet": "10.42.0.0/24"},
}


def routing(ctr: str) -> str:
    """Rules of both families and every non-local route, as text."""
    parts = [
        run("ip", "-4", "rule", netns=ctr).stdout,
        run("ip", "-6", "rule", netns=ctr).stdout,
        run("ip", "-4", "route", "show", "table", "all", netns=ctr).stdout,
        run("ip", "-6", "route", "show", "table", "all", netns=ctr).stdout,
    ]
    return "".join(line + "\n" for part in parts for line in part.splitlines() if "table local" not in line)


def pinged(ctr: str, target: str, source: str = "") -> bool:
    argv = ["busybox", "ping", "-c1", "-W2", *(["-I", source] if source else []), target]
    return run(*argv, netns=ctr, check=False).returncode == 0


def pycni(node: str, verb: str, ctr: str, pycni_bin: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    argv = ["ip", "netns", "exec", node, pycni_bin, verb, "sbrnet", f"/run/netns/{ctr}"]
    return subprocess.run(argv, env=env, capture_output=True, text=True, check=False, timeout=120)


def runtime_env(tmp_path: Path, plugin_dir: str, sbr: dict[str, Any]) -> dict[str, str]:
    conf_dir = tmp_path / "net.d"
    conf_dir.mkdir(exist_ok=True)
    bridge = with_data_dir(BRIDGE, tmp_path / "ipam")
    conflist = {"cniVersion": "1.0.0", "name": "sbrnet", "plugins": [bridge, {"type": "sbr", **sbr}]}
    (conf_dir / "sbr.conflist").write_text(json.dumps(conflist))
    return {**os.environ, "CNI_PATH": plugin_dir, "NETCONFPATH": str(conf_dir), "PYCNI_CACHE_DIR": str(tmp_path)}


def test_chain_through_pycni_moves_routes_into_table_100(
    netns: NetnsPool, pycni_plugin_dir: str, pycni_bin: str, tmp_path: Path
) -> None:
    node, ctr = netns.new("sbrnode"), netns.new("sbrctr")
    env = runtime_env(tmp_path, pycni_plugin_dir, {})
    added = pycni(node, "add", ctr, pycni_bin, env)
    assert added.returncode == 0, added.stderr
    assert json.loads(added.stdout)["ips"][0]["address"] == "10.42.0.2/24"

    rules = run("ip", "rule", netns=ctr).stdout
    assert "32765:\tfrom 10.42.0.2 lookup 100" in rules
    table = run("ip", "route", "show", "table", "100", netns=ctr).stdout
    assert "default via 10.42.0.1 dev eth0" in table
    assert "10.42.0.0/24 dev eth0 proto kernel scope link src 10.42.0.2" in table
    assert "eth0" not in run("ip", "route", "show", "table", "main", netns=ctr).stdout, "moved, not copied"
    assert pinged(ctr, "10.42.0.1", source="10.42.0.2"), "traffic from the address is routed by table 100"
    # CHECK of the whole chain would fail in bridge (its default route left the main table, as in Go),
    # so sbr's own CHECK is called with the chain's result.
    result = json.loads(added.stdout)
    assert sbr(pycni_plugin_dir, "CHECK", ctr, prev=result).rc == 0
    run("ip", "rule", "del", "from", "10.42.0.2", "lookup", "100", netns=ctr)
    drifted = sbr(pycni_plugin_dir, "CHECK", ctr, prev=result)
    assert drifted.rc == 1 and drifted.error["msg"] == "sbr: no rule from 10.42.0.2 in the container"
    run("ip", "rule", "add", "from", "10.42.0.2", "lookup", "100", netns=ctr)

    deleted = pycni(node, "del", ctr, pycni_bin, env)
    assert deleted.returncode == 0, deleted.stderr
    assert "10.42.0.2" not in run("ip", "rule", netns=ctr).stdout
    assert run("ip", "route", "show", "table", "all", netns=ctr).stdout.count("eth0") == 0


def test_source_hints_and_static_gateway(
    netns: NetnsPool, pycni_plugin_dir: str, pycni_bin: str, tmp_path: Path
) -> None:
    node, ctr = netns.new("sbrnode"), netns.new("sbrctr")
    env = runtime_env(tmp_path, pycni_plugin_dir, {"addSourceHints": True, "gateways": ["10.42.0.254"]})
    added = pycni(node, "add", ctr, pycni_bin, env)
    assert added.returncode == 0, added.stderr
    assert "default via 10.42.0.254 dev eth0" in run("ip", "route", "show", "table", "100", netns=ctr).stdout
    main = run("ip", "route", "show", "table", "main", netns=ctr).stdout
    assert "10.42.0.0/24 dev eth0 scope link src 10.42.0.2" in main, "the subnet route stays, with the hint"
    assert "default" not in main, "the gateway route leaves the main table"
    assert pinged(ctr, "10.42.0.1"), "destination routing works without a source address"
    assert pycni(node, "del", ctr, pycni_bin, env).returncode == 0


# -- next to Go's sbr, on identically prepared namespaces ------------------------


def prepared(pool: NetnsPool, label: str, ifnames: tuple[str, ...] = ("eth0",)) -> str:
    """A container with veths ``ifnames`` (10.7.N.2/24, fd00:7:N::2/64), default and extra routes."""
    ctr = pool.new(label)
    for n, ifname in enumerate(ifnames):
        run("ip", "link", "add", ifname, "type", "veth", "peer", "name", f"peer{n}", netns=ctr)
        run("ip", "link", "set", f"peer{n}", "up", netns=ctr)
        run("ip", "addr", "add", f"10.7.{n}.2/24", "dev", ifname, netns=ctr)
        run("ip", "addr", "add", f"fd00:7:{n}::2/64", "dev", ifname, "nodad", netns=ctr)
        run("ip", "link", "set", ifname, "up", netns=ctr)
        run("ip", "route", "add", f"10.99.{n}.0/24", "via", f"10.7.{n}.5", netns=ctr)
    run("ip", "route", "add", "default", "via", "10.7.0.1", netns=ctr)
    run("ip", "-6", "route", "add", "default", "via", "fd00:7:0::1", netns=ctr)
    return ctr


def prev_result(ctr: str, n: int = 0, ifname: str = "eth0") -> dict[str, Any]:
    return {
        "cniVersion": "1.0.0",
        "interfaces": [{"name": "lo0"}, {"name": ifname, "sandbox": f"/run/netns/{ctr}"}],
        "ips": [
            {"address": f"10.7.{n}.2/24", "gateway": f"10.7.{n}.1", "interface": 1},
            {"address": f"fd00:7:{n}::2/64", "gateway": f"fd00:7:{n}::1", "interface": 1},
            {"address": "10.8.0.9/24", "interface": 0},
        ],
    }


def sbr(
    plugin_dir: str,
    command: str,
    ctr: str,
    ifname: str = "eth0",
    n: int = 0,
    prev: dict[str, Any] | None = None,
    **keys: Any,
) -> Call:
    config: dict[str, Any] = {"cniVersion": "1.0.0", "name": "sbrnet", "type": "sbr", **keys}
    if command != "DEL":
        config["prevResult"] = prev or prev_result(ctr, n, ifname)
    return exec_plugin(
        os.path.join(plugin_dir, "sbr"), command, config, netns=f"/run/netns/{ctr}", cni_path=plugin_dir, ifname=ifname
    )


def test_same_rules_and_routes_as_go(netns: NetnsPool, pycni_plugin_dir: str, go_plugin_dir: str) -> None:
    ours_ctr, go_ctr = prepared(netns, "ours"), prepared(netns, "go")
    ours = sbr(pycni_plugin_dir, "ADD", ours_ctr)
    theirs = sbr(go_plugin_dir, "ADD", go_ctr)
    assert ours.rc == 0, ours.out
    assert theirs.rc == 0, theirs.out
    assert normalize(ours.out) == normalize(theirs.out)
    after = routing(ours_ctr)
    assert after == routing(go_ctr)
    assert "from 10.7.0.2 lookup 100" in after and "from fd00:7::2 lookup 101" in after
    assert "10.8.0.9" not in after, "an address of another interface gets no rule"
    for line in ("default via 10.7.0.1 dev eth0 table 100", "10.99.0.0/24 via 10.7.0.5 dev eth0 table 100"):
        assert line in after

    assert sbr(pycni_plugin_dir, "DEL", ours_ctr).rc == 0
    assert sbr(go_plugin_dir, "DEL", go_ctr).rc == 0
    ours_rules = run("ip", "rule", netns=ours_ctr).stdout + run("ip", "-6", "rule", netns=ours_ctr).stdout
    assert ours_rules == run("ip", "rule", netns=go_ctr).stdout + run("ip", "-6", "rule", netns=go_ctr).stdout
    assert "10.7.0.2" not in ours_rules and "fd00:7::2" not in ours_rules
    assert "table 10" not in routing(ours_ctr), "pycni also empties the tables it filled (Go leaves them)"
    assert "table 100" in routing(go_ctr)


def test_given_table_adds_only_rules(netns: NetnsPool, pycni_plugin_dir: str) -> None:
    """``table`` (newer than Debian's Go 1.1.1): rules to that table, no route moved; DEL removes the rules."""
    ctr = prepared(netns, "table")
    before = routing(ctr)
    assert sbr(pycni_plugin_dir, "ADD", ctr, table=500).rc == 0
    after = routing(ctr)
    assert "from 10.7.0.2 lookup 500" in after and "from fd00:7::2 lookup 500" in after
    assert [line for line in after.splitlines() if "lookup" not in line] == [
        line for line in before.splitlines() if "lookup" not in line
    ], "routes stay where they were"
    assert sbr(pycni_plugin_dir, "CHECK", ctr, table=500).rc == 0
    assert sbr(pycni_plugin_dir, "CHECK", ctr, table=501).rc == 1
    assert sbr(pycni_plugin_dir, "DEL", ctr, table=500).rc == 0
    assert routing(ctr) == before


def test_static_gateways_win(netns: NetnsPool, pycni_plugin_dir: str) -> None:
    ctr = prepared(netns, "gw")
    assert sbr(pycni_plugin_dir, "ADD", ctr, gateways=["10.7.0.254", "fd00:7::fe"]).rc == 0
    after = routing(ctr)
    assert "default via 10.7.0.254 dev eth0 table 100" in after
    assert "default via fd00:7::fe dev eth0 table 101" in after
    assert "default via 10.7.0.1" not in after
    assert sbr(pycni_plugin_dir, "DEL", ctr).rc == 0


def test_parallel_attachments_take_distinct_tables(netns: NetnsPool, pycni_plugin_dir: str) -> None:
    """Both ADDs run at once; the namespace lock makes them pick tables one after the other."""
    ctr = prepared(netns, "two", ("eth0", "net1"))
    with ThreadPoolExecutor(max_workers=2) as pool:
        calls = list(pool.map(lambda a: sbr(pycni_plugin_dir, "ADD", ctr, a[0], a[1]), [("eth0", 0), ("net1", 1)]))
    assert [c.rc for c in calls] == [0, 0], [c.out for c in calls]
    rules = run("ip", "rule", netns=ctr).stdout
    tables = sorted(int(line.split("lookup ")[1]) for line in rules.splitlines() if "from 10.7." in line)
    assert len(tables) == 2 and tables[0] != tables[1] and min(tables) >= 100
    for ifname in ("eth0", "net1"):
        assert sbr(pycni_plugin_dir, "DEL", ctr, ifname).rc == 0
    assert "from 10.7." not in run("ip", "rule", netns=ctr).stdout


def test_retried_add_reuses_its_table(netns: NetnsPool, pycni_plugin_dir: str) -> None:
    ctr = prepared(netns, "retry")
    assert sbr(pycni_plugin_dir, "ADD", ctr).rc == 0
    first = routing(ctr)
    assert sbr(pycni_plugin_dir, "ADD", ctr).rc == 0
    assert routing(ctr) == first
    assert sbr(pycni_plugin_dir, "DEL", ctr).rc == 0


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ({"gateways": ["not-an-ip"]}, "invalid static gateway IP address: not-an-ip"),
        ({"gateways": ["10.7.0.1", "10.7.0.254"]}, "gateways list contains multiple IPv4 addresses"),
        ({"gateways": ["10.7.0.1", "fd00::1", "10.7.0.3"]}, "cannot contain more than 2 entries"),
        ({"gateways": "10.7.0.1"}, "gateways: expected a list"),
        ({"table": "main"}, "table: expected an integer"),
        ({"addSourceHints": "yes"}, "addSourceHints: expected true or false"),
    ],
)
def test_bad_config_is_code_7_and_changes_nothing(
    keys: dict[str, Any], message: str, netns: NetnsPool, pycni_plugin_dir: str
) -> None:
    ctr = prepared(netns, "bad")
    before = routing(ctr)
    failed = sbr(pycni_plugin_dir, "ADD", ctr, **keys)
    assert failed.rc == 1
    assert failed.error["code"] == 7
    assert message in failed.error["msg"]
    assert routing(ctr) == before


def test_not_chained_and_missing_namespace(netns: NetnsPool, pycni_plugin_dir: str) -> None:
    ctr = prepared(netns, "edge")
    config = {"cniVersion": "1.0.0", "name": "sbrnet", "type": "sbr"}
    alone = exec_plugin(
        os.path.join(pycni_plugin_dir, "sbr"), "ADD", config, netns=f"/run/netns/{ctr}", cni_path=pycni_plugin_dir
    )
    assert alone.rc == 1 and alone.error["code"] == 7
    assert alone.error["msg"] == "This plugin must be called as chained plugin"
    ghost = "/run/netns/pyt-sbr-never-existed"
    gone = exec_plugin(os.path.join(pycni_plugin_dir, "sbr"), "DEL", config, netns=ghost, cni_path=pycni_plugin_dir)
    assert gone.rc == 0, gone.out
    assert not os.path.exists(ghost), "DEL never creates the namespace file it would lock"
