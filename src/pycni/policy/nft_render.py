"""The policy table for one node: the evaluator's policies as one ``inet`` nftables table (pure).

:func:`render` takes the :class:`~pycni.policy.evaluate.Evaluator` of the
cluster's current objects and this node's workload interfaces (host interface
name -> endpoint key) and returns the :class:`~pycni.nft.objects.Table` that
enforces what the evaluator decides. :func:`pycni.nft.objects.create` makes it,
:func:`pycni.nft.objects.diff` moves the kernel from the last table to the next
in one transaction of only what changed. The layout is Felix's nftables one
(``felix/rules/static.go``, ``dispatch.go``, ``endpoints.go``)::

    chain forward (filter hook forward)     traffic not to or from a workload interface: not ours, accept;
                                            established/related accept, invalid drop; then
                                            iifname "cali*" jump cali-from-wl-dispatch (the sender's egress)
                                            oifname "cali*" jump cali-to-wl-dispatch   (the receiver's ingress)
    chain input (filter hook input)         iifname "cali*" jump cali-wl-to-host
    chain cali-wl-to-host                   conntrack as above, the sender's egress, then
                                            DefaultEndpointToHostAction (accept, drop or return)
    chain cali-from-wl-dispatch             iifname vmap @cali-from-wl-dispatch; drop "Unknown interface"
    chain cali-to-wl-dispatch               oifname vmap @cali-to-wl-dispatch;   drop "Unknown interface"
    map cali-from/to-wl-dispatch            "<iface>" : goto cali-fw-<iface> / cali-tw-<iface>
    chain cali-fw-<iface> / cali-tw-<iface> clear the marks; per tier: clear Pass ("Start of tier"), per
                                            policy "mark & Pass == 0 jump <policy chain>", "Return if policy
                                            accepted"; "End of tier <t>. Drop if no policies passed packet"
                                            (not for a tier whose defaultAction is Pass); then per profile
                                            "jump cali-pri/pro-<profile>", "Return if profile accepted";
                                            "Drop if no profiles matched"
    chain cali-pi/po-<policy>, cali-pri/pro-<profile>   the rules (:mod:`~pycni.policy.nft_rules`)
    set cali40s-… / cali60s-…, cali40n-…   selectors' and named ports' members (:mod:`~pycni.policy.nft_sets`)

With host endpoints on the node (``host_interfaces``: interface -> endpoint
key, ``*`` for all interfaces), Felix's host chains are added::

    chain input                             ... then iifname "cali*" accept; iifname "lo" accept;
                                            IPv4: iifname vmap @cali-from-hep-dispatch (goto cali-fh-<iface>);
                                            goto cali-fh-any-interface-at-all for a host endpoint of ``*``
    chain output (filter hook output)       oifname "cali*" accept (host to its pods: not policed);
                                            oifname "lo" accept; IPv4: oifname vmap @cali-to-hep-dispatch
                                            (goto cali-th-<iface>), or goto cali-th-any-interface-at-all
    chain cali-fh-<iface> / cali-th-<iface> conntrack; jump cali-failsafe-in / -out; VXLAN (udp 4789) and
                                            IPIP from / to the cluster's hosts (set cali40all-hosts-net)
                                            accepted; then the endpoint's tiers and profiles as above
    chain cali-failsafe-in / -out           the failsafe ports accepted

Forwarded traffic is not host endpoint traffic here (no ``applyOnForward``
chains): pod traffic through the host's interfaces goes by the forward chain.

Endpoint chains are reached with ``goto`` from the dispatch map, so their
``return`` goes back to the base chain, which goes on to the receiver's
ingress: a packet between two pods of the node passes both. An interface
starting with the workload prefix that is not in a map is dropped (fail
closed), so a pod whose endpoint is not known yet has no traffic. Host to
local pod traffic (filter OUTPUT) is not policed, as in Felix. Only policies
and profiles some local endpoint uses get chains, and only the sets their rules
name exist, so the table of a node follows its own pods.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

from pycni.nft import quote
from pycni.nft.objects import Chain, Hook, Map, Set, Table
from pycni.policy import nft_names
from pycni.policy.compile import CompiledPolicy
from pycni.policy.endpoints import ALL_INTERFACES, FailsafePort, HostEndpoint
from pycni.policy.evaluate import EGRESS, INGRESS, IPIP_PROTOCOL, Evaluator
from pycni.policy.index import Endpoint
from pycni.policy.nft_names import (
    ALL_HOSTS,
    FAILSAFE_IN,
    FAILSAFE_OUT,
    FROM_DISPATCH,
    FROM_HEP_DISPATCH,
    MARK_ACCEPT,
    MARK_ALL,
    MARK_PASS,
    TO_DISPATCH,
    TO_HEP_DISPATCH,
    WL_TO_HOST,
    clear,
    endpoint_chain,
    host_endpoint_chain,
    mark,
    policy_chain,
    profile_chain,
)
from pycni.policy.nft_rules import Owner, RuleRenderer
from pycni.policy.nft_sets import SetRegistry

log = logging.getLogger(__name__)

ENDPOINT_TO_HOST = {"Accept": "accept", "Drop": "drop", "Return": "return"}
ACCEPTED = f"meta mark & {mark(MARK_ACCEPT)} != 0"
NOT_PASSED = f"meta mark & {mark(MARK_PASS)} == 0"


@dataclass(frozen=True)
class Options:
    table: str = nft_names.TABLE
    interface_prefix: str = nft_names.INTERFACE_PREFIX
    endpoint_to_host: str | None = None  # Accept, Drop or Return; None: the evaluator's


def _comment(text: str) -> str:
    return f"comment {quote(text)}"


class _Builder:
    def __init__(self, evaluator: Evaluator) -> None:
        self.evaluator = evaluator
        self.sets = SetRegistry(evaluator.index)
        self.rules = RuleRenderer(self.sets)
        self.chains: dict[str, Chain] = {}

    def policy_chain(self, policy: CompiledPolicy, direction: str) -> str:
        name = policy_chain(policy.policy, direction)
        if name not in self.chains:
            owner = Owner(f"{policy.tier}/{nft_names.policy_id(policy.policy)}", direction)
            rules = [text for rule in policy.rules(direction) for text in self.rules.render(rule, owner)]
            self.chains[name] = Chain(name, tuple(rules))
        return name

    def profile_chain(self, profile: str, direction: str) -> str | None:
        compiled = self.evaluator.profiles.get(profile)
        if compiled is None:
            return None  # a profile the endpoint names but nobody defined: skipped, as the evaluator skips it
        name = profile_chain(profile, direction)
        if name not in self.chains:
            owner = Owner(f"profile {profile}", direction)
            rules = [text for rule in compiled.rules(direction) for text in self.rules.render(rule, owner)]
            self.chains[name] = Chain(name, tuple(rules))
        return name

    def endpoint_rules(self, endpoint: Endpoint, direction: str) -> tuple[str, ...]:
        rules = [f"{clear(MARK_ALL)} {_comment('Clear the accept and pass marks')}"]
        for tier, chosen in self.evaluator.applicable(endpoint, direction):
            rules.append(f"{clear(MARK_PASS)} {_comment(f'Start of tier {tier.name}')}")
            for policy in chosen:
                rules.append(f"{NOT_PASSED} jump {self.policy_chain(policy, direction)}")
                rules.append(f"{ACCEPTED} return {_comment('Return if policy accepted')}")
            if tier.default_action != "Pass":
                rules.append(
                    f"{NOT_PASSED} drop {_comment(f'End of tier {tier.name}. Drop if no policies passed packet')}"
                )
        for profile in endpoint.profiles:
            chain = self.profile_chain(profile, direction)
            if chain is not None:
                rules.append(f"jump {chain}")
                rules.append(f"{ACCEPTED} return {_comment('Return if profile accepted')}")
        rules.append(f"drop {_comment('Drop if no profiles matched')}")
        return tuple(rules)


def fixed_chains(options: Options, endpoint_to_host: str) -> list[Chain]:
    """The base chains, the endpoint-to-host chain and the dispatch chains (the same on every node)."""
    wildcard = f'"{options.interface_prefix}*"'
    verdict = ENDPOINT_TO_HOST.get(endpoint_to_host)
    if verdict is None:
        raise ValueError(f"DefaultEndpointToHostAction {endpoint_to_host!r}: use one of {', '.join(ENDPOINT_TO_HOST)}")
    conntrack = ("ct state established,related accept", "ct state invalid drop")
    return [
        Chain(
            "forward",
            (
                f"iifname != {wildcard} oifname != {wildcard} accept {_comment('Not workload traffic')}",
                *conntrack,
                f"iifname {wildcard} jump {FROM_DISPATCH}",
                f"oifname {wildcard} jump {TO_DISPATCH}",
            ),
            Hook("filter", "forward", "filter", "accept"),
        ),
        Chain("input", (f"iifname {wildcard} jump {WL_TO_HOST}",), Hook("filter", "input", "filter", "accept")),
        Chain(
            WL_TO_HOST,
            (
                *conntrack,
                f"jump {FROM_DISPATCH}",
                f"{verdict} {_comment(f'Configured DefaultEndpointToHostAction {endpoint_to_host}')}",
            ),
        ),
        Chain(FROM_DISPATCH, (f"iifname vmap @{FROM_DISPATCH}", f"drop {_comment('Unknown interface')}")),
        Chain(TO_DISPATCH, (f"oifname vmap @{TO_DISPATCH}", f"drop {_comment('Unknown interface')}")),
    ]


def failsafe_rules(ports: tuple[FailsafePort, ...], direction: str) -> tuple[str, ...]:
    """One rule per protocol for the ports open to any address, one per port limited to a net."""
    peer = "saddr" if direction == INGRESS else "daddr"
    rules = []
    for protocol in ("tcp", "udp", "sctp"):
        anywhere = sorted({p.port for p in ports if p.protocol == protocol and p.net is None})
        if anywhere:
            rules.append(f"{protocol} dport {{ {', '.join(map(str, anywhere))} }} accept")
    for port in ports:
        if port.net is not None:
            family = "ip" if port.net.version == 4 else "ip6"
            rules.append(f"{family} {peer} {port.net} {port.protocol} dport {port.port} accept")
    return tuple(rules)


def host_endpoint_rules(builder: _Builder, hep: HostEndpoint, direction: str) -> tuple[str, ...]:
    """cali-fh-/cali-th-: conntrack, the failsafe ports, the overlay between hosts, then the endpoint's policy."""
    peer, way = ("saddr", "from") if direction == INGRESS else ("daddr", "to")
    vxlan = builder.evaluator.vxlan_port
    return (
        "ct state established,related accept",
        "ct state invalid drop",
        f"jump {FAILSAFE_IN if direction == INGRESS else FAILSAFE_OUT}",
        f"udp dport {vxlan} ip {peer} @{ALL_HOSTS} accept {_comment(f'Allow VXLAN packets {way} hosts')}",
        f"meta l4proto {IPIP_PROTOCOL} ip {peer} @{ALL_HOSTS} accept {_comment(f'Allow IPIP packets {way} hosts')}",
        *builder.endpoint_rules(hep, direction),
    )


