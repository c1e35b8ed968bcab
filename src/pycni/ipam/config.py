"""IPAM config pieces every IPAM plugin shares: routes, DNS, resolv.conf, requested IPs.

Go's IPAM plugins each decode these with ``types.Route``/``types.DNS``; one
reader here gives every pycni IPAM plugin the same keys and the same
code-7 messages naming the key that is wrong.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from pycni.spec import DNS, CNIError, ErrorCode, Fields, Route
from pycni.spec.fields import parse_cidr_field
from pycni.spec.result import IPAddress


def parse_routes(ipam: Fields) -> list[Route]:
    """``ipam.routes``: ``dst`` (required CIDR), ``gw`` and the spec 1.1 extras, all optional."""
    routes = []
    for entry in ipam.objects("routes"):
        routes.append(
            Route(
                dst=parse_cidr_field(entry.string("dst"), f"{entry.where}.dst"),
                gw=entry.ip("gw"),
                mtu=entry.integer("mtu"),
                advmss=entry.integer("advmss"),
                priority=entry.integer("priority"),
                table=entry.integer("table") if entry.has("table") else None,
                scope=entry.integer("scope") if entry.has("scope") else None,
            )
        )
    return routes


def ipam_section(conf: Fields) -> Fields:
    """The config's ``ipam`` object, which every IPAM plugin requires."""
    ipam = conf.optional_obj("ipam")
    if ipam is None:
        raise CNIError(ErrorCode.INVALID_NETWORK_CONFIG, "IPAM config missing 'ipam' key")
    return ipam


def parse_dns(dns: Fields) -> DNS:
    """A ``dns`` object of the config (``nameservers``, ``domain``, ``search``, ``options``)."""
    return DNS(dns.strings("nameservers"), dns.string("domain"), dns.strings("search"), dns.strings("options"))


def parse_resolv_conf(text: str) -> DNS:
    """The DNS settings of a resolv.conf, read the way the reference's ``dns.go`` reads them.

    ``nameserver`` lines accumulate, the last ``domain`` wins, ``search`` and
    ``options`` lines accumulate all their words; comments (``#``, ``;``) and
    lines with fewer than two words are skipped.
    """
    dns = DNS()
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        words = line.split()
        if len(words) < 2:
            continue
        keyword, values = words[0], words[1:]
        if keyword == "nameserver":
            dns.nameservers.append(values[0])
        elif keyword == "domain":
            dns.domain = values[0]
        elif keyword == "search":
            dns.search.extend(values)
        elif keyword == "options":
            dns.options.extend(values)
    return dns


def read_resolv_conf(path: str, where: str = "ipam.resolvConf") -> DNS:
    """Parse the resolv.conf a config names; a file that cannot be read is that key's fault (code 7)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return parse_resolv_conf(handle.read())
    except (OSError, ValueError) as exc:  # ValueError: a NUL in the path
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise CNIError(
            ErrorCode.INVALID_NETWORK_CONFIG,
            f"{where}: cannot read {path!r}: {reason}; point it at a readable resolv.conf or remove it",
        ) from None


def parse_ip(text: str) -> IPAddress | None:
    """An address the way Go's ``net.ParseIP`` takes it: no zone, IPv4-mapped IPv6 means IPv4."""
    if "%" in text:
        return None
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def parse_ip_or_cidr(text: str) -> IPAddress | None:
    """``addr`` or ``addr/prefix`` (the prefix is dropped), as the reference's ``ip.ParseIP``."""
    if "/" not in text:
        return parse_ip(text)
    address, _, prefix = text.partition("/")
    if not prefix.isascii() or not prefix.isdigit():
        return None
    ip = parse_ip(address)
    if ip is None or int(prefix) > ip.max_prefixlen:
        return None
    return ip


@dataclass(frozen=True)
class RequestedIP:
    """A specific address the runtime asked for, and where it asked (for error codes and messages)."""

    ip: IPAddress
    source: str  # "CNI_ARGS IP", "args.cni.ips[0]" or "runtimeConfig.ips[0]"

    @property
    def code(self) -> ErrorCode:
        """A bad request in CNI_ARGS is an environment error; elsewhere it is the config's."""
        if self.source.startswith("CNI_ARGS"):
            return ErrorCode.INVALID_ENVIRONMENT_VARIABLES
        return ErrorCode.INVALID_NETWORK_CONFIG


def requested_ips(cni_args: dict[str, str], conf: Fields, runtime_ips: object) -> list[RequestedIP]:
    """Specific IPs from ``CNI_ARGS`` ``IP=``, then ``args.cni.ips``, then ``runtimeConfig.ips``.

    All sources add up (host-local's rule); each value is an address or a
    CIDR whose prefix is ignored. A repeated address is kept once.
    """
    found: list[RequestedIP] = []
    text = cni_args.get("IP", "")
    if text:
        ip = parse_ip_or_cidr(text)
        if ip is None:
            raise CNIError(
                ErrorCode.INVALID_ENVIRONMENT_VARIABLES,
                f'ARGS: error parsing value of pair "IP={text}": invalid IP address {text}',
            )
        found.append(RequestedIP(ip, "CNI_ARGS IP"))
    for index, item in enumerate(conf.obj("args").obj("cni").strings("ips")):
        found.append(RequestedIP(_config_ip(item, f"args.cni.ips[{index}]"), f"args.cni.ips[{index}]"))
    if runtime_ips is not None:
        if not isinstance(runtime_ips, list):
            raise CNIError(ErrorCode.INVALID_NETWORK_CONFIG, "runtimeConfig.ips: expected a list of IP addresses")
        for index, item in enumerate(runtime_ips):
            where = f"runtimeConfig.ips[{index}]"
            if not isinstance(item, str):
                raise CNIError(ErrorCode.INVALID_NETWORK_CONFIG, f"{where}: expected a string, got {item!r}")
            found.append(RequestedIP(_config_ip(item, where), where))
    unique: dict[IPAddress, RequestedIP] = {}
    for request in found:
        unique.setdefault(request.ip, request)
    return list(unique.values())


def _config_ip(text: str, where: str) -> IPAddress:
    ip = parse_ip_or_cidr(text)
    if ip is None:
        raise CNIError(
            ErrorCode.INVALID_NETWORK_CONFIG,
            f"{where}: invalid IP address {text!r}; give an address such as 10.1.2.3 (a /prefix is allowed)",
        )
    return ip
