"""Bridge MAC spoof checking (bridge ``macspoofchk``), as the reference lays it out.

Table ``bridge nat``, base chain ``PREROUTING`` (filter, priority -300):
frames entering from the host veth jump to ``cni-br-iface-<id>``, which jumps
to ``cni-br-iface-<id>-mac``: return if the source MAC is the container's,
else drop. Every rule carries the comment ``macspoofchk-<id>``.
"""

from __future__ import annotations

from pycni import nft

FAMILY = "bridge"
TABLE = "nat"
BASE_CHAIN = "PREROUTING"


def chain_names(ref_id: str) -> tuple[str, str]:
    iface_chain = f"cni-br-iface-{ref_id}"
    return iface_chain, f"{iface_chain}-mac"


def render_setup(host_iface: str, mac: str, ref_id: str, skeleton: bool = True) -> str:
    """The attachment's chains and rules; with ``skeleton``, the table and hooked base chain first.

    The base chain is declared only when missing: in this kernel a commit that
    redeclares a hooked chain waits ~10 ms for RCU (as in masquerade/portmap).
    The attachment's own chains are new: setup removed any earlier ones first.
    """
    iface_chain, mac_chain = chain_names(ref_id)
    comment = nft.quote(f"macspoofchk-{ref_id}")
    t = f"{FAMILY} {TABLE}"
    base = (
        f"add table {t}\nadd chain {t} {BASE_CHAIN} {{ type filter hook prerouting priority -300 ; policy accept ; }}\n"
    )
    return (
        (base if skeleton else "") + f"add chain {t} {iface_chain}\n"
        f"add chain {t} {mac_chain}\n"
        f'add rule {t} {BASE_CHAIN} iifname "{host_iface}" jump {iface_chain} comment {comment}\n'
        f"add rule {t} {iface_chain} jump {mac_chain} comment {comment}\n"
        f"add rule {t} {mac_chain} ether saddr {mac} return comment {comment}\n"
        f"add rule {t} {mac_chain} drop comment {comment}\n"
    )


def setup(host_iface: str, mac: str, ref_id: str) -> None:
    with nft.locked(f"{FAMILY}-{TABLE}"):
        base_present = _teardown(ref_id)  # a retried ADD must not leave a second jump behind
        nft.run(render_setup(host_iface, mac, ref_id, skeleton=not base_present), "set up mac spoof check")


def teardown(ref_id: str) -> None:
    """Remove the jump rule and both chains (the table too once nothing else is in it)."""
    with nft.locked(f"{FAMILY}-{TABLE}"):
        _teardown(ref_id)


def _teardown(ref_id: str) -> bool:
    """Remove this attachment's rules and chains; whether the base chain is still there afterwards."""
    chains, rules = nft.list_table(FAMILY, TABLE)
    comment = f"macspoofchk-{ref_id}"
    mine = chain_names(ref_id)
    ours = [r for r in rules if r.get("comment") == comment]
    if not ours and not any(name in chains for name in mine):
        return BASE_CHAIN in chains
    others_rules = [r for r in rules if r.get("comment") != comment and r.get("chain") not in mine]
    if not others_rules and not chains - {BASE_CHAIN, *mine}:
        nft.run(f"delete table {FAMILY} {TABLE}\n", "tear down mac spoof check")
        return False
    lines = [
        f"delete rule {FAMILY} {TABLE} {BASE_CHAIN} handle {r['handle']}" for r in ours if r.get("chain") == BASE_CHAIN
    ]
    present = [name for name in mine if name in chains]
    lines += [f"flush chain {FAMILY} {TABLE} {name}" for name in present]
    lines += [f"delete chain {FAMILY} {TABLE} {name}" for name in present]
    nft.run("".join(line + "\n" for line in lines), "tear down mac spoof check")
    return BASE_CHAIN in chains
