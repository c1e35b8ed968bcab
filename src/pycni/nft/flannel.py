"""The node agent's masquerade and forward rules (Flannel's traffic manager, nftables mode).

Table ``ip flannel-ipv4`` with the rules of Flannel's ``FLANNEL-POSTRTG`` and
``FLANNEL-FWD`` chains: pod traffic leaving the cluster is masqueraded, traffic
between pods is not, kube-proxy's masquerade mark (0x4000) is left to
kube-proxy, and forwarding to and from the cluster network is accepted (for
hosts whose forward policy drops). Every rule carries a numbered comment, so a
resync can tell whether the live table is complete without parsing rules.
"""

from __future__ import annotations

import ipaddress

from pycni import nft

IPv4Net = ipaddress.IPv4Network  # nft sits below fabric: it takes plain networks, not fabric's types

FAMILY = "ip"
TABLE = "flannel-ipv4"
T = f"{FAMILY} {TABLE}"
COMMENT = "pycni flanneld"


def desired(cluster: IPv4Net, pod: IPv4Net, ip_masq: bool, forward: bool) -> list[tuple[str, str]]:
    """``(chain, rule)`` pairs, in order."""
    rules: list[tuple[str, str]] = []
    if ip_masq:
        rules += [
            ("postrtg", "meta mark & 0x4000 == 0x4000 return"),
            ("postrtg", f"ip saddr {pod} ip daddr {cluster} return"),
            ("postrtg", f"ip saddr {cluster} ip daddr {pod} return"),
            ("postrtg", f"ip saddr != {cluster} ip daddr {pod} return"),
            ("postrtg", f"ip saddr {cluster} ip daddr != 224.0.0.0/4 masquerade fully-random"),
            ("postrtg", f"ip saddr != {cluster} ip daddr {cluster} masquerade fully-random"),
        ]
    if forward:
        rules += [("forward", f"ip saddr {cluster} accept"), ("forward", f"ip daddr {cluster} accept")]
    return rules


def render(rules: list[tuple[str, str]]) -> str:
    lines = [
        f"add table {T}",
        f"add chain {T} postrtg {{ type nat hook postrouting priority srcnat ; }}",
        f"add chain {T} forward {{ type filter hook forward priority filter ; }}",
        f"flush table {T}",
    ]
    lines += [f'add rule {T} {chain} {rule} comment "{COMMENT} {i}"' for i, (chain, rule) in enumerate(rules)]
    return "\n".join(lines) + "\n"


def ensure(cluster: IPv4Net, pod: IPv4Net, ip_masq: bool, forward: bool) -> bool:
    """Install the rules unless the live table already has exactly them; True if it had to."""
    rules = desired(cluster, pod, ip_masq, forward)
    with nft.locked(TABLE):
        _chains, live = nft.list_table(FAMILY, TABLE)
        present = sorted(str(rule.get("comment", "")) for rule in live)
        if present == sorted(f"{COMMENT} {i}" for i in range(len(rules))) and _matches(live, rules):
            return False
        nft.run(render(rules), "install flanneld rules")
        return True


def _matches(live: list[dict[str, object]], rules: list[tuple[str, str]]) -> bool:
    """The subnets in the live rules are the wanted ones (a changed lease must be reinstalled)."""
    wanted = {word for _, rule in rules for word in rule.split() if "/" in word and word[0].isdigit()}
    found: set[str] = set()

    def walk(node: object) -> None:
        if isinstance(node, dict):
            prefix = node.get("prefix")
            if isinstance(prefix, dict):
                found.add(f"{prefix.get('addr')}/{prefix.get('len')}")
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk([rule.get("expr") for rule in live])
    return found == wanted


def remove() -> None:
    """Delete the table (the agent's clean exit); a node that never had it is fine."""
    with nft.locked(TABLE):
        if nft.list_objects("table", FAMILY, TABLE):
            nft.run(f"delete table {T}\n", "remove flanneld rules")
