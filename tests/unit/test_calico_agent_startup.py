"""calico-node's start-up: its environment, the operator Installation, and its writes to a datastore.

The datastore is pycni's in-memory one (same semantics as etcd); what is
written is read back through the resource client and the IPAM, as the CNI
plugin and other nodes would read it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator

import pytest

from pycni.datastore import open_datastore
from pycni.datastore.protocol import Datastore
from pycni.fabric.calico.calculation import TunnelNeeds, default_vtep_mac
from pycni.fabric.calico.config import ConfigError
from pycni.fabric.calico.installation import parse_installation
from pycni.fabric.calico.ipam_store import IPAM, AutoAssignArgs
from pycni.fabric.calico.model import new_resource
from pycni.fabric.calico.nodeconfig import (
    AutodetectMethod,
    default_pool,
    from_environment,
    parse_autodetection,
    parse_duration,
)
from pycni.fabric.calico.resources import ResourceClient
from pycni.fabric.calico.startup import (
    TunnelAddresses,
    ensure_felix_defaults,
    ensure_pools,
    register_node,
    tunnel_handle,
)
from pycni.fabric.calico.syncer import Syncer
from tests.support.calico_cluster import SEED_INSTALLATION as SEED

# -- the environment ------------------------------------------------------------------


def test_default_pool_is_calico_nodes_ipip_always_192_168() -> None:
    spec = default_pool({}).spec
    assert spec["cidr"] == "192.168.0.0/16" and spec["ipipMode"] == "Always" and spec["vxlanMode"] == "Never"
    assert spec["natOutgoing"] is True and spec["blockSize"] == 26 and spec["nodeSelector"] == "all()"
    assert default_pool({}).name == "default-ipv4-ippool"


def test_default_pool_from_the_manifest_variables() -> None:
    env = {
        "CALICO_IPV4POOL_CIDR": "10.244.0.0/16",
        "CALICO_IPV4POOL_BLOCK_SIZE": "24",
        "CALICO_IPV4POOL_VXLAN": "Always",
        "CALICO_IPV4POOL_IPIP": "Never",
        "CALICO_IPV4POOL_NAT_OUTGOING": "false",
        "CALICO_IPV4POOL_NODE_SELECTOR": "zone == 'a'",
        "CALICO_IPV4POOL_DISABLE_BGP_EXPORT": "true",
    }
    spec = default_pool(env).spec
    assert (spec["cidr"], spec["blockSize"], spec["vxlanMode"], spec["ipipMode"]) == (
        "10.244.0.0/16",
        24,
        "Always",
        "Never",
    )
    assert "natOutgoing" not in spec and spec["nodeSelector"] == "zone == 'a'" and spec["disableBGPExport"] is True


@pytest.mark.parametrize(
    "text,mode", [("cross-subnet", "CrossSubnet"), ("CrossSubnet", "CrossSubnet"), ("off", "Never")]
)
def test_encapsulation_spellings(text: str, mode: str) -> None:
    assert default_pool({"CALICO_IPV4POOL_VXLAN": text, "CALICO_IPV4POOL_IPIP": "Never"}).spec["vxlanMode"] == mode


@pytest.mark.parametrize(
    "env,fragment",
    [
        ({"CALICO_IPV4POOL_IPIP": "Always", "CALICO_IPV4POOL_VXLAN": "Always"}, "both enabled"),
        ({"CALICO_IPV4POOL_VXLAN": "sometimes"}, "CALICO_IPV4POOL_VXLAN='sometimes': use Always, CrossSubnet or Never"),
        ({"CALICO_IPV4POOL_CIDR": "10.244.0.0/33"}, "is not an IPv4 CIDR"),
        ({"CALICO_IPV4POOL_BLOCK_SIZE": "big"}, "is not a number"),
        ({"CALICO_IPV4POOL_NAT_OUTGOING": "perhaps"}, "is not a boolean"),
    ],
)
def test_bad_pool_variables_say_what_to_fix(env: dict[str, str], fragment: str) -> None:
    with pytest.raises(ConfigError) as caught:
        default_pool(env)
    assert fragment in caught.value.msg and caught.value.code == 7


def test_environment_with_flags_winning() -> None:
    env = {
        "NODENAME": "Worker-1 ",
        "IP": "autodetect",
        "IP_AUTODETECTION_METHOD": "can-reach=198.51.100.1",
        "AS": "64513",
        "CALICO_NETWORKING_BACKEND": "vxlan",
        "FELIX_VXLANMTU": "1400",
        "FELIX_ROUTEREFRESHINTERVAL": "1m30s",
        "NO_DEFAULT_POOLS": "true",
        "CALICO_ROUTER_ID": "hash",
    }
    config = from_environment(env)
    assert config.router_id == "hash"
    assert config.nodename == "worker-1" and config.ip == "autodetect" and config.as_number == 64513
    assert config.autodetection == AutodetectMethod("can-reach", ("198.51.100.1",))
    assert config.backend == "vxlan" and config.default_pools == ()
    assert config.felix_env == {"vxlanMTU": 1400, "routeRefreshInterval": 90.0}
    flagged = from_environment(env, nodename="other", backend="none", ip="198.51.100.20/24", as_number="1.10")
    assert (flagged.nodename, flagged.backend, flagged.ip, flagged.as_number) == (
        "other",
        "none",
        "198.51.100.20/24",
        65546,
    )


def test_nodename_falls_back_to_hostname() -> None:
    assert from_environment({"HOSTNAME": "Box"}).nodename == "box"


@pytest.mark.parametrize(
    "text,kind,values",
    [
        ("", "first-found", ()),
        ("first-found", "first-found", ()),
        ("interface=eth.*,ens3", "interface", ("eth.*", "ens3")),
        ("skip-interface=docker0", "skip-interface", ("docker0",)),
        ("cidr=198.51.100.0/24", "cidr", ("198.51.100.0/24",)),
    ],
)
def test_autodetection_methods(text: str, kind: str, values: tuple[str, ...]) -> None:
    assert parse_autodetection(text) == AutodetectMethod(kind, values)


@pytest.mark.parametrize(
    "text,fragment",
    [
        ("kubernetes-internal-ip", "needs the Kubernetes API"),
        ("magic", "use first-found"),
        ("interface=(", "not a regular expression"),
        ("cidr=nope", "not an IPv4 CIDR"),
        ("interface=", "needs a value"),
    ],
)
def test_bad_autodetection_methods(text: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment.replace("(", r"\(")):
        parse_autodetection(text)


@pytest.mark.parametrize(
    "variable,value",
    [("IP", "300.1.1.1"), ("CALICO_NETWORKING_BACKEND", "flannel"), ("AS", "0"), ("CALICO_ROUTER_ID", "router-1")],
)
def test_bad_node_variables(variable: str, value: str) -> None:
    with pytest.raises(ConfigError, match=variable):
        from_environment({variable: value})


def test_durations() -> None:
    assert parse_duration("x", "90s") == 90 and parse_duration("x", "1m30s") == 90 and parse_duration("x", "2") == 2
    assert parse_duration("x", "500ms") == 0.5
    with pytest.raises(ConfigError):
        parse_duration("x", "soon")


# -- the Installation -------------------------------------------------------------------


def test_the_seed_installation_gives_its_pool() -> None:
    installation = parse_installation(SEED)
    (pool,) = installation.pools
    assert pool.name == "default-ipv4-ippool"
    assert pool.spec == {
        "cidr": "10.244.0.0/16",
        "vxlanMode": "CrossSubnet",
        "ipipMode": "Never",
        "natOutgoing": True,
        "blockSize": 26,
        "nodeSelector": "all()",
    }
    assert installation.backend == "bird" and installation.mtu is None and installation.autodetection is None


def test_installation_options() -> None:
    text = """
