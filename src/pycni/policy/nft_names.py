"""Names and mark bits of the policy table, after Felix's (``felix/rules/rule_defs.go``, ``felix/ipsets``).

Chains: ``cali-fw-<iface>`` / ``cali-tw-<iface>`` (from / to a workload: its
egress / ingress), ``cali-po-<policy>`` / ``cali-pi-<policy>`` (a policy's
outbound / inbound rules, the policy named ``np/<namespace>/<name>`` or
``gnp/<name>`` as Felix's policy IDs), ``cali-pro-<profile>`` /
``cali-pri-<profile>``; sets ``cali40`` / ``cali60`` + the IP set's ID with
``:`` made ``-`` (``LegalizeSetName``): a selector's ``s:<hash>`` and a named
port's ``n:<hash>`` of ``<selector id>,<protocol>,<port name>`` (Felix's
``IPSetData.UniqueID``). A name longer than nft allows, or with characters nft
does not take unquoted, keeps a readable start and ends in a hash of the whole
(``hash.GetLengthLimitedID``).

Marks, from Felix's default mask 0xffff0000: Accept and Pass say what a policy
or profile chain decided (Felix's ``MarkAccept``/``MarkPass``); two scratch
bits carry "one of these ports matched" from a rule's port block to the rule.
"""

from __future__ import annotations

import base64
import hashlib
import re

from pycni.nft import objects
from pycni.policy.calico_model import CalicoPolicy
from pycni.policy.endpoints import ALL_INTERFACES
from pycni.policy.selector import Selector

FAMILY = "inet"
TABLE = "pycni-policy"
INTERFACE_PREFIX = "cali"

MARK_ACCEPT = 0x00010000
MARK_PASS = 0x00020000
MARK_SCRATCH = {"source": 0x00040000, "destination": 0x00080000}
MARK_ALL = MARK_ACCEPT | MARK_PASS | MARK_SCRATCH["source"] | MARK_SCRATCH["destination"]

FROM_DISPATCH = "cali-from-wl-dispatch"
TO_DISPATCH = "cali-to-wl-dispatch"
WL_TO_HOST = "cali-wl-to-host"
FROM_HEP_DISPATCH = "cali-from-hep-dispatch"
TO_HEP_DISPATCH = "cali-to-hep-dispatch"
FAILSAFE_IN = "cali-failsafe-in"
FAILSAFE_OUT = "cali-failsafe-out"
ALL_HOSTS = "cali40all-hosts-net"
LOG_PREFIX = "calico-packet"
LOG_PREFIX_MAX = 127  # NF_LOG_PREFIXLEN - 1
PROTOCOL_NAMES = {6: "tcp", 17: "udp", 132: "sctp"}  # ipsetmember.Protocol.String()

_UNSAFE = re.compile(r"[^A-Za-z0-9/_.-]")
_HASH_LENGTH = 16


def _hash(text: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha224(text.encode()).digest()).decode().rstrip("=")


def limited(prefix: str, suffix: str, limit: int = objects.NAME_MAX) -> str:
    """``prefix + suffix`` if nft takes it as it is, else a readable start, ``_`` and a hash of the suffix."""
    name = prefix + suffix
    if len(name) <= limit and not _UNSAFE.search(suffix):
        return name
    readable = _UNSAFE.sub("_", suffix)[: limit - len(prefix) - _HASH_LENGTH - 1]
    return f"{prefix}{readable}_{_hash(suffix)[:_HASH_LENGTH]}"


def mark(value: int) -> str:
    return f"0x{value:08x}"


def clear(bits: int) -> str:
    """The statement clearing ``bits`` of the packet mark and keeping the rest."""
    return f"meta mark set meta mark & {mark(0xFFFFFFFF & ~bits)}"


def policy_id(policy: CalicoPolicy) -> str:
    """Felix's policy ID: ``np/<namespace>/<name>`` or ``gnp/<name>``."""
    return f"gnp/{policy.name}" if policy.is_global else f"np/{policy.namespace}/{policy.name}"


def policy_chain(policy: CalicoPolicy, direction: str) -> str:
    return limited("cali-pi-" if direction == "ingress" else "cali-po-", policy_id(policy))


def profile_chain(profile: str, direction: str) -> str:
    return limited("cali-pri-" if direction == "ingress" else "cali-pro-", profile)


def endpoint_chain(interface: str, direction: str) -> str:
    """``cali-tw-<iface>`` for a workload's ingress (to workload), ``cali-fw-<iface>`` for its egress."""
    return limited("cali-tw-" if direction == "ingress" else "cali-fw-", interface)


def is_host_interface(name: str, workload_prefix: str = INTERFACE_PREFIX) -> bool:
    """Whether a host endpoint may police ``name``: not a workload's interface, not lo."""
    return name != "lo" and not name.startswith(workload_prefix)


ANY_INTERFACE = "any-interface-at-all"  # Felix's suffix for a ``*`` host endpoint: longer than any interface name


def host_endpoint_chain(interface: str, direction: str) -> str:
    """``cali-fh-<iface>`` for what the host receives through a host endpoint, ``cali-th-<iface>`` for what it sends."""
    suffix = ANY_INTERFACE if interface == ALL_INTERFACES else interface
    return limited("cali-fh-" if direction == "ingress" else "cali-th-", suffix)


def _set_name(family: int, set_id: str) -> str:
    return limited(f"cali{family}0", set_id.replace(":", "-"))


def selector_set(selector: Selector, family: int) -> str:
    return _set_name(family, selector.unique_id())


def named_port_id(selector: Selector, port: str, protocol: int | None) -> str:
    """``n:`` + the hash of ``<selector ID>,<protocol>,<port name>`` (protocol ``any`` when the rule has none)."""
    text = f"{selector.unique_id()},{PROTOCOL_NAMES.get(protocol or 0, 'any')},{port}"
    return f"n:{_hash('n:' + text)}"


def named_port_set(selector: Selector, port: str, protocol: int | None, family: int) -> str:
    return _set_name(family, named_port_id(selector, port, protocol))


def log_prefix(owner: str, direction: str, index: int) -> str:
    """``log prefix`` text naming who logs: ``calico-packet: <tier>/<policy> ingress 0: ``, at most 127 bytes."""
    text = f"{LOG_PREFIX}: {owner} {direction} {index}: "
    return text if len(text) <= LOG_PREFIX_MAX else text[: LOG_PREFIX_MAX - 2] + ": "
