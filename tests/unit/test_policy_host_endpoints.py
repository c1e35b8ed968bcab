"""Host endpoints in the evaluator: failsafe ports, default deny, GlobalNetworkPolicy, profiles, sets, the overlay.

Expectations follow Felix (``felix/rules/static.go``: failsafe chains before
host endpoint dispatch, VXLAN/IPIP from the cluster's hosts let through;
``endpoints.go``: a host endpoint's chains are a workload's, tiers then
profiles then drop) and Calico's docs on host endpoints (only
GlobalNetworkPolicy selects one; default deny apart from failsafe ports;
expectedIPs are members of the selector sets). Hosts on the x/y/z model.
"""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from pycni.datastore.memory import MemoryDatastore
from pycni.fabric.calico.model import decode_resource, new_resource
from pycni.fabric.calico.policy_state import PREFIXES, PolicyInputs, build
from pycni.fabric.calico.resources import ResourceClient
from pycni.policy.cluster import ClusterState, PolicyObject
from pycni.policy.endpoints import FAILSAFE_INBOUND, FailsafePort, HostEndpoint, failsafe_ports
from pycni.policy.errors import PolicyError
from pycni.policy.evaluate import Reason, Verdict
from pycni.policy.match import Packet
from pycni.policy.matrix import NetpolModel

MODEL = NetpolModel()
EXTERNAL = "203.0.113.7"
NODE1, NODE2 = str(MODEL.node_ip("node-1")), str(MODEL.node_ip("node-2"))


def calico(kind: str, name: str, spec: dict[str, Any], **meta: Any) -> dict[str, Any]:
    return {"apiVersion": "projectcalico.org/v3", "kind": kind, "metadata": {"name": name, **meta}, "spec": spec}


def hep(name: str = "node-1-eth0", node: str = "node-1", **spec: Any) -> dict[str, Any]:
    return calico("HostEndpoint", name, {"node": node, "interfaceName": "eth0", **spec}, labels={"role": "web"})


@pytest.fixture
def state() -> ClusterState:
    state = ClusterState()
    objects: list[PolicyObject] = [*MODEL.namespace_objects(), *MODEL.pod_objects(), *MODEL.hosts()]
    for item in objects:
        state.apply(item)
    state.apply(hep())
    return state


def check(state: ClusterState, src: str, dst: str, port: int = 8080, protocol: str = "TCP", **kw: Any) -> Verdict:
    src = str(MODEL.ip_of(src)) if "/" in src else src
    dst = str(MODEL.ip_of(dst)) if "/" in dst else dst
    return state.evaluator(**kw).evaluate(Packet.make(src, dst, protocol, port))


def test_a_host_endpoint_with_no_policy_denies_all_but_the_failsafe_ports(state: ClusterState) -> None:
    denied = check(state, EXTERNAL, NODE1)
    assert not denied.allowed and denied.ingress is not None and denied.ingress.reason is Reason.NO_PROFILE
    assert denied.ingress.endpoint == "hep:node-1-eth0"
    ssh = check(state, EXTERNAL, NODE1, 22)
    assert ssh.allowed and ssh.ingress is not None and ssh.ingress.reason is Reason.FAILSAFE
    assert "failsafe inbound port tcp:22" in ssh.describe()
    assert check(state, EXTERNAL, NODE1, 68, "UDP").allowed
    assert not check(state, EXTERNAL, NODE1, 53, "UDP").allowed, "udp:53 is failsafe outbound only"
    assert not check(state, NODE1, EXTERNAL, 9000).allowed, "egress from the host is denied too"
    dns = check(state, NODE1, EXTERNAL, 53, "UDP")
    assert dns.allowed and dns.egress is not None and dns.egress.reason is Reason.FAILSAFE
    assert check(state, NODE1, EXTERNAL, 2379).allowed, "etcd stays reachable"
    assert check(state, EXTERNAL, NODE2).allowed, "node-2 has no host endpoint"


def test_no_failsafe_ports_configured_means_none(state: ClusterState) -> None:
    assert not check(state, EXTERNAL, NODE1, 22, failsafe_inbound=()).allowed
    only = (FailsafePort("tcp", 22, ipaddress.ip_network("198.51.100.0/24")),)
    assert check(state, "198.51.100.9", NODE1, 22, failsafe_inbound=only).allowed
    assert not check(state, EXTERNAL, NODE1, 22, failsafe_inbound=only).allowed, "the net limits the failsafe port"


def test_a_global_policy_selecting_the_host_endpoint_opens_its_port(state: ClusterState) -> None:
    state.apply(
        calico(
            "GlobalNetworkPolicy",
            "web-ingress",
            {
                "selector": "role == 'web'",
                "types": ["Ingress"],
                "ingress": [
                    {"action": "Allow", "protocol": "TCP", "source": {"nets": ["203.0.113.0/24"]},
                     "destination": {"ports": [8080]}},
                ],
            },
        )
    )  # fmt: skip
    allowed = check(state, EXTERNAL, NODE1)
    assert allowed.allowed and allowed.ingress is not None
    assert (allowed.ingress.reason, allowed.ingress.policy) == (Reason.RULE, "web-ingress")
    assert not check(state, "198.51.100.50", NODE1).allowed, "another source: end of tier default"
    assert not check(state, NODE1, EXTERNAL, 9000).allowed, "Ingress only: egress still has no policy and no profile"


