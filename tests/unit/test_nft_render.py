"""nftables rendering against golden text (no root, no kernel).

The same scripts are loaded into a live kernel by the integration tier; here
the exact text is pinned so a change to a ruleset is always a visible diff.
Regenerate a golden file with ``PYCNI_UPDATE_GOLDEN=1`` and review the diff.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

import pytest

from pycni.nft import masquerade, portmap, spoofcheck

GOLDEN = Path(__file__).parent / "golden"


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("PYCNI_UPDATE_GOLDEN"):
        path.write_text(text)
    assert text == path.read_text(), f"{name} changed; rerun with PYCNI_UPDATE_GOLDEN=1 and review"


def test_masquerade_setup() -> None:
    addresses = [ipaddress.ip_interface("10.10.0.2/16"), ipaddress.ip_interface("fd00::2/64")]
    host_prefix = [ipaddress.ip_interface("10.10.9.9/32")]
    check_golden("masquerade_setup.nft", masquerade.render_setup([*addresses, *host_prefix], "mynet", "eth0", "c1"))
    with_stale = masquerade.render_setup(host_prefix, "mynet", "eth0", "c1", stale_handles=[7])
    assert "delete rule inet cni_plugins_masquerade masq_checks handle 7\n" in with_stale
    only_adds = masquerade.render_setup(addresses, "mynet", "eth0", "c1", skeleton=False)
    assert all(
        line.startswith("add rule inet cni_plugins_masquerade masq_checks") for line in only_adds.splitlines()
    ), "with the table in place, ADD only adds (redeclaring a hooked chain costs an RCU wait)"


def test_masquerade_is_per_network_and_subnet() -> None:
    """A second container of the network adds nothing: its subnet's rule is there already."""
    first = [ipaddress.ip_interface("10.10.0.2/16")]
    script = masquerade.render_setup(first, "mynet", "eth0", "c1", skeleton=False)
    assert script.count("add rule") == 1
    assert "ip saddr 10.10.0.0/16 ip daddr != 10.10.0.0/16 masquerade" in script
    existing = [masquerade.subnet_group(masquerade.network_hash("mynet"), "10.10.0.0/16")]
    second = [ipaddress.ip_interface("10.10.0.3/16")]
    assert masquerade.render_setup(second, "mynet", "eth0", "c2", existing, skeleton=False) == ""
    other_net = masquerade.render_setup(second, "othernet", "eth0", "c2", existing, skeleton=False)
    assert other_net.count("add rule") == 1, "networks do not share rules"


def test_masquerade_comment_matches_reference_format() -> None:
    comment = masquerade.instance_comment("mynet", "eth0", "c1")
    network_hash, rest = comment.split("-", 1)
    assert len(network_hash) == 16 and rest.startswith(masquerade.instance_hash("mynet", "eth0", "c1")[17:])
    assert comment.endswith(", net: mynet, if: eth0, id: c1")
    assert len(masquerade.instance_comment("n", "eth0", "x" * 300)) == 128


def test_spoofcheck_setup() -> None:
    check_golden("spoofcheck_setup.nft", spoofcheck.render_setup("veth1234abcd", "02:11:22:33:44:55", "c1-eth0"))


def test_spoofcheck_setup_without_skeleton_only_adds_the_attachment() -> None:
    """With the base chain present, the hooked chain is not redeclared (that commit would wait for RCU)."""
    full = spoofcheck.render_setup("veth1234abcd", "02:11:22:33:44:55", "c1-eth0").splitlines()
    lean = spoofcheck.render_setup("veth1234abcd", "02:11:22:33:44:55", "c1-eth0", skeleton=False).splitlines()
    assert full[0] == "add table bridge nat" and "hook prerouting" in full[1]
    assert lean == full[2:]


def test_portmap_base_and_mappings() -> None:
    mappings = [
        portmap.Mapping(8080, 80, "tcp"),
        portmap.Mapping(5353, 53, "udp", "10.0.0.1"),
        portmap.Mapping(9090, 90, "sctp", "::"),
        portmap.Mapping(7070, 70, "tcp", "fd00::1"),
    ]
    addresses = [ipaddress.ip_interface("10.10.0.2/16"), ipaddress.ip_interface("fd00:10::2/64")]
    comment = portmap.attachment_comment("mynet", "c1", "eth0")
    lines = portmap.render_add(mappings, addresses, comment, snat=True, masq_all=False, conditions={})
    check_golden("portmap_add.nft", "\n".join([*portmap.render_base(), *lines]) + "\n")


def test_portmap_conditions_and_masq_all() -> None:
    lines = portmap.render_add(
        [portmap.Mapping(8080, 80, "tcp")],
        [ipaddress.ip_interface("10.10.0.2/16")],
        "tag:c1:eth0",
        snat=True,
        masq_all=True,
        conditions={4: ["ip", "saddr", "192.168.0.0/16"]},
    )
    assert lines == [
        "add rule inet pycni_hostport hostports ip saddr 192.168.0.0/16 tcp dport 8080 dnat ip to 10.10.0.2:80 "
        'comment "tag:c1:eth0"',
        'add element inet pycni_hostport masq4_all { 10.10.0.2 comment "tag:c1:eth0" }',
    ]


def test_portmap_without_snat_adds_no_masquerade() -> None:
    lines = portmap.render_add(
        [portmap.Mapping(8080, 80, "tcp")], [ipaddress.ip_interface("10.10.0.2/16")], "x", False, False, {}
    )
    assert not any("masq" in line for line in lines)


def test_portmap_comment_is_hashed_when_too_long() -> None:
    comment = portmap.attachment_comment("net", "c" * 200, "eth0")
    assert len(comment) <= 128
    assert comment.startswith(portmap.network_tag("net") + ":")


def test_portmap_removal_and_conflicts() -> None:
    elements = [
        portmap.Element("dnat4", "tcp . 8080", "a:1:eth0", "10.0.0.2 . 80"),
        portmap.Element("masq4", "10.0.0.2 . 10.0.0.2", "a:1:eth0"),
        portmap.Element("dnat4", "tcp . 9090", "a:2:eth0", "10.0.0.3 . 90"),
    ]
    assert portmap.render_removal(elements, [(12, "a:1:eth0"), (13, "b")], {"a:1:eth0"}) == [
        "delete element inet pycni_hostport dnat4 { tcp . 8080 }",
        "delete element inet pycni_hostport masq4 { 10.0.0.2 . 10.0.0.2 }",
        "delete rule inet pycni_hostport hostports handle 12",
    ]
    wanted = ['create element inet pycni_hostport dnat4 { tcp . 9090 comment "a:3:eth0" : 10.0.0.4 . 90 }']
    assert portmap.conflicts(elements, wanted, "a:3:eth0") == ["tcp/9090"]
    assert portmap.conflicts(elements, wanted, "a:2:eth0") == []


@pytest.mark.parametrize("name", ["masquerade_setup.nft", "spoofcheck_setup.nft", "portmap_add.nft"])
def test_golden_files_exist(name: str) -> None:
    assert (GOLDEN / name).stat().st_size > 0
