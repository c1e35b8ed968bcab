"""The policy table's rendering against golden text, and its incremental updates (no root, no kernel).

The golden scripts are what ``nft -f`` is given (tests/integration/test_policy_nft.py
loads the same renderer's output into a kernel and probes it). Regenerate with
``PYCNI_UPDATE_GOLDEN=1`` and review the diff.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Any

import pytest

from pycni.nft import objects
from pycni.nft.fake import FakeRuleset
from pycni.policy import nft_names, nft_render
from pycni.policy.cluster import ClusterState
from pycni.policy.endpoints import Host
from pycni.policy.nft_sets import SetRegistry

GOLDEN = Path(__file__).parent / "golden"
LOCAL = {"cali1a": "x/a", "cali2b": "x/b", "cali3c": "y/c"}


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("PYCNI_UPDATE_GOLDEN"):
        path.write_text(text)
    assert text == path.read_text(), f"{name} changed; rerun with PYCNI_UPDATE_GOLDEN=1 and review"


def pod(namespace: str, name: str, ip: str, labels: dict[str, str], ports: list[dict[str, Any]] | None = None) -> Any:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {"nodeName": "node-1", "containers": [{"name": "c", "ports": ports or []}]},
        "status": {"podIPs": [{"ip": ip}]},
    }


def knp(name: str, namespace: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def calico(kind: str, name: str, spec: dict[str, Any], **metadata: Any) -> dict[str, Any]:
    return {"apiVersion": "projectcalico.org/v3", "kind": kind, "metadata": {"name": name, **metadata}, "spec": spec}


def base_state() -> ClusterState:
    state = ClusterState()
    for namespace in ("x", "y"):
        state.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    state.apply(pod("x", "a", "10.65.0.2", {"app": "a"}))
    state.apply(pod("x", "b", "10.65.0.3", {"app": "b"}, [{"name": "http", "containerPort": 8080}]))
    state.apply(pod("y", "c", "10.65.0.4", {"app": "c"}))
    return state


def kubernetes_state() -> ClusterState:
    state = base_state()
    state.apply(knp("deny", "x", {"podSelector": {}, "policyTypes": ["Ingress"]}))
    state.apply(
        knp(
            "allow-a",
            "x",
            {
                "podSelector": {"matchLabels": {"app": "b"}},
                "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "a"}}}], "ports": [{"port": "http"}]}],
            },
        )
    )
    return state


def tiered_state() -> ClusterState:
    state = base_state()
    state.apply(calico("Tier", "security", {"order": 100, "defaultAction": "Pass"}))
    state.apply(
        calico("GlobalNetworkSet", "infra", {"nets": ["10.99.0.0/24", "10.65.0.0/30"]}, labels={"role": "infra"})
    )
    state.apply(
        calico(
            "GlobalNetworkPolicy",
            "security.guard",
            {
                "tier": "security",
                "order": 10,
                "selector": "app == 'c'",
                "types": ["Egress"],
                "egress": [
                    {"action": "Log", "protocol": "TCP", "destination": {"ports": [9000]}},
                    {"action": "Deny", "protocol": "TCP", "destination": {"ports": [9000, "8000:8100"]}},
                    {"action": "Allow", "destination": {"selector": "role == 'infra'", "notNets": ["10.99.0.7/32"]}},
                    {"action": "Deny", "protocol": "ICMP", "icmp": {"type": 8, "code": 0}},
                    {"action": "Pass"},
                ],
            },
        )
    )
    state.apply(
        calico(
            "NetworkPolicy",
            "dns",
            {
                "order": 50,
                "selector": "all()",
                "ingress": [
                    {
                        "action": "Allow",
                        "protocol": "UDP",
                        "source": {"nets": ["10.65.0.0/16"]},
                        "destination": {"ports": [53]},
                    },
                    {"action": "Deny", "source": {"notSelector": "app == 'a'"}, "destination": {"notPorts": ["http"]}},
                ],
            },
            namespace="y",
        )
    )
    return state


def test_kubernetes_policies_golden() -> None:
    table = nft_render.render(kubernetes_state().evaluator(), LOCAL)
    check_golden("policy_nft_kubernetes.nft", objects.create(table).render())


def test_tiers_pass_log_nets_sets_icmp_golden() -> None:
    table = nft_render.render(tiered_state().evaluator(), LOCAL)
    check_golden("policy_nft_tiers.nft", objects.create(table).render())


def test_the_layout_felix_uses() -> None:
    table = nft_render.render(kubernetes_state().evaluator(), LOCAL)
    assert table.family == "inet" and table.name == "pycni-policy"
    forward = table.chains["forward"]
    assert forward.hook == objects.Hook("filter", "forward", "filter", "accept")
    assert forward.rules[1:3] == ("ct state established,related accept", "ct state invalid drop")
    assert table.chains[nft_names.FROM_DISPATCH].rules[-1] == 'drop comment "Unknown interface"'
    assert table.maps[nft_names.FROM_DISPATCH].elements == {
        '"cali1a"': "goto cali-fw-cali1a",
        '"cali2b"': "goto cali-fw-cali2b",
        '"cali3c"': "goto cali-fw-cali3c",
    }
    # Only the policies some local endpoint uses have chains: deny and allow-a select pods of x only, for ingress.
    policies = sorted(name for name in table.chains if name.startswith(("cali-pi-", "cali-po-")))
    assert policies == ["cali-pi-np/x/knp.default.allow-a", "cali-pi-np/x/knp.default.deny"]
    assert "jump cali-pi-np/x/knp.default.deny" not in " ".join(table.chains["cali-tw-cali3c"].rules)


def test_one_selector_set_shared_by_every_rule_using_it() -> None:
    state = kubernetes_state()
    state.apply(
        knp(
            "allow-a-egress",
            "x",
            {
                "podSelector": {"matchLabels": {"app": "b"}},
                "egress": [{"to": [{"podSelector": {"matchLabels": {"app": "a"}}}]}],
                "policyTypes": ["Egress"],
            },
        )
    )
    table = nft_render.render(state.evaluator(), LOCAL)
    v4 = [name for name in table.sets if name.startswith("cali40s-")]
    assert len(v4) == 1, v4
    users = [c for c in table.chains.values() if any(f"@{v4[0]}" in r for r in c.rules)]
    assert {c.name for c in users} == {"cali-pi-np/x/knp.default.allow-a", "cali-po-np/x/knp.default.allow-a-egress"}


def test_interval_members_are_collapsed() -> None:
    state = tiered_state()
    registry = SetRegistry(state.evaluator().index)
    # role=infra: 10.99.0.0/24 and 10.65.0.0/30, which holds x/a (10.65.0.2) and x/b (10.65.0.3) already.
    state.set_pod_labels("x/a", {"role": "infra"})
    registry = SetRegistry(state.evaluator().index)
    from pycni.policy.selector import parse

    assert registry.selector_members(parse("role == 'infra'"), 4) == {"10.65.0.0/30", "10.99.0.0/24"}
    assert registry.selector_members(parse("app == 'b' || app == 'c'"), 4) == {"10.65.0.3", "10.65.0.4"}
    assert registry.selector_members(parse("app == 'b' || app == 'c'"), 6) == frozenset()


def test_unknown_and_foreign_interfaces_are_left_out() -> None:
    table = nft_render.render(kubernetes_state().evaluator(), {"cali9": "x/nobody", "eth7": "x/a", "cali1a": "x/a"})
    assert set(table.maps[nft_names.FROM_DISPATCH].elements) == {'"cali1a"'}
    assert "cali-fw-cali9" not in table.chains


def test_endpoint_to_host_action() -> None:
    options = nft_render.Options(endpoint_to_host="Drop")
    table = nft_render.render(kubernetes_state().evaluator(), LOCAL, options)
    assert table.chains[nft_names.WL_TO_HOST].rules[-1].startswith("drop ")
    with pytest.raises(ValueError, match="DefaultEndpointToHostAction"):
        nft_render.render(kubernetes_state().evaluator(), LOCAL, nft_render.Options(endpoint_to_host="Reject"))


def test_long_and_odd_names_are_hashed_within_nft_limits() -> None:
    long = "p" * 253
    assert len(nft_names.limited("cali-pi-", f"np/{'n' * 63}/{long}")) <= objects.NAME_MAX
    hashed = nft_names.limited("cali-tw-", "odd name!")
    assert objects.NAME.match(hashed) and hashed.startswith("cali-tw-odd_name_")
    assert nft_names.limited("cali-tw-", "cali12") == "cali-tw-cali12"


# -- incremental updates -------------------------------------------------------------------


def applied(before: objects.Table, after: objects.Table) -> tuple[objects.Transaction, FakeRuleset]:
    fake = FakeRuleset()
    fake.apply(objects.create(before))
    tx = objects.diff(before, after)
    fake.apply(tx)
    assert fake.table(after.family, after.name) == after
    return tx, fake


def test_a_relabel_changes_set_elements_only() -> None:
    state = kubernetes_state()
    before = nft_render.render(state.evaluator(), LOCAL)
    state.apply(pod("x", "d", "10.65.0.9", {"app": "a"}))  # another app=a pod of x, on another node
    state.set_pod_labels("x/a", {"app": "z"})
    after = nft_render.render(state.evaluator(), LOCAL)
    tx, _ = applied(before, after)
    name = next(n for n in after.sets if n.startswith("cali40s-"))
    assert tx.render() == (
        "add table inet pycni-policy\n"
        f"delete element inet pycni-policy {name} {{ 10.65.0.2 }}\n"
        f"add element inet pycni-policy {name} {{ 10.65.0.9 }}\n"
    )


def test_a_policy_change_refills_that_chain_only() -> None:
    state = kubernetes_state()
    before = nft_render.render(state.evaluator(), LOCAL)
    state.apply(
        knp(
            "allow-a",
            "x",
            {
                "podSelector": {"matchLabels": {"app": "b"}},
                "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "a"}}}], "ports": [{"port": 81}]}],
            },
        )
    )
    after = nft_render.render(state.evaluator(), LOCAL)
    tx, _ = applied(before, after)
    text = tx.render()
    assert "flush chain inet pycni-policy cali-pi-np/x/knp.default.allow-a\n" in text
    assert [op.name for op in tx.ops if op.verb == "flush"] == ["cali-pi-np/x/knp.default.allow-a"]
    assert "delete set" in text  # the named-port sets nobody uses any more
    assert "table inet pycni-policy\n" not in text.replace("add table inet pycni-policy\n", "")


def test_a_new_pod_and_a_removed_pod() -> None:
    state = kubernetes_state()
    before = nft_render.render(state.evaluator(), LOCAL)
    state.apply(pod("x", "e", "10.65.0.5", {"app": "e"}))
    local = {**LOCAL, "cali5e": "x/e"}
    del local["cali3c"]
    after = nft_render.render(state.evaluator(), local)
    tx, _ = applied(before, after)
    flushed = {op.name for op in tx.ops if op.verb == "flush"}
    assert flushed == {"cali-fw-cali3c", "cali-tw-cali3c", "cali-pri-kns.y", "cali-pro-kns.y"} | {
        "cali-pri-ksa.y.default",
        "cali-pro-ksa.y.default",
    }
    assert 'delete element inet pycni-policy cali-from-wl-dispatch { "cali3c" : goto cali-fw-cali3c }' in tx.render()
    assert 'add element inet pycni-policy cali-to-wl-dispatch { "cali5e" : goto cali-tw-cali5e }' in tx.render()


def test_nothing_changed_writes_nothing_but_the_table_declaration() -> None:
    table = nft_render.render(tiered_state().evaluator(), LOCAL)
    assert objects.diff(table, table).render() == "add table inet pycni-policy\n"


def host_endpoint_state() -> ClusterState:
    state = base_state()
    state.apply(Host("node-1", (ipaddress.ip_address("10.99.0.1"),)))
    state.apply(Host("node-2", (ipaddress.ip_address("10.99.0.2"),)))
    spec = {"node": "node-1", "interfaceName": "eth0", "expectedIPs": ["10.99.0.1"]}
    state.apply(calico("HostEndpoint", "node-1-eth0", spec, labels={"host": "node-1"}))
    state.apply(
        calico(
            "GlobalNetworkPolicy",
            "host-ssh-and-web",
            {
                "selector": "host == 'node-1'",
                "ingress": [{"action": "Allow", "protocol": "TCP", "destination": {"ports": [80]}}],
                "egress": [{"action": "Allow", "destination": {"selector": "app == 'c'"}}],
            },
        )
    )
    return state


def test_host_endpoints_golden() -> None:
    table = nft_render.render(host_endpoint_state().evaluator(), LOCAL, host_interfaces={"eth0": "hep:node-1-eth0"})
    check_golden("policy_nft_host_endpoints.nft", objects.create(table).render())
    assert table.chains["output"].hook == objects.Hook("filter", "output", "filter", "accept")
    fh = table.chains["cali-fh-eth0"].rules
    assert fh[:3] == ("ct state established,related accept", "ct state invalid drop", "jump cali-failsafe-in")
    assert "jump cali-pi-gnp/host-ssh-and-web" in " ".join(fh)
    assert fh[-1] == 'drop comment "Drop if no profiles matched"'
    assert table.maps[nft_names.FROM_HEP_DISPATCH].elements == {'"eth0"': "goto cali-fh-eth0"}
    assert table.sets[nft_names.ALL_HOSTS].elements == {"10.99.0.1", "10.99.0.2"}
    assert table.chains[nft_names.FAILSAFE_OUT].rules == (
        "tcp dport { 179, 2379, 2380, 5473, 6443, 6666, 6667 } accept",
        "udp dport { 53, 67 } accept",
    )


def test_a_host_endpoint_of_all_interfaces_catches_every_host_interface_but_pods_and_lo() -> None:
    state = host_endpoint_state()
    state.apply(calico("HostEndpoint", "node-1-all", {"node": "node-1", "interfaceName": "*"}))
    table = nft_render.render(state.evaluator(), LOCAL, host_interfaces={"*": "hep:node-1-all"})
    catch_all = nft_names.host_endpoint_chain("*", "ingress")
    assert catch_all == "cali-fh-any-interface-at-all"
    assert table.chains["input"].rules[-1] == f"meta nfproto ipv4 goto {catch_all}", "IPv4 only"
    assert 'iifname "lo" accept' in table.chains["input"].rules
    assert table.chains["output"].rules[0].startswith('oifname "cali*" accept')
    assert table.maps[nft_names.FROM_HEP_DISPATCH].elements == {}


def test_the_overlay_rule_follows_the_vxlan_port() -> None:
    evaluator = host_endpoint_state().evaluator(vxlan_port=8472)
    table = nft_render.render(evaluator, LOCAL, host_interfaces={"eth0": "hep:node-1-eth0"})
    assert "udp dport 8472 ip saddr @cali40all-hosts-net accept" in " ".join(table.chains["cali-fh-eth0"].rules)


def test_no_host_endpoint_no_host_chains() -> None:
    table = nft_render.render(kubernetes_state().evaluator(), LOCAL, host_interfaces={})
    assert "output" not in table.chains and nft_names.FAILSAFE_IN not in table.chains
    assert table.chains["input"].rules == ('iifname "cali*" jump cali-wl-to-host',)