def test_namespaced_and_kubernetes_policies_never_select_a_host_endpoint(state: ClusterState) -> None:
    state.apply(
        calico("NetworkPolicy", "all-in-x", {"selector": "all()", "ingress": [{"action": "Allow"}]}, namespace="x")
    )
    verdict = check(state, EXTERNAL, NODE1)
    assert not verdict.allowed and verdict.ingress is not None and verdict.ingress.reason is Reason.NO_PROFILE


def test_a_profile_on_the_host_endpoint_decides_when_no_policy_does(state: ClusterState) -> None:
    state.apply(calico("Profile", "allow-all", {"ingress": [{"action": "Allow"}], "egress": [{"action": "Allow"}]}))
    state.apply(hep(profiles=["allow-all"]))
    verdict = check(state, EXTERNAL, NODE1)
    assert verdict.allowed and verdict.ingress is not None and verdict.ingress.reason is Reason.PROFILE
    assert check(state, NODE1, EXTERNAL, 9000).allowed


def test_pods_and_their_own_host_are_not_host_endpoint_traffic_but_remote_pods_are(state: ClusterState) -> None:
    local = next(pod for pod in MODEL.pod_strings() if MODEL.node_of(pod) == "node-1")
    remote = next(pod for pod in MODEL.pod_strings() if MODEL.node_of(pod) == "node-2")
    assert check(state, local, NODE1).allowed, "pod to its own node: DefaultEndpointToHostAction (Accept)"
    assert check(state, NODE1, local).allowed, "host to its own pod is not policed"
    from_remote = check(state, remote, NODE1)
    assert not from_remote.allowed and from_remote.ingress is not None
    assert from_remote.ingress.endpoint == "hep:node-1-eth0"


def test_the_overlay_between_cluster_hosts_passes_before_policy(state: ClusterState) -> None:
    vxlan = check(state, NODE2, NODE1, 4789, "UDP")
    assert vxlan.allowed and vxlan.ingress is not None and vxlan.ingress.reason is Reason.OVERLAY
    assert check(state, NODE1, NODE2, 4789, "UDP").allowed
    assert not check(state, EXTERNAL, NODE1, 4789, "UDP").allowed, "only from the cluster's hosts"
    assert not check(state, NODE2, NODE1, 4789, "UDP", vxlan_port=8472).allowed, "at the configured vxlanPort"
    assert check(state, NODE2, NODE1, 8472, "UDP", vxlan_port=8472).allowed


def test_expected_ips_are_members_of_the_sets_of_selectors_that_match_the_host_endpoint(state: ClusterState) -> None:
    state.apply(calico("Profile", "allow-all", {"ingress": [{"action": "Allow"}], "egress": [{"action": "Allow"}]}))
    state.apply(hep("node-2-eth0", "node-2", expectedIPs=[NODE2], profiles=["allow-all"]))
    state.apply(
        calico(
            "GlobalNetworkPolicy",
            "x-from-web-hosts",
            {
                "selector": "projectcalico.org/namespace == 'x'",
                "types": ["Ingress"],
                "ingress": [{"action": "Allow", "source": {"selector": "role == 'web'"}}],
            },
        )
    )
    target = next(pod for pod in MODEL.pod_strings() if pod.startswith("x/") and MODEL.node_of(pod) == "node-1")
    assert check(state, NODE2, target).allowed, "node-2's expectedIP is in the role == 'web' set"
    assert not check(state, EXTERNAL, target).allowed


def test_where_the_oracle_places_a_host_endpoint_is_where_the_table_polices_it(state: ClusterState) -> None:
    state.apply(hep("node-2-ips-only", "node-2", interfaceName="", expectedIPs=[NODE2]))
    assert check(state, EXTERNAL, NODE2).allowed, "no interface: not enforced, so not policed by the oracle either"
    # A named interface at an expectedIP that is no Node address; node-1's pods reach it as their own node.
    state.apply(hep("node-1-eth1", "node-1", interfaceName="eth1", expectedIPs=["192.0.0.9"]))
    local = next(pod for pod in MODEL.pod_strings() if MODEL.node_of(pod) == "node-1")
    assert check(state, local, "192.0.0.9").allowed, "a pod to its own node comes in on cali*: no host endpoint"
    assert check(state, "192.0.0.9", local).allowed, "the host to its own pod is not policed"
    assert not check(state, EXTERNAL, "192.0.0.9").allowed


def test_defaultendpointtohostaction_return_and_drop(state: ClusterState) -> None:
    local = next(pod for pod in MODEL.pod_strings() if MODEL.node_of(pod) == "node-1")
    assert check(state, local, NODE1, endpoint_to_host="Return").allowed, "Return goes on to the host's own rules"
    dropped = check(state, local, NODE1, endpoint_to_host="Drop")
    assert not dropped.allowed and dropped.egress is not None and dropped.egress.reason is Reason.TO_HOST


