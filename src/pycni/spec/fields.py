"""Typed reading of plugin configuration keys, with errors that say what to fix.

Plugins read their keys through a :class:`Fields` view of a decoded object.
Keys match case-insensitively (Go's decoder does, and configs in the wild rely
on it); a wrong type is code 7 naming the key, the expected type and what was
given. Absent keys and JSON ``null`` give the default, as in Go.
"""

from __future__ import annotations

import ipaddress
from typing import Any, TypeVar

from pycni.spec.errors import CNIError, ErrorCode
from pycni.spec.jsonutil import get_key, type_name
from pycni.spec.validate import link_name_problem

T = TypeVar("T")


class Fields:
    """Read-only typed access to one JSON object; ``where`` prefixes messages."""

    def __init__(self, data: object, where: str = "") -> None:
        if data is None:
            data = {}
        if not isinstance(data, dict):
            what = where or "configuration"
            raise CNIError(ErrorCode.INVALID_NETWORK_CONFIG, f"{what}: expected an object, got {type_name(data)}")
        self.data: dict[str, Any] = data
        self.where = where

    def _path(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def _wrong(self, key: str, expected: str, value: object) -> CNIError:
        return CNIError(
            ErrorCode.INVALID_NETWORK_CONFIG,
            f"{self._path(key)}: expected {expected}, got {type_name(value)} {_short(value)}",
        )

    def raw(self, key: str) -> Any:
        return get_key(self.data, key)

    def has(self, key: str) -> bool:
        return self.raw(key) is not None

    def string(self, key: str, default: str = "") -> str:
        value = self.raw(key)
        if value is None:
            return default
        if not isinstance(value, str):
            raise self._wrong(key, "a string", value)
        return value

    def boolean(self, key: str, default: bool = False) -> bool:
        value = self.raw(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise self._wrong(key, "true or false", value)
        return value

    def integer(self, key: str, default: int = 0, minimum: int | None = None, maximum: int | None = None) -> int:
        value = self.raw(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            else:
                raise self._wrong(key, "an integer", value)
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            bounds = f"between {minimum} and {maximum}" if maximum is not None else f"at least {minimum}"
            raise CNIError(ErrorCode.INVALID_NETWORK_CONFIG, f"{self._path(key)}: must be {bounds}, got {value}")
        return value

    def link_name(self, key: str, default: str = "") -> str:
        """An interface name (``master``, ``bridge``, ...); ``default`` when absent or empty.

        Checked as the kernel will check it, so a bad name is code 7 naming the key
        instead of a netlink error (or a name silently cut at a NUL) later.
        """
        name = self.string(key) or default
        problem = link_name_problem(name) if name else ""
        if problem:
            message = f"{self._path(key)}: {name!r} is not a valid interface name: {problem}"
            raise CNIError(ErrorCode.INVALID_NETWORK_CONFIG, message)
        return name

    def os_string(self, key: str, default: str = "") -> str:
        """A string handed to the operating system (a path, an argument, a sysfs name).

        A NUL would end it early there and a lone surrogate cannot be encoded for it, so
        both are code 7 naming the key rather than a ValueError/UnicodeEncodeError later.
        """
        value = self.string(key, default)
        try:
            value.encode()
        except UnicodeEncodeError:
            problem = "is not valid UTF-8"
        else:
            problem = "contains a NUL character" if "\x00" in value else ""
        if problem:
            raise CNIError(ErrorCode.INVALID_NETWORK_CONFIG, f"{self._path(key)}: {value!r} {problem}")
        return value

    def obj(self, key: str) -> Fields:
        value = self.raw(key)
        if value is not None and not isinstance(value, dict):
            raise self._wrong(key, "an object", value)
        return Fields(value or {}, self._path(key))

    def optional_obj(self, key: str) -> Fields | None:
        return self.obj(key) if self.has(key) else None

    def array(self, key: str) -> list[Any]:
        value = self.raw(key)
        if value is None:
            return []
        if not isinstance(value, list):
            raise self._wrong(key, "a list", value)
        return value

    def objects(self, key: str) -> list[Fields]:
        items = self.array(key)
        result = []
        for index, item in enumerate(items):
            if not isinstance(item, dict):
                raise self._wrong(f"{key}[{index}]", "an object", item)
            result.append(Fields(item, f"{self._path(key)}[{index}]"))
        return result

    def strings(self, key: str) -> list[str]:
        items = self.array(key)
        for index, item in enumerate(items):
            if not isinstance(item, str):
                raise self._wrong(f"{key}[{index}]", "a string", item)
        return list(items)

    def ip(self, key: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
        text = self.string(key)
        if not text:
            return None
        try:
            return ipaddress.ip_address(text)
        except ValueError:
            raise CNIError(
                ErrorCode.INVALID_NETWORK_CONFIG, f"{self._path(key)}: {text!r} is not an IP address"
            ) from None

    def cidr(self, key: str) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface | None:
        text = self.string(key)
        if not text:
            return None
        return parse_cidr_field(text, self._path(key))


def parse_cidr_field(text: str, where: str) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface:
    """An ``address/prefix`` value with host bits kept; code 7 naming ``where`` if not."""
    if "/" not in text:
        raise CNIError(ErrorCode.INVALID_NETWORK_CONFIG, f"{where}: {text!r} is not in CIDR notation (address/prefix)")
    try:
        return ipaddress.ip_interface(text.strip())
    except ValueError:
        raise CNIError(ErrorCode.INVALID_NETWORK_CONFIG, f"{where}: {text!r} is not a valid CIDR address") from None


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