apiVersion: operator.tigera.io/v1
kind: Installation
metadata: {name: default}
spec:
  calicoNetwork:
    bgp: Disabled
    mtu: 1410
    nodeAddressAutodetectionV4: {interface: "eth.*"}
    ipPools:
    - {cidr: 10.10.0.0/16, encapsulation: VXLAN, natOutgoing: Disabled}
    - {name: second, cidr: 10.20.0.0/16, encapsulation: None, blockSize: 28}
"""
    installation = parse_installation(text)
    first, second = installation.pools
    assert (first.name, first.spec["vxlanMode"], first.spec.get("natOutgoing", False)) == (
        "default-ipv4-ippool",
        "Always",
        False,
    )
    assert (second.name, second.spec["vxlanMode"], second.spec["ipipMode"]) == ("second", "Never", "Never")
    assert second.spec["blockSize"] == 28
    assert (
        installation.backend == "vxlan" and installation.mtu == 1410 and installation.autodetection == "interface=eth.*"
    )


@pytest.mark.parametrize(
    "text,fragment",
    [
        ("kind: APIServer\napiVersion: operator.tigera.io/v1\n", "has no 'kind: Installation'"),
        ("kind: Installation\napiVersion: v1\n", "apiVersion must be operator.tigera.io/v1"),
        (
            "kind: Installation\napiVersion: operator.tigera.io/v1\n"
            "spec: {calicoNetwork: {ipPools: [{encapsulation: GRE}]}}",
            "encapsulation 'GRE'",
        ),
        ("kind: Installation\napiVersion: operator.tigera.io/v1\nspec: {calicoNetwork: {bgp: Maybe}}", "bgp 'Maybe'"),
        (": :\n  - [", "is not YAML"),
        ("kind: Installation\napiVersion: operator.tigera.io/v1\nspec: [a]", "spec must be a mapping"),
        (
            "kind: Installation\napiVersion: operator.tigera.io/v1\n"
            "spec: {calicoNetwork: {ipPools: [{blockSize: big}]}}",
            "blockSize 'big' must be a number",
        ),
    ],
)
def test_bad_installations(text: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        parse_installation(text)


# -- writes to the datastore -----------------------------------------------------------------


@pytest.fixture
def store() -> Iterator[Datastore]:
    store = open_datastore(memory=True)
    yield store
    store.close()


ADDRESS = ipaddress.IPv4Interface("198.51.100.11/24")


def test_register_creates_then_refreshes_keeping_other_fields(store: Datastore) -> None:
    client = ResourceClient(store)
    assert register_node(client, "node1", ADDRESS, None) is True
    node = client.get("Node", "node1")
    assert node.spec == {"bgp": {"ipv4Address": "198.51.100.11/24"}}
    node.spec["ipv4VXLANTunnelAddr"] = "10.244.0.1"
    client.update(node)
    revision = client.get("Node", "node1").resource_version
    assert register_node(client, "node1", ADDRESS, None) is False
    assert client.get("Node", "node1").resource_version == revision, "an unchanged Node is not written"
    register_node(client, "node1", ipaddress.IPv4Interface("198.51.100.21/24"), 64600)
    spec = client.get("Node", "node1").spec
    assert spec["bgp"] == {"ipv4Address": "198.51.100.21/24", "asNumber": 64600}
    assert spec["ipv4VXLANTunnelAddr"] == "10.244.0.1"


def test_another_node_with_our_address_is_refused(store: Datastore) -> None:
    client = ResourceClient(store)
    register_node(client, "node1", ADDRESS, None)
    with pytest.raises(ConfigError, match=r"Calico node 'node1' is already using the IPv4 address 198\.51\.100\.11"):
        register_node(client, "node2", ADDRESS, None)


def test_default_pools_only_when_the_cluster_has_no_ipv4_pool(store: Datastore) -> None:
    client = ResourceClient(store)
    pools = parse_installation(SEED).pools
    assert ensure_pools(client, pools) == ["default-ipv4-ippool"]
    assert ensure_pools(client, pools) == []
    assert ensure_pools(client, (default_pool({"CALICO_IPV4POOL_CIDR": "10.99.0.0/16"}),)) == []
    (pool,) = client.list("IPPool")[0]
    assert pool.spec["vxlanMode"] == "CrossSubnet" and pool.spec["natOutgoing"] is True


def test_felix_defaults_are_written_once(store: Datastore) -> None:
    client = ResourceClient(store)
    assert ensure_felix_defaults(client) is True
    assert client.get("FelixConfiguration", "default").spec == {"reportingInterval": "0s", "logSeverityScreen": "Info"}
    assert ensure_felix_defaults(client) is False


# -- tunnel addresses ------------------------------------------------------------------------


def _cluster(store: Datastore, mode: str = "Always") -> tuple[ResourceClient, IPAM, Syncer]:
    client = ResourceClient(store)
    client.create(new_resource("IPPool", "p", {"cidr": "10.244.0.0/16", "vxlanMode": mode, "ipipMode": "Never"}))
    register_node(client, "node1", ADDRESS, None)
    syncer = Syncer(store, lambda: None)
    return client, IPAM(store, client), syncer


def test_a_vxlan_pool_gets_the_node_a_tunnel_address_and_a_mac(store: Datastore) -> None:
    client, ipam, syncer = _cluster(store)
    tunnels = TunnelAddresses(client, ipam, "node1")
    assert syncer.resync_now()
    state = syncer.snapshot()
    assert state is not None
    assert tunnels.reconcile(state, TunnelNeeds(vxlan=True)) is True
    spec = client.get("Node", "node1").spec
    address = ipaddress.ip_address(spec["ipv4VXLANTunnelAddr"])
    assert spec["vxlanTunnelMACAddr"] == default_vtep_mac("node1")
    assert ipam.attributes_for(address).handle == tunnel_handle("vxlan", "node1")
    assert ipam.attributes_for(address).secondary == {"node": "node1", "type": "vxlanTunnelAddress"}
    syncer.resync_now()
    again = syncer.snapshot()
    assert again is not None
    assert tunnels.reconcile(again, TunnelNeeds(vxlan=True)) is False, "a held address is kept, nothing written"
    # A restarted agent verifies the published address with IPAM and keeps it.
    assert TunnelAddresses(client, ipam, "node1").reconcile(again, TunnelNeeds(vxlan=True)) is False


def test_a_published_address_ipam_gave_to_someone_else_is_replaced(store: Datastore) -> None:
    client, ipam, syncer = _cluster(store)
    v4, _ = ipam.auto_assign(AutoAssignArgs(hostname="node1", num4=1, handle_id="k8s-pod-network.pod"))
    assert v4 is not None
    taken = str(v4.ips[0].ip)
    node = client.get("Node", "node1")
    node.spec["ipv4VXLANTunnelAddr"] = taken
    client.update(node)
    syncer.resync_now()
    state = syncer.snapshot()
    assert state is not None
    TunnelAddresses(client, ipam, "node1").reconcile(state, TunnelNeeds(vxlan=True))
    published = client.get("Node", "node1").spec["ipv4VXLANTunnelAddr"]
    assert published != taken
    assert ipam.attributes_for(ipaddress.ip_address(taken)).handle == "k8s-pod-network.pod"


def test_without_a_vxlan_pool_the_address_and_mac_are_released(store: Datastore) -> None:
    client, ipam, syncer = _cluster(store)
    tunnels = TunnelAddresses(client, ipam, "node1")
    syncer.resync_now()
    state = syncer.snapshot()
    assert state is not None
    tunnels.reconcile(state, TunnelNeeds(vxlan=True))
    address = client.get("Node", "node1").spec["ipv4VXLANTunnelAddr"]
    syncer.resync_now()
    state = syncer.snapshot()
    assert state is not None
    assert tunnels.reconcile(state, TunnelNeeds()) is True
    spec = client.get("Node", "node1").spec
    assert "ipv4VXLANTunnelAddr" not in spec and "vxlanTunnelMACAddr" not in spec
    assert ipam.handle(tunnel_handle("vxlan", "node1")) is None
    assert all(str(a) != address for b in ipam.list_blocks() for a, _ in b.in_use())


def test_an_ipip_pool_publishes_the_ipip_tunnel_address(store: Datastore) -> None:
    client = ResourceClient(store)
    client.create(new_resource("IPPool", "p", {"cidr": "10.244.0.0/16", "ipipMode": "Always", "vxlanMode": "Never"}))
    register_node(client, "node1", ADDRESS, None)
    syncer = Syncer(store, lambda: None)
    syncer.resync_now()
    state = syncer.snapshot()
    assert state is not None
    TunnelAddresses(client, IPAM(store, client), "node1").reconcile(state, TunnelNeeds(ipip=True))
    bgp = client.get("Node", "node1").spec["bgp"]
    assert bgp["ipv4Address"] == "198.51.100.11/24" and ipaddress.ip_address(bgp["ipv4IPIPTunnelAddr"])
