"""pycni doctor's checks that read only files: CNI configs, host-local reservations, result caches, pod MTUs.

Every fault is planted in a tmp dir in the layout the real writers use
(:class:`~pycni.ipam.store.Store`, :class:`~pycni.runtime.cache.ResultCache`);
a network namespace that is "alive" is this process's own (``/proc/self/ns/net``).
"""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

import pytest

from pycni.doctor import cniconf, host, ipam
from pycni.doctor.context import Network, Node, Options
from pycni.doctor.model import Finding, Status
from pycni.ipam.store import Store
from pycni.reset import conflists as reset_conflists
from pycni.runtime.cache import Attachment, ResultCache
from pycni.spec.result import Result

LIVE_NETNS = "/proc/self/ns/net"


def bridge_net(name: str, data_dir: Path, **extra: object) -> dict[str, object]:
    return {
        "cniVersion": "1.0.0",
        "name": name,
        "plugins": [
            {
                "type": "bridge",
                "bridge": "cni-t0",
                "isGateway": True,
                "ipam": {"type": "host-local", "subnet": "10.77.0.0/24", "dataDir": str(data_dir)},
                **extra,
            }
        ],
    }


@pytest.fixture
def node(tmp_path: Path) -> Node:
    (tmp_path / "net.d").mkdir()
    return Node(
        Options(
            cni_conf_dir=str(tmp_path / "net.d"),
            cni_cache_dir=str(tmp_path / "cache"),
            host_local_dir=str(tmp_path / "networks"),
            subnet_file=str(tmp_path / "subnet.env"),
            calico_mtu_file=str(tmp_path / "calico-mtu"),
        )
    )


def write_conf(node: Node, filename: str, config: object) -> None:
    Path(node.options.cni_conf_dir, filename).write_text(json.dumps(config) if not isinstance(config, str) else config)


def reserve(data_dir: Path, network: str, ip: str, container_id: str) -> None:
    store = Store(network, str(data_dir))
    store.create()
    with store.locked():
        assert store.reserve(ipaddress.ip_address(ip), container_id, "eth0", "0")


def cache(node: Node, network: str, container_id: str, netns: str) -> None:
    result = Result.from_dict({"cniVersion": "1.0.0", "ips": [{"address": "10.77.0.2/24"}]})
    ResultCache(node.options.cni_cache_dir).save(Attachment(container_id, network, "eth0", b"{}", netns), result)


def statuses(findings: list[Finding]) -> list[Status]:
    return [f.status for f in findings]


# -- CNI configs ------------------------------------------------------------------------------


def test_cni_config_ok_names_the_networks(node: Node, tmp_path: Path) -> None:
    write_conf(node, "10-a.conflist", bridge_net("a", tmp_path))
    (finding,) = cniconf.check_cni_config(node)
    assert finding.status is Status.OK and "a" in finding.message


def test_cni_config_fails_on_a_file_a_runtime_cannot_load(node: Node, tmp_path: Path) -> None:
    write_conf(node, "10-a.conflist", bridge_net("a", tmp_path))
    write_conf(node, "20-broken.conflist", '{"name": "b", "plugins": [')
    write_conf(node, "30-nameless.conf", {"type": "bridge"})
    found = cniconf.check_cni_config(node)
    assert statuses(found) == [Status.FAIL, Status.FAIL]
    assert "20-broken.conflist is not JSON" in found[0].message
    assert '30-nameless.conf has no "name"' in found[1].message


def test_cni_config_warns_on_a_network_named_twice(node: Node, tmp_path: Path) -> None:
    write_conf(node, "10-a.conflist", bridge_net("a", tmp_path))
    write_conf(node, "20-a.conflist", bridge_net("a", tmp_path))
    (finding,) = cniconf.check_cni_config(node)
    assert finding.status is Status.WARN and "10-a.conflist" in finding.advice


# -- host-local -------------------------------------------------------------------------------


def test_host_local_ok_when_every_reservation_has_a_live_attachment(node: Node, tmp_path: Path) -> None:
    write_conf(node, "10-a.conflist", bridge_net("a", tmp_path / "hl"))
    reserve(tmp_path / "hl", "a", "10.77.0.2", "c-live")
    cache(node, "a", "c-live", LIVE_NETNS)
    (finding,) = ipam.check_host_local(node)
    assert finding.status is Status.OK and "1 reservation" in finding.message


def test_host_local_warns_on_reservations_nobody_holds(node: Node, tmp_path: Path) -> None:
    write_conf(node, "10-a.conflist", bridge_net("a", tmp_path / "hl"))
    reserve(tmp_path / "hl", "a", "10.77.0.2", "c-live")
    cache(node, "a", "c-live", LIVE_NETNS)
    reserve(tmp_path / "hl", "a", "10.77.0.3", "c-nocache")
    reserve(tmp_path / "hl", "a", "10.77.0.4", "c-gone")
    cache(node, "a", "c-gone", str(tmp_path / "no-such-netns"))
    (tmp_path / "hl" / "a" / "10.77.0.9").write_text("")  # names no container
    (finding,) = ipam.check_host_local(node)
    assert finding.status is Status.WARN
    assert "3 host-local reservation(s)" in finding.message
    assert "10.77.0.3 (c-nocache: no cached result)" in finding.message
    assert f"10.77.0.4 (c-gone: netns {tmp_path / 'no-such-netns'} gone)" in finding.message
    assert "10.77.0.9 (names no container" in finding.message
    assert "10.77.0.2" not in finding.message