@dataclass
class HostChains:
    """What a node's host endpoints add to the table: rules appended to input, chains, maps, the hosts set."""

    input_rules: list[str] = field(default_factory=list)
    chains: dict[str, Chain] = field(default_factory=dict)
    maps: dict[str, Map] = field(default_factory=dict)
    sets: dict[str, Set] = field(default_factory=dict)


def host_chains(builder: _Builder, host_interfaces: Mapping[str, str], options: Options) -> HostChains:
    """The host endpoint chains of this node's ``host_interfaces`` (interface or ``*`` -> endpoint key).

    IPv4 only (``meta nfproto ipv4``): the overlay rules and the hosts set are IPv4, and an IPv6
    host behind a default deny would lose neighbour discovery, which conntrack does not track.
    ``lo`` is never a host endpoint here (Felix's ``*`` takes it too): a default deny on lo cuts the
    node's own local services, agent included, for no protection the other interfaces do not give.
    """
    evaluator = builder.evaluator
    wildcard = f'"{options.interface_prefix}*"'
    out = HostChains()
    from_map: dict[str, str] = {}
    to_map: dict[str, str] = {}
    catch_all = False
    for interface, key in sorted(host_interfaces.items()):
        hep = evaluator.index.host_endpoints.get(key)
        if hep is None:
            continue
        if not nft_names.is_host_interface(interface, options.interface_prefix):
            log.warning("host endpoint %s: interface %s is not policed as a host interface", hep.name, interface)
            continue
        for direction, table in ((INGRESS, from_map), (EGRESS, to_map)):
            name = host_endpoint_chain(interface, direction)
            out.chains[name] = Chain(name, host_endpoint_rules(builder, hep, direction))
            if interface != ALL_INTERFACES:
                table[f'"{interface}"'] = f"goto {name}"
        catch_all |= interface == ALL_INTERFACES
    if not out.chains:
        return out
    ipv4 = "meta nfproto ipv4"
    out.input_rules = [
        f"iifname {wildcard} accept {_comment('Workload traffic to the host: decided above')}",
        'iifname "lo" accept',
        f"{ipv4} iifname vmap @{FROM_HEP_DISPATCH}",
    ]
    output_rules = [
        f"oifname {wildcard} accept {_comment('Host to local workload: not policed')}",
        'oifname "lo" accept',
        f"{ipv4} oifname vmap @{TO_HEP_DISPATCH}",
    ]
    if catch_all:
        out.input_rules.append(f"{ipv4} goto {host_endpoint_chain(ALL_INTERFACES, INGRESS)}")
        output_rules.append(f"{ipv4} goto {host_endpoint_chain(ALL_INTERFACES, EGRESS)}")
    out.chains[FAILSAFE_IN] = Chain(FAILSAFE_IN, failsafe_rules(evaluator.failsafe[INGRESS], INGRESS))
    out.chains[FAILSAFE_OUT] = Chain(FAILSAFE_OUT, failsafe_rules(evaluator.failsafe[EGRESS], EGRESS))
    out.chains["output"] = Chain("output", tuple(output_rules), Hook("filter", "output", "filter", "accept"))
    out.maps = {
        FROM_HEP_DISPATCH: Map(FROM_HEP_DISPATCH, "ifname : verdict", from_map),
        TO_HEP_DISPATCH: Map(TO_HEP_DISPATCH, "ifname : verdict", to_map),
    }
    hosts = frozenset(str(ip) for host in evaluator.index.hosts.values() for ip in host.ips if ip.version == 4)
    out.sets = {ALL_HOSTS: Set(ALL_HOSTS, "ipv4_addr", (), hosts)}
    return out


