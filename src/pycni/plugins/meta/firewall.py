"""firewall: let forwarded traffic reach and leave the container (reference ``plugins/meta/firewall``).

Chained after an interface plugin; the container's addresses from
``prevResult`` are allowed in the table of :mod:`pycni.nft.firewall`.
``ingressPolicy`` ``same-bridge`` (or ``isolated``) stops forwarding between
isolated bridges, the bridge being ``prevResult.interfaces[0]`` as in Go.
Differences: nftables instead of iptables/firewalld (``backend`` other than
nftables is refused, the iptables admin-chain name is accepted and unused: the
admin chain is ``admin`` in the table); DEL needs no ``prevResult`` because
rules are found by their comment; GC removes stale attachments' rules; a
bridge's isolation rules go with its last attachment and the table with the
last of all (see :mod:`pycni.nft.firewall`).
"""

from __future__ import annotations

import hashlib

from pycni.nft import firewall as table
from pycni.plugins.common import prev_result_required
from pycni.skel import CmdArgs, Plugin
from pycni.spec import CNIError, ErrorCode, Result, versions_from
from pycni.spec.validate import link_name_problem

plugin = Plugin("firewall", versions=versions_from("0.4.0"))

POLICIES = ("open", "same-bridge", "isolated")


def comment_for(network: str, container_id: str, ifname: str) -> str:
    tag = hashlib.sha512(network.encode()).hexdigest()[:16]
    comment = f"{tag}:{container_id}:{ifname}"
    return comment if len(comment) <= 128 else f"{tag}:{hashlib.sha512(comment.encode()).hexdigest()[:64]}"


def load_policy(args: CmdArgs) -> str:
    conf = args.fields
    backend = conf.string("backend")
    if backend not in ("", "nftables"):
        raise CNIError(
            ErrorCode.UNSUPPORTED_FIELD,
            f'unsupported backend: "backend": "{backend}"',
            "pycni's firewall uses nftables; remove the key or set it to nftables",
        )
    conf.string("iptablesAdminChainName")
    conf.string("firewalldZone")
    policy = conf.string("ingressPolicy", "open") or "open"
    if policy not in POLICIES:
        raise CNIError(
            ErrorCode.INVALID_NETWORK_CONFIG, f"ingressPolicy must be one of {', '.join(POLICIES)}, not {policy!r}"
        )
    return policy


@plugin.add
def add(args: CmdArgs) -> Result:
    policy = load_policy(args)
    if args.config.get("prevResult") is None:
        raise CNIError(ErrorCode.INVALID_NETWORK_CONFIG, "missing prevResult from earlier plugin")
    result = prev_result_required(args)
    bridge = result.interfaces[0].name if result.interfaces else ""
    problem = link_name_problem(bridge) if bridge else ""
    if problem:  # it names the bridge's rules and its record file: never a path, a NUL or a template
        raise CNIError(
            ErrorCode.INVALID_NETWORK_CONFIG,
            f"prevResult.interfaces[0].name {bridge!r} is not an interface name: {problem}",
        )
    if policy != "open" and not bridge:
        raise CNIError(ErrorCode.INVALID_NETWORK_CONFIG, f"ingressPolicy {policy} needs a bridge in prevResult")
    table.add([ip.address for ip in result.ips], comment_for(args.name, args.container_id, args.ifname), bridge, policy)
    return result


@plugin.delete
def delete(args: CmdArgs) -> None:
    table.remove({comment_for(args.name, args.container_id, args.ifname)}, "remove firewall rules")


@plugin.check
def check(args: CmdArgs) -> None:
    load_policy(args)
    result = prev_result_required(args)
    present = table.present(comment_for(args.name, args.container_id, args.ifname))
    missing = [str(ip.address.ip) for ip in result.ips if str(ip.address.ip) not in present]
    if missing:
        raise CNIError(ErrorCode.INTERNAL, f"firewall: no rule allows {', '.join(missing)}")


@plugin.gc
def gc(args: CmdArgs) -> None:
    listed = args.valid_attachments()
    if listed is None:
        return
    keep = {comment_for(args.name, cid, ifname) for cid, ifname in listed}
    tag = comment_for(args.name, "", "").split(":")[0]
    stale = {c for _, _, c in table.live_state().elements if c.startswith(f"{tag}:") and c not in keep}
    table.remove(stale, "garbage-collect firewall rules", network_tag=tag, keep=keep)


if __name__ == "__main__":
    plugin.main()
