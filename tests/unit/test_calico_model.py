"""Calico's v3 resources: decoding as calicoctl does, validation naming fields, defaults, Go's JSON bytes.

Expected JSON follows Go's ``json.Marshal`` of the Go structs (field order,
omitempty, ``creationTimestamp: null``, whole floats without a fraction).
"""

from __future__ import annotations

import json

import pytest

from pycni.fabric.calico import gojson
from pycni.fabric.calico.errors import DecodeError, ValidationError
from pycni.fabric.calico.model import (
    BGPDefaults,
    FelixSettings,
    IPPoolInfo,
    NodeInfo,
    apply_defaults,
    decode_resource,
    dump_json,
    dump_yaml,
    load_manifest,
    new_resource,
    to_json,
    validate_resource,
)

# The seed's operator Installation pool (blockSize 26, 10.244.0.0/16, VXLANCrossSubnet, natOutgoing Enabled,
# nodeSelector all()) as the IPPool the operator writes.
SEED_POOL = """\
apiVersion: projectcalico.org/v3
kind: IPPool
metadata:
  name: default-ipv4-ippool
spec:
  blockSize: 26
  cidr: 10.244.0.0/16
  ipipMode: Never
  vxlanMode: CrossSubnet
  natOutgoing: true
  nodeSelector: all()
"""


def pool(**spec: object) -> dict[str, object]:
    return {"apiVersion": "projectcalico.org/v3", "kind": "IPPool", "metadata": {"name": "p"}, "spec": spec}


def test_seed_pool_defaults_and_exact_json() -> None:
    (resource,) = load_manifest(SEED_POOL)
    validate_resource(resource)
    apply_defaults(resource)
    assert to_json(resource) == (
        '{"kind":"IPPool","apiVersion":"projectcalico.org/v3","metadata":{"name":"default-ipv4-ippool",'
        '"creationTimestamp":null},"spec":{"cidr":"10.244.0.0/16","vxlanMode":"CrossSubnet","ipipMode":"Never",'
        '"natOutgoing":true,"blockSize":26,"nodeSelector":"all()","allowedUses":["Workload","Tunnel"],'
        '"assignmentMode":"Automatic"}}'
    )
    info = IPPoolInfo.from_resource(resource)
    assert (str(info.cidr), info.block_size, info.vxlan_mode, info.nat_outgoing) == (
        "10.244.0.0/16",
        26,
        "CrossSubnet",
        True,
    )
    assert info.node_selector.matches({}) and info.allowed_uses == ("Workload", "Tunnel")


def test_ipv6_pool_default_block_size() -> None:
    resource = decode_resource(pool(cidr="fd00:10::/48"))
    validate_resource(resource)
    apply_defaults(resource)
    assert resource.spec["blockSize"] == 122


