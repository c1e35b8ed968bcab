"""CNI results of every spec version, and conversion between them.

One in-memory model (the 1.x shape, which is a superset of the others) is
decoded from and encoded to each version's JSON. Converting is decoding at
one version and encoding at another, with the reference's rules
(``cni/pkg/types/{020,040,100}``):

* 0.1.0/0.2.0 hold ``ip4``/``ip6`` with nested routes and no interfaces;
  converting down keeps the first address of each family, the routes of the
  families kept (``dst`` and ``gw`` only), and fails with no address at all.
* 0.3.x/0.4.0 add ``interfaces`` and ``ips[].version``.
* 1.x drops ``ips[].version`` and adds interface ``mtu``/``socketPath``/``pciID``.
* ``dns`` is always printed by the 0.x encodings (Go's ``omitempty`` does not
  apply to structs) and omitted when empty by 1.x.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass, field, replace
from typing import Any

from pycni.spec.errors import CNIError, ErrorCode
from pycni.spec.jsonutil import get_key, loads, type_name
from pycni.spec.version import ALL_VERSIONS, LEGACY_VERSIONS

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface

VERSIONS_1X = ("1.0.0", "1.1.0")


def _decode_error(message: str) -> CNIError:
    return CNIError(ErrorCode.DECODING_FAILURE, message)


def parse_cidr(text: object, what: str) -> IPInterface:
    """``a.b.c.d/n`` or ``v6/n``, host bits kept (Go's ``types.ParseCIDR``).

    As in Go: only a decimal prefix length (no netmask form), no IPv6 zone,
    and an IPv4-mapped IPv6 address is an IPv4 address.
    """
    if not isinstance(text, str) or "/" not in text:
        raise _decode_error(f"{what}: invalid CIDR address {text!r}, expected address/prefix")
    prefix = text.rsplit("/", 1)[1]
    if "%" in text or not (prefix.isascii() and prefix.isdigit()):
        raise _decode_error(f"{what}: invalid CIDR address {text!r}")
    try:
        parsed = ipaddress.ip_interface(text)
    except ValueError:
        raise _decode_error(f"{what}: invalid CIDR address {text!r}") from None
    if isinstance(parsed, ipaddress.IPv6Interface) and parsed.ip.ipv4_mapped and parsed.network.prefixlen >= 96:
        return ipaddress.IPv4Interface(f"{parsed.ip.ipv4_mapped}/{parsed.network.prefixlen - 96}")
    return parsed


def parse_ip(text: object, what: str) -> IPAddress | None:
    """A plain address; empty or absent is ``None`` as Go's ``net.IP`` treats it."""
    if text is None or text == "":
        return None
    if not isinstance(text, str):
        raise _decode_error(f"{what}: expected an IP address string, got {type_name(text)}")
    if "%" in text:
        raise _decode_error(f"{what}: invalid IP address {text!r} (zones are not allowed)")
    try:
        parsed = ipaddress.ip_address(text)
    except ValueError:
        raise _decode_error(f"{what}: invalid IP address {text!r}") from None
    if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped:
        return parsed.ipv4_mapped
    return parsed


def _int_field(data: dict[str, Any], key: str, what: str) -> int | None:
    value = get_key(data, key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise _decode_error(f"{what}.{key}: expected an integer, got {type_name(value)}")
    return value


def _str_field(data: dict[str, Any], key: str, what: str) -> str:
    value = get_key(data, key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _decode_error(f"{what}.{key}: expected a string, got {type_name(value)}")
    return value


def _str_list(data: dict[str, Any], key: str, what: str) -> list[str]:
    value = get_key(data, key)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _decode_error(f"{what}.{key}: expected a list of strings")
    return list(value)


def _object(value: object, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _decode_error(f"{what}: expected an object, got {type_name(value)}")
    return value


def _object_list(data: dict[str, Any], key: str, what: str) -> list[dict[str, Any]]:
    value = get_key(data, key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise _decode_error(f"{what}.{key}: expected a list, got {type_name(value)}")
    return [_object(item, f"{what}.{key}[{i}]") for i, item in enumerate(value)]


@dataclass
class Interface:
    name: str
    mac: str = ""
    mtu: int = 0
    sandbox: str = ""
    socket_path: str = ""
    pci_id: str = ""

    @classmethod
    def from_dict(cls, data: dict[str, Any], what: str = "interface", version: str = "1.1.0") -> Interface:
        """Decode at ``version``: before 1.0.0 there is no mtu/socketPath/pciID (Go drops them)."""
        interface = cls(
            name=_str_field(data, "name", what),
            mac=_str_field(data, "mac", what),
            sandbox=_str_field(data, "sandbox", what),
        )
        if version in VERSIONS_1X:
            interface.mtu = _int_field(data, "mtu", what) or 0
            interface.socket_path = _str_field(data, "socketPath", what)
            interface.pci_id = _str_field(data, "pciID", what)
        return interface

    def to_dict(self, version: str) -> dict[str, Any]:
        data: dict[str, Any] = {"name": self.name}
        if self.mac:
            data["mac"] = self.mac
        if version in VERSIONS_1X and self.mtu:
            data["mtu"] = self.mtu
        if self.sandbox:
            data["sandbox"] = self.sandbox
        if version in VERSIONS_1X:
            if self.socket_path:
                data["socketPath"] = self.socket_path
            if self.pci_id:
                data["pciID"] = self.pci_id
        return data


@dataclass
class IPConfig:
    address: IPInterface
    gateway: IPAddress | None = None
    interface: int | None = None

    @property
    def version(self) -> str:
        """``"4"`` or ``"6"``, the 0.3.x/0.4.0 ``version`` field."""
        return str(self.address.version)

    @classmethod
    def from_dict(cls, data: dict[str, Any], what: str = "ips") -> IPConfig:
        return cls(
            address=parse_cidr(get_key(data, "address"), f"{what}.address"),
            gateway=parse_ip(get_key(data, "gateway"), f"{what}.gateway"),
            interface=_int_field(data, "interface", what),
        )

    def to_dict(self, version: str) -> dict[str, Any]:
        data: dict[str, Any] = {}
        if version not in VERSIONS_1X:
            data["version"] = self.version
        if self.interface is not None:
            data["interface"] = self.interface
        data["address"] = str(self.address)
        if self.gateway is not None:
            data["gateway"] = str(self.gateway)
        return data


@dataclass
class Route:
    dst: IPInterface
    gw: IPAddress | None = None
    mtu: int = 0
    advmss: int = 0
    priority: int = 0
    table: int | None = None
    scope: int | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any], what: str = "routes") -> Route:
        return cls(
            dst=parse_cidr(get_key(data, "dst"), f"{what}.dst"),
            gw=parse_ip(get_key(data, "gw"), f"{what}.gw"),
            mtu=_int_field(data, "mtu", what) or 0,
            advmss=_int_field(data, "advmss", what) or 0,
            priority=_int_field(data, "priority", what) or 0,
            table=_int_field(data, "table", what),
            scope=_int_field(data, "scope", what),
        )

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"dst": str(self.dst)}
        if self.gw is not None:
            data["gw"] = str(self.gw)
        for key, value in (("mtu", self.mtu), ("advmss", self.advmss), ("priority", self.priority)):
            if value:
                data[key] = value
        if self.table is not None:
            data["table"] = self.table
        if self.scope is not None:
            data["scope"] = self.scope
        return data


@dataclass
class DNS:
    nameservers: list[str] = field(default_factory=list)
    domain: str = ""
    search: list[str] = field(default_factory=list)
    options: list[str] = field(default_factory=list)

    @classmethod
    def from_dict(cls, data: object, what: str = "dns") -> DNS:
        if data is None:
            return cls()
        obj = _object(data, what)
        return cls(
            nameservers=_str_list(obj, "nameservers", what),
            domain=_str_field(obj, "domain", what),
            search=_str_list(obj, "search", what),
            options=_str_list(obj, "options", what),
        )

    def is_empty(self) -> bool:
        return not (self.nameservers or self.domain or self.search or self.options)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {}
        if self.nameservers:
            data["nameservers"] = list(self.nameservers)
        if self.domain:
            data["domain"] = self.domain
        if self.search:
            data["search"] = list(self.search)
        if self.options:
            data["options"] = list(self.options)
        return data


@dataclass
class Result:
    """A result at ``cni_version``; convert with :meth:`as_version`."""

    cni_version: str
    interfaces: list[Interface] = field(default_factory=list)
    ips: list[IPConfig] = field(default_factory=list)
    routes: list[Route] = field(default_factory=list)
    dns: DNS = field(default_factory=DNS)

    # -- decoding ---------------------------------------------------------

    @classmethod
    def from_json(cls, text: str | bytes, default_version: str = "") -> Result:
        """Decode a result; ``default_version`` is assumed if it names none."""
        try:
            data = loads(text)
        except (ValueError, UnicodeDecodeError) as exc:
            raise _decode_error(f"decoding result: {exc}") from None
        return cls.from_dict(data, default_version)

    @classmethod
    def from_dict(cls, data: object, default_version: str = "") -> Result:
        """Decode at the result's own ``cniVersion`` (absent means 0.1.0)."""
        obj = _object(data, "result")
        version = get_key(obj, "cniVersion")
        if version is None or version == "":
            version = default_version or "0.1.0"
        if not isinstance(version, str):
            raise _decode_error(f"result.cniVersion: expected a string, got {type_name(version)}")
        if version not in ALL_VERSIONS:
            raise _decode_error(f"unsupported CNI result version {version!r}")
        if version in LEGACY_VERSIONS:
            return cls._from_legacy(obj, version)
        return cls(
            cni_version=version,
            interfaces=[
                Interface.from_dict(item, f"interfaces[{i}]", version)
                for i, item in enumerate(_object_list(obj, "interfaces", "result"))
            ],
            ips=[IPConfig.from_dict(item, f"ips[{i}]") for i, item in enumerate(_object_list(obj, "ips", "result"))],
            routes=[
                Route.from_dict(item, f"routes[{i}]") for i, item in enumerate(_object_list(obj, "routes", "result"))
            ],
            dns=DNS.from_dict(get_key(obj, "dns")),
        )

    @classmethod
    def _from_legacy(cls, obj: dict[str, Any], version: str) -> Result:
        result = cls(cni_version=version, dns=DNS.from_dict(get_key(obj, "dns")))
        for key in ("ip4", "ip6"):
            if get_key(obj, key) is None:
                continue
            block = _object(get_key(obj, key), key)
            result.ips.append(
                IPConfig(
                    address=parse_cidr(get_key(block, "ip"), f"{key}.ip"),
                    gateway=parse_ip(get_key(block, "gateway"), f"{key}.gateway"),
                )
            )
            result.routes.extend(
                Route.from_dict(item, f"{key}.routes[{i}]") for i, item in enumerate(_object_list(block, "routes", key))
            )
        return result

    # -- conversion and encoding -----------------------------------------

    def as_version(self, version: str) -> Result:
        """This result at ``version`` (a copy), with the reference's lossy rules."""
        if version == "":
            version = "0.1.0"
        if version == self.cni_version:
            return self.copy()
        if version not in ALL_VERSIONS or self.cni_version not in ALL_VERSIONS:
            raise CNIError(
                ErrorCode.INCOMPATIBLE_CNI_VERSION,
                f"no converter for CNI result version {self.cni_version} to {version}",
            )
        converted = self.copy()
        converted.cni_version = version
        if version in LEGACY_VERSIONS and self.cni_version not in LEGACY_VERSIONS:
            converted._reduce_to_legacy()
        elif version not in VERSIONS_1X and self.cni_version in VERSIONS_1X:
            for interface in converted.interfaces:  # the 0.3.x/0.4.0 interface has no such fields
                interface.mtu, interface.socket_path, interface.pci_id = 0, "", ""
        return converted

    def _reduce_to_legacy(self) -> None:
        """What 0.1.0/0.2.0 can hold, as printing it would leave it: the first address of each family
        and the plain routes of the families kept, IPv4 ones first (each family's block holds its own)."""
        first: dict[int, IPConfig] = {}
        for ip in self.ips:
            first.setdefault(ip.address.version, IPConfig(address=ip.address, gateway=ip.gateway))
        if not first:
            raise CNIError(ErrorCode.INCOMPATIBLE_CNI_VERSION, "cannot convert: no valid IP addresses")
        self.interfaces = []
        self.ips = [first[family] for family in (4, 6) if family in first]
        self.routes = [
            Route(dst=r.dst, gw=r.gw)
            for family in (4, 6)
            if family in first
            for r in self.routes
            if r.dst.version == family
        ]

    def copy(self) -> Result:
        return Result(
            cni_version=self.cni_version,
            interfaces=[replace(i) for i in self.interfaces],
            ips=[replace(i) for i in self.ips],
            routes=[replace(r) for r in self.routes],
            dns=DNS(list(self.dns.nameservers), self.dns.domain, list(self.dns.search), list(self.dns.options)),
        )

    def to_dict(self, version: str | None = None) -> dict[str, Any]:
        """The JSON object at ``version`` (default: this result's own version)."""
        result = self.as_version(version) if version is not None and version != self.cni_version else self
        v = result.cni_version
        data: dict[str, Any] = {"cniVersion": v}
        if v in LEGACY_VERSIONS:
            for ip in result.ips:
                key = f"ip{ip.address.version}"
                if key in data:
                    continue  # one address per family: the first, as converting down keeps
                block: dict[str, Any] = {"ip": str(ip.address)}
                if ip.gateway is not None:
                    block["gateway"] = str(ip.gateway)
                routes = [r.to_dict() for r in result.routes if r.dst.version == ip.address.version]
                if routes:
                    block["routes"] = routes
                data[key] = block
            data["dns"] = result.dns.to_dict()
            return data
        if result.interfaces:
            data["interfaces"] = [i.to_dict(v) for i in result.interfaces]
        if result.ips:
            data["ips"] = [i.to_dict(v) for i in result.ips]
        if result.routes:
            data["routes"] = [r.to_dict() for r in result.routes]
        if v not in VERSIONS_1X or not result.dns.is_empty():
            data["dns"] = result.dns.to_dict()
        return data

    def to_json(self, version: str | None = None) -> str:
        """Indented JSON as the reference plugins print it."""
        return json.dumps(self.to_dict(version), indent=4)

    # -- helpers for plugins ---------------------------------------------

    def add_interface(self, interface: Interface) -> int:
        """Append an interface and return its index, for ``IPConfig.interface``."""
        self.interfaces.append(interface)
        return len(self.interfaces) - 1
