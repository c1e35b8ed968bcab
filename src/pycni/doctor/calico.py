"""The Calico fabric: IPAM's records in the datastore (``calicoctl ipam check``), and BIRD's BGP sessions.

IPAM is read only with ``--etcd-endpoints`` and judged by
:func:`pycni.fabric.calico.ipam_check.check`, the analysis calico-node's leak
GC acts on, so doctor names exactly what the GC would release (and what it
cannot fix: addresses in use that IPAM never allocated, broken blocks). BIRD
is asked through its control socket (``--bird-socket``), as ``birdc`` asks.
"""

from __future__ import annotations

from pycni.doctor.context import Node
from pycni.doctor.model import Check, Finding, fail, listed, ok, warn
from pycni.fabric.calico.bird import BirdControl, BirdError, BirdNotRunning, parse_protocols
from pycni.fabric.calico.ipam_check import check as ipam_check
from pycni.fabric.calico.ipam_store import IPAM

CHECK_CMD = "pycni calicoctl ipam check (with the same etcd) lists them"


def check_ipam(node: Node) -> list[Finding]:
    store = node.store
    if store is None:
        return []
    ipam = IPAM(store)
    if not node.networks_of("calico") and not ipam.pools(enabled_only=False) and not ipam.list_blocks():
        return []  # no Calico network here, no Calico in the datastore
    _report, found = ipam_check(ipam, show_problem_ips=False)
    findings: list[Finding] = []
    if found.not_allocated or found.not_in_pools:
        owners = [f"{ip} ({owner})" for ip, owner in found.not_allocated + found.not_in_pools]
        findings.append(
            fail(
                "calico_ipam",
                f"{len(owners)} address(es) in use that IPAM did not allocate: {listed(owners)}: IPAM may hand them "
                "out again",
                f"{CHECK_CMD}; re-create those pods so their addresses are allocated (or assign them with IPAM)",
            )
        )
    if found.invalid_blocks:
        items = [f"{cidr}: {why}" for cidr, why in found.invalid_blocks]
        findings.append(
            fail("calico_ipam", f"invalid IPAM block(s): {listed(items, 3)}", f"{CHECK_CMD}; repair or delete them")
        )
    if found.leaked:
        items = [f"{ip} (handle {attr.handle_id or '<none>'})" for ip, attr in found.leaked]
        findings.append(
            warn(
                "calico_ipam",
                f"{len(items)} address(es) allocated that no workload endpoint or node tunnel uses (leaked): "
                f"{listed(items)}",
                "calico-node's leak GC releases them after its grace period; by hand: pycni calicoctl ipam release "
                f"--ip=IP ({CHECK_CMD})",
            )
        )
    handles = found.empty_handles + found.missing_handles
    if handles:
        findings.append(
            warn(
                "calico_ipam",
                f"{len(found.empty_handles)} IPAM handle(s) with no address and {len(found.missing_handles)} named by "
                f"blocks but missing: {listed(handles)}",
                f"calico-node's leak GC deletes orphaned handles after its grace period ({CHECK_CMD})",
            )
        )
    if not findings:
        allocations = sum(len(block.in_use()) for block in found.blocks)
        findings.append(ok("calico_ipam", f"{len(found.blocks)} IPAM block(s), {allocations} allocation(s), all used"))
    return findings


def check_bird(node: Node) -> list[Finding]:
    path = node.options.bird_socket
    if not path:
        return []
    try:
        protocols = parse_protocols(BirdControl(path, timeout=3.0).request("show protocols"))
    except BirdNotRunning as error:
        return [fail("bird", error.msg, "start calico-node (it runs BIRD for BGP); its log says why BIRD exited")]
    except (BirdError, OSError) as error:
        return [fail("bird", f"BIRD on {path}: {error}", "restart calico-node; its log says what BIRD reported")]
    sessions = [p for p in protocols if p.proto == "BGP"]
    if not sessions:
        return [
            warn(
                "bird",
                f"BIRD on {path} has no BGP session",
                "calico-node meshes with the other Nodes in the datastore: are they registered, and is "
                "nodeToNodeMeshEnabled or a BGPPeer set?",
            )
        ]
    down = [p for p in sessions if p.bgp_state != "Established"]
    if not down:
        return [ok("bird", f"{len(sessions)} BGP session(s) Established: {listed([p.name for p in sessions])}")]
    items = [f"{p.name} {p.state} {p.info}".strip() for p in down]
    return [
        fail(
            "bird",
            f"{len(down)} of {len(sessions)} BGP session(s) not Established: {listed(items)}: routes to those "
            "peers' pods are missing",
            "check that the peers run calico-node and reach this node on TCP 179 (pycni calicoctl node status)",
        )
    ]


CHECKS = [
    Check("calico_ipam", check_ipam, "Calico IPAM allocations all in use, none unallocated, blocks valid (etcd)"),
    Check("bird", check_bird, "BIRD answers and every BGP session is Established (--bird-socket)"),
]
