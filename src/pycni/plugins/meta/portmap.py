"""portmap: host ports forwarded to the container (reference ``plugins/meta/portmap``).

Mappings come from ``runtimeConfig.portMappings`` (capability
``portMappings``); with none, ADD echoes ``prevResult`` and no rule is
touched. Rules live in one nftables table of maps (see
:mod:`pycni.nft.portmap`), changed by one atomic transaction per call.
Differences from Go: nftables only (``backend: iptables`` and the
iptables-only keys are refused with a message saying so); a host port that
another container already holds is an error rather than a silently shadowed
rule; DEL removes the attachment's mappings even when the runtime sends it
no ``portMappings``; GC removes the mappings of attachments that are no
longer valid. The table goes with the last mapping.
"""

from __future__ import annotations

import ipaddress

from pycni import nft
from pycni.net import addr, netns, sysctl
from pycni.nft import portmap as rules
from pycni.plugins.common import prev_result_required
from pycni.skel import CmdArgs, Plugin
from pycni.spec import CNIError, ErrorCode, Fields, Result
from pycni.spec.result import IPInterface

plugin = Plugin("portmap")

PROTOCOLS = ("tcp", "udp", "sctp")
DEFAULT_MARK_BIT = 13


def _invalid(message: str) -> CNIError:
    return CNIError(ErrorCode.INVALID_NETWORK_CONFIG, message)


def load_mappings(args: CmdArgs) -> list[rules.Mapping]:
    """``runtimeConfig.portMappings``, validated; keys matched ignoring case (containerd capitalises)."""
    raw = args.runtime_config("portMappings")
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise _invalid("runtimeConfig.portMappings must be a list of {hostPort, containerPort, protocol, hostIP}")
    mappings = []
    for index, item in enumerate(raw):
        entry = Fields(item, f"runtimeConfig.portMappings[{index}]")
        host_port = entry.integer("hostPort")
        container_port = entry.integer("containerPort")
        if not 0 < container_port <= 65535:
            raise _invalid(f"Invalid container port number: {container_port}")
        if not 0 < host_port <= 65535:
            raise _invalid(f"Invalid host port number: {host_port}")
        protocol = (entry.string("protocol") or "tcp").lower()
        if protocol not in PROTOCOLS:
            raise _invalid(f"{entry.where}.protocol: {protocol!r} is not one of tcp, udp, sctp")
        host_ip = entry.string("hostIP")
        if host_ip:
            try:
                host_ip = str(ipaddress.ip_address(host_ip))
            except ValueError:
                raise _invalid(f"{entry.where}.hostIP: {host_ip!r} is not an IP address") from None
        mappings.append(rules.Mapping(host_port, container_port, protocol, host_ip))
    return mappings


def load_options(conf: Fields) -> tuple[bool, bool, dict[int, list[str]]]:
    """``snat``, ``masqAll`` and the nft conditions; refuses the iptables-only settings."""
    backend = conf.string("backend")
    if backend not in ("", "nftables"):
        raise CNIError(
            ErrorCode.UNSUPPORTED_FIELD,
            f'unsupported backend: "backend": "{backend}"',
            "pycni's portmap implements the nftables backend; remove the key or set it to nftables",
        )
    if conf.has("markMasqBit") and conf.has("externalSetMarkChain"):
        raise _invalid("Cannot specify externalSetMarkChain and markMasqBit")
    if conf.has("externalSetMarkChain"):
        raise CNIError(
            ErrorCode.UNSUPPORTED_FIELD,
            f"nftables backend was requested but configuration contains iptables-specific options "
            f'["externalSetMarkChain": "{conf.string("externalSetMarkChain")}"]',
        )
    # Accepted for compatibility; masquerading is decided from conntrack, so no mark is needed.
    conf.integer("markMasqBit", DEFAULT_MARK_BIT, minimum=0, maximum=31)
    conditions: dict[int, list[str]] = {}
    for version, key in ((4, "conditionsV4"), (6, "conditionsV6")):
        tokens = conf.strings(key)
        if tokens and tokens[0][:1] in ("-", "!"):
            raise CNIError(
                ErrorCode.UNSUPPORTED_FIELD,
                f'nftables backend was requested but configuration contains iptables-specific options ["{key}"]',
                'write conditions in nft syntax, e.g. ["ip", "saddr", "10.0.0.0/8"]',
            )
        if tokens:
            conditions[version] = tokens
    return conf.boolean("snat", True), conf.boolean("masqAll"), conditions


