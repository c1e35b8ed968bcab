"""``calicoctl ipam check``: IPAM's records against what actually uses addresses, as calicoctl reports it.

The checks and the wording are ``calicoctl/commands/ipam/check.go``'s: addresses
allocated in a block that no WorkloadEndpoint or node tunnel uses (leaks,
except those cooling down), addresses in use that IPAM did not allocate,
handles with no addresses, handles named by blocks that do not exist, and
blocks whose structure is broken. :func:`check` returns the report's lines and
the problem count; the node agent's leak GC (:mod:`.leak_gc`) works from the
same :class:`Findings`, so the GC releases exactly what the check names.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from pycni.fabric.calico.ipam import AllocationBlock, Attribute
from pycni.fabric.calico.ipam_store import IPAM

NODES_TO_PRINT = 20


def attr_string(attribute: Attribute) -> str:
    """check.go's formatAttrs: ``Main:<handle> Extra:k=v,k=v``."""
    extra = ",".join(f"{k}={v}" for k, v in sorted((attribute.secondary or {}).items()))
    text = f"Main:{attribute.handle_id if attribute.handle_id is not None else '<none>'} Extra:{extra}"
    if attribute.alternate:
        text += " Alternate:" + ",".join(f"{k}={v}" for k, v in sorted(attribute.alternate.items()))
    return text


def _ip(text: str) -> str:
    return str(ipaddress.ip_interface(text).ip)


@dataclass
class Findings:
    leaked: list[tuple[str, Attribute]] = field(default_factory=list)  # allocated, unused
    not_in_pools: list[tuple[str, str]] = field(default_factory=list)  # (ip, owner)
    not_allocated: list[tuple[str, str]] = field(default_factory=list)  # (ip, owner)
    empty_handles: list[str] = field(default_factory=list)
    missing_handles: list[str] = field(default_factory=list)
    invalid_blocks: list[tuple[str, str]] = field(default_factory=list)
    blocks: list[AllocationBlock] = field(default_factory=list)  # as read, for the leak GC's sequence numbers

    @property
    def problems(self) -> int:
        return (
            len(self.leaked)
            + len(self.not_in_pools)
            + len(self.not_allocated)
            + len(self.empty_handles)
            + len(self.invalid_blocks)
        )