def test_host_local_uses_the_default_data_dir_when_the_config_names_none(node: Node) -> None:
    config = bridge_net("d", Path("unused"))
    del config["plugins"][0]["ipam"]["dataDir"]  # type: ignore[index]
    write_conf(node, "10-d.conflist", config)
    reserve(Path(node.options.host_local_dir), "d", "10.77.0.5", "c-nocache")
    (finding,) = ipam.check_host_local(node)
    assert finding.status is Status.WARN and "d 10.77.0.5" in finding.message


# -- result cache -----------------------------------------------------------------------------


def test_result_cache_warns_on_gone_netns_unknown_network_and_damage(node: Node, tmp_path: Path) -> None:
    write_conf(node, "10-a.conflist", bridge_net("a", tmp_path / "hl"))
    cache(node, "a", "c-live", LIVE_NETNS)
    assert statuses(ipam.check_result_cache(node)) == [Status.OK]

    node = Node(node.options)  # facts are read once per run
    placeholder = tmp_path / "netns-unmounted"
    placeholder.write_text("")  # what `ip netns` leaves when the namespace was unmounted
    cache(node, "a", "c-gone", str(placeholder))
    cache(node, "removed-net", "c-other", LIVE_NETNS)
    Path(node.options.cni_cache_dir, "results", "a-c-junk-eth0").write_text("garbage")
    found = ipam.check_result_cache(node)
    assert statuses(found) == [Status.WARN] * 3
    assert "a/c-gone/eth0" in found[0].message and "gone" in found[0].message
    assert "removed-net/c-other/eth0" in found[1].message
    assert "a-c-junk-eth0" in found[2].message


def test_netns_alive_is_a_namespace_not_merely_a_file(tmp_path: Path) -> None:
    assert ipam.netns_alive(LIVE_NETNS)
    (tmp_path / "f").write_text("")
    assert not ipam.netns_alive(str(tmp_path / "f"))
    assert not ipam.netns_alive(str(tmp_path / "missing"))


# -- what the kernel checks read from files -----------------------------------------------------


def net(*plugins: dict[str, object]) -> Network:
    return Network("n", "/p", plugins, reset_conflists.Network("n", "/p", "", ()))


def test_forwarding_networks() -> None:
    assert host.needs_forwarding(net({"type": "bridge", "isGateway": True}))
    assert host.needs_forwarding(net({"type": "bridge", "ipMasq": True}))
    assert not host.needs_forwarding(net({"type": "bridge"}, {"type": "portmap"}))
    assert host.needs_forwarding(net({"type": "ptp"}))
    assert host.needs_forwarding(net({"type": "flannel"}))
    assert not host.needs_forwarding(net({"type": "macvlan"}))


def test_pod_mtus_come_from_configs_subnet_env_and_calico_mtu_file(node: Node, tmp_path: Path) -> None:
    write_conf(node, "10-flannel.conflist", {"cniVersion": "1.0.0", "name": "fl", "plugins": [{"type": "flannel"}]})
    write_conf(node, "11-fl2.conflist", {"name": "fl2", "plugins": [{"type": "flannel", "delegate": {"mtu": 1400}}]})
    write_conf(node, "20-calico.conflist", {"name": "cal", "plugins": [{"type": "calico"}]})
    write_conf(node, "21-calico.conflist", {"name": "cal2", "plugins": [{"type": "calico", "mtu": 1300}]})
    write_conf(node, "30-plain.conflist", bridge_net("plain", tmp_path, mtu=9000))  # not on the overlay
    Path(node.options.subnet_file).write_text(
        "FLANNEL_NETWORK=10.5.0.0/16\nFLANNEL_SUBNET=10.5.1.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n"
    )
    Path(node.options.calico_mtu_file).write_text("1440\n")
    found = {(what, mtu) for what, mtu, _where in host.pod_mtus(node)}
    assert found == {("network fl", 1450), ("network fl2", 1400), ("network cal", 1440), ("network cal2", 1300)}


def test_families_come_from_host_local_ranges_also_of_a_flannel_delegate() -> None:
    v6_range = {"type": "host-local", "ranges": [[{"subnet": "fd00:1::/64"}]]}
    assert host.families(net({"type": "bridge", "ipam": {"type": "host-local", "subnet": "10.1.0.0/24"}})) == {4}
    assert host.families(net({"type": "bridge", "ipam": v6_range})) == {6}
    assert host.families(net({"type": "flannel", "delegate": {"ipam": v6_range}})) == {6}
    assert host.families(net({"type": "ptp", "ipam": {"type": "dhcp"}})) == {4}  # nothing said: IPv4
    assert host.families(net({"type": "ptp", "ipam": {"ranges": [[{"subnet": "bogus"}]]}})) == {4}


def test_host_local_reports_an_unusable_lock_and_leaves_it_alone(node: Node, tmp_path: Path) -> None:
    write_conf(node, "10-a.conflist", bridge_net("a", tmp_path / "hl"))
    reserve(tmp_path / "hl", "a", "10.77.0.2", "c-nocache")
    lock = tmp_path / "hl" / "a" / "lock"
    lock.unlink()
    lock.mkdir()
    (finding,) = ipam.check_host_local(node)
    assert finding.status is Status.WARN and f"{lock} is not a regular file" in finding.message
    assert lock.is_dir()  # doctor only reads
