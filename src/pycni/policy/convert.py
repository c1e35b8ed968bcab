"""Kubernetes objects as Calico sees them, converted exactly as libcalico-go converts them.

``libcalico-go/lib/backend/k8s/conversion/conversion.go`` (v3.31):

* a NetworkPolicy becomes the Calico NetworkPolicy ``knp.default.<name>`` in
  its namespace, tier ``default``, order 1000, selector
  ``projectcalico.org/orchestrator == 'k8s' && <podSelector>``, types from
  policyTypes (``[Ingress]`` when none), every rule an Allow: one rule per
  (protocol, peer), the ports of a protocol merged (``SimplifyPorts``), named
  ports kept for Felix to resolve per endpoint, an ipBlock as ``nets`` with its
  except as ``notNets``, an empty peer list or port list matching everything;
* a Namespace becomes the Profile ``kns.<ns>``: allow all both ways, its labels
  as ``pcns.<key>`` plus ``pcns.projectcalico.org/name`` for endpoints to
  inherit (``NamespaceToProfile``); a service account the Profile
  ``ksa.<ns>.<sa>`` with ``pcsa.`` labels and no rules.
"""

from __future__ import annotations

from collections.abc import Mapping

from pycni.policy import k8s
from pycni.policy.calico_model import DEFAULT_TIER, CalicoPolicy, Profile
from pycni.policy.rules import EntityRule, Port, Protocol, Rule

K8S_POLICY_PREFIX = "knp.default."
K8S_POLICY_ORDER = 1000.0
NAMESPACE_PROFILE_PREFIX = "kns."
SERVICE_ACCOUNT_PROFILE_PREFIX = "ksa."
NAMESPACE_LABEL_PREFIX = "pcns."
SERVICE_ACCOUNT_LABEL_PREFIX = "pcsa."
NAME_LABEL = "projectcalico.org/name"
LABEL_NAMESPACE = "projectcalico.org/namespace"
LABEL_ORCHESTRATOR = "projectcalico.org/orchestrator"
LABEL_SERVICE_ACCOUNT = "projectcalico.org/serviceaccount"
ORCHESTRATOR_K8S = "k8s"


def selector_to_calico(selector: k8s.LabelSelector | None, *, pod: bool) -> str:
    """``k8sSelectorToCalico``: pod selectors get the orchestrator term; an empty namespace selector is all()."""
    terms = [f"{LABEL_ORCHESTRATOR} == '{ORCHESTRATOR_K8S}'"] if pod else []
    if selector is None:
        return " && ".join(terms)
    if not pod and selector.empty:
        return "all()"
    terms += [f"{key} == '{value}'" for key, value in sorted(selector.match_labels)]
    for term in selector.match_expressions:
        values = "', '".join(term.values)
        if term.operator == "In":
            terms.append(f"{term.key} in {{ '{values}' }}")
        elif term.operator == "NotIn":
            terms.append(f"{term.key} not in {{ '{values}' }}")
        elif term.operator == "Exists":
            terms.append(f"has({term.key})")
        else:
            terms.append(f"! has({term.key})")
    return " && ".join(terms)


def simplify_ports(ports: list[Port]) -> list[Port]:
    """``SimplifyPorts``: named ports first as given, then the numeric ports merged into the fewest ranges."""
    if len(ports) <= 1:
        return ports
    named = [p for p in ports if p.name]
    numbers = sorted(n for p in ports if not p.name for n in range(p.min_port, p.max_port + 1))
    if len(numbers) <= 1:
        return ports
    ranges: list[Port] = []
    start = end = numbers[0]
    for number in numbers[1:]:
        if number > end + 1:
            ranges.append(Port(start, end))
            start = number
        end = number
    ranges.append(Port(start, end))
    return named + ranges


def _port(port: k8s.PolicyPort) -> Port:
    """``k8sPortToCalico`` for a port with a number or name (endPort makes ``port:endPort``)."""
    if isinstance(port.port, str):
        return Port(name=port.port)
    assert port.port is not None
    return Port(port.port, port.end_port if port.end_port is not None else port.port)