@pytest.mark.parametrize(
    ("spec", "field", "reason"),
    [
        ({"cidr": "10.0.0.1/16"}, "IPPool.spec.cidr", "not strictly masked (did you mean 10.0.0.0/16?)"),
        ({"cidr": "10.0.0.0/16", "blockSize": 19}, "IPPool.spec.blockSize", "between 20 and 32 for IPv4"),
        ({"cidr": "fd00::/64", "blockSize": 26}, "IPPool.spec.blockSize", "between 116 and 128 for IPv6"),
        ({"cidr": "10.0.0.0/28"}, "IPPool.spec.cidr", "must be equal to or greater than the block size"),
        ({"cidr": "10.0.0.0/16", "ipipMode": "Always", "vxlanMode": "Always"}, "IPPool.spec", "cannot both be enabled"),
        ({"cidr": "fd00::/64", "ipipMode": "CrossSubnet"}, "IPPool.spec.ipipMode", "IPIP is not supported on IPv6"),
        ({"cidr": "169.254.0.0/16"}, "IPPool.spec.cidr", "link local"),
        ({"cidr": "nonsense"}, "IPPool.spec.cidr", "must be a valid subnet"),
        (
            {"cidr": "10.0.0.0/16", "allowedUses": ["LoadBalancer", "Workload"]},
            "IPPool.spec.allowedUses",
            "cannot be combined",
        ),
    ],
)
def test_ippool_rules_name_the_field(spec: dict[str, object], field: str, reason: str) -> None:
    resource = decode_resource(pool(**spec))
    with pytest.raises(ValidationError) as caught:
        validate_resource(resource)
    assert any(f.name == field and reason in f.reason for f in caught.value.fields), str(caught.value)
    assert caught.value.code == 7


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            {"cidr": "10.0.0.0/16", "vxlanMode": "Sometimes"},
            "IPPool.spec.vxlanMode = 'Sometimes' (must be one of Never, Always, CrossSubnet)",
        ),
        ({"cidr": "10.0.0.0/16", "natOutgoing": "yes please"}, "IPPool.spec.natOutgoing (expected a boolean"),
        ({"cidr": "10.0.0.0/16", "nodeSelector": "zone = 'a'"}, "IPPool.spec.nodeSelector = \"zone = 'a'\""),
        ({"cidr": "10.0.0.0/16", "nodeSelector": "global()"}, "global() is not valid here"),
        ({"cidr": "10.0.0.0/16", "bogus": 1}, "IPPool.spec.bogus (unknown field; IPPool.spec has: cidr, vxlanMode"),
        ({"cidr": "10.0.0.0/16", "blockSize": "26"}, "IPPool.spec.blockSize (expected an integer from 0 to 128"),
    ],
)
def test_decode_errors_say_what_is_allowed(spec: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError) as caught:
        decode_resource(pool(**spec))
    text = str(caught.value).replace("'zone = \\'a\\''", "\"zone = 'a'\"")
    assert message.replace('"', "'") in text.replace('"', "'"), text


def test_field_names_match_case_insensitively_as_go() -> None:
    resource = decode_resource(pool(CIDR="10.0.0.0/16", NatOutgoing=True))
    assert resource.spec == {"cidr": "10.0.0.0/16", "natOutgoing": True}


def test_unknown_kind_and_version() -> None:
    with pytest.raises(DecodeError, match=r"unknown resource type \(Foo\)"):
        decode_resource({"apiVersion": "projectcalico.org/v3", "kind": "Foo"})
    with pytest.raises(DecodeError, match=r"apiVersion projectcalico\.org/v3"):
        decode_resource({"apiVersion": "crd.projectcalico.org/v1", "kind": "IPPool"})


def test_names_and_namespaces() -> None:
    bad = decode_resource({**pool(cidr="10.0.0.0/16"), "metadata": {"name": "Bad_Name"}})
    with pytest.raises(ValidationError, match="lower case alphanumeric"):
        validate_resource(bad)
    wep = new_resource("WorkloadEndpoint", "n-k8s-a-eth0", {"interfaceName": "cali1234", "ipNetworks": ["10.0.0.1/32"]})
    with pytest.raises(ValidationError, match="namespaced"):
        validate_resource(wep)
    with pytest.raises(ValidationError, match='name other than "default"'):
        validate_resource(new_resource("IPAMConfiguration", "mine", {}))
    with pytest.raises(ValidationError, match="label key"):
        decode_resource({**pool(cidr="10.0.0.0/16"), "metadata": {"name": "p", "labels": {"-x": "y"}}})