def check(  # noqa: PLR0915 - one report, section by section in calicoctl's order
    ipam: IPAM, *, show_problem_ips: bool = True, show_all_ips: bool = False
) -> tuple[list[str], Findings]:
    """Run every check; the report lines (as calicoctl prints them) and what was found."""
    out: list[str] = ["Checking IPAM for inconsistencies...", ""]
    found = Findings()
    blocks: list[AllocationBlock] = ipam.list_blocks()
    found.blocks = blocks
    out.append("Loading all IPAM blocks...")
    out.append(f"Found {len(blocks)} IPAM blocks.")
    allocations: dict[str, list[tuple[AllocationBlock, Attribute]]] = {}
    by_node: dict[str, int] = {}
    for block in blocks:
        out.append(f" IPAM block {block.cidr} affinity={block.affinity or '<none>'}:")
        for address, attribute in block.in_use():
            allocations.setdefault(str(address), []).append((block, attribute))
            node = (attribute.secondary or {}).get("node") or block.host
            by_node[node] = by_node.get(node, 0) + 1
            if show_all_ips:
                out.append(f"  {address} allocated; attrs {attr_string(attribute)}")
    out += [f"IPAM blocks record {sum(len(v) for v in allocations.values())} allocations.", ""]

    pools = ipam.pools()
    out.append("Loading all IPAM pools...")
    out += [f"  {pool.cidr}" for pool in pools]
    out += [f"Found {len(pools)} active IP pools.", ""]

    in_use: dict[str, list[str]] = {}

    def use(ip: str, owner: str) -> None:
        if show_all_ips:
            out.append(f"  {ip} belongs to {owner}")
        in_use.setdefault(ip, []).append(owner)

    out.append("Loading all nodes.")
    count = 0
    for node_resource in ipam.resources.list("Node")[0]:
        spec, bgp = node_resource.spec, node_resource.spec.get("bgp") or {}
        for text in (
            spec.get("ipv4VXLANTunnelAddr"),
            (spec.get("wireguard") or {}).get("interfaceIPv4Address"),
            bgp.get("ipv4IPIPTunnelAddr"),
        ):
            if text:
                use(_ip(text), f"Node({node_resource.name})")
                count += 1
    out += [f"Found {count} node tunnel IPs.", ""]

    out.append("Loading all workload endpoints.")
    count = 0
    for wep in ipam.resources.list("WorkloadEndpoint")[0]:
        for text in wep.spec.get("ipNetworks") or []:
            use(_ip(text), f"Workload({wep.namespace}/{wep.name})")
            count += 1
    out += [f"Found {count} workload IPs.", f"Workloads and nodes are using {len(in_use)} IPs.", ""]

    out.append("Loading all handles")
    handles = {h.handle_id: h for h in ipam.list_handles()}
    out.append(f"Looking for top (up to {NODES_TO_PRINT}) nodes by allocations...")
    ranked = sorted(by_node.items(), key=lambda item: (-item[1], item[0]))
    out += [f"  {node} has {n} allocations" for node, n in ranked[:NODES_TO_PRINT]]
    if ranked:
        counts = sorted(n for _, n in ranked)
        out.append(f"Node with most allocations has {counts[-1]}; median is {counts[len(counts) // 2]}")
    out.append("")

    out.append("Scanning for IPs that are allocated but not actually in use...")
    for ip, records in sorted(allocations.items(), key=lambda item: ipaddress.ip_address(item[0])):
        if ip in in_use or any(a.released_at is not None for _, a in records):
            continue
        for _, attribute in records:
            found.leaked.append((ip, attribute))
            if show_problem_ips:
                out.append(f"  {ip} leaked; attrs {attr_string(attribute)}")
    out += [f"Found {len(found.leaked)} IPs that are allocated in IPAM but not actually in use.", ""]

    out.append("Scanning for IPs that are in use by a workload or node but not allocated in IPAM...")
    for ip, owners in sorted(in_use.items(), key=lambda item: ipaddress.ip_address(item[0])):
        if show_problem_ips and len(owners) > 1:
            out.append(f"  {ip} has multiple owners.")
        if ip in allocations:
            continue
        address = ipaddress.ip_address(ip)
        for owner in owners:
            if not any(address in pool.cidr for pool in pools):
                found.not_in_pools.append((ip, owner))
                if show_problem_ips:
                    out.append(f"  {ip} in use by {owner} is not in any active IP pool.")
            else:
                found.not_allocated.append((ip, owner))
                if show_problem_ips:
                    out.append(f"  {ip} in use by {owner} and in active IPAM pool but has no IPAM allocation.")
    out.append(f"Found {len(found.not_in_pools)} in-use IPs that are not in active IP pools.")
    out += [
        f"Found {len(found.not_allocated)} in-use IPs that are in active IP pools but have no corresponding IPAM "
        "allocation.",
        "",
    ]

    out.append("Scanning for IPAM handles with no matching IPs...")
    referenced = {a.handle for records in allocations.values() for _, a in records if a.handle_id is not None}
    for handle_id in sorted(handles):
        if handle_id not in referenced:
            found.empty_handles.append(handle_id)
            out.append(f"  {handle_id} doesn't have any active IPs.")
    matched = len(handles) - len(found.empty_handles)
    out += [f"Found {len(found.empty_handles)} handles with no matching IPs (and {matched} handles with matches).", ""]

    out.append("Scanning for IPs with missing handle...")
    for handle_id in sorted(referenced - set(handles)):
        found.missing_handles.append(handle_id)
        out.append(f"  {handle_id} is in use in a block but doesn't exist.")
    out += [f"Found {len(found.missing_handles)} handles mentioned in blocks with no matching handle resource.", ""]

    out.append("Validating IPAMBlock structures...")
    for block in blocks:
        for problem in block.check():
            found.invalid_blocks.append((str(block.cidr), problem))
            out.append(f"  IPAMBlock {block.cidr} is invalid: {problem}")
    out += [f"Found {len(found.invalid_blocks)} invalid IPAMBlocks.", ""]
    out.append(f"Check complete; found {found.problems} problems.")
    return out, found