def _ports_by_protocol(ports: tuple[k8s.PolicyPort, ...]) -> dict[str, list[Port] | None]:
    """Protocol -> its ports (None: every port); ``{"": None}`` when the rule names no ports at all."""
    if not ports:
        return {"": None}
    by_protocol: dict[str, list[Port] | None] = {}
    for port in ports:
        protocol = str(Protocol.of(port.protocol))
        if port.port is None:
            by_protocol[protocol] = None  # every port of this protocol; later ports cannot narrow it
        elif protocol not in by_protocol or by_protocol[protocol]:
            by_protocol.setdefault(protocol, [])
            listed = by_protocol[protocol]
            assert listed is not None
            listed.append(_port(port))
    return by_protocol


def _peer_fields(peer: k8s.Peer | None) -> EntityRule:
    """``k8sPeerToCalicoFields`` as the peer half of an EntityRule (selector, namespaceSelector, nets, notNets)."""
    if peer is None:
        return EntityRule()
    if peer.ip_block is not None:
        return EntityRule(
            nets=(str(peer.ip_block.network),),
            not_nets=tuple(str(n) for n in peer.ip_block.except_),
        )
    return EntityRule(
        selector=selector_to_calico(peer.pod_selector, pod=True),
        namespace_selector=selector_to_calico(peer.namespace_selector, pod=False),
    )


def _rules(rule: k8s.PolicyRule, *, ingress: bool) -> list[Rule]:
    """``k8sRuleToCalico``: one Allow per (protocol, peer), protocols in sorted order."""
    peers: list[k8s.Peer | None] = list(rule.peers) or [None]
    by_protocol = _ports_by_protocol(rule.ports)
    out = []
    for name in sorted(by_protocol):
        listed = by_protocol[name]
        ports = tuple(simplify_ports(listed)) if listed else ()
        protocol = Protocol.of(name) if name else None
        for peer in peers:
            fields = _peer_fields(peer)
            if ingress:
                out.append(Rule("Allow", protocol=protocol, source=fields, destination=EntityRule(ports=ports)))
            else:
                destination = EntityRule(
                    nets=fields.nets,
                    selector=fields.selector,
                    namespace_selector=fields.namespace_selector,
                    ports=ports,
                    not_nets=fields.not_nets,
                )
                out.append(Rule("Allow", protocol=protocol, destination=destination))
    return out


def network_policy_to_calico(policy: k8s.NetworkPolicy) -> CalicoPolicy:
    """``K8sNetworkPolicyToCalico``."""
    ingress = [r for rule in policy.ingress for r in _rules(rule, ingress=True)]
    egress = [r for rule in policy.egress for r in _rules(rule, ingress=False)]
    types = [t for t in ("Ingress", "Egress") if t in policy.policy_types] or ["Ingress"]
    return CalicoPolicy(
        kind="NetworkPolicy",
        name=K8S_POLICY_PREFIX + policy.name,
        namespace=policy.namespace,
        tier=DEFAULT_TIER,
        order=K8S_POLICY_ORDER,
        selector=selector_to_calico(policy.pod_selector, pod=True),
        types=tuple(types),
        ingress=tuple(ingress),
        egress=tuple(egress),
    )


def namespace_to_profile(namespace: k8s.Namespace) -> Profile:
    """``NamespaceToProfile``: allow all, and the namespace's labels for its endpoints to inherit."""
    labels = {NAMESPACE_LABEL_PREFIX + key: value for key, value in namespace.labels.items()}
    labels[NAMESPACE_LABEL_PREFIX + NAME_LABEL] = namespace.name
    return Profile(
        NAMESPACE_PROFILE_PREFIX + namespace.name,
        ingress=(Rule("Allow"),),
        egress=(Rule("Allow"),),
        labels_to_apply=dict(sorted(labels.items())),
    )


def service_account_profile(namespace: str, name: str, labels: Mapping[str, str] | None = None) -> Profile:
    """``ServiceAccountToProfile``: labels only (``pcsa.<key>`` and ``pcsa.projectcalico.org/name``), no rules."""
    applied = {SERVICE_ACCOUNT_LABEL_PREFIX + key: value for key, value in (labels or {}).items()}
    applied[SERVICE_ACCOUNT_LABEL_PREFIX + NAME_LABEL] = name
    profile_name = f"{SERVICE_ACCOUNT_PROFILE_PREFIX}{namespace or 'default'}.{name}"
    return Profile(profile_name, labels_to_apply=dict(sorted(applied.items())))