def container_addresses(result: Result, ifname: str) -> list[IPInterface]:
    """The first IPv4 and first IPv6 of the container interface (host-side addresses skipped)."""
    chosen: dict[int, IPInterface] = {}
    for ip in result.ips:
        if ip.address.version in chosen:
            continue
        if ip.interface is not None and 0 <= ip.interface < len(result.interfaces):
            iface = result.interfaces[ip.interface]
            if iface.name != ifname or not iface.sandbox:
                continue
        chosen[ip.address.version] = ip.address
    return [chosen[v] for v in (4, 6) if v in chosen]


def _comment(args: CmdArgs) -> str:
    return rules.attachment_comment(args.name, args.container_id, args.ifname)


@plugin.add
def add(args: CmdArgs) -> Result:
    prev = args.prev_result()
    if prev is None:
        raise _invalid("must be called as chained plugin")
    mappings = load_mappings(args)
    snat, masq_all, conditions = load_options(args.fields)
    if not mappings:
        return prev
    addresses = container_addresses(prev.as_version("1.1.0"), args.ifname)
    if not addresses:
        return prev
    comment = _comment(args)
    lines = rules.render_add(mappings, addresses, comment, snat, masq_all, conditions)
    with nft.locked(rules.TABLE):
        state = rules.live_state()
        clashes = rules.conflicts(state.elements, lines, comment)
        if clashes:
            raise CNIError(
                ErrorCode.INTERNAL,
                f"host port {', '.join(clashes)} is already mapped to another container",
                "choose another hostPort, or delete the attachment that holds it",
            )
        stale = rules.render_removal(state.elements, state.rules, {comment})
        rules.apply([*stale, *lines], "add port mappings", skeleton=not state.present)
    if snat:
        _enable_localhost_routing(addresses)
    return prev


def _enable_localhost_routing(addresses: list[IPInterface]) -> None:
    """127.0.0.1:hostPort works only if the link towards the container routes 127/8 (route_localnet)."""
    for address in addresses:
        if address.version != 4:
            continue
        with netns.iproute_here() as ipr:
            name = addr.output_interface(ipr, address.ip)
        if name:
            sysctl.write(f"net/ipv4/conf/{name}/route_localnet", "1", missing_ok=True)


@plugin.delete
def delete(args: CmdArgs) -> None:
    """Remove the attachment's elements, found by comment, whatever ``runtimeConfig`` says.

    Go returns at once from a DEL without ``portMappings``; a runtime that
    sends them only with ADD (``pycni del`` or cnitool without CAP_ARGS) then
    leaves the mappings, and the table, behind. Looking costs one listing.
    """
    rules.remove({_comment(args)}, "remove port mappings")


@plugin.check
def check(args: CmdArgs) -> None:
    prev = prev_result_required(args)
    mappings = load_mappings(args)
    if not mappings:
        return
    load_options(args.fields)
    comment = _comment(args)
    state = rules.live_state()
    mine = [e for e in state.elements if e.comment == comment and e.container.startswith("dnat")]
    mine_rules = [h for h, c in state.rules if c == comment]
    expected = sum(
        1
        for address in container_addresses(prev, args.ifname)
        for m in mappings
        if not m.host_ip or rules.family_of(m.host_ip) == address.version
    )
    if len(mine) + len(mine_rules) < expected:
        raise CNIError(
            ErrorCode.INTERNAL,
            f"portmap: {expected - len(mine) - len(mine_rules)} of {expected} port mappings are missing "
            f"from table {rules.T}",
        )


@plugin.gc
def gc(args: CmdArgs) -> None:
    listed = args.valid_attachments()
    if listed is None:
        return  # no list: nothing is known to be stale
    valid = {rules.attachment_comment(args.name, cid, ifname) for cid, ifname in listed}
    tag = rules.network_tag(args.name) + ":"
    state = rules.live_state()
    doomed = {e.comment for e in state.elements if e.comment.startswith(tag) and e.comment not in valid}
    doomed |= {c for _, c in state.rules if c.startswith(tag) and c not in valid}
    if doomed:
        rules.remove(doomed, "garbage-collect port mappings")


if __name__ == "__main__":
    plugin.main()
