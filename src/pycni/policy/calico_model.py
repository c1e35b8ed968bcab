"""Calico's projectcalico.org/v3 policy kinds: NetworkPolicy, GlobalNetworkPolicy, Tier, GlobalNetworkSet, Profile.

Parsed strictly from decoded YAML/JSON with the field names and defaults of
``api/pkg/apis/projectcalico/v3`` and clientv3: a policy's tier is
``default`` when omitted; its ``types`` default to ``[Ingress]`` without egress
rules, ``[Egress]`` with only egress rules, both with both
(``defaultPolicyTypesField``); ``order`` may be omitted (applied last). A
Tier's defaultAction is Deny unless Pass; the seeded tiers are ``default``
(order 1,000,000, Deny), ``kube-admin`` (1,000, Pass) and ``kube-baseline``
(10,000,000, Pass). ``to_dict`` gives the resource as Calico stores it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pycni.policy import decode
from pycni.policy.errors import Problems
from pycni.policy.names import (
    calico_policy_name_problem,
    dns_label_problem,
    dns_subdomain_problem,
    label_problem,
)
from pycni.policy.rules import Rule, parse_rules, selector_text

API_VERSION = "projectcalico.org/v3"
DEFAULT_TIER = "default"
# clientv3 EnsureInitialized: name -> (order, defaultAction).
SEEDED_TIERS = {
    "default": (1_000_000.0, "Deny"),
    "kube-admin": (1_000.0, "Pass"),
    "kube-baseline": (10_000_000.0, "Pass"),
}
PERFORMANCE_HINTS = ("AssumeNeededOnEveryNode",)


@dataclass(frozen=True)
class Tier:
    name: str
    order: float | None = None
    default_action: str = "Deny"

    def to_dict(self) -> dict[str, Any]:
        spec: dict[str, Any] = {}
        if self.order is not None:
            spec["order"] = self.order
        spec["defaultAction"] = self.default_action
        return {"kind": "Tier", "apiVersion": API_VERSION, "metadata": {"name": self.name}, "spec": spec}


def seeded_tier(name: str) -> Tier:
    order, action = SEEDED_TIERS[name]
    return Tier(name, order, action)


@dataclass(frozen=True)
class CalicoPolicy:
    """A NetworkPolicy (``namespace`` set) or GlobalNetworkPolicy (``namespace`` empty), defaults applied."""

    kind: str
    name: str
    namespace: str = ""
    tier: str = DEFAULT_TIER
    order: float | None = None
    selector: str = ""
    types: tuple[str, ...] = ("Ingress",)
    ingress: tuple[Rule, ...] = ()
    egress: tuple[Rule, ...] = ()
    service_account_selector: str = ""
    namespace_selector: str = ""
    do_not_track: bool = False
    pre_dnat: bool = False
    apply_on_forward: bool = False
    performance_hints: tuple[str, ...] = ()

    @property
    def is_global(self) -> bool:
        return self.kind == "GlobalNetworkPolicy"

    @property
    def key(self) -> str:
        """``<namespace>/<name>`` for a NetworkPolicy, ``<name>`` for a GlobalNetworkPolicy."""
        return self.name if self.is_global else f"{self.namespace}/{self.name}"

    def to_dict(self) -> dict[str, Any]:
        spec: dict[str, Any] = {}
        if self.tier:
            spec["tier"] = self.tier
        if self.order is not None:
            spec["order"] = self.order
        if self.ingress:
            spec["ingress"] = [r.to_dict() for r in self.ingress]
        if self.egress:
            spec["egress"] = [r.to_dict() for r in self.egress]
        if self.selector:
            spec["selector"] = self.selector
        spec["types"] = list(self.types)
        if self.is_global:
            for key, flag in (
                ("doNotTrack", self.do_not_track),
                ("preDNAT", self.pre_dnat),
                ("applyOnForward", self.apply_on_forward),
            ):
                if flag:
                    spec[key] = True
        if self.service_account_selector:
            spec["serviceAccountSelector"] = self.service_account_selector
        if self.is_global and self.namespace_selector:
            spec["namespaceSelector"] = self.namespace_selector
        if self.performance_hints:
            spec["performanceHints"] = list(self.performance_hints)
        metadata = {"name": self.name} if self.is_global else {"name": self.name, "namespace": self.namespace}
        return {"kind": self.kind, "apiVersion": API_VERSION, "metadata": metadata, "spec": spec}


@dataclass(frozen=True)
class GlobalNetworkSet:
    """Labelled CIDRs: policy selectors match the set's labels, so its nets match like endpoints' IPs."""

    name: str
    nets: tuple[str, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)

    @property
    def networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        return tuple(ipaddress.ip_network(n, strict=False) for n in self.nets)


@dataclass(frozen=True)
class Profile:
    """Rules applied when no tier decides, and labels every endpoint using the profile inherits."""

    name: str
    ingress: tuple[Rule, ...] = ()
    egress: tuple[Rule, ...] = ()
    labels_to_apply: Mapping[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        spec: dict[str, Any] = {}
        if self.ingress:
            spec["ingress"] = [r.to_dict() for r in self.ingress]
        if self.egress:
            spec["egress"] = [r.to_dict() for r in self.egress]
        if self.labels_to_apply:
            spec["labelsToApply"] = dict(self.labels_to_apply)
        return {"kind": "Profile", "apiVersion": API_VERSION, "metadata": {"name": self.name}, "spec": spec}


CalicoObject = CalicoPolicy | Tier | GlobalNetworkSet | Profile
KINDS = ("NetworkPolicy", "GlobalNetworkPolicy", "Tier", "GlobalNetworkSet", "Profile")

_NP_FIELDS = ("tier", "order", "ingress", "egress", "selector", "types", "serviceAccountSelector", "performanceHints")
_GNP_FIELDS = (
    "tier",
    "order",
    "ingress",
    "egress",
    "selector",
    "types",
    "doNotTrack",
    "preDNAT",
    "applyOnForward",
    "serviceAccountSelector",
    "namespaceSelector",
    "performanceHints",
)


def default_types(ingress: tuple[Rule, ...], egress: tuple[Rule, ...]) -> tuple[str, ...]:
    """clientv3 ``defaultPolicyTypesField``."""
    if not egress:
        return ("Ingress",)
    return ("Egress",) if not ingress else ("Ingress", "Egress")


def parse_calico(document: Any) -> CalicoObject:
    """One projectcalico.org/v3 object of a policy kind; raises PolicyError listing every problem."""
    kind = document.get("kind") if isinstance(document, dict) else None
    if kind not in KINDS:
        kind = "NetworkPolicy"  # check_kind reports the wrong kind and what is accepted
    document = decode.check_kind(document, API_VERSION, str(kind))
    problems = Problems()
    decode.mapping(document, "", problems, ("apiVersion", "kind", "metadata", "spec"), f"a {kind}")
    name, namespace, labels = decode.metadata(document.get("metadata"), problems, label_problem, fold_case=True)
    spec = document.get("spec")
    result: CalicoObject
    if kind == "Tier":
        result = _tier(name, spec, problems)
    elif kind == "GlobalNetworkSet":
        result = _network_set(name, labels, spec, problems)
    elif kind == "Profile":
        result = _profile(name, spec, problems)
    else:
        result = _policy(str(kind), name, namespace, spec, problems)
    if kind != "NetworkPolicy" and namespace:
        problems.add("metadata.namespace", f"namespace should not be specified: {kind} is not namespaced")
    subject = f"{kind} {namespace}/{name}" if kind == "NetworkPolicy" else f"{kind} {name}"
    problems.check(subject)
    return result


def _policy(kind: str, name: str, namespace: str, value: Any, problems: Problems) -> CalicoPolicy:
    is_global = kind == "GlobalNetworkPolicy"
    namespace = "" if is_global else namespace or "default"
    spec = decode.mapping(value, "spec", problems, _GNP_FIELDS if is_global else _NP_FIELDS, "spec", fold_case=True)
    if name:
        problem = calico_policy_name_problem(name, global_policy=is_global)
        if problem:
            problems.add("metadata.name", problem)
    if namespace:
        problem = dns_label_problem(namespace)
        if problem:
            problems.add("metadata.namespace", problem)
    tier = decode.string(spec.get("tier"), "spec.tier", problems) or DEFAULT_TIER
    problem = dns_label_problem(tier)
    if problem:
        problems.add("spec.tier", problem)
    ingress = parse_rules(spec.get("ingress"), "spec.ingress", problems)
    egress = parse_rules(spec.get("egress"), "spec.egress", problems)
    types = decode.strings(spec.get("types"), "spec.types", problems)
    for index, kind_name in enumerate(types):
        if kind_name not in ("Ingress", "Egress"):
            problems.add(f"spec.types[{index}]", f"got {kind_name!r}; use Ingress or Egress")
        elif kind_name in types[:index]:
            problems.add("spec.types", f"'{kind_name}' type specified more than once")
    hints = decode.strings(spec.get("performanceHints"), "spec.performanceHints", problems)
    for index, hint in enumerate(hints):
        if hint not in PERFORMANCE_HINTS or hint in hints[:index]:
            problems.add(f"spec.performanceHints[{index}]", f"got {hint!r}; the only hint is AssumeNeededOnEveryNode")
    policy = CalicoPolicy(
        kind=kind,
        name=name,
        namespace=namespace,
        tier=tier,
        order=decode.number(spec.get("order"), "spec.order", problems),
        selector=selector_text(spec.get("selector"), "spec.selector", problems),
        types=types or default_types(ingress, egress),
        ingress=ingress,
        egress=egress,
        service_account_selector=selector_text(
            spec.get("serviceAccountSelector"), "spec.serviceAccountSelector", problems
        ),
        namespace_selector=selector_text(spec.get("namespaceSelector"), "spec.namespaceSelector", problems),
        do_not_track=decode.boolean(spec.get("doNotTrack"), "spec.doNotTrack", problems),
        pre_dnat=decode.boolean(spec.get("preDNAT"), "spec.preDNAT", problems),
        apply_on_forward=decode.boolean(spec.get("applyOnForward"), "spec.applyOnForward", problems),
        performance_hints=hints,
    )
    _check_policy(policy, problems)
    return policy


def _check_policy(policy: CalicoPolicy, problems: Problems) -> None:
    for index, rule in enumerate(policy.egress):
        if rule.http is not None:
            problems.add(f"spec.egress[{index}].http", "not allowed in egress rules (HTTP match is for ingress)")
    if policy.do_not_track and policy.pre_dnat:
        problems.add("spec.preDNAT", "PreDNAT and DoNotTrack cannot both be true: choose one")
    if (policy.do_not_track or policy.pre_dnat) and not policy.apply_on_forward:
        flag = "doNotTrack" if policy.do_not_track else "preDNAT"
        problems.add("spec.applyOnForward", f"must be true when {flag} is true")
    if policy.pre_dnat and policy.egress:
        problems.add("spec.egress", "PreDNAT policy cannot have any egress rules")
    if policy.pre_dnat and "Egress" in policy.types:
        problems.add("spec.types", "PreDNAT policy cannot have 'Egress' type")


def _tier(name: str, value: Any, problems: Problems) -> Tier:
    spec = decode.mapping(value, "spec", problems, ("order", "defaultAction"), "spec", fold_case=True)
    if name:
        problem = dns_label_problem(name)
        if problem:
            problems.add("metadata.name", problem)
    action = decode.string(spec.get("defaultAction"), "spec.defaultAction", problems) or "Deny"
    if action not in ("Deny", "Pass"):
        problems.add("spec.defaultAction", f"got {action!r}; use Deny or Pass")
    if name in SEEDED_TIERS and action != SEEDED_TIERS[name][1]:
        problems.add("spec.defaultAction", f"The '{name}' tier must have default action '{SEEDED_TIERS[name][1]}'")
    return Tier(name, decode.number(spec.get("order"), "spec.order", problems), action)


def _network_set(name: str, labels: Mapping[str, str], value: Any, problems: Problems) -> GlobalNetworkSet:
    spec = decode.mapping(value, "spec", problems, ("nets",), "spec", fold_case=True)
    if name:
        problem = dns_subdomain_problem(name)
        if problem:
            problems.add("metadata.name", problem)
    if "projectcalico.org/namespace" in labels:
        problems.add("metadata.labels", "projectcalico.org/namespace is not a valid label name on a network set")
    nets = decode.strings(spec.get("nets"), "spec.nets", problems)
    for index, text in enumerate(nets):
        try:
            ipaddress.ip_network(text, strict=False)
        except ValueError:
            problems.add(f"spec.nets[{index}]", f"{text!r} is not a CIDR or IP address")
    return GlobalNetworkSet(name, nets, dict(labels))


def _profile(name: str, value: Any, problems: Problems) -> Profile:
    spec = decode.mapping(value, "spec", problems, ("ingress", "egress", "labelsToApply"), "spec", fold_case=True)
    if name:
        problem = dns_subdomain_problem(name)
        if problem:
            problems.add("metadata.name", problem)
    return Profile(
        name,
        parse_rules(spec.get("ingress"), "spec.ingress", problems),
        parse_rules(spec.get("egress"), "spec.egress", problems),
        decode.string_map(spec.get("labelsToApply"), "spec.labelsToApply", problems, label_problem),
    )
