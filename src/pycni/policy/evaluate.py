"""The oracle: is this packet allowed, and which tier, policy and rule (or default) decided it?

It walks the chains Felix builds for a workload endpoint
(``felix/rules/endpoints.go`` ``endpointIptablesChain``), egress at the
source's endpoint, then ingress at the destination's:

* tiers in order (order, then name; a tier no Tier object defines sorts last
  and denies); in a tier, the policies whose selector matches the endpoint and
  whose types include the direction, by order (none = last) then name;
* a policy's rules in order: Allow accepts this direction, Deny drops, Pass
  skips the rest of the tier, Log records a hit and goes on; a policy with no
  matching rule hands over to the next policy;
* a tier with at least one applicable policy and no verdict ends in its
  defaultAction: Deny, or Pass on to the next tier;
* after the tiers (none applied, or all passed) the endpoint's profiles in
  order; the namespace profile ``kns.<ns>`` allows all; no profile accepting
  means drop.

Kubernetes NetworkPolicies arrive converted (tier default, order 1000, all
Allow), which gives Kubernetes semantics: isolation per direction only for the
pods a policy selects, the union of their allows. Traffic from a pod's own
node is not policed on ingress (Felix returns early in filter OUTPUT), nor is
a pod's traffic to its own address. The evaluator judges the first packet of a
flow: replies of an allowed connection pass on conntrack, as in the kernel.

Host endpoints police what a host receives (ingress) and sends (egress)
through their interface, with the same tiers and profiles (only
GlobalNetworkPolicies select them): first the failsafe ports, open whatever
the policy says, and VXLAN/IPIP between the cluster's hosts (Felix lets the
overlay through before host endpoint policy); then tiers, then the endpoint's
profiles, and nothing accepting means drop. The oracle places a host endpoint
where the table polices it (:meth:`~pycni.policy.index.EndpointIndex.host_endpoint`:
a named interface at its expectedIPs, else the node's address; ``*`` at all of
the node's addresses; IPv4 only). Traffic
between a host and its own pods is not host endpoint traffic (it goes through
the pods' interfaces), and traffic forwarded through the host is not policed
by host endpoints (pycni renders no ``applyOnForward`` chains). The oracle
does not model natOutgoing: a pod's packet to another node's address leaves
masqueraded, so that node's host endpoint sees the sending node's address,
where the oracle matches the pod's. DefaultEndpointToHostAction ``Return``
lets a pod's traffic to its own node go on to the host's other rules, which
the oracle counts as allowed.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum

from pycni.policy.calico_model import SEEDED_TIERS, CalicoPolicy, GlobalNetworkSet, Profile, Tier, seeded_tier
from pycni.policy.compile import CompiledPolicy, CompiledRule, compile_policy, compile_profile
from pycni.policy.endpoints import (
    FAILSAFE_INBOUND,
    FAILSAFE_OUTBOUND,
    FailsafePort,
    Host,
    HostEndpoint,
    WorkloadEndpoint,
)
from pycni.policy.index import PORT_PROTOCOL_NUMBERS, Endpoint, EndpointIndex
from pycni.policy.match import Packet, rule_matches

INGRESS, EGRESS = "ingress", "egress"
VXLAN_PORT = 4789  # FelixConfiguration vxlanPort's default
IPIP_PROTOCOL = 4


class Reason(Enum):
    RULE = "rule"
    END_OF_TIER = "end of tier"
    PROFILE = "profile"
    NO_PROFILE = "no profile accepted"
    NOT_POLICED = "not policed"
    TO_HOST = "endpoint to host"
    FAILSAFE = "failsafe"
    OVERLAY = "overlay between hosts"


@dataclass(frozen=True)
class LogHit:
    """A Log rule the packet matched on its way (Felix logs it with prefix ``calico-packet`` and goes on)."""

    direction: str
    endpoint: str
    policy: str
    rule_index: int
    tier: str | None = None

    def __str__(self) -> str:
        where = f"tier {self.tier} policy {self.policy}" if self.tier else f"profile {self.policy}"
        return f"{self.direction} of {self.endpoint}: {where} {self.direction} rule {self.rule_index} (Log)"


@dataclass(frozen=True)
class Decision:
    """The verdict of one direction at one endpoint, and what produced it."""

    direction: str
    endpoint: str
    allowed: bool
    reason: Reason
    tier: str | None = None
    policy: str | None = None
    rule_index: int | None = None
    applied: tuple[str, ...] = ()
    passed: tuple[str, ...] = ()
    note: str = ""

    def describe(self) -> str:
        verdict = "allowed" if self.allowed else "denied"
        head = f"{self.direction} of {self.endpoint} {verdict}"
        passed = f" (after tiers {', '.join(self.passed)} passed)" if self.passed else ""
        if self.reason is Reason.RULE:
            action = "Allow" if self.allowed else "Deny"
            return (
                f"{head} by tier {self.tier}, policy {self.policy}, {self.direction} rule {self.rule_index} ({action})"
            )
        if self.reason is Reason.END_OF_TIER:
            return (
                f"{head}: end of tier {self.tier}, defaultAction Deny: selected by {', '.join(self.applied)}"
                f" but none allowed{passed}"
            )
        if self.reason is Reason.PROFILE:
            why = "no policy applies" if not self.passed else f"tiers {', '.join(self.passed)} passed"
            action = "Allow" if self.allowed else "Deny"
            return f"{head}: {why}, profile {self.policy} {self.direction} rule {self.rule_index} ({action})"
        if self.reason is Reason.NO_PROFILE:
            return f"{head}: no policy decided and no profile accepted{passed}"
        return f"{head}: {self.note}"


@dataclass(frozen=True)
class Verdict:
    packet: Packet
    allowed: bool
    egress: Decision | None = None
    ingress: Decision | None = None
    logs: tuple[LogHit, ...] = ()
    note: str = ""

    @property
    def decisive(self) -> Decision | None:
        """The decision that denied the packet, else the last one that allowed it."""
        for decision in (self.egress, self.ingress):
            if decision is not None and not decision.allowed:
                return decision
        return self.ingress or self.egress

    def describe(self) -> str:
        lines = [f"{self.packet}: {'ALLOWED' if self.allowed else 'DENIED'}"]
        lines += [f"  {d.describe()}" for d in (self.egress, self.ingress) if d is not None]
        if self.note:
            lines.append(f"  {self.note}")
        lines += [f"  log: {hit}" for hit in self.logs]
        return "\n".join(lines)


@dataclass(frozen=True)
class _Outcome:
    action: str | None
    rule: CompiledRule | None = None
    logs: tuple[CompiledRule, ...] = field(default=())


def _run(rules: Iterable[CompiledRule], packet: Packet, index: EndpointIndex) -> _Outcome:
    logs = []
    for rule in rules:
        if not rule_matches(rule, packet, index):
            continue
        if rule.action == "Log":
            logs.append(rule)
            continue
        return _Outcome(rule.action, rule, tuple(logs))
    return _Outcome(None, None, tuple(logs))


def _tier_key(tier: Tier, known: bool) -> tuple[bool, bool, float, str]:
    """``TierLess``: defined tiers first, then by order (none = last), then by name."""
    return (not known, tier.order is None, tier.order or 0.0, tier.name)


class Evaluator:
    """Policies, tiers, profiles, network sets, endpoints and hosts, compiled once; :meth:`evaluate` per packet."""

    def __init__(
        self,
        policies: Iterable[CalicoPolicy] = (),
        *,
        tiers: Iterable[Tier] = (),
        profiles: Iterable[Profile] = (),
        network_sets: Iterable[GlobalNetworkSet] = (),
        endpoints: Iterable[WorkloadEndpoint] = (),
        hosts: Iterable[Host] = (),
        host_endpoints: Iterable[HostEndpoint] = (),
        endpoint_to_host: str = "Accept",
        failsafe_inbound: tuple[FailsafePort, ...] = FAILSAFE_INBOUND,
        failsafe_outbound: tuple[FailsafePort, ...] = FAILSAFE_OUTBOUND,
        vxlan_port: int = VXLAN_PORT,
    ) -> None:
        self.tiers = {name: seeded_tier(name) for name in SEEDED_TIERS} | {t.name: t for t in tiers}
        self.profiles = {p.name: compile_profile(p) for p in profiles}
        self.index = EndpointIndex(
            endpoints, {n: p.profile for n, p in self.profiles.items()}, network_sets, hosts, host_endpoints
        )
        self.endpoint_to_host = endpoint_to_host
        self.failsafe = {INGRESS: failsafe_inbound, EGRESS: failsafe_outbound}
        self.vxlan_port = vxlan_port
        by_tier: dict[str, list[CompiledPolicy]] = defaultdict(list)
        for policy in policies:
            if policy.do_not_track or policy.pre_dnat:
                continue  # untracked and pre-DNAT policies: not enforced by pycni (the agent reports them)
            by_tier[policy.tier].append(compile_policy(policy))
        for name in by_tier:
            self.tiers.setdefault(name, Tier(name))  # referenced but not defined: Felix sorts it last and denies
        known = {t.name for t in tiers} | set(SEEDED_TIERS)
        self.tier_order = sorted(self.tiers.values(), key=lambda t: _tier_key(t, t.name in known))
        self.policies = {name: sorted(pols, key=lambda p: (p.order, p.name)) for name, pols in by_tier.items()}

    def applicable(self, endpoint: Endpoint, direction: str) -> list[tuple[Tier, list[CompiledPolicy]]]:
        """The tiers that have policies for this endpoint and direction, each with those policies in order."""
        labels = self.index.labels(endpoint)
        out = []
        for tier in self.tier_order:
            chosen = [
                p for p in self.policies.get(tier.name, []) if p.applies(direction) and p.selector.matches(labels)
            ]
            if chosen:
                out.append((tier, chosen))
        return out

    def decide(self, endpoint: Endpoint, direction: str, packet: Packet, logs: list[LogHit]) -> Decision:
        """One direction at one endpoint: tiers, then profiles."""
        passed: list[str] = []
        for tier, chosen in self.applicable(endpoint, direction):
            tier_passed = False
            for policy in chosen:
                outcome = _run(policy.rules(direction), packet, self.index)
                logs += [LogHit(direction, endpoint.key, policy.name, r.index, tier.name) for r in outcome.logs]
                if outcome.action in ("Allow", "Deny"):
                    assert outcome.rule is not None
                    allowed = outcome.action == "Allow"
                    return Decision(
                        direction, endpoint.key, allowed, Reason.RULE, tier.name, policy.name, outcome.rule.index
                    )
                if outcome.action == "Pass":
                    tier_passed = True
                    break
            if tier_passed or tier.default_action == "Pass":
                passed.append(tier.name)
                continue
            names = tuple(p.name for p in chosen)
            done = tuple(passed)
            return Decision(direction, endpoint.key, False, Reason.END_OF_TIER, tier.name, applied=names, passed=done)
        for name in endpoint.profiles:
            profile = self.profiles.get(name)
            if profile is None:
                continue
            outcome = _run(profile.rules(direction), packet, self.index)
            logs += [LogHit(direction, endpoint.key, name, r.index) for r in outcome.logs]
            if outcome.action in ("Allow", "Deny"):
                assert outcome.rule is not None
                allowed = outcome.action == "Allow"
                return Decision(
                    direction,
                    endpoint.key,
                    allowed,
                    Reason.PROFILE,
                    None,
                    name,
                    outcome.rule.index,
                    passed=tuple(passed),
                )
        return Decision(direction, endpoint.key, False, Reason.NO_PROFILE, passed=tuple(passed))

    def host_decision(self, hep: HostEndpoint, direction: str, packet: Packet, logs: list[LogHit]) -> Decision:
        """One direction at a host endpoint: failsafe ports, the overlay between hosts, then policy."""
        peer = packet.src if direction == INGRESS else packet.dst
        for port in self.failsafe[direction]:
            if (
                PORT_PROTOCOL_NUMBERS[port.protocol.upper()] == packet.protocol
                and packet.dst_port == port.port
                and (port.net is None or peer in port.net)
            ):
                note = f"failsafe {'inbound' if direction == INGRESS else 'outbound'} port {port}"
                return Decision(direction, hep.key, True, Reason.FAILSAFE, note=note)
        overlay = packet.protocol == IPIP_PROTOCOL or (packet.protocol == 17 and packet.dst_port == self.vxlan_port)
        if overlay and self.index.host(peer) is not None:
            note = "VXLAN/IPIP between the cluster's hosts is let through before host endpoint policy"
            return Decision(direction, hep.key, True, Reason.OVERLAY, note=note)
        return self.decide(hep, direction, packet, logs)

    def evaluate(self, packet: Packet) -> Verdict:
        """The packet's fate: egress at its source endpoint, then ingress at its destination endpoint."""
        source, target = self.index.endpoint(packet.src), self.index.endpoint(packet.dst)
        if source is not None and source is target:
            return Verdict(packet, True, note=f"{source.key} to its own address stays in its network namespace")
        logs: list[LogHit] = []
        egress = ingress = None
        src_hep = self.index.host_endpoint(packet.src) if source is None else None
        dst_hep = self.index.host_endpoint(packet.dst) if target is None else None
        if source is not None:
            egress = self.decide(source, EGRESS, packet, logs)
            if not egress.allowed:
                return Verdict(packet, False, egress, None, tuple(logs))
            host = self.index.host(packet.dst)
            own = host.name if host is not None else dst_hep.node if dst_hep is not None else None
            if own is not None and own == source.node:
                dst_hep = None  # a pod to its own node: not the host endpoint's traffic (it comes in on cali*)
                if self.endpoint_to_host == "Drop":
                    note = f"to its own node {own}: DefaultEndpointToHostAction Drop"
                    to_host = Decision(EGRESS, source.key, False, Reason.TO_HOST, note=note)
                    return Verdict(packet, False, to_host, None, tuple(logs))
        elif src_hep is not None and not (target is not None and target.node == src_hep.node):
            egress = self.host_decision(src_hep, EGRESS, packet, logs)
            if not egress.allowed:
                return Verdict(packet, False, egress, None, tuple(logs))
        if target is not None:
            host = self.index.host(packet.src)
            own = host.name if host is not None else src_hep.node if src_hep is not None else None
            if own is not None and own == target.node:
                note = f"from its own node {own}: Felix does not police host-to-local-pod traffic"
                ingress = Decision(INGRESS, target.key, True, Reason.NOT_POLICED, note=note)
            else:
                ingress = self.decide(target, INGRESS, packet, logs)
        elif dst_hep is not None and not (src_hep is not None and src_hep.node == dst_hep.node):
            ingress = self.host_decision(dst_hep, INGRESS, packet, logs)
        allowed = all(d.allowed for d in (egress, ingress) if d is not None)
        policed = source or target or egress or ingress
        note = "" if policed else "neither address is a workload or host endpoint: no policy applies"
        return Verdict(packet, allowed, egress, ingress, tuple(logs), note)