def test_a_host_endpoint_needs_a_node_and_an_interface_or_expected_ips() -> None:
    state = ClusterState()
    with pytest.raises(PolicyError, match=r"spec\.node"):
        state.apply(calico("HostEndpoint", "h", {"interfaceName": "eth0"}))
    with pytest.raises(PolicyError, match="interfaceName"):
        state.apply(calico("HostEndpoint", "h", {"node": "n"}))
    with pytest.raises(PolicyError, match="not an interface name"):
        state.apply(calico("HostEndpoint", "h", {"node": "n", "interfaceName": 'eth0" accept'}))
    made = state.apply(calico("HostEndpoint", "h", {"node": "n", "expectedIPs": ["10.0.0.1"]}))
    assert isinstance(made, HostEndpoint) and made.key == "hep:h"


def test_failsafe_ports_are_read_as_felix_configuration_writes_them() -> None:
    assert failsafe_ports(None, FAILSAFE_INBOUND) == FAILSAFE_INBOUND
    assert failsafe_ports([], FAILSAFE_INBOUND) == ()
    read = failsafe_ports([{"protocol": "UDP", "port": 53, "net": "10.0.0.0/8"}, {"port": 22}], ())
    assert [str(p) for p in read] == ["udp:53 (10.0.0.0/8)", "tcp:22"]
    with pytest.raises(ValueError, match=r"\[0\]"):
        failsafe_ports([{"protocol": "icmp", "port": 1}], ())
    # Felix's environment form (PortListParam): a bare port is TCP, IPv6 nets in brackets, empty items skipped.
    env = failsafe_ports("22, udp:68,,tcp:10.0.0.0/8:2379,tcp:[fd00::/8]:22", ())
    assert [str(p) for p in env] == ["tcp:22", "udp:68", "tcp:2379 (10.0.0.0/8)", "tcp:22 (fd00::/8)"]
    assert failsafe_ports("none", FAILSAFE_INBOUND) == ()
    with pytest.raises(ValueError, match="'tcp:ssh' is not"):
        failsafe_ports("tcp:ssh", ())


# -- what the agent reads from the datastore (policy_state.build) ----------------------------------


def stored(*documents: dict[str, Any], felix: dict[str, Any] | None = None) -> PolicyInputs:
    store = MemoryDatastore()
    client = ResourceClient(store)
    client.ensure_initialized("test", "k8s")  # the seeded tiers, as calico-node's start-up makes them
    spec = {"orchestrator": "k8s", "node": "node-1", "pod": "a", "endpoint": "eth0", "interfaceName": "calia",
            "ipNetworks": ["10.244.0.2/32"], "profiles": ["kns.x"]}  # fmt: skip
    client.apply(new_resource("WorkloadEndpoint", "", spec, namespace="x"))
    for document in documents:
        client.apply(decode_resource(document))
    kvs = [kv for prefix in PREFIXES for kv in store.list(prefix)[0]]
    return build(kvs, "node-1", client, felix_env=felix)


def test_the_agent_leaves_out_what_would_stop_it_and_says_why() -> None:
    inputs = stored(
        hep("b-eth0"),
        hep("a-eth0"),  # the same interface: the earlier name wins, as in Felix
        hep("pods-ip", expectedIPs=["10.244.0.2"], interfaceName="eth1"),
        calico("GlobalNetworkPolicy", "nodeports", {"selector": "all()", "preDNAT": True, "applyOnForward": True,
                                                    "ingress": [{"action": "Allow"}], "types": ["Ingress"]}),
    )  # fmt: skip
    assert inputs.host_interfaces == {"eth0": "hep:a-eth0"}
    assert "already a-eth0's" in inputs.problems["HostEndpoint b-eth0"]
    assert "10.244.0.2 is pod x/a's" in inputs.problems["HostEndpoint pods-ip"]
    assert "hep:pods-ip" not in inputs.evaluator().index.host_endpoints, "left out: the rest still evaluates"
    assert "preDNAT policies are not enforced" in inputs.problems["GlobalNetworkPolicy nodeports"]


def test_failsafe_ports_and_the_vxlan_port_come_from_felixconfiguration_and_the_environment() -> None:
    default = calico("FelixConfiguration", "default", {"failsafeInboundHostPorts": [{"protocol": "TCP", "port": 2222}],
                                                       "vxlanPort": 8472})  # fmt: skip
    node = calico("FelixConfiguration", "node.node-1", {"failsafeOutboundHostPorts": []})
    inputs = stored(default, node)
    assert [str(p) for p in inputs.failsafe_inbound] == ["tcp:2222"]
    assert inputs.failsafe_outbound == (), "node.<name> wins over default; [] is none"
    assert inputs.vxlan_port == 8472 and inputs.evaluator().vxlan_port == 8472
    from_env = stored(default, felix={"failsafeInboundHostPorts": "tcp:22,udp:68"})
    assert [str(p) for p in from_env.failsafe_inbound] == ["tcp:22", "udp:68"], "FELIX_ wins over the datastore"
