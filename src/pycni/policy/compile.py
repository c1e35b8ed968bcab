"""Policies and profiles in the form Felix enforces: one selector per policy and per rule side, protocols as numbers.

libcalico-go's syncer update processors (``updateprocessors/networkpolicyprocessor.go``,
``globalnetworkpolicyprocessor.go``, ``rules.go``) fold namespaces and service
accounts into selectors before Felix sees a policy, and Felix's IP sets are
named after those selectors, so the strings are built here exactly as there:

* a NetworkPolicy selects ``(<selector>) && projectcalico.org/namespace == '<ns>'``;
  a GlobalNetworkPolicy's namespaceSelector is ANDed in with its labels
  prefixed ``pcns.`` (and ``all()`` read as ``has(projectcalico.org/namespace)``);
  service account selectors are prefixed ``pcsa.``;
* a rule side's selector is limited to the policy's namespace as soon as it
  uses selector, notSelector or namespaceSelector; a namespaceSelector becomes
  ``pcns.`` labels, ``all()`` any namespace, ``global()`` no namespace
  (network sets); ``serviceAccounts.names`` become
  ``projectcalico.org/serviceaccount in {...}``; notSelector stays as written;
* Pass is Felix's ``next-tier``; a policy without order sorts last (+inf),
  ties broken by ``<namespace>/<name>`` (v3.31 ``PolKVLess``).
"""

from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass

from pycni.policy.calico_model import CalicoPolicy, Profile
from pycni.policy.convert import LABEL_NAMESPACE, LABEL_SERVICE_ACCOUNT, NAMESPACE_LABEL_PREFIX
from pycni.policy.convert import SERVICE_ACCOUNT_LABEL_PREFIX as SA_PREFIX
from pycni.policy.rules import ICMP, EntityRule, Port, Rule, ServiceAccountMatch
from pycni.policy.selector import Selector, parse, with_label_prefix

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
HAS_NAMESPACE = f"has({LABEL_NAMESPACE})"


@dataclass(frozen=True)
class CompiledEntity:
    """A rule side: every non-empty field must match (numeric and named ports are ORed together)."""

    nets: tuple[IPNetwork, ...] = ()
    not_nets: tuple[IPNetwork, ...] = ()
    selector: Selector | None = None
    not_selector: Selector | None = None
    ports: tuple[Port, ...] = ()
    named_ports: tuple[str, ...] = ()
    not_ports: tuple[Port, ...] = ()
    not_named_ports: tuple[str, ...] = ()


@dataclass(frozen=True)
class CompiledRule:
    index: int
    action: str
    rule: Rule
    ip_version: int | None
    protocol: int | None
    not_protocol: int | None
    icmp: ICMP | None
    not_icmp: ICMP | None
    source: CompiledEntity
    destination: CompiledEntity


@dataclass(frozen=True)
class CompiledPolicy:
    policy: CalicoPolicy
    selector: Selector
    order: float
    inbound: tuple[CompiledRule, ...]
    outbound: tuple[CompiledRule, ...]

    @property
    def tier(self) -> str:
        return self.policy.tier

    @property
    def name(self) -> str:
        """How Felix names the policy (``<namespace>/<name>`` or ``<name>``), also its sort tie-breaker."""
        return self.policy.key

    def applies(self, direction: str) -> bool:
        return ("Ingress" if direction == "ingress" else "Egress") in self.policy.types

    def rules(self, direction: str) -> tuple[CompiledRule, ...]:
        return self.inbound if direction == "ingress" else self.outbound


@dataclass(frozen=True)
class CompiledProfile:
    profile: Profile
    inbound: tuple[CompiledRule, ...]
    outbound: tuple[CompiledRule, ...]

    def rules(self, direction: str) -> tuple[CompiledRule, ...]:
        return self.inbound if direction == "ingress" else self.outbound


def _prefixed(text: str, prefix: str) -> str:
    return str(with_label_prefix(parse(text), prefix))


def prefix_and_append(current: str, extra: str, prefix: str) -> str:
    """``prefixAndAppendSelector``."""
    if not extra:
        return current
    prefixed = _prefixed(extra, prefix)
    return f"({current}) && {prefixed}" if current else prefixed


