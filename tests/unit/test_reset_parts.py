"""pycni reset: paths, the listing, caches, agent detection and the command line, without the kernel."""

from __future__ import annotations

import json
import os
from pathlib import Path

from pycni.cli import reset as cli
from pycni.reset import agents, files, items
from pycni.reset.conflists import Network
from pycni.reset.paths import Paths


def test_defaults_come_from_pycnis_modules_and_reroot_together(tmp_path: Path) -> None:
    paths = Paths()
    assert (paths.cni_conf_dir, paths.results_dir, paths.flannel_run_dir) == (
        "/etc/cni/net.d",
        "/var/lib/cni/results",
        "/run/flannel",
    )
    assert (paths.calico_run_dir, paths.installed_record) == ("/var/run/calico", "/var/lib/pycni/installed.json")
    moved = paths.rerooted(str(tmp_path))
    assert moved.cni_conf_dir == f"{tmp_path}/etc/cni/net.d"
    assert moved.calico_pid_file == f"{tmp_path}/var/run/calico/calico-node.pid"
    assert moved.netns_dir == "/run/netns"


def test_cli_paths_state_root_then_overrides(tmp_path: Path) -> None:
    opts = cli.parser().parse_args(["--state-root", str(tmp_path), "--cni-conf-dir", "/c", "--network", "cbr0"])
    paths = cli.paths_of(opts)
    assert paths.cni_conf_dir == "/c"
    assert paths.flannel_run_dir == f"{tmp_path}/run/flannel"
    assert opts.network == "cbr0" and not opts.yes


def test_listing_is_grouped_one_line_per_object() -> None:
    found: list[items.Item] = [
        items.PathItem(items.STATE, "/run/flannel", "flanneld's state directory", path="/run/flannel"),
        items.LinkItem(items.LINKS, "cni0", "bridge of pycni network cbr0", index=3),
        items.TableItem(items.NFTABLES, "ip flannel-ipv4", "flanneld's table", family="ip", table="flannel-ipv4"),
    ]
    assert items.render(found, "would remove") == [
        "nftables:",
        "  would remove table ip flannel-ipv4  (flanneld's table)",
        "links:",
        "  would remove link cni0  (bridge of pycni network cbr0)",
        "agent and plugin state:",
        "  would remove path /run/flannel  (flanneld's state directory)",
    ]
    assert items.render([], "removed") == []


def test_caches_only_of_pycni_networks(tmp_path: Path) -> None:
    results = tmp_path / "results"
    results.mkdir()
    (results / "cbr0-abc-eth0").write_text(json.dumps({"kind": "cniCacheV1", "networkName": "cbr0"}))
    (results / "mine-abc-eth0").write_text(json.dumps({"kind": "cniCacheV1", "networkName": "mine"}))
    (results / "cbr0-damaged-eth0").write_text("{")
    found = files.caches(str(results), ["cbr0"])
    assert sorted(i.name for i in found) == [str(results / "cbr0-abc-eth0"), str(results / "cbr0-damaged-eth0")]


def test_node_state_is_this_namespaces_keyed_files(tmp_path: Path) -> None:
    paths = Paths().rerooted(str(tmp_path))
    os.makedirs(paths.nft_lock_dir)
    os.makedirs(os.path.join(paths.attachments_dir, "cni_plugins_masquerade-42"))
    os.makedirs(os.path.join(paths.attachments_dir, "cni_plugins_masquerade-43"))
    for name in ("nft-pycni_firewall-42.lock", "nft-pycni_firewall-420.lock", "nft-x-43.lock"):
        Path(paths.nft_lock_dir, name).touch()
    os.makedirs(paths.flannel_run_dir)
    found = [i.name for i in files.node_state(paths, 42)]
    assert found == [
        paths.flannel_run_dir,
        f"{paths.nft_lock_dir}/nft-pycni_firewall-42.lock",
        f"{paths.attachments_dir}/cni_plugins_masquerade-42",
    ]


def test_network_state_and_dedupe(tmp_path: Path) -> None:
    run = tmp_path / "run"
    (run / "sub").mkdir(parents=True)
    (run / "sub" / "subnet.env").write_text("x")
    net = Network("cbr0", "/c", "why", ("flannel",), state_files=(str(run / "sub" / "subnet.env"), "/missing"))
    listed = [*files.network_state([net]), items.PathItem(items.STATE, str(run), "dir", path=str(run))]
    assert [i.name for i in files.dedupe(listed)] == [str(run)]


def test_agent_of_recognises_pycni_agents_only() -> None:
    assert agents.agent_of(["/v/bin/python", "/v/bin/pycni", "calico-node", "--nodename", "n1"]) == "calico-node"
    assert agents.agent_of(["python", "-m", "pycni.cli.entry", "flanneld"]) == "flanneld"
    assert agents.agent_of(["/usr/bin/flanneld", "--iface", "eth0"]) is None
    assert agents.agent_of(["/v/bin/pycni", "add", "cbr0"]) is None


def test_routes_are_shown_as_ip_route_shows_them() -> None:
    import ipaddress

    from pycni.net.route import RTN_BLACKHOLE, RouteMsg
    from pycni.reset.tables import route_text

    blackhole = RouteMsg(dst=ipaddress.ip_network("10.244.16.64/26"), type=RTN_BLACKHOLE, proto=112)
    assert route_text(blackhole, {}) == "blackhole 10.244.16.64/26 table 254"
    via = RouteMsg(
        dst=ipaddress.ip_network("10.244.5.0/24"), oif=3, gateway=ipaddress.ip_address("10.244.5.0"), onlink=True
    )
    assert route_text(via, {3: "flannel.1"}) == "10.244.5.0/24 via 10.244.5.0 dev flannel.1 onlink table 254"


def test_fabric_devices_are_known_by_name_and_kind() -> None:
    from pycni.reset.links import fabric_reason

    assert fabric_reason("flannel.1", "vxlan") == "flanneld's vxlan backend device"
    assert fabric_reason("flannel.4096", "vxlan") is not None
    assert fabric_reason("flannel0", "tun") == "flanneld's udp backend device"
    assert fabric_reason("vxlan.calico", "vxlan") == "calico-node's VXLAN device"
    assert fabric_reason("tunl0", "ipip") == "calico-node's IPIP device"
    assert fabric_reason("flannel.1", "bridge") is None, "a user's bridge of that name is not flanneld's"
    assert fabric_reason("flannel.x", "vxlan") is None
    assert fabric_reason("vxlan.user", "vxlan") is None
