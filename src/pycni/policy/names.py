"""Name and label rules of Kubernetes and Calico, each returning what is wrong (or None) in words a user can act on.

Kubernetes: DNS-1123 labels and subdomains (object names), qualified names
(label keys), label values, IANA service names (named ports) as
``k8s.io/apimachinery/pkg/util/validation`` checks them. Calico: policy and
tier names as ``libcalico-go/lib/validator/v3/validator.go`` matches them.
"""

from __future__ import annotations

import re

DNS_LABEL = "[a-z0-9]([-a-z0-9]*[a-z0-9])?"
DNS_SUBDOMAIN = DNS_LABEL + r"(\." + DNS_LABEL + ")*"
_DNS_LABEL = re.compile("^" + DNS_LABEL + "$")
_DNS_SUBDOMAIN = re.compile("^" + DNS_SUBDOMAIN + "$")
_QUALIFIED_PART = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
# validator.go: networkPolicyNameRegex, globalNetworkPolicyNameRegex.
_CALICO_POLICY = re.compile(
    "^((" + DNS_LABEL + r")(\." + DNS_LABEL + r")?|((?:knp|ossg)\.default\.(" + DNS_SUBDOMAIN + ")))$"
)
_CALICO_GLOBAL_POLICY = re.compile("^(" + DNS_LABEL + r"\.)?" + DNS_LABEL + "$")
_CALICO_PORT_NAME = re.compile(r"^[a-zA-Z0-9_.-]{1,128}$")


def dns_label_problem(name: str) -> str | None:
    """RFC 1123 label: namespaces, tiers."""
    if len(name) > 63:
        return f"must be at most 63 characters (is {len(name)})"
    if not _DNS_LABEL.match(name):
        return "must be lower case letters, digits and '-', starting and ending with a letter or digit"
    return None


def dns_subdomain_problem(name: str) -> str | None:
    """RFC 1123 subdomain: most object names (pods, network policies, network sets, profiles)."""
    if len(name) > 253:
        return f"must be at most 253 characters (is {len(name)})"
    if not _DNS_SUBDOMAIN.match(name):
        return "must be lower case letters, digits, '-' and '.', starting and ending with a letter or digit"
    return None


def label_key_problem(key: str) -> str | None:
    """A qualified name: ``[prefix/]name``, the prefix a DNS subdomain, the name at most 63 characters."""
    prefix, slash, name = key.rpartition("/")
    if slash and (not prefix or dns_subdomain_problem(prefix)):
        return f"label key {key!r}: the prefix before '/' must be a DNS subdomain such as example.com"
    if not name or len(name) > 63 or not _QUALIFIED_PART.match(name):
        return (
            f"label key {key!r}: the name must be 1-63 of A-Z a-z 0-9 - _ . beginning and ending with a letter or digit"
        )
    return None


def label_value_problem(value: str) -> str | None:
    if value and (len(value) > 63 or not _QUALIFIED_PART.match(value)):
        return f"label value {value!r}: empty, or 1-63 of A-Z a-z 0-9 - _ . beginning and ending with a letter or digit"
    return None


def label_problem(key: str, value: str) -> str | None:
    return label_key_problem(key) or label_value_problem(value)


def port_name_problem(name: str) -> str | None:
    """An IANA service name, as Kubernetes requires of container port names and NetworkPolicy named ports."""
    wrong = []
    if len(name) > 15:
        wrong.append("at most 15 characters")
    if not re.match(r"^[-a-z0-9]+$", name):
        wrong.append("only a-z, 0-9 and '-'")
    if not re.search(r"[a-z]", name):
        wrong.append("at least one letter (a number must be written without quotes)")
    if "--" in name:
        wrong.append("no '--'")
    if name.startswith("-") or name.endswith("-"):
        wrong.append("no '-' at either end")
    return f"a port name needs {', '.join(wrong)}" if wrong else None


def calico_port_name_problem(name: str) -> str | None:
    """numorstring's named-port rule (Calico rules accept a wider set than Kubernetes)."""
    if not _CALICO_PORT_NAME.match(name):
        return "a port must be a number 1-65535, a range 'min:max', or a name of 1-128 of a-z A-Z 0-9 _ . -"
    return None


def calico_policy_name_problem(name: str, *, global_policy: bool) -> str | None:
    """Calico's policy names: a DNS label, optionally ``<tier>.`` before it (or ``knp.default.<name>``)."""
    if len(name) > 253:
        return f"must be at most 253 characters (is {len(name)})"
    pattern = _CALICO_GLOBAL_POLICY if global_policy else _CALICO_POLICY
    if not pattern.match(name):
        return "must be lower case letters, digits and '-' (optionally '<tier>.' before them)"
    return None