def test_manifest_forms() -> None:
    text = (
        SEED_POOL
        + "---\n"
        + json.dumps(
            {
                "apiVersion": "projectcalico.org/v3",
                "kind": "IPPoolList",
                "items": [{"metadata": {"name": "b"}, "spec": {"cidr": "10.9.0.0/16"}}],
            }
        )
        + "\n---\n- "
        + json.dumps(
            {
                "apiVersion": "projectcalico.org/v3",
                "kind": "BGPPeer",
                "metadata": {"name": "tor"},
                "spec": {"peerIP": "198.51.100.9", "asNumber": 64513},
            }
        )
        + "\n---\napiVersion: v1\nkind: List\nitems:\n"
        + "- apiVersion: projectcalico.org/v3\n  kind: Profile\n  metadata: {name: net1}\n  spec: {}\n"
    )
    kinds = [(r.kind, r.name) for r in load_manifest(text)]
    assert kinds == [("IPPool", "default-ipv4-ippool"), ("IPPool", "b"), ("BGPPeer", "tor"), ("Profile", "net1")]
    assert (
        load_manifest('{"apiVersion": "projectcalico.org/v3", "kind": "Tier", "metadata": {"name": "t"}}')[0].kind
        == "Tier"
    )
    assert load_manifest("---\n# nothing\n") == []
    with pytest.raises(DecodeError, match="not valid YAML or JSON"):
        load_manifest("kind: [unclosed", "pools.yaml")


def test_timestamps_stay_strings() -> None:
    (resource,) = load_manifest(
        SEED_POOL.replace("metadata:\n", "metadata:\n  creationTimestamp: 2024-01-01T00:00:00Z\n")
    )
    assert resource.metadata["creationTimestamp"] == "2024-01-01T00:00:00Z"


def test_yaml_and_json_output_as_calicoctl() -> None:
    (resource,) = load_manifest(SEED_POOL)
    apply_defaults(resource)
    resource.set_meta("resourceVersion", "42")
    text = dump_yaml(resource.to_dict())
    assert text.splitlines()[:6] == [
        "apiVersion: projectcalico.org/v3",
        "kind: IPPool",
        "metadata:",
        "  creationTimestamp: null",
        "  name: default-ipv4-ippool",
        '  resourceVersion: "42"',
    ]
    assert "spec:\n  allowedUses:\n  - Workload\n  - Tunnel\n" in text
    assert dump_json(resource.to_dict()).startswith('{\n  "kind": "IPPool",\n  "apiVersion": "projectcalico.org/v3",')
    assert load_manifest(text)[0].spec == resource.spec  # what get -o yaml prints applies again