def policy_selector_text(policy: CalicoPolicy) -> str:
    """The selector Felix evaluates for the endpoints a policy applies to."""
    selector = policy.selector
    if not policy.is_global:
        in_namespace = f"{LABEL_NAMESPACE} == '{policy.namespace}'"
        selector = f"({selector}) && {in_namespace}" if selector else in_namespace
        return prefix_and_append(selector, policy.service_account_selector, SA_PREFIX)
    if policy.namespace_selector:
        selector = prefix_and_append(selector, policy.namespace_selector, NAMESPACE_LABEL_PREFIX)
        selector = selector.replace("all()", HAS_NAMESPACE)
    if policy.service_account_selector:
        selector = prefix_and_append(selector, policy.service_account_selector, SA_PREFIX)
        selector = selector.replace("all()", f"has({LABEL_SERVICE_ACCOUNT})")
    return selector


def _service_accounts(match: ServiceAccountMatch) -> str:
    """``parseServiceAccounts``."""
    selector = _prefixed(match.selector, SA_PREFIX) if match.selector else ""
    if not match.names:
        return selector
    names = "', '".join(match.names)
    by_name = str(parse(f"{LABEL_SERVICE_ACCOUNT} in {{ '{names}' }}"))
    return f"({selector}) && ({by_name})" if selector else by_name


def entity_selector_text(entity: EntityRule, namespace: str) -> str:
    """``GetEntityRuleSelector``: the one selector for the endpoints a rule side matches ('' for none)."""
    namespace_selector = ""
    if entity.namespace_selector:
        namespace_selector = _prefixed(entity.namespace_selector, NAMESPACE_LABEL_PREFIX)
        namespace_selector = namespace_selector.replace("all()", HAS_NAMESPACE)
        namespace_selector = namespace_selector.replace("global()", f"!{HAS_NAMESPACE}")
    elif namespace:
        namespace_selector = f"{LABEL_NAMESPACE} == '{namespace}'"
    accounts = _service_accounts(entity.service_accounts) if entity.service_accounts else ""
    parts = [s for s in (accounts, entity.selector) if s]
    selector = " && ".join(f"({p})" for p in parts) if len(parts) > 1 else "".join(parts)
    if namespace_selector and (selector or entity.not_selector or entity.namespace_selector):
        selector = f"({namespace_selector}) && ({selector})" if selector else namespace_selector
    return selector


def _entity(entity: EntityRule, namespace: str) -> CompiledEntity:
    selector = entity_selector_text(entity, namespace)
    return CompiledEntity(
        nets=tuple(ipaddress.ip_network(n, strict=False) for n in entity.nets),
        not_nets=tuple(ipaddress.ip_network(n, strict=False) for n in entity.not_nets),
        selector=parse(selector) if selector else None,
        not_selector=parse(entity.not_selector) if entity.not_selector else None,
        ports=tuple(p for p in entity.ports if not p.name),
        named_ports=tuple(p.name for p in entity.ports if p.name),
        not_ports=tuple(p for p in entity.not_ports if not p.name),
        not_named_ports=tuple(p.name for p in entity.not_ports if p.name),
    )


def compile_rule(rule: Rule, index: int, namespace: str) -> CompiledRule:
    """``RuleAPIV3ToBackend`` for the rule at ``index`` of a policy in ``namespace`` ('' for global/profile)."""
    return CompiledRule(
        index=index,
        action=rule.action,
        rule=rule,
        ip_version=rule.ip_version,
        protocol=rule.protocol.number if rule.protocol is not None else None,
        not_protocol=rule.not_protocol.number if rule.not_protocol is not None else None,
        icmp=rule.icmp,
        not_icmp=rule.not_icmp,
        source=_entity(rule.source, namespace),
        destination=_entity(rule.destination, namespace),
    )


def compile_policy(policy: CalicoPolicy) -> CompiledPolicy:
    return CompiledPolicy(
        policy=policy,
        selector=parse(policy_selector_text(policy)),
        order=policy.order if policy.order is not None else math.inf,
        inbound=tuple(compile_rule(r, i, policy.namespace) for i, r in enumerate(policy.ingress)),
        outbound=tuple(compile_rule(r, i, policy.namespace) for i, r in enumerate(policy.egress)),
    )


def compile_profile(profile: Profile) -> CompiledProfile:
    return CompiledProfile(
        profile=profile,
        inbound=tuple(compile_rule(r, i, "") for i, r in enumerate(profile.ingress)),
        outbound=tuple(compile_rule(r, i, "") for i, r in enumerate(profile.egress)),
    )