def render(
    evaluator: Evaluator,
    interfaces: Mapping[str, str],
    options: Options | None = None,
    host_interfaces: Mapping[str, str] | None = None,
) -> Table:
    """The table for this node's workload ``interfaces`` (host interface name -> ``<namespace>/<pod>``).

    ``host_interfaces``: this node's host endpoints (interface or ``*`` -> the endpoint's key).
    """
    options = options or Options()
    builder = _Builder(evaluator)
    chains = {c.name: c for c in fixed_chains(options, options.endpoint_to_host or evaluator.endpoint_to_host)}
    from_map: dict[str, str] = {}
    to_map: dict[str, str] = {}
    endpoint_chains: dict[str, Chain] = {}
    for interface, key in sorted(interfaces.items()):
        endpoint = evaluator.index.endpoints.get(key)
        if endpoint is None:
            log.warning("interface %s: no workload endpoint %s is known; its traffic is dropped", interface, key)
            continue
        if not interface.startswith(options.interface_prefix):
            log.warning("interface %s of %s lacks the prefix %r: not policed", interface, key, options.interface_prefix)
            continue
        for direction, table in ((EGRESS, from_map), (INGRESS, to_map)):
            name = endpoint_chain(interface, direction)
            endpoint_chains[name] = Chain(name, builder.endpoint_rules(endpoint, direction))
            table[f'"{interface}"'] = f"goto {name}"
    maps = {
        FROM_DISPATCH: Map(FROM_DISPATCH, "ifname : verdict", from_map),
        TO_DISPATCH: Map(TO_DISPATCH, "ifname : verdict", to_map),
    }
    chains |= endpoint_chains
    hosts = host_chains(builder, host_interfaces or {}, options)
    if hosts.input_rules:
        base = chains["input"]
        chains["input"] = Chain(base.name, (*base.rules, *hosts.input_rules), base.hook)
    chains |= hosts.chains
    maps |= hosts.maps
    chains |= dict(sorted(builder.chains.items()))
    return Table(nft_names.FAMILY, options.table, chains, builder.sets.sets() | hosts.sets, maps)