def test_other_kinds_shape_and_defaults() -> None:
    node = new_resource(
        "Node",
        "node1",
        {"bgp": {"ipv4Address": "198.51.100.1/24", "asNumber": "1.10"}, "ipv4VXLANTunnelAddr": "10.244.1.0"},
    )
    validate_resource(node)
    assert to_json(node).endswith(
        '"spec":{"bgp":{"asNumber":65546,"ipv4Address":"198.51.100.1/24"},"ipv4VXLANTunnelAddr":"10.244.1.0"},"status":{}}'
    )
    info = NodeInfo.from_resource(node)
    assert str(info.ipv4_address) == "198.51.100.1/24" and info.as_number == 65546
    with pytest.raises(ValidationError, match=r"Spec\.BGP should not be empty"):
        validate_resource(new_resource("Node", "n", {"bgp": {}}))
    assert BGPDefaults.from_resource(None) == BGPDefaults(64512, True, "Info", 179)
    cfg = new_resource("BGPConfiguration", "default", {"nodeToNodeMeshEnabled": False, "asNumber": 65000})
    assert to_json(cfg).endswith('"spec":{"nodeToNodeMeshEnabled":false,"asNumber":65000}}')
    assert BGPDefaults.from_resource(cfg).node_to_node_mesh is False
    with pytest.raises(ValidationError, match="non default BGP Configuration"):
        validate_resource(new_resource("BGPConfiguration", "node.node1", {"asNumber": 1}))
    felix = new_resource(
        "FelixConfiguration", "default", {"vxlanVNI": 4097, "nftablesMode": "Enabled", "ipipEnabled": False}
    )
    assert felix.spec == {"ipipEnabled": False, "vxlanVNI": 4097, "nftablesMode": "Enabled"}  # Go's field order
    defaults = FelixSettings.from_resources(None)
    pattern = r"^((en|wl|ww|sl|ib)[Pcopsvx].*|(eth|wlan|wwan).*)"  # Felix's MTUIfacePattern
    assert defaults == FelixSettings(4096, 4789, 0, 0, "Auto", 90.0, pattern)
    assert FelixSettings.from_resources(felix).vxlan_vni == 4097
    node = new_resource("FelixConfiguration", "node.n1", {"routeRefreshInterval": "1m30s", "mtuIfacePattern": "^ens"})
    merged = FelixSettings.from_resources(felix, node, env={"vxlanVNI": 4098})
    assert (merged.vxlan_vni, merged.route_refresh, merged.mtu_iface_pattern) == (4098, 90.0, "^ens")
    fast = new_resource("FelixConfiguration", "default", {"routeRefreshInterval": "500ms"})
    assert FelixSettings.from_resources(fast).route_refresh == 0.5
    with pytest.raises(ValidationError, match="vxlanPort"):
        new_resource("FelixConfiguration", "default", {"vxlanPort": 70000})
    peer = new_resource("BGPPeer", "tor", {"peerIP": "[fd00::1]:179", "asNumber": 64513, "nodeSelector": "rack == 'a'"})
    validate_resource(peer)
    with pytest.raises(ValidationError, match="asNumber must be set"):
        validate_resource(new_resource("BGPPeer", "x", {"peerIP": "198.51.100.2"}))
    ipam = new_resource("IPAMConfiguration", "default", {"strictAffinity": True})
    assert ipam.spec == {"strictAffinity": True, "autoAllocateBlocks": True}
    with pytest.raises(ValidationError, match="MaxBlocksPerHost requires StrictAffinity"):
        validate_resource(new_resource("IPAMConfiguration", "default", {"maxBlocksPerHost": 1}))
    tier = new_resource("Tier", "default", {"order": 1_000_000.0, "defaultAction": "Deny"})
    assert to_json(tier).endswith('"spec":{"order":1000000,"defaultAction":"Deny"},"status":{}}')
    wep = new_resource(
        "WorkloadEndpoint",
        "node1-cni-abc-eth0",
        {
            "node": "node1",
            "orchestrator": "cni",
            "interfaceName": "cali0123456789a",
            "ipNetworks": ["10.244.16.64/32"],
            "mac": "ee:ee:ee:ee:ee:ee",
        },
        namespace="default",
    )
    validate_resource(wep)
    with pytest.raises(ValidationError, match="multiple addresses"):
        validate_resource(
            new_resource("WorkloadEndpoint", "w", {"interfaceName": "c", "ipNetworks": ["10.0.0.0/24"]}, "ns")
        )
    profile = new_resource(
        "Profile",
        "net1",
        {
            "ingress": [{"action": "Allow", "source": {"selector": "has(net1)"}}],
            "egress": [{"action": "Allow"}],
            "labelsToApply": {"net1": ""},
        },
    )
    # Byte-identical to Go: an EntityRule is a struct value, which omitempty never drops, so an empty one is {}.
    assert to_json(profile).endswith(
        '"spec":{"ingress":[{"action":"Allow","source":{"selector":"has(net1)"},"destination":{}}],'
        '"egress":[{"action":"Allow","source":{},"destination":{}}],"labelsToApply":{"net1":""}}}'
    )


def test_gojson_matches_go() -> None:
    assert gojson.marshal({"a": 1e6, "b": 1.5, "c": 1e-7, "d": "<&>", "e": None, "f": []}) == (
        '{"a":1000000,"b":1.5,"c":1e-7,"d":"\\u003c\\u0026\\u003e","e":null,"f":[]}'
    )
    assert gojson.marshal_indent({"k": [1, {}]}) == '{\n  "k": [\n    1,\n    {}\n  ]\n}'
